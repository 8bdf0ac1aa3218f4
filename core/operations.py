"""Command handlers: validate a command against the ledger, plan its events, apply them.

A handler never mutates state itself: it returns events, and `execute` hands
them to `Ledger.apply`, which applies all of them or none.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from core import commands as c
from core.adjustments import FREE_BUCKETS, adjust
from core.alerts import ActionType, ActionUndo
from core.availability import sale_floors
from core.catalog import MAX_CHANNELS
from core.demand import DemandForecast
from core.errors import (
    AlreadyExists,
    ApplyFailed,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from core.finance import JournalClosed, LandedCost
from core.ledger import CountHold, Ledger, count_hold_of
from core.model import (
    LINE_VALUE_MAX,
    MONEY_MAX,
    SKU_SIDE_MAX_IN,
    SKU_WEIGHT_MAX_LB,
    Bucket,
    Event,
    EventKind,
)
from core.network import MAX_UNIT_MICROS, compile_network
from core.order_ops import HANDLERS as ORDER_HANDLERS
from core.order_ops import inbound_cancelled, stock_arrived
from core.plan import Plan as _Plan
from core.replan_ops import HANDLERS as REPLAN_HANDLERS
from core.return_ops import HANDLERS as RETURN_HANDLERS
from core.rule_ops import HANDLERS as RULE_HANDLERS
from core.rule_ops import evaluate as evaluate_rules
from core.validation import MAX_ID_LENGTH, check_identifier
from core.validation import check_bucket as _bucket
from core.validation import check_lines as _lines
from core.validation import check_quantity as _quantity


@dataclass(frozen=True, slots=True)
class ReserveResult:
    reservation_id: str
    expires_ms: int


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    released: int


@dataclass(frozen=True, slots=True)
class ExpireResult:
    reservation_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CountOutcome:
    sku_id: str
    node_id: str
    expected: int
    counted: int
    variance: int
    adjusted: int  # units booked as an adjustment
    held: int  # units quarantined pending approval
    exception_id: str  # set when the variance was held for approval


@dataclass(frozen=True, slots=True)
class CountResult:
    lines: tuple[CountOutcome, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    events: tuple[Event, ...]
    detail: Any = None
    #: Orders whose backorders units the command made AVAILABLE were allocated to
    #: (order_ops.stock_arrived), in the order allocated.
    filled: tuple[str, ...] = ()


# ---- validation helpers --------------------------------------------------------
def _money(value: int, field_name: str) -> int:
    if not 0 <= value <= MONEY_MAX:
        raise InvalidArgument(f"{field_name} must be between 0 and {MONEY_MAX}", field_name)
    return value


def _line_money(ledger: Ledger, sku: int, qty: int, unit_micros: int, i: int) -> int:
    """A receipt's or an inbound line's unit cost (0: the SKU's standard cost, as the books
    take it), within MONEY_MAX and with the line's value within LINE_VALUE_MAX."""
    unit = _money(unit_micros, f"lines[{i}].unit_cost_micros")
    value = qty * (unit or int(ledger.catalog.unit_cost_micros[sku]))
    if value > LINE_VALUE_MAX:
        raise InvalidArgument(
            f"lines[{i}] is worth {value} micros, more than a line may be ({LINE_VALUE_MAX})",
            f"lines[{i}].quantity")
    return unit


