"""Kernels over one shard's quantity array `qty[sku, node, bucket]` (int32)."""

from __future__ import annotations

import numpy as np
from numba import njit

QTY_MAX = 2**31 - 1


@njit(cache=True, nogil=True)
def _revert_moves(qty, skus, nodes, from_b, to_b, amount, count):  # type: ignore[no-untyped-def]
    """Undo the first `count` moves, newest first."""
    n_shards = len(qty)
    for i in range(count - 1, -1, -1):
        q = qty[skus[i] % n_shards]
        s = skus[i] // n_shards
        n = nodes[i]
        if to_b[i] >= 0:
            q[s, n, to_b[i]] -= amount[i]
        if from_b[i] >= 0:
            q[s, n, from_b[i]] += amount[i]


@njit(cache=True, nogil=True)
def _apply_moves(qty, skus, nodes, from_b, to_b, amount, floor):  # type: ignore[no-untyped-def]
    """Apply moves in order, all or nothing, across the shards in the typed list `qty`
    (global SKU d lives in shard d % len(qty) at row d // len(qty)).

    Move i takes `amount[i]` out of bucket `from_b[i]` (-1: from outside) and puts
    it into `to_b[i]` (-1: to outside). It is refused when the source bucket would
    fall below `floor[i]` (0, or safety stock plus other channels' ring-fences for
    a sale) or the target would overflow int32. On refusal every earlier move is
    undone and the index of the refused move is returned; -1 means all applied.
    """
    n_shards = len(qty)
    for i in range(len(skus)):
        q = qty[skus[i] % n_shards]
        s = skus[i] // n_shards
        n = nodes[i]
        a = amount[i]
        f = from_b[i]
        t = to_b[i]
        if f >= 0 and np.int64(q[s, n, f]) - a < floor[i]:
            _revert_moves(qty, skus, nodes, from_b, to_b, amount, i)
            return i
        if t >= 0 and np.int64(q[s, n, t]) + a > QTY_MAX:
            _revert_moves(qty, skus, nodes, from_b, to_b, amount, i)
            return i
        if f >= 0:
            q[s, n, f] -= a
        if t >= 0:
            q[s, n, t] += a
    return -1


@njit(cache=True, nogil=True, inline="always")
def _safety_at(s, n, sku_safety, safety_override, node_safety, network_safety):  # type: ignore[no-untyped-def]
    """Safety stock of (sku, node): the most specific setting wins, -1 meaning 'inherit'."""
    result = np.int64(network_safety)
    v = node_safety[n]
    if v >= 0:
        result = np.int64(v)
    v = sku_safety[s]
    if v >= 0:
        result = np.int64(v)
    if safety_override.shape[0] > 0:
        v = safety_override[s, n]
        if v >= 0:
            result = np.int64(v)
    return result


@njit(cache=True, nogil=True, inline="always")
def _fenced_for_others(s, n, fence_row, fence_qty, channel):  # type: ignore[no-untyped-def]
    """Units ring-fenced at (sku, node) for channels other than `channel` (-1: for any channel).

    `fence_qty[row, -1]` holds the row's total across channels.
    """
    fenced = np.int64(0)
    if fence_row.shape[0] > 0:
        r = fence_row[s, n]
        if r >= 0:
            fenced = np.int64(fence_qty[r, fence_qty.shape[1] - 1])
            if channel >= 0:
                fenced -= fence_qty[r, channel]
    return fenced


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


@njit(cache=True, nogil=True, inline="always")
def _shard_arrays(lists, shard):  # type: ignore[no-untyped-def]
    """One shard's arrays out of the per-shard typed lists (qty, sku_safety,
    safety_override, fence_row, fence_qty)."""
    qty, sku_safety, safety_override, fence_row, fence_qty = lists
    return (qty[shard], sku_safety[shard], safety_override[shard], fence_row[shard],
            fence_qty[shard])


@njit(cache=True, nogil=True)
def _by_shard(skus, n_shards):  # type: ignore[no-untyped-def]
    """A counting sort of items by the shard of their global SKU (d % n_shards): the item
    indices shard by shard, and bounds such that shard k's are order[bounds[k]:bounds[k+1]]."""
    bounds = np.zeros(n_shards + 1, np.int64)
    for i in range(len(skus)):
        bounds[skus[i] % n_shards + 1] += 1
    for k in range(n_shards):
        bounds[k + 1] += bounds[k]
    cursor = bounds[:-1].copy()
    order = np.empty(len(skus), np.int64)
    for i in range(len(skus)):
        k = skus[i] % n_shards
        order[cursor[k]] = i
        cursor[k] += 1
    return order, bounds


