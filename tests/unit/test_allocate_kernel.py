"""The allocation kernel against a brute force that tries every partition of an order's
items into packages and every node for each package: the same minimal cost, always."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.allocation import (
    MAX_EXACT_ITEMS,
    METHOD_EXACT,
    METHOD_HEURISTIC,
    STATUS_ALLOCATED,
    OrderBatch,
    run_allocation,
)
from tests import reference as ref

NO_DEADLINE = 1 << 30


@st.composite
def networks(draw, max_nodes=5):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_nodes = draw(st.integers(1, max_nodes))
    n_regions = draw(st.integers(1, 3))
    n_services = draw(st.integers(1, 3))
    width = draw(st.integers(1, 12))
    rates = np.zeros((n_services, 9, width + 1), np.int64)
    for s in range(n_services):
        for z in range(2, 9):
            steps = rng.integers(0, 3_000_000, width)
            rates[s, z, 1:] = rng.integers(2_000_000, 9_000_000) + np.cumsum(steps)
    lane_has = rng.random((n_nodes, n_regions)) < 0.2
    net = SimpleNamespace(
        node_enabled=rng.random(n_nodes) < 0.9,
        blocked=rng.random((n_nodes, 2)) < 0.15,
        zone=rng.integers(2, 9, (n_nodes, n_regions)).astype(np.int64),
        rates=rates,
        over_per_lb=rng.integers(0, 800_000, (n_services, 9)).astype(np.int64),
        transit=rng.integers(1, 6, (n_services, 9)).astype(np.int64),
        service_cutoff=rng.integers(600, 1440, n_services).astype(np.int64),
        surcharge=rng.integers(0, 20_000_000, n_services).astype(np.int64),
        lane_has=lane_has,
        lane_fixed=rng.integers(0, 8_000_000, (n_nodes, n_regions)).astype(np.int64),
        lane_per_unit=rng.integers(0, 500_000, (n_nodes, n_regions)).astype(np.int64),
        lane_per_lb=rng.integers(0, 900_000, (n_nodes, n_regions)).astype(np.int64),
        handling=rng.integers(0, 3_000_000, n_nodes).astype(np.int64),
        pick=rng.integers(0, 600_000, n_nodes).astype(np.int64),
        node_cutoff=rng.integers(600, 1440, n_nodes).astype(np.int64),
        split_penalty=rng.integers(0, 6_000_000, 4).astype(np.int64),
    )
    return net, n_regions


@st.composite
def orders(draw, n_nodes, n_regions, max_lines=5):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_lines = draw(st.integers(1, max_lines))
    stock = draw(st.sampled_from(["scarce", "plenty", "mixed"]))
    high = {"scarce": 4, "plenty": 40, "mixed": 15}[stock]
    avail = rng.integers(0, high, (n_lines, n_nodes)).astype(np.int64)
    return {
        "u": list(range(n_lines)),
        "qty": [int(x) for x in rng.integers(1, 8, n_lines)],
        "weight": rng.uniform(0.05, 30.0, n_lines),
        "volume": rng.uniform(1.0, 4000.0, n_lines),
        "longest": rng.uniform(1.0, 60.0, n_lines),
        "floor": rng.integers(0, 3, (n_lines, n_nodes)).astype(np.int64),
        "extra": rng.integers(0, 400_000, (n_lines, n_nodes)).astype(np.int64),
        "region": int(rng.integers(0, n_regions)),
        "minute": int(rng.integers(0, 1440)),
        "deadline": draw(st.sampled_from([NO_DEADLINE, 1, 2, 3, 5, 8])),
        "tier": int(rng.integers(0, 4)),
        "allow_split": draw(st.booleans()),
        "channel": int(rng.integers(-1, 2)),
        "avail": avail,
        "capacity": rng.integers(0, 3, n_nodes).astype(np.int64) if draw(st.booleans())
        else np.full(n_nodes, 1_000, np.int64),
    }


def batch_of(order_list):
    starts, ends, lines = [], [], 0
    for order in order_list:
        starts.append(lines)
        lines += len(order["qty"])
        ends.append(lines)

    def cat(key, dtype):
        return np.concatenate([np.asarray(o[key], dtype) for o in order_list])

    offsets = np.cumsum([0] + [len(o["qty"]) for o in order_list[:-1]])
    return OrderBatch(
        line_start=np.array(starts, np.int64), line_end=np.array(ends, np.int64),
        region=np.array([o["region"] for o in order_list], np.int64),
        minute=np.array([o["minute"] for o in order_list], np.int64),
        deadline=np.array([o["deadline"] for o in order_list], np.int64),
        tier=np.array([o["tier"] for o in order_list], np.int64),
        allow_split=np.array([o["allow_split"] for o in order_list], np.bool_),
        channel=np.array([o["channel"] for o in order_list], np.int64),
        item_u=np.concatenate([np.asarray(o["u"], np.int64) + off
                               for o, off in zip(order_list, offsets, strict=True)]),
        item_qty=cat("qty", np.int64), item_weight=cat("weight", np.float64),
        item_volume=cat("volume", np.float64), item_longest=cat("longest", np.float64),
        item_floor=np.concatenate([o["floor"] for o in order_list]).astype(np.int64),
        item_unit_extra=np.concatenate([o["extra"] for o in order_list]).astype(np.int64),
    )


def plan_cost(net, order, result, o=0):
    """Recompute the cost of the kernel's plan with the reference cost functions."""
    total = 0
    first, count = result.pkg_first[o], result.pkg_count[o]
    pieces = range(result.piece_first[o], result.piece_first[o] + result.piece_count[o])
    for p in range(first, first + count):
        n = int(result.pkg_node[p])
        block = [{"line": int(result.piece_line[i]), "qty": int(result.piece_qty[i])}
                 for i in pieces if result.piece_pkg[i] == p]
        total += ref.package_cost(net, order, block, list(range(len(block))), n)
    return total + int(net["split_penalty"][order["tier"]]) * (count - 1)


