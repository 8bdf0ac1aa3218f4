"""Substitution within a SKU's group gives each substitute's units to one line only: two
backordered lines of an order never both take the same SKU's last units (which the ledger
then refuses, and with it every order of the batch, or a short pick's record)."""

from __future__ import annotations

import dataclasses

from core import commands as c
from core.exceptions import ExceptionType
from core.ledger import Ledger, LedgerSettings
from core.model import Bucket, ChannelSpec, NodeSpec, SkuSpec
from core.network import SlaTier
from core.operations import execute
from core.order_ops import quote_order
from core.orders import OptionKind, OrderLineSpec, OrderSpec, PackageStatus
from tests.unit.test_orders_stateful import NETWORK, NOW


def _ledger(stock: dict[str, int]) -> Ledger:
    """One node; "a", "b" and "x" substitute for each other, "c" for nothing."""
    ledger = Ledger(LedgerSettings(n_shards=2))
    for command in (
            c.UpsertNodes((NodeSpec("n0", latitude=40.0, longitude=-75.0),)),
            c.UpsertChannels((ChannelSpec("web"),)),
            c.UpsertSkus(tuple(
                SkuSpec(s, weight_lb=1.0, length_in=6, width_in=4, height_in=2,
                        unit_cost_micros=3_000_000, price_micros=9_000_000 + i,
                        substitution_group="" if s == "c" else "g")
                for i, s in enumerate(["a", "b", "x", "c"]))),
            c.SetNetwork(dataclasses.replace(NETWORK, node_costs=NETWORK.node_costs[:1])),
            c.ReceiveStock(tuple(c.ReceiptLine(s, "n0", q) for s, q in stock.items()))):
        execute(ledger, command, NOW)
    return ledger


def _order(order_id: str, lines: list[tuple[str, int]], substitute: bool = True) -> OrderSpec:
    return OrderSpec(order_id, "web", SlaTier.STANDARD,
                     tuple(OrderLineSpec(str(i), s, q) for i, (s, q) in enumerate(lines)),
                     postal_code="10001", allow_substitution=substitute)


def _placed(ledger: Ledger, sku: str) -> int:
    return ledger.quantity(ledger.catalog.sku(sku), 0, Bucket.ALLOCATED)


def test_two_lines_short_of_stock_do_not_both_take_one_substitute_s_units():
    ledger = _ledger({"b": 3, "c": 5})
    order = _order("o1", [("a", 2), ("x", 2)])
    quote = quote_order(ledger, order, NOW)
    promised = [(line.line_id, line.quantity) for p in quote.packages for line in p.lines]
    assert promised == [("0", 2)]  # b for one line; the other stays backordered
    outcome = execute(ledger, c.AllocateOrders((_order("ok1", [("c", 1)], False), order)), NOW)
    assert [o.error for o in outcome.detail.outcomes] == [None, None]
    assert _placed(ledger, "b") == 2 and _placed(ledger, "c") == 1
    record = ledger.orders.orders["o1"]
    assert {b.line_id: b.quantity for b in record.backorders.values()} == {"1": 2}
    assert [kind for o in outcome.detail.outcomes for kind in [o.exception_type] if kind] == [
        ExceptionType.BACKORDER]


def test_a_pick_short_on_two_lines_is_recorded_and_substitutes_one_of_them():
    ledger = _ledger({"a": 2, "x": 2, "b": 3})
    execute(ledger, c.AllocateOrders((_order("o1", [("a", 2), ("x", 2)]),)), NOW)
    execute(ledger, c.ReleaseWave("n0", 0), NOW)
    (package_id,) = ledger.orders.orders["o1"].package_ids
    picked = execute(ledger, c.ConfirmPick(package_id, (("0", 0), ("1", 0))), NOW)
    assert picked.detail.short == 4
    # (Picked empty: nothing of it is left to ship.)
    assert ledger.orders.packages[package_id].status == PackageStatus.CANCELLED
    assert _placed(ledger, "b") == 2  # one line of 2 from b's 3; the other backordered
    assert ledger.quantity(ledger.catalog.sku("b"), 0, Bucket.AVAILABLE) == 1


