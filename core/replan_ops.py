"""Applying re-optimised plans: one command, all the orders that are still as planned.

Each accepted order gives back the units of its current packages (ORDER_REPLANNED, then
ALLOCATED -> AVAILABLE) and takes its new plan (ORDER_ALLOCATED, AVAILABLE -> ALLOCATED)
in the same commit: every release first, then every take, so stock passed from one
order to another never dips below a sale floor on the way. The packages of a new plan
are built by the allocation kernel from exactly the plan's units (a row per order line),
so cost, carrier service and promise come from the same code as a real-time decision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from core import commands as c
from core.allocation import STATUS_ALLOCATED, run_allocation
from core.decisions import (
    UNLIMITED_CAPACITY,
    FloorTable,
    Request,
    _daily_capacity,
    _gather,
    _interpret,
    _Lists,
    priority_key,
)
from core.errors import InvalidArgument
from core.exceptions import ExceptionType, Resolution
from core.model import Bucket, EventKind
from core.order_ops import _emit_decision, _resolve_open
from core.orders import (
    DAY_MS,
    Decision,
    Option,
    OptionKind,
    OrderRecord,
    PackageStatus,
    ReplanRecord,
)
from core.plan import Plan
from core.reopt import _eligible, cost_today, order_version, promised_by

_BACKORDERS = frozenset({ExceptionType.BACKORDER, ExceptionType.NO_FEASIBLE_NODE})


@dataclass(frozen=True, slots=True)
class ReplanResult:
    applied: tuple[str, ...]
    changed_meanwhile: tuple[str, ...]  # the order moved on (or is gone): kept as it is
    no_longer_fits: tuple[str, ...]  # stock or promise no longer allow the new plan
    # The applied orders' plans before and after, both at the cost model of the moment
    # (the old packages re-priced by reopt.cost_today; so are ReplanRecord's).
    old_cost_micros: int
    new_cost_micros: int


def _live(p: Plan, record: OrderRecord) -> list[Any]:
    book = p.ledger.orders
    return [book.packages[pid] for pid in record.package_ids
            if book.packages[pid].status == PackageStatus.ALLOCATED]


def _request(p: Plan, record: OrderRecord, plan: c.Replan) -> Request:
    """The order's open lines, deadline no later than its current promise."""
    units: dict[str, int] = {}
    promise = 0
    for state in _live(p, record):
        for line_id, qty in state.quantities.items():
            units[line_id] = units.get(line_id, 0) + qty
        promise = max(promise, state.plan.promise_ms)
    for backorder in record.backorders.values():
        units[backorder.line_id] = units.get(backorder.line_id, 0) + backorder.quantity
    spec = record.spec
    deliver_by = promised_by(spec.deliver_by_ms, promise, bool(record.backorders))
    sku = p.ledger.catalog.sku
    lines = tuple((line.line_id, sku(line.sku_id), units[line.line_id])
                  for line in spec.lines if units.get(line.line_id))
    taken: dict[str, int] = {}
    for line_id, _, qty in plan.takes:
        taken[line_id] = taken.get(line_id, 0) + qty
    if taken != {line_id: qty for line_id, _, qty in lines}:
        raise InvalidArgument(f"plan for order {plan.order_id!r} does not cover its open "
                              "units exactly", "plans")
    return Request(spec._replace(deliver_by_ms=deliver_by), lines, len(record.package_ids),
                   0, record.seq)


