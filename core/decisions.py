"""Allocation decisions for orders, around the allocation kernel.

`decide` serves requests in priority order (SLA tier, deliver-by, margin, order
id), each against the stock the earlier ones left. Around the kernel's exact
ship-complete / split choice it weighs what the kernel does not: waiting for
inbound stock to ship complete, substituting a SKU of the same substitution
group (after the batch's own choices), and backordering with a promise date
from inbound stock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from core.allocation import (
    METHOD_EXACT,
    STATUS_ALLOCATED,
    STATUS_NO_FEASIBLE_NODE,
    STATUS_PARTIAL,
    BatchResult,
    OrderBatch,
    run_allocation,
)
from core.availability import available_to_sell
from core.catalog import MAX_CHANNELS, Catalog
from core.errors import FailedPrecondition
from core.kernels._ledger import _gather_sellable
from core.ledger import Ledger
from core.network import COST_CAP, NO_DEADLINE_DAYS, CompiledNetwork, billable_weight_lb
from core.orders import (
    DAY_MS,
    Backorder,
    Decision,
    Option,
    OptionKind,
    OrderBook,
    OrderLineSpec,
    OrderSpec,
    PackageLine,
    PackagePlan,
)

UNLIMITED_CAPACITY = 1 << 40


@dataclass(slots=True)  # not frozen (never changed): built for every order
class Request:
    """Allocate these lines (line_id, sku, quantity) of an order."""

    spec: OrderSpec
    lines: tuple[tuple[str, int, int], ...]
    first_package: int  # number the new packages from here
    margin_micros: int = 0
    seq: int = 0
    arrival: int = 0  # calls answered together: the order they came in
    region: int = -1  # the ship-to's region, when known already

    # (Written out: compiled, a dataclass's generated __init__ would run interpreted.)
    def __init__(self, spec: OrderSpec, lines: tuple[tuple[str, int, int], ...],
                 first_package: int, margin_micros: int = 0, seq: int = 0, arrival: int = 0,
                 region: int = -1) -> None:
        self.spec = spec
        self.lines = lines
        self.first_package = first_package
        self.margin_micros = margin_micros
        self.seq = seq
        self.arrival = arrival
        self.region = region


def priority_key(req: Request) -> tuple[int, int, int, int, str]:
    """SLA tier, then deliver-by (none last), then higher margin, then arrival (calls
    answered together), then order id."""
    # (Unpacked, not read field by field: compiled, a read by name is a lookup.)
    order_id, _, tier, _, _, _, _, deliver_by_ms, _, _, _, _, _, _ = req.spec
    return (int(tier), deliver_by_ms or (1 << 62), -req.margin_micros, req.arrival, order_id)


def deadline_days(deliver_by_ms: int, now_ms: int) -> int:
    if not deliver_by_ms:
        return NO_DEADLINE_DAYS
    return deliver_by_ms // DAY_MS - now_ms // DAY_MS


def capacity_left(ledger: Ledger, book: OrderBook, now_ms: int) -> np.ndarray:
    """Orders each node may still take, on the day a plan made now ships from it: today
    before every service's pickup there (and the node's cut-off), tomorrow after all of
    them. In between a plan's day depends on its service, and the fewer slots left of the
    two days hold, so that neither day takes more than the node's capacity. (Counted
    against today alone, a node past its cut-off took any number of orders for tomorrow.)"""
    today = now_ms // DAY_MS
    taken = book.node_day_orders
    days = ship_days(ledger, now_ms)
    used = []
    for n in range(ledger.catalog.n_nodes):
        day = days[n]
        if day == SHIPS_TODAY:
            used.append(taken.get((n, today), 0))
        elif day == SHIPS_TOMORROW:
            used.append(taken.get((n, today + 1), 0))
        else:
            used.append(max(taken.get((n, today), 0), taken.get((n, today + 1), 0)))
    # (a list made into an array once: cheaper than setting the array's elements one by one)
    return _daily_capacity(ledger) - np.array(used, np.int64)


SHIPS_TODAY: Final = 0
SHIPS_TOMORROW: Final = 1
SHIPS_EITHER: Final = 2  # today by some services, tomorrow by others
# The last network's ship days per node, with the minute of the day they hold for.
_SHIP_DAYS: Final[list[tuple[object, int, list[int]]]] = []


def ship_days(ledger: Ledger, now_ms: int) -> list[int]:
    """For each node, the day a plan made at `now_ms` ships from it (SHIPS_TODAY,
    SHIPS_TOMORROW or SHIPS_EITHER), as the allocation kernel dates a package: today when
    the minute of the day is at most min(the node's cut-off, the service's pickup)."""
    network = ledger.network()
    minute = (now_ms % DAY_MS) // 60_000
    if _SHIP_DAYS:
        held, held_minute, days = _SHIP_DAYS[0]
        if held is network and held_minute == minute:
            return days
    days = []
    services = network.service_cutoff.tolist()
    for node_cutoff in network.node_cutoff.tolist():
        cutoffs = [min(node_cutoff, service) for service in services] or [node_cutoff]
        if minute <= min(cutoffs):
            days.append(SHIPS_TODAY)
        elif minute > max(cutoffs):
            days.append(SHIPS_TOMORROW)
        else:
            days.append(SHIPS_EITHER)
    _SHIP_DAYS[:] = [(network, minute, days)]
    return days


# The last catalogue's daily capacities, with its nodes_version: read for every command,
# where the nodes' specs change seldom.
_CAPACITY: Final[list[tuple[object, int, np.ndarray]]] = []


def _daily_capacity(ledger: Ledger) -> np.ndarray:
    """Each node's daily capacity in orders (UNLIMITED_CAPACITY where it has none)."""
    catalog = ledger.catalog
    version = catalog.nodes_version
    if _CAPACITY:
        held, held_version, capacity = _CAPACITY[0]
        if held is catalog and held_version == version:
            return capacity
    capacity = np.array([node.daily_capacity or UNLIMITED_CAPACITY for node in catalog.nodes],
                        np.int64)
    capacity.flags.writeable = False
    _CAPACITY[:] = [(catalog, version, capacity)]
    return capacity


