"""Adjustments: gains and losses with a reason code. Write-offs worth more than the
approval threshold wait for an approver (operations, finance or admin) other than the
requester; the adjustment is planned again when approved."""

from __future__ import annotations

from core import commands as c
from core.approvals import ApprovalRequest
from core.errors import InvalidArgument
from core.model import AdjustReason, Bucket, EventKind
from core.plan import Plan
from core.validation import check_bucket, check_lines, check_quantity

#: Buckets an operator may adjust or move between directly. The others are owned by
#: records (reservations, orders, inbound) and change only through their operations.
FREE_BUCKETS = frozenset({Bucket.AVAILABLE, Bucket.QUARANTINED, Bucket.RETURNED})
_REASON_SIGN = {AdjustReason.DAMAGE: -1, AdjustReason.SHRINKAGE: -1, AdjustReason.FOUND: 1}


#: Buckets whose units a write-off waiting for approval takes out of sale meanwhile.
_HELD_FROM = frozenset({Bucket.AVAILABLE, Bucket.RETURNED})


def adjust(p: Plan, cmd: c.AdjustStock,
           holds: tuple[tuple[int, int, int, int], ...] = ()) -> str:
    """Plan the adjustment, or an approval request for it; returns the approval id or "".

    A write-off that waits for approval moves its units from AVAILABLE or RETURNED to
    QUARANTINED at once (`ApprovalRequest.holds`), so that they are not sold meanwhile
    nor counted as on the shelf; approved, they are written off from there (`holds`)."""
    check_lines(cmd.lines)
    cat = p.ledger.catalog
    books = p.ledger.books
    write_off = 0
    planned = []
    for i, line in enumerate(cmd.lines):
        sku = cat.sku(line.sku_id, f"lines[{i}].sku_id")
        node = cat.node(line.node_id, f"lines[{i}].node_id")
        if line.reason not in tuple(AdjustReason):
            raise InvalidArgument("reason is required", f"lines[{i}].reason")
        if line.delta == 0:
            raise InvalidArgument("delta must not be zero", f"lines[{i}].delta")
        check_quantity(abs(line.delta), f"lines[{i}].delta")
        sign = _REASON_SIGN.get(line.reason)
        if sign is not None and (line.delta > 0) != (sign > 0):
            raise InvalidArgument(
                f"a {line.reason.name} adjustment must be {'positive' if sign > 0 else 'negative'}",
                f"lines[{i}].delta")
        bucket = check_bucket(line.bucket, FREE_BUCKETS, f"lines[{i}].bucket")
        if line.delta < 0:
            unit = books.average_cost(sku) or int(cat.unit_cost_micros[sku])
            write_off += -line.delta * unit
        planned.append((sku, node, bucket, line))
    threshold = p.ledger.settings.write_off_approval_micros
    if not cmd.approved and write_off > threshold:
        approval_id = f"AP-{p.ledger.last_seq + 1 + len(p.events)}"
        held = tuple((sku, node, int(bucket), -line.delta) for sku, node, bucket, line
                     in planned if line.delta < 0 and bucket in _HELD_FROM)
        p.add(EventKind.APPROVAL_REQUESTED, reference=approval_id, payload=ApprovalRequest(
            approval_id, "write_off", cmd.reference, write_off, cmd.actor,
            f"write-off of {write_off} micros (above {threshold})", command=cmd,
            holds=held))
        for sku, node, bucket_, qty in held:
            p.add(EventKind.MOVED, floor=_floor(p, sku, node, Bucket(bucket_), 0), sku=sku,
                  node=node, from_bucket=Bucket(bucket_), to_bucket=Bucket.QUARANTINED,
                  quantity=qty, reference=approval_id)
        return approval_id
    waiting: dict[tuple[int, int, int], int] = {}  # what this write-off holds, left to take
    for sku, node, bucket_, qty in holds:
        waiting[(sku, node, bucket_)] = waiting.get((sku, node, bucket_), 0) + qty
    for sku, node, asked, line in planned:
        into = line.delta > 0
        key = (sku, node, int(asked))
        # This write-off's own held units at the SKU and node are free to go, whichever of
        # its lines takes them.
        own = sum(q for s, n, _, q in holds if (s, n) == (sku, node))
        bucket = asked
        if not into and waiting.get(key, 0) >= -line.delta:
            waiting[key] -= -line.delta
            bucket = Bucket.QUARANTINED  # where it waited
        floor = _floor(p, sku, node, bucket, own) if not into else 0
        p.add(EventKind.ADJUSTED, floor=floor, sku=sku, node=node,
              from_bucket=Bucket.EXTERNAL if into else bucket,
              to_bucket=bucket if into else Bucket.EXTERNAL,
              quantity=abs(line.delta), reference=cmd.reference, reason=int(line.reason))
    return ""


def _floor(p: Plan, sku: int, node: int, bucket: Bucket, own: int) -> int:
    """Units of `bucket` that a move out of it by hand must leave: in QUARANTINED those held
    for count variances or other write-offs waiting for approval (but `own`, this one's),
    in RETURNED those received for returns not yet inspected."""
    if bucket == Bucket.QUARANTINED:
        return p.ledger.held_units(sku, node) - own
    if bucket == Bucket.RETURNED:
        return p.ledger.awaiting_inspection(sku, node)
    return 0


def release_holds(p: Plan, approval_id: str, holds: tuple[tuple[int, int, int, int], ...]
                  ) -> None:
    """A write-off refused: the units it held go back where they were."""
    for sku, node, bucket, qty in holds:
        own = sum(q for s, n, _, q in holds if (s, n) == (sku, node))
        p.add(EventKind.MOVED, floor=p.ledger.held_units(sku, node) - own, sku=sku,
              node=node, from_bucket=Bucket.QUARANTINED, to_bucket=Bucket(bucket),
              quantity=qty, reference=approval_id)
