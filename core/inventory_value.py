"""Inventory value: what one more unit of a SKU at a node is worth, from LP duals.

The real-time kernel is myopic: it ships each order the cheapest way now, and so
spends the unit that a later order near that node will miss. Valuing each unit
by the dual price of its inventory constraint in a fluid LP over forecast demand
(Acimovic & Graves 2015) lets the kernel charge that opportunity cost.

Two models, both linear programmes solved by GLOP (or PDLP for large instances):

The policy and the forecasts live in core.demand (ledger state); this module is the
model, imported only where it is solved.

* `transport_values` -- the transportation LP over demand per region x SKU:
  each unit of demand is served from a node (per-unit landed cost) or not at all
  (the region's unserved cost). It ignores the per-shipment cost, so it cannot
  see that an item travelling with the rest of its order costs less.
* `profile_values` -- the consolidation-aware LP over demand per *order profile*
  (a region and a set of SKUs), the deterministic LP (DLP) of Jasin & Sinha
  (2015): for each profile the fraction of each item sent from each node, and a
  fraction of a shipment opened at each node at least as large as any item's
  fraction from there (`y[p, k] >= u[p, i, k]`), charged the per-shipment cost.
  Its optimum is a lower bound on the expected cost of any policy; its inventory
  duals price a unit with consolidation in view.

Models are built (one private method per kind of constraint), then solved; the
solver's answers come back as allocd's own `ValueResult`. Money is micros.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from ortools.linear_solver.python import model_builder_helper as mbh

from core.demand import ValuePolicy
from core.errors import InvalidArgument
from core.model import Bucket
from core.network import MAX_UNIT_MICROS

if TYPE_CHECKING:
    from core.ledger import Ledger

#: Nodes with fewer units than this are not offered to the LP (no variable).
MIN_UNITS = 1e-9


@dataclass(frozen=True, slots=True)
class SolveParams:
    """How to solve: GLOP (dual simplex, exact duals) or PDLP (first-order, large LPs)."""

    solver: str = "glop"
    time_limit_s: float = 60.0
    threads: int = 1
    tolerance: float = 1e-7  # PDLP relative optimality tolerance


@dataclass(frozen=True, slots=True)
class Profile:
    """Expected orders over the horizon from one region for one set of SKUs."""

    region: int
    skus: tuple[int, ...]  # rows of the inventory matrix, distinct
    quantities: tuple[int, ...]
    orders: float  # expected number of such orders over the horizon


@dataclass(frozen=True, slots=True)
class CostModel:
    """Landed cost of a shipment from node n to region r: fixed[n, r] + unit[n, r] per unit.
    An unserved unit costs unserved_unit[r] and the order's unserved part one
    unserved_fixed[r] (both in micros)."""

    fixed: np.ndarray  # float64 [node, region]
    unit: np.ndarray  # float64 [node, region]
    unserved_fixed: np.ndarray  # float64 [region]
    unserved_unit: np.ndarray  # float64 [region]

    @property
    def n_nodes(self) -> int:
        return int(self.fixed.shape[0])

    @property
    def n_regions(self) -> int:
        return int(self.fixed.shape[1])


@dataclass(slots=True)
class ValueResult:
    """Duals of the inventory constraints, as opportunity cost per unit (micros)."""

    values: np.ndarray  # float64 [sku row, node] >= 0
    objective: float  # micros over the horizon
    status: str
    solve_seconds: float
    n_rows: int = 0
    n_columns: int = 0
    flows: dict[tuple[int, int], float] = field(default_factory=dict)  # (sku, node) -> units

    @property
    def optimal(self) -> bool:
        return self.status == "OPTIMAL"


class _Lp:
    """A minimisation LP accumulated as rows of (columns, coefficients)."""

    def __init__(self) -> None:
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.cost: list[float] = []
        self.row_lb: list[float] = []
        self.row_ub: list[float] = []
        self.row_cols: list[list[int]] = []
        self.row_coefs: list[list[float]] = []

    def column(self, cost: float, upper: float = math.inf) -> int:
        self.lower.append(0.0)
        self.upper.append(upper)
        self.cost.append(cost)
        return len(self.cost) - 1

    def row(self, cols: list[int], coefs: list[float], lb: float, ub: float) -> int:
        self.row_cols.append(cols)
        self.row_coefs.append(coefs)
        self.row_lb.append(lb)
        self.row_ub.append(ub)
        return len(self.row_lb) - 1

    def solve(self, params: SolveParams) -> tuple[str, float, np.ndarray, np.ndarray, float]:
        """(status, objective, column values, row duals, seconds)."""
        model = mbh.ModelBuilderHelper()
        n = len(self.cost)
        cols = model.add_var_array_with_bounds(  # (its stubs mistype numpy arrays)
            np.array(self.lower), np.array(self.upper), np.zeros(n, np.bool_),  # type: ignore[arg-type]
            "x")
        model.set_objective_coefficients(cols.tolist(), self.cost)
        for k, (idx, coefs) in enumerate(zip(self.row_cols, self.row_coefs, strict=True)):
            model.add_linear_constraint()
            model.add_terms_to_constraint(k, idx, coefs)
            model.set_constraint_lower_bound(k, self.row_lb[k])
            model.set_constraint_upper_bound(k, self.row_ub[k])
        solver = mbh.ModelSolverHelper(params.solver)
        solver.set_time_limit_in_seconds(params.time_limit_s)
        if params.solver == "pdlp":
            tol = params.tolerance
            solver.set_solver_specific_parameters(
                f"num_threads: {params.threads} "
                f"termination_criteria {{ simple_optimality_criteria {{ "
                f"eps_optimal_relative: {tol} eps_optimal_absolute: {tol} }} }}")
        started = time.perf_counter()
        solver.solve(model)
        seconds = time.perf_counter() - started
        status = _status_name(solver.status())
        if not solver.has_solution():
            return status, math.nan, np.zeros(n), np.zeros(len(self.row_lb)), seconds
        return (status, float(solver.objective_value()), np.asarray(solver.variable_values()),
                np.asarray(solver.dual_values()).reshape(-1), seconds)


def _status_name(status: object) -> str:
    name = getattr(status, "name", str(status))
    return str(name).rsplit(".", 1)[-1]


def _check(inventory: np.ndarray, costs: CostModel) -> None:
    if inventory.ndim != 2 or inventory.shape[1] != costs.n_nodes:
        raise InvalidArgument("inventory must be [sku, node] over the cost model's nodes",
                              "inventory")
    if (inventory < 0).any():
        raise InvalidArgument("inventory must be >= 0", "inventory")
    for name in ("fixed", "unit"):
        array = getattr(costs, name)
        if array.shape != (costs.n_nodes, costs.n_regions) or not np.isfinite(array).all():
            raise InvalidArgument(f"costs.{name} must be finite [node, region]", name)


class ProfileModel:
    """The consolidation-aware LP (the DLP) over order profiles; see the module doc."""

    def __init__(self, inventory: np.ndarray, costs: CostModel,
                 profiles: list[Profile]) -> None:
        _check(inventory, costs)
        self.inventory = np.asarray(inventory, np.float64)
        self.costs = costs
        self.profiles = profiles
        self.lp = _Lp()
        # (sku, node) -> [(column, units per unit of the column)]
        self._draws: dict[tuple[int, int], list[tuple[int, float]]] = {}
        self._inventory_rows: dict[tuple[int, int], int] = {}
        # (profile, item position) -> [(node or n_nodes for unserved, column)]
        self._assign: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self.solution: np.ndarray | None = None  # column values of the last solve
        self._build()

    def _build(self) -> None:
        stocked = [np.flatnonzero(row > MIN_UNITS).tolist() for row in self.inventory]
        for index, p in enumerate(self.profiles):
            if p.orders <= 0 or not p.skus:
                continue
            self._add_profile(index, p, stocked)
        self._add_inventory_rows()

    def _add_profile(self, index: int, p: Profile, stocked: list[list[int]]) -> None:
        lp, costs, r = self.lp, self.costs, p.region
        nodes = sorted({n for s in p.skus for n in stocked[s]})
        unserved = costs.n_nodes
        shipment: dict[int, int] = {}  # only where a shipment has a fixed cost
        for k in [*nodes, unserved]:
            fixed = float(costs.unserved_fixed[r] if k == unserved else costs.fixed[k, r])
            if fixed > 0:
                shipment[k] = lp.column(p.orders * fixed, upper=1.0)
        for pos, (s, q) in enumerate(zip(p.skus, p.quantities, strict=True)):
            assign_cols: list[int] = []
            for k in [*stocked[s], unserved]:
                unit = costs.unserved_unit[r] if k == unserved else costs.unit[k, r]
                col = lp.column(p.orders * q * float(unit))
                assign_cols.append(col)
                self._assign.setdefault((index, pos), []).append((k, col))
                if k in shipment:
                    self._add_shipment_link(col, shipment[k])
                if k != unserved:
                    self._draws.setdefault((s, k), []).append((col, p.orders * q))
            self._add_assignment_row(assign_cols)

    def _add_assignment_row(self, cols: list[int]) -> None:
        """Every item of the profile is served from somewhere (or unserved)."""
        self.lp.row(cols, [1.0] * len(cols), 1.0, 1.0)

    def _add_shipment_link(self, item_col: int, shipment_col: int) -> None:
        """An item sent from node k opens (a fraction of) a shipment from k: u <= y."""
        self.lp.row([item_col, shipment_col], [1.0, -1.0], -math.inf, 0.0)

    def _add_inventory_rows(self) -> None:
        for (s, k), draws in sorted(self._draws.items()):
            self._inventory_rows[(s, k)] = self.lp.row(
                [c for c, _ in draws], [w for _, w in draws], -math.inf,
                float(self.inventory[s, k]))

    def solve(self, params: SolveParams | None = None) -> ValueResult:
        params = params or SolveParams()
        status, objective, x, duals, seconds = self.lp.solve(params)
        self.solution = x
        values = np.zeros_like(self.inventory)
        flows: dict[tuple[int, int], float] = {}
        for (s, k), row in self._inventory_rows.items():
            # A <= row of a minimisation: dual <= 0; its negation is the unit's value.
            values[s, k] = max(0.0, -float(duals[row]))
            flows[(s, k)] = float(sum(x[c] * w for c, w in self._draws[(s, k)]))
        return ValueResult(values, objective, status, seconds, len(self.lp.row_lb),
                           len(self.lp.cost), flows)


    def shares(self, index: int) -> np.ndarray:
        """[item position, node (the last column: unserved)] shares of profile `index` in
        the last solution (rows sum to 1)."""
        p = self.profiles[index]
        out = np.zeros((len(p.skus), self.costs.n_nodes + 1))
        if self.solution is None:
            return out
        for pos in range(len(p.skus)):
            for k, col in self._assign.get((index, pos), ()):
                out[pos, k] = max(0.0, float(self.solution[col]))
        return out


def profile_values(inventory: np.ndarray, costs: CostModel, profiles: list[Profile],
                   params: SolveParams | None = None) -> ValueResult:
    """Consolidation-aware unit values: the DLP's inventory duals."""
    return ProfileModel(inventory, costs, profiles).solve(params)


