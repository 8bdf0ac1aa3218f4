"""Ledger micro benchmarks: availability over 1,000,000 SKUs x 16 nodes, batch reserve.

Each kernel benchmark has its pure-Python reference beside it in the same run,
so the figures can be read as ratios on a noisy machine.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core import commands as c
from core.availability import available_to_sell
from core.operations import execute
from tests import reference as ref

N_REQUEST = 1000


@pytest.fixture
def request_ids(million_sku_ledger):
    rng = np.random.default_rng(3)
    return [f"SKU-{i:07d}" for i in rng.choice(million_sku_ledger.catalog.n_skus, N_REQUEST,
                                                replace=False)]


def _availability_request(ledger, sku_ids, nodes, channel):
    skus = ledger.catalog.skus(sku_ids)
    table = available_to_sell(ledger, skus, nodes, channel)
    return table.total_to_sell


def test_get_availability_1000_skus_on_1m_by_16(benchmark, million_sku_ledger, request_ids):
    ledger = million_sku_ledger
    nodes = np.arange(16, dtype=np.int64)
    totals = benchmark(_availability_request, ledger, request_ids, nodes, 0)
    assert len(totals) == N_REQUEST and totals.min() >= 0


def test_get_availability_reference_python(benchmark, million_sku_ledger, request_ids):
    """The slow twin on the same request: the baseline for the kernel's ratio."""
    ledger = million_sku_ledger
    nodes = np.arange(16, dtype=np.int64)
    skus = ledger.catalog.skus(request_ids)

    def python_request():
        totals = []
        for sku in skus.tolist():
            shard, local = ledger.locate(sku)
            out = ref.available_to_sell(
                shard.qty, [local], nodes, ledger.catalog.node_enabled, 0, shard.sku_safety,
                shard.safety_override, ledger.node_safety, ledger.network_safety,
                shard.fence_row, shard.fence_qty)
            totals.append(int(out[3].sum()))
        return totals

    fast = _availability_request(ledger, request_ids, nodes, 0)
    totals = benchmark.pedantic(python_request, rounds=3, iterations=1)
    assert totals == fast.tolist()


@pytest.mark.parametrize("lines", [1, 100, 1000])
def test_batch_reserve(benchmark, million_sku_ledger, lines):
    ledger = million_sku_ledger
    rng = np.random.default_rng(lines)
    sku_ids = [f"SKU-{i:07d}" for i in rng.choice(ledger.catalog.n_skus, lines, replace=False)]
    counter = itertools.count()
    # Plenty of units at node N00, so every reservation in the benchmark succeeds.
    cmd_lines = [c.StockLine(sku_id, "N00", 1) for sku_id in sku_ids]
    execute(ledger, c.ReceiveStock(tuple(c.ReceiptLine(s, "N00", 1_000_000) for s in sku_ids)),
            0)
    lines_tuple = tuple(cmd_lines)

    def reserve():
        n = next(counter)
        return execute(ledger, c.ReserveStock(f"bench-{lines}-{n}", "web", 10**15, lines_tuple),
                       1, f"req-{lines}-{n}")

    outcome = benchmark(reserve)
    assert len(outcome.events) == lines
