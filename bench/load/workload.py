"""A seeded workload: a catalogue (SKUs, nodes, regions, stock, the cost model) and an
endless stream of orders and calls shaped like a peak day of an order management system.

The order stream comes in numbered blocks, each generated from (seed, block number) alone,
so any process can produce any block and every target is given the very same orders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from core.model import ChannelSpec, NodeSpec, NodeType, SkuSpec
from core.network import NetworkSpec, NodeCosts
from service.demo import CATEGORIES, DEMO_CHANNELS, DEMO_NODES
from service.demo_network import CENT, METROS, demo_network

#: Calls an OMS makes, in the order of the mix weights.
CALLS = ("allocate", "availability", "reserve_release", "cancel", "ship", "return")
#: SLA tiers in proto order (SLA_TIER_PREMIUM = 1 ...).
TIERS = ("premium", "marketplace", "standard", "wholesale")
CHANNELS = tuple(channel.channel_id for channel in DEMO_CHANNELS)


def _weights(mix: dict[str, float], names: tuple[str, ...], what: str) -> np.ndarray:
    unknown = set(mix) - set(names)
    if unknown:
        raise ValueError(f"{what}: unknown names {sorted(unknown)} (known: {', '.join(names)})")
    weights = np.array([float(mix.get(name, 0.0)) for name in names])
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"{what}: weights must be >= 0 and not all 0")
    return weights / weights.sum()


def parse_mix(text: str) -> dict[str, float]:
    """'allocate=70,availability=15' -> {'allocate': 70.0, 'availability': 15.0}."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        mix[name.strip()] = float(value)
    return mix


@dataclass(frozen=True)
class WorkloadSpec:
    seed: int = 1
    skus: int = 20_000
    nodes: int = 13
    regions: int = 26
    #: SKU popularity is Zipf: the k-th most popular SKU is drawn with weight 1 / k**zipf.
    zipf: float = 1.0
    min_lines: int = 3
    max_lines: int = 3
    #: Line quantity 1..max_quantity, each unit more 1/4 as likely as the one before.
    max_quantity: int = 3
    #: A SKU is stocked at a node with this probability, 1..stock_max units ...
    stock_presence: float = 0.5
    stock_max: int = 200
    #: ... plus this many units over the catalogue shared by popularity (stores of popular
    #: items are deeper), so that a long run does not simply empty the hot SKUs.
    popular_stock_units: int = 0
    #: Packages a node may ship a day; 0 is unlimited. The peers know no capacity, so the
    #: comparison leaves it unlimited for allocd too (the demo nodes have 500-20,000).
    node_capacity: int = 0
    sla_mix: dict[str, float] = field(default_factory=lambda: {
        "premium": 10, "marketplace": 20, "standard": 60, "wholesale": 10})
    channel_mix: dict[str, float] = field(default_factory=lambda: {
        "web": 60, "marketplace": 30, "retail": 10})
    call_mix: dict[str, float] = field(default_factory=lambda: {"allocate": 1.0})
    block_size: int = 1024

    def validate(self) -> None:
        if not 1 <= self.min_lines <= self.max_lines:
            raise ValueError("lines: need 1 <= min_lines <= max_lines")
        if self.max_lines > self.skus:
            raise ValueError("lines: more lines than SKUs")
        if not 1 <= self.regions <= len(METROS):
            raise ValueError(f"regions: 1..{len(METROS)} (the demo metros)")
        if self.nodes < 1 or self.skus < 1 or self.max_quantity < 1 or self.stock_max < 1:
            raise ValueError("nodes, skus, max_quantity and stock_max must be >= 1")
        _weights(self.sla_mix, TIERS, "sla mix")
        _weights(self.channel_mix, CHANNELS, "channel mix")
        _weights(self.call_mix, CALLS, "call mix")


def sku_id(index: int) -> str:
    return f"SKU-{index:06d}"


@dataclass(frozen=True)
class Catalogue:
    """What every target starts from: the same SKUs, nodes, stock and node order."""

    spec: WorkloadSpec
    skus: tuple[SkuSpec, ...]
    nodes: tuple[NodeSpec, ...]
    channels: tuple[ChannelSpec, ...]
    network: NetworkSpec
    #: Units on hand, [sku, node].
    stock: np.ndarray
    #: The first-fit order of nodes for each region, nearest first: [region, rank] -> node.
    node_order: np.ndarray
    #: A ship-to postal code inside each region.
    postal_codes: tuple[str, ...]
    #: SKU indices by popularity rank (rank 0 is the most popular) and each SKU's weight.
    by_rank: np.ndarray
    popularity: np.ndarray

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(node.node_id for node in self.nodes)


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 12_742 * math.asin(math.sqrt(a))