def transport_values(inventory: np.ndarray, costs: CostModel, demand: np.ndarray,
                     params: SolveParams | None = None,
                     units_per_shipment: float = 1.0) -> ValueResult:
    """Unit values from the transportation LP over demand[region, sku] (units over the
    horizon). A unit's cost is unit[n, r] + fixed[n, r] / units_per_shipment: 1 prices
    every unit as its own package, larger values as sharing one."""
    if demand.ndim != 2 or demand.shape != (costs.n_regions, inventory.shape[0]):
        raise InvalidArgument("demand must be [region, sku]", "demand")
    if not np.isfinite(demand).all() or (demand < 0).any():
        raise InvalidArgument("demand must be finite and >= 0", "demand")
    if not units_per_shipment >= 1.0:
        raise InvalidArgument("units_per_shipment must be >= 1", "units_per_shipment")
    share = 1.0 / units_per_shipment
    per_unit = CostModel(
        fixed=np.zeros_like(costs.fixed), unit=costs.unit + share * costs.fixed,
        unserved_fixed=np.zeros_like(costs.unserved_fixed),
        unserved_unit=costs.unserved_unit + share * costs.unserved_fixed)
    regions, skus = np.nonzero(demand > 0)
    profiles = [Profile(int(r), (int(s),), (1,), float(demand[r, s]))
                for r, s in zip(regions.tolist(), skus.tolist(), strict=True)]
    return ProfileModel(inventory, per_unit, profiles).solve(params)


