"""Orders: specs, decisions, lifecycle records, and the order book built from events.

Specs and decisions are NamedTuples: immutable like frozen dataclasses, and several
times cheaper to build, which matters on the allocation path (thousands a second).
"""

from __future__ import annotations

import copyreg
import heapq
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any, Final, NamedTuple

from mypy_extensions import mypyc_attr

from core import COMPILED
from core.exceptions import ExceptionInfo, ExceptionType
from core.model import Bucket, Event, EventKind, set_fields
from core.network import SlaTier

DAY_MS: Final = 86_400_000


class OrderStatus(IntEnum):
    HELD = 1
    ALLOCATED = 2
    PARTIALLY_ALLOCATED = 3
    BACKORDERED = 4
    IN_FULFILMENT = 5
    PARTIALLY_SHIPPED = 6
    SHIPPED = 7
    CANCELLED = 8


class PackageStatus(IntEnum):
    ALLOCATED = 1
    RELEASED = 2
    PICKED = 3
    PACKED = 4
    SHIPPED = 5
    CANCELLED = 6
    REPLANNED = 7  # superseded by a re-optimised plan before release


class PaymentStatus(IntEnum):
    AUTHORIZED = 1
    ON_HOLD = 2


class AddressStatus(IntEnum):
    UNVERIFIED = 0
    VALID = 1
    INVALID = 2


class OptionKind(IntEnum):
    SHIP_COMPLETE = 1
    SPLIT = 2
    WAIT_FOR_INBOUND = 3
    SUBSTITUTE = 4
    BACKORDER = 5


class OrderLineSpec(NamedTuple):
    line_id: str
    sku_id: str
    quantity: int
    # What the customer pays a unit, micros (revenue and refunds are at it); -1: the SKU's
    # catalogue price when the line ships.
    unit_price_micros: int = -1


class OrderSpec(NamedTuple):
    order_id: str
    channel_id: str
    tier: SlaTier
    lines: tuple[OrderLineSpec, ...]
    postal_code: str = ""
    latitude: float | None = None
    longitude: float | None = None
    deliver_by_ms: int = 0
    payment: PaymentStatus = PaymentStatus.AUTHORIZED
    fraud_score: float = 0.0
    address: AddressStatus = AddressStatus.UNVERIFIED
    allow_split: bool = True
    allow_substitution: bool = False
    customer_id: str = ""


class PackageLine(NamedTuple):
    line_id: str
    sku: int
    quantity: int
    substitutes_sku: int = -1  # the ordered SKU this one replaces


class PackagePlan(NamedTuple):
    package_id: str
    node: int
    service: int
    lines: tuple[PackageLine, ...]
    carrier_micros: int
    handling_micros: int
    units_micros: int
    penalty_micros: int
    billable_lb: int
    ship_ms: int
    promise_ms: int

    @property
    def total_micros(self) -> int:
        return self.carrier_micros + self.handling_micros + self.units_micros + self.penalty_micros


class Backorder(NamedTuple):
    line_id: str
    sku: int
    quantity: int
    promise_ms: int = 0  # 0: no inbound stock known to cover it


class Option(NamedTuple):
    kind: OptionKind
    feasible: bool
    cost_micros: int = 0
    packages: int = 0
    chosen: bool = False
    detail: str = ""


class Decision(NamedTuple):
    """Payload of ORDER_ALLOCATED: what allocation decided for (some lines of) an order."""

    order_id: str
    packages: tuple[PackagePlan, ...]
    backorders: tuple[Backorder, ...]
    method: int
    rule: str
    options: tuple[Option, ...]
    no_feasible_node: bool = False

    @property
    def cost_micros(self) -> int:
        return sum(p.total_micros for p in self.packages)



def _reduce_to_fields(self: tuple[Any, ...]) -> tuple[type, tuple[Any, ...]]:
    return type(self), tuple(self)


# Specs and decisions are pickled (into the log) as their class and fields: a quarter less
# time to write than pickle's default for a named tuple, which calls back into Python
# for its arguments. (Logs written the default way still read.)
# (Registered with copyreg rather than set as each class's __reduce__: the pickler looks it
# up by type, and a plain function serves whether this module runs compiled or not.)
for _named in (OrderLineSpec, OrderSpec, PackageLine, PackagePlan, Backorder, Option, Decision):
    copyreg.pickle(_named, _reduce_to_fields)


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class CancelRecord:
    """Payload of ORDER_CANCELLED: quantities taken off packages and off backorders."""

    order_id: str
    package_lines: tuple[tuple[str, str, int], ...]  # (package_id, line_id, quantity)
    backorder_lines: tuple[tuple[str, int], ...]  # (line_id, quantity)
    whole_order: bool
    # Packed packages left with units: PICKED again, to be packed (scanned) again. (Unset
    # in a record logged before: those packages stayed PACKED, as a replay leaves them.)
    repack: tuple[str, ...] = ()


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class ReplanRecord:
    """Payload of ORDER_REPLANNED: these packages give way to a re-optimised plan (an
    ORDER_ALLOCATED of the same order follows in the same commit)."""

    order_id: str
    superseded: tuple[str, ...]
    old_cost_micros: int
    new_cost_micros: int


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class WaveRecord:
    wave_id: str
    node: int
    package_ids: tuple[str, ...]


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class PickRecord:
    package_id: str
    picked: tuple[tuple[str, int], ...]  # (line_id, picked quantity)


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class PackRecord:
    package_id: str
    matched: bool


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class ShipRecord:
    package_id: str
    tracking_number: str


# An order's and a package's state: native classes when compiled, their __init__ written out
# (the generated one runs interpreted), with a default for every field so that pickle's
# default form (the object made empty through __init__, then its fields set; snapshots from
# before __reduce__ hold it) still reads. Snapshots hold them as their fields in order.
_NO_PLAN = PackagePlan("", -1, -1, (), 0, 0, 0, 0, 0, 0, 0)
_NO_SPEC = OrderSpec("", "", SlaTier.STANDARD, ())


@dataclass(slots=True, init=False)
class PackageState:
    plan: PackagePlan
    order_id: str
    status: PackageStatus = PackageStatus.ALLOCATED
    quantities: dict[str, int] = field(default_factory=dict)  # line_id -> units in package
    wave_id: str = ""
    tracking_number: str = ""
    pack_mismatch: bool = False
    shipped_ms: int = 0
    unit_prices: dict[str, int] = field(default_factory=dict)  # line_id -> price charged

    def __init__(self, plan: PackagePlan = _NO_PLAN, order_id: str = "",
                 status: PackageStatus = PackageStatus.ALLOCATED,
                 quantities: dict[str, int] | None = None, wave_id: str = "",
                 tracking_number: str = "", pack_mismatch: bool = False, shipped_ms: int = 0,
                 unit_prices: dict[str, int] | None = None) -> None:
        self.plan = plan
        self.order_id = order_id
        self.status = status
        self.quantities = {} if quantities is None else quantities
        self.wave_id = wave_id
        self.tracking_number = tracking_number
        self.pack_mismatch = pack_mismatch
        self.shipped_ms = shipped_ms
        self.unit_prices = {} if unit_prices is None else unit_prices

    def __setstate__(self, state: Any) -> None:
        set_fields(self, state)  # (snapshots written in pickle's default form)

    def __reduce__(self) -> tuple[type[PackageState], tuple[Any, ...]]:
        return PackageState, _package_fields(self)


