"""Return eligibility, refund timing and dispositions, with the clock under control."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from core import commands as c
from core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from core.exceptions import Resolution
from core.finance import Account
from core.ledger import Ledger, LedgerSettings
from core.model import Bucket, ChannelSpec, Event, EventKind, NodeSpec, SkuSpec
from core.network import SlaTier
from core.operations import execute
from core.orders import OrderLineSpec, OrderSpec, PackageStatus
from core.returns import (
    DAY_MS,
    Grade,
    RefundTiming,
    ReturnBook,
    ReturnPolicy,
    ReturnStatus,
)
from tests.unit.shop import NODES, shop
from tests.unit.test_orders_stateful import NETWORK, NOW


def world(policy: ReturnPolicy | None = None, write_off_approval: int = 1_000_000_000
          ) -> Ledger:
    ledger = Ledger(LedgerSettings(n_shards=2, write_off_approval_micros=write_off_approval))
    for command in shop({(sku, "n0"): 50 for sku in ("shirt", "phone", "socks", "tree")},
                        n_nodes=1, categories={"socks": "clearance"}):
        execute(ledger, command, NOW)
    if policy is not None:  # set up as if two approvers had released it
        execute(ledger, c.SetReturnPolicy(policy, approved=True), NOW)
    return ledger


def sell(ledger: Ledger, order_id: str, sku: str, qty: int, customer: str = "",
         channel: str = "web", at: int = NOW) -> None:
    spec = OrderSpec(order_id, channel, SlaTier.STANDARD, (OrderLineSpec("1", sku, qty),),
                     postal_code="10001", customer_id=customer)
    execute(ledger, c.AllocateOrders((spec,)), at)
    (package_id,) = ledger.orders.orders[order_id].package_ids
    execute(ledger, c.ReleaseWave("n0"), at)
    execute(ledger, c.ConfirmPick(package_id, ()), at)
    execute(ledger, c.ConfirmPack(package_id, ((sku, qty),)), at)
    execute(ledger, c.ConfirmShipment(package_id, "T"), at)


def ask(ledger: Ledger, rma: str, order_id: str, qty: int, at: int):
    return execute(ledger, c.CreateReturn(rma, order_id, (("1", qty),)), at).detail


def test_a_return_inside_the_window_is_eligible_and_outside_it_is_not():
    ledger = world()
    sell(ledger, "o1", "shirt", 2)
    late = ask(ledger, "r-late", "o1", 1, NOW + 31 * DAY_MS)
    assert not late.eligible and "30 days" in late.reasons[0]
    assert "r-late" not in ledger.returns.returns  # refused: nothing recorded
    ok = ask(ledger, "r-ok", "o1", 1, NOW + 29 * DAY_MS)
    assert ok.eligible


def test_channel_category_final_sale_and_seasonal_rules_apply():
    policy = ReturnPolicy(channel_window_days=(("mkt", 60),), final_sale_categories=(
        "clearance",), seasonal_categories=("holiday",), seasonal_window_days=14)
    ledger = world(policy)
    sell(ledger, "m1", "shirt", 1, channel="mkt")
    assert ask(ledger, "r1", "m1", 1, NOW + 45 * DAY_MS).eligible  # the marketplace's 60
    sell(ledger, "s1", "socks", 1)
    final = ask(ledger, "r2", "s1", 1, NOW)
    assert not final.eligible and "final sale" in final.reasons[0]
    sell(ledger, "h1", "tree", 1)
    assert not ask(ledger, "r3", "h1", 1, NOW + 20 * DAY_MS).eligible  # seasonal: 14 days


def test_more_than_shipped_minus_returned_is_not_eligible():
    ledger = world()
    sell(ledger, "o1", "shirt", 2)
    assert ask(ledger, "r1", "o1", 2, NOW).eligible
    again = ask(ledger, "r2", "o1", 1, NOW)
    assert not again.eligible and "already returned" in again.reasons[0]


def test_refund_timing_restocking_fee_and_no_refund_before_receipt():
    ledger = world()
    sell(ledger, "o1", "phone", 1, customer="new-customer")
    decision = ask(ledger, "r1", "o1", 1, NOW)
    auth = decision.authorization
    assert auth.refund_timing == RefundTiming.ON_RECEIPT
    assert auth.restocking_fee_micros == 15_000_000  # electronics: 15 %
    assert auth.refund_micros == 85_000_000 and decision.refunded_micros == 0
    assert ledger.returns.returns["r1"].refunded_micros == 0  # not before the goods are back
    progress = execute(ledger, c.ReceiveReturn("r1"), NOW).detail
    assert progress.refunded_micros == 85_000_000


def test_one_order_shipped_as_several_packages_is_one_order_toward_trust():
    """Refunds before the goods are back are for customers with several orders: a first
    order whose lines shipped as three packages counted as three orders."""
    ledger = Ledger(LedgerSettings(n_shards=2))
    stock = {("shirt", "n0"): 5, ("socks", "n1"): 5, ("tree", "n1"): 5}
    for command in shop(stock, n_nodes=2):
        execute(ledger, command, NOW)
    spec = OrderSpec("o1", "web", SlaTier.STANDARD, tuple(
        OrderLineSpec(str(i), sku, 1) for i, sku in enumerate(("shirt", "socks", "tree"))),
        postal_code="10001", customer_id="first-timer")
    execute(ledger, c.AllocateOrders((spec,)), NOW)
    for package_id in ledger.orders.orders["o1"].package_ids:
        state = ledger.orders.packages[package_id]
        if state.status == PackageStatus.ALLOCATED:
            execute(ledger, c.ReleaseWave(ledger.catalog.nodes[state.plan.node].node_id, 0),
                    NOW)
        execute(ledger, c.ConfirmPick(package_id, ()), NOW)
        execute(ledger, c.ConfirmPack(package_id, tuple(
            (ledger.catalog.sku_ids[line.sku], line.quantity) for line in state.plan.lines)),
            NOW)
        execute(ledger, c.ConfirmShipment(package_id, "T"), NOW)
    assert len(ledger.orders.orders["o1"].package_ids) >= 2
    assert ledger.returns.abuse_rate("first-timer", NOW) == (0.0, 1)
    decision = execute(ledger, c.CreateReturn("r1", "o1", (("0", 1), ("1", 1), ("2", 1))),
                       NOW).detail
    assert decision.authorization.refund_timing == RefundTiming.ON_RECEIPT
    assert decision.refunded_micros == 0


def _two_shipments(days_apart: int) -> Ledger:
    """o1: a line of two shirts shipped in two packages, `days_apart` days apart."""
    ledger = Ledger(LedgerSettings(n_shards=2))
    for command in shop({("shirt", "n0"): 1, ("shirt", "n1"): 1}, n_nodes=2):
        execute(ledger, command, NOW)
    execute(ledger, c.AllocateOrders((OrderSpec(
        "o1", "web", SlaTier.STANDARD, (OrderLineSpec("1", "shirt", 2),),
        postal_code="10001"),)), NOW)
    for k, package_id in enumerate(ledger.orders.orders["o1"].package_ids):
        at = NOW + k * days_apart * DAY_MS
        node = ledger.catalog.nodes[ledger.orders.packages[package_id].plan.node].node_id
        execute(ledger, c.ReleaseWave(node), at)
        execute(ledger, c.ConfirmPick(package_id, ()), at)
        execute(ledger, c.ConfirmPack(package_id, (("shirt", 1),)), at)
        execute(ledger, c.ConfirmShipment(package_id, "T"), at)
    return ledger


def test_each_unit_s_return_window_runs_from_its_own_shipment():
    """Shipped on day 0 and day 25: on day 40, with a 30-day window, only the second unit
    may come back (the window ran from the latest shipment for both)."""
    ledger = _two_shipments(25)
    day_40 = NOW + 40 * DAY_MS
    both = ask(ledger, "r1", "o1", 2, day_40)
    assert not both.eligible and "1 of its units shipped in the last 30 days" in both.reasons[0]
    assert ask(ledger, "r2", "o1", 1, day_40).eligible
    later = ask(ledger, "r3", "o1", 1, NOW + 60 * DAY_MS)
    assert not later.eligible  # the one left is the day-0 unit, long out of its window
    assert "shipped more than 30 days ago" in later.reasons[0]


def test_a_return_authorised_in_the_window_used_the_units_then_in_it():
    """Shipped on day 0 and day 20. On day 35 one may come back, the day-20 one; that
    return used it, so on day 36 the day-0 unit, out of its window, may not."""
    ledger = _two_shipments(20)
    assert ask(ledger, "r1", "o1", 1, NOW + 35 * DAY_MS).eligible
    assert not ask(ledger, "r2", "o1", 1, NOW + 36 * DAY_MS).eligible


def test_units_received_for_a_return_stay_for_its_inspection():
    """RETURNED units a return received wait for its inspection, which moves them on:
    adjusted or moved away by hand, the inspection could not be done, and the return
    stayed open for good."""
    ledger = world()
    sell(ledger, "o1", "shirt", 3)
    ask(ledger, "r1", "o1", 2, NOW)
    execute(ledger, c.ReceiveReturn("r1"), NOW)
    shirt = ledger.catalog.sku("shirt")
    node_id = ledger.catalog.nodes[ledger.returns.returns["r1"].auth.node].node_id
    execute(ledger, c.MoveStock((c.MoveLine("shirt", node_id, 1, Bucket.AVAILABLE,
                                            Bucket.RETURNED),)), NOW)  # one of no return's
    before = ledger.checksum()
    for command in (
            c.AdjustStock((c.AdjustLine("shirt", node_id, -2, c.AdjustReason.DAMAGE,
                                        Bucket.RETURNED),), "dmg"),
            c.MoveStock((c.MoveLine("shirt", node_id, 2, Bucket.RETURNED,
                                    Bucket.AVAILABLE),))):
        with pytest.raises(FailedPrecondition, match="waiting for inspection"):
            execute(ledger, command, NOW)
        assert ledger.checksum() == before
    # The one unit no return is waiting for is free to move.
    execute(ledger, c.MoveStock((c.MoveLine("shirt", node_id, 1, Bucket.RETURNED,
                                            Bucket.AVAILABLE),)), NOW)
    execute(ledger, c.InspectReturn("r1", (("1", int(Grade.UNOPENED)),)), NOW)
    assert ledger.returns.returns["r1"].inspection is not None
    assert ledger.awaiting_inspection(shirt, ledger.returns.returns["r1"].auth.node) == 0


def test_a_return_whose_goods_never_came_is_closed_by_an_inspection_of_nothing():
    """A parcel lost on its way back: nothing can be received or graded, and the return
    stayed open for good, its units counted as returned (the order never archived, the
    units never returnable again). An inspection with no grades closes it."""
    ledger = world()
    sell(ledger, "o1", "shirt", 2)
    ask(ledger, "r1", "o1", 2, NOW)
    assert not ask(ledger, "r2", "o1", 1, NOW).eligible  # all of it is on r1
    outcome = execute(ledger, c.InspectReturn("r1", ()), NOW + DAY_MS)
    record = ledger.returns.returns["r1"]
    assert record.status == ReturnStatus.CLOSED and record.refunded_micros == 0
    assert outcome.detail.refunded_micros == 0
    assert ask(ledger, "r3", "o1", 2, NOW + 2 * DAY_MS).eligible  # they may come back now
    # Something received: grades are needed, and no grades is still refused.
    execute(ledger, c.ReceiveReturn("r3", (("1", 1),)), NOW + 3 * DAY_MS)
    with pytest.raises(InvalidArgument, match="grades must not be empty"):
        execute(ledger, c.InspectReturn("r3", ()), NOW + 3 * DAY_MS)


def test_an_order_s_goods_sent_back_on_several_returns_meet_the_approval_threshold_together():
    """Ten phones on one return wait for a finance approver; the same ten on two returns of
    five went through with none (the threshold counted each return's refunds alone)."""
    ledger = world(ReturnPolicy(high_value_micros=10**15))  # refunds on receipt
    sell(ledger, "o1", "phone", 10)
    paid = []
    for rma in ("r-a", "r-b"):
        ask(ledger, rma, "o1", 5, NOW)
        paid.append(execute(ledger, c.ReceiveReturn(rma), NOW).detail)
    assert paid[0].refunded_micros == 5 * 85_000_000 and not paid[0].approval_id
    assert paid[1].refunded_micros == 0 and paid[1].approval_id  # 850,000,000 > 500,000,000
    request = ledger.approvals.by_id[paid[1].approval_id].request
    assert "o1's returns already" in request.detail
    # A book from a snapshot written before returns were indexed by order indexes them.
    book = ledger.returns
    state = dict(book.__dict__)
    del state["by_order"]
    old = ReturnBook.__new__(ReturnBook)
    old.__setstate__(copy.deepcopy(state))
    assert old.by_order == {"o1": ["r-a", "r-b"]}


def test_a_returned_unit_is_valued_at_what_it_cost_as_it_shipped():
    """Phones bought at 90 (the catalogue's standard cost 60), all sold; one comes back. Back
    on the shelf at 60 (none in stock: the standard cost), its sale's cost of goods was
    reversed by 60 of its 90. At other times a return came in at the day's average."""
    ledger = Ledger(LedgerSettings(n_shards=2))
    for command in shop({("phone", "n0"): 0}, n_nodes=1)[:-1]:  # (no receipt)
        execute(ledger, command, NOW)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("phone", "n0", 2,
                                                  unit_cost_micros=90_000_000),), "PO-1"), NOW)
    sell(ledger, "o1", "phone", 2)
    books = ledger.books
    phone = ledger.catalog.sku("phone")
    assert books.units.get(phone, 0) == 0
    assert books.balances[Account.COST_OF_GOODS_SOLD] == 180_000_000
    ask(ledger, "r1", "o1", 1, NOW)
    execute(ledger, c.ReceiveReturn("r1"), NOW)
    assert books.value[phone] == 90_000_000 and books.units[phone] == 1
    assert books.balances[Account.COST_OF_GOODS_SOLD] == 90_000_000
    # The cost kept for the order goes with it when it is archived.
    execute(ledger, c.InspectReturn("r1", (("1", int(Grade.UNOPENED)),)), NOW)
    assert "o1" in books.shipped_cost
    execute(ledger, c.ArchiveOrders(0), NOW + 400 * DAY_MS)
    assert "o1" not in books.shipped_cost