# ---- consolidation-aware values ------------------------------------------------
def poisson_tail(mean: float, k: float) -> float:
    """P(N >= k) for N ~ Poisson(mean): normal approximation with continuity correction."""
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    z = (k - 0.5 - mean) / math.sqrt(mean)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def shortage_values(result: ValueResult, inventory: np.ndarray, shipment_cost: np.ndarray,
                    weight: float, demand: np.ndarray | None = None) -> np.ndarray:
    """The LP's unit values plus what losing the unit costs in shipments.

    A per-unit LP sees only per-unit cost differences: with stock to spare for the
    expected demand its duals are zero, yet taking a unit now leaves a later order
    short there, and a short item usually travels in a package of its own. If the
    demand the LP sends to (sku, node) over the horizon is Poisson with mean
    `flow`, taking one of the S units there adds P(D >= S) expected short units;
    each costs `weight` x the node's per-shipment cost. `demand[sku, node]`, when
    given, replaces the LP's flow as that mean (units drawn there, extrapolated)."""
    values = result.values.copy()
    if weight <= 0:
        return values
    means = result.flows if demand is None else {
        (int(s), int(k)): float(demand[s, k]) for s, k in zip(*np.nonzero(inventory),
                                                              strict=True)}
    for (s, k), mean in means.items():
        values[s, k] += weight * float(shipment_cost[k]) * poisson_tail(mean, inventory[s, k])
    return values


