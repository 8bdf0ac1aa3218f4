"""A seeded allocation workload: 16 nodes, 1-5-line orders, a realistic rate card."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from core.allocation import OrderBatch

NO_DEADLINE = 1 << 30


def parcel_network(n_nodes: int = 16, n_regions: int = 99, n_services: int = 4,
                   seed: int = 11) -> SimpleNamespace:
    """Ground / two-day / overnight-like services priced by zone and weight (to 150 lb)."""
    rng = np.random.default_rng(seed)
    width = 150
    rates = np.zeros((n_services, 9, width + 1), np.int64)
    weights = np.arange(1, width + 1)
    for s in range(n_services):
        speed = 1.0 + 0.8 * s
        for z in range(2, 9):
            rates[s, z, 1:] = ((8_000_000 + 600_000 * (z - 2)) * speed
                               + weights * (350_000 + 90_000 * (z - 2)) * speed).astype(np.int64)
    transit = np.zeros((n_services, 9), np.int64)
    for s in range(n_services):
        for z in range(2, 9):
            transit[s, z] = max(1, (z - 1) // (s + 1))
    return SimpleNamespace(
        node_enabled=np.ones(n_nodes, np.bool_),
        blocked=np.zeros((n_nodes, 4), np.bool_),
        zone=rng.integers(2, 9, (n_nodes, n_regions)).astype(np.int64),
        rates=rates, over_per_lb=np.full((n_services, 9), 500_000, np.int64), transit=transit,
        service_cutoff=np.full(n_services, 17 * 60, np.int64),
        surcharge=np.full(n_services, 15_000_000, np.int64),
        lane_has=np.zeros((n_nodes, n_regions), np.bool_),
        lane_fixed=np.zeros((n_nodes, n_regions), np.int64),
        lane_per_unit=np.zeros((n_nodes, n_regions), np.int64),
        lane_per_lb=np.zeros((n_nodes, n_regions), np.int64),
        handling=rng.integers(1_000_000, 2_500_000, n_nodes).astype(np.int64),
        pick=rng.integers(150_000, 400_000, n_nodes).astype(np.int64),
        node_cutoff=np.full(n_nodes, 16 * 60, np.int64),
        split_penalty=np.array([1_000_000, 3_000_000, 4_000_000, 6_000_000], np.int64),
    )


def order_batch(n_orders: int, n_skus: int, n_nodes: int = 16, n_regions: int = 99,
                seed: int = 12, max_lines: int = 5) -> tuple[OrderBatch, np.ndarray]:
    """Orders of 1..max_lines distinct SKUs (Zipf-ish popularity) and a stock matrix
    where each node holds each SKU with probability 0.5."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, max_lines + 1, n_orders)
    ends = np.cumsum(counts)
    starts = ends - counts
    n_lines = int(ends[-1])
    popularity = 1.0 / np.arange(1, n_skus + 1) ** 0.8
    popularity /= popularity.sum()
    item_u = np.empty(n_lines, np.int64)
    for o in range(n_orders):
        item_u[starts[o]:ends[o]] = rng.choice(n_skus, counts[o], replace=False, p=popularity)
    stock = (rng.random((n_skus, n_nodes)) < 0.5) * rng.integers(1, 500, (n_skus, n_nodes))
    weight = rng.uniform(0.2, 12.0, n_skus)
    volume = rng.uniform(20.0, 1500.0, n_skus)
    longest = rng.uniform(3.0, 40.0, n_skus)
    batch = OrderBatch(
        line_start=starts.astype(np.int64), line_end=ends.astype(np.int64),
        region=rng.integers(0, n_regions, n_orders).astype(np.int64),
        minute=rng.integers(0, 1440, n_orders).astype(np.int64),
        deadline=rng.choice([2, 3, 5, NO_DEADLINE], n_orders).astype(np.int64),
        tier=rng.integers(0, 4, n_orders).astype(np.int64),
        allow_split=np.ones(n_orders, np.bool_),
        channel=rng.integers(0, 3, n_orders).astype(np.int64),
        item_u=item_u, item_qty=rng.integers(1, 4, n_lines).astype(np.int64),
        item_weight=weight[item_u], item_volume=volume[item_u], item_longest=longest[item_u],
        item_floor=np.zeros((n_lines, n_nodes), np.int64),
        item_unit_extra=np.zeros((n_lines, n_nodes), np.int64),
    )
    return batch, stock.astype(np.int64)
