"""Every kernel agrees with its slow pure-Python reference, on random inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba.typed import List as TypedList

from core.catalog import MAX_CHANNELS
from core.kernels import _ledger as k
from core.ledger import new_quantities
from tests import reference as ref

N_SKUS, N_NODES, N_BUCKETS = 5, 3, 6


@st.composite
def ledgers(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    high = draw(st.sampled_from([3, 50, 2**31 - 1]))
    qty = rng.integers(0, high, size=(N_SKUS, N_NODES, N_BUCKETS), endpoint=True).astype(np.int32)
    if draw(st.booleans()):
        qty = as_ledger_layout(qty)
    return rng, qty


def as_ledger_layout(qty):
    """The ledger's own layout: indexed [sku, node, bucket], stored bucket-major per SKU."""
    stored = new_quantities(qty.shape[0], qty.shape[1])
    stored[...] = qty
    return stored


@st.composite
def policies(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sku_safety = rng.integers(-1, 4, N_SKUS).astype(np.int32)
    node_safety = rng.integers(-1, 4, N_NODES).astype(np.int32)
    override = (rng.integers(-1, 4, (N_SKUS, N_NODES)).astype(np.int32) if draw(st.booleans())
                else np.zeros((0, 0), np.int32))
    if draw(st.booleans()):
        fence_row = np.full((N_SKUS, N_NODES), -1, np.int32)
        fence_qty = np.zeros((N_SKUS * N_NODES, MAX_CHANNELS + 1), np.int64)
        rows = 0
        for s in range(N_SKUS):
            for n in range(N_NODES):
                if rng.random() < 0.4:
                    fence_row[s, n] = rows
                    fence_qty[rows, :3] = rng.integers(0, 5, 3)
                    fence_qty[rows, -1] = fence_qty[rows, :3].sum()
                    rows += 1
    else:
        fence_row = np.zeros((0, 0), np.int32)
        fence_qty = np.zeros((0, MAX_CHANNELS + 1), np.int64)
    network = int(rng.integers(0, 3))
    return sku_safety, override, node_safety, network, fence_row, fence_qty


@settings(max_examples=300, deadline=None)
@given(ledgers(), st.integers(1, 25), st.booleans())
def test_apply_moves_matches_reference(ledger, n_moves, with_floor):
    rng, qty = ledger
    skus = rng.integers(0, N_SKUS, n_moves).astype(np.int64)
    nodes = rng.integers(0, N_NODES, n_moves).astype(np.int64)
    from_b = rng.integers(-1, N_BUCKETS, n_moves).astype(np.int64)
    to_b = rng.integers(-1, N_BUCKETS, n_moves).astype(np.int64)
    amount = rng.integers(1, 40, n_moves).astype(np.int64)
    floor = (rng.integers(0, 10, n_moves) if with_floor else np.zeros(n_moves)).astype(np.int64)
    expected = qty.copy()
    got = as_ledger_layout(qty)
    want = ref.apply_moves(expected, skus, nodes, from_b, to_b, amount, floor)
    have = k._apply_moves(TypedList([got]), skus, nodes, from_b, to_b, amount, floor)
    assert have == want
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=150, deadline=None)
@given(st.lists(ledgers(), min_size=2, max_size=4), st.integers(1, 25),
       st.integers(0, 2**32 - 1))
def test_apply_moves_across_shards_matches_reference(shards, n_moves, seed):
    """Global SKU d lives in shard d % n_shards at row d // n_shards."""
    rng = np.random.default_rng(seed)
    n_shards = len(shards)
    arrays = [as_ledger_layout(qty) for _, qty in shards]
    skus = rng.integers(0, N_SKUS * n_shards, n_moves).astype(np.int64)
    nodes = rng.integers(0, N_NODES, n_moves).astype(np.int64)
    from_b = rng.integers(-1, N_BUCKETS, n_moves).astype(np.int64)
    to_b = rng.integers(-1, N_BUCKETS, n_moves).astype(np.int64)
    amount = rng.integers(1, 40, n_moves).astype(np.int64)
    floor = rng.integers(0, 5, n_moves).astype(np.int64)
    # The reference works on one stacked array indexed by global SKU.
    stacked = np.zeros((N_SKUS * n_shards, N_NODES, N_BUCKETS), np.int64)
    for d in range(N_SKUS * n_shards):
        stacked[d] = arrays[d % n_shards][d // n_shards]
    want = ref.apply_moves(stacked, skus, nodes, from_b, to_b, amount, floor)
    have = k._apply_moves(TypedList(arrays), skus, nodes, from_b, to_b, amount, floor)
    assert have == want
    for d in range(N_SKUS * n_shards):
        np.testing.assert_array_equal(arrays[d % n_shards][d // n_shards], stacked[d])


def test_apply_moves_refusal_leaves_the_array_untouched():
    qty = np.zeros((1, 1, N_BUCKETS), np.int32)
    qty[0, 0, 0] = 5
    before = qty.copy()
    moves = [np.array(v, np.int64) for v in ([0, 0], [0, 0], [0, 0], [1, 2], [3, 3])]
    refused = k._apply_moves(TypedList([qty]), *moves, np.zeros(2, np.int64))
    assert refused == 1  # 3 then 3 more of 5
    np.testing.assert_array_equal(qty, before)


def sharded(shards):
    """Shards as the kernels take them: quantity arrays (ledger layout), each shard's
    policy, the policy arrays as typed lists (sku safety, overrides, fence rows, fence
    quantities), and the network-wide node and network safety stock."""
    qty = [as_ledger_layout(sh[0][1]) for sh in shards]
    pol = [sh[1] for sh in shards]
    lists = [TypedList([p[k] for p in pol]) for k in (0, 1, 4, 5)]
    return qty, pol, lists, pol[0][2], pol[0][3]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ledgers(), policies()), min_size=1, max_size=3), st.integers(-1, 2),
       st.integers(0, 2**32 - 1))
