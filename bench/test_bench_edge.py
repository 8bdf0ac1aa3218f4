"""The edge's field check of a 100-order AllocateOrders request: the compiled scan of
its bytes (service.wirecheck) beside the field walk it stands in for, in the same run.
"""

from __future__ import annotations

from allocd.v1 import order_service_pb2 as opb

from bench.grpc_ratio import OrderFactory
from service.edge import MAX_STRING, invalid_field
from service.wirecheck import may_be_refused


def _request() -> tuple[opb.AllocateOrdersRequest, bytes]:
    factory = OrderFactory(5000, 1, "B")
    message = opb.AllocateOrdersRequest(request_id="bench",
                                        orders=[factory.order() for _ in range(100)])
    return message, message.SerializeToString()


def test_edge_scan_100_orders(benchmark):
    message, raw = _request()
    descriptor = message.DESCRIPTOR
    assert benchmark(may_be_refused, raw, descriptor, MAX_STRING) is False


def test_edge_field_walk_100_orders_reference(benchmark):
    """The plain-Python walk on the same request: the baseline for the scan's ratio."""
    message, _ = _request()
    assert benchmark(invalid_field, message) == ""
