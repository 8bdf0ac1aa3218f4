"""Kernels over one shard's quantity array `qty[sku, node, bucket]` (int32)."""

from __future__ import annotations

import numpy as np
from numba import njit

QTY_MAX = 2**31 - 1


@njit(cache=True, nogil=True)
def _revert_moves(qty, skus, nodes, from_b, to_b, amount, count):  # type: ignore[no-untyped-def]
    """Undo the first `count` moves, newest first."""
    for i in range(count - 1, -1, -1):
        s = skus[i]
        n = nodes[i]
        q = amount[i]
        if to_b[i] >= 0:
            qty[s, n, to_b[i]] -= q
        if from_b[i] >= 0:
            qty[s, n, from_b[i]] += q


@njit(cache=True, nogil=True)
def _apply_moves(qty, skus, nodes, from_b, to_b, amount, floor):  # type: ignore[no-untyped-def]
    """Apply moves in order, all or nothing.

    Move i takes `amount[i]` out of bucket `from_b[i]` (-1: from outside) and puts
    it into `to_b[i]` (-1: to outside). It is refused when the source bucket would
    fall below `floor[i]` (0, or safety stock plus other channels' ring-fences for
    a sale) or the target would overflow int32. On refusal every earlier move is
    undone and the index of the refused move is returned; -1 means all applied.
    """
    for i in range(len(skus)):
        s = skus[i]
        n = nodes[i]
        q = amount[i]
        f = from_b[i]
        t = to_b[i]
        if f >= 0 and np.int64(qty[s, n, f]) - q < floor[i]:
            _revert_moves(qty, skus, nodes, from_b, to_b, amount, i)
            return i
        if t >= 0 and np.int64(qty[s, n, t]) + q > QTY_MAX:
            _revert_moves(qty, skus, nodes, from_b, to_b, amount, i)
            return i
        if f >= 0:
            qty[s, n, f] -= q
        if t >= 0:
            qty[s, n, t] += q
    return -1


@njit(cache=True, nogil=True, inline="always")
def _safety_at(s, n, sku_safety, safety_override, node_safety, network_safety):  # type: ignore[no-untyped-def]
    """Safety stock of (sku, node): the most specific setting wins, -1 meaning 'inherit'."""
    if safety_override.shape[0] > 0:
        v = safety_override[s, n]
        if v >= 0:
            return np.int64(v)
    v = sku_safety[s]
    if v >= 0:
        return np.int64(v)
    v = node_safety[n]
    if v >= 0:
        return np.int64(v)
    return np.int64(network_safety)


@njit(cache=True, nogil=True, inline="always")
def _fenced_for_others(s, n, fence_row, fence_qty, channel):  # type: ignore[no-untyped-def]
    """Units ring-fenced at (sku, node) for channels other than `channel` (-1: for any channel).

    `fence_qty[row, -1]` holds the row's total across channels.
    """
    if fence_row.shape[0] == 0:
        return np.int64(0)
    r = fence_row[s, n]
    if r < 0:
        return np.int64(0)
    total = np.int64(fence_qty[r, fence_qty.shape[1] - 1])
    if channel >= 0:
        return total - fence_qty[r, channel]
    return total


@njit(cache=True, nogil=True)
def _sale_floors(  # type: ignore[no-untyped-def]
    skus, nodes, channel, sku_safety, safety_override, node_safety, network_safety,
    fence_row, fence_qty, out,
):
    """out[i] = what must stay AVAILABLE at (skus[i], nodes[i]) after a sale to `channel`."""
    for i in range(len(skus)):
        s = skus[i]
        n = nodes[i]
        out[i] = _safety_at(
            s, n, sku_safety, safety_override, node_safety, network_safety
        ) + _fenced_for_others(s, n, fence_row, fence_qty, channel)


@njit(cache=True, nogil=True)
def _available_to_sell(  # type: ignore[no-untyped-def]
    qty, skus, nodes, node_enabled, channel, sku_safety, safety_override, node_safety,
    network_safety, fence_row, fence_qty, out_available, out_safety, out_fenced, out_ats,
):
    """Per (requested SKU i, requested node j): AVAILABLE, safety stock, units fenced for
    other channels, and available-to-sell = max(0, AVAILABLE - safety - fenced); zero
    at disabled nodes. Returns nothing; fills the four [len(skus), len(nodes)] outputs."""
    for i in range(len(skus)):
        s = skus[i]
        for j in range(len(nodes)):
            n = nodes[j]
            available = np.int64(qty[s, n, 0])
            safety = _safety_at(s, n, sku_safety, safety_override, node_safety, network_safety)
            fenced = _fenced_for_others(s, n, fence_row, fence_qty, channel)
            out_available[i, j] = available
            out_safety[i, j] = safety
            out_fenced[i, j] = fenced
            ats = available - safety - fenced
            if ats < 0 or not node_enabled[n]:
                ats = 0
            out_ats[i, j] = ats


@njit(cache=True, nogil=True)
def _expired_slots(expires_ms, active, now_ms, out):  # type: ignore[no-untyped-def]
    """Write the indices of active slots with expiry <= now into `out`, in index order;
    return how many."""
    count = 0
    for i in range(len(expires_ms)):
        if active[i] and expires_ms[i] <= now_ms:
            out[count] = i
            count += 1
    return count


@njit(cache=True, nogil=True)
def _bucket_totals(qty, n_skus, n_nodes, out):  # type: ignore[no-untyped-def]
    """out[b] += sum of bucket b over the first n_skus x n_nodes cells."""
    for s in range(n_skus):
        for n in range(n_nodes):
            for b in range(qty.shape[2]):
                out[b] += qty[s, n, b]
