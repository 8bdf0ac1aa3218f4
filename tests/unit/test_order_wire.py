"""A batch's orders read straight from the request's bytes (service/order_wire.py)
against the reference that reads them field by field (order_codec.order_from_proto):
any order it reads gives the reference's spec, the orders an OMS plainly sends are
all read, and bytes it does not expect are left to the reference."""

from __future__ import annotations

import math
import tracemalloc

import pytest
from allocd.v1 import order_service_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.grpc_ratio import OrderFactory
from core.errors import InvalidArgument
from service.order_codec import order_from_proto, single_order_from_proto
from service.order_wire import orders_from_request

ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
PLAIN = st.text("abcXYZ-_09 éü€", max_size=12)
# Mostly what an OMS sends; now and then a value the reference refuses or reads
# specially, or one at the edge of what it accepts.
TEXT = st.one_of(PLAIN, PLAIN, PLAIN, ANY_TEXT)
COORDINATE = st.one_of(st.floats(-90, 90), st.floats(-90, 90),
                       st.sampled_from((-90.0, 90.0, -180.0, 180.0, -90.5, 90.5, -180.5, 180.5)),
                       st.floats(allow_nan=True, allow_infinity=True))
MAX_S = 253402300799  # the latest timestamp accepted: 9999-12-31T23:59:59Z


def _enum(*valid: int) -> st.SearchStrategy[int]:
    return st.sampled_from(valid * 9 + (-1, max(valid) + 1, 7))


@st.composite
def _orders(draw: st.DrawFn) -> pb.Order:
    order = pb.Order(order_id=draw(TEXT), channel_id=draw(TEXT),
                     sla_tier=draw(_enum(0, 1, 2, 3, 4)), payment_status=draw(_enum(0, 1, 2)),
                     fraud_score=draw(st.one_of(st.floats(0, 1), st.floats())),
                     address_status=draw(_enum(0, 1, 2)),
                     allow_substitution=draw(st.booleans()),
                     customer_id=draw(st.one_of(PLAIN, PLAIN, PLAIN, ANY_TEXT, st.text(
                         "ab", min_size=126, max_size=131))))
    for _ in range(draw(st.integers(0, 4))):
        line = order.lines.add(line_id=draw(TEXT), sku_id=draw(TEXT),
                               quantity=draw(st.integers(1, 9) | st.integers(-(2**63), 2**63 - 1)))
        if draw(st.booleans()):  # a price paid (0: a free line), or none given
            line.unit_price_micros = draw(st.integers(0, 10**13) | st.sampled_from((0, -1))
                                          | st.integers(-(2**63), 2**63 - 1))
    if draw(st.booleans()):
        order.ship_to.postal_code = draw(st.one_of(PLAIN, PLAIN, st.text("0123456789",
                                                                          min_size=15,
                                                                          max_size=18)))
        where = draw(st.sampled_from(("none",) * 4 + ("both",) * 6 + ("latitude", "longitude")))
        if where in ("both", "latitude"):
            order.ship_to.latitude = draw(COORDINATE)
        if where in ("both", "longitude"):
            order.ship_to.longitude = draw(st.one_of(COORDINATE, st.floats(-180, 180)))
    if draw(st.booleans()):
        order.allow_split = draw(st.booleans())
    if draw(st.booleans()):
        order.deliver_by.CopyFrom(Timestamp(
            seconds=draw(st.one_of(st.integers(0, 4_102_444_800), st.integers(0, 4_102_444_800),
                                   st.sampled_from((0, -1, MAX_S, MAX_S + 1, MAX_S + 10**8)),
                                   st.integers(-(2**40), 2**40))),
            nanos=draw(st.integers(0, 999_999_999) | st.integers(-5, 10**9 + 5))))
    return order


def _reference(order: pb.Order, field: str) -> object:
    try:
        return order_from_proto(order, field)
    except InvalidArgument as refused:
        return refused


