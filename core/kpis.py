"""KPIs computed incrementally from the ledger's own events over sliding windows.

Every event the ledger applies passes through `KpiBook.observe` (from `Ledger.apply`,
so a replay rebuilds the same figures). Observations are counted by event time into
windowed counters, per scope: the whole network ("all"), a node, a channel, a SKU, a
category or an exception type. A KPI is a ratio (or a count) of two counters over a
window, read at a time given by the caller (core never reads a clock).

A window of length W is a ring of 60 slots of W/60 each (one minute for the hour, 24
minutes for the day, 168 minutes for the week): a reading at `now` covers the slot that
holds `now` and the 59 before it, so between W - W/60 and W of history. The slots are
also the KPI's trend. Memory is bounded: 3 x 60 numbers per counter, scope and subject,
held from a subject's first observation to eight or nine days after its last. Once a day
(when a run of events reaches a day later than any before) the book forgets every
subject whose observations have all left every window a reading from the start of the
day before can see: all it held were zeros. Forgotten, it reads as zeros and reports
still list it (its name is kept). Event times alone decide what is forgotten, so a
replay and a restored snapshot forget the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mypy_extensions import mypyc_attr

from core.exceptions import OWNER_ROLE, ExceptionType
from core.model import Event, EventKind, set_fields
from core.orders import DAY_MS, Decision, OrderStatus
from core.returns import refunded_ahead

if TYPE_CHECKING:  # the ledger feeds this book; no import cycle at run time
    from core.ledger import Ledger

HOUR_MS = 3_600_000
SLOTS = 60
WINDOWS: dict[str, int] = {"hour": HOUR_MS, "day": DAY_MS, "week": 7 * DAY_MS}
_WEEK_SLOT_MS = 7 * DAY_MS // SLOTS  # (the longest window's slot)
#: Scopes a KPI is broken down by (besides "all").
SCOPES = ("all", "node", "channel", "sku", "category", "type")


# Rings and the counters made of them are native classes when compiled: every order adds
# to several (Windowed.add), and a compiled read of a Python class's field is a generic
# attribute lookup, of a native one a load. Snapshots hold them as their fields in order
# (__reduce__); those written before, in pickle's default form for a class with slots
# (made empty, then each field set), still read (__setstate__).
@dataclass(slots=True, init=False)
class Ring:
    """One sliding window: 60 slots, each tagged with the slot number it holds."""

    slot_ms: int
    index: list[int]
    value: list[float]

    def __init__(self, window_ms: int = HOUR_MS, index: list[int] | None = None,
                 value: list[float] | None = None) -> None:
        self.slot_ms = window_ms // SLOTS
        self.index = [-1] * SLOTS if index is None else index
        self.value = [0.0] * SLOTS if value is None else value

    def __setstate__(self, state: Any) -> None:
        set_fields(self, state)

    def __reduce__(self) -> tuple[type[Ring], tuple[int, list[int], list[float]]]:
        return Ring, (self.slot_ms * SLOTS, self.index, self.value)

    def add(self, time_ms: int, amount: float) -> None:
        slot = time_ms // self.slot_ms
        pos = slot % SLOTS
        held = self.index[pos]
        if held != slot:
            if held > slot:  # older than anything the window still covers
                return
            self.index[pos] = slot
            self.value[pos] = 0.0
        self.value[pos] += amount

    def total(self, now_ms: int) -> float:
        now = now_ms // self.slot_ms
        low = now - SLOTS + 1
        # (0.0 to start: an empty window reads 0.0, as a counter never observed does)
        return sum((v for i, v in zip(self.index, self.value, strict=True) if low <= i <= now),
                   0.0)

    def series(self, now_ms: int) -> list[float]:
        """The 60 slots ending with the one that holds `now_ms`, oldest first."""
        now = now_ms // self.slot_ms
        out = [0.0] * SLOTS
        for i, v in zip(self.index, self.value, strict=True):
            age = now - i
            if 0 <= age < SLOTS:
                out[SLOTS - 1 - age] = v
        return out


@dataclass(slots=True, init=False)
class Windowed:
    """A counter over the three windows."""

    hour: Ring
    day: Ring
    week: Ring
    rings: dict[str, Ring]
    # The newest slot of the week ring that holds an observation (-1: none): what
    # KpiBook.forget reads of a counter, instead of the ring's 60 slots.
    newest: int

    def __init__(self, hour: Ring | None = None, day: Ring | None = None,
                 week: Ring | None = None) -> None:
        self.hour = Ring(HOUR_MS) if hour is None else hour
        self.day = Ring(DAY_MS) if day is None else day
        self.week = Ring(7 * DAY_MS) if week is None else week
        self.rings = {"hour": self.hour, "day": self.day, "week": self.week}
        self.newest = max(self.week.index)

    def __setstate__(self, state: Any) -> None:
        set_fields(self, state)
        self.newest = max(self.week.index)

    def __reduce__(self) -> tuple[type[Windowed], tuple[Ring, Ring, Ring]]:
        return Windowed, (self.hour, self.day, self.week)

    def add(self, time_ms: int, amount: float) -> None:
        # Ring.add three times, written out: this runs several times for every command.
        _add(self.hour, time_ms, amount)
        _add(self.day, time_ms, amount)
        slot = _add(self.week, time_ms, amount)
        if slot > self.newest:  # noqa: PLR1730 (compiled, a compare: max() is a call)
            self.newest = slot


def _add(ring: Ring, time_ms: int, amount: float) -> int:
    """Ring.add; returns the slot `time_ms` falls in."""
    slot = time_ms // ring.slot_ms
    pos = slot % SLOTS
    index = ring.index
    held = index[pos]
    if held == slot:
        ring.value[pos] += amount
    elif held < slot:
        index[pos] = slot
        ring.value[pos] = amount
    return slot


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class KpiDefinition:
    name: str
    numerator: str
    denominator: str  # "" for a count
    unit: str
    scopes: tuple[str, ...]
    description: str
    scale: float = 1.0  # value = numerator / denominator * scale


DEFINITIONS: tuple[KpiDefinition, ...] = (
    KpiDefinition("inventory_accuracy", "count_lines_accurate", "count_lines", "ratio",
                  ("all", "node"), "cycle-count lines that matched the ledger"),
    KpiDefinition("oversell_rate", "units_oversold", "units_allocated", "ratio",
                  ("all", "channel"),
                  "units committed beyond the ledger's stock (0 by construction)"),
    KpiDefinition("split_shipment_rate", "orders_split", "orders_decided", "ratio",
                  ("all", "channel"), "orders first allocated in more than one package"),
    KpiDefinition("packages_per_order", "packages_planned", "orders_decided", "packages",
                  ("all", "channel"), "packages of an order's first allocation"),
    KpiDefinition("sla_attainment", "packages_on_time", "packages_shipped", "ratio",
                  ("all", "node", "channel"), "packages shipped by their promised ship day"),
    KpiDefinition("fill_rate", "units_filled", "units_ordered", "ratio", ("all", "channel"),
                  "units allocated at the first decision / units ordered"),
    KpiDefinition("backorder_rate", "orders_backordered", "orders_decided", "ratio",
                  ("all", "channel"), "orders with a backordered line at the first decision"),
    KpiDefinition("return_rate", "units_returned", "units_shipped", "ratio",
                  ("all", "sku", "category"), "units authorised for return / units shipped"),
    KpiDefinition("return_cycle_hours", "return_cycle_ms", "returns_inspected", "hours",
                  ("all",), "authorisation to inspection", 1 / HOUR_MS),
    KpiDefinition("refund_leakage", "refunded_before_receipt_micros", "refunded_micros",
                  "ratio", ("all",), "refund value paid before the units came back"),
    KpiDefinition("exceptions_raised", "exceptions", "", "count", ("all", "type"),
                  "exceptions raised"),
    KpiDefinition("touchless_rate", "orders_touchless", "orders_shipped", "ratio",
                  ("all", "channel"), "shipped orders that never raised an exception"),
    KpiDefinition("cost_per_order", "decision_cost_micros", "orders_decided", "currency",
                  ("all", "channel"), "landed cost of the first allocation", 1e-6),
    KpiDefinition("late_shipments", "packages_late", "", "count", ("all", "node"),
                  "packages shipped after their promised ship day"),
    KpiDefinition("short_picks", "short_picks", "", "count", ("all", "node"),
                  "picks that found fewer units than the ledger had"),
)
BY_NAME = {d.name: d for d in DEFINITIONS}


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class KpiValue:
    name: str
    window: str
    scope: str
    subject: str
    value: float
    numerator: float
    denominator: float
    unit: str
    trend: tuple[float, ...] = ()


#: What is persisted of a KpiBook (`pending` is not state); snapshots written before
#: subjects were forgotten hold no `newest_day`.
_STATE = ("counters", "subjects_of", "decided", "newest_day")


def forgotten_before_ms(newest_day: int) -> int:
    """Observations before this are out of every window read at or after the start of the
    day before `newest_day`: the oldest slot such a reading sees in the week window (the
    longest) starts here."""
    return (((newest_day - 1) * DAY_MS) // _WEEK_SLOT_MS - SLOTS + 1) * _WEEK_SLOT_MS


@mypyc_attr(native_class=False)
@dataclass(slots=True)
class KpiBook:
    """Windowed counters keyed by (counter, scope, subject)."""

    counters: dict[tuple[str, str, str], Windowed] = field(default_factory=dict)
    # (counter, scope) -> its subjects, so a report need not scan every counter: every
    # subject ever observed, those forgotten (no longer in `counters`) too
    subjects_of: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    decided: set[str] = field(default_factory=set)  # orders whose first decision is counted
    # The day (event time // DAY_MS) of the newest observation: observations before
    # forgotten_before_ms(newest_day) are not counted, and no subject in `counters` holds
    # only such (`forget`). -1: none yet, or a snapshot written before subjects were
    # forgotten (its first run of events forgets those due).
    newest_day: int = -1
    # While the ledger applies a run of events: (counter, scope, subject, time) -> amount
    # counted so far, added to the windows once when the run ends (see `collect`). A run
    # of 100 orders counts each (counter, scope, subject) once instead of 100 times; the
    # windows end up the same (the amounts are whole numbers, so their sums are exact,
    # and a window keeps the sum of its newest slot's amounts whatever their order).
    pending: dict[tuple[str, str, str, int], float] | None = field(
        default=None, compare=False, repr=False)

    def __getstate__(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in _STATE}

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple):  # pickled before `pending` existed: (None, slots)
            state = state[1]
        assert isinstance(state, dict)
        self.counters = state["counters"]
        self.subjects_of = state["subjects_of"]
        self.decided = state["decided"]
        self.newest_day = state.get("newest_day", -1)
        self.pending = None

    # ---- recording -------------------------------------------------------------------
    def collect(self) -> None:
        """Hold what is counted until `flush` (the ledger brackets each run of events)."""
        self.pending = {}

    def flush(self) -> None:
        """Add what was counted since `collect` to the windows, in first-counted order.
        First, if the newest of it is on a later day than any before, `forget` what no
        reading from the day before that day on can see."""
        pending, self.pending = self.pending, None
        if not pending:
            return
        day = max(held[3] for held in pending) // DAY_MS
        if day > self.newest_day:
            self.forget(day)
        floor = forgotten_before_ms(self.newest_day)
        counters = self.counters
        for (counter, scope, subject, time_ms), amount in pending.items():
            key = (counter, scope, subject)
            windowed = counters.get(key)
            if windowed is None:
                if time_ms < floor:  # (out of every window: only the name is kept)
                    self.subjects_of.setdefault((counter, scope), set()).add(subject)
                    continue
                windowed = self._new(key)
            elif time_ms < floor:
                continue
            windowed.add(time_ms, amount)

    def forget(self, day: int) -> None:
        """The newest observation is on `day` (event time // DAY_MS): drop every subject's
        counter whose observations are all before forgotten_before_ms(day), out of every
        window a reading at or after the start of the day before can see (the network's
        own counters stay). A walk over every counter, once a day of event time (a read of
        each one's newest slot), and none on any other run."""
        self.newest_day = day
        # (the week ring's newest slot is the newest observation's: all three rings take
        # each one, and the week's reaches furthest back)
        floor = forgotten_before_ms(day) // _WEEK_SLOT_MS
        counters = self.counters
        gone = [key for key, windowed in counters.items()
                if key[1] != "all" and windowed.newest < floor]
        for key in gone:
            del counters[key]

    def bump(self, counter: str, time_ms: int, amount: float, **subjects: str) -> None:
        """Count `amount` for the network and for each scope=subject given (outside
        `collect` ... `flush`, a run of its own)."""
        pending = self.pending
        if pending is None:
            self.collect()
            self.bump(counter, time_ms, amount, **subjects)
            self.flush()
            return
        for key in ((counter, "all", ""), *((counter, scope, subject)
                                           for scope, subject in subjects.items())):
            held = (*key, time_ms)
            pending[held] = pending.get(held, 0) + amount

    def bump1(self, counter: str, time_ms: int, amount: float, scope: str = "",
              subject: str = "") -> None:
        """Count `amount` for the network and, given a scope, for one subject (the hot
        path's version of `bump`)."""
        pending = self.pending
        if pending is None:
            self.collect()
            self.bump1(counter, time_ms, amount, scope, subject)
            self.flush()
            return
        held = (counter, "all", "", time_ms)
        pending[held] = pending.get(held, 0) + amount
        if scope:
            held = (counter, scope, subject, time_ms)
            pending[held] = pending.get(held, 0) + amount

    def bump_many(self, time_ms: int, scope: str, subject: str,
                  amounts: tuple[tuple[str, float], ...]) -> None:
        """bump1 for each (counter, amount), the same scope and subject for all."""
        pending = self.pending
        if pending is None:
            for counter, amount in amounts:
                self.bump1(counter, time_ms, amount, scope, subject)
            return
        for counter, amount in amounts:
            held = (counter, "all", "", time_ms)
            pending[held] = pending.get(held, 0) + amount
            if scope:
                held = (counter, scope, subject, time_ms)
                pending[held] = pending.get(held, 0) + amount

    def observe(self, ledger: Ledger, e: Event) -> None:
        handler = _OBSERVERS.get(e.kind)
        if handler is not None:
            handler(self, ledger, e)

    # ---- reading ---------------------------------------------------------------------
    def total(self, counter: str, scope: str, subject: str, window: str, now_ms: int) -> float:
        windowed = self.counters.get((counter, scope, subject))
        return windowed.rings[window].total(now_ms) if windowed else 0.0

    def _new(self, key: tuple[str, str, str]) -> Windowed:
        windowed = self.counters[key] = Windowed()
        self.subjects_of.setdefault((key[0], key[1]), set()).add(key[2])
        return windowed

    def subjects(self, counter: str, scope: str) -> list[str]:
        return sorted(self.subjects_of.get((counter, scope), ()))

    def value(self, definition: KpiDefinition, window: str, scope: str, subject: str,
              now_ms: int, trend: bool = False) -> KpiValue:
        num = self.total(definition.numerator, scope, subject, window, now_ms)
        den = (self.total(definition.denominator, scope, subject, window, now_ms)
               if definition.denominator else 1.0)
        value = num / den * definition.scale if den else 0.0
        points: tuple[float, ...] = ()
        if trend:
            nums = self._series(definition.numerator, scope, subject, window, now_ms)
            dens = (self._series(definition.denominator, scope, subject, window, now_ms)
                    if definition.denominator else [1.0] * SLOTS)
            points = tuple(n / d * definition.scale if d else 0.0
                           for n, d in zip(nums, dens, strict=True))
        return KpiValue(definition.name, window, scope, subject, value, num,
                        den if definition.denominator else 0.0, definition.unit, points)

    def _series(self, counter: str, scope: str, subject: str, window: str,
                now_ms: int) -> list[float]:
        windowed = self.counters.get((counter, scope, subject))
        return windowed.rings[window].series(now_ms) if windowed else [0.0] * SLOTS

    def report(self, now_ms: int, names: tuple[str, ...] = (), windows: tuple[str, ...] = (),
               scopes: tuple[str, ...] = (), subjects: tuple[str, ...] = (),
               trend: bool = False) -> list[KpiValue]:
        """Every KPI asked for, at `now_ms`. Empty filters mean: every name, every window,
        every scope but "sku" (thousands of rows; ask for it by name), every subject."""
        out = []
        wanted_scopes = scopes or tuple(s for s in SCOPES if s != "sku")
        for definition in DEFINITIONS:
            if names and definition.name not in names:
                continue
            for window in windows or tuple(WINDOWS):
                for scope in definition.scopes:
                    if scope not in wanted_scopes:
                        continue
                    counter = definition.denominator or definition.numerator
                    if scope == "all":
                        found = [""]
                    elif subjects:  # (those asked for: not every subject sorted, then sifted)
                        known = self.subjects_of.get((counter, scope), set())
                        found = sorted({s for s in subjects if s in known})
                    else:
                        found = self.subjects(counter, scope)
                    for subject in found:
                        out.append(self.value(definition, window, scope, subject, now_ms,
                                              trend))
        return out


# ---- what each event contributes ----------------------------------------------------------
def _category(ledger: Ledger, sku: int) -> str:
    catalog = ledger.catalog
    return catalog.categories.values[catalog.category[sku]] or "(none)"


def _count(book: KpiBook, ledger: Ledger, e: Event) -> None:
    node = ledger.catalog.nodes[e.node].node_id
    book.bump("count_lines", e.time_ms, 1, node=node)
    if e.kind == EventKind.COUNT_CONFIRMED:
        book.bump("count_lines_accurate", e.time_ms, 1, node=node)
    if e.kind == EventKind.COUNT_VARIANCE_HELD:
        book.bump("exceptions", e.time_ms, 1, type=ExceptionType.COUNT_VARIANCE.name.lower())


def count_units_allocated(book: KpiBook, ledger: Ledger,
                          counts: dict[tuple[int, int], list[int]]) -> None:
    """Units allocated, and of those units oversold, by (channel, time) over a run of
    ORDER_UNITS_ALLOCATED events: the ledger adds them up as it applies the run (one
    order makes one of these events a line) and counts them here once."""
    channels = ledger.catalog.channels
    for (channel, time_ms), (units, oversold) in counts.items():
        name = channels[channel].channel_id if channel >= 0 else ""
        book.bump1("units_allocated", time_ms, units, "channel", name)
        if oversold:
            book.bump1("units_oversold", time_ms, oversold, "channel", name)


def add_order_decided(book: KpiBook, ledger: Ledger, e: Event,
                      counts: dict[tuple[str, int], list[int]]) -> None:
    """An order's first decision (ORDER_ALLOCATED), added into `counts` by (channel, time):
    the ledger adds up a run of allocations as it applies them and counts them once
    (count_orders_decided). Re-allocations (retries, short picks) are not a new order."""
    # (Named tuples unpacked, not read field by field: compiled, each read by name is a
    # lookup. This runs for every order.)
    decision: Decision = e.payload
    order_id, packages, backorders, _, _, _, _ = decision
    decided = book.decided
    if order_id in decided:
        return
    decided.add(order_id)
    spec = ledger.orders.orders[order_id].spec
    key = (spec[1], e.time_ms)  # (channel id, time)
    row = counts.get(key)
    if row is None:
        row = counts[key] = [0, 0, 0, 0, 0, 0, 0]
    row[0] += 1
    row[1] += len(packages)
    if len(packages) > 1:
        row[2] += 1
    if backorders:
        row[3] += 1
    # (loops, not sum() over generators)
    ordered = placed = cost = 0
    for _, _, quantity, _ in spec[3]:  # the lines
        ordered += quantity
    for plan in packages:  # decision.cost_micros, and the units placed, in one pass
        _, _, _, lines, carrier, handling, units, penalty, _, _, _ = plan
        cost += carrier + handling + units + penalty
        for _, _, quantity, _ in lines:
            placed += quantity
    row[4] += ordered
    row[5] += placed
    row[6] += cost


def count_orders_decided(book: KpiBook, counts: dict[tuple[str, int], list[int]]) -> None:
    """What add_order_decided added up: orders decided, packages planned, orders split and
    backordered (counted only when some were), units ordered and filled, decision cost."""
    for (channel_id, time_ms), row in counts.items():
        orders, packages, split, backordered, ordered, filled, cost = row
        amounts: tuple[tuple[str, float], ...] = (("orders_decided", orders),
                                                  ("packages_planned", packages))
        if split:
            amounts += (("orders_split", split),)
        if backordered:
            amounts += (("orders_backordered", backordered),)
        book.bump_many(time_ms, "channel", channel_id, (
            *amounts, ("units_ordered", ordered), ("units_filled", filled),
            ("decision_cost_micros", cost)))


def _package_shipped(book: KpiBook, ledger: Ledger, e: Event) -> None:
    state = ledger.orders.packages[e.payload.package_id]
    record = ledger.orders.orders[state.order_id]
    t = e.time_ms
    node = ledger.catalog.nodes[state.plan.node].node_id
    channel = record.spec.channel_id
    book.bump("packages_shipped", t, 1, node=node, channel=channel)
    if is_late(state.shipped_ms, state.plan.ship_ms):
        book.bump("packages_late", t, 1, node=node)
    else:
        book.bump("packages_on_time", t, 1, node=node, channel=channel)
    if record.status == OrderStatus.SHIPPED:
        book.bump("orders_shipped", t, 1, channel=channel)
        if not ledger.exceptions.by_order.get(state.order_id):
            book.bump("orders_touchless", t, 1, channel=channel)


def is_late(shipped_ms: int, planned_ship_ms: int) -> bool:
    """Shipped after the end of the day it was promised to ship."""
    return shipped_ms >= (planned_ship_ms // DAY_MS + 1) * DAY_MS


def _units_shipped(book: KpiBook, ledger: Ledger, e: Event) -> None:
    book.bump("units_shipped", e.time_ms, e.quantity, sku=ledger.catalog.sku_ids[e.sku],
              category=_category(ledger, e.sku))


def _return_authorized(book: KpiBook, ledger: Ledger, e: Event) -> None:
    for line in e.payload.lines:
        book.bump("units_returned", e.time_ms, line.quantity,
                  sku=ledger.catalog.sku_ids[line.sku], category=_category(ledger, line.sku))


def _return_inspected(book: KpiBook, ledger: Ledger, e: Event) -> None:
    record = ledger.returns.returns[e.reference]
    book.bump("returns_inspected", e.time_ms, 1)
    book.bump("return_cycle_ms", e.time_ms, e.time_ms - record.created_ms)


def _refund_issued(book: KpiBook, ledger: Ledger, e: Event) -> None:
    record = ledger.returns.returns[e.reference]
    book.bump("refunded_micros", e.time_ms, e.payload.net_micros)
    # Only what it paid for units not back yet: a refund for the units a partial return
    # brought, or for a line received while another is on its way, paid for none.
    ahead = refunded_ahead(ledger, record, e.payload)
    if ahead:
        book.bump("refunded_before_receipt_micros", e.time_ms, ahead)


def _exception_raised(book: KpiBook, ledger: Ledger, e: Event) -> None:
    book.bump("exceptions", e.time_ms, 1, type=e.payload.exception_type.name.lower())


def _pick_shortage(book: KpiBook, ledger: Ledger, e: Event) -> None:
    book.bump("short_picks", e.time_ms, 1, node=ledger.catalog.nodes[e.node].node_id)


_OBSERVERS = {
    EventKind.COUNT_CONFIRMED: _count,
    EventKind.COUNT_ADJUSTED: _count,
    EventKind.COUNT_VARIANCE_HELD: _count,
    EventKind.PACKAGE_SHIPPED: _package_shipped,
    EventKind.ORDER_UNITS_SHIPPED: _units_shipped,
    EventKind.RETURN_AUTHORIZED: _return_authorized,
    EventKind.RETURN_INSPECTED: _return_inspected,
    EventKind.REFUND_ISSUED: _refund_issued,
    EventKind.EXCEPTION_RAISED: _exception_raised,
    EventKind.PICK_SHORTAGE: _pick_shortage,
}


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class QueueAge:
    """Open items of one type, by age."""

    kind: str
    owner_role: str
    under_hour: int
    under_day: int
    older: int
    oldest_ms: int


def exception_ages(ledger: Ledger, now_ms: int) -> list[QueueAge]:
    """The open exception queue by type and age."""
    groups: dict[ExceptionType, list[int]] = {}
    for record in ledger.exceptions.open_records():
        groups.setdefault(record.exception_type, []).append(now_ms - record.created_ms)
    out = []
    for kind in sorted(groups):
        ages = groups[kind]
        out.append(QueueAge(kind.name.lower(), OWNER_ROLE[kind],
            sum(a < HOUR_MS for a in ages), sum(HOUR_MS <= a < DAY_MS for a in ages),
            sum(a >= DAY_MS for a in ages), max(ages)))
    return out
