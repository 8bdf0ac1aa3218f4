"""Closed orders leave the server's memory once their retention is over, through the
server's own archiving: GetOrder says so, the id stays taken, a return is refused, the
event stream carries ORDER_ARCHIVED, and open orders stay."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest
from allocd.v1 import order_service_pb2 as pb
from allocd.v1 import returns_service_pb2 as rpb
from allocd.v1 import returns_service_pb2_grpc as rgrpc
from allocd.v1 import types_pb2 as types
from prometheus_client.parser import text_string_to_metric_families

from service.server import AllocdServer
from service.store import MemoryEventStore
from tests.e2e.conftest import (
    RPC_TIMEOUT_S,
    RUNNING,
    e2e_settings,
    first_watched,
    order_world,
    rid,
)
from tests.e2e.test_metrics import _free_port

DAY_MS = 86_400_000
CLERK = (("x-allocd-actor", "clerk-1"), ("x-allocd-role", "customer_service"))


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_a_shipped_order_is_archived_after_its_retention(server_factory):
    metrics_port = _free_port()
    api = server_factory(order_retention_days=60.0, archive_interval_s=0.2,
                         metrics_port=metrics_port)
    engine = RUNNING[int(api.target.rsplit(":", 1)[1])].engine
    today = engine.clock() // DAY_MS * DAY_MS
    engine.clock = lambda: today + 9 * 3_600_000  # 09:00: before every node's cut-off
    w = order_world(api)
    sku = w.sku()
    w.stock(sku, w.nodes[0], 10)
    shipped = w.order((sku, 2))
    (package,) = w.allocate(shipped).allocation.packages
    w.fulfil(package)
    still_open = w.order((sku, 1))
    w.allocate(still_open)
    time.sleep(0.5)  # (sweeps run: the order is not due yet)
    assert w.get(shipped.order_id).allocation.status == pb.ORDER_STATUS_SHIPPED

    engine.clock = lambda: today + 61 * DAY_MS  # past the retention and the return window
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and shipped.order_id in engine.ledger.orders.orders:
        time.sleep(0.1)
    code, details = _code(lambda: w.get(shipped.order_id))
    assert code == grpc.StatusCode.NOT_FOUND and "archived" in details

    # The id stays taken; the open order is untouched; a return is refused with the reason.
    again = pb.Order()
    again.CopyFrom(shipped)
    code, details = _code(lambda: w.allocate(again))
    assert code == grpc.StatusCode.ALREADY_EXISTS, details
    assert w.get(still_open.order_id).allocation.status == pb.ORDER_STATUS_ALLOCATED
    returns = rgrpc.ReturnsServiceStub(api.channel)
    code, details = _code(lambda: returns.CreateReturn(rpb.CreateReturnRequest(
        request_id=rid(), rma_id=w.unique("RMA"), order_id=shipped.order_id,
        lines=[rpb.ReturnLineRequest(line_id="1", quantity=1)]),
        metadata=CLERK, timeout=RPC_TIMEOUT_S))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "archived" in details

    # Watchers saw it go (and can keep what they want of it).
    assert first_watched(api, types.EVENT_KIND_ORDER_ARCHIVED) == shipped.order_id
    assert engine.ledger.orders.archived == {shipped.order_id}
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                  timeout=10).read().decode()
    gauges = {s.name: s.value for family in text_string_to_metric_families(text)
              for s in family.samples if family.name.startswith("allocd_orders")}
    assert gauges == {"allocd_orders_archived": 1.0, "allocd_orders": 1.0}


@pytest.mark.parametrize(("name", "value"), [
    ("order_retention_days", -1.0), ("order_retention_days", float("nan")),
    ("archive_interval_s", -5.0), ("archive_interval_s", float("inf"))])
def test_a_server_refuses_to_start_with_a_retention_it_cannot_keep(name, value):
    with pytest.raises(ValueError, match=name):
        AllocdServer(e2e_settings(**{name: value}), MemoryEventStore())
