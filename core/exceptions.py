"""The exception queue: every case that needs a person, with type, owner role, age and
resolution history (holds, backorders, pack mismatches, count variances ...)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExceptionType(IntEnum):
    PAYMENT_HOLD = 1
    FRAUD_REVIEW = 2
    ADDRESS_INVALID = 3
    BACKORDER = 4
    NO_FEASIBLE_NODE = 5
    PACK_MISMATCH = 6
    SHORT_PICK = 7
    COUNT_VARIANCE = 8


class Resolution(IntEnum):
    RELEASE = 1
    RETRY = 2
    CANCEL = 3
    ACCEPT = 4
    APPROVE = 5
    REJECT = 6


#: Exceptions that stop an order from being allocated until resolved.
HOLDS = frozenset({ExceptionType.PAYMENT_HOLD, ExceptionType.FRAUD_REVIEW,
                   ExceptionType.ADDRESS_INVALID})

OWNER_ROLE = {
    ExceptionType.PAYMENT_HOLD: "finance",
    ExceptionType.FRAUD_REVIEW: "fraud_review",
    ExceptionType.ADDRESS_INVALID: "customer_service",
    ExceptionType.BACKORDER: "inventory_planning",
    ExceptionType.NO_FEASIBLE_NODE: "fulfilment_operations",
    ExceptionType.PACK_MISMATCH: "warehouse",
    ExceptionType.SHORT_PICK: "warehouse",
    ExceptionType.COUNT_VARIANCE: "inventory_control",
}

#: Who may resolve an exception of each type: its owner role, and those who supervise every
#: queue.
RESOLVERS = {kind: frozenset({owner, "operations", "admin"})
             for kind, owner in OWNER_ROLE.items()}

#: The resolutions each exception type accepts.
ALLOWED = {
    ExceptionType.PAYMENT_HOLD: {Resolution.RELEASE, Resolution.CANCEL},
    ExceptionType.FRAUD_REVIEW: {Resolution.RELEASE, Resolution.CANCEL},
    ExceptionType.ADDRESS_INVALID: {Resolution.RELEASE, Resolution.CANCEL},
    ExceptionType.BACKORDER: {Resolution.RETRY, Resolution.CANCEL, Resolution.ACCEPT},
    ExceptionType.NO_FEASIBLE_NODE: {Resolution.RETRY, Resolution.CANCEL},
    ExceptionType.PACK_MISMATCH: {Resolution.ACCEPT},
    ExceptionType.SHORT_PICK: {Resolution.ACCEPT},
    ExceptionType.COUNT_VARIANCE: {Resolution.APPROVE, Resolution.REJECT},
}


@dataclass(frozen=True, slots=True)
class ExceptionInfo:
    """Payload of EXCEPTION_RAISED."""

    exception_type: ExceptionType
    order_id: str
    detail: str
    reference: str = ""  # package id, count exception's SKU/node, inbound reference ...


@dataclass(slots=True)
class ExceptionRecord:
    exception_id: str
    exception_type: ExceptionType
    order_id: str
    detail: str
    reference: str
    created_ms: int
    seq: int
    resolved: bool = False
    resolution: Resolution | None = None
    resolved_ms: int = 0
    note: str = ""

    @property
    def owner_role(self) -> str:
        return OWNER_ROLE[self.exception_type]


class ExceptionBook:
    def __init__(self) -> None:
        self.by_id: dict[str, ExceptionRecord] = {}
        self.open_by_order: dict[str, list[str]] = {}
        self.by_order: dict[str, list[str]] = {}
        # The open ones' ids, in the order raised: the queue people work from, read by
        # ListExceptions, /metrics and the dashboard without walking every exception ever
        # raised (resolved ones stay in by_id for their history, until their order is
        # archived).
        self.open_ids: dict[str, None] = {}
        self._listed: list[ExceptionRecord] | None = None  # (see in_order)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state.pop("_listed", None)  # (rebuilt when read)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._listed = None
        if "open_ids" not in state:  # a snapshot written before the open ones were kept
            self.open_ids = {exception_id: None for exception_id, record in self.by_id.items()
                             if not record.resolved}

    def in_order(self) -> list[ExceptionRecord]:
        """Every exception kept, in the order raised (ascending sequence numbers), as a
        list a listing can bisect: made once, then kept as exceptions are raised, until
        an archive drops some (not a copy of every exception for each page read)."""
        if self._listed is None:
            self._listed = list(self.by_id.values())
        return self._listed

    def open_records(self) -> list[ExceptionRecord]:
        """The open exceptions, in the order raised."""
        return [self.by_id[exception_id] for exception_id in self.open_ids]

    def raise_(self, exception_id: str, info: ExceptionInfo, time_ms: int, seq: int) -> None:
        record = self.by_id[exception_id] = ExceptionRecord(
            exception_id, info.exception_type, info.order_id, info.detail, info.reference,
            time_ms, seq)
        if self._listed is not None:
            self._listed.append(record)
        self.open_ids[exception_id] = None
        if info.order_id:
            self.open_by_order.setdefault(info.order_id, []).append(exception_id)
            self.by_order.setdefault(info.order_id, []).append(exception_id)

    def resolve(self, exception_id: str, resolution: Resolution, time_ms: int, note: str) -> None:
        record = self.by_id[exception_id]
        record.resolved = True
        record.resolution = resolution
        record.resolved_ms = time_ms
        record.note = note
        self.open_ids.pop(exception_id, None)
        if record.order_id:
            still_open = [e for e in self.open_by_order.get(record.order_id, ())
                          if e != exception_id]
            if still_open:
                self.open_by_order[record.order_id] = still_open
            else:
                self.open_by_order.pop(record.order_id, None)

    def forget_order(self, order_id: str) -> None:
        """An archived order's exceptions leave memory with it (every one is resolved: an
        order with an open one is not archived). Their ids are not raised again: each is
        made from the sequence number of the event that raised it."""
        for exception_id in self.by_order.pop(order_id, ()):
            self.by_id.pop(exception_id, None)
            self.open_ids.pop(exception_id, None)
            self._listed = None
        self.open_by_order.pop(order_id, None)

    def open_for(self, order_id: str) -> list[ExceptionRecord]:
        return [self.by_id[e] for e in self.open_by_order.get(order_id, ())]
