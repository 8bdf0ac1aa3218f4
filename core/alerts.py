"""Rules -> alerts -> tasks and actions: the rule set, the event payloads, and the book
the ledger keeps of them.

A versioned rule set says what to watch (a SKU's return rate against its category,
late shipments from a node, a cycle-count variance, short picks at a node) and what to
do. When a rule fires it raises an alert, opens tasks for people and applies actions;
every one of these is a ledger event, so a replay rebuilds them exactly. Actions that
change routing go through an approval first (the rule says so); every action can be
reversed, and reversing it is an event too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from core.model import Event, EventKind, set_fields

if TYPE_CHECKING:
    from core.ledger import Ledger


class RuleKind(IntEnum):
    RETURN_RATE = 1  # a SKU's return rate above its category's baseline
    LATE_SHIPMENTS = 2  # late packages from a node
    COUNT_VARIANCE = 3  # a cycle-count line off by many units
    NODE_DISRUPTION = 4  # short picks at a node (stock that is not there)


class TaskType(IntEnum):
    QUALITY_REVIEW = 1
    SUPPLIER_ESCALATION = 2
    CYCLE_COUNT = 3


class ActionType(IntEnum):
    ROUTING_PENALTY = 1  # lower a node's routing preference (cost per unit)
    FALLBACK_ROUTING = 2  # source elsewhere: the node only when nothing else can ship
    RESTRICT_SKU = 3  # hold a SKU's stock at a node back from every channel
    DISABLE_NODE = 4  # emergency
    CHANNEL_SAFETY_STOCK_ONLY = 5  # emergency: a channel sells only above a reserve
    PAUSE_RETURNS_RESTOCK = 6  # emergency: restock-grade returns go to quarantine


class AlertStatus(IntEnum):
    OPEN = 1
    ACKNOWLEDGED = 2


TASK_OWNER = {
    TaskType.QUALITY_REVIEW: "operations",
    TaskType.SUPPLIER_ESCALATION: "operations",
    TaskType.CYCLE_COUNT: "inventory_control",
}
#: Roles that may complete any task, besides its owner role.
TASK_SUPERVISORS = frozenset({"operations", "admin"})
#: Rule kinds whose firing acts (a routing penalty, fallback routing, a sales hold), on its
#: own unless the rule requires approval; the others raise alerts and open tasks only.
ACTING_KINDS = frozenset({RuleKind.LATE_SHIPMENTS, RuleKind.NODE_DISRUPTION,
                          RuleKind.COUNT_VARIANCE})
#: Emergency changes anyone with an operations duty may request.
EMERGENCY_TYPES = frozenset({ActionType.DISABLE_NODE, ActionType.CHANNEL_SAFETY_STOCK_ONLY,
                             ActionType.PAUSE_RETURNS_RESTOCK})
#: The approval action name a policy-changing action waits under.
APPROVAL_ACTION = {
    ActionType.ROUTING_PENALTY: "routing_change",
    ActionType.FALLBACK_ROUTING: "routing_change",
    ActionType.RESTRICT_SKU: "routing_change",
    ActionType.DISABLE_NODE: "emergency_change",
    ActionType.CHANNEL_SAFETY_STOCK_ONLY: "emergency_change",
    ActionType.PAUSE_RETURNS_RESTOCK: "emergency_change",
}
WINDOW_NAMES = ("hour", "day", "week")
#: What a restriction sets the SKU-at-node safety stock to: more than any stock.
RESTRICTED_SAFETY = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule. `threshold` is, by kind: the multiple of the category baseline a SKU's
    return rate must exceed; late packages in the window; units of variance on one count
    line; short picks in the window. `min_count`: units returned before a return rate
    counts. `baseline_floor`: the least baseline return rate (a category with no other
    returns). `penalty_micros`: per unit, for routing actions."""

    rule_id: str
    kind: RuleKind
    enabled: bool = True
    window: str = "day"
    threshold: float = 0.0
    min_count: int = 0
    baseline_floor: float = 0.0
    penalty_micros: int = 0
    requires_approval: bool = False


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Payload of RULES_SET."""

    version: int
    rules: tuple[Rule, ...]
    set_by: str = ""


DEFAULT_RULES = RuleSet(1, (
    Rule("sku-return-rate", RuleKind.RETURN_RATE, window="week", threshold=2.0, min_count=5,
         baseline_floor=0.05),
    Rule("node-late-shipments", RuleKind.LATE_SHIPMENTS, window="day", threshold=3,
         penalty_micros=5_000_000, requires_approval=True),
    Rule("count-variance", RuleKind.COUNT_VARIANCE, window="day", threshold=10),
    Rule("node-disruption", RuleKind.NODE_DISRUPTION, window="hour", threshold=3,
         penalty_micros=1_000_000_000, requires_approval=True),
), "default")


# ---- payloads ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AlertInfo:
    """Payload of ALERT_RAISED."""

    alert_id: str
    rule_id: str
    rule_version: int
    kind: RuleKind
    subject: str  # the SKU, node or SKU@node it is about
    value: float
    threshold: float
    window: str
    detail: str


@dataclass(frozen=True, slots=True)
class AlertAck:
    """Payload of ALERT_ACKNOWLEDGED."""

    alert_id: str
    actor: str
    note: str


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """Payload of TASK_OPENED."""

    task_id: str
    task_type: TaskType
    alert_id: str
    subject: str
    detail: str
    action_id: str = ""  # an action the task's completion reverses


@dataclass(frozen=True, slots=True)
class TaskDone:
    """Payload of TASK_COMPLETED."""

    task_id: str
    actor: str
    note: str


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """What an action does; the command an approval plans again once approved."""

    action_type: ActionType
    node_id: str = ""
    sku_id: str = ""
    channel_id: str = ""
    amount: int = 0  # routing penalty micros per unit; a channel's reserve units
    reason: str = ""
    alert_id: str = ""
    requested_by: str = ""

    @property
    def subject(self) -> str:
        if self.sku_id:
            return f"{self.sku_id}@{self.node_id}"
        return self.node_id or self.channel_id or "network"


@dataclass(frozen=True, slots=True)
class ActionInfo:
    """Payload of ACTION_APPLIED."""

    action_id: str
    spec: ActionSpec
    previous: int  # what a reversal restores (a safety stock, -1: inherited)
    actor: str
    approval_id: str = ""


@dataclass(frozen=True, slots=True)
class ActionUndo:
    """Payload of ACTION_REVERSED."""

    action_id: str
    actor: str
    note: str


# ---- the book ---------------------------------------------------------------------------
@dataclass(slots=True)
class AlertRecord:
    info: AlertInfo
    created_ms: int
    ack: AlertAck | None = None
    ack_ms: int = 0
    task_ids: list[str] = field(default_factory=list)
    action_ids: list[str] = field(default_factory=list)
    approval_ids: list[str] = field(default_factory=list)

    @property
    def status(self) -> AlertStatus:
        return AlertStatus.ACKNOWLEDGED if self.ack else AlertStatus.OPEN


@dataclass(slots=True)
class TaskRecord:
    info: TaskInfo
    created_ms: int
    done: TaskDone | None = None
    done_ms: int = 0

    @property
    def owner_role(self) -> str:
        return TASK_OWNER[self.info.task_type]


@dataclass(slots=True)
class ActionRecord:
    info: ActionInfo
    applied_ms: int
    undo: ActionUndo | None = None
    reversed_ms: int = 0

    @property
    def active(self) -> bool:
        return self.undo is None


def _place(records: dict[str, Any], record_id: str) -> int:
    """The place among `records` the record `record_id` takes (or has: ids are not reused,
    but a record made again keeps its place)."""
    if record_id in records:
        return list(records).index(record_id)
    return len(records)


OPS_KINDS = frozenset({EventKind.RULES_SET, EventKind.ALERT_RAISED,
                       EventKind.ALERT_ACKNOWLEDGED, EventKind.TASK_OPENED,
                       EventKind.TASK_COMPLETED, EventKind.ACTION_APPLIED,
                       EventKind.ACTION_REVERSED})


@dataclass(slots=True)
class OpsBook:
    """Rules, alerts, tasks and actions, changed only by their events."""

    rules: RuleSet = DEFAULT_RULES
    alerts: dict[str, AlertRecord] = field(default_factory=dict)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    actions: dict[str, ActionRecord] = field(default_factory=dict)
    open_alert: dict[tuple[str, str], str] = field(default_factory=dict)  # unacknowledged
    acknowledged_ms: dict[tuple[str, str], int] = field(default_factory=dict)
    node_penalty: dict[int, int] = field(default_factory=dict)  # node -> micros per unit
    channel_reserve: dict[int, int] = field(default_factory=dict)  # channel -> units
    restock_pauses: int = 0
    # The alerts not acknowledged, the tasks not done and the actions in force, each id
    # with its record's place among all of its kind (0 for the first ever made), in the
    # order made: what /metrics, the dashboard, the rules and the listings' open-only
    # pages read, without walking every one ever made.
    open_alert_places: dict[str, int] = field(default_factory=dict)
    open_task_places: dict[str, int] = field(default_factory=dict)
    active_action_places: dict[str, int] = field(default_factory=dict)

    def __setstate__(self, state: object) -> None:
        set_fields(self, state)
        if not hasattr(self, "open_alert_places"):  # a snapshot written before they were kept
            self.open_alert_places = {k: place for place, (k, r) in enumerate(
                self.alerts.items()) if r.ack is None}
            self.open_task_places = {k: place for place, (k, r) in enumerate(
                self.tasks.items()) if r.done is None}
            self.active_action_places = {k: place for place, (k, r) in enumerate(
                self.actions.items()) if r.active}

    def apply(self, ledger: Ledger, e: Event) -> None:
        kind = e.kind
        if kind == EventKind.RULES_SET:
            self.rules = e.payload
        elif kind == EventKind.ALERT_RAISED:
            info: AlertInfo = e.payload
            self.open_alert_places[info.alert_id] = _place(self.alerts, info.alert_id)
            self.alerts[info.alert_id] = AlertRecord(info, e.time_ms)
            self.open_alert[(info.rule_id, info.subject)] = info.alert_id
        elif kind == EventKind.ALERT_ACKNOWLEDGED:
            ack: AlertAck = e.payload
            record = self.alerts[ack.alert_id]
            record.ack, record.ack_ms = ack, e.time_ms
            self.open_alert_places.pop(ack.alert_id, None)
            key = (record.info.rule_id, record.info.subject)
            self.open_alert.pop(key, None)
            self.acknowledged_ms[key] = e.time_ms
        elif kind == EventKind.TASK_OPENED:
            task: TaskInfo = e.payload
            self.open_task_places[task.task_id] = _place(self.tasks, task.task_id)
            self.tasks[task.task_id] = TaskRecord(task, e.time_ms)
            if task.alert_id in self.alerts:
                self.alerts[task.alert_id].task_ids.append(task.task_id)
        elif kind == EventKind.TASK_COMPLETED:
            done: TaskDone = e.payload
            record_t = self.tasks[done.task_id]
            record_t.done, record_t.done_ms = done, e.time_ms
            self.open_task_places.pop(done.task_id, None)
        elif kind == EventKind.ACTION_APPLIED:
            action: ActionInfo = e.payload
            self.active_action_places[action.action_id] = _place(self.actions,
                                                                 action.action_id)
            self.actions[action.action_id] = ActionRecord(action, e.time_ms)
            if action.spec.alert_id in self.alerts:
                self.alerts[action.spec.alert_id].action_ids.append(action.action_id)
            self._effect(e, action.spec, +1)
        elif kind == EventKind.ACTION_REVERSED:
            undo: ActionUndo = e.payload
            record_a = self.actions[undo.action_id]
            record_a.undo, record_a.reversed_ms = undo, e.time_ms
            self.active_action_places.pop(undo.action_id, None)
            self._effect(e, record_a.info.spec, -1)

    def _effect(self, e: Event, spec: ActionSpec, sign: int) -> None:
        """Effects kept here; safety stock and node switches are their own events."""
        kind = spec.action_type
        if kind in (ActionType.ROUTING_PENALTY, ActionType.FALLBACK_ROUTING):
            left = self.node_penalty.get(e.node, 0) + sign * spec.amount
            if left:
                self.node_penalty[e.node] = left
            else:
                self.node_penalty.pop(e.node, None)
        elif kind == ActionType.CHANNEL_SAFETY_STOCK_ONLY:
            left = self.channel_reserve.get(e.channel, 0) + sign * spec.amount
            if left:
                self.channel_reserve[e.channel] = left
            else:
                self.channel_reserve.pop(e.channel, None)
        elif kind == ActionType.PAUSE_RETURNS_RESTOCK:
            self.restock_pauses += sign

    def active_action(self, action_type: ActionType, subject: str) -> ActionRecord | None:
        for action_id in self.active_action_places:
            record = self.actions[action_id]
            spec = record.info.spec
            if spec.action_type == action_type and spec.subject == subject:
                return record
        return None

    def open_alert_records(self) -> list[AlertRecord]:
        """The alerts not acknowledged, in the order raised."""
        return [self.alerts[alert_id] for alert_id in self.open_alert_places]

    def open_task_records(self) -> list[TaskRecord]:
        """The tasks not done, in the order opened."""
        return [self.tasks[task_id] for task_id in self.open_task_places]

    def active_action_records(self) -> list[ActionRecord]:
        """The actions in force, in the order applied."""
        return [self.actions[action_id] for action_id in self.active_action_places]

    def fingerprint(self) -> str:
        """What the checksum covers: the rule version and every record's state."""
        return repr((
            self.rules,
            sorted((k, r.ack is not None) for k, r in self.alerts.items()),
            sorted((k, r.done is not None) for k, r in self.tasks.items()),
            sorted((k, r.active) for k, r in self.actions.items()),
            sorted(self.node_penalty.items()), sorted(self.channel_reserve.items()),
            self.restock_pauses))
