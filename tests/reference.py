"""Slow pure-Python twins of the Numba kernels. Tests compare the kernels against them."""

from __future__ import annotations

import numpy as np

QTY_MAX = 2**31 - 1


def apply_moves(qty, skus, nodes, from_b, to_b, amount, floor) -> int:
    """Reference for _apply_moves: apply to a copy, commit only if every move is valid."""
    work = qty.astype(np.int64).copy()
    for i in range(len(skus)):
        s, n, q, f, t = int(skus[i]), int(nodes[i]), int(amount[i]), int(from_b[i]), int(to_b[i])
        if f >= 0 and work[s, n, f] - q < floor[i]:
            return i
        if t >= 0 and work[s, n, t] + q > QTY_MAX:
            return i
        if f >= 0:
            work[s, n, f] -= q
        if t >= 0:
            work[s, n, t] += q
    qty[...] = work.astype(qty.dtype)
    return -1


def safety_at(s, n, sku_safety, safety_override, node_safety, network_safety) -> int:
    if safety_override.shape[0] and safety_override[s, n] >= 0:
        return int(safety_override[s, n])
    if sku_safety[s] >= 0:
        return int(sku_safety[s])
    if node_safety[n] >= 0:
        return int(node_safety[n])
    return int(network_safety)


def fenced_for_others(s, n, fence_row, fence_qty, channel) -> int:
    if not fence_row.shape[0] or fence_row[s, n] < 0:
        return 0
    row = fence_qty[fence_row[s, n]]
    per_channel = [int(x) for x in row[:-1]]
    return sum(q for c, q in enumerate(per_channel) if c != channel)


def available_to_sell(qty, skus, nodes, node_enabled, channel, sku_safety, safety_override,
                      node_safety, network_safety, fence_row, fence_qty):
    shape = (len(skus), len(nodes))
    out = [np.zeros(shape, np.int64) for _ in range(4)]
    for i, s in enumerate(skus):
        for j, n in enumerate(nodes):
            available = int(qty[s, n, 0])
            safety = safety_at(s, n, sku_safety, safety_override, node_safety, network_safety)
            fenced = fenced_for_others(s, n, fence_row, fence_qty, channel)
            ats = max(0, available - safety - fenced) if node_enabled[n] else 0
            for k, v in enumerate((available, safety, fenced, ats)):
                out[k][i, j] = v
    return out


def expired_slots(expires_ms, active, now_ms) -> list[int]:
    return [i for i in range(len(expires_ms)) if active[i] and expires_ms[i] <= now_ms]


def bucket_totals(qty, n_skus, n_nodes) -> np.ndarray:
    return qty[:n_skus, :n_nodes].astype(np.int64).sum(axis=(0, 1))


# ---- allocation ----------------------------------------------------------------------
INF = 1 << 62
#: The kernel reads every cost as at most this (core.network.COST_CAP). The functions
#: below compute costs exactly with Python ints and read them as the kernel does,
#: min(cost, cap), where the kernel looks at them; with cap=None they stay exact.
COST_CAP = 10**17


def _capped(cost, cap):
    return cost if cap is None else min(cost, cap)


def billable_lb(weight, volume):
    w = max(weight, volume / 139.0)
    return max(1, int(np.ceil(w - 1e-9)))


def carrier(net, n, r, billable, units, longest, minute, deadline, cap=COST_CAP):
    """Cheapest qualifying service: (cost, service) or (INF, -1). (The cost is read as at
    most `cap` once the cheapest is found: past it, which service is named may differ from
    the kernel's, whose price past the cap is not exact either; the cost is the same.)"""
    z = int(net["zone"][n, r])
    rates = net["rates"]
    width = rates.shape[2] - 1
    best = (INF, -1)
    for s in range(rates.shape[0]):
        cutoff = min(int(net["node_cutoff"][n]), int(net["service_cutoff"][s]))
        ship = 0 if minute <= cutoff else 1
        if ship + int(net["transit"][s, z]) > deadline:
            continue
        if net["lane_has"][n, r]:
            cost = (int(net["lane_fixed"][n, r]) + int(net["lane_per_unit"][n, r]) * units
                    + int(net["lane_per_lb"][n, r]) * billable)
        elif billable <= width:
            cost = int(rates[s, z, billable])
        else:
            cost = int(rates[s, z, width]) + (billable - width) * int(net["over_per_lb"][s, z])
        if longest > 48.0:
            cost += int(net["surcharge"][s])
        if best[1] < 0 or cost < best[0]:
            best = (cost, s)
    return (_capped(best[0], cap), best[1]) if best[1] >= 0 else best


