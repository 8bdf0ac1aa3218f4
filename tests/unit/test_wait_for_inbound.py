"""Waiting for inbound stock to ship complete from one node: which nodes are weighed.

A node is a candidate only when every line it lacks has inbound stock there; the cheapest
candidate that meets the promise is the option, chosen when it beats the split."""

from __future__ import annotations

import pytest

from core import commands as c
from core.model import Bucket, EventKind
from core.operations import execute
from core.orders import OptionKind
from tests.unit.test_orders_stateful import DAY_MS, NOW
from tests.unit.test_reopt import _ledger, _order


def _wait_option(ledger, order_id):
    decision = ledger.orders.orders[order_id].last_decision
    (option,) = [o for o in decision.options if o.kind == OptionKind.WAIT_FOR_INBOUND]
    return decision, option


def test_a_node_lacking_a_line_without_inbound_there_is_not_weighed():
    # a at n0, b at n2: a split. b arrives at n1, but n1 lacks a too, with none inbound.
    ledger = _ledger({("a", "n0"): 1, ("b", "n2"): 1})
    execute(ledger, c.ExpectInbound("PO-1", (c.InboundLine("b", "n1", 5, NOW + DAY_MS),)), NOW)
    execute(ledger, c.AllocateOrders((_order("split", {"a": 1, "b": 1}),)), NOW)
    decision, option = _wait_option(ledger, "split")
    assert len(decision.packages) == 2
    assert not option.feasible and not option.chosen
    assert "no inbound lets one node ship complete" in option.detail


def test_the_node_whose_inbound_covers_every_missing_line_is_weighed():
    # As above, and b arrives at n0 too: n0 has a now and b tomorrow, so the order waits
    # to ship complete from n0; n1 (lacking a) is still not weighed.
    ledger = _ledger({("a", "n0"): 1, ("b", "n2"): 1})
    execute(ledger, c.ExpectInbound("PO-1", (c.InboundLine("b", "n1", 5, NOW + DAY_MS),
                                             c.InboundLine("b", "n0", 5, NOW + DAY_MS))), NOW)
    execute(ledger, c.AllocateOrders((_order("waits", {"a": 1, "b": 1}),)), NOW)
    decision, option = _wait_option(ledger, "waits")
    assert option.feasible and option.chosen
    assert "ship complete from n0 after inbound arrives" in option.detail
    assert not decision.packages and {b.line_id for b in decision.backorders} == {"0", "1"}


def test_inbound_too_small_for_the_missing_units_does_not_make_a_candidate():
    # Two b are ordered; n0 has one a and one b, and one more b arrives there: enough.
    # With only that one arriving and three ordered, n0 stays short: no candidate.
    ledger = _ledger({("a", "n0"): 1, ("b", "n0"): 1, ("b", "n2"): 2})
    execute(ledger, c.ExpectInbound("PO-1", (c.InboundLine("b", "n0", 1, NOW + DAY_MS),)), NOW)
    execute(ledger, c.AllocateOrders((_order("three", {"a": 1, "b": 3}),)), NOW)
    _, option = _wait_option(ledger, "three")
    assert not option.feasible


@pytest.mark.parametrize(("arriving", "weighed"), [(2, False), (3, True)])
def test_inbound_counts_only_above_the_safety_stock_it_refills(arriving, weighed):
    # As the covering case, but n0 keeps two b as safety stock and has none: two arriving
    # only refill it (n0 could not ship b after all); a third would be sellable.
    ledger = _ledger({("a", "n0"): 1, ("b", "n2"): 1})
    execute(ledger, c.SetSafetyStock("b", "n0", 2), NOW)
    execute(ledger, c.ExpectInbound("PO-1", (c.InboundLine("b", "n0", arriving,
                                                           NOW + DAY_MS),)), NOW)
    execute(ledger, c.AllocateOrders((_order("o", {"a": 1, "b": 1}),)), NOW)
    decision, option = _wait_option(ledger, "o")
    assert option.feasible == weighed
    assert weighed == ("ship complete from n0 after inbound arrives" in option.detail)
    assert len(decision.packages) == (0 if weighed else 2)