@dataclass(slots=True)
class ValueInputs:
    """Everything the service's value model needs, copied out of the ledger so that the
    LP can be solved away from the writer."""

    skus: list[int]  # dense SKU ids, the rows of inventory
    inventory: np.ndarray  # [row, node] AVAILABLE
    costs: CostModel
    demand: np.ndarray  # [region, row] units over the horizon
    shipment_cost: np.ndarray  # [node] demand-weighted per-shipment cost
    policy: ValuePolicy
    drawn: np.ndarray | None = None  # [row, node] units drawn over a horizon at the recent rate


@dataclass(slots=True)
class Values:
    """Per-unit values in micros, (dense sku, node) -> micros (> 0 only)."""

    values: dict[tuple[int, int], int]
    objective: float
    status: str
    solve_seconds: float


def compute_values(inputs: ValueInputs, params: SolveParams | None = None) -> Values:
    """Solve the transportation LP and add the shortage term (pure; any thread)."""
    if not inputs.skus or not inputs.demand.any():
        return Values({}, 0.0, "OPTIMAL", 0.0)
    result = transport_values(inputs.inventory, inputs.costs, inputs.demand, params)
    if not result.optimal:
        return Values({}, result.objective, result.status, result.solve_seconds)
    values = shortage_values(result, inputs.inventory, inputs.shipment_cost,
                             inputs.policy.shortage_weight, inputs.drawn) * inputs.policy.scale
    out: dict[tuple[int, int], int] = {}
    for row, k in zip(*np.nonzero(values >= 0.5), strict=True):
        # (At most an opportunity cost's limit: applied as one, a value past it is refused.)
        out[(inputs.skus[int(row)], int(k))] = round(min(float(values[row, k]),
                                                          MAX_UNIT_MICROS))
    return Values(out, result.objective, result.status, result.solve_seconds)


def forecast_rates(ledger: Ledger, now_ms: int) -> tuple[str, dict[tuple[str, int], float]]:
    """("supplied" | "learned", (region id, dense sku) -> units per day). Rates decay
    with the half-life the ledger smoothed them with."""
    if ledger.supplied_forecast:
        return "supplied", dict(ledger.supplied_forecast)
    half_life = ledger.half_life_days
    return "learned", {key: demand.rate(now_ms, half_life)
                       for key, demand in ledger.learned_demand.items()}


def gather_inputs(ledger: Ledger, now_ms: int, policy: ValuePolicy) -> ValueInputs:
    """Copy the value model's inputs out of the ledger (fast; on the writer)."""
    network = ledger.network()
    n_nodes = ledger.catalog.n_nodes
    n_regions = len(network.region_lat)
    _, rates = forecast_rates(ledger, now_ms)
    rates = {key: rate for key, rate in rates.items()
             if rate > 0 and key[0] in network.region_index}
    skus = sorted({sku for _, sku in rates})
    row_of = {sku: row for row, sku in enumerate(skus)}
    demand = np.zeros((n_regions, len(skus)))
    for (region_id, sku), rate in rates.items():
        demand[network.region_index[region_id], row_of[sku]] += rate * policy.horizon_days
    inventory = np.zeros((len(skus), n_nodes))
    enabled = ledger.catalog.node_enabled
    for row, sku in enumerate(skus):
        for n in range(n_nodes):
            if enabled[n]:  # (what may be sold: safety stock is kept back for every channel)
                inventory[row, n] = max(ledger.quantity(sku, n, Bucket.AVAILABLE)
                                        - ledger.safety_stock(sku, n), 0)
    fixed = np.zeros((n_nodes, n_regions))
    unit = np.zeros((n_nodes, n_regions))
    for n in range(n_nodes):
        for r in range(n_regions):
            if network.lane_has[n, r]:
                fixed[n, r] = network.lane_fixed[n, r] + network.lane_per_lb[n, r]
                unit[n, r] = network.lane_per_unit[n, r]
            elif network.n_services:  # a one-pound package by the cheapest service
                fixed[n, r] = network.rates[:, network.zone[n, r], 1].min()
    fixed += network.handling[:n_nodes, None]
    unit += network.pick[:n_nodes, None]
    worst = 2.0 * (fixed + unit).max(initial=0.0)
    costs = CostModel(fixed, unit, np.full(n_regions, worst), np.full(n_regions, worst))
    by_region = demand.sum(axis=1)
    total = by_region.sum()
    shipment_cost = fixed @ by_region / total if total > 0 else fixed.mean(axis=1)
    drawn = None
    if policy.tail_from_draws:
        drawn = np.zeros_like(inventory)
        for row, sku in enumerate(skus):
            for n in range(n_nodes):
                units = ledger.drawn_units.get((sku, n))
                if units is not None:
                    drawn[row, n] = (units.rate(now_ms, ledger.half_life_days)
                                     * policy.horizon_days)
    return ValueInputs(skus, inventory, costs, demand, np.asarray(shipment_cost), policy, drawn)