@dataclass(slots=True)
class _Gathered:
    batch: OrderBatch
    skus: list[int]  # row u -> dense SKU
    avail: np.ndarray  # [u, node] AVAILABLE units
    regions: list[int]
    line_of: dict[tuple[int, int], int]  # (channel, sku) -> a line with that sale floor row

    def floors(self) -> FloorTable:
        """(channel, sku, node) -> units that must stay AVAILABLE after a sale."""
        table = FloorTable()
        table.add(self)
        return table


class FloorTable:
    """Sale floors (channel, sku, node) -> units, read from gathered arrays when asked
    (a batch looks up a few of them; building them all would cost more than deciding)."""

    def __init__(self) -> None:
        self._sources: list[tuple[dict[tuple[int, int], int], np.ndarray]] = []

    def add(self, gathered: _Gathered, cap: np.ndarray | None = None) -> None:
        """Floors as this gathering saw them, each at most cap[line, node] when `cap` is
        given; they take precedence over earlier ones."""
        floor = gathered.batch.item_floor
        self._sources.append((gathered.line_of, floor if cap is None else np.minimum(floor, cap)))

    def __getitem__(self, key: tuple[int, int, int]) -> int:
        channel, sku, node = key
        return self.floor(channel, sku, node)

    def floor(self, channel: int, sku: int, node: int) -> int:
        """The floor of (channel, sku, node); `table[(channel, sku, node)]` without the key
        tuple (it runs for every unit move allocation makes)."""
        sources = self._sources
        # (ndarray.item gives the int itself, which the annotation checks: indexing makes a
        # numpy scalar, and int() of it is a call.)
        if len(sources) == 1:  # (most batches: no substitution gathered again)
            line_of, floor = sources[0]
            value: int = floor.item(line_of[(channel, sku)], node)
            return value
        for i in range(len(sources) - 1, -1, -1):  # (the latest first)
            line_of, floor = sources[i]
            k = line_of.get((channel, sku))
            if k is not None:
                found: int = floor.item(k, node)
                return found
        raise KeyError((channel, sku, node))


def _gather(ledger: Ledger, network: CompiledNetwork, reqs: list[Request], now_ms: int,
            consumed: dict[tuple[int, int], int] | None = None) -> _Gathered:
    catalog = ledger.catalog
    n_nodes = catalog.n_nodes
    row_of: dict[int, int] = {}
    skus: list[int] = []
    line_sku: list[int] = []
    line_qty: list[int] = []
    line_rows: list[int] = []
    line_channel: list[int] = []
    line_of: dict[tuple[int, int], int] = {}
    starts, ends, regions, channels = [], [], [], []
    deadlines, tiers, allow_splits = [], [], []
    channel_index = catalog.channel_index
    for req in reqs:
        # (Unpacked, not read field by field: compiled, a read by name is a lookup.)
        (_, channel_id, tier, _, postal_code, latitude, longitude, deliver_by_ms, _, _, _,
         allow_split, _, _) = req.spec
        found = channel_index.get(channel_id) if channel_id else -1
        channel = catalog.channel(channel_id) if found is None else found  # (None: raises)
        deadlines.append(deadline_days(deliver_by_ms, now_ms))
        tiers.append(int(tier))
        allow_splits.append(allow_split)
        starts.append(len(line_sku))
        for _, sku, qty in req.lines:
            row = row_of.get(sku)
            if row is None:
                row = row_of[sku] = len(skus)
                skus.append(sku)
            line_of.setdefault((channel, sku), len(line_sku))
            line_sku.append(sku)
            line_qty.append(qty)
            line_rows.append(row)
            line_channel.append(channel)
        ends.append(len(line_sku))
        regions.append(req.region if req.region >= 0
                       else network.region_for(postal_code, latitude, longitude))
        channels.append(channel)
    rows_arr = np.array(line_rows, np.int64)
    avail = np.empty((len(skus), n_nodes), np.int64)
    floor = np.empty((len(line_sku), n_nodes), np.int64)
    reserve = np.zeros(MAX_CHANNELS, np.int64)
    for channel, units in ledger.ops.channel_reserve.items():
        reserve[channel] = units
    _gather_sellable(*ledger.kernel_views(), np.array(skus, np.int64), rows_arr,
                     np.array(line_channel, np.int64), ledger.node_safety,
                     ledger.network_safety, reserve, avail, floor)
    if consumed:
        for (sku, node), qty in consumed.items():
            row = row_of.get(sku)
            if row is not None:
                avail[row, node] -= qty
    extra = np.zeros((len(line_sku), n_nodes), np.int64)
    if ledger.opportunity_costs:
        costs = ledger.opportunity_costs
        for k, sku in enumerate(line_sku):
            for n in range(n_nodes):
                extra[k, n] = costs.get((sku, n), 0)
    # Routing actions (late shipments, disruptions) make a node dearer per unit.
    for n, penalty in ledger.ops.node_penalty.items():
        if n < n_nodes:
            extra[:, n] += penalty
    sku_index = np.array(line_sku, np.int64)
    minute = (now_ms % DAY_MS) // 60_000
    batch = OrderBatch(
        line_start=np.array(starts, np.int64), line_end=np.array(ends, np.int64),
        region=np.array(regions, np.int64),
        minute=np.array([minute] * len(reqs), np.int64),  # (np.full costs more, in Python)
        deadline=np.array(deadlines, np.int64), tier=np.array(tiers, np.int64),
        allow_split=np.array(allow_splits, np.bool_),
        channel=np.array(channels, np.int64),
        item_u=rows_arr, item_qty=np.array(line_qty, np.int64),
        item_weight=catalog.weight_lb[sku_index], item_volume=catalog.volume_in3[sku_index],
        item_longest=catalog.longest_in[sku_index], item_floor=floor, item_unit_extra=extra,
    )
    return _Gathered(batch, skus, avail, regions, line_of)


