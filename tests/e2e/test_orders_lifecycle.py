"""OrderService lifecycle end to end: wave, pick, pack and ship; short picks, pack
mismatches, cancellations, holds and the exceptions that go with them.

The world is the demo's (see conftest.demo_world): AVP3 is the cheapest node for
New York, then IND1, ATL6, STORE-NYC. Every test makes SKUs of its own. ReleaseWave
releases every ALLOCATED package at a node, so a wave may also carry packages of
earlier tests: the tests check that theirs is in it, not that it is alone.
"""

from __future__ import annotations

import grpc
from allocd.v1 import order_service_pb2 as pb
from allocd.v1 import types_pb2

FAILED = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def packages_of(world, order_id: str) -> dict[str, pb.Package]:
    return {p.package_id: p for p in world.get(order_id).allocation.packages}


def lines_of(package: pb.Package) -> list[tuple[str, str, int]]:
    return [(line.line_id, line.sku_id, line.quantity) for line in package.lines]


# ---- the happy path -------------------------------------------------------------------------
def test_an_order_goes_through_wave_pick_pack_and_shipment_to_shipped(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 5)
    alloc = w.allocate(w.order((a, 2))).allocation
    (package,) = alloc.packages
    pid = package.package_id
    assert w.levels(a, "IND1") == (3, 2)
    shipped_before = api.summary().units_shipped

    wave = w.release("IND1")
    assert pid in wave.package_ids and wave.wave_id.startswith("WAVE-IND1-")
    assert wave.result.event_count == 1
    got = w.get(alloc.order_id).allocation
    assert got.status == pb.ORDER_STATUS_IN_FULFILMENT
    assert (got.packages[0].status, got.packages[0].wave_id) == (pb.PACKAGE_STATUS_RELEASED,
                                                                 wave.wave_id)
    # Releasing again finds nothing new of ours.
    assert pid not in w.release("IND1").package_ids

    picked = w.pick(pid, {"1": 2})
    assert (picked.short_quantity, picked.exception_id) == (0, "")
    assert packages_of(w, alloc.order_id)[pid].status == pb.PACKAGE_STATUS_PICKED

    packed = w.pack(pid, {a: 2})
    assert packed.matched and packed.exception_id == ""
    assert packages_of(w, alloc.order_id)[pid].status == pb.PACKAGE_STATUS_PACKED
    assert w.levels(a, "IND1") == (3, 2)  # still ALLOCATED until it leaves

    shipped = w.ship(pid, "1Z-TRACK-0001")
    assert shipped.order_status == pb.ORDER_STATUS_SHIPPED
    order = w.get(alloc.order_id)
    assert order.allocation.status == pb.ORDER_STATUS_SHIPPED
    (final,) = order.allocation.packages
    assert (final.status, final.tracking_number) == (pb.PACKAGE_STATUS_SHIPPED, "1Z-TRACK-0001")
    assert w.levels(a, "IND1") == (3, 0)
    assert api.summary().units_shipped == shipped_before + 2
    assert order.exceptions == []

    # A shipped package cannot be shipped again, nor the order cancelled.
    api.rejects(FAILED, api.orders.ConfirmShipment, pb.ConfirmShipmentRequest(
        request_id=api.rid(), package_id=pid, tracking_number="1Z-TRACK-0002"))
    api.rejects(FAILED, api.orders.CancelOrder, pb.CancelOrderRequest(
        request_id=api.rid(), order_id=alloc.order_id))