@settings(max_examples=500, deadline=None)
@given(st.lists(_orders(), min_size=1, max_size=4), TEXT)
def test_any_order_read_from_bytes_is_the_reference_spec(orders, request_id):
    request = pb.AllocateOrdersRequest(request_id=request_id, orders=orders, explain=True)
    read = orders_from_request(request.SerializeToString())
    assert len(read) == len(orders)
    for i, (order, spec) in enumerate(zip(request.orders, read, strict=True)):
        expected = _reference(order, f"orders[{i}]")
        if spec is not None:  # read: exactly what the reference reads (NaN included)
            assert not isinstance(expected, InvalidArgument), expected
            assert repr(spec) == repr(expected)
        elif not isinstance(expected, InvalidArgument):
            # Left to the reference, though it reads the order, only for a negative
            # quantity or price (a 10-byte varint here; the core refuses it, naming the
            # line).
            assert any(line.quantity < 0 or line.unit_price_micros < 0
                       for line in order.lines), order


def test_the_orders_an_oms_plainly_sends_are_all_read():
    factory = OrderFactory(5000, 3, "W")
    orders = [factory.order() for _ in range(200)]
    orders[0].deliver_by.CopyFrom(Timestamp(seconds=1_900_000_000, nanos=5_000_000))
    orders[1].ship_to.latitude, orders[1].ship_to.longitude = 40.7, -74.0
    orders[2].customer_id, orders[2].allow_split = "C-1", False
    orders[3].lines[0].unit_price_micros = 12_990_000
    orders[4].lines[0].unit_price_micros = 0
    request = pb.AllocateOrdersRequest(request_id="r", orders=orders)
    read = orders_from_request(request.SerializeToString())
    assert all(spec is not None for spec in read)
    assert read == [order_from_proto(order) for order in request.orders]
    assert read[0].deliver_by_ms == 1_900_000_000_005 and read[2].allow_split is False
    assert [read[k].lines[0].unit_price_micros for k in (3, 4, 5)] == [12_990_000, 0, -1]


def test_bytes_it_does_not_expect_are_left_to_the_reference():
    plain = pb.Order(order_id="o", channel_id="web", lines=[pb.OrderLine(sku_id="s", quantity=1)])
    body = plain.SerializeToString()

    def request_of(order_bytes: bytes) -> bytes:
        return b"\x12" + bytes([len(order_bytes)]) + order_bytes

    assert orders_from_request(request_of(body)) == [order_from_proto(plain)]
    for odd in (body + b"\x68\x01",  # an unknown field (13)
                body + b"\x0a\x01p",  # order_id again (the runtime keeps the last)
                body + b"\x22\x00" + b"\x22\x00",  # ship_to twice (the runtime merges)
                body + b"\x40\x01",  # fraud_score as a varint
                body + b"\x0a\x01\xff"):  # not UTF-8
        assert orders_from_request(request_of(odd)) == [None]
    # A request it cannot read at all: nothing, and the caller reads every order itself.
    assert orders_from_request(b"\x12\x05ab") == []
    assert orders_from_request(b"\x0f") == []
    assert math.isnan(orders_from_request(request_of(
        pb.Order(fraud_score=math.nan).SerializeToString()))[0].fraud_score)