def test_trusted_customers_are_refunded_on_authorisation_and_abusers_reviewed():
    ledger = world()
    for i in range(3):
        sell(ledger, f"t{i}", "shirt", 1, customer="loyal")
    trusted = ask(ledger, "r-loyal", "t0", 1, NOW)
    assert trusted.authorization.refund_timing == RefundTiming.ON_AUTHORIZATION
    assert trusted.refunded_micros == 20_000_000
    sell(ledger, "a1", "shirt", 2, customer="abuser")
    assert ask(ledger, "ra1", "a1", 2, NOW).eligible  # returns everything bought
    sell(ledger, "a2", "shirt", 1, customer="abuser")
    reviewed = ask(ledger, "ra2", "a2", 1, NOW)
    assert reviewed.authorization.in_review
    assert reviewed.authorization.refund_timing == RefundTiming.ON_INSPECTION


@pytest.mark.parametrize(("grade", "bucket"), [
    (Grade.UNOPENED, Bucket.AVAILABLE), (Grade.LIKE_NEW, Bucket.AVAILABLE),
    (Grade.MISSING_PARTS, Bucket.QUARANTINED), (Grade.DAMAGED, None),
    (Grade.DEFECTIVE, None),
])
def test_every_grade_goes_where_the_disposition_rules_send_it(grade, bucket):
    ledger = world()
    sell(ledger, "o1", "shirt", 1)
    ask(ledger, "r1", "o1", 1, NOW)
    execute(ledger, c.ReceiveReturn("r1"), NOW)
    sku = ledger.catalog.sku("shirt")
    before = ledger.buckets(sku, 0).copy()
    execute(ledger, c.InspectReturn("r1", (("1", int(grade)),)), NOW)
    after = ledger.buckets(sku, 0)
    assert after[Bucket.RETURNED] == before[Bucket.RETURNED] - 1
    if bucket is not None:
        assert after[bucket] == before[bucket] + 1
    else:
        assert after.sum() == before.sum() - 1  # left the ledger


