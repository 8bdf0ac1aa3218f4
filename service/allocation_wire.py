"""An order's allocation written straight to allocd.v1.Allocation's wire bytes.

Answering a batch, setting an Allocation's fields one by one through the protobuf
runtime cost more than deciding the orders (each assignment looks the field up by
name and checks the value). Here the same message is written as bytes, the way the
protobuf encoding defines them, and read into the response in one parse.
`order_codec.allocation_to_proto` stays the reference: tests check that both give
the same message for every kind of allocation, and it still answers what this does
not write (the options of `explain`).

Only fields that hold something are written, as protobuf itself does (proto3: a
zero number or an empty string is absent); sub-messages the reference sets
explicitly (a package's cost and dates) are written even when empty.
"""

from __future__ import annotations

from typing import Final, TypeVar

from core.ledger import Ledger
from core.orders import Decision, OrderRecord, PackageStatus

# (Final: compiled, read as constants rather than looked up in the module's namespace.)
_REPLANNED: Final = int(PackageStatus.REPLANNED)
_MASK64: Final = (1 << 64) - 1
_CACHE_MAX: Final = 1 << 16
K = TypeVar("K", int, str)


def _encode_varint(value: int) -> bytes:
    rest = value & _MASK64  # a negative number: its 64-bit two's complement (10 bytes)
    out = []
    while rest >= 0x80:
        out.append((rest & 0x7F) | 0x80)
        rest >>= 7
    out.append(rest)
    return bytes(out)


_TABLE: Final = tuple(_encode_varint(v) for v in range(1 << 14))  # every 1- or 2-byte number
# A larger number's low 14 bits: two bytes, each marked as followed by more.
_LOW14: Final = tuple(bytes(((v & 0x7F) | 0x80, (v >> 7) | 0x80)) for v in range(1 << 14))
_timestamps: Final[dict[int, bytes]] = {}  # dates already written (they repeat: whole days)
_strings: Final[dict[str, bytes]] = {}  # names already written: their length and UTF-8 bytes


def _kept(cache: dict[K, bytes], key: K, value: bytes) -> bytes:
    """`value`, kept in `cache` under `key` (the cache emptied first when full)."""
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value
    return value


def _varint(value: int) -> bytes:
    """A number as a varint: from the tables up to 42 bits (costs in micros, dates in
    seconds), the rest (and negative numbers) encoded."""
    if 0 <= value < 16384:
        return _TABLE[value]
    if 16384 <= value < 268435456:  # 28 bits
        return _LOW14[value & 0x3FFF] + _TABLE[value >> 14]
    if 268435456 <= value < 4398046511104:  # 42 bits
        return b"".join((_LOW14[value & 0x3FFF], _LOW14[(value >> 14) & 0x3FFF],
                         _TABLE[value >> 28]))
    return _encode_varint(value)


def _text(value: str) -> bytes:
    """A string's length and bytes (its tag is the caller's)."""
    data = value.encode()
    return _varint(len(data)) + data


def _name(value: str) -> bytes:
    """_text, remembered: for names that repeat (SKUs, nodes, services, carriers)."""
    found = _strings.get(value)
    return _kept(_strings, value, _text(value)) if found is None else found


def _timestamp(ms: int) -> bytes:
    """A google.protobuf.Timestamp's length and body (seconds = 1, nanos = 2), remembered."""
    found = _timestamps.get(ms)
    if found is not None:
        return found
    seconds, millis = divmod(ms, 1000)
    body = b"\x08" + _varint(seconds) if seconds else b""
    if millis:
        body += b"\x10" + _varint(millis * 1_000_000)
    return _kept(_timestamps, ms, _varint(len(body)) + body)


def _put(out: list[bytes], tag: bytes, value: bytes) -> None:
    """A field: its tag, then its value as written (a number, or a length and bytes)."""
    out.append(tag)
    out.append(value)


def _number(out: list[bytes], tag: bytes, value: int) -> None:
    """A number field, written only when not zero (as proto3 does)."""
    if value:
        out.append(tag)
        out.append(_varint(value))


def _sub(out: list[bytes], tag: bytes, message: bytes) -> None:
    """A sub-message field: its tag, its length and its bytes."""
    out.append(tag)
    out.append(_varint(len(message)))
    out.append(message)


