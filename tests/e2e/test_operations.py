"""OperationsService over gRPC: KPIs, rules, alerts, tasks, actions, emergency changes."""

from __future__ import annotations

import socket
import urllib.request

import grpc
import pytest
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import operations_service_pb2 as ops
from allocd.v1 import operations_service_pb2_grpc as ops_grpc
from allocd.v1 import returns_service_pb2 as rpb
from allocd.v1 import returns_service_pb2_grpc as rgrpc
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import RPC_TIMEOUT_S, rid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def who(actor: str, role: str) -> tuple[tuple[str, str], ...]:
    return (("x-allocd-actor", actor), ("x-allocd-role", role))


@pytest.fixture(scope="module")
def server_settings():
    from tests.e2e.conftest import e2e_settings

    return e2e_settings(metrics_port=free_port())


@pytest.fixture(scope="module")
def operations(api) -> ops_grpc.OperationsServiceStub:
    return ops_grpc.OperationsServiceStub(api.channel)


def kpis(operations, **fields) -> dict[tuple[str, int, str, str], ops.Kpi]:
    response = operations.GetKpis(ops.GetKpisRequest(**fields), timeout=RPC_TIMEOUT_S)
    return {(k.name, k.window, k.scope, k.subject): k for k in response.kpis}


def scrape(api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    port = api.settings.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_get_kpis_reports_a_fulfilled_and_a_backordered_order(demo_world, operations):
    world = demo_world
    api = world.api
    before = kpis(operations, names=["fill_rate", "packages_per_order"],
                  windows=[ops.KPI_WINDOW_DAY], scopes=["all"])
    filled_before = before[("fill_rate", ops.KPI_WINDOW_DAY, "all", "")]
    full, short = world.sku(), world.sku()
    world.stock(full, "IND1", 10)
    world.stock(short, "IND1", 1)
    first = world.allocate(world.order((full, 2)))
    world.fulfil(first.allocation.packages[0])
    world.allocate(world.order((short, 3)))  # one of three: two backordered
    after = kpis(operations, names=["fill_rate", "packages_per_order"],
                 windows=[ops.KPI_WINDOW_DAY], scopes=["all"], include_trend=True)
    filled = after[("fill_rate", ops.KPI_WINDOW_DAY, "all", "")]
    assert filled.numerator - filled_before.numerator == 2 + 1
    assert filled.denominator - filled_before.denominator == 2 + 3
    assert filled.unit == "ratio" and len(filled.trend) == 60
    assert filled.value == pytest.approx(filled.numerator / filled.denominator)
    # the same figure is a gauge in /metrics
    samples = scrape(api)
    key = ("allocd_kpi", (("name", "fill_rate"), ("scope", "all"), ("subject", ""),
                          ("window", "day")))
    assert samples[key] == pytest.approx(filled.value)
    assert samples[("allocd_rules_version", ())] == 1


def test_refund_leakage_counts_only_what_was_paid_for_units_not_back(demo_world, operations):
    """A partial return refunded on receipt for the units that came back leaked nothing
    (it counted whole: fewer units were back than authorised); a refund on authorisation
    leaked all it paid."""
    world = demo_world
    returns = rgrpc.ReturnsServiceStub(world.api.channel)
    clerk = who("clerk-1", "customer_service")

    def leakage() -> tuple[float, float]:
        key = ("refund_leakage", ops.KPI_WINDOW_DAY, "all", "")
        got = kpis(operations, names=["refund_leakage"], windows=[ops.KPI_WINDOW_DAY],
                   scopes=["all"])[key]
        return got.numerator, got.denominator

    def sold(customer: str, units: int) -> str:
        order = world.order((sku, units), customer_id=customer)
        (package,) = world.allocate(order).allocation.packages
        world.fulfil(package)
        return order.order_id

    def create(order_id: str, units: int) -> rpb.Return:
        created = returns.CreateReturn(rpb.CreateReturnRequest(
            request_id=rid(), rma_id=world.unique("RMA"), order_id=order_id,
            lines=[rpb.ReturnLineRequest(line_id="1", quantity=units)]), metadata=clerk,
            timeout=RPC_TIMEOUT_S)
        assert created.eligible, created.reasons
        return getattr(created, "return")

    sku = world.sku(price_micros=10_000_000)  # home goods: no restocking fee
    world.stock(sku, "IND1", 10)
    # A first order's 3 units authorised, refunded on receipt; 2 come back.
    partial = create(sold(world.unique("CUST"), 3), 3)
    assert partial.refund_timing == rpb.REFUND_TIMING_ON_RECEIPT
    before = leakage()
    received = returns.ReceiveReturn(rpb.ReceiveReturnRequest(
        request_id=rid(), rma_id=partial.rma_id,
        lines=[rpb.ReturnLineRequest(line_id="1", quantity=2)]), metadata=clerk,
        timeout=RPC_TIMEOUT_S)
    assert received.refunded_micros == 20_000_000
    after = leakage()
    assert (after[0] - before[0], after[1] - before[1]) == (0, 20_000_000)
    # A trusted customer (three orders, nothing returned) is refunded on authorisation.
    loyal = world.unique("CUST")
    order_ids = [sold(loyal, 1) for _ in range(3)]
    up_front = create(order_ids[0], 1)
    assert up_front.refund_timing == rpb.REFUND_TIMING_ON_AUTHORIZATION
    assert up_front.refunded_micros == 10_000_000
    last = leakage()
    assert (last[0] - after[0], last[1] - after[1]) == (10_000_000, 10_000_000)


def test_get_kpis_refuses_unknown_names_scopes_and_windows(api, operations):
    for request, field in ((ops.GetKpisRequest(names=["happiness"]), "names[0]"),
                           (ops.GetKpisRequest(scopes=["planet"]), "scopes[0]")):
        error = api.rejects(grpc.StatusCode.INVALID_ARGUMENT, operations.GetKpis, request)
        assert field in error.details()


def test_the_sku_scope_is_read_for_the_skus_named_and_no_more(api, operations):
    """Every SKU sold, asked for at once, was seconds of work on the server's loop at a
    million SKUs (every call waited), for an answer past the message size limit."""
    error = api.rejects(grpc.StatusCode.INVALID_ARGUMENT, operations.GetKpis,
                        ops.GetKpisRequest(scopes=["sku"]))
    assert "subjects" in error.details()
    error = api.rejects(grpc.StatusCode.INVALID_ARGUMENT, operations.GetKpis,
                        ops.GetKpisRequest(scopes=["node"],
                                           subjects=[f"s{i}" for i in range(1001)]))
    assert "at most 1000" in error.details()
    named = operations.GetKpis(ops.GetKpisRequest(scopes=["sku"], subjects=["NO-SUCH-SKU"]),
                               timeout=RPC_TIMEOUT_S)
    assert not named.kpis


def test_a_rule_of_an_unknown_kind_is_refused_as_invalid(api, operations):
    current = operations.GetRules(ops.GetRulesRequest(), timeout=RPC_TIMEOUT_S).rules
    bad = ops.SetRulesRequest(request_id=rid(), expected_version=current.version,
                              rules=[ops.Rule(rule_id="x", kind=99, window=ops.KPI_WINDOW_DAY,
                                              threshold=1)])
    error = api.rejects(grpc.StatusCode.INVALID_ARGUMENT, operations.SetRules, bad)
    assert "kind" in error.details()


def test_a_large_count_variance_raises_an_alert_a_task_and_a_sales_hold(api, cat,
                                                                         operations):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 100)
    api.inventory.SubmitCycleCount(inv.SubmitCycleCountRequest(
        request_id=rid(), lines=[inv.CountLine(sku_id=sku, node_id=node,
                                               counted_quantity=130)]), timeout=RPC_TIMEOUT_S)
    (alert,) = operations.ListAlerts(ops.ListAlertsRequest(subject=f"{sku}@{node}"),
                                     timeout=RPC_TIMEOUT_S).alerts
    assert (alert.rule_id, alert.kind, alert.status, alert.value) == (
        "count-variance", ops.RULE_KIND_COUNT_VARIANCE, ops.ALERT_STATUS_OPEN, 30)
    (task_id,) = alert.task_ids
    (action_id,) = alert.action_ids
    actions = {a.action_id: a for a in operations.ListActions(
        ops.ListActionsRequest(), timeout=RPC_TIMEOUT_S).actions}
    assert actions[action_id].type == ops.ACTION_TYPE_RESTRICT_SKU and actions[action_id].active
    assert api.sellable(sku, [node]) == 0
    # acknowledging is idempotent by request id
    ack = ops.AcknowledgeAlertRequest(request_id=rid(), alert_id=alert.alert_id, note="seen")
    first = operations.AcknowledgeAlert(ack, metadata=who("lead", "operations"),
                                        timeout=RPC_TIMEOUT_S)
    again = operations.AcknowledgeAlert(ack, metadata=who("lead", "operations"),
                                        timeout=RPC_TIMEOUT_S)
    assert first.alert.status == ops.ALERT_STATUS_ACKNOWLEDGED
    assert again.result.replayed and again.alert.acknowledged_by == "lead"
    # the task belongs to inventory control
    tasks = operations.ListTasks(ops.ListTasksRequest(owner_role="inventory_control"),
                                 timeout=RPC_TIMEOUT_S).tasks
    assert task_id in {t.task_id for t in tasks}
    api.rejects(grpc.StatusCode.PERMISSION_DENIED,
                lambda r, **kw: operations.CompleteTask(r, metadata=who("p", "warehouse"), **kw),
                ops.CompleteTaskRequest(request_id=rid(), task_id=task_id))
    done = operations.CompleteTask(ops.CompleteTaskRequest(request_id=rid(), task_id=task_id,
                                                           note="recounted: 130"),
                                   metadata=who("counter", "inventory_control"),
                                   timeout=RPC_TIMEOUT_S)
    assert done.task.completed and done.task.completed_by == "counter"
    reversed_ = {a.action_id: a for a in operations.ListActions(
        ops.ListActionsRequest(include_reversed=True), timeout=RPC_TIMEOUT_S).actions}
    assert not reversed_[action_id].active and reversed_[action_id].reversed_by == "counter"
    assert api.sellable(sku, [node]) == 100  # the 30 found units wait in quarantine