def _decisions(p: Plan, items: list[tuple[OrderRecord, c.Replan, Request]]) -> list[
        Decision | None]:
    """The kernel's packages for exactly each plan's units; None where they miss the
    deadline (the promise) or a node may no longer ship."""
    ledger = p.ledger
    network = ledger.network()
    reqs = [req for _, _, req in items]
    gathered = _gather(ledger, network, reqs, p.now_ms)
    batch = gathered.batch
    n_nodes = ledger.catalog.n_nodes
    avail = np.zeros((batch.n_lines, n_nodes), np.int64)
    for o, (_, plan, req) in enumerate(items):
        start = int(batch.line_start[o])
        index = {line_id: start + j for j, (line_id, _, _) in enumerate(req.lines)}
        for line_id, node, qty in plan.takes:
            if not 0 <= node < n_nodes:
                raise InvalidArgument(f"plan for order {plan.order_id!r} names no node",
                                      "plans")
            avail[index[line_id], node] += qty
    batch.item_u = np.arange(batch.n_lines, dtype=np.int64)  # a row per line: its own units
    batch.item_floor = np.zeros((batch.n_lines, n_nodes), np.int64)
    result = run_allocation(batch, avail, np.full(n_nodes, UNLIMITED_CAPACITY, np.int64),
                            network, ledger.catalog.node_enabled)
    lists = _Lists(result, batch, network)
    out: list[Decision | None] = []
    for rank, (_, plan, req) in enumerate(items):
        if result.status[rank] != STATUS_ALLOCATED or result.backorder[
                batch.line_start[rank]:batch.line_end[rank]].any():
            out.append(None)
            continue
        decision = _interpret(ledger, network, lists, rank, req, p.now_ms)
        # The packages it replaces never leave: the first new one is no extra shipment.
        first, *rest = decision.packages
        decision = decision._replace(packages=(first._replace(penalty_micros=0), *rest))
        count = len(decision.packages)
        cost = decision.cost_micros
        out.append(decision._replace(
            rule=f"re-optimised with the other open orders: {count} package"
                 f"{'s' if count > 1 else ''}, {cost} micros (was {plan.old_cost_micros})",
            options=(Option(OptionKind.SHIP_COMPLETE if count == 1 else OptionKind.SPLIT,
                            True, cost, count, chosen=True,
                            detail="chosen by batch re-optimisation"),)))
    return out


