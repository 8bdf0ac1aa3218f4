"""Closed- and open-loop load from several client processes, with a warm-up, HDR latency
histograms, errors by status code and a progress line.

Closed loop: N callers, each sends its next call when the previous one is answered; the
offered load adapts to the server. Open loop: calls start at fixed intended times (rate
per second) whether or not earlier calls were answered, and latency is measured from the
intended time, so a server that falls behind shows its queueing in the figures instead of
quietly slowing the client down (coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from bench.load.resources import ResourceMeter
from bench.load.stats import LatencyHistogram

DRAIN_SECONDS = 15.0


#: A call's status name ("OK" or a status code), the orders it carried and, for a mix of
#: operations, which operation it was.
CallResult = tuple[str, int] | tuple[str, int, str]


class Target(Protocol):
    """Something that takes calls: `call` sends the next piece of work (one order, a
    batch, or one operation of a mix) and says how it went (CallResult). A target whose
    calls are different operations names them, and each gets its own latencies."""

    async def open(self) -> None: ...

    async def call(self) -> CallResult: ...

    async def close(self) -> None: ...

    def outcome(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class LoadShape:
    loop: str = "closed"  # or "open"
    #: Closed loop: callers in all processes together.
    concurrency: int = 16
    #: Open loop: calls per second, all processes together.
    rate: float = 0.0
    seconds: float = 10.0
    #: Calls in all, instead of `seconds`, when > 0.
    count: int = 0
    warmup: float = 2.0
    processes: int = 2

    def share(self, part: int) -> LoadShape:
        """This process's part of the load."""
        n = self.processes
        return LoadShape(
            loop=self.loop,
            concurrency=self.concurrency // n + (part < self.concurrency % n),
            rate=self.rate / n,
            seconds=self.seconds,
            count=self.count // n + (part < self.count % n) if self.count else 0,
            warmup=self.warmup, processes=1)


@dataclass
class Tally:
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    calls: int = 0
    orders: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    first_start: float = 0.0
    last_end: float = 0.0
    #: Latencies of each named operation (a mix's calls), beside the histogram of all.
    operations: dict[str, LatencyHistogram] = field(default_factory=dict)

    def record(self, status: str, orders: int, latency_s: float, end: float,
               operation: str = "") -> None:
        if status == "OK":
            self.calls += 1
            self.orders += orders
            self.histogram.record_seconds(latency_s)
            if operation:
                histogram = self.operations.get(operation)
                if histogram is None:
                    histogram = self.operations[operation] = LatencyHistogram()
                histogram.record_seconds(latency_s)
        else:
            self.errors[status] += 1
        self.last_end = max(self.last_end, end)


async def _timed(target: Target, intended: float, tally: Tally) -> None:
    operation = ""
    try:
        result = await target.call()
        status, orders = result[0], result[1]
        if len(result) == 3:
            operation = result[2]
    except asyncio.CancelledError:
        raise
    except Exception as error:  # a client-side failure is a result, not a crash
        status, orders = type(error).__name__, 0
    end = time.perf_counter()
    tally.record(status, orders, end - intended, end, operation)


async def closed_loop(target: Target, callers: int, seconds: float, count: int,
                      tally: Tally) -> None:
    start = tally.first_start = time.perf_counter()
    deadline = start + seconds
    budget = [count]

    async def caller() -> None:
        while True:
            if count:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            elif time.perf_counter() >= deadline:
                return
            await _timed(target, time.perf_counter(), tally)

    await asyncio.gather(*(caller() for _ in range(max(1, callers))))


async def open_loop(target: Target, rate: float, seconds: float, count: int,
                    tally: Tally) -> None:
    """Call i starts at start + i / rate; its latency counts from then."""
    if rate <= 0:
        raise ValueError("open loop needs a rate > 0")
    start = tally.first_start = time.perf_counter()
    total = count or int(seconds * rate)
    pending: set[asyncio.Task[None]] = set()
    for i in range(total):
        intended = start + i / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_timed(target, intended, tally))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        _, late = await asyncio.wait(set(pending), timeout=DRAIN_SECONDS)
        for task in late:
            task.cancel()
        if late:
            tally.errors["CLIENT_GAVE_UP"] += len(late)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*late, return_exceptions=True)


async def run_shape(target: Target, shape: LoadShape, tally: Tally, seconds: float,
                    count: int) -> None:
    if shape.loop == "closed":
        await closed_loop(target, shape.concurrency, seconds, count, tally)
    elif shape.loop == "open":
        await open_loop(target, shape.rate, seconds, count, tally)
    else:
        raise ValueError(f"loop must be closed or open, not {shape.loop!r}")


