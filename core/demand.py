"""Demand as the inventory value model sees it: the value policy, a supplied forecast and
the forecast learned from orders (exponential smoothing), all ledger state."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from mypy_extensions import mypyc_attr

from core.errors import InvalidArgument
from core.model import set_fields

DAY_MS: Final = 86_400_000
DEFAULT_HALF_LIFE_DAYS = 7.0


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class ValuePolicy:
    """On: inventory values are refreshed every `refresh_interval_s` from the forecast
    over `horizon_days`; off: myopic (no opportunity costs). `half_life_days` is the
    learned forecast's exponential smoothing; `shortage_weight` the share of a
    shipment's cost a short unit is charged (0: the plain LP duals)."""

    enabled: bool = False
    refresh_interval_s: float = 300.0
    horizon_days: float = 7.0
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS
    scale: float = 1.0
    shortage_weight: float = 0.5
    # P(short) from the units actually drawn at each node lately (smoothed like the
    # forecast) instead of the demand the LP sends there.
    tail_from_draws: bool = False

    def validate(self) -> None:
        for name, low in (("refresh_interval_s", 1.0), ("horizon_days", 1e-3),
                          ("half_life_days", 1e-3)):
            value = getattr(self, name)
            if not (math.isfinite(value) and low <= value <= 3650 * 86400):
                raise InvalidArgument(f"{name} must be a finite number >= {low:g}", name)
        for name in ("scale", "shortage_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 100):
                raise InvalidArgument(f"{name} must be between 0 and 100", name)


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class DemandForecast:
    """A supplied forecast: ((region id, dense sku), units per day), sorted."""

    rates: tuple[tuple[tuple[str, int], float], ...]


@dataclass(slots=True, init=False)
class SmoothedDemand:
    """Exponentially smoothed demand rate of one (region, SKU), in units per day.

    Each order adds quantity / tau (tau = half-life / ln 2, in days) to a level that
    decays by exp(-elapsed / tau): a steady stream of r units a day converges to r."""

    level: float = 0.0
    last_ms: int = 0

    # Written out: compiled, a native __init__ (the generated one runs interpreted, and one
    # is made for every new (region, SKU) and (SKU, node) an order touches).
    def __init__(self, level: float = 0.0, last_ms: int = 0) -> None:
        self.level = level
        self.last_ms = last_ms

    def __setstate__(self, state: Any) -> None:
        set_fields(self, state)  # (snapshots written in pickle's default form)

    def __reduce__(self) -> tuple[type[SmoothedDemand], tuple[float, int]]:
        return SmoothedDemand, (self.level, self.last_ms)

    def observe(self, quantity: int, now_ms: int, half_life_days: float) -> None:
        tau = half_life_days / math.log(2.0)
        self.level = self.rate(now_ms, half_life_days) + quantity / tau
        self.last_ms = max(now_ms, self.last_ms)

    def rate(self, now_ms: int, half_life_days: float) -> float:
        tau = half_life_days / math.log(2.0)
        elapsed = max(0, now_ms - self.last_ms) / DAY_MS
        return self.level * math.exp(-elapsed / tau)