def test_available_to_sell_matches_reference(shards, channel, seed):
    """Global SKU d lives in shard d % n_shards at row d // n_shards."""
    rng = np.random.default_rng(seed)
    n_shards = len(shards)
    qty, pol, lists, node_safety, network = sharded(shards)
    skus = rng.integers(0, N_SKUS * n_shards, 7).astype(np.int64)
    nodes = rng.permutation(N_NODES)[: rng.integers(1, N_NODES + 1)].astype(np.int64)
    enabled = rng.random(N_NODES) < 0.8
    outs = [np.zeros((7, len(nodes)), np.int64) for _ in range(4)]
    k._available_to_sell_sharded(TypedList(qty), *lists, skus, nodes, enabled, channel,
                                 node_safety, network, *outs)
    for i, sku in enumerate(skus.tolist()):
        shard, local = sku % n_shards, sku // n_shards
        sku_safety, override, _, _, fence_row, fence_qty = pol[shard]
        want = ref.available_to_sell(qty[shard], [local], nodes, enabled, channel, sku_safety,
                                     override, node_safety, network, fence_row, fence_qty)
        for have, expected in zip(outs, want, strict=True):
            np.testing.assert_array_equal(have[i], expected[0])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ledgers(), policies()), min_size=1, max_size=3),
       st.integers(0, 2**32 - 1))
def test_gather_sellable_matches_reference(shards, seed):
    """An allocation batch's AVAILABLE units per row and sale floor per line (safety
    stock, other channels' fences, the line's channel reserve), in one call."""
    rng = np.random.default_rng(seed)
    n_shards = len(shards)
    qty, pol, lists, node_safety, network = sharded(shards)
    skus = rng.permutation(N_SKUS * n_shards)[:rng.integers(1, 5)].astype(np.int64)
    n_lines = int(rng.integers(len(skus), 12))
    rows = np.concatenate([np.arange(len(skus)),
                           rng.integers(0, len(skus), n_lines - len(skus))]).astype(np.int64)
    rng.shuffle(rows)
    channels = rng.integers(-1, 3, n_lines).astype(np.int64)
    reserve = np.zeros(MAX_CHANNELS, np.int64)
    reserve[:3] = rng.integers(0, 3, 3) * rng.integers(0, 2)
    available = np.full((len(skus), N_NODES), -99, np.int64)
    floor = np.full((n_lines, N_NODES), -99, np.int64)
    k._gather_sellable(TypedList(qty), *lists, skus, rows, channels, node_safety, network,
                       reserve, available, floor)
    for u, sku in enumerate(skus.tolist()):
        shard, local = sku % n_shards, sku // n_shards
        assert available[u].tolist() == [int(qty[shard][local, n, 0]) for n in range(N_NODES)]
    for line, (u, channel) in enumerate(zip(rows.tolist(), channels.tolist(), strict=True)):
        sku = int(skus[u])
        shard, local = sku % n_shards, sku // n_shards
        sku_safety, override, _, _, fence_row, fence_qty = pol[shard]
        want = [ref.safety_at(local, n, sku_safety, override, node_safety, network)
                + ref.fenced_for_others(local, n, fence_row, fence_qty, channel)
                + (int(reserve[channel]) if channel >= 0 else 0) for n in range(N_NODES)]
        assert floor[line].tolist() == want


@settings(max_examples=200, deadline=None)
@given(policies(), st.integers(-1, 2), st.integers(0, 2**32 - 1))
def test_sale_floors_match_reference(policy, channel, seed):
    rng = np.random.default_rng(seed)
    sku_safety, override, node_safety, network, fence_row, fence_qty = policy
    skus = rng.integers(0, N_SKUS, 9).astype(np.int64)
    nodes = rng.integers(0, N_NODES, 9).astype(np.int64)
    out = np.zeros(9, np.int64)
    k._sale_floors(skus, nodes, channel, sku_safety, override, node_safety, network, fence_row,
                   fence_qty, out)
    want = [ref.safety_at(s, n, sku_safety, override, node_safety, network)
            + ref.fenced_for_others(s, n, fence_row, fence_qty, channel)
            for s, n in zip(skus, nodes, strict=True)]
    assert out.tolist() == want


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 100), st.booleans()), max_size=60), st.integers(0, 100))
def test_expired_slots_match_reference(slots, now):
    expires = np.array([s[0] for s in slots], np.int64)
    active = np.array([s[1] for s in slots], np.bool_)
    out = np.empty(len(slots), np.int64)
    count = k._expired_slots(expires, active, now, out)
    assert out[:count].tolist() == ref.expired_slots(expires, active, now)


@settings(max_examples=100, deadline=None)
@given(ledgers(), st.integers(0, N_SKUS), st.integers(0, N_NODES))
def test_bucket_totals_match_reference(ledger, n_skus, n_nodes):
    _, qty = ledger
    out = np.zeros(N_BUCKETS, np.int64)
    k._bucket_totals(qty, n_skus, n_nodes, out)
    np.testing.assert_array_equal(out, ref.bucket_totals(qty, n_skus, n_nodes))
