"""Prometheus metrics: RPC counts by method and status, latencies, ledger gauges."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import order_service_pb2 as opb
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ORDER_NODES, RPC_TIMEOUT_S, RUNNING, order_world


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_metrics_count_calls_by_status_and_show_the_ledger(server_factory):
    port = _free_port()
    api = server_factory(metrics_port=port)
    cat = api.seed(n_nodes=2, n_skus=2)
    api.receive(cat.skus[0], cat.nodes[0], 7)
    api.inventory.GetAvailability(inv.GetAvailabilityRequest(sku_ids=[cat.skus[0]]),
                                  timeout=RPC_TIMEOUT_S)
    with pytest.raises(grpc.RpcError):
        api.inventory.GetAvailability(inv.GetAvailabilityRequest(sku_ids=["nope"]),
                                      timeout=RPC_TIMEOUT_S)
    # A call is counted when the server is done with it, which may be just after the
    # client has its answer: read until both calls are in (or 10 s have passed).
    counted = 'allocd_rpc_latency_seconds_count{method="InventoryService/GetAvailability"} 2.0'
    deadline = time.monotonic() + 10
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                      timeout=10).read().decode()
        if counted in text or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ('allocd_rpc_requests_total{code="OK",method="InventoryService/GetAvailability"} 1.0'
            in text)
    assert ('allocd_rpc_requests_total{code="NOT_FOUND",'
            'method="InventoryService/GetAvailability"} 1.0' in text)
    assert 'allocd_rpc_latency_seconds_count{method="InventoryService/GetAvailability"} 2.0' \
        in text
    assert 'allocd_ledger_units{bucket="available"} 7.0' in text
    assert "allocd_store_lag_events 0.0" in text
    for kind in ("unary", "stream"):  # joined allocation calls, counted apart from the start
        assert f'allocd_joined_calls_total{{kind="{kind}"}} 0.0' in text
    assert RUNNING  # the server is one of ours


def _scrape(port: int) -> dict[str, float]:
    """The engine's gauges of orders and open exceptions, by their labels."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {f"{sample.name}:{next(iter(sample.labels.values()))}": sample.value
            for family in text_string_to_metric_families(text)
            if family.name in ("allocd_orders", "allocd_open_exceptions")
            for sample in family.samples}


def test_orders_by_status_and_open_exceptions_follow_every_change(server_factory):
    """The gauges are kept by the books as orders and exceptions change (a scrape no
    longer counts them one by one): they follow allocation, a hold, its resolution and a
    shipment, and so does ListExceptions' open queue."""
    port = _free_port()
    w = order_world(server_factory(metrics_port=port))
    a = w.sku()
    w.stock(a, ORDER_NODES[0], 5)
    shipped = w.allocate(w.order((a, 1))).allocation
    held = w.allocate(w.order((a, 1), payment_status=opb.PAYMENT_STATUS_ON_HOLD)).allocation
    assert _scrape(port) == {"allocd_orders:allocated": 1.0, "allocd_orders:held": 1.0,
                             "allocd_open_exceptions:payment_hold": 1.0}
    assert [e.exception_id for e in w.exceptions("")] == [held.exception_id]

    w.resolve(held.exception_id, opb.RESOLUTION_CANCEL)
    w.fulfil(shipped.packages[0])
    assert _scrape(port) == {"allocd_orders:shipped": 1.0, "allocd_orders:cancelled": 1.0}
    assert w.exceptions("") == []
    assert [e.exception_id for e in w.exceptions("", include_resolved=True)] == [
        held.exception_id]



def test_backorders_filled_as_stock_comes_are_counted(server_factory):
    port = _free_port()
    w = order_world(server_factory(metrics_port=port))
    a = w.sku()
    waiting = [w.allocate(w.order((a, 1))).allocation for _ in range(3)]
    assert {o.status for o in waiting} == {opb.ORDER_STATUS_BACKORDERED}

    def filled() -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                      timeout=10).read().decode()
        (value,) = [sample.value for family in text_string_to_metric_families(text)
                    if family.name == "allocd_backorders_filled"
                    for sample in family.samples if sample.name.endswith("_total")]
        return value

    assert filled() == 0.0
    w.stock(a, ORDER_NODES[0], 2)
    assert filled() == 2.0
    w.stock(a, ORDER_NODES[0], 5)
    assert filled() == 3.0

DASHBOARD = Path(__file__).resolve().parents[2] / "service" / "dashboards" / "grafana.json"


def test_grafana_dashboard_queries_only_metrics_the_server_exports(server_factory):
    """Every series the shipped Grafana dashboard plots is one `/metrics` really exposes,
    so renaming a metric without updating the dashboard fails here."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    queried: set[str] = set()
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}"
        assert p["targets"], p["title"]
        for target in p["targets"]:
            queried.update(re.findall(r"\ballocd_[a-z_]+", target["expr"]))
    assert {"datasource"} == {v["name"] for v in dashboard["templating"]["list"]}

    port = _free_port()
    api = server_factory(metrics_port=port)
    cat = api.seed(n_nodes=1, n_skus=1)
    api.receive(cat.skus[0], cat.nodes[0], 3)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    exported: set[str] = set()
    for family in text_string_to_metric_families(text):
        exported.add(family.name)
        exported.update(sample.name for sample in family.samples)
    missing = queried - exported
    assert not missing, f"dashboard queries metrics the server does not export: {missing}"
    # the dashboard covers every allocd family the server exports (the client library's
    # `_created` timestamps aside)
    families = {f.name for f in text_string_to_metric_families(text)
                if f.name.startswith("allocd_") and not f.name.endswith("_created")}
    plotted = {name.removesuffix("_total").removesuffix("_bucket").removesuffix("_sum")
               .removesuffix("_count") for name in queried}
    assert families <= plotted, f"metrics without a panel: {families - plotted}"
