"""Prometheus metrics: RPC counts by method and status, latencies, ledger gauges."""

from __future__ import annotations

import socket
import urllib.request

import grpc
import pytest
from allocd.v1 import inventory_service_pb2 as inv

from tests.e2e.conftest import RPC_TIMEOUT_S, RUNNING


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
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert ('allocd_rpc_requests_total{code="OK",method="InventoryService/GetAvailability"} 1.0'
            in text)
    assert ('allocd_rpc_requests_total{code="NOT_FOUND",'
            'method="InventoryService/GetAvailability"} 1.0' in text)
    assert 'allocd_rpc_latency_seconds_count{method="InventoryService/GetAvailability"} 2.0' \
        in text
    assert 'allocd_ledger_units{bucket="available"} 7.0' in text
    assert "allocd_store_lag_events 0.0" in text
    assert RUNNING  # the server is one of ours
