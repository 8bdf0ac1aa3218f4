"""The cost limits (core.network: MAX_PACKAGE_MICROS, MAX_UNIT_MICROS, MAX_RATE_WEIGHTS,
COST_CAP; core.model: the SKU's weight and sides): every input that allocation costs a
plan by is refused past its limit, naming the field, and changes nothing; at the limit it
is taken. With every input at its limit and orders of QTY_MAX units a line, the kernel's
costs are the exact ones (Python ints, tests/reference.py) read as at most COST_CAP:
never negative, never wrapped round into a "cheapest" plan that is the dearest."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from allocd.v1 import network_service_pb2 as pb
from hypothesis import given, settings
from hypothesis import strategies as st

from core import commands as c
from core.alerts import DEFAULT_RULES
from core.allocation import (
    MAX_EXACT_ITEMS,
    METHOD_EXACT,
    METHOD_HEURISTIC,
    STATUS_ALLOCATED,
    OrderBatch,
    run_allocation,
)
from core.decisions import cheapest_service
from core.demand import ValuePolicy
from core.errors import InvalidArgument
from core.inventory_value import compute_values, gather_inputs
from core.kernels._allocate import COST_CAP as KERNEL_COST_CAP
from core.kernels._allocate import INF
from core.ledger import Ledger
from core.model import QTY_MAX, SKU_SIDE_MAX_IN, SKU_WEIGHT_MAX_LB, ChannelSpec, NodeSpec, SkuSpec
from core.network import (
    COST_CAP,
    MAX_PACKAGE_MICROS,
    MAX_RATE_WEIGHTS,
    MAX_UNIT_MICROS,
    CarrierService,
    LaneCost,
    NetworkSpec,
    NodeCosts,
    Region,
    compile_network,
)
from core.operations import execute
from core.reopt import BACKORDER_PENALTY, Candidates
from service.config import Settings
from service.network_codec import network_from_proto, network_to_proto
from tests import reference as ref

NOW = 1_800_000_000_000
NO_DEADLINE = 1 << 30
PKG, UNIT = MAX_PACKAGE_MICROS, MAX_UNIT_MICROS


def test_the_limits_are_the_documented_round_numbers():
    assert (PKG, UNIT, MAX_RATE_WEIGHTS, COST_CAP) == (10**12, 10**10, 10_000, 10**17)
    assert ref.COST_CAP == COST_CAP == int(KERNEL_COST_CAP)
    assert (SKU_WEIGHT_MAX_LB, SKU_SIDE_MAX_IN) == (10_000, 10_000)
    # The derivation in core.network: a package's costs without a quantity in them ...
    fixed = PKG + (MAX_RATE_WEIGHTS - 1) * UNIT + PKG + PKG
    assert fixed < 2**47
    # ... and what the kernel adds or compares stays below its INF.
    assert 2 * (COST_CAP + fixed) < INF == 2**62
    # A plan of 10^6 units, 10^6 lb and 100 packages with every input at its limit is
    # exact: below the cap.
    assert 10**6 * 5 * UNIT + 10**6 * UNIT + 100 * (fixed + 2 * PKG) < 7.1e16 < COST_CAP
    # Re-optimisation's objective of a plan, and what an exact path of 8 items compares.
    assert 3 * COST_CAP < 2**62 and 8 * (COST_CAP + fixed + 2 * PKG) < 2**62


# ---- the network ---------------------------------------------------------------------
def catalog_ledger() -> Ledger:
    ledger = Ledger()
    execute(ledger, c.UpsertNodes((NodeSpec("n0", latitude=40.7, longitude=-74.0),
                                   NodeSpec("n1", latitude=34.0, longitude=-118.2))), NOW)
    execute(ledger, c.UpsertChannels((ChannelSpec("web"),)), NOW)
    execute(ledger, c.UpsertSkus((SkuSpec("a", weight_lb=1.0),)), NOW)
    return ledger


def at_limits(width: int = 3) -> NetworkSpec:
    """A network with every cost at its limit."""
    return NetworkSpec(
        regions=(Region("east", 40.7, -74.0, ("100",)),),
        services=(CarrierService("ground", "Acme", ((PKG,) * width,) * 7, (1,) * 7,
                                 per_lb_over_micros=(UNIT,) * 7,
                                 oversize_surcharge_micros=PKG),),
        lanes=(LaneCost("n1", "east", PKG, UNIT, UNIT),),
        node_costs=(NodeCosts("n0", PKG, UNIT), NodeCosts("n1", PKG, UNIT)),
        split_penalty_micros=(PKG,) * 4)


def _service(**changes: object):
    return lambda spec: dataclasses.replace(
        spec, services=(dataclasses.replace(spec.services[0], **changes),))


def _lane(**changes: object):
    return lambda spec: dataclasses.replace(
        spec, lanes=(dataclasses.replace(spec.lanes[0], **changes),))


def _node(**changes: object):
    return lambda spec: dataclasses.replace(
        spec, node_costs=(spec.node_costs[0], dataclasses.replace(spec.node_costs[1],
                                                                  **changes)))


PAST_A_LIMIT = [
    ("a rate card price", _service(rates_micros=((PKG,) * 3,) * 6 + ((PKG, PKG + 1, PKG),)),
     "services[0].rates"),
    ("a rate card too wide", _service(rates_micros=((1,) * (MAX_RATE_WEIGHTS + 1),) * 7),
     "services[0].rates"),
    ("per lb over", _service(per_lb_over_micros=(UNIT,) * 6 + (UNIT + 1,)),
     "services[0].per_lb_over"),
    ("an oversize surcharge", _service(oversize_surcharge_micros=PKG + 1),
     "services[0].oversize_surcharge"),
    ("a lane's fixed cost", _lane(fixed_micros=PKG + 1), "lanes[0].fixed_micros"),
    ("a lane's cost per unit", _lane(per_unit_micros=UNIT + 1), "lanes[0].per_unit_micros"),
    ("a lane's cost per lb", _lane(per_lb_micros=UNIT + 1), "lanes[0].per_lb_micros"),
    ("a node's handling", _node(handling_per_package_micros=PKG + 1),
     "node_costs[1].handling_per_package_micros"),
    ("a node's pick cost", _node(pick_per_unit_micros=UNIT + 1),
     "node_costs[1].pick_per_unit_micros"),
    ("a split penalty", lambda spec: dataclasses.replace(
        spec, split_penalty_micros=(0, 0, PKG + 1, 0)), "split_penalty"),
]


def test_a_network_with_every_cost_at_its_limit_is_taken():
    ledger = catalog_ledger()
    spec = at_limits(MAX_RATE_WEIGHTS)
    spec.validate()
    execute(ledger, c.SetNetwork(spec), NOW)
    assert ledger.network_spec == spec


@pytest.mark.parametrize(("mutate", "field"), [case[1:] for case in PAST_A_LIMIT],
                         ids=[case[0] for case in PAST_A_LIMIT])
def test_a_network_past_a_limit_is_refused_naming_the_field_and_changes_nothing(mutate, field):
    ledger = catalog_ledger()
    execute(ledger, c.SetNetwork(at_limits()), NOW)
    before = (ledger.last_seq, ledger.checksum(), ledger.network_spec)
    bad = mutate(at_limits())
    with pytest.raises(InvalidArgument) as caught:
        execute(ledger, c.SetNetwork(bad), NOW)
    assert caught.value.field == field and field in caught.value.message
    assert (ledger.last_seq, ledger.checksum(), ledger.network_spec) == before
    # A spec set before the limits (replayed, restored) still compiles: allocation reads
    # what it holds as at most COST_CAP.
    bad.validate(limits=False)
    compiled = compile_network(bad, ledger.catalog)
    assert compiled.rates.min() >= 0 and compiled.rates.max() <= COST_CAP


def test_compiled_rate_cards_stay_within_the_bound_the_derivation_uses():
    """A card shorter than the widest is extended per lb over: at the limits that is the
    largest price without a quantity in it; one set before the limits saturates."""
    ledger = catalog_ledger()
    short = CarrierService("short", "Acme", ((PKG,),) * 7, (1,) * 7,
                           per_lb_over_micros=(UNIT,) * 7)
    wide = CarrierService("wide", "Acme", ((PKG,) * MAX_RATE_WEIGHTS,) * 7, (1,) * 7)
    spec = dataclasses.replace(at_limits(), services=(short, wide))
    spec.validate()
    rates = compile_network(spec, ledger.catalog).rates
    assert rates.max() == PKG + (MAX_RATE_WEIGHTS - 1) * UNIT
    legacy = dataclasses.replace(spec, services=(
        dataclasses.replace(short, per_lb_over_micros=(10**18,) * 7), wide))
    legacy.validate(limits=False)
    assert compile_network(legacy, ledger.catalog).rates.max() == COST_CAP


def test_network_codec_limits_per_unit_and_per_lb_costs_and_card_width():
    limits = network_to_proto(at_limits(MAX_RATE_WEIGHTS))
    assert network_from_proto(limits) == at_limits(MAX_RATE_WEIGHTS)
    for path, value, field in (
            ("services.0.zones.3.per_lb_over_micros", UNIT + 1,
             "network.services[0].zones[3].per_lb_over_micros"),
            ("lanes.0.per_unit_micros", UNIT + 1, "network.lanes[0].per_unit_micros"),
            ("lanes.0.per_lb_micros", UNIT + 1, "network.lanes[0].per_lb_micros"),
            ("lanes.0.fixed_micros", PKG + 1, "network.lanes[0].fixed_micros"),
            ("node_costs.1.pick_per_unit_micros", UNIT + 1,
             "network.node_costs[1].pick_per_unit_micros"),
            ("node_costs.1.handling_per_package_micros", PKG + 1,
             "network.node_costs[1].handling_per_package_micros"),
            ("services.0.oversize_surcharge_micros", PKG + 1,
             "network.services[0].oversize_surcharge_micros"),
            ("split_penalties.2.per_extra_package_micros", PKG + 1,
             "network.split_penalties[2].per_extra_package_micros")):
        msg = pb.Network()
        msg.CopyFrom(limits)
        *parents, last = path.split(".")
        target: object = msg
        for part in parents:
            target = target[int(part)] if part.isdigit() else getattr(target, part)
        setattr(target, last, value)
        with pytest.raises(InvalidArgument) as caught:
            network_from_proto(msg)
        assert caught.value.field == field, path
    msg = pb.Network()
    msg.CopyFrom(limits)
    for zone in msg.services[0].zones:
        zone.price_micros.append(1)
    with pytest.raises(InvalidArgument) as caught:
        network_from_proto(msg)
    assert caught.value.field == "network.services[0].zones[0].price_micros"


# ---- opportunity costs, routing penalties, SKUs, inventory values ------------------------
@pytest.mark.parametrize("command", [c.SetOpportunityCosts, c.ReplaceOpportunityCosts])
def test_an_opportunity_cost_past_its_limit_is_refused_and_changes_nothing(command):
    ledger = catalog_ledger()
    execute(ledger, command((c.OpportunityCostLine("a", "n0", UNIT),)), NOW)
    assert ledger.opportunity_costs == {(0, 0): UNIT}
    before = (ledger.last_seq, ledger.checksum())
    with pytest.raises(InvalidArgument) as caught:
        execute(ledger, command((c.OpportunityCostLine("a", "n1", 5),
                                 c.OpportunityCostLine("a", "n0", UNIT + 1))), NOW)
    assert caught.value.field == "lines[1].per_unit_micros"
    assert (ledger.last_seq, ledger.checksum()) == before
    assert ledger.opportunity_costs == {(0, 0): UNIT}


def test_a_routing_penalty_past_its_limit_is_refused_and_changes_nothing():
    ledger = catalog_ledger()
    routing = [i for i, r in enumerate(DEFAULT_RULES.rules) if r.penalty_micros]

    def rules(penalty: int) -> tuple:
        return tuple(dataclasses.replace(r, penalty_micros=penalty) if i in routing else r
                     for i, r in enumerate(DEFAULT_RULES.rules))

    version = ledger.ops.rules.version
    execute(ledger, c.SetRules(rules(UNIT), version, approved=True), NOW)
    assert ledger.ops.rules.version == version + 1
    before = (ledger.last_seq, ledger.checksum())
    with pytest.raises(InvalidArgument) as caught:
        execute(ledger, c.SetRules(rules(UNIT + 1), version + 1, approved=True), NOW)
    assert caught.value.field == f"rules[{routing[0]}].penalty_micros"
    assert (ledger.last_seq, ledger.checksum()) == before


@pytest.mark.parametrize(("name", "limit"), [
    ("weight_lb", SKU_WEIGHT_MAX_LB), ("length_in", SKU_SIDE_MAX_IN),
    ("width_in", SKU_SIDE_MAX_IN), ("height_in", SKU_SIDE_MAX_IN)])
def test_a_sku_past_its_weight_or_size_limit_is_refused_and_changes_nothing(name, limit):
    ledger = catalog_ledger()
    execute(ledger, c.UpsertSkus((SkuSpec("big", **{name: limit}),)), NOW)
    before = (ledger.last_seq, ledger.checksum())
    with pytest.raises(InvalidArgument) as caught:
        execute(ledger, c.UpsertSkus((SkuSpec("ok"), SkuSpec("big", **{name: limit * 1.5}))),
                NOW)
    assert caught.value.field == f"skus[1].{name}"
    assert (ledger.last_seq, ledger.checksum()) == before
    assert "ok" not in ledger.catalog.sku_index


def test_inventory_values_are_at_most_an_opportunity_costs_limit():
    """Values are the LP's cost differences x the policy's scale: past MAX_UNIT_MICROS
    ReplaceOpportunityCosts would refuse them (and the refresh would keep none), so they
    are read as at most that. (A scale past the policy's own limit, 100, stands in for a
    network whose costs make the differences that large.)"""
    ledger = catalog_ledger()
    execute(ledger, c.UpsertSkus((SkuSpec("b", weight_lb=1.0),)), NOW)
    service = CarrierService("lane", "test", ((0,),) * 7, (1,) * 7)
    execute(ledger, c.SetNetwork(NetworkSpec(
        regions=(Region("E", 40.7, -74.0, ("1",)), Region("W", 34.0, -118.2, ("9",))),
        services=(service,),
        lanes=(LaneCost("n0", "E", 8_000_000, 1_000_000), LaneCost("n0", "W", 8_000_000, 3_000_000),
               LaneCost("n1", "E", 8_000_000, 3_000_000),
               LaneCost("n1", "W", 8_000_000, 1_000_000)))), NOW)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 3), c.ReceiptLine("a", "n1", 50),
                                    c.ReceiptLine("b", "n0", 50))), NOW)
    execute(ledger, c.SetDemandForecast((c.ForecastLine("E", "a", 3.0),
                                         c.ForecastLine("E", "b", 3.0),
                                         c.ForecastLine("W", "a", 5.0))), NOW)
    inputs = gather_inputs(ledger, NOW, ValuePolicy(enabled=True, horizon_days=1.0))
    plain = compute_values(inputs).values
    assert plain and max(plain.values()) < UNIT
    inputs.policy = dataclasses.replace(inputs.policy, scale=10**6)
    values = compute_values(inputs).values
    assert values.keys() == plain.keys() and max(values.values()) == UNIT
    execute(ledger, c.ReplaceOpportunityCosts(tuple(
        c.OpportunityCostLine(ledger.catalog.sku_ids[s], ledger.catalog.nodes[n].node_id, v)
        for (s, n), v in values.items())), NOW)
    assert ledger.opportunity_costs == values


# ---- the kernel at the limits ----------------------------------------------------------
def one_order_batch(order: dict) -> OrderBatch:
    n = len(order["qty"])
    return OrderBatch(
        line_start=np.array([0], np.int64), line_end=np.array([n], np.int64),
        region=np.array([order["region"]], np.int64),
        minute=np.array([order["minute"]], np.int64),
        deadline=np.array([order["deadline"]], np.int64),
        tier=np.array([order["tier"]], np.int64),
        allow_split=np.array([order["allow_split"]], np.bool_),
        channel=np.array([order["channel"]], np.int64),
        item_u=np.asarray(order["u"], np.int64), item_qty=np.asarray(order["qty"], np.int64),
        item_weight=np.asarray(order["weight"], np.float64),
        item_volume=np.asarray(order["volume"], np.float64),
        item_longest=np.asarray(order["longest"], np.float64),
        item_floor=np.asarray(order["floor"], np.int64),
        item_unit_extra=np.asarray(order["extra"], np.int64))


def flat_network(n_nodes: int, **arrays: object) -> SimpleNamespace:
    """One region, one service, no deadline trouble: the costs are what `arrays` set."""
    net = SimpleNamespace(
        node_enabled=np.ones(n_nodes, np.bool_), blocked=np.zeros((n_nodes, 1), np.bool_),
        zone=np.full((n_nodes, 1), 2, np.int64),
        rates=np.full((1, 9, 2), 1_000_000, np.int64),
        over_per_lb=np.zeros((1, 9), np.int64), transit=np.ones((1, 9), np.int64),
        service_cutoff=np.array([1440], np.int64), surcharge=np.zeros(1, np.int64),
        lane_has=np.zeros((n_nodes, 1), np.bool_),
        lane_fixed=np.zeros((n_nodes, 1), np.int64),
        lane_per_unit=np.zeros((n_nodes, 1), np.int64),
        lane_per_lb=np.zeros((n_nodes, 1), np.int64),
        handling=np.zeros(n_nodes, np.int64), pick=np.zeros(n_nodes, np.int64),
        node_cutoff=np.full(n_nodes, 1440, np.int64), split_penalty=np.zeros(4, np.int64))
    for name, value in arrays.items():
        setattr(net, name, np.asarray(value, getattr(net, name).dtype))
    return net


def order_of(qty: list[int], n_nodes: int, avail: int = QTY_MAX, **changes: object) -> dict:
    n = len(qty)
    order = {"u": list(range(n)), "qty": qty, "weight": [1.0] * n, "volume": [1.0] * n,
             "longest": [1.0] * n, "floor": np.zeros((n, n_nodes), np.int64),
             "extra": np.zeros((n, n_nodes), np.int64), "region": 0, "minute": 0,
             "deadline": NO_DEADLINE, "tier": 2, "allow_split": True, "channel": -1,
             "avail": np.full((n, n_nodes), avail, np.int64),
             "capacity": np.full(n_nodes, 1_000, np.int64)}
    order.update(changes)
    return order


@pytest.mark.parametrize("max_exact", [MAX_EXACT_ITEMS, 0])
def test_a_sum_past_int64_no_longer_makes_the_dearest_node_the_cheapest(max_exact):
    """QTY_MAX units picked at node 0 for just under MAX_UNIT_MICROS each come to 2^64 and
    a little: summed in int64 that wrapped round to the little, and node 0, the dearest
    by far, was chosen over node 1 at 1 micro a unit."""
    q = QTY_MAX
    pick0 = -(-(1 << 64) // q)  # the least pick cost that takes q units past 2^64
    assert pick0 <= UNIT
    net = flat_network(2, pick=[pick0, 1])
    order = order_of([q], 2)
    result = run_allocation(one_order_batch(order), order["avail"].copy(),
                            order["capacity"].copy(), net, net.node_enabled,
                            max_exact=max_exact)
    assert result.status[0] == STATUS_ALLOCATED
    assert [int(n) for n in result.pkg_node] == [1]
    assert int(result.cost[0]) == 1_000_000 + q  # the rate card's price + q picks at 1
    # Node 0 alone: its cost reads as the cap, not as what int64 wrapped it round to.
    result = run_allocation(one_order_batch(order), order["avail"].copy(),
                            order["capacity"].copy(), net, np.array([True, False]),
                            max_exact=max_exact)
    assert int(result.cost[0]) == COST_CAP == int(result.pkg_units_cost[0])


@pytest.mark.parametrize("max_exact", [MAX_EXACT_ITEMS, 0])
def test_a_plan_of_many_packages_each_at_the_cap_reads_as_the_cap(max_exact):
    """Eight lines, each at a node of its own, QTY_MAX units at the pick limit: eight
    packages each at COST_CAP, and the plan reads as COST_CAP too, not eight times it."""
    n = MAX_EXACT_ITEMS
    net = flat_network(n, pick=[UNIT] * n, split_penalty=[PKG] * 4)
    order = order_of([QTY_MAX] * n, n, avail=0)
    np.fill_diagonal(order["avail"], QTY_MAX)
    result = run_allocation(one_order_batch(order), order["avail"].copy(),
                            order["capacity"].copy(), net, net.node_enabled,
                            max_exact=max_exact)
    assert result.status[0] == STATUS_ALLOCATED and int(result.pkg_count[0]) == n
    assert int(result.cost[0]) == int(result.split_cost[0]) == COST_CAP
    assert int(result.single_cost[0]) == -1


def test_a_billable_weight_past_int64_is_read_as_the_cap_not_as_a_negative_weight():
    """Heavy units at QTY_MAX: the float weight passes 2^63, and converted to int64 it
    became negative (a price read from before the rate card: any value, or none)."""
    net = flat_network(2, over_per_lb=np.full((1, 9), 1, np.int64),
                       lane_has=[[True], [False]], lane_per_lb=[[1], [0]])
    order = order_of([QTY_MAX] * 3, 2, weight=[SKU_WEIGHT_MAX_LB] * 3,
                     volume=[SKU_SIDE_MAX_IN**3] * 3, longest=[SKU_SIDE_MAX_IN] * 3)
    result = run_allocation(one_order_batch(order), order["avail"].copy(),
                            order["capacity"].copy(), net, net.node_enabled)
    assert result.status[0] == STATUS_ALLOCATED
    assert int(result.cost[0]) == COST_CAP
    assert int(result.pkg_billable[0]) == 1 << 62


def test_an_order_of_the_most_lines_at_the_most_units_at_every_limit_saturates():
    """max_lines_per_request lines of QTY_MAX units each, every cost at its limit (two
    routing penalties and an opportunity cost on every unit): the costs read as the cap,
    and nothing is negative or past it."""
    lines = Settings().max_lines_per_request
    n_nodes = 3
    net = flat_network(
        n_nodes, rates=np.full((1, 9, 2), PKG, np.int64),
        over_per_lb=np.full((1, 9), UNIT, np.int64), surcharge=[PKG],
        lane_has=[[True], [False], [False]], lane_fixed=[[PKG]] * 3,
        lane_per_unit=[[UNIT]] * 3, lane_per_lb=[[UNIT]] * 3, handling=[PKG] * n_nodes,
        pick=[UNIT] * n_nodes, split_penalty=[PKG] * 4)
    order = order_of([QTY_MAX] * lines, n_nodes, weight=[SKU_WEIGHT_MAX_LB] * lines,
                     volume=[SKU_SIDE_MAX_IN**3] * lines, longest=[SKU_SIDE_MAX_IN] * lines,
                     extra=np.full((lines, n_nodes), 3 * UNIT, np.int64))
    order["avail"][::2, 0] = QTY_MAX // 2  # every other line in two pieces
    result = run_allocation(one_order_batch(order), order["avail"].copy(),
                            order["capacity"].copy(), net, net.node_enabled)
    assert result.status[0] == STATUS_ALLOCATED and result.method[0] == METHOD_HEURISTIC
    assert int(result.cost[0]) == int(result.single_cost[0]) == COST_CAP
    for name in ("pkg_carrier", "pkg_units_cost"):
        values = getattr(result, name)
        assert values.min() >= 0 and values.max() <= COST_CAP


# Quantities and per-unit sizes whose float sums are exact wherever a cost can stay
# below the cap (so that kernel and reference bill the same pounds whatever order they add
# them in); past 2^53 the pounds are so many that any cost per lb saturates.
QUANTITIES = st.sampled_from([1, 2, 1_000, QTY_MAX // 2, QTY_MAX])
WEIGHTS = st.sampled_from([0.25, 1.0, 30.0, SKU_WEIGHT_MAX_LB])
VOLUMES = st.sampled_from([1.0, 1_728.0, SKU_SIDE_MAX_IN**3])


def limit_or_less(limit: int) -> st.SearchStrategy[int]:
    return st.sampled_from([0, 1, limit, limit, limit]) | st.integers(0, limit)


@st.composite
def limit_networks(draw: st.DrawFn, n_nodes: int) -> SimpleNamespace:
    """Every cost input drawn up to its limit (mostly at it); zones and transit as may
    be. The kernel reads what compile_network makes: rate cards of one width here."""
    n_regions = draw(st.integers(1, 2))
    n_services = draw(st.integers(1, 2))
    width = draw(st.integers(1, 4))
    shape = (n_nodes, n_regions)

    def many(limit: int, size: tuple[int, ...]) -> np.ndarray:
        return np.array(draw(st.lists(limit_or_less(limit), min_size=int(np.prod(size)),
                                      max_size=int(np.prod(size)))),
                        np.int64).reshape(size)

    rates = np.zeros((n_services, 9, width + 1), np.int64)
    rates[:, 2:, 1:] = many(PKG, (n_services, 7, width))
    return SimpleNamespace(
        node_enabled=np.ones(n_nodes, np.bool_), blocked=np.zeros((n_nodes, 1), np.bool_),
        zone=np.array(draw(st.lists(st.integers(2, 8), min_size=n_nodes * n_regions,
                                    max_size=n_nodes * n_regions)), np.int64).reshape(shape),
        rates=rates, over_per_lb=many(UNIT, (n_services, 9)),
        transit=np.ones((n_services, 9), np.int64),
        service_cutoff=np.full(n_services, 1440, np.int64),
        surcharge=many(PKG, (n_services,)),
        lane_has=np.array(draw(st.lists(st.booleans(), min_size=n_nodes * n_regions,
                                        max_size=n_nodes * n_regions))).reshape(shape),
        lane_fixed=many(PKG, shape), lane_per_unit=many(UNIT, shape),
        lane_per_lb=many(UNIT, shape), handling=many(PKG, (n_nodes,)),
        pick=many(UNIT, (n_nodes,)), node_cutoff=np.full(n_nodes, 1440, np.int64),
        # (re-optimisation adds its extra package weight, up to the same limit)
        split_penalty=many(2 * PKG, (4,)))


@st.composite
def limit_orders(draw: st.DrawFn, n_nodes: int, n_regions: int, max_lines: int) -> dict:
    n = draw(st.integers(1, max_lines))
    qty = draw(st.lists(QUANTITIES, min_size=n, max_size=n))
    # Each line at a node: all of it, half of it (a piece), or none.
    avail = np.array([[draw(st.sampled_from([QTY_MAX, QTY_MAX, q // 2, 0]))
                       for _ in range(n_nodes)] for q in qty], np.int64)
    extra = np.array(draw(st.lists(limit_or_less(3 * UNIT), min_size=n * n_nodes,
                                   max_size=n * n_nodes)), np.int64).reshape(n, n_nodes)
    return order_of(qty, n_nodes, weight=draw(st.lists(WEIGHTS, min_size=n, max_size=n)),
                    volume=draw(st.lists(VOLUMES, min_size=n, max_size=n)),
                    longest=draw(st.lists(st.sampled_from([1.0, 60.0]), min_size=n,
                                          max_size=n)),
                    extra=extra, avail=avail, region=draw(st.integers(0, n_regions - 1)),
                    tier=draw(st.integers(0, 3)), allow_split=draw(st.booleans()))


def exact_plan_cost(net: dict, order: dict, result, cap: int | None = None) -> int:
    """The cost of the kernel's plan, package by package, with Python ints."""
    total = 0
    first, count = int(result.pkg_first[0]), int(result.pkg_count[0])
    pieces = range(int(result.piece_first[0]), int(result.piece_first[0] + result.piece_count[0]))
    for p in range(first, first + count):
        block = [{"line": int(result.piece_line[i]), "qty": int(result.piece_qty[i])}
                 for i in pieces if result.piece_pkg[i] == p]
        cost = ref.block_cost(net, order, block, list(range(len(block))),
                              int(result.pkg_node[p]), cap)
        assert cost is not None
        total += cost
    return total + int(net["split_penalty"][order["tier"]]) * (count - 1)


