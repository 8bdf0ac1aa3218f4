"""Resident memory of a 1,000,000-SKU x 16-node ledger: `python -m bench.ledger_memory`."""

from __future__ import annotations

import argparse
import resource
import time


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skus", type=int, default=1_000_000)
    parser.add_argument("--nodes", type=int, default=16)
    args = parser.parse_args()
    from core.warmup import warm_kernels

    warm_kernels()
    base = rss_mib()
    from bench.fixtures import big_ledger

    started = time.perf_counter()
    ledger = big_ledger(args.skus, args.nodes)
    built = time.perf_counter() - started
    total = rss_mib()
    print(f"ledger {args.skus:,} SKUs x {args.nodes} nodes: built in {built:.1f} s; "
          f"process RSS {total:.0f} MiB (interpreter + numba + kernels before: {base:.0f} MiB; "
          f"ledger {total - base:.0f} MiB); {ledger.catalog.n_skus:,} SKUs")


if __name__ == "__main__":
    main()
