"""Drive a fulfilment instance's arrivals through allocd's own allocation path.

The instance becomes an allocd ledger (FCs as nodes, items as SKUs, regions with a
postal prefix each, one contracted lane per FC x region carrying the instance's
fixed-per-shipment and per-unit costs, a carrier service with zero rates so that
every lane qualifies, no split penalty). Each arrival is one `AllocateOrders`
command run by `core.operations.execute` -- the code the gRPC service runs.

A policy is a small object with three hooks: `start` (before the first arrival),
`before_arrival` (every arrival) and `periodic` (every `period` arrivals). It acts
on the ledger only through commands (`Run.execute`), like a client of the service
would. The cost is read at the end from the ledger's orders (so a policy that
re-plans earlier orders is charged for the plans they end with).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from bench.fulfilment.instance import MICROS, Instance, dlp_model
from core import commands as c
from core import reopt
from core.inventory_value import (
    ProfileModel,
    SolveParams,
    ValueResult,
    profile_values,
    shortage_values,
    transport_values,
)
from core.ledger import Ledger
from core.model import Bucket, ChannelSpec, NodeSpec, SkuSpec
from core.network import CarrierService, LaneCost, NetworkSpec, Region, SlaTier
from core.operations import Outcome, execute
from core.orders import OrderLineSpec, OrderSpec, PackageStatus

MS_PER_ARRIVAL = 1_000
CHANNEL = "web"


def sku_id(item: int) -> str:
    return f"I{item:03d}"


def node_id(fc: int) -> str:
    return f"FC{fc:02d}"


def postal(region: int) -> str:
    return f"{region:03d}"


def network_spec(instance: Instance) -> NetworkSpec:
    zones = 7
    service = CarrierService("lane", "bench", ((0,),) * zones, (1,) * zones)
    regions = tuple(Region(f"R{j:03d}", float(instance.region_lat[j]),
                           float(instance.region_lon[j]), (postal(j),))
                    for j in range(instance.setup.n_regions))
    fixed = np.rint(instance.fixed * MICROS).astype(np.int64)
    unit = np.rint(instance.unit * MICROS).astype(np.int64)
    lanes = tuple(LaneCost(node_id(k), regions[j].region_id, int(fixed[k, j]), int(unit[k, j]))
                  for k in range(instance.setup.n_fcs) for j in range(instance.setup.n_regions))
    return NetworkSpec(regions=regions, services=(service,), lanes=lanes)


def build_ledger(instance: Instance) -> Ledger:
    ledger = Ledger()
    setup = instance.setup
    execute(ledger, c.UpsertNodes(tuple(
        NodeSpec(node_id(k), latitude=float(instance.fc_lat[k]),
                 longitude=float(instance.fc_lon[k])) for k in range(setup.n_fcs))), 0)
    execute(ledger, c.UpsertChannels((ChannelSpec(CHANNEL),)), 0)
    execute(ledger, c.UpsertSkus(tuple(SkuSpec(sku_id(i), weight_lb=1.0)
                                       for i in range(setup.n_items))), 0)
    execute(ledger, c.SetNetwork(network_spec(instance)), 0)
    lines = tuple(c.ReceiptLine(sku_id(i), node_id(k), int(instance.stock[i, k]))
                  for i in range(setup.n_items) for k in range(setup.n_fcs)
                  if instance.stock[i, k] > 0)
    execute(ledger, c.ReceiveStock(lines, reference="start"), 0)
    return ledger


@dataclass(slots=True)
class Run:
    """What a policy sees: the instance, the ledger, where the run is."""

    instance: Instance
    ledger: Ledger
    t: int = 0  # arrivals so far
    now_ms: int = 0
    next_type: int = 0  # the arrival about to be allocated (before_arrival may look)
    next_region: int = 0
    solve_seconds: float = 0.0  # time spent in the policy's models

    @property
    def remaining(self) -> int:
        return self.instance.setup.arrivals - self.t

    def execute(self, command: c.Command) -> Outcome:
        return execute(self.ledger, command, self.now_ms)

    def available(self) -> np.ndarray:
        """AVAILABLE units [item, fc] now."""
        setup = self.instance.setup
        out = np.zeros((setup.n_items, setup.n_fcs), np.int64)
        cat = self.ledger.catalog
        for i in range(setup.n_items):
            sku = cat.sku(sku_id(i))
            for k in range(setup.n_fcs):
                out[i, k] = self.ledger.quantity(sku, k, Bucket.AVAILABLE)
        return out

    def set_values(self, values: np.ndarray) -> None:
        """Replace the opportunity costs by values[item, fc] (micros per unit), one command."""
        cat = self.ledger.catalog
        current = self.ledger.opportunity_costs
        lines = []
        for i in range(values.shape[0]):
            sku = cat.sku(sku_id(i))
            for k in range(values.shape[1]):
                micros = round(float(values[i, k]))
                if micros > 0 or (sku, k) in current:
                    lines.append(c.OpportunityCostLine(sku_id(i), node_id(k), max(micros, 0)))
        if lines:
            self.execute(c.SetOpportunityCosts(tuple(lines)))


class Policy:
    """Myopic: the kernel's exact cheapest plan per order, nothing else."""

    name = "myopic"
    period = 0  # arrivals between `periodic` calls; 0 = never

    def start(self, run: Run) -> None:
        pass

    def before_arrival(self, run: Run) -> None:
        pass

    def periodic(self, run: Run) -> None:
        pass

    def finish(self, run: Run) -> None:
        """After the last arrival."""


