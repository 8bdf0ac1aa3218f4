"""Approvals: actions that wait for a person with the right role, never the requester."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.model import restore_frozen, set_fields

#: Which roles may approve which kind of action.
APPROVER_ROLES = {
    "refund": frozenset({"finance", "admin"}),
    "write_off": frozenset({"operations", "finance", "admin"}),
    # Changing the return and refund policy: two different approvers.
    "policy_change": frozenset({"finance", "admin"}),
    # Routing changes a rule proposes, and emergency policy changes.
    "routing_change": frozenset({"operations", "admin"}),
    "emergency_change": frozenset({"operations", "admin"}),
    # A rule set letting rules act (routing penalties, fallback routing, sales holds)
    # without the approval they needed: a second person agrees.
    "rules_change": frozenset({"operations", "admin"}),
}


def has_role(roles: str, allowed: frozenset[str]) -> bool:
    """Whether any of the caller's roles (comma-separated) is allowed."""
    return any(role in allowed for role in roles.split(",") if role)


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """Payload of APPROVAL_REQUESTED."""

    approval_id: str
    action: str  # "refund"
    reference: str  # the RMA
    amount_micros: int  # what the customer gets (net)
    requested_by: str
    detail: str
    gross_micros: int = 0  # refunds: sales returned
    fee_micros: int = 0  # refunds: restocking fee kept
    command: Any = None  # the command to plan again once approved (write-offs, policies)
    required: int = 1  # approvals by different people needed
    # Write-offs: (sku, node, bucket, units) moved from `bucket` to QUARANTINED while the
    # request waits (units reported damaged or lost are not sold meanwhile). A request
    # logged before these were held has none (read with `holds_of`).
    holds: tuple[tuple[int, int, int, int], ...] = ()
    # Refunds: (line id, units) of the return the refund pays for. A request logged before
    # these were kept has none (read with `refund_lines_of`).
    refund_lines: tuple[tuple[str, int], ...] = ()

    def __setstate__(self, state: Any) -> None:
        restore_frozen(self, state)


def holds_of(request: ApprovalRequest) -> tuple[tuple[int, int, int, int], ...]:
    return getattr(request, "holds", ())  # (unset in one unpickled from an older log)


def refund_lines_of(request: ApprovalRequest) -> tuple[tuple[str, int], ...]:
    return getattr(request, "refund_lines", ())  # (unset in one unpickled from an older log)


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """Payload of APPROVAL_DECIDED."""

    approval_id: str
    approved: bool
    decided_by: str
    role: str
    note: str


@dataclass(slots=True)
class ApprovalRecord:
    request: ApprovalRequest
    created_ms: int
    decision: ApprovalDecision | None = None  # the final one
    approvals: list[ApprovalDecision] = field(default_factory=list)  # so far

    def record(self, decision: ApprovalDecision) -> None:
        if decision.approved:
            self.approvals.append(decision)
            if len(self.approvals) >= self.request.required:
                self.decision = decision
        else:
            self.decision = decision


@dataclass(slots=True)
class ApprovalBook:
    by_id: dict[str, ApprovalRecord] = field(default_factory=dict)
    # Those not decided yet, each id with its record's place among all (0 for the first
    # ever asked for), in the order asked: the dashboard and ListApprovals's pages read
    # them without walking every approval ever asked for.
    pending_places: dict[str, int] = field(default_factory=dict)

    def __setstate__(self, state: Any) -> None:
        set_fields(self, state)
        if not hasattr(self, "pending_places"):  # a snapshot written before they were kept
            self.pending_places = {i: place for place, (i, r) in enumerate(self.by_id.items())
                                   if r.decision is None}

    def ask(self, record: ApprovalRecord) -> None:
        approval_id = record.request.approval_id
        self.pending_places[approval_id] = (list(self.by_id).index(approval_id)
                                            if approval_id in self.by_id else len(self.by_id))
        self.by_id[approval_id] = record

    def record(self, decision: ApprovalDecision) -> ApprovalRecord:
        """One person's decision; the approval is decided once it has all it needs."""
        record = self.by_id[decision.approval_id]
        record.record(decision)
        if record.decision is not None:
            self.pending_places.pop(decision.approval_id, None)
        return record

    def pending(self) -> list[ApprovalRecord]:
        return [self.by_id[approval_id] for approval_id in self.pending_places]
