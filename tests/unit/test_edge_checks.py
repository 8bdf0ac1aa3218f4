"""The edge's field check (service.edge.invalid_field) names the same field, with the same
reason, as a plain walk over every field and value."""

from __future__ import annotations

import math

from allocd.v1 import catalog_service_pb2 as cpb
from allocd.v1 import order_service_pb2 as opb
from allocd.v1 import types_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from service.edge import MAX_STRING, invalid_field


def reference(message: Message, path: str = "") -> str:
    """Field by field, value by value, character by character."""
    for field, value in message.ListFields():
        name = f"{path}{field.name}"
        values = value if field.is_repeated else (value,)
        for index, item in enumerate(values):
            where = f"{name}[{index}]" if field.is_repeated else name
            kind = field.type
            if kind == FieldDescriptor.TYPE_MESSAGE:
                problem = reference(item, f"{where}.")
                if problem:
                    return problem
            elif kind == FieldDescriptor.TYPE_STRING:
                if len(item) > MAX_STRING:
                    return f"{where}: longer than {MAX_STRING} characters"
                if any((ch < " " and ch not in "\t\n\r") or ch == "\x7f" for ch in item):
                    return f"{where}: control characters are not allowed"
            elif kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
                if not math.isfinite(item):
                    return f"{where}: must be a finite number"
            elif kind == FieldDescriptor.TYPE_ENUM and field.enum_type is not None and (
                    item not in field.enum_type.values_by_number):
                return f"{where}: {item} is not a {field.enum_type.name} value"
    return ""


# Mostly ordinary values (so that later fields get checked too), sometimes a control
# character, a non-printable that is allowed (tab, no-break space, line separator), an
# oversize string, NaN or infinity, an undefined enum value.
plain = st.text(alphabet="abcXYZ-_ 09", max_size=8)
texts = st.one_of(
    plain, plain, plain, plain, plain, plain,
    st.text(alphabet=st.sampled_from(["a", " ", "\t", "\n", "\r", "\x00", "\x07", "\x1f",
                                      "\x7f", "\x80", "\xa0", "\u2028", "é"]), max_size=6),
    st.integers(MAX_STRING - 1, MAX_STRING + 1).map(lambda n: "x" * n),
)
finite = st.floats(-1e3, 1e3)
floats = st.one_of(finite, finite, finite, finite,
                   st.sampled_from([math.nan, math.inf, -math.inf]))
defined = st.integers(0, 2)
enums = st.one_of(defined, defined, defined, defined, st.integers(-1, 8))


@st.composite
def orders(draw: st.DrawFn) -> opb.Order:
    order = opb.Order(order_id=draw(texts), channel_id=draw(texts), sla_tier=draw(enums),
                      fraud_score=draw(floats), payment_status=draw(enums),
                      customer_id=draw(texts))
    order.ship_to.postal_code = draw(texts)
    if draw(st.booleans()):
        order.ship_to.latitude = draw(floats)
    for _ in range(draw(st.integers(0, 4))):
        order.lines.add(line_id=draw(texts), sku_id=draw(texts),
                        quantity=draw(st.integers(0, 3)))
    if draw(st.booleans()):
        order.deliver_by.seconds = draw(st.integers(0, 10**9))
    return order


@st.composite
def skus(draw: st.DrawFn) -> types_pb2.Sku:
    sku = types_pb2.Sku(sku_id=draw(texts), name=draw(texts), category=draw(texts),
                        weight_lb=draw(floats))
    if draw(st.booleans()):
        sku.dimensions.length_in = draw(floats)
    return sku


@settings(max_examples=400, deadline=None)
@given(st.lists(orders(), max_size=4), texts)
def test_orders_are_checked_as_the_plain_walk_checks_them(batch, request_id):
    message = opb.AllocateOrdersRequest(request_id=request_id, orders=batch)
    assert invalid_field(message) == reference(message)


@settings(max_examples=200, deadline=None)
@given(st.lists(skus(), max_size=3))
def test_skus_are_checked_as_the_plain_walk_checks_them(items):
    message = cpb.UpsertSkusRequest(request_id="r", skus=items)
    assert invalid_field(message) == reference(message)


def test_only_a_number_past_int64_in_a_read_s_answer_is_out_of_range():
    from allocd.v1 import finance_service_pb2 as fpb
    from allocd.v1 import inventory_service_pb2 as ipb

    from service.errors import _past_int64

    read, write = fpb.GetTrialBalanceRequest(), ipb.ReceiveInventoryRequest()
    assert _past_int64(ValueError(f"Value out of range: {2**63}"), read)
    assert _past_int64(ValueError(f"Value out of range: {-(2**63) - 1}"), read)
    for number in (2**31, -1, 2**63 - 1):  # an int32's or a uint's field: a fault
        assert not _past_int64(ValueError(f"Value out of range: {number}"), read)
    assert not _past_int64(ValueError("some other value error"), read)
    assert not _past_int64(ValueError(f"Value out of range: {2**63}"), write)  # a mutation
