"""Allocation: the readable wrapper around the allocation kernel.

`run_allocation` takes a batch of orders as arrays (see `OrderBatch`), the
sellable state (`avail[u, n]` for the batch's distinct SKUs) and the network
arrays, runs the kernel, and returns its decisions as arrays (`BatchResult`).
The order-level logic (gathering, options beyond the kernel, events) builds
on it in core/orders.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

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


#: The outputs, in the order they are cut from the one buffer the kernel writes
#: (_allocate_orders), and so the order of BatchResult.lists.
OUTPUTS: Final = (
    "status", "method", "cost", "single_cost", "split_cost", "pkg_first", "pkg_count",
    "backorder",
    "pkg_node", "pkg_service", "pkg_carrier", "pkg_handling", "pkg_units_cost",
    "pkg_billable", "pkg_ship_day", "pkg_transit",
    "piece_line", "piece_pkg", "piece_qty",
    "piece_first", "piece_count")
# How long each is: 0 n_orders, 1 n_lines, 2 the packages made, 3 the pieces made.
_LENGTH_OF: Final = (0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 0, 0)


class BatchResult:
    """The kernel's decisions: one run at the front of a buffer, read as the arrays named
    in OUTPUTS, one after the other, each as long as what the kernel wrote (n_orders,
    n_lines, the packages made, the pieces made). Each array is a view made when read; the
    order path reads them all at once as lists (`lists`)."""

    def __init__(self, out: np.ndarray, n_orders: int, n_lines: int, pkgs: int,
                 used: int) -> None:
        self.out = out
        lengths = (n_orders, n_lines, pkgs, used)
        starts = [0]  # output k is out[starts[k]:starts[k + 1]]
        at = 0
        for which in _LENGTH_OF:
            at += lengths[which]
            starts.append(at)
        self.starts = starts

    def array(self, k: int) -> np.ndarray:
        """Output k (of OUTPUTS)."""
        return self.out[self.starts[k]:self.starts[k + 1]]

    def lists(self) -> list[list[int]]:
        """Every output as a list (in the order of OUTPUTS), from one conversion."""
        starts = self.starts
        flat: list[int] = self.out[:starts[-1]].tolist()
        return [flat[starts[k]:starts[k + 1]] for k in range(len(OUTPUTS))]

    @property
    def status(self) -> np.ndarray:
        return self.array(0)

    @property
    def method(self) -> np.ndarray:
        return self.array(1)

    @property
    def cost(self) -> np.ndarray:
        return self.array(2)

    @property
    def single_cost(self) -> np.ndarray:
        return self.array(3)

    @property
    def split_cost(self) -> np.ndarray:
        return self.array(4)

    @property
    def pkg_first(self) -> np.ndarray:
        return self.array(5)

    @property
    def pkg_count(self) -> np.ndarray:
        return self.array(6)

    @property
    def backorder(self) -> np.ndarray:
        return self.array(7)

    @property
    def pkg_node(self) -> np.ndarray:
        return self.array(8)

    @property
    def pkg_service(self) -> np.ndarray:
        return self.array(9)

    @property
    def pkg_carrier(self) -> np.ndarray:
        return self.array(10)

    @property
    def pkg_handling(self) -> np.ndarray:
        return self.array(11)

    @property
    def pkg_units_cost(self) -> np.ndarray:
        return self.array(12)

    @property
    def pkg_billable(self) -> np.ndarray:
        return self.array(13)

    @property
    def pkg_ship_day(self) -> np.ndarray:
        return self.array(14)

    @property
    def pkg_transit(self) -> np.ndarray:
        return self.array(15)

    @property
    def piece_line(self) -> np.ndarray:
        return self.array(16)

    @property
    def piece_pkg(self) -> np.ndarray:
        return self.array(17)

    @property
    def piece_qty(self) -> np.ndarray:
        return self.array(18)

    @property
    def piece_first(self) -> np.ndarray:
        return self.array(19)

    @property
    def piece_count(self) -> np.ndarray:
        return self.array(20)


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
        out = np.zeros(9 * n_orders + n_lines + 8 * capacity + 3 * pieces, np.int64)
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
            net.split_penalty, max_exact, out, capacity, pieces)
        if pkgs >= 0:
            break
        capacity *= 4  # outputs too small for this batch's packages: retry larger
    avail[...] = work_avail
    capacity_left[...] = work_capacity
    return BatchResult(out, n_orders, n_lines, pkgs, used)