def decide(ledger: Ledger, book: OrderBook, reqs: list[Request], now_ms: int,
           floors: FloorTable | None = None) -> list[Decision]:
    """Decisions for `reqs` (in the given order's priority), without changing anything.

    `floors`, when given, receives the sale floor (channel, sku, node) -> units of every
    SKU the decisions may take, as the decisions saw them."""
    network = ledger.network()
    if not network.n_services or not len(network.region_lat):
        raise FailedPrecondition("no carrier network is configured (NetworkService.SetNetwork)")
    if not reqs:
        return []
    order = sorted(range(len(reqs)), key=lambda i: priority_key(reqs[i]))
    ranked = [reqs[i] for i in order]
    gathered = _gather(ledger, network, ranked, now_ms)
    if floors is not None:
        floors.add(gathered)
    capacity = capacity_left(ledger, book, now_ms)
    after = capacity.copy()  # (what the kernel leaves of it)
    result = run_allocation(gathered.batch, gathered.avail.copy(), after, network,
                            ledger.catalog.node_enabled)
    lists = _Lists(result, gathered.batch, network)
    consumed: dict[tuple[int, int], int] = {}  # (sku, node) -> units the batch takes
    claims = Claims(ledger, ranked)
    # The same, since the batch was last gathered (its avail already less the rest): the
    # same dict until the batch is gathered again.
    taken = consumed
    base = 0  # the rank of the first order of the batch the kernel last ran
    reruns = 0
    decisions: list[Decision | None] = [None] * len(reqs)
    # Orders that may not split, held whole: index -> the lines no node could ship now.
    held: dict[int, frozenset[str]] = {}
    for rank, req in enumerate(ranked):
        decision = _interpret(ledger, network, lists, rank - base, req, now_ms,
                              weigh_waiting=True, claims=claims)
        kernel_plan = decision[1]
        decision = _consider_waiting(ledger, network, gathered, rank - base, req, decision,
                                     now_ms, taken, claims)
        if decision[1] and decision[2] and not req.spec[11]:  # (packages, backorders, split)
            held[order[rank]] = frozenset(b[0] for b in decision[2])
            decision = _held_whole(req, decision)
        for plan in decision[1]:  # (the packages)
            _, node, _, lines, _, _, _, _, _, _, _ = plan
            for _, sku, quantity, _ in lines:
                key = (sku, node)
                consumed[key] = consumed.get(key, 0) + quantity
                if taken is not consumed:
                    taken[key] = taken.get(key, 0) + quantity
        if decision[2]:  # (its backorders)
            claims.add(req.spec, decision[2], 1)
        decisions[order[rank]] = decision
        if (kernel_plan and not decision[1] and reruns < MAX_RERUNS
                and _withheld(kernel_plan, ranked[rank + 1:], after)):
            # It waits for inbound stock instead of the plan the kernel made it, whose
            # units and node slots the kernel withheld from the orders after it: decide
            # those again, against what the batch has taken so far.
            base = rank + 1
            reruns += 1
            gathered = _gather(ledger, network, ranked[base:], now_ms, consumed)
            if floors is not None:
                floors.add(gathered)
            after = capacity.copy()
            for d in decisions:
                for n in {plan[1] for plan in d[1]} if d is not None else ():
                    after[n] -= 1
            result = run_allocation(gathered.batch, gathered.avail.copy(), after, network,
                                    ledger.catalog.node_enabled)
            lists = _Lists(result, gathered.batch, network)
            taken = {}
    # Substitution runs after the batch's own choices, against what they left, in the
    # batch's priority order (the higher order gets a scarce substitute first), and
    # against the node capacity they left (orders a node ships, counted once an order).
    slots: dict[int, int] | None = None
    for i in order:
        req = reqs[i]
        current = decisions[i]
        assert current is not None
        if current[2] and req.spec.allow_substitution:  # ([2]: its backorders)
            if slots is None:
                slots = {}
                for d in decisions:
                    for n in {plan[1] for plan in d[1]} if d is not None else ():
                        slots[n] = slots.get(n, 0) + 1
            before = {plan[1] for plan in current[1]}
            substituted = _substitute(ledger, book, network, req, current, consumed, now_ms,
                                      floors, slots, claims, held.get(i))
            claims.add(req.spec, current[2], -1)  # (the lines substituted are not waiting)
            claims.add(req.spec, substituted[2], 1)
            decisions[i] = substituted
            for n in {plan[1] for plan in substituted[1]} - before:
                slots[n] = slots.get(n, 0) + 1
    return [d for d in decisions if d is not None]


#: Times a batch's later orders are decided again (each over the rest of the batch): past
#: it, what an order gave up to wait stays withheld from the rest of its batch (as if
#: taken: never more than is there), so a batch of orders that all wait costs at most
#: this many runs more.
MAX_RERUNS: Final = 4


def _held_whole(req: Request, decision: Decision) -> Decision:
    """The decision for an order that may not split when its plan ships part now and
    backorders the rest (some line no node has now, and waiting for inbound does not let
    one node ship it whole in time): that would be a second package later. Nothing ships
    now; every line waits, to ship together. The lines in stock are promised for when the
    last of the others is (no date if one of those has none)."""
    short = decision[2]
    dates = [b[3] for b in short]
    promise_ms = max(dates) if all(dates) else 0
    missing = {b[0]: b for b in short}
    backorders = tuple(missing.get(line_id) or Backorder(line_id, sku, qty, promise_ms)
                       for line_id, sku, qty in req.lines)
    units = sum(b.quantity for b in backorders)
    options = tuple(o._replace(chosen=False) for o in decision.options
                    if o.kind != OptionKind.BACKORDER)
    held = Option(OptionKind.BACKORDER, True, 0, 0, chosen=True,
                  detail=f"{units} units backordered: the order may not split, and "
                         f"{len(short)} of its {len(req.lines)} lines no node can ship now")
    rule = ("the order may not split and no node can ship every line now: "
            "all of it waits, to ship complete")
    return Decision(decision.order_id, (), backorders, decision.method, rule,
                    (*options, held))


def _withheld(plans: tuple[PackagePlan, ...], later: list[Request],
              capacity_after: np.ndarray) -> bool:
    """Whether the kernel's plan for an order (given up: it waits) could have changed the
    decisions of the `later` orders: some of them order a SKU it took, or a node it used
    ran out of slots for the day (`capacity_after`: what the kernel left)."""
    if any(capacity_after[plan[1]] <= 0 for plan in plans):
        return True
    skus = {line[1] for plan in plans for line in plan[3]}
    return any(sku in skus for req in later for _, sku, _ in req.lines)


# Enum members read for every order, as module constants: on Python 3.11 reading a member
# from its class costs about four times a global's lookup.
_SHIP_COMPLETE: Final = OptionKind.SHIP_COMPLETE
_SPLIT: Final = OptionKind.SPLIT
_new: Final[Any] = tuple.__new__
# The rule of a decision that ships complete from one node, by (node id, whether a split
# was possible): one string for all of them, not one an order.
_COMPLETE_RULES: Final[dict[tuple[str, bool], str]] = {}


