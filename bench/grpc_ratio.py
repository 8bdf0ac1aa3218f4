"""Allocation through gRPC against the echo ceiling of the same server, in one run.

    python -m bench.grpc_ratio [--seconds 8] [--concurrency 32] [--only unary|stream|batch]
                               [--rounds 1]

Starts `allocd serve --demo` in its own process, then for each kind of call
(unary, bidirectional stream, 100-item batch) measures the echo RPC and the
allocation RPC back to back with the same client, and prints orders (items) per
second, their ratio, and the server process's CPU (all its threads) per call, message
or order over the measured seconds. Echo payloads are the serialized allocation
requests, so both carry the same bytes.

With `--rounds N` the whole sequence runs N times against the same server (each
round's echo next to its allocation, so a round's ratio is measured in one stretch
of time) and every round is printed, then each ratio's median: on a shared machine
one pair of phases can be off by a sixth either way. Later rounds allocate into a
larger order book, which the echo does not have.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
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

from bench import stop_on_sigterm

POSTAL_CODES = ("100", "112", "606", "900", "941", "981", "331", "770", "850", "303", "021",
                "191", "802", "482", "553")


class OrderFactory:
    """Seeded 1-5-line orders over the demo catalogue."""

    def __init__(self, n_skus: int, seed: int, prefix: str) -> None:
        self.rng = random.Random(seed)
        self.n_skus = n_skus
        self.ids = itertools.count()
        self.prefix = prefix

    def order(self) -> opb.Order:
        rng = self.rng
        skus = rng.sample(range(self.n_skus), rng.randint(1, 5))
        return opb.Order(
            order_id=f"{self.prefix}-{next(self.ids)}", channel_id="web",
            sla_tier=types_pb2.SlaTier.ValueType(rng.randint(1, 4)),
            ship_to=opb.ShipTo(postal_code=rng.choice(POSTAL_CODES) + "01"),
            lines=[opb.OrderLine(sku_id=f"SKU-{s:06d}", quantity=1) for s in skus])


def prebuilt(make: Callable[[], Any], count: int) -> Callable[[], Any]:
    """`count` requests built before the clock starts (building them is client work that
    would otherwise be measured as server time); then built on demand."""
    pool = [make() for _ in range(count)]
    pool.reverse()

    def take() -> Any:
        return pool.pop() if pool else make()

    return take


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


PHASES = (
    # (label, kind, items per call)
    ("unary echo", "echo", 1),
    ("unary AllocateOrder", "allocate", 1),
    ("stream echo", "echo_stream", 1),
    ("stream AllocateStream", "allocate_stream", 1),
    ("batch echo (items)", "echo_batch", 100),
    ("batch AllocateOrders (orders)", "allocate_batch", 100),
)


async def _phase(address: str, kind: str, seconds: float, concurrency: int, n_skus: int,
                 seed: int, start_at: float) -> int:
    """One client process's part of one phase: calls completed in `seconds`."""
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        echo = dgrpc.DiagnosticsServiceStub(channel)
        orders = ogrpc.OrderServiceStub(channel)
        factory = OrderFactory(n_skus, seed, f"{kind}-{seed}-{os.getpid()}")
        ids = itertools.count()
        tag = f"{seed}-{os.getpid()}"  # (unique across rounds: new client processes)
        sample = opb.AllocateOrderRequest(request_id="sample",
                                          order=factory.order()).SerializeToString()
        warm = max(1.0, seconds / 4)
        span = warm + seconds
        calls: dict[str, Callable[[], Any]] = {}
        if kind == "echo":
            calls[kind] = lambda: echo.Echo(dpb.EchoRequest(payload=sample))
        elif kind == "allocate":
            take = prebuilt(lambda: opb.AllocateOrderRequest(
                request_id=f"u{tag}-{next(ids)}", order=factory.order()), int(2_500 * span))
            calls[kind] = lambda: orders.AllocateOrder(take())
        elif kind == "echo_batch":
            batch_echo = dpb.EchoBatchRequest(payloads=[sample] * 100)
            calls[kind] = lambda: echo.EchoBatch(batch_echo)
        elif kind == "allocate_batch":
            take = prebuilt(lambda: opb.AllocateOrdersRequest(
                request_id=f"b{tag}-{next(ids)}",
                orders=[factory.order() for _ in range(100)]), int(100 * span))
            calls[kind] = lambda: orders.AllocateOrders(take())
        await asyncio.sleep(max(0.0, start_at - time.time()))
        if kind in ("echo_stream", "allocate_stream"):
            if kind == "echo_stream":
                opener: Callable[..., Any] = echo.EchoStream

                def make() -> Any:
                    return dpb.EchoStreamRequest(payload=sample)
            else:
                opener = orders.AllocateStream
                make = prebuilt(lambda: opb.AllocateStreamRequest(
                    request_id=f"s{tag}-{next(ids)}", order=factory.order()),
                    int(4_000 * span))
            window = max(1, concurrency // 4)
            await _stream_loop(opener, make, warm, 4, window)
            return await _stream_loop(opener, make, seconds, 4, window)
        width = concurrency if kind in ("echo", "allocate") else 4
        await _closed_loop(calls[kind], warm, width)
        return await _closed_loop(calls[kind], seconds, width)


def _phase_process(args: tuple[str, str, float, int, int, int, float]) -> int:
    return asyncio.run(_phase(*args))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(address: str, seconds: float, concurrency: int, n_skus: int,
            clients: int, server_pid: int | None = None,
            only: tuple[str, ...] = ()) -> tuple[dict[str, float], dict[str, float]]:
    """Each phase runs in `clients` processes at once; their counts add up. Returns items
    a second by phase and, given the server's pid, its CPU µs an item over the measured
    seconds (after the warm-up)."""
    results: dict[str, float] = {}
    cpu: dict[str, float] = {}
    context = multiprocessing.get_context("spawn")
    with context.Pool(clients) as pool:
        for label, kind, items in PHASES:
            if only and not any(label.startswith(prefix) for prefix in only):
                continue
            start_at = time.time() + 4 + (6 if "allocate" in kind else 0)  # time to build
            pending = pool.map_async(_phase_process, [
                (address, kind, seconds, concurrency // clients or 1, n_skus, seed, start_at)
                for seed in range(clients)])
            before = None
            if server_pid is not None:
                time.sleep(max(0.0, start_at + max(1.0, seconds / 4) - time.time()))
                before = cpu_seconds(server_pid)
            done: int = sum(pending.get()) * items
            results[label] = done / seconds
            if before is not None and server_pid is not None and done:
                cpu[label] = (cpu_seconds(server_pid) - before) / done * 1e6
    return results, cpu


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
    parser.add_argument("--clients", type=int, default=2,
                        help="client processes, so that the client is not the bottleneck")
    parser.add_argument("--only", action="append", choices=("unary", "stream", "batch"),
                        default=[], help="run only this kind of call (may be repeated)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the whole sequence this many times; print each round and "
                             "each ratio's median")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    stop_on_sigterm()
    process, address = start_server(args.skus)
    rounds: list[tuple[dict[str, float], dict[str, float]]] = []
    try:
        for number in range(1, args.rounds + 1):
            results, cpu = measure(address, args.seconds, args.concurrency, args.skus,
                                   args.clients, process.pid, tuple(args.only))
            if args.rounds > 1:
                print(f"round {number} of {args.rounds}")
            _print_round(results, cpu)
            rounds.append((results, cpu))
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(15)
    medians = median_ratios([results for results, _ in rounds])
    if args.rounds > 1:
        print("median ratio to echo over the rounds: " + ", ".join(
            f"{kind} {ratio:.2f}" for kind, ratio in medians.items()))
    if args.json:
        with open(args.json, "w") as fh:
            results, cpu = rounds[-1]
            json.dump({**results, "server_cpu_us": cpu, "median_ratios": medians,
                       "rounds": [{**r, "server_cpu_us": c} for r, c in rounds]},
                      fh, indent=2)


PAIRS = (("unary", "unary echo", "unary AllocateOrder"),
         ("stream", "stream echo", "stream AllocateStream"),
         ("batch", "batch echo (items)", "batch AllocateOrders (orders)"))


def median_ratios(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each kind's median, over the rounds, of its allocation rate over its echo rate
    (each round's two phases side by side)."""
    medians: dict[str, float] = {}
    for kind, base, allocation in PAIRS:
        ratios = [r[allocation] / r[base] for r in rounds if r.get(base)]
        if ratios:
            medians[kind] = statistics.median(ratios)
    return medians


def _print_round(results: dict[str, float], cpu: dict[str, float]) -> None:
    print(f"{'call':34} {'per second':>12} {'ratio to echo':>14} {'server CPU µs':>14}")
    for _, base, allocation in PAIRS:
        if base not in results:
            continue
        print(f"{base:34} {results[base]:12,.0f} {'':14} {cpu.get(base, 0.0):14.1f}")
        print(f"{allocation:34} {results[allocation]:12,.0f} "
              f"{results[allocation] / results[base]:14.2f} {cpu.get(allocation, 0.0):14.1f}")


if __name__ == "__main__":
    main()
