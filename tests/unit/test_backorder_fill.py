"""Backorders filled as stock arrives: a command that makes units AVAILABLE (a receipt, a
release from quarantine, a cancelled order or reservation letting go of its units), or a
safety stock or ring-fence set, decides the backorders of those SKUs again in the same
command, by priority, allocating the orders the units now serve and leaving the others
as they were."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from core import commands as c
from core.exceptions import ExceptionType, Resolution
from core.ledger import Ledger
from core.model import AdjustReason, Bucket, EventKind
from core.network import NetworkSpec, Region, SlaTier
from core.operations import execute
from core.order_ops import ARRIVAL_LOOKAHEAD, ARRIVAL_ORDERS_PER_UNIT, arrived_units
from core.orders import OrderLineSpec, OrderSpec, OrderStatus
from tests.unit.test_orders_stateful import DAY_MS, NETWORK, NOW
from tests.unit.test_reopt import _ledger, _order


def _backordered(ledger: Ledger, *order_ids: str) -> None:
    for order_id in order_ids:
        execute(ledger, c.AllocateOrders((_order(order_id, {"a": 1}),)), NOW)
        assert ledger.orders.orders[order_id].status == OrderStatus.BACKORDERED


def _placed(ledger: Ledger, order_id: str) -> int:
    book = ledger.orders
    return sum(line.quantity for p in book.orders[order_id].package_ids
               for line in book.packages[p].plan.lines)


def _open_backorders(ledger: Ledger, order_id: str) -> list[str]:
    return [e.exception_id for e in ledger.exceptions.open_for(order_id)
            if e.exception_type == ExceptionType.BACKORDER]


def test_a_receipt_fills_the_backorders_it_can_by_priority_and_leaves_the_rest():
    ledger = _ledger({("b", "n0"): 1})
    _backordered(ledger, "early")
    execute(ledger, c.AllocateOrders((_order("premium", {"a": 1})._replace(
        tier=SlaTier.PREMIUM),)), NOW)
    _backordered(ledger, "late")
    (early_exception,) = _open_backorders(ledger, "early")
    early_before = ledger.orders.orders["early"].last_decision
    late_before = (ledger.orders.orders["late"].last_decision, _open_backorders(ledger, "late"))
    outcome = execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n1", 2),)), NOW)
    # The premium order first, then the standard one that came first; the third waits.
    assert _placed(ledger, "premium") == 1 and _placed(ledger, "early") == 1
    assert _placed(ledger, "late") == 0
    assert ledger.orders.orders["late"].status == OrderStatus.BACKORDERED
    assert _open_backorders(ledger, "premium") == [] == _open_backorders(ledger, "early")
    assert (ledger.orders.orders["late"].last_decision,
            _open_backorders(ledger, "late")) == late_before  # untouched
    filled = ledger.exceptions.by_id[early_exception]
    assert filled.resolution == Resolution.RETRY and filled.note == "backorder filled"
    assert ledger.orders.orders["early"].last_decision is not early_before
    allocated = [e.reference for e in outcome.events if e.kind == EventKind.ORDER_ALLOCATED]
    assert allocated == ["premium", "early"] and outcome.filled == ("premium", "early")
    moved = [(e.from_bucket, e.to_bucket, e.quantity) for e in outcome.events
             if e.kind == EventKind.ORDER_UNITS_ALLOCATED]
    assert moved == [(Bucket.AVAILABLE, Bucket.ALLOCATED, 1)] * 2
    a, n1 = ledger.catalog.sku("a"), ledger.catalog.node("n1")
    assert ledger.quantity(a, n1, Bucket.AVAILABLE) == 0
    assert ledger.quantity(a, n1, Bucket.ALLOCATED) == 2


def test_an_order_left_waiting_is_not_touched():
    """What the stock cannot serve keeps its exception, its decision and its promise: the
    receipt adds nothing about it."""
    ledger = _ledger({("b", "n0"): 1})
    _backordered(ledger, "o")
    record = ledger.orders.orders["o"]
    before = (dict(record.backorders), record.last_decision, _open_backorders(ledger, "o"))
    # The unit arrives fenced for another channel: offered to the order, which cannot
    # take it.
    execute(ledger, c.SetRingFence((c.FenceLine("a", "n1", "mkt", 5),)), NOW)
    outcome = execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n1", 1),)), NOW)
    assert [e.kind for e in outcome.events] == [EventKind.RECEIVED]
    assert (dict(record.backorders), record.last_decision,
            _open_backorders(ledger, "o")) == before


def test_a_no_split_order_that_cannot_be_whole_does_not_keep_the_units_from_the_next():
    ledger = _ledger({("b", "n0"): 1})
    execute(ledger, c.AllocateOrders((_order("whole", {"a": 1, "c": 1})._replace(
        tier=SlaTier.PREMIUM, allow_split=False),)), NOW)
    _backordered(ledger, "single")
    waiting = _open_backorders(ledger, "whole")
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 1),)), NOW)
    assert _placed(ledger, "whole") == 0 and _placed(ledger, "single") == 1
    assert _open_backorders(ledger, "whole") == waiting and len(waiting) == 1


@pytest.mark.parametrize("arrival", ["quarantine", "cancel", "reservation", "adjust"])
def test_units_made_available_by_other_commands_fill_backorders(arrival):
    ledger = _ledger({("a", "n0"): 1, ("b", "n0"): 1})
    a = ledger.catalog.sku("a")
    n0 = ledger.catalog.node("n0")
    if arrival == "quarantine":
        execute(ledger, c.MoveStock((c.MoveLine("a", "n0", 1, Bucket.AVAILABLE,
                                                Bucket.QUARANTINED),)), NOW)
        command: c.Command = c.MoveStock((c.MoveLine("a", "n0", 1, Bucket.QUARANTINED,
                                                     Bucket.AVAILABLE),))
    elif arrival == "cancel":
        execute(ledger, c.AllocateOrders((_order("first", {"a": 1}),)), NOW)
        command = c.CancelOrder("first")
    elif arrival == "reservation":
        execute(ledger, c.ReserveStock("r1", "web", NOW + DAY_MS,
                                       (c.StockLine("a", "n0", 1),)), NOW)
        command = c.ReleaseReservation("r1")
    else:
        execute(ledger, c.AdjustStock((c.AdjustLine("a", "n0", -1, AdjustReason.DAMAGE),)), NOW)
        command = c.AdjustStock((c.AdjustLine("a", "n0", 1, AdjustReason.FOUND),))
    assert ledger.quantity(a, n0, Bucket.AVAILABLE) == 0
    _backordered(ledger, "waiting")
    execute(ledger, command, NOW)
    assert _placed(ledger, "waiting") == 1
    assert ledger.orders.orders["waiting"].status == OrderStatus.ALLOCATED
    assert _open_backorders(ledger, "waiting") == []
    assert ledger.quantity(a, n0, Bucket.AVAILABLE) == 0


def test_an_order_waiting_for_its_inbound_ships_in_one_package_when_it_comes():
    # a at n0, b at n2 (a split), or b arriving at n0 tomorrow: the decision waits. The
    # inbound is received: the order ships a and b from n0 together.
    ledger = _ledger({("a", "n0"): 1, ("b", "n2"): 1})
    execute(ledger, c.ExpectInbound("PO-1", (c.InboundLine("b", "n0", 5, NOW + DAY_MS),)),
            NOW)
    execute(ledger, c.AllocateOrders((_order("waits", {"a": 1, "b": 1}),)), NOW)
    record = ledger.orders.orders["waits"]
    assert record.backorders and not record.package_ids
    execute(ledger, c.ReceiveStock((c.ReceiptLine("b", "n0", 5, inbound_reference="PO-1"),)),
            NOW + DAY_MS)
    record = ledger.orders.orders["waits"]
    (package_id,) = record.package_ids
    plan = ledger.orders.packages[package_id].plan
    assert plan.node == ledger.catalog.node("n0") and len(plan.lines) == 2
    assert not record.backorders and not ledger.exceptions.open_for("waits")


def test_an_order_that_cannot_be_decided_now_does_not_fail_the_command_that_brought_units():
    """The network is re-zoned: one backorder's ship-to maps to no region (a RETRY of it
    would be refused). A receipt, a cancel and the reservation sweeper still go through;
    the other backorder of the SKU is filled, that one waits as it was."""
    ledger = _ledger({("a", "n0"): 2, ("b", "n0"): 1})
    execute(ledger, c.ReserveStock("cart", "web", NOW + 60_000, (c.StockLine("a", "n0", 1),)),
            NOW)
    execute(ledger, c.AllocateOrders((_order("placed", {"a": 1}),)), NOW)
    execute(ledger, c.AllocateOrders((_order("lost", {"a": 1}),)), NOW)
    execute(ledger, c.AllocateOrders((_order("mapped", {"a": 1})._replace(
        tier=SlaTier.MARKETPLACE, postal_code="10099"),)), NOW)
    assert _placed(ledger, "lost") == 0 == _placed(ledger, "mapped")
    # 10001 ("lost") maps to no region now; 10099 ("mapped") still does.
    execute(ledger, c.SetNetwork(dataclasses.replace(NETWORK, regions=(
        Region("east", 40.7, -74.0, ("1009",)),))), NOW)
    lost = (ledger.orders.orders["lost"].last_decision, _open_backorders(ledger, "lost"))
    swept = execute(ledger, c.ExpireReservations(), NOW + 120_000)
    assert swept.filled == ("mapped",)
    for command in (c.CancelOrder("placed"), c.ReceiveStock((c.ReceiptLine("a", "n1", 1),))):
        assert execute(ledger, command, NOW).filled == ()
    assert (ledger.orders.orders["lost"].last_decision, _open_backorders(ledger, "lost")) == lost
    a = ledger.catalog.sku("a")
    assert ledger.quantity(a, ledger.catalog.node("n0"), Bucket.AVAILABLE) == 1


def test_no_network_no_fill_and_no_failure():
    ledger = _ledger({("b", "n0"): 1})
    _backordered(ledger, "o")
    execute(ledger, c.SetNetwork(NetworkSpec()), NOW)
    outcome = execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 5),)), NOW)
    assert [e.kind for e in outcome.events] == [EventKind.RECEIVED] and outcome.filled == ()
    assert _placed(ledger, "o") == 0


def test_a_rules_hold_on_counted_units_is_in_force_before_they_are_offered():
    """A count books 12 units found (under the hold threshold set here) and the count
    variance rule restricts the SKU at the node in the same command: the backorder is not
    given the units the rule put on hold."""
    ledger = _ledger({("a", "n0"): 10, ("b", "n0"): 1})
    ledger.settings = dataclasses.replace(ledger.settings, count_hold_units=20)
    execute(ledger, c.AllocateOrders((_order("first", {"a": 10}),)), NOW)
    execute(ledger, c.AllocateOrders((_order("waiting", {"a": 12}),)), NOW)
    outcome = execute(ledger, c.SubmitCycleCount((c.CountLine("a", "n0", 22),)), NOW)
    kinds = [e.kind for e in outcome.events]
    assert EventKind.COUNT_ADJUSTED in kinds and EventKind.ACTION_APPLIED in kinds
    assert outcome.filled == () and _placed(ledger, "waiting") == 0
    a, n0 = ledger.catalog.sku("a"), ledger.catalog.node("n0")
    assert ledger.quantity(a, n0, Bucket.AVAILABLE) == 12


def test_the_same_state_and_command_give_the_same_fill():
    ledger = _ledger({("b", "n0"): 1})
    for k in range(30):
        execute(ledger, c.AllocateOrders((_order(f"o{k}", {"a": 1 + k % 3})._replace(
            tier=SlaTier(k % 4)),)), NOW)
    runs = []
    for _ in range(2):
        copy = pickle.loads(pickle.dumps(ledger))
        outcome = execute(copy, c.ReceiveStock((c.ReceiptLine("a", "n0", 20),)), NOW)
        runs.append([(e.kind, e.reference, e.sku, e.node, e.quantity) for e in outcome.events])
    assert runs[0] == runs[1] and len(runs[0]) > 10


def test_the_fill_is_in_the_log_a_replay_rebuilds_the_same_state():
    ledger = _ledger({("b", "n0"): 1})
    _backordered(ledger, "o1", "o2")
    before = pickle.loads(pickle.dumps(ledger))
    outcome = execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 1),)), NOW)
    before.apply(outcome.events, replay=True)
    assert before.checksum() == ledger.checksum()
    assert _placed(before, "o1") == 1 and _placed(before, "o2") == 0


def test_arrived_units_counts_only_moves_into_available():
    a, b = 3, 4
    events = [
        _event(EventKind.RECEIVED, a, Bucket.EXTERNAL, Bucket.AVAILABLE, 5),
        _event(EventKind.RECEIVED, b, Bucket.EXTERNAL, Bucket.QUARANTINED, 5),
        _event(EventKind.MOVED, b, Bucket.QUARANTINED, Bucket.AVAILABLE, 2),
        _event(EventKind.ORDER_UNITS_ALLOCATED, a, Bucket.AVAILABLE, Bucket.ALLOCATED, 1),
        _event(EventKind.ORDER_UNITS_RELEASED, a, Bucket.ALLOCATED, Bucket.AVAILABLE, 1),
        _event(EventKind.SAFETY_STOCK_SET, a, Bucket.EXTERNAL, Bucket.EXTERNAL, 3),
    ]
    assert arrived_units(events) == {a: 6, b: 2}


def _event(kind: EventKind, sku: int, source: Bucket, target: Bucket, quantity: int):
    from core.model import Event

    return Event(1, kind, sku=sku, node=0, from_bucket=source, to_bucket=target,
                 quantity=quantity)


@pytest.mark.parametrize("ahead", [ARRIVAL_LOOKAHEAD + ARRIVAL_ORDERS_PER_UNIT - 1,
                                   ARRIVAL_LOOKAHEAD + ARRIVAL_ORDERS_PER_UNIT])
def test_one_unit_decides_a_bounded_number_of_the_backlog(ahead):
    """One unit arrives behind a long backlog of premium orders it cannot serve (each due
    today, which no node can still deliver): the standard order behind them is reached
    only while it is among the first ARRIVAL_LOOKAHEAD + ARRIVAL_ORDERS_PER_UNIT."""
    ledger = _ledger({("b", "n0"): 1})
    for k in range(ahead):
        execute(ledger, c.AllocateOrders((_order(f"p{k}", {"a": 1})._replace(
            tier=SlaTier.PREMIUM, deliver_by_ms=NOW),)), NOW)
    _backordered(ledger, "behind")
    outcome = execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 1),)), NOW)
    reached = ahead < ARRIVAL_LOOKAHEAD + ARRIVAL_ORDERS_PER_UNIT
    assert outcome.filled == (("behind",) if reached else ())
    assert _placed(ledger, "behind") == int(reached)
    assert all(_placed(ledger, f"p{k}") == 0 for k in range(ahead))


@pytest.mark.parametrize("policy", ["safety stock", "fence", "network safety stock"])
def test_a_safety_stock_or_fence_lowered_offers_its_units_to_the_backorders(policy):
    ledger = _ledger({("a", "n0"): 3, ("b", "n0"): 1})
    if policy == "fence":
        held: c.Command = c.SetRingFence((c.FenceLine("a", "n0", "mkt", 3),))
        lowered: c.Command = c.SetRingFence((c.FenceLine("a", "n0", "mkt", 0),))
    else:
        scope = ("a", "n0") if policy == "safety stock" else ("", "")
        held = c.SetSafetyStock(*scope, 3)
        lowered = c.SetSafetyStock(*scope, 1)
    execute(ledger, held, NOW)
    _backordered(ledger, "o1", "o2", "o3")
    assert execute(ledger, held, NOW).filled == ()  # (the same again: nothing to sell)
    outcome = execute(ledger, lowered, NOW)
    expected = ("o1", "o2", "o3") if policy == "fence" else ("o1", "o2")
    assert outcome.filled == expected
    assert [_placed(ledger, o) for o in ("o1", "o2", "o3")] == [
        1, 1, int(policy == "fence")]


def _promise(ledger: Ledger, order_id: str) -> int:
    (backorder,) = ledger.orders.orders[order_id].backorders.values()
    return backorder.promise_ms


def test_inbound_announced_dates_the_backorders_that_had_no_date_by_priority():
    ledger = _ledger({("b", "n0"): 1})
    for order_id in ("first", "second", "third"):
        execute(ledger, c.AllocateOrders((_order(order_id, {"a": 2}),)), NOW)
        assert _promise(ledger, order_id) == 0
    (old,) = _open_backorders(ledger, "first")
    third = (ledger.orders.orders["third"].last_decision, _open_backorders(ledger, "third"))
    arrival = NOW + 3 * DAY_MS
    outcome = execute(ledger, c.ExpectInbound("PO-7", (c.InboundLine("a", "n0", 4, arrival),)),
                      NOW)
    # Four units coming: the first two orders are dated, the third is not (left as it was).
    assert _promise(ledger, "first") // DAY_MS >= arrival // DAY_MS
    assert _promise(ledger, "second") // DAY_MS >= arrival // DAY_MS
    assert _promise(ledger, "third") == 0
    assert (ledger.orders.orders["third"].last_decision,
            _open_backorders(ledger, "third")) == third
    assert outcome.filled == ()  # nothing placed
    dated = [e.reference for e in outcome.events if e.kind == EventKind.ORDER_ALLOCATED]
    assert dated == ["first", "second"]
    (new,) = _open_backorders(ledger, "first")
    superseded = ledger.exceptions.by_id[old]
    assert superseded.resolution == Resolution.RETRY and new in superseded.note
    # A second inbound leaves the dated orders alone, and dates the third.
    again = execute(ledger, c.ExpectInbound("PO-8", (c.InboundLine("a", "n0", 2,
                                                                   arrival + DAY_MS),)), NOW)
    assert [e.reference for e in again.events if e.kind == EventKind.ORDER_ALLOCATED] == [
        "third"]
    assert _promise(ledger, "third") // DAY_MS >= (arrival + DAY_MS) // DAY_MS


def test_the_inbound_then_received_fills_the_orders_it_dated():
    ledger = _ledger({("b", "n0"): 1})
    execute(ledger, c.AllocateOrders((_order("o", {"a": 2}),)), NOW)
    execute(ledger, c.ExpectInbound("PO-7", (c.InboundLine("a", "n0", 2, NOW + DAY_MS),)),
            NOW)
    assert _promise(ledger, "o")
    outcome = execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 2,
                                                            inbound_reference="PO-7"),)),
                      NOW + DAY_MS)
    assert outcome.filled == ("o",) and _placed(ledger, "o") == 2
    assert _open_backorders(ledger, "o") == []


def test_the_price_a_customer_pays_ranks_the_backorders_as_at_intake():
    """Two orders wait for one b, alike but for what their customers pay for it: the one
    paying more is served first, though it came later. That one's backordered line is
    its second (its first, priced too, shipped at once): only the backordered lines'
    prices count."""
    ledger = _ledger({("a", "n0"): 1})
    execute(ledger, c.AllocateOrders((OrderSpec("cheap", "web", SlaTier.STANDARD, (
        OrderLineSpec("0", "b", 1, 1_000_000),), postal_code="10001"),)), NOW)
    execute(ledger, c.AllocateOrders((OrderSpec("dear", "web", SlaTier.STANDARD, (
        OrderLineSpec("0", "a", 1, 1_000_000), OrderLineSpec("1", "b", 1, 50_000_000)),
        postal_code="10001"),)), NOW)
    assert _placed(ledger, "dear") == 1 and list(ledger.orders.orders["dear"].backorders) == [
        "1"]
    outcome = execute(ledger, c.ReceiveStock((c.ReceiptLine("b", "n0", 1),)), NOW)
    assert outcome.filled == ("dear",)
    assert _placed(ledger, "cheap") == 0 and _placed(ledger, "dear") == 2
