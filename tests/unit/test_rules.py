"""Rules -> alerts -> tasks and actions: each rule fires on its scenario and not on its
near miss; actions are applied, visible and reversed; a replay rebuilds them all."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core import commands as c
from core.alerts import DEFAULT_RULES, RESTRICTED_SAFETY, ActionSpec, ActionType, RuleKind, TaskType
from core.availability import available_to_sell
from core.errors import DomainError, FailedPrecondition, InvalidArgument, PermissionDenied
from core.exceptions import Resolution
from core.ledger import Ledger, LedgerSettings
from core.model import Bucket
from core.operations import execute
from core.orders import DAY_MS
from core.returns import Grade
from tests.unit.shop import shop
from tests.unit.test_kpis import order, run, ship_all
from tests.unit.test_orders_stateful import NOW

MANAGER = ("ops-lead", "operations")


def world(**rule_changes: dict) -> tuple[Ledger, list]:
    """Two nodes (n0 near New York, n1 in Los Angeles), plenty of stock of three SKUs,
    the default rules (changed by `rule_changes`: rule id -> fields)."""
    ledger = Ledger(LedgerSettings(n_shards=2))
    events: list = []
    run(ledger, events, NOW - 3 * DAY_MS,
        *shop({(sku, node): 200 for sku in ("shirt", "socks", "mug") for node in ("n0", "n1")}))
    if rule_changes:
        rules = tuple(dataclasses.replace(r, **rule_changes.get(r.rule_id, {}))
                      for r in DEFAULT_RULES.rules)
        # (as approved: a set that lets a rule act alone waits for a second person)
        run(ledger, events, NOW - 3 * DAY_MS, c.SetRules(rules, 1, approved=True))
    return ledger, events


def sell_and_ship(ledger, events, order_id, sku, qty, at=NOW, shipped_at=NOW):
    run(ledger, events, at, c.AllocateOrders((order(order_id, "web", (sku, qty)),)))
    ship_all(ledger, events, order_id, shipped_at)


def alerts(ledger: Ledger, rule_id: str) -> list:
    return [r for r in ledger.ops.alerts.values() if r.info.rule_id == rule_id]


# ---- a SKU's return rate against its category ------------------------------------------------
def test_return_rate_rule_needs_enough_returns_then_opens_review_and_escalation():
    ledger, events = world()
    sell_and_ship(ledger, events, "socks-order", "socks", 10)
    run(ledger, events, NOW, c.CreateReturn("rs", "socks-order", (("1", 1),)))  # baseline 10%
    sell_and_ship(ledger, events, "shirts", "shirt", 10)
    for i in range(4):  # 40% but only 4 units: below min_count 5 (the near miss)
        run(ledger, events, NOW, c.CreateReturn(f"r{i}", "shirts", (("1", 1),)))
    assert not alerts(ledger, "sku-return-rate")
    run(ledger, events, NOW, c.CreateReturn("r4", "shirts", (("1", 1),)))  # 50% > 2 x 10%
    (alert,) = alerts(ledger, "sku-return-rate")
    assert alert.info.subject == "shirt" and alert.info.value == pytest.approx(0.5)
    assert alert.info.threshold == pytest.approx(0.2)
    kinds = sorted(ledger.ops.tasks[t].info.task_type for t in alert.task_ids)
    assert kinds == [TaskType.QUALITY_REVIEW, TaskType.SUPPLIER_ESCALATION]
    # one open alert per SKU: a sixth return raises nothing new
    run(ledger, events, NOW, c.CreateReturn("r5", "shirts", (("1", 1),)))
    assert len(alerts(ledger, "sku-return-rate")) == 1


def test_a_return_rate_at_exactly_the_limit_does_not_fire():
    ledger, events = world()
    sell_and_ship(ledger, events, "socks-order", "socks", 10)
    run(ledger, events, NOW, c.CreateReturn("rs", "socks-order", (("1", 1),)))  # 10%
    sell_and_ship(ledger, events, "shirts", "shirt", 25)
    for i in range(5):  # 5 of 25: 20%, the limit itself
        run(ledger, events, NOW, c.CreateReturn(f"r{i}", "shirts", (("1", 1),)))
    assert not alerts(ledger, "sku-return-rate")
    run(ledger, events, NOW, c.CreateReturn("r5", "shirts", (("1", 1),)))  # 24%
    assert len(alerts(ledger, "sku-return-rate")) == 1


# ---- late shipments from a node ------------------------------------------------------------
def ship_late(ledger, events, count, node_sku="shirt"):
    """`count` orders allocated yesterday (from n0: nearest to New York), shipped today."""
    for i in range(count):
        sell_and_ship(ledger, events, f"late-{i}", node_sku, 1, at=NOW - DAY_MS)


def test_late_shipments_ask_for_a_routing_penalty_then_apply_and_reverse_it():
    ledger, events = world()
    ship_late(ledger, events, 2)  # the near miss: threshold is 3
    assert not alerts(ledger, "node-late-shipments")
    sell_and_ship(ledger, events, "late-2", "shirt", 1, at=NOW - DAY_MS)
    (alert,) = alerts(ledger, "node-late-shipments")
    assert alert.info.subject == "n0" and alert.info.value == 3
    # policy changes wait for an approver: nothing applied yet
    (approval_id,) = alert.approval_ids
    assert not ledger.ops.node_penalty and not alert.action_ids
    with pytest.raises(PermissionDenied, match="roles"):
        execute(ledger, c.DecideApproval(approval_id, True, "clerk", "warehouse"), NOW)
    run(ledger, events, NOW, c.DecideApproval(approval_id, True, *MANAGER))
    (action_id,) = alert.action_ids
    assert ledger.ops.node_penalty == {0: 5_000_000}
    # allocation now prefers n1 for a New York order it used to ship from n0
    run(ledger, events, NOW, c.AllocateOrders((order("after", "web", ("mug", 1)),)))
    (package,) = ledger.orders.orders["after"].last_decision.packages
    assert package.node == 1
    run(ledger, events, NOW, c.ReverseAction(action_id, "ops-lead", "carrier fixed"))
    assert not ledger.ops.node_penalty and not ledger.ops.actions[action_id].active
    run(ledger, events, NOW, c.AllocateOrders((order("again", "web", ("mug", 1)),)))
    assert ledger.orders.orders["again"].last_decision.packages[0].node == 0
    with pytest.raises(FailedPrecondition, match="reversed already"):
        execute(ledger, c.ReverseAction(action_id, "ops-lead"), NOW)


def test_a_rule_without_approval_applies_its_action_at_once():
    ledger, events = world(**{"node-late-shipments": {"requires_approval": False}})
    ship_late(ledger, events, 3)
    (alert,) = alerts(ledger, "node-late-shipments")
    (action_id,) = alert.action_ids
    assert ledger.ops.actions[action_id].info.actor == "rule:node-late-shipments"
    assert ledger.ops.node_penalty == {0: 5_000_000}


def test_a_rule_that_fires_again_does_not_apply_its_action_twice():
    """Acknowledged, and firing again past its window while the node is still late: a
    second routing penalty was added to the first (10,000,000 on the node, and growing
    with each firing)."""
    ledger, events = world(**{"node-late-shipments": {"requires_approval": False}})
    ship_late(ledger, events, 3)
    (alert,) = alerts(ledger, "node-late-shipments")
    run(ledger, events, NOW, c.AcknowledgeAlert(alert.info.alert_id, "ops-lead"))
    # (n1 closed: the later orders ship from n0 whatever its penalty)
    run(ledger, events, NOW, c.UpsertNodes((dataclasses.replace(ledger.catalog.nodes[1],
                                                                enabled=False),)))
    later = NOW + 2 * DAY_MS  # past the rule's window since the acknowledgement
    for i in range(3):
        sell_and_ship(ledger, events, f"later-{i}", "socks", 1, at=later - DAY_MS,
                      shipped_at=later)
    assert len(alerts(ledger, "node-late-shipments")) == 2  # it fired again
    assert ledger.ops.node_penalty == {0: 5_000_000}
    assert len(ledger.ops.active_action_records()) == 1


# ---- cycle-count variance ------------------------------------------------------------------
def sellable(ledger: Ledger, sku: str, node: str) -> int:
    table = available_to_sell(ledger, np.array([ledger.catalog.sku(sku)]),
                              np.array([ledger.catalog.node(node)]), 0)
    return int(table.available_to_sell[0, 0])


def test_a_count_variance_at_the_threshold_holds_the_sku_until_the_recount_task_is_done():
    ledger, events = world()
    run(ledger, events, NOW, c.SubmitCycleCount((c.CountLine("shirt", "n0", 191),)))  # 9 off
    assert not alerts(ledger, "count-variance")
    assert sellable(ledger, "shirt", "n0") > 0
    run(ledger, events, NOW, c.SubmitCycleCount((c.CountLine("mug", "n0", 210),)))  # 10 over
    (alert,) = alerts(ledger, "count-variance")
    assert alert.info.subject == "mug@n0"
    (task_id,) = alert.task_ids
    (action_id,) = alert.action_ids
    task = ledger.ops.tasks[task_id]
    assert task.info.task_type == TaskType.CYCLE_COUNT and task.info.action_id == action_id
    assert task.owner_role == "inventory_control"
    mug, n0 = ledger.catalog.sku("mug"), ledger.catalog.node("n0")
    assert ledger.safety_stock(mug, n0) == RESTRICTED_SAFETY
    assert sellable(ledger, "mug", "n0") == 0 and sellable(ledger, "mug", "n1") == 200
    with pytest.raises(FailedPrecondition):  # no sale of the held SKU at n0
        execute(ledger, c.ReserveStock("cart", "web", NOW + 60_000,
                                       (c.StockLine("mug", "n0", 1),)), NOW)
    with pytest.raises(PermissionDenied, match="inventory_control"):
        execute(ledger, c.CompleteTask(task_id, "picker", "warehouse"), NOW)
    run(ledger, events, NOW, c.CompleteTask(task_id, "counter", "inventory_control",
                                            "recounted: 210"))
    assert not ledger.ops.actions[action_id].active
    assert ledger.safety_stock(mug, n0) == 0  # inherited again
    assert sellable(ledger, "mug", "n0") == 200  # the 10 found units wait in quarantine
    assert ledger.quantity(mug, n0, Bucket.QUARANTINED) == 10


def test_an_alert_whose_tasks_are_done_closes_and_the_rule_fires_again_later():
    """Its recount done and the variance settled, an alert nobody acknowledged kept the rule
    quiet for the SKU at the node for good: a month later a count 60 units short raised
    no alert, no hold and no recount."""
    ledger, events = world()
    count = run(ledger, events, NOW, c.SubmitCycleCount((c.CountLine("mug", "n0", 210),)))
    (alert,) = alerts(ledger, "count-variance")
    (task_id,) = alert.task_ids
    run(ledger, events, NOW, c.CompleteTask(task_id, "counter", "inventory_control",
                                            "recounted: 210"))
    assert alert.ack is not None and task_id in alert.ack.note
    assert not ledger.ops.open_alert_records()
    later = NOW + 30 * DAY_MS
    run(ledger, events, later, c.ResolveException(count.detail.lines[0].exception_id,
                                                  Resolution.APPROVE, actor="boss",
                                                  role="operations"))
    run(ledger, events, later, c.SubmitCycleCount((c.CountLine("mug", "n0", 150),)))
    assert len(alerts(ledger, "count-variance")) == 2
    assert ledger.safety_stock(ledger.catalog.sku("mug"), ledger.catalog.node("n0")) == (
        RESTRICTED_SAFETY)


# ---- node disruption ---------------------------------------------------------------------------
def short_pick(ledger, events, order_id):
    run(ledger, events, NOW, c.AllocateOrders((order(order_id, "web", ("socks", 2)),)))
    (package_id,) = ledger.orders.orders[order_id].package_ids
    run(ledger, events, NOW, c.ReleaseWave("n0"), c.ConfirmPick(package_id, (("1", 1),)))


def test_short_picks_at_a_node_ask_to_source_elsewhere():
    ledger, events = world()
    short_pick(ledger, events, "s1")
    short_pick(ledger, events, "s2")
    assert not alerts(ledger, "node-disruption")  # two: the near miss
    short_pick(ledger, events, "s3")
    (alert,) = alerts(ledger, "node-disruption")
    (approval_id,) = alert.approval_ids
    run(ledger, events, NOW, c.DecideApproval(approval_id, True, *MANAGER))
    (action_id,) = alert.action_ids
    assert ledger.ops.actions[action_id].info.spec.action_type == ActionType.FALLBACK_ROUTING
    run(ledger, events, NOW, c.AllocateOrders((order("moved", "web", ("socks", 1)),)))
    assert ledger.orders.orders["moved"].last_decision.packages[0].node == 1


# ---- rule sets, replay ---------------------------------------------------------------------
def test_rule_sets_are_versioned_and_a_disabled_rule_stays_quiet():
    ledger, events = world(**{"count-variance": {"enabled": False}})
    assert ledger.ops.rules.version == 2
    with pytest.raises(FailedPrecondition, match="version 2"):
        execute(ledger, c.SetRules(DEFAULT_RULES.rules, 1), NOW)
    run(ledger, events, NOW, c.SubmitCycleCount((c.CountLine("mug", "n0", 260),)))
    assert not alerts(ledger, "count-variance")
    bad = dataclasses.replace(DEFAULT_RULES.rules[0], window="fortnight")
    with pytest.raises(InvalidArgument, match="window"):
        execute(ledger, c.SetRules((bad,), 2), NOW)
    twice = (DEFAULT_RULES.rules[0], DEFAULT_RULES.rules[0])
    with pytest.raises(InvalidArgument, match="twice"):
        execute(ledger, c.SetRules(twice, 2), NOW)
    assert ledger.ops.rules.version == 2


def _changed(**rule_changes: dict) -> tuple:
    return tuple(dataclasses.replace(r, **rule_changes.get(r.rule_id, {}))
                 for r in DEFAULT_RULES.rules)


@pytest.mark.parametrize("change", [
    {"node-late-shipments": {"requires_approval": False}},  # the approval switched off
    {"node-disruption": {"requires_approval": False, "threshold": 1}},
    {"sku-return-rate": {"kind": RuleKind.NODE_DISRUPTION, "window": "hour",
                         "threshold": 1, "penalty_micros": 1}},  # a rule made to act
    {"count-variance": {"threshold": 2}},  # the sales hold, alone: on smaller variances
    {"count-variance": {"window": "week"}},  # ... or counted over longer
])
def test_a_rule_set_that_lets_a_rule_act_without_approval_waits_for_a_second_person(change):
    """Segregation of duties: one operator cannot take away the approval routing changes
    need. The set waits (the one in force stays), the requester cannot approve it,
    another can; a rejected one changes nothing."""
    ledger, events = world()
    proposed = _changed(**change)
    before = ledger.ops.rules
    outcome = run(ledger, events, NOW, c.SetRules(proposed, 1, "lead"))
    approval_id = outcome.detail.approval_id
    assert approval_id and outcome.detail.rules == before and ledger.ops.rules == before
    (rule_id,) = change
    assert rule_id in ledger.approvals.by_id[approval_id].request.detail
    with pytest.raises(FailedPrecondition, match="own request"):
        execute(ledger, c.DecideApproval(approval_id, True, "lead", "operations"), NOW)
    with pytest.raises(PermissionDenied):
        execute(ledger, c.DecideApproval(approval_id, True, "clerk", "warehouse"), NOW)
    assert ledger.ops.rules == before
    run(ledger, events, NOW, c.DecideApproval(approval_id, True, *MANAGER))
    assert ledger.ops.rules.version == 2 and ledger.ops.rules.rules == proposed
    assert ledger.ops.rules.set_by == "lead"
    # Refused instead: nothing changes.
    other, other_events = world()
    waiting = run(other, other_events, NOW, c.SetRules(proposed, 1, "lead")).detail
    run(other, other_events, NOW, c.DecideApproval(waiting.approval_id, False, *MANAGER))
    assert other.ops.rules == before


def test_a_rule_set_that_keeps_every_approval_applies_at_once():
    """Tightening, or making a rule that acts on its own act less (the count-variance sales
    hold on larger variances only), needs no second person."""
    ledger, events = world()
    changes: dict[str, dict] = {}
    for version, change in enumerate((
            {"count-variance": {"threshold": 25}},  # acted alone before, still does
            {"node-late-shipments": {"threshold": 5}},  # still waits for approval
            {"count-variance": {"threshold": 25, "requires_approval": True}},  # added
            {"sku-return-rate": {"enabled": False}}), start=1):
        changes.update(change)
        outcome = run(ledger, events, NOW, c.SetRules(_changed(**changes), version, "lead"))
        assert not outcome.detail.approval_id, change
        assert ledger.ops.rules.version == version + 1
    # The sales hold's approval, added, is not taken away by one person either.
    changes["count-variance"] = {"threshold": 25}
    assert run(ledger, events, NOW, c.SetRules(_changed(**changes), 5, "lead")
               ).detail.approval_id


def test_an_approved_rule_set_is_not_applied_over_a_newer_one():
    ledger, events = world()
    lifted = _changed(**{"node-late-shipments": {"requires_approval": False}})
    approval_id = run(ledger, events, NOW, c.SetRules(lifted, 1, "lead")).detail.approval_id
    run(ledger, events, NOW, c.SetRules(_changed(**{"count-variance": {"threshold": 25}}),
                                        1, "lead"))
    newer = ledger.ops.rules
    with pytest.raises(FailedPrecondition, match="reject it and ask again"):
        execute(ledger, c.DecideApproval(approval_id, True, *MANAGER), NOW)
    assert ledger.ops.rules == newer
    run(ledger, events, NOW, c.DecideApproval(approval_id, False, *MANAGER))
    assert ledger.ops.rules == newer


def test_an_acknowledged_alert_is_not_raised_again_within_its_window():
    ledger, events = world()
    run(ledger, events, NOW, c.SubmitCycleCount((c.CountLine("mug", "n0", 215),)))
    (alert,) = alerts(ledger, "count-variance")
    run(ledger, events, NOW, c.AcknowledgeAlert(alert.info.alert_id, "lead", "on it"))
    with pytest.raises(FailedPrecondition, match="acknowledged already"):
        execute(ledger, c.AcknowledgeAlert(alert.info.alert_id, "lead"), NOW)
    run(ledger, events, NOW + 3_600_000, c.SubmitCycleCount((c.CountLine("mug", "n1", 180),)))
    assert len(alerts(ledger, "count-variance")) == 2  # another subject: mug@n1
    settle(ledger, events, NOW + 3_600_000)  # (no recount while a variance is held)
    run(ledger, events, NOW + 3_600_000,
        c.SubmitCycleCount((c.CountLine("mug", "n0", 240),)))
    assert len(alerts(ledger, "count-variance")) == 2  # mug@n0: acknowledged an hour ago
    settle(ledger, events, NOW + DAY_MS)
    run(ledger, events, NOW + DAY_MS, c.SubmitCycleCount((c.CountLine("mug", "n0", 260),)))
    assert len(alerts(ledger, "count-variance")) == 3  # a day later it may fire again


def settle(ledger: Ledger, events: list, at: int) -> None:
    """Approve every count variance waiting: its units are booked, the SKU may be counted
    again."""
    for exception_id in list(ledger.held_variances):
        run(ledger, events, at, c.ResolveException(exception_id, Resolution.APPROVE,
                                                   actor="ops-lead", role="operations"))


def test_replay_rebuilds_alerts_tasks_actions_and_the_same_checksum():
    ledger, events = world()
    ship_late(ledger, events, 3)
    run(ledger, events, NOW, c.SubmitCycleCount((c.CountLine("mug", "n0", 230),)))
    (approval_id,) = alerts(ledger, "node-late-shipments")[0].approval_ids
    run(ledger, events, NOW, c.DecideApproval(approval_id, True, *MANAGER))
    replayed = Ledger(ledger.settings)
    replayed.apply(events, replay=True)
    assert replayed.checksum() == ledger.checksum()
    assert replayed.ops.fingerprint() == ledger.ops.fingerprint()
    assert sorted(replayed.ops.alerts) == sorted(ledger.ops.alerts)


def test_running_the_same_commands_again_raises_the_same_alerts():
    first, _ = world()
    second, _ = world()
    for ledger in (first, second):
        events: list = []
        ship_late(ledger, events, 3)
        run(ledger, events, NOW, c.SubmitCycleCount((c.CountLine("mug", "n0", 230),)))
    assert first.checksum() == second.checksum()
    assert [a.info for a in first.ops.alerts.values()] == \
        [a.info for a in second.ops.alerts.values()]


# ---- emergency changes ---------------------------------------------------------------------
def emergency(ledger, events, spec: ActionSpec, requester=("clerk-1", "warehouse")):
    return run(ledger, events, NOW, c.RequestEmergencyChange(spec, requester[0])).detail


def test_disabling_a_node_in_an_emergency_needs_someone_else_to_approve_it():
    ledger, events = world()
    approval_id = emergency(ledger, events, ActionSpec(ActionType.DISABLE_NODE, node_id="n0",
                                                       reason="flooded"))
    assert ledger.catalog.nodes[0].enabled  # nothing changes before the approval
    with pytest.raises(FailedPrecondition, match="own request"):
        execute(ledger, c.DecideApproval(approval_id, True, "clerk-1", "operations"), NOW)
    run(ledger, events, NOW, c.DecideApproval(approval_id, True, *MANAGER))
    assert not ledger.catalog.nodes[0].enabled
    (action,) = ledger.ops.actions.values()
    assert (action.info.actor, action.info.approval_id) == ("ops-lead", approval_id)
    assert action.info.spec.requested_by == "clerk-1"
    run(ledger, events, NOW, c.AllocateOrders((order("o", "web", ("mug", 1)),)))
    assert ledger.orders.orders["o"].last_decision.packages[0].node == 1
    run(ledger, events, NOW, c.ReverseAction(action.info.action_id, "ops-lead", "dry again"))
    assert ledger.catalog.nodes[0].enabled
    # an admin may still switch a node off directly (catalogue maintenance); an
    # emergency request for a node that is off already is refused
    run(ledger, events, NOW, c.UpsertNodes((dataclasses.replace(ledger.catalog.nodes[0],
                                                                enabled=False),)))
    with pytest.raises(FailedPrecondition, match="disabled already"):
        emergency(ledger, events, ActionSpec(ActionType.DISABLE_NODE, node_id="n0",
                                             reason="again"))


def test_a_node_set_by_hand_ends_the_emergency_shutdown_it_overrides():
    """Re-enabled by an admin while its shutdown was in force, the shutdown stayed "in
    force": a later emergency shutdown, approved, was skipped (the node stayed open), and
    reversing the old one enabled the node an admin had closed by hand since."""
    ledger, events = world()
    node = ledger.catalog.nodes[0]
    first = emergency(ledger, events, ActionSpec(ActionType.DISABLE_NODE, node_id="n0",
                                                 reason="flooded"))
    run(ledger, events, NOW, c.DecideApproval(first, True, *MANAGER))
    (old,) = ledger.ops.actions.values()
    run(ledger, events, NOW, c.UpsertNodes((dataclasses.replace(node, enabled=True),)))
    assert not ledger.ops.active_action_records()  # superseded by the hand
    second = emergency(ledger, events, ActionSpec(ActionType.DISABLE_NODE, node_id="n0",
                                                  reason="flooded again"))
    run(ledger, events, NOW, c.DecideApproval(second, True, *MANAGER))
    assert not ledger.catalog.nodes[0].enabled
    with pytest.raises(FailedPrecondition, match="reversed already"):
        execute(ledger, c.ReverseAction(old.info.action_id, "ops-lead"), NOW)
    assert not ledger.catalog.nodes[0].enabled


def test_a_safety_stock_only_channel_sells_only_above_its_reserve():
    ledger, events = world()
    approval_id = emergency(ledger, events, ActionSpec(
        ActionType.CHANNEL_SAFETY_STOCK_ONLY, channel_id="web", amount=150, reason="feed down"))
    run(ledger, events, NOW, c.DecideApproval(approval_id, True, *MANAGER))
    assert sellable(ledger, "mug", "n0") == 50  # web: 200 - 150
    mkt = available_to_sell(ledger, np.array([2]), np.array([0]), 1)
    assert int(mkt.available_to_sell[0, 0]) == 200  # other channels unchanged
    with pytest.raises(FailedPrecondition):
        execute(ledger, c.ReserveStock("big", "web", NOW + 60_000,
                                       (c.StockLine("mug", "n0", 51),)), NOW)
    run(ledger, events, NOW, c.ReserveStock("ok", "web", NOW + 60_000,
                                            (c.StockLine("mug", "n0", 50),)))
    (action,) = ledger.ops.actions.values()
    run(ledger, events, NOW, c.ReverseAction(action.info.action_id, "ops-lead"))
    assert sellable(ledger, "mug", "n0") == 150  # 200 less the 50 reserved


def test_paused_restocking_sends_returns_to_quarantine():
    ledger, events = world()
    sell_and_ship(ledger, events, "o", "mug", 2)
    run(ledger, events, NOW, c.CreateReturn("r", "o", (("1", 2),)), c.ReceiveReturn("r"))
    approval_id = emergency(ledger, events, ActionSpec(ActionType.PAUSE_RETURNS_RESTOCK,
                                                       reason="contamination check"))
    run(ledger, events, NOW, c.DecideApproval(approval_id, True, *MANAGER))
    node = ledger.returns.returns["r"].auth.node
    mug = ledger.catalog.sku("mug")
    quarantined = ledger.quantity(mug, node, Bucket.QUARANTINED)
    run(ledger, events, NOW, c.InspectReturn("r", (("1", Grade.LIKE_NEW),)))
    assert ledger.quantity(mug, node, Bucket.QUARANTINED) == quarantined + 2
    with pytest.raises(FailedPrecondition, match="paused already"):
        emergency(ledger, events, ActionSpec(ActionType.PAUSE_RETURNS_RESTOCK, reason="x"))


def test_emergency_requests_are_checked():
    ledger, _ = world()
    for spec, match in (
            (ActionSpec(ActionType.ROUTING_PENALTY, node_id="n0", reason="x"), "emergency"),
            (ActionSpec(ActionType.DISABLE_NODE, node_id="nowhere", reason="x"), "nowhere"),
            (ActionSpec(ActionType.DISABLE_NODE, node_id="n0"), "reason"),
            (ActionSpec(ActionType.CHANNEL_SAFETY_STOCK_ONLY, channel_id="web", amount=0,
                        reason="x"), "reserve_units")):
        before = ledger.checksum()
        with pytest.raises(DomainError, match=match):
            execute(ledger, c.RequestEmergencyChange(spec, "clerk"), NOW)
        assert ledger.checksum() == before


def test_every_rule_kind_has_a_default_rule():
    assert {r.kind for r in DEFAULT_RULES.rules} == set(RuleKind)


def test_two_approved_holds_of_one_sku_at_a_node_apply_once_and_reverse_to_what_it_was():
    ledger, events = world(**{"count-variance": {"requires_approval": True}})
    mug, n0 = ledger.catalog.sku("mug"), ledger.catalog.node("n0")
    before = ledger.safety_stock(mug, n0)
    run(ledger, events, NOW, c.SubmitCycleCount((c.CountLine("mug", "n0", 212),)))
    (alert,) = alerts(ledger, "count-variance")
    run(ledger, events, NOW, c.AcknowledgeAlert(alert.info.alert_id, "lead", "looking"))
    settle(ledger, events, NOW)
    later = NOW + DAY_MS + 1  # the alert may fire again: a second hold is asked for
    run(ledger, events, later, c.SubmitCycleCount((c.CountLine("mug", "n0", 240),)))
    pending = [a.request.approval_id for a in ledger.approvals.pending()]
    assert len(pending) == 2
    for approval_id in pending:
        run(ledger, events, later, c.DecideApproval(approval_id, True, *MANAGER))
    (action,) = ledger.ops.actions.values()
    assert ledger.safety_stock(mug, n0) == RESTRICTED_SAFETY
    run(ledger, events, later, c.ReverseAction(action.info.action_id, "lead", "recounted"))
    assert ledger.safety_stock(mug, n0) == before


@pytest.mark.parametrize("approved_first", [True, False])
def test_an_approved_count_hold_is_lifted_by_its_recount_task(approved_first):
    ledger, events = world(**{"count-variance": {"requires_approval": True}})
    mug, n0 = ledger.catalog.sku("mug"), ledger.catalog.node("n0")
    run(ledger, events, NOW, c.SubmitCycleCount((c.CountLine("mug", "n0", 212),)))
    (alert,) = alerts(ledger, "count-variance")
    (task_id,) = alert.task_ids
    (approval_id,) = alert.approval_ids
    assert ledger.ops.tasks[task_id].info.action_id == ""  # (no hold yet: it waits)
    steps = [c.DecideApproval(approval_id, True, *MANAGER),
             c.CompleteTask(task_id, "counter", "inventory_control", "recounted: 212")]
    for step in steps if approved_first else steps[::-1]:
        run(ledger, events, NOW, step)
    # Recounted: the SKU sells at n0 again, whichever came first, and nothing stays in force.
    assert ledger.safety_stock(mug, n0) == 0 and sellable(ledger, "mug", "n0") == 200
    assert not any(action.active for action in ledger.ops.actions.values())
    replayed = Ledger(ledger.settings)
    replayed.apply(events, replay=True)
    assert replayed.checksum() == ledger.checksum()
