"""What a closed order holds in memory, and what archiving it gives back:

    python -m bench.archive_memory [--orders 20000]

Allocates `--orders` orders (100 a command) on the demo catalogue, in process, as the
order path does (bench/test_bench_order_path.py); releases, picks, packs and ships
every package; then archives the closed orders as the server's sweep does (ArchiveOrders,
10,000 a command, 200 days later), and closes their journal entries as the server does
(encode_segment, then CloseJournal, 10,000 entries a segment; the segments kept in a
dict here, as the memory store does, and not counted). Prints the memory Python holds
for what the orders left behind (tracemalloc, from just before the first order),
before, after archiving and after closing the journal, per order; the snapshot's size
at each step; and the kinds of objects most numerous afterwards (what still grows with
every order).
"""

from __future__ import annotations

import argparse
import collections
import gc
import sys
import time
import tracemalloc

from allocd.v1 import order_service_pb2 as opb

from bench.grpc_ratio import OrderFactory
from bench.test_bench_order_path import N_SKUS, NOW_MS, loaded_demo_ledger
from core import commands as c
from core.finance import decode_segment, encode_segment, segment_digest
from core.ledger import Ledger
from core.operations import execute
from core.orders import PackageStatus
from service import logcodec
from service.order_codec import orders_from_proto

DAY_MS = 86_400_000


def fulfil_everything(ledger: Ledger, now_ms: int) -> None:
    for node in ledger.catalog.nodes:
        while execute(ledger, c.ReleaseWave(node.node_id, 100_000), now_ms).detail.package_ids:
            pass
    book = ledger.orders
    for package_id in [p for p, s in book.packages.items()
                       if s.status == PackageStatus.RELEASED]:
        execute(ledger, c.ConfirmPick(package_id, ()), now_ms)
        state = book.packages[package_id]
        scans: dict[str, int] = {}
        for line in state.plan.lines:
            sku_id = ledger.catalog.sku_ids[line.sku]
            scans[sku_id] = scans.get(sku_id, 0) + state.quantities.get(line.line_id, 0)
        execute(ledger, c.ConfirmPack(package_id, tuple(scans.items())), now_ms)
        execute(ledger, c.ConfirmShipment(package_id, "T"), now_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=20_000)
    args = parser.parse_args()
    ledger = loaded_demo_ledger()
    gc.unfreeze()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    factory = OrderFactory(N_SKUS, 100, "A")
    for k in range(args.orders // 100):
        request = opb.AllocateOrdersRequest(request_id=f"a{k}",
                                            orders=[factory.order() for _ in range(100)])
        execute(ledger, c.AllocateOrders(orders_from_proto(request)), NOW_MS,
                request.request_id)
    fulfil_everything(ledger, NOW_MS)
    closed = len(ledger.orders.closed_ms)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    snapshot = len(logcodec.dumps(ledger))
    started = time.perf_counter()
    archived = 0
    while True:
        found = execute(ledger, c.ArchiveOrders(90, 10_000), NOW_MS + 200 * DAY_MS).detail
        archived += len(found.order_ids)
        if len(found.order_ids) < 10_000:
            break
    took = time.perf_counter() - started
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] - base
    archived_snapshot = len(logcodec.dumps(ledger))
    segments: dict[int, bytes] = {}
    started = time.perf_counter()
    while entries := ledger.books.closable(NOW_MS + 1, 10_000):
        data = encode_segment(entries)
        segments[entries[0].number] = data
        execute(ledger, c.CloseJournal(entries[0].number, entries[-1].number,
                                       entries[-1].hash, segment_digest(data)),
                NOW_MS + 200 * DAY_MS)
    closing = time.perf_counter() - started
    gc.collect()
    closed_after = (tracemalloc.get_traced_memory()[0] - base
                    - sum(sys.getsizeof(data) for data in segments.values()))
    tracemalloc.stop()
    # (The steps above ran under tracemalloc, which slows every allocation several times:
    # a segment's own cost, timed without it.)
    first = min(segments)
    started = time.perf_counter()
    entries = decode_segment(segments[first])
    decoded = time.perf_counter() - started
    started = time.perf_counter()
    encode_segment(entries)
    encoded = time.perf_counter() - started
    n = args.orders
    print(f"{n:,} orders, {closed:,} closed (shipped), {archived:,} archived in {took:.2f} s "
          "(under tracemalloc)")
    print(f"held since the first order: {held / 2**20:.1f} MiB ({held / n:,.0f} bytes an "
          f"order) before archiving, {after / 2**20:.1f} MiB ({after / n:,.0f} bytes an "
          f"order) after")
    print(f"journal: {ledger.books.closed_through:,} entries closed into {len(segments)} "
          f"segments ({sum(map(len, segments.values())) / 2**20:.1f} MiB) in {closing:.2f} s "
          f"(under tracemalloc); held after: {closed_after / 2**20:.1f} MiB "
          f"({closed_after / n:,.0f} bytes an order)")
    print(f"a segment of {len(entries):,} entries, without tracemalloc: encoded in "
          f"{encoded * 1000:.0f} ms, decoded in {decoded * 1000:.0f} ms")
    print(f"snapshot: {snapshot / 2**20:.1f} MiB before, {archived_snapshot / 2**20:.1f} MiB "
          f"archived, {len(logcodec.dumps(ledger)) / 2**20:.1f} MiB with the journal closed")
    counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
    print("most numerous objects after:",
          ", ".join(f"{name} {count:,}" for name, count in counts.most_common(6)))


if __name__ == "__main__":
    main()
