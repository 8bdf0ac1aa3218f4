"""The sharded inventory ledger: state, and the one deterministic function that changes it.

Quantities live in int32 arrays `qty[sku_local, node, bucket]`, one per shard;
a SKU with dense index d lives in shard d % n_shards at local row d // n_shards.
Every change is an `Event`; `Ledger.apply` is the only code that mutates state,
so replaying the same events from the same snapshot gives the same state.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from mypy_extensions import mypyc_attr
from numba.typed import List as TypedList

from core.alerts import OPS_KINDS, OpsBook
from core.approvals import ApprovalBook, ApprovalRecord, holds_of
from core.catalog import MAX_CHANNELS, Catalog
from core.demand import DAY_MS, DEFAULT_HALF_LIFE_DAYS, SmoothedDemand, ValuePolicy
from core.errors import DomainError, FailedPrecondition, InvariantViolation
from core.exceptions import HOLDS, ExceptionBook, ExceptionInfo, ExceptionType, Resolution
from core.finance import WATCHED_KINDS, Books
from core.kernels._ledger import _apply_moves, _bucket_totals
from core.kpis import KpiBook, add_order_decided, count_orders_decided, count_units_allocated
from core.model import (
    CATALOG_KINDS,
    MOVE_KINDS,
    N_BUCKETS,
    TRANSFER_KINDS,
    Bucket,
    ChannelSpec,
    Event,
    EventKind,
    NodeSpec,
    SkuSpec,
)
from core.network import CompiledNetwork, NetworkSpec, compile_network
from core.orders import OrderBook, OrderSpec
from core.reservations import ReservationBook
from core.returns import RefundTiming, ReturnBook, ReturnRecord, ReturnStatus

_EMPTY_2D = np.zeros((0, 0), dtype=np.int32)
# Read for every event: Final, so compiled code reads it from a C static.
FINANCE_KINDS: Final = WATCHED_KINDS


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class LedgerSettings:
    n_shards: int = 16
    # A cycle-count variance above this many units is held (quarantined) for approval.
    count_hold_units: int = 5
    # ...or above this percentage of what the ledger expected (0: units only).
    count_hold_percent: float = 0.0
    partition: str = "default"
    # Write-offs worth more than this (micros, at moving-average cost) wait for an approver.
    write_off_approval_micros: int = 1_000_000_000


@mypyc_attr(native_class=False)
@dataclass(slots=True)
class InboundLine:
    remaining: int
    expected_ms: int


@mypyc_attr(native_class=False)
@dataclass(slots=True)
class HeldVariance:
    exception_id: str
    sku: int
    node: int
    expected: int
    counted: int
    held: int
    time_ms: int
    # Missing units taken from reservations to be held: (reservation, units, channel,
    # expiry, whether the count closed it). A refusal puts them back. Older logs and
    # snapshots have none (read with `taken_of`).
    taken: tuple[tuple[str, int, int, int, bool], ...] = field(default=(), repr=False)
    # Who submitted the count: not the one who approves or rejects its variance. Older
    # logs and snapshots do not say (read with `counted_by_of`).
    counted_by: str = field(default="", repr=False)


def taken_of(held: HeldVariance) -> tuple[tuple[str, int, int, int, bool], ...]:
    return getattr(held, "taken", ())  # (unset in one unpickled from an older snapshot)


def counted_by_of(held: HeldVariance) -> str:
    return getattr(held, "counted_by", "")  # (unset in one unpickled from an older snapshot)


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class CountHold:
    """Payload of COUNT_VARIANCE_HELD: the reservations it took units from (see
    HeldVariance.taken) and who counted. Older logs carry the bare tuple, or None."""

    taken: tuple[tuple[str, int, int, int, bool], ...]
    counted_by: str


def count_hold_of(payload: object) -> CountHold:
    """A COUNT_VARIANCE_HELD payload, as logged now or before counters were recorded."""
    if isinstance(payload, CountHold):
        return payload
    return CountHold(tuple(payload) if isinstance(payload, tuple) else (), "")


#: Reallocations of any shard's arrays, ever (Shard.__setattr__): Ledger.kernel_views
#: rebuilds its views when this moved, where it read every shard's version for each call.
_REALLOCATIONS: Final = [0]


@mypyc_attr(native_class=False)  # (and it watches its own attributes being set)
class Shard:
    """One SKU-hashed slice of the ledger with its policy arrays."""

    _ARRAYS = frozenset({"qty", "sku_safety", "safety_override", "fence_row", "fence_qty"})
    version: int

    def __setattr__(self, name: str, value: object) -> None:
        # Every reallocation of an array bumps `version`, so views over the arrays
        # (Ledger.kernel_views) know when to rebuild.
        if name in Shard._ARRAYS:
            object.__setattr__(self, "version", getattr(self, "version", 0) + 1)
            _REALLOCATIONS[0] += 1
        object.__setattr__(self, name, value)

    def __init__(self, node_capacity: int) -> None:
        self.n_skus = 0
        self.qty = new_quantities(0, node_capacity)
        self.sku_safety = np.zeros(0, dtype=np.int32)  # -1: inherit
        self.safety_override = _EMPTY_2D  # [sku, node], allocated on first use; -1: inherit
        self.fence_row = _EMPTY_2D  # [sku, node] -> row of fence_qty, -1: none
        # int64: the total column may exceed int32 when several channels are fenced.
        self.fence_qty = np.zeros((0, MAX_CHANNELS + 1), dtype=np.int64)  # last col = total
        self.n_fence_rows = 0

    @property
    def node_capacity(self) -> int:
        return int(self.qty.shape[1])

    def ensure_rows(self, rows: int) -> None:
        capacity = self.qty.shape[0]
        if rows <= capacity:
            return
        capacity = max(rows, capacity + capacity // 2, 64)
        self.qty = _regrown(self.qty, capacity, self.node_capacity)
        self.sku_safety = _resized(self.sku_safety, (capacity,), -1)
        if self.safety_override.shape[0]:
            self.safety_override = _resized(
                self.safety_override, (capacity, self.node_capacity), -1)
        if self.fence_row.shape[0]:
            self.fence_row = _resized(self.fence_row, (capacity, self.node_capacity), -1)

    def ensure_nodes(self, node_capacity: int) -> None:
        if node_capacity <= self.node_capacity:
            return
        rows = self.qty.shape[0]
        self.qty = _regrown(self.qty, rows, node_capacity)
        if self.safety_override.shape[0]:
            self.safety_override = _resized(self.safety_override, (rows, node_capacity), -1)
        if self.fence_row.shape[0]:
            self.fence_row = _resized(self.fence_row, (rows, node_capacity), -1)

    def set_override(self, local: int, node: int, value: int) -> None:
        if not self.safety_override.shape[0]:
            self.safety_override = np.full(
                (self.qty.shape[0], self.node_capacity), -1, dtype=np.int32)
        self.safety_override[local, node] = value

    def set_fence(self, local: int, node: int, channel: int, value: int) -> None:
        if not self.fence_row.shape[0]:
            self.fence_row = np.full((self.qty.shape[0], self.node_capacity), -1, dtype=np.int32)
        row = int(self.fence_row[local, node])
        if row < 0:
            if value == 0:
                return
            if self.n_fence_rows == self.fence_qty.shape[0]:
                self.fence_qty = _resized(
                    self.fence_qty, (max(16, 2 * self.n_fence_rows), MAX_CHANNELS + 1), 0)
            row = self.n_fence_rows
            self.n_fence_rows += 1
            self.fence_row[local, node] = row
        self.fence_qty[row, MAX_CHANNELS] += value - self.fence_qty[row, channel]
        self.fence_qty[row, channel] = value

    def fences(self, local: int, node: int) -> dict[int, int]:
        if not self.fence_row.shape[0] or self.fence_row[local, node] < 0:
            return {}
        row = self.fence_qty[self.fence_row[local, node], :MAX_CHANNELS]
        return {int(c): int(row[c]) for c in np.flatnonzero(row)}


def new_quantities(rows: int, nodes: int) -> np.ndarray:
    """A zeroed quantity array indexed [sku, node, bucket], stored bucket-major per SKU
    (memory order [sku, bucket, node]): a SKU's AVAILABLE units at every node share one
    cache line, which is what availability and allocation read."""
    return np.zeros((rows, N_BUCKETS, nodes), dtype=np.int32).transpose(0, 2, 1)


def _regrown(qty: np.ndarray, rows: int, nodes: int) -> np.ndarray:
    out = new_quantities(rows, nodes)
    out[: qty.shape[0], : qty.shape[1]] = qty
    return out


def _resized(array: np.ndarray, shape: tuple[int, ...], fill: int) -> np.ndarray:
    out = np.full(shape, fill, dtype=array.dtype)
    out[tuple(slice(0, d) for d in array.shape)] = array
    return out


@mypyc_attr(native_class=False)  # (and pickled as its __dict__)
class Ledger:
    def __init__(self, settings: LedgerSettings | None = None) -> None:
        self.settings = settings or LedgerSettings()
        self.n_shards = self.settings.n_shards
        self.catalog = Catalog()
        self.shards = [Shard(node_capacity=4) for _ in range(self.n_shards)]
        self.node_safety = np.full(4, -1, dtype=np.int32)
        self.network_safety = 0
        self.reservations = ReservationBook()
        self.inbound: dict[tuple[str, int, int], InboundLine] = {}
        self.inbound_by_sku: dict[int, set[tuple[str, int, int]]] = {}
        self.held_variances: dict[str, HeldVariance] = {}
        self.last_seq = 0
        self.units_in = 0  # units that entered from outside, ever
        self.units_out = 0  # units that left to outside, ever
        self._views: tuple[int, tuple[TypedList, ...]] | None = None
        self.network_spec = NetworkSpec()
        # Carrier services a network dropped while packages had them, by id: such a
        # package's service is -2 - the place here, until a network has it again.
        self.retired_services: list[str] = []
        self.opportunity_costs: dict[tuple[int, int], int] = {}  # (sku, node) -> micros/unit
        # Inventory value: the policy (None: the server's configured default), a supplied
        # forecast and the one learned from orders, both (region id, sku) -> units/day.
        self.value_policy: ValuePolicy | None = None
        self.supplied_forecast: dict[tuple[str, int], float] = {}
        self.learned_demand: dict[tuple[str, int], SmoothedDemand] = {}
        self.drawn_units: dict[tuple[int, int], SmoothedDemand] = {}  # (sku, node) allocated
        # Ship-to -> region id, derived from the network (a nearest-region search by
        # coordinates is a loop over every region): cleared when the network changes.
        self._regions: dict[tuple[str, float | None, float | None], str | None] = {}
        self._compiled: tuple[tuple[int, int, int], CompiledNetwork] | None = None
        self.orders = OrderBook()
        self.exceptions = ExceptionBook()
        self.books = Books()
        self.returns = ReturnBook()
        self.revoked_tokens: set[str] = set()
        self.approvals = ApprovalBook()
        self.kpis = KpiBook()
        self.ops = OpsBook()

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_views"] = None  # numba typed lists: rebuilt on first use
        state["_compiled"] = None
        state["_regions"] = {}
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        if "retired_services" not in state:  # (a snapshot from before they were kept)
            self.retired_services = []
        # A snapshot written before an archived order's exceptions left memory with it
        # (ORDER_ARCHIVED) holds them still: dropped, as a replay of its log would.
        archived = self.orders.archived
        if archived:
            exceptions = self.exceptions
            for order_id in [o for o in exceptions.by_order if o in archived]:
                exceptions.forget_order(order_id)

    def _services_moved(self, before: tuple[str, ...], after: tuple[str, ...]
                        ) -> dict[int, int]:
        """Where a package's carrier service moves when the network's list goes from
        `before` to `after` (service ids): a service's new place; one dropped, its place
        among the retired services (-2, -3 ...), kept by id; a retired one back, its
        place again."""
        retired = self.retired_services
        position = {service_id: i for i, service_id in enumerate(after)}
        moved: dict[int, int] = {}
        for i, service_id in enumerate(before):
            found = position.get(service_id)
            if found is None:
                if service_id not in retired:
                    retired.append(service_id)
                found = -2 - retired.index(service_id)
            if found != i:
                moved[i] = found
        for k, service_id in enumerate(retired):
            if service_id in position:
                moved[-2 - k] = position[service_id]
        return moved

    # ---- addressing ---------------------------------------------------------
    def locate(self, sku: int) -> tuple[Shard, int]:
        return self.shards[sku % self.n_shards], sku // self.n_shards

    def quantity(self, sku: int, node: int, bucket: int) -> int:
        """Units of `sku` at `node` in `bucket` (a Bucket, or its number)."""
        shard, local = self.locate(sku)
        return int(shard.qty[local, node, bucket])

    def buckets(self, sku: int, node: int) -> np.ndarray:
        shard, local = self.locate(sku)
        return np.array(shard.qty[local, node])

    def safety_stock(self, sku: int, node: int) -> int:
        shard, local = self.locate(sku)
        if shard.safety_override.shape[0] and shard.safety_override[local, node] >= 0:
            return int(shard.safety_override[local, node])
        if shard.sku_safety[local] >= 0:
            return int(shard.sku_safety[local])
        if self.node_safety[node] >= 0:
            return int(self.node_safety[node])
        return self.network_safety

    def kernel_views(self) -> tuple[TypedList, ...]:
        """Every shard's arrays as typed lists (qty, sku_safety, safety_override,
        fence_row, fence_qty), so one kernel call can read all shards. Rebuilt only
        when a shard has reallocated an array."""
        key = _REALLOCATIONS[0]
        if self._views is None or self._views[0] != key:
            arrays = [(s.qty, s.sku_safety, s.safety_override, s.fence_row, s.fence_qty)
                      for s in self.shards]
            views = tuple(TypedList([group[k] for group in arrays]) for k in range(5))
            self._views = (key, views)
        return self._views[1]

    # ---- the one mutation path -------------------------------------------------
    def apply(self, events: Sequence[Event], floors: Sequence[int] | None = None,
              *, replay: bool = False) -> None:
        """Apply events in order, all or nothing for bucket moves.

        `floors[i]`, when given, is the least that may remain in event i's source
        bucket (safety stock and other channels' fences for a sale). Raises
        FailedPrecondition (with `.index` of the refused event) if a move would break
        a floor or make a bucket negative; nothing is changed then. With `replay`
        (events read back from the log, valid when they were made) a refusal means
        the log and the state disagree: InvariantViolation.
        """
        if events and events[0].seq != self.last_seq + 1:
            raise InvariantViolation(
                f"event {events[0].seq} does not follow {self.last_seq}")
        # Catalogue events split the events into segments (a move may need the SKU or
        # node an earlier event created). In each segment the bucket moves go first,
        # through the kernel, all or nothing; then every event's bookkeeping (records,
        # side tables) in order. A command's events never span a catalogue event.
        start = 0
        for i, event in enumerate(events):
            if event.kind in CATALOG_KINDS:
                self._apply_segment(events, start, i, floors, replay)
                self._apply_other(event)
                start = i + 1
        self._apply_segment(events, start, len(events), floors, replay)
        if events:
            self.last_seq = events[-1].seq

    def _apply_segment(self, events: Sequence[Event], start: int, stop: int,
                       floors: Sequence[int] | None, replay: bool) -> None:
        self._apply_moves(events, start, stop, floors, replay)
        kpis = self.kpis
        kpis.collect()
        drawn_units = self.drawn_units
        # (channel, time) -> [units allocated, of which oversold], counted at the end.
        allocated: dict[tuple[int, int], list[int]] = {}
        # (channel id, time) -> orders decided and what they planned (kpis.add_order_decided)
        decided: dict[tuple[str, int], list[int]] = {}
        tau = self.half_life_days / math.log(2.0)
        qty = [shard.qty for shard in self.shards]
        n_shards = self.n_shards
        # (enum members read from their class cost ~4x a local on Python 3.11: read once)
        available = Bucket.AVAILABLE
        units_allocated, order_allocated, order_received = (
            EventKind.ORDER_UNITS_ALLOCATED, EventKind.ORDER_ALLOCATED, EventKind.ORDER_RECEIVED)
        value_policy_set = EventKind.VALUE_POLICY_SET
        order_replanned = EventKind.ORDER_REPLANNED
        # (order id, sku) -> units a re-planned order gave back in these events: drawn (as
        # demand) when first allocated, so not drawn again when its new plan takes them.
        replanned: dict[tuple[str, int], int] = {}
        try:
            for i in range(start, stop):
                event = events[i]
                kind = event.kind
                if kind == units_allocated:
                    # Units drawn from (sku, node), smoothed: SmoothedDemand.observe
                    # inlined (the same arithmetic, so the same floats): allocation
                    # makes one of these for every line it places.
                    sku = event.sku
                    key = (sku, event.node)
                    drawn = drawn_units.get(key)
                    quantity = event.quantity
                    if replanned:
                        moved = (self.orders.packages[event.reference].order_id, sku)
                        given = replanned.get(moved, 0)
                        if given:
                            taken = min(given, quantity)
                            replanned[moved] = given - taken
                            quantity -= taken
                    if not quantity:
                        pass  # moved by a new plan: drawn when first allocated
                    elif drawn is None:
                        drawn_units[key] = SmoothedDemand(0.0 + quantity / tau,
                                                          event.time_ms)
                    elif event.time_ms > drawn.last_ms:
                        elapsed = (event.time_ms - drawn.last_ms) / DAY_MS
                        drawn.level = (drawn.level * math.exp(-elapsed / tau)
                                       + quantity / tau)
                        drawn.last_ms = event.time_ms
                    else:  # no time has passed: exp(0) is exactly 1
                        drawn.level = drawn.level + quantity / tau
                    counted = allocated.get((event.channel, event.time_ms))
                    if counted is None:
                        counted = allocated[(event.channel, event.time_ms)] = [0, 0]
                    counted[0] += event.quantity
                    # The moves refuse to go below zero, so this stays 0; it is
                    # measured, not assumed. (ndarray.item: a plain int to compare, not
                    # a numpy scalar.)
                    left: int = qty[sku % n_shards].item(sku // n_shards, event.node,
                                                         available)
                    if left < 0:
                        counted[1] += event.quantity
                    continue  # neither money nor another KPI
                elif kind == order_allocated:  # (one for every decision)
                    self.orders.allocate(event.payload)
                    add_order_decided(kpis, self, event, decided)
                    continue  # neither money nor another KPI
                elif kind == order_received:  # (one for every order)
                    self.orders.receive(event.payload, event.seq)
                    _learn_demand(self, event.payload, event.time_ms, tau)
                elif kind in MOVE_KINDS:
                    self._apply_side_effects(event)
                else:
                    self._apply_other(event)
                    if kind == order_replanned:
                        packages = self.orders.packages
                        for package_id in event.payload.superseded:
                            state = packages[package_id]
                            for line in state.plan.lines:
                                given = state.quantities.get(line.line_id, 0)
                                if given:
                                    moved = (event.reference, line.sku)
                                    replanned[moved] = replanned.get(moved, 0) + given
                    if kind == value_policy_set:  # a new half-life
                        tau = self.half_life_days / math.log(2.0)
                if event.kind in FINANCE_KINDS:
                    self.books.post_event(self, event)
                kpis.observe(self, event)
            if decided:
                count_orders_decided(kpis, decided)
            if allocated:
                count_units_allocated(kpis, self, allocated)
        finally:
            kpis.flush()

    def _apply_moves(self, events: Sequence[Event], start: int, stop: int,
                     floors: Sequence[int] | None, replay: bool) -> None:
        index = [i for i in range(start, stop) if events[i].kind in MOVE_KINDS]
        if not index:
            return
        moves = [events[i] for i in index]
        count = len(moves)
        refused = _apply_moves(
            self.kernel_views()[0],
            np.fromiter((e.sku for e in moves), np.int64, count),
            np.fromiter((e.node for e in moves), np.int64, count),
            np.fromiter((e.from_bucket for e in moves), np.int64, count),
            np.fromiter((e.to_bucket for e in moves), np.int64, count),
            np.fromiter((e.quantity for e in moves), np.int64, count),
            np.zeros(count, np.int64) if floors is None
            else np.fromiter((floors[i] for i in index), np.int64, count))
        if refused >= 0:
            floor = 0 if floors is None else floors[index[refused]]
            error = FailedPrecondition(self._refusal_message(moves[refused], floor))
            error.index = index[refused]  # type: ignore[attr-defined]
            if replay:
                raise InvariantViolation(error.message)
            raise error
        self._count_external(moves)

    def _count_external(self, events: Iterable[Event]) -> None:
        """Units received into and shipped out of the network (a transfer is neither)."""
        external = Bucket.EXTERNAL
        for e in events:
            if e.kind in TRANSFER_KINDS:
                continue
            if e.from_bucket == external:
                self.units_in += e.quantity
            if e.to_bucket == external:
                self.units_out += e.quantity

    def held_at(self, sku: int, node: int) -> list[str]:
        """The count variances of (sku, node) holding units while they wait for approval,
        by exception id."""
        return [h.exception_id for h in self.held_variances.values()
                if h.sku == sku and h.node == node and h.held]

    def awaiting_inspection(self, sku: int, node: int) -> int:
        """Units of (sku, node) in RETURNED that returns received and have not inspected
        yet: their inspection moves them on, so nothing else may take them. (It walks the
        returns: for the rare commands that move RETURNED units by hand.)"""
        units = 0
        for record in self.returns.returns.values():
            auth = record.auth
            if record.inspection is not None or not record.received or auth.node != node:
                continue
            for line in auth.lines:
                if line.sku == sku:
                    units += record.received.get(line.line_id, 0)
        return units

    def held_units(self, sku: int, node: int) -> int:
        """Units of (sku, node) in QUARANTINED for count variances and write-offs waiting
        for approval."""
        held = sum(h.held for h in self.held_variances.values()
                   if h.sku == sku and h.node == node)
        approvals = self.approvals.by_id
        for approval_id in self.approvals.pending_places:
            for s, n, _, qty in holds_of(approvals[approval_id].request):
                if s == sku and n == node:
                    held += qty
        return held

    def _refusal_message(self, event: Event, floor: int) -> str:
        sku = self.catalog.sku_ids[event.sku]
        node = self.catalog.nodes[event.node].node_id
        if event.from_bucket != Bucket.EXTERNAL:
            have = self.quantity(event.sku, event.node, event.from_bucket)
            if have - event.quantity < 0 or floor == 0:
                return (f"not enough {event.from_bucket.name} stock of {sku!r} at {node!r}: "
                        f"{have} on hand, {event.quantity} asked")
            if event.from_bucket == Bucket.QUARANTINED:
                return (f"not enough free QUARANTINED stock of {sku!r} at {node!r}: {have} "
                        f"there, {floor} held for count variances or write-offs waiting "
                        f"for approval, {event.quantity} asked")
            if event.from_bucket == Bucket.RETURNED:
                return (f"not enough free RETURNED stock of {sku!r} at {node!r}: {have} "
                        f"there, {floor} received for returns waiting for inspection, "
                        f"{event.quantity} asked")
            return (f"not enough sellable stock of {sku!r} at {node!r}: {have} AVAILABLE, "
                    f"{floor} held back (safety stock and other channels' fences), "
                    f"{event.quantity} asked")
        return f"{event.to_bucket.name} of {sku!r} at {node!r} would exceed the int32 limit"

    def _apply_side_effects(self, e: Event) -> None:
        kind = e.kind
        if kind == EventKind.RESERVED:
            self.reservations.add(e.reference, e.sku, e.node, e.quantity, e.channel, e.due_ms)
        elif kind in (EventKind.RESERVATION_RELEASED, EventKind.RESERVATION_EXPIRED):
            self.reservations.remove(e.reference, e.sku, e.node, e.quantity)
        elif kind in (EventKind.INBOUND_EXPECTED, EventKind.TRANSFER_IN_TRANSIT):
            key = (e.reference, e.sku, e.node)
            line = self.inbound.get(key)
            if line is None:
                self.inbound[key] = InboundLine(e.quantity, e.due_ms)
                self.inbound_by_sku.setdefault(e.sku, set()).add(key)
            else:
                line.remaining += e.quantity
                line.expected_ms = e.due_ms
        elif kind in (EventKind.INBOUND_RECEIVED, EventKind.INBOUND_CANCELLED):
            key = (e.reference, e.sku, e.node)
            line = self.inbound[key]
            line.remaining -= e.quantity
            if line.remaining == 0:
                del self.inbound[key]
                keys = self.inbound_by_sku[e.sku]
                keys.discard(key)
                if not keys:
                    del self.inbound_by_sku[e.sku]
        elif kind == EventKind.RETURN_RECEIVED:
            ret = self.returns.returns[e.reference]
            # The line the units are for; older logs do not say, and a line is found by
            # its SKU.
            line_id = e.payload if isinstance(e.payload, str) else next(
                x.line_id for x in ret.auth.lines if x.sku == e.sku
                and ret.received.get(x.line_id, 0) < x.quantity)
            ret.received[line_id] = ret.received.get(line_id, 0) + e.quantity
            if ret.released:
                # (Older logs only: a receipt after the inspection, which had freed what
                # had not come. It came: returned again.)
                back = (ret.auth.order_id, line_id)
                self.returns.returned[back] = self.returns.returned.get(back, 0) + e.quantity
                self.returns.count_as(ret.auth.order_id, line_id, e.sku, e.quantity)
            ret.status = ReturnStatus.RECEIVED
        elif kind == EventKind.COUNT_VARIANCE_SETTLED:
            self.held_variances.pop(e.reference, None)
        elif kind == EventKind.COUNT_VARIANCE_HELD:
            held = self.held_variances.get(e.reference)
            if held is None:
                hold = count_hold_of(e.payload)
                self.held_variances[e.reference] = HeldVariance(
                    e.reference, e.sku, e.node, e.expected, e.counted, e.quantity, e.time_ms,
                    hold.taken, hold.counted_by)
                where = f"{self.catalog.sku_ids[e.sku]}@{self.catalog.nodes[e.node].node_id}"
                by = f" by {hold.counted_by}" if hold.counted_by else ""
                self.exceptions.raise_(e.reference, ExceptionInfo(
                    ExceptionType.COUNT_VARIANCE, "",
                    f"counted {e.counted}{by}, ledger had {e.expected}; {e.quantity} units "
                    "quarantined until approved by someone else", where), e.time_ms, e.seq)

    def _apply_other(self, e: Event) -> None:
        kind = e.kind
        handler = _ORDER_HANDLERS.get(kind)  # the most frequent kinds: looked up first
        if handler is not None:
            handler(self, e)
        elif kind == EventKind.SKU_UPSERTED:
            assert isinstance(e.payload, SkuSpec)
            self.catalog.put_sku(e.payload, e.sku)
            shard, local = self.locate(e.sku)
            shard.ensure_rows(local + 1)
            shard.n_skus = max(shard.n_skus, local + 1)
        elif kind == EventKind.NODE_UPSERTED:
            assert isinstance(e.payload, NodeSpec)
            self.catalog.put_node(e.payload, e.node)
            self._ensure_nodes(self.catalog.n_nodes)
        elif kind == EventKind.CHANNEL_UPSERTED:
            assert isinstance(e.payload, ChannelSpec)
            self.catalog.put_channel(e.payload, e.channel)
        elif kind == EventKind.SAFETY_STOCK_SET:
            value = e.quantity  # -1 clears (inherit)
            if e.sku < 0 and e.node < 0:
                self.network_safety = max(value, 0)
            elif e.sku < 0:
                self.node_safety[e.node] = value
            else:
                shard, local = self.locate(e.sku)
                if e.node < 0:
                    shard.sku_safety[local] = value
                else:
                    shard.set_override(local, e.node, value)
        elif kind == EventKind.RING_FENCE_SET:
            shard, local = self.locate(e.sku)
            shard.set_fence(local, e.node, e.channel, e.quantity)
        elif kind == EventKind.NETWORK_SET:
            assert isinstance(e.payload, NetworkSpec)
            before = tuple(s.service_id for s in self.network_spec.services)
            after = tuple(s.service_id for s in e.payload.services)
            if before != after and getattr(e.payload, "keeps_package_services", False):
                self.orders.renumber_services(self._services_moved(before, after))
            self.network_spec = e.payload
            self._compiled = None
            self._regions = {}
        elif kind == EventKind.OPPORTUNITY_COST_SET:
            if e.quantity:
                self.opportunity_costs[(e.sku, e.node)] = e.quantity
            else:
                self.opportunity_costs.pop((e.sku, e.node), None)
        elif kind == EventKind.VALUE_POLICY_SET:
            self.value_policy = e.payload
        elif kind == EventKind.DEMAND_FORECAST_SET:
            self.supplied_forecast = dict(e.payload.rates)
        elif kind == EventKind.LANDED_COST_ALLOCATED:
            pass  # money only: the books post it
        elif kind == EventKind.RETURN_POLICY_SET:
            self.returns.policy = e.payload
        elif kind == EventKind.TOKEN_REVOKED:
            self.revoked_tokens.add(e.reference)
        elif kind in OPS_KINDS:
            self.ops.apply(self, e)
        elif kind == EventKind.COUNT_CONFIRMED:
            pass  # nothing moves: the KPIs count it
        elif kind == EventKind.JOURNAL_CLOSED:
            pass  # the books only: they let the closed entries go
        else:  # pragma: no cover - every kind is handled above
            raise InvariantViolation(f"unhandled event kind {kind!r}")

    def _ensure_nodes(self, n_nodes: int) -> None:
        capacity = self.shards[0].node_capacity
        if n_nodes <= capacity:
            return
        while capacity < n_nodes:
            capacity *= 2
        for shard in self.shards:
            shard.ensure_nodes(capacity)
        self.node_safety = _resized(self.node_safety, (capacity,), -1)

    @property
    def half_life_days(self) -> float:
        """The smoothing of the learned forecast and of the drawn units."""
        policy = self.value_policy
        return policy.half_life_days if policy is not None else DEFAULT_HALF_LIFE_DAYS

    def network(self) -> CompiledNetwork:
        """The cost model compiled over the current nodes and channels (cached)."""
        key = (id(self.network_spec), self.catalog.nodes_version, len(self.catalog.channels))
        if self._compiled is None or self._compiled[0] != key:
            self._compiled = (key, compile_network(self.network_spec, self.catalog))
        return self._compiled[1]

    # ---- whole-ledger views --------------------------------------------------
    def bucket_totals(self) -> np.ndarray:
        totals = np.zeros(N_BUCKETS, dtype=np.int64)
        for shard in self.shards:
            _bucket_totals(shard.qty, shard.n_skus, self.catalog.n_nodes, totals)
        return totals

    def min_quantity(self) -> int:
        n_nodes = self.catalog.n_nodes
        lows = [int(s.qty[: s.n_skus, :n_nodes].min()) for s in self.shards
                if s.n_skus and n_nodes]
        return min(lows, default=0)

    def checksum(self) -> str:
        """A digest of the whole state: equal digests mean equal ledgers."""
        h = hashlib.blake2b(digest_size=16)
        n_nodes = self.catalog.n_nodes
        h.update(f"{self.last_seq}|{n_nodes}|{self.catalog.n_skus}|{self.network_safety}".encode())
        for shard in self.shards:
            h.update(np.ascontiguousarray(shard.qty[: shard.n_skus, :n_nodes]).tobytes())
            h.update(shard.sku_safety[: shard.n_skus].tobytes())
            if shard.safety_override.shape[0]:
                h.update(np.ascontiguousarray(
                    shard.safety_override[: shard.n_skus, :n_nodes]).tobytes())
            if shard.fence_row.shape[0]:
                rows, cols = np.nonzero(shard.fence_row[: shard.n_skus] >= 0)
                for local, node in zip(rows.tolist(), cols.tolist(), strict=True):
                    h.update(repr((local, node, shard.fences(local, node))).encode())
        h.update(self.node_safety[:n_nodes].tobytes())
        for rid in sorted(self.reservations.by_id):
            record = self.reservations.by_id[rid]
            h.update(repr((rid, record.channel, record.expires_ms,
                           self.reservations.lines(rid))).encode())
        for inbound_key in sorted(self.inbound):
            line = self.inbound[inbound_key]
            h.update(repr((inbound_key, line.remaining, line.expected_ms)).encode())
        for exception_id in sorted(self.held_variances):
            variance = self.held_variances[exception_id]
            taken, by = taken_of(variance), counted_by_of(variance)
            h.update(repr((variance, taken, by) if by else (variance, taken) if taken
                          else variance).encode())
        h.update(repr([(s.node_id, s.enabled) for s in self.catalog.nodes]).encode())
        h.update(repr(self.network_spec).encode())
        h.update(repr(self.returns.policy).encode())
        h.update(repr(sorted(self.revoked_tokens)).encode())
        h.update(repr(sorted(self.opportunity_costs.items())).encode())
        h.update(repr((self.value_policy, sorted(self.supplied_forecast.items()), sorted(
            (key, d.level, d.last_ms) for key, d in self.learned_demand.items()), sorted(
            (key, d.level, d.last_ms) for key, d in self.drawn_units.items()))).encode())
        h.update(repr((list(self.orders.closed_ms.items()), sorted(self.orders.archived))
                      ).encode())
        for order_id in sorted(self.orders.orders):
            order = self.orders.orders[order_id]
            h.update(repr((order_id, order.status, order.package_ids,
                           sorted(order.backorders.items()), sorted(order.cancelled.items()))
                          ).encode())
        for package_id in sorted(self.orders.packages):
            state = self.orders.packages[package_id]
            h.update(repr((package_id, state.status, sorted(state.quantities.items()),
                           state.wave_id, state.tracking_number)).encode())
        h.update(repr((self.books.last_hash, sorted(self.books.balances.items()),
                       sorted(self.books.value.items()), sorted(self.books.units.items()))
                      ).encode())
        for rma_id in sorted(self.returns.returns):
            ret = self.returns.returns[rma_id]
            h.update(repr((rma_id, ret.status, sorted(ret.received.items()),
                           ret.refunded_micros, ret.approval_id,
                           ret.pending_approvals)).encode())
        h.update(repr(sorted(self.returns.returned.items())).encode())
        for approval_id in sorted(self.approvals.by_id):
            approval = self.approvals.by_id[approval_id]
            h.update(repr((approval_id, approval.decision, approval.approvals)).encode())
        h.update(self.ops.fingerprint().encode())
        for exception_id in sorted(self.exceptions.by_id):
            rec = self.exceptions.by_id[exception_id]
            h.update(repr((exception_id, rec.exception_type, rec.order_id, rec.resolved,
                           rec.resolution)).encode())
        return h.hexdigest()


def _order_cancelled(ledger: Ledger, e: Event) -> None:
    ledger.orders.cancel(e.payload)
    ledger.orders.note_closed(e.payload.order_id, e.time_ms)


def _order_archived(ledger: Ledger, e: Event) -> None:
    ledger.orders.archive(e.reference)
    ledger.kpis.decided.discard(e.reference)
    ledger.exceptions.forget_order(e.reference)


def _package_shipped(ledger: Ledger, e: Event) -> None:
    ledger.orders.ship(e.payload, e.time_ms)
    state = ledger.orders.packages[e.payload.package_id]
    ledger.orders.note_closed(state.order_id, e.time_ms)
    prices = ledger.catalog.price_micros
    record = ledger.orders.orders[state.order_id]
    # What was charged: the order line's price, else the SKU's catalogue price now (a
    # substitute ships at its line's price). Revenue is booked and a return refunded at
    # it, whatever the price is later.
    paid = {line.line_id: line.unit_price_micros for line in record.spec.lines
            if line.unit_price_micros != -1}
    state.unit_prices = {line.line_id: paid.get(line.line_id, int(prices[line.sku]))
                         for line in state.plan.lines}
    customer = record.spec.customer_id
    if customer:  # what the customer bought, for the return-abuse score
        value = sum(state.unit_prices[line.line_id] * state.quantities.get(line.line_id, 0)
                    for line in state.plan.lines)
        ledger.returns.bought.setdefault(customer, []).append(
            (e.time_ms, value, record.spec.order_id))


def _return_inspected(ledger: Ledger, e: Event) -> None:
    record = ledger.returns.returns[e.reference]
    record.inspection = e.payload
    record.status = ReturnStatus.INSPECTED
    # Receipt ends with the inspection: what did not come may come back on another return.
    ledger.returns.release_unreceived(record)
    _close_if_done(record)


def _close_if_done(record: ReturnRecord) -> None:
    """Inspected, with no refund waiting for an approval: nothing is left to do (a refund
    asked for with the inspection is asked in the same command, and opens it again)."""
    if record.status == ReturnStatus.INSPECTED and not record.pending_approvals:
        record.status = ReturnStatus.CLOSED


def _refund_issued(ledger: Ledger, e: Event) -> None:
    record = ledger.returns.returns[e.reference]
    record.refunded_micros += e.payload.net_micros
    _close_if_done(record)


def _approval_requested(ledger: Ledger, e: Event) -> None:
    request = e.payload
    ledger.approvals.ask(ApprovalRecord(request, e.time_ms))
    if request.action == "refund":
        record = ledger.returns.returns[request.reference]
        record.approval_asked(request.approval_id)
        if record.status == ReturnStatus.CLOSED:  # (asked for with its inspection)
            record.status = ReturnStatus.INSPECTED
    elif request.reference in ledger.ops.alerts:
        ledger.ops.alerts[request.reference].approval_ids.append(request.approval_id)


def _approval_decided(ledger: Ledger, e: Event) -> None:
    decision = e.payload
    record = ledger.approvals.record(decision)
    if record.request.action == "refund" and record.decision is not None:
        # Decided for good: refused, or approved by all it needs (its refund follows).
        settled = ledger.returns.returns[record.request.reference]
        settled.approval_settled(decision.approval_id)
        if (not decision.approved and settled.inspection is not None
                and settled.auth.refund_timing == RefundTiming.ON_AUTHORIZATION):
            # The up-front refund is refused after the inspection kept what never came
            # for it: nobody paid for those units now, so another return may bring them.
            ledger.returns.release_unreceived(settled)
        _close_if_done(settled)


def _exception_raised(ledger: Ledger, e: Event) -> None:
    info: ExceptionInfo = e.payload
    ledger.exceptions.raise_(e.reference, info, e.time_ms, e.seq)
    if info.exception_type in HOLDS:
        ledger.orders.hold(info.order_id)


def _exception_resolved(ledger: Ledger, e: Event) -> None:
    record = ledger.exceptions.by_id[e.reference]
    ledger.exceptions.resolve(e.reference, Resolution(e.reason), e.time_ms, str(e.payload))
    held = ledger.held_variances.get(e.reference)
    if held is not None and not held.held:
        # A count variance that holds nothing is settled by its resolution (older logs
        # have no settlement for it; newer ones settle it next, moving no units).
        del ledger.held_variances[e.reference]
    if record.exception_type in HOLDS and record.order_id in ledger.orders.orders:
        ledger.orders.unhold(record.order_id)


def _learn_demand(ledger: Ledger, spec: OrderSpec, now_ms: int, tau: float) -> None:
    """Smooth the order into the demand of its region (state, so a replay learns the same);
    `tau` is the half-life over ln 2."""
    region = _region_of(ledger, spec)
    if region is None:  # an order no region matches is not demand the network can see
        return
    # SmoothedDemand.observe, inlined (the same arithmetic, so the same floats): it runs
    # for every line of every order.
    index = ledger.catalog.sku_index
    learned = ledger.learned_demand
    # (The lines unpacked, not read field by field: compiled, a read by name is a lookup.)
    for _, sku_id, quantity, _ in spec[3]:
        sku = index.get(sku_id)
        if sku is None:
            continue
        key = (region, sku)
        demand = learned.get(key)
        if demand is None:
            learned[key] = SmoothedDemand(0.0 + quantity / tau, now_ms)
        elif now_ms > demand.last_ms:
            elapsed = (now_ms - demand.last_ms) / DAY_MS
            demand.level = demand.level * math.exp(-elapsed / tau) + quantity / tau
            demand.last_ms = now_ms
        else:  # no time has passed: exp(0) is exactly 1
            demand.level = demand.level + quantity / tau


REGION_CACHE_MAX: Final = 100_000


def _region_of(ledger: Ledger, spec: OrderSpec) -> str | None:
    key = (spec[4], spec[5], spec[6])  # (postal code, latitude, longitude)
    cache = ledger._regions
    if key in cache:
        return cache[key]
    regions = ledger.network_spec.regions
    region: str | None = None
    if regions:
        try:
            region = regions[ledger.network().region_for(*key)].region_id
        except DomainError:
            region = None
    if len(cache) >= REGION_CACHE_MAX:
        cache.clear()
    cache[key] = region
    return region


_ORDER_HANDLERS = {
    EventKind.ORDER_CANCELLED: _order_cancelled,
    EventKind.ORDER_ARCHIVED: _order_archived,
    EventKind.ORDER_REPLANNED: lambda ledger, e: ledger.orders.replan(e.payload),
    EventKind.WAVE_RELEASED: lambda ledger, e: ledger.orders.release_wave(e.payload),
    EventKind.PACKAGE_PICKED: lambda ledger, e: ledger.orders.pick(e.payload),
    EventKind.PACKAGE_PACKED: lambda ledger, e: ledger.orders.pack(e.payload),
    EventKind.PACKAGE_SHIPPED: _package_shipped,
    EventKind.RETURN_AUTHORIZED:
        lambda ledger, e: ledger.returns.authorize(e.payload, e.time_ms),
    EventKind.RETURN_INSPECTED: _return_inspected,
    EventKind.REFUND_ISSUED: _refund_issued,
    EventKind.APPROVAL_REQUESTED: _approval_requested,
    EventKind.APPROVAL_DECIDED: _approval_decided,
    EventKind.EXCEPTION_RAISED: _exception_raised,
    EventKind.EXCEPTION_RESOLVED: _exception_resolved,
}
