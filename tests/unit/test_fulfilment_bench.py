"""The fulfilment benchmark: a deterministic generator with the published statistics, the
DLP against an independent formulation of it, and the runner's cost accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ortools.linear_solver import pywraplp

from bench.fulfilment.instance import (
    FIXED,
    PER_MILE,
    PER_UNIT,
    SAFETY_Z,
    Instance,
    Setup,
    dlp_model,
    generate,
)
from bench.fulfilment.runner import PickQueue, Policy, Run, simulate
from core.inventory_value import SolveParams
from core.network import great_circle_miles
from core.orders import PackageStatus


def test_the_generator_is_deterministic_per_seed():
    a, b, other = generate(Setup(seed=4)), generate(Setup(seed=4)), generate(Setup(seed=5))
    for name in ("region_lat", "population", "miles", "rate", "carries", "stock"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.types == b.types
    assert not np.array_equal(a.stock, other.stock)
    assert np.array_equal(a.sample_arrivals(2)[0], b.sample_arrivals(2)[0])
    assert not np.array_equal(a.sample_arrivals(2)[0], a.sample_arrivals(3)[0])


def test_the_generator_has_the_published_shape_and_statistics():
    setup = Setup(arrivals=10_000, carry=0.5, seed=2)
    inst = generate(setup)
    assert inst.miles.shape == (10, 99)
    assert len(inst.types) == 1 + 10 * 10 and inst.types[0] == ()
    sizes = [len(t) for t in inst.types[1:]]
    assert sorted(set(sizes)) == list(range(1, 11)) and all(sizes.count(s) == 10
                                                            for s in range(1, 11))
    assert all(len(set(t)) == len(t) and max(t) < 100 for t in inst.types[1:])
    assert inst.rate.sum() == pytest.approx(1.0)
    assert inst.population.sum() == pytest.approx(1.0)
    # Population-like: the largest region weighs about as much as the smallest 30.
    ordered = np.sort(inst.population)[::-1]
    assert ordered[0] == pytest.approx(ordered[1] * 2) and ordered[0] > ordered[-30:].sum()
    assert 0.45 < inst.carries.mean() < 0.55
    # Starting stock: round(T d + 0.5 sqrt(T d (1 - d))), none where an FC does not carry.
    T, d = setup.arrivals, inst.d.T
    assert np.array_equal(inst.stock, np.rint(T * d + SAFETY_Z * np.sqrt(T * d * (1 - d))))
    assert not inst.stock[~inst.carries].any()
    # d is the arrival probability routed to the nearest carrying FC: it sums, per item, to
    # the probability an arrival asks for it (when some FC carries it).
    asked = np.zeros(100)
    for q, items in enumerate(inst.types):
        for i in items:
            asked[i] += inst.type_prob[q]
    carried = inst.carries.any(axis=1)
    assert np.allclose(inst.d.sum(axis=0)[carried], asked[carried])
    # Arrivals follow the rates.
    types, regions = inst.sample_arrivals(1)
    assert len(types) == T
    top = int(np.argmax(inst.population))
    assert (regions == top).mean() == pytest.approx(inst.population[top], abs=0.02)
    assert (types == 0).mean() == pytest.approx(inst.type_prob[0], abs=0.02)


def test_costs_follow_the_published_formula():
    inst = generate(Setup(seed=1))
    k, j = 3, 17
    miles = great_circle_miles(inst.fc_lat[k], inst.fc_lon[k], inst.region_lat[j],
                               inst.region_lon[j])
    assert inst.unit[k, j] == pytest.approx(PER_UNIT + PER_MILE * miles)
    assert inst.fixed[k, j] == FIXED
    assert inst.unserved_fixed[j] == 2 * FIXED
    assert inst.unserved_unit[j] == pytest.approx(2 * (PER_UNIT + PER_MILE
                                                       * inst.miles[:, j].max()))


def reference_dlp(inst: Instance) -> float:
    """The DLP exactly as Ma's published code writes it (every FC, including those
    without stock, plus FC K+1 = unserved), in dollars, with an independent solver API."""
    solver = pywraplp.Solver.CreateSolver("GLOP")
    K, J, T = inst.setup.n_fcs, inst.setup.n_regions, inst.setup.arrivals
    fixed = np.vstack([inst.fixed, inst.unserved_fixed])
    unit = np.vstack([inst.unit, inst.unserved_unit])
    draw: dict[tuple[int, int], list] = {}
    objective = 0
    for q, items in enumerate(inst.types):
        if not items:
            continue
        for j in range(J):
            y = [solver.NumVar(0, 1, "") for _ in range(K + 1)]
            lam = inst.rate[q, j]
            objective += T * lam * sum(fixed[k, j] * y[k] for k in range(K + 1))
            for i in items:
                u = [solver.NumVar(0, 1, "") for _ in range(K + 1)]
                solver.Add(sum(u) == 1)
                for k in range(K + 1):
                    solver.Add(y[k] >= u[k])
                    objective += T * lam * unit[k, j] * u[k]
                    if k < K:
                        draw.setdefault((i, k), []).append(T * lam * u[k])
    for (i, k), terms in draw.items():
        solver.Add(sum(terms) <= float(inst.stock[i, k]))
    solver.Minimize(objective)
    assert solver.Solve() == pywraplp.Solver.OPTIMAL
    return float(solver.Objective().Value())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_dlp_matches_an_independent_formulation_on_tiny_instances(seed):
    inst = generate(Setup(n_fcs=3, n_regions=4, n_items=4, max_size=3, per_size=2,
                          arrivals=50, carry=0.6, seed=seed))
    result = dlp_model(inst).solve(SolveParams(solver="glop"))
    assert result.optimal
    assert result.objective / 1e6 == pytest.approx(reference_dlp(inst), rel=1e-7)


def hand_instance() -> Instance:
    """One region at FC0's door, FC1 100 miles east; items 0 and 1. FC0 holds one of
    each, FC1 five of item 0. Types: empty, {0, 1}, {1}."""
    lat, lon = np.array([40.0]), np.array([-100.0])
    fc_lat, fc_lon = np.array([40.0, 40.0]), np.array([-100.0, -98.0])
    miles = np.array([[great_circle_miles(fc_lat[k], fc_lon[k], 40.0, -100.0)]
                      for k in range(2)])
    types = [(), (0, 1), (1,)]
    type_prob = np.array([0.2, 0.4, 0.4])
    return Instance(Setup(n_fcs=2, n_regions=1, n_items=2, arrivals=4), lat, lon,
                    np.array([1.0]), fc_lat, fc_lon, miles, types, type_prob,
                    type_prob[:, None], np.array([[True, True], [True, False]]),
                    np.array([[0], [0]]), np.zeros((2, 2)), np.array([[1, 5], [1, 0]]))


def test_the_runner_charges_what_the_orders_end_with():
    inst = hand_instance()
    # {0,1} ships whole from FC0; then an empty arrival; then {0,1} gets item 0 from FC1
    # and item 1 unserved; then {1} is unserved.
    totals = simulate(inst, Policy(), np.array([1, 0, 1, 2]), np.array([0, 0, 0, 0]))
    u0, u1 = PER_UNIT + PER_MILE * inst.miles[0, 0], PER_UNIT + PER_MILE * inst.miles[1, 0]
    unserved = 2 * FIXED, 2 * (PER_UNIT + PER_MILE * inst.miles[:, 0].max())
    expected = ((FIXED + 2 * u0) + (FIXED + u1 + unserved[0] + unserved[1])
                + (unserved[0] + unserved[1]))
    assert inst.miles[0, 0] == 0.0 and 100 < inst.miles[1, 0] < 110
    assert totals.cost == pytest.approx(expected)
    assert (totals.orders, totals.shipments, totals.unserved_units) == (3, 2, 2)
    assert totals.shipments_per_order == pytest.approx(2 / 3)
    assert math.isfinite(totals.seconds)


def test_re_optimising_the_pick_queue_takes_back_a_split_and_is_charged_for_what_ships():
    """Item 0: one unit at FC0 (at the region's door), one at FC1; item 1: one at FC0.
    {0} arrives first and takes FC0's item 0, so {0, 1} must split (FC0 and FC1). Planned
    together, {0} ships from FC1 and {0, 1} whole from FC0: one shipment fewer."""
    base = hand_instance()
    inst = Instance(Setup(n_fcs=2, n_regions=1, n_items=2, arrivals=2), base.region_lat,
                    base.region_lon, np.array([1.0]), base.fc_lat, base.fc_lon, base.miles,
                    [(), (0, 1), (0,)], np.array([0.2, 0.4, 0.4]),
                    np.array([[0.2], [0.4], [0.4]]), np.array([[True, True], [True, False]]),
                    np.array([[0], [0]]), np.zeros((2, 2)), np.array([[1, 1], [1, 0]]))
    arrivals, regions = np.array([2, 1]), np.array([0, 0])
    u0, u1 = PER_UNIT + PER_MILE * inst.miles[0, 0], PER_UNIT + PER_MILE * inst.miles[1, 0]
    myopic = simulate(inst, Policy(), arrivals, regions)
    assert myopic.cost == pytest.approx(3 * FIXED + 2 * u0 + u1)
    assert myopic.shipments == 3
    queue = PickQueue(Policy(), window=1000)
    planned = simulate(inst, queue, arrivals, regions)
    assert planned.cost == pytest.approx(2 * FIXED + 2 * u0 + u1)
    assert (planned.shipments, planned.unserved_units, queue.replanned) == (2, 0, 2)
    # Re-optimised after every arrival, {0} is released before {0, 1} arrives: too late.
    eager = simulate(inst, PickQueue(Policy(), window=1), arrivals, regions)
    assert eager.shipments == 3 and eager.cost == pytest.approx(myopic.cost)
    # Held for one arrival, {0} is still in the queue when {0, 1} comes.
    held = PickQueue(Policy(), window=1, hold=1)
    kept = simulate(inst, held, arrivals, regions)
    assert (kept.shipments, held.replanned) == (2, 2)
    assert kept.cost == pytest.approx(planned.cost)


def test_a_held_queue_releases_exactly_the_orders_that_waited_long_enough():
    inst = generate(Setup(arrivals=300, seed=2))
    types, regions = inst.sample_arrivals(2)
    seen: list[tuple[int, int, int]] = []

    class Watched(PickQueue):
        def release(self, run: Run, final: bool = False) -> None:
            super().release(run, final)
            if final:
                return
            waiting = released = 0
            for state in run.ledger.orders.packages.values():
                old = int(state.order_id[1:]) < run.t - self.hold
                waiting += state.status == PackageStatus.ALLOCATED and old
                released += state.status == PackageStatus.RELEASED and not old
            seen.append((run.t, waiting, released))

    queue = Watched(Policy(), window=50, hold=100)
    totals = simulate(inst, queue, types, regions)
    assert [t for t, _, _ in seen] == list(range(50, 300, 50))
    assert all(waiting == 0 and released == 0 for _, waiting, released in seen)
    assert totals.shipments > 0 and queue.replanned >= 0