def test_unknown_alerts_tasks_and_actions_are_refused(api, operations):
    for call, request in (
            (operations.AcknowledgeAlert, ops.AcknowledgeAlertRequest(request_id=rid(),
                                                                      alert_id="AL-0")),
            (operations.CompleteTask, ops.CompleteTaskRequest(request_id=rid(),
                                                              task_id="TK-0")),
            (operations.ReverseAction, ops.ReverseActionRequest(request_id=rid(),
                                                                action_id="AC-0"))):
        api.rejects(grpc.StatusCode.NOT_FOUND, call, request)
    api.rejects(grpc.StatusCode.INVALID_ARGUMENT, operations.RequestEmergencyChange,
                ops.RequestEmergencyChangeRequest(request_id=rid(), node_id="x", reason="r"))


def test_an_emergency_node_shutdown_waits_for_another_person(api, cat, operations):
    node = cat.nodes[2]
    approvals = rgrpc.ReturnsServiceStub(api.channel)
    asked = operations.RequestEmergencyChange(ops.RequestEmergencyChangeRequest(
        request_id=rid(), change=ops.EMERGENCY_CHANGE_DISABLE_NODE, node_id=node,
        reason="power cut"), metadata=who("shift-lead", "warehouse"), timeout=RPC_TIMEOUT_S)
    waiting = {a.approval_id: a for a in approvals.ListApprovals(
        rpb.ListApprovalsRequest(), timeout=RPC_TIMEOUT_S).approvals}
    assert waiting[asked.approval_id].action == "emergency_change"
    assert waiting[asked.approval_id].requested_by == "shift-lead"
    api.rejects(grpc.StatusCode.FAILED_PRECONDITION,
                lambda r, **kw: approvals.DecideApproval(
                    r, metadata=who("shift-lead", "operations"), **kw),
                rpb.DecideApprovalRequest(request_id=rid(), approval_id=asked.approval_id,
                                          approve=True))
    approvals.DecideApproval(rpb.DecideApprovalRequest(
        request_id=rid(), approval_id=asked.approval_id, approve=True),
        metadata=who("duty-manager", "operations"), timeout=RPC_TIMEOUT_S)
    from allocd.v1 import catalog_service_pb2 as cpb

    def enabled() -> bool:
        nodes = api.catalog.ListNodes(cpb.ListNodesRequest(), timeout=RPC_TIMEOUT_S).nodes
        return next(n.enabled for n in nodes if n.node_id == node)

    assert not enabled()
    (action,) = [a for a in operations.ListActions(ops.ListActionsRequest(),
                                                   timeout=RPC_TIMEOUT_S).actions
                 if a.node_id == node]
    assert (action.type, action.applied_by, action.requested_by, action.approval_id) == (
        ops.ACTION_TYPE_DISABLE_NODE, "duty-manager", "shift-lead", asked.approval_id)
    operations.ReverseAction(ops.ReverseActionRequest(request_id=rid(),
                                                      action_id=action.action_id),
                             metadata=who("duty-manager", "operations"), timeout=RPC_TIMEOUT_S)
    assert enabled()