@settings(max_examples=3000, deadline=None)
@given(st.data())
def test_kernel_finds_the_brute_force_minimum(data):
    net, n_regions = data.draw(networks())
    order = data.draw(orders(len(net.node_enabled), n_regions))
    net_dict = vars(net)
    avail = order["avail"].copy()
    capacity = order["capacity"].copy()
    result = run_allocation(batch_of([order]), avail, capacity, net, net.node_enabled)
    items, _, _ = ref.order_items(net_dict, order, order["avail"], order["capacity"])
    if len(items) > MAX_EXACT_ITEMS:  # split lines made too many pieces for the exact path
        assert result.method[0] == METHOD_HEURISTIC
        return
    assert result.method[0] == METHOD_EXACT
    status, cost, single, split, backorder = ref.allocate_order(
        net_dict, order, order["avail"], order["capacity"])
    assert int(result.status[0]) == status
    assert result.backorder.tolist() == backorder
    assert (int(result.single_cost[0]), int(result.split_cost[0])) == (single, split)
    if status <= 1:
        assert int(result.cost[0]) == cost
        # The plan it returns costs what it says, and takes exactly its units.
        assert plan_cost(net_dict, order, result) == cost
        taken = order["avail"] - avail
        for i in range(result.piece_count[0]):
            p = result.piece_first[0] + i
            line, n = int(result.piece_line[p]), int(result.pkg_node[result.piece_pkg[p]])
            taken[order["u"][line], n] -= int(result.piece_qty[p])
        assert not taken.any()
        allocated = sum(int(result.piece_qty[result.piece_first[0] + i])
                        for i in range(result.piece_count[0]))
        assert allocated + sum(backorder) == sum(order["qty"])
    else:
        assert np.array_equal(avail, order["avail"])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_orders_in_a_batch_never_take_more_than_is_sellable(data):
    net, n_regions = data.draw(networks(max_nodes=4))
    n_nodes = len(net.node_enabled)
    order_list = [data.draw(orders(n_nodes, n_regions, max_lines=3)) for _ in range(6)]
    # All orders compete for the same three SKUs.
    shared = order_list[0]["avail"][:1].repeat(3, axis=0)
    batch = batch_of(order_list)
    batch.item_u = np.concatenate([np.arange(len(o["qty"])) for o in order_list]).astype(
        np.int64)
    batch.item_floor[:] = 0
    avail = shared.copy()
    capacity = np.full(n_nodes, 1_000, np.int64)
    result = run_allocation(batch, avail, capacity, net, net.node_enabled)
    assert avail.min() >= 0
    taken = np.zeros_like(shared)
    for p in range(int(result.piece_first[-1] + result.piece_count[-1])):
        n = int(result.pkg_node[result.piece_pkg[p]])
        taken[batch.item_u[result.piece_line[p]], n] += int(result.piece_qty[p])
    assert np.array_equal(shared - taken, avail)




