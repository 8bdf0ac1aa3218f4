"""Batch re-optimisation of the orders not yet released to a warehouse.

Real-time allocation serves each order the cheapest way at the moment it arrives and
strands stock for the orders that follow; a split shipment made because the cheap
node had run out stays split. Before a wave releases them, the allocated orders (and
the backorders) can be planned again together:

1. `collect` takes a consistent snapshot of the open orders, their current plans and
   the stock they may use (AVAILABLE above the sale floors plus what they hold). The
   current plans are valued at today's cost model, as every proposal is (not at the
   costs stored when they were decided: rates, node costs and opportunity costs change).
2. `propose` asks the allocation kernel for plans per order: the current plan, ship
   complete from each of the cheapest nodes that stock every line, the best plan were
   stock no object, and whole plans: the myopic plan re-run in priority order on the
   pooled stock, and the same with a price on every unit of scarce stock (scaled
   Lagrange multipliers of the stock constraints, `add_priced`), so that orders leave
   contested units to the orders that need them. Every proposal meets the order's
   deliver-by; an order without one keeps at least the delivery date its current plan
   promised.
3. `solve` picks one plan per order (set partitioning: exactly one plan per order, stock
   per SKU x node and node capacity respected), starting from the best whole plan that
   fits. Orders that share no scarce SKU x node never interact: the problem splits into
   independent components, packed into chunks solved exactly with CP-SAT in parallel
   processes. A component too large for one model is improved by a large-neighbourhood
   search: a neighbourhood of orders competing for the same stock is solved exactly with
   every other order fixed, and kept if cheaper. Before that search (and after it),
   chains of moves: an order moves to a cheaper plan whose stock others hold, and the
   holders move to plans that free it, each in turn making room for the next (an
   ejection chain, depth first). Every step keeps a feasible plan at least as good as
   the one before, so the result never costs more than the current plans.
4. `lower_bound` is the Lagrangian dual of the stock and capacity constraints (subgradient
   ascent), a bound on the LP relaxation of the same model and so on its optimum.

The objective is landed cost (plus a penalty per backordered unit, and optionally a
weight per package beyond an order's first: what fewer shipments are worth to the
business). The orders that changed are then applied as one command
(`ApplyReoptimization`), which re-checks each order's version and the stock at that
moment."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import multiprocessing.synchronize
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.allocation import STATUS_ALLOCATED, BatchResult, OrderBatch, run_allocation
from core.commands import Replan
from core.decisions import (
    SHIPS_TODAY,
    SHIPS_TOMORROW,
    UNLIMITED_CAPACITY,
    Request,
    _gather,
    _Gathered,
    capacity_left,
    priority_key,
    rate_shop,
    ship_days,
)
from core.ledger import Ledger
from core.network import COST_CAP, MAX_PACKAGE_MICROS, CompiledNetwork
from core.orders import DAY_MS, OptionKind, OrderRecord, PackagePlan, PackageState, PackageStatus

BIG_STOCK = 1 << 30
#: Objective weight of a unit left backordered (micros): large enough that serving a
#: unit is always worth more than any plausible shipping cost difference.
BACKORDER_PENALTY = 1_000_000_000
#: Fractions of the Lagrange multipliers charged per unit in the priced kernel runs.
PRICE_SCALES = (0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0)
PRICE_ROUNDS = 3
#: How often a CP-SAT search under way (and the wait for the pool's chunks) looks at
#: `stop()`, in seconds: a stopped solve ends within about this long of the call's end.
STOP_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class ReoptOptions:
    time_limit_s: float = 30.0
    seed: int = 0
    workers: int = 1  # processes solving chunks; 1 solves in this process
    chunk_orders: int = 400
    nodes_per_order: int = 6  # ship-complete proposals per order (cheapest nodes)
    max_orders: int = 0  # 0: every open order
    # Weighed per package beyond an order's first, on top of the network's split penalty:
    # how much fewer shipments are worth to the business (0: landed cost alone).
    extra_package_micros: int = 0


Version = tuple[tuple[str, int, tuple[tuple[str, int], ...]], ...]


def order_version(ledger: Ledger, record: OrderRecord) -> Version:
    """What re-optimisation planned against: the order's packages, their status and
    contents, and its backorders. Anything that changes one of them changes this."""
    book = ledger.orders
    packages = tuple((pid, int(book.packages[pid].status),
                      tuple(sorted(book.packages[pid].quantities.items())))
                     for pid in record.package_ids)
    backorders = tuple(sorted((b.line_id, b.quantity) for b in record.backorders.values()))
    return (*packages, ("backorders", 0, backorders))


@dataclass(slots=True)
class Problem:
    """The open orders (in priority order) and the stock they may use, as arrays."""

    order_ids: list[str]
    versions: list[Version]
    line_ids: list[str]  # per batch line
    batch: OrderBatch  # lines still open; item_floor is zero (supply is net of floors)
    skus: np.ndarray  # row u -> dense SKU
    supply: np.ndarray  # [u, n] units the open orders may use in all
    current_take: np.ndarray  # [k, n] units line k holds at node n now
    current_cost: np.ndarray  # [o] micros of the current packages at today's costs
    current_packages: np.ndarray  # [o]
    current_backorder: np.ndarray  # [o] units open without a package
    capacity: np.ndarray  # [n] orders a node may still take today (with its own); <0: no limit
    network: CompiledNetwork
    node_enabled: np.ndarray
    now_ms: int
    # Added to every split penalty while plans are proposed and chosen (see ReoptOptions);
    # costs reported are landed costs without it.
    extra_package_micros: int = 0

    @property
    def n_orders(self) -> int:
        return len(self.order_ids)

    def searched(self, extra_package_micros: int) -> Problem:
        """This problem with the network's split penalties raised for the search."""
        if not extra_package_micros:
            return self
        network = dataclasses.replace(
            self.network, split_penalty=self.network.split_penalty + extra_package_micros)
        return dataclasses.replace(self, network=network,
                                   extra_package_micros=extra_package_micros)


def promised_by(deliver_by_ms: int, promise_ms: int, backordered: bool) -> int:
    """The date a new plan must deliver by: the order's deliver-by when it has one (what the
    customer was promised), else the date its current plan promises (when every unit has a
    package: the date the customer was told), else none (0)."""
    if deliver_by_ms:
        return deliver_by_ms
    return promise_ms if promise_ms and not backordered else 0


def _carrier_today(network: CompiledNetwork, plan: PackagePlan, region: int,
                   weight_lb: float, volume_in3: float, longest_in: float, units: int) -> int:
    """What the package's carrier service charges today for it (rated as allocation
    rates a package: rate card or contracted lane, oversize surcharge). A service the
    network no longer has (its index past today's services) cannot be asked: the package
    would have to go by another, so it is valued at the cheapest of today's services that
    still delivers by its promise from its ship date, else the cheapest of all (it is late
    whatever it ships by). With no service at all, its stored carrier cost."""
    if not network.n_services:
        return plan.carrier_micros
    _, _, quotes = rate_shop(network, plan.node, region, weight_lb, volume_in3, longest_in,
                             units, plan.ship_ms, plan.promise_ms)
    if 0 <= plan.service < len(quotes):
        return quotes[plan.service].cost_micros
    timely = [q.cost_micros for q in quotes if q.meets_deadline]
    return min(timely) if timely else min(q.cost_micros for q in quotes)