def test_wave_steps_out_of_order_are_refused_and_change_nothing(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 5)
    (package,) = w.allocate(w.order((a, 2))).allocation.packages
    pid = package.package_id
    scan = pb.ConfirmPackRequest(request_id=api.rid(), package_id=pid,
                                 scanned=[pb.ScannedItem(sku_id=a, quantity=2)])
    ship = pb.ConfirmShipmentRequest(request_id=api.rid(), package_id=pid,
                                     tracking_number="1Z")
    pick = pb.ConfirmPickRequest(request_id=api.rid(), package_id=pid,
                                 lines=[pb.PickedLine(line_id="1", picked_quantity=2)])
    for call, request in ((api.orders.ConfirmPick, pick), (api.orders.ConfirmPack, scan),
                          (api.orders.ConfirmShipment, ship)):  # ALLOCATED: not released
        api.rejects(FAILED, call, request)
    w.release("IND1")
    api.rejects(FAILED, api.orders.ConfirmPack, scan)  # RELEASED, not PICKED
    api.rejects(FAILED, api.orders.ConfirmShipment, ship)
    w.pick(pid, {"1": 2})
    api.rejects(FAILED, api.orders.ConfirmShipment, ship)  # PICKED, not PACKED
    api.rejects(FAILED, api.orders.ConfirmPick, pb.ConfirmPickRequest(
        request_id=api.rid(), package_id=pid))  # picked already


# ---- short picks ------------------------------------------------------------------------------
def test_a_short_pick_writes_off_the_missing_units_and_reallocates_them_at_another_node(
        api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "AVP3", 3)
    w.stock(a, "ATL6", 5)
    alloc = w.allocate(w.order((a, 3))).allocation
    (package,) = alloc.packages
    assert package.node_id == "AVP3"
    shipped_before = api.summary().units_shipped
    w.release("AVP3")

    picked = w.pick(package.package_id, {"1": 1})

    assert picked.short_quantity == 2 and picked.exception_id
    after = picked.allocation
    assert after.status == pb.ORDER_STATUS_IN_FULFILMENT
    assert [(p.package_id, p.node_id, p.status, lines_of(p)) for p in after.packages] == [
        (package.package_id, "AVP3", pb.PACKAGE_STATUS_PICKED, [("1", a, 1)]),
        (f"{alloc.order_id}-P2", "ATL6", pb.PACKAGE_STATUS_ALLOCATED, [("1", a, 2)])]
    assert not after.backorders
    # The two missing units left the ledger; ATL6 gave two more.
    assert w.levels(a, "AVP3") == (0, 1)
    assert w.levels(a, "ATL6") == (3, 2)
    assert api.summary().units_shipped == shipped_before + 2

    (short,) = w.exceptions(alloc.order_id, type=pb.EXCEPTION_TYPE_SHORT_PICK)
    assert (short.exception_id, short.reference, short.owner_role) == (
        picked.exception_id, package.package_id, "warehouse")
    assert "2 units missing at AVP3" in short.detail
    assert [e.type for e in w.exceptions(alloc.order_id)] == [pb.EXCEPTION_TYPE_SHORT_PICK]
    accepted = w.resolve(short.exception_id, pb.RESOLUTION_ACCEPT, "counted, gone")
    assert accepted.exception.resolved and accepted.exception.resolution == "ACCEPT"
    assert accepted.exception.resolution_note == "counted, gone"
    assert w.exceptions(alloc.order_id) == []

    # Both packages ship; the order is complete.
    w.pack(package.package_id, {a: 1})
    w.ship(package.package_id)
    second = packages_of(w, alloc.order_id)[f"{alloc.order_id}-P2"]
    assert w.fulfil(second).order_status == pb.ORDER_STATUS_SHIPPED
    assert w.levels(a, "ATL6") == (3, 0)


def test_a_short_pick_with_no_stock_elsewhere_backorders_the_missing_units(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "AVP3", 3)
    alloc = w.allocate(w.order((a, 3))).allocation
    (package,) = alloc.packages
    w.release("AVP3")

    picked = w.pick(package.package_id, {"1": 1})

    assert picked.short_quantity == 2
    after = picked.allocation
    assert [(p.package_id, lines_of(p)) for p in after.packages] == [
        (package.package_id, [("1", a, 1)])]
    (backorder,) = after.backorders
    assert (backorder.line_id, backorder.sku_id, backorder.quantity) == ("1", a, 2)
    assert after.status == pb.ORDER_STATUS_IN_FULFILMENT
    assert [e.type for e in w.exceptions(alloc.order_id)] == [pb.EXCEPTION_TYPE_SHORT_PICK,
                                                              pb.EXCEPTION_TYPE_BACKORDER]
    assert w.levels(a, "AVP3") == (0, 1)