@dataclass
class DualPrice(Policy):
    """Opportunity costs from an LP over the remaining horizon's expected demand and the
    current AVAILABLE stock, re-solved `resolves` times during the run -- what the
    service's value policy does (core.inventory_value).

    model "transport": the per region x item LP's duals plus `shortage_weight` x a
    shipment's fixed cost x P(demand the LP sends to the unit's FC >= its stock) (the
    service's consolidation-aware values; weight 0 is the plain duals). model "dlp":
    the duals of the consolidation-aware DLP over order profiles (slow to re-solve).
    demand "observed" replaces the LP's flow to an FC by what the run has drawn there so
    far, extrapolated over the remaining arrivals."""

    model: str = "transport"
    shortage_weight: float = 0.5
    scale: float = 1.0
    resolves: int = 100
    params: SolveParams = field(default_factory=lambda: SolveParams(
        solver="pdlp", time_limit_s=600, threads=2, tolerance=1e-4))
    initial: ValueResult | None = None  # a solve of the same DLP at the start, if at hand
    label: str = ""
    demand: str = "forecast"

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.label or f"dual-price ({self.model}, w={self.shortage_weight:g}, " \
            f"{self.resolves} re-solves)"

    def __post_init__(self) -> None:
        self.period = 0

    def start(self, run: Run) -> None:
        if self.resolves:
            self.period = max(1, run.instance.setup.arrivals // (self.resolves + 1))
        self.periodic(run, self.initial if self.model == "dlp" else None)

    def periodic(self, run: Run, result: ValueResult | None = None) -> None:
        if run.remaining <= 0:
            return
        instance, horizon = run.instance, run.remaining
        inventory = run.available()
        costs = instance.cost_model()
        if self.model == "dlp":
            if result is None:
                result = profile_values(inventory, costs, instance.profiles(horizon),
                                        self.params)
                run.solve_seconds += result.solve_seconds
            values = result.values
        else:
            result = transport_values(inventory, costs, instance.item_demand(horizon))
            run.solve_seconds += result.solve_seconds
            drawn = None
            if self.demand == "observed" and run.t > 0:
                drawn = (instance.stock - inventory) / run.t * horizon
            values = shortage_values(result, inventory, costs.fixed.mean(axis=1),
                                     self.shortage_weight, drawn)
        run.set_values(self.scale * values)


@dataclass
class PickQueue(Policy):
    """`inner` decides each arrival in real time; every `window` arrivals the orders still
    in the pick queue (allocated, not yet released to a warehouse) are planned again
    together by allocd's batch re-optimisation (core.reopt, what `Reoptimize` runs), then
    released to the warehouses: Xu, Allgor & Graves (2009)'s re-assignment of the queue."""

    inner: Policy = field(default_factory=Policy)
    window: int = 200
    time_limit_s: float = 5.0
    label: str = ""
    replanned: int = 0
    nodes_per_order: int = 4  # ship-complete proposals per order (core.reopt)
    # Orders stay in the queue this many arrivals at least (0: every flush releases the
    # whole queue). With a hold, each order is planned again at every flush it waits
    # through, beside the orders that arrived after it.
    hold: int = 0

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.label or f"{self.inner.name} + re-optimised queue of {self.window}"

    def start(self, run: Run) -> None:
        self.inner.start(run)
        self.period = 1  # the inner policy's own period is kept in `periodic`

    def before_arrival(self, run: Run) -> None:
        self.inner.before_arrival(run)

    def periodic(self, run: Run) -> None:
        if self.inner.period and run.t % self.inner.period == 0:
            self.inner.periodic(run)
        if run.t % self.window == 0:
            self.flush(run)

    def finish(self, run: Run) -> None:
        self.flush(run, final=True)
        self.inner.finish(run)

    def flush(self, run: Run, final: bool = False) -> None:
        started = time.perf_counter()
        problem = reopt.collect(run.ledger, run.now_ms)
        solution = reopt.solve(problem, reopt.ReoptOptions(
            time_limit_s=self.time_limit_s, seed=run.t, nodes_per_order=self.nodes_per_order))
        if len(solution.changed()):
            outcome = run.execute(c.ApplyReoptimization(reopt.replans(solution)))
            self.replanned += len(outcome.detail.applied)
        self.release(run, final)
        run.solve_seconds += time.perf_counter() - started

    def release(self, run: Run, final: bool = False) -> None:
        """Release to the warehouses what has waited `hold` arrivals (oldest first: a
        wave takes a node's packages in arrival order when tier and dates tie)."""
        n_fcs = run.instance.setup.n_fcs
        if not self.hold or final:
            for k in range(n_fcs):
                run.execute(c.ReleaseWave(node_id(k)))
            return
        due = np.zeros(n_fcs, np.int64)
        book = run.ledger.orders
        for state in book.packages.values():
            if state.status == PackageStatus.ALLOCATED and \
                    int(state.order_id[1:]) < run.t - self.hold:
                due[state.plan.node] += 1
        for k in np.flatnonzero(due).tolist():
            run.execute(c.ReleaseWave(node_id(k), int(due[k])))


STEER_MICROS = 50 * MICROS  # far above any saving: the kernel follows the rounding


@dataclass
class DlpRounding(Policy):
    """Follow the DLP's plan with Ma's (2023) dilated correlated rounding: for the arriving
    order of type q from region j, draw an opening time E_k ~ Exp(1) per FC (and one for
    "unserved"); item i goes to the FC minimising E_k / x[i, k], x being the DLP's shares
    for (q, j). Shared clocks make the items of an order pick the same FC often. The
    choice reaches allocd's kernel as opportunity costs on the order's SKUs (0 at the
    chosen FC, a large cost elsewhere): the kernel then ships it from there when it has
    stock and otherwise picks the cheapest of the rest. "Unserved" leaves the kernel free."""

    model: ProfileModel | None = None  # the DLP over the whole horizon, solved
    seed: int = 0
    name: str = "DLP + dilated rounding"

    def start(self, run: Run) -> None:
        if self.model is None or self.model.solution is None:
            self.model = dlp_model(run.instance)
            run.solve_seconds += self.model.solve(SolveParams(
                solver="pdlp", time_limit_s=600, threads=2, tolerance=1e-4)).solve_seconds
        self.rng = np.random.default_rng(self.seed)
        self.index = {(p.skus, p.region): i for i, p in enumerate(self.model.profiles)}

    def before_arrival(self, run: Run) -> None:
        assert self.model is not None
        items = run.instance.types[run.next_type]
        if not items:
            return
        shares = self.model.shares(self.index[(items, run.next_region)])
        n_fcs = run.instance.setup.n_fcs
        opening = self.rng.exponential(size=n_fcs + 1)
        lines = []
        for pos, item in enumerate(items):
            with np.errstate(divide="ignore"):
                observed = np.where(shares[pos] > 1e-9, opening / shares[pos], np.inf)
            chosen = int(np.argmin(observed))
            if chosen == n_fcs or not np.isfinite(observed[chosen]):
                continue
            lines += [c.OpportunityCostLine(sku_id(item), node_id(k), STEER_MICROS)
                      for k in range(n_fcs) if k != chosen]
        run.execute(c.ReplaceOpportunityCosts(tuple(lines)))


@dataclass(slots=True)
class Totals:
    cost: float  # dollars
    orders: int  # non-empty orders
    shipments: int
    unserved_units: int
    seconds: float  # wall time of the whole run (allocation + the policy's models)
    solve_seconds: float

    @property
    def shipments_per_order(self) -> float:
        return self.shipments / max(self.orders, 1)


def order_spec(instance: Instance, t: int, q: int, j: int) -> OrderSpec:
    items = instance.types[q]
    return OrderSpec(f"O{t:07d}", CHANNEL, SlaTier.STANDARD,
                     tuple(OrderLineSpec(f"L{i}", sku_id(i), 1) for i in items),
                     postal_code=postal(j))


def simulate(instance: Instance, policy: Policy, types: np.ndarray,
             regions: np.ndarray) -> Totals:
    started = time.perf_counter()
    run = Run(instance, build_ledger(instance))
    policy.start(run)
    for t in range(len(types)):
        run.t, run.now_ms = t, t * MS_PER_ARRIVAL
        run.next_type, run.next_region = int(types[t]), int(regions[t])
        if policy.period and t and t % policy.period == 0:
            policy.periodic(run)
        policy.before_arrival(run)
        q = int(types[t])
        if instance.types[q]:
            outcome = run.execute(c.AllocateOrders((order_spec(instance, t, q,
                                                               int(regions[t])),)))
            lost_sales(run, outcome)
    policy.finish(run)
    seconds = time.perf_counter() - started
    cost, orders, shipments, unserved = account(instance, run.ledger, regions)
    return Totals(cost, orders, shipments, unserved, seconds, run.solve_seconds)


def lost_sales(run: Run, outcome: Outcome) -> None:
    """What an arrival cannot get now is a lost sale in this set-up (charged as unserved),
    not a backorder a later decision may fill: its lines are cancelled at once."""
    for result in outcome.detail.outcomes:
        decision = result.decision
        if decision is not None and decision.backorders:
            run.execute(c.CancelOrder(result.order_id, tuple(
                (b.line_id, b.quantity) for b in decision.backorders)))


def account(instance: Instance, ledger: Ledger,
            regions: np.ndarray) -> tuple[float, int, int, int]:
    """The instance's cost of the plans the ledger's orders end with (dollars)."""
    unit, unserved_unit = instance.unit, instance.unserved_unit
    cost = 0.0
    shipments = unserved = orders = 0
    packages = ledger.orders.packages
    for order_id, record in ledger.orders.orders.items():
        j = int(regions[int(order_id[1:])])
        orders += 1
        for package_id in record.package_ids:
            state = packages[package_id]
            if state.status == PackageStatus.REPLANNED:
                continue  # superseded by a re-optimised plan: never shipped
            units = sum(state.quantities.values())
            if units:
                shipments += 1
                cost += instance.fixed[state.plan.node, j] + units * unit[state.plan.node, j]
        missing = sum(b.quantity for b in record.backorders.values()) + sum(
            record.cancelled.values())
        if missing:
            unserved += missing
            cost += instance.unserved_fixed[j] + missing * unserved_unit[j]
    return cost, orders, shipments, unserved
