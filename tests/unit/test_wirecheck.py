"""The compiled scan of a request's bytes (service.wirecheck) flags exactly the requests
the field walk (service.edge.invalid_field, its plain-Python reference) refuses, and the
edge's deserializer turns those into a Malformed naming the field."""

from __future__ import annotations

import math

import numpy as np
from allocd.v1 import catalog_service_pb2 as cpb
from allocd.v1 import operations_service_pb2 as ops
from allocd.v1 import order_service_pb2 as opb
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from service.edge import MAX_STRING, Malformed, _safe, invalid_field
from service.wirecheck import CLEAN, FLAGGED, may_be_refused, scan, schema_of
from tests.unit.test_edge_checks import enums, floats, orders, skus, texts


def flagged(message: Message) -> bool:
    return may_be_refused(message.SerializeToString(), message.DESCRIPTOR, MAX_STRING)


@settings(max_examples=400, deadline=None)
@given(st.lists(orders(), max_size=4), texts)
def test_the_scan_flags_the_orders_the_walk_refuses(batch, request_id):
    message = opb.AllocateOrdersRequest(request_id=request_id, orders=batch)
    assert flagged(message) == bool(invalid_field(message))


@settings(max_examples=200, deadline=None)
@given(st.lists(skus(), max_size=3))
def test_the_scan_flags_the_skus_the_walk_refuses(items):
    message = cpb.UpsertSkusRequest(request_id="r", skus=items)
    assert flagged(message) == bool(invalid_field(message))


@settings(max_examples=200, deadline=None)
@given(st.lists(enums, max_size=5), st.lists(floats, max_size=3))
def test_packed_enums_and_doubles_are_scanned_value_by_value(windows, trend):
    request = ops.GetKpisRequest(windows=windows)
    assert flagged(request) == bool(invalid_field(request))
    kpi = ops.Kpi(trend=trend)
    assert flagged(kpi) == (not all(math.isfinite(x) for x in trend))


def test_string_length_counts_characters_not_bytes():
    # "é" is two bytes in UTF-8: twice the limit in bytes is still within it.
    at_limit = opb.AllocateOrderRequest(request_id="é" * MAX_STRING)
    over = opb.AllocateOrderRequest(request_id="é" * (MAX_STRING + 1))
    assert not flagged(at_limit) and not invalid_field(at_limit)
    assert flagged(over) and invalid_field(over)


def test_negative_enum_values_are_read_as_int32():
    order = opb.Order(order_id="o", sla_tier=-1)
    assert flagged(order) and "sla_tier" in invalid_field(order)
    assert not flagged(opb.Order(order_id="o", sla_tier=2))


def test_the_edge_answers_a_flagged_request_with_the_field_and_passes_a_clean_one():
    parse = _safe(opb.AllocateOrderRequest.FromString, "/allocd.v1.OrderService/AllocateOrder")
    bad = opb.AllocateOrderRequest(request_id="r", order=opb.Order(order_id="a\x00b"))
    refused = parse(bad.SerializeToString())
    assert isinstance(refused, Malformed)
    assert refused.reason == "order.order_id: control characters are not allowed"
    good = opb.AllocateOrderRequest(request_id="r", order=opb.Order(order_id="ab"))
    assert parse(good.SerializeToString()) == good


def test_a_value_overwritten_on_the_wire_is_flagged_but_the_walk_lets_the_message_pass():
    # Fields repeated on the wire merge; the last string wins. The scan sees both and
    # flags; the edge then walks the parsed message, which holds only the clean one.
    first = opb.AllocateOrderRequest(request_id="bad\x01")
    last = opb.AllocateOrderRequest(request_id="good")
    raw = first.SerializeToString() + last.SerializeToString()
    assert may_be_refused(raw, opb.AllocateOrderRequest.DESCRIPTOR, MAX_STRING)
    parsed = _safe(opb.AllocateOrderRequest.FromString, "m")(raw)
    assert not isinstance(parsed, Malformed)
    assert parsed.request_id == "good"


def test_bytes_that_do_not_walk_as_a_message_are_flagged():
    descriptor = opb.AllocateOrderRequest.DESCRIPTOR
    s = schema_of(descriptor)
    for raw in (b"\x0a\x05ab", b"\x0b", b"\x0f\x00", b"\x80"):
        buf = np.frombuffer(raw, np.uint8)
        assert scan(buf, s.kind, s.arg, s.enum_start, s.enum_values, MAX_STRING) == FLAGGED
    assert scan(np.frombuffer(b"", np.uint8), s.kind, s.arg, s.enum_start, s.enum_values,
                MAX_STRING) == CLEAN
