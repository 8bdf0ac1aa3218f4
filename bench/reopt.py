"""Re-optimising a day's open orders: how many extra shipments it removes, at what cost,
how close to the lower bound, and how long it takes.

    python -m bench.reopt                       # 100,000 orders, 16 nodes, 120 s in all
    python -m bench.reopt --orders 10000 --time-limit 20
    python -m bench.reopt --stock-prob 0.5 --cover 1.15   # sparser, scarcer stock

Builds a ledger with 16 nodes (the demo's 13 plus three more DCs), the demo carrier
network, a seeded catalogue (5,000 SKUs, Zipf-like popularity; each node stocks each SKU
with probability --stock-prob, total stock --cover times the day's demand), and allocates
the orders (1-5 lines; premium / marketplace / standard with deliver-by in 2 / 4 / 5 days)
through allocd's own allocation path in arrival batches of 500, as the real-time service
would. Then collects the open orders, re-optimises them and applies the result in one
command, all within --time-limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from core import commands as c
from core import reopt
from core.ledger import Ledger, LedgerSettings
from core.model import NodeSpec, NodeType, SkuSpec
from core.network import NodeCosts, SlaTier
from core.operations import execute
from core.orders import OrderLineSpec, OrderSpec
from service.demo import DEMO_CHANNELS, DEMO_NODES
from service.demo_network import CENT, METROS, demo_network

NOW = 1_800_000_000_000 - (1_800_000_000_000 % 86_400_000) + 8 * 3_600_000  # 08:00 UTC
DAY_MS = 86_400_000
APPLY_RESERVE = 0.15  # share of the time limit kept for applying the new plans
# Service levels and their deliver-by (days from today), and how often each comes.
TIERS = ((SlaTier.PREMIUM, 2), (SlaTier.MARKETPLACE, 4), (SlaTier.STANDARD, 5))
TIER_MIX = (0.1, 0.2, 0.7)
EXTRA_NODES = (
    NodeSpec("CLT2", "Charlotte, NC", NodeType.OWNED_DC, 35.2271, -80.8431, 0),
    NodeSpec("DEN4", "Aurora, CO", NodeType.OWNED_DC, 39.7294, -104.8319, 0),
    NodeSpec("MSP1", "Shakopee, MN", NodeType.OWNED_DC, 44.7974, -93.5273, 0),
)


def build(n_orders: int, n_skus: int, seed: int, cover: float,
          stock_prob: float = 0.5) -> tuple[Ledger, list[OrderSpec]]:
    rng = np.random.default_rng(seed)
    ledger = Ledger(LedgerSettings(n_shards=4))
    # Capacity is left unlimited here: the figure is about stock, not throughput.
    nodes = tuple(dataclasses.replace(n, daily_capacity=0) for n in DEMO_NODES) + EXTRA_NODES
    network = demo_network()
    network = type(network)(
        regions=network.regions, services=network.services, lanes=network.lanes,
        node_costs=network.node_costs + tuple(NodeCosts(n.node_id, 115 * CENT, 21 * CENT,
                                                        15 * 60 + 30) for n in EXTRA_NODES),
        split_penalty_micros=network.split_penalty_micros)
    skus = tuple(SkuSpec(f"S{i:05d}", weight_lb=round(float(rng.uniform(0.2, 6.0)), 2),
                         length_in=round(float(rng.uniform(4, 16)), 1),
                         width_in=round(float(rng.uniform(3, 12)), 1),
                         height_in=round(float(rng.uniform(1, 8)), 1),
                         unit_cost_micros=5_000_000, price_micros=12_000_000)
                 for i in range(n_skus))
    for command in (c.UpsertNodes(nodes), c.UpsertChannels(DEMO_CHANNELS), c.UpsertSkus(skus),
                    c.SetNetwork(network)):
        execute(ledger, command, NOW)
    popularity = 1.0 / np.arange(1, n_skus + 1) ** 0.8
    popularity /= popularity.sum()
    counts = rng.integers(1, 6, n_orders)
    orders = []
    demand = np.zeros(n_skus)
    for o in range(n_orders):
        chosen = rng.choice(n_skus, int(counts[o]), replace=False, p=popularity)
        qty = rng.integers(1, 3, len(chosen))
        demand[chosen] += qty
        metro = METROS[int(rng.integers(len(METROS)))]
        tier, days = TIERS[int(rng.choice(len(TIERS), p=TIER_MIX))]
        orders.append(OrderSpec(
            f"O{o:06d}", "web", tier,
            tuple(OrderLineSpec(str(j), f"S{s:05d}", int(q))
                  for j, (s, q) in enumerate(zip(chosen.tolist(), qty.tolist(), strict=True))),
            postal_code=metro[3][0] + "01", deliver_by_ms=(NOW // DAY_MS + days) * DAY_MS))
    stocked = rng.random((n_skus, len(nodes))) < stock_prob
    stocked[np.arange(n_skus), rng.integers(0, len(nodes), n_skus)] = True
    receipts = []
    for s in range(n_skus):
        where = np.flatnonzero(stocked[s])
        total = int(np.ceil(demand[s] * cover))
        split = rng.multinomial(total, np.full(len(where), 1 / len(where)))
        receipts += [c.ReceiptLine(f"S{s:05d}", nodes[n].node_id, int(q))
                     for n, q in zip(where.tolist(), split.tolist(), strict=True) if q]
    execute(ledger, c.ReceiveStock(tuple(receipts)), NOW)
    return ledger, orders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--skus", type=int, default=5_000)
    parser.add_argument("--cover", type=float, default=1.5, help="stock / expected demand")
    parser.add_argument("--stock-prob", type=float, default=0.9,
                        help="probability that a node stocks a SKU")
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nodes-per-order", type=int, default=6)
    parser.add_argument("--package-penalty", type=float, default=0.0,
                        help="dollars weighed per package beyond an order's first")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    started = time.perf_counter()
    ledger, orders = build(args.orders, args.skus, args.seed, args.cover, args.stock_prob)
    for i in range(0, len(orders), 500):
        execute(ledger, c.AllocateOrders(tuple(orders[i:i + 500])), NOW)
    print(f"set-up: {len(orders)} orders allocated in real time "
          f"({time.perf_counter() - started:.1f} s)")

    t0 = time.perf_counter()
    problem = reopt.collect(ledger, NOW)
    t_collect = time.perf_counter() - t0

    def show(p: reopt.Progress) -> None:
        if not p.total or p.done == p.total:
            print(f"  {time.perf_counter() - t0:6.1f} s  {p.phase}: {p.detail}"
                  + (f" {p.done}/{p.total}" if p.total else "")
                  + (f"  objective {p.objective / 1e6:,.0f}" if p.objective else ""), flush=True)

    # --time-limit bounds the whole run: the solver gets what collecting left, less a
    # reserve for applying the new plans in one command.
    solver_limit = max((args.time_limit - t_collect) * (1 - APPLY_RESERVE), 1.0)
    solution = reopt.solve(problem, reopt.ReoptOptions(
        time_limit_s=solver_limit, seed=args.seed,
        workers=args.workers, nodes_per_order=args.nodes_per_order,
        extra_package_micros=round(args.package_penalty * 1_000_000)), show)
    t1 = time.perf_counter()
    outcome = execute(ledger, c.ApplyReoptimization(reopt.replans(solution)), NOW)
    t_apply = time.perf_counter() - t1
    elapsed = time.perf_counter() - t0
    result = outcome.detail
    old_cost, old_pkgs, old_back = solution.totals("old")
    new_cost, new_pkgs, new_back = solution.totals("new")
    n = problem.n_orders
    served_new = n - int((solution.cands.packages[solution.chosen] == 0).sum())
    extra_old = old_pkgs - (n - int((problem.current_packages == 0).sum()))
    extra_new = new_pkgs - served_new
    print()
    print(f"| open orders | {n:,} |")
    print(f"| packages before → after | {old_pkgs:,} → {new_pkgs:,} |")
    print(f"| extra shipments (beyond one per order) | {extra_old:,} → {extra_new:,}: "
          f"**{(1 - extra_new / max(extra_old, 1)) * 100:.0f}% removed** |")
    cands = solution.cands
    one = np.zeros(n, np.bool_)
    one[cands.order[cands.packages == 1]] = True
    must_split = int((~one & (problem.current_packages > 1)).sum())
    print(f"| split orders with no single node holding every line (must stay split) | "
          f"{must_split:,} |")
    print(f"| backordered units | {old_back:,} → {new_back:,} |")
    print(f"| shipping cost | ${old_cost / 1e6:,.0f} → ${new_cost / 1e6:,.0f} "
          f"({(new_cost / max(old_cost, 1) - 1) * 100:+.1f}%) |")
    gap = (solution.new_objective - solution.lower_bound) / max(new_cost, 1)
    print(f"| objective vs lower bound | gap {gap:.2%} of the landed cost |")
    print(f"| components / chunks solved (optimal) / rounds | {solution.components:,} / "
          f"{solution.chunks_solved} ({solution.chunks_optimal}) / {solution.rounds} |")
    print(f"| orders re-planned (changed meanwhile, no longer fit) | {len(result.applied):,} "
          f"({len(result.changed_meanwhile)}, {len(result.no_longer_fits)}) |")
    print(f"| time: collect {t_collect:.1f} s, solve {solution.elapsed_s:.1f} s, "
          f"apply {t_apply:.1f} s | **{elapsed:.1f} s** (limit {args.time_limit:.0f} s) |")


if __name__ == "__main__":
    main()