def test_a_policy_with_impossible_values_is_refused():
    ledger = world()
    with pytest.raises(InvalidArgument):
        execute(ledger, c.SetReturnPolicy(ReturnPolicy(window_days=-1)), NOW)
    with pytest.raises(InvalidArgument):
        execute(ledger, c.SetReturnPolicy(ReturnPolicy(restocking_fee_bp=20_000)), NOW)


def test_receiving_more_than_authorised_is_refused_and_changes_nothing():
    ledger = world()
    sell(ledger, "o1", "shirt", 1)
    ask(ledger, "r1", "o1", 1, NOW)
    before = ledger.checksum()
    with pytest.raises(FailedPrecondition):
        execute(ledger, c.ReceiveReturn("r1", (("1", 2),)), NOW)
    assert ledger.checksum() == before


def test_a_refund_is_what_was_charged_even_after_a_price_change():
    ledger = world()
    sell(ledger, "o1", "shirt", 1)
    spec = ledger.catalog.sku_spec(ledger.catalog.sku("shirt"))
    execute(ledger, c.UpsertSkus((dataclasses.replace(spec, price_micros=99_000_000),)), NOW)
    decision = ask(ledger, "r1", "o1", 1, NOW)
    assert decision.authorization.refund_micros == 20_000_000


def test_a_large_write_off_waits_for_an_approver_who_is_not_the_requester():
    ledger = world(write_off_approval=100_000_000)  # $100
    shirt = ledger.catalog.sku("shirt")
    big = c.AdjustStock((c.AdjustLine("shirt", "n0", -50, c.AdjustReason.DAMAGE),),
                        "flood", actor="ops-1")  # 50 x $8 = $400
    before = ledger.buckets(shirt, 0).copy()
    approval_id = execute(ledger, big, NOW).detail
    # Nothing written off yet; the units are out of sale meanwhile.
    assert approval_id and ledger.buckets(shirt, 0).sum() == before.sum()
    assert ledger.buckets(shirt, 0)[Bucket.AVAILABLE] == before[Bucket.AVAILABLE] - 50
    assert ledger.buckets(shirt, 0)[Bucket.QUARANTINED] == before[Bucket.QUARANTINED] + 50
    with pytest.raises(FailedPrecondition):  # not by the requester
        execute(ledger, c.DecideApproval(approval_id, True, "ops-1", "operations"), NOW)
    with pytest.raises(PermissionDenied):  # not by a role without the right
        execute(ledger, c.DecideApproval(approval_id, True, "clerk", "customer_service"), NOW)
    execute(ledger, c.DecideApproval(approval_id, True, "ops-2", "operations"), NOW)
    assert ledger.buckets(shirt, 0)[Bucket.AVAILABLE] == before[Bucket.AVAILABLE] - 50
    assert ledger.buckets(shirt, 0)[Bucket.QUARANTINED] == before[Bucket.QUARANTINED]
    assert ledger.books.balances[Account.INVENTORY_WRITE_OFFS] == 50 * 8_000_000