def test_rules_are_replaced_by_version(api, operations):
    current = operations.GetRules(ops.GetRulesRequest(), timeout=RPC_TIMEOUT_S).rules
    rules = list(current.rules)
    changed = [ops.Rule(**{**{f.name: getattr(r, f.name) for f in r.DESCRIPTOR.fields},
                           "threshold": 50.0}) if r.rule_id == "count-variance" else r
               for r in rules]
    stale = ops.SetRulesRequest(request_id=rid(), expected_version=current.version - 1,
                                rules=changed)
    api.rejects(grpc.StatusCode.FAILED_PRECONDITION, operations.SetRules, stale)
    bad = ops.SetRulesRequest(request_id=rid(), expected_version=current.version,
                              rules=[ops.Rule(rule_id="x", kind=ops.RULE_KIND_RETURN_RATE,
                                              window=ops.KPI_WINDOW_UNSPECIFIED, threshold=1)])
    api.rejects(grpc.StatusCode.INVALID_ARGUMENT, operations.SetRules, bad)
    answer = operations.SetRules(ops.SetRulesRequest(
        request_id=rid(), expected_version=current.version, rules=changed),
        metadata=who("lead", "operations"), timeout=RPC_TIMEOUT_S)
    assert answer.rules.version == current.version + 1 and answer.rules.set_by == "lead"
    now = operations.GetRules(ops.GetRulesRequest(), timeout=RPC_TIMEOUT_S).rules
    assert {r.rule_id: r.threshold for r in now.rules}["count-variance"] == 50.0
    # put the defaults back for whatever runs next on this server: the sales hold acts on
    # its own, and a lower threshold makes it act more, so a second person approves it
    back = operations.SetRules(ops.SetRulesRequest(
        request_id=rid(), expected_version=now.version, rules=rules),
        metadata=who("lead", "operations"), timeout=RPC_TIMEOUT_S)
    assert back.approval_id and back.rules.version == now.version
    rgrpc.ReturnsServiceStub(api.channel).DecideApproval(rpb.DecideApprovalRequest(
        request_id=rid(), approval_id=back.approval_id, approve=True),
        metadata=who("duty-manager", "operations"), timeout=RPC_TIMEOUT_S)
    restored = operations.GetRules(ops.GetRulesRequest(), timeout=RPC_TIMEOUT_S).rules
    assert {r.rule_id: r.threshold for r in restored.rules}["count-variance"] == 10.0