def cost_today(ledger: Ledger, network: CompiledNetwork, gathered: _Gathered, o: int,
               req: Request, live: Iterable[PackageState]) -> int:
    """What an order's live packages cost under today's cost model, as every other plan
    for it is valued: each package from its node by its carrier service at today's rates
    (see _carrier_today) + the node's handling + per unit its pick cost and the
    opportunity cost / routing penalty today (the batch's `item_unit_extra`, as the
    kernel charges them) + today's split penalty for each package beyond the first (a
    re-plan makes the first one free of it: replan_ops._decisions). Not the costs stored
    when the packages were decided: rates, node costs and opportunity costs may have
    changed since, and a plan valued at yesterday's costs against plans valued at
    today's would be kept, or given up, for the wrong reason.

    `gathered` is a gathering of requests whose `o`-th is `req`, the order's open lines
    (every line a live package holds units of among them)."""
    catalog = ledger.catalog
    batch = gathered.batch
    region = gathered.regions[o]
    start = int(batch.line_start[o])
    row = {line_id: start + j for j, (line_id, _, _) in enumerate(req.lines)}
    extra = batch.item_unit_extra
    total = packages = 0
    for state in live:
        plan = state.plan
        n = plan.node
        weight = volume = longest = 0.0
        units = units_cost = 0
        for line in plan.lines:
            qty = state.quantities.get(line.line_id, 0)
            if not qty:
                continue
            sku = line.sku
            weight += qty * float(catalog.weight_lb[sku])
            volume += qty * float(catalog.volume_in3[sku])
            longest = max(longest, float(catalog.longest_in[sku]))
            units += qty
            units_cost += qty * (int(network.pick[n]) + int(extra[row[line.line_id], n]))
        total += (_carrier_today(network, plan, region, weight, volume, longest, units)
                  + int(network.handling[n]) + units_cost)
        packages += 1
    # (At most COST_CAP, as the kernel reads the plans it is weighed against.)
    return min(total + max(packages - 1, 0) * int(network.split_penalty[int(batch.tier[o])]),
               COST_CAP)


def _arrival(record: OrderRecord) -> int:
    return record.seq


def _eligible(ledger: Ledger, record: OrderRecord) -> bool:
    if record.held or (not record.package_ids and not record.backorders):
        return False
    book = ledger.orders
    states = [book.packages[pid] for pid in record.package_ids]
    if any(s.status not in (PackageStatus.ALLOCATED, PackageStatus.CANCELLED,
                            PackageStatus.REPLANNED) for s in states):
        return False  # released to a warehouse (or further): the floor decides now
    live = [s for s in states if s.status == PackageStatus.ALLOCATED]
    if any(line.substitutes_sku >= 0 for s in live for line in s.plan.lines):
        return False  # a substitute was agreed for this order: keep it
    decision = record.last_decision
    if record.backorders and decision is not None and any(
            o.chosen and o.kind == OptionKind.WAIT_FOR_INBOUND for o in decision.options):
        return False  # it waits for inbound stock to ship complete, by choice
    return bool(live or record.backorders)


