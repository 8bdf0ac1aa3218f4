"""Latency percentiles from the HDR histograms against numpy on the same data; open-loop
latency counted from the intended send time."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from bench.load.driver import LoadShape, drive, merge
from bench.load.stats import LatencyHistogram

PRECISION = 1e-3  # three significant figures


def _exact(data: np.ndarray, percentile: float) -> float:
    return float(np.percentile(data, percentile, method="inverted_cdf"))


@pytest.mark.parametrize("seed", [1, 2])
def test_percentiles_agree_with_numpy_to_three_figures(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = np.round(rng.lognormal(7.0, 1.2, 200_000)).clip(1, None)  # µs, 1 µs .. seconds
    histogram = LatencyHistogram()
    for value in data.tolist():
        histogram.record_us(value)
    assert histogram.count == len(data)
    for p in (50.0, 90.0, 99.0, 99.9):
        # Rank p% of n is a whole number here, where the two round it to neighbouring
        # values in either order: allow the next value each side (0.001% is 2 of 200,000).
        low, high = _exact(data, p - 1e-3), _exact(data, p + 1e-3)
        value = histogram.percentile_us(p)
        assert low * (1 - PRECISION) - 1 <= value <= high * (1 + PRECISION) + 1, p
        assert abs(value - _exact(data, p)) <= _exact(data, p) * 0.01
    assert abs(histogram.max_us() - data.max()) <= data.max() * PRECISION
    assert histogram.mean_us() == pytest.approx(data.mean(), rel=PRECISION)


def test_known_small_data() -> None:
    histogram = LatencyHistogram()
    for value in range(1, 1001):  # 1..1000 µs: the p-th percentile is 10 * p
        histogram.record_us(value)
    assert histogram.percentile_us(50) == 500
    assert histogram.percentile_us(90) == 900
    assert histogram.percentile_us(99) == 990
    assert histogram.summary_ms()["max"] == 1.0


def test_histograms_from_several_processes_add_up() -> None:
    rng = np.random.default_rng(3)
    parts = [rng.integers(1, 50_000, 10_000) for _ in range(3)]
    whole = LatencyHistogram()
    merged = LatencyHistogram()
    for part in parts:
        piece = LatencyHistogram()
        for value in part.tolist():
            piece.record_us(value)
            whole.record_us(value)
        merged.add_encoded(piece.encode())
    everything = np.concatenate(parts)
    for p in (50.0, 99.0, 99.9):
        assert merged.percentile_us(p) == whole.percentile_us(p)
        assert abs(merged.percentile_us(p) - _exact(everything, p)) <= _exact(
            everything, p) * PRECISION + 1


class SlowTarget:
    """Serves one call at a time, each taking `service_s`: at most 1 / service_s calls/s."""

    def __init__(self, service_s: float) -> None:
        self.service_s = service_s
        self.calls = 0

    async def open(self) -> None:
        self.lock = asyncio.Lock()

    async def call(self) -> tuple[str, int]:
        async with self.lock:
            await asyncio.sleep(self.service_s)
            self.calls += 1
        return "OK", 1

    async def close(self) -> None:
        pass

    def outcome(self) -> dict[str, int]:
        return {"served": self.calls}


def _run(target: SlowTarget, shape: LoadShape) -> dict:
    return merge([asyncio.run(drive(target, shape))])


def test_open_loop_latency_includes_the_queueing_behind_a_slow_server() -> None:
    # 100 calls/s offered to a server that does at most 50/s: by the end of one second
    # about 50 calls wait in line, so the last are answered ~1 s after they were meant to
    # be sent; half of them wait more than ~0.5 s.
    started = time.perf_counter()
    result = _run(SlowTarget(0.02), LoadShape(loop="open", rate=100, seconds=1.0, warmup=0))
    assert time.perf_counter() - started >= 1.9  # the calls were not sent any faster
    assert result["calls"] == 100
    queued = result["latency_ms"]
    assert queued["p50"] > 400 and queued["p99"] > 900
    # The same server in a closed loop of one caller: each call waits only for itself.
    closed = _run(SlowTarget(0.02), LoadShape(loop="closed", concurrency=1, seconds=0.5,
                                              warmup=0))
    assert closed["latency_ms"]["p50"] < queued["p50"] / 4
    # And offered less than it can do, the open loop sees no queue either.
    light = _run(SlowTarget(0.02), LoadShape(loop="open", rate=10, seconds=1.0, warmup=0))
    assert light["calls"] == 10
    assert light["latency_ms"]["p50"] < queued["p50"] / 4


def test_a_count_of_calls_and_failures_by_status() -> None:
    class Failing(SlowTarget):
        async def call(self) -> tuple[str, int]:
            self.calls += 1
            if self.calls % 4 == 0:
                return "UNAVAILABLE", 0
            if self.calls % 5 == 0:
                raise ConnectionResetError
            return "OK", 1

    result = _run(Failing(0), LoadShape(loop="closed", concurrency=3, count=40, warmup=0))
    assert result["calls"] + sum(result["errors"].values()) == 40
    assert result["errors"] == {"UNAVAILABLE": 10, "ConnectionResetError": 6}


def test_a_mix_of_operations_is_timed_per_operation() -> None:
    """A slow operation among fast ones: the latency of all calls blends them; each
    operation's own latencies show which is slow, over client processes merged."""

    class Mix(SlowTarget):
        async def call(self) -> tuple[str, int, str]:
            self.calls += 1
            if self.calls % 4 == 0:
                await asyncio.sleep(0.02)
                return "OK", 1, "ship"
            if self.calls % 7 == 0:
                return "NOT_FOUND", 0, "cancel"
            return "OK", 1, "allocate"

    shape = LoadShape(loop="closed", concurrency=1, count=56, warmup=0)
    parts = [asyncio.run(drive(Mix(0), shape)) for _ in range(2)]
    result = merge(parts)
    by_operation = result["latency_by_operation_ms"]
    assert set(by_operation) == {"allocate", "ship"}  # failed calls count as errors only
    assert by_operation["ship"]["count"] == 2 * 14
    assert by_operation["allocate"]["count"] == 2 * (56 - 14 - 6)
    assert result["errors"] == {"NOT_FOUND": 2 * 6}
    assert by_operation["ship"]["count"] + by_operation["allocate"]["count"] == result["calls"]
    assert by_operation["ship"]["p50"] >= 20 > by_operation["allocate"]["p99"]
    # Targets whose calls are all one kind report no breakdown.
    assert "latency_by_operation_ms" not in _run(SlowTarget(0), LoadShape(
        loop="closed", concurrency=1, count=5, warmup=0))


