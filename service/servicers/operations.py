"""allocd.v1.OperationsService: KPIs, rules, alerts, tasks, actions, emergency changes."""

from __future__ import annotations

from allocd.v1 import operations_service_pb2 as pb
from allocd.v1 import operations_service_pb2_grpc as pb_grpc

from core import commands as c
from core.alerts import (
    ActionRecord,
    ActionSpec,
    ActionType,
    AlertRecord,
    OpsBook,
    Rule,
    RuleKind,
    RuleSet,
    TaskRecord,
    TaskType,
)
from core.errors import InvalidArgument, PermissionDenied
from core.finance import reconcile
from core.kpis import BY_NAME, SCOPES, KpiValue, exception_ages
from core.ledger import Ledger
from core.operations import Outcome
from core.rule_ops import RulesOutcome
from service.auth import CURRENT, POLICY
from service.codec import timestamp
from service.engine import Engine
from service.errors import Context, caller, unary
from service.paging import keep_all, page_listing
from service.servicers.inventory import mutation_result

WINDOW_OF = {pb.KPI_WINDOW_HOUR: "hour", pb.KPI_WINDOW_DAY: "day", pb.KPI_WINDOW_WEEK: "week"}
WINDOW_CODE = {name: code for code, name in WINDOW_OF.items()}
EMERGENCY = {
    pb.EMERGENCY_CHANGE_DISABLE_NODE: ActionType.DISABLE_NODE,
    pb.EMERGENCY_CHANGE_CHANNEL_SAFETY_STOCK_ONLY: ActionType.CHANNEL_SAFETY_STOCK_ONLY,
    pb.EMERGENCY_CHANGE_PAUSE_RETURNS_RESTOCK: ActionType.PAUSE_RETURNS_RESTOCK,
}


#: The method whose roles may read the books' reconciliation through GetKpis too.
RECONCILIATION_METHOD = "FinanceService/GetReconciliation"

#: Subjects a GetKpis call may name.
MAX_KPI_SUBJECTS = 1000
_RULE_KINDS = frozenset(int(kind) for kind in RuleKind)


def kpi_to_proto(value: KpiValue) -> pb.Kpi:
    return pb.Kpi(name=value.name, window=WINDOW_CODE[value.window], scope=value.scope,
                  subject=value.subject, value=value.value, numerator=value.numerator,
                  denominator=value.denominator, unit=value.unit, trend=list(value.trend))