def test_units_a_write_off_waits_for_are_neither_sold_nor_counted_nor_moved():
    """Units reported damaged are out of sale while their write-off waits: sold meanwhile,
    they were promised to customers and the approval then could not be carried out; a
    count of the shelf meanwhile booked the same loss a second time."""
    ledger = world(write_off_approval=100_000_000)
    shirt = ledger.catalog.sku("shirt")
    available = int(ledger.buckets(shirt, 0)[Bucket.AVAILABLE])
    approval_id = execute(ledger, c.AdjustStock(
        (c.AdjustLine("shirt", "n0", -20, c.AdjustReason.DAMAGE),), "dmg", actor="ops-1"),
        NOW).detail
    with pytest.raises(FailedPrecondition):  # only what is left is sold
        execute(ledger, c.ReserveStock("cart", "web", NOW + 60_000,
                                       (c.StockLine("shirt", "n0", available - 19),)), NOW)
    with pytest.raises(FailedPrecondition, match="write-offs waiting"):  # nor moved out by hand
        execute(ledger, c.MoveStock((c.MoveLine("shirt", "n0", 1, Bucket.QUARANTINED,
                                                Bucket.AVAILABLE),)), NOW)
    count = execute(ledger, c.SubmitCycleCount((c.CountLine("shirt", "n0", available - 20),)),
                    NOW).detail
    assert count.lines[0].variance == 0  # the shelf holds what is left: no second loss
    execute(ledger, c.DecideApproval(approval_id, True, "ops-2", "operations"), NOW)
    assert ledger.buckets(shirt, 0)[Bucket.AVAILABLE] == available - 20
    assert ledger.buckets(shirt, 0)[Bucket.QUARANTINED] == 0


@pytest.mark.parametrize("quarantined_first", [False, True])
def test_a_held_write_off_that_also_takes_quarantined_units_can_be_approved(quarantined_first):
    ledger = world(write_off_approval=100_000_000)
    shirt = ledger.catalog.sku("shirt")
    execute(ledger, c.MoveStock((c.MoveLine("shirt", "n0", 3, Bucket.AVAILABLE,
                                            Bucket.QUARANTINED),)), NOW)
    lines = [c.AdjustLine("shirt", "n0", -20, c.AdjustReason.DAMAGE),
             c.AdjustLine("shirt", "n0", -3, c.AdjustReason.DAMAGE, Bucket.QUARANTINED)]
    if quarantined_first:
        lines.reverse()
    available = ledger.quantity(shirt, 0, Bucket.AVAILABLE)
    approval_id = execute(ledger, c.AdjustStock(tuple(lines), "dmg", actor="ops-1"),
                          NOW).detail
    execute(ledger, c.DecideApproval(approval_id, True, "ops-2", "operations"), NOW)
    assert ledger.quantity(shirt, 0, Bucket.QUARANTINED) == 0
    assert ledger.quantity(shirt, 0, Bucket.AVAILABLE) == available - 20


def test_a_refused_write_off_puts_its_units_back_and_one_past_the_stock_is_refused():
    ledger = world(write_off_approval=100_000_000)
    shirt = ledger.catalog.sku("shirt")
    before = ledger.buckets(shirt, 0).copy()
    approval_id = execute(ledger, c.AdjustStock(
        (c.AdjustLine("shirt", "n0", -20, c.AdjustReason.SHRINKAGE),), "lost", actor="ops-1"),
        NOW).detail
    execute(ledger, c.DecideApproval(approval_id, False, "ops-2", "operations"), NOW)
    assert (ledger.buckets(shirt, 0) == before).all()
    assert ledger.held_units(shirt, 0) == 0
    checksum = ledger.checksum()
    with pytest.raises(FailedPrecondition):  # more than the node has: refused when asked
        execute(ledger, c.AdjustStock((c.AdjustLine(
            "shirt", "n0", -int(before[Bucket.AVAILABLE]) - 1, c.AdjustReason.DAMAGE),),
            "too-many", actor="ops-1"), NOW)
    assert ledger.checksum() == checksum


def test_a_held_count_variance_is_settled_only_by_an_inventory_role():
    ledger = world()
    outcome = execute(ledger, c.SubmitCycleCount((c.CountLine("shirt", "n0", 20),)), NOW)
    exception_id = outcome.detail.lines[0].exception_id
    assert exception_id  # 30 missing: held for approval
    with pytest.raises(PermissionDenied):
        execute(ledger, c.ResolveException(exception_id, Resolution.APPROVE,
                                           actor="clerk", role="customer_service"), NOW)
    execute(ledger, c.ResolveException(exception_id, Resolution.APPROVE, actor="ic-1",
                                       role="inventory_control"), NOW)
    shirt = ledger.catalog.sku("shirt")
    assert ledger.buckets(shirt, 0)[Bucket.QUARANTINED] == 0  # written off


def test_a_return_policy_change_needs_two_different_approvers():
    ledger = world()
    stricter = ReturnPolicy(window_days=7)
    approval_id = execute(ledger, c.SetReturnPolicy(stricter, actor="analyst"), NOW).detail
    assert approval_id and ledger.returns.policy.window_days == 30  # not yet
    execute(ledger, c.DecideApproval(approval_id, True, "cfo", "finance"), NOW)
    assert ledger.returns.policy.window_days == 30  # one approval is not enough
    with pytest.raises(FailedPrecondition):  # nor the same person twice
        execute(ledger, c.DecideApproval(approval_id, True, "cfo", "finance"), NOW)
    execute(ledger, c.DecideApproval(approval_id, True, "admin-1", "admin"), NOW)
    assert ledger.returns.policy.window_days == 7


