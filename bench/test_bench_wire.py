"""The wire side of a 100-order AllocateOrders call, alone: what any batch path hosted in
Python pays to read a request and to answer it, whatever it does in between.

Reading every field a decision needs into arrays sits beside reading the request into
order specs (what the path does now) in the same run; the basic answer is built from
plain values. Together they bound from below what a batch path kept as arrays could
reach.
"""

from __future__ import annotations

import numpy as np
from allocd.v1 import order_service_pb2 as opb

from bench.grpc_ratio import OrderFactory
from service.order_codec import order_from_proto

N_SKUS = 5000
CHANNELS = {"web": 0, "marketplace": 1, "retail": 2}


def _raw() -> bytes:
    factory = OrderFactory(N_SKUS, 1, "W")
    return opb.AllocateOrdersRequest(request_id="bench", orders=[
        factory.order() for _ in range(100)]).SerializeToString()


SKU_INDEX = {f"SKU-{s:06d}": s for s in range(N_SKUS)}


def read_into_arrays(raw: bytes) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Order ids, [channel, tier, first line] per order, [sku, quantity] per line, and
    postal codes."""
    request = opb.AllocateOrdersRequest.FromString(raw)
    ids: list[str] = []
    postal: list[str] = []
    channel: list[int] = []
    tier: list[int] = []
    first: list[int] = []
    skus: list[int] = []
    quantities: list[int] = []
    for order in request.orders:
        ids.append(order.order_id)
        channel.append(CHANNELS[order.channel_id])
        tier.append(order.sla_tier)
        postal.append(order.ship_to.postal_code)
        first.append(len(skus))
        for line in order.lines:
            skus.append(SKU_INDEX[line.sku_id])
            quantities.append(line.quantity)
    return (ids, np.array([channel, tier, first], np.int64),
            np.array([skus, quantities], np.int64), postal)


def test_wire_read_100_orders_into_arrays(benchmark):
    ids, orders, lines, _ = benchmark(read_into_arrays, _raw())
    assert len(ids) == orders.shape[1] == 100 and lines.shape[1] >= 100


def test_wire_read_100_orders_into_specs_reference(benchmark):
    """What the allocation path reads a request into now: the baseline."""
    def read(raw: bytes) -> list[object]:
        return [order_from_proto(o) for o in opb.AllocateOrdersRequest.FromString(raw).orders]

    assert len(benchmark(read, _raw())) == 100


def test_wire_basic_answer_100_orders(benchmark):
    ids = [f"W-{i}" for i in range(100)]

    def answer() -> bytes:
        return opb.AllocateOrdersResponse(allocations=[
            {"order_id": order_id, "status": opb.ORDER_STATUS_ALLOCATED,
             "total_cost_micros": 12_345_678, "promised_delivery": {"seconds": 1_795_996_800},
             "method": opb.ALLOCATION_METHOD_EXACT, "placed_units": 5}
            for order_id in ids]).SerializeToString()

    reply = opb.AllocateOrdersResponse.FromString(benchmark(answer))
    assert [a.order_id for a in reply.allocations] == ids