async def drive(target: Target, shape: LoadShape, ready: Callable[[], None] | None = None,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Warm up, then measure; `ready` is called (in a thread) between open and the start,
    `progress` with (orders, errors) a few times a second."""
    await target.open()
    try:
        if ready is not None:
            await asyncio.to_thread(ready)
        if shape.warmup > 0:
            await run_shape(target, shape, Tally(), shape.warmup, 0)
        tally = Tally()
        reporter = None
        if progress is not None:
            async def report() -> None:
                while True:
                    progress(tally.orders, sum(tally.errors.values()))
                    await asyncio.sleep(0.25)

            reporter = asyncio.create_task(report())
        await run_shape(target, shape, tally, shape.seconds, shape.count)
        if reporter is not None:
            reporter.cancel()
            progress(tally.orders, sum(tally.errors.values()))  # type: ignore[misc]
    finally:
        await target.close()
    elapsed = max(tally.last_end - tally.first_start, 1e-9)
    return {"calls": tally.calls, "orders": tally.orders, "errors": dict(tally.errors),
            "elapsed": elapsed, "histogram": tally.histogram.encode(),
            "operations": {name: h.encode() for name, h in tally.operations.items()},
            "outcome": target.outcome()}


# ---- several client processes -------------------------------------------------------


TargetFactory = Callable[[int, int], Target]


def _child(factory: TargetFactory, shape: LoadShape, part: int, ready_count: Any,
           go: Any, progress: Any, results: Any) -> None:
    def ready() -> None:
        with ready_count.get_lock():
            ready_count.value += 1
        go.wait()

    def report(orders: int, errors: int) -> None:
        progress[3 * part] = orders
        progress[3 * part + 1] = errors
        progress[3 * part + 2] = 1  # measuring

    try:
        result = asyncio.run(drive(factory(part, shape.processes), shape.share(part),
                                   ready, report))
    except BaseException as error:
        results.put((part, {"crash": f"{type(error).__name__}: {error}"}))
        raise
    results.put((part, result))


def merge(parts: list[dict[str, Any]], orders_per_call: int = 1) -> dict[str, Any]:
    histogram = LatencyHistogram()
    errors: Counter[str] = Counter()
    outcome: Counter[str] = Counter()
    operations: dict[str, LatencyHistogram] = {}
    for part in parts:
        histogram.add_encoded(part["histogram"])
        for name, encoded in part.get("operations", {}).items():
            operations.setdefault(name, LatencyHistogram()).add_encoded(encoded)
        errors.update(part["errors"])
        outcome.update(part["outcome"])
    orders = sum(part["orders"] for part in parts)
    calls = sum(part["calls"] for part in parts)
    elapsed = max(part["elapsed"] for part in parts)
    return {"calls": calls, "orders": orders, "elapsed_s": round(elapsed, 3),
            "orders_per_s": orders / elapsed, "calls_per_s": calls / elapsed,
            "latency_ms": histogram.summary_ms(), "errors": dict(errors),
            "outcome": dict(outcome), "histogram": histogram,
            **({"latency_by_operation_ms": {name: operations[name].summary_ms()
                                            for name in sorted(operations)}}
               if operations else {})}


def run(factory: TargetFactory, shape: LoadShape, label: str = "",
        server_pids: Callable[[], list[int]] | None = None,
        show_progress: bool = True) -> dict[str, Any]:
    """Run `shape` from `shape.processes` client processes against the targets `factory`
    makes (it is called in each process with (part, parts), so it must pickle).
    `server_pids` names the server's processes once the clients are connected."""
    context = multiprocessing.get_context("spawn")
    ready_count = context.Value("i", 0)
    go = context.Event()
    progress = context.Array("q", 3 * shape.processes, lock=False)
    results = context.Queue()
    children = [context.Process(target=_child, daemon=True,
                                args=(factory, shape, part, ready_count, go, progress, results))
                for part in range(shape.processes)]
    for child in children:
        child.start()
    deadline = time.monotonic() + 600
    while ready_count.value < shape.processes:
        if time.monotonic() > deadline or any(not c.is_alive() for c in children):
            for child in children:
                child.kill()
            raise RuntimeError(f"{label}: a client process failed to start: "
                               f"{_first_crash(results)}")
        time.sleep(0.05)
    go.set()
    meter = ResourceMeter(server_pids() if server_pids else [])
    started = time.perf_counter()
    measuring_from = started + shape.warmup  # and every process says it measures
    metered = False
    collected: dict[int, dict[str, Any]] = {}
    last_line = 0.0
    while len(collected) < shape.processes:
        with contextlib.suppress(Exception):
            part, result = results.get(timeout=0.25)
            collected[part] = result
            continue
        now = time.perf_counter()
        if not metered and (now >= measuring_from and all(progress[2::3])):
            meter.start(now)
            metered = True
        if metered:
            meter.sample()
        if show_progress and now - last_line >= 1.0:
            last_line = now
            _progress_line(label, now - (meter.started_at if metered else started), metered, shape,
                           progress)
        if any(not c.is_alive() and c.exitcode not in (0, None) for c in children) and \
                results.empty():
            break
    if not metered:
        meter.start(time.perf_counter())
    resources = meter.stop(time.perf_counter()) if server_pids else {}
    if show_progress:
        sys.stderr.write("\n")
    for child in children:
        child.join(30)
    crashes = [r["crash"] for r in collected.values() if "crash" in r]
    if crashes or len(collected) < shape.processes:
        raise RuntimeError(f"{label}: client process failed: {crashes or 'died'}")
    merged = merge([collected[p] for p in sorted(collected)])
    merged["server"] = resources
    merged["shape"] = asdict(shape)
    return merged


def _first_crash(results: Any) -> str:
    with contextlib.suppress(Exception):
        return str(results.get(timeout=5)[1].get("crash"))
    return "unknown"


RATE_AFTER_S = 0.5  # the progress line's rate is shown from this many measured seconds


def _progress_line(label: str, elapsed: float, measuring: bool, shape: LoadShape,
                   progress: Any) -> None:
    orders = sum(progress[0::3])
    errors = sum(progress[1::3])
    warming = not measuring
    measured = max(elapsed, 0.0)
    # The clients count from the moment each starts measuring, a little before the meter
    # starts: over the first instants that would read as an absurd rate, so none is shown.
    rate = (f"{orders / measured:>9,.0f}/s" if not warming and measured >= RATE_AFTER_S
            else f"{'-':>9}/s")
    goal = f"/{shape.seconds:.0f}s" if not shape.count else f" of {shape.count:,} calls"
    sys.stderr.write(f"\r  {label:<30} {'warm-up' if warming else 'measuring':<9} "
                     f"{elapsed if warming else measured:6.1f}s{goal}  orders {orders:>10,}  "
                     f"{rate}  errors {errors:,}   ")
    sys.stderr.flush()