def test_a_count_variance_above_the_percentage_threshold_is_held():
    ledger = Ledger(LedgerSettings(n_shards=2, count_hold_units=5, count_hold_percent=10.0))
    for command in (c.UpsertNodes((NodeSpec("n0"),)), c.UpsertSkus((SkuSpec("x"),)),
                    c.ReceiveStock((c.ReceiptLine("x", "n0", 20),))):
        execute(ledger, command, NOW)
    # 3 of 20 missing: under 5 units, but 15 % > 10 %: held, not booked.
    line = execute(ledger, c.SubmitCycleCount((c.CountLine("x", "n0", 17),)), NOW).detail.lines[0]
    assert line.exception_id and line.held == 3 and line.adjusted == 0


def _status(ledger: Ledger, rma: str) -> ReturnStatus:
    return ledger.returns.returns[rma].status


def test_a_return_closes_once_inspected_with_nothing_left_to_refund():
    ledger = world()
    sell(ledger, "o1", "shirt", 2)
    assert ask(ledger, "r1", "o1", 1, NOW + DAY_MS).eligible
    assert _status(ledger, "r1") == ReturnStatus.AUTHORIZED
    execute(ledger, c.ReceiveReturn("r1", (), actor="clerk"), NOW + 2 * DAY_MS)
    assert _status(ledger, "r1") == ReturnStatus.RECEIVED
    assert ledger.returns.returns["r1"].refunded_micros  # (refunded on receipt)
    execute(ledger, c.InspectReturn("r1", (("1", int(Grade.LIKE_NEW)),), actor="clerk"),
            NOW + 2 * DAY_MS)
    assert _status(ledger, "r1") == ReturnStatus.CLOSED


@pytest.mark.parametrize("approve", [True, False])
def test_a_refund_waiting_for_its_approval_keeps_the_return_open_until_decided(approve):
    # High value: refunded on inspection, and above the threshold: an approval is asked
    # for in the inspection's own command.
    ledger = world(ReturnPolicy(high_value_micros=1, refund_approval_micros=1))
    sell(ledger, "o1", "shirt", 2)
    assert ask(ledger, "r1", "o1", 1, NOW + DAY_MS).eligible
    execute(ledger, c.ReceiveReturn("r1", (), actor="clerk"), NOW + 2 * DAY_MS)
    execute(ledger, c.InspectReturn("r1", (("1", int(Grade.LIKE_NEW)),), actor="clerk"),
            NOW + 2 * DAY_MS)
    record = ledger.returns.returns["r1"]
    assert record.status == ReturnStatus.INSPECTED and record.approval_id
    assert not record.done and record.refunded_micros == 0
    execute(ledger, c.DecideApproval(record.approval_id, approve, "controller", "finance"),
            NOW + 3 * DAY_MS)
    assert record.status == ReturnStatus.CLOSED and not record.approval_id and record.done
    assert (record.refunded_micros > 0) == approve


def sell_lines(ledger: Ledger, order_id: str, lines: tuple[tuple[str, int], ...],
               customer: str = "") -> None:
    """An order of one line per (sku, quantity), lines "1", "2", ..., shipped whole."""
    spec = OrderSpec(order_id, "web", SlaTier.STANDARD, tuple(
        OrderLineSpec(str(i + 1), sku, qty) for i, (sku, qty) in enumerate(lines)),
        postal_code="10001", customer_id=customer)
    execute(ledger, c.AllocateOrders((spec,)), NOW)
    (package_id,) = ledger.orders.orders[order_id].package_ids
    execute(ledger, c.ReleaseWave("n0"), NOW)
    execute(ledger, c.ConfirmPick(package_id, ()), NOW)
    execute(ledger, c.ConfirmPack(package_id, lines), NOW)
    execute(ledger, c.ConfirmShipment(package_id, "T"), NOW)


def test_a_line_named_twice_on_a_receipt_or_an_inspection_is_refused_and_changes_nothing():
    ledger = world()
    sell(ledger, "o1", "shirt", 4)
    ask(ledger, "r1", "o1", 2, NOW)
    before = ledger.checksum()
    with pytest.raises(InvalidArgument, match="twice"):
        execute(ledger, c.ReceiveReturn("r1", (("1", 1), ("1", 1))), NOW)
    assert ledger.checksum() == before
    execute(ledger, c.ReceiveReturn("r1"), NOW)
    before = ledger.checksum()
    graded = int(Grade.LIKE_NEW)
    with pytest.raises(InvalidArgument, match="twice"):
        execute(ledger, c.InspectReturn("r1", (("1", graded), ("1", graded))), NOW)
    assert ledger.checksum() == before
    # Another return's units waiting at the same node are not touched by this one's.
    execute(ledger, c.InspectReturn("r1", (("1", graded),)), NOW)
    assert ledger.buckets(ledger.catalog.sku("shirt"), 0)[Bucket.RETURNED] == 0
    assert ledger.returns.returns["r1"].refunded_micros == 2 * 20_000_000


def test_a_receipt_names_the_line_its_units_are_for():
    ledger = world()
    sell(ledger, "o1", "shirt", 2)
    ask(ledger, "r1", "o1", 2, NOW)
    outcome = execute(ledger, c.ReceiveReturn("r1", (("1", 1),)), NOW)
    received = [e for e in outcome.events if e.kind == EventKind.RETURN_RECEIVED]
    assert [e.payload for e in received] == ["1"]
    assert ledger.returns.returns["r1"].received == {"1": 1}