def test_a_batch_s_later_order_waits_only_on_what_its_earlier_orders_left():
    """n0 has 5 "a" and 5 more arrive tomorrow. In one batch, the first order takes the 5 on
    hand; the second (6, may not split) was told to wait for the 5 arriving, read against
    the stock before the batch: 5 cannot cover 6. As it is in a command of its own."""
    from core.network import SlaTier

    answers = []
    for together in (True, False):
        ledger = _ledger({("a", "n0"): 5})
        execute(ledger, c.ExpectInbound("PO-1", (c.InboundLine("a", "n0", 5, NOW + DAY_MS),)),
                NOW)
        first = _order("first", {"a": 5})._replace(tier=SlaTier.PREMIUM)
        second = _order("second", {"a": 6})._replace(allow_split=False)
        batches = [(first, second)] if together else [(first,), (second,)]
        for batch in batches:
            execute(ledger, c.AllocateOrders(batch), NOW)
        decision, option = _wait_option(ledger, "second")
        answers.append((option.feasible, option.chosen, decision.rule))
        assert not option.chosen and not decision.packages
    assert answers[0] == answers[1]


def test_a_batch_s_later_order_gets_what_an_earlier_order_s_split_gave_up_to_wait():
    """The first order (a at n0, b at n2: a split) waits instead to ship complete from n0,
    where b arrives tomorrow. The batch's kernel had given it the split, so the second
    order (one b) saw none left at n2 and was backordered; in a command of its own it
    ships from n2. Together or apart, it now ships from n2."""
    from core.network import SlaTier

    answers = []
    for together in (True, False):
        ledger = _ledger({("a", "n0"): 1, ("b", "n2"): 1})
        execute(ledger, c.ExpectInbound("PO-1", (c.InboundLine("b", "n0", 5, NOW + DAY_MS),)),
                NOW)
        first = _order("first", {"a": 1, "b": 1})._replace(tier=SlaTier.PREMIUM)
        second = _order("second", {"b": 1})
        batches = [(first, second)] if together else [(first,), (second,)]
        for batch in batches:
            execute(ledger, c.AllocateOrders(batch), NOW)
        waited, _ = _wait_option(ledger, "first")
        assert not waited.packages and waited.backorders
        later = ledger.orders.orders["second"].last_decision
        answers.append(([plan.node for plan in later.packages], later.backorders,
                        later.cost_micros))
    assert answers[0] == answers[1] == ([2], (), answers[1][2])


def test_a_backorder_s_promise_counts_the_inbound_units_earlier_backorders_were_promised():
    """10 "a" arrive in two days and 10 more in five. Two orders of 8 backordered: the
    first is promised the first arrival; the second was promised it too (8 of 10 left for
    it, though the first had them), in one batch or two. It is promised the second
    arrival now; and the first arrival again once the first order's backorder is cancelled."""
    from core.network import SlaTier

    for together in (True, False):
        ledger = _ledger({})
        execute(ledger, c.ExpectInbound("PO-1", (
            c.InboundLine("a", "n0", 10, NOW + 2 * DAY_MS),
            c.InboundLine("a", "n1", 10, NOW + 5 * DAY_MS))), NOW)
        first = _order("first", {"a": 8})._replace(tier=SlaTier.PREMIUM)
        second = _order("second", {"a": 8})
        for batch in [(first, second)] if together else [(first,), (second,)]:
            execute(ledger, c.AllocateOrders(batch), NOW)
        promised = {order_id: ledger.orders.orders[order_id].last_decision.backorders[0]
                    .promise_ms for order_id in ("first", "second")}
        assert promised == {"first": NOW + 2 * DAY_MS, "second": NOW + 5 * DAY_MS}
        assert ledger.orders.promised.get(ledger.catalog.sku("a")) == {"web": 16}
    execute(ledger, c.CancelOrder("first"), NOW)
    assert ledger.orders.promised.get(ledger.catalog.sku("a")) == {"web": 8}
    execute(ledger, c.AllocateOrders((_order("third", {"a": 2}),)), NOW)
    third = ledger.orders.orders["third"].last_decision.backorders[0]
    assert third.promise_ms == NOW + 2 * DAY_MS  # 8 + 2 of the first 10
    execute(ledger, c.AllocateOrders((_order("fourth", {"a": 1}),)), NOW)
    fourth = ledger.orders.orders["fourth"].last_decision.backorders[0]
    assert fourth.promise_ms == NOW + 5 * DAY_MS


