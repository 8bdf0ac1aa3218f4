"""python -m bench.fulfilment: the multi-item fulfilment benchmark.

For each seed: generate the instance, solve its DLP bound (OR-Tools PDLP), sample the
arrivals, and run every policy on the same arrivals through allocd's allocation path.
Prints cost / DLP and shipments per order (means over the seeds), the share of the
myopic-to-DLP gap each policy closes, and run times.

    python -m bench.fulfilment                       # T = 10,000, p = 0.5, 5 seeds
    python -m bench.fulfilment --arrivals 100000     # the published size
    python -m bench.fulfilment --carry 0.25
    python -m bench.fulfilment --queue-window 500 --queue-hold 500 \
        --policies myopic,dual-price-observed,dual-price+queue   # the best policy
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

from bench.fulfilment.instance import MICROS, Instance, Setup, dlp_model, generate
from bench.fulfilment.runner import (
    DlpRounding,
    DualPrice,
    PickQueue,
    Policy,
    ProfileModel,
    simulate,
)
from core.inventory_value import SolveParams

#: name -> factory(instance, solved DLP model) -> Policy. Other policies register here
#: (`register_policy`).
PolicyFactory = Callable[[Instance, ProfileModel], Policy]
POLICIES: dict[str, PolicyFactory] = {
    "myopic": lambda inst, dlp: Policy(),
    "dual-price": lambda inst, dlp: DualPrice(label="dual-price"),
    "dual-price-observed": lambda inst, dlp: DualPrice(
        shortage_weight=0.35, demand="observed",
        label="dual-price, drawn-rate tail (w=0.35)"),
    "plain-dual": lambda inst, dlp: DualPrice(shortage_weight=0.0, resolves=20,
                                              label="plain LP duals, 20 re-solves"),
    "dlp-dual": lambda inst, dlp: DualPrice(model="dlp", resolves=0,
                                            label="DLP duals (no re-solve)"),
    "dlp-rounding": lambda inst, dlp: DlpRounding(model=dlp),
    # Real-time decisions, and every `--queue-window` arrivals the orders not yet released
    # re-optimised together (core.reopt) and released.
    "myopic+queue": lambda inst, dlp: PickQueue(Policy()),
    "dual-price+queue": lambda inst, dlp: PickQueue(DualPrice(
        shortage_weight=0.35, demand="observed")),
}
DEFAULT_POLICIES = ("myopic", "dual-price")


def register_policy(name: str, factory: PolicyFactory) -> None:
    POLICIES[name] = factory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fulfilment",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--arrivals", type=int, default=10_000, help="T (default 10,000)")
    parser.add_argument("--carry", type=float, default=0.5, help="stocking probability p")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--policies", default=",".join(DEFAULT_POLICIES),
                        help=f"comma-separated, of: {', '.join(POLICIES)}")
    parser.add_argument("--dual-resolves", type=int, default=100,
                        help="re-solves of the dual-price policy's LP per run")
    parser.add_argument("--shortage-weight", type=float, default=0.5)
    parser.add_argument("--dlp-tolerance", type=float, default=1e-4,
                        help="PDLP relative optimality tolerance of the DLP")
    parser.add_argument("--queue-window", type=int, default=200,
                        help="arrivals between re-optimisations of the pick queue "
                             "(the +queue policies)")
    parser.add_argument("--queue-nodes", type=int, default=4,
                        help="ship-complete proposals per order when the queue is "
                             "re-optimised (the cheapest FCs)")
    parser.add_argument("--queue-hold", type=int, default=0,
                        help="arrivals an order waits in the pick queue at least, planned "
                             "again at every re-optimisation meanwhile (0: each "
                             "re-optimisation releases the whole queue)")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        parser.error(f"unknown policies {unknown}; known: {', '.join(POLICIES)}")
    POLICIES["dual-price"] = lambda inst, dlp: DualPrice(
        shortage_weight=args.shortage_weight, resolves=args.dual_resolves,
        label="dual-price")
    POLICIES["dual-price-observed"] = lambda inst, dlp: DualPrice(
        shortage_weight=0.35, resolves=args.dual_resolves, demand="observed",
        label="dual-price, drawn-rate tail")
    window, nodes, hold = args.queue_window, args.queue_nodes, args.queue_hold
    queue = f"every {window:,}" + (f", held {hold:,}" if hold else "")
    POLICIES["myopic+queue"] = lambda inst, dlp: PickQueue(
        Policy(), window, label=f"myopic + re-optimised queue ({queue})",
        nodes_per_order=nodes, hold=hold)
    POLICIES["dual-price+queue"] = lambda inst, dlp: PickQueue(
        POLICIES["dual-price-observed"](inst, dlp), window,
        label=f"dual-price (drawn-rate tail) + re-optimised queue ({queue})",
        nodes_per_order=nodes, hold=hold)

    rows: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    labels: dict[str, str] = {}
    bounds: list[float] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        instance = generate(Setup(arrivals=args.arrivals, carry=args.carry, seed=seed))
        model = dlp_model(instance)
        started = time.perf_counter()
        result = model.solve(SolveParams(solver="pdlp", time_limit_s=1800, threads=2,
                                         tolerance=args.dlp_tolerance))
        dlp = result.objective / MICROS
        bounds.append(dlp)
        print(f"seed {seed}: DLP {dlp:,.0f} ({result.status}, {result.n_rows:,} rows x "
              f"{result.n_columns:,} columns, {time.perf_counter() - started:.0f} s)",
              flush=True)
        types, regions = instance.sample_arrivals(seed)
        for name in names:
            policy = POLICIES[name](instance, model)
            labels[name] = policy.name
            totals = simulate(instance, policy, types, regions)
            rows[name].append({"ratio": totals.cost / dlp, "cost": totals.cost,
                               "shipments": totals.shipments_per_order,
                               "unserved": totals.unserved_units,
                               "seconds": totals.seconds, "solve": totals.solve_seconds})
            print(f"  {name:<14} cost/DLP {totals.cost / dlp:.4f}  shipments/order "
                  f"{totals.shipments_per_order:.3f}  {totals.seconds:.0f} s", flush=True)
    print_table(args, rows, labels)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "dlp": bounds, "runs": rows}, f, indent=1)
    return 0


def print_table(args: argparse.Namespace, rows: dict[str, list[dict[str, float]]],
                labels: dict[str, str]) -> None:
    def mean(name: str, key: str) -> float:
        return statistics.fmean(r[key] for r in rows[name])

    base = mean("myopic", "ratio") if "myopic" in rows else None
    print(f"\nT = {args.arrivals:,}, p = {args.carry}, {args.seeds} seeds "
          "(means; gap closed = (myopic - policy) / (myopic - DLP))")
    print(f"| {'policy':<30} | cost / DLP      | shipments / order | gap closed | run time (s) |")
    print(f"|{'-' * 32}|----------------:|------------------:|-----------:|-------------:|")
    for name, runs in rows.items():
        ratio = mean(name, "ratio")
        spread = statistics.stdev(r["ratio"] for r in runs) if len(runs) > 1 else 0.0
        closed = (f"{(base - ratio) / (base - 1.0):.1%}" if base is not None and base > 1.0
                  else "-")
        print(f"| {labels[name]:<30} | {ratio:.4f} ± {spread:.4f} "
              f"| {mean(name, 'shipments'):17.3f} | {closed:>10} "
              f"| {mean(name, 'seconds'):12.1f} |")


if __name__ == "__main__":
    sys.exit(main())
