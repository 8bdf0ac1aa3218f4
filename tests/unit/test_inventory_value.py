"""Inventory value models: LP optima and duals against hand-solved and brute-forced
instances, the consolidation-aware values, forecast smoothing, and the ledger state
(policy, forecast, values) changed only through commands and reproduced by replay."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import commands as c
from core.demand import SmoothedDemand, ValuePolicy
from core.errors import InvalidArgument, NotFound
from core.inventory_value import (
    CostModel,
    Profile,
    compute_values,
    gather_inputs,
    poisson_tail,
    profile_values,
    shortage_values,
    transport_values,
)
from core.ledger import Ledger
from core.model import Bucket, ChannelSpec, NodeSpec, SkuSpec
from core.network import CarrierService, LaneCost, NetworkSpec, Region, SlaTier
from core.operations import execute
from core.orders import OrderLineSpec, OrderSpec

F = 8.0  # per shipment
U_A, U_B = 1.0, 3.0  # per unit from A and from B


def costs(n_regions: int = 1, unserved: float = 100.0) -> CostModel:
    return CostModel(fixed=np.full((2, n_regions), F),
                     unit=np.array([[U_A] * n_regions, [U_B] * n_regions]),
                     unserved_fixed=np.full(n_regions, unserved),
                     unserved_unit=np.full(n_regions, unserved))


# ---- the transportation LP ---------------------------------------------------------
def test_transport_lp_serves_the_cheap_node_first_and_prices_its_last_unit():
    # 10 units of demand; A (cost F + 1 a unit) has 6, B (F + 3) has 10.
    inventory = np.array([[6.0, 10.0]])
    result = transport_values(inventory, costs(), np.array([[10.0]]))
    assert result.optimal
    assert result.objective == pytest.approx(6 * (F + U_A) + 4 * (F + U_B))
    assert result.values[0, 0] == pytest.approx(U_B - U_A)  # one more at A saves this
    assert result.values[0, 1] == pytest.approx(0.0)  # B has units to spare
    assert result.flows[(0, 0)] == pytest.approx(6.0)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=4, max_size=4),
       st.lists(st.integers(0, 5), min_size=4, max_size=4),
       st.lists(st.integers(1, 9), min_size=4, max_size=4))
def test_a_transport_dual_is_what_one_more_unit_saves(stock, demand, unit_costs):
    """Perturbing the inventory by one unit moves the optimum by the dual (integral data:
    the LP's optimum is piecewise linear in the stock, the dual is its slope on one side).
    A node without stock has no variable and no value: there is nothing to take there."""
    inventory = np.array(stock, float).reshape(2, 2)  # [sku, node]
    cost = CostModel(np.zeros((2, 2)), np.array(unit_costs, float).reshape(2, 2),
                     np.zeros(2), np.full(2, 20.0))
    need = np.array(demand, float).reshape(2, 2)  # [region, sku]
    base = transport_values(inventory, cost, need)
    for s, k in itertools.product(range(2), range(2)):
        if not inventory[s, k]:
            assert base.values[s, k] == 0.0
            continue
        more = inventory.copy()
        more[s, k] += 1
        less = inventory.copy()
        less[s, k] -= 1
        saved = base.objective - transport_values(more, cost, need).objective
        lost = transport_values(less, cost, need).objective - base.objective
        # The dual lies between the right and left slopes of the optimum in the stock.
        assert saved - 1e-6 <= base.values[s, k] <= lost + 1e-6


def test_transport_lp_refuses_a_demand_of_the_wrong_shape():
    with pytest.raises(InvalidArgument):
        transport_values(np.ones((1, 2)), costs(), np.ones((2, 2)))
    with pytest.raises(InvalidArgument):
        transport_values(np.ones((1, 2)), costs(), np.array([[math.nan]]))


# ---- the consolidation-aware LP (DLP) --------------------------------------------------
def pair_instance(x_at_a: float) -> tuple[np.ndarray, list[Profile]]:
    """Ten orders of {x, y} from one region; A has x_at_a of x and 10 y, B has 10 of each."""
    inventory = np.array([[x_at_a, 10.0], [10.0, 10.0]])  # [sku x/y, node A/B]
    return inventory, [Profile(0, (0, 1), (1, 1), 10.0)]


def brute_force_pair(x_at_a: float, step: float = 0.05) -> float:
    """Best cost over a grid of (share of x from A, share of y from A); each order
    opens a share max(a, b) of a shipment at A and max(1 - a, 1 - b) at B."""
    best = math.inf
    grid = np.arange(0.0, 1.0 + 1e-9, step)
    for a, b in itertools.product(grid, grid):
        if 10 * a > x_at_a + 1e-9:
            continue
        per_order = F * (max(a, b) + max(1 - a, 1 - b)) + (a + b) * U_A + (2 - a - b) * U_B
        best = min(best, 10 * per_order)
    return best


@pytest.mark.parametrize("x_at_a", [0.0, 2.0, 4.0, 7.0, 10.0])
def test_dlp_optimum_matches_brute_force_on_a_two_item_order(x_at_a):
    inventory, profiles = pair_instance(x_at_a)
    result = profile_values(inventory, costs(), profiles)
    assert result.optimal
    assert result.objective == pytest.approx(brute_force_pair(x_at_a), rel=1e-6)


def test_dlp_values_a_scarce_unit_with_the_item_it_ships_with():
    # With x short at A, y follows x (one shipment beats a split), so one more x at A
    # saves both items' cost difference: 2 (U_B - U_A); the per-unit LP sees only one.
    inventory, profiles = pair_instance(4.0)
    result = profile_values(inventory, costs(), profiles)
    assert result.objective == pytest.approx(10 * (F + 0.4 * 2 * U_A + 0.6 * 2 * U_B))
    assert result.values[0, 0] == pytest.approx(2 * (U_B - U_A))
    more, _ = pair_instance(5.0)
    saved = result.objective - profile_values(more, costs(), profiles).objective
    assert saved == pytest.approx(result.values[0, 0])
    plain = transport_values(inventory, costs(), np.array([[10.0, 10.0]]))
    assert plain.values[0, 0] == pytest.approx(U_B - U_A)


def test_unserved_items_cost_the_unserved_price_once_per_order():
    inventory = np.zeros((2, 2))
    result = profile_values(inventory, costs(unserved=5.0), [Profile(0, (0, 1), (1, 1), 3.0)])
    assert result.objective == pytest.approx(3 * (5.0 + 2 * 5.0))


# ---- consolidation-aware values ------------------------------------------------------
def test_poisson_tail_is_a_probability_decreasing_in_the_stock():
    assert poisson_tail(5.0, 0) == 1.0
    assert poisson_tail(0.0, 3) == 0.0
    tails = [poisson_tail(20.0, k) for k in range(0, 60)]
    assert all(0.0 <= t <= 1.0 for t in tails)
    assert all(a >= b for a, b in itertools.pairwise(tails))
    assert poisson_tail(20.0, 20) == pytest.approx(0.5, abs=0.06)


def test_shortage_values_add_a_shipment_share_where_stock_is_tight():
    # Plenty of stock for the expected demand everywhere: the LP's duals are all zero,
    # but A's stock is just the expected demand, so a unit taken there is likely missed.
    inventory = np.array([[10.0, 1000.0]])
    result = transport_values(inventory, costs(), np.array([[10.0]]))
    assert np.allclose(result.values, 0.0)
    values = shortage_values(result, inventory, np.array([F, F]), weight=0.5)
    assert values[0, 0] == pytest.approx(0.5 * F * poisson_tail(10.0, 10.0))
    assert values[0, 1] == 0.0  # B serves nothing, so nothing is missed there
    assert np.array_equal(shortage_values(result, inventory, np.array([F, F]), 0.0),
                          result.values)


# ---- forecast smoothing ------------------------------------------------------------
DAY = 86_400_000


def test_smoothed_demand_by_hand():
    demand = SmoothedDemand()
    tau = 1.0 / math.log(2.0)  # a one-day half-life
    demand.observe(10, 0, 1.0)
    assert demand.rate(0, 1.0) == pytest.approx(10 / tau)
    assert demand.rate(DAY, 1.0) == pytest.approx(10 / tau / 2)  # one half-life later
    demand.observe(4, DAY, 1.0)
    assert demand.rate(DAY, 1.0) == pytest.approx(10 / tau / 2 + 4 / tau)
    assert demand.rate(3 * DAY, 1.0) == pytest.approx((10 / tau / 2 + 4 / tau) / 4)


def test_a_steady_stream_converges_to_its_rate():
    demand = SmoothedDemand()
    for hour in range(24 * 60):
        demand.observe(2, hour * DAY // 24, 3.0)  # 48 units a day
    assert demand.rate(24 * 60 * DAY // 24, 3.0) == pytest.approx(48.0, rel=0.03)


# ---- through the ledger ------------------------------------------------------------
def small_ledger() -> Ledger:
    """Nodes A (east) and B (west), regions E and W, SKUs X and Y; lanes F + unit."""
    ledger = Ledger()
    execute(ledger, c.UpsertNodes((NodeSpec("A", latitude=40.7, longitude=-74.0),
                                   NodeSpec("B", latitude=34.0, longitude=-118.2))), 0)
    execute(ledger, c.UpsertChannels((ChannelSpec("web"),)), 0)
    execute(ledger, c.UpsertSkus((SkuSpec("X", weight_lb=1.0), SkuSpec("Y", weight_lb=1.0))), 0)
    lanes = tuple(LaneCost(n, r, 8_000_000, per_unit)
                  for n, r, per_unit in (("A", "E", 1_000_000), ("A", "W", 3_000_000),
                                         ("B", "E", 3_000_000), ("B", "W", 1_000_000)))
    service = CarrierService("lane", "test", ((0,),) * 7, (1,) * 7)
    execute(ledger, c.SetNetwork(NetworkSpec(
        regions=(Region("E", 40.7, -74.0, ("1",)), Region("W", 34.0, -118.2, ("9",))),
        services=(service,), lanes=lanes)), 0)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("X", "A", 3), c.ReceiptLine("X", "B", 50),
                                    c.ReceiptLine("Y", "A", 50))), 0)
    return ledger


def order(order_id: str, postal: str, *skus: str) -> OrderSpec:
    return OrderSpec(order_id, "web", SlaTier.STANDARD,
                     tuple(OrderLineSpec(f"L{i}", s, 1) for i, s in enumerate(skus)),
                     postal_code=postal)


def test_orders_teach_the_forecast_and_a_replay_learns_the_same():
    ledger = small_ledger()
    events = []
    for i in range(5):
        out = execute(ledger, c.AllocateOrders((order(f"O{i}", "1", "X", "Y"),)), i * DAY // 4)
        events.extend(out.events)
    x = ledger.catalog.sku("X")
    learned = ledger.learned_demand[("E", x)]
    tau = 7.0 / math.log(2.0)
    expected = sum(math.exp(-(4 - i) * 0.25 / tau) for i in range(5)) / tau
    assert learned.rate(DAY, 7.0) == pytest.approx(expected)
    assert ("W", x) not in ledger.learned_demand
    replayed = small_ledger()
    replayed.apply(events, replay=True)
    assert replayed.checksum() == ledger.checksum()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3 * DAY), st.sampled_from(["1", "9"]),
                          st.lists(st.sampled_from(["X", "Y"]), min_size=1, max_size=2,
                                   unique=True), st.integers(1, 5)), max_size=12))
def test_the_ledger_learns_exactly_what_smoothed_demand_observes(arrivals):
    """The ledger's inlined smoothing gives bit-for-bit the floats of SmoothedDemand.observe,
    with time going forwards, standing still and (a late command) going backwards."""
    ledger = small_ledger()
    expected: dict[tuple[str, int], SmoothedDemand] = {}
    for i, (now, postal, skus, qty) in enumerate(arrivals):
        spec = OrderSpec(f"O{i}", "web", SlaTier.STANDARD,
                         tuple(OrderLineSpec(f"L{j}", s, qty) for j, s in enumerate(skus)),
                         postal_code=postal)
        execute(ledger, c.AllocateOrders((spec,)), now)
        region = "E" if postal == "1" else "W"
        for sku_id in skus:
            key = (region, ledger.catalog.sku(sku_id))
            demand = expected.setdefault(key, SmoothedDemand(0.0, now))
            demand.observe(qty, now, ledger.half_life_days)
    assert {k: (d.level, d.last_ms) for k, d in ledger.learned_demand.items()} == {
        k: (d.level, d.last_ms) for k, d in expected.items()}


def test_supplied_forecast_replaces_the_learned_one_and_is_checked():
    ledger = small_ledger()
    execute(ledger, c.SetDemandForecast((c.ForecastLine("E", "X", 4.0),)), 0)
    assert ledger.supplied_forecast == {("E", ledger.catalog.sku("X")): 4.0}
    before = ledger.checksum()
    for bad, error in (((c.ForecastLine("Z", "X", 1.0),), NotFound),
                       ((c.ForecastLine("E", "nope", 1.0),), NotFound),
                       ((c.ForecastLine("E", "X", -1.0),), InvalidArgument),
                       ((c.ForecastLine("E", "X", math.inf),), InvalidArgument),
                       ((c.ForecastLine("E", "X", 1.0), c.ForecastLine("E", "X", 2.0)),
                        InvalidArgument)):
        with pytest.raises(error):
            execute(ledger, c.SetDemandForecast(bad), 0)
    assert ledger.checksum() == before
    execute(ledger, c.SetDemandForecast(()), 0)
    assert ledger.supplied_forecast == {}


def test_replacing_opportunity_costs_removes_the_others():
    ledger = small_ledger()
    execute(ledger, c.SetOpportunityCosts((c.OpportunityCostLine("X", "A", 5),
                                           c.OpportunityCostLine("Y", "A", 6))), 0)
    out = execute(ledger, c.ReplaceOpportunityCosts((c.OpportunityCostLine("X", "A", 7),
                                                     c.OpportunityCostLine("X", "B", 1))), 0)
    x, y = ledger.catalog.sku("X"), ledger.catalog.sku("Y")
    assert ledger.opportunity_costs == {(x, 0): 7, (x, 1): 1}
    assert len(out.events) == 3  # X@A changed, X@B added, Y@A removed
    again = execute(ledger, c.ReplaceOpportunityCosts((c.OpportunityCostLine("X", "A", 7),
                                                       c.OpportunityCostLine("X", "B", 1))), 0)
    assert again.events == ()
    assert (y, 0) not in ledger.opportunity_costs


def test_turning_the_policy_off_clears_the_values():
    ledger = small_ledger()
    execute(ledger, c.SetValuePolicy(ValuePolicy(enabled=True)), 0)
    execute(ledger, c.SetOpportunityCosts((c.OpportunityCostLine("X", "A", 5),)), 0)
    execute(ledger, c.SetValuePolicy(ValuePolicy(enabled=False)), 0)
    assert ledger.value_policy == ValuePolicy(enabled=False)
    assert ledger.opportunity_costs == {}
    with pytest.raises(InvalidArgument):
        execute(ledger, c.SetValuePolicy(ValuePolicy(enabled=True, horizon_days=math.nan)), 0)
    with pytest.raises(InvalidArgument):
        execute(ledger, c.SetValuePolicy(ValuePolicy(enabled=True, scale=-1.0)), 0)


def test_values_from_the_ledger_keep_the_scarce_unit_for_the_order_that_needs_it():
    """A has 3 X, and E's orders want X with Y (only A has Y): an X taken from A for W's
    order (B is as good for W) would split an E order. The values price X at A."""
    ledger = small_ledger()
    policy = ValuePolicy(enabled=True, horizon_days=1.0)
    execute(ledger, c.SetDemandForecast((c.ForecastLine("E", "X", 3.0),
                                         c.ForecastLine("E", "Y", 3.0),
                                         c.ForecastLine("W", "X", 5.0))), 0)
    inputs = gather_inputs(ledger, 0, policy)
    assert inputs.demand.sum() == pytest.approx(11.0)
    values = compute_values(inputs)
    x = ledger.catalog.sku("X")
    assert values.values[(x, 0)] > values.values.get((x, 1), 0)


def test_the_value_model_supplies_what_may_be_sold_not_the_safety_stock():
    """Safety stock is kept back from every sale: the model's supply leaves it out, as
    allocation does, so a SKU whose sellable units are scarce is valued as scarce."""
    ledger = small_ledger()
    policy = ValuePolicy(enabled=True, horizon_days=1.0)
    execute(ledger, c.SetDemandForecast((c.ForecastLine("E", "X", 3.0),)), 0)
    x, a = ledger.catalog.sku("X"), ledger.catalog.node("A")
    available = ledger.quantity(x, a, Bucket.AVAILABLE)
    assert available > 1
    before = gather_inputs(ledger, 0, policy).inventory
    execute(ledger, c.SetSafetyStock("X", "A", 1), 0)
    after = gather_inputs(ledger, 0, policy).inventory
    row = gather_inputs(ledger, 0, policy).skus.index(x)
    assert before[row, a] == available and after[row, a] == available - 1
    execute(ledger, c.SetSafetyStock("X", "A", available + 5), 0)
    assert gather_inputs(ledger, 0, policy).inventory[row, a] == 0  # (never below none)


def test_an_order_by_coordinates_teaches_its_nearest_region():
    ledger = small_ledger()
    spec = order("C1", "", "X")._replace(latitude=34.1, longitude=-118.0)
    execute(ledger, c.AllocateOrders((spec,)), 0)
    x = ledger.catalog.sku("X")
    assert set(ledger.learned_demand) == {("W", x)}


def test_allocations_teach_the_drawn_units_and_a_replay_learns_the_same():
    ledger = small_ledger()
    events = []
    for i in range(4):
        out = execute(ledger, c.AllocateOrders((order(f"O{i}", "1", "X"),)), i * DAY // 2)
        events.extend(out.events)
    x = ledger.catalog.sku("X")
    tau = 7.0 / math.log(2.0)
    # E's orders take X from A (the cheaper lane) until A's 3 units are gone, then B.
    assert ledger.drawn_units[(x, 0)].rate(DAY, 7.0) == pytest.approx(
        sum(math.exp(-(1 - i * 0.5) / tau) for i in range(3)) / tau)
    assert ledger.drawn_units[(x, 1)].rate(2 * DAY, 7.0) == pytest.approx(
        math.exp(-0.5 / tau) / tau)
    replayed = small_ledger()
    replayed.apply(events, replay=True)
    assert replayed.checksum() == ledger.checksum()


def test_a_new_half_life_smooths_the_draws_after_it_in_the_same_replay():
    # A replay applies many commits at once: allocations after a policy change are
    # smoothed with the new half-life, as they were when they were made.
    ledger = small_ledger()
    events = []
    for i, command in enumerate((c.AllocateOrders((order("O0", "1", "X"),)),
                                 c.SetValuePolicy(ValuePolicy(half_life_days=1.0)),
                                 c.AllocateOrders((order("O1", "1", "X"),)))):
        events.extend(execute(ledger, command, i * DAY // 2).events)
    x = ledger.catalog.sku("X")
    tau = 1.0 / math.log(2.0)
    assert ledger.drawn_units[(x, 0)].level == pytest.approx(
        (1 / (7.0 / math.log(2.0))) * math.exp(-1.0 / tau) + 1 / tau)
    replayed = small_ledger()
    replayed.apply(events, replay=True)  # one call: the policy and both draws
    assert {k: (v.level, v.last_ms) for k, v in replayed.drawn_units.items()} == {
        k: (v.level, v.last_ms) for k, v in ledger.drawn_units.items()}


def test_the_tail_from_drawn_units_prices_a_node_the_forecast_thinks_is_safe():
    """The forecast sends little to A, but orders have been drawing X there fast: with
    tail_from_draws the unit at A is priced as likely to be missed."""
    ledger = small_ledger()
    by_forecast = ValuePolicy(enabled=True, horizon_days=14.0, half_life_days=1.0)
    by_draws = ValuePolicy(enabled=True, horizon_days=14.0, half_life_days=1.0,
                           tail_from_draws=True)
    execute(ledger, c.SetValuePolicy(by_forecast), 0)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("X", "A", 50),)), 0)  # 53 X at A
    for i in range(8):
        execute(ledger, c.AllocateOrders((order(f"O{i}", "1", "X"),)), i * 1000)
    execute(ledger, c.SetDemandForecast((c.ForecastLine("E", "X", 0.1),)), 10_000)
    x = ledger.catalog.sku("X")
    # 8 units in seconds, half-life a day: ~5.5 a day, ~78 over 14 days against 45 left.
    assert ledger.drawn_units[(x, 0)].rate(10_000, 1.0) * 14 == pytest.approx(
        8 * math.log(2) * 14, rel=1e-3)
    plain = compute_values(gather_inputs(ledger, 10_000, by_forecast))
    drawn = compute_values(gather_inputs(ledger, 10_000, by_draws))
    assert plain.values.get((x, 0), 0) < 1_000
    assert drawn.values[(x, 0)] > 0.5 * 0.9 * 8_000_000