def test_switching_off_a_rules_approval_waits_for_a_second_person(api, operations):
    """SetRules that lets the late-shipments routing penalty act without approval answers
    with an approval id and leaves the set in force; the requester cannot approve it, a
    different operations person can, and then it is the set in force."""
    approvals = rgrpc.ReturnsServiceStub(api.channel)
    current = operations.GetRules(ops.GetRulesRequest(), timeout=RPC_TIMEOUT_S).rules
    rules = list(current.rules)
    lifted = [ops.Rule(**{**{f.name: getattr(r, f.name) for f in r.DESCRIPTOR.fields},
                          "requires_approval": False})
              if r.rule_id == "node-late-shipments" else r for r in rules]
    assert any(r.requires_approval for r in rules if r.rule_id == "node-late-shipments")
    asked = operations.SetRules(ops.SetRulesRequest(
        request_id=rid(), expected_version=current.version, rules=lifted),
        metadata=who("lead", "operations"), timeout=RPC_TIMEOUT_S)
    assert asked.approval_id and asked.rules.version == current.version
    assert operations.GetRules(ops.GetRulesRequest(), timeout=RPC_TIMEOUT_S).rules == current
    waiting = {a.approval_id: a for a in approvals.ListApprovals(
        rpb.ListApprovalsRequest(), timeout=RPC_TIMEOUT_S).approvals}
    assert waiting[asked.approval_id].action == "rules_change"
    assert "node-late-shipments" in waiting[asked.approval_id].detail
    api.rejects(grpc.StatusCode.FAILED_PRECONDITION,
                lambda r, **kw: approvals.DecideApproval(r, metadata=who("lead", "operations"),
                                                         **kw),
                rpb.DecideApprovalRequest(request_id=rid(), approval_id=asked.approval_id,
                                          approve=True))
    approvals.DecideApproval(rpb.DecideApprovalRequest(
        request_id=rid(), approval_id=asked.approval_id, approve=True),
        metadata=who("duty-manager", "operations"), timeout=RPC_TIMEOUT_S)
    now = operations.GetRules(ops.GetRulesRequest(), timeout=RPC_TIMEOUT_S).rules
    assert now.version == current.version + 1 and now.set_by == "lead"
    assert not next(r.requires_approval for r in now.rules
                    if r.rule_id == "node-late-shipments")
    # put the defaults back for whatever runs next on this server (an approval added back
    # needs nobody else)
    back = operations.SetRules(ops.SetRulesRequest(
        request_id=rid(), expected_version=now.version, rules=rules),
        metadata=who("lead", "operations"), timeout=RPC_TIMEOUT_S)
    assert not back.approval_id and back.rules.version == now.version + 1


