"""Orders read straight from an AllocateOrdersRequest's wire bytes.

Reading a batch's orders field by field through the protobuf runtime costs several
microseconds an order (each read looks the field up by name and wraps the value).
Here the request's bytes, as the runtime writes them, are read the way the protobuf
encoding defines them. `order_codec.order_from_proto` stays the reference: this reads
the orders an OMS plainly sends and gives None for any order it does not read the
way the reference would (a field given twice, an unexpected wire type or field, a
value the reference refuses or treats specially); the caller has the reference read
those, and refuse them with its own field-named errors. Tests check that both give
the same spec for any order.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Final

from core.network import SlaTier
from core.orders import AddressStatus, OrderLineSpec, OrderSpec, PaymentStatus

MAX_TIMESTAMP_S: Final = 253402300799  # service.codec's bound: 9999-12-31T23:59:59Z
_TOP: Final = 1 << 63  # a varint this large is a negative int64: left to the reference
# SlaTier by wire value (unspecified means standard), as order_codec reads it.
_TIERS: Final = {0: SlaTier.STANDARD, **{int(tier) + 1: tier for tier in SlaTier}}
_PAYMENTS: Final = {int(status): status for status in PaymentStatus}
_ADDRESSES: Final = {int(status): status for status in AddressStatus}
_DOUBLE: Final = struct.Struct("<d")
_new: Final[Any] = tuple.__new__


def _varint(data: bytes, i: int, end: int) -> tuple[int, int]:
    """The varint at `i` and the offset after it; (-1, -1) if it runs past `end`, is
    longer than ten bytes or is a negative int64."""
    result = 0
    shift = 0
    while i < end and shift < 64:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result, i) if result < _TOP else (-1, -1)
        shift += 7
    return -1, -1


def _length(data: bytes, i: int, end: int) -> tuple[int, int]:
    """A length-delimited field's [start, stop) after its tag; (-1, -1) if malformed."""
    n, i = _varint(data, i, end)
    if i < 0 or i + n > end:
        return -1, -1
    return i, i + n


def _skip(data: bytes, wire: int, i: int, end: int) -> int:
    """The offset after a field of another message's we do not read; -1 if malformed."""
    if wire == 0:
        return _varint(data, i, end)[1]
    if wire == 1:
        return i + 8 if i + 8 <= end else -1
    if wire == 2:
        return _length(data, i, end)[1]
    if wire == 5:
        return i + 4 if i + 4 <= end else -1
    return -1


def _key(data: bytes, i: int, end: int, seen: int) -> tuple[int, int, int]:
    """The next field's key, the offset after it, and `seen` (a bit a field number) with
    its field added; the offset is -1 if the key is malformed or its field came before
    (which the runtime would merge, or keep the last of)."""
    key, i = _varint(data, i, end)
    field = key >> 3
    if i < 0 or field > 15 or seen & (1 << field):  # (none of ours is above 15)
        return 0, -1, seen
    return key, i, seen | (1 << field)


def _ship_to(data: bytes, i: int, end: int) -> tuple[str, float | None, float | None] | None:
    """A ShipTo's postal code, latitude and longitude (None when absent)."""
    postal_code = ""
    latitude: float | None = None
    longitude: float | None = None
    seen = 0
    while i < end:
        key, i, seen = _key(data, i, end, seen)
        if key == 0x0A:
            start, i = _length(data, i, end)
            if i < 0:
                return None
            postal_code = data[start:i].decode()
        elif key in (0x11, 0x19) and i + 8 <= end:
            value = _DOUBLE.unpack_from(data, i)[0]
            i += 8
            if key == 0x11:
                latitude = value
            else:
                longitude = value
        else:  # (a malformed or repeated key too: its key reads as 0)
            return None
    return postal_code, latitude, longitude


def _timestamp_ms(data: bytes, i: int, end: int) -> int:
    """A Timestamp as milliseconds since the epoch; -1 if it is not one the reference
    reads as it is (negative, after 9999, or nanos out of range)."""
    seconds = 0
    nanos = 0
    seen = 0
    while i < end:
        key, i, seen = _key(data, i, end, seen)
        if key == 0x08:
            seconds, i = _varint(data, i, end)
        elif key == 0x10:
            nanos, i = _varint(data, i, end)
        else:
            return -1
        if i < 0:
            return -1
    if seconds > MAX_TIMESTAMP_S or nanos >= 1_000_000_000:
        return -1
    return seconds * 1000 + nanos // 1_000_000