def kpis_response(ledger: Ledger, now_ms: int, request: pb.GetKpisRequest) -> pb.GetKpisResponse:
    names = tuple(request.names)
    for i, name in enumerate(names):
        if name not in BY_NAME:
            raise InvalidArgument(f"names[{i}]: unknown KPI {name!r}; known: "
                                  f"{', '.join(BY_NAME)}",
                                  f"names[{i}]")
    for i, scope in enumerate(request.scopes):
        if scope not in SCOPES:
            raise InvalidArgument(f"scopes[{i}]: unknown scope {scope!r}; known: "
                                  f"{', '.join(SCOPES)}",
                                  f"scopes[{i}]")
    if "sku" in request.scopes and not request.subjects:
        # (Every SKU sold: seconds of work on the server's loop at a million SKUs, for an
        # answer past the message size limit.)
        raise InvalidArgument("the sku scope is read for the SKUs named in subjects",
                              "subjects")
    if len(request.subjects) > MAX_KPI_SUBJECTS:
        raise InvalidArgument(f"subjects has {len(request.subjects)} entries; at most "
                              f"{MAX_KPI_SUBJECTS}", "subjects")
    windows = []
    for i, code in enumerate(request.windows):
        if code not in WINDOW_OF:
            raise InvalidArgument(f"windows[{i}] must be hour, day or week",
                                  f"windows[{i}]")
        windows.append(WINDOW_OF[code])
    values = ledger.kpis.report(now_ms, names, tuple(windows), tuple(request.scopes),
                                tuple(request.subjects), request.include_trend)
    response = pb.GetKpisResponse(as_of=timestamp(now_ms),
                                  kpis=[kpi_to_proto(v) for v in values])
    for queue in exception_ages(ledger, now_ms):
        response.exception_queues.add(
            type=queue.kind, owner_role=queue.owner_role, under_hour=queue.under_hour,
            under_day=queue.under_day, older=queue.older,
            oldest_age_seconds=queue.oldest_ms // 1000)
    if not request.include_reconciliation:
        return response
    books = reconcile(ledger)
    last_entry = ledger.books.entries[-1].time_ms if ledger.books.entries else now_ms
    response.reconciliation.reconciled = books.reconciled
    response.reconciliation.unreconciled_skus = len(books.differences)
    response.reconciliation.lag_seconds = 0 if books.reconciled else max(
        now_ms - last_entry, 0) // 1000
    return response


def rule_to_proto(rule: Rule) -> pb.Rule:
    return pb.Rule(rule_id=rule.rule_id, kind=pb.RuleKind.ValueType(int(rule.kind)),
                   enabled=rule.enabled, window=WINDOW_CODE[rule.window],
                   threshold=rule.threshold, min_count=rule.min_count,
                   baseline_floor=rule.baseline_floor, penalty_micros=rule.penalty_micros,
                   requires_approval=rule.requires_approval)


def rules_to_proto(rules: RuleSet) -> pb.RuleSet:
    return pb.RuleSet(version=rules.version, rules=[rule_to_proto(r) for r in rules.rules],
                      set_by=rules.set_by)


def rule_from_proto(msg: pb.Rule, i: int) -> Rule:
    if msg.window not in WINDOW_OF:
        raise InvalidArgument("window must be hour, day or week", f"rules[{i}].window")
    if msg.kind == pb.RULE_KIND_UNSPECIFIED:
        raise InvalidArgument("kind is required", f"rules[{i}].kind")
    if msg.kind not in _RULE_KINDS:
        raise InvalidArgument(f"unknown rule kind {msg.kind}", f"rules[{i}].kind")
    return Rule(msg.rule_id, RuleKind(msg.kind), msg.enabled, WINDOW_OF[msg.window],
                msg.threshold, msg.min_count, msg.baseline_floor, msg.penalty_micros,
                msg.requires_approval)


def alert_to_proto(record: AlertRecord) -> pb.Alert:
    info = record.info
    msg = pb.Alert(
        alert_id=info.alert_id, rule_id=info.rule_id, rule_version=info.rule_version,
        kind=pb.RuleKind.ValueType(int(info.kind)), subject=info.subject, value=info.value,
        threshold=info.threshold, window=WINDOW_CODE[info.window], detail=info.detail,
        status=pb.AlertStatus.ValueType(int(record.status)),
        create_time=timestamp(record.created_ms), task_ids=record.task_ids,
        action_ids=record.action_ids, approval_ids=record.approval_ids)
    if record.ack is not None:
        msg.acknowledged_by = record.ack.actor
        msg.note = record.ack.note
        msg.acknowledge_time.CopyFrom(timestamp(record.ack_ms))
    return msg


def task_to_proto(record: TaskRecord) -> pb.Task:
    info = record.info
    msg = pb.Task(task_id=info.task_id, type=pb.TaskType.ValueType(int(info.task_type)),
                  alert_id=info.alert_id, subject=info.subject, detail=info.detail,
                  owner_role=record.owner_role, completed=record.done is not None,
                  create_time=timestamp(record.created_ms), action_id=info.action_id)
    if record.done is not None:
        msg.completed_by = record.done.actor
        msg.note = record.done.note
        msg.complete_time.CopyFrom(timestamp(record.done_ms))
    return msg


def action_to_proto(record: ActionRecord) -> pb.Action:
    info, spec = record.info, record.info.spec
    msg = pb.Action(
        action_id=info.action_id, type=pb.ActionType.ValueType(int(spec.action_type)),
        subject=spec.subject, node_id=spec.node_id, sku_id=spec.sku_id,
        channel_id=spec.channel_id, amount=spec.amount, reason=spec.reason,
        alert_id=spec.alert_id, requested_by=spec.requested_by, applied_by=info.actor,
        approval_id=info.approval_id, apply_time=timestamp(record.applied_ms),
        active=record.active)
    if record.undo is not None:
        msg.reversed_by = record.undo.actor
        msg.reverse_time.CopyFrom(timestamp(record.reversed_ms))
    return msg


class OperationsServicer(pb_grpc.OperationsServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def ops(self) -> OpsBook:
        return self.engine.ledger.ops

    @unary
    async def GetKpis(self, request: pb.GetKpisRequest, context: Context) -> pb.GetKpisResponse:
        identity = CURRENT.get()
        if (request.include_reconciliation and identity is not None
                and not identity.roles & POLICY[RECONCILIATION_METHOD]):
            # The books' state is for whoever may call FinanceService.GetReconciliation,
            # not for every role that reads the KPIs (and a reconciliation reads every SKU).
            raise PermissionDenied(
                f"include_reconciliation needs one of the roles "
                f"{', '.join(sorted(POLICY[RECONCILIATION_METHOD]))} (as "
                f"{RECONCILIATION_METHOD})", "include_reconciliation")
        return kpis_response(self.engine.ledger, self.engine.clock(), request)

    @unary
    async def ListAlerts(self, request: pb.ListAlertsRequest,
                         context: Context) -> pb.ListAlertsResponse:
        def wanted(r: AlertRecord) -> bool:
            return ((not request.rule_id or r.info.rule_id == request.rule_id)
                    and (not request.subject or r.info.subject == request.subject))

        alerts, next_token = page_listing(self.ops.alerts, self.ops.open_alert_places, request,
                                          wanted, request.include_acknowledged)
        return pb.ListAlertsResponse(alerts=[alert_to_proto(r) for r in alerts],
                                     next_page_token=next_token)

    @unary
    async def AcknowledgeAlert(self, request: pb.AcknowledgeAlertRequest,
                               context: Context) -> pb.AcknowledgeAlertResponse:
        actor, _ = caller(context)

        def respond(o: Outcome) -> pb.AcknowledgeAlertResponse:
            return pb.AcknowledgeAlertResponse(
                result=mutation_result(o), alert=alert_to_proto(self.ops.alerts[o.detail])
                if o.detail else None)

        return await self.engine.mutate(
            "AcknowledgeAlert", request,
            lambda: c.AcknowledgeAlert(request.alert_id, actor, request.note), respond)

    @unary
    async def ListTasks(self, request: pb.ListTasksRequest,
                        context: Context) -> pb.ListTasksResponse:
        if request.type and request.type not in {int(t) for t in TaskType}:
            raise InvalidArgument("unknown task type", "type")

        def wanted(r: TaskRecord) -> bool:
            return ((not request.type or int(r.info.task_type) == request.type)
                    and (not request.owner_role or r.owner_role == request.owner_role))

        tasks, next_token = page_listing(self.ops.tasks, self.ops.open_task_places, request,
                                         wanted, request.include_completed)
        return pb.ListTasksResponse(tasks=[task_to_proto(r) for r in tasks],
                                    next_page_token=next_token)

    @unary
    async def CompleteTask(self, request: pb.CompleteTaskRequest,
                           context: Context) -> pb.CompleteTaskResponse:
        actor, role = caller(context)

        def respond(o: Outcome) -> pb.CompleteTaskResponse:
            return pb.CompleteTaskResponse(
                result=mutation_result(o),
                task=task_to_proto(self.ops.tasks[o.detail]) if o.detail else None)

        return await self.engine.mutate(
            "CompleteTask", request,
            lambda: c.CompleteTask(request.task_id, actor, role, request.note), respond)

    @unary
    async def ListActions(self, request: pb.ListActionsRequest,
                          context: Context) -> pb.ListActionsResponse:
        actions, next_token = page_listing(self.ops.actions, self.ops.active_action_places,
                                           request, keep_all, request.include_reversed)
        return pb.ListActionsResponse(actions=[action_to_proto(r) for r in actions],
                                      next_page_token=next_token)

    @unary
    async def ReverseAction(self, request: pb.ReverseActionRequest,
                            context: Context) -> pb.ReverseActionResponse:
        actor, _ = caller(context)

        def respond(o: Outcome) -> pb.ReverseActionResponse:
            return pb.ReverseActionResponse(
                result=mutation_result(o),
                action=action_to_proto(self.ops.actions[o.detail]) if o.detail else None)

        return await self.engine.mutate(
            "ReverseAction", request,
            lambda: c.ReverseAction(request.action_id, actor, request.note), respond)

    @unary
    async def GetRules(self, request: pb.GetRulesRequest,
                       context: Context) -> pb.GetRulesResponse:
        return pb.GetRulesResponse(rules=rules_to_proto(self.ops.rules))

    @unary
    async def SetRules(self, request: pb.SetRulesRequest,
                       context: Context) -> pb.SetRulesResponse:
        actor, _ = caller(context)

        def build() -> c.Command:
            rules = tuple(rule_from_proto(r, i) for i, r in enumerate(request.rules))
            return c.SetRules(rules, request.expected_version, actor)

        def respond(o: Outcome) -> pb.SetRulesResponse:
            if not isinstance(o.detail, RulesOutcome):
                return pb.SetRulesResponse(result=mutation_result(o))
            return pb.SetRulesResponse(result=mutation_result(o),
                                       rules=rules_to_proto(o.detail.rules),
                                       approval_id=o.detail.approval_id)

        return await self.engine.mutate("SetRules", request, build, respond)

    @unary
    async def RequestEmergencyChange(self, request: pb.RequestEmergencyChangeRequest,
                                     context: Context) -> pb.RequestEmergencyChangeResponse:
        actor, _ = caller(context)

        def build() -> c.Command:
            kind = EMERGENCY.get(request.change)
            if kind is None:
                raise InvalidArgument("change is required", "change")
            return c.RequestEmergencyChange(ActionSpec(
                kind, node_id=request.node_id, channel_id=request.channel_id,
                amount=request.reserve_units, reason=request.reason), actor)

        return await self.engine.mutate(
            "RequestEmergencyChange", request, build,
            lambda o: pb.RequestEmergencyChangeResponse(result=mutation_result(o),
                                                        approval_id=o.detail or ""))