def block_cost(net, order, items, block, n, cap=COST_CAP):
    """Cost of shipping `block` (item indices) from node n in one package, or None if no
    service qualifies."""
    weight = sum(items[i]["qty"] * order["weight"][items[i]["line"]] for i in block)
    volume = sum(items[i]["qty"] * order["volume"][items[i]["line"]] for i in block)
    units = sum(items[i]["qty"] for i in block)
    longest = max(order["longest"][items[i]["line"]] for i in block)
    cost, service = carrier(net, n, order["region"], billable_lb(weight, volume), units,
                            longest, order["minute"], order["deadline"], cap)
    if service < 0:
        return None
    picks = sum(items[i]["qty"] * (int(net["pick"][n]) + int(order["extra"][items[i]["line"], n]))
                for i in block)
    return _capped(cost + int(net["handling"][n]) + picks, cap)


def package_cost(net, order, items, block, n, cap=COST_CAP):
    """block_cost, INF where no service qualifies."""
    cost = block_cost(net, order, items, block, n, cap)
    return INF if cost is None else cost


def set_partitions(elements):
    if not elements:
        yield []
        return
    first, rest = elements[0], elements[1:]
    for partition in set_partitions(rest):
        yield [[first], *partition]
        for i in range(len(partition)):
            yield [*partition[:i], [first, *partition[i]], *partition[i + 1:]]


def order_items(net, order, avail, capacity_left):
    """The order's items: whole lines with the nodes that can ship them, or pieces of a
    line no node can fill (fewest pieces: most sellable units first, ties to the lower
    node; from nodes that can deliver by the deadline first, when those hold enough).
    Returns (items, backorder per line, whether any node has any stock)."""
    n_nodes = avail.shape[1]
    ch = order["channel"]
    usable = [bool(net["node_enabled"][n]) and capacity_left[n] > 0
              and not (ch >= 0 and net["blocked"][n, ch]) for n in range(n_nodes)]
    in_time = [any((0 if order["minute"] <= min(int(net["node_cutoff"][n]),
                                                 int(net["service_cutoff"][s])) else 1)
                   + int(net["transit"][s, int(net["zone"][n, order["region"]])])
                   <= order["deadline"] for s in range(net["rates"].shape[0]))
               for n in range(n_nodes)]
    items = []
    backorder = []
    any_stock = False
    for line, (u, q) in enumerate(zip(order["u"], order["qty"], strict=True)):
        ats = [max(0, int(avail[u, n]) - int(order["floor"][line, n])) if usable[n] else 0
               for n in range(n_nodes)]
        any_stock |= sum(ats) > 0
        cand = {n for n in range(n_nodes) if ats[n] >= q}
        if cand:
            items.append({"line": line, "qty": q, "cand": cand})
            backorder.append(0)
        elif order["allow_split"] and sum(ats) > 0:
            left = q
            timely = sum(ats[n] for n in range(n_nodes) if in_time[n]) >= q
            for n in sorted(range(n_nodes),
                            key=lambda n: (not (timely and in_time[n]), -ats[n], n)):
                if left == 0 or ats[n] == 0:
                    break
                take = min(ats[n], left)
                items.append({"line": line, "qty": take, "cand": {n}})
                left -= take
            backorder.append(left)
        else:
            backorder.append(q)
    return items, backorder, any_stock


