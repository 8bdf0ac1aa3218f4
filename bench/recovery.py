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
import gc
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

from bench.fixtures import big_ledger
from core import commands as c
from service.config import Settings
from service.engine import Engine
from service.filestore import FileEventStore
from service.redisstore import RedisEventStore
from service.store import EventStore


def make_store(directory: Path, redis_url: str) -> EventStore:
    if redis_url:
        return RedisEventStore(redis_url, partition=f"bench-{directory.name}")
    return FileEventStore(directory / "default")


async def measure(skus: int, nodes: int, events: int, directory: Path,
                  redis_url: str = "") -> dict[str, float]:
    settings = Settings(store="file", data_dir=str(directory))
    store = make_store(directory, redis_url)
    engine = Engine(settings, store)
    await engine.start()
    started = time.perf_counter()
    engine.ledger = big_ledger(skus, nodes)
    engine.durable_seq = engine.ledger.last_seq
    built = time.perf_counter() - started
    started = time.perf_counter()
    assert await engine.checkpoint()
    snapshot_s = time.perf_counter() - started
    fork_pause_ms = engine.last_fork_pause_ms
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
    # Recovery runs in a fresh process: drop this one's copy of the state first.
    del engine
    gc.collect()
    size = (sum(p.stat().st_size for p in (directory / "default").iterdir())
            if not redis_url else 0)
    fresh = Engine(settings, make_store(directory, redis_url))
    started = time.perf_counter()
    await fresh.start()
    recover_s = time.perf_counter() - started
    assert fresh.ledger.checksum() == expected, "recovered state differs"
    await fresh.store.close()
    return {"build_s": built, "snapshot_s": snapshot_s, "fork_pause_ms": fork_pause_ms,
            "append_s": append_s,
            "recover_s": recover_s, "store_mib": size / 2**20,
            "events_after_snapshot": fresh.ledger.last_seq - fresh.snapshot_seq}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skus", type=int, default=1_000_000)
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--redis-url", default="",
                        help="measure the Redis store at this URL instead of files "
                             "(keys under a throwaway partition, deleted afterwards)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = asyncio.run(measure(args.skus, args.nodes, args.events, Path(tmp),
                                         args.redis_url))
        finally:
            if args.redis_url:
                client = redis.Redis.from_url(args.redis_url)
                keys = list(client.scan_iter(match=f"allocd:{{bench-{Path(tmp).name}}}:*"))
                if keys:
                    client.delete(*keys)
                client.close()
    where = f"Redis at {args.redis_url}" if args.redis_url else (
        f"files, {result['store_mib']:.0f} MiB on disk")
    print(f"ledger {args.skus:,} SKUs x {args.nodes} nodes, snapshot + "
          f"{result['events_after_snapshot']:,.0f} logged events ({where})")
    print(f"  snapshot written in {result['snapshot_s']:.2f} s by a forked child; the server "
          f"paused {result['fork_pause_ms']:.0f} ms (the fork)")
    print(f"  recovery (read snapshot + replay log): {result['recover_s']:.2f} s")


if __name__ == "__main__":
    main()