def capped(exact: int) -> int:
    return -1 if exact < 0 else min(exact, COST_CAP)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_at_the_limits_the_exact_path_costs_are_the_exact_ones_read_at_most_the_cap(data):
    """Against the brute force with Python ints: single, split and chosen costs are
    min(exact, COST_CAP), so never negative and ordered as the exact ones are (a plan
    below the cap is chosen only if no plan is cheaper); the plan chosen costs, exactly,
    what the kernel says (read at most the cap)."""
    n_nodes = data.draw(st.integers(1, 3))
    net = data.draw(limit_networks(n_nodes))
    order = data.draw(limit_orders(n_nodes, net.zone.shape[1], max_lines=4))
    net_dict = vars(net)
    items, _, _ = ref.order_items(net_dict, order, order["avail"], order["capacity"])
    if len(items) > MAX_EXACT_ITEMS:
        return
    result = run_allocation(one_order_batch(order), order["avail"].copy(),
                            order["capacity"].copy(), net, net.node_enabled)
    status, cost, single, split, backorder = ref.allocate_order(
        net_dict, order, order["avail"], order["capacity"], cap=None)
    assert result.method[0] == METHOD_EXACT
    assert int(result.status[0]) == status
    assert result.backorder.tolist() == backorder
    assert int(result.single_cost[0]) == capped(single)
    assert int(result.split_cost[0]) == capped(split)
    if status <= 1:
        assert 0 <= int(result.cost[0]) == min(cost, COST_CAP)
        assert min(exact_plan_cost(net_dict, order, result), COST_CAP) == int(result.cost[0])
        costs = [result.pkg_carrier, result.pkg_handling, result.pkg_units_cost]
        assert all(0 <= int(v) <= COST_CAP for values in costs for v in values)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_at_the_limits_the_heuristic_agrees_with_its_reference(data):
    """The heuristic (every order of more items than the exact path takes) step by step
    against its reference, both reading costs as at most the cap; and the plan chosen
    costs, exactly, what the kernel says it does, read at most the cap."""
    n_nodes = data.draw(st.integers(1, 3))
    net = data.draw(limit_networks(n_nodes))
    order = data.draw(limit_orders(n_nodes, net.zone.shape[1], max_lines=12))
    net_dict = vars(net)
    result = run_allocation(one_order_batch(order), order["avail"].copy(),
                            order["capacity"].copy(), net, net.node_enabled, max_exact=0)
    status, cost, single, split, backorder, plan = ref.heuristic_order(
        net_dict, order, order["avail"], order["capacity"])
    assert int(result.status[0]) == status
    assert result.backorder.tolist() == backorder
    assert (int(result.single_cost[0]), int(result.split_cost[0])) == (single, split)
    if status <= 1:
        assert 0 <= int(result.cost[0]) == cost <= COST_CAP
        assert min(exact_plan_cost(net_dict, order, result), COST_CAP) == cost
        assert int(result.pkg_count[0]) == len(plan)
        assert [int(n) for n in result.pkg_node] == [n for n, _ in plan]


