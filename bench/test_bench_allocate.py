"""Allocation kernel throughput: 16 nodes, 1-5-line orders, exact path, beside the brute force."""

from __future__ import annotations

import numpy as np
import pytest

from bench.allocation_workload import order_batch, parcel_network
from core.allocation import METHOD_EXACT, run_allocation
from tests import reference as ref

N_ORDERS = 20_000


@pytest.fixture(scope="module")
def workload():
    net = parcel_network()
    batch, stock = order_batch(N_ORDERS, 5000)
    return net, batch, stock


def test_allocation_kernel_20k_orders(benchmark, workload):
    """Decisions per second = 20,000 / the time shown."""
    net, batch, stock = workload
    capacity = np.full(16, 10**9, np.int64)

    def allocate():
        return run_allocation(batch, stock.copy(), capacity.copy(), net, net.node_enabled)

    result = benchmark(allocate)
    assert (result.method == METHOD_EXACT).all()
    if benchmark.stats is not None:  # (None with --benchmark-disable)
        benchmark.extra_info["orders_per_second"] = N_ORDERS / benchmark.stats.stats.median


def test_allocation_brute_force_reference_100_orders(benchmark, workload):
    """The brute force on the first 100 orders: the baseline for the kernel's ratio."""
    net, batch, stock = workload
    net_dict = vars(net)
    capacity = np.full(16, 10**9, np.int64)

    def brute_force():
        costs = []
        for o in range(100):
            lines = range(batch.line_start[o], batch.line_end[o])
            order = {
                "u": [int(batch.item_u[k]) for k in lines],
                "qty": [int(batch.item_qty[k]) for k in lines],
                "weight": batch.item_weight[list(lines)],
                "volume": batch.item_volume[list(lines)],
                "longest": batch.item_longest[list(lines)],
                "floor": batch.item_floor[list(lines)], "extra": batch.item_unit_extra[list(lines)],
                "region": int(batch.region[o]), "minute": int(batch.minute[o]),
                "deadline": int(batch.deadline[o]), "tier": int(batch.tier[o]),
                "allow_split": bool(batch.allow_split[o]), "channel": int(batch.channel[o]),
            }
            costs.append(ref.allocate_order(net_dict, order, stock, capacity)[1])
        return costs

    costs = benchmark.pedantic(brute_force, rounds=1, iterations=1)
    assert len(costs) == 100