def _edge_orders() -> list[pb.Order]:
    orders = []
    for latitude, longitude in ((-90, 0), (90, 0), (-90.0001, 0), (90.0001, 0), (0, -180),
                                (0, 180), (0, -180.0001), (0, 180.0001)):
        order = pb.Order(order_id="o")
        order.ship_to.latitude, order.ship_to.longitude = latitude, longitude
        orders.append(order)
    for postal in ("1" * 16, "1" * 17):
        orders.append(pb.Order(order_id="o", ship_to=pb.ShipTo(postal_code=postal)))
    orders += [pb.Order(order_id="o", customer_id=c) for c in ("c" * 128, "c" * 129, "c\n")]
    for seconds, nanos in ((MAX_S, 999_999_999), (MAX_S + 1, 0), (0, 1_000_000_000), (0, -1)):
        orders.append(pb.Order(order_id="o", deliver_by=Timestamp(seconds=seconds, nanos=nanos)))
    orders += [pb.Order(order_id="o", sla_tier=t) for t in (0, 4, 5, -1)]
    orders += [pb.Order(order_id="o", payment_status=p) for p in (0, 1, 2, 3, -1)]
    orders += [pb.Order(order_id="o", address_status=a) for a in (0, 2, 3, -1)]
    orders += [pb.Order(order_id="o", lines=[pb.OrderLine(quantity=q)])
               for q in (0, -1, 2**63 - 1)]
    orders += [pb.Order(order_id="o", lines=[pb.OrderLine(quantity=1, unit_price_micros=u)])
               for u in (0, -1, 2**63 - 1)]
    return orders


def test_values_at_the_edges_are_read_as_the_reference_reads_them():
    orders = _edge_orders()
    read = orders_from_request(pb.AllocateOrdersRequest(orders=orders).SerializeToString())
    assert len(read) == len(orders)
    for order, spec in zip(orders, read, strict=True):
        expected = _reference(order, "order")
        if spec is not None:
            assert repr(spec) == repr(expected), order
        else:  # left to the reference: it refuses it, or a negative quantity or price
            assert (isinstance(expected, InvalidArgument) or order.lines[0].quantity < 0
                    or order.lines[0].unit_price_micros < 0), order
    assert sum(spec is not None for spec in read) == 18  # every edge accepted is read
    priced = [spec.lines[0].unit_price_micros for spec in read[-3:] if spec is not None]
    assert priced == [0, 2**63 - 1]  # (the core refuses the second, naming the line)


def test_a_field_number_far_out_is_left_to_the_reference_at_once():
    """Unknown fields survive the runtime's parse and are written back. The largest field
    number is left to the reference like any other, without a bit set for it (a 67 MB
    number): the reader's peak memory stays small."""
    key = bytearray()
    value = 536_870_911 << 3  # the largest field number, as a varint key
    while value >= 0x80:
        key.append(value & 0x7F | 0x80)
        value >>= 7
    key.append(value)
    line = b"\x12\x01s" + bytes(key) + b"\x01"  # inside a line
    ship_to = b"\x22" + bytes([len(key) + 1]) + bytes(key) + b"\x01"  # inside the ship-to
    for body in (b"\x0a\x01o\x2a" + bytes([len(line)]) + line, b"\x0a\x01o" + ship_to,
                 b"\x0a\x01o" + bytes(key) + b"\x01"):  # in the order itself
        request = b"\x12" + bytes([len(body)]) + body
        assert pb.AllocateOrdersRequest.FromString(request).orders[0].order_id == "o"
        tracemalloc.start()
        try:
            assert orders_from_request(request) == [None]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, peak


def test_a_single_order_call_is_read_the_same_way():
    """AllocateOrder's and AllocateStream's requests carry their one order in field 2."""
    order = OrderFactory(5000, 4, "S").order()
    order.deliver_by.CopyFrom(Timestamp(seconds=1_900_000_000))
    for request in (pb.AllocateOrderRequest(request_id="r", order=order, explain=True),
                    pb.AllocateStreamRequest(request_id="r", order=order, view=2)):
        assert single_order_from_proto(request) == order_from_proto(order)
        assert orders_from_request(request.SerializeToString()) == [order_from_proto(order)]
    odd = pb.AllocateOrderRequest(order=pb.Order(order_id="o", sla_tier=9))
    assert orders_from_request(odd.SerializeToString()) == [None]
    with pytest.raises(InvalidArgument, match="sla_tier"):
        single_order_from_proto(odd)
    assert single_order_from_proto(pb.AllocateOrderRequest()) == order_from_proto(pb.Order())