def test_orders_decided_again_together_count_each_other_s_claims_once():
    """A cancelled inbound decides the orders it concerns again, together: each counted
    the others' open backorders and, again, what the batch decided for them. 10 "a" come
    on day 2, 10 on day 5, 10 on day 8; two orders of 5 were promised day 2. With the day-5
    purchase cancelled, both still fit in day 2's ten."""
    from core.network import SlaTier

    ledger = _ledger({})
    execute(ledger, c.ExpectInbound("PO-1", (c.InboundLine("a", "n0", 10, NOW + 2 * DAY_MS),)),
            NOW)
    execute(ledger, c.ExpectInbound("PO-2", (c.InboundLine("a", "n0", 10, NOW + 5 * DAY_MS),)),
            NOW)
    execute(ledger, c.ExpectInbound("PO-3", (c.InboundLine("a", "n0", 10, NOW + 8 * DAY_MS),)),
            NOW)
    first = _order("first", {"a": 5})._replace(tier=SlaTier.PREMIUM)
    execute(ledger, c.AllocateOrders((first, _order("second", {"a": 5}))), NOW)

    def promised():
        return {o: ledger.orders.orders[o].last_decision.backorders[0].promise_ms
                for o in ("first", "second")}

    assert promised() == {"first": NOW + 2 * DAY_MS, "second": NOW + 2 * DAY_MS}
    execute(ledger, c.CancelInbound("PO-2", ()), NOW)
    assert promised() == {"first": NOW + 2 * DAY_MS, "second": NOW + 2 * DAY_MS}
    assert ledger.orders.promised == {ledger.catalog.sku("a"): {"web": 10}}


@pytest.mark.parametrize("together", [True, False])
def test_an_order_waits_only_for_inbound_units_not_promised_to_earlier_orders(together):
    """No "b" on hand; 3 arrive at n0 on day 1 and 3 more on day 4. Two orders of three b
    that may not split both wait to ship complete from n0. The first is promised day 1's
    three; the second was promised them too (day 1's arrival covered its three, though
    the first's backorder had them). It waits for day 4's now, in one batch or two; with
    that arrival cancelled, it cannot wait at n0 at all."""
    from core.network import SlaTier

    ledger = _ledger({("a", "n0"): 2})
    execute(ledger, c.ExpectInbound("PO-1", (c.InboundLine("b", "n0", 3, NOW + DAY_MS),)),
            NOW)
    execute(ledger, c.ExpectInbound("PO-2", (c.InboundLine("b", "n0", 3, NOW + 4 * DAY_MS),)),
            NOW)
    first = _order("first", {"b": 3})._replace(tier=SlaTier.PREMIUM, allow_split=False)
    second = _order("second", {"b": 3})._replace(allow_split=False)
    for batch in [(first, second)] if together else [(first,), (second,)]:
        execute(ledger, c.AllocateOrders(batch), NOW)
    promises = {}
    for order_id in ("first", "second"):
        decision, option = _wait_option(ledger, order_id)
        assert option.chosen and not decision.packages, order_id
        (backorder,) = decision.backorders
        promises[order_id] = backorder.promise_ms
    assert promises["second"] - promises["first"] == 3 * DAY_MS
    execute(ledger, c.CancelInbound("PO-2", ()), NOW)
    decision, option = _wait_option(ledger, "second")
    assert not option.feasible and not decision.packages
    assert all(b.promise_ms != promises["first"] for b in decision.backorders)


@pytest.mark.parametrize("allow_split", [False, True])
def test_an_order_that_may_not_split_waits_to_ship_whole_rather_than_ship_part_now(
        allow_split):
    """n0 has the "a" and none of the three "b", which arrive there tomorrow. Shipping the
    a now and the b when it comes is two packages: an order that may not split waits and
    ships both together; one that may, ships the a now and backorders the b."""
    ledger = _ledger({("a", "n0"): 2})
    execute(ledger, c.ExpectInbound("PO-1", (c.InboundLine("b", "n0", 3, NOW + DAY_MS),)),
            NOW)
    order = _order("o", {"a": 1, "b": 3})._replace(allow_split=allow_split)
    execute(ledger, c.AllocateOrders((order,)), NOW)
    decision, option = _wait_option(ledger, "o")
    assert option.feasible and option.chosen == (not allow_split)
    if allow_split:
        assert [[line.line_id for line in p.lines] for p in decision.packages] == [["0"]]
        assert [b.line_id for b in decision.backorders] == ["1"]
    else:
        assert not decision.packages
        assert sorted(b.line_id for b in decision.backorders) == ["0", "1"]
        assert len({b.promise_ms for b in decision.backorders}) == 1