def allocation_bytes(ledger: Ledger, record: OrderRecord, decision: Decision | None,
                     full: bool = True, exception_id: str = "", exception_type: int = 0,
                     ) -> bytes:
    """What `allocation_to_proto(ledger, record, decision, False, full=full)` gives, as
    the message's bytes; with the exception the order raised, if given (its id and
    type, which the caller's outcome holds, not the record)."""
    book = ledger.orders
    packages = book.packages
    catalog = ledger.catalog
    nodes = catalog.nodes
    sku_ids = catalog.sku_ids
    services = ledger.network_spec.services
    n_services = len(services)
    out = [b"\x0a", _text(record.spec.order_id)]
    status = int(record.status)
    if status:
        _put(out, b"\x10", _varint(status))
    promised = 0
    total = 0
    units = 0
    for package_id in record.package_ids:
        state = packages[package_id]
        quantities = state.quantities
        if not quantities:
            continue
        # (Unpacked: compiled, a named tuple's field read by name is a generic lookup.)
        (plan_id, node, service_index, lines, carrier, handling, unit_cost, penalty,
         billable_lb, ship_ms, promise_ms) = state.plan
        if full:
            body = [b"\x0a", _text(plan_id), b"\x12", _name(nodes[node].node_id)]
            if 0 <= service_index < n_services:
                service = services[service_index]
                if service.service_id:
                    _put(body, b"\x1a", _name(service.service_id))
                if service.carrier:
                    _put(body, b"\x22", _name(service.carrier))
            for line_id, sku, _, substitutes_sku in lines:
                qty = quantities.get(line_id, 0)
                if qty:
                    entry = [b"\x0a", _text(line_id), b"\x12", _name(sku_ids[sku]),
                             b"\x18", _varint(qty)]
                    if substitutes_sku >= 0:
                        _put(entry, b"\x22", _name(sku_ids[substitutes_sku]))
                    _sub(body, b"\x2a", b"".join(entry))
            cost: list[bytes] = []
            _number(cost, b"\x08", carrier)
            _number(cost, b"\x10", handling)
            _number(cost, b"\x18", unit_cost)
            _number(cost, b"\x20", penalty)
            _number(cost, b"\x28", carrier + handling + unit_cost + penalty)
            _sub(body, b"\x32", b"".join(cost))
            billable = min(billable_lb, 2**31 - 1)
            if billable:
                _put(body, b"\x38", _varint(billable))
            _put(body, b"\x42", _timestamp(ship_ms))
            _put(body, b"\x4a", _timestamp(promise_ms))
            package_status = int(state.status)
            if package_status:
                _put(body, b"\x50", _varint(package_status))
            if state.wave_id:
                _put(body, b"\x5a", _text(state.wave_id))
            if state.tracking_number:
                _put(body, b"\x62", _text(state.tracking_number))
            written = b"".join(body)
            _sub(out, b"\x1a", written)
        if state.status == _REPLANNED:
            continue  # superseded: shown, but neither shipped nor charged
        units += sum(quantities.values())
        promised = max(promised, promise_ms)
        total += carrier + handling + unit_cost + penalty
    if full:
        for line_id, sku, quantity, backorder_promise_ms in record.backorders.values():
            backorder = [b"\x0a", _text(line_id), b"\x12", _name(sku_ids[sku])]
            if quantity:
                _put(backorder, b"\x18", _varint(quantity))
            if backorder_promise_ms:
                _put(backorder, b"\x22", _timestamp(backorder_promise_ms))
            _sub(out, b"\x22", b"".join(backorder))
    if total:
        _put(out, b"\x28", _varint(total))
    decision = decision or record.last_decision
    if decision is not None:
        _put(out, b"\x30", b"\x01" if decision.method == 0 else b"\x02")
        if full and decision.rule:
            _put(out, b"\x3a", _text(decision.rule))
    if promised:
        _put(out, b"\x4a", _timestamp(promised))
    if exception_id:
        _put(out, b"\x52", _text(exception_id))
    if exception_type:
        _put(out, b"\x58", _varint(exception_type))
    if units:
        _put(out, b"\x70", _varint(units))
    return b"".join(out)


def response_bytes(result: bytes, allocations: list[bytes]) -> bytes:
    """An AllocateOrdersResponse's bytes: its result (field 1) and allocations (field 2),
    each given as its message's bytes."""
    out = [b"\x0a", _varint(len(result)), result]
    for allocation in allocations:
        _sub(out, b"\x12", allocation)
    return b"".join(out)


def mutation_result_bytes(first_sequence: int, last_sequence: int, event_count: int) -> bytes:
    """A MutationResult's bytes (not replayed): what `mutation_result(outcome)` serializes
    to, for an outcome whose events run from `first_sequence` to `last_sequence`."""
    out: list[bytes] = []
    _number(out, b"\x08", first_sequence)
    _number(out, b"\x10", last_sequence)
    _number(out, b"\x18", event_count)
    return b"".join(out)


def stream_response_bytes(request_id: str, result: bytes, allocation: bytes) -> bytes:
    """An AllocateStreamResponse's bytes: its request id (field 1), result (field 2) and
    allocation (field 3), the two messages given as their bytes."""
    out = [b"\x0a", _text(request_id)] if request_id else []
    _sub(out, b"\x12", result)
    _sub(out, b"\x1a", allocation)
    return b"".join(out)
