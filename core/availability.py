"""Available-to-sell now and available-to-promise by date.

One rule everywhere: available-to-sell = AVAILABLE - safety stock - units
ring-fenced for other channels, floored at zero, and zero at disabled nodes and at nodes
the carrier network does not ship the channel from (its blocked channels), as allocation
reads them. A channel switched to safety-stock-only (an emergency change) adds its
reserve to the safety stock. Without a channel, every fence counts as "other" (only
unfenced stock is sold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.kernels._ledger import _available_to_sell_sharded, _sale_floors
from core.ledger import Ledger


@dataclass(frozen=True, slots=True)
class AvailabilityTable:
    """Arrays of shape [len(skus), len(nodes)] in request order."""

    skus: np.ndarray
    nodes: np.ndarray
    available: np.ndarray
    safety_stock: np.ndarray
    fenced_for_others: np.ndarray
    available_to_sell: np.ndarray

    @property
    def total_to_sell(self) -> np.ndarray:
        totals: np.ndarray = self.available_to_sell.sum(axis=1)
        return totals


def available_to_sell(ledger: Ledger, skus: np.ndarray, nodes: np.ndarray,
                      channel: int) -> AvailabilityTable:
    shape = (len(skus), len(nodes))
    outs = [np.empty(shape, np.int64) for _ in range(4)]
    views = ledger.kernel_views()
    _available_to_sell_sharded(*views, np.ascontiguousarray(skus, np.int64),
                               np.ascontiguousarray(nodes, np.int64), ledger.catalog.node_enabled,
                               channel, ledger.node_safety, ledger.network_safety, *outs)
    reserve = ledger.ops.channel_reserve.get(channel, 0)
    if reserve:  # the channel is safety-stock-only: it sells only above this reserve
        available, safety, fenced, to_sell = outs
        safety += reserve
        np.maximum(available - safety - fenced, 0, out=to_sell)
        to_sell[:, ~ledger.catalog.node_enabled[np.asarray(nodes, np.int64)]] = 0
    if channel >= 0:
        blocked = ledger.network().blocked
        if blocked.shape[1] > channel:
            shut = blocked[np.asarray(nodes, np.int64), channel]
            if shut.any():
                outs[3][:, shut] = 0
    return AvailabilityTable(skus, nodes, *outs)


@dataclass(frozen=True, slots=True)
class PromiseStep:
    """From `date_ms` on, `quantity` units can be promised (cumulative)."""

    date_ms: int
    quantity: int


def promise_schedule(ledger: Ledger, table: AvailabilityTable, row: int, channel: int,
                     now_ms: int) -> list[PromiseStep]:
    """What can be promised of the table's SKU `row` to `channel`: sellable now, then the
    cumulative quantity as inbound stock (IN_TRANSIT with an expected date) arrives at the
    table's nodes. A node's arrivals first make up what it lacks of its floor (safety
    stock, other channels' fences), as available-to-sell reads it once they are in; a
    node that sells nothing to the channel (disabled, or its network blocks the channel)
    adds nothing. Overdue inbound counts from now."""
    sku = int(table.skus[row])
    nodes = table.nodes.tolist()
    column = {node: j for j, node in enumerate(nodes)}
    available = table.available[row].tolist()
    floor = (table.safety_stock[row] + table.fenced_for_others[row]).tolist()
    enabled = ledger.catalog.node_enabled
    blocked = ledger.network().blocked
    sells = [bool(enabled[node]) and not (0 <= channel < blocked.shape[1]
                                          and bool(blocked[node, channel]))
             for node in nodes]
    arrivals: dict[int, dict[int, int]] = {}  # date -> column -> units
    for key in ledger.inbound_by_sku.get(sku, ()):
        _, _, node = key
        j = column.get(node)
        if j is not None and sells[j]:
            line = ledger.inbound[key]
            at = arrivals.setdefault(max(line.expected_ms, now_ms), {})
            at[j] = at.get(j, 0) + line.remaining
    come = [0] * len(nodes)

    def sellable() -> int:
        return sum(max(available[j] + come[j] - floor[j], 0)
                   for j in range(len(nodes)) if sells[j])

    steps = [PromiseStep(now_ms, int(table.available_to_sell[row].sum()))]
    for date in sorted(arrivals):
        for j, units in arrivals[date].items():
            come[j] += units
        quantity = sellable()
        if date == now_ms:
            steps[0] = PromiseStep(now_ms, quantity)
        elif quantity != steps[-1].quantity:  # (what only refills a floor adds no step)
            steps.append(PromiseStep(date, quantity))
    return steps


def sale_floors(ledger: Ledger, skus: np.ndarray, nodes: np.ndarray, channel: int) -> np.ndarray:
    """What must remain AVAILABLE at each (sku, node) after a sale to `channel`:
    safety stock plus units ring-fenced for other channels (one rule for every sale)."""
    out = np.zeros(len(skus), np.int64)
    shard_of = skus % ledger.n_shards
    local = skus // ledger.n_shards
    for shard_no in np.unique(shard_of):
        mask = shard_of == shard_no
        shard = ledger.shards[int(shard_no)]
        part = np.zeros(int(mask.sum()), np.int64)
        _sale_floors(local[mask], nodes[mask], channel, shard.sku_safety, shard.safety_override,
                     ledger.node_safety, ledger.network_safety, shard.fence_row,
                     shard.fence_qty, part)
        out[mask] = part
    return out + ledger.ops.channel_reserve.get(channel, 0)