@pytest.mark.parametrize(("together", "fence_lifted"),
                         [(True, False), (False, False), (True, True)])
def test_a_backorder_s_promise_counts_what_other_channels_were_promised_of_the_sku(
        together, fence_lifted):
    """10 "a" arrive in two days and 10 more in five, sellable to both channels (no node
    blocks either, no fence). A web order of 8 is promised the first arrival; a
    marketplace order of 8 was promised it too (its channel had no claims), in one batch
    or two. It is promised the second now; and the first again once the web order is
    cancelled."""
    import dataclasses

    from core.network import SlaTier
    from tests.unit.test_orders_stateful import NETWORK

    ledger = _ledger({})
    execute(ledger, c.SetNetwork(dataclasses.replace(NETWORK, node_costs=tuple(
        dataclasses.replace(costs, blocked_channels=()) for costs in NETWORK.node_costs))),
        NOW)
    if fence_lifted:  # (a fence there was, set back to nothing: no fence)
        execute(ledger, c.SetRingFence((c.FenceLine("a", "n0", "mkt", 3),)), NOW)
        execute(ledger, c.SetRingFence((c.FenceLine("a", "n0", "mkt", 0),)), NOW)
    execute(ledger, c.ExpectInbound("PO-1", (
        c.InboundLine("a", "n0", 10, NOW + 2 * DAY_MS),
        c.InboundLine("a", "n1", 10, NOW + 5 * DAY_MS))), NOW)
    web = _order("web", {"a": 8})._replace(tier=SlaTier.PREMIUM)
    mkt = _order("mkt", {"a": 8})._replace(channel_id="mkt")
    for batch in [(web, mkt)] if together else [(web,), (mkt,)]:
        execute(ledger, c.AllocateOrders(batch), NOW)

    def promised(order_id: str) -> int:
        (backorder,) = ledger.orders.orders[order_id].last_decision.backorders
        return backorder.promise_ms

    assert (promised("web"), promised("mkt")) == (NOW + 2 * DAY_MS, NOW + 5 * DAY_MS)
    execute(ledger, c.CancelOrder("web"), NOW)
    execute(ledger, c.AllocateOrders((_order("later", {"a": 2})._replace(
        channel_id="mkt"),)), NOW)
    assert promised("later") == NOW + 2 * DAY_MS  # 8 + 2 of the first 10


def test_channels_that_see_the_inbound_stock_differently_count_only_their_own_claims():
    """Where a node blocks one channel (n2 does not ship the marketplace), what one
    channel was promised may come from units the other cannot be sold: each counts its
    own claims only (the marketplace's 3 from n0 do not push the web order's 9, which
    n2's 9 cover tomorrow). So where a fence keeps units for a channel."""
    import dataclasses

    from core.network import SlaTier
    from core.orders import OrderLineSpec, OrderSpec
    from tests.unit.test_orders_stateful import NETWORK

    def promised(ledger, order_id: str, channel: str, qty: int) -> int:
        spec = OrderSpec(order_id, channel, SlaTier.STANDARD,
                         (OrderLineSpec("1", "a", qty),), postal_code="10001")
        execute(ledger, c.AllocateOrders((spec,)), NOW)
        (backorder,) = ledger.orders.orders[order_id].backorders.values()
        return backorder.promise_ms

    blocked = _ledger({})
    execute(blocked, c.ExpectInbound("po1", (c.InboundLine("a", "n0", 3, NOW + 4 * DAY_MS),
                                            c.InboundLine("a", "n2", 9, NOW + DAY_MS))), NOW)
    assert promised(blocked, "m1", "mkt", 3) == NOW + 4 * DAY_MS
    assert promised(blocked, "w1", "web", 9) == NOW + DAY_MS
    fenced = _ledger({})
    execute(fenced, c.SetNetwork(dataclasses.replace(NETWORK, node_costs=tuple(
        dataclasses.replace(costs, blocked_channels=()) for costs in NETWORK.node_costs))),
        NOW)
    execute(fenced, c.SetRingFence((c.FenceLine("a", "n1", "mkt", 3),)), NOW)
    execute(fenced, c.ExpectInbound("po1", (c.InboundLine("a", "n1", 3, NOW + DAY_MS),
                                           c.InboundLine("a", "n0", 9, NOW + DAY_MS))), NOW)
    assert promised(fenced, "m1", "mkt", 3) == NOW + DAY_MS
    assert promised(fenced, "w1", "web", 9) == NOW + DAY_MS