def test_picking_nothing_of_a_package_cancels_it_and_reallocates_everything(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "AVP3", 2)
    w.stock(a, "IND1", 4)
    alloc = w.allocate(w.order((a, 2))).allocation
    (package,) = alloc.packages
    w.release("AVP3")
    picked = w.pick(package.package_id, {"1": 0})
    assert picked.short_quantity == 2
    assert [(p.package_id, p.node_id, lines_of(p)) for p in picked.allocation.packages] == [
        (f"{alloc.order_id}-P2", "IND1", [("1", a, 2)])]
    assert picked.allocation.status == pb.ORDER_STATUS_ALLOCATED
    assert w.levels(a, "AVP3") == (0, 0)
    assert w.levels(a, "IND1") == (2, 2)
    # The emptied package is CANCELLED: no step applies to it any more.
    api.rejects(FAILED, api.orders.ConfirmPack, pb.ConfirmPackRequest(
        request_id=api.rid(), package_id=package.package_id,
        scanned=[pb.ScannedItem(sku_id=a, quantity=2)]), details="CANCELLED")


# ---- pack mismatches ------------------------------------------------------------------------
def test_a_pack_mismatch_raises_an_exception_and_accepting_it_lets_the_package_ship(
        api, demo_world):
    w = demo_world
    a, b = w.sku(), w.sku()
    w.stock(a, "IND1", 5)
    w.stock(b, "IND1", 5)
    alloc = w.allocate(w.order((a, 2), (b, 1))).allocation
    (package,) = alloc.packages
    pid = package.package_id
    w.release("IND1")
    w.pick(pid, {"1": 2, "2": 1})

    packed = w.pack(pid, {a: 1, b: 1})

    assert not packed.matched and packed.exception_id
    assert packages_of(w, alloc.order_id)[pid].status == pb.PACKAGE_STATUS_PICKED
    (mismatch,) = w.exceptions(alloc.order_id)
    assert (mismatch.exception_id, mismatch.type, mismatch.reference, mismatch.owner_role) == (
        packed.exception_id, pb.EXCEPTION_TYPE_PACK_MISMATCH, pid, "warehouse")
    assert f"{a}: expected 2, scanned 1" in mismatch.detail
    api.rejects(FAILED, api.orders.ConfirmShipment, pb.ConfirmShipmentRequest(
        request_id=api.rid(), package_id=pid, tracking_number="1Z"))

    accepted = w.resolve(packed.exception_id, pb.RESOLUTION_ACCEPT, "recounted: all there")
    assert accepted.exception.resolved and accepted.exception.resolution == "ACCEPT"
    assert packages_of(w, alloc.order_id)[pid].status == pb.PACKAGE_STATUS_PACKED

    assert w.ship(pid).order_status == pb.ORDER_STATUS_SHIPPED
    assert (w.levels(a, "IND1"), w.levels(b, "IND1")) == ((3, 0), (4, 0))
    assert w.exceptions(alloc.order_id) == []


def test_an_extra_or_unknown_sku_in_the_scan_is_a_mismatch(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 5)
    (package,) = w.allocate(w.order((a, 1))).allocation.packages
    w.release("IND1")
    w.pick(package.package_id, {"1": 1})
    packed = w.pack(package.package_id, {a: 1, "SOMETHING-ELSE": 1})
    assert not packed.matched and packed.exception_id
    # A rescan that matches packs the package.
    assert w.pack(package.package_id, {a: 1}).matched


