"""What a snapshot costs the process that writes it, for a ledger holding many orders, and
what writing allocations to the log costs.

    python -m bench.snapshot_cost [--orders 200000]

Allocates `--orders` orders (100 a command) on the demo catalogue, in process, as the
order path does (bench/test_bench_order_path.py); then, as the server does, forks and
has the child write the ledger's snapshot to a file, and prints the child's CPU time, the
snapshot's size and the pages the child copied. Then the order book alone: written and
read back as columns (how snapshots hold it) and object by object (pickle's default form,
how they held it before). Last, the commits of the last 2,000 orders allocated: written
to the log and read back as columns (how the server logs them) and event by event (how
it did before), in µs an order. (The in-process figures are each form's second round.)
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import resource
import tempfile
import time

from allocd.v1 import order_service_pb2 as opb

from bench.grpc_ratio import OrderFactory
from bench.test_bench_order_path import N_SKUS, NOW_MS, loaded_demo_ledger
from core import commands as c
from core.ledger import Ledger
from core.model import Event
from core.operations import execute
from service import logcodec
from service.order_codec import orders_from_proto
from service.store import Commit


def build(orders: int) -> tuple[Ledger, list[tuple[Event, ...]]]:
    """The ledger, and the events of its last 20 commands."""
    ledger = loaded_demo_ledger()
    factory = OrderFactory(N_SKUS, 1, "S")
    commits: list[tuple[Event, ...]] = []
    for k in range(orders // 100):
        request = opb.AllocateOrdersRequest(request_id=f"s{k}",
                                            orders=[factory.order() for _ in range(100)])
        outcome = execute(ledger, c.AllocateOrders(orders_from_proto(request)), NOW_MS,
                          request.request_id)
        commits = [*commits[-19:], outcome.events]
    return ledger, commits


def child_snapshot(ledger: Ledger) -> tuple[float, int, int]:
    """(CPU seconds, bytes, minor faults) of a forked child writing the snapshot."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "snapshot")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            gc.disable()
            code = 1
            try:
                with open(path, "wb") as fh:
                    fh.write(logcodec.frame(logcodec.dumps(ledger)))
                usage = resource.getrusage(resource.RUSAGE_SELF)
                os.write(write, f"{usage.ru_utime + usage.ru_stime} {usage.ru_minflt}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        report = os.read(read, 200).decode().split()
        os.waitpid(pid, 0)
        os.close(read)
        return float(report[0]), os.path.getsize(path), int(report[1])


def timed(fn: object, *args: object) -> tuple[float, object]:
    started = time.process_time()
    result = fn(*args)  # type: ignore[operator]
    return time.process_time() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=200_000)
    args = parser.parse_args()
    ledger, commits = build(args.orders)
    gc.collect()
    cpu, size, faults = child_snapshot(ledger)
    print(f"snapshot of a ledger with {len(ledger.orders.orders):,} orders: child CPU "
          f"{cpu:.2f} s, {size / 2**20:.0f} MiB, {faults:,} pages copied")
    book = ledger.orders
    gc.disable()
    # Each form twice, alternating, and the second round printed: the first read of a
    # run pays for the memory its objects take (then freed and reused), whichever it is.
    for last in (False, True):
        for label, obj in (("columns", book), ("object by object", dict(vars(book)))):
            write_s, blob = timed(logcodec.dumps, obj)
            read_s, _ = timed(pickle.loads, blob)
            if last:
                print(f"order book {label:17}: written in {write_s:.2f} s, read in "
                      f"{read_s:.2f} s, {len(blob) / 2**20:.0f} MiB")  # type: ignore[arg-type]
    orders = 100 * len(commits)
    for last in (False, True):
        for label, columns in (("columns", True), ("event by event", False)):
            started = time.process_time()
            blobs = [logcodec.dumps(Commit(events) if columns else events)
                     for events in commits]
            write_s = time.process_time() - started
            started = time.process_time()
            for blob in blobs:
                logcodec.loads(blob)
            read_s = time.process_time() - started
            size = sum(len(blob) for blob in blobs)
            if last:
                print(f"log of {orders:,} orders, {label:14}: written in "
                      f"{write_s / orders * 1e6:.1f} µs an order, read in "
                      f"{read_s / orders * 1e6:.1f} µs, {size / orders:.0f} bytes")
    gc.enable()


if __name__ == "__main__":
    main()