def test_an_order_that_may_not_split_is_not_shipped_apart_by_substitution():
    """a is at n0, the three b arrive there tomorrow, a2 (a's substitute) is at n1. The
    order may not split and may substitute: it waits to ship whole from n0; no line is
    substituted and shipped ahead (nor an in-stock line swapped for a2). With b nowhere
    coming, it waits whole all the same (the a shipped now would make a second package
    when b comes), and the a is not swapped for a2 either."""
    import dataclasses

    from core.model import SkuSpec

    for inbound in (True, False):
        ledger = _ledger({("a", "n0"): 2})
        a = ledger.catalog.sku_spec(ledger.catalog.sku("a"))
        execute(ledger, c.UpsertSkus((dataclasses.replace(a, substitution_group="g"),
                                      SkuSpec("a2", weight_lb=1.0, length_in=6, width_in=4,
                                              height_in=2, substitution_group="g"))), NOW)
        execute(ledger, c.ReceiveStock((c.ReceiptLine("a2", "n1", 5),)), NOW)
        if inbound:
            execute(ledger, c.ExpectInbound("PO-1", (c.InboundLine("b", "n0", 3,
                                                                   NOW + DAY_MS),)), NOW)
        order = _order("o", {"a": 1, "b": 3})._replace(allow_split=False,
                                                         allow_substitution=True)
        execute(ledger, c.AllocateOrders((order,)), NOW)
        decision = ledger.orders.orders["o"].last_decision
        assert not decision.packages
        assert sorted(b.line_id for b in decision.backorders) == ["0", "1"]
        (substitute,) = [o for o in decision.options if o.kind == OptionKind.SUBSTITUTE]
        assert not substitute.chosen
        assert ("forbids splits" if inbound else "no SKU of the same group") in (
            substitute.detail)
        assert ledger.quantity(ledger.catalog.sku("a2"), 1, Bucket.ALLOCATED) == 0


def test_an_order_that_waits_to_ship_whole_keeps_its_in_stock_lines_unsubstituted():
    """As above, with b's substitute b2 at n1 too: substituting both would ship whole
    now, but a line in stock (a at n0) would be swapped for another SKU. The order waits
    for its own b instead."""
    import dataclasses

    from core.model import SkuSpec

    ledger = _ledger({("a", "n0"): 2})
    cat = ledger.catalog
    execute(ledger, c.UpsertSkus((
        dataclasses.replace(cat.sku_spec(cat.sku("a")), substitution_group="g"),
        dataclasses.replace(cat.sku_spec(cat.sku("b")), substitution_group="h"),
        SkuSpec("a2", weight_lb=1.0, length_in=6, width_in=4, height_in=2,
                substitution_group="g"),
        SkuSpec("b2", weight_lb=1.0, length_in=6, width_in=4, height_in=2,
                substitution_group="h"))), NOW)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a2", "n1", 5),
                                    c.ReceiptLine("b2", "n1", 5))), NOW)
    execute(ledger, c.ExpectInbound("PO-1", (c.InboundLine("b", "n0", 3, NOW + DAY_MS),)), NOW)
    order = _order("o", {"a": 1, "b": 3})._replace(allow_split=False, allow_substitution=True)
    execute(ledger, c.AllocateOrders((order,)), NOW)
    decision, option = _wait_option(ledger, "o")
    assert option.chosen and not decision.packages
    (substitute,) = [o for o in decision.options if o.kind == OptionKind.SUBSTITUTE]
    assert not substitute.chosen


