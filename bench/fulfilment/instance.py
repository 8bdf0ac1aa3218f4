"""The published multi-item fulfilment set-up (Jasin & Sinha 2015; Ma 2023), generated.

One instance (all draws from one seed):

* K fulfilment centres and J demand regions, synthesised: region centres uniform
  over the continental-US box (lat 25..49, lon -124..-67), population weights
  Zipf-like (the r-th largest region weighs 1/r, ranks shuffled); the FCs sit at
  K distinct regions drawn with probability proportional to population.
* I items; order types: for each size 1..n_max, `per_size` random sets of that
  many distinct items (one unit each), plus the empty order. Type probabilities
  as in Ma's published code: P(empty) and P(size s) proportional to independent
  U(0,1) draws, P(set | size) proportional to U(0,1) draws. An arrival is a
  (type, region) pair with probability P(type) x population share of the region;
  T arrivals, empty orders included (they cost nothing).
* Stocking: each FC carries each item with probability p. d[k, i] is the
  probability that one arrival asks for item i *and* FC k is the nearest FC
  carrying i to its region; the starting stock is round(T d + 0.5 sqrt(T d (1-d))).
  (A carrying FC that is nobody's nearest gets 0 units.)
* Costs (dollars): a shipment from FC k to region j costs 8.759 + per unit
  0.423 + 0.000541 x great-circle miles; an unserved item costs as if shipped by
  an extra "FC" at twice the price of the farthest FC from j: 2 x 8.759 once per
  order with unserved items, 2 x (0.423 + 0.000541 x max_k miles) per item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.inventory_value import CostModel, Profile, ProfileModel, SolveParams
from core.network import great_circle_miles

FIXED = 8.759
PER_UNIT = 0.423
PER_MILE = 0.000541
SAFETY_Z = 0.5
MICROS = 1_000_000


@dataclass(frozen=True, slots=True)
class Setup:
    n_fcs: int = 10
    n_regions: int = 99
    n_items: int = 100
    max_size: int = 10
    per_size: int = 10
    arrivals: int = 10_000
    carry: float = 0.5
    seed: int = 1


@dataclass(slots=True)
class Instance:
    setup: Setup
    region_lat: np.ndarray
    region_lon: np.ndarray
    population: np.ndarray  # weights, sum 1
    fc_lat: np.ndarray
    fc_lon: np.ndarray
    miles: np.ndarray  # [fc, region]
    types: list[tuple[int, ...]]  # order types (item sets); types[0] is the empty order
    type_prob: np.ndarray  # [type]
    rate: np.ndarray  # [type, region] probability of an arrival of that type and region
    carries: np.ndarray  # bool [item, fc]
    nearest: np.ndarray  # [item, region] nearest FC carrying the item, -1 if none
    d: np.ndarray  # [fc, item]
    stock: np.ndarray  # int64 [item, fc]

    @property
    def fixed(self) -> np.ndarray:
        return np.full(self.miles.shape, FIXED)

    @property
    def unit(self) -> np.ndarray:
        return PER_UNIT + PER_MILE * self.miles

    @property
    def unserved_fixed(self) -> np.ndarray:
        return np.full(self.miles.shape[1], 2 * FIXED)

    @property
    def unserved_unit(self) -> np.ndarray:
        return 2 * (PER_UNIT + PER_MILE * self.miles.max(axis=0))

    def cost_model(self, scale: float = MICROS) -> CostModel:
        """The cost model in micros (the unit the LPs and the kernel use)."""
        return CostModel(self.fixed * scale, self.unit * scale,
                         self.unserved_fixed * scale, self.unserved_unit * scale)

    def profiles(self, horizon: float) -> list[Profile]:
        """Expected orders of each (type, region) over `horizon` arrivals."""
        out = []
        for q, items in enumerate(self.types):
            if not items:
                continue
            for j in range(self.setup.n_regions):
                out.append(Profile(j, items, (1,) * len(items), horizon * self.rate[q, j]))
        return out

    def item_demand(self, horizon: float) -> np.ndarray:
        """[region, item] expected units over `horizon` arrivals."""
        demand = np.zeros((self.setup.n_regions, self.setup.n_items))
        for q, items in enumerate(self.types):
            for i in items:
                demand[:, i] += horizon * self.rate[q]
        return demand

    def sample_arrivals(self, seed: int, count: int | None = None) -> tuple[np.ndarray,
                                                                            np.ndarray]:
        """(types, regions) of `count` (default T) arrivals, i.i.d. by `rate`."""
        rng = np.random.default_rng([self.setup.seed, seed])
        count = self.setup.arrivals if count is None else count
        flat = rng.choice(self.rate.size, size=count, p=self.rate.ravel())
        return flat // self.rate.shape[1], flat % self.rate.shape[1]


def generate(setup: Setup) -> Instance:
    rng = np.random.default_rng(setup.seed)
    J, K, n_items = setup.n_regions, setup.n_fcs, setup.n_items
    lat = rng.uniform(25.0, 49.0, J)
    lon = rng.uniform(-124.0, -67.0, J)
    weight = 1.0 / rng.permutation(np.arange(1, J + 1))
    population = weight / weight.sum()
    sites = rng.choice(J, size=K, replace=False, p=population)
    fc_lat, fc_lon = lat[sites], lon[sites]
    miles = np.array([[great_circle_miles(fc_lat[k], fc_lon[k], lat[j], lon[j])
                       for j in range(J)] for k in range(K)])
    types: list[tuple[int, ...]] = [()]
    for size in range(1, setup.max_size + 1):
        for _ in range(setup.per_size):
            types.append(tuple(sorted(rng.permutation(n_items)[:size].tolist())))
    size_weight = rng.random(setup.max_size + 1)  # [0] is the empty order
    type_prob = np.zeros(len(types))
    type_prob[0] = size_weight[0]
    for size in range(1, setup.max_size + 1):
        within = rng.random(setup.per_size)
        first = 1 + (size - 1) * setup.per_size
        type_prob[first:first + setup.per_size] = size_weight[size] * within / within.sum()
    type_prob /= type_prob.sum()
    rate = np.outer(type_prob, population)
    carries = rng.random((n_items, K)) < setup.carry
    nearest = np.full((n_items, J), -1, np.int64)
    for i in range(n_items):
        for j in range(J):
            best = math.inf
            for k in range(K):
                if carries[i, k] and miles[k, j] < best:
                    best = miles[k, j]
                    nearest[i, j] = k
    d = np.zeros((K, n_items))
    for q, items in enumerate(types):
        for i in items:
            for j in range(J):
                if nearest[i, j] >= 0:
                    d[nearest[i, j], i] += rate[q, j]
    T = setup.arrivals
    stock = np.rint(T * d + SAFETY_Z * np.sqrt(T * d * (1 - d))).astype(np.int64).T
    return Instance(setup, lat, lon, population, fc_lat, fc_lon, miles, types, type_prob, rate,
                    carries, nearest, d, stock)


def dlp_model(instance: Instance, inventory: np.ndarray | None = None,
              horizon: float | None = None) -> ProfileModel:
    """The DLP over the expected arrivals of `horizon` (default T) with `inventory`
    (default the starting stock), in micros."""
    horizon = instance.setup.arrivals if horizon is None else horizon
    inventory = instance.stock if inventory is None else inventory
    return ProfileModel(inventory, instance.cost_model(), instance.profiles(horizon))


def dlp_bound(instance: Instance, params: SolveParams | None = None) -> tuple[float, float]:
    """(DLP optimum in dollars, seconds to solve)."""
    result = dlp_model(instance).solve(params or SolveParams(solver="pdlp", time_limit_s=600))
    return result.objective / MICROS, result.solve_seconds
