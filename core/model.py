"""Buckets, event kinds and the ledger event: the vocabulary every other module shares."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from mypy_extensions import mypyc_attr


class Bucket(IntEnum):
    """Disjoint states a unit at a node can be in. EXTERNAL is the world outside the ledger."""

    EXTERNAL = -1
    AVAILABLE = 0
    RESERVED = 1
    ALLOCATED = 2
    QUARANTINED = 3
    RETURNED = 4
    IN_TRANSIT = 5


N_BUCKETS = 6
QTY_MAX = 2**31 - 1  # quantities are stored as int32
MONEY_MAX = 10**12  # a million currency units per unit: far from int64 overflow in sums
#: The most one line (a receipt's, an expected inbound's, an order's) may be worth, ten
#: billion currency units: one line at the caps of quantity and unit money (2^31 x 10^12)
#: would take the books' totals past what int64 holds, and every finance read with them.
LINE_VALUE_MAX = 10**16
#: The heaviest and the largest a SKU's unit may be (lb; in, each side), as RateShop's
#: parcel: a unit's dimensional weight is then at most 7.2e9 lb, and an order's weights
#: stay finite floats (see core.network.COST_CAP).
SKU_WEIGHT_MAX_LB: Final = 10_000.0
SKU_SIDE_MAX_IN: Final = 10_000.0


class NodeType(IntEnum):
    OWNED_DC = 1
    THIRD_PARTY = 2
    STORE = 3
    DROP_SHIP = 4


class AdjustReason(IntEnum):
    DAMAGE = 1
    SHRINKAGE = 2
    FOUND = 3
    CORRECTION = 4


class EventKind(IntEnum):
    RECEIVED = 1
    ADJUSTED = 2
    MOVED = 3
    TRANSFER_SHIPPED = 4
    TRANSFER_IN_TRANSIT = 5
    INBOUND_EXPECTED = 6
    INBOUND_RECEIVED = 7
    RESERVED = 8
    RESERVATION_RELEASED = 9
    RESERVATION_EXPIRED = 10
    COUNT_ADJUSTED = 11
    COUNT_VARIANCE_HELD = 12
    SAFETY_STOCK_SET = 13
    RING_FENCE_SET = 14
    SKU_UPSERTED = 15
    NODE_UPSERTED = 16
    CHANNEL_UPSERTED = 17
    NETWORK_SET = 18
    OPPORTUNITY_COST_SET = 19
    # Orders. Moves: units committed to, released from, shipped for, or lost by an order.
    ORDER_UNITS_ALLOCATED = 20
    ORDER_UNITS_RELEASED = 21
    ORDER_UNITS_SHIPPED = 22
    PICK_SHORTAGE = 23
    # Order records (payload events).
    ORDER_RECEIVED = 24
    ORDER_ALLOCATED = 25
    ORDER_CANCELLED = 26
    WAVE_RELEASED = 27
    PACKAGE_PICKED = 28
    PACKAGE_PACKED = 29
    PACKAGE_SHIPPED = 30
    EXCEPTION_RAISED = 31
    EXCEPTION_RESOLVED = 32
    COUNT_VARIANCE_SETTLED = 33
    LANDED_COST_ALLOCATED = 34
    # Returns. Moves: units back from a customer (EXTERNAL -> RETURNED) and their
    # disposition (RETURNED -> AVAILABLE, QUARANTINED or EXTERNAL; reason = Disposition).
    RETURN_RECEIVED = 35
    RETURN_DISPOSED = 36
    RETURN_AUTHORIZED = 37
    RETURN_INSPECTED = 38
    REFUND_ISSUED = 39
    APPROVAL_REQUESTED = 40
    APPROVAL_DECIDED = 41
    RETURN_POLICY_SET = 42
    TOKEN_REVOKED = 43
    # A cycle-count line that matched the ledger (no units move; inventory accuracy).
    COUNT_CONFIRMED = 44
    # Operations: rules -> alerts -> tasks and actions (payload events, see core/alerts.py).
    RULES_SET = 45
    ALERT_RAISED = 46
    ALERT_ACKNOWLEDGED = 47
    TASK_OPENED = 48
    TASK_COMPLETED = 49
    ACTION_APPLIED = 50
    ACTION_REVERSED = 51
    ORDER_REPLANNED = 52
    # Inventory value: the policy and a supplied demand forecast (payload events).
    VALUE_POLICY_SET = 53
    DEMAND_FORECAST_SET = 54
    # A closed order's record left memory (reference: the order id); its id stays taken.
    ORDER_ARCHIVED = 55
    # Inbound stock that will not come (a purchase cancelled or closed short): IN_TRANSIT ->
    # EXTERNAL under the inbound's reference.
    INBOUND_CANCELLED = 56
    # Journal entries closed into the store's journal segments (payload
    # finance.JournalClosed): they leave memory, readable from the store.
    JOURNAL_CLOSED = 57


#: Kinds that move units between the ledger and the outside world but are
#: internal to the network as a pair (a transfer leaves one node, arrives at another).
TRANSFER_KINDS: Final = frozenset({EventKind.TRANSFER_SHIPPED, EventKind.TRANSFER_IN_TRANSIT})
#: Kinds that move units between buckets (or in from / out to the outside world).
MOVE_KINDS: Final = frozenset({
    EventKind.RECEIVED, EventKind.ADJUSTED, EventKind.MOVED, EventKind.TRANSFER_SHIPPED,
    EventKind.TRANSFER_IN_TRANSIT, EventKind.INBOUND_EXPECTED, EventKind.INBOUND_RECEIVED,
    EventKind.RESERVED, EventKind.RESERVATION_RELEASED, EventKind.RESERVATION_EXPIRED,
    EventKind.COUNT_ADJUSTED, EventKind.COUNT_VARIANCE_HELD, EventKind.ORDER_UNITS_ALLOCATED,
    EventKind.ORDER_UNITS_RELEASED, EventKind.ORDER_UNITS_SHIPPED, EventKind.PICK_SHORTAGE,
    EventKind.COUNT_VARIANCE_SETTLED, EventKind.RETURN_RECEIVED, EventKind.RETURN_DISPOSED,
    EventKind.INBOUND_CANCELLED,
})
POLICY_KINDS = frozenset({EventKind.SAFETY_STOCK_SET, EventKind.RING_FENCE_SET,
                          EventKind.NETWORK_SET, EventKind.OPPORTUNITY_COST_SET,
                          EventKind.RETURN_POLICY_SET, EventKind.TOKEN_REVOKED,
                          EventKind.RULES_SET})
CATALOG_KINDS: Final = frozenset(
    {EventKind.SKU_UPSERTED, EventKind.NODE_UPSERTED, EventKind.CHANNEL_UPSERTED}
)


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class SkuSpec:
    sku_id: str
    name: str = ""
    weight_lb: float = 0.0
    length_in: float = 0.0
    width_in: float = 0.0
    height_in: float = 0.0
    unit_cost_micros: int = 0
    price_micros: int = 0
    category: str = ""
    substitution_group: str = ""


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class NodeSpec:
    node_id: str
    name: str = ""
    node_type: NodeType = NodeType.OWNED_DC
    latitude: float = 0.0
    longitude: float = 0.0
    daily_capacity: int = 0
    enabled: bool = True


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class ChannelSpec:
    channel_id: str
    name: str = ""


@dataclass(slots=True, init=False)  # not frozen: frozen dataclasses are slower to build
class Event:
    """One change to the ledger. `apply` of the same events always gives the same state.
    Never modified once made.

    Bucket moves use `from_bucket`/`to_bucket` (EXTERNAL for the outside world).
    Policy events (safety stock, ring-fence) carry their new value in `quantity`,
    with -1 in `sku`/`node` meaning "every SKU/node" and -1 in `quantity` clearing it.
    Catalogue events carry their spec in `payload` and the dense index in `sku`/`node`/`channel`.
    `due_ms` is a reservation's expiry or an inbound's expected arrival.

    """

    seq: int
    kind: EventKind
    sku: int = -1
    node: int = -1
    from_bucket: Bucket = Bucket.EXTERNAL
    to_bucket: Bucket = Bucket.EXTERNAL
    quantity: int = 0
    reference: str = ""
    request_id: str = ""
    time_ms: int = 0
    channel: int = -1
    due_ms: int = 0
    reason: int = 0  # AdjustReason of an adjustment
    amount: int = 0  # money, micros: a receipt's unit cost
    counted: int = -1  # cycle count: the quantity counted
    expected: int = -1  # cycle count: the quantity the ledger expected on the shelf
    payload: Any = None

    # Written out (not generated): compiled, this __init__ is native code, where the
    # generated one would run interpreted for every event (allocation makes several an
    # order). `seq` and `kind` have defaults only for logs written in pickle's default
    # form, which makes the event empty (compiled: through this __init__) and then sets
    # every field.
    def __init__(self, seq: int = -1, kind: EventKind = EventKind.RECEIVED, sku: int = -1,
                 node: int = -1, from_bucket: Bucket = Bucket.EXTERNAL,
                 to_bucket: Bucket = Bucket.EXTERNAL, quantity: int = 0, reference: str = "",
                 request_id: str = "",
                 time_ms: int = 0, channel: int = -1, due_ms: int = 0, reason: int = 0,
                 amount: int = 0, counted: int = -1, expected: int = -1,
                 payload: Any = None) -> None:
        self.seq = seq
        self.kind = kind
        self.sku = sku
        self.node = node
        self.from_bucket = from_bucket
        self.to_bucket = to_bucket
        self.quantity = quantity
        self.reference = reference
        self.request_id = request_id
        self.time_ms = time_ms
        self.channel = channel
        self.due_ms = due_ms
        self.reason = reason
        self.amount = amount
        self.counted = counted
        self.expected = expected
        self.payload = payload

    @property
    def is_move(self) -> bool:
        return self.kind in MOVE_KINDS

    def __setstate__(self, state: Any) -> None:
        # Logs written before __reduce__ hold pickle's default form: the event made empty,
        # then this state, (None, {field: value}) (a compiled class's own is {field: value}).
        set_fields(self, state)

    def __reduce__(self) -> tuple[type[Event], tuple[Any, ...]]:
        # Stored as its fields in order, read back through __init__: for a slotted
        # dataclass this takes about half the time of pickle's default to write and a
        # third to read. (Logs written the default way still read.) The fields are read
        # one by one (compiled, each a slot read, where a getter by name looks each up);
        # a move (most events) leaves out the six last, which it never sets.
        if (self.payload is None and self.due_ms == 0 and self.reason == 0
                and self.amount == 0 and self.counted == -1 and self.expected == -1):
            return Event, (self.seq, self.kind, self.sku, self.node, self.from_bucket,
                           self.to_bucket, self.quantity, self.reference, self.request_id,
                           self.time_ms, self.channel)
        return Event, (self.seq, self.kind, self.sku, self.node, self.from_bucket,
                       self.to_bucket, self.quantity, self.reference, self.request_id,
                       self.time_ms, self.channel, self.due_ms, self.reason, self.amount,
                       self.counted, self.expected, self.payload)


def restore_frozen(obj: object, state: Any, missing: dict[str, Any] | None = None) -> None:
    """__setstate__ of a frozen dataclass with slots, pickled in dataclasses' own form (its
    field values in order): a state written before fields were added sets those to the
    value `missing` names, else to their default. Left unset (as dataclasses' own
    __setstate__ leaves them), the object could not be pickled again (its __getstate__
    reads every field): a snapshot holding one written by an older version failed."""
    fields = dataclasses.fields(obj)  # type: ignore[arg-type]
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
        state = {**(state[0] or {}), **state[1]}  # (pickle's default form for slots)
    if isinstance(state, dict):  # (by name: written when the class was another shape)
        given = {name: value for name, value in state.items()
                 if name in {f.name for f in fields}}
    else:
        given = dict(zip((f.name for f in fields), state, strict=False))
    for f in fields:
        if f.name in given:
            object.__setattr__(obj, f.name, given[f.name])
            continue
        if missing is not None and f.name in missing:
            value = missing[f.name]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise TypeError(f"{type(obj).__name__}: no value for {f.name} in its state")
        object.__setattr__(obj, f.name, value)


def set_fields(obj: object, state: Any) -> None:
    """Set the fields a pickled state names: {field: value}, or (None, {field: value})
    (pickle's default form for a class with slots)."""
    if isinstance(state, tuple):
        state = state[1]
    for name, value in state.items():
        setattr(obj, name, value)