def collect(ledger: Ledger, now_ms: int, max_orders: int = 0) -> Problem:
    """Snapshot the orders re-optimisation may change. Reads the ledger, changes nothing."""
    book = ledger.orders
    network = ledger.network()
    reqs: list[Request] = []
    versions: dict[str, Version] = {}
    takes: dict[str, list[tuple[str, int, int]]] = {}  # order -> (line_id, node, qty)
    lives: dict[str, list[PackageState]] = {}  # order -> its live packages
    counts: dict[str, tuple[int, int]] = {}  # order -> (packages, backordered units)
    slots: dict[str, set[tuple[int, int]]] = {}  # order -> the (node, day) slots it holds
    # Only open orders can be eligible (OrderBook.open_orders): taken in arrival order, as
    # a walk of every order received found them.
    candidates = sorted((book.orders[i] for i in book.open_orders), key=_arrival)
    for record in candidates:
        if not _eligible(ledger, record):
            continue
        order_id = record.spec.order_id
        live = [book.packages[pid] for pid in record.package_ids
                if book.packages[pid].status == PackageStatus.ALLOCATED]
        units: dict[str, int] = {}
        order_takes = []
        promise = 0
        for state in live:
            for line_id, qty in state.quantities.items():
                units[line_id] = units.get(line_id, 0) + qty
                order_takes.append((line_id, state.plan.node, qty))
            promise = max(promise, state.plan.promise_ms)
        backordered = 0
        for backorder in record.backorders.values():
            units[backorder.line_id] = units.get(backorder.line_id, 0) + backorder.quantity
            backordered += backorder.quantity
        spec = record.spec
        lines = tuple((line.line_id, ledger.catalog.sku(line.sku_id), units[line.line_id])
                      for line in spec.lines if units.get(line.line_id))
        deliver_by = promised_by(spec.deliver_by_ms, promise, bool(backordered))
        reqs.append(Request(spec._replace(deliver_by_ms=deliver_by), lines,
                            len(record.package_ids), 0, record.seq))
        versions[order_id] = order_version(ledger, record)
        takes[order_id] = order_takes
        lives[order_id] = live
        counts[order_id] = (len(live), backordered)
        slots[order_id] = {(s.plan.node, s.plan.ship_ms // DAY_MS) for s in live}
    reqs.sort(key=priority_key)
    if max_orders and len(reqs) > max_orders:
        # The highest priority first (the oldest were taken before, whatever their tier).
        del reqs[max_orders:]
        kept = {req.spec.order_id for req in reqs}
        versions = {i: v for i, v in versions.items() if i in kept}
        takes = {i: t for i, t in takes.items() if i in kept}
        counts = {i: n for i, n in counts.items() if i in kept}
    n_nodes = ledger.catalog.n_nodes
    if not reqs:
        empty = np.zeros(0, np.int64)
        batch = OrderBatch(empty, empty, empty, empty, empty, empty, np.zeros(0, np.bool_),
                           empty, empty, empty, np.zeros(0), np.zeros(0), np.zeros(0),
                           np.zeros((0, n_nodes), np.int64), np.zeros((0, n_nodes), np.int64))
        return Problem([], [], [], batch, empty, np.zeros((0, n_nodes), np.int64),
                       np.zeros((0, n_nodes), np.int64), empty, empty, empty,
                       np.full(n_nodes, -1, np.int64), network, ledger.catalog.node_enabled,
                       now_ms)
    gathered = _gather(ledger, network, reqs, now_ms)
    batch = gathered.batch
    n_lines = batch.n_lines
    line_ids = [line_id for req in reqs for line_id, _, _ in req.lines]
    current = np.zeros((n_lines, n_nodes), np.int64)
    held = np.zeros_like(gathered.avail)
    for o, req in enumerate(reqs):
        start = int(batch.line_start[o])
        index = {line_id: start + j for j, (line_id, _, _) in enumerate(req.lines)}
        for line_id, node, qty in takes[req.spec.order_id]:
            k = index[line_id]
            current[k, node] += qty
            held[batch.item_u[k], node] += qty
    # Sale floors differ by channel: the open orders together may use what is above the
    # highest floor any of them sees (and at least what they hold already).
    floor = np.zeros_like(gathered.avail)
    np.maximum.at(floor, batch.item_u, batch.item_floor)
    supply = np.maximum(gathered.avail - floor, 0) + held
    capacity = np.full(n_nodes, -1, np.int64)
    left = capacity_left(ledger, book, now_ms)
    finite = [n for n in range(n_nodes) if left[n] < UNLIMITED_CAPACITY // 2]
    if finite:
        # The slots the problem's own orders hold on the day a new plan ships (what
        # capacity_left counts): a re-plan gives them back. One held on another day (an
        # order allocated yesterday, not yet released) frees none of today's.
        today = now_ms // DAY_MS
        counted = [{today} if day == SHIPS_TODAY else {today + 1} if day == SHIPS_TOMORROW
                   else {today, today + 1} for day in ship_days(ledger, now_ms)]
        mine = np.zeros(n_nodes, np.int64)
        for req in reqs:
            for node in {n for n, day in slots[req.spec.order_id] if day in counted[n]}:
                mine[node] += 1
        for n in finite:
            capacity[n] = max(int(left[n]), 0) + int(mine[n])
    # The current plans valued as the candidates will be: at today's cost model, not at
    # the costs stored when they were decided (see cost_today).
    current_costs = [cost_today(ledger, network, gathered, o, req, lives[req.spec.order_id])
                     for o, req in enumerate(reqs)]
    batch.item_floor = np.zeros((n_lines, n_nodes), np.int64)
    order_ids = [req.spec.order_id for req in reqs]
    return Problem(
        order_ids, [versions[o] for o in order_ids], line_ids, batch,
        np.array(gathered.skus, np.int64), supply, current,
        np.array(current_costs, np.int64),
        np.array([counts[o][0] for o in order_ids], np.int64),
        np.array([counts[o][1] for o in order_ids], np.int64),
        capacity, network, ledger.catalog.node_enabled.copy(), now_ms)


@dataclass(slots=True)
class Candidates:
    """Plans per order, contiguous by order, the current plan first. A plan is its cost,
    its package count, its backordered units and its takes (line, node, units)."""

    order: np.ndarray
    cost: np.ndarray
    packages: np.ndarray
    backorder: np.ndarray
    take_start: np.ndarray  # [c + 1] into take_line / take_node / take_qty
    take_line: np.ndarray
    take_node: np.ndarray
    take_qty: np.ndarray
    # Whole plans (kernel runs on the pooled stock): per order its candidate, -1 where the
    # run could not serve the order in full.
    plans: list[np.ndarray] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.order)

    def first(self) -> np.ndarray:
        """Index of each order's first (current) plan."""
        if not len(self.order):
            return np.zeros(0, np.int64)
        return np.flatnonzero(np.r_[True, self.order[1:] != self.order[:-1]])

    def objective(self, extra_package_micros: int = 0) -> np.ndarray:
        """What the solver minimises: landed cost, a penalty per backordered unit and the
        extra weight per package beyond an order's first. The penalty and the weight are
        each read as at most COST_CAP, as the cost is: a plan's objective < 3 x COST_CAP."""
        out: np.ndarray = (self.cost + _saturated(self.backorder, BACKORDER_PENALTY)
                           + _saturated(np.maximum(self.packages - 1, 0), extra_package_micros))
        return out


def _saturated(count: np.ndarray, rate: int) -> np.ndarray:
    """count * rate (counts >= 0), or COST_CAP where that is more (never overflowing)."""
    if not rate:
        return np.zeros(len(count), np.int64)
    out: np.ndarray = np.where(count > COST_CAP // rate, COST_CAP,
                               np.minimum(count, COST_CAP // rate) * rate)
    return out


def _landed(cost: np.ndarray, packages: np.ndarray, extra_package_micros: int,
            charged: np.ndarray | None = None) -> np.ndarray:
    """A kernel run's order costs less what the run added to them (the extra weight of
    each package beyond the first, `charged` prices on units): their landed costs. A cost
    the kernel read as COST_CAP (saturated) stays COST_CAP: the true one was at least
    that, less the additions is not known, so it is not made to look cheaper."""
    landed = cost - _saturated(np.maximum(packages - 1, 0), extra_package_micros)
    if charged is not None:
        landed = landed - charged
    out: np.ndarray = np.where(cost >= COST_CAP, COST_CAP, landed)
    return out


@dataclass(slots=True)
class _Proposals:
    order: list[np.ndarray] = field(default_factory=list)
    cost: list[np.ndarray] = field(default_factory=list)
    packages: list[np.ndarray] = field(default_factory=list)
    backorder: list[np.ndarray] = field(default_factory=list)
    counts: list[np.ndarray] = field(default_factory=list)  # takes per proposal
    line: list[np.ndarray] = field(default_factory=list)
    node: list[np.ndarray] = field(default_factory=list)
    qty: list[np.ndarray] = field(default_factory=list)
    whole: list[int] = field(default_factory=list)  # groups that are whole plans

    def add(self, order: np.ndarray, cost: np.ndarray, packages: np.ndarray,
            backorder: np.ndarray, counts: np.ndarray, line: np.ndarray, node: np.ndarray,
            qty: np.ndarray) -> None:
        self.order.append(order)
        self.cost.append(cost)
        self.packages.append(packages)
        self.backorder.append(backorder)
        self.counts.append(counts)
        self.line.append(line)
        self.node.append(node)
        self.qty.append(qty)


def _run(problem: Problem, avail: np.ndarray) -> BatchResult:
    unlimited = np.full(len(problem.node_enabled), UNLIMITED_CAPACITY, np.int64)
    return run_allocation(problem.batch, avail, unlimited, problem.network,
                          problem.node_enabled)


def _harvest(problem: Problem, result: BatchResult, out: _Proposals,
             prices: np.ndarray | None = None, whole: bool = False) -> None:
    """Every fully allocated order of a kernel run becomes a proposal; `prices` [u, n] the
    run added to its unit costs come off again (a proposal carries its real cost)."""
    ok = np.flatnonzero(result.status == STATUS_ALLOCATED)
    if whole:
        out.whole.append(len(out.order))
    if not len(ok):
        out.add(ok, ok, ok, ok, ok, ok, ok, ok)
        return
    first = result.piece_first[ok]
    count = result.piece_count[ok]
    pieces = np.concatenate([np.arange(a, a + b) for a, b in zip(first.tolist(),
                                                                 count.tolist(), strict=True)])
    line = result.piece_line[pieces]
    node = result.pkg_node[result.piece_pkg[pieces]]
    qty = result.piece_qty[pieces]
    charged = None
    if prices is not None:
        # (Exact for an order whose cost is below COST_CAP: they are part of it. Only those
        # of a saturated cost may wrap, and _landed does not use them.)
        charged = np.add.reduceat(prices[problem.batch.item_u[line], node] * qty,
                                  np.r_[0, np.cumsum(count)[:-1]])
    cost = _landed(result.cost[ok], result.pkg_count[ok], problem.extra_package_micros,
                   charged)
    out.add(ok, cost, result.pkg_count[ok], np.zeros(len(ok), np.int64), count, line, node, qty)


def add_priced(problem: Problem, out: _Proposals, prices: np.ndarray,
               scales: tuple[float, ...], stop: Callable[[], bool] = lambda: False) -> None:
    """Whole plans from the kernel on the pooled stock with a price on every unit of scarce
    stock (scaled Lagrange multipliers): each order, in priority order, takes its cheapest
    plan at those prices, which leaves the contested units to the orders that need them.
    `stop()` turning true leaves the scales not yet run out."""
    batch = problem.batch
    for scale in scales:
        if stop():
            break
        # (At most COST_CAP a unit: a price past it makes the unit's plans saturate anyway,
        # and a float past int64 would not convert.)
        charge = np.rint(np.minimum(prices * scale, COST_CAP)).astype(np.int64)
        priced = dataclasses.replace(batch, item_unit_extra=batch.item_unit_extra
                                     + charge[batch.item_u])
        unlimited = np.full(len(problem.node_enabled), UNLIMITED_CAPACITY, np.int64)
        result = run_allocation(priced, problem.supply.copy(), unlimited, problem.network,
                                problem.node_enabled)
        _harvest(problem, result, out, charge, whole=True)


def propose(problem: Problem, nodes_per_order: int = 6) -> _Proposals:
    """The plans the solver chooses from (see the module docstring)."""
    batch = problem.batch
    n_orders = problem.n_orders
    n_nodes = problem.supply.shape[1]
    line_order = np.repeat(np.arange(n_orders), batch.line_end - batch.line_start)
    out = _Proposals()
    # The current plans (valued at today's costs by collect).
    k_idx, n_idx = np.nonzero(problem.current_take)
    counts = np.bincount(line_order[k_idx], minlength=n_orders)
    out.add(np.arange(n_orders), problem.current_cost, problem.current_packages,
            problem.current_backorder, counts, k_idx, n_idx, problem.current_take[k_idx, n_idx])
    stocked = problem.supply > 0
    # Ship complete from one node: cost per (order, node), then the cheapest few.
    single_cost = np.full((n_orders, n_nodes), -1, np.int64)
    single_pkgs = np.zeros((n_orders, n_nodes), np.int64)
    for n in range(n_nodes):
        if not problem.node_enabled[n] or not stocked[:, n].any():
            continue
        avail = np.zeros_like(problem.supply)
        avail[:, n] = np.where(problem.supply[:, n] > 0, BIG_STOCK, 0)
        result = _run(problem, avail)
        ok = result.status == STATUS_ALLOCATED
        single_cost[ok, n] = _landed(result.cost[ok], result.pkg_count[ok],
                                     problem.extra_package_micros)
        single_pkgs[ok, n] = result.pkg_count[ok]
    # A node is only worth proposing if it holds enough of every line in all.
    need = batch.item_qty[:, None] <= problem.supply[batch.item_u]
    enough = np.logical_and.reduceat(need, batch.line_start, axis=0)
    single_cost[~enough] = -1
    ranked = np.where(single_cost >= 0, single_cost, np.iinfo(np.int64).max)
    order_by_cost = np.argsort(ranked, axis=1, kind="stable")[:, :nodes_per_order]
    for j in range(order_by_cost.shape[1]):
        nodes = order_by_cost[:, j]
        rows = np.flatnonzero(single_cost[np.arange(n_orders), nodes] >= 0)
        if not len(rows):
            continue
        lines_per = (batch.line_end - batch.line_start)[rows]
        line = np.concatenate([np.arange(a, b) for a, b in zip(
            batch.line_start[rows].tolist(), batch.line_end[rows].tolist(), strict=True)])
        out.add(rows, single_cost[rows, nodes[rows]], single_pkgs[rows, nodes[rows]],
                np.zeros(len(rows), np.int64), lines_per, line,
                np.repeat(nodes[rows], lines_per), batch.item_qty[line])
    # The best plan were stock no object (wherever the SKU is stocked at all).
    _harvest(problem, _run(problem, np.where(stocked, BIG_STOCK, 0)), out)
    # Myopic again, in priority order, on the pooled stock: a whole plan.
    _harvest(problem, _run(problem, problem.supply.copy()), out, whole=True)
    return out


def _assemble(out: _Proposals, n_orders: int) -> Candidates:
    """Proposals to candidates: duplicates (same takes) dropped, the current plan first;
    the groups that are whole plans also remembered as such."""
    order = np.concatenate(out.order)
    counts = np.concatenate(out.counts)
    starts = np.r_[0, np.cumsum(counts)]
    line = np.concatenate(out.line)
    node = np.concatenate(out.node)
    qty = np.concatenate(out.qty)
    cost = np.concatenate(out.cost)
    # Fingerprint each plan by its takes.
    key = (line.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
           + node.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
           + qty.astype(np.uint64) * np.uint64(0x94D049BB133111EB))
    key ^= key >> np.uint64(29)
    summed = np.zeros(len(order), np.uint64)
    nonempty = counts > 0
    if len(key):
        summed[nonempty] = np.add.reduceat(key, starts[:-1][nonempty])
    # One fingerprint per (order, takes); the first proposal of each is kept, and kept
    # candidates are grouped by order in proposal order (the current plan first).
    signature = summed ^ (order.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93))
    _, first_of, group = np.unique(signature, return_index=True, return_inverse=True)
    rank = np.lexsort((first_of, order[first_of]))
    keep_arr = first_of[rank]
    position = np.empty(len(first_of), np.int64)  # fingerprint group -> candidate id
    position[rank] = np.arange(len(rank))
    new_counts = counts[keep_arr]
    new_starts = np.r_[0, np.cumsum(new_counts)]
    take_index = (np.repeat(starts[keep_arr] - new_starts[:-1], new_counts)
                  + np.arange(int(new_starts[-1])))
    group_start = np.r_[0, np.cumsum([len(g) for g in out.order])]
    plans = []
    for g in out.whole:
        plan = np.full(n_orders, -1, np.int64)
        members = np.arange(int(group_start[g]), int(group_start[g + 1]))
        plan[order[members]] = position[group[members]]
        plans.append(plan)
    return Candidates(
        order[keep_arr], cost[keep_arr], np.concatenate(out.packages)[keep_arr],
        np.concatenate(out.backorder)[keep_arr], new_starts,
        line[take_index], node[take_index], qty[take_index], plans)


# ---- the model: resources, components, chunks -------------------------------------------


@dataclass(slots=True)
class Model:
    """Candidates with their use of each scarce resource (SKU x node stock, node capacity)."""

    cands: Candidates
    objective: np.ndarray  # [c]
    use_cand: np.ndarray  # (candidate, resource, units) entries, binding resources only
    use_res: np.ndarray
    use_qty: np.ndarray
    limit: np.ndarray  # [resource] units available to the open orders
    n_orders: int


def build_model(problem: Problem, cands: Candidates) -> Model:
    """The candidates' objective and their use of the resources that can run short."""
    n_nodes = problem.supply.shape[1]
    n_stock = problem.supply.size
    take_cand = np.repeat(np.arange(cands.n), np.diff(cands.take_start))
    resource = problem.batch.item_u[cands.take_line] * n_nodes + cands.take_node
    limit = problem.supply.reshape(-1).astype(np.int64)
    entries_c = [take_cand]
    entries_r = [resource]
    entries_q = [cands.take_qty]
    finite = np.flatnonzero(problem.capacity >= 0)
    if len(finite):
        # Node capacity (orders a day): a plan uses one slot of every node it ships from.
        uses = np.unique(take_cand * n_nodes + cands.take_node)
        c_of, n_of = uses // n_nodes, uses % n_nodes
        capped = np.isin(n_of, finite)
        entries_c.append(c_of[capped])
        entries_r.append(n_stock + n_of[capped])
        entries_q.append(np.ones(int(capped.sum()), np.int64))
        limit = np.r_[limit, np.where(problem.capacity >= 0, problem.capacity, BIG_STOCK)]
    use_c = np.concatenate(entries_c)
    use_r = np.concatenate(entries_r)
    use_q = np.concatenate(entries_q)
    # Merge duplicate (candidate, resource) entries.
    key = use_c * len(limit) + use_r
    uniq, inverse = np.unique(key, return_inverse=True)
    qty = np.bincount(inverse, weights=use_q).astype(np.int64)
    use_c, use_r = uniq // len(limit), uniq % len(limit)
    # A resource binds only if the orders could want more of it than there is.
    owner = cands.order[use_c]
    pair = owner * len(limit) + use_r
    order_pair = np.argsort(pair, kind="stable")
    pair_sorted = pair[order_pair]
    bounds = np.flatnonzero(np.r_[True, pair_sorted[1:] != pair_sorted[:-1]])
    demand: np.ndarray = np.zeros(len(limit))
    if len(qty):
        most = np.maximum.reduceat(qty[order_pair], bounds)
        demand = np.bincount(use_r[order_pair][bounds], weights=most, minlength=len(limit))
    binding = demand > limit
    mask = binding[use_r]
    return Model(cands, cands.objective(problem.extra_package_micros), use_c[mask],
                 use_r[mask], qty[mask], limit,
                 problem.n_orders)


def components(model: Model) -> list[np.ndarray]:
    """Orders linked through binding resources, each group sorted; singletons included."""
    parent = list(range(model.n_orders))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    owners = model.cands.order[model.use_cand]
    first_owner: dict[int, int] = {}
    for r, o in zip(model.use_res.tolist(), owners.tolist(), strict=True):
        other = first_owner.setdefault(r, o)
        if other != o:
            a, b = find(o), find(other)
            if a != b:
                parent[a] = b
    roots = np.array([find(o) for o in range(model.n_orders)], np.int64)
    order = np.argsort(roots, kind="stable")
    cuts = np.flatnonzero(np.r_[True, roots[order][1:] != roots[order][:-1]])
    return [np.sort(group) for group in np.split(order, cuts[1:])] if model.n_orders else []


@dataclass(slots=True)
class Chunk:
    """A sub-problem: its orders' candidates, the binding resources they use and a budget
    for each (the whole limit when no other chunk uses it)."""

    cand_ids: np.ndarray  # global candidate ids, grouped by order
    cand_order: np.ndarray  # local order index per candidate
    objective: np.ndarray
    use_cand: np.ndarray  # local candidate index
    use_res: np.ndarray  # local resource index
    use_qty: np.ndarray
    budget: np.ndarray  # [local resource]
    hint: np.ndarray  # local candidate index per local order
    whole: bool  # the chunk holds whole components: its optimum is final


def _chunk(model: Model, orders: np.ndarray, chosen: np.ndarray, budget_of: np.ndarray,
           whole: bool) -> Chunk:
    cands = model.cands
    first = cands.first()
    ends = np.r_[first[1:], cands.n]
    ids = np.concatenate([np.arange(first[o], ends[o]) for o in orders.tolist()])
    local = np.full(cands.n, -1, np.int64)
    local[ids] = np.arange(len(ids))
    mask = local[model.use_cand] >= 0
    res = model.use_res[mask]
    res_ids, res_local = np.unique(res, return_inverse=True)
    order_local = np.full(model.n_orders, -1, np.int64)
    order_local[orders] = np.arange(len(orders))
    return Chunk(ids, order_local[cands.order[ids]], model.objective[ids],
                 local[model.use_cand[mask]], res_local, model.use_qty[mask],
                 budget_of[res_ids], local[chosen[orders]], whole)


def usage(model: Model, chosen: np.ndarray) -> np.ndarray:
    """Units of each resource the chosen plans use."""
    picked = np.zeros(model.cands.n, np.bool_)
    picked[chosen] = True
    mask = picked[model.use_cand]
    return np.bincount(model.use_res[mask], weights=model.use_qty[mask],
                       minlength=len(model.limit)).astype(np.int64)


def chunks(model: Model, groups: list[np.ndarray], chosen: np.ndarray,
           size: int) -> list[Chunk]:
    """Whole components packed together into chunks of about `size` orders."""
    out: list[Chunk] = []
    pack: list[np.ndarray] = []
    packed = 0
    for group in sorted(groups, key=len):
        if packed + len(group) > size and pack:
            out.append(_chunk(model, np.concatenate(pack), chosen, model.limit, True))
            pack, packed = [], 0
        pack.append(group)
        packed += len(group)
    if pack:
        out.append(_chunk(model, np.concatenate(pack), chosen, model.limit, True))
    return out


class Neighbourhoods:
    """Orders that compete for the same resources, found breadth first from a seed order
    through the resources it may use and the orders that may use them (the neighbourhoods
    of a large-neighbourhood search)."""

    def __init__(self, model: Model) -> None:
        n_res = len(model.limit)
        owner = model.cands.order[model.use_cand]
        pairs = np.unique(owner * n_res + model.use_res)
        by_order_o, by_order_r = pairs // n_res, pairs % n_res
        self.order_ptr = np.searchsorted(by_order_o, np.arange(model.n_orders + 1)).tolist()
        self.order_res = by_order_r.tolist()
        sort = np.argsort(by_order_r, kind="stable")
        self.res_orders = by_order_o[sort].tolist()
        self.res_ptr = np.searchsorted(by_order_r[sort], np.arange(n_res + 1)).tolist()

    def around(self, seed: int, size: int, rng: np.random.Generator) -> np.ndarray:
        piece = [seed]
        taken = {seed}
        expanded: set[int] = set()
        head = 0
        while head < len(piece) and len(piece) < size:
            o = piece[head]
            head += 1
            resources = self.order_res[self.order_ptr[o]:self.order_ptr[o + 1]]
            for r in rng.permutation(resources).tolist() if len(resources) > 1 else resources:
                if r in expanded:
                    continue
                expanded.add(r)
                others = self.res_orders[self.res_ptr[r]:self.res_ptr[r + 1]]
                if len(others) > size:
                    others = rng.choice(others, size, replace=False).tolist()
                for other in others:
                    if other not in taken:
                        taken.add(other)
                        piece.append(other)
                        if len(piece) >= size:
                            break
                if len(piece) >= size:
                    break
        return np.sort(np.array(piece, np.int64))


# ---- solving a chunk with CP-SAT ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChunkResult:
    choice: np.ndarray  # local candidate per local order
    optimal: bool
    objective: int


def solve_chunk(chunk: Chunk, time_limit_s: float, seed: int, workers: int = 1,
                stop: Callable[[], bool] | None = None) -> ChunkResult:
    """The chunk's best choice within the time limit, never worse than its hint. `stop()`
    turning true ends the search under way with the best choice found so far."""
    from ortools.sat.python import cp_model  # noqa: PLC0415 (worker processes need only this)

    n_orders = len(chunk.hint)
    if stop is not None and stop():
        return ChunkResult(chunk.hint.copy(), False, int(np.sum(chunk.objective[chunk.hint])))
    model = cp_model.CpModel()
    x = [model.NewBoolVar("") for _ in range(len(chunk.cand_ids))]
    bounds = np.flatnonzero(np.r_[True, chunk.cand_order[1:] != chunk.cand_order[:-1]])
    ends = np.r_[bounds[1:], len(chunk.cand_ids)]
    for a, b in zip(bounds.tolist(), ends.tolist(), strict=True):
        model.AddExactlyOne(x[a:b])
    if len(chunk.use_res):
        order = np.argsort(chunk.use_res, kind="stable")
        res = chunk.use_res[order]
        cuts = np.flatnonzero(np.r_[True, res[1:] != res[:-1]])
        cut_ends = np.r_[cuts[1:], len(res)]
        cand = chunk.use_cand[order].tolist()
        qty = chunk.use_qty[order].tolist()
        for a, b in zip(cuts.tolist(), cut_ends.tolist(), strict=True):
            r = int(res[a])
            model.Add(cp_model.LinearExpr.WeightedSum([x[c] for c in cand[a:b]], qty[a:b])
                      <= int(chunk.budget[r]))
    # Costs in micros are mostly whole cents: dividing by their common factor keeps the
    # solver's numbers small without changing the optimum.
    unit = int(np.gcd.reduce(chunk.objective)) or 1
    model.Minimize(cp_model.LinearExpr.WeightedSum(x, (chunk.objective // unit).tolist()))
    hint = np.zeros(len(x), np.bool_)
    hint[chunk.hint] = True
    for var, value in zip(x, hint.tolist(), strict=True):
        model.AddHint(var, int(value))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_limit_s, 0.05)
    solver.parameters.num_workers = max(workers, 1)
    solver.parameters.random_seed = seed
    status: Any = _search_until_stopped(solver, model, stop)
    optimal = bool(status == cp_model.OPTIMAL)
    if not optimal and status != cp_model.FEASIBLE:
        return ChunkResult(chunk.hint.copy(), False, int(np.sum(chunk.objective[chunk.hint])))
    values = np.array([solver.BooleanValue(v) for v in x], np.bool_)
    choice = np.zeros(n_orders, np.int64)
    picked = np.flatnonzero(values)
    choice[chunk.cand_order[picked]] = picked
    best = int(np.sum(chunk.objective[choice]))
    incumbent = int(np.sum(chunk.objective[chunk.hint]))
    if best > incumbent:  # never worse than where the chunk started
        return ChunkResult(chunk.hint.copy(), optimal, incumbent)
    return ChunkResult(choice, optimal, best)


def _search_until_stopped(solver: Any, model: Any, stop: Callable[[], bool] | None) -> Any:
    """`solver.Solve(model)`, ended early once `stop()` turns true. CP-SAT checks no
    callable of ours while it searches (a solution callback runs only when it finds a
    solution, which may not happen for minutes); its StopSearch ends a search from another
    thread, so a thread of its own looks at `stop()` while this one searches."""
    if stop is None:
        return solver.Solve(model)
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(STOP_POLL_S):
            if stop():
                # Asked at every look until the search has ended: asked before the search
                # has begun, StopSearch finds none to stop.
                solver.StopSearch()

    watcher = threading.Thread(target=watch, name="reopt-stop", daemon=True)
    watcher.start()
    try:
        return solver.Solve(model)
    finally:
        finished.set()
        watcher.join()


#: In a worker process of a solve's chunk pool: the event that solve sets when it is
#: stopped (given to each process as it starts: see `_pool_started`).
_POOL_STOP: multiprocessing.synchronize.Event | None = None


def _pool_started(stop: multiprocessing.synchronize.Event) -> None:
    """Initializer of the chunk pool's processes. The event comes with the process (a
    lock or event reaches a spawned process only that way, not with each chunk)."""
    global _POOL_STOP
    _POOL_STOP = stop


def _solve_pooled(chunk: Chunk, time_limit_s: float, seed: int) -> ChunkResult:
    """`solve_chunk` in a worker process, stopped with the solve that sent the chunk."""
    return solve_chunk(chunk, time_limit_s, seed,
                       stop=_POOL_STOP.is_set if _POOL_STOP is not None else None)


# ---- the lower bound ---------------------------------------------------------------------


def lower_bound(model: Model, upper: int, iterations: int = 300,
                until: float = float("inf"), stop: Callable[[], bool] = lambda: False) -> int:
    return int(np.floor(_lagrangian(model, upper, iterations, until, stop)[0]))


def _lagrangian(model: Model, upper: int, iterations: int, until: float = float("inf"),
                stop: Callable[[], bool] = lambda: False) -> tuple[float, np.ndarray]:
    """Lagrangian bound: relax stock and capacity with prices >= 0 and let each order
    take its cheapest plan at those prices. Every price vector gives a valid bound on the
    optimum (of the LP relaxation too); subgradient steps (Polyak) search for a good one
    until `until` or `stop()` (the best found so far is as valid)."""
    cands = model.cands
    first = cands.first()
    objective = model.objective.astype(np.float64)
    limit = model.limit.astype(np.float64)
    prices = np.zeros(len(limit))
    best_prices = prices.copy()
    best = float(np.sum(np.minimum.reduceat(objective, first))) if cands.n else 0.0
    scale = 2.0
    stall = 0
    for _ in range(iterations):
        if time.monotonic() > until or stop():
            break
        priced = objective + np.bincount(model.use_cand, weights=prices[model.use_res]
                                         * model.use_qty, minlength=cands.n)
        per_order = np.minimum.reduceat(priced, first)
        value = float(per_order.sum() - prices @ limit)
        if value > best + 1e-6:
            best, best_prices, stall = value, prices.copy(), 0
        else:
            stall += 1
            if stall >= 20:
                scale /= 2
                stall = 0
        # The cheapest plan per order at these prices, and the resources it over-uses.
        is_min = priced <= np.repeat(per_order, np.diff(np.r_[first, cands.n])) + 1e-9
        idx = np.flatnonzero(is_min)
        owner = cands.order[idx]
        pick = idx[np.r_[True, owner[1:] != owner[:-1]]]
        taken = np.zeros(cands.n, np.bool_)
        taken[pick] = True
        mask = taken[model.use_cand]
        grad = np.bincount(model.use_res[mask], weights=model.use_qty[mask],
                           minlength=len(limit)) - limit
        grad[(prices <= 0) & (grad < 0)] = 0.0  # projected: free resources stay free
        norm = float(grad @ grad)
        if norm == 0 or scale < 1e-6:
            break
        step = scale * max(upper - value, 1.0) / norm
        prices = np.maximum(prices + step * grad, 0.0)
    return best, best_prices


# ---- orchestration -------------------------------------------------------------------------


@dataclass(slots=True)
class Progress:
    phase: str  # "candidates", "solving", "bound", "done"
    detail: str
    done: int = 0
    total: int = 0
    objective: int = 0


@dataclass(slots=True)
class Solution:
    problem: Problem
    cands: Candidates
    chosen: np.ndarray  # global candidate per order
    old_objective: int
    new_objective: int
    lower_bound: int
    components: int
    chunks_solved: int
    chunks_optimal: int
    rounds: int
    elapsed_s: float

    def changed(self) -> np.ndarray:
        """Orders whose chosen plan is not their current one."""
        return np.flatnonzero(self.chosen != self.cands.first())

    def takes(self, o: int) -> list[tuple[int, int, int]]:
        """(batch line, node, units) of order o's chosen plan."""
        c = int(self.chosen[o])
        a, b = int(self.cands.take_start[c]), int(self.cands.take_start[c + 1])
        return list(zip(self.cands.take_line[a:b].tolist(), self.cands.take_node[a:b].tolist(),
                        self.cands.take_qty[a:b].tolist(), strict=True))

    def totals(self, which: str, applied: Iterable[str] | None = None
               ) -> tuple[int, int, int]:
        """(shipping micros, packages, backordered units) of the current or new plans; the
        new with only the orders `applied` on theirs, when given (the others kept the
        current plans: changed meanwhile, or no longer fitting)."""
        picks = self.cands.first() if which == "old" else self.chosen
        if applied is not None and which != "old":
            index = {order_id: o for o, order_id in enumerate(self.problem.order_ids)}
            picks = self.cands.first().copy()
            for order_id in applied:
                o = index[order_id]
                picks[o] = self.chosen[o]
        return (int(self.cands.cost[picks].sum()), int(self.cands.packages[picks].sum()),
                int(self.cands.backorder[picks].sum()))


@dataclass(slots=True)
class _ChunkPool:
    """Worker processes solving chunks, and the event that stops the chunks they solve."""

    executor: cf.ProcessPoolExecutor
    stopped: multiprocessing.synchronize.Event

    @classmethod
    def start(cls, workers: int) -> _ChunkPool:
        context = multiprocessing.get_context("spawn")
        stopped = context.Event()
        return cls(cf.ProcessPoolExecutor(workers, mp_context=context,
                                          initializer=_pool_started, initargs=(stopped,)),
                   stopped)

    def close(self) -> None:
        """Stop the chunks still solving, then the processes (which waits for those chunks:
        stopped, they end at once)."""
        self.stopped.set()
        self.executor.shutdown(cancel_futures=True)


def _solve_all(todo: list[Chunk], limit: float, seed: int, pool: _ChunkPool | None,
               deadline: float, report: Callable[[int], None],
               stop: Callable[[], bool] = lambda: False) -> list[ChunkResult | None]:
    """Solve the chunks (None for those the deadline left unsolved: they keep their plans).
    `stop()` turning true starts no more and stops those under way."""
    out: list[ChunkResult | None] = [None] * len(todo)
    if pool is None:
        for i, chunk in enumerate(todo):
            left = deadline - time.monotonic()
            if left <= 0 or stop():
                break
            out[i] = solve_chunk(chunk, min(limit, left), seed, stop=stop)
            report(i + 1)
        return out
    # A few chunks in flight per worker: no chunk starts after the deadline.
    in_flight: dict[cf.Future[ChunkResult], int] = {}
    next_chunk = done = 0
    while next_chunk < len(todo) or in_flight:
        while (next_chunk < len(todo) and len(in_flight) < 8
               and deadline - time.monotonic() > 0 and not stop()):
            left = deadline - time.monotonic()
            in_flight[pool.executor.submit(_solve_pooled, todo[next_chunk], min(limit, left),
                                           seed)] = next_chunk
            next_chunk += 1
        if not in_flight:
            break
        # Not waiting for a chunk to end before looking at stop(): one may search for as
        # long as the whole time limit. Stopped, those under way end with what they have.
        finished, _ = cf.wait(in_flight, timeout=STOP_POLL_S, return_when=cf.FIRST_COMPLETED)
        if stop():
            pool.stopped.set()
        for future in finished:
            out[in_flight.pop(future)] = future.result()
            done += 1
            report(done)
    return out


@dataclass(slots=True)
class _Lists:
    """A model's arrays as Python lists, for moves that touch a few elements at a time."""

    first: list[int]  # [o] the order's first plan; its plans run to ends[o]
    ends: list[int]
    cheapest: np.ndarray  # [o] objective of the order's cheapest plan
    use_ptr: list[int]  # [c + 1] into use_res / use_qty
    use_res: list[int]
    use_qty: list[int]
    free: list[int]  # [resource] units the chosen plans leave

    @classmethod
    def of(cls, model: Model, chosen: np.ndarray) -> _Lists:
        cands = model.cands
        first = cands.first()
        return cls(first.tolist(), np.r_[first[1:], cands.n].tolist(),
                   np.minimum.reduceat(model.objective, first),
                   np.searchsorted(model.use_cand, np.arange(cands.n + 1)).tolist(),
                   model.use_res.tolist(), model.use_qty.tolist(),
                   (model.limit - usage(model, chosen)).tolist())


def _furthest_first(model: Model, chosen: np.ndarray, cheapest: np.ndarray,
                    deadline: float, stop: Callable[[], bool]) -> Iterator[int]:
    """Orders above their cheapest plan, furthest above first, while time is left (and
    until `stop()`)."""
    excess = model.objective[chosen] - cheapest
    above = np.flatnonzero(excess > 0)
    for o in above[np.argsort(-excess[above], kind="stable")].tolist():
        if time.monotonic() > deadline or stop():
            return
        yield o


def _one_moves(model: Model, chosen: np.ndarray, deadline: float,
               stop: Callable[[], bool] = lambda: False) -> int:
    """Move each order to its cheapest plan that fits the stock the others leave free
    (the orders furthest above their cheapest plan first), until no order moves (or the
    deadline, or `stop()`): quick gains a time-limited neighbourhood search may not reach.
    Updates `chosen`; returns the moves made. Every move lowers the objective and keeps
    every limit."""
    at = _Lists.of(model, chosen)
    use_ptr, use_res, use_qty, free = at.use_ptr, at.use_res, at.use_qty, at.free
    objective = model.objective
    moves = 0
    while time.monotonic() < deadline and not stop():
        moved = False
        for o in _furthest_first(model, chosen, at.cheapest, deadline, stop):
            current = int(chosen[o])
            a, b = at.first[o], at.ends[o]
            options = np.arange(a, b)[objective[a:b] < objective[current]]
            if not len(options):
                continue
            mine = {use_res[k]: use_qty[k] for k in range(use_ptr[current],
                                                          use_ptr[current + 1])}
            for cand in options[np.argsort(objective[options], kind="stable")].tolist():
                span = range(use_ptr[cand], use_ptr[cand + 1])
                if all(use_qty[k] <= free[use_res[k]] + mine.get(use_res[k], 0)
                       for k in span):
                    for r, q in mine.items():
                        free[r] += q
                    for k in span:
                        free[use_res[k]] -= use_qty[k]
                    chosen[o] = cand
                    moves += 1
                    moved = True
                    break
        if not moved:
            break
    return moves


def _local_moves(model: Model, chosen: np.ndarray, deadline: float,
                 stop: Callable[[], bool] = lambda: False) -> int:
    """Single-order moves (quickly, in bulk), then chains of moves until none is found
    (or the deadline, or `stop()`). A chain may be a single move: when they end, neither
    finds one."""
    return (_one_moves(model, chosen, deadline, stop)
            + _chain_moves(model, chosen, deadline, stop=stop))


def _chain_moves(model: Model, chosen: np.ndarray, deadline: float, depth: int = 4,
                 width: int = 4, first_width: int = 24, evaluations: int = 200,
                 stop: Callable[[], bool] = lambda: False) -> int:
    """Move an order to a cheaper plan that lacks some stock, together with a chain of
    orders that make room for it: a holder of what is lacking moves to another plan that
    frees it; if that plan lacks stock in turn, or the first holder freed too little, a
    holder of that moves too, up to `depth` holders. The chain is made when the moves
    together lower the objective and fit (every order's release counts for the others).

    Searched depth first, holders in the order they took the stock (at most `first_width`
    for what the order lacks, `width` further down; their plans cheapest first, none
    dearer than what is left of the gain), first with one holder, then deeper, at most
    `evaluations` plans tried for each plan of the order. The orders furthest above their
    cheapest plan are tried first, until the deadline or `stop()`. Updates `chosen`;
    returns the chains made. Every chain lowers the objective and keeps every limit."""
    at = _Lists.of(model, chosen)
    use_ptr, use_res, use_qty, free = at.use_ptr, at.use_res, at.use_qty, at.free
    first_l, ends_l = at.first, at.ends
    cost = model.objective.tolist()
    taken: dict[int, dict[int, int]] = {}
    ranked: dict[int, list[int]] = {}

    def takes(cand: int) -> dict[int, int]:
        got = taken.get(cand)
        if got is None:
            got = taken[cand] = {use_res[k]: use_qty[k]
                                 for k in range(use_ptr[cand], use_ptr[cand + 1])}
        return got

    def plans(o: int) -> list[int]:  # the order's plans, cheapest first
        got = ranked.get(o)
        if got is None:
            got = ranked[o] = sorted(range(first_l[o], ends_l[o]), key=cost.__getitem__)
        return got

    held: dict[int, dict[int, int]] = {}  # resource -> order -> units its plan takes
    for o, cand in enumerate(chosen.tolist()):
        for r, q in takes(cand).items():
            held.setdefault(r, {})[o] = q

    clock = 0  # chains made so far
    touched = [0] * len(free)  # resource -> the clock when a chain last changed it
    failed: dict[int, int] = {}  # order -> the clock when it last found no chain

    def switch(o: int, old: int, new: int) -> None:
        for r, q in takes(old).items():
            free[r] += q
            touched[r] = clock
            del held[r][o]
        for r, q in takes(new).items():
            free[r] -= q
            touched[r] = clock
            held.setdefault(r, {})[o] = q
        chosen[o] = new

    def unchanged(o: int, current: int) -> bool:
        """Nothing the order's cheaper plans take has changed since it last found no
        chain (a quick pass skips it; the pass that ends the search does not)."""
        since = failed.get(o)
        if since is None:
            return False
        for cand in plans(o):
            if cost[cand] >= cost[current]:
                return True
            if any(touched[r] > since for r in takes(cand)):
                return False
        return True

    change: dict[int, int] = {}  # resource -> units the chain so far frees (+) or takes (-)
    chain: list[tuple[int, int, int]] = []  # (order, from plan, to plan)
    busy: set[int] = set()
    left = [0]  # plans still to try for this plan of the order

    short: set[int] = set()  # resources the chain so far leaves lacking

    def shift(plan: dict[int, int], sign: int) -> None:
        for r, q in plan.items():
            d = change[r] = change.get(r, 0) + sign * q
            if free[r] + d < 0:
                short.add(r)
            else:
                short.discard(r)

    def room(budget: int, depth: int, width: int) -> bool:
        """Extend the chain until nothing is lacking, with moves costing under `budget`."""
        if not short:
            return True
        if not depth:
            return False
        r = min(short)
        tried = 0
        for other, units in held.get(r, {}).items():  # room() changes no holding
            if other in busy:
                continue
            tried += 1
            if tried > width:
                break
            theirs = int(chosen[other])
            for alt in plans(other):
                step = cost[alt] - cost[theirs]
                if step >= budget:
                    break
                if alt == theirs or takes(alt).get(r, 0) >= units:
                    continue  # frees nothing of what is lacking
                left[0] -= 1
                if left[0] < 0:
                    return False
                shift(takes(theirs), 1)
                shift(takes(alt), -1)
                chain.append((other, theirs, alt))
                busy.add(other)
                if room(budget - step, depth - 1, width):
                    return True
                busy.discard(other)
                chain.pop()
                shift(takes(alt), 1)
                shift(takes(theirs), -1)
        return False

    made = 0
    thorough = True  # the first pass tries every order; later ones only those with news
    while time.monotonic() < deadline and not stop():
        before = made
        for o in _furthest_first(model, chosen, at.cheapest, deadline, stop):
            current = int(chosen[o])
            if not thorough and unchanged(o, current):
                continue
            for cand in plans(o):
                gain = cost[current] - cost[cand]
                if gain <= 0:
                    failed[o] = clock
                    break
                found = False
                for levels in sorted({1, depth}):
                    change.clear()
                    short.clear()
                    chain[:] = [(o, current, cand)]
                    busy.clear()
                    busy.add(o)
                    shift(takes(current), 1)
                    shift(takes(cand), -1)
                    left[0] = evaluations
                    # Deeper down, fewer holders are tried.
                    if room(gain, levels, first_width if levels == 1 else width):
                        found = True
                        break
                if found:
                    clock += 1
                    for x, old, new in chain:
                        switch(x, old, new)
                    made += 1
                    break
        if made == before:
            if thorough:
                break
            thorough = True  # a quick pass found nothing: make sure with a full one
        else:
            thorough = False
    return made


def _search(model: Model, groups: list[np.ndarray], chosen: np.ndarray, deadline: float,
            options: ReoptOptions, rng: np.random.Generator,
            progress: Callable[[Progress], None],
            stop: Callable[[], bool] = lambda: False) -> tuple[int, int]:
    """Large-neighbourhood search over components too large for one model: a neighbourhood
    of competing orders is solved exactly with everything else fixed (it may use whatever
    stock the others leave), kept if cheaper; seeds are the orders whose plan costs more
    than their cheapest plan. Until the deadline or `stop()` (which stops a neighbourhood's
    search under way too). Updates `chosen`; returns (neighbourhoods solved, optimal)."""
    cands = model.cands
    cheapest = np.minimum.reduceat(model.objective, cands.first())
    use_ptr = np.searchsorted(model.use_cand, np.arange(cands.n + 1))
    members = np.concatenate(groups)
    hoods = Neighbourhoods(model)
    used = usage(model, chosen)

    def own(orders: np.ndarray) -> np.ndarray:
        picks = chosen[orders]
        idx = np.concatenate([np.arange(use_ptr[c], use_ptr[c + 1]) for c in picks.tolist()])
        return np.bincount(model.use_res[idx], weights=model.use_qty[idx],
                           minlength=len(model.limit)).astype(np.int64)

    solved = optimal = passes = 0
    reported = time.monotonic()
    while time.monotonic() < deadline - 0.02 and not stop():
        passes += 1
        seeds = members[model.objective[chosen[members]] > cheapest[members]]
        if not len(seeds):
            break
        improved = False
        for seed in rng.permutation(seeds).tolist():
            left = deadline - time.monotonic()
            if left <= 0.02 or stop():
                break
            if model.objective[chosen[seed]] == cheapest[seed]:
                continue  # a neighbour's move made this order cheapest already
            orders = hoods.around(seed, options.chunk_orders, rng)
            mine = own(orders)
            chunk = _chunk(model, orders, chosen, model.limit - used + mine, False)
            result = solve_chunk(chunk, min(1.0, left), int(rng.integers(1 << 30)),
                                 options.workers, stop)
            solved += 1
            optimal += int(result.optimal)
            before = int(model.objective[chosen[orders]].sum())
            if result.objective < before:
                chosen[orders] = chunk.cand_ids[result.choice]
                used += own(orders) - mine
                improved = True
            if time.monotonic() - reported > 0.5:  # at most two progress reports a second
                reported = time.monotonic()
                progress(Progress("solving", f"neighbourhoods, pass {passes}: {solved}", 0, 0,
                                  int(model.objective[chosen].sum())))
        if not improved:
            break
    return solved, optimal


def solve(problem: Problem, options: ReoptOptions,
          progress: Callable[[Progress], None] = lambda _: None,
          stop: Callable[[], bool] = lambda: False) -> Solution:
    """Choose a plan per order. Never worse than the current plans. `stop()` turning true
    ends the search early with the best plan so far (the caller gave up): every phase that
    runs for a share of the time limit looks at it, and a CP-SAT search under way, here or
    in a worker process, is stopped (within about STOP_POLL_S)."""
    started = time.monotonic()
    deadline = started + options.time_limit_s
    if not problem.n_orders:
        empty = np.zeros(0, np.int64)
        return Solution(problem, Candidates(empty, empty, empty, empty, np.zeros(1, np.int64),
                                            empty, empty, empty), empty, 0, 0, 0, 0, 0, 0, 0,
                        time.monotonic() - started)
    progress(Progress("candidates", f"proposing plans for {problem.n_orders} orders"))
    if not 0 <= options.extra_package_micros <= MAX_PACKAGE_MICROS:
        raise ValueError(f"extra_package_micros must be between 0 and {MAX_PACKAGE_MICROS}")
    problem = problem.searched(options.extra_package_micros)
    out = propose(problem, options.nodes_per_order)
    cands = _assemble(out, problem.n_orders)
    model = build_model(problem, cands)
    current = cands.first()
    old = int(model.objective[current].sum())
    for round_ in range(PRICE_ROUNDS):
        if time.monotonic() > started + options.time_limit_s * 0.3 or stop():
            break
        progress(Progress("candidates", f"pricing scarce stock, round {round_ + 1}"))
        _, prices = _lagrangian(model, old, 200,
                                time.monotonic() + options.time_limit_s * 0.05, stop)
        add_priced(problem, out, prices[:problem.supply.size].reshape(problem.supply.shape),
                   PRICE_SCALES, stop)
        cands = _assemble(out, problem.n_orders)
        model = build_model(problem, cands)
        current = cands.first()
    chosen = current.copy()
    # Start from the best whole plan that fits (orders a run could not serve keep theirs).
    for plan in cands.plans:
        whole_plan = np.where(plan >= 0, plan, current)
        if (model.objective[whole_plan].sum() < model.objective[chosen].sum()
                and np.all(usage(model, whole_plan) <= model.limit)):
            chosen = whole_plan
    progress(Progress("candidates", f"{cands.n} plans; best whole plan", objective=int(
        model.objective[chosen].sum())))
    groups = components(model)
    rng = np.random.default_rng(options.seed)
    pool = _ChunkPool.start(options.workers) if options.workers > 1 else None
    size = options.chunk_orders
    whole = [g for g in groups if len(g) <= size]
    large = [g for g in groups if len(g) > size]
    solved = optimal = rounds = 0
    try:
        if whole:
            # Independent components, packed into chunks, solved in parallel processes.
            rounds += 1
            todo = chunks(model, whole, chosen, size)
            in_whole = sum(len(g) for g in whole)
            share = (deadline - time.monotonic()) * in_whole / problem.n_orders
            per_chunk = share * max(options.workers, 1) / len(todo)
            value = int(model.objective[chosen].sum())
            results = _solve_all(
                todo, per_chunk, options.seed, pool, time.monotonic() + share,
                lambda done: progress(Progress("solving", "independent components", done,
                                               len(todo), value)), stop)
            for chunk, result in zip(todo, results, strict=True):
                if result is not None:
                    solved += 1
                    optimal += int(result.optimal)
                    global_orders = cands.order[chunk.cand_ids[chunk.hint]]
                    chosen[global_orders] = chunk.cand_ids[result.choice]
        # Moves of single orders, and chains of orders making room for one another,
        # first: quick gains, and a better start for the search.
        _local_moves(model, chosen, deadline - options.time_limit_s / 10, stop)
        if large:
            rounds += 1
            # The search leaves the last tenth of the time to those moves again and to the
            # lower bound.
            done, proved = _search(model, large, chosen, deadline - options.time_limit_s / 10,
                                   options, rng, progress, stop)
            solved += done
            optimal += proved
            progress(Progress("solving", "moves of single orders and chains", objective=int(
                model.objective[chosen].sum())))
            _local_moves(model, chosen, deadline - options.time_limit_s / 20, stop)
    finally:
        if pool is not None:
            pool.close()
    new = int(model.objective[chosen].sum())
    assert np.all(usage(model, chosen) <= model.limit)
    progress(Progress("bound", "lower bound (Lagrangian)", objective=new))
    bound = min(lower_bound(model, new, 300, max(deadline, time.monotonic() + 1.0), stop),
                new)
    return Solution(problem, cands, chosen, old, new, bound, len(groups), solved, optimal,
                    rounds, time.monotonic() - started)


def replans(solution: Solution) -> tuple[Replan, ...]:
    """The changed orders' plans, as the command that applies them takes them."""
    problem = solution.problem
    return tuple(
        Replan(problem.order_ids[o], problem.versions[o],
               tuple((problem.line_ids[k], n, q) for k, n, q in solution.takes(o)),
               int(problem.current_cost[o]))
        for o in solution.changed().tolist())
