"""The load harness's workload: seeded, deterministic, and shaped as asked."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench.load.workload import (
    CALLS,
    TIERS,
    WorkloadSpec,
    blocks_for,
    build_catalogue,
    order_block,
    parse_mix,
)

SMALL = WorkloadSpec(skus=2_000, nodes=6, regions=5, block_size=2_048)


def test_the_same_seed_gives_the_same_catalogue_and_orders() -> None:
    a, b = build_catalogue(SMALL), build_catalogue(SMALL)
    assert np.array_equal(a.stock, b.stock)
    assert np.array_equal(a.node_order, b.node_order)
    assert a.skus == b.skus and a.network == b.network
    for block in (0, 7):
        x, y = order_block(a, block), order_block(b, block)
        for name in ("sku", "quantity", "n_lines", "tier", "channel", "region", "call"):
            assert np.array_equal(getattr(x, name), getattr(y, name)), name


def test_another_seed_or_block_gives_other_orders() -> None:
    catalogue = build_catalogue(SMALL)
    other = build_catalogue(WorkloadSpec(seed=2, skus=2_000, nodes=6, regions=5))
    assert not np.array_equal(catalogue.stock, other.stock)
    assert not np.array_equal(order_block(catalogue, 0).sku, order_block(catalogue, 1).sku)


def test_client_processes_share_the_blocks_without_overlap() -> None:
    catalogue = build_catalogue(WorkloadSpec(skus=200, block_size=8))
    seen = [[b.block for b in itertools.islice(blocks_for(catalogue, part, 3), 4)]
            for part in range(3)]
    assert seen == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]


def test_orders_have_distinct_skus_and_the_asked_lines_and_quantities() -> None:
    spec = WorkloadSpec(skus=50, nodes=4, regions=3, zipf=1.2, min_lines=1, max_lines=5,
                        max_quantity=4, block_size=4_000)
    block = order_block(build_catalogue(spec), 3)
    assert set(block.n_lines.tolist()) == {1, 2, 3, 4, 5}
    for i in range(len(block)):
        lines = block.lines(i)
        skus = [s for s, _ in lines]
        assert len(set(skus)) == len(skus) == block.n_lines[i]
        assert all(0 <= s < 50 and 1 <= q <= 4 for s, q in lines)
        assert (block.sku[i, len(lines):] == -1).all()


def test_sku_popularity_follows_zipf() -> None:
    spec = WorkloadSpec(skus=1_000, zipf=1.0, min_lines=1, max_lines=1, block_size=50_000)
    catalogue = build_catalogue(spec)
    drawn = np.bincount(order_block(catalogue, 0).sku[:, 0], minlength=spec.skus)
    by_rank = drawn[catalogue.by_rank]
    # Weight 1/k: rank 1 twice as often as rank 2, ten times rank 10 (sampling noise allowed).
    assert by_rank[0] / by_rank[1] == pytest.approx(2.0, rel=0.15)
    assert by_rank[0] / by_rank[9] == pytest.approx(10.0, rel=0.25)
    assert by_rank[:10].sum() > by_rank[-500:].sum()


def test_sla_channel_and_call_mixes_follow_their_weights() -> None:
    spec = WorkloadSpec(skus=500, block_size=40_000,
                        sla_mix={"premium": 1, "standard": 3},
                        channel_mix={"web": 1, "marketplace": 1},
                        call_mix={"allocate": 6, "availability": 3, "ship": 1})
    block = order_block(build_catalogue(spec), 0)
    tiers = np.bincount(block.tier, minlength=4) / len(block)
    assert tiers[TIERS.index("premium")] == pytest.approx(0.25, abs=0.02)
    assert tiers[TIERS.index("standard")] == pytest.approx(0.75, abs=0.02)
    assert tiers[TIERS.index("wholesale")] == 0
    assert np.bincount(block.channel, minlength=3)[2] == 0
    calls = np.bincount(block.call, minlength=len(CALLS)) / len(block)
    assert calls[CALLS.index("allocate")] == pytest.approx(0.6, abs=0.02)
    assert calls[CALLS.index("ship")] == pytest.approx(0.1, abs=0.02)
    assert calls[CALLS.index("cancel")] == 0


def test_stock_is_deeper_for_popular_skus_and_every_sku_is_somewhere() -> None:
    catalogue = build_catalogue(WorkloadSpec(skus=3_000, popular_stock_units=1_000_000,
                                             stock_presence=0.2))
    totals = catalogue.stock.sum(axis=1)
    assert (totals > 0).all()
    ranked = totals[catalogue.by_rank]
    assert ranked[:10].mean() > 20 * ranked[-1000:].mean()


def test_first_fit_order_starts_at_the_nearest_node() -> None:
    catalogue = build_catalogue(WorkloadSpec(skus=10, nodes=13, regions=26))
    regions = [r.region_id for r in catalogue.network.regions]
    nodes = catalogue.node_ids
    assert nodes[catalogue.node_order[regions.index("phoenix"), 0]] == "PHX6"
    assert nodes[catalogue.node_order[regions.index("seattle"), 0]] == "SEA8"
    assert sorted(catalogue.node_order[0].tolist()) == list(range(13))


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="lines"):
        build_catalogue(WorkloadSpec(min_lines=3, max_lines=2))
    with pytest.raises(ValueError, match="call mix"):
        build_catalogue(WorkloadSpec(call_mix={"teleport": 1}))
    assert parse_mix("allocate=70, ship=5") == {"allocate": 70.0, "ship": 5.0}


def test_node_capacity_is_unlimited_unless_asked() -> None:
    assert {n.daily_capacity for n in build_catalogue(WorkloadSpec(skus=10, nodes=15)).nodes} \
        == {0}
    limited = build_catalogue(WorkloadSpec(skus=10, nodes=15, node_capacity=700))
    assert {n.daily_capacity for n in limited.nodes} == {700}
