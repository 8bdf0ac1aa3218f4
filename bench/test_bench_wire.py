"""The wire side of a 100-order AllocateOrders call, alone: what any batch path hosted in
Python pays to read a request and to answer it, whatever it does in between.

Reading every field `order_from_proto` reads into columns (numbers as arrays, strings as
lists) sits beside reading the request into order specs, as the path does now, in the
same run; neither checks anything. The basic answer is built from plain values, as a
batch path kept as arrays would have them. Together they bound from below what such a
path could reach.
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


def read_into_arrays(raw: bytes) -> tuple[list[list[str]], np.ndarray, np.ndarray,
                                           np.ndarray]:
    """Per order: ids, postal codes and customers; [channel, tier, payment, address,
    allow split, deliver-by ms, first line] and [fraud score, latitude, longitude]. Per
    line: [sku, quantity], and line ids."""
    request = opb.AllocateOrdersRequest.FromString(raw)
    ids: list[str] = []
    postal: list[str] = []
    customers: list[str] = []
    ints: list[tuple[int, ...]] = []
    floats: list[tuple[float, float, float]] = []
    line_ids: list[str] = []
    skus: list[int] = []
    quantities: list[int] = []
    nan = float("nan")
    for order in request.orders:
        ship_to = order.ship_to
        ids.append(order.order_id)
        postal.append(ship_to.postal_code)
        customers.append(order.customer_id)
        deliver_by = order.deliver_by
        ints.append((CHANNELS[order.channel_id], order.sla_tier, order.payment_status,
                     order.address_status,
                     order.allow_split if order.HasField("allow_split") else True,
                     deliver_by.seconds * 1000 + deliver_by.nanos // 1_000_000
                     if order.HasField("deliver_by") else 0, len(skus)))
        floats.append((order.fraud_score,
                       ship_to.latitude if ship_to.HasField("latitude") else nan,
                       ship_to.longitude if ship_to.HasField("longitude") else nan))
        for i, line in enumerate(order.lines, 1):
            line_ids.append(line.line_id or str(i))
            skus.append(SKU_INDEX[line.sku_id])
            quantities.append(line.quantity)
    return ([ids, postal, customers, line_ids], np.array(ints, np.int64),
            np.array(floats, np.float64), np.array([skus, quantities], np.int64))


def test_wire_read_100_orders_into_arrays(benchmark):
    strings, ints, floats, lines = benchmark(read_into_arrays, _raw())
    assert len(strings[0]) == ints.shape[0] == floats.shape[0] == 100
    assert lines.shape[1] == len(strings[3]) >= 100


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