class _Lists:
    """A BatchResult's arrays as Python lists: element access on lists is several times
    cheaper than on numpy arrays, and interpreting touches every element once. (Each
    named here: compiled, an attribute declared on the class is read without a lookup.)"""

    status: list[int]
    method: list[int]
    cost: list[int]
    single_cost: list[int]
    split_cost: list[int]
    pkg_first: list[int]
    pkg_count: list[int]
    backorder: list[int]
    pkg_node: list[int]
    pkg_service: list[int]
    pkg_carrier: list[int]
    pkg_handling: list[int]
    pkg_units_cost: list[int]
    pkg_billable: list[int]
    pkg_ship_day: list[int]
    pkg_transit: list[int]
    piece_line: list[int]
    piece_pkg: list[int]
    piece_qty: list[int]
    piece_first: list[int]
    piece_count: list[int]
    line_start: list[int]
    line_end: list[int]
    split_penalty: list[int]

    def __init__(self, result: BatchResult, batch: OrderBatch, network: CompiledNetwork) -> None:
        lists = result.lists()  # (in the order of allocation.OUTPUTS)
        self.status = lists[0]
        self.method = lists[1]
        self.cost = lists[2]
        self.single_cost = lists[3]
        self.split_cost = lists[4]
        self.pkg_first = lists[5]
        self.pkg_count = lists[6]
        self.backorder = lists[7]
        self.pkg_node = lists[8]
        self.pkg_service = lists[9]
        self.pkg_carrier = lists[10]
        self.pkg_handling = lists[11]
        self.pkg_units_cost = lists[12]
        self.pkg_billable = lists[13]
        self.pkg_ship_day = lists[14]
        self.pkg_transit = lists[15]
        self.piece_line = lists[16]
        self.piece_pkg = lists[17]
        self.piece_qty = lists[18]
        self.piece_first = lists[19]
        self.piece_count = lists[20]
        self.line_start = batch.line_start.tolist()
        self.line_end = batch.line_end.tolist()
        self.split_penalty = network.split_penalty.tolist()  # by SLA tier