def test_an_inspection_grades_every_line_received():
    ledger = world()
    sell_lines(ledger, "o1", (("shirt", 1), ("tree", 1)))
    assert execute(ledger, c.CreateReturn("r1", "o1", (("1", 1), ("2", 1))), NOW
                   ).detail.eligible
    execute(ledger, c.ReceiveReturn("r1"), NOW)
    before = ledger.checksum()
    with pytest.raises(FailedPrecondition, match="need a grade"):
        execute(ledger, c.InspectReturn("r1", (("1", int(Grade.LIKE_NEW)),)), NOW)
    assert ledger.checksum() == before
    execute(ledger, c.InspectReturn("r1", (("1", int(Grade.LIKE_NEW)),
                                           ("2", int(Grade.DAMAGED)))), NOW)
    assert _status(ledger, "r1") == ReturnStatus.CLOSED
    for sku in ("shirt", "tree"):
        assert ledger.buckets(ledger.catalog.sku(sku), 0)[Bucket.RETURNED] == 0


def test_an_inspection_ends_the_receipt_and_frees_what_never_came_for_another_return():
    ledger = world()
    sell(ledger, "o1", "shirt", 2)
    ask(ledger, "r1", "o1", 2, NOW)
    execute(ledger, c.ReceiveReturn("r1", (("1", 1),)), NOW)  # one of the two comes
    execute(ledger, c.InspectReturn("r1", (("1", int(Grade.LIKE_NEW)),)), NOW)
    record = ledger.returns.returns["r1"]
    assert record.status == ReturnStatus.CLOSED and record.refunded_micros == 20_000_000
    before = ledger.checksum()
    with pytest.raises(FailedPrecondition, match="inspected already"):
        execute(ledger, c.ReceiveReturn("r1"), NOW)
    assert ledger.checksum() == before
    # The unit that never came may come back on a return of its own, and no more.
    assert ask(ledger, "r2", "o1", 1, NOW).eligible
    assert not ask(ledger, "r3", "o1", 1, NOW).eligible


def _one_of_two_back_on_a_trusted_return(ledger: Ledger):
    """A loyal customer's two shirts, returned on an RMA refunded when authorised: one
    comes back and is inspected. Returns the return's decision."""
    for i in range(3):
        sell(ledger, f"t{i}", "shirt", 1, customer="loyal")
    sell(ledger, "o1", "shirt", 2, customer="loyal")
    trusted = ask(ledger, "r1", "o1", 2, NOW)
    assert trusted.authorization.refund_timing == RefundTiming.ON_AUTHORIZATION
    execute(ledger, c.ReceiveReturn("r1", (("1", 1),)), NOW)
    execute(ledger, c.InspectReturn("r1", (("1", int(Grade.LIKE_NEW)),)), NOW)
    return trusted


def test_units_refunded_when_authorised_stay_owed_after_an_inspection():
    ledger = world()
    _one_of_two_back_on_a_trusted_return(ledger)
    # Both were refunded up front: the missing one cannot be returned (and refunded) again.
    assert not ask(ledger, "r2", "o1", 1, NOW).eligible


def test_a_return_refunded_in_parts_asks_for_approval_once_its_total_is_above_the_limit():
    # Each part is under the limit; the two together are over it.
    ledger = world(ReturnPolicy(refund_approval_micros=70_000_000))
    sell_lines(ledger, "o1", (("shirt", 2), ("tree", 2)))  # 40 + 60 million
    assert execute(ledger, c.CreateReturn("r1", "o1", (("1", 2), ("2", 2))), NOW
                   ).detail.eligible
    first = execute(ledger, c.ReceiveReturn("r1", (("1", 2),)), NOW).detail
    assert first.refunded_micros == 40_000_000 and not first.approval_id
    second = execute(ledger, c.ReceiveReturn("r1", (("2", 2),)), NOW).detail
    assert second.refunded_micros == 0 and second.approval_id  # 100 million in all
    request = ledger.approvals.by_id[second.approval_id].request
    assert request.amount_micros == 60_000_000 and "40000000 micros refunded" in request.detail


def test_a_return_stays_open_while_any_of_its_refund_approvals_waits():
    ledger = world(ReturnPolicy(refund_approval_micros=1))
    sell_lines(ledger, "o1", (("shirt", 1), ("tree", 1)))
    execute(ledger, c.CreateReturn("r1", "o1", (("1", 1), ("2", 1))), NOW)
    first = execute(ledger, c.ReceiveReturn("r1", (("1", 1),)), NOW).detail.approval_id
    second = execute(ledger, c.ReceiveReturn("r1", (("2", 1),)), NOW).detail.approval_id
    assert first and second and first != second
    execute(ledger, c.InspectReturn("r1", (("1", int(Grade.LIKE_NEW)),
                                           ("2", int(Grade.LIKE_NEW)))), NOW)
    record = ledger.returns.returns["r1"]
    execute(ledger, c.DecideApproval(first, False, "controller", "finance"), NOW)
    assert record.status == ReturnStatus.INSPECTED and not record.done
    assert record.approval_id == second and record.pending_approvals == [second]
    execute(ledger, c.DecideApproval(second, True, "controller", "finance"), NOW)
    assert record.status == ReturnStatus.CLOSED and record.done and not record.approval_id
    assert record.refunded_micros == 30_000_000  # the tree's; the shirt's was refused


def test_a_return_from_a_snapshot_written_before_pending_approvals_were_kept_reads_them():
    ledger = world(ReturnPolicy(high_value_micros=1, refund_approval_micros=1))
    sell(ledger, "o1", "shirt", 1)
    ask(ledger, "r1", "o1", 1, NOW)
    execute(ledger, c.ReceiveReturn("r1"), NOW)
    execute(ledger, c.InspectReturn("r1", (("1", int(Grade.LIKE_NEW)),)), NOW)
    record = ledger.returns.returns["r1"]
    old = copy.copy(record)
    state = {name: getattr(record, name) for name in (
        "auth", "created_ms", "status", "received", "inspection", "refunded_micros",
        "approval_id")}  # (no pending_approvals)
    old.__setstate__((None, state))
    assert old.pending_approvals == [record.approval_id] and not old.done


