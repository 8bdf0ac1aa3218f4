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
    _allocate_into,
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


# The outputs, in the order they are cut from the one buffer the kernel writes
# (_allocate_into): (name, which size) with 0 n_orders, 1 n_lines, 2 packages, 3 pieces.
_OUTPUTS: Final = (
    ("status", 0), ("method", 0), ("cost", 0), ("single_cost", 0), ("split_cost", 0),
    ("pkg_first", 0), ("pkg_count", 0), ("backorder", 1),
    ("pkg_node", 2), ("pkg_service", 2), ("pkg_carrier", 2), ("pkg_handling", 2),
    ("pkg_units_cost", 2), ("pkg_billable", 2), ("pkg_ship_day", 2), ("pkg_transit", 2),
    ("piece_line", 3), ("piece_pkg", 3), ("piece_qty", 3), ("piece_first", 0),
    ("piece_count", 0))


class BatchResult:
    """The kernel's decisions: one run at the front of a buffer, read as the arrays named
    in _OUTPUTS, one after the other, each as long as what the kernel wrote (n_orders,
    n_lines, the packages made, the pieces made). Each array is a view made when read; the
    order path reads them all at once as lists (`lists`)."""

    def __init__(self, out: np.ndarray, n_orders: int, n_lines: int, pkgs: int,
                 used: int) -> None:
        self.out = out
        lengths = (n_orders, n_lines, pkgs, used)
        self.bounds: dict[str, tuple[int, int]] = {}
        start = 0
        for name, which in _OUTPUTS:
            stop = start + lengths[which]
            self.bounds[name] = (start, stop)
            start = stop
        self.size = start

    def array(self, name: str) -> np.ndarray:
        start, stop = self.bounds[name]
        return self.out[start:stop]

    def lists(self) -> dict[str, list[int]]:
        """Every output as a list, from one conversion of the run."""
        flat: list[int] = self.out[:self.size].tolist()
        return {name: flat[start:stop] for name, (start, stop) in self.bounds.items()}

    @property
    def status(self) -> np.ndarray:
        return self.array("status")

    @property
    def method(self) -> np.ndarray:
        return self.array("method")

    @property
    def cost(self) -> np.ndarray:
        return self.array("cost")

    @property
    def single_cost(self) -> np.ndarray:
        return self.array("single_cost")

    @property
    def split_cost(self) -> np.ndarray:
        return self.array("split_cost")

    @property
    def pkg_first(self) -> np.ndarray:
        return self.array("pkg_first")

    @property
    def pkg_count(self) -> np.ndarray:
        return self.array("pkg_count")

    @property
    def backorder(self) -> np.ndarray:
        return self.array("backorder")

    @property
    def pkg_node(self) -> np.ndarray:
        return self.array("pkg_node")

    @property
    def pkg_service(self) -> np.ndarray:
        return self.array("pkg_service")

    @property
    def pkg_carrier(self) -> np.ndarray:
        return self.array("pkg_carrier")

    @property
    def pkg_handling(self) -> np.ndarray:
        return self.array("pkg_handling")

    @property
    def pkg_units_cost(self) -> np.ndarray:
        return self.array("pkg_units_cost")

    @property
    def pkg_billable(self) -> np.ndarray:
        return self.array("pkg_billable")

    @property
    def pkg_ship_day(self) -> np.ndarray:
        return self.array("pkg_ship_day")

    @property
    def pkg_transit(self) -> np.ndarray:
        return self.array("pkg_transit")

    @property
    def piece_line(self) -> np.ndarray:
        return self.array("piece_line")

    @property
    def piece_pkg(self) -> np.ndarray:
        return self.array("piece_pkg")

    @property
    def piece_qty(self) -> np.ndarray:
        return self.array("piece_qty")

    @property
    def piece_first(self) -> np.ndarray:
        return self.array("piece_first")

    @property
    def piece_count(self) -> np.ndarray:
        return self.array("piece_count")


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
        pkgs, used = _allocate_into(
            out, n_orders, n_lines, capacity, pieces,
            batch.line_start, batch.line_end, batch.region, batch.minute, batch.deadline,
            batch.tier, batch.allow_split, batch.channel,
            batch.item_u, batch.item_qty, batch.item_weight, batch.item_volume,
            batch.item_longest, batch.item_floor, batch.item_unit_extra,
            work_avail, work_capacity,
            node_enabled, net.blocked, net.zone, net.rates, net.over_per_lb, net.transit,
            net.service_cutoff, net.surcharge, net.lane_has, net.lane_fixed,
            net.lane_per_unit, net.lane_per_lb, net.handling, net.pick, net.node_cutoff,
            net.split_penalty, max_exact)
        if pkgs >= 0:
            break
        capacity *= 4  # outputs too small for this batch's packages: retry larger
    avail[...] = work_avail
    capacity_left[...] = work_capacity
    return BatchResult(out, n_orders, n_lines, pkgs, used)
