"""Orders: specs, decisions, lifecycle records, and the order book built from events.

Specs and decisions are NamedTuples: immutable like frozen dataclasses, and several
times cheaper to build, which matters on the allocation path (thousands a second).
"""

from __future__ import annotations

import copyreg
import operator
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any, Final, NamedTuple

from mypy_extensions import mypyc_attr

from core.model import set_fields
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


@mypyc_attr(native_class=False)
class OrderBook:
    """Orders, packages and node workload, changed only by order events."""

    def __init__(self) -> None:
        self.orders: dict[str, OrderRecord] = {}
        self.packages: dict[str, PackageState] = {}
        self.node_day_orders: dict[tuple[int, int], int] = {}
        self.waves = 0

    def receive(self, spec: OrderSpec, seq: int) -> None:
        self.orders[spec.order_id] = OrderRecord(spec, seq)

    def allocate(self, decision: Decision) -> None:
        record = self.orders[decision.order_id]
        first = not record.package_ids  # (an order's first packages: most allocations)
        record.last_decision = decision
        record.held = False
        nodes_by_day: set[tuple[int, int]] = set()
        for plan in decision.packages:
            state = PackageState(plan, decision.order_id)
            for line in plan.lines:
                state.quantities[line.line_id] = (
                    state.quantities.get(line.line_id, 0) + line.quantity)
                record.backorders.pop(line.line_id, None)
            self.packages[plan.package_id] = state
            record.package_ids.append(plan.package_id)
            nodes_by_day.add((plan.node, plan.ship_ms // DAY_MS))
        for key in nodes_by_day:
            self.node_day_orders[key] = self.node_day_orders.get(key, 0) + 1
        # Every line placed is off the backorders now (above), unless part of it is still
        # backordered (below).
        for backorder in decision.backorders:
            record.backorders[backorder.line_id] = backorder
        if not first:
            self._refresh(record)
            return
        # What _refresh would find, without looking: no longer held, and every package the
        # order has is one of these, ALLOCATED.
        backordered = bool(record.backorders) and any(
            b.quantity for b in record.backorders.values())
        if decision.packages:
            record.status = _PARTIALLY_ALLOCATED if backordered else _ALLOCATED
        else:
            record.status = OrderStatus.BACKORDERED if backordered else OrderStatus.CANCELLED

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
                state.status = PackageStatus.CANCELLED
            record.cancelled[line_id] = record.cancelled.get(line_id, 0) + qty
        for line_id, qty in rec.backorder_lines:
            backorder = record.backorders[line_id]
            left = backorder.quantity - qty
            if left:
                record.backorders[line_id] = backorder._replace(quantity=left)
            else:
                del record.backorders[line_id]
            record.cancelled[line_id] = record.cancelled.get(line_id, 0) + qty
        if rec.whole_order:
            record.held = False
        self._refresh(record)

    def replan(self, rec: ReplanRecord) -> None:
        record = self.orders[rec.order_id]
        days: set[tuple[int, int]] = set()
        for package_id in rec.superseded:
            state = self.packages[package_id]
            state.status = PackageStatus.REPLANNED
            days.add((state.plan.node, state.plan.ship_ms // DAY_MS))
        for key in days:
            self.node_day_orders[key] -= 1
        self._refresh(record)

    def release_wave(self, wave: WaveRecord) -> None:
        self.waves += 1
        for package_id in wave.package_ids:
            state = self.packages[package_id]
            state.status = PackageStatus.RELEASED
            state.wave_id = wave.wave_id
            self._refresh(self.orders[state.order_id])

    def pick(self, rec: PickRecord) -> None:
        state = self.packages[rec.package_id]
        for line_id, picked in rec.picked:
            if picked:
                state.quantities[line_id] = picked
            else:
                state.quantities.pop(line_id, None)
        state.status = PackageStatus.PICKED if state.quantities else PackageStatus.CANCELLED
        self._refresh(self.orders[state.order_id])

    def pack(self, rec: PackRecord) -> None:
        state = self.packages[rec.package_id]
        state.pack_mismatch = not rec.matched
        if rec.matched:
            state.status = PackageStatus.PACKED

    def ship(self, rec: ShipRecord, time_ms: int) -> None:
        state = self.packages[rec.package_id]
        state.status = PackageStatus.SHIPPED
        state.tracking_number = rec.tracking_number
        state.shipped_ms = time_ms
        self._refresh(self.orders[state.order_id])

    def _refresh(self, record: OrderRecord) -> None:
        states = [self.packages[p] for p in record.package_ids]
        live = [s for s in states
                if s.status not in (PackageStatus.CANCELLED, PackageStatus.REPLANNED)]
        shipped = [s for s in live if s.status == PackageStatus.SHIPPED]
        open_units = sum(b.quantity for b in record.backorders.values())
        if record.held:
            record.status = OrderStatus.HELD
        elif not live and not open_units:
            record.status = OrderStatus.CANCELLED
        elif shipped and len(shipped) == len(live) and not open_units:
            record.status = OrderStatus.SHIPPED
        elif shipped:
            record.status = OrderStatus.PARTIALLY_SHIPPED
        elif any(s.status != PackageStatus.ALLOCATED for s in live):
            record.status = OrderStatus.IN_FULFILMENT
        elif live and open_units:
            record.status = OrderStatus.PARTIALLY_ALLOCATED
        elif live:
            record.status = OrderStatus.ALLOCATED
        else:
            record.status = OrderStatus.BACKORDERED
