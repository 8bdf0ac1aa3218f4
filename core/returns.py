"""Returns: authorisation by policy, receipt, inspection and disposition, refunds.

A return authorisation (RMA) checks eligibility against the return policy (window
per channel and category, final-sale and seasonal categories, quantity not above
what shipped and was not returned already, the customer's return-abuse score),
picks the receiving node and the refund timing, and states the expected refund.
Units come back into RETURNED; inspection grades them and the disposition rules
send them to AVAILABLE (restock), QUARANTINED (refurbish) or out of the ledger
(liquidate, scrap, return to vendor). A refund never exceeds what was paid, and
refunds above a threshold wait for a finance approval by someone else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from core.model import restore_frozen, set_fields

if TYPE_CHECKING:  # (the ledger holds the returns: no import at run time)
    from core.ledger import Ledger

DAY_MS = 86_400_000


class Grade(IntEnum):
    UNOPENED = 1
    LIKE_NEW = 2
    DAMAGED = 3
    DEFECTIVE = 4
    MISSING_PARTS = 5


class Disposition(IntEnum):
    RESTOCK = 1
    REFURBISH = 2
    LIQUIDATE = 3
    SCRAP = 4
    RETURN_TO_VENDOR = 5


class RefundTiming(IntEnum):
    ON_AUTHORIZATION = 1  # trusted customers
    ON_RECEIPT = 2
    ON_INSPECTION = 3  # high-value lines, or customers under review


class ReturnStatus(IntEnum):
    AUTHORIZED = 1
    IN_REVIEW = 2  # the abuse score routed it to a person
    RECEIVED = 3
    INSPECTED = 4  # graded and disposed of; a refund waits for an approval
    CLOSED = 5  # inspected, nothing left to do


@dataclass(frozen=True, slots=True)
class ReturnPolicy:
    window_days: int = 30
    channel_window_days: tuple[tuple[str, int], ...] = (("marketplace", 30),)
    category_window_days: tuple[tuple[str, int], ...] = ()
    final_sale_categories: tuple[str, ...] = ()
    seasonal_categories: tuple[str, ...] = ()
    seasonal_window_days: int = 14
    restocking_fee_bp: int = 0  # basis points of the line value
    category_restocking_fee_bp: tuple[tuple[str, int], ...] = (("electronics", 1500),)
    abuse_window_days: int = 90
    abuse_review_rate: float = 0.5  # returned value / bought value above this: review
    trusted_min_orders: int = 3
    high_value_micros: int = 300_000_000  # lines worth more are refunded on inspection
    refund_approval_micros: int = 500_000_000  # refunds above need a finance approval
    liquidate_above_micros: int = 20_000_000  # damaged units worth more are liquidated

    def longest_window_days(self) -> int:
        """The longest a shipped line may wait for its return, whatever its channel or
        category."""
        return max(self.window_days, self.seasonal_window_days,
                   *(d for _, d in self.channel_window_days),
                   *(d for _, d in self.category_window_days))

    def window_for(self, channel: str, category: str) -> int:
        if category in self.seasonal_categories:
            return self.seasonal_window_days
        for name, days in self.category_window_days:
            if name == category:
                return days
        for name, days in self.channel_window_days:
            if name == channel:
                return days
        return self.window_days

    def fee_bp(self, category: str) -> int:
        for name, bp in self.category_restocking_fee_bp:
            if name == category:
                return bp
        return self.restocking_fee_bp


def disposition_for(grade: Grade, seasonal_over: bool, unit_value: int,
                    policy: ReturnPolicy) -> Disposition:
    """The disposition rules, in order."""
    if grade == Grade.DEFECTIVE:
        return Disposition.RETURN_TO_VENDOR
    if grade == Grade.MISSING_PARTS:
        return Disposition.REFURBISH
    if grade == Grade.DAMAGED:
        return Disposition.LIQUIDATE if unit_value > policy.liquidate_above_micros \
            else Disposition.SCRAP
    if seasonal_over:
        return Disposition.LIQUIDATE  # sellable, but its season is over
    return Disposition.RESTOCK


@dataclass(frozen=True, slots=True)
class ReturnLine:
    line_id: str
    sku: int
    quantity: int
    unit_price_micros: int
    # The restocking fee's rate for the line's category as authorised (basis points):
    # refunds share the fee at these rates, whatever the policy says since. -1: not
    # recorded (authorised before it was; read with `fee_bp_of`).
    fee_bp: int = -1

    def __setstate__(self, state: Any) -> None:
        restore_frozen(self, state)


def fee_bp_of(line: ReturnLine) -> int:
    return getattr(line, "fee_bp", -1)  # (unset in one unpickled from an older log)


@dataclass(frozen=True, slots=True)
class ReturnAuthorization:
    """Payload of RETURN_AUTHORIZED."""

    rma_id: str
    order_id: str
    customer_id: str
    node: int
    lines: tuple[ReturnLine, ...]
    refund_timing: RefundTiming
    refund_micros: int  # what the customer gets back
    restocking_fee_micros: int
    in_review: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Inspection:
    """Payload of RETURN_INSPECTED: the grade and disposition of each line."""

    rma_id: str
    results: tuple[tuple[str, Grade, Disposition], ...]  # (line_id, grade, disposition)


@dataclass(frozen=True, slots=True)
class Refund:
    """Payload of REFUND_ISSUED."""

    rma_id: str
    gross_micros: int  # sales returned
    fee_micros: int  # restocking fee kept
    net_micros: int  # owed to the customer
    # (line id, units) of the return it pays for. A refund logged before these were kept
    # has none (read with `refund_lines_of`).
    lines: tuple[tuple[str, int], ...] = ()

    def __setstate__(self, state: Any) -> None:
        restore_frozen(self, state)


def refund_lines_of(refund: Refund) -> tuple[tuple[str, int], ...]:
    return getattr(refund, "lines", ())  # (unset in one unpickled from an older log)


@dataclass(slots=True)
class ReturnRecord:
    auth: ReturnAuthorization
    created_ms: int
    status: ReturnStatus = ReturnStatus.AUTHORIZED
    received: dict[str, int] = field(default_factory=dict)
    inspection: Inspection | None = None
    refunded_micros: int = 0
    approval_id: str = ""  # the latest refund waiting for approval ("" when none waits)
    # Every refund approval asked for and not decided yet, in the order asked.
    pending_approvals: list[str] = field(default_factory=list)
    # What was authorised and never came no longer counts as returned (ReturnBook.
    # release_unreceived): done once, when inspected (or when an up-front refund is refused).
    released: bool = False

    def __setstate__(self, state: Any) -> None:
        set_fields(self, state)
        if not hasattr(self, "pending_approvals"):  # a snapshot from before they were kept
            self.pending_approvals = [self.approval_id] if self.approval_id else []
        if not hasattr(self, "released"):
            self.released = False

    @property
    def done(self) -> bool:
        """Nothing more of it reads its order: CLOSED (or, in a snapshot from before
        returns were closed, inspected with no refund waiting for an approval)."""
        return self.status == ReturnStatus.CLOSED or (
            self.status == ReturnStatus.INSPECTED and not self.pending_approvals)

    def approval_asked(self, approval_id: str) -> None:
        self.pending_approvals.append(approval_id)
        self.approval_id = approval_id

    def approval_settled(self, approval_id: str) -> None:
        """A refund approval was decided for good (approved by all it needs, or refused)."""
        if approval_id in self.pending_approvals:
            self.pending_approvals.remove(approval_id)
        self.approval_id = self.pending_approvals[-1] if self.pending_approvals else ""


class ReturnBook:
    def __init__(self) -> None:
        self.returns: dict[str, ReturnRecord] = {}
        self.returned: dict[tuple[str, str], int] = {}  # (order, line) -> units authorised
        # ... and by the SKU they come back as: (order, line, sku) -> units (a line may have
        # shipped as more than one SKU, part of it as a substitute).
        self.returned_as: dict[tuple[str, str, int], int] = {}
        self.policy = ReturnPolicy()
        # Per customer: (time, value bought) and (time, value returned), for the abuse score.
        # customer -> (time, value, order id) of each package shipped to them (entries
        # from an older snapshot have no order id: each counts as an order of its own).
        self.bought: dict[str, list[tuple[int, int, str] | tuple[int, int]]] = {}
        self.sent_back: dict[str, list[tuple[int, int]]] = {}
        self.frees_unreceived = True  # (see __setstate__)
        self.by_order: dict[str, list[str]] = {}  # order id -> its returns, in order

    def release_unreceived(self, record: ReturnRecord) -> None:
        """Units authorised but not received when the return was inspected no longer count
        as returned (another return may bring them back), unless they were refunded when
        authorised (or the refund waits for its approval): then the customer owes them."""
        auth = record.auth
        if record.released or (auth.refund_timing == RefundTiming.ON_AUTHORIZATION and (
                record.refunded_micros or record.pending_approvals)):
            return
        record.released = True
        for line in auth.lines:
            missing = line.quantity - record.received.get(line.line_id, 0)
            if missing > 0:
                key = (auth.order_id, line.line_id)
                left = self.returned.get(key, 0) - missing
                if left > 0:
                    self.returned[key] = left
                else:
                    self.returned.pop(key, None)
                self.count_as(auth.order_id, line.line_id, line.sku, -missing)

    def count_as(self, order_id: str, line_id: str, sku: int, units: int) -> None:
        """Add `units` (or take them away) to what of the line comes back as `sku`."""
        key = (order_id, line_id, sku)
        left = self.returned_as.get(key, 0) + units
        if left > 0:
            self.returned_as[key] = left
        else:
            self.returned_as.pop(key, None)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "returned_as" not in state:  # a snapshot from before: counted from the returns
            self.returned_as = {}
            for record in self.returns.values():
                for line in record.auth.lines:
                    units = line.quantity
                    if record.released:
                        units -= max(line.quantity - record.received.get(line.line_id, 0), 0)
                    self.count_as(record.auth.order_id, line.line_id, line.sku, units)
        if not state.get("frees_unreceived"):
            # A snapshot from before inspections freed what never came: as a replay of
            # its log would leave it.
            for record in self.returns.values():
                if record.inspection is not None:
                    self.release_unreceived(record)
        self.frees_unreceived = True
        if "by_order" not in state:  # a snapshot from before they were indexed by order
            self.by_order = {}
            for rma_id, record in self.returns.items():
                self.by_order.setdefault(record.auth.order_id, []).append(rma_id)

    def authorize(self, auth: ReturnAuthorization, time_ms: int) -> None:
        self.returns[auth.rma_id] = ReturnRecord(
            auth, time_ms, ReturnStatus.IN_REVIEW if auth.in_review else ReturnStatus.AUTHORIZED)
        self.by_order.setdefault(auth.order_id, []).append(auth.rma_id)
        for line in auth.lines:
            key = (auth.order_id, line.line_id)
            self.returned[key] = self.returned.get(key, 0) + line.quantity
            self.count_as(auth.order_id, line.line_id, line.sku, line.quantity)
        value = sum(x.quantity * x.unit_price_micros for x in auth.lines)
        self.sent_back.setdefault(auth.customer_id, []).append((time_ms, value))

    def abuse_rate(self, customer: str, now_ms: int) -> tuple[float, int]:
        """(returned value / bought value over the window, orders in the window). An order
        that shipped as several packages is one order."""
        since = now_ms - self.policy.abuse_window_days * DAY_MS
        bought = [entry for entry in self.bought.get(customer, ()) if entry[0] >= since]
        back = sum(v for t, v in self.sent_back.get(customer, ()) if t >= since)
        total = sum(entry[1] for entry in bought)
        orders = len({entry[2] if len(entry) > 2 else (i,) for i, entry in enumerate(bought)})
        return (back / total if total else 0.0), orders


def fee_share(ledger: Ledger, auth: ReturnAuthorization, lines: Sequence[ReturnLine],
              gross: int) -> int:
    """The part of the return's restocking fee that `lines` (worth `gross`) carry: each
    line's own category's rate as the fee was charged at authorisation (a line of a
    category without a fee carries none of another's). A return authorised before the
    rates were kept with its lines is read at today's policy's rates, and where those give
    no weight, by value."""
    policy = ledger.returns.policy
    cat = ledger.catalog

    def weight(x: ReturnLine) -> int:
        bp = fee_bp_of(x)
        if bp < 0:
            bp = policy.fee_bp(cat.categories.values[cat.category[x.sku]])
        return x.quantity * x.unit_price_micros * bp

    total = sum(weight(x) for x in auth.lines)
    if not total:
        return auth.restocking_fee_micros * gross // max(
            sum(x.quantity * x.unit_price_micros for x in auth.lines), 1)
    return auth.restocking_fee_micros * sum(weight(x) for x in lines) // total


def refunded_ahead(ledger: Ledger, record: ReturnRecord, refund: Refund) -> int:
    """What of `refund` (net of its restocking fee) paid for units of the return that had
    not come back when it was issued: of each line it pays for, the units beyond those of
    the line received by then, at the line's price less the fee they carry. (A line's
    units received are paid for once: a refund on receipt or inspection pays only for
    units received, and one on authorisation is the return's only refund.)

    A refund logged before it named its lines is read by when the return is refunded: on
    authorisation, for every unit authorised; on receipt or inspection, for units
    received (those the receipt brought, or those the inspection graded)."""
    auth = record.auth
    paid_for = refund_lines_of(refund)
    if not paid_for:
        if auth.refund_timing != RefundTiming.ON_AUTHORIZATION:
            return 0
        paid_for = tuple((x.line_id, x.quantity) for x in auth.lines)
    by_line = {x.line_id: x for x in auth.lines}
    ahead: list[ReturnLine] = []
    for line_id, units in paid_for:
        line = by_line.get(line_id)
        missing = units - record.received.get(line_id, 0)
        if line is not None and missing > 0:
            ahead.append(ReturnLine(line_id, line.sku, missing, line.unit_price_micros,
                                    fee_bp_of(line)))
    if not ahead:
        return 0
    gross = sum(x.quantity * x.unit_price_micros for x in ahead)
    net = gross - min(fee_share(ledger, auth, ahead, gross), gross)
    return max(0, min(net, refund.net_micros))