def test_accepting_a_stale_pack_mismatch_does_not_unship_the_package(api, demo_world):
    """A mismatch, a correct rescan (which settles the mismatch), the shipment, and then a
    late ACCEPT of the mismatch: refused, the package stays SHIPPED, and it cannot ship
    (take ALLOCATED units) a second time."""
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 5)
    bystander = w.allocate(w.order((a, 3))).allocation  # holds 3 ALLOCATED units at IND1
    alloc = w.allocate(w.order((a, 2))).allocation
    pid = alloc.packages[0].package_id
    w.release("IND1")
    w.pick(pid, {"1": 2})
    mismatch = w.pack(pid, {a: 1})
    assert not mismatch.matched
    assert w.pack(pid, {a: 2}).matched
    w.ship(pid, "1Z-ONCE")
    assert w.levels(a, "IND1") == (0, 3)
    shipped_before = api.summary().units_shipped

    api.rejects(FAILED, api.orders.ResolveException, pb.ResolveExceptionRequest(
        request_id=api.rid(), exception_id=mismatch.exception_id,
        resolution=pb.RESOLUTION_ACCEPT))
    (exception,) = [e for e in w.get(alloc.order_id).exceptions
                    if e.exception_id == mismatch.exception_id]
    assert exception.resolved and exception.resolution == "ACCEPT"

    (package,) = w.get(alloc.order_id).allocation.packages
    assert (package.status, package.tracking_number) == (pb.PACKAGE_STATUS_SHIPPED, "1Z-ONCE")
    api.rejects(FAILED, api.orders.ConfirmShipment, pb.ConfirmShipmentRequest(
        request_id=api.rid(), package_id=pid, tracking_number="1Z-TWICE"))
    # The bystander's units are still ALLOCATED to it; nothing more left the ledger.
    assert w.levels(a, "IND1") == (0, 3)
    assert api.summary().units_shipped == shipped_before
    assert sum(x.quantity for p in w.get(bystander.order_id).allocation.packages
               for x in p.lines) == 3


# ---- cancellations --------------------------------------------------------------------------
def test_cancelling_after_one_of_two_packages_shipped_releases_only_the_unshipped_one(
        api, demo_world):
    w = demo_world
    a, b = w.sku(), w.sku()
    w.stock(a, "AVP3", 5)
    w.stock(b, "IND1", 5)
    alloc = w.allocate(w.order((a, 1), (b, 3))).allocation
    first, second = alloc.packages
    assert (first.node_id, second.node_id) == ("AVP3", "IND1")
    assert w.fulfil(first).order_status == pb.ORDER_STATUS_PARTIALLY_SHIPPED

    cancelled = api.orders.CancelOrder(pb.CancelOrderRequest(request_id=api.rid(),
                                                             order_id=alloc.order_id))

    assert cancelled.released_quantity == 3
    after = cancelled.allocation
    # Only the shipped package is left; what was shipped is all of the order now.
    assert after.status == pb.ORDER_STATUS_SHIPPED
    assert [(p.package_id, p.status) for p in after.packages] == [
        (first.package_id, pb.PACKAGE_STATUS_SHIPPED)]
    assert after.total_cost_micros == first.cost.total_micros
    assert (alloc.placed_units, after.placed_units) == (4, 1)  # the shipped unit stays
    assert w.levels(b, "IND1") == (5, 0)
    assert w.levels(a, "AVP3") == (4, 0)
    got = w.get(alloc.order_id).allocation
    assert (got.status, list(got.packages)) == (after.status, list(after.packages))
    # The cancelled package takes no more steps.
    assert second.package_id not in w.release("IND1").package_ids
    api.rejects(FAILED, api.orders.ConfirmPick, pb.ConfirmPickRequest(
        request_id=api.rid(), package_id=second.package_id), details="CANCELLED")
    api.rejects(FAILED, api.orders.CancelOrder, pb.CancelOrderRequest(
        request_id=api.rid(), order_id=alloc.order_id), details="nothing left")


