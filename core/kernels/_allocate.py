"""Order allocation kernels: sourcing, split-versus-consolidate and carrier selection.

A plan is a set of packages; a package ships some of an order's items from one
node by one carrier service. Its cost is the carrier price (rate card by zone and
billable weight, or a contracted lane) + oversize surcharge + node handling + per
unit picks and opportunity cost; every package beyond the first adds the order's
split penalty. A service qualifies only if ship day (today if the order is before
both the node's and the service's cut-off, else tomorrow) + transit days meets the
order's deadline.

For up to `max_exact` items the kernel finds the cheapest plan exactly: a
package cost for every (node, subset of items), then a subset dynamic programme
over partitions of the items into packages. Beyond that a heuristic: the cheapest
single package, against a greedy split (each item joins the package, open or new,
that adds least cost); an order of any size, on a network of any size.

Costs saturate at COST_CAP (core/network.py says why): a product of a quantity (units,
billable pounds, packages) and a rate is the exact value or COST_CAP if that is less,
formed without overflowing int64 (_mul); a sum is read the same way before it is kept
(_add, or once the cheapest of several sums is found: each adds two or three terms of at
most COST_CAP or an input's limit, so none overflows). All terms are >= 0, so every cost
kept or written is exactly min(its true value, COST_CAP): plans below the cap compare
exactly, a dearer one reads as the cap (never less than a cheaper plan, never negative),
and the sums compared stay below INF.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numba import njit

INF = np.int64(1) << np.int64(62)
# core.network.COST_CAP, written out: Numba's cache keeps the value of a global it read
# from another module, and would not see that one change.
COST_CAP = np.int64(10**17)
# A product whose float estimate reaches this is past COST_CAP (and one below it fits in
# int64: the estimate is within a few parts in 10^16 of the exact product).
_MUL_FITS = float(1 << 62)
# The most billable pounds are read as: past it every pound-rated price saturates anyway
# (a cost per lb is a whole number of micros), and the float converts to int64 exactly.
_BILLABLE_MAX = float(1 << 62)
TIMELY = np.int64(1) << np.int64(40)  # ranks a node that delivers in time above any stock
DIM_DIVISOR = 139.0
OVERSIZE_IN = 48.0

STATUS_ALLOCATED: Final = 0  # every unit allocated
STATUS_PARTIAL: Final = 1  # some units allocated, the rest backordered
STATUS_NO_FEASIBLE_NODE: Final = 2  # stock exists but no plan meets the promise
STATUS_OUT_OF_STOCK: Final = 3  # nothing can be allocated

METHOD_EXACT: Final = 0
METHOD_HEURISTIC: Final = 1


@njit(cache=True, nogil=True)
def _billable_lb(weight_lb, volume_in3):  # type: ignore[no-untyped-def]
    dim = volume_in3 / DIM_DIVISOR
    w = weight_lb if weight_lb > dim else dim
    w = min(w, _BILLABLE_MAX)
    b = np.int64(np.ceil(w - 1e-9))
    if b < 1:
        b = np.int64(1)
    return b


@njit(cache=True, nogil=True)
def _mul(count, rate):  # type: ignore[no-untyped-def]
    """count * rate (both >= 0), or COST_CAP if that is less: formed in int64 only when
    its float estimate shows it fits."""
    if float(count) * float(rate) >= _MUL_FITS:
        return COST_CAP
    p = count * rate
    return p if p < COST_CAP else COST_CAP


@njit(cache=True, nogil=True)
def _add(a, b):  # type: ignore[no-untyped-def]
    """a + b (each >= 0 and at most COST_CAP plus an input's limit), or COST_CAP if less."""
    s = a + b
    return s if s < COST_CAP else COST_CAP


# (_carrier and _package_cost are inlined where they are called: the heuristic rates a
# package for every item, open package and node, and a call passing a dozen arrays cost
# several times the rating once _carrier grew past what LLVM inlines by itself.)
@njit(cache=True, nogil=True, inline="always")
def _carrier(  # type: ignore[no-untyped-def]
    n, r, billable, units, longest, minute, deadline, zone, rates, over_per_lb, transit,
    service_cutoff, surcharge, lane_has, lane_fixed, lane_per_unit, lane_per_lb, node_cutoff,
):
    """Cheapest service for one package from node n to region r that meets the deadline.

    Returns (cost, service, ship_day, transit_days); service -1 and cost INF if none."""
    z = zone[n, r]
    width = rates.shape[2] - 1
    best_cost = INF
    best_service = -1
    best_ship = 0
    best_transit = 0
    for s in range(rates.shape[0]):
        cutoff = node_cutoff[n]
        cutoff = min(cutoff, service_cutoff[s])
        ship = 0 if minute <= cutoff else 1
        days = transit[s, z]
        if ship + days > deadline:
            continue
        # (Each part at most COST_CAP, or a surcharge: the sum fits. A cost past the cap is
        # read as the cap once the cheapest is found: the same cost as reading each so.)
        if lane_has[n, r]:
            cost = _lane_cost(lane_fixed[n, r], lane_per_unit[n, r], lane_per_lb[n, r], units,
                              billable)
        elif billable <= width:
            cost = rates[s, z, billable]
        else:
            cost = rates[s, z, width] + _mul(billable - width, over_per_lb[s, z])
        if longest > OVERSIZE_IN:
            cost += surcharge[s]
        if cost < best_cost:
            best_cost = cost
            best_service = s
            best_ship = ship
            best_transit = days
    if COST_CAP < best_cost < INF:
        best_cost = COST_CAP
    return best_cost, best_service, best_ship, best_transit


@njit(cache=True, nogil=True, inline="always")
def _lane_cost(fixed, per_unit, per_lb, units, billable):  # type: ignore[no-untyped-def]
    """A contracted lane's price for a package (the same by every service)."""
    return _add(_add(fixed, _mul(units, per_unit)), _mul(billable, per_lb))


@njit(cache=True, nogil=True)
def _allocate_orders(  # type: ignore[no-untyped-def]
    # orders
    line_start, line_end, region, minute, deadline, tier, allow_split, channel,
    # order lines (distinct SKUs within an order)
    item_u, item_qty, item_weight, item_volume, item_longest, item_floor, item_unit_extra,
    # state, updated as orders are allocated in the given order
    avail, capacity_left,
    # network
    node_enabled, blocked, zone, rates, over_per_lb, transit, service_cutoff, surcharge,
    lane_has, lane_fixed, lane_per_unit, lane_per_lb, handling, pick, node_cutoff,
    split_penalty, max_exact,
    # outputs, cut from one buffer (one argument where there were twenty-one: each costs
    # the call from Python a type check and a conversion), with room for this many
    # packages and pieces (a line's units in one package)
    out, max_pkgs, max_pieces,
):
    """Allocate orders in the given (priority) order. Returns (packages, pieces) written,
    or (-1, -1) if the room for packages or pieces is too small.

    `out` holds the outputs one after the other: seven per order (status, method, cost,
    single_cost, split_cost, pkg_first, pkg_count), one per line (backorder), eight per
    package (node, service, carrier, handling, units_cost, billable, ship_day, transit),
    three per piece (line, package, quantity) and two per order (piece_first,
    piece_count). Once all is decided they are moved together to the front of `out`, in
    the same order, each cut to what was written (the packages and pieces made, not the
    room left for them): the caller reads them from there as one run."""
    n_nodes = avail.shape[1]
    o = len(line_start)
    sizes = (o, o, o, o, o, o, o, len(item_u), max_pkgs, max_pkgs, max_pkgs, max_pkgs,
             max_pkgs, max_pkgs, max_pkgs, max_pkgs, max_pieces, max_pieces, max_pieces, o, o)
    views = []
    a = 0
    for size in sizes:
        views.append(out[a:a + size])
        a += size
    (out_status, out_method, out_cost, out_single_cost, out_split_cost, out_pkg_first,
     out_pkg_count, out_backorder, out_pkg_node, out_pkg_service, out_pkg_carrier,
     out_pkg_handling, out_pkg_units_cost, out_pkg_billable, out_pkg_ship_day,
     out_pkg_transit, out_piece_line, out_piece_pkg, out_piece_qty, out_piece_first,
     out_piece_count) = (
        views[0], views[1], views[2], views[3], views[4], views[5], views[6], views[7],
        views[8], views[9], views[10], views[11], views[12], views[13], views[14], views[15],
        views[16], views[17], views[18], views[19], views[20])
    size = 1 << max_exact
    # Scratch, reused by every order: a row per line of the longest order (which nodes
    # hold each whole), and room for its items, grown as an order needs more (a line cut
    # into pieces makes one per node it takes from).
    longest_order = 1
    for k in range(len(line_start)):
        longest_order = max(longest_order, line_end[k] - line_start[k])
    line_ok = np.empty((longest_order, n_nodes), np.bool_)  # nodes holding a line whole
    room = longest_order + n_nodes
    it_line = np.empty(room, np.int64)
    it_qty = np.empty(room, np.int64)
    it_node = np.empty(room, np.int64)  # a piece's node; -1 for a whole line (line_ok)
    m_weight = np.empty(size, np.float64)
    m_volume = np.empty(size, np.float64)
    m_units = np.empty(size, np.int64)
    m_longest = np.empty(size, np.float64)
    best = np.empty(size, np.int64)
    best_node = np.empty(size, np.int64)
    best_service = np.empty(size, np.int64)
    f = np.empty(size, np.int64)
    choice = np.empty(size, np.int64)
    unit_cost = np.empty(size, np.int64)
    item_cost = np.empty(max_exact + 1, np.int64)  # an item's units' cost at a node
    usable = np.empty(n_nodes, np.bool_)
    in_time = np.empty(n_nodes, np.bool_)
    rank = np.empty(n_nodes, np.int64)
    ats = np.empty(n_nodes, np.int64)
    order_nodes = np.empty(n_nodes, np.int64)
    # Each item's package; each package's item mask (the exact path) and node; in the
    # heuristic, each package's weight, volume, units, longest side, pick cost, cost.
    # (Grown with the items: an order has at most as many packages as items.)
    item_group = np.empty(room, np.int64)
    groups = np.empty(room, np.int64)
    group_node = np.empty(room, np.int64)
    g_weight = np.empty(room, np.float64)
    g_volume = np.empty(room, np.float64)
    g_units = np.empty(room, np.int64)
    g_longest = np.empty(room, np.float64)
    g_units_cost = np.empty(room, np.int64)
    g_cost = np.empty(room, np.int64)
    n_services = rates.shape[0]
    width = rates.shape[2] - 1
    ok_services = np.empty(n_services, np.int64)
    pkgs = 0
    pieces = 0
    for o in range(len(line_start)):
        r = region[o]
        ch = channel[o]
        penalty = split_penalty[tier[o]]
        for n in range(n_nodes):
            usable[n] = node_enabled[n] and capacity_left[n] > 0 and not (
                ch >= 0 and blocked[n, ch])
        timing = False  # in_time read for this order (when a line is first cut)
        # ---- items: whole lines, or pieces of lines no single node can fill ----------
        n_items = 0
        any_stock = False
        ls = line_start[o]
        for k in range(line_start[o], line_end[o]):
            out_backorder[k] = 0
            if n_items + n_nodes >= len(it_line):  # (room for this line's pieces)
                room = 2 * (n_items + n_nodes + 1)
                it_line = _grown(it_line, room)
                it_qty = _grown(it_qty, room)
                it_node = _grown(it_node, room)
            q = item_qty[k]
            u = item_u[k]
            whole = False
            total = np.int64(0)
            for n in range(n_nodes):
                a = avail[u, n] - item_floor[k, n]
                if a < 0 or not usable[n]:
                    a = 0
                ats[n] = a
                total += a
                line_ok[k - ls, n] = a >= q
                if a >= q:
                    whole = True
            if total > 0:
                any_stock = True
            if whole:
                it_line[n_items] = k
                it_qty[n_items] = q
                it_node[n_items] = -1
                n_items += 1
            elif allow_split[o] and total > 0:
                # Fewest pieces: nodes by most sellable units, ties to the lower index;
                # those that can deliver in time first, when they hold enough (a piece
                # from a node that cannot made the whole order infeasible).
                if not timing:
                    # Whether some service from each node meets the order's deadline
                    # (whatever the package weighs).
                    for n in range(n_nodes):
                        in_time[n] = False
                        for s_i in range(n_services):
                            cutoff = min(node_cutoff[n], service_cutoff[s_i])
                            ship = 0 if minute[o] <= cutoff else 1
                            if ship + transit[s_i, zone[n, r]] <= deadline[o]:
                                in_time[n] = True
                                break
                    timing = True
                timely = np.int64(0)
                for n in range(n_nodes):
                    if in_time[n]:
                        timely += ats[n]
                for n in range(n_nodes):
                    order_nodes[n] = n
                    rank[n] = ats[n] + (TIMELY if timely >= q and in_time[n] else 0)
                for a_i in range(n_nodes):
                    for b_i in range(a_i + 1, n_nodes):
                        na = order_nodes[a_i]
                        nb = order_nodes[b_i]
                        if rank[nb] > rank[na] or (rank[nb] == rank[na] and nb < na):
                            order_nodes[a_i] = nb
                            order_nodes[b_i] = na
                left = q
                for idx in range(n_nodes):
                    n = order_nodes[idx]
                    if left == 0 or ats[n] == 0:
                        break
                    take = ats[n] if ats[n] < left else left
                    it_line[n_items] = k
                    it_qty[n_items] = take
                    it_node[n_items] = n
                    n_items += 1
                    left -= take
                out_backorder[k] = left
            else:
                out_backorder[k] = q
        out_pkg_first[o] = pkgs
        out_piece_first[o] = pieces
        out_pkg_count[o] = 0
        out_piece_count[o] = 0
        out_single_cost[o] = -1
        out_split_cost[o] = -1
        out_cost[o] = 0
        if n_items > len(item_group):  # (as many packages as items, at most)
            room = len(it_line)
            item_group = _grown(item_group, room)
            groups = _grown(groups, room)
            group_node = _grown(group_node, room)
            g_weight = _grown_f(g_weight, room)
            g_volume = _grown_f(g_volume, room)
            g_units = _grown(g_units, room)
            g_longest = _grown_f(g_longest, room)
            g_units_cost = _grown(g_units_cost, room)
            g_cost = _grown(g_cost, room)
        if n_items == 0:
            out_status[o] = STATUS_NO_FEASIBLE_NODE if any_stock else STATUS_OUT_OF_STOCK
            out_method[o] = METHOD_EXACT
            for k in range(line_start[o], line_end[o]):
                out_backorder[k] = item_qty[k]
            continue
        n_groups = 0
        total_cost = INF
        if n_items <= max_exact:
            out_method[o] = METHOD_EXACT
            full = (np.int64(1) << np.int64(n_items)) - 1
            m_weight[0] = 0.0
            m_volume[0] = 0.0
            m_units[0] = 0
            m_longest[0] = 0.0
            for mask in range(1, full + 1):
                low = 0
                while not (mask >> low) & 1:
                    low += 1
                prev = mask & (mask - 1)
                k = it_line[low]
                q = it_qty[low]
                m_weight[mask] = m_weight[prev] + q * item_weight[k]
                m_volume[mask] = m_volume[prev] + q * item_volume[k]
                m_units[mask] = m_units[prev] + q
                lg = item_longest[k]
                m_longest[mask] = lg if lg > m_longest[prev] else m_longest[prev]
                best[mask] = INF
                best_node[mask] = -1
                best_service[mask] = -1
            # Package cost of every (node, subset of the items that node can ship).
            for n in range(n_nodes):
                node_mask = np.int64(0)
                for i in range(n_items):
                    if _ok(i, n, it_node, it_line, line_ok, ls):
                        node_mask |= np.int64(1) << np.int64(i)
                if node_mask == 0:
                    continue
                # The services that meet the deadline from this node (same for every subset).
                z = zone[n, r]
                n_ok = 0
                for s_i in range(n_services):
                    cutoff = node_cutoff[n]
                    cutoff = min(cutoff, service_cutoff[s_i])
                    ship = 0 if minute[o] <= cutoff else 1
                    if ship + transit[s_i, z] <= deadline[o]:
                        ok_services[n_ok] = s_i
                        n_ok += 1
                if n_ok == 0:
                    continue
                lane = lane_has[n, r]
                unit_cost[0] = 0
                for i in range(n_items):
                    item_cost[i] = _mul(it_qty[i], pick[n] + item_unit_extra[it_line[i], n])
                # Ascending enumeration of the submasks of node_mask.
                sub = np.int64(0)
                while True:
                    sub = (sub - node_mask) & node_mask
                    if sub == 0:
                        break
                    low = 0
                    while not (sub >> low) & 1:
                        low += 1
                    prev = sub & (sub - 1)
                    # (at most max_exact items of at most COST_CAP: the sum fits, and is
                    # read as at most COST_CAP with the rest of the package's cost)
                    unit_cost[sub] = unit_cost[prev] + item_cost[low]
                    billable = _billable_lb(m_weight[sub], m_volume[sub])
                    oversize = m_longest[sub] > OVERSIZE_IN
                    carrier_best = INF
                    service = -1
                    lane_cost = np.int64(0)
                    if lane:
                        lane_cost = _lane_cost(lane_fixed[n, r], lane_per_unit[n, r],
                                               lane_per_lb[n, r], m_units[sub], billable)
                    for j in range(n_ok):  # (as _carrier rates them)
                        s_i = ok_services[j]
                        if lane:
                            cost = lane_cost
                        elif billable <= width:
                            cost = rates[s_i, z, billable]
                        else:
                            cost = rates[s_i, z, width] + _mul(billable - width,
                                                               over_per_lb[s_i, z])
                        if oversize:
                            cost += surcharge[s_i]
                        if cost < carrier_best:
                            carrier_best = cost
                            service = s_i
                    # (carrier_best exact, or past COST_CAP: the sum fits, read at most that)
                    cost = _add(carrier_best + handling[n], unit_cost[sub])
                    if cost < best[sub]:
                        best[sub] = cost
                        best_node[sub] = n
                        best_service[sub] = service
            # Partition DP: f[mask] = cheapest packages covering mask, each + penalty.
            # (Sums of at most max_exact packages of at most COST_CAP and their penalties:
            # far below INF. Read as at most COST_CAP once the split is found.)
            f[0] = 0
            for mask in range(1, full + 1):
                low_bit = mask & (-mask)
                f[mask] = INF
                choice[mask] = 0
                sub = mask
                while sub > 0:
                    if sub & low_bit and best[sub] < INF and f[mask ^ sub] < INF:
                        c = best[sub] + penalty + f[mask ^ sub]
                        if c < f[mask]:
                            f[mask] = c
                            choice[mask] = sub
                    sub = (sub - 1) & mask
            single = best[full]
            out_single_cost[o] = single if single < INF else -1
            split = INF
            if allow_split[o]:
                low_bit = full & (-full)
                sub = (full - 1) & full
                while sub > 0:
                    if sub & low_bit and best[sub] < INF and f[full ^ sub] < INF:
                        c = best[sub] + f[full ^ sub]  # the first package pays no penalty
                        split = min(split, c)
                    sub = (sub - 1) & full
                if COST_CAP < split < INF:
                    split = COST_CAP
                out_split_cost[o] = split if split < INF else -1
            if single < INF and single <= split:
                total_cost = single
                groups[0] = full
                group_node[0] = best_node[full]
                n_groups = 1
            elif split < INF:
                total_cost = split
                # Rebuild the best split: the first package, then the DP's choices.
                low_bit = full & (-full)
                first = np.int64(0)
                sub = (full - 1) & full
                while sub > 0:
                    if (sub & low_bit and best[sub] < INF and f[full ^ sub] < INF
                            and _add(best[sub], f[full ^ sub]) == split):
                        first = sub
                        break
                    sub = (sub - 1) & full
                groups[0] = first
                group_node[0] = best_node[first]
                n_groups = 1
                rest = full ^ first
                while rest:
                    g = choice[rest]
                    groups[n_groups] = g
                    group_node[n_groups] = best_node[g]
                    n_groups += 1
                    rest ^= g
            for g in range(n_groups):
                for i in range(n_items):
                    if (groups[g] >> np.int64(i)) & 1:
                        item_group[i] = g
        else:
            out_method[o] = METHOD_HEURISTIC
            # The cheapest single package: a node that can ship every item.
            single = INF
            single_node = -1
            for n in range(n_nodes):
                weight = 0.0
                volume = 0.0
                units = np.int64(0)
                longest = 0.0
                units_cost = np.int64(0)
                every = True
                for i in range(n_items):
                    if not _ok(i, n, it_node, it_line, line_ok, ls):
                        every = False
                        break
                    k = it_line[i]
                    q = it_qty[i]
                    weight += q * item_weight[k]
                    volume += q * item_volume[k]
                    units += q
                    longest = max(longest, item_longest[k])
                    units_cost = _add(units_cost, _mul(q, pick[n] + item_unit_extra[k, n]))
                if not every:
                    continue
                cost = _package_cost(n, r, weight, volume, units, longest, units_cost,
                                     minute[o], deadline[o], zone, rates, over_per_lb,
                                     transit, service_cutoff, surcharge, lane_has, lane_fixed,
                                     lane_per_unit, lane_per_lb, handling, node_cutoff)
                if cost < single:
                    single = cost
                    single_node = n
            # Greedy: each item joins the package (open or new) that adds least cost.
            split = INF
            if allow_split[o]:
                split = 0
                for i in range(n_items):
                    k = it_line[i]
                    q = it_qty[i]
                    add_best = INF
                    add_group = -1
                    add_node = -1
                    for g in range(n_groups + 1):
                        # (an open package at its node, then a new one at each node)
                        lo = 0 if g == n_groups else group_node[g]
                        hi = n_nodes if g == n_groups else group_node[g] + 1
                        for n in range(lo, hi):
                            if not _ok(i, n, it_node, it_line, line_ok, ls):
                                continue
                            if g < n_groups:
                                after = _package_cost(
                                    n, r, g_weight[g] + q * item_weight[k],
                                    g_volume[g] + q * item_volume[k], g_units[g] + q,
                                    max(g_longest[g], item_longest[k]),
                                    _add(g_units_cost[g],
                                         _mul(q, pick[n] + item_unit_extra[k, n])),
                                    minute[o], deadline[o], zone, rates, over_per_lb, transit,
                                    service_cutoff, surcharge, lane_has, lane_fixed,
                                    lane_per_unit, lane_per_lb, handling, node_cutoff)
                                if after >= INF:
                                    continue
                                delta = after - g_cost[g]
                            else:
                                after = _package_cost(
                                    n, r, q * item_weight[k], q * item_volume[k], q,
                                    item_longest[k], _mul(q, pick[n] + item_unit_extra[k, n]),
                                    minute[o], deadline[o], zone, rates, over_per_lb, transit,
                                    service_cutoff, surcharge, lane_has, lane_fixed,
                                    lane_per_unit, lane_per_lb, handling, node_cutoff)
                                if after >= INF:
                                    continue
                                delta = after + (penalty if g > 0 else 0)
                            if delta < add_best:
                                add_best = delta
                                add_group = g
                                add_node = n
                    if add_group < 0:
                        split = INF
                        break
                    opened = add_group == n_groups
                    if opened:
                        g_weight[add_group] = 0.0
                        g_volume[add_group] = 0.0
                        g_units[add_group] = 0
                        g_longest[add_group] = 0.0
                        g_units_cost[add_group] = 0
                        g_cost[add_group] = 0
                        group_node[add_group] = add_node
                        n_groups += 1
                    g = add_group
                    n = group_node[g]
                    g_weight[g] += q * item_weight[k]
                    g_volume[g] += q * item_volume[k]
                    g_units[g] += q
                    g_longest[g] = max(g_longest[g], item_longest[k])
                    g_units_cost[g] = _add(g_units_cost[g],
                                           _mul(q, pick[n] + item_unit_extra[k, n]))
                    # (what it adds, but a new package's split penalty, is the order's)
                    g_cost[g] += add_best - (penalty if opened and g > 0 else 0)
                    item_group[i] = g
                if split < INF and n_groups == 1:
                    split = INF  # one package: a single plan, no cheaper than `single`
                elif split < INF:
                    # What the additions came to: the packages' costs and a split penalty
                    # for each after the first (summed here, saturating, not as they came:
                    # an addition may be negative, a rate card need not rise with weight).
                    split = _mul(n_groups - 1, penalty)
                    for g in range(n_groups):
                        split = _add(split, g_cost[g])
            out_single_cost[o] = single if single < INF else -1
            out_split_cost[o] = split if split < INF else -1
            if single < INF and single <= split:
                total_cost = single
                n_groups = 1
                group_node[0] = single_node
                for i in range(n_items):
                    item_group[i] = 0
            elif split < INF:
                total_cost = split
            else:
                total_cost = INF
        if total_cost >= INF:
            out_status[o] = STATUS_NO_FEASIBLE_NODE
            for k in range(line_start[o], line_end[o]):
                out_backorder[k] = item_qty[k]
            continue
        # ---- write the plan and take the stock ---------------------------------------
        if pkgs + n_groups > max_pkgs or pieces + n_items > max_pieces:
            return -1, -1
        out_cost[o] = total_cost
        for g in range(n_groups):
            n = group_node[g]
            weight = 0.0
            volume = 0.0
            units = np.int64(0)
            longest = 0.0
            units_cost = np.int64(0)
            for i in range(n_items):
                if item_group[i] == g:
                    k = it_line[i]
                    q = it_qty[i]
                    weight += q * item_weight[k]
                    volume += q * item_volume[k]
                    units += q
                    longest = max(longest, item_longest[k])
                    units_cost = _add(units_cost, _mul(q, pick[n] + item_unit_extra[k, n]))
                    out_piece_line[pieces] = k
                    out_piece_pkg[pieces] = pkgs
                    out_piece_qty[pieces] = q
                    pieces += 1
                    avail[item_u[k], n] -= q
            billable = _billable_lb(weight, volume)
            cost, service, ship, days = _carrier(
                n, r, billable, units, longest, minute[o], deadline[o], zone, rates,
                over_per_lb, transit, service_cutoff, surcharge, lane_has, lane_fixed,
                lane_per_unit, lane_per_lb, node_cutoff)
            out_pkg_node[pkgs] = n
            out_pkg_service[pkgs] = service
            out_pkg_carrier[pkgs] = cost
            out_pkg_handling[pkgs] = handling[n]
            out_pkg_units_cost[pkgs] = units_cost
            out_pkg_billable[pkgs] = billable
            out_pkg_ship_day[pkgs] = ship
            out_pkg_transit[pkgs] = days
            pkgs += 1
        # One order counts once against each node it ships from.
        for n in range(n_nodes):
            for g in range(n_groups):
                if group_node[g] == n:
                    capacity_left[n] -= 1
                    break
        out_pkg_count[o] = n_groups
        out_piece_count[o] = pieces - out_piece_first[o]
        backordered = False
        for k in range(line_start[o], line_end[o]):
            if out_backorder[k] > 0:
                backordered = True
        out_status[o] = STATUS_PARTIAL if backordered else STATUS_ALLOCATED
    _compact(out, sizes, pkgs, pieces)
    return pkgs, pieces


@njit(cache=True, nogil=True)
def _compact(out, sizes, pkgs, pieces):  # type: ignore[no-untyped-def]
    """Move the outputs (of `sizes`, in order) together to the front of `out`, the package
    outputs (8-15) cut to `pkgs` and the piece outputs (16-18) to `pieces`."""
    src = 0
    dst = 0
    for k in range(len(sizes)):
        size = sizes[k]
        filled = pkgs if 8 <= k < 16 else (pieces if 16 <= k < 19 else size)
        for i in range(filled):  # (dst <= src: a forward copy never overwrites unread data)
            out[dst + i] = out[src + i]
        src += size
        dst += filled


@njit(cache=True, nogil=True)
def _ok(i, n, it_node, it_line, line_ok, ls):  # type: ignore[no-untyped-def]
    """Whether item i may ship from node n: a piece from its own node, a whole line from
    any node that holds all of it."""
    node = it_node[i]
    if node >= 0:
        return node == n
    return line_ok[it_line[i] - ls, n]


@njit(cache=True, nogil=True)
def _grown(a, size):  # type: ignore[no-untyped-def]
    """`a` (int64) copied into the front of a new array of `size`."""
    b = np.empty(size, np.int64)
    b[:len(a)] = a
    return b


@njit(cache=True, nogil=True)
def _grown_f(a, size):  # type: ignore[no-untyped-def]
    """`a` (float64) copied into the front of a new array of `size`."""
    b = np.empty(size, np.float64)
    b[:len(a)] = a
    return b


@njit(cache=True, nogil=True, inline="always")
def _package_cost(  # type: ignore[no-untyped-def]
    n, r, weight, volume, units, longest, units_cost, minute, deadline, zone, rates,
    over_per_lb, transit, service_cutoff, surcharge, lane_has, lane_fixed, lane_per_unit,
    lane_per_lb, handling, node_cutoff,
):
    """A package's cost from its totals: the cheapest service that meets the deadline +
    handling + picks; INF if none does."""
    cost, service, _, _ = _carrier(
        n, r, _billable_lb(weight, volume), units, longest, minute, deadline, zone, rates,
        over_per_lb, transit, service_cutoff, surcharge, lane_has, lane_fixed, lane_per_unit,
        lane_per_lb, node_cutoff)
    if service < 0:
        return INF
    return _add(_add(cost, handling[n]), units_cost)