def _finite(value: float, field_name: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{field_name} must be a finite number >= 0", field_name)
    return value


# ---- handlers --------------------------------------------------------------------
def _take_inbound(ledger: Ledger, consumed: dict[tuple[str, int, int], int],
                  key: tuple[str, int, int], qty: int, sku_id: str, node_id: str, i: int,
                  done: str, missing_field: str) -> None:
    """Line i takes `qty` units of inbound stock `key` (reference, sku, node), received or
    cancelled (`done`): there must be such inbound stock, with as many units still in
    transit as the command's lines take of it together (`consumed`, kept across lines)."""
    inbound = ledger.inbound.get(key)
    if inbound is None:
        raise NotFound(f"no inbound {key[0]!r} of {sku_id!r} at {node_id!r}", missing_field)
    consumed[key] = consumed.get(key, 0) + qty
    if consumed[key] > inbound.remaining:
        raise FailedPrecondition(
            f"inbound {key[0]!r} has {inbound.remaining} units of {sku_id!r} still in "
            f"transit, {consumed[key]} {done}", f"lines[{i}].quantity")


def _receive(p: _Plan, cmd: c.ReceiveStock) -> None:
    _lines(cmd.lines)
    cat = p.ledger.catalog
    consumed: dict[tuple[str, int, int], int] = {}
    for i, line in enumerate(cmd.lines):
        sku = cat.sku(line.sku_id, f"lines[{i}].sku_id")
        node = cat.node(line.node_id, f"lines[{i}].node_id")
        qty = _quantity(line.quantity, f"lines[{i}].quantity")
        to = _bucket(line.to_bucket, frozenset({Bucket.AVAILABLE, Bucket.QUARANTINED}),
                     f"lines[{i}].to_bucket")
        if line.inbound_reference:
            _take_inbound(p.ledger, consumed, (line.inbound_reference, sku, node), qty,
                          line.sku_id, line.node_id, i, "received",
                          f"lines[{i}].inbound_reference")
            p.add(EventKind.INBOUND_RECEIVED, sku=sku, node=node,
                  from_bucket=Bucket.IN_TRANSIT, to_bucket=to, quantity=qty,
                  reference=line.inbound_reference)
        else:
            p.add(EventKind.RECEIVED, sku=sku, node=node, to_bucket=to, quantity=qty,
                  reference=cmd.reference,
                  amount=_line_money(p.ledger, sku, qty, line.unit_cost_micros, i))


def _expect_inbound(p: _Plan, cmd: c.ExpectInbound) -> None:
    check_identifier(cmd.reference, "reference")
    if cmd.reference in p.ledger.books.transfers:
        # (The books would take the purchase's receipts for the transfer's: not bought.)
        raise AlreadyExists(f"{cmd.reference!r} is a transfer's id", "reference")
    _lines(cmd.lines)
    cat = p.ledger.catalog
    for i, line in enumerate(cmd.lines):
        sku = cat.sku(line.sku_id, f"lines[{i}].sku_id")
        node = cat.node(line.node_id, f"lines[{i}].node_id")
        qty = _quantity(line.quantity, f"lines[{i}].quantity")
        if line.expected_ms <= 0:
            raise InvalidArgument("expected time is required", f"lines[{i}].expected_time")
        p.add(EventKind.INBOUND_EXPECTED, sku=sku, node=node, to_bucket=Bucket.IN_TRANSIT,
              quantity=qty, reference=cmd.reference, due_ms=line.expected_ms,
              amount=_line_money(p.ledger, sku, qty, line.unit_cost_micros, i))


def _cancel_inbound(p: _Plan, cmd: c.CancelInbound) -> None:
    check_identifier(cmd.reference, "reference")
    ledger = p.ledger
    if cmd.reference in ledger.books.transfers:
        raise FailedPrecondition(
            f"{cmd.reference!r} is a transfer: its units left the source and are received "
            "or written off at the target, not cancelled", "reference")
    if not cmd.lines:  # all that is still expected under the reference
        keys = sorted(key for key in ledger.inbound if key[0] == cmd.reference)
        if not keys:
            raise NotFound(f"no inbound stock is expected under {cmd.reference!r}",
                           "reference")
        for key in keys:
            _, sku, node = key
            p.add(EventKind.INBOUND_CANCELLED, sku=sku, node=node,
                  from_bucket=Bucket.IN_TRANSIT, to_bucket=Bucket.EXTERNAL,
                  quantity=ledger.inbound[key].remaining, reference=cmd.reference)
        return
    _lines(cmd.lines)
    cat = ledger.catalog
    consumed: dict[tuple[str, int, int], int] = {}
    for i, line in enumerate(cmd.lines):
        sku = cat.sku(line.sku_id, f"lines[{i}].sku_id")
        node = cat.node(line.node_id, f"lines[{i}].node_id")
        qty = _quantity(line.quantity, f"lines[{i}].quantity")
        _take_inbound(ledger, consumed, (cmd.reference, sku, node), qty, line.sku_id,
                      line.node_id, i, "cancelled", f"lines[{i}]")
        p.add(EventKind.INBOUND_CANCELLED, sku=sku, node=node, from_bucket=Bucket.IN_TRANSIT,
              to_bucket=Bucket.EXTERNAL, quantity=qty, reference=cmd.reference)


def _move(p: _Plan, cmd: c.MoveStock) -> None:
    _lines(cmd.lines)
    cat = p.ledger.catalog
    for i, line in enumerate(cmd.lines):
        sku = cat.sku(line.sku_id, f"lines[{i}].sku_id")
        node = cat.node(line.node_id, f"lines[{i}].node_id")
        qty = _quantity(line.quantity, f"lines[{i}].quantity")
        src = _bucket(line.from_bucket, FREE_BUCKETS, f"lines[{i}].from_bucket")
        dst = _bucket(line.to_bucket, FREE_BUCKETS, f"lines[{i}].to_bucket")
        if src == dst:
            raise InvalidArgument("from_bucket and to_bucket must differ", f"lines[{i}].to_bucket")
        # Units held for a count variance leave QUARANTINED only when it is settled;
        # units received for a return leave RETURNED only when it is inspected.
        floor = (p.ledger.held_units(sku, node) if src == Bucket.QUARANTINED
                 else p.ledger.awaiting_inspection(sku, node) if src == Bucket.RETURNED
                 else 0)
        p.add(EventKind.MOVED, floor=floor, sku=sku, node=node, from_bucket=src,
              to_bucket=dst, quantity=qty, reference=cmd.reference)


def _transfer(p: _Plan, cmd: c.TransferStock) -> None:
    check_identifier(cmd.transfer_id, "transfer_id")
    _lines(cmd.lines)
    cat = p.ledger.catalog
    src = cat.node(cmd.from_node_id, "from_node_id")
    dst = cat.node(cmd.to_node_id, "to_node_id")
    if src == dst:
        raise InvalidArgument("from_node_id and to_node_id must differ", "to_node_id")
    if cmd.expected_ms <= 0:
        raise InvalidArgument("expected arrival time is required", "expected_time")
    ledger = p.ledger
    if cmd.transfer_id in ledger.books.transfers:
        raise AlreadyExists(f"transfer {cmd.transfer_id!r} exists already", "transfer_id")
    if any(reference == cmd.transfer_id for reference, _, _ in ledger.inbound):
        # (A purchase's inbound stock: the books would stop counting it as bought.)
        raise AlreadyExists(f"{cmd.transfer_id!r} is the reference of inbound stock",
                            "transfer_id")
    for i, line in enumerate(cmd.lines):
        sku = cat.sku(line.sku_id, f"lines[{i}].sku_id")
        qty = _quantity(line.quantity, f"lines[{i}].quantity")
        p.add(EventKind.TRANSFER_SHIPPED, sku=sku, node=src, from_bucket=Bucket.AVAILABLE,
              quantity=qty, reference=cmd.transfer_id)
        p.add(EventKind.TRANSFER_IN_TRANSIT, sku=sku, node=dst, to_bucket=Bucket.IN_TRANSIT,
              quantity=qty, reference=cmd.transfer_id, due_ms=cmd.expected_ms)


def _reserve(p: _Plan, cmd: c.ReserveStock) -> ReserveResult:
    ledger = p.ledger
    cat = ledger.catalog
    check_identifier(cmd.reservation_id, "reservation_id")
    if cmd.reservation_id in ledger.reservations.by_id:
        raise AlreadyExists(f"reservation {cmd.reservation_id!r} exists already",
                            "reservation_id")
    channel = cat.channel(cmd.channel_id)
    if cmd.expires_ms <= p.now_ms:
        raise InvalidArgument("expiry must be in the future", "expire_time")
    _lines(cmd.lines)
    skus = np.empty(len(cmd.lines), np.int64)
    nodes = np.empty(len(cmd.lines), np.int64)
    blocked = ledger.network().blocked
    for i, line in enumerate(cmd.lines):
        skus[i] = sku = cat.sku(line.sku_id, f"lines[{i}].sku_id")
        nodes[i] = node = cat.node(line.node_id, f"lines[{i}].node_id")
        qty = _quantity(line.quantity, f"lines[{i}].quantity")
        if not cat.nodes[node].enabled:
            raise FailedPrecondition(f"node {line.node_id!r} is disabled",
                                     f"lines[{i}].node_id")
        if 0 <= channel < blocked.shape[1] and blocked[node, channel]:
            # (Available-to-sell is 0 there, and allocation never ships the channel from it.)
            raise FailedPrecondition(f"the carrier network does not ship channel "
                                     f"{cmd.channel_id!r} from node {line.node_id!r}",
                                     f"lines[{i}].node_id")
        p.add(EventKind.RESERVED, sku=sku, node=node, from_bucket=Bucket.AVAILABLE,
              to_bucket=Bucket.RESERVED, quantity=qty, reference=cmd.reservation_id,
              channel=channel, due_ms=cmd.expires_ms)
    p.floors = sale_floors(ledger, skus, nodes, channel).tolist()
    return ReserveResult(cmd.reservation_id, cmd.expires_ms)


def _release_events(p: _Plan, reservation_id: str, kind: EventKind) -> int:
    released = 0
    for sku, node, qty in p.ledger.reservations.lines(reservation_id):
        p.add(kind, sku=sku, node=node, from_bucket=Bucket.RESERVED,
              to_bucket=Bucket.AVAILABLE, quantity=qty, reference=reservation_id)
        released += qty
    return released


def _release(p: _Plan, cmd: c.ReleaseReservation) -> ReleaseResult:
    check_identifier(cmd.reservation_id, "reservation_id")
    if cmd.reservation_id not in p.ledger.reservations.by_id:
        raise NotFound(f"no open reservation {cmd.reservation_id!r}", "reservation_id")
    return ReleaseResult(_release_events(p, cmd.reservation_id, EventKind.RESERVATION_RELEASED))


def _expire(p: _Plan, cmd: c.ExpireReservations) -> ExpireResult:
    expired = p.ledger.reservations.expired(p.now_ms)
    for reservation_id in expired:
        _release_events(p, reservation_id, EventKind.RESERVATION_EXPIRED)
    return ExpireResult(tuple(expired))


def _count(p: _Plan, cmd: c.SubmitCycleCount) -> CountResult:
    _lines(cmd.lines)
    ledger = p.ledger
    cat = ledger.catalog
    seen: set[tuple[int, int]] = set()
    emptied: dict[str, int] = {}  # reservation -> its lines the count has emptied so far
    holding: list[int] = []  # the places in p.events of variances that took reserved units
    outcomes = []
    for i, line in enumerate(cmd.lines):
        sku = cat.sku(line.sku_id, f"lines[{i}].sku_id")
        node = cat.node(line.node_id, f"lines[{i}].node_id")
        counted = _quantity(line.counted, f"lines[{i}].counted_quantity", allow_zero=True)
        if (sku, node) in seen:
            raise InvalidArgument("a SKU and node may be counted once per count",
                                  f"lines[{i}]")
        seen.add((sku, node))
        waiting = ledger.held_at(sku, node)
        if waiting:
            raise FailedPrecondition(
                f"a count variance of {line.sku_id!r} at {line.node_id!r} waits for its "
                f"approval ({', '.join(waiting)}): settle it before counting again",
                f"lines[{i}]")
        levels = ledger.buckets(sku, node)
        available = int(levels[Bucket.AVAILABLE])
        expected = available + int(levels[Bucket.RESERVED]) + int(levels[Bucket.ALLOCATED])
        variance = counted - expected
        adjusted = held = 0
        exception_id = ""
        common: dict[str, Any] = {"sku": sku, "node": node, "reference": cmd.reference,
                                  "counted": counted, "expected": expected}
        if variance == 0:
            p.add(EventKind.COUNT_CONFIRMED, **common)
        elif _booked_silently(ledger, variance, expected) and -variance <= available:
            adjusted = variance
            p.add(EventKind.COUNT_ADJUSTED, quantity=abs(variance),
                  from_bucket=Bucket.EXTERNAL if variance > 0 else Bucket.AVAILABLE,
                  to_bucket=Bucket.AVAILABLE if variance > 0 else Bucket.EXTERNAL, **common)
        else:
            # Too large to book silently: quarantine the difference and raise an
            # exception for approval. Found units enter QUARANTINED; missing units
            # leave AVAILABLE for QUARANTINED, and past what is available, leave the
            # reservations holding them (else they would come back as sellable stock when
            # the reservations end). What is still missing after that is allocated to
            # orders: their picks come up short and write it off.
            held = variance if variance > 0 else min(-variance, available)
            taken: list[tuple[str, int, int, int, bool]] = []
            if variance < 0 and -variance > available:
                taken = _reservations_short(ledger, sku, node, -variance - available,
                                            emptied)
                for reservation_id, qty, _, _, _ in taken:
                    p.add(EventKind.RESERVATION_RELEASED, sku=sku, node=node,
                          from_bucket=Bucket.RESERVED, to_bucket=Bucket.AVAILABLE,
                          quantity=qty, reference=reservation_id)
                    held += qty
            exception_id = f"count-{ledger.last_seq + 1 + len(p.events)}"
            common["reference"] = exception_id
            if taken:
                holding.append(len(p.events))
            p.add(EventKind.COUNT_VARIANCE_HELD, quantity=held,
                  from_bucket=Bucket.EXTERNAL if variance > 0 else Bucket.AVAILABLE,
                  to_bucket=Bucket.QUARANTINED, payload=_hold_payload(tuple(taken), cmd.actor),
                  **common)
        outcomes.append(CountOutcome(line.sku_id, line.node_id, expected, counted, variance,
                                     adjusted, held, exception_id))
    # Whether the count closed each reservation it took from is known once every line has
    # taken its units: marked on each of them (a refusal gives a closed one back whole,
    # whichever of its lines is settled first).
    by_id = ledger.reservations.by_id
    for index in holding:
        e = p.events[index]
        p.events[index] = Event(
            e.seq, e.kind, e.sku, e.node, e.from_bucket, e.to_bucket, e.quantity, e.reference,
            e.request_id, e.time_ms, e.channel, e.due_ms, e.reason, e.amount, e.counted,
            e.expected, _hold_payload(tuple(
                (rid, qty, channel, expires_ms, emptied.get(rid, 0) == len(by_id[rid].slots))
                for rid, qty, channel, expires_ms, _ in count_hold_of(e.payload).taken),
                cmd.actor))
    return CountResult(tuple(outcomes))


def _hold_payload(taken: tuple[tuple[str, int, int, int, bool], ...], actor: str) -> Any:
    """COUNT_VARIANCE_HELD's payload: who counted, with what it took from reservations;
    the bare tuple (or None) when the counter is not named, as logged before."""
    if actor:
        return CountHold(taken, actor)
    return taken or None


def _reservations_short(ledger: Ledger, sku: int, node: int, units: int,
                        emptied: dict[str, int]) -> list[tuple[str, int, int, int, bool]]:
    """(reservation, units, channel, expiry, whether the count closes it: set once every
    line has taken, in _count) to take `units` of a SKU at a node from, where a count
    found them missing: the reservations ending last first (they would hold them
    longest). The rest is what a refusal needs to put them back (HeldVariance.taken).
    `emptied` counts the reservations' lines emptied."""
    book = ledger.reservations
    holding = []
    for reservation_id, record in book.by_id.items():
        slot = record.slots.get((sku, node))
        if slot is not None:
            holding.append((-int(book.expires_ms[slot]), reservation_id, int(book.qty[slot])))
    taken: list[tuple[str, int, int, int, bool]] = []
    for minus_expiry, reservation_id, qty in sorted(holding):
        if units <= 0:
            break
        take = min(qty, units)
        record = book.by_id[reservation_id]
        if take == qty:  # (its line at this node emptied: with its others, it is closed)
            emptied[reservation_id] = emptied.get(reservation_id, 0) + 1
        taken.append((reservation_id, take, record.channel, -minus_expiry, False))
        units -= take
    return taken


def _booked_silently(ledger: Ledger, variance: int, expected: int) -> bool:
    """Small variances are booked; above the units or percentage threshold they are held."""
    settings = ledger.settings
    if abs(variance) > settings.count_hold_units:
        return False
    percent = settings.count_hold_percent
    return not (percent > 0 and expected > 0 and abs(variance) * 100 > percent * expected)


def _set_safety(p: _Plan, cmd: c.SetSafetyStock) -> None:
    cat = p.ledger.catalog
    sku = cat.sku(cmd.sku_id, "sku_id") if cmd.sku_id else -1
    node = cat.node(cmd.node_id, "node_id") if cmd.node_id else -1
    value = -1 if cmd.quantity is None else _quantity(cmd.quantity, "quantity", allow_zero=True)
    if sku >= 0 and node >= 0:
        # A sales hold (RESTRICT_SKU: a count variance under investigation) holds this very
        # setting and puts back what was there when it is lifted: a value set now would
        # lift the hold at once, and be lost when the hold ends.
        hold = p.ledger.ops.active_action(ActionType.RESTRICT_SKU,
                                          f"{cmd.sku_id}@{cmd.node_id}")
        if hold is not None:
            raise FailedPrecondition(
                f"{cmd.sku_id!r} at {cmd.node_id!r} is held from sale by action "
                f"{hold.info.action_id} ({hold.info.spec.reason}); set its safety stock "
                "once the hold is lifted (its recount task completed, or the action "
                "reversed)", "sku_id")
    p.add(EventKind.SAFETY_STOCK_SET, sku=sku, node=node, quantity=value)


def _set_fence(p: _Plan, cmd: c.SetRingFence) -> None:
    _lines(cmd.lines)
    cat = p.ledger.catalog
    for i, line in enumerate(cmd.lines):
        sku = cat.sku(line.sku_id, f"lines[{i}].sku_id")
        node = cat.node(line.node_id, f"lines[{i}].node_id")
        check_identifier(line.channel_id, f"lines[{i}].channel_id")
        channel = cat.channel(line.channel_id, f"lines[{i}].channel_id")
        qty = _quantity(line.quantity, f"lines[{i}].quantity", allow_zero=True)
        p.add(EventKind.RING_FENCE_SET, sku=sku, node=node, channel=channel, quantity=qty)


def _upsert_skus(p: _Plan, cmd: c.UpsertSkus) -> None:
    if not cmd.skus:
        raise InvalidArgument("skus must not be empty", "skus")
    cat = p.ledger.catalog
    seen: set[str] = set()
    next_dense = cat.n_skus
    for i, spec in enumerate(cmd.skus):
        check_identifier(spec.sku_id, f"skus[{i}].sku_id")
        if spec.sku_id in seen:
            raise InvalidArgument(f"SKU {spec.sku_id!r} appears twice", f"skus[{i}].sku_id")
        seen.add(spec.sku_id)
        for name in ("weight_lb", "length_in", "width_in", "height_in"):
            value = _finite(getattr(spec, name), f"skus[{i}].{name}")
            limit = SKU_WEIGHT_MAX_LB if name == "weight_lb" else SKU_SIDE_MAX_IN
            if value > limit:
                raise InvalidArgument(f"skus[{i}].{name} must be at most {limit:g}",
                                      f"skus[{i}].{name}")
        for name in ("unit_cost_micros", "price_micros"):  # (as a receipt's unit cost)
            _money(getattr(spec, name), f"skus[{i}].{name}")
        dense = cat.sku_index.get(spec.sku_id)
        if dense is None:
            dense = next_dense
            next_dense += 1
        p.add(EventKind.SKU_UPSERTED, sku=dense, payload=spec)
    cat.reserve_skus(next_dense - cat.n_skus)


def _upsert_nodes(p: _Plan, cmd: c.UpsertNodes) -> None:
    if not cmd.nodes:
        raise InvalidArgument("nodes must not be empty", "nodes")
    cat = p.ledger.catalog
    seen: set[str] = set()
    next_dense = cat.n_nodes
    for i, spec in enumerate(cmd.nodes):
        check_identifier(spec.node_id, f"nodes[{i}].node_id")
        if spec.node_id in seen:
            raise InvalidArgument(f"node {spec.node_id!r} appears twice", f"nodes[{i}].node_id")
        seen.add(spec.node_id)
        if not (-90 <= spec.latitude <= 90) or not (-180 <= spec.longitude <= 180):
            raise InvalidArgument("latitude/longitude out of range", f"nodes[{i}].location")
        if spec.daily_capacity < 0:
            raise InvalidArgument("daily_capacity must be >= 0", f"nodes[{i}].daily_capacity")
        dense = cat.node_index.get(spec.node_id)
        if dense is None:
            dense = next_dense
            next_dense += 1
        elif spec.enabled != cat.nodes[dense].enabled:
            # Set by hand, the flag is no longer an emergency shutdown's to undo: its
            # action ends (else a later shutdown approved was skipped as in force, and
            # reversing the old one enabled a node closed by hand since).
            found = p.ledger.ops.active_action(ActionType.DISABLE_NODE, spec.node_id)
            if found is not None:
                p.add(EventKind.ACTION_REVERSED, reference=found.info.action_id, node=dense,
                      payload=ActionUndo(found.info.action_id, "",
                                         "superseded: the node was set by hand"))
        p.add(EventKind.NODE_UPSERTED, node=dense, payload=spec)


def _upsert_channels(p: _Plan, cmd: c.UpsertChannels) -> None:
    if not cmd.channels:
        raise InvalidArgument("channels must not be empty", "channels")
    cat = p.ledger.catalog
    seen: set[str] = set()
    next_dense = len(cat.channels)
    for i, spec in enumerate(cmd.channels):
        check_identifier(spec.channel_id, f"channels[{i}].channel_id")
        if spec.channel_id in seen:
            raise InvalidArgument(f"channel {spec.channel_id!r} appears twice",
                                  f"channels[{i}].channel_id")
        seen.add(spec.channel_id)
        dense = cat.channel_index.get(spec.channel_id)
        if dense is None:
            dense = next_dense
            next_dense += 1
        p.add(EventKind.CHANNEL_UPSERTED, channel=dense, payload=spec)
    if next_dense > MAX_CHANNELS:
        raise InvalidArgument(f"at most {MAX_CHANNELS} channels", "channels")


def _set_network(p: _Plan, cmd: c.SetNetwork) -> None:
    cmd.spec.validate()  # (with the cost limits, which compiling leaves out)
    # Compiling validates the spec against the current nodes and channels.
    compile_network(cmd.spec, p.ledger.catalog)
    p.add(EventKind.NETWORK_SET, payload=cmd.spec)


def _cost_line(p: _Plan, i: int, line: c.OpportunityCostLine) -> tuple[int, int, int]:
    cat = p.ledger.catalog
    sku = cat.sku(line.sku_id, f"lines[{i}].sku_id")
    node = cat.node(line.node_id, f"lines[{i}].node_id")
    if not 0 <= line.per_unit_micros <= MAX_UNIT_MICROS:
        raise InvalidArgument(f"per_unit_micros must be between 0 and {MAX_UNIT_MICROS}",
                              f"lines[{i}].per_unit_micros")
    return sku, node, line.per_unit_micros


def _set_opportunity_costs(p: _Plan, cmd: c.SetOpportunityCosts) -> None:
    _lines(cmd.lines)
    for i, line in enumerate(cmd.lines):
        sku, node, micros = _cost_line(p, i, line)
        p.add(EventKind.OPPORTUNITY_COST_SET, sku=sku, node=node, quantity=micros)


def _replace_opportunity_costs(p: _Plan, cmd: c.ReplaceOpportunityCosts) -> None:
    wanted: dict[tuple[int, int], int] = {}
    for i, line in enumerate(cmd.lines):
        sku, node, micros = _cost_line(p, i, line)
        if (sku, node) in wanted:
            raise InvalidArgument("a SKU and node appear twice", f"lines[{i}]")
        wanted[(sku, node)] = micros
    current = p.ledger.opportunity_costs
    for key in sorted(set(current) | set(wanted)):
        value = wanted.get(key, 0)
        if current.get(key, 0) != value:
            p.add(EventKind.OPPORTUNITY_COST_SET, sku=key[0], node=key[1], quantity=value)


def _set_demand_forecast(p: _Plan, cmd: c.SetDemandForecast) -> None:
    cat = p.ledger.catalog
    network = p.ledger.network_spec
    regions = {r.region_id for r in network.regions}
    forecast: dict[tuple[str, int], float] = {}
    for i, line in enumerate(cmd.lines):
        if line.region_id not in regions:
            raise NotFound(f"no region {line.region_id!r} in the network",
                           f"lines[{i}].region_id")
        key = (line.region_id, cat.sku(line.sku_id, f"lines[{i}].sku_id"))
        if key in forecast:
            raise InvalidArgument("a region and SKU appear twice", f"lines[{i}]")
        forecast[key] = _finite(line.units_per_day, f"lines[{i}].units_per_day")
    p.add(EventKind.DEMAND_FORECAST_SET, payload=DemandForecast(tuple(sorted(forecast.items()))))


def _set_value_policy(p: _Plan, cmd: c.SetValuePolicy) -> None:
    cmd.policy.validate()
    p.add(EventKind.VALUE_POLICY_SET, payload=cmd.policy)
    if not cmd.policy.enabled:  # off is myopic: no opportunity costs
        for sku, node in sorted(p.ledger.opportunity_costs):
            p.add(EventKind.OPPORTUNITY_COST_SET, sku=sku, node=node, quantity=0)


def _landed_cost(p: _Plan, cmd: c.AllocateLandedCost) -> None:
    check_identifier(cmd.reference, "reference")
    if cmd.reference not in p.ledger.books.receipts:
        raise NotFound(f"no receipt {cmd.reference!r}", "reference")
    if not 1 <= cmd.amount_micros <= MONEY_MAX * 1000:
        raise InvalidArgument("amount_micros must be positive", "amount_micros")
    if not cmd.description or len(cmd.description) > MAX_ID_LENGTH:
        raise InvalidArgument("description is required (at most 128 characters)",
                              "description")
    p.add(EventKind.LANDED_COST_ALLOCATED, reference=cmd.reference,
          payload=LandedCost(cmd.reference, cmd.amount_micros, cmd.description))


def _close_journal(p: _Plan, cmd: c.CloseJournal) -> None:
    books = p.ledger.books
    first = books.closed_through + 1
    if cmd.first != first:
        raise FailedPrecondition(f"the oldest kept journal entry is {first}, not "
                                 f"{cmd.first}", "first")
    last = books.entry(cmd.last)
    if cmd.last < cmd.first or last is None:
        raise InvalidArgument(f"no kept journal entry {cmd.last}", "last")
    if last.hash != cmd.last_hash:
        raise FailedPrecondition(f"journal entry {cmd.last} is not the one read", "last_hash")
    if len(cmd.digest) != 32:
        raise InvalidArgument("digest must be a segment's 32 hex digits", "digest")
    p.add(EventKind.JOURNAL_CLOSED, reference=f"{cmd.first}-{cmd.last}",
          payload=JournalClosed(cmd.first, cmd.last, cmd.last_hash, cmd.digest))


def _revoke_token(p: _Plan, cmd: c.RevokeToken) -> None:
    check_identifier(cmd.token_id, "token_id")
    if cmd.token_id in p.ledger.revoked_tokens:
        raise AlreadyExists(f"token {cmd.token_id!r} is revoked already", "token_id")
    p.add(EventKind.TOKEN_REVOKED, reference=cmd.token_id)


_HANDLERS: dict[type, Callable[[_Plan, Any], Any]] = {
    c.RevokeToken: _revoke_token,
    c.ReceiveStock: _receive,
    c.ExpectInbound: _expect_inbound,
    c.CancelInbound: _cancel_inbound,
    c.AdjustStock: adjust,
    c.MoveStock: _move,
    c.TransferStock: _transfer,
    c.ReserveStock: _reserve,
    c.ReleaseReservation: _release,
    c.ExpireReservations: _expire,
    c.SubmitCycleCount: _count,
    c.SetSafetyStock: _set_safety,
    c.SetRingFence: _set_fence,
    c.UpsertSkus: _upsert_skus,
    c.UpsertNodes: _upsert_nodes,
    c.UpsertChannels: _upsert_channels,
    c.SetNetwork: _set_network,
    c.SetOpportunityCosts: _set_opportunity_costs,
    c.ReplaceOpportunityCosts: _replace_opportunity_costs,
    c.SetDemandForecast: _set_demand_forecast,
    c.SetValuePolicy: _set_value_policy,
    c.AllocateLandedCost: _landed_cost,
    c.CloseJournal: _close_journal,
    **ORDER_HANDLERS,
    **RETURN_HANDLERS,
    **REPLAN_HANDLERS,
    **RULE_HANDLERS,
}


#: Commands whose applied events call for changes to other records, planned in the same
#: command against the state those events left (see _execute).
_AFTER: dict[type, Callable[[_Plan, list[Event]], None]] = {
    c.CancelInbound: inbound_cancelled,
}

#: Commands whose units made AVAILABLE are not offered to backorders (stock_arrived, after
#: every other command): allocation takes units, never gives them; a re-optimised plan
#: lets go of units only to place them again, backorders included, as it chose.
_NO_ARRIVALS: frozenset[type] = frozenset({c.AllocateOrders, c.Replan,
                                           c.ApplyReoptimization})


T = TypeVar("T")


def without_collections(run: Callable[[], T]) -> T:
    """`run()` with the cycle collector paused (unless it is off already), then on again.

    A command builds its working set (orders, requests, decisions, events) and lets most
    of it go when it ends. A collection that falls mid-command walks all of that, alive
    still, only to find it alive: about a tenth of an allocation's instructions. Paused,
    the next collection comes after the command and walks what the command kept. Nothing
    is lost by the pause: only cycles wait, and a command makes almost none."""
    if not gc.isenabled():
        return run()
    gc.disable()
    try:
        return run()
    finally:
        gc.enable()


def execute(ledger: Ledger, command: c.Command, now_ms: int, request_id: str = "") -> Outcome:
    """Validate `command`, apply its events to `ledger` and return them with the result
    (the collector paused meanwhile: `without_collections`).

    Raises a DomainError (and changes nothing) if the command is invalid or the
    ledger's state forbids it.
    """
    return without_collections(lambda: _execute(ledger, command, now_ms, request_id))


def _execute(ledger: Ledger, command: c.Command, now_ms: int, request_id: str) -> Outcome:
    plan = _Plan(ledger, request_id, now_ms)
    detail = _HANDLERS[type(command)](plan, command)
    try:
        ledger.apply(plan.events, plan.floors)
    except DomainError:
        raise  # a move refused: nothing changed
    except Exception as error:
        raise ApplyFailed(f"applying {type(command).__name__} failed: {error!r}") from error
    try:
        # What the state these events left calls for, committed with the command's own
        # events: orders decided again (_AFTER; their moves were planned against that
        # state, each with its sale floor), the rules' alerts, tasks and actions (policy
        # and record events only), then the backorders that units made AVAILABLE serve
        # (stock_arrived), against the state all of those left.
        follow = _Plan(ledger, request_id, now_ms)
        after = _AFTER.get(type(command))
        if after is not None:  # what the command's changes call for in other records
            after(follow, plan.events)
        evaluate_rules(follow, plan.events)
        if follow.events:
            ledger.apply(follow.events, follow.floors)
        if type(command) in _NO_ARRIVALS:
            return Outcome((*plan.events, *follow.events), detail)
        # Backorders served by the units the command made sellable, decided once the
        # rules have acted (a hold they put on a SKU is in force: its units are not sold).
        fill = _Plan(ledger, request_id, now_ms)
        filled = stock_arrived(fill, plan.events)
        if fill.events:
            ledger.apply(fill.events, fill.floors)
    except Exception as error:  # the command's own events are applied already
        raise ApplyFailed(f"what follows {type(command).__name__} failed: {error!r}"
                          ) from error
    return Outcome((*plan.events, *follow.events, *fill.events), detail, filled)