def _line(data: bytes, i: int, end: int, position: int) -> OrderLineSpec | None:
    line_id = ""
    sku_id = ""
    quantity = 0
    unit_price = -1  # (not given)
    seen = 0
    while i < end:
        key, i, seen = _key(data, i, end, seen)
        if key in (0x0A, 0x12):  # line_id, sku_id
            start, i = _length(data, i, end)
            if i < 0:
                return None
            if key == 0x0A:
                line_id = data[start:i].decode()
            else:
                sku_id = data[start:i].decode()
        elif key == 0x18:  # quantity
            quantity, i = _varint(data, i, end)
            if i < 0:
                return None
        elif key == 0x20:  # unit_price_micros (a negative one is the reference's to refuse)
            unit_price, i = _varint(data, i, end)
            if i < 0:
                return None
        else:
            return None
    spec: OrderLineSpec = _new(OrderLineSpec, (line_id or str(position), sku_id, quantity,
                                               unit_price))
    return spec


def _order(data: bytes, i: int, end: int) -> OrderSpec | None:
    try:
        return _read_order(data, i, end)
    except UnicodeDecodeError:  # (bytes the runtime wrote never hold one)
        return None


def _read_order(data: bytes, i: int, end: int) -> OrderSpec | None:
    order_id = ""
    channel_id = ""
    tier = 0
    lines: list[OrderLineSpec] = []
    postal_code = ""
    latitude: float | None = None
    longitude: float | None = None
    deliver_by_ms = 0
    payment = 0
    fraud_score = 0.0
    address = 0
    allow_split = True
    allow_substitution = False
    customer_id = ""
    seen = 0
    while i < end:
        key, i = _varint(data, i, end)
        if i < 0:
            return None
        field = key >> 3
        if field != 5:  # (lines repeat; every other field comes once)
            if field > 12 or seen & (1 << field):
                return None
            seen |= 1 << field
        wire = key & 7
        if wire == 2:
            start, i = _length(data, i, end)
            if i < 0:
                return None
            if field == 1:
                order_id = data[start:i].decode()
            elif field == 2:
                channel_id = data[start:i].decode()
            elif field == 4:
                ship_to = _ship_to(data, start, i)
                if ship_to is None:
                    return None
                postal_code, latitude, longitude = ship_to
            elif field == 5:
                line = _line(data, start, i, len(lines) + 1)
                if line is None:
                    return None
                lines.append(line)
            elif field == 6:
                deliver_by_ms = _timestamp_ms(data, start, i)
                if deliver_by_ms < 0:
                    return None
            elif field == 12:
                customer_id = data[start:i].decode()
            else:
                return None
        elif wire == 0:
            value_, i = _varint(data, i, end)
            if i < 0:
                return None
            if field == 3:
                tier = value_
            elif field == 7:
                payment = value_
            elif field == 9:
                address = value_
            elif field == 10:
                allow_split = value_ != 0
            elif field == 11:
                allow_substitution = value_ != 0
            else:
                return None
        elif wire == 1 and field == 8 and i + 8 <= end:
            fraud_score = _DOUBLE.unpack_from(data, i)[0]
            i += 8
        else:
            return None
    # What the reference accepts as it is; anything else is left to it.
    sla_tier = _TIERS.get(tier)
    payment_status = _PAYMENTS.get(payment or 1)
    address_status = _ADDRESSES.get(address)
    if sla_tier is None or payment_status is None or address_status is None:
        return None
    if (latitude is None) != (longitude is None) or len(postal_code) > 16:
        return None
    if latitude is not None and longitude is not None and not (
            math.isfinite(latitude) and math.isfinite(longitude)
            and -90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    if customer_id and (len(customer_id) > 128 or not customer_id.isprintable()):
        return None
    spec: OrderSpec = _new(OrderSpec, (
        order_id, channel_id, sla_tier, tuple(lines), postal_code, latitude, longitude,
        deliver_by_ms, payment_status, fraud_score, address_status, allow_split,
        allow_substitution, customer_id))
    return spec


def orders_from_request(data: bytes) -> list[OrderSpec | None]:
    """Each order of an AllocateOrdersRequest (its field 2), in order: its spec, or None
    where the reference must read it. Empty if the bytes cannot be read as a request.
    (An AllocateOrderRequest's or AllocateStreamRequest's one order is field 2 too.)"""
    specs: list[OrderSpec | None] = []
    i = 0
    end = len(data)
    while i < end:
        key, i = _varint(data, i, end)
        if i < 0:
            return []
        if key == 0x12:
            start, i = _length(data, i, end)
            if i < 0:
                return []
            specs.append(_order(data, start, i))
        else:
            i = _skip(data, key & 7, i, end)
            if i < 0:
                return []
    return specs