def test_an_order_that_may_not_split_ships_whole_with_a_substitute_or_not_at_all():
    """"a" is in stock at n0, "x" out of stock with "b" in its group. The order may not
    split: "a" now and "x" later would be two packages, so it waits whole; substituting
    "b" for "x" ships it whole now, "a" as ordered, in one package. With "c" (no group)
    for "x", nothing ships: "a" waits with it and is not swapped for another SKU."""
    ledger = _ledger({"a": 3, "b": 3})
    order = _order("o1", [("a", 1), ("x", 1)])._replace(allow_split=False)
    quote = quote_order(ledger, order, NOW)
    (package,) = quote.packages
    assert [(line.line_id, ledger.catalog.sku_ids[line.sku], line.substitutes_sku)
            for line in package.lines] == [("0", "a", -1), ("1", "b", ledger.catalog.sku("x"))]
    assert not quote.backorders and "ships complete with substitutes: x -> b" in quote.rule
    assert [o.kind for o in quote.options if o.chosen] == [OptionKind.SUBSTITUTE]
    execute(ledger, c.AllocateOrders((order,)), NOW)
    assert len(ledger.orders.orders["o1"].package_ids) == 1 and _placed(ledger, "b") == 1
    assert _placed(ledger, "a") == 1
    # Nothing placed at all: the substitute may be the one package.
    whole = _order("o2", [("x", 2)])._replace(allow_split=False)
    execute(ledger, c.AllocateOrders((whole,)), NOW)
    assert len(ledger.orders.orders["o2"].package_ids) == 1 and _placed(ledger, "b") == 3
    # "c" has no substitute: the order waits whole, "a" neither shipped nor swapped.
    held = _order("o3", [("a", 1), ("c", 1)])._replace(allow_split=False)
    execute(ledger, c.AllocateOrders((held,)), NOW)
    record = ledger.orders.orders["o3"]
    assert not record.package_ids and _placed(ledger, "a") == 1
    assert sorted(b.line_id for b in record.backorders.values()) == ["0", "1"]
    assert "may not split" in record.last_decision.rule


def test_an_order_held_whole_is_not_given_one_of_its_own_skus_as_a_substitute():
    """"a" and "b" (three each) are in stock and ordered; "x", their group's third, is not.
    Held whole, the order may not take three more "b" for its "x": with its own "b" line
    that is four of the three (the command failed, refused by the ledger). It waits."""
    ledger = _ledger({"a": 3, "b": 3})
    order = _order("o1", [("a", 1), ("b", 1), ("x", 3)])._replace(allow_split=False)
    execute(ledger, c.AllocateOrders((order,)), NOW)
    record = ledger.orders.orders["o1"]
    assert not record.package_ids and _placed(ledger, "a") == _placed(ledger, "b") == 0
    assert sorted(b.line_id for b in record.backorders.values()) == ["0", "1", "2"]


def test_a_scarce_substitute_goes_to_the_batch_s_higher_priority_order():
    ledger = _ledger({"b": 1})
    standard = _order("o-std", [("a", 1)])
    premium = _order("o-prem", [("a", 1)])._replace(tier=SlaTier.PREMIUM)
    execute(ledger, c.AllocateOrders((standard, premium)), NOW)  # standard listed first
    assert ledger.orders.orders["o-prem"].package_ids
    assert not ledger.orders.orders["o-std"].package_ids


def test_a_substitute_in_a_batch_respects_the_capacity_its_earlier_orders_took():
    """n0 ships one order a day. In one batch the first order takes n0's slot; the second's
    substitute went to n0 too (read against the book, which did not count the batch's own
    orders yet): two orders on a node of one. As in commands of their own, n1 ships it."""
    ledger = Ledger(LedgerSettings(n_shards=2))
    for command in (
            c.UpsertNodes((NodeSpec("n0", latitude=40.0, longitude=-75.0, daily_capacity=1),
                           NodeSpec("n1", latitude=34.0, longitude=-118.0))),
            c.UpsertChannels((ChannelSpec("web"),)),
            c.UpsertSkus(tuple(
                SkuSpec(s, weight_lb=1.0, unit_cost_micros=3_000_000,
                        price_micros=9_000_000 + i, substitution_group="" if s == "c" else "g")
                for i, s in enumerate(["a", "b", "c"]))),
            c.SetNetwork(dataclasses.replace(NETWORK, node_costs=NETWORK.node_costs[:2])),
            c.ReceiveStock((c.ReceiptLine("c", "n0", 3), c.ReceiptLine("b", "n0", 3),
                            c.ReceiptLine("b", "n1", 3)))):
        execute(ledger, command, NOW)
    first = _order("o1", [("c", 1)], False)._replace(tier=SlaTier.PREMIUM)
    execute(ledger, c.AllocateOrders((first, _order("o2", [("a", 1)]))), NOW)
    nodes = {order_id: {ledger.orders.packages[p].plan.node
                        for p in ledger.orders.orders[order_id].package_ids}
             for order_id in ("o1", "o2")}
    assert nodes == {"o1": {0}, "o2": {1}}