def test_more_than_eight_items_use_the_heuristic_and_say_so():
    rng = np.random.default_rng(5)
    net = SimpleNamespace(
        node_enabled=np.ones(3, np.bool_), blocked=np.zeros((3, 2), np.bool_),
        zone=np.array([[2], [5], [8]], np.int64),
        rates=np.tile(np.arange(0, 11, dtype=np.int64) * 1_000_000 + 5_000_000, (1, 9, 1)),
        over_per_lb=np.full((1, 9), 500_000, np.int64), transit=np.full((1, 9), 2, np.int64),
        service_cutoff=np.array([1440], np.int64), surcharge=np.zeros(1, np.int64),
        lane_has=np.zeros((3, 1), np.bool_), lane_fixed=np.zeros((3, 1), np.int64),
        lane_per_unit=np.zeros((3, 1), np.int64), lane_per_lb=np.zeros((3, 1), np.int64),
        handling=np.full(3, 1_000_000, np.int64), pick=np.full(3, 100_000, np.int64),
        node_cutoff=np.full(3, 1440, np.int64), split_penalty=np.zeros(4, np.int64))
    order = {"u": list(range(10)), "qty": [1] * 10, "weight": rng.uniform(0.1, 1, 10),
             "volume": np.full(10, 10.0), "longest": np.full(10, 5.0),
             "floor": np.zeros((10, 3), np.int64), "extra": np.zeros((10, 3), np.int64),
             "region": 0, "minute": 0, "deadline": NO_DEADLINE, "tier": 2,
             "allow_split": True, "channel": -1}
    avail = np.full((10, 3), 5, np.int64)
    result = run_allocation(batch_of([order]), avail, np.full(3, 9, np.int64), net,
                            net.node_enabled)
    assert result.status[0] == STATUS_ALLOCATED
    assert result.method[0] == 1
    assert result.pkg_count[0] == 1 and result.pkg_node[0] == 0  # zone 2 is cheapest


def _packages(result, o=0):
    """The kernel's plan as (node, sorted (line, quantity) pieces) per package."""
    pieces = range(result.piece_first[o], result.piece_first[o] + result.piece_count[o])
    first = int(result.pkg_first[o])
    return [(int(result.pkg_node[p]),
             sorted((int(result.piece_line[i]), int(result.piece_qty[i]))
                    for i in pieces if result.piece_pkg[i] == p))
            for p in range(first, first + int(result.pkg_count[o]))]


def _check_heuristic(net, order):
    """The kernel's heuristic (forced with max_exact=0) against its reference: the same
    status, costs and packages; the plan costs what it says and takes exactly its units."""
    net_dict = vars(net)
    avail = order["avail"].copy()
    result = run_allocation(batch_of([order]), avail, order["capacity"].copy(), net,
                            net.node_enabled, max_exact=0)
    status, cost, single, split, backorder, plan = ref.heuristic_order(
        net_dict, order, order["avail"], order["capacity"])
    items, _, _ = ref.order_items(net_dict, order, order["avail"], order["capacity"])
    # (an order with nothing to place is decided before either path)
    assert result.method[0] == (METHOD_HEURISTIC if items else METHOD_EXACT)
    assert int(result.status[0]) == status
    assert result.backorder.tolist() == backorder
    assert (int(result.single_cost[0]), int(result.split_cost[0])) == (single, split)
    if status > 1:
        assert np.array_equal(avail, order["avail"])
        return result
    assert int(result.cost[0]) == cost == plan_cost(net_dict, order, result)
    assert _packages(result) == [
        (n, sorted((items[i]["line"], items[i]["qty"]) for i in block)) for n, block in plan]
    if not order["allow_split"]:
        assert result.pkg_count[0] == 1
    taken = order["avail"] - avail
    for n, pieces in _packages(result):
        for line, qty in pieces:
            taken[order["u"][line], n] -= qty
    assert not taken.any()
    return result


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_heuristic_agrees_with_its_reference_and_is_never_below_the_minimum(data):
    net, n_regions = data.draw(networks())
    order = data.draw(orders(len(net.node_enabled), n_regions, max_lines=6))
    result = _check_heuristic(net, order)
    # Never below the exact minimum (it is a plan), never above the best single package
    # (the brute force only where it is quick: split lines can make many pieces).
    items, _, _ = ref.order_items(vars(net), order, order["avail"], order["capacity"])
    if len(items) > MAX_EXACT_ITEMS:
        return
    status, cost, single, _, _ = ref.allocate_order(vars(net), order, order["avail"],
                                                     order["capacity"])
    if status <= 1 and result.status[0] <= 1:
        assert cost <= int(result.cost[0])
        if single >= 0:
            assert int(result.cost[0]) <= single


