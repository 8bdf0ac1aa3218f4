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

from typing import Final

from core.ledger import Ledger
from core.orders import Decision, OrderRecord, PackageStatus

# (Final: compiled, read as constants rather than looked up in the module's namespace.)
_REPLANNED: Final = int(PackageStatus.REPLANNED)
_MASK64: Final = (1 << 64) - 1
_CACHE_MAX: Final = 1 << 16


def _encode_varint(value: int) -> bytes:
    rest = value & _MASK64  # a negative number: its 64-bit two's complement (10 bytes)
    out = []
    while rest >= 0x80:
        out.append((rest & 0x7F) | 0x80)
        rest >>= 7
    out.append(rest)
    return bytes(out)


_TABLE: Final = tuple(_encode_varint(v) for v in range(1 << 14))  # every 1- or 2-byte number
_varints: Final[dict[int, bytes]] = {}  # larger numbers already written (costs repeat)
_timestamps: Final[dict[int, bytes]] = {}  # dates already written (they repeat: whole days)
_strings: Final[dict[str, bytes]] = {}  # names already written: their length and UTF-8 bytes


def _varint(value: int) -> bytes:
    if 0 <= value < 16384:
        return _TABLE[value]
    found = _varints.get(value)
    if found is None:
        if len(_varints) >= _CACHE_MAX:
            _varints.clear()
        found = _varints[value] = _encode_varint(value)
    return found


def _text(value: str) -> bytes:
    """A string's length and bytes (its tag is the caller's)."""
    data = value.encode()
    return _varint(len(data)) + data


def _name(value: str) -> bytes:
    """_text, remembered: for names that repeat (SKUs, nodes, services, carriers)."""
    found = _strings.get(value)
    if found is None:
        if len(_strings) >= _CACHE_MAX:
            _strings.clear()
        found = _strings[value] = _text(value)
    return found


def _timestamp(ms: int) -> bytes:
    """A google.protobuf.Timestamp's length and body (seconds = 1, nanos = 2), remembered."""
    found = _timestamps.get(ms)
    if found is None:
        seconds, millis = divmod(ms, 1000)
        body = b"\x08" + _varint(seconds) if seconds else b""
        if millis:
            body += b"\x10" + _varint(millis * 1_000_000)
        if len(_timestamps) >= _CACHE_MAX:
            _timestamps.clear()
        found = _timestamps[ms] = _varint(len(body)) + body
    return found


def allocation_bytes(ledger: Ledger, record: OrderRecord, decision: Decision | None,
                     full: bool = True) -> bytes:
    """What `allocation_to_proto(ledger, record, decision, False, full=full)` gives, as
    the message's bytes."""
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
        out.append(b"\x10")
        out.append(_varint(status))
    promised = 0
    total = 0
    units = 0
    for package_id in record.package_ids:
        state = packages[package_id]
        quantities = state.quantities
        if not quantities:
            continue
        plan = state.plan
        carrier, handling, unit_cost, penalty = (plan.carrier_micros, plan.handling_micros,
                                                 plan.units_micros, plan.penalty_micros)
        if full:
            body = [b"\x0a", _text(plan.package_id), b"\x12", _name(nodes[plan.node].node_id)]
            if 0 <= plan.service < n_services:
                service = services[plan.service]
                if service.service_id:
                    body.append(b"\x1a")
                    body.append(_name(service.service_id))
                if service.carrier:
                    body.append(b"\x22")
                    body.append(_name(service.carrier))
            for line in plan.lines:
                qty = quantities.get(line.line_id, 0)
                if qty:
                    entry = b"\x0a" + _text(line.line_id) + b"\x12" + _name(sku_ids[line.sku])
                    entry += b"\x18" + _varint(qty)
                    if line.substitutes_sku >= 0:
                        entry += b"\x22" + _name(sku_ids[line.substitutes_sku])
                    body.append(b"\x2a")
                    body.append(_varint(len(entry)))
                    body.append(entry)
            cost = b""
            if carrier:
                cost += b"\x08" + _varint(carrier)
            if handling:
                cost += b"\x10" + _varint(handling)
            if unit_cost:
                cost += b"\x18" + _varint(unit_cost)
            if penalty:
                cost += b"\x20" + _varint(penalty)
            package_total = carrier + handling + unit_cost + penalty
            if package_total:
                cost += b"\x28" + _varint(package_total)
            body.append(b"\x32")
            body.append(_varint(len(cost)))
            body.append(cost)
            billable = min(plan.billable_lb, 2**31 - 1)
            if billable:
                body.append(b"\x38")
                body.append(_varint(billable))
            body.append(b"\x42")
            body.append(_timestamp(plan.ship_ms))
            body.append(b"\x4a")
            body.append(_timestamp(plan.promise_ms))
            package_status = int(state.status)
            if package_status:
                body.append(b"\x50")
                body.append(_varint(package_status))
            if state.wave_id:
                body.append(b"\x5a")
                body.append(_text(state.wave_id))
            if state.tracking_number:
                body.append(b"\x62")
                body.append(_text(state.tracking_number))
            written = b"".join(body)
            out.append(b"\x1a")
            out.append(_varint(len(written)))
            out.append(written)
        if state.status == _REPLANNED:
            continue  # superseded: shown, but neither shipped nor charged
        units += sum(quantities.values())
        promised = max(promised, plan.promise_ms)
        total += carrier + handling + unit_cost + penalty
    if full:
        for backorder in record.backorders.values():
            entry = b"\x0a" + _text(backorder.line_id) + b"\x12" + _name(sku_ids[backorder.sku])
            if backorder.quantity:
                entry += b"\x18" + _varint(backorder.quantity)
            if backorder.promise_ms:
                entry += b"\x22" + _timestamp(backorder.promise_ms)
            out.append(b"\x22")
            out.append(_varint(len(entry)))
            out.append(entry)
    if total:
        out.append(b"\x28")
        out.append(_varint(total))
    decision = decision or record.last_decision
    if decision is not None:
        out.append(b"\x30")
        out.append(b"\x01" if decision.method == 0 else b"\x02")
        if full and decision.rule:
            out.append(b"\x3a")
            out.append(_text(decision.rule))
    if promised:
        out.append(b"\x4a")
        out.append(_timestamp(promised))
    if units:
        out.append(b"\x70")
        out.append(_varint(units))
    return b"".join(out)
