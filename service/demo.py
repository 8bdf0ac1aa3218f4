"""The demo catalogue `allocd serve --demo` loads into an empty ledger.

Ten fulfilment centres at real US locations, two stores and a drop-ship
supplier; a few thousand SKUs with seeded random attributes and stock.
"""

from __future__ import annotations

import numpy as np

from core import commands as c
from core.model import ChannelSpec, NodeSpec, NodeType, SkuSpec

DEMO_NODES = (
    NodeSpec("OAK4", "Tracy, CA", NodeType.OWNED_DC, 37.7448, -121.3985, 20000),
    NodeSpec("ONT6", "Moreno Valley, CA", NodeType.OWNED_DC, 33.873, -117.2361, 20000),
    NodeSpec("PHX6", "Phoenix, AZ", NodeType.OWNED_DC, 33.433, -112.1644, 15000),
    NodeSpec("IND1", "Whitestown, IN", NodeType.OWNED_DC, 39.9797, -86.3833, 20000),
    NodeSpec("AVP3", "Hazleton, PA", NodeType.OWNED_DC, 41.2776, -75.4973, 20000),
    NodeSpec("DFW7", "Fort Worth, TX", NodeType.OWNED_DC, 32.9783, -97.3161, 15000),
    NodeSpec("ATL6", "East Point, GA", NodeType.THIRD_PARTY, 33.6588, -84.4727, 10000),
    NodeSpec("SEA8", "Kent, WA", NodeType.THIRD_PARTY, 47.3809, -122.2348, 10000),
    NodeSpec("MDW2", "Joliet, IL", NodeType.OWNED_DC, 41.5250, -88.0817, 15000),
    NodeSpec("JAX3", "Jacksonville, FL", NodeType.OWNED_DC, 30.3322, -81.6557, 10000),
    NodeSpec("STORE-NYC", "Manhattan store", NodeType.STORE, 40.7505, -73.9934, 500),
    NodeSpec("STORE-CHI", "Chicago store", NodeType.STORE, 41.8827, -87.6233, 500),
    NodeSpec("DS-ACME", "Acme drop-ship", NodeType.DROP_SHIP, 35.2271, -80.8431, 2000),
)
DEMO_CHANNELS = (
    ChannelSpec("web", "Web store"),
    ChannelSpec("marketplace", "Marketplace"),
    ChannelSpec("retail", "Stores"),
)
CATEGORIES = ("apparel", "footwear", "home", "electronics", "beauty", "toys", "outdoor")


DAY_MS = 86_400_000


def demo_commands(n_skus: int, seed: int, now_ms: int) -> list[c.Command]:
    """Commands that build the demo: nodes, channels, SKUs, stock, inbound, a few policies."""
    rng = np.random.default_rng(seed)
    skus = []
    for i in range(n_skus):
        category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        cost = int(rng.integers(2_000_000, 80_000_000))
        skus.append(SkuSpec(
            sku_id=f"SKU-{i:06d}", name=f"{category} item {i}",
            weight_lb=round(float(rng.uniform(0.1, 12.0)), 2),
            length_in=round(float(rng.uniform(4, 24)), 1),
            width_in=round(float(rng.uniform(3, 16)), 1),
            height_in=round(float(rng.uniform(1, 10)), 1),
            unit_cost_micros=cost, price_micros=int(cost * rng.uniform(1.3, 2.5)),
            category=category, substitution_group=f"{category}-{i // 10}" if i % 4 == 0 else "",
        ))
    receipts = []
    for i in range(n_skus):
        for node in DEMO_NODES:
            if rng.random() < 0.5:
                qty = int(rng.integers(1, 200))
                receipts.append(c.ReceiptLine(f"SKU-{i:06d}", node.node_id, qty))
    commands: list[c.Command] = [
        c.UpsertNodes(DEMO_NODES),
        c.UpsertChannels(DEMO_CHANNELS),
        c.UpsertSkus(tuple(skus)),
        c.ReceiveStock(tuple(receipts), "demo-opening-stock"),
        c.SetSafetyStock("", "STORE-NYC", 2),
        c.SetSafetyStock("", "STORE-CHI", 2),
        c.ExpectInbound("PO-DEMO-1", tuple(
            c.InboundLine(f"SKU-{i:06d}", "IND1", 100, now_ms + 3 * DAY_MS)
            for i in range(min(n_skus, 100)))),
        c.ExpectInbound("PO-DEMO-2", tuple(
            c.InboundLine(f"SKU-{i:06d}", "ONT6", 50, now_ms + 7 * DAY_MS)
            for i in range(0, min(n_skus, 200), 2))),
        c.SetRingFence(tuple(
            c.FenceLine(f"SKU-{i:06d}", "AVP3", "marketplace", 5) for i in range(min(n_skus, 50)))),
    ]
    return commands