@dataclass(slots=True, init=False)
class OrderRecord:
    spec: OrderSpec
    seq: int  # arrival order, the last priority tie-break
    status: OrderStatus = OrderStatus.BACKORDERED
    package_ids: list[str] = field(default_factory=list)
    backorders: dict[str, Backorder] = field(default_factory=dict)  # line_id -> open backorder
    last_decision: Decision | None = None
    cancelled: dict[str, int] = field(default_factory=dict)  # line_id -> units cancelled
    held: bool = False

    def __init__(self, spec: OrderSpec = _NO_SPEC, seq: int = 0,
                 status: OrderStatus = OrderStatus.BACKORDERED,
                 package_ids: list[str] | None = None,
                 backorders: dict[str, Backorder] | None = None,
                 last_decision: Decision | None = None,
                 cancelled: dict[str, int] | None = None, held: bool = False) -> None:
        self.spec = spec
        self.seq = seq
        self.status = status
        self.package_ids = [] if package_ids is None else package_ids
        self.backorders = {} if backorders is None else backorders
        self.last_decision = last_decision
        self.cancelled = {} if cancelled is None else cancelled
        self.held = held

    def __setstate__(self, state: Any) -> None:
        set_fields(self, state)  # (snapshots written in pickle's default form)

    def __reduce__(self) -> tuple[type[OrderRecord], tuple[Any, ...]]:
        return OrderRecord, _record_fields(self)

    def line(self, line_id: str) -> OrderLineSpec:
        for line in self.spec.lines:
            if line.line_id == line_id:
                return line
        raise KeyError(line_id)


_package_fields = operator.attrgetter(*(f.name for f in fields(PackageState)))
_record_fields = operator.attrgetter(*(f.name for f in fields(OrderRecord)))


# Enum members read for every order, as module constants: on Python 3.11 reading a member
# from its class costs about four times a global's lookup.
_PARTIALLY_ALLOCATED: Final = OrderStatus.PARTIALLY_ALLOCATED
_ALLOCATED: Final = OrderStatus.ALLOCATED
_BACKORDERED: Final = OrderStatus.BACKORDERED


def _is_open(status: OrderStatus) -> bool:
    """Allocated, partly or not at all, and nothing of it released to a warehouse yet:
    what re-optimisation may still change (OrderBook.open_orders)."""
    return status is _ALLOCATED or status is _PARTIALLY_ALLOCATED or status is _BACKORDERED


def _moved(counts: dict[OrderStatus, int], open_orders: dict[str, None], order_id: str,
           old: OrderStatus, new: OrderStatus) -> None:
    """An order went from `old` to `new`: OrderBook.status_counts and open_orders follow."""
    if old is not new:
        counts[old] -= 1
        counts[new] = counts.get(new, 0) + 1
        now_open = _is_open(new)
        if now_open is not _is_open(old):  # (most moves, as allocating: open to open)
            if now_open:
                open_orders[order_id] = None
            else:
                open_orders.pop(order_id, None)


_PACKAGE_ALLOCATED: Final = PackageStatus.ALLOCATED
_PACKAGE_CANCELLED: Final = PackageStatus.CANCELLED
_PACKAGE_REPLANNED: Final = PackageStatus.REPLANNED


#: The stamp of a package that comes back to waiting (none does today): above every other,
#: so each wave after takes it into the node's queue again (OrderBook.waves_queue; a
#: package queued twice is read once).
_BACK: Final = 1 << 62


def _package_moved(allocated_at: dict[int, dict[str, int]], state: PackageState,
                   status: PackageStatus) -> None:
    """A package goes to `status`: OrderBook.allocated_at follows."""
    if state.status is _PACKAGE_ALLOCATED and status is not _PACKAGE_ALLOCATED:
        at = allocated_at.get(state.plan.node)
        if at is not None:
            at.pop(state.plan.package_id, None)
    elif status is _PACKAGE_ALLOCATED and state.status is not _PACKAGE_ALLOCATED:
        allocated_at.setdefault(state.plan.node, {})[state.plan.package_id] = _BACK
    state.status = status


#: A package's place in its node's queue for a wave: SLA tier, deliver-by (none last),
#: ship date, the order's arrival, the package id (no two share it, so no ties).
WaveKey = tuple[int, int, int, int, str]
NO_DEADLINE: Final = 1 << 62


def wave_key(record: OrderRecord, plan: PackagePlan) -> WaveKey:
    spec = record.spec
    return (int(spec[2]), spec[7] or NO_DEADLINE, plan[9], record.seq, plan[0])


def first_waiting(queue: list[WaveKey], waiting: dict[str, int], limit: int) -> list[str]:
    """The first `limit` package ids in `queue` (a heap, which may still hold packages no
    longer waiting) that `waiting` holds, in order: a walk of the heap from its top, as
    far as the wave goes, not of every package queued."""
    chosen: list[str] = []
    if not queue or limit <= 0:
        return chosen
    seen: set[str] = set()
    size = len(queue)
    frontier: list[tuple[WaveKey, int]] = [(queue[0], 0)]
    while frontier and len(chosen) < limit:
        key, i = heapq.heappop(frontier)
        package_id = key[4]
        if package_id in waiting and package_id not in seen:
            seen.add(package_id)
            chosen.append(package_id)
        left = 2 * i + 1
        if left < size:
            heapq.heappush(frontier, (queue[left], left))
            if left + 1 < size:
                heapq.heappush(frontier, (queue[left + 1], left + 1))
    return chosen


def index_allocated(packages: dict[str, PackageState]) -> dict[int, dict[str, int]]:
    """Node -> its ALLOCATED packages' ids with their stamps (each one's number among all
    packages, in the order made), found one by one (what OrderBook.allocated_at keeps as
    it goes)."""
    allocated_at: dict[int, dict[str, int]] = {}
    for stamp, (package_id, state) in enumerate(packages.items(), start=1):
        if state.status is _PACKAGE_ALLOCATED:
            allocated_at.setdefault(state.plan.node, {})[package_id] = stamp
    return allocated_at


def missing_order(book: OrderBook, order_id: str) -> str:
    """Why the book has no record of the order: archived, or never received."""
    if order_id in book.archived:
        return (f"order {order_id!r} is archived: it closed longer ago than the retention "
                "(order_retention_days); its events went out on the event stream")
    return f"no order {order_id!r}"


