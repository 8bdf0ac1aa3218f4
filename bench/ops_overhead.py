"""What KPIs and rules cost on the allocation path: the same one-order AllocateOrders
commands through `core.operations.execute`, with the KPI observers and the rule
evaluation on, and switched off, in separate processes taking turns:

    python -m bench.ops_overhead [--orders 5000] [--rounds 3]

Measured in process CPU time (the machine is shared: wall time is noisier).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from core import commands as c
from core import operations
from core.kpis import KpiBook
from core.ledger import Ledger, LedgerSettings
from core.model import ChannelSpec, NodeSpec, SkuSpec
from core.network import CarrierService, NetworkSpec, NodeCosts, Region, SlaTier
from core.orders import OrderLineSpec, OrderSpec

NOW = 1_800_000_000_000 // 86_400_000 * 86_400_000 + 9 * 3_600_000
N_SKUS = 200
NETWORK = NetworkSpec(
    regions=(Region("east", 40.7, -74.0, ("100",)),),
    services=(CarrierService("ground", "Acme", tuple(
        tuple(5_000_000 + 400_000 * w + z for w in range(20)) for z in range(7)),
        (1, 2, 3, 4, 5, 5, 6), per_lb_over_micros=(300_000,) * 7),),
    node_costs=(NodeCosts("n0", 1_000_000, 200_000), NodeCosts("n1", 1_500_000, 250_000)),
)


def measure(orders: int, on: bool) -> float:
    """Orders per CPU second."""
    if not on:
        KpiBook.observe = lambda self, ledger, e: None  # type: ignore[method-assign]
        operations.evaluate_rules = lambda p, events: None
    ledger = Ledger(LedgerSettings(n_shards=4))
    for command in (
        c.UpsertNodes((NodeSpec("n0", latitude=40.0, longitude=-75.0),
                       NodeSpec("n1", latitude=34.0, longitude=-118.0))),
        c.UpsertChannels((ChannelSpec("web"),)),
        c.UpsertSkus(tuple(SkuSpec(f"s{i}", weight_lb=1, price_micros=9_000_000,
                                   unit_cost_micros=3_000_000, category=f"c{i % 5}")
                           for i in range(N_SKUS))),
        c.SetNetwork(NETWORK),
        c.ReceiveStock(tuple(c.ReceiptLine(f"s{i}", n, 1_000_000)
                             for i in range(N_SKUS) for n in ("n0", "n1")))):
        operations.execute(ledger, command, NOW)
    specs = [OrderSpec(f"o{i}", "web", SlaTier.STANDARD, (
        OrderLineSpec("1", f"s{i % N_SKUS}", 1),
        OrderLineSpec("2", f"s{(i * 7 + 3) % N_SKUS}", 2)), postal_code="10001")
        for i in range(orders + 200)]
    for spec in specs[:200]:  # warm up
        operations.execute(ledger, c.AllocateOrders((spec,)), NOW)
    started = time.process_time()
    for spec in specs[200:]:
        operations.execute(ledger, c.AllocateOrders((spec,)), NOW)
    return orders / (time.process_time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(measure(args.orders, args.one == "on"))
        return
    results: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(args.rounds):
        for mode in ("on", "off"):
            out = subprocess.run([sys.executable, "-m", "bench.ops_overhead", "--orders",
                                  str(args.orders), "--one", mode],
                                 check=True, capture_output=True, text=True).stdout
            results[mode].append(float(out.strip().splitlines()[-1]))
    on, off = statistics.median(results["on"]), statistics.median(results["off"])
    print(f"KPIs and rules on:  {on:,.0f} orders per CPU second (runs: "
          f"{', '.join(f'{x:,.0f}' for x in results['on'])})")
    print(f"KPIs and rules off: {off:,.0f} orders per CPU second (runs: "
          f"{', '.join(f'{x:,.0f}' for x in results['off'])})")
    print(f"cost: {1 - on / off:.0%} of the core allocation path")


if __name__ == "__main__":
    main()