def _mixed_line(ledger: Ledger) -> None:
    """Order o1's line "1", 3 mugA at $9.50 a unit, shipped as 1 mugA and 2 mugB (the
    only mugA in stock, then its substitute)."""
    mugs = tuple(SkuSpec(name, weight_lb=1, price_micros=price, unit_cost_micros=3_000_000,
                         category="home", substitution_group="mugs")
                 for name, price in (("mugA", 9_000_000), ("mugB", 10_000_000),
                                     ("mugC", 10_000_000)))
    for command in (c.UpsertNodes(NODES[:1]), c.UpsertChannels((ChannelSpec("web"),)),
                    c.UpsertSkus(mugs),
                    c.SetNetwork(dataclasses.replace(NETWORK, node_costs=NETWORK.node_costs[:1])),
                    c.ReceiveStock((c.ReceiptLine("mugA", "n0", 1),
                                    c.ReceiptLine("mugB", "n0", 10)))):
        execute(ledger, command, NOW)
    spec = OrderSpec("o1", "web", SlaTier.STANDARD, (OrderLineSpec("1", "mugA", 3, 9_500_000),),
                     postal_code="10001", allow_substitution=True)
    execute(ledger, c.AllocateOrders((spec,)), NOW)
    package_ids = ledger.orders.orders["o1"].package_ids
    execute(ledger, c.ReleaseWave("n0"), NOW)
    shipped = {}
    for package_id in package_ids:
        state = ledger.orders.packages[package_id]
        contents = tuple((ledger.catalog.sku_ids[line.sku], line.quantity)
                         for line in state.plan.lines)
        shipped.update(contents)
        execute(ledger, c.ConfirmPick(package_id, ()), NOW)
        execute(ledger, c.ConfirmPack(package_id, contents), NOW)
        execute(ledger, c.ConfirmShipment(package_id, "T"), NOW)
    assert shipped == {"mugA": 1, "mugB": 2}


def test_a_line_shipped_partly_as_a_substitute_is_not_taken_back_as_one_sku():
    ledger = Ledger(LedgerSettings(n_shards=2))
    _mixed_line(ledger)
    before = ledger.checksum()
    decision = ask(ledger, "r1", "o1", 3, NOW)
    assert not decision.eligible and "mugA, mugB" in decision.reasons[0]
    assert "name the SKU coming back" in decision.reasons[0]
    assert ledger.checksum() == before


def _ask_as(ledger: Ledger, rma: str, qty: int, sku_id: str):
    return execute(ledger, c.CreateReturn(rma, "o1", (("1", qty),), skus=(sku_id,)),
                   NOW).detail


def test_a_line_shipped_as_two_skus_comes_back_by_the_sku_named():
    ledger = Ledger(LedgerSettings(n_shards=2))
    _mixed_line(ledger)
    node, mug_a, mug_b = 0, ledger.catalog.sku("mugA"), ledger.catalog.sku("mugB")
    # More of a SKU than shipped as it: not eligible, and says how many shipped as it.
    too_many = _ask_as(ledger, "r0", 3, "mugB")
    assert not too_many.eligible and "2 shipped as mugB" in too_many.reasons[0]
    back = _ask_as(ledger, "r1", 2, "mugB")
    assert back.eligible, back.reasons
    (line,) = back.authorization.lines
    assert (line.sku, line.quantity, line.unit_price_micros) == (mug_b, 2, 9_500_000)
    execute(ledger, c.ReceiveReturn("r1", (("1", 2),)), NOW)
    assert ledger.buckets(mug_b, node)[Bucket.RETURNED] == 2
    assert ledger.buckets(mug_a, node)[Bucket.RETURNED] == 0
    # The mugB are all back: one more is not eligible; the mugA still is.
    again = _ask_as(ledger, "r2", 1, "mugB")
    assert not again.eligible and "2 already returned" in again.reasons[0]
    assert _ask_as(ledger, "r3", 1, "mugA").eligible
    execute(ledger, c.ReceiveReturn("r3", (("1", 1),)), NOW)
    assert ledger.buckets(mug_a, node)[Bucket.RETURNED] == 1
    assert ledger.returns.returned[("o1", "1")] == 3
    assert sum(ledger.books.trial_balance().values()) == 0


def test_units_of_a_two_sku_line_that_never_came_may_come_back_on_another_return():
    ledger = Ledger(LedgerSettings(n_shards=2))
    _mixed_line(ledger)
    assert _ask_as(ledger, "r1", 2, "mugB").eligible
    execute(ledger, c.ReceiveReturn("r1", (("1", 1),)), NOW)  # one of the two came
    execute(ledger, c.InspectReturn("r1", (("1", int(Grade.UNOPENED)),)), NOW)
    assert _ask_as(ledger, "r2", 1, "mugB").eligible  # the one that did not come
    assert not _ask_as(ledger, "r3", 1, "mugB").eligible


def test_a_sku_the_line_did_not_ship_as_is_not_eligible_and_an_unknown_one_is_refused():
    ledger = Ledger(LedgerSettings(n_shards=2))
    _mixed_line(ledger)
    before = ledger.checksum()
    other = _ask_as(ledger, "r1", 1, "mugC")
    assert not other.eligible and "none of it shipped as mugC" in other.reasons[0]
    with pytest.raises(NotFound):
        _ask_as(ledger, "r2", 1, "no-such-mug")
    assert ledger.checksum() == before
    # A line that shipped as one SKU may name it, and only it.
    world_ = world()
    sell(world_, "o9", "shirt", 2)
    named = execute(world_, c.CreateReturn("r9", "o9", (("1", 1),), skus=("shirt",)), NOW)
    assert named.detail.eligible
    wrong = execute(world_, c.CreateReturn("r8", "o9", (("1", 1),), skus=("phone",)), NOW)
    assert not wrong.detail.eligible and "it shipped as shirt" in wrong.detail.reasons[0]

def test_an_up_front_refund_refused_frees_what_never_came_for_another_return():
    ledger = world(ReturnPolicy(refund_approval_micros=1))
    asked = _one_of_two_back_on_a_trusted_return(ledger)
    assert not ask(ledger, "r2", "o1", 1, NOW).eligible  # its refund may still be paid
    execute(ledger, c.DecideApproval(asked.approval_id, False, "controller", "finance"), NOW)
    assert ledger.returns.returns["r1"].refunded_micros == 0
    assert ask(ledger, "r3", "o1", 1, NOW).eligible  # nobody paid for the missing unit


def _one_back_and_inspected(shirts: int) -> Ledger:
    """o1 sold `shirts` shirts, all on return r1 (refunded on receipt): one came back and
    was inspected."""
    ledger = world()
    sell(ledger, "o1", "shirt", shirts)
    ask(ledger, "r1", "o1", shirts, NOW)
    execute(ledger, c.ReceiveReturn("r1", (("1", 1),)), NOW)
    execute(ledger, c.InspectReturn("r1", (("1", int(Grade.LIKE_NEW)),)), NOW)
    return ledger