def test_cancelling_part_of_a_line_releases_exactly_the_quantity_asked(api, demo_world):
    w = demo_world
    a, b = w.sku(), w.sku()
    w.stock(a, "IND1", 10)
    w.stock(b, "IND1", 10)
    alloc = w.allocate(w.order((a, 5), (b, 1))).allocation
    assert w.levels(a, "IND1") == (5, 5)

    cancelled = api.orders.CancelOrder(pb.CancelOrderRequest(
        request_id=api.rid(), order_id=alloc.order_id,
        lines=[pb.LineQuantity(line_id="1", quantity=2)]))

    assert cancelled.released_quantity == 2
    assert (alloc.placed_units, cancelled.allocation.placed_units) == (6, 4)
    assert cancelled.allocation.status == pb.ORDER_STATUS_ALLOCATED
    (package,) = cancelled.allocation.packages
    assert lines_of(package) == [("1", a, 3), ("2", b, 1)]
    assert w.levels(a, "IND1") == (7, 3)
    assert w.levels(b, "IND1") == (9, 1)
    # More than is left on the line is refused.
    api.rejects(FAILED, api.orders.CancelOrder, pb.CancelOrderRequest(
        request_id=api.rid(), order_id=alloc.order_id,
        lines=[pb.LineQuantity(line_id="1", quantity=4)]))
    api.rejects(NOT_FOUND, api.orders.CancelOrder, pb.CancelOrderRequest(
        request_id=api.rid(), order_id=alloc.order_id,
        lines=[pb.LineQuantity(line_id="9", quantity=1)]))
    # The rest of the line, then the other line: the order is cancelled.
    w_all = api.orders.CancelOrder(pb.CancelOrderRequest(
        request_id=api.rid(), order_id=alloc.order_id,
        lines=[pb.LineQuantity(line_id="1", quantity=3),
               pb.LineQuantity(line_id="2", quantity=1)]))
    assert w_all.released_quantity == 4
    assert w_all.allocation.status == pb.ORDER_STATUS_CANCELLED
    assert not w_all.allocation.packages
    assert (w.levels(a, "IND1"), w.levels(b, "IND1")) == ((10, 0), (10, 0))


def test_cancelling_a_backordered_quantity_takes_the_backorder_first(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 3)
    alloc = w.allocate(w.order((a, 5))).allocation
    assert alloc.status == pb.ORDER_STATUS_PARTIALLY_ALLOCATED

    cancelled = api.orders.CancelOrder(pb.CancelOrderRequest(
        request_id=api.rid(), order_id=alloc.order_id,
        lines=[pb.LineQuantity(line_id="1", quantity=2)]))

    assert cancelled.released_quantity == 0  # nothing was allocated of those two
    assert cancelled.allocation.status == pb.ORDER_STATUS_ALLOCATED
    assert not cancelled.allocation.backorders
    assert w.levels(a, "IND1") == (0, 3)
    (backorder,) = w.exceptions(alloc.order_id, include_resolved=True)
    assert backorder.type == pb.EXCEPTION_TYPE_BACKORDER
    assert backorder.resolved and backorder.resolution == "CANCEL"