def test_the_table_shows_a_mix_by_operation() -> None:
    from bench.load.report import table

    def row(mode: str, operations: dict | None) -> dict:
        result = {"latency_ms": {"p50": 1.0, "p99": 2.0, "p99.9": 3.0, "max": 4.0},
                  "errors": {}, "outcome": {}, "orders_per_s": 10.0}
        if operations is not None:
            result["latency_by_operation_ms"] = operations
        return {"target": "allocd", "mode": mode, "result": result}

    ship = {"count": 1200, "p50": 130.0, "p99": 270.0, "max": 280.0}
    text = table([row("unary AllocateOrder", None), row("OMS call mix, unary", {"ship": ship})])
    assert "allocd OMS call mix, unary, by operation:" in text
    assert "| ship | 1,200 | 130.0 | 270.0 | 280.0 |" in text
    assert text.count("by operation") == 1


def _line(elapsed: float, measuring: bool, orders: int,
          capsys: pytest.CaptureFixture[str]) -> str:
    from bench.load.driver import _progress_line
    _progress_line("t", elapsed, measuring, LoadShape(seconds=10, processes=2),
                   [orders, 0, 1, 0, 0, 1])
    return capsys.readouterr().err


def test_the_progress_line_shows_no_rate_until_half_a_second_is_measured(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The clients count a little before the meter starts: 800 orders over the meter's
    first microsecond must not read as 800,000,000,000 a second."""
    assert "-/s" in _line(1e-6, True, 800, capsys)
    assert "-/s" in _line(3.0, False, 800, capsys)  # warming up
    assert "4,000/s" in _line(2.0, True, 8_000, capsys)
