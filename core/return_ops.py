"""Return and approval command handlers. Like every handler, they only plan events."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core import commands as c
from core.adjustments import adjust, release_holds
from core.approvals import (
    APPROVER_ROLES,
    ApprovalDecision,
    ApprovalRequest,
    has_role,
    holds_of,
    refund_lines_of,
)
from core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from core.ledger import Ledger
from core.model import Bucket, EventKind, NodeType
from core.network import great_circle_miles
from core.orders import OrderRecord, PackageStatus
from core.plan import Plan
from core.returns import (
    DAY_MS,
    Disposition,
    Grade,
    Inspection,
    Refund,
    RefundTiming,
    ReturnAuthorization,
    ReturnLine,
    ReturnRecord,
    disposition_for,
    fee_bp_of,
    fee_share,
)
from core.rule_ops import approved, approved_rules
from core.validation import check_identifier, check_line_ids, existing

RETURN_NODE_TYPES = frozenset({NodeType.OWNED_DC, NodeType.THIRD_PARTY})


@dataclass(frozen=True, slots=True)
class ReturnDecision:
    rma_id: str
    eligible: bool
    reasons: tuple[str, ...]
    authorization: ReturnAuthorization | None = None
    refunded_micros: int = 0
    approval_id: str = ""


@dataclass(frozen=True, slots=True)
class ReturnProgress:
    rma_id: str
    refunded_micros: int = 0
    approval_id: str = ""


def _shipped(ledger: Ledger, record: OrderRecord, line_id: str
             ) -> dict[int, tuple[int, int, int]]:
    """What of an order line shipped, by the SKU it shipped as (more than one when part of
    it went as a substitute): SKU -> (units, latest shipment time, lowest unit price
    charged)."""
    by_sku: dict[int, tuple[int, int, int]] = {}
    for package_id in record.package_ids:
        state = ledger.orders.packages[package_id]
        if state.status != PackageStatus.SHIPPED:
            continue
        for line in state.plan.lines:
            if line.line_id == line_id and state.quantities.get(line_id, 0):
                units, last, price = by_sku.get(line.sku, (0, 0, 0))
                charged = state.unit_prices.get(line_id, 0)
                by_sku[line.sku] = (units + state.quantities[line_id],
                                    max(last, state.shipped_ms),
                                    charged if not units else min(price, charged))
    return by_sku


def _in_window(ledger: Ledger, record: OrderRecord, line_id: str, sku: int, window_ms: int,
               now_ms: int) -> int:
    """Units of an order line shipped as `sku` that may come back now: shipped within the
    window and not on a return already. Each return is taken, in the order authorised, to
    have brought back the oldest units then in its window (so one authorised when only
    recent units were returnable used those, not older ones since out of it)."""
    shipments: list[list[int]] = []  # [shipped at, units not back]
    for package_id in record.package_ids:
        state = ledger.orders.packages[package_id]
        if state.status != PackageStatus.SHIPPED:
            continue
        for line in state.plan.lines:
            if line.line_id == line_id and line.sku == sku:
                shipments.append([state.shipped_ms, state.quantities.get(line_id, 0)])
    shipments.sort()
    book = ledger.returns
    for rma_id in book.by_order.get(record.spec.order_id, ()):
        earlier = book.returns[rma_id]
        for x in earlier.auth.lines:
            if x.line_id != line_id or x.sku != sku:
                continue
            units = x.quantity
            if earlier.released:  # what never came no longer counts as back
                units -= max(x.quantity - earlier.received.get(line_id, 0), 0)
            since = earlier.created_ms - window_ms
            for in_window_only in (True, False):  # (then any: the policy may have changed)
                for row in shipments:
                    if units and row[1] and (row[0] >= since or not in_window_only):
                        take = min(row[1], units)
                        row[1] -= take
                        units -= take
    return sum(units for shipped_ms, units in shipments if shipped_ms >= now_ms - window_ms)


def _receiving_node(ledger: Ledger, record: OrderRecord) -> int:
    """The nearest enabled DC or 3PL to the customer (or to where it shipped from)."""
    cat = ledger.catalog
    spec = record.spec
    lat, lon = spec.latitude, spec.longitude
    if lat is None or lon is None:
        network = ledger.network()
        try:
            region = network.region_for(spec.postal_code, spec.latitude, spec.longitude)
            lat, lon = float(network.region_lat[region]), float(network.region_lon[region])
        except Exception:  # no network: use the first shipping node's place
            first = ledger.orders.packages[record.package_ids[0]].plan.node
            lat, lon = cat.nodes[first].latitude, cat.nodes[first].longitude
    candidates = [(great_circle_miles(lat, lon, n.latitude, n.longitude), i)
                  for i, n in enumerate(cat.nodes)
                  if n.enabled and n.node_type in RETURN_NODE_TYPES]
    if not candidates:
        raise FailedPrecondition("no enabled node accepts returns", "order_id")
    return min(candidates)[1]


def create_return(p: Plan, cmd: c.CreateReturn) -> ReturnDecision:
    ledger = p.ledger
    book = ledger.returns
    policy = book.policy
    check_identifier(cmd.rma_id, "rma_id")
    if cmd.rma_id in book.returns:
        raise AlreadyExists(f"return {cmd.rma_id!r} exists already", "rma_id")
    check_identifier(cmd.order_id, "order_id")
    record = ledger.orders.orders.get(cmd.order_id)
    if record is None:
        if cmd.order_id in ledger.orders.archived:
            raise FailedPrecondition(
                f"order {cmd.order_id!r} is archived: it closed longer ago than the "
                "retention and every return window", "order_id")
        raise NotFound(f"no order {cmd.order_id!r}", "order_id")
    if not cmd.lines:
        raise InvalidArgument("lines must not be empty", "lines")
    reasons: list[str] = []
    lines: list[ReturnLine] = []
    check_line_ids([x.line_id for x in record.spec.lines], cmd.lines, f"order {cmd.order_id!r}")
    if cmd.skus and len(cmd.skus) != len(cmd.lines):
        raise InvalidArgument("skus must give one SKU id (or none) for each line", "lines")
    cat = ledger.catalog
    for i, (line_id, qty) in enumerate(cmd.lines):
        name = f"lines[{i}]"
        if qty < 1:
            raise InvalidArgument("quantity must be at least 1", f"{name}.quantity")
        by_sku = _shipped(ledger, record, line_id)
        named = cmd.skus[i] if cmd.skus else ""
        if named:
            check_identifier(named, f"{name}.sku_id")
        sku = cat.sku(named, f"{name}.sku_id") if named else next(iter(by_sku), -1)
        as_ids = ", ".join(cat.sku_ids[s] for s in sorted(by_sku))
        if named and sku not in by_sku:
            reasons.append(f"line {line_id}: none of it shipped as {named}"
                           + (f" (it shipped as {as_ids})" if by_sku else ""))
            continue
        if len(by_sku) > 1 and not named:
            # Which SKU each unit back is cannot be told from the line: taking them all as
            # one SKU would put the wrong SKU back in stock.
            reasons.append(f"line {line_id}: shipped as more than one SKU ({as_ids}; part of "
                           "it as a substitute): name the SKU coming back (sku_id)")
            continue
        shipped, shipped_ms, price = by_sku.get(sku, (0, 0, 0))
        already = (book.returned.get((cmd.order_id, line_id), 0) if len(by_sku) < 2
                   else book.returned_as.get((cmd.order_id, line_id, sku), 0))
        if qty > shipped - already:
            shipped_as = f" as {cat.sku_ids[sku]}" if len(by_sku) > 1 else ""
            reasons.append(f"line {line_id}: {shipped} shipped{shipped_as}, {already} already "
                           f"returned, {qty} asked")
            continue
        category = ledger.catalog.categories.values[ledger.catalog.category[sku]]
        if category in policy.final_sale_categories:
            reasons.append(f"line {line_id}: {category} is final sale")
            continue
        window = policy.window_for(record.spec.channel_id, category)
        # Each unit's window runs from its own shipment: of a line shipped in parts, those
        # shipped before the window are not returnable.
        open_units = _in_window(ledger, record, line_id, sku, window * DAY_MS, p.now_ms)
        if p.now_ms - shipped_ms > window * DAY_MS or open_units <= 0:
            reasons.append(f"line {line_id}: shipped more than {window} days ago "
                           f"({record.spec.channel_id or 'direct'}, {category or 'any'})")
            continue
        if qty > open_units:
            reasons.append(f"line {line_id}: {open_units} of its units shipped in the last "
                           f"{window} days ({record.spec.channel_id or 'direct'}, "
                           f"{category or 'any'}), {qty} asked")
            continue
        lines.append(ReturnLine(line_id, sku, qty, price, policy.fee_bp(category)))
    if reasons:
        return ReturnDecision(cmd.rma_id, False, tuple(reasons))
    customer = record.spec.customer_id
    rate, orders = book.abuse_rate(customer, p.now_ms) if customer else (0.0, 0)
    in_review = bool(customer) and rate > policy.abuse_review_rate
    value = sum(x.quantity * x.unit_price_micros for x in lines)
    fee = sum(x.quantity * x.unit_price_micros * policy.fee_bp(
        ledger.catalog.categories.values[ledger.catalog.category[x.sku]]) // 10_000
        for x in lines)
    if in_review or any(x.unit_price_micros * x.quantity > policy.high_value_micros
                        for x in lines):
        timing = RefundTiming.ON_INSPECTION
    elif customer and rate == 0.0 and orders >= policy.trusted_min_orders:
        timing = RefundTiming.ON_AUTHORIZATION
    else:
        timing = RefundTiming.ON_RECEIPT
    auth = ReturnAuthorization(cmd.rma_id, cmd.order_id, customer,
                               _receiving_node(ledger, record), tuple(lines), timing,
                               value - fee, fee, in_review, cmd.reason[:500])
    p.add(EventKind.RETURN_AUTHORIZED, reference=cmd.rma_id, payload=auth)
    why = [f"eligible: {len(lines)} lines, refund {value - fee} micros "
           f"({fee} restocking fee), refunded {timing.name.lower().replace('_', ' ')}"]
    if in_review:
        why.append(f"customer return rate {rate:.0%} above {policy.abuse_review_rate:.0%}: "
                   "refund waits for inspection")
    refunded, approval = 0, ""
    if timing == RefundTiming.ON_AUTHORIZATION:
        refunded, approval = _refund(p, auth, list(lines), cmd.actor)
    return ReturnDecision(cmd.rma_id, True, tuple(why), auth, refunded, approval)


def _refund(p: Plan, auth: ReturnAuthorization, lines: list[ReturnLine],
            actor: str) -> tuple[int, str]:
    """Refund `lines` of the RMA, or ask for an approval when the refunds of the order's
    returns (paid, waiting for approval, and this one) come to more than the threshold: a
    return refunded in parts, or an order's goods sent back on several returns, is not let
    through part by part."""
    ledger = p.ledger
    policy = ledger.returns.policy
    gross = sum(x.quantity * x.unit_price_micros for x in lines)
    if not gross:
        return 0, ""
    fee = min(fee_share(ledger, auth, lines, gross), gross)  # (never a negative refund)
    net = gross - fee
    paid_for = tuple((x.line_id, x.quantity) for x in lines)
    book = ledger.returns
    earlier = 0
    for rma_id in book.by_order.get(auth.order_id, ()):  # (this one is there once authorised)
        record = book.returns[rma_id]
        earlier += record.refunded_micros + sum(
            ledger.approvals.by_id[a].request.amount_micros for a in record.pending_approvals)
    if earlier + net > policy.refund_approval_micros:
        approval_id = f"AP-{ledger.last_seq + 1 + len(p.events)}"
        why = f"refund {net} micros on {auth.rma_id} (gross {gross}, fee {fee})"
        if earlier:
            why += (f"; {earlier} micros refunded or waiting on order {auth.order_id}'s "
                    "returns already")
        p.add(EventKind.APPROVAL_REQUESTED, reference=approval_id, payload=ApprovalRequest(
            approval_id, "refund", auth.rma_id, net, actor, why, gross, fee,
            refund_lines=paid_for))
        return 0, approval_id
    p.add(EventKind.REFUND_ISSUED, reference=auth.rma_id,
          payload=Refund(auth.rma_id, gross, fee, net, paid_for))
    return net, ""


def _return(p: Plan, rma_id: str) -> ReturnRecord:
    return existing(p.ledger.returns.returns, rma_id, "rma_id", "return")


def receive_return(p: Plan, cmd: c.ReceiveReturn) -> ReturnProgress:
    record = _return(p, cmd.rma_id)
    auth = record.auth
    if record.inspection is not None:
        raise FailedPrecondition(
            f"return {cmd.rma_id!r} was inspected already, which ended its receipt; units "
            "that came later need a return of their own", "rma_id")
    by_line = {x.line_id: x for x in auth.lines}
    wanted = cmd.lines or tuple((x.line_id, x.quantity - record.received.get(x.line_id, 0))
                                for x in auth.lines)
    received: list[ReturnLine] = []
    seen: set[str] = set()
    for i, (line_id, qty) in enumerate(wanted):
        line = by_line.get(line_id)
        if line is None:
            raise NotFound(f"return {cmd.rma_id!r} has no line {line_id!r}",
                           f"lines[{i}].line_id")
        if line_id in seen:
            raise InvalidArgument(f"line {line_id!r} appears twice", f"lines[{i}].line_id")
        seen.add(line_id)
        left = line.quantity - record.received.get(line_id, 0)
        if qty < 0:
            raise InvalidArgument("quantity must not be negative", f"lines[{i}].quantity")
        if qty > left:
            raise FailedPrecondition(f"line {line_id}: {left} units still expected, {qty} "
                                     "received", f"lines[{i}].quantity")
        if qty:
            p.add(EventKind.RETURN_RECEIVED, sku=line.sku, node=auth.node,
                  to_bucket=Bucket.RETURNED, quantity=qty, reference=cmd.rma_id,
                  payload=line_id, amount=p.ledger.books.shipped_unit_cost(
                      auth.order_id, line_id, line.sku))
            received.append(ReturnLine(line_id, line.sku, qty, line.unit_price_micros,
                                       fee_bp_of(line)))
    if not received:
        raise FailedPrecondition(f"return {cmd.rma_id!r} has nothing left to receive",
                                 "rma_id")
    refunded, approval = 0, ""
    if auth.refund_timing == RefundTiming.ON_RECEIPT:
        refunded, approval = _refund(p, auth, received, cmd.actor)
    return ReturnProgress(cmd.rma_id, refunded, approval)


_TARGET = {Disposition.RESTOCK: Bucket.AVAILABLE, Disposition.REFURBISH: Bucket.QUARANTINED}


def inspect_return(p: Plan, cmd: c.InspectReturn) -> ReturnProgress:
    record = _return(p, cmd.rma_id)
    if record.inspection is not None:
        raise FailedPrecondition(f"return {cmd.rma_id!r} was inspected already", "rma_id")
    auth = record.auth
    by_line = {x.line_id: x for x in auth.lines}
    if not cmd.grades and any(record.received.values()):
        raise InvalidArgument("grades must not be empty", "grades")
    # (No grades and nothing received: the goods never came. The inspection closes the
    # return, and what it authorised may come back on another.)
    policy = p.ledger.returns.policy
    results = []
    moves = []
    inspected: list[ReturnLine] = []
    seen: set[str] = set()
    for i, (line_id, grade_code) in enumerate(cmd.grades):
        line = by_line.get(line_id)
        if line is None:
            raise NotFound(f"return {cmd.rma_id!r} has no line {line_id!r}",
                           f"grades[{i}].line_id")
        if line_id in seen:
            raise InvalidArgument(f"line {line_id!r} is graded twice", f"grades[{i}].line_id")
        seen.add(line_id)
        try:
            grade = Grade(grade_code)
        except ValueError:
            raise InvalidArgument("a grade is required", f"grades[{i}].grade") from None
        units = record.received.get(line_id, 0)
        if not units:
            raise FailedPrecondition(f"line {line_id} has not been received",
                                     f"grades[{i}].line_id")
        category = p.ledger.catalog.categories.values[p.ledger.catalog.category[line.sku]]
        seasonal_over = category in policy.seasonal_categories
        disposition = disposition_for(grade, seasonal_over, line.unit_price_micros, policy)
        results.append((line_id, grade, disposition))
        moves.append((line, units, disposition))
        inspected.append(ReturnLine(line_id, line.sku, units, line.unit_price_micros,
                                    fee_bp_of(line)))
    # Every unit received is graded and disposed of: none may stay in RETURNED for ever.
    ungraded = sorted(line_id for line_id, units in record.received.items()
                      if units and line_id not in seen)
    if ungraded:
        raise FailedPrecondition(f"lines {', '.join(ungraded)} were received and need a "
                                 "grade too", "grades")
    p.add(EventKind.RETURN_INSPECTED, reference=cmd.rma_id,
          payload=Inspection(cmd.rma_id, tuple(results)))
    paused = p.ledger.ops.restock_pauses > 0  # an emergency: restock-grade units wait
    for line, units, disposition in moves:
        target = _TARGET.get(disposition, Bucket.EXTERNAL)
        if paused and target == Bucket.AVAILABLE:
            target = Bucket.QUARANTINED
        p.add(EventKind.RETURN_DISPOSED, sku=line.sku, node=auth.node,
              from_bucket=Bucket.RETURNED, to_bucket=target,
              quantity=units, reference=cmd.rma_id, reason=int(disposition))
    refunded, approval = 0, ""
    if auth.refund_timing == RefundTiming.ON_INSPECTION:
        refunded, approval = _refund(p, auth, inspected, cmd.actor)
    return ReturnProgress(cmd.rma_id, refunded, approval)


def decide_approval(p: Plan, cmd: c.DecideApproval) -> ReturnProgress:
    ledger = p.ledger
    check_identifier(cmd.approval_id, "approval_id")
    record = ledger.approvals.by_id.get(cmd.approval_id)
    if record is None:
        raise NotFound(f"no approval {cmd.approval_id!r}", "approval_id")
    if record.decision is not None:
        raise FailedPrecondition(f"approval {cmd.approval_id!r} is decided already",
                                 "approval_id")
    request = record.request
    if not has_role(cmd.role, APPROVER_ROLES[request.action]):
        raise PermissionDenied(
            f"a {request.action} needs one of the roles "
            f"{', '.join(sorted(APPROVER_ROLES[request.action]))}; {cmd.role!r} cannot",
            "role")
    if not cmd.actor or cmd.actor == request.requested_by:
        raise FailedPrecondition("nobody approves their own request (and the approver "
                                 "must be named)", "actor")
    if any(d.decided_by == cmd.actor for d in record.approvals):
        raise FailedPrecondition(f"{cmd.actor!r} approved this already; it needs "
                                 f"{request.required} different approvers", "actor")
    p.add(EventKind.APPROVAL_DECIDED, reference=cmd.approval_id, payload=ApprovalDecision(
        cmd.approval_id, cmd.approve, cmd.actor, cmd.role, cmd.note[:500]))
    if not cmd.approve:
        if request.action == "write_off":
            release_holds(p, cmd.approval_id, holds_of(request))
        return ReturnProgress(request.reference)
    if len(record.approvals) + 1 < request.required:
        return ReturnProgress(request.reference)  # waits for the next approver
    if request.action == "policy_change":
        set_return_policy(p, dataclasses.replace(request.command, approved=True))
        return ReturnProgress(request.reference)
    if request.action in ("routing_change", "emergency_change"):
        approved(p, request, cmd.actor)
        return ReturnProgress(request.reference)
    if request.action == "rules_change":
        approved_rules(p, request)
        return ReturnProgress(request.reference)
    if request.action == "write_off":
        # Planned again now: stock may have moved since it was asked for.
        adjust(p, dataclasses.replace(request.command, approved=True), holds_of(request))
        return ReturnProgress(request.reference)
    p.add(EventKind.REFUND_ISSUED, reference=request.reference,
          payload=Refund(request.reference, request.gross_micros, request.fee_micros,
                         request.amount_micros, refund_lines_of(request)))
    return ReturnProgress(request.reference, request.amount_micros)


def set_return_policy(p: Plan, cmd: c.SetReturnPolicy) -> str:
    """Returns the approval id: a policy change applies once two approvers release it."""
    policy = cmd.policy
    days = [policy.window_days, policy.seasonal_window_days, policy.abuse_window_days,
            *(d for _, d in policy.channel_window_days),
            *(d for _, d in policy.category_window_days)]
    if any(not 0 <= d <= 3650 for d in days):
        raise InvalidArgument("return windows must be between 0 and 3650 days", "policy")
    fees = [policy.restocking_fee_bp, *(bp for _, bp in policy.category_restocking_fee_bp)]
    if any(not 0 <= bp <= 10_000 for bp in fees):
        raise InvalidArgument("restocking fees are basis points between 0 and 10000",
                              "policy")
    money = [policy.high_value_micros, policy.refund_approval_micros,
             policy.liquidate_above_micros]
    if any(not 0 <= m <= 10**15 for m in money) or not (
            0.0 <= policy.abuse_review_rate <= 100.0) or policy.trusted_min_orders < 0:
        raise InvalidArgument("policy thresholds out of range", "policy")
    if not cmd.approved:
        approval_id = f"AP-{p.ledger.last_seq + 1 + len(p.events)}"
        p.add(EventKind.APPROVAL_REQUESTED, reference=approval_id, payload=ApprovalRequest(
            approval_id, "policy_change", "return policy", 0, cmd.actor,
            "change the return and refund policy", command=cmd, required=2))
        return approval_id
    p.add(EventKind.RETURN_POLICY_SET, payload=policy)
    return ""


HANDLERS: dict[type, Callable[[Plan, Any], Any]] = {
    c.SetReturnPolicy: set_return_policy,
    c.CreateReturn: create_return,
    c.ReceiveReturn: receive_return,
    c.InspectReturn: inspect_return,
    c.DecideApproval: decide_approval,
}
