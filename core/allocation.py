"""Allocation: the readable wrapper around the allocation kernel.

`run_allocation` takes a batch of orders as arrays (see `OrderBatch`), the
sellable state (`avail[u, n]` for the batch's distinct SKUs) and the network
arrays, runs the kernel, and returns its decisions as arrays (`BatchResult`).
The order-level logic (gathering, options beyond the kernel, events) builds
on it in core/orders.py.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.kernels._allocate import (
    METHOD_EXACT,
    METHOD_HEURISTIC,
    STATUS_ALLOCATED,
    STATUS_NO_FEASIBLE_NODE,
    STATUS_OUT_OF_STOCK,
    STATUS_PARTIAL,
    _allocate_orders,
)

MAX_EXACT_ITEMS = 8

__all__ = [
    "MAX_EXACT_ITEMS",
    "METHOD_EXACT",
    "METHOD_HEURISTIC",
    "STATUS_ALLOCATED",
    "STATUS_NO_FEASIBLE_NODE",
    "STATUS_OUT_OF_STOCK",
    "STATUS_PARTIAL",
    "BatchResult",
    "OrderBatch",
    "run_allocation",
]


@dataclass(slots=True)
class OrderBatch:
    """Orders (in the order they are to be served) and their lines, as arrays.

    Lines of order o are line_start[o]:line_end[o]; within an order each line is a
    distinct SKU, `item_u` its row in the state matrix `avail`."""

    line_start: np.ndarray
    line_end: np.ndarray
    region: np.ndarray
    minute: np.ndarray  # order time, minutes after midnight UTC
    deadline: np.ndarray  # days from the order's day the delivery may take
    tier: np.ndarray
    allow_split: np.ndarray
    channel: np.ndarray
    item_u: np.ndarray
    item_qty: np.ndarray
    item_weight: np.ndarray  # lb per unit
    item_volume: np.ndarray  # in^3 per unit
    item_longest: np.ndarray  # in
    item_floor: np.ndarray  # [line, node] units that must stay (safety + other fences)
    item_unit_extra: np.ndarray  # [line, node] opportunity cost per unit, micros

    @property
    def n_orders(self) -> int:
        return len(self.line_start)

    @property
    def n_lines(self) -> int:
        return len(self.item_u)


@dataclass(slots=True)
class BatchResult:
    status: np.ndarray
    method: np.ndarray
    cost: np.ndarray
    single_cost: np.ndarray
    split_cost: np.ndarray
    pkg_first: np.ndarray
    pkg_count: np.ndarray
    backorder: np.ndarray
    pkg_node: np.ndarray
    pkg_service: np.ndarray
    pkg_carrier: np.ndarray
    pkg_handling: np.ndarray
    pkg_units_cost: np.ndarray
    pkg_billable: np.ndarray
    pkg_ship_day: np.ndarray
    pkg_transit: np.ndarray
    piece_line: np.ndarray
    piece_pkg: np.ndarray
    piece_qty: np.ndarray
    piece_first: np.ndarray
    piece_count: np.ndarray


def run_allocation(batch: OrderBatch, avail: np.ndarray, capacity_left: np.ndarray,
                   net: Any, node_enabled: np.ndarray,
                   max_exact: int = MAX_EXACT_ITEMS) -> BatchResult:
    """Allocate the batch in order; `avail` and `capacity_left` are updated in place.

    `net` is a CompiledNetwork (or anything with the same array attributes)."""
    n_orders, n_lines = batch.n_orders, batch.n_lines
    n_nodes = avail.shape[1]
    capacity = max(16, 2 * n_lines + n_orders)
    while True:
        pieces = capacity * 2 + n_lines * n_nodes
        # One buffer for every output, sliced into contiguous views: one allocation
        # instead of twenty-one (this runs for every order on the unary path).
        buffer = np.zeros(9 * n_orders + n_lines + 8 * capacity + 3 * pieces, np.int64)
        cuts = list(itertools.accumulate([0] + [n_orders] * 7 + [n_lines] + [capacity] * 8
                                         + [pieces] * 3 + [n_orders] * 2))
        views = [buffer[a:b] for a, b in itertools.pairwise(cuts)]
        work_avail = avail.copy()
        work_capacity = capacity_left.copy()
        pkgs, used = _allocate_orders(
            batch.line_start, batch.line_end, batch.region, batch.minute, batch.deadline,
            batch.tier, batch.allow_split, batch.channel,
            batch.item_u, batch.item_qty, batch.item_weight, batch.item_volume,
            batch.item_longest, batch.item_floor, batch.item_unit_extra,
            work_avail, work_capacity,
            node_enabled, net.blocked, net.zone, net.rates, net.over_per_lb, net.transit,
            net.service_cutoff, net.surcharge, net.lane_has, net.lane_fixed,
            net.lane_per_unit, net.lane_per_lb, net.handling, net.pick, net.node_cutoff,
            net.split_penalty, max_exact, *views)
        if pkgs >= 0:
            break
        capacity *= 4  # outputs too small for this batch's packages: retry larger
    avail[...] = work_avail
    capacity_left[...] = work_capacity
    # The package and piece outputs as far as they were filled: their spare room is
    # never read, and whoever reads the result whole (as lists) would copy it too.
    for k in range(8, 16):
        views[k] = views[k][:pkgs]
    for k in range(16, 19):
        views[k] = views[k][:used]
    return BatchResult(*views)
