"""The operations scenario end to end, on a server whose clock the test moves: a spike of
returns on one SKU, a node that ships late, a cycle count with a large variance. The
rules raise the intended alerts, tasks and actions, and they show in GetKpis,
ListAlerts, /metrics and the operations dashboard (in a real headless Chromium)."""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from allocd.v1 import catalog_service_pb2 as cpb
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import operations_service_pb2 as ops
from allocd.v1 import operations_service_pb2_grpc as ops_grpc
from allocd.v1 import returns_service_pb2 as rpb
from allocd.v1 import returns_service_pb2_grpc as rgrpc
from allocd.v1 import types_pb2
from prometheus_client.parser import text_string_to_metric_families

from service.codec import node_to_proto
from service.demo import DEMO_NODES
from service.server import AllocdServer
from tests.e2e.conftest import (
    DAY_MS,
    ORDER_NODES,
    RPC_TIMEOUT_S,
    Api,
    OrderWorld,
    ServerThread,
    demo_network_proto,
    e2e_settings,
    rid,
)
from tests.e2e.test_operations import free_port, who

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class Clock:
    """The server's clock: 06:00 UTC today (before every node's cut-off), moved by the test."""

    def __init__(self) -> None:
        self.now_ms = (time.time_ns() // 1_000_000) // DAY_MS * DAY_MS + 6 * 3_600_000

    def __call__(self) -> int:
        return self.now_ms


class ClockedServer(ServerThread):
    def __init__(self, settings, clock: Clock) -> None:
        super().__init__(settings)
        self.clock = clock

    async def _start(self) -> int:
        self.server = AllocdServer(self.settings, clock=self.clock)
        return await self.server.start()


@dataclass
class Scenario:
    api: Api
    operations: ops_grpc.OperationsServiceStub
    metrics_port: int
    clock: Clock
    spike: str
    base: str
    late: str
    counted: str
    penalty_approval: str


def run_scenario(api: Api, clock: Clock) -> Scenario:
    world = OrderWorld(api, ORDER_NODES)
    api.catalog.UpsertNodes(cpb.UpsertNodesRequest(
        request_id=rid(), nodes=[node_to_proto(n) for n in DEMO_NODES
                                 if n.node_id in ORDER_NODES]), timeout=RPC_TIMEOUT_S)
    api.catalog.UpsertChannels(cpb.UpsertChannelsRequest(request_id=rid(), channels=[
        types_pb2.Channel(channel_id="web", name="Web store"),
        types_pb2.Channel(channel_id="marketplace", name="Marketplace")]), timeout=RPC_TIMEOUT_S)
    from allocd.v1 import network_service_pb2 as npb

    api.network.SetNetwork(npb.SetNetworkRequest(
        request_id=rid(), network=demo_network_proto(ORDER_NODES)), timeout=RPC_TIMEOUT_S)
    spike, base, late, counted = (world.sku() for _ in range(4))
    api.catalog.UpsertSkus(cpb.UpsertSkusRequest(request_id=rid(), skus=[
        types_pb2.Sku(sku_id=s, name=s, weight_lb=1.0, price_micros=10_000_000,
                      unit_cost_micros=4_000_000,
                      dimensions=types_pb2.Dimensions(length_in=6, width_in=4, height_in=2),
                      category="apparel" if s in (spike, base) else "home")
        for s in (spike, base, late, counted)]), timeout=RPC_TIMEOUT_S)
    for sku, node, units in ((spike, "AVP3", 50), (base, "AVP3", 50), (late, "IND1", 20),
                             (counted, "AVP3", 40)):
        world.stock(sku, node, units)

    # A node that ships late: three orders placed yesterday at IND1 leave today.
    today = clock.now_ms
    clock.now_ms = today - DAY_MS
    packages = [world.allocate(world.order((late, 1))).allocation.packages[0]
                for _ in range(3)]
    assert {p.node_id for p in packages} == {"IND1"}
    clock.now_ms = today
    wave = world.release("IND1")
    assert set(wave.package_ids) == {p.package_id for p in packages}
    for package in packages:
        world.pick(package.package_id, {"1": 1})
        world.pack(package.package_id, {late: 1})
        world.ship(package.package_id)

    # A spike of returns on one SKU: 6 of 10 back, against 1 of 10 for its category.
    returns = rgrpc.ReturnsServiceStub(api.channel)

    def sell_and_return(sku: str, units_back: int) -> None:
        order = world.order((sku, 10))
        answer = world.allocate(order)
        world.fulfil(answer.allocation.packages[0])
        for _ in range(units_back):
            returns.CreateReturn(rpb.CreateReturnRequest(
                request_id=rid(), order_id=order.order_id,
                lines=[rpb.ReturnLineRequest(line_id="1", quantity=1)], reason="too small"),
                metadata=who("agent-7", "customer_service"), timeout=RPC_TIMEOUT_S)

    sell_and_return(base, 1)
    sell_and_return(spike, 6)

    # A cycle count with a large variance: 15 on the shelf where the ledger has 40.
    api.inventory.SubmitCycleCount(inv.SubmitCycleCountRequest(
        request_id=rid(), reference="aisle-9", lines=[inv.CountLine(
            sku_id=counted, node_id="AVP3", counted_quantity=15)]), timeout=RPC_TIMEOUT_S)

    operations = ops_grpc.OperationsServiceStub(api.channel)
    (late_alert,) = operations.ListAlerts(ops.ListAlertsRequest(rule_id="node-late-shipments"),
                                          timeout=RPC_TIMEOUT_S).alerts
    (approval_id,) = late_alert.approval_ids
    return Scenario(api, operations, api.settings.metrics_port, clock, spike, base, late,
                    counted, approval_id)


@pytest.fixture(scope="module")
def scenario():
    clock = Clock()
    settings = e2e_settings(metrics_port=free_port())
    handle = ClockedServer(settings, clock)
    port = handle.start()
    api = Api(f"127.0.0.1:{port}", settings)
    try:
        yield run_scenario(api, clock)
    finally:
        api.close()
        handle.stop()


def alerts_by_rule(scenario: Scenario) -> dict[str, ops.Alert]:
    listed = scenario.operations.ListAlerts(ops.ListAlertsRequest(include_acknowledged=True),
                                            timeout=RPC_TIMEOUT_S).alerts
    return {a.rule_id: a for a in listed}


def test_the_scenario_raises_the_three_intended_alerts(scenario):
    alerts = alerts_by_rule(scenario)
    assert set(alerts) == {"sku-return-rate", "node-late-shipments", "count-variance"}
    spike = alerts["sku-return-rate"]
    assert spike.subject == scenario.spike and spike.value == pytest.approx(0.5)  # at the 5th
    tasks = {t.task_id: t for t in scenario.operations.ListTasks(
        ops.ListTasksRequest(), timeout=RPC_TIMEOUT_S).tasks}
    assert sorted(tasks[t].type for t in spike.task_ids) == [
        ops.TASK_TYPE_QUALITY_REVIEW, ops.TASK_TYPE_SUPPLIER_ESCALATION]
    late = alerts["node-late-shipments"]
    assert (late.subject, late.value) == ("IND1", 3)
    count = alerts["count-variance"]
    assert count.subject == f"{scenario.counted}@AVP3" and count.value == 25
    (task_id,) = count.task_ids
    assert tasks[task_id].type == ops.TASK_TYPE_CYCLE_COUNT
    (restriction,) = count.action_ids
    actions = {a.action_id: a for a in scenario.operations.ListActions(
        ops.ListActionsRequest(), timeout=RPC_TIMEOUT_S).actions}
    assert actions[restriction].type == ops.ACTION_TYPE_RESTRICT_SKU
    assert scenario.api.sellable(scenario.counted, ["AVP3"]) == 0


def test_the_scenario_shows_in_get_kpis(scenario):
    response = scenario.operations.GetKpis(ops.GetKpisRequest(
        windows=[ops.KPI_WINDOW_DAY], scopes=["all", "sku", "category", "node"],
        subjects=[scenario.spike, "apparel", "IND1", "AVP3"], include_reconciliation=True),
        timeout=RPC_TIMEOUT_S)
    got = {(k.name, k.scope, k.subject): k for k in response.kpis}
    assert got[("return_rate", "sku", scenario.spike)].value == pytest.approx(6 / 10)
    assert got[("return_rate", "category", "apparel")].value == pytest.approx(7 / 20)
    assert got[("late_shipments", "node", "IND1")].value == 3
    sla = got[("sla_attainment", "all", "")]
    assert (sla.numerator, sla.denominator) == (2, 5)  # 3 late + 2 on time
    assert got[("oversell_rate", "all", "")].value == 0
    accuracy = got[("inventory_accuracy", "node", "AVP3")]
    assert (accuracy.numerator, accuracy.denominator) == (0, 1)
    queues = {q.type: q for q in response.exception_queues}
    assert queues["count_variance"].under_hour == 1
    assert response.reconciliation.reconciled


def test_an_approved_routing_penalty_moves_orders_off_the_late_node(scenario):
    world = OrderWorld(scenario.api, ORDER_NODES)
    world.stock(scenario.late, "ATL6", 20)
    before = world.allocate(world.order((scenario.late, 1)))
    assert before.allocation.packages[0].node_id == "IND1"  # cheaper, until penalised
    rgrpc.ReturnsServiceStub(scenario.api.channel).DecideApproval(rpb.DecideApprovalRequest(
        request_id=rid(), approval_id=scenario.penalty_approval, approve=True,
        note="carrier pickups missed all week"), metadata=who("duty-manager", "operations"),
        timeout=RPC_TIMEOUT_S)
    after = world.allocate(world.order((scenario.late, 1)))
    assert after.allocation.packages[0].node_id == "ATL6"
    (action,) = [a for a in scenario.operations.ListActions(
        ops.ListActionsRequest(), timeout=RPC_TIMEOUT_S).actions if a.node_id == "IND1"]
    assert (action.type, action.applied_by, action.amount) == (
        ops.ACTION_TYPE_ROUTING_PENALTY, "duty-manager", 5_000_000)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_scenario_shows_in_metrics(scenario):
    samples = scrape(scenario.metrics_port)
    for rule in ("sku-return-rate", "node-late-shipments", "count-variance"):
        assert samples[("allocd_alerts_open", (("rule", rule),))] == 1
    for task in ("quality_review", "supplier_escalation", "cycle_count"):
        assert samples[("allocd_tasks_open", (("type", task),))] == 1
    assert samples[("allocd_actions_active", (("type", "restrict_sku"),))] == 1
    key = ("allocd_kpi", (("name", "return_rate"), ("scope", "sku"),
                          ("subject", scenario.spike), ("window", "day")))
    assert samples[key] == pytest.approx(0.6)
    late = ("allocd_kpi", (("name", "late_shipments"), ("scope", "node"), ("subject", "IND1"),
                           ("window", "day")))
    assert samples[late] == 3


def test_the_dashboard_json_carries_the_scenario(scenario):
    import json

    url = f"http://127.0.0.1:{scenario.metrics_port}/dashboard/operations.json"
    data = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert {a["rule_id"] for a in data["alerts"]} >= {"sku-return-rate", "count-variance"}
    cards = {k["name"]: k for k in data["kpis"]}
    assert cards["oversell_rate"]["day"] == 0 and len(cards["fill_rate"]["trend"]) == 60
    nodes = {n["node_id"]: n for n in data["nodes"]}
    assert nodes["IND1"]["late_day"] == 3


# ---- the dashboard in a real browser ---------------------------------------------------------
def browser(profile: Path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install -y chromium "
                    "chromium-driver (make test installs them)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never fetch a driver or a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1440,1400",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_the_dashboard_shows_kpis_and_alerts_live_in_chromium(scenario, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser(tmp_path / "profile")
    try:
        driver.get(f"http://127.0.0.1:{scenario.metrics_port}/dashboard")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.execute_script("return document.body.dataset.loaded") == "true")
        cards = {c.get_attribute("data-kpi"): c.text
                 for c in driver.find_elements(By.CSS_SELECTOR, ".card")}
        assert {"oversell_rate", "fill_rate", "sla_attainment", "return_rate",
                "inventory_accuracy"} <= set(cards)
        assert "0.0%" in cards["oversell_rate"] and "40.0%" in cards["sla_attainment"]
        assert driver.find_elements(By.CSS_SELECTOR, ".card svg path")  # trend charts
        alerts = driver.find_element(By.ID, "alerts").text
        for text in (scenario.spike, f"{scenario.counted}@AVP3", "IND1", "sku-return-rate"):
            assert text in alerts
        assert "count_variance" in driver.find_element(By.ID, "queues").text
        assert "IND1" in driver.find_element(By.ID, "nodes").text
        # live: acknowledge an alert over gRPC; the open page shows it without a reload
        spike = alerts_by_rule(scenario)["sku-return-rate"]
        scenario.operations.AcknowledgeAlert(ops.AcknowledgeAlertRequest(
            request_id=rid(), alert_id=spike.alert_id, note="quality team on it"),
            metadata=who("lead", "operations"), timeout=RPC_TIMEOUT_S)
        wait.until(lambda d: "acknowledged" in d.find_element(By.ID, "alerts").text)
        shot = tmp_path / "operations-dashboard.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        artifacts = REPO / "artifacts"
        artifacts.mkdir(exist_ok=True)
        shutil.copy(shot, artifacts / shot.name)
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


def test_completing_the_recount_lifts_the_sales_hold(scenario):
    count = alerts_by_rule(scenario)["count-variance"]
    (task_id,) = count.task_ids
    with pytest.raises(grpc.RpcError) as refused:
        scenario.operations.CompleteTask(ops.CompleteTaskRequest(
            request_id=rid(), task_id=task_id), metadata=who("picker", "warehouse"),
            timeout=RPC_TIMEOUT_S)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    scenario.operations.CompleteTask(ops.CompleteTaskRequest(
        request_id=rid(), task_id=task_id, note="recount: 15"),
        metadata=who("counter", "inventory_control"), timeout=RPC_TIMEOUT_S)
    assert scenario.api.sellable(scenario.counted, ["AVP3"]) == 15
    samples = scrape(scenario.metrics_port)
    assert samples.get(("allocd_actions_active", (("type", "restrict_sku"),)), 0) == 0