@njit(cache=True, nogil=True)
def _available_to_sell_sharded(  # type: ignore[no-untyped-def]
    qty, sku_safety, safety_override, fence_row, fence_qty, skus, nodes, node_enabled, channel,
    node_safety, network_safety, out_available, out_safety, out_fenced, out_ats,
):
    """_available_to_sell over every shard at once: the per-shard arrays come as typed
    lists and global SKU d lives in shard d % n_shards at row d // n_shards.

    Requests are visited shard by shard (a counting sort), since fetching a shard's
    arrays from a typed list costs far more than reading a cell."""
    n_shards = len(qty)
    lists = (qty, sku_safety, safety_override, fence_row, fence_qty)
    order, bounds = _by_shard(skus, n_shards)
    last = fence_qty[0].shape[1] - 1 if n_shards else 0
    for shard in range(n_shards):
        if bounds[shard] == bounds[shard + 1]:
            continue
        q, ss, so, fr, fq = _shard_arrays(lists, shard)
        # Hoisted: which optional policy arrays this shard has. (Calling the shared
        # helpers here instead made the kernel several times slower.)
        has_override = so.shape[0] > 0
        has_fences = fr.shape[0] > 0
        for p in range(bounds[shard], bounds[shard + 1]):
            i = order[p]
            s = skus[i] // n_shards
            sku_default = ss[s]
            for j in range(len(nodes)):
                n = nodes[j]
                available = np.int64(q[s, n, 0])
                safety = np.int64(network_safety)
                if node_safety[n] >= 0:
                    safety = np.int64(node_safety[n])
                if sku_default >= 0:
                    safety = np.int64(sku_default)
                if has_override and so[s, n] >= 0:
                    safety = np.int64(so[s, n])
                fenced = np.int64(0)
                if has_fences:
                    r = fr[s, n]
                    if r >= 0:
                        fenced = np.int64(fq[r, last])
                        if channel >= 0:
                            fenced -= fq[r, channel]
                out_available[i, j] = available
                out_safety[i, j] = safety
                out_fenced[i, j] = fenced
                ats = available - safety - fenced
                if ats < 0 or not node_enabled[n]:
                    ats = np.int64(0)
                out_ats[i, j] = ats


@njit(cache=True, nogil=True)
def _gather_sellable(  # type: ignore[no-untyped-def]
    qty, sku_safety, safety_override, fence_row, fence_qty, skus, line_rows, line_channel,
    node_safety, network_safety, channel_reserve, out_available, out_floor,
):
    """What an allocation batch reads of the ledger, in one call whatever its channels:
    out_available[u, n] = AVAILABLE units of SKU skus[u] at node n, and
    out_floor[k, n] = what line k's sale must leave there: safety stock, units fenced for
    channels other than line_channel[k], and that channel's reserve (channel_reserve[c];
    a line without a channel, -1, has none). Per-shard arrays come as typed lists, as in
    _available_to_sell_sharded; lines are visited shard by shard."""
    n_shards = len(qty)
    n_nodes = out_available.shape[1]
    lists = (qty, sku_safety, safety_override, fence_row, fence_qty)
    order, bounds = _by_shard(skus[line_rows], n_shards)
    done = np.zeros(len(skus), np.bool_)
    for shard in range(n_shards):
        if bounds[shard] == bounds[shard + 1]:
            continue
        q, ss, so, fr, fq = _shard_arrays(lists, shard)
        for p in range(bounds[shard], bounds[shard + 1]):
            k = order[p]
            u = line_rows[k]
            s = skus[u] // n_shards
            channel = line_channel[k]
            reserve = np.int64(channel_reserve[channel]) if channel >= 0 else np.int64(0)
            first = not done[u]
            done[u] = True
            for n in range(n_nodes):
                if first:
                    out_available[u, n] = q[s, n, 0]
                out_floor[k, n] = (_safety_at(s, n, ss, so, node_safety, network_safety)
                                   + _fenced_for_others(s, n, fr, fq, channel) + reserve)


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