def test_cheapest_service_reads_a_cost_as_the_kernel_does():
    """Waiting for inbound stock is weighed against the kernel's plan: its rating
    saturates as the kernel's does."""
    ledger = catalog_ledger()
    spec = at_limits()
    execute(ledger, c.SetNetwork(spec), NOW)
    network = ledger.network()
    region = 0
    lane_node = 1  # (the lane at the limits)
    cost, _, _ = cheapest_service(network, lane_node, region, 1 << 40, QTY_MAX, 1.0, 0,
                                  NO_DEADLINE)
    assert cost == COST_CAP
    cost, _, _ = cheapest_service(network, lane_node, region, 1, 1, 1.0, 0, NO_DEADLINE)
    assert cost == PKG + UNIT + UNIT


# ---- re-optimisation's objective -------------------------------------------------------
def test_reopt_objective_saturates_its_backorder_and_package_weights():
    """A plan's objective: its cost (at most COST_CAP) + the backorder weight + the extra
    package weight, each read as at most COST_CAP: below 2^62, never wrapped negative."""
    n = 4
    huge = np.array([0, 1, COST_CAP // BACKORDER_PENALTY + 1, 10**4 * QTY_MAX], np.int64)
    cands = Candidates(order=np.arange(n, dtype=np.int64),
                       cost=np.array([0, 5, COST_CAP, COST_CAP], np.int64),
                       packages=np.array([1, 2, 10**4 * QTY_MAX, 3], np.int64),
                       backorder=huge, take_start=np.zeros(n + 1, np.int64),
                       take_line=np.zeros(0, np.int64), take_node=np.zeros(0, np.int64),
                       take_qty=np.zeros(0, np.int64))
    objective = cands.objective(PKG)
    assert objective.tolist() == [
        0, 5 + BACKORDER_PENALTY + PKG, COST_CAP + COST_CAP + COST_CAP,
        COST_CAP + COST_CAP + 2 * PKG]
    assert objective.max() < 2**62 and objective.min() >= 0
