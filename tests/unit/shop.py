"""A small shop the KPI, rules and returns tests share: the set-up commands for nodes,
channels, priced SKUs with categories, the test network and opening stock."""

from __future__ import annotations

import dataclasses

from core import commands as c
from core.model import ChannelSpec, NodeSpec, SkuSpec
from tests.unit.test_orders_stateful import NETWORK

#: SKU -> (price, unit cost, category), micros.
SKUS = {
    "shirt": (20_000_000, 8_000_000, "apparel"),
    "phone": (100_000_000, 60_000_000, "electronics"),
    "socks": (5_000_000, 1_000_000, "apparel"),
    "mug": (9_000_000, 3_000_000, "home"),
    "tree": (30_000_000, 10_000_000, "holiday"),
}
#: n0 near New York, n1 in Los Angeles.
NODES = (NodeSpec("n0", latitude=40.0, longitude=-75.0),
         NodeSpec("n1", latitude=34.0, longitude=-118.0))


def shop(stock: dict[tuple[str, str], int], n_nodes: int = 2,
         categories: dict[str, str] | None = None) -> tuple[c.Command, ...]:
    """Commands that open the shop: `n_nodes` of NODES, channels web and mkt, the SKUs
    `stock` names (categories may be changed), and `stock[(sku, node)]` units."""
    categories = categories or {}
    skus = tuple(dict.fromkeys(sku for sku, _ in stock))
    return (
        c.UpsertNodes(NODES[:n_nodes]),
        c.UpsertChannels((ChannelSpec("web"), ChannelSpec("mkt"))),
        c.UpsertSkus(tuple(SkuSpec(s, weight_lb=1, price_micros=SKUS[s][0],
                                   unit_cost_micros=SKUS[s][1],
                                   category=categories.get(s, SKUS[s][2])) for s in skus)),
        c.SetNetwork(dataclasses.replace(NETWORK, node_costs=NETWORK.node_costs[:n_nodes])),
        c.ReceiveStock(tuple(c.ReceiptLine(s, n, q) for (s, n), q in stock.items())),
    )