@pytest.mark.parametrize("allow_split", [False, True])
def test_an_order_that_may_not_split_waits_whole_for_a_line_no_node_has(allow_split):
    """n0 has the "a"; no node has a "b" and none is coming. Shipping the a now would make
    a second package when b comes: an order that may not split ships nothing now and
    waits whole, its a left for others (a backorder exception, as any backorder); one
    that may, ships the a and backorders the b."""
    from core.exceptions import ExceptionType

    ledger = _ledger({("a", "n0"): 2})
    order = _order("o", {"a": 1, "b": 3})._replace(allow_split=allow_split)
    execute(ledger, c.AllocateOrders((order,)), NOW)
    record = ledger.orders.orders["o"]
    decision = record.last_decision
    a = ledger.catalog.sku("a")
    if allow_split:
        assert [[line.line_id for line in p.lines] for p in decision.packages] == [["0"]]
        assert [b.line_id for b in decision.backorders] == ["1"]
        assert ledger.quantity(a, 0, Bucket.ALLOCATED) == 1
    else:
        assert not decision.packages and not record.package_ids
        assert sorted(b.line_id for b in decision.backorders) == ["0", "1"]
        assert {b.line_id: b.quantity for b in decision.backorders} == {"0": 1, "1": 3}
        assert "may not split" in decision.rule
        assert [o.kind for o in decision.options if o.chosen] == [OptionKind.BACKORDER]
        assert ledger.quantity(a, 0, Bucket.ALLOCATED) == 0
        assert ledger.quantity(a, 0, Bucket.AVAILABLE) == 2
    (exception,) = ledger.exceptions.open_for("o")
    assert exception.exception_type == ExceptionType.BACKORDER


@pytest.mark.parametrize("together", [True, False])
def test_a_batch_s_later_order_gets_the_units_an_order_held_whole_leaves(together):
    """n0 has two "a". The first order (premium, may not split) wants an a and a "b" no
    node has: it waits whole. The second wants both a: the kernel had given the first
    one of them, so in the same batch the second would have been short; decided again
    against what the batch took, it ships both, as in a command of its own."""
    from core.network import SlaTier

    ledger = _ledger({("a", "n0"): 2})
    first = _order("first", {"a": 1, "b": 1})._replace(tier=SlaTier.PREMIUM,
                                                      allow_split=False)
    second = _order("second", {"a": 2})
    for batch in [(first, second)] if together else [(first,), (second,)]:
        execute(ledger, c.AllocateOrders(batch), NOW)
    assert not ledger.orders.orders["first"].package_ids
    decision = ledger.orders.orders["second"].last_decision
    assert not decision.backorders
    assert sum(line.quantity for p in decision.packages for line in p.lines) == 2


def test_an_order_held_whole_ships_whole_once_its_missing_line_comes():
    """As above: the order waits whole. Two of the three b it lacks are received at n0:
    still not whole, it is left as it was (the same exception open, nothing placed). The
    third comes: the receipt itself ships the order, both lines in one package, and
    closes its exception."""
    from core.exceptions import ExceptionType, Resolution

    ledger = _ledger({("a", "n0"): 2})
    execute(ledger, c.AllocateOrders((_order("o", {"a": 1, "b": 3})._replace(
        allow_split=False),)), NOW)
    (exception,) = ledger.exceptions.open_for("o")
    assert exception.exception_type == ExceptionType.BACKORDER
    record = ledger.orders.orders["o"]
    waiting = dict(record.backorders)
    partial = execute(ledger, c.ReceiveStock((c.ReceiptLine("b", "n0", 2),)), NOW)
    assert [e.kind for e in partial.events] == [EventKind.RECEIVED]
    assert ledger.orders.orders["o"].backorders == waiting and not record.package_ids
    assert [e.exception_id for e in ledger.exceptions.open_for("o")] == [
        exception.exception_id]
    execute(ledger, c.ReceiveStock((c.ReceiptLine("b", "n0", 1),)), NOW)
    record = ledger.orders.orders["o"]
    (package_id,) = record.package_ids
    plan = ledger.orders.packages[package_id].plan
    assert sorted((line.line_id, line.quantity) for line in plan.lines) == [("0", 1), ("1", 3)]
    assert not record.backorders and not ledger.exceptions.open_for("o")
    closed = ledger.exceptions.by_id[exception.exception_id]
    assert closed.resolution == Resolution.RETRY and closed.note == "backorder filled"