def test_a_receipt_fills_backorders_by_priority_and_says_which(api, demo_world):
    """Stock received for a SKU with backorders allocates them in the same call, highest
    priority first, closes their backorder exceptions and names them in the answer; an
    order the units do not reach keeps its backorder and its open exception."""
    w = demo_world
    a = w.sku()
    first = w.allocate(w.order((a, 2))).allocation
    premium = w.allocate(w.order((a, 1), sla_tier=types_pb2.SLA_TIER_PREMIUM)).allocation
    last = w.allocate(w.order((a, 1))).allocation
    assert {o.status for o in (first, premium, last)} == {pb.ORDER_STATUS_BACKORDERED}

    received = api.receive(a, "IND1", 3)

    assert list(received.result.backorders_filled) == [premium.order_id, first.order_id]
    for order, units in ((premium, 1), (first, 2)):
        after = w.get(order.order_id).allocation
        assert after.status == pb.ORDER_STATUS_ALLOCATED and not after.backorders
        assert [lines_of(p) for p in after.packages] == [[("1", a, units)]]
        (filled,) = w.exceptions(order.order_id, include_resolved=True)
        assert filled.resolved and filled.resolution == "RETRY"
        assert filled.resolution_note == "backorder filled"
    waiting = w.get(last.order_id).allocation
    assert waiting.status == pb.ORDER_STATUS_BACKORDERED and not waiting.packages
    (still,) = w.exceptions(last.order_id)
    assert still.exception_id == last.exception_id and not still.resolved
    assert w.levels(a, "IND1") == (0, 3)
    assert list(api.receive(a, "IND1", 1).result.backorders_filled) == [last.order_id]
    assert not api.receive(a, "IND1", 1).result.backorders_filled  # none left waiting


def test_a_cancelled_order_lets_its_units_go_to_a_backorder_in_the_same_call(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 2)
    placed = w.allocate(w.order((a, 2))).allocation
    waiting = w.allocate(w.order((a, 1))).allocation
    assert waiting.status == pb.ORDER_STATUS_BACKORDERED

    cancelled = api.orders.CancelOrder(pb.CancelOrderRequest(
        request_id=api.rid(), order_id=placed.order_id))

    assert cancelled.released_quantity == 2
    assert list(cancelled.result.backorders_filled) == [waiting.order_id]
    after = w.get(waiting.order_id).allocation
    assert after.status == pb.ORDER_STATUS_ALLOCATED
    assert [lines_of(p) for p in after.packages] == [[("1", a, 1)]]
    assert w.levels(a, "IND1") == (1, 1)
    assert w.exceptions(waiting.order_id) == []

# ---- holds ----------------------------------------------------------------------------------
def test_an_order_with_payment_on_hold_is_held_until_released(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 5)
    order = w.order((a, 2), payment_status=pb.PAYMENT_STATUS_ON_HOLD)

    held = w.allocate(order).allocation

    assert held.status == pb.ORDER_STATUS_HELD
    assert held.exception_type == pb.EXCEPTION_TYPE_PAYMENT_HOLD and held.exception_id
    assert not held.packages and not held.backorders
    assert w.levels(a, "IND1") == (5, 0)
    (hold,) = w.exceptions(order.order_id)
    assert (hold.exception_id, hold.type, hold.owner_role, hold.resolved) == (
        held.exception_id, pb.EXCEPTION_TYPE_PAYMENT_HOLD, "finance", False)
    assert w.get(order.order_id).allocation.status == pb.ORDER_STATUS_HELD
    # A held order has nothing in a wave.
    assert not any(p.startswith(order.order_id) for p in w.release("IND1").package_ids)

    released = w.resolve(held.exception_id, pb.RESOLUTION_RELEASE, "card charged")

    assert released.exception.resolved and released.exception.resolution == "RELEASE"
    assert released.exception.HasField("resolve_time")
    after = released.allocation
    assert after.status == pb.ORDER_STATUS_ALLOCATED
    (package,) = after.packages
    assert (package.node_id, lines_of(package)) == ("IND1", [("1", a, 2)])
    assert w.levels(a, "IND1") == (3, 2)
    assert w.exceptions(order.order_id) == []
    api.rejects(FAILED, api.orders.ResolveException, pb.ResolveExceptionRequest(
        request_id=api.rid(), exception_id=held.exception_id,
        resolution=pb.RESOLUTION_RELEASE), details="resolved already")