def _flat_network(n_nodes=3):
    """Zones 2, 5, 8, ... by node: the lower node is cheaper."""
    return SimpleNamespace(
        node_enabled=np.ones(n_nodes, np.bool_), blocked=np.zeros((n_nodes, 2), np.bool_),
        zone=np.array([[min(8, 2 + 3 * n)] for n in range(n_nodes)], np.int64),
        rates=np.tile(np.arange(0, 11, dtype=np.int64) * 1_000_000 + 5_000_000, (1, 9, 1)),
        over_per_lb=np.full((1, 9), 500_000, np.int64), transit=np.full((1, 9), 2, np.int64),
        service_cutoff=np.array([1440], np.int64), surcharge=np.zeros(1, np.int64),
        lane_has=np.zeros((n_nodes, 1), np.bool_),
        lane_fixed=np.zeros((n_nodes, 1), np.int64),
        lane_per_unit=np.zeros((n_nodes, 1), np.int64),
        lane_per_lb=np.zeros((n_nodes, 1), np.int64),
        handling=np.full(n_nodes, 1_000_000, np.int64), pick=np.full(n_nodes, 100_000, np.int64),
        node_cutoff=np.full(n_nodes, 1440, np.int64), split_penalty=np.zeros(4, np.int64))


def _many_lines(n_lines, allow_split, n_nodes=3):
    rng = np.random.default_rng(n_lines)
    return {"u": list(range(n_lines)), "qty": [1] * n_lines,
            "weight": rng.uniform(0.1, 1, n_lines), "volume": np.full(n_lines, 10.0),
            "longest": np.full(n_lines, 5.0), "floor": np.zeros((n_lines, n_nodes), np.int64),
            "extra": np.zeros((n_lines, n_nodes), np.int64), "region": 0, "minute": 0,
            "deadline": NO_DEADLINE, "tier": 2, "allow_split": allow_split, "channel": -1,
            "avail": np.full((n_lines, n_nodes), 5, np.int64),
            "capacity": np.full(n_nodes, 9, np.int64)}


@pytest.mark.parametrize("n_lines", [63, 64, 65, 300])
@pytest.mark.parametrize("allow_split", [True, False])
def test_orders_of_any_number_of_lines_are_allocated(n_lines, allow_split):
    """An order's items were kept as bits of one 64-bit word: an order of 64 lines ran the
    heuristic off the end of its arrays (the process died) and one of 65 or more was
    refused as having no feasible node."""
    net = _flat_network()
    order = _many_lines(n_lines, allow_split)
    order["avail"][n_lines - 1] = [0, 5, 5]  # the last line is not at the cheapest node
    result = run_allocation(batch_of([order]), order["avail"].copy(),
                            order["capacity"].copy(), net, net.node_enabled)
    assert result.status[0] == STATUS_ALLOCATED and result.method[0] == METHOD_HEURISTIC
    assert sum(len(pieces) for _, pieces in _packages(result)) == n_lines
    _check_heuristic(net, order)


def test_an_order_that_may_not_split_ships_whole_from_a_node_that_holds_it_all():
    """The greedy path put the first items at the cheapest node and then had to open a
    second package for an item that node lacks: an order that may not split was refused,
    while another node held every line."""
    net = _flat_network()
    order = _many_lines(12, False)
    order["avail"][11] = [0, 5, 0]  # only node 1 holds the last line
    result = run_allocation(batch_of([order]), order["avail"].copy(),
                            order["capacity"].copy(), net, net.node_enabled)
    assert result.status[0] == STATUS_ALLOCATED
    assert [n for n, _ in _packages(result)] == [1]
    # Allowed to split, the same order ships from node 0 and node 1 only if that is
    # cheaper than all of it from node 1: the heuristic compares the two.
    order["allow_split"] = True
    result = _check_heuristic(net, order)
    assert int(result.cost[0]) <= int(result.single_cost[0])