def test_an_older_log_s_receipt_after_the_inspection_counts_as_returned_on_replay():
    ledger = _one_back_and_inspected(2)
    assert ledger.returns.returned[("o1", "1")] == 1  # the missing unit freed
    record = ledger.returns.returns["r1"]
    late = Event(ledger.last_seq + 1, EventKind.RETURN_RECEIVED,
                 sku=ledger.catalog.sku("shirt"), node=record.auth.node,
                 to_bucket=Bucket.RETURNED, quantity=1, reference="r1", time_ms=NOW)
    ledger.apply([late], replay=True)  # (allowed then, and written without its line)
    assert record.received == {"1": 2} and ledger.returns.returned[("o1", "1")] == 2
    assert not ask(ledger, "r2", "o1", 1, NOW).eligible


def test_a_snapshot_from_before_inspections_freed_units_is_read_as_a_replay_leaves_it():
    ledger = _one_back_and_inspected(2)
    book = ledger.returns
    old = dict(book.__dict__, returned={("o1", "1"): 2})  # what the code before kept
    del old["frees_unreceived"]
    for record in book.returns.values():
        record.released = False
    restored = ReturnBook.__new__(ReturnBook)
    restored.__setstate__(old)
    assert restored.returned == {("o1", "1"): 1} and restored.frees_unreceived


def test_what_never_came_is_freed_once():
    ledger = _one_back_and_inspected(3)
    assert ledger.returns.returned[("o1", "1")] == 1
    ledger.returns.release_unreceived(ledger.returns.returns["r1"])
    assert ledger.returns.returned[("o1", "1")] == 1


def test_a_partial_refund_carries_only_its_own_lines_restocking_fee():
    # A shirt (apparel: no fee) and a phone (electronics: 15%) on one return; the shirt
    # comes first. Its refund carries none of the phone's fee; the phone's carries all of it.
    ledger = world()
    sell_lines(ledger, "o1", (("shirt", 1), ("phone", 1)))
    decision = execute(ledger, c.CreateReturn("r1", "o1", (("1", 1), ("2", 1))), NOW).detail
    assert decision.authorization.restocking_fee_micros == 15_000_000
    refunds = []
    for line_id in ("1", "2"):
        outcome = execute(ledger, c.ReceiveReturn("r1", ((line_id, 1),)), NOW)
        refunds += [e.payload for e in outcome.events if e.kind == EventKind.REFUND_ISSUED]
    assert [(r.gross_micros, r.fee_micros) for r in refunds] == [
        (20_000_000, 0), (100_000_000, 15_000_000)]
    assert ledger.returns.returns["r1"].refunded_micros == 120_000_000 - 15_000_000


def test_the_restocking_fee_is_shared_at_the_rates_it_was_charged_at_not_today_s():
    """A phone (15%) and socks (no fee) authorised; then the policy swaps the rates. The
    phone's refund still carries the whole 15,000,000 fee and the socks' none: shared at
    today's rates, the socks' refund came out negative, and the phone's carried no fee."""
    ledger = world()
    sell_lines(ledger, "o1", (("phone", 1), ("socks", 1)))
    decision = execute(ledger, c.CreateReturn("r1", "o1", (("1", 1), ("2", 1))), NOW).detail
    assert decision.authorization.restocking_fee_micros == 15_000_000
    swapped = dataclasses.replace(ledger.returns.policy, category_restocking_fee_bp=(
        ("electronics", 0), ("clearance", 1000)))
    execute(ledger, c.SetReturnPolicy(swapped, approved=True), NOW)
    refunds = []
    for line_id in ("1", "2"):
        outcome = execute(ledger, c.ReceiveReturn("r1", ((line_id, 1),)), NOW)
        refunds += [e.payload for e in outcome.events if e.kind == EventKind.REFUND_ISSUED]
    assert [(r.gross_micros, r.fee_micros, r.net_micros) for r in refunds] == [
        (100_000_000, 15_000_000, 85_000_000), (5_000_000, 0, 5_000_000)]
    assert ledger.returns.returns["r1"].refunded_micros == decision.authorization.refund_micros


def test_a_negative_quantity_received_is_an_invalid_argument():
    ledger = world()
    sell(ledger, "o1", "shirt", 2)
    execute(ledger, c.CreateReturn("r1", "o1", (("1", 2),)), NOW)
    before = ledger.checksum()
    with pytest.raises(InvalidArgument) as refused:
        execute(ledger, c.ReceiveReturn("r1", (("1", -1),)), NOW)
    assert refused.value.field == "lines[0].quantity" and ledger.checksum() == before


def test_a_sku_id_that_is_no_identifier_is_an_invalid_argument():
    ledger = Ledger(LedgerSettings(n_shards=2))
    _mixed_line(ledger)
    before = ledger.checksum()
    for bad in ("mug\nB", "m" * 129):
        with pytest.raises(InvalidArgument) as refused:
            _ask_as(ledger, "r1", 1, bad)
        assert refused.value.field == "lines[0].sku_id"
    assert ledger.checksum() == before


def test_a_return_book_from_a_snapshot_before_returns_were_counted_by_sku_counts_them():
    ledger = Ledger(LedgerSettings(n_shards=2))
    _mixed_line(ledger)
    assert _ask_as(ledger, "r1", 2, "mugB").eligible
    execute(ledger, c.ReceiveReturn("r1", (("1", 1),)), NOW)
    execute(ledger, c.InspectReturn("r1", (("1", int(Grade.UNOPENED)),)), NOW)
    assert _ask_as(ledger, "r2", 1, "mugA").eligible
    book = ledger.returns
    state = dict(book.__dict__)
    del state["returned_as"]
    old = ReturnBook.__new__(ReturnBook)
    old.__setstate__(copy.deepcopy(state))
    mug_a, mug_b = ledger.catalog.sku("mugA"), ledger.catalog.sku("mugB")
    assert old.returned_as == book.returned_as == {("o1", "1", mug_b): 1, ("o1", "1", mug_a): 1}
