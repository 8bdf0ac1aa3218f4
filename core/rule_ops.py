"""Rule evaluation and the operations command handlers (rules, alerts, tasks, actions,
emergency changes). Like every handler they only plan events.

`evaluate` runs after a command's events are applied (see `operations.execute`): it
reads the KPIs those events updated and plans the alerts, tasks, actions and approval
requests the rules call for. It reads nothing but the ledger and the events, so
running the same commands again gives the same alerts; a replay of the log applies the
alert events themselves.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

from core import commands as c
from core.alerts import (
    ACTING_KINDS,
    APPROVAL_ACTION,
    EMERGENCY_TYPES,
    RESTRICTED_SAFETY,
    TASK_OWNER,
    TASK_SUPERVISORS,
    WINDOW_NAMES,
    ActionInfo,
    ActionSpec,
    ActionType,
    ActionUndo,
    AlertAck,
    AlertInfo,
    Rule,
    RuleKind,
    RuleSet,
    TaskDone,
    TaskInfo,
    TaskType,
)
from core.approvals import ApprovalRequest, has_role
from core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from core.kpis import WINDOWS
from core.model import Event, EventKind
from core.network import MAX_UNIT_MICROS
from core.plan import Plan
from core.validation import MAX_ID_LENGTH, check_identifier, existing

TRIGGERS = frozenset({EventKind.RETURN_AUTHORIZED, EventKind.PACKAGE_SHIPPED,
                      EventKind.COUNT_ADJUSTED, EventKind.COUNT_VARIANCE_HELD,
                      EventKind.COUNT_CONFIRMED, EventKind.PICK_SHORTAGE})
MAX_RULES = 100
MAX_NOTE = 1000
MAX_PENALTY_MICROS = MAX_UNIT_MICROS  # a routing penalty is a cost per unit


# ---- evaluation ---------------------------------------------------------------------------
def evaluate(p: Plan, events: Iterable[Event]) -> None:
    """Plan what the rules call for after `events` (already applied)."""
    rules = p.ledger.ops.rules.rules
    by_kind: dict[RuleKind, list[Rule]] = {}
    for rule in rules:
        if rule.enabled:
            by_kind.setdefault(rule.kind, []).append(rule)
    if not by_kind:
        return
    done: set[tuple[str, str]] = set()  # (rule, subject) evaluated for this command
    cat = p.ledger.catalog
    for e in events:
        if e.kind not in TRIGGERS:
            continue
        if e.kind == EventKind.RETURN_AUTHORIZED:
            for sku in sorted({line.sku for line in e.payload.lines}):
                for rule in by_kind.get(RuleKind.RETURN_RATE, ()):
                    _once(done, rule, cat.sku_ids[sku], lambda r, s: _return_rate(p, r, s))
        elif e.kind == EventKind.PACKAGE_SHIPPED:
            node = p.ledger.orders.packages[e.payload.package_id].plan.node
            for rule in by_kind.get(RuleKind.LATE_SHIPMENTS, ()):
                _once(done, rule, cat.nodes[node].node_id, lambda r, s: _late(p, r, s))
        elif e.kind == EventKind.PICK_SHORTAGE:
            for rule in by_kind.get(RuleKind.NODE_DISRUPTION, ()):
                _once(done, rule, cat.nodes[e.node].node_id, lambda r, s: _disruption(p, r, s))
        else:
            for rule in by_kind.get(RuleKind.COUNT_VARIANCE, ()):
                _count_variance(p, rule, e)


def _once(done: set[tuple[str, str]], rule: Rule, subject: str,
          check: Callable[[Rule, str], None]) -> None:
    if (rule.rule_id, subject) not in done:
        done.add((rule.rule_id, subject))
        check(rule, subject)


def _quiet(p: Plan, rule: Rule, subject: str) -> bool:
    """An alert for this rule and subject is open, or was acknowledged within the rule's
    window: do not raise another."""
    ops = p.ledger.ops
    key = (rule.rule_id, subject)
    if key in ops.open_alert:
        return True
    acked = ops.acknowledged_ms.get(key)
    return acked is not None and p.now_ms - acked < WINDOWS[rule.window]


def _raise_alert(p: Plan, rule: Rule, subject: str, value: float, threshold: float,
                 detail: str) -> str:
    alert_id = f"AL-{p.ledger.last_seq + 1 + len(p.events)}"
    p.add(EventKind.ALERT_RAISED, reference=alert_id, payload=AlertInfo(
        alert_id, rule.rule_id, p.ledger.ops.rules.version, rule.kind, subject, value,
        threshold, rule.window, detail))
    return alert_id


def _open_task(p: Plan, task_type: TaskType, alert_id: str, subject: str, detail: str,
               action_id: str = "") -> str:
    task_id = f"TK-{p.ledger.last_seq + 1 + len(p.events)}"
    p.add(EventKind.TASK_OPENED, reference=task_id,
          payload=TaskInfo(task_id, task_type, alert_id, subject, detail, action_id))
    return task_id


def _act(p: Plan, rule: Rule, spec: ActionSpec) -> str:
    """Apply the action now, or ask for its approval when the rule says so. Returns the
    action id (empty while it waits for approval)."""
    if rule.requires_approval:
        approval_id = f"AP-{p.ledger.last_seq + 1 + len(p.events)}"
        p.add(EventKind.APPROVAL_REQUESTED, reference=approval_id, payload=ApprovalRequest(
            approval_id, APPROVAL_ACTION[spec.action_type], spec.alert_id, spec.amount,
            spec.requested_by, f"{spec.action_type.name.lower()} {spec.subject}: {spec.reason}",
            command=spec))
        return ""
    if _in_force(p, spec):
        # (Once, not twice: a routing penalty applied again on each firing doubled the
        # node's penalty, and a second hold's reversal put back the first's value.)
        return ""
    return apply_action(p, spec, spec.requested_by).action_id


def _in_force(p: Plan, spec: ActionSpec) -> bool:
    """Whether an action of the kind is in force on the subject already, or applied by
    this very command (two rules of a kind firing together)."""
    if p.ledger.ops.active_action(spec.action_type, spec.subject) is not None:
        return True
    return any(e.kind == EventKind.ACTION_APPLIED and isinstance(e.payload, ActionInfo)
               and e.payload.spec.action_type == spec.action_type
               and e.payload.spec.subject == spec.subject for e in p.events)


def _return_rate(p: Plan, rule: Rule, sku_id: str) -> None:
    ledger = p.ledger
    kpis, now, window = ledger.kpis, p.now_ms, rule.window
    sku = ledger.catalog.sku_index[sku_id]
    category = ledger.catalog.categories.values[ledger.catalog.category[sku]] or "(none)"
    returned = kpis.total("units_returned", "sku", sku_id, window, now)
    shipped = kpis.total("units_shipped", "sku", sku_id, window, now)
    if returned < rule.min_count or _quiet(p, rule, sku_id):
        return
    rate = returned / max(shipped, returned)
    others_returned = kpis.total("units_returned", "category", category, window, now) - returned
    others_shipped = kpis.total("units_shipped", "category", category, window, now) - shipped
    baseline = max(others_returned / others_shipped if others_shipped > 0 else 0.0,
                   rule.baseline_floor)
    limit = baseline * rule.threshold
    if rate <= limit:
        return
    detail = (f"return rate {rate:.1%} ({returned:g} of {shipped:g} units, {window}) above "
              f"{rule.threshold:g} x the {category} baseline {baseline:.1%}")
    alert_id = _raise_alert(p, rule, sku_id, rate, limit, detail)
    _open_task(p, TaskType.QUALITY_REVIEW, alert_id, sku_id,
               f"review the quality of {sku_id}: {detail}")
    _open_task(p, TaskType.SUPPLIER_ESCALATION, alert_id, sku_id,
               f"escalate {sku_id} to its supplier: {detail}")


def _node_rule(p: Plan, rule: Rule, node_id: str, counter: str, what: str, action: ActionType,
               consequence: str = "") -> None:
    """A node's count of `counter` over the rule's window at or above the threshold:
    an alert, and `action` on the node (through the approvals where it changes policy)."""
    count = p.ledger.kpis.total(counter, "node", node_id, rule.window, p.now_ms)
    if count < rule.threshold or _quiet(p, rule, node_id):
        return
    detail = f"{count:g} {what} {node_id} ({rule.window}){consequence}"
    alert_id = _raise_alert(p, rule, node_id, count, rule.threshold, detail)
    _act(p, rule, ActionSpec(action, node_id=node_id, amount=rule.penalty_micros,
                             reason=detail, alert_id=alert_id,
                             requested_by=f"rule:{rule.rule_id}"))


def _late(p: Plan, rule: Rule, node_id: str) -> None:
    _node_rule(p, rule, node_id, "packages_late", "late packages from",
               ActionType.ROUTING_PENALTY)


def _disruption(p: Plan, rule: Rule, node_id: str) -> None:
    _node_rule(p, rule, node_id, "short_picks", "short picks at", ActionType.FALLBACK_ROUTING,
               ": source elsewhere")


def _count_variance(p: Plan, rule: Rule, e: Event) -> None:
    variance = abs(e.counted - e.expected)
    cat = p.ledger.catalog
    sku_id, node_id = cat.sku_ids[e.sku], cat.nodes[e.node].node_id
    subject = f"{sku_id}@{node_id}"
    if variance < rule.threshold or _quiet(p, rule, subject):
        return
    detail = (f"count of {sku_id} at {node_id}: {e.counted} counted, {e.expected} expected "
              f"({variance} units off)")
    alert_id = _raise_alert(p, rule, subject, variance, rule.threshold, detail)
    action_id = ""
    if p.ledger.ops.active_action(ActionType.RESTRICT_SKU, subject) is None:
        action_id = _act(p, rule, ActionSpec(
            ActionType.RESTRICT_SKU, node_id=node_id, sku_id=sku_id, reason=detail,
            alert_id=alert_id, requested_by=f"rule:{rule.rule_id}"))
    _open_task(p, TaskType.CYCLE_COUNT, alert_id, subject,
               f"recount {sku_id} at {node_id}; completing this lifts the sales hold",
               action_id)


# ---- actions -------------------------------------------------------------------------------
def apply_action(p: Plan, spec: ActionSpec, actor: str, approval_id: str = "") -> ActionInfo:
    """ACTION_APPLIED and the policy events that carry it out."""
    ledger = p.ledger
    cat = ledger.catalog
    action_id = f"AC-{ledger.last_seq + 1 + len(p.events)}"
    kind = spec.action_type
    node = cat.node(spec.node_id, "node_id") if spec.node_id else -1
    sku = cat.sku(spec.sku_id, "sku_id") if spec.sku_id else -1
    channel = cat.channel(spec.channel_id, "channel_id") if spec.channel_id else -1
    previous = 0
    if kind == ActionType.RESTRICT_SKU:
        shard, local = ledger.locate(sku)
        previous = (int(shard.safety_override[local, node]) if shard.safety_override.shape[0]
                    else -1)
    info = ActionInfo(action_id, spec, previous, actor, approval_id)
    p.add(EventKind.ACTION_APPLIED, reference=action_id, node=node, sku=sku, channel=channel,
          payload=info)
    if kind == ActionType.RESTRICT_SKU:
        p.add(EventKind.SAFETY_STOCK_SET, sku=sku, node=node, quantity=RESTRICTED_SAFETY,
              reference=action_id)
    elif kind == ActionType.DISABLE_NODE:
        p.add(EventKind.NODE_UPSERTED, node=node, reference=action_id,
              payload=dataclasses.replace(cat.nodes[node], enabled=False))
    return info


def _reverse(p: Plan, action_id: str, actor: str, note: str) -> None:
    ledger = p.ledger
    record = ledger.ops.actions[action_id]
    spec = record.info.spec
    cat = ledger.catalog
    node = cat.node_index.get(spec.node_id, -1) if spec.node_id else -1
    channel = cat.channel_index.get(spec.channel_id, -1) if spec.channel_id else -1
    sku = cat.sku_index.get(spec.sku_id, -1) if spec.sku_id else -1
    p.add(EventKind.ACTION_REVERSED, reference=action_id, node=node, sku=sku,
          channel=channel, payload=ActionUndo(action_id, actor, note))
    if spec.action_type == ActionType.RESTRICT_SKU:
        p.add(EventKind.SAFETY_STOCK_SET, sku=sku, node=node, quantity=record.info.previous,
              reference=action_id)
    elif spec.action_type == ActionType.DISABLE_NODE:
        p.add(EventKind.NODE_UPSERTED, node=node, reference=action_id,
              payload=dataclasses.replace(cat.nodes[node], enabled=True))


# ---- command handlers ----------------------------------------------------------------------
def _note(note: str) -> str:
    if len(note) > MAX_NOTE:
        raise InvalidArgument(f"note is longer than {MAX_NOTE} characters", "note")
    return note


def _check_rule(rule: Rule, i: int) -> None:
    name = f"rules[{i}]"
    check_identifier(rule.rule_id, f"{name}.rule_id")
    try:
        RuleKind(rule.kind)
    except ValueError:
        raise InvalidArgument("kind is required", f"{name}.kind") from None
    if rule.window not in WINDOW_NAMES:
        raise InvalidArgument(f"window must be one of {', '.join(WINDOW_NAMES)}",
                              f"{name}.window")
    for label, value in (("threshold", rule.threshold), ("baseline_floor", rule.baseline_floor)):
        if not math.isfinite(value) or not 0 <= value <= 1e9:
            raise InvalidArgument(f"{label} must be a finite number between 0 and 1e9",
                                  f"{name}.{label}")
    if rule.threshold <= 0:
        raise InvalidArgument("threshold must be above 0", f"{name}.threshold")
    if not 0 <= rule.min_count <= 10**9:
        raise InvalidArgument("min_count must be between 0 and 1e9", f"{name}.min_count")
    if not 0 <= rule.penalty_micros <= MAX_PENALTY_MICROS:
        raise InvalidArgument(f"penalty_micros must be between 0 and {MAX_PENALTY_MICROS}",
                              f"{name}.penalty_micros")
    if rule.kind in (RuleKind.LATE_SHIPMENTS, RuleKind.NODE_DISRUPTION) and \
            not rule.penalty_micros:
        raise InvalidArgument("a routing rule needs penalty_micros", f"{name}.penalty_micros")


def set_rules(p: Plan, cmd: c.SetRules) -> RulesOutcome:
    current = p.ledger.ops.rules
    if cmd.expected_version != current.version:
        raise FailedPrecondition(
            f"the rule set is at version {current.version}, not {cmd.expected_version}; "
            "read it again and retry", "expected_version")
    if len(cmd.rules) > MAX_RULES:
        raise InvalidArgument(f"at most {MAX_RULES} rules", "rules")
    seen: set[str] = set()
    for i, rule in enumerate(cmd.rules):
        _check_rule(rule, i)
        if rule.rule_id in seen:
            raise InvalidArgument(f"rule {rule.rule_id!r} appears twice", f"rules[{i}].rule_id")
        seen.add(rule.rule_id)
    rules = RuleSet(current.version + 1, tuple(
        dataclasses.replace(r, kind=RuleKind(r.kind)) for r in cmd.rules), cmd.actor)
    lifted = lifted_approvals(current, rules)
    if lifted and not cmd.approved:
        # One person cannot take away the approval a routing change needs: the set waits,
        # and applies (if still against the version in force) once another approves it.
        approval_id = f"AP-{p.ledger.last_seq + 1 + len(p.events)}"
        p.add(EventKind.APPROVAL_REQUESTED, reference=approval_id, payload=ApprovalRequest(
            approval_id, "rules_change", f"rule set version {current.version}", 0,
            cmd.actor, "rules acting without approval: " + ", ".join(lifted), command=cmd))
        return RulesOutcome(current, approval_id)
    p.add(EventKind.RULES_SET, payload=rules)
    return RulesOutcome(rules, "")


@dataclasses.dataclass(frozen=True, slots=True)
class RulesOutcome:
    """What SetRules did: the set in force after it, and the approval it waits for (a set
    that lifts an approval requirement; the set in force is then the one before)."""

    rules: RuleSet
    approval_id: str


def lifted_approvals(current: RuleSet, proposed: RuleSet) -> list[str]:
    """The rules of `proposed` that would act on their own (enabled, of a kind that acts,
    not waiting for approval) where the rule of that id in force did not: an approval
    switched off, a rule that acts added, or one enabled or changed to a kind that acts;
    or more than it did: a higher penalty, a lower threshold, a longer window (it fires on
    less, or weighs more). Making one that acts alone act less, or later, is not."""
    before = {r.rule_id: r for r in current.rules}
    lifted = []
    for rule in proposed.rules:
        if not _acts_alone(rule):
            continue
        was = before.get(rule.rule_id)
        if (was is None or not _acts_alone(was) or was.kind != rule.kind
                or rule.penalty_micros > was.penalty_micros or rule.threshold < was.threshold
                or WINDOW_NAMES.index(rule.window) > WINDOW_NAMES.index(was.window)):
            lifted.append(rule.rule_id)
    return lifted


def _acts_alone(rule: Rule) -> bool:
    return rule.enabled and rule.kind in ACTING_KINDS and not rule.requires_approval


def approved_rules(p: Plan, request: ApprovalRequest) -> None:
    """An approved rule set: applied if the set in force is still the one it was asked
    against (else it would undo what was set since)."""
    cmd: c.SetRules = request.command
    version = p.ledger.ops.rules.version
    if cmd.expected_version != version:
        raise FailedPrecondition(
            f"the rule set is at version {version}, not {cmd.expected_version} as when "
            f"{request.approval_id} was asked for: reject it and ask again", "approval_id")
    set_rules(p, dataclasses.replace(cmd, approved=True))


def acknowledge_alert(p: Plan, cmd: c.AcknowledgeAlert) -> str:
    record = existing(p.ledger.ops.alerts, cmd.alert_id, "alert_id", "alert")
    if record.ack is not None:
        raise FailedPrecondition(f"alert {cmd.alert_id!r} was acknowledged already by "
                                 f"{record.ack.actor or 'someone'}", "alert_id")
    p.add(EventKind.ALERT_ACKNOWLEDGED, reference=cmd.alert_id,
          payload=AlertAck(cmd.alert_id, cmd.actor, _note(cmd.note)))
    return cmd.alert_id


def complete_task(p: Plan, cmd: c.CompleteTask) -> str:
    record = existing(p.ledger.ops.tasks, cmd.task_id, "task_id", "task")
    if record.done is not None:
        raise FailedPrecondition(f"task {cmd.task_id!r} is completed already", "task_id")
    allowed = TASK_SUPERVISORS | {TASK_OWNER[record.info.task_type]}
    if not has_role(cmd.role, allowed):
        raise PermissionDenied(f"a {record.info.task_type.name.lower()} task is completed "
                                 f"by one of {', '.join(sorted(allowed))}; {cmd.role!r} "
                                 "cannot", "role")
    p.add(EventKind.TASK_COMPLETED, reference=cmd.task_id,
          payload=TaskDone(cmd.task_id, cmd.actor, _note(cmd.note)))
    ops = p.ledger.ops
    action = ops.actions.get(record.info.action_id)
    if action is None and record.info.task_type == TaskType.CYCLE_COUNT:
        # The sales hold went through approval after the task opened: the one its alert
        # asked for, if it came into force.
        found = ops.active_action(ActionType.RESTRICT_SKU, record.info.subject)
        if found is not None and found.info.spec.alert_id == record.info.alert_id:
            action = found
    if action is not None and action.active:
        _reverse(p, action.info.action_id, cmd.actor, f"task {cmd.task_id} completed")
    alert = ops.alerts.get(record.info.alert_id)
    if alert is not None and alert.ack is None and all(
            ops.tasks[task_id].done is not None or task_id == cmd.task_id
            for task_id in alert.task_ids):
        # Its follow-up is done: the alert closes with it. Left open, it kept its rule
        # quiet for the subject for good (a later count far off raised nothing).
        p.add(EventKind.ALERT_ACKNOWLEDGED, reference=alert.info.alert_id,
              payload=AlertAck(alert.info.alert_id, cmd.actor,
                               f"its tasks are done (the last: {cmd.task_id})"))
    return cmd.task_id


def _recounted(p: Plan, spec: ActionSpec) -> bool:
    """Whether `spec` is a sales hold that a count alert asked for and whose recount task
    is done: the recount came first, and there is nothing left to hold."""
    ops = p.ledger.ops
    alert = ops.alerts.get(spec.alert_id) if spec.alert_id else None
    if spec.action_type != ActionType.RESTRICT_SKU or alert is None:
        return False
    return any(ops.tasks[task_id].info.task_type == TaskType.CYCLE_COUNT
               and ops.tasks[task_id].done is not None for task_id in alert.task_ids)


def reverse_action(p: Plan, cmd: c.ReverseAction) -> str:
    record = existing(p.ledger.ops.actions, cmd.action_id, "action_id", "action")
    if not record.active:
        raise FailedPrecondition(f"action {cmd.action_id!r} was reversed already",
                                 "action_id")
    _reverse(p, cmd.action_id, cmd.actor, _note(cmd.note))
    return cmd.action_id


def request_emergency_change(p: Plan, cmd: c.RequestEmergencyChange) -> str:
    """The approval id the change waits under."""
    spec = cmd.spec
    try:
        kind = ActionType(spec.action_type)
    except ValueError:
        raise InvalidArgument("change is required", "change") from None
    if kind not in EMERGENCY_TYPES:
        raise InvalidArgument("change must be an emergency change", "change")
    if not spec.reason or len(spec.reason) > MAX_ID_LENGTH * 4:
        raise InvalidArgument("reason is required (at most 512 characters)", "reason")
    cat = p.ledger.catalog
    ops = p.ledger.ops
    if kind == ActionType.DISABLE_NODE:
        node = cat.node(spec.node_id, "node_id")
        if not cat.nodes[node].enabled:
            raise FailedPrecondition(f"node {spec.node_id!r} is disabled already", "node_id")
        spec = ActionSpec(kind, node_id=spec.node_id, reason=spec.reason)
    elif kind == ActionType.CHANNEL_SAFETY_STOCK_ONLY:
        cat.channel(spec.channel_id, "channel_id")
        if not 1 <= spec.amount <= 2**31 - 1:
            raise InvalidArgument("reserve_units must be between 1 and 2^31-1",
                                  "reserve_units")
        if ops.active_action(kind, spec.channel_id) is not None:
            raise FailedPrecondition(f"channel {spec.channel_id!r} is safety-stock-only "
                                     "already", "channel_id")
        spec = ActionSpec(kind, channel_id=spec.channel_id, amount=spec.amount,
                          reason=spec.reason)
    else:
        if ops.restock_pauses:
            raise FailedPrecondition("returns restocking is paused already", "change")
        spec = ActionSpec(kind, reason=spec.reason)
    spec = dataclasses.replace(spec, requested_by=cmd.actor)
    approval_id = f"AP-{p.ledger.last_seq + 1 + len(p.events)}"
    p.add(EventKind.APPROVAL_REQUESTED, reference=approval_id, payload=ApprovalRequest(
        approval_id, APPROVAL_ACTION[kind], spec.subject, spec.amount, cmd.actor,
        f"emergency: {kind.name.lower()} {spec.subject}: {spec.reason}", command=spec))
    return approval_id


def approved(p: Plan, request: ApprovalRequest, approver: str) -> None:
    """An approved routing or emergency change: applied now, as it is now."""
    spec: ActionSpec = request.command
    if spec.action_type == ActionType.DISABLE_NODE and not p.ledger.catalog.nodes[
            p.ledger.catalog.node(spec.node_id)].enabled:
        return  # disabled meanwhile (by an admin): nothing left to do
    if p.ledger.ops.active_action(spec.action_type, spec.subject) is not None:
        # In force meanwhile (another request approved first): once, not twice (a second
        # would record the first's value as the one to put back).
        return
    if _recounted(p, spec):
        return
    apply_action(p, spec, approver, request.approval_id)


HANDLERS: dict[type, Callable[[Plan, Any], Any]] = {
    c.SetRules: set_rules,
    c.AcknowledgeAlert: acknowledge_alert,
    c.CompleteTask: complete_task,
    c.ReverseAction: reverse_action,
    c.RequestEmergencyChange: request_emergency_change,
}

