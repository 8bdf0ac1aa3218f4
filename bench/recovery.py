"""Recovery time of a large ledger from the file store:

    python -m bench.recovery [--skus 1000000] [--nodes 16] [--events 100000]

Builds a ledger of --skus x --nodes, takes a snapshot through the engine (the
forked writer the server uses), appends --events more events as commits of ten,
then times a fresh engine's start (read the snapshot, replay the log) and checks
the recovered checksum equals the original.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.fixtures import big_ledger
from core import commands as c
from service.config import Settings
from service.engine import Engine
from service.filestore import FileEventStore


async def measure(skus: int, nodes: int, events: int, directory: Path) -> dict[str, float]:
    settings = Settings(store="file", data_dir=str(directory))
    store = FileEventStore(directory / "default")
    engine = Engine(settings, store)
    await engine.start()
    started = time.perf_counter()
    engine.ledger = big_ledger(skus, nodes)
    engine.durable_seq = engine.ledger.last_seq
    built = time.perf_counter() - started
    started = time.perf_counter()
    assert await engine.checkpoint()
    snapshot_s = time.perf_counter() - started
    rng = np.random.default_rng(5)
    started = time.perf_counter()
    per_commit = 10
    for i in range(events // per_commit):
        lines = tuple(c.ReceiptLine(f"SKU-{int(s):07d}", f"N{int(n):02d}", 1)
                      for s, n in zip(rng.integers(0, skus, per_commit),
                                      rng.integers(0, nodes, per_commit), strict=True))
        await engine.mutate_internal(c.ReceiveStock(lines), f"load-{i}")
    append_s = time.perf_counter() - started
    expected = engine.ledger.checksum()
    await store.close()
    size = sum(p.stat().st_size for p in (directory / "default").iterdir())
    fresh = Engine(settings, FileEventStore(directory / "default"))
    started = time.perf_counter()
    await fresh.start()
    recover_s = time.perf_counter() - started
    assert fresh.ledger.checksum() == expected, "recovered state differs"
    await fresh.store.close()
    return {"build_s": built, "snapshot_s": snapshot_s, "append_s": append_s,
            "recover_s": recover_s, "store_mib": size / 2**20,
            "events_after_snapshot": fresh.ledger.last_seq - fresh.snapshot_seq}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skus", type=int, default=1_000_000)
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(args.skus, args.nodes, args.events, Path(tmp)))
    print(f"ledger {args.skus:,} SKUs x {args.nodes} nodes, snapshot + "
          f"{result['events_after_snapshot']:,.0f} logged events "
          f"({result['store_mib']:.0f} MiB on disk)")
    print(f"  snapshot written in {result['snapshot_s']:.2f} s (forked child; the server "
          "keeps serving)")
    print(f"  recovery (read snapshot + replay log): {result['recover_s']:.2f} s")


if __name__ == "__main__":
    main()