def _is_closed(status: OrderStatus) -> bool:
    return status in (OrderStatus.SHIPPED, OrderStatus.CANCELLED)


def index_closed(orders: dict[str, OrderRecord], packages: dict[str, PackageState],
                 ) -> dict[str, int]:
    """closed_ms for a snapshot written before it was kept: a shipped order closed with
    its last package shipped; when a cancelled one closed was not kept (0: it can be
    archived now; nothing shipped, so nothing can be returned)."""
    closed: list[tuple[int, str]] = []
    for order_id, record in orders.items():
        if _is_closed(record.status):
            shipped = [packages[p].shipped_ms for p in record.package_ids
                       if packages[p].status == PackageStatus.SHIPPED]
            closed.append((max(shipped, default=0), order_id))
    closed.sort()
    return {order_id: time_ms for time_ms, order_id in closed}


def index_open(orders: dict[str, OrderRecord]) -> dict[str, None]:
    """The ids of the open orders (_is_open), found one by one (what OrderBook.open_orders
    keeps as it goes)."""
    return {order_id: None for order_id, record in orders.items() if _is_open(record.status)}


def index_backordered(orders: dict[str, OrderRecord]) -> dict[int, dict[str, int]]:
    """SKU -> order id -> units backordered, found one by one (what
    OrderBook.backordered keeps as it goes), the orders in the order they arrived."""
    found: dict[int, dict[str, int]] = {}
    for order_id, record in sorted(orders.items(), key=lambda kv: kv[1].seq):
        for backorder in record.backorders.values():
            units = found.setdefault(backorder[1], {})
            units[order_id] = units.get(order_id, 0) + backorder[2]
    return found


def index_promised(orders: dict[str, OrderRecord]) -> dict[int, dict[str, int]]:
    """SKU -> channel -> units backordered with a promise date, found one by one (what
    OrderBook.promised keeps as it goes)."""
    found: dict[int, dict[str, int]] = {}
    for record in orders.values():
        for backorder in record.backorders.values():
            if backorder[3]:
                by_channel = found.setdefault(backorder[1], {})
                channel = record.spec[1]
                by_channel[channel] = by_channel.get(channel, 0) + backorder[2]
    return {sku: kept for sku, by_channel in found.items()
            if (kept := {ch: units for ch, units in by_channel.items() if units})}


def count_statuses(orders: dict[str, OrderRecord]) -> dict[OrderStatus, int]:
    """Orders by status, counted one by one (what OrderBook.status_counts keeps as it
    goes)."""
    counts: dict[OrderStatus, int] = {}
    for record in orders.values():
        counts[record.status] = counts.get(record.status, 0) + 1
    return counts