def test_alerts_tasks_actions_and_approvals_come_a_page_at_a_time(api, cat, operations):
    """Read page by page, each listing is the one read whole; bad pages are refused."""
    approvals = rgrpc.ReturnsServiceStub(api.channel)
    pairs = [(sku, node) for sku in cat.skus[1:3] for node in cat.nodes[:2]]
    for sku, node in pairs:  # a variance each: an alert, a task and a sales hold
        api.receive(sku, node, 100)
        api.inventory.SubmitCycleCount(inv.SubmitCycleCountRequest(
            request_id=rid(), lines=[inv.CountLine(sku_id=sku, node_id=node,
                                                   counted_quantity=140)]),
            timeout=RPC_TIMEOUT_S)
    for _ in range(3):
        operations.RequestEmergencyChange(ops.RequestEmergencyChangeRequest(
            request_id=rid(), change=ops.EMERGENCY_CHANGE_DISABLE_NODE,
            node_id=cat.nodes[1], reason="drill"), metadata=who("lead", "warehouse"),
            timeout=RPC_TIMEOUT_S)
    listings = (
        (operations.ListAlerts, ops.ListAlertsRequest, {"include_acknowledged": True},
         "alerts", "alert_id"),
        (operations.ListAlerts, ops.ListAlertsRequest, {"rule_id": "count-variance"},
         "alerts", "alert_id"),
        (operations.ListTasks, ops.ListTasksRequest, {"include_completed": True},
         "tasks", "task_id"),
        (operations.ListTasks, ops.ListTasksRequest, {}, "tasks", "task_id"),
        (operations.ListActions, ops.ListActionsRequest, {"include_reversed": True},
         "actions", "action_id"),
        (operations.ListActions, ops.ListActionsRequest, {}, "actions", "action_id"),
        (approvals.ListApprovals, rpb.ListApprovalsRequest, {}, "approvals", "approval_id"),
    )
    for call, make, filters, field, key in listings:
        whole = call(make(page_size=1000, **filters), timeout=RPC_TIMEOUT_S)
        everything = [getattr(r, key) for r in getattr(whole, field)]
        assert len(everything) >= 3 and not whole.next_page_token
        read, token = [], ""
        for _ in range(len(everything)):
            page = call(make(page_size=2, page_token=token, **filters), timeout=RPC_TIMEOUT_S)
            assert 1 <= len(getattr(page, field)) <= 2
            read += [getattr(r, key) for r in getattr(page, field)]
            token = page.next_page_token
            if not token:
                break
        assert read == everything and not token, call
        api.rejects(grpc.StatusCode.INVALID_ARGUMENT, call, make(page_size=-1, **filters))
        api.rejects(grpc.StatusCode.INVALID_ARGUMENT, call, make(page_token="x", **filters))
    for action in operations.ListActions(ops.ListActionsRequest(page_size=1000),
                                         timeout=RPC_TIMEOUT_S).actions:  # (holds lifted)
        operations.ReverseAction(ops.ReverseActionRequest(request_id=rid(),
                                                          action_id=action.action_id),
                                 metadata=who("duty-manager", "operations"),
                                 timeout=RPC_TIMEOUT_S)