def _interpret(ledger: Ledger, network: CompiledNetwork, r: _Lists, rank: int, req: Request,
               now_ms: int, weigh_waiting: bool = False,
               claims: Claims | None = None) -> Decision:
    """The kernel's choice for the order at `rank`, as a Decision. With `weigh_waiting`
    (the caller weighs waiting for inbound stock next, _consider_waiting), a plan that
    splits or backorders says so already when no line has inbound stock. `claims`: the
    units the batch's earlier orders backordered with a promise date (see _claimed)."""
    catalog = ledger.catalog
    status = r.status[rank]
    start = r.line_start[rank]
    day0 = (now_ms // DAY_MS) * DAY_MS
    single = r.single_cost[rank]
    split = r.split_cost[rank]
    count = r.pkg_count[rank]
    allocated = status in (STATUS_ALLOCATED, STATUS_PARTIAL)
    # (Unpacked, not read field by field: compiled, a read by name is a lookup.)
    order_id, _, tier, _, _, _, _, _, _, _, _, allow_split, _, _ = req.spec
    # The named tuples are built through tuple.__new__, every field given in order:
    # compiled, calling the class would run its generated __new__ interpreted.
    options = [  # (kind, feasible, cost, packages, chosen, detail)
        _new(Option, (_SHIP_COMPLETE, single >= 0, max(single, 0), 1 if single >= 0 else 0,
                      allocated and count == 1, "one package from one node")),
        _new(Option, (_SPLIT, split >= 0, max(split, 0), count if count > 1 else 0,
                      allocated and count > 1,
                      "several packages" if allow_split else "order forbids splits")),
    ]
    first_pkg = r.pkg_first[rank]
    penalty = r.split_penalty[tier]
    piece_first = r.piece_first[rank]
    by_package: dict[int, list[PackageLine]] = {}
    for i in range(piece_first, piece_first + r.piece_count[rank]):
        line_id, sku, _ = req.lines[r.piece_line[i] - start]
        by_package.setdefault(r.piece_pkg[i], []).append(
            _new(PackageLine, (line_id, sku, r.piece_qty[i], -1)))
    packages: list[PackagePlan] = []
    prefix = f"{order_id}-P"
    for j in range(count):
        p = first_pkg + j
        ship_ms = day0 + r.pkg_ship_day[p] * DAY_MS
        packages.append(_new(PackagePlan, (
            f"{prefix}{req.first_package + j + 1}", r.pkg_node[p], r.pkg_service[p],
            tuple(by_package[p]), r.pkg_carrier[p], r.pkg_handling[p], r.pkg_units_cost[p],
            penalty if j or req.first_package else 0, r.pkg_billable[p], ship_ms,
            ship_ms + r.pkg_transit[p] * DAY_MS)))
    backorders = []
    for k in range(start, r.line_end[rank]):
        qty = r.backorder[k]
        if qty:
            line_id, sku, _ = req.lines[k - start]
            backorders.append(Backorder(line_id, sku, qty, inbound_promise(
                ledger, sku, qty, now_ms, _channel_of(catalog, req.spec[1]),
                _claimed(ledger, sku, req.spec, claims)
                if sku in ledger.inbound_by_sku else 0)))
    if allocated:
        if count == 1:  # (the same words for every order a node ships: written once)
            node = catalog.nodes[packages[0][1]].node_id  # (the package's node)
            rule_key = (node, split >= 0)
            found = _COMPLETE_RULES.get(rule_key)
            if found is None:
                if len(_COMPLETE_RULES) >= 4096:
                    _COMPLETE_RULES.clear()
                found = _COMPLETE_RULES[rule_key] = (
                    f"cheapest landed cost: ship complete from {node}"
                    + (" (no split is cheaper)" if split >= 0 else ""))
            rule = found
        else:
            rule = (f"cheapest landed cost: {count} packages"
                    + (f"; shipping complete would cost {single} micros" if single >= 0
                       else "; no single node can ship everything in time"))
    else:
        rule = ("no node can meet the promise" if status == STATUS_NO_FEASIBLE_NODE
                else "no sellable stock")
    if backorders:
        options.append(Option(OptionKind.BACKORDER, True, 0, 0, chosen=True,
                              detail=f"{sum(b.quantity for b in backorders)} units backordered"))
        if packages:
            rule += "; the rest is backordered"
    if weigh_waiting and (count > 1 or backorders) and not _has_inbound(ledger, req):
        options.append(_NO_INBOUND)  # (said here: _consider_waiting would build it again)
    decision: Decision = _new(Decision, (order_id, tuple(packages), tuple(backorders),
                                         r.method[rank], rule, tuple(options),
                                         status == STATUS_NO_FEASIBLE_NODE))
    return decision


def _has_inbound(ledger: Ledger, req: Request) -> bool:
    """Whether some line's SKU has inbound stock anywhere."""
    inbound_by_sku = ledger.inbound_by_sku
    if not inbound_by_sku:
        return False
    return any(sku in inbound_by_sku for _, sku, _ in req.lines)


def _channel_of(catalog: Catalog, channel_id: str) -> int:
    """The channel's index; -1 for none (or one not in the catalogue)."""
    if not channel_id:
        return -1
    found = catalog.channel_index.get(channel_id)
    return -1 if found is None else found


def inbound_promise(ledger: Ledger, sku: int, qty: int, now_ms: int,
                    channel: int = -1, claimed: int = 0) -> int:
    """The first date inbound stock adds up to `qty` units the channel may be sold, after
    the `claimed` units backordered before (_claimed); 0 if never. As available-to-promise
    reads it (availability.promise_schedule): only at enabled nodes that ship the channel,
    and what arrives first makes up what a node lacks of its floor (safety stock, other
    channels' fences)."""
    keys = ledger.inbound_by_sku.get(sku)
    if not keys:
        return 0
    # (Read once a state: the backorders of a batch short of a SKU ask for the same.)
    cache = _PROMISES
    state = cache.get(0)
    if state is None or state[0] is not ledger or state[1:] != (ledger.last_seq, now_ms):
        cache.clear()
        cache[0] = (ledger, ledger.last_seq, now_ms)
    found = cache.get((sku, channel))
    if found is None:
        found = cache[(sku, channel)] = _sellable_arrivals(ledger, sku, keys, now_ms, channel)
    for date, units in found:
        if units >= qty + claimed:
            return date
    return 0


class Claims:
    """Units of a SKU backordered with a promise date before an order's, on its channel
    and the channels that share its view of the SKU's inbound stock (_Views): the open
    backorders (OrderBook.promised), less the old ones of the batch's own orders (decided
    again, they claim only through what they are decided now), and the batch's own so
    far. They were promised the SKU's inbound stock first."""

    def __init__(self, ledger: Ledger, reqs: list[Request]) -> None:
        self.ledger = ledger
        self.reqs = reqs
        self.batch: dict[int, dict[str, int]] = {}  # sku -> channel -> units claimed
        self.own: dict[tuple[int, str], int] = {}  # (sku, order) -> units it claims
        self._views: _Views | None = None
        self._old: dict[tuple[int, str], int] = {}  # the batch's orders' open ones

    def add(self, spec: OrderSpec, backorders: tuple[Backorder, ...], sign: int) -> None:
        """The order's backorders (with a promise date) claim for the batch (sign 1), or
        no longer (-1)."""
        for _, sku, quantity, promise_ms in backorders:
            if promise_ms:
                by_channel = self.batch.setdefault(sku, {})
                by_channel[spec[1]] = by_channel.get(spec[1], 0) + sign * quantity
                key = (sku, spec[0])
                self.own[key] = self.own.get(key, 0) + sign * quantity

    def claimed(self, sku: int, spec: OrderSpec) -> int:
        book = self.ledger.orders
        by_channel = book.promised.get(sku)
        batch = self.batch.get(sku)
        if not by_channel and not batch:
            return 0
        views = self._views
        if views is None:
            views = self._views = _Views(self.ledger)
        channel = spec[1]
        total = 0
        if by_channel:
            total = sum(units for other, units in by_channel.items()
                        if views.shared(sku, channel, other))
            if total:
                key = (sku, channel)
                old = self._old.get(key)
                if old is None:  # (once a SKU and channel: a walk of the batch's orders)
                    old = self._old[key] = sum(
                        book.promised_to(req.spec[0], sku) for req in self.reqs
                        if views.shared(sku, channel, req.spec[1]))
                total -= old
        if batch:  # (its own on its own channel, which is shared: taken off)
            total += sum(units for other, units in batch.items()
                         if views.shared(sku, channel, other)) - self.own.get((sku, spec[0]), 0)
        return total


class _Views:
    """Whether two channels see the same units of a SKU's inbound stock: when every node
    ships one as it ships the other (the same blocked nodes) and neither holds a fence of
    the SKU at any node (fences for other channels keep the same units from both). They
    are sold the same units as they arrive, so what one was promised the other cannot be.
    Where fences or blocked nodes part their views, each counts only its own claims: what
    another was promised may come from units it cannot be sold (a known gap: the share
    that it can is not worked out, so a promise there can still be too early)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._fenced: dict[tuple[int, str], bool] = {}
        self._columns: dict[str, bytes] = {}

    def shared(self, sku: int, one: str, other: str) -> bool:
        if one == other:
            return True
        return (not self._fences(sku, one) and not self._fences(sku, other)
                and self._column(one) == self._column(other))

    def _fences(self, sku: int, channel_id: str) -> bool:
        """Whether some node holds a fence of the SKU for the channel."""
        key = (sku, channel_id)
        found = self._fenced.get(key)
        if found is None:
            found = False
            index = _channel_of(self.ledger.catalog, channel_id)
            shard, local = self.ledger.locate(sku)
            if index >= 0 and shard.fence_row.shape[0]:
                rows = shard.fence_row[local]
                rows = rows[rows >= 0]
                found = bool(len(rows) and (shard.fence_qty[rows, index] > 0).any())
            self._fenced[key] = found
        return found

    def _column(self, channel_id: str) -> bytes:
        found = self._columns.get(channel_id)
        if found is None:
            blocked = self.ledger.network().blocked
            index = _channel_of(self.ledger.catalog, channel_id)
            found = self._columns[channel_id] = (
                blocked[:, index].astype(np.uint8).tobytes()
                if 0 <= index < blocked.shape[1] else bytes(blocked.shape[0]))
        return found


def _claimed(ledger: Ledger, sku: int, spec: OrderSpec, claims: Claims | None) -> int:
    """What was promised of the SKU's inbound stock before this order (Claims); without a
    batch's, the open backorders less the order's own."""
    if claims is not None:
        return claims.claimed(sku, spec)
    by_channel = ledger.orders.promised.get(sku)
    if not by_channel:
        return 0
    views = _Views(ledger)
    return (sum(units for other, units in by_channel.items()
                if views.shared(sku, spec[1], other))
            - ledger.orders.promised_to(spec[0], sku))


#: inbound_promise's readings of the current state: 0 -> (ledger, its last event, time);
#: (sku, channel) -> [(date, units sellable from then)], ascending.
_PROMISES: Final[dict[object, Any]] = {}


def _sellable_arrivals(ledger: Ledger, sku: int, keys: Any, now_ms: int,
                       channel: int) -> list[tuple[int, int]]:
    """(date, units the channel may be sold from the SKU's inbound stock by then)."""
    enabled = ledger.catalog.node_enabled
    blocked = ledger.network().blocked
    nodes = sorted({key[2] for key in keys if enabled[key[2]] and not (
        0 <= channel < blocked.shape[1] and blocked[key[2], channel])})
    if not nodes:
        return []
    table = available_to_sell(ledger, np.array([sku], np.int64), np.array(nodes, np.int64),
                              channel)
    lacking = {n: max(0, int(table.safety_stock[0, j]) + int(table.fenced_for_others[0, j])
                      - int(table.available[0, j])) for j, n in enumerate(nodes)}
    arrivals: dict[int, list[tuple[int, int]]] = {}  # date -> (node, units)
    for key in keys:
        if key[2] in lacking:
            line = ledger.inbound[key]
            arrivals.setdefault(max(line.expected_ms, now_ms), []).append(
                (key[2], line.remaining))
    come = dict.fromkeys(lacking, 0)
    steps = []
    for date in sorted(arrivals):
        for n, units in arrivals[date]:
            come[n] += units
        steps.append((date, sum(max(0, come[n] - lacking[n]) for n in come)))
    return steps


_NO_INBOUND: Final = Option(OptionKind.WAIT_FOR_INBOUND, False,
                             detail="no inbound stock of these SKUs")


def _consider_waiting(ledger: Ledger, network: CompiledNetwork, gathered: _Gathered, rank: int,
                      req: Request, decision: Decision, now_ms: int,
                      consumed: dict[tuple[int, int], int] | None = None,
                      claims: Claims | None = None) -> Decision:
    """Compare waiting for inbound stock to ship complete from one node, when the plan
    splits or backorders. Chosen when it meets the promise and costs less than the split,
    or when the order may not split and cannot ship complete now. `consumed`: the units
    the batch's earlier orders took, (sku, node) -> units: not on hand for this one.

    What arrives goes to the backorders promised it before this order first (_claimed,
    as for a backorder's promise date): the order waits for the arrival that covers
    them and its own units. Those claims are on the SKU's inbound stock anywhere, not at
    the node weighed, so with stock inbound at several nodes this is on the safe side: a
    later promise, never one that an earlier order was given already."""
    if len(decision.packages) < 2 and not decision.backorders:
        return decision
    if not _has_inbound(ledger, req):  # (_interpret has said so among the options)
        return decision
    inbound_by_sku = ledger.inbound_by_sku
    best: tuple[int, int, int, int, int, int] | None = None  # cost, node, svc, ship, days, lb
    batch = gathered.batch
    start = int(batch.line_start[rank])
    day0 = now_ms // DAY_MS
    region = gathered.regions[rank]
    deadline = int(batch.deadline[rank])
    lines = req.lines
    channel = int(batch.channel[rank])
    catalog = ledger.catalog
    # A node is worth a look only when some line lacks units there now and every line that
    # does has inbound stock there: so only nodes with inbound stock of some line.
    inbound_nodes = [{key[2] for key in inbound_by_sku.get(sku, ())} for _, sku, _ in lines]
    avail = gathered.avail
    floor = batch.item_floor
    rows = batch.item_u[start:start + len(lines)].tolist()
    short_at: dict[int, list[int]] = {}  # candidate node -> units each line lacks there
    candidates = []
    for n in sorted(set().union(*inbound_nodes)):
        if not catalog.node_enabled[n] or (channel >= 0 and network.blocked[n, channel]):
            continue
        # What arrives refills a node's floor (safety stock, other channels' fences)
        # before any of it is sellable: a line lacks its quantity plus what is missing
        # of the floor there.
        shorts = [q - (int(avail[rows[k], n]) - int(floor[start + k, n])
                       - (consumed.get((sku, n), 0) if consumed else 0))
                  for k, (_, sku, q) in enumerate(lines)]
        if any(shorts[k] > 0 for k in range(len(lines))) and all(
                n in inbound_nodes[k] for k in range(len(lines)) if shorts[k] > 0):
            short_at[n] = shorts
            candidates.append(n)
    if candidates:
        weight = sum(q * float(catalog.weight_lb[s]) for _, s, q in lines)
        dims = catalog.dims_in
        volume = sum(q * float(np.prod(dims[s])) for _, s, q in lines)
        longest = max(float(dims[s].max()) for _, s, _ in lines)
        billable = billable_weight_lb(weight, volume)
        units = sum(q for _, _, q in lines)
    claimed: dict[int, int] = {}  # sku -> units earlier backorders were promised of it
    for n in candidates:
        ready_day = day0
        feasible = True
        for k, (_, sku, _) in enumerate(lines):
            short = short_at[n][k]
            if short <= 0:
                continue
            before = claimed.get(sku)
            if before is None:
                before = claimed[sku] = _claimed(ledger, sku, req.spec, claims)
            short += before
            arrivals = sorted(
                (max(ledger.inbound[key].expected_ms, now_ms), ledger.inbound[key].remaining)
                for key in ledger.inbound_by_sku.get(sku, ()) if key[2] == n)
            covered = 0
            arrival_day = None
            for date, remaining in arrivals:
                covered += remaining
                if covered >= short:
                    arrival_day = date // DAY_MS
                    break
            if arrival_day is None:
                feasible = False
                break
            ready_day = max(ready_day, arrival_day + 1)  # received, then shipped next day
        if not feasible:
            continue
        ship = ready_day - day0
        quote = cheapest_service(network, n, region, billable, units, longest, ship,
                                 deadline - ship)
        if quote is None:
            continue
        carrier, service, transit = quote
        units_cost = sum(q * (int(network.pick[n]) + ledger.ops.node_penalty.get(n, 0)
                              + ledger.opportunity_costs.get((s, n), 0)) for _, s, q in lines)
        # (Read as the kernel reads the split it is weighed against: at most COST_CAP.)
        cost = min(carrier + int(network.handling[n]) + units_cost, COST_CAP)
        if best is None or cost < best[0]:
            best = (cost, n, service, ship, transit, billable)
    current = decision.cost_micros
    if best is None:
        return decision._replace(options=(*decision.options, Option(
            OptionKind.WAIT_FOR_INBOUND, False, detail="no inbound lets one node ship complete "
            "in time")))
    cost, n, _, ship, transit, _ = best
    node_id = ledger.catalog.nodes[n].node_id
    promise_ms = (day0 + ship + transit) * DAY_MS
    wait_cheaper = (len(decision.packages) >= 2 and cost < min(current, COST_CAP)
                    and not decision.backorders)
    # An order that may not split ships complete: not part now and the rest later (a
    # second package) when waiting lets it ship whole in time.
    must_wait = not req.spec.allow_split and (not decision.packages or bool(
        decision.backorders))
    option = Option(OptionKind.WAIT_FOR_INBOUND, True, cost, 1, chosen=wait_cheaper or must_wait,
                    detail=f"ship complete from {node_id} after inbound arrives, "
                           f"delivered by day +{ship + transit}")
    if not option.chosen:
        return decision._replace(options=(*decision.options, option))
    options = tuple(o._replace(chosen=False) for o in decision.options)
    backorders = tuple(Backorder(line_id, sku, qty, promise_ms) for line_id, sku, qty in lines)
    rule = (f"wait for inbound at {node_id} and ship complete: {cost} micros"
            + (f" against {current} micros split now" if wait_cheaper else ""))
    return Decision(decision.order_id, (), backorders, METHOD_EXACT, rule, (*options, option))


def cheapest_service(network: CompiledNetwork, n: int, region: int, billable: int, units: int,
                     longest: float, ship_day: int, days_left: int) -> tuple[int, int, int] | None:
    """(cost, service, transit days) of the cheapest service from node n whose transit fits
    in `days_left` after shipping; None if none does. Mirrors the kernel's rating (a cost
    past COST_CAP reads as COST_CAP)."""
    z = int(network.zone[n, region])
    width = network.rates.shape[2] - 1
    best: tuple[int, int, int] | None = None
    for s in range(network.n_services):
        days = int(network.transit[s, z])
        if days > days_left:
            continue
        if network.lane_has[n, region]:
            cost = (int(network.lane_fixed[n, region]) + int(network.lane_per_unit[n, region])
                    * units + int(network.lane_per_lb[n, region]) * billable)
        elif billable <= width:
            cost = int(network.rates[s, z, billable])
        else:
            cost = int(network.rates[s, z, width]) + (billable - width) * int(
                network.over_per_lb[s, z])
        if longest > 48.0:
            cost += int(network.surcharge[s])
        if best is None or cost < best[0]:
            best = (cost, s, days)
    del ship_day
    return best if best is None or best[0] <= COST_CAP else (COST_CAP, best[1], best[2])


def _substitute(ledger: Ledger, book: OrderBook, network: CompiledNetwork, req: Request,
                decision: Decision, consumed: dict[tuple[int, int], int], now_ms: int,
                floors: FloorTable | None, slots: dict[int, int] | None = None,
                claims: Claims | None = None,
                short_lines: frozenset[str] | None = None) -> Decision:
    """Replace backordered lines by the SKU of the same substitution group with enough
    sellable units (closest price first), allocate those, and merge into the decision.

    `short_lines`: the order may not split and is held whole (_held_whole) for these lines
    only; the others are in stock. Only these are substituted, and the order ships with
    its own SKUs for the rest, all in one package, or not at all."""
    if not req.spec.allow_split and (decision[1] or any(
            o.kind == OptionKind.WAIT_FOR_INBOUND and o.chosen for o in decision.options)):
        # The substitute would ship in a package of its own (or, the order waiting to
        # ship whole, apart from the lines that wait): the order forbids that.
        return decision._replace(options=(*decision.options, Option(
            OptionKind.SUBSTITUTE, False,
            detail="the order forbids splits: a substitute would ship apart")))
    catalog = ledger.catalog
    groups = catalog.substitution_group
    replaced: list[tuple[str, int, int, int]] = []  # line_id, substitute, qty, original
    kept: list[Backorder] = []
    channel = catalog.channel(req.spec.channel_id)
    nodes = np.arange(catalog.n_nodes, dtype=np.int64)
    # A SKU substitutes for one line of the order at most: the allocation below weighs
    # each line against the SKU's stock on its own, so two lines of one SKU could each
    # be given the same units (2 + 2 placed from 3, refused when applied).
    given: set[int] = set()
    riders: list[tuple[str, int, int]] = []  # held lines in stock: they ship with the rest
    # Held whole, the order ships its own SKUs with the substitutes: a substitute may not
    # be one of them (the two lines would each count the SKU's units as theirs).
    own = ({sku for _, sku, _ in req.lines} if short_lines is not None else set())
    for backorder in decision.backorders:
        if short_lines is not None and backorder.line_id not in short_lines:
            riders.append((backorder.line_id, backorder.sku, backorder.quantity))
            continue
        group = int(groups[backorder.sku])
        candidates: list[int] = (
            np.flatnonzero(groups[: catalog.n_skus] == group).tolist() if group else [])
        best: tuple[int, int] | None = None
        for cand in candidates:
            if cand == backorder.sku or cand in given or cand in own:
                continue
            table = available_to_sell(ledger, np.array([cand], np.int64), nodes, channel)
            sellable = int(table.available_to_sell[0].sum()) - sum(
                q for (s, _), q in consumed.items() if s == cand)
            if sellable < backorder.quantity:
                continue
            gap = abs(int(catalog.price_micros[cand]) - int(catalog.price_micros[backorder.sku]))
            if best is None or (gap, cand) < best:
                best = (gap, cand)
        if best is None:
            kept.append(backorder)
        else:
            given.add(best[1])
            replaced.append((backorder.line_id, best[1], backorder.quantity, backorder.sku))
    if not replaced:
        return decision._replace(options=(*decision.options, Option(
            OptionKind.SUBSTITUTE, False, detail="no SKU of the same group has the units")))
    if kept and not req.spec.allow_split:
        return decision._replace(options=(*decision.options, Option(
            OptionKind.SUBSTITUTE, False, detail="the order forbids splits: substitutes "
            "for some lines would ship apart from the lines still backordered")))
    sub_req = Request(req.spec, (*riders, *((line_id, sku, qty)
                                            for line_id, sku, qty, _ in replaced)),
                      req.first_package + len(decision.packages))
    gathered = _gather(ledger, network, [sub_req], now_ms, consumed)
    if floors is not None:
        floors.add(gathered)
    capacity = capacity_left(ledger, book, now_ms)
    own = {plan[1] for plan in decision[1]}  # nodes this order has a slot at already
    for n, taken in (slots or {}).items():  # the batch's orders, not in the book yet
        capacity[n] -= taken - (n in own)
        if n in own:  # (another package of it there takes no other slot)
            capacity[n] = max(capacity[n], 1)
    result = run_allocation(gathered.batch, gathered.avail.copy(), capacity, network,
                            catalog.node_enabled)
    sub = _interpret(ledger, network, _Lists(result, gathered.batch, network), 0, sub_req,
                      now_ms)
    if sub.backorders and not req.spec.allow_split:
        return decision._replace(options=(*decision.options, Option(
            OptionKind.SUBSTITUTE, False, detail="the order forbids splits: the substitutes "
            "cannot all ship now, together")))
    originals = {line_id: original for line_id, _, _, original in replaced}
    sub_packages = tuple(
        p._replace(lines=tuple(line._replace(substitutes_sku=originals.get(line.line_id, -1))
                               for line in p.lines),
                penalty_micros=int(network.split_penalty[int(req.spec.tier)])
                if decision.packages or i else 0)
        for i, p in enumerate(sub.packages))
    for plan in sub_packages:
        for line in plan.lines:
            key = (line.sku, plan.node)
            consumed[key] = consumed.get(key, 0) + line.quantity
    still = list(sub.backorders)
    names = ", ".join(f"{catalog.sku_ids[o]} -> {catalog.sku_ids[s]}"
                      for _, s, _, o in replaced)
    option = Option(OptionKind.SUBSTITUTE, bool(sub_packages),
                    sum(p.total_micros for p in sub_packages), len(sub_packages),
                    chosen=bool(sub_packages), detail=f"substitute {names}")
    rule = (f"ships complete with substitutes: {names}" if riders
            else decision.rule + f"; substituted {names}")
    # Substitute lines still short stay backordered under the ordered SKU.
    backorders = tuple(kept) + tuple(
        Backorder(b.line_id, originals[b.line_id], b.quantity,
                  inbound_promise(ledger, originals[b.line_id], b.quantity, now_ms,
                                  _channel_of(catalog, req.spec.channel_id),
                                  _claimed(ledger, originals[b.line_id], req.spec, claims)
                                  if originals[b.line_id] in ledger.inbound_by_sku else 0))
        for b in still)
    # (Held whole, it now ships: the backorder it was held as is not chosen.)
    before = (tuple(o._replace(chosen=False) for o in decision.options) if riders
              else decision.options)
    return Decision(decision.order_id, decision.packages + sub_packages, backorders,
                    decision.method, rule, (*before, option),
                    no_feasible_node=decision.no_feasible_node and not sub_packages)


def margin_micros(ledger: Ledger, lines: tuple[tuple[str, int, int], ...]) -> int:
    """What the lines sell for less what they cost, at catalogue prices (a batch adds
    paid_price_difference for lines whose customer pays another price)."""
    cat = ledger.catalog
    return sum(q * (int(cat.price_micros[s]) - int(cat.unit_cost_micros[s])) for _, s, q in lines)


def paid_price_difference(ledger: Ledger, lines: tuple[tuple[str, int, int], ...],
                          spec_lines: tuple[OrderLineSpec, ...]) -> int:
    """What the order's priced lines come to above (or below) their catalogue price
    (`spec_lines` in the same order as `lines`)."""
    difference = 0
    for k, line in enumerate(spec_lines):
        paid = line[3]
        if paid != -1:
            _, sku, quantity = lines[k]
            difference += quantity * (paid - int(ledger.catalog.price_micros[sku]))
    return difference


@dataclass(frozen=True, slots=True)
class RateQuote:
    service: int
    cost_micros: int
    transit_days: int
    ship_ms: int
    delivery_ms: int
    meets_deadline: bool


def rate_shop(network: CompiledNetwork, node: int, region: int, weight_lb: float,
              volume_in3: float, longest_in: float, units: int, ready_ms: int,
              deliver_by_ms: int) -> tuple[int, int, list[RateQuote]]:
    """Every service's price and dates for one parcel from `node` to `region`, rated as
    allocation rates packages. Returns (zone, billable lb, quotes in service order)."""
    billable = billable_weight_lb(weight_lb, volume_in3)
    z = int(network.zone[node, region])
    width = network.rates.shape[2] - 1
    minute = (ready_ms % DAY_MS) // 60_000
    day0 = (ready_ms // DAY_MS) * DAY_MS
    quotes = []
    for s in range(network.n_services):
        cutoff = min(int(network.node_cutoff[node]), int(network.service_cutoff[s]))
        ship_ms = day0 + (0 if minute <= cutoff else DAY_MS)
        days = int(network.transit[s, z])
        if network.lane_has[node, region]:
            cost = (int(network.lane_fixed[node, region])
                    + int(network.lane_per_unit[node, region]) * units
                    + int(network.lane_per_lb[node, region]) * billable)
        elif billable <= width:
            cost = int(network.rates[s, z, billable])
        else:
            cost = int(network.rates[s, z, width]) + (billable - width) * int(
                network.over_per_lb[s, z])
        if longest_in > 48.0:
            cost += int(network.surcharge[s])
        delivery = ship_ms + days * DAY_MS
        meets = not deliver_by_ms or delivery // DAY_MS <= deliver_by_ms // DAY_MS
        quotes.append(RateQuote(s, cost, days, ship_ms, delivery, meets))
    return z, billable, quotes