@mypyc_attr(native_class=False)
class OrderBook:
    """Orders, packages and node workload, changed only by order events."""

    def __init__(self) -> None:
        self.orders: dict[str, OrderRecord] = {}
        self.packages: dict[str, PackageState] = {}
        self.node_day_orders: dict[tuple[int, int], int] = {}
        self.waves = 0
        # Orders by status, kept as they change: /metrics reads it at every scrape, where
        # counting the orders one by one held the server up ~1 µs an order (a quarter of
        # a second at 200,000 orders). Not in a snapshot: counted again when one is read.
        self.status_counts: dict[OrderStatus, int] = {}
        # Node -> the ids of its packages waiting for a wave (ALLOCATED), in the order
        # made: ReleaseWave chooses among them, where it walked every package ever made
        # (~0.2 s a call at a million). Not in a snapshot either.
        self.allocated_at: dict[int, dict[str, int]] = {}
        # Node -> a heap of its waiting packages' wave keys (wave_key), and the stamp of
        # the newest package in it: made when a wave is first asked of the node, topped up
        # with the packages stamped since at each wave after (allocating does nothing
        # more), and the released popped off. ReleaseWave reads the heap's top, where it
        # looked at every package waiting (~60 ms at 20,000). The heap may hold packages
        # that left allocated_at, which readers skip. Not in a snapshot either.
        self.wave_queue: dict[int, tuple[list[WaveKey], int]] = {}
        # The ids of the orders re-optimisation may change (_is_open), in no set order:
        # it read every order ever received to find them. Not in a snapshot either.
        self.open_orders: dict[str, None] = {}
        # Packages that left with their archived orders: a new package's stamp (see
        # allocated_at) counts them too, so that stamps only grow. Not in a snapshot: the
        # stamps are made afresh when one is read.
        self.packages_archived = 0
        # When each closed order closed (shipped or cancelled whole: nothing but a return
        # can happen to it after), by order id, in the order they closed: what
        # archivable() reads.
        self.closed_ms: dict[str, int] = {}
        # The ids of the orders archived (ORDER_ARCHIVED): their records have left memory,
        # their ids stay taken.
        self.archived: set[str] = set()
        # SKU -> order id -> its units backordered, in the order backordered: the orders
        # a cancelled inbound concerns (where it read every order). And SKU -> channel ->
        # the units its backorders were promised a date for: the claims on the SKU's
        # inbound stock ahead of a new backorder's. Not in a snapshot either.
        self.backordered: dict[int, dict[str, int]] = {}
        self.promised: dict[int, dict[str, int]] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (into snapshots) as columns: see _book_columns."""
        try:
            state: Any = _book_columns(self)
        except (TypeError, ValueError, KeyError, AttributeError):  # a value columns cannot hold
            state = dict(vars(self))
        return OrderBook, (), state

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):  # pickle's default form (earlier snapshots), or a fallback
            vars(self).update(state)
            if "closed_ms" not in state:  # (written before orders were archived)
                self.closed_ms = index_closed(self.orders, self.packages)
                self.archived = set()
        else:
            _read_book_columns(self, state)
        self.status_counts = count_statuses(self.orders)
        self.packages_archived = 0  # (the stamps start again: index_allocated)
        self.allocated_at = index_allocated(self.packages)
        self.open_orders = index_open(self.orders)
        self.wave_queue = {}
        self.backordered = index_backordered(self.orders)
        self.promised = index_promised(self.orders)

    def receive(self, spec: OrderSpec, seq: int) -> None:
        counts = self.status_counts
        earlier = self.orders.get(spec.order_id)
        if earlier is not None:  # (replaced: order ids are checked before, so never)
            counts[earlier.status] -= 1
        self.orders[spec.order_id] = OrderRecord(spec, seq)
        counts[_BACKORDERED] = counts.get(_BACKORDERED, 0) + 1
        self.open_orders[spec.order_id] = None

    def allocate(self, decision: Decision) -> None:
        # (Named tuples unpacked, not read field by field: compiled, a read by name is a
        # lookup.)
        order_id, plans, backorders_, _, _, _, _ = decision
        record = self.orders[order_id]
        first = not record.package_ids  # (an order's first packages: most allocations)
        record.last_decision = decision
        record.held = False
        backorders = record.backorders
        if backorders:
            self._unindex_backorders(record)
        package_ids = record.package_ids
        packages = self.packages
        gone = self.packages_archived
        node_day_orders = self.node_day_orders
        allocated_at = self.allocated_at
        days: list[tuple[int, int]] = []  # (node, day) of each package, each once
        for plan in plans:
            package_id, node, _, lines, _, _, _, _, _, ship_ms, _ = plan
            state = PackageState(plan, order_id)
            quantities = state.quantities
            for line_id, _, quantity, _ in lines:
                quantities[line_id] = quantities.get(line_id, 0) + quantity
                if backorders:
                    backorders.pop(line_id, None)
            packages[package_id] = state
            waiting = allocated_at.get(node)
            if waiting is None:
                waiting = allocated_at[node] = {}
            waiting[package_id] = len(packages) + gone  # (its stamp: the packages made)
            package_ids.append(package_id)
            key = (node, ship_ms // DAY_MS)
            if key not in days:  # (a few packages at most: a list, not a set)
                days.append(key)
        for key in days:
            # An order takes one of a node's slots for the day however many packages it
            # ships from there: one placed again where it still ships takes none.
            if first or not self._ships_at(record, key, len(plans)):
                node_day_orders[key] = node_day_orders.get(key, 0) + 1
        # Every line placed is off the backorders now (above), unless part of it is still
        # backordered (below).
        for backorder in backorders_:
            backorders[backorder[0]] = backorder
        if backorders:
            self._index_backorders(record)
        if not first:
            self._refresh(record)
            return
        # What _refresh would find, without looking: no longer held, and every package the
        # order has is one of these, ALLOCATED.
        backordered = bool(backorders) and any(b[2] for b in backorders.values())
        if plans:
            status = _PARTIALLY_ALLOCATED if backordered else _ALLOCATED
        else:
            status = _BACKORDERED if backordered else OrderStatus.CANCELLED
        _moved(self.status_counts, self.open_orders, order_id, record.status, status)
        record.status = status

    def _ships_at(self, record: OrderRecord, key: tuple[int, int], newest: int = 0) -> bool:
        """Whether a package of the order, not cancelled or replanned, ships from the node
        on the day of `key` (node, day), leaving out its `newest` packages."""
        package_ids = record.package_ids
        packages = self.packages
        for i in range(len(package_ids) - newest):
            state = packages[package_ids[i]]
            status = state.status
            if (status is not _PACKAGE_CANCELLED and status is not _PACKAGE_REPLANNED
                    and state.plan.node == key[0] and state.plan.ship_ms // DAY_MS == key[1]):
                return True
        return False

    def _slot_freed(self, record: OrderRecord, state: PackageState) -> None:
        """`state` was cancelled: its node's slot for the day is given back, unless another
        package of the order still ships from there that day."""
        key = (state.plan.node, state.plan.ship_ms // DAY_MS)
        if self._ships_at(record, key):
            return
        left = self.node_day_orders.get(key, 0) - 1
        if left > 0:
            self.node_day_orders[key] = left
        else:
            self.node_day_orders.pop(key, None)

    def hold(self, order_id: str) -> None:
        record = self.orders[order_id]
        record.held = True
        self._refresh(record)

    def unhold(self, order_id: str) -> None:
        record = self.orders[order_id]
        record.held = False
        self._refresh(record)

    def cancel(self, rec: CancelRecord) -> None:
        record = self.orders[rec.order_id]
        for package_id, line_id, qty in rec.package_lines:
            state = self.packages[package_id]
            state.quantities[line_id] -= qty
            if state.quantities[line_id] == 0:
                del state.quantities[line_id]
            if not state.quantities:
                _package_moved(self.allocated_at, state, PackageStatus.CANCELLED)
                self._slot_freed(record, state)
            record.cancelled[line_id] = record.cancelled.get(line_id, 0) + qty
        for package_id in getattr(rec, "repack", ()):
            # What was packed is not what ships now: packed (scanned) again first.
            state = self.packages[package_id]
            if state.status == PackageStatus.PACKED:
                _package_moved(self.allocated_at, state, PackageStatus.PICKED)
        if rec.backorder_lines:
            self._unindex_backorders(record)
        for line_id, qty in rec.backorder_lines:
            backorder = record.backorders[line_id]
            left = backorder.quantity - qty
            if left:
                record.backorders[line_id] = backorder._replace(quantity=left)
            else:
                del record.backorders[line_id]
            record.cancelled[line_id] = record.cancelled.get(line_id, 0) + qty
        if rec.backorder_lines and record.backorders:
            self._index_backorders(record)
        if rec.whole_order:
            record.held = False
        self._refresh(record)

    def _index_backorders(self, record: OrderRecord) -> None:
        order_id, channel_id = record.spec[0], record.spec[1]
        backordered = self.backordered
        promised = self.promised
        for backorder in record.backorders.values():
            sku = backorder[1]
            orders = backordered.get(sku)
            if orders is None:
                orders = backordered[sku] = {}
            orders[order_id] = orders.get(order_id, 0) + backorder[2]
            if backorder[3]:
                by_channel = promised.get(sku)
                if by_channel is None:
                    by_channel = promised[sku] = {}
                by_channel[channel_id] = by_channel.get(channel_id, 0) + backorder[2]

    def _unindex_backorders(self, record: OrderRecord) -> None:
        order_id, channel_id = record.spec[0], record.spec[1]
        backordered = self.backordered
        promised = self.promised
        for backorder in record.backorders.values():
            orders = backordered.get(backorder[1])
            if orders is not None and orders.pop(order_id, None) is not None and not orders:
                del backordered[backorder[1]]
            if backorder[3]:
                sku = backorder[1]
                by_channel = promised.get(sku)
                if by_channel is None:
                    by_channel = promised[sku] = {}
                left = by_channel.get(channel_id, 0) - backorder[2]
                if left:
                    by_channel[channel_id] = left
                else:
                    by_channel.pop(channel_id, None)
                    if not by_channel:
                        del promised[sku]

    def promised_to(self, order_id: str, sku: int) -> int:
        """Units of `sku` the order has backordered with a promise date."""
        record = self.orders.get(order_id)
        if record is None or not record.backorders:
            return 0
        return sum(b[2] for b in record.backorders.values() if b[1] == sku and b[3])

    def replan(self, rec: ReplanRecord) -> None:
        record = self.orders[rec.order_id]
        days: set[tuple[int, int]] = set()
        for package_id in rec.superseded:
            state = self.packages[package_id]
            _package_moved(self.allocated_at, state, PackageStatus.REPLANNED)
            days.add((state.plan.node, state.plan.ship_ms // DAY_MS))
        for key in days:
            self.node_day_orders[key] -= 1
        self._refresh(record)

    def release_wave(self, wave: WaveRecord) -> None:
        self.waves += 1
        for package_id in wave.package_ids:
            state = self.packages[package_id]
            _package_moved(self.allocated_at, state, PackageStatus.RELEASED)
            state.wave_id = wave.wave_id
            self._refresh(self.orders[state.order_id])
        kept = self.wave_queue.get(wave.node)
        if kept is not None:  # the released (and any others gone) off the top
            queue = kept[0]
            waiting = self.allocated_at.get(wave.node, {})
            while queue and queue[0][4] not in waiting:
                heapq.heappop(queue)
            if len(queue) > 2 * len(waiting) + 64:  # mostly gone: made again when asked
                del self.wave_queue[wave.node]

    def waves_queue(self, node: int) -> list[WaveKey]:
        """The node's wave queue (wave_queue): made from its waiting packages the first
        time, then topped up with those stamped since (the newest come last in
        allocated_at, so they are read from its end until an older stamp)."""
        waiting = self.allocated_at.get(node, {})
        kept = self.wave_queue.get(node)
        if kept is None:
            queue = [self._wave_key(package_id) for package_id in waiting]
            heapq.heapify(queue)
        else:
            queue, newest = kept
            for package_id, stamp in reversed(waiting.items()):
                if stamp <= newest:
                    break
                heapq.heappush(queue, self._wave_key(package_id))
        # Every package made so far is in it now (stamps count packages made).
        self.wave_queue[node] = (queue, len(self.packages) + self.packages_archived)
        return queue

    def _wave_key(self, package_id: str) -> WaveKey:
        state = self.packages[package_id]
        return wave_key(self.orders[state.order_id], state.plan)

    def pick(self, rec: PickRecord) -> None:
        state = self.packages[rec.package_id]
        for line_id, picked in rec.picked:
            if picked:
                state.quantities[line_id] = picked
            else:
                state.quantities.pop(line_id, None)
        _package_moved(self.allocated_at, state, PackageStatus.PICKED if state.quantities
                       else PackageStatus.CANCELLED)
        record = self.orders[state.order_id]
        if not state.quantities:  # nothing of it was found: it does not ship
            self._slot_freed(record, state)
        self._refresh(record)

    def pack(self, rec: PackRecord) -> None:
        state = self.packages[rec.package_id]
        state.pack_mismatch = not rec.matched
        if rec.matched:
            _package_moved(self.allocated_at, state, PackageStatus.PACKED)

    def ship(self, rec: ShipRecord, time_ms: int) -> None:
        state = self.packages[rec.package_id]
        _package_moved(self.allocated_at, state, PackageStatus.SHIPPED)
        state.tracking_number = rec.tracking_number
        state.shipped_ms = time_ms
        self._refresh(self.orders[state.order_id])

    def note_closed(self, order_id: str, time_ms: int) -> None:
        """After an event that may have closed the order: when it closed, if it has."""
        if _is_closed(self.orders[order_id].status):
            self.closed_ms.setdefault(order_id, time_ms)
        else:
            self.closed_ms.pop(order_id, None)

    def renumber_services(self, moved: dict[int, int]) -> None:
        """A new network lists its carrier services in another order (or without some):
        each package's service, a position in the list, becomes the same service's new
        position (see Ledger._services_moved: a negative one while the network does not
        have it), so a package keeps the carrier and service it was planned with instead
        of taking whichever now holds its old place."""
        for state in self.packages.values():
            plan = state.plan
            if plan.service in moved:
                state.plan = plan._replace(service=moved[plan.service])

    def archive(self, order_id: str) -> None:
        """The closed order leaves memory (ORDER_ARCHIVED); its id stays taken."""
        record = self.orders.pop(order_id)
        for package_id in record.package_ids:  # (none waiting for a wave: it is closed)
            del self.packages[package_id]
        self.packages_archived += len(record.package_ids)
        self.status_counts[record.status] -= 1
        self.open_orders.pop(order_id, None)
        del self.closed_ms[order_id]
        self.archived.add(order_id)

    def archivable(self, closed_before_ms: int, busy: set[str], limit: int) -> list[str]:
        """Up to `limit` orders closed before `closed_before_ms`, oldest first, less those
        in `busy` (an open return or exception)."""
        found: list[str] = []
        for order_id, closed in self.closed_ms.items():
            if closed >= closed_before_ms:
                break  # (in the order they closed: the rest closed later)
            if order_id not in busy:
                found.append(order_id)
                if len(found) >= limit:
                    break
        return found

    def _refresh(self, record: OrderRecord) -> None:
        states = [self.packages[p] for p in record.package_ids]
        live = [s for s in states
                if s.status not in (PackageStatus.CANCELLED, PackageStatus.REPLANNED)]
        shipped = [s for s in live if s.status == PackageStatus.SHIPPED]
        open_units = sum(b.quantity for b in record.backorders.values())
        if record.held:
            status = OrderStatus.HELD
        elif not live and not open_units:
            status = OrderStatus.CANCELLED
        elif shipped and len(shipped) == len(live) and not open_units:
            status = OrderStatus.SHIPPED
        elif shipped:
            status = OrderStatus.PARTIALLY_SHIPPED
        elif any(s.status != PackageStatus.ALLOCATED for s in live):
            status = OrderStatus.IN_FULFILMENT
        elif live and open_units:
            status = OrderStatus.PARTIALLY_ALLOCATED
        elif live:
            status = OrderStatus.ALLOCATED
        else:
            status = OrderStatus.BACKORDERED
        _moved(self.status_counts, self.open_orders, record.spec[0], record.status, status)
        record.status = status


# ---- the order book in a snapshot ---------------------------------------------------------
# A snapshot holds every order the server keeps. Pickled object by object, the order book
# took ~24 µs an order to write (pickle calls each named tuple's reducer, writes its class,
# memoizes each object): most of a snapshot's time. Written as columns, every record is a
# run of integers, floats and strings in a fixed order, in three flat lists: no object
# of its own for pickle to reduce, beyond the strings. Reading walks the same order. What
# the book shares stays shared: a package's plan is its order's decision's plan, and an
# order's ids are one string.

_BOOK_COLUMNS: Final = 1  # the layout's version

_TIERS: Final = {int(m): m for m in SlaTier}
_PAYMENTS: Final = {int(m): m for m in PaymentStatus}
_ADDRESSES: Final = {int(m): m for m in AddressStatus}
_ORDER_STATUSES: Final = {int(m): m for m in OrderStatus}
_PACKAGE_STATUSES: Final = {int(m): m for m in PackageStatus}
_OPTION_KINDS: Final = {int(m): m for m in OptionKind}


# A spec's float fields, read as stored: compiled code reading one into a float would
# make an int a float, and an int must not come back a float.
_FLOAT_FIELDS: Final = tuple(OrderSpec._fields.index(name)
                             for name in ("latitude", "longitude", "fraud_score"))
_FRAUD_SCORE: Final = OrderSpec._fields.index("fraud_score")


def _member(members: dict[int, Any], value: object) -> int:
    """An enum field's value, which must be one of its members: anything else (a plain
    int, a value of no member) is written the old way, as it is."""
    member: object = value  # (the object itself: compiled, `value` below is a plain int)
    if isinstance(value, int):
        # `+ 0`: the member's value as a plain int; compiled, read in place, where int()
        # is a call through the member's class.
        code = value + 0
        if members.get(code) is member:
            return code
    raise TypeError(f"{value!r} is not a member")


def _flag(value: object) -> int:
    if value is True:
        return 1
    if value is False:
        return 0
    raise TypeError(f"{value!r} is not a bool")


def _exact(ints: list[int], floats: list[float]) -> None:
    """Every integer an int and every float a float (not a bool, None or a float where an
    int belongs): what the columns read back is what was written. (Compiled, the typed
    reads that filled the lists have refused anything else already.)"""
    if COMPILED:
        return
    for number in ints:
        if type(number) is not int:
            raise TypeError(f"{number!r} is not an int")
    for real in floats:
        if type(real) is not float:
            raise TypeError(f"{real!r} is not a float")

# (Named tuples are unpacked below, not read field by field: compiled, unpacking a tuple
# reads its items in place, where each read by name is a lookup.)


def _put_spec(spec: OrderSpec, ints: list[int], floats: list[float], strs: list[str]) -> None:
    stored: tuple[object, ...] = spec
    for index in _FLOAT_FIELDS:
        value = stored[index]
        if (value is not None or index == _FRAUD_SCORE) and type(value) is not float:
            raise TypeError("not a float")
    (order_id, channel_id, tier, lines, postal_code, latitude, longitude, deliver_by_ms,
     payment, fraud_score, address, allow_split, allow_substitution, customer_id) = spec
    strs.append(order_id)
    strs.append(channel_id)
    strs.append(postal_code)
    strs.append(customer_id)
    priced = False
    for line in lines:
        if line[3] != -1:
            priced = True
    ints.append((latitude is None) | (longitude is None) << 1 | _flag(allow_split) << 2
                | _flag(allow_substitution) << 3 | _flag(priced) << 4)
    if latitude is not None:
        floats.append(latitude)
    if longitude is not None:
        floats.append(longitude)
    floats.append(fraud_score)
    ints.append(_member(_TIERS, tier))
    ints.append(deliver_by_ms)
    ints.append(_member(_PAYMENTS, payment))
    ints.append(_member(_ADDRESSES, address))
    ints.append(len(lines))
    for line_id, sku_id, quantity, unit_price_micros in lines:
        strs.append(line_id)
        strs.append(sku_id)
        ints.append(quantity)
        if priced:  # (written only when a line has a price: columns from before have none)
            ints.append(unit_price_micros)


def _put_backorder(b: Backorder, ints: list[int], strs: list[str]) -> None:
    line_id, sku, quantity, promise_ms = b
    strs.append(line_id)
    ints.append(sku)
    ints.append(quantity)
    ints.append(promise_ms)


def _put_plan(plan: PackagePlan, ints: list[int], strs: list[str]) -> None:
    (package_id, node, service, lines, carrier, handling, units, penalty, billable, ship_ms,
     promise_ms) = plan
    strs.append(package_id)
    ints.append(node)
    ints.append(service)
    ints.append(len(lines))
    for line_id, sku, quantity, substitutes_sku in lines:
        strs.append(line_id)
        ints.append(sku)
        ints.append(quantity)
        ints.append(substitutes_sku)
    ints.append(carrier)
    ints.append(handling)
    ints.append(units)
    ints.append(penalty)
    ints.append(billable)
    ints.append(ship_ms)
    ints.append(promise_ms)


def _put_decision(d: Decision, order_id: str, ints: list[int], strs: list[str]) -> None:
    own_id, packages, backorders, method, rule, options, no_feasible_node = d
    if own_id == order_id:
        ints.append(1)
    else:
        ints.append(0)
        strs.append(own_id)
    ints.append(len(packages))
    for plan in packages:
        _put_plan(plan, ints, strs)
    ints.append(len(backorders))
    for b in backorders:
        _put_backorder(b, ints, strs)
    ints.append(method)
    strs.append(rule)
    ints.append(len(options))
    for kind, feasible, cost, count, chosen, detail in options:
        ints.append(_member(_OPTION_KINDS, kind))
        ints.append(_flag(feasible) | _flag(chosen) << 1)
        ints.append(cost)
        ints.append(count)
        strs.append(detail)
    ints.append(_flag(no_feasible_node))


def _put_counts(counts: dict[str, int], ints: list[int], strs: list[str]) -> None:
    ints.append(len(counts))
    for key, value in counts.items():
        strs.append(key)
        ints.append(value)


def _put_record(order_id: str, record: OrderRecord, ints: list[int],
                floats: list[float], strs: list[str]) -> None:
    spec = record.spec
    if spec.order_id != order_id:
        raise KeyError(order_id)
    _put_spec(spec, ints, floats, strs)
    ints.append(record.seq)
    ints.append(_member(_ORDER_STATUSES, record.status))
    ints.append(_flag(record.held))
    ints.append(len(record.package_ids))
    for package_id in record.package_ids:
        strs.append(package_id)
    ints.append(len(record.backorders))
    for line_id, b in record.backorders.items():
        strs.append(line_id)
        _put_backorder(b, ints, strs)
    _put_counts(record.cancelled, ints, strs)
    decision = record.last_decision
    if decision is None:
        ints.append(0)
    else:
        ints.append(1)
        _put_decision(decision, order_id, ints, strs)


def _put_package(package_id: str, state: PackageState, orders: dict[str, OrderRecord],
                 ints: list[int], strs: list[str]) -> None:
    strs.append(package_id)
    strs.append(state.order_id)
    record = orders.get(state.order_id)
    # Its plan: the k-th of its order's last decision when it is that very object.
    shared = -1
    if record is not None and record.last_decision is not None:
        for k, plan in enumerate(record.last_decision.packages):
            if plan is state.plan:
                shared = k
                break
    ints.append(shared)
    if shared < 0:
        _put_plan(state.plan, ints, strs)
    ints.append(_member(_PACKAGE_STATUSES, state.status))
    _put_counts(state.quantities, ints, strs)
    strs.append(state.wave_id)
    strs.append(state.tracking_number)
    ints.append(_flag(state.pack_mismatch))
    ints.append(state.shipped_ms)
    _put_counts(state.unit_prices, ints, strs)


def _book_columns(book: OrderBook) -> tuple[Any, ...]:
    ints: list[int] = []
    floats: list[float] = []
    strs: list[str] = []
    orders = book.orders
    ints.append(len(orders))
    for order_id, record in orders.items():
        _put_record(order_id, record, ints, floats, strs)
    packages = book.packages
    ints.append(len(packages))
    for package_id, state in packages.items():
        _put_package(package_id, state, orders, ints, strs)
    _exact(ints, floats)
    return (*_packed(_BOOK_COLUMNS, ints, floats, strs), book.node_day_orders,
            book.waves, book.closed_ms, book.archived)


def _packed(version: int, ints: list[int], floats: list[float], strs: list[str]
            ) -> tuple[Any, ...]:
    # (Lists of numbers pickle as runs of compact opcodes, nothing memoized per item. The
    # strings are memoized one by one; joined into one instead, they took as long to write
    # and twice as long to read, cut apart again by compiled code.)
    return version, ints, floats, strs


def _unpacked(state: tuple[Any, ...], version: int, what: str) -> _Columns:
    if state[0] != version:
        raise ValueError(f"{what} columns of version {state[0]} are not known")
    return _Columns(state[1], state[2], state[3])


_NEW_TUPLE: Final = tuple.__new__


def _tuple_of(cls: type, values: tuple[Any, ...]) -> Any:
    """A named tuple of `values`, all given: a named tuple's own constructor is a Python
    function (it takes defaults and keywords), ~2.5 times as slow."""
    return _NEW_TUPLE(cls, values)


class _Columns:
    """Reads back the values _book_columns or event_columns wrote, in the order written."""

    def __init__(self, ints: list[int], floats: list[float], strs: list[str]) -> None:
        self.ints = ints
        self.i = 0
        self.floats = floats
        self.f = 0
        self.strs = strs
        self.s = 0

    def int_(self) -> int:
        value = self.ints[self.i]
        self.i += 1
        return value

    def float_(self) -> float:
        value = self.floats[self.f]
        self.f += 1
        return value

    def str_(self) -> str:
        value = self.strs[self.s]
        self.s += 1
        return value

    def check_done(self, what: str) -> None:
        if self.i != len(self.ints) or self.f != len(self.floats) or self.s != len(self.strs):
            raise ValueError(f"{what} columns of the wrong length")


def _read_spec(c: _Columns) -> OrderSpec:
    order_id = c.str_()
    channel_id = c.str_()
    postal_code = c.str_()
    customer_id = c.str_()
    flags = c.int_()
    latitude = None if flags & 1 else c.float_()
    longitude = None if flags & 2 else c.float_()
    fraud_score = c.float_()
    tier = _TIERS[c.int_()]
    deliver_by_ms = c.int_()
    payment = _PAYMENTS[c.int_()]
    address = _ADDRESSES[c.int_()]
    lines = []
    priced = (flags & 16) != 0
    for _ in range(c.int_()):
        line_id = c.str_()
        sku_id = c.str_()
        quantity = c.int_()
        lines.append(_tuple_of(OrderLineSpec, (line_id, sku_id, quantity,
                                               c.int_() if priced else -1)))
    spec: OrderSpec = _tuple_of(OrderSpec, (
        order_id, channel_id, tier, tuple(lines), postal_code, latitude, longitude,
        deliver_by_ms, payment, fraud_score, address, (flags & 4) != 0, (flags & 8) != 0,
        customer_id))
    return spec


def _read_backorder(c: _Columns) -> Backorder:
    line_id = c.str_()
    sku = c.int_()
    quantity = c.int_()
    backorder: Backorder = _tuple_of(Backorder, (line_id, sku, quantity, c.int_()))
    return backorder


def _read_plan(c: _Columns) -> PackagePlan:
    package_id = c.str_()
    node = c.int_()
    service = c.int_()
    lines = []
    for _ in range(c.int_()):
        line_id = c.str_()
        sku = c.int_()
        quantity = c.int_()
        lines.append(_tuple_of(PackageLine, (line_id, sku, quantity, c.int_())))
    carrier = c.int_()
    handling = c.int_()
    units = c.int_()
    penalty = c.int_()
    billable = c.int_()
    ship_ms = c.int_()
    plan: PackagePlan = _tuple_of(PackagePlan, (
        package_id, node, service, tuple(lines), carrier, handling, units, penalty, billable,
        ship_ms, c.int_()))
    return plan


def _read_decision(c: _Columns, order_id: str) -> Decision:
    if not c.int_():
        order_id = c.str_()
    packages = tuple([_read_plan(c) for _ in range(c.int_())])
    backorders = tuple([_read_backorder(c) for _ in range(c.int_())])
    method = c.int_()
    rule = c.str_()
    options = []
    for _ in range(c.int_()):
        kind = _OPTION_KINDS[c.int_()]
        flags = c.int_()
        cost = c.int_()
        count = c.int_()
        options.append(_tuple_of(Option, (kind, (flags & 1) != 0, cost, count, (flags & 2) != 0,
                                       c.str_())))
    decision: Decision = _tuple_of(Decision, (
        order_id, packages, backorders, method, rule, tuple(options), c.int_() != 0))
    return decision


def _read_counts(c: _Columns) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _ in range(c.int_()):
        key = c.str_()
        counts[key] = c.int_()
    return counts


def _read_record(c: _Columns) -> OrderRecord:
    spec = _read_spec(c)
    record = OrderRecord(spec, c.int_(), _ORDER_STATUSES[c.int_()])
    record.held = c.int_() != 0
    record.package_ids = [c.str_() for _ in range(c.int_())]
    for _ in range(c.int_()):
        line_id = c.str_()
        record.backorders[line_id] = _read_backorder(c)
    record.cancelled = _read_counts(c)
    if c.int_():
        record.last_decision = _read_decision(c, spec.order_id)
    return record


def _read_package(c: _Columns, orders: dict[str, OrderRecord]) -> tuple[str, PackageState]:
    package_id = c.str_()
    order_id = c.str_()
    record = orders.get(order_id)
    if record is not None:
        order_id = record.spec.order_id  # (one string for both)
    shared = c.int_()
    if shared >= 0:
        assert record is not None and record.last_decision is not None
        plan = record.last_decision.packages[shared]
    else:
        plan = _read_plan(c)
    state = PackageState(plan, order_id, _PACKAGE_STATUSES[c.int_()], _read_counts(c))
    state.wave_id = c.str_()
    state.tracking_number = c.str_()
    state.pack_mismatch = c.int_() != 0
    state.shipped_ms = c.int_()
    state.unit_prices = _read_counts(c)
    return package_id, state


def _read_book_columns(book: OrderBook, state: tuple[Any, ...]) -> None:
    c = _unpacked(state, _BOOK_COLUMNS, "order book")
    node_day_orders, waves = state[4], state[5]
    orders: dict[str, OrderRecord] = {}
    for _ in range(c.int_()):
        record = _read_record(c)
        orders[record.spec.order_id] = record
    packages: dict[str, PackageState] = {}
    for _ in range(c.int_()):
        package_id, package = _read_package(c, orders)
        packages[package_id] = package
    c.check_done("order book")
    book.orders = orders
    book.packages = packages
    book.node_day_orders = node_day_orders
    book.waves = waves
    if len(state) > 6:
        book.closed_ms = state[6]
        book.archived = state[7]
    else:  # (written before orders were archived)
        book.closed_ms = index_closed(orders, packages)


# ---- a commit's events in the log -------------------------------------------------------
# The same columns for what every allocation writes to the log: each order's arrival (its
# spec), its decision, its unit moves and an exception for what is backordered. Pickled
# event by event (each event's class and fields, its payload's named tuples one by one)
# they took ~10 µs an order to write, the largest part of writing the log.

_EVENT_COLUMNS: Final = 2  # (1: every event's sequence number, time and reference written)
_EVENT_KINDS: Final = {int(m): m for m in EventKind}
_BUCKETS: Final = {int(m): m for m in Bucket}
_EXCEPTION_TYPES: Final = {int(m): m for m in ExceptionType}
# An event's flags: which of its fields follow.
_EXTENDED: Final = 1  # due_ms, reason, amount, counted, expected (a move leaves them unset)
_SAME_REQUEST: Final = 2  # the request id is the previous event's
# Layout 2: what an event shares with the one before it is not written again. A commit's
# events follow each other and share a time; an order's arrival and decision share its
# id, a package's moves their package id. (Times and sequence numbers are integers wider
# than 32 bits: pickle's slow path, ~150 instructions each.)
_NEXT_SEQ: Final = 4  # the sequence number is the previous event's + 1
_SAME_TIME: Final = 8  # the time is the previous event's
_SAME_REFERENCE: Final = 16  # the reference is the previous event's
_PAYLOAD_SHIFT: Final = 5  # the payload's code is flags >> this (layout 1: >> 2)
_NO_PAYLOAD, _SPEC, _DECISION, _EXCEPTION = 0, 1, 2, 3


def event_columns(events: Sequence[Event]) -> tuple[Any, ...] | None:
    """`events` as columns; None when one carries a payload the columns do not hold.
    Raises TypeError, ValueError, KeyError or AttributeError for a value they cannot hold
    as it is (then the events are written the old way)."""
    ints: list[int] = [len(events)]
    floats: list[float] = []
    strs: list[str] = []
    request_id = ""
    last_seq, last_time_ms, last_reference = 0, 0, ""
    for i, e in enumerate(events):
        payload = e.payload
        if payload is None:
            code = _NO_PAYLOAD
        elif type(payload) is OrderSpec:
            code = _SPEC
        elif type(payload) is Decision:
            code = _DECISION
        elif type(payload) is ExceptionInfo:
            code = _EXCEPTION
        else:
            return None
        extended = (e.due_ms != 0 or e.reason != 0 or e.amount != 0 or e.counted != -1
                    or e.expected != -1)
        flags = code << _PAYLOAD_SHIFT | (_EXTENDED if extended else 0)
        seq = e.seq
        time_ms = e.time_ms
        reference = e.reference
        if not COMPILED and (type(seq) is not int or type(time_ms) is not int):
            raise TypeError("not an int")  # (one left out below is not checked by _exact)
        if i > 0:
            if e.request_id == request_id:
                flags |= _SAME_REQUEST
            if seq == last_seq + 1:
                flags |= _NEXT_SEQ
            if time_ms == last_time_ms:
                flags |= _SAME_TIME
            if reference == last_reference:
                flags |= _SAME_REFERENCE
        ints.append(flags)
        ints.append(_member(_EVENT_KINDS, e.kind))
        ints.append(e.sku)
        ints.append(e.node)
        ints.append(_member(_BUCKETS, e.from_bucket))
        ints.append(_member(_BUCKETS, e.to_bucket))
        ints.append(e.quantity)
        ints.append(e.channel)
        if not flags & _NEXT_SEQ:
            ints.append(seq)
        if not flags & _SAME_TIME:
            ints.append(time_ms)
        if not flags & _SAME_REFERENCE:
            strs.append(reference)
        if not flags & _SAME_REQUEST:
            request_id = e.request_id
            strs.append(request_id)
        last_seq, last_time_ms, last_reference = seq, time_ms, reference
        if extended:
            ints.append(e.due_ms)
            ints.append(e.reason)
            ints.append(e.amount)
            ints.append(e.counted)
            ints.append(e.expected)
        if code == _SPEC:
            _put_spec(payload, ints, floats, strs)
        elif code == _DECISION:
            _put_decision(payload, e.reference, ints, strs)
        elif code == _EXCEPTION:
            info: ExceptionInfo = payload
            ints.append(_member(_EXCEPTION_TYPES, info.exception_type))
            strs.append(info.order_id)
            strs.append(info.detail)
            strs.append(info.reference)
    _exact(ints, floats)
    return _packed(_EVENT_COLUMNS, ints, floats, strs)


def events_from_columns(state: tuple[Any, ...]) -> tuple[Event, ...]:
    layout = state[0]
    c = _unpacked(state, 1 if layout == 1 else _EVENT_COLUMNS, "event")
    events: list[Event] = []
    request_id = ""
    seq, time_ms, reference = 0, 0, ""
    for _ in range(c.int_()):
        flags = c.int_()
        if layout == 1:  # (the same flags, less those layout 2 added, and its payload code)
            flags = (flags >> 2) << _PAYLOAD_SHIFT | (flags & 3)
        kind = _EVENT_KINDS[c.int_()]
        sku = c.int_()
        node = c.int_()
        from_bucket = _BUCKETS[c.int_()]
        to_bucket = _BUCKETS[c.int_()]
        quantity = c.int_()
        channel = c.int_()
        seq = seq + 1 if flags & _NEXT_SEQ else c.int_()
        if not flags & _SAME_TIME:
            time_ms = c.int_()
        if not flags & _SAME_REFERENCE:
            reference = c.str_()
        if not flags & _SAME_REQUEST:
            request_id = c.str_()
        due_ms, reason, amount, counted, expected = 0, 0, 0, -1, -1
        if flags & _EXTENDED:
            due_ms = c.int_()
            reason = c.int_()
            amount = c.int_()
            counted = c.int_()
            expected = c.int_()
        code = flags >> _PAYLOAD_SHIFT
        payload: Any = None
        if code == _SPEC:
            payload = _read_spec(c)
        elif code == _DECISION:
            payload = _read_decision(c, reference)
        elif code == _EXCEPTION:
            exception_type = _EXCEPTION_TYPES[c.int_()]
            order_id = c.str_()
            detail = c.str_()
            payload = ExceptionInfo(exception_type, order_id, detail, c.str_())
        elif code != _NO_PAYLOAD:
            raise ValueError(f"event payload {code} is not known")
        events.append(Event(seq, kind, sku, node, from_bucket, to_bucket, quantity, reference,
                            request_id, time_ms, channel, due_ms, reason, amount, counted,
                            expected, payload))
    c.check_done("event")
    return tuple(events)