def build_catalogue(spec: WorkloadSpec) -> Catalogue:
    spec.validate()
    rng = np.random.default_rng([spec.seed, 0xCA7])
    nodes = [replace(node, daily_capacity=spec.node_capacity)
             for node in DEMO_NODES[:spec.nodes]]
    demo = demo_network()
    costs = {c.node_id: c for c in demo.node_costs}
    node_costs = [costs[node.node_id] for node in nodes]
    for i in range(len(nodes), spec.nodes):  # beyond the demo's: DCs across the US
        node_id = f"DC{i:03d}"
        nodes.append(NodeSpec(node_id, f"DC {i}", NodeType.OWNED_DC,
                              float(rng.uniform(30, 47)), float(rng.uniform(-122, -72)),
                              spec.node_capacity))
        node_costs.append(NodeCosts(node_id, int(rng.integers(110, 160)) * CENT,
                                    int(rng.integers(20, 30)) * CENT, 16 * 60))
    regions = demo.regions[:spec.regions]
    node_ids = {node.node_id for node in nodes}
    region_ids = {region.region_id for region in regions}
    network = replace(
        demo, regions=regions, node_costs=tuple(node_costs),
        lanes=tuple(lane for lane in demo.lanes
                    if lane.node_id in node_ids and lane.region_id in region_ids))
    skus = []
    for i in range(spec.skus):
        category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        cost = int(rng.integers(2_000_000, 80_000_000))
        skus.append(SkuSpec(
            sku_id=sku_id(i), name=f"{category} item {i}",
            weight_lb=round(float(rng.uniform(0.1, 12.0)), 2),
            length_in=round(float(rng.uniform(4, 24)), 1),
            width_in=round(float(rng.uniform(3, 16)), 1),
            height_in=round(float(rng.uniform(1, 10)), 1),
            unit_cost_micros=cost, price_micros=int(cost * rng.uniform(1.3, 2.5)),
            category=category))
    by_rank = rng.permutation(spec.skus)
    weights = 1.0 / np.arange(1, spec.skus + 1, dtype=np.float64) ** spec.zipf
    popularity = np.empty(spec.skus)
    popularity[by_rank] = weights / weights.sum()
    present = rng.random((spec.skus, spec.nodes)) < spec.stock_presence
    present[~present.any(axis=1), 0] = True  # every SKU somewhere
    stock = rng.integers(1, spec.stock_max + 1, (spec.skus, spec.nodes))
    deep = np.floor(popularity * spec.popular_stock_units / present.sum(axis=1)).astype(np.int64)
    stock = np.where(present, stock + deep[:, None], 0).astype(np.int64)
    node_order = np.array([
        sorted(range(spec.nodes), key=lambda n, r=region: (
            _distance_km(r.latitude, r.longitude, nodes[n].latitude, nodes[n].longitude), n))
        for region in regions], np.int64)
    return Catalogue(
        spec=spec, skus=tuple(skus), nodes=tuple(nodes), channels=DEMO_CHANNELS,
        network=network, stock=stock, node_order=node_order,
        postal_codes=tuple(region.postal_prefixes[0] + "01" for region in regions),
        by_rank=by_rank, popularity=popularity)


@dataclass(frozen=True)
class OrderBlock:
    """`len(call)` orders; lines of order i are sku[i, :n_lines[i]] (distinct SKUs)."""

    block: int
    sku: np.ndarray  # [order, line] SKU index, -1 past the order's lines
    quantity: np.ndarray  # [order, line]
    n_lines: np.ndarray
    tier: np.ndarray  # index into TIERS
    channel: np.ndarray  # index into CHANNELS
    region: np.ndarray
    call: np.ndarray  # index into CALLS

    def __len__(self) -> int:
        return len(self.call)

    def order_id(self, i: int) -> str:
        return f"O{self.block}-{i}"

    def lines(self, i: int) -> list[tuple[int, int]]:
        return [(int(self.sku[i, j]), int(self.quantity[i, j])) for j in range(self.n_lines[i])]


def order_block(catalogue: Catalogue, block: int) -> OrderBlock:
    spec = catalogue.spec
    rng = np.random.default_rng([spec.seed, block])
    n, width = spec.block_size, spec.max_lines
    n_lines = rng.integers(spec.min_lines, spec.max_lines + 1, n)
    sku = rng.choice(spec.skus, size=(n, width), p=catalogue.popularity)
    for _ in range(1000):  # redraw orders that drew one SKU twice
        ordered = np.sort(sku, axis=1)
        dup = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if not dup.any():
            break
        sku[dup] = rng.choice(spec.skus, size=(int(dup.sum()), width), p=catalogue.popularity)
    else:
        raise ValueError("cannot draw distinct SKUs for the orders; use fewer lines")
    unit = np.arange(1, spec.max_quantity + 1)
    quantity = rng.choice(unit, size=(n, width), p=_geometric(spec.max_quantity))
    past = np.arange(width)[None, :] >= n_lines[:, None]
    sku[past] = -1
    quantity[past] = 0
    return OrderBlock(
        block=block, sku=sku.astype(np.int64), quantity=quantity.astype(np.int64),
        n_lines=n_lines.astype(np.int64),
        tier=rng.choice(len(TIERS), n, p=_weights(spec.sla_mix, TIERS, "sla mix")),
        channel=rng.choice(len(CHANNELS), n, p=_weights(spec.channel_mix, CHANNELS,
                                                         "channel mix")),
        region=rng.integers(0, spec.regions, n),
        call=rng.choice(len(CALLS), n, p=_weights(spec.call_mix, CALLS, "call mix")))


def _geometric(top: int) -> np.ndarray:
    weights = 0.25 ** np.arange(top)
    return np.asarray(weights / weights.sum())


def blocks_for(catalogue: Catalogue, part: int, parts: int):  # type: ignore[no-untyped-def]
    """Blocks part, part + parts, part + 2 * parts, ...: one client process's share."""
    block = part
    while True:
        yield order_block(catalogue, block)
        block += parts