def _days(plans: Iterable[Any]) -> set[tuple[int, int]]:
    """The (node, day) slots package plans take: one an order at each node and day."""
    return {(plan.node, plan.ship_ms // DAY_MS) for plan in plans}


_Accepted = tuple[OrderRecord, c.Replan, Request, Decision]



def _fitting(p: Plan, accepted: list[_Accepted], floors: FloorTable,
             misfit: list[str]) -> list[_Accepted]:
    """The accepted plans that fit together, the others' order ids added to `misfit`.
    Capacity: each order gives back its slot at each node and day it shipped from and
    takes one at each it will; where a node would take more orders on a day than its
    daily capacity (orders allocated since the plan was made filled it), the order of
    lowest priority that adds one there is dropped. Stock likewise: each gives back its
    units and takes its new ones; where a SKU x node would end below a taker's sale floor,
    the taker of lowest priority is dropped. One at a time (capacity first), until all
    fit. What each drop changes is counted, not everything again: with thousands of plans
    gone stale while the solver ran, counting all again for each drop held the server for
    seconds (minutes at ten thousand)."""
    ledger = p.ledger
    capacity = _daily_capacity(ledger)
    taken = ledger.orders.node_day_orders
    change: dict[tuple[int, int], int] = {}  # (node, day) -> slots taken less given back
    adders: dict[tuple[int, int], set[int]] = {}  # (node, day) -> orders adding a slot
    delta: dict[tuple[int, int], int] = {}  # (sku, node) -> units given back less taken
    takers: dict[tuple[int, int], dict[int, int]] = {}  # (sku, node) -> order -> channel
    parts = []
    for i, (record, _, _, decision) in enumerate(accepted):
        live = _live(p, record)
        gives, takes = _days(s.plan for s in live), _days(decision.packages)
        back: dict[tuple[int, int], int] = {}
        for state in live:
            for line in state.plan.lines:
                key = (line.sku, state.plan.node)
                back[key] = back.get(key, 0) + state.quantities.get(line.line_id, 0)
        for pkg in decision.packages:
            for line in pkg.lines:
                key = (line.sku, pkg.node)
                back[key] = back.get(key, 0) - line.quantity
        channel = ledger.catalog.channel(record.spec.channel_id)
        take_keys = {(line.sku, pkg.node) for pkg in decision.packages for line in pkg.lines}
        parts.append((gives, takes, back, take_keys))
        for key in gives:
            change[key] = change.get(key, 0) - 1
        for key in takes:
            change[key] = change.get(key, 0) + 1
        for key in takes - gives:
            adders.setdefault(key, set()).add(i)
        for key, units in back.items():
            delta[key] = delta.get(key, 0) + units
        for key in take_keys:
            takers.setdefault(key, {})[i] = channel

    def over(key: tuple[int, int]) -> bool:
        more = change.get(key, 0)
        return more > 0 and taken.get(key, 0) + more > capacity[key[0]]

    def short_at(key: tuple[int, int]) -> bool:
        after = ledger.quantity(key[0], key[1], Bucket.AVAILABLE) + delta.get(key, 0)
        return any(after < floors[(channel, key[0], key[1])]
                   for channel in set(takers.get(key, {}).values()))

    full = {key for key in change if over(key)}
    short = {key for key in takers if short_at(key)}
    dropped: set[int] = set()
    while full or short:
        if full:
            i = max(max(adders[key]) for key in full)
        else:
            i = max(max(takers[key]) for key in short)
        dropped.add(i)
        misfit.append(accepted[i][0].spec.order_id)
        gives, takes, back, take_keys = parts[i]
        for key in gives:
            change[key] += 1
        for key in takes:
            change[key] -= 1
        for key in takes - gives:
            adders[key].discard(i)
        for key in gives | takes:
            (full.add if over(key) else full.discard)(key)
        for key, units in back.items():
            delta[key] -= units
        for key in take_keys:
            del takers[key][i]
            if not takers[key]:
                del takers[key]
        for key in set(back) | take_keys:
            (short.add if key in takers and short_at(key) else short.discard)(key)
    return [a for i, a in enumerate(accepted) if i not in dropped]


def apply_reoptimization(p: Plan, cmd: c.ApplyReoptimization) -> ReplanResult:
    ledger = p.ledger
    book = ledger.orders
    changed: list[str] = []
    items: list[tuple[OrderRecord, c.Replan, Request]] = []
    seen: set[str] = set()
    for plan in cmd.plans:
        if plan.order_id in seen:
            raise InvalidArgument(f"order {plan.order_id!r} has two plans", "plans")
        seen.add(plan.order_id)
        record = book.orders.get(plan.order_id)
        if (record is None or not _eligible(ledger, record)
                or order_version(ledger, record) != plan.version):
            changed.append(plan.order_id)
            continue
        items.append((record, plan, _request(p, record, plan)))
    items.sort(key=lambda item: priority_key(item[2]))
    decisions = _decisions(p, items) if items else []
    misfit = [rec.spec.order_id for (rec, _, _), d in zip(items, decisions, strict=True)
              if d is None]
    accepted = [(rec, plan, req, d) for (rec, plan, req), d in zip(items, decisions, strict=True)
                if d is not None]
    # Stock: every accepted order gives back its units and takes its new ones; where a
    # SKU x node would end below a taker's sale floor, drop takers (last priority first).
    # Capacity likewise: an order gives back its slot at each node and day it shipped
    # from and takes one at each it will; where a node would take more orders on a day
    # than its daily capacity (orders allocated since the plan was made filled it), drop
    # the orders that would add one there.
    floors = FloorTable()
    # What each order's current packages cost at today's cost model: the basis the new
    # plan's cost (priced now, by the kernel) is on, not the costs stored when they were
    # decided.
    was: dict[str, int] = {}
    if accepted:
        network = ledger.network()
        gathered = _gather(ledger, network, [a[2] for a in accepted], p.now_ms)
        # Where AVAILABLE is below a sale floor already (a fence or a safety stock raised
        # over units orders hold), the floor is what is AVAILABLE now: re-plans may hand
        # units on between orders there, as the solver's supply counts them (what is
        # above the highest floor, plus what the orders hold), but never leave less there
        # than before, so nothing more is sold below the floor.
        floors = FloorTable()
        floors.add(gathered, cap=gathered.avail[gathered.batch.item_u])
        for o, (record, _, req, _) in enumerate(accepted):
            was[record.spec.order_id] = cost_today(ledger, network, gathered, o, req,
                                                   _live(p, record))
    accepted = _fitting(p, accepted, floors, misfit)
    old_cost = new_cost = 0
    for record, _, _, decision in accepted:
        live = _live(p, record)
        old_cost += was[record.spec.order_id]
        new_cost += decision.cost_micros
        p.add(EventKind.ORDER_REPLANNED, reference=record.spec.order_id, payload=ReplanRecord(
            record.spec.order_id, tuple(s.plan.package_id for s in live),
            was[record.spec.order_id], decision.cost_micros))
        for state in live:
            for line in state.plan.lines:
                qty = state.quantities.get(line.line_id, 0)
                if qty:
                    p.add(EventKind.ORDER_UNITS_RELEASED, sku=line.sku, node=state.plan.node,
                          from_bucket=Bucket.ALLOCATED,
                          to_bucket=Bucket.AVAILABLE, quantity=qty,
                          reference=state.plan.package_id)
    for record, _, _, decision in accepted:
        _emit_decision(p, record.spec, decision, floors)
        if record.backorders:
            _resolve_open(p, record, Resolution.RETRY, "allocated by re-optimisation",
                          _BACKORDERS)
    return ReplanResult(tuple(a[0].spec.order_id for a in accepted), tuple(changed),
                        tuple(misfit), old_cost, new_cost)


HANDLERS: dict[type, Callable[[Plan, Any], Any]] = {
    c.ApplyReoptimization: apply_reoptimization,
}