def test_a_fraud_score_above_the_threshold_is_held_for_review(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 5)
    risky = w.allocate(w.order((a, 1), fraud_score=0.81)).allocation
    assert risky.status == pb.ORDER_STATUS_HELD
    assert risky.exception_type == pb.EXCEPTION_TYPE_FRAUD_REVIEW
    (review,) = w.exceptions(risky.order_id)
    assert review.owner_role == "fraud_review" and "0.81" in review.detail
    at_threshold = w.allocate(w.order((a, 1), fraud_score=0.8)).allocation
    assert at_threshold.status == pb.ORDER_STATUS_ALLOCATED
    assert w.levels(a, "IND1") == (4, 1)


def test_an_invalid_address_is_held_for_customer_service(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 5)
    held = w.allocate(w.order((a, 1), address_status=pb.ADDRESS_STATUS_INVALID)).allocation
    assert held.status == pb.ORDER_STATUS_HELD
    assert held.exception_type == pb.EXCEPTION_TYPE_ADDRESS_INVALID
    (hold,) = w.exceptions(held.order_id, type=pb.EXCEPTION_TYPE_ADDRESS_INVALID)
    assert hold.owner_role == "customer_service"
    assert w.levels(a, "IND1") == (5, 0)


def test_an_order_with_two_hold_reasons_stays_held_until_both_are_cleared(api, demo_world):
    """Bad address and payment on hold: clearing the address must not ship an unpaid order."""
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 5)
    held = w.allocate(w.order((a, 1), address_status=pb.ADDRESS_STATUS_INVALID,
                              payment_status=pb.PAYMENT_STATUS_ON_HOLD)).allocation
    assert held.status == pb.ORDER_STATUS_HELD

    w.resolve(held.exception_id, pb.RESOLUTION_RELEASE, "address corrected")

    assert w.get(held.order_id).allocation.status == pb.ORDER_STATUS_HELD
    assert w.levels(a, "IND1") == (5, 0)
    assert pb.EXCEPTION_TYPE_PAYMENT_HOLD in [e.type for e in w.exceptions(held.order_id)]


def test_resolving_a_hold_with_cancel_cancels_the_order(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 5)
    held = w.allocate(w.order((a, 1), fraud_score=0.95)).allocation

    resolved = w.resolve(held.exception_id, pb.RESOLUTION_CANCEL, "confirmed fraud")

    assert resolved.exception.resolution == "CANCEL"
    assert not resolved.HasField("allocation")
    order = w.get(held.order_id)
    assert order.allocation.status == pb.ORDER_STATUS_CANCELLED
    assert not order.allocation.packages
    assert [(e.type, e.resolved) for e in order.exceptions] == [
        (pb.EXCEPTION_TYPE_FRAUD_REVIEW, True)]
    assert w.levels(a, "IND1") == (5, 0)
    api.rejects(FAILED, api.orders.CancelOrder, pb.CancelOrderRequest(
        request_id=api.rid(), order_id=held.order_id))


def test_cancelling_a_held_order_resolves_its_hold(api, demo_world):
    w = demo_world
    a = w.sku()
    held = w.allocate(w.order((a, 1), payment_status=pb.PAYMENT_STATUS_ON_HOLD)).allocation
    cancelled = api.orders.CancelOrder(pb.CancelOrderRequest(request_id=api.rid(),
                                                             order_id=held.order_id))
    assert cancelled.released_quantity == 0
    assert cancelled.allocation.status == pb.ORDER_STATUS_CANCELLED
    (hold,) = w.exceptions(held.order_id, include_resolved=True)
    assert hold.resolved and hold.resolution == "CANCEL"


# ---- substitutes through the warehouse --------------------------------------------------------
def _substituted(w, quantity: int = 2):
    group = w.unique("group")
    wanted, substitute = w.sku(group=group), w.sku(group=group)
    w.stock(substitute, "IND1", 5)
    alloc = w.allocate(w.order((wanted, quantity), allow_substitution=True)).allocation
    (package,) = alloc.packages
    assert [(x.sku_id, x.substitutes_sku_id) for x in package.lines] == [(substitute, wanted)]
    return wanted, substitute, alloc, package


