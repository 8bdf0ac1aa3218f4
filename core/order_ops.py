"""Order command handlers: allocate, cancel, wave, pick, pack, ship, resolve exceptions.

Like every handler they only plan events; `operations.execute` applies them all or
none. Units move AVAILABLE -> ALLOCATED when allocated, back when cancelled, and
out of the ledger when shipped (or written off by a short pick).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from core import commands as c
from core.approvals import has_role
from core.decisions import (
    FloorTable,
    Request,
    decide,
    margin_micros,
    paid_price_difference,
    priority_key,
)
from core.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from core.exceptions import (
    ALLOWED,
    HOLDS,
    RESOLVERS,
    ExceptionInfo,
    ExceptionType,
    Resolution,
)
from core.ledger import Ledger, counted_by_of, taken_of
from core.model import LINE_VALUE_MAX, MONEY_MAX, QTY_MAX, Bucket, Event, EventKind
from core.network import CompiledNetwork
from core.orders import (
    DAY_MS,
    AddressStatus,
    CancelRecord,
    Decision,
    OrderRecord,
    OrderSpec,
    OrderStatus,
    PackageState,
    PackageStatus,
    PackRecord,
    PaymentStatus,
    PickRecord,
    ShipRecord,
    WaveRecord,
    first_waiting,
    missing_order,
)
from core.plan import Plan
from core.validation import check_identifier, check_line_ids, existing, is_identifier

# Enum members read for every order, as module constants: on Python 3.11 reading a member
# from its class costs about four times a global's lookup.
# (Final: compiled, a Final name is read from a C static, not looked up in the module.)
_ORDER_RECEIVED: Final = EventKind.ORDER_RECEIVED
_ORDER_ALLOCATED: Final = EventKind.ORDER_ALLOCATED
_UNITS_ALLOCATED: Final = EventKind.ORDER_UNITS_ALLOCATED
_AVAILABLE: Final = Bucket.AVAILABLE
_ALLOCATED: Final = Bucket.ALLOCATED
_ADDRESS_INVALID: Final = AddressStatus.INVALID
_PAYMENT_ON_HOLD: Final = PaymentStatus.ON_HOLD

UNSHIPPED = (PackageStatus.ALLOCATED, PackageStatus.RELEASED, PackageStatus.PICKED,
             PackageStatus.PACKED)


@dataclass(slots=True)  # not frozen (never changed): built for every order
class OrderOutcome:
    order_id: str
    decision: Decision | None = None
    exception_id: str = ""
    exception_type: ExceptionType | None = None
    error: DomainError | None = None

    # (Written out: compiled, a dataclass's generated __init__ would run interpreted.)
    def __init__(self, order_id: str, decision: Decision | None = None,
                 exception_id: str = "", exception_type: ExceptionType | None = None,
                 error: DomainError | None = None) -> None:
        self.order_id = order_id
        self.decision = decision
        self.exception_id = exception_id
        self.exception_type = exception_type
        self.error = error


@dataclass(frozen=True, slots=True)
class AllocateResult:
    outcomes: tuple[OrderOutcome, ...]
    # Per outcome, its events as [start, stop) in the command's events: an order's
    # events are contiguous, so calls answered together can each be given their own.
    spans: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class CancelResult:
    order_id: str
    released: int


@dataclass(frozen=True, slots=True)
class WaveResult:
    wave_id: str
    package_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PickResult:
    order_id: str
    short: int
    outcome: OrderOutcome | None
    exception_id: str


@dataclass(frozen=True, slots=True)
class PackResult:
    matched: bool
    exception_id: str


@dataclass(frozen=True, slots=True)
class ShipResult:
    order_id: str


@dataclass(frozen=True, slots=True)
class ResolveResult:
    exception_id: str
    outcome: OrderOutcome | None


def _validated(ledger: Ledger, spec: OrderSpec, field: str, batch_ids: set[str],
               quote: bool = False, network: CompiledNetwork | None = None,
               ) -> tuple[tuple[tuple[str, int, int], ...], int]:
    """The order's lines as (line_id, sku, quantity) and its ship-to region (-1 without a
    network); raises a DomainError naming the field."""
    cat = ledger.catalog
    # (Named tuples unpacked, not read field by field: compiled, a read by name is a
    # lookup. This runs for every order.)
    (order_id, channel_id, _, spec_lines, postal_code, latitude, longitude, deliver_by_ms,
     _, fraud_score, _, _, _, _) = spec
    if not is_identifier(order_id):
        check_identifier(order_id, f"{field}.order_id")  # raises
    if not quote and (order_id in ledger.orders.orders or order_id in batch_ids
                      or order_id in ledger.orders.archived):
        raise AlreadyExists(f"order {order_id!r} exists already", f"{field}.order_id")
    if channel_id and channel_id not in cat.channel_index:
        cat.channel(channel_id, f"{field}.channel_id")  # raises
    if not spec_lines:
        raise InvalidArgument(f"{field}.lines must not be empty", f"{field}.lines")
    if not (math.isfinite(fraud_score) and 0.0 <= fraud_score <= 1.0):
        raise InvalidArgument(f"{field}.fraud_score must be between 0 and 1",
                              f"{field}.fraud_score")
    if deliver_by_ms < 0:
        raise InvalidArgument(f"{field}.deliver_by out of range", f"{field}.deliver_by")
    lines = []
    line_ids: set[str] = set()
    skus: set[int] = set()
    sku_index = cat.sku_index
    # A line's field names are spelled out only for a refusal (most lines pass).
    for i, (line_id, sku_id, quantity, unit_price) in enumerate(spec_lines):
        if not is_identifier(line_id):
            check_identifier(line_id, f"{field}.lines[{i}].line_id")  # raises
        if line_id in line_ids:
            raise InvalidArgument(f"line id {line_id!r} appears twice",
                                  f"{field}.lines[{i}].line_id")
        line_ids.add(line_id)
        sku = sku_index.get(sku_id)
        if sku is None:
            sku = cat.sku(sku_id, f"{field}.lines[{i}].sku_id")  # raises
        if sku in skus:
            raise InvalidArgument(f"SKU {sku_id!r} appears on two lines; merge them",
                                  f"{field}.lines[{i}].sku_id")
        skus.add(sku)
        if not 1 <= quantity <= QTY_MAX:
            name = f"{field}.lines[{i}]"
            raise InvalidArgument(f"{name}.quantity must be between 1 and {QTY_MAX}",
                                  f"{name}.quantity")
        if unit_price != -1:  # (-1: not given, the catalogue price when it ships)
            _check_unit_price(unit_price, quantity, f"{field}.lines[{i}]")
        elif quantity > _ANY_PRICE_FITS:
            name = f"{field}.lines[{i}]"
            raise InvalidArgument(
                f"{name}: a line of more than {_ANY_PRICE_FITS} units gives the price the "
                "customer pays (unit_price_micros): at a catalogue price it could be worth "
                f"more than a line may be ({LINE_VALUE_MAX})", f"{name}.unit_price_micros")
        lines.append((line_id, sku, quantity))
    if network is None:
        network = ledger.network()
    region = -1
    if network.n_services and len(network.region_lat):
        try:
            region = network.region_for(postal_code, latitude, longitude)
        except InvalidArgument as error:
            raise InvalidArgument(error.message, f"{field}.ship_to") from None
    return tuple(lines), region


#: Up to this quantity a line at any unit price (MONEY_MAX at most) is within
#: LINE_VALUE_MAX. A line without a price of its own is booked at the catalogue price when
#: it ships, which may have been raised by then, or be a substitute's: above this quantity
#: a line gives its price (a line worth more took the books' totals past int64).
_ANY_PRICE_FITS: Final = LINE_VALUE_MAX // MONEY_MAX


def _check_unit_price(unit_price: int, quantity: int, name: str) -> None:
    if not 0 <= unit_price <= MONEY_MAX:
        raise InvalidArgument(f"{name}.unit_price_micros must be between 0 and {MONEY_MAX}",
                              f"{name}.unit_price_micros")
    if unit_price * quantity > LINE_VALUE_MAX:
        raise InvalidArgument(
            f"{name} is worth {unit_price * quantity} micros, more than a line may be "
            f"({LINE_VALUE_MAX})", f"{name}.unit_price_micros")


def _hold_of(spec: OrderSpec, fraud_threshold: float,
             cleared: frozenset[ExceptionType] = frozenset()) -> tuple[ExceptionType, str] | None:
    """The first reason to hold the order that has not been cleared already (most orders
    have none: each reason is looked at, and worded, only when it applies)."""
    # (Unpacked, not read field by field: compiled, a read by name is a lookup.)
    _, _, _, _, _, _, _, _, payment, fraud_score, address, _, _, _ = spec
    if address == _ADDRESS_INVALID and ExceptionType.ADDRESS_INVALID not in cleared:
        return ExceptionType.ADDRESS_INVALID, "the shipping address failed validation"
    if payment == _PAYMENT_ON_HOLD and ExceptionType.PAYMENT_HOLD not in cleared:
        return ExceptionType.PAYMENT_HOLD, "payment is on hold"
    if fraud_score > fraud_threshold and ExceptionType.FRAUD_REVIEW not in cleared:
        return (ExceptionType.FRAUD_REVIEW,
                f"fraud score {fraud_score:.2f} above {fraud_threshold:.2f}")
    return None


def _raise(p: Plan, info: ExceptionInfo) -> str:
    exception_id = f"EX-{p.ledger.last_seq + 1 + len(p.events)}"
    p.add(EventKind.EXCEPTION_RAISED, reference=exception_id, reason=int(info.exception_type),
          payload=info)
    return exception_id


def _emit_decision(p: Plan, spec: OrderSpec, decision: Decision,
                   floors: FloorTable) -> OrderOutcome:
    """ORDER_ALLOCATED, the unit moves, and an exception for what is left over.

    Each move carries its sale floor (safety stock and other channels' fences): the
    decision respected them, and Ledger.apply checks them again (no oversell)."""
    # (Unpacked, not read field by field: compiled, a read by name is a lookup.)
    order_id, channel_id = spec[0], spec[1]
    p.add_record(_ORDER_ALLOCATED, order_id, decision)
    catalog = p.ledger.catalog
    found = catalog.channel_index.get(channel_id) if channel_id else -1
    channel = catalog.channel(channel_id) if found is None else found  # (None: raises)
    for plan in decision[1]:  # (its packages)
        package_id, node, _, lines, _, _, _, _, _, _, _ = plan
        for _, sku, quantity, _ in lines:
            p.add_move(_UNITS_ALLOCATED, floors.floor(channel, sku, node),
                       sku, node, _AVAILABLE, _ALLOCATED, quantity, package_id, channel)
    if not decision[2]:  # (no backorders)
        return OrderOutcome(order_id, decision)
    kind = (ExceptionType.NO_FEASIBLE_NODE
            if decision.no_feasible_node and not decision.packages else ExceptionType.BACKORDER)
    units = sum(b.quantity for b in decision.backorders)
    exception_id = _raise(p, ExceptionInfo(kind, spec.order_id, f"{units} units: "
                                           f"{decision.rule}"))
    return OrderOutcome(spec.order_id, decision, exception_id, kind)


def _decide_and_emit(p: Plan, items: list[tuple[OrderSpec, Request]]) -> list[OrderOutcome]:
    floors = FloorTable()
    decisions = decide(p.ledger, p.ledger.orders, [r for _, r in items], p.now_ms, floors)
    return [_emit_decision(p, spec, d, floors)
            for (spec, _), d in zip(items, decisions, strict=True)]


def _margins(ledger: Ledger, orders: list[tuple[tuple[str, int, int], ...]],
             specs: list[OrderSpec]) -> list[int]:
    """margin_micros of each order's lines; for a large batch, of all of them at once."""
    margins = _catalogue_margins(ledger, orders)
    for k, spec in enumerate(specs):  # lines the customer pays another price for
        spec_lines = spec[3]
        for line in spec_lines:
            if line[3] != -1:
                margins[k] += paid_price_difference(ledger, orders[k], spec_lines)
                break
    return margins


def _catalogue_margins(ledger: Ledger, orders: list[tuple[tuple[str, int, int], ...]]
                       ) -> list[int]:
    """margin_micros of each order's lines at catalogue prices."""
    counts = [len(lines) for lines in orders]
    if len(counts) < 16:  # numpy's set-up costs more than it saves
        return [margin_micros(ledger, lines) for lines in orders]
    cat = ledger.catalog
    skus = np.fromiter((sku for lines in orders for _, sku, _ in lines), np.int64)
    qty = np.fromiter((q for lines in orders for _, _, q in lines), np.int64)
    unit = cat.price_micros[skus] - cat.unit_cost_micros[skus]
    # Past what int64 holds (prices near its top), Python's own integers.
    widest = max(int(unit.max()), -int(unit.min())) * int(qty.max()) * max(counts)
    if widest >= 1 << 63:
        return [margin_micros(ledger, lines) for lines in orders]
    per_line = qty * unit
    starts = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    result: list[int] = np.add.reduceat(per_line, starts).tolist()
    return result


def allocate_orders(p: Plan, cmd: c.AllocateOrders) -> AllocateResult:
    """Validate every order, decide the accepted ones together (priority order; calls
    answered together that tie go in the order they came), then write each order's
    events in a row, in the orders' own order."""
    if not cmd.orders:
        raise InvalidArgument("orders must not be empty", "orders")
    calls = cmd.request_ids
    if calls and len(calls) != len(cmd.orders):
        raise InvalidArgument("request_ids must name one call per order", "request_ids")
    # Per order: why it was refused, why it is held, or what to decide.
    checked: list[DomainError | tuple[ExceptionType, str] | int] = []
    batch_ids: set[str] = set()
    accepted: list[tuple[OrderSpec, tuple[tuple[str, int, int], ...], int, int]] = []
    network = p.ledger.network()
    for i, spec in enumerate(cmd.orders):
        field = "order" if calls or len(cmd.orders) == 1 else f"orders[{i}]"
        try:
            lines, region = _validated(p.ledger, spec, field, batch_ids, network=network)
        except DomainError as error:
            checked.append(error)
            continue
        batch_ids.add(spec.order_id)
        hold = _hold_of(spec, cmd.fraud_threshold)
        if hold is None:
            checked.append(len(accepted))  # the index of its request
            accepted.append((spec, lines, i if calls else 0, region))
        else:
            checked.append(hold)
    margins = _margins(p.ledger, [lines for _, lines, _, _ in accepted],
                       [spec for spec, _, _, _ in accepted])
    todo = [Request(spec, lines, 0, margin, arrival=arrival, region=region)
            for (spec, lines, arrival, region), margin in zip(accepted, margins, strict=True)]
    floors = FloorTable()
    decisions = iter(decide(p.ledger, p.ledger.orders, todo, p.now_ms, floors) if todo else ())
    outcomes: list[OrderOutcome] = []
    spans: list[tuple[int, int]] = []
    own_request = p.request_id
    for i, (spec, entry) in enumerate(zip(cmd.orders, checked, strict=True)):
        start = len(p.events)
        if isinstance(entry, DomainError):
            outcome = OrderOutcome(spec.order_id, error=entry)
        else:
            if calls:
                p.request_id = calls[i]
            p.add_record(_ORDER_RECEIVED, spec.order_id, spec)
            if isinstance(entry, int):
                outcome = _emit_decision(p, spec, next(decisions), floors)
            else:
                kind, detail = entry
                exception_id = _raise(p, ExceptionInfo(kind, spec.order_id, detail))
                outcome = OrderOutcome(spec.order_id, None, exception_id, kind)
        outcomes.append(outcome)
        spans.append((start, len(p.events)))
    p.request_id = own_request
    return AllocateResult(tuple(outcomes), tuple(spans))


def quote_order(ledger: Ledger, spec: OrderSpec, now_ms: int) -> Decision:
    """What allocating `spec` now would decide. Changes nothing."""
    lines, region = _validated(ledger, spec, "order", set(), quote=True)
    (decision,) = decide(ledger, ledger.orders, [Request(spec, lines, 0,
                                                        margin_micros(ledger, lines),
                                                        region=region)], now_ms)
    return decision


def _order(p: Plan, order_id: str) -> OrderRecord:
    book = p.ledger.orders
    if order_id in book.archived:
        raise NotFound(missing_order(book, order_id), "order_id")
    return existing(book.orders, order_id, "order_id", "order")


def _package(p: Plan, package_id: str) -> PackageState:
    return existing(p.ledger.orders.packages, package_id, "package_id", "package")


def _shipped_sku(state: PackageState, line_id: str) -> int:
    """The SKU a package holds for an order line: the ordered one or its substitute."""
    for line in state.plan.lines:
        if line.line_id == line_id:
            return line.sku
    raise KeyError(line_id)


def _resolve_open(p: Plan, record: OrderRecord, resolution: Resolution, note: str,
                  kinds: frozenset[ExceptionType] | None = None) -> None:
    for exception in p.ledger.exceptions.open_for(record.spec.order_id):
        if kinds is None or exception.exception_type in kinds:
            p.add(EventKind.EXCEPTION_RESOLVED, reference=exception.exception_id,
                  reason=int(resolution), payload=note)


_BACKORDER_KINDS: Final = frozenset({ExceptionType.BACKORDER, ExceptionType.NO_FEASIBLE_NODE})


def _resolve_filled(p: Plan, record: OrderRecord, decided: set[str],
                    outcome: OrderOutcome, resolving: str = "") -> None:
    """Once a decision for the order's lines `decided` covers every line it had backordered,
    its open backorder exceptions are resolved in the same command (but `resolving`, which
    the command resolves itself): filled, or superseded by the exception the decision
    raised for what it still backorders (which counts the units outstanding now)."""
    decision = outcome.decision
    if decision is None or any(line_id not in decided for line_id in record.backorders):
        return
    if decision[2] and not outcome.exception_id:
        return
    note = (f"superseded by {outcome.exception_id}" if decision[2] else "backorder filled")
    for exception in p.ledger.exceptions.open_for(record.spec.order_id):
        if (exception.exception_type in _BACKORDER_KINDS
                and exception.exception_id != resolving):
            p.add(EventKind.EXCEPTION_RESOLVED, reference=exception.exception_id,
                  reason=int(Resolution.RETRY), payload=note)


def inbound_cancelled(p: Plan, events: Sequence[Event]) -> None:
    """After inbound stock is cancelled (CancelInbound, its events applied): the orders with
    a backorder of a SKU cancelled that inbound stock was to cover (a promise date: waiting
    for it by choice, or a date to tell the customer) are decided again, as a RETRY of their
    backorder exceptions would, against what is left; else they would wait for stock that
    will not come, or keep a date that no longer holds. Their open backorder exceptions are
    resolved (RETRY); a decision that still backorders raises its own."""
    references: dict[int, str] = {}  # sku -> a reference cancelled (for the note)
    for e in events:
        if e.kind == EventKind.INBOUND_CANCELLED:
            references.setdefault(e.sku, e.reference)
    if not references:
        return
    ledger = p.ledger
    items: list[tuple[OrderSpec, Request]] = []
    notes: dict[str, str] = {}
    book = ledger.orders
    concerned = {order_id for sku in references for order_id in book.backordered.get(sku, ())}
    for record in sorted((book.orders[i] for i in concerned), key=lambda r: r.seq):
        order_id = record.spec.order_id
        if not record.backorders or record.held:
            continue
        waited = [b for b in record.backorders.values()
                  if b.promise_ms and b.sku in references]
        if not waited:
            continue
        lines = tuple((b.line_id, b.sku, b.quantity) for b in record.backorders.values())
        items.append((record.spec, Request(record.spec, lines, len(record.package_ids))))
        notes[order_id] = f"inbound {references[waited[0].sku]} cancelled"
    if not items:
        return
    try:
        decide(ledger, book, [request for _, request in items], p.now_ms)
    except DomainError:  # (an order a RETRY would refuse: it keeps its date, as it was)
        items = [item for item in items if _decidable(ledger, item[1], p.now_ms)]
    for spec, _ in items:
        for exception in ledger.exceptions.open_for(spec.order_id):
            if exception.exception_type in _BACKORDER_KINDS:
                p.add(EventKind.EXCEPTION_RESOLVED, reference=exception.exception_id,
                      reason=int(Resolution.RETRY), payload=notes[spec.order_id])
    if items:
        _decide_and_emit(p, items)


#: Backordered orders one command's arrivals decide again, at most (the first by
#: priority): ARRIVAL_LOOKAHEAD, and ARRIVAL_ORDERS_PER_UNIT more for each unit arrived,
#: up to ARRIVAL_FILL_LIMIT. A unit that frees one slot of a hot SKU's long backlog (a
#: cancelled line, a released cart) decides a few dozen orders, not all of them (some
#: 30 µs each); past the ones decided, the orders wait for the next arrival of their
#: SKUs, a RETRY or a Reoptimize run.
ARRIVAL_LOOKAHEAD: Final = 32
ARRIVAL_ORDERS_PER_UNIT: Final = 8
ARRIVAL_FILL_LIMIT: Final = 1_000


def _fill_rank(record: OrderRecord) -> tuple[int, int, int]:
    """How a backordered order ranks for arriving units before its margin is worked out
    (priority_key then orders the ones taken): SLA tier, deliver-by (none last), then the
    order they came in."""
    spec = record.spec
    return (int(spec.tier), spec.deliver_by_ms or (1 << 62), record.seq)


def arrived_units(events: Sequence[Event], bucket: Bucket = Bucket.AVAILABLE
                  ) -> dict[int, int]:
    """SKU -> units the events moved into `bucket`: made AVAILABLE (received, released from
    quarantine, a reservation or an order letting go of them, found by a count, restocked
    from a return), or, for IN_TRANSIT, announced (an expected inbound, a transfer
    shipped), in the order the SKUs came."""
    arrived: dict[int, int] = {}
    for e in events:
        if (e.to_bucket == bucket and e.from_bucket != bucket
                and e.quantity > 0 and e.sku >= 0):
            arrived[e.sku] = arrived.get(e.sku, 0) + e.quantity
    return arrived


def _backordered_margin(ledger: Ledger, lines: tuple[tuple[str, int, int], ...],
                        spec: OrderSpec) -> int:
    """margin_micros of an order's backordered `lines` (some of its lines, by line id), at
    the price its customer pays where the order names one, as intake weighs it."""
    margin = margin_micros(ledger, lines)
    paid = {line[0]: line[3] for line in spec[3] if line[3] != -1}
    if paid:
        prices = ledger.catalog.price_micros
        for line_id, sku, quantity in lines:
            price = paid.get(line_id)
            if price is not None:
                margin += quantity * (price - int(prices[sku]))
    return margin


def _decidable(ledger: Ledger, request: Request, now_ms: int) -> bool:
    """Whether `request` can be decided on its own now (deciding changes nothing)."""
    try:
        decide(ledger, ledger.orders, [request], now_ms)
    except DomainError:
        return False
    return True


def _dateless(record: OrderRecord, skus: dict[int, int]) -> frozenset[str]:
    """The order's backordered lines of `skus` with no promise date."""
    return frozenset(b.line_id for b in record.backorders.values()
                     if b.sku in skus and not b.promise_ms)


#: Policy events that can make units sellable without moving them: a safety stock or a
#: ring-fence lowered (or cleared). Their SKUs' backorders are decided again too (up to
#: ARRIVAL_FILL_LIMIT orders: a planner's change, not a stream of them), every backordered
#: SKU's for a default across SKUs.
_LOOSENING: Final = frozenset({EventKind.SAFETY_STOCK_SET, EventKind.RING_FENCE_SET})


def stock_arrived(p: Plan, events: Sequence[Event]) -> tuple[str, ...]:
    """After a command's events made units AVAILABLE (`arrived_units`): the orders with a
    backorder of those SKUs are decided again, as a RETRY of their backorder would, in
    priority order (SLA tier, deliver-by, margin, then the order they came in; how many:
    ARRIVAL_LOOKAHEAD), in one decision, as one batch would be. An order the stock now
    serves, in whole or in part, is allocated in the same command, and its open
    backorder exceptions resolved (filled, or superseded by the one raised for what it
    still backorders). An order it still does not serve (nothing in stock where its
    promise allows, a no-split order not yet whole, a wait for inbound stock that is
    still the better plan) is left as it was: no event, no new exception, the same promise
    date; the orders after it are still offered the units (but for what the first
    decisions.MAX_RERUNS no-split orders held whole leave withheld). A safety stock or
    ring-fence set (_LOOSENING) offers its SKU's units the same way, lowered or not (a
    raised one can serve only what other changes left waiting). An order that cannot be
    decided now (its ship-to maps to no region of the network in force) is left as it
    was, as is every order while no network is set: the command that brought the units
    never fails for them. Ranking the candidates looks at every backorder of the SKUs
    (~0.2 µs each, compiled); deciding them, at those ranked first.

    Inbound stock announced (an expected inbound, a transfer shipped: units moved into
    IN_TRANSIT) is offered, in the same decision, to the orders with a backorder of its
    SKUs that has no promise date: one the decision now dates (after what earlier
    backorders of the SKU were promised) is given its date the same way, its exception
    superseded by one that says it; an order still without a date is left as it was.

    Returns the ids of the orders allocated (units placed), in that order."""
    ledger = p.ledger
    book = ledger.orders
    arrived = arrived_units(events)
    expected = arrived_units(events, Bucket.IN_TRANSIT)
    loosened = False
    for e in events:
        if e.kind in _LOOSENING:
            loosened = True
            for sku in (e.sku,) if e.sku >= 0 else tuple(book.backordered):
                arrived.setdefault(sku, 0)
    if not arrived and not expected:
        return ()
    concerned: set[str] = set()
    for sku in arrived:
        concerned.update(book.backordered.get(sku, ()))
    for sku in expected:
        concerned.update(book.backordered.get(sku, ()))
    if not concerned:
        return ()
    waiting: list[OrderRecord] = []
    undated: dict[str, frozenset[str]] = {}  # order id -> its lines to date
    for order_id in concerned:
        record = book.orders.get(order_id)
        if record is None or not record.backorders or record.held:
            continue
        dateless = _dateless(record, expected) if expected else frozenset()
        if dateless:
            undated[order_id] = dateless
        elif not any(b.sku in arrived for b in record.backorders.values()):
            continue  # (its backorders of the inbound's SKUs have a date already)
        waiting.append(record)
    units = sum(arrived.values()) + sum(expected.values())
    limit = ARRIVAL_FILL_LIMIT if loosened else min(
        ARRIVAL_LOOKAHEAD + ARRIVAL_ORDERS_PER_UNIT * units, ARRIVAL_FILL_LIMIT)
    if len(waiting) > limit:
        waiting = heapq.nsmallest(limit, waiting, key=_fill_rank)
    network = ledger.network()
    if not waiting or not network.n_services or not len(network.region_lat):
        return ()  # (no network: nothing can be decided, as at intake)
    items: list[tuple[OrderRecord, Request]] = []
    for record in waiting:
        spec = record.spec
        lines = tuple((b.line_id, b.sku, b.quantity) for b in record.backorders.values())
        margin = _backordered_margin(ledger, lines, spec)
        try:
            region = network.region_for(spec[4], spec[5], spec[6])
        except DomainError:  # its ship-to maps to no region now: it waits, as a RETRY
            continue  # would be refused
        items.append((record, Request(spec, lines, len(record.package_ids), margin,
                                      arrival=record.seq, region=region)))
    items.sort(key=lambda item: priority_key(item[1]))
    floors = FloorTable()
    try:
        decisions = decide(ledger, book, [request for _, request in items], p.now_ms, floors)
    except DomainError:
        # An order the decision refuses (as a RETRY of it would be refused) must not fail
        # the command that brought the units: the orders that can be decided alone are
        # decided together; the others wait as they were.
        items = [item for item in items if _decidable(ledger, item[1], p.now_ms)]
        floors = FloorTable()
        decisions = decide(ledger, book, [request for _, request in items], p.now_ms, floors)
    filled: list[str] = []
    for (record, request), decision in zip(items, decisions, strict=True):
        placed = bool(decision[1])
        to_date = undated.get(record.spec.order_id)
        if not placed and not (to_date and any(b.promise_ms and b.line_id in to_date
                                               for b in decision[2])):
            continue  # nothing placed, no date given: left as it was
        outcome = _emit_decision(p, record.spec, decision, floors)
        _resolve_filled(p, record, {line_id for line_id, _, _ in request.lines}, outcome)
        if placed:
            filled.append(record.spec.order_id)
    return tuple(filled)


def cancel_order(p: Plan, cmd: c.CancelOrder) -> CancelResult:
    record = _order(p, cmd.order_id)
    book = p.ledger.orders
    open_packages = [book.packages[pid] for pid in reversed(record.package_ids)
                     if book.packages[pid].status in UNSHIPPED]
    package_lines: list[tuple[str, str, int]] = []
    backorder_lines: list[tuple[str, int]] = []
    if not cmd.lines:
        for state in open_packages:
            package_lines += [(state.plan.package_id, line_id, qty)
                              for line_id, qty in sorted(state.quantities.items())]
        backorder_lines = [(b.line_id, b.quantity) for b in record.backorders.values()]
    else:
        check_line_ids([x.line_id for x in record.spec.lines], cmd.lines,
                       f"order {cmd.order_id!r}")
        for i, (line_id, qty) in enumerate(cmd.lines):
            name = f"lines[{i}]"
            backordered = record.backorders[line_id].quantity if line_id in record.backorders else 0
            in_packages = [(s, s.quantities.get(line_id, 0)) for s in open_packages]
            available = backordered + sum(q for _, q in in_packages)
            if qty < 1:
                raise InvalidArgument("quantity must be at least 1", f"{name}.quantity")
            if qty > available:
                raise FailedPrecondition(
                    f"line {line_id!r} has {available} units that can still be cancelled, "
                    f"{qty} asked", f"{name}.quantity")
            take = min(qty, backordered)
            if take:
                backorder_lines.append((line_id, take))
            left = qty - take
            for state, q in in_packages:
                if left == 0:
                    break
                if q:
                    part = min(q, left)
                    package_lines.append((state.plan.package_id, line_id, part))
                    left -= part
    if not package_lines and not backorder_lines and record.status != OrderStatus.HELD:
        raise FailedPrecondition(f"order {cmd.order_id!r} has nothing left to cancel",
                                 "order_id")
    open_units = sum(q for s in open_packages for q in s.quantities.values()) + sum(
        b.quantity for b in record.backorders.values())
    cancelled = sum(q for _, _, q in package_lines) + sum(q for _, q in backorder_lines)
    whole = cancelled == open_units
    taken: dict[str, int] = {}
    for package_id, _, qty in package_lines:
        taken[package_id] = taken.get(package_id, 0) + qty
    repack = tuple(package_id for package_id, qty in taken.items()
                   if book.packages[package_id].status == PackageStatus.PACKED
                   and qty < sum(book.packages[package_id].quantities.values()))
    p.add(EventKind.ORDER_CANCELLED, reference=cmd.order_id, payload=CancelRecord(
        cmd.order_id, tuple(package_lines), tuple(backorder_lines), whole, repack))
    released = 0
    for package_id, line_id, qty in package_lines:
        state = book.packages[package_id]
        # Units already picked are in a tote or a box, not on the shelf: they wait in
        # QUARANTINED until put away (MoveStock to AVAILABLE), not sold from under it.
        picked = state.status in (PackageStatus.PICKED, PackageStatus.PACKED)
        p.add(EventKind.ORDER_UNITS_RELEASED, sku=_shipped_sku(state, line_id),
              node=state.plan.node, from_bucket=Bucket.ALLOCATED,
              to_bucket=Bucket.QUARANTINED if picked else Bucket.AVAILABLE,
              quantity=qty, reference=package_id)
        released += qty
    if whole:
        _resolve_open(p, record, Resolution.CANCEL, "order cancelled")
    elif backorder_lines and not any(
            q < record.backorders[line_id].quantity for line_id, q in backorder_lines) and len(
            backorder_lines) == len(record.backorders):
        _resolve_open(p, record, Resolution.CANCEL, "backordered lines cancelled",
                      frozenset({ExceptionType.BACKORDER, ExceptionType.NO_FEASIBLE_NODE}))
    return CancelResult(cmd.order_id, released)


def release_wave(p: Plan, cmd: c.ReleaseWave) -> WaveResult:
    ledger = p.ledger
    node = ledger.catalog.node(cmd.node_id)
    if cmd.max_packages < 0:
        raise InvalidArgument("max_packages must be >= 0", "max_packages")
    book = ledger.orders
    waiting = book.allocated_at.get(node, {})
    limit = cmd.max_packages or ledger.catalog.nodes[node].daily_capacity or len(waiting)
    # (The first `limit` by wave_key, read from the top of the node's queue: the same ones
    # as sorting all that wait, as the key ends with the package id, which no two share.)
    chosen = tuple(first_waiting(book.waves_queue(node), waiting, limit))
    wave_id = f"WAVE-{cmd.node_id}-{ledger.last_seq + 1}"
    if chosen:
        p.add(EventKind.WAVE_RELEASED, node=node, reference=wave_id,
              payload=WaveRecord(wave_id, node, chosen))
    return WaveResult(wave_id if chosen else "", chosen)


def confirm_pick(p: Plan, cmd: c.ConfirmPick) -> PickResult:
    state = _package(p, cmd.package_id)
    if state.status != PackageStatus.RELEASED:
        raise FailedPrecondition(f"package {cmd.package_id!r} is {state.status.name}, not "
                                 "RELEASED to a wave", "package_id")
    record = p.ledger.orders.orders[state.order_id]
    picked = dict(state.quantities)
    seen: set[str] = set()
    for i, (line_id, qty) in enumerate(cmd.picked):
        if line_id not in state.quantities:
            raise NotFound(f"package {cmd.package_id!r} has no line {line_id!r}",
                           f"lines[{i}].line_id")
        if line_id in seen:
            raise InvalidArgument(f"line {line_id!r} appears twice", f"lines[{i}].line_id")
        seen.add(line_id)
        if not 0 <= qty <= state.quantities[line_id]:
            raise InvalidArgument(f"picked quantity must be between 0 and "
                                  f"{state.quantities[line_id]}", f"lines[{i}].picked_quantity")
        picked[line_id] = qty
    p.add(EventKind.PACKAGE_PICKED, reference=cmd.package_id,
          payload=PickRecord(cmd.package_id, tuple(sorted(picked.items()))))
    short_lines = []
    for line_id, planned in sorted(state.quantities.items()):
        short = planned - picked[line_id]
        if short:
            sku = _shipped_sku(state, line_id)
            # The units are not where the ledger had them: written off as a loss.
            p.add(EventKind.PICK_SHORTAGE, sku=sku, node=state.plan.node,
                  from_bucket=Bucket.ALLOCATED, quantity=short, reference=cmd.package_id)
            # Re-allocate what was ordered (a substitute is chosen again if still needed).
            short_lines.append((line_id, p.ledger.catalog.sku(record.line(line_id).sku_id),
                                short))
    if not short_lines:
        return PickResult(state.order_id, 0, None, "")
    short_total = sum(q for _, _, q in short_lines)
    node_id = p.ledger.catalog.nodes[state.plan.node].node_id
    exception_id = _raise(p, ExceptionInfo(
        ExceptionType.SHORT_PICK, state.order_id,
        f"{short_total} units missing at {node_id}; count the location", cmd.package_id))
    # The decision replaces the lines' open backorders: ask for those units too.
    outstanding = tuple(
        (line_id, sku, short + (record.backorders[line_id].quantity
                                if line_id in record.backorders else 0))
        for line_id, sku, short in short_lines)
    request = Request(record.spec, outstanding, len(record.package_ids))
    (outcome,) = _decide_and_emit(p, [(record.spec, request)])
    _resolve_filled(p, record, {line_id for line_id, _, _ in short_lines}, outcome)
    return PickResult(state.order_id, short_total, outcome, exception_id)


def confirm_pack(p: Plan, cmd: c.ConfirmPack) -> PackResult:
    state = _package(p, cmd.package_id)
    if state.status != PackageStatus.PICKED:
        raise FailedPrecondition(f"package {cmd.package_id!r} is {state.status.name}, not "
                                 "PICKED", "package_id")
    record = p.ledger.orders.orders[state.order_id]
    expected: dict[str, int] = {}
    for line_id, qty in state.quantities.items():
        sku_id = record.line(line_id).sku_id
        for line in state.plan.lines:  # a substitute ships under its own SKU
            if line.line_id == line_id and line.substitutes_sku >= 0:
                sku_id = p.ledger.catalog.sku_ids[line.sku]
        expected[sku_id] = expected.get(sku_id, 0) + qty
    scanned: dict[str, int] = {}
    for i, (sku_id, qty) in enumerate(cmd.scanned):
        check_identifier(sku_id, f"scanned[{i}].sku_id")
        if not 0 <= qty <= QTY_MAX:
            raise InvalidArgument(f"scanned[{i}].quantity out of range", f"scanned[{i}].quantity")
        scanned[sku_id] = scanned.get(sku_id, 0) + qty
    scanned = {k: v for k, v in scanned.items() if v}
    matched = scanned == expected
    p.add(EventKind.PACKAGE_PACKED, reference=cmd.package_id,
          payload=PackRecord(cmd.package_id, matched))
    if matched:
        for exception in p.ledger.exceptions.open_for(state.order_id):
            if (exception.exception_type == ExceptionType.PACK_MISMATCH
                    and exception.reference == cmd.package_id):
                p.add(EventKind.EXCEPTION_RESOLVED, reference=exception.exception_id,
                      reason=int(Resolution.ACCEPT), payload="a rescan matched")
        return PackResult(True, "")
    differences = ", ".join(
        f"{sku}: expected {expected.get(sku, 0)}, scanned {scanned.get(sku, 0)}"
        for sku in sorted(set(expected) | set(scanned)) if expected.get(sku) != scanned.get(sku))
    exception_id = _raise(p, ExceptionInfo(ExceptionType.PACK_MISMATCH, state.order_id,
                                           differences, cmd.package_id))
    return PackResult(False, exception_id)


def confirm_shipment(p: Plan, cmd: c.ConfirmShipment) -> ShipResult:
    state = _package(p, cmd.package_id)
    check_identifier(cmd.tracking_number, "tracking_number")
    if state.status != PackageStatus.PACKED:
        raise FailedPrecondition(f"package {cmd.package_id!r} is {state.status.name}, not "
                                 "PACKED", "package_id")
    p.add(EventKind.PACKAGE_SHIPPED, reference=cmd.package_id,
          payload=ShipRecord(cmd.package_id, cmd.tracking_number))
    for line_id, qty in sorted(state.quantities.items()):
        # (The line's id as payload: the books take its revenue at the line's price.)
        p.add(EventKind.ORDER_UNITS_SHIPPED, sku=_shipped_sku(state, line_id),
              node=state.plan.node,
              from_bucket=Bucket.ALLOCATED, quantity=qty, reference=cmd.package_id,
              payload=line_id)
    return ShipResult(state.order_id)


def resolve_exception(p: Plan, cmd: c.ResolveException) -> ResolveResult:
    ledger = p.ledger
    check_identifier(cmd.exception_id, "exception_id")
    record = ledger.exceptions.by_id.get(cmd.exception_id)
    if record is None:
        raise NotFound(f"no exception {cmd.exception_id!r}", "exception_id")
    if record.resolved:
        raise FailedPrecondition(f"exception {cmd.exception_id!r} is resolved already",
                                 "exception_id")
    try:
        resolution = Resolution(cmd.resolution)
    except ValueError:
        raise InvalidArgument("resolution is required", "resolution") from None
    if resolution not in ALLOWED[record.exception_type]:
        allowed = ", ".join(sorted(r.name for r in ALLOWED[record.exception_type]))
        raise InvalidArgument(f"a {record.exception_type.name} exception takes {allowed}",
                              "resolution")
    if len(cmd.note) > 1000:
        raise InvalidArgument("note is longer than 1000 characters", "note")
    kind = record.exception_type
    if not has_role(cmd.role, RESOLVERS[kind]):
        raise PermissionDenied(
            f"a {kind.name} exception is resolved by one of the roles "
            f"{', '.join(sorted(RESOLVERS[kind]))}; {cmd.role!r} cannot", "role")
    if kind == ExceptionType.COUNT_VARIANCE:
        held = ledger.held_variances.get(cmd.exception_id)
        counter = counted_by_of(held) if held is not None else ""
        # Segregation of duties: whoever counted does not decide what their own count
        # does to the books (writes units off, or makes found ones sellable).
        if counter and (not cmd.actor or cmd.actor == counter):
            raise FailedPrecondition(
                f"{counter!r} counted this variance: someone else, named, approves or "
                "rejects it", "actor")
    p.add(EventKind.EXCEPTION_RESOLVED, reference=cmd.exception_id, reason=int(resolution),
          payload=cmd.note)
    outcome: OrderOutcome | None = None
    if kind == ExceptionType.COUNT_VARIANCE:
        _settle_count(p, cmd.exception_id, resolution)
        return ResolveResult(cmd.exception_id, None)
    order = ledger.orders.orders.get(record.order_id)
    if order is None:
        return ResolveResult(cmd.exception_id, None)
    spec = order.spec
    if resolution == Resolution.CANCEL:
        if kind in HOLDS:
            p.add(EventKind.ORDER_CANCELLED, reference=spec.order_id,
                  payload=CancelRecord(spec.order_id, (), (), True))
        else:
            open_lines = tuple((b.line_id, b.quantity) for b in order.backorders.values())
            if open_lines:
                p.add(EventKind.ORDER_CANCELLED, reference=spec.order_id,
                      payload=CancelRecord(spec.order_id, (), open_lines, False))
            # Every backorder of the order is cancelled: so are its other exceptions for them.
            _resolve_siblings(p, spec.order_id, cmd.exception_id, _BACKORDER_KINDS, "",
                              Resolution.CANCEL)
    elif resolution == Resolution.RELEASE:
        # Another reason to hold the order may still stand: raise that one first.
        cleared = frozenset(
            e.exception_type for e in (ledger.exceptions.by_id[i]
                                       for i in ledger.exceptions.by_order[spec.order_id])
            if e.resolution == Resolution.RELEASE or e.exception_id == cmd.exception_id)
        hold = _hold_of(spec, cmd.fraud_threshold, cleared)
        if hold is not None:
            next_kind, detail = hold
            exception_id = _raise(p, ExceptionInfo(next_kind, spec.order_id, detail))
            return ResolveResult(cmd.exception_id,
                                 OrderOutcome(spec.order_id, None, exception_id, next_kind))
        lines: tuple[tuple[str, int, int], ...] = tuple(
            (line.line_id, ledger.catalog.sku(line.sku_id), line.quantity)
            for line in spec.lines)
        (outcome,) = _decide_and_emit(p, [(spec, Request(spec, lines, len(order.package_ids)))])
    elif resolution == Resolution.RETRY:
        lines = tuple((b.line_id, b.sku, b.quantity) for b in order.backorders.values())
        if lines:
            (outcome,) = _decide_and_emit(
                p, [(spec, Request(spec, lines, len(order.package_ids)))])
            _resolve_filled(p, order, {line_id for line_id, _, _ in lines}, outcome,
                            cmd.exception_id)
    elif resolution == Resolution.ACCEPT and kind == ExceptionType.PACK_MISMATCH:
        package = ledger.orders.packages.get(record.reference)
        if package is not None and package.status == PackageStatus.PICKED:
            p.add(EventKind.PACKAGE_PACKED, reference=record.reference,
                  payload=PackRecord(record.reference, True))
        # The package is accepted as packed: its earlier mismatches with it.
        _resolve_siblings(p, spec.order_id, cmd.exception_id,
                          frozenset({ExceptionType.PACK_MISMATCH}), record.reference,
                          Resolution.ACCEPT)
    return ResolveResult(cmd.exception_id, outcome)


def _resolve_siblings(p: Plan, order_id: str, resolving: str,
                      kinds: frozenset[ExceptionType], reference: str,
                      resolution: Resolution) -> None:
    """Resolve the order's other open exceptions of `kinds` (of the package `reference`,
    if given) with the one `resolving` settles for them all."""
    for exception in p.ledger.exceptions.open_for(order_id):
        if (exception.exception_type in kinds and exception.exception_id != resolving
                and (not reference or exception.reference == reference)):
            p.add(EventKind.EXCEPTION_RESOLVED, reference=exception.exception_id,
                  reason=int(resolution), payload=f"with {resolving}")


def _settle_count(p: Plan, exception_id: str, resolution: Resolution) -> None:
    held = p.ledger.held_variances.get(exception_id)
    if held is None:
        return
    # (One that holds nothing, all its missing units allocated to orders, is settled
    # too: moving no units, it drops the record.)
    found = held.counted > held.expected
    # Found units: approve makes them sellable, reject removes them. Missing units:
    # approve writes them off, reject returns them to AVAILABLE (a recount found them),
    # or to the reservations they were taken from: those still open (the same: its
    # channel and expiry, not one made since under the same id), and those the count
    # closed that have not expired since (no one else can have ended them).
    to_available = found == (resolution == Resolution.APPROVE)
    settled = held.held
    if to_available and not found:
        book = p.ledger.reservations
        for reservation_id, qty, channel, expires_ms, closed in taken_of(held):
            open_now = book.by_id.get(reservation_id)
            if (open_now is None and closed and expires_ms > p.now_ms) or (
                    open_now is not None and open_now.channel == channel
                    and open_now.expires_ms == expires_ms):
                p.add(EventKind.RESERVED, sku=held.sku, node=held.node,
                      from_bucket=Bucket.QUARANTINED, to_bucket=Bucket.RESERVED,
                      quantity=qty, reference=reservation_id, channel=channel,
                      due_ms=expires_ms)
                settled -= qty
    p.add(EventKind.COUNT_VARIANCE_SETTLED, sku=held.sku, node=held.node,
          from_bucket=Bucket.QUARANTINED,
          to_bucket=Bucket.AVAILABLE if to_available else Bucket.EXTERNAL,
          quantity=settled, reference=exception_id, reason=int(resolution))


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    order_ids: tuple[str, ...]


def archive_orders(p: Plan, cmd: c.ArchiveOrders) -> ArchiveResult:
    """ORDER_ARCHIVED for each order closed before the retention (never less than the
    longest return window), oldest first, up to the limit; not those with a return or an
    exception still open (they may still read the order)."""
    if not (math.isfinite(cmd.retention_days) and 0 <= cmd.retention_days <= 36_500):
        raise InvalidArgument("retention_days must be between 0 and 36500", "retention_days")
    if cmd.limit < 1:
        raise InvalidArgument("limit must be at least 1", "limit")
    ledger = p.ledger
    days = max(cmd.retention_days, ledger.returns.policy.longest_window_days())
    busy = {r.auth.order_id for r in ledger.returns.returns.values() if not r.done}
    busy.update(order_id for order_id, ids in ledger.exceptions.open_by_order.items() if ids)
    found = ledger.orders.archivable(p.now_ms - int(days * DAY_MS), busy, cmd.limit)
    for order_id in found:
        p.add(EventKind.ORDER_ARCHIVED, reference=order_id)
    return ArchiveResult(tuple(found))


HANDLERS: dict[type, Callable[[Plan, Any], Any]] = {
    c.ArchiveOrders: archive_orders,
    c.AllocateOrders: allocate_orders,
    c.CancelOrder: cancel_order,
    c.ReleaseWave: release_wave,
    c.ConfirmPick: confirm_pick,
    c.ConfirmPack: confirm_pack,
    c.ConfirmShipment: confirm_shipment,
    c.ResolveException: resolve_exception,
}