@pytest.mark.parametrize("n_nodes", [32, 70])
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_kernel_is_exact_on_32_nodes_with_7_lines(n_nodes, data):
    """The largest shape the exact path promises, against the brute force; and past 64
    nodes (the nodes that could ship an item were once bits of a 64-bit word)."""
    net, n_regions = data.draw(networks())
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    net = _widen(net, n_nodes, rng)
    order = data.draw(orders(n_nodes, n_regions, max_lines=7))
    order["avail"] = np.where(rng.random(order["avail"].shape) < 0.4, 40, 0).astype(np.int64)
    order["allow_split"] = True
    items, _, _ = ref.order_items(vars(net), order, order["avail"], order["capacity"])
    if len(items) > MAX_EXACT_ITEMS:
        return
    result = run_allocation(batch_of([order]), order["avail"].copy(), order["capacity"].copy(),
                            net, net.node_enabled)
    status, cost, single, split, _ = ref.allocate_order(vars(net), order, order["avail"],
                                                         order["capacity"])
    assert int(result.status[0]) == status
    assert (int(result.single_cost[0]), int(result.split_cost[0])) == (single, split)
    if status <= 1:
        assert int(result.cost[0]) == cost


def _widen(net, n_nodes, rng):
    """The drawn network with every per-node array regenerated for n_nodes nodes."""
    n_regions = net.zone.shape[1]
    return SimpleNamespace(**{
        **vars(net),
        "node_enabled": rng.random(n_nodes) < 0.95,
        "blocked": rng.random((n_nodes, 2)) < 0.1,
        "zone": rng.integers(2, 9, (n_nodes, n_regions)).astype(np.int64),
        "lane_has": rng.random((n_nodes, n_regions)) < 0.1,
        "lane_fixed": rng.integers(0, 8_000_000, (n_nodes, n_regions)).astype(np.int64),
        "lane_per_unit": rng.integers(0, 500_000, (n_nodes, n_regions)).astype(np.int64),
        "lane_per_lb": rng.integers(0, 900_000, (n_nodes, n_regions)).astype(np.int64),
        "handling": rng.integers(0, 3_000_000, n_nodes).astype(np.int64),
        "pick": rng.integers(0, 600_000, n_nodes).astype(np.int64),
        "node_cutoff": rng.integers(600, 1440, n_nodes).astype(np.int64),
    })


@pytest.mark.parametrize("max_exact", [MAX_EXACT_ITEMS, 0])
def test_a_line_cut_into_pieces_takes_them_from_nodes_that_deliver_in_time(max_exact):
    """A line no node holds whole was cut by the most sellable units alone: its largest
    piece came from a node too far to meet the deadline and the order was refused, while
    two nearer nodes held enough between them."""
    net = _flat_network()
    net.transit = np.full((1, 9), 2, np.int64)
    net.transit[0, 8] = 5  # node 2 (zone 8) needs 5 days
    order = _many_lines(1, True)
    order["qty"] = [10]
    order["deadline"] = 3
    order["avail"][0] = [5, 5, 8]
    avail = order["avail"].copy()
    result = run_allocation(batch_of([order]), avail, order["capacity"].copy(), net,
                            net.node_enabled, max_exact=max_exact)
    assert result.status[0] == STATUS_ALLOCATED
    assert sorted(n for n, _ in _packages(result)) == [0, 1]
    assert avail[0].tolist() == [0, 0, 8]
    # Without the deadline, the fewest pieces: 8 from node 2 and 2 from node 0.
    order["deadline"] = NO_DEADLINE
    result = run_allocation(batch_of([order]), order["avail"].copy(),
                            order["capacity"].copy(), net, net.node_enabled)
    assert sorted((n, pieces) for n, pieces in _packages(result)) == [(0, [(0, 2)]),
                                                                     (2, [(0, 8)])]