def test_a_substitute_is_packed_and_shipped_under_its_own_sku(api, demo_world):
    w = demo_world
    wanted, substitute, _, package = _substituted(w)
    w.release("IND1")
    w.pick(package.package_id, {"1": 2})
    assert not w.pack(package.package_id, {wanted: 2}).matched
    assert w.pack(package.package_id, {substitute: 2}).matched
    assert w.ship(package.package_id).order_status == pb.ORDER_STATUS_SHIPPED
    assert w.levels(substitute, "IND1") == (3, 0)


def test_cancelling_a_substituted_line_releases_the_substitute_units(api, demo_world):
    w = demo_world
    _, substitute, alloc, _ = _substituted(w)
    assert w.levels(substitute, "IND1") == (3, 2)

    cancelled = api.orders.CancelOrder(pb.CancelOrderRequest(request_id=api.rid(),
                                                             order_id=alloc.order_id))

    assert cancelled.released_quantity == 2
    assert cancelled.allocation.status == pb.ORDER_STATUS_CANCELLED
    assert w.levels(substitute, "IND1") == (5, 0)


def test_a_short_pick_of_a_substitute_writes_off_substitute_units_and_replaces_them_marked(
        api, demo_world):
    w = demo_world
    wanted, substitute, _, package = _substituted(w)
    w.release("IND1")

    picked = w.pick(package.package_id, {"1": 1})

    assert picked.short_quantity == 1
    # The missing unit was a substitute unit at IND1: written off there (5 - 1 left).
    available, allocated = w.levels(substitute, "IND1")
    assert available + allocated == 4
    assert w.levels(wanted, "IND1") == (0, 0)
    first, second = picked.allocation.packages
    assert (first.package_id, lines_of(first)) == (package.package_id, [("1", substitute, 1)])
    (line,) = second.lines
    assert (line.line_id, line.quantity) == ("1", 1)
    # The replacement is either the ordered SKU or a substitute marked as one: a package
    # line that is neither (a different SKU with no substitutes_sku_id) misleads the
    # packer, and ConfirmPack would expect the ordered SKU.
    assert wanted in (line.sku_id, line.substitutes_sku_id), line
    w.pack(first.package_id, {substitute: 1})
    w.ship(first.package_id)
    assert w.fulfil(second).order_status == pb.ORDER_STATUS_SHIPPED


def test_a_package_keeps_its_carrier_service_when_the_network_lists_services_anew(
        server_factory):
    """A package's carrier service is the one it was planned with, whatever order a new
    network lists the services in; one the network dropped is not named until a network
    has it again."""
    from allocd.v1 import network_service_pb2 as npb

    from tests.e2e.conftest import order_world, rid

    api = server_factory()
    w = order_world(api)
    a = w.sku()
    w.stock(a, "IND1", 5)
    alloc = w.allocate(w.order((a, 2))).allocation
    (planned,) = alloc.packages
    assert planned.service_id and planned.carrier
    network = api.network.GetNetwork(npb.GetNetworkRequest()).network
    assert len(network.services) >= 2
    services = list(network.services)
    for reordered in (services[::-1], services[1:] + services[:1]):
        del network.services[:]
        network.services.extend(reordered)
        api.network.SetNetwork(npb.SetNetworkRequest(request_id=rid(), network=network))
        (now,) = w.get(alloc.order_id).allocation.packages
        assert (now.service_id, now.carrier) == (planned.service_id, planned.carrier)
    for kept in ([s for s in services if s.service_id != planned.service_id], [], services):
        del network.services[:]
        network.services.extend(kept)
        api.network.SetNetwork(npb.SetNetworkRequest(request_id=rid(), network=network))
        (now,) = w.get(alloc.order_id).allocation.packages
        back = any(s.service_id == planned.service_id for s in kept)
        assert (now.service_id, now.carrier) == (
            (planned.service_id, planned.carrier) if back else ("", "")), len(kept)
        assert now.cost.carrier_micros == planned.cost.carrier_micros  # (as planned)