def allocate_order(net, order, avail, capacity_left, cap=COST_CAP):
    """Brute force over every partition of the items into packages and every node per
    package. Returns (status, cost, single_cost, split_cost, backorder per line). With
    cap=None the costs are exact, however large."""
    items, backorder, any_stock = order_items(net, order, avail, capacity_left)
    if not items:
        status = 2 if any_stock else 3
        return status, 0, -1, -1, list(order["qty"])
    single = split = None
    penalty = int(net["split_penalty"][order["tier"]])
    for partition in set_partitions(list(range(len(items)))):
        if len(partition) > 1 and not order["allow_split"]:
            continue
        total = penalty * (len(partition) - 1)
        for block in partition:
            nodes = set.intersection(*(items[i]["cand"] for i in block))
            costs = [c for c in (block_cost(net, order, items, block, n, cap)
                                 for n in sorted(nodes)) if c is not None]
            if not costs:
                total = None
                break
            total += min(costs)
        if total is None:
            continue
        total = _capped(total, cap)
        if len(partition) == 1:
            single = total if single is None else min(single, total)
        else:
            split = total if split is None else min(split, total)
    if single is None and split is None:
        return 2, 0, -1, -1, list(order["qty"])
    cost = single if split is None or (single is not None and single <= split) else split
    status = 1 if any(backorder) else 0
    return (status, cost, -1 if single is None else single, -1 if split is None else split,
            backorder)


def heuristic_order(net, order, avail, capacity_left, cap=COST_CAP):
    """The kernel's heuristic for orders past the exact path, step by step: the cheapest
    single package, against a greedy split where each item (in order) joins the package,
    open or new (nodes in index order, the first of equal costs), that adds least cost, a
    new package after the first paying the split penalty. Returns what `allocate_order`
    does, and the packages as [node, [item indices]]. Its choices compare package costs
    as the kernel reads them (cap); the costs it returns are those choices' costs."""
    items, backorder, any_stock = order_items(net, order, avail, capacity_left)
    if not items:
        return (2 if any_stock else 3), 0, -1, -1, list(order["qty"]), []
    n_nodes = avail.shape[1]
    everything = list(range(len(items)))
    single, single_node = None, -1
    for n in range(n_nodes):
        if all(n in item["cand"] for item in items):
            cost = block_cost(net, order, items, everything, n, cap)
            if cost is not None and (single is None or cost < single):
                single, single_node = cost, n
    penalty = int(net["split_penalty"][order["tier"]])
    split, groups = None, []
    if order["allow_split"]:
        split = 0
        for i, item in enumerate(items):
            best = None  # (delta, group, node)
            for g in range(len(groups) + 1):
                for n in range(n_nodes):
                    if n not in item["cand"]:
                        continue
                    if g < len(groups):
                        if groups[g][0] != n:
                            continue
                        after = block_cost(net, order, items, groups[g][1] + [i], n, cap)
                        if after is None:
                            continue
                        delta = after - block_cost(net, order, items, groups[g][1], n, cap)
                    else:
                        after = block_cost(net, order, items, [i], n, cap)
                        if after is None:
                            continue
                        delta = after + (penalty if g > 0 else 0)
                    if best is None or delta < best[0]:
                        best = (delta, g, n)
            if best is None:
                split, groups = None, []
                break
            if best[1] == len(groups):
                groups.append([best[2], []])
            groups[best[1]][1].append(i)
            split += best[0]
        if split is not None and len(groups) == 1:
            split = None  # one package: a single plan, no cheaper than the best single
        if split is not None:
            split = _capped(split, cap)
    if single is None and split is None:
        return 2, 0, -1, -1, list(order["qty"]), []
    if split is None or (single is not None and single <= split):
        cost, plan = single, [[single_node, everything]]
    else:
        cost, plan = split, groups
    status = 1 if any(backorder) else 0
    return (status, cost, -1 if single is None else single, -1 if split is None else split,
            backorder, plan)
