"""Latency histograms (HDR: 3 significant figures from 1 µs to 10 minutes) that client
processes fill and the parent adds up."""

from __future__ import annotations

from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 600_000_000
SIGNIFICANT_FIGURES = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


class LatencyHistogram:
    """Microsecond latencies; values above the range are clamped to it (and counted)."""

    def __init__(self) -> None:
        self._hist = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
        self.clamped = 0

    def record_us(self, value: float) -> None:
        micros = round(value)
        if micros < LOWEST_US:
            micros = LOWEST_US
        elif micros > HIGHEST_US:
            micros = HIGHEST_US
            self.clamped += 1
        self._hist.record_value(micros)

    def record_seconds(self, value: float) -> None:
        self.record_us(value * 1e6)

    @property
    def count(self) -> int:
        return int(self._hist.get_total_count())

    def percentile_us(self, percentile: float) -> int:
        """The smallest recorded value (to the histogram's precision) with at least
        `percentile` % of the values at or below it."""
        return int(self._hist.get_value_at_percentile(percentile)) if self.count else 0

    def max_us(self) -> int:
        return int(self._hist.get_max_value()) if self.count else 0

    def mean_us(self) -> float:
        return float(self._hist.get_mean_value()) if self.count else 0.0

    def encode(self) -> bytes:
        return bytes(self._hist.encode())

    def add_encoded(self, encoded: bytes) -> None:
        self._hist.decode_and_add(encoded)

    def add(self, other: LatencyHistogram) -> None:
        self._hist.add(other._hist)
        self.clamped += other.clamped

    def summary_ms(self) -> dict[str, Any]:
        """p50/p90/p99/p99.9/max/mean in milliseconds."""
        out: dict[str, Any] = {f"p{p:g}": self.percentile_us(p) / 1000 for p in PERCENTILES}
        out["max"] = self.max_us() / 1000
        out["mean"] = round(self.mean_us() / 1000, 4)
        out["count"] = self.count
        return out
