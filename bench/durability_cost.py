"""What durability costs: the same mutating load against the in-memory store and the
file store (sync, group), each on a fresh server, in one run:

    python -m bench.durability_cost [--seconds 6] [--concurrency 32]

The call is ReceiveInventory of one unit (it always succeeds), unary, closed loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import subprocess
import tempfile

import grpc
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import inventory_service_pb2_grpc as inv_grpc

from bench.grpc_ratio import _closed_loop, start_server


async def throughput(address: str, seconds: float, concurrency: int) -> float:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inv_grpc.InventoryServiceStub(channel)
        ids = itertools.count()

        def call():  # type: ignore[no-untyped-def]
            n = next(ids)
            return stub.ReceiveInventory(inv.ReceiveInventoryRequest(
                request_id=f"d{n}", lines=[inv.ReceiptLine(
                    sku_id=f"SKU-{n % 500:06d}", node_id="IND1", quantity=1)]))

        await _closed_loop(call, max(1.0, seconds / 4), concurrency)
        return await _closed_loop(call, seconds, concurrency) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, store_args in (
            ("memory (no store)", ("--store", "memory")),
            ("file, sync", ("--store", "file", "--data-dir", f"{tmp}/sync",
                            "--durability", "sync")),
            ("file, group 2 ms", ("--store", "file", "--data-dir", f"{tmp}/group",
                                  "--durability", "group")),
        ):
            process, address = start_server(1000, *store_args)
            try:
                results[label] = asyncio.run(throughput(address, args.seconds,
                                                        args.concurrency))
            finally:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(15)
    base = results["memory (no store)"]
    print(f"{'store':22} {'calls/s':>10} {'vs no store':>12}")
    for label, value in results.items():
        print(f"{label:22} {value:10,.0f} {value / base - 1:+12.0%}")


if __name__ == "__main__":
    main()
