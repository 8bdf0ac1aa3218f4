"""Slow pure-Python twins of the Numba kernels. Tests compare the kernels against them."""

from __future__ import annotations

import numpy as np

QTY_MAX = 2**31 - 1


def apply_moves(qty, skus, nodes, from_b, to_b, amount, floor) -> int:
    """Reference for _apply_moves: apply to a copy, commit only if every move is valid."""
    work = qty.astype(np.int64).copy()
    for i in range(len(skus)):
        s, n, q, f, t = int(skus[i]), int(nodes[i]), int(amount[i]), int(from_b[i]), int(to_b[i])
        if f >= 0 and work[s, n, f] - q < floor[i]:
            return i
        if t >= 0 and work[s, n, t] + q > QTY_MAX:
            return i
        if f >= 0:
            work[s, n, f] -= q
        if t >= 0:
            work[s, n, t] += q
    qty[...] = work.astype(qty.dtype)
    return -1


def safety_at(s, n, sku_safety, safety_override, node_safety, network_safety) -> int:
    if safety_override.shape[0] and safety_override[s, n] >= 0:
        return int(safety_override[s, n])
    if sku_safety[s] >= 0:
        return int(sku_safety[s])
    if node_safety[n] >= 0:
        return int(node_safety[n])
    return int(network_safety)


def fenced_for_others(s, n, fence_row, fence_qty, channel) -> int:
    if not fence_row.shape[0] or fence_row[s, n] < 0:
        return 0
    row = fence_qty[fence_row[s, n]]
    per_channel = [int(x) for x in row[:-1]]
    return sum(q for c, q in enumerate(per_channel) if c != channel)


def available_to_sell(qty, skus, nodes, node_enabled, channel, sku_safety, safety_override,
                      node_safety, network_safety, fence_row, fence_qty):
    shape = (len(skus), len(nodes))
    out = [np.zeros(shape, np.int64) for _ in range(4)]
    for i, s in enumerate(skus):
        for j, n in enumerate(nodes):
            available = int(qty[s, n, 0])
            safety = safety_at(s, n, sku_safety, safety_override, node_safety, network_safety)
            fenced = fenced_for_others(s, n, fence_row, fence_qty, channel)
            ats = max(0, available - safety - fenced) if node_enabled[n] else 0
            for k, v in enumerate((available, safety, fenced, ats)):
                out[k][i, j] = v
    return out


def expired_slots(expires_ms, active, now_ms) -> list[int]:
    return [i for i in range(len(expires_ms)) if active[i] and expires_ms[i] <= now_ms]


def bucket_totals(qty, n_skus, n_nodes) -> np.ndarray:
    return qty[:n_skus, :n_nodes].astype(np.int64).sum(axis=(0, 1))
