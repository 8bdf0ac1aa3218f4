"""Allocation through gRPC against the echo ceiling of the same server, in one run.

    python -m bench.grpc_ratio [--seconds 8] [--concurrency 32]

Starts `allocd serve --demo` in its own process, then for each kind of call
(unary, bidirectional stream, 100-item batch) measures the echo RPC and the
allocation RPC back to back with the same client, and prints orders (items) per
second and their ratio. Echo payloads are the serialized allocation requests, so
both carry the same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np
from allocd.v1 import (
    diagnostics_service_pb2 as dpb,
)
from allocd.v1 import (
    diagnostics_service_pb2_grpc as dgrpc,
)
from allocd.v1 import (
    order_service_pb2 as opb,
)
from allocd.v1 import (
    order_service_pb2_grpc as ogrpc,
)
from allocd.v1 import types_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

POSTAL_CODES = ("100", "112", "606", "900", "941", "981", "331", "770", "850", "303", "021",
                "191", "802", "482", "553")


class OrderFactory:
    """Seeded 1-5-line orders over the demo catalogue."""

    def __init__(self, n_skus: int, seed: int, prefix: str) -> None:
        self.rng = np.random.default_rng(seed)
        self.n_skus = n_skus
        self.ids = itertools.count()
        self.prefix = prefix

    def order(self) -> opb.Order:
        n = int(self.rng.integers(1, 6))
        skus = self.rng.choice(self.n_skus, n, replace=False)
        return opb.Order(
            order_id=f"{self.prefix}-{next(self.ids)}", channel_id="web",
            sla_tier=types_pb2.SlaTier.ValueType(int(self.rng.integers(1, 5))),
            ship_to=opb.ShipTo(postal_code=str(self.rng.choice(POSTAL_CODES)) + "01"),
            lines=[opb.OrderLine(sku_id=f"SKU-{int(s):06d}", quantity=1) for s in skus])


async def _closed_loop(call: Callable[[], Any], seconds: float, concurrency: int) -> int:
    """Run `call` from `concurrency` workers for `seconds`; returns completed calls."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def _stream_loop(open_stream: Callable[[AsyncIterator[Any]], Any],
                       make: Callable[[], Any], seconds: float, streams: int,
                       window: int) -> int:
    """`streams` bidirectional streams, each keeping `window` requests in flight."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal done
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def requests() -> AsyncIterator[Any]:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item

        call = open_stream(requests())
        for _ in range(window):
            queue.put_nowait(make())
        async for _ in call:
            done += 1
            if time.perf_counter() < deadline:
                queue.put_nowait(make())
            else:
                queue.put_nowait(None)
                break
        call.cancel()

    await asyncio.gather(*(one() for _ in range(streams)))
    return done


async def measure(address: str, seconds: float, concurrency: int, n_skus: int) -> dict[str, Any]:
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        echo = dgrpc.DiagnosticsServiceStub(channel)
        orders = ogrpc.OrderServiceStub(channel)
        factory = OrderFactory(n_skus, 1, f"b{os.getpid()}")
        request_ids = itertools.count()
        results: dict[str, Any] = {}

        def allocate_request() -> opb.AllocateOrderRequest:
            return opb.AllocateOrderRequest(request_id=f"r{next(request_ids)}",
                                            order=factory.order())

        sample = allocate_request().SerializeToString()
        warm = max(1.0, seconds / 4)
        for label, call in (
            ("unary echo", lambda: echo.Echo(dpb.EchoRequest(payload=sample))),
            ("unary AllocateOrder", lambda: orders.AllocateOrder(allocate_request())),
        ):
            await _closed_loop(call, warm, concurrency)
            results[label] = await _closed_loop(call, seconds, concurrency) / seconds

        def stream_request() -> opb.AllocateStreamRequest:
            return opb.AllocateStreamRequest(request_id=f"s{next(request_ids)}",
                                             order=factory.order())

        for label, opener, make in (
            ("stream echo", echo.EchoStream, lambda: dpb.EchoStreamRequest(payload=sample)),
            ("stream AllocateStream", orders.AllocateStream, stream_request),
        ):
            await _stream_loop(opener, make, warm, 4, concurrency // 4 or 1)
            results[label] = await _stream_loop(opener, make, seconds, 4,
                                                concurrency // 4 or 1) / seconds

        batch = 100
        payloads = [sample] * batch

        def batch_request() -> opb.AllocateOrdersRequest:
            return opb.AllocateOrdersRequest(request_id=f"b{next(request_ids)}",
                                             orders=[factory.order() for _ in range(batch)])

        for label, call in (
            ("batch echo (items)", lambda: echo.EchoBatch(dpb.EchoBatchRequest(payloads=payloads))),
            ("batch AllocateOrders (orders)", lambda: orders.AllocateOrders(batch_request())),
        ):
            await _closed_loop(call, warm, 4)
            results[label] = await _closed_loop(call, seconds, 4) * batch / seconds
        return results


def start_server(n_skus: int, *store_args: str) -> tuple[subprocess.Popen[str], str]:
    """`allocd serve --demo` in its own process (in-memory store unless told otherwise)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", "0", "--demo",
         "--demo-skus", str(n_skus), "--log-level", "WARNING",
         *(store_args or ("--store", "memory"))],
        stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    address = line.split("listening on ")[1].split()[0]
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(600):
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    return process, address


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--skus", type=int, default=20_000)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    process, address = start_server(args.skus)
    try:
        results = asyncio.run(measure(address, args.seconds, args.concurrency, args.skus))
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(15)
    pairs = (("unary echo", "unary AllocateOrder"),
             ("stream echo", "stream AllocateStream"),
             ("batch echo (items)", "batch AllocateOrders (orders)"))
    print(f"{'call':34} {'per second':>12} {'ratio to echo':>14}")
    for base, allocation in pairs:
        print(f"{base:34} {results[base]:12,.0f}")
        print(f"{allocation:34} {results[allocation]:12,.0f} "
              f"{results[allocation] / results[base]:14.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
