"""InventoryService happy paths against a real server: every RPC, checked on its values."""

from __future__ import annotations

import time

import grpc
import pytest
from allocd.v1 import catalog_service_pb2 as cat_pb
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import order_service_pb2 as opb
from allocd.v1 import types_pb2 as types
from google.protobuf.timestamp_pb2 import Timestamp

DAY_MS = 24 * 3600 * 1000


def ts(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_receiving_then_reserving_shows_available_and_reserved_units(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    before = api.summary()

    received = api.receive(sku, node, 10)
    assert received.result.event_count == 1
    assert received.result.first_sequence == received.result.last_sequence
    assert received.result.first_sequence == before.last_sequence + 1
    assert not received.result.replayed

    reserved = api.reserve([(sku, node, 3)])
    assert reserved.result.event_count == 1
    assert reserved.reservation_id  # derived from the request id

    level = api.level(sku, node)
    assert (level.available, level.reserved) == (7, 3)
    assert (level.allocated, level.quarantined, level.returned, level.in_transit) == (0, 0, 0, 0)

    after = api.summary()
    assert after.last_sequence == before.last_sequence + 2
    assert after.available - before.available == 7
    assert after.reserved - before.reserved == 3
    assert after.units_received - before.units_received == 10
    assert after.open_reservations - before.open_reservations == 1
    assert after.checksum != before.checksum


def test_a_reservation_without_a_ttl_gets_the_default_expiry(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 5)
    start = now_ms()
    reserved = api.reserve([(sku, node, 1)])
    ttl_ms = api.settings.default_reservation_ttl_s * 1000
    expires = reserved.expire_time.ToMilliseconds()
    assert start + ttl_ms - 1000 <= expires <= now_ms() + ttl_ms


def test_get_reservation_returns_its_lines_channel_and_expiry(api, cat):
    sku_a, sku_b = cat.skus[0], cat.skus[1]
    n1, n2 = cat.nodes[0], cat.nodes[1]
    api.receive(sku_a, n1, 10)
    api.receive(sku_b, n2, 10)
    expires = now_ms() + 3_600_000
    reservation_id = f"{cat.prefix}-cart-1"
    reserved = api.reserve([(sku_a, n1, 2), (sku_b, n2, 4)], channel_id="web",
                           reservation_id=reservation_id, expire_time=ts(expires))
    assert reserved.reservation_id == reservation_id
    assert reserved.expire_time.ToMilliseconds() == expires
    assert reserved.result.event_count == 2

    got = api.inventory.GetReservation(inv.GetReservationRequest(reservation_id=reservation_id))
    assert got.reservation_id == reservation_id
    assert got.channel_id == "web"
    assert got.expire_time.ToMilliseconds() == expires
    assert sorted((line.sku_id, line.node_id, line.quantity) for line in got.lines) == [
        (sku_a, n1, 2), (sku_b, n2, 4)]


def test_releasing_a_reservation_returns_its_units_to_available(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 10)
    reservation_id = api.reserve([(sku, node, 5)]).reservation_id
    before = api.summary()

    released = api.inventory.ReleaseReservation(inv.ReleaseReservationRequest(
        request_id=api.rid(), reservation_id=reservation_id))
    assert released.released_quantity == 5
    assert released.result.event_count == 1

    level = api.level(sku, node)
    assert (level.available, level.reserved) == (10, 0)
    after = api.summary()
    assert after.open_reservations == before.open_reservations - 1
    with pytest.raises(grpc.RpcError) as caught:
        api.inventory.GetReservation(inv.GetReservationRequest(reservation_id=reservation_id))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_availability_applies_safety_stock_and_ring_fences_per_channel(api, cat):
    sku, n1, n2 = cat.skus[0], cat.nodes[0], cat.nodes[1]
    api.receive(sku, n1, 20)
    api.receive(sku, n2, 6)
    api.inventory.SetSafetyStock(inv.SetSafetyStockRequest(
        request_id=api.rid(), sku_id=sku, node_id=n1, quantity=2))
    fenced = api.inventory.SetRingFence(inv.SetRingFenceRequest(request_id=api.rid(), lines=[
        inv.RingFenceLine(sku_id=sku, node_id=n1, channel_id="web", quantity=5),
        inv.RingFenceLine(sku_id=sku, node_id=n1, channel_id="marketplace", quantity=3)]))
    assert fenced.result.event_count == 2

    def availability(channel: str) -> inv.GetAvailabilityResponse:
        return api.inventory.GetAvailability(inv.GetAvailabilityRequest(
            sku_ids=[sku], node_ids=[n1, n2], channel_id=channel, include_nodes=True))

    expected = {  # channel -> (n1 fenced for others, n1 sellable, n2 sellable)
        "web": (3, 15, 6),
        "marketplace": (5, 13, 6),
        "": (8, 10, 6),  # without a channel every fence is another channel's
    }
    for channel, (fenced_others, sellable_n1, sellable_n2) in expected.items():
        answer = availability(channel)
        assert answer.safety_stock_applied
        assert answer.as_of_sequence == api.summary().last_sequence
        (entry,) = answer.skus
        assert entry.sku_id == sku
        assert entry.available_to_sell == sellable_n1 + sellable_n2, channel
        first, second = entry.nodes
        assert (first.node_id, first.available, first.safety_stock,
                first.fenced_for_other_channels, first.available_to_sell) == (
            n1, 20, 2, fenced_others, sellable_n1), channel
        assert (second.node_id, second.available, second.safety_stock,
                second.fenced_for_other_channels, second.available_to_sell) == (
            n2, 6, 0, 0, sellable_n2), channel


def test_reservations_respect_safety_stock_and_other_channels_fences(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 10)
    api.inventory.SetSafetyStock(inv.SetSafetyStockRequest(
        request_id=api.rid(), sku_id=sku, node_id=node, quantity=2))
    api.inventory.SetRingFence(inv.SetRingFenceRequest(request_id=api.rid(), lines=[
        inv.RingFenceLine(sku_id=sku, node_id=node, channel_id="web", quantity=3)]))

    # marketplace may sell 10 - 2 safety - 3 fenced for web = 5
    api.rejects(grpc.StatusCode.FAILED_PRECONDITION, api.inventory.ReserveInventory,
                inv.ReserveInventoryRequest(request_id=api.rid(), channel_id="marketplace", lines=[
                    inv.ReservationLine(sku_id=sku, node_id=node, quantity=6)]))
    api.reserve([(sku, node, 5)], channel_id="marketplace")
    # web keeps its own fence: 5 left - 2 safety = 3
    api.rejects(grpc.StatusCode.FAILED_PRECONDITION, api.inventory.ReserveInventory,
                inv.ReserveInventoryRequest(request_id=api.rid(), channel_id="web", lines=[
                    inv.ReservationLine(sku_id=sku, node_id=node, quantity=4)]))
    api.reserve([(sku, node, 3)], channel_id="web")
    level = api.level(sku, node)
    assert (level.available, level.reserved, level.safety_stock) == (2, 8, 2)
    assert api.sellable(sku, [node], "web") == 0


def test_removing_a_ring_fence_makes_its_units_sellable_to_everyone(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 10)

    def fence(quantity: int) -> None:
        api.inventory.SetRingFence(inv.SetRingFenceRequest(request_id=api.rid(), lines=[
            inv.RingFenceLine(sku_id=sku, node_id=node, channel_id="web", quantity=quantity)]))

    fence(4)
    assert api.sellable(sku, [node], "marketplace") == 6
    fence(0)
    assert api.sellable(sku, [node], "marketplace") == 10


def test_a_disabled_node_sells_nothing(api, cat):
    sku, node = cat.skus[0], cat.nodes[2]
    api.receive(sku, node, 10)
    assert api.sellable(sku, [node]) == 10
    api.catalog.UpsertNodes(_node_request(api, node, enabled=False))

    answer = api.inventory.GetAvailability(inv.GetAvailabilityRequest(
        sku_ids=[sku], node_ids=[node], include_nodes=True))
    assert answer.skus[0].available_to_sell == 0
    assert answer.skus[0].nodes[0].available == 10
    api.rejects(grpc.StatusCode.FAILED_PRECONDITION, api.inventory.ReserveInventory,
                inv.ReserveInventoryRequest(request_id=api.rid(), lines=[
                    inv.ReservationLine(sku_id=sku, node_id=node, quantity=1)]))

    api.catalog.UpsertNodes(_node_request(api, node, enabled=True))
    assert api.sellable(sku, [node]) == 10


def _node_request(api, node_id: str, *, enabled: bool) -> cat_pb.UpsertNodesRequest:
    return cat_pb.UpsertNodesRequest(request_id=api.rid(), nodes=[types.Node(
        node_id=node_id, name=node_id, type=types.NODE_TYPE_STORE, enabled=enabled)])


def test_safety_stock_takes_the_most_specific_setting(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]

    def set_safety(quantity: int = 0, *, sku_id: str = "", node_id: str = "",
                   clear: bool = False) -> None:
        answer = api.inventory.SetSafetyStock(inv.SetSafetyStockRequest(
            request_id=api.rid(), sku_id=sku_id, node_id=node_id, quantity=quantity,
            clear=clear))
        assert answer.result.event_count == 1

    assert api.level(sku, node).safety_stock == 0
    set_safety(4, node_id=node)
    assert api.level(sku, node).safety_stock == 4
    assert api.level(cat.skus[1], node).safety_stock == 4
    set_safety(3, sku_id=sku)
    assert api.level(sku, node).safety_stock == 3
    set_safety(1, sku_id=sku, node_id=node)
    assert api.level(sku, node).safety_stock == 1
    assert api.level(sku, cat.nodes[1]).safety_stock == 3
    set_safety(sku_id=sku, node_id=node, clear=True)
    assert api.level(sku, node).safety_stock == 3
    set_safety(sku_id=sku, clear=True)
    assert api.level(sku, node).safety_stock == 4


def test_the_network_default_safety_stock_applies_where_nothing_more_specific_is_set(
        server_factory):
    api = server_factory()
    cat = api.seed(n_nodes=2, n_skus=1)
    sku, n1, n2 = cat.skus[0], cat.nodes[0], cat.nodes[1]
    api.receive(sku, n1, 10)
    api.receive(sku, n2, 10)
    api.inventory.SetSafetyStock(inv.SetSafetyStockRequest(request_id=api.rid(), quantity=2))
    api.inventory.SetSafetyStock(inv.SetSafetyStockRequest(
        request_id=api.rid(), node_id=n2, quantity=5))
    assert api.level(sku, n1).safety_stock == 2
    assert api.level(sku, n2).safety_stock == 5
    assert api.sellable(sku) == 8 + 5


def test_expected_inbound_adds_a_later_promise_date_until_it_is_received(api, cat):
    sku, n1, n2 = cat.skus[0], cat.nodes[0], cat.nodes[1]
    api.receive(sku, n1, 4)
    arrival = now_ms() + 3 * DAY_MS
    po = f"{cat.prefix}-PO-1"
    expected = api.inventory.ExpectInbound(inv.ExpectInboundRequest(
        request_id=api.rid(), reference=po, lines=[
            inv.InboundLine(sku_id=sku, node_id=n2, quantity=6, expected_time=ts(arrival))]))
    assert expected.result.event_count == 1
    assert api.level(sku, n2).in_transit == 6
    assert api.sellable(sku, [n1, n2]) == 4  # in transit is not sellable yet

    before_query = now_ms()
    answer = api.inventory.GetAvailability(inv.GetAvailabilityRequest(
        sku_ids=[sku], node_ids=[n1, n2], include_promise_dates=True))
    (entry,) = answer.skus
    steps = [(p.date.ToMilliseconds(), p.quantity) for p in entry.promise_dates]
    assert len(steps) == 2, steps
    (today, now_qty), (later, later_qty) = steps
    assert before_query - 1000 <= today <= now_ms()
    assert (later, now_qty, later_qty) == (arrival, 4, 10)

    api.inventory.ReceiveInventory(inv.ReceiveInventoryRequest(
        request_id=api.rid(), reference="dock-7", lines=[
            inv.ReceiptLine(sku_id=sku, node_id=n2, quantity=6, inbound_reference=po)]))
    level = api.level(sku, n2)
    assert (level.available, level.in_transit) == (6, 0)
    answer = api.inventory.GetAvailability(inv.GetAvailabilityRequest(
        sku_ids=[sku], node_ids=[n1, n2], include_promise_dates=True))
    assert [p.quantity for p in answer.skus[0].promise_dates] == [10]


def test_a_partial_receipt_leaves_the_rest_of_an_inbound_in_transit(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    po = f"{cat.prefix}-PO-2"
    api.inventory.ExpectInbound(inv.ExpectInboundRequest(request_id=api.rid(), reference=po, lines=[
        inv.InboundLine(sku_id=sku, node_id=node, quantity=8,
                        expected_time=ts(now_ms() + DAY_MS))]))
    api.inventory.ReceiveInventory(inv.ReceiveInventoryRequest(request_id=api.rid(), lines=[
        inv.ReceiptLine(sku_id=sku, node_id=node, quantity=3, inbound_reference=po,
                        to_bucket=types.BUCKET_QUARANTINED)]))
    level = api.level(sku, node)
    assert (level.available, level.quarantined, level.in_transit) == (0, 3, 5)
    api.rejects(grpc.StatusCode.FAILED_PRECONDITION, api.inventory.ReceiveInventory,
                inv.ReceiveInventoryRequest(request_id=api.rid(), lines=[
                    inv.ReceiptLine(sku_id=sku, node_id=node, quantity=6,
                                    inbound_reference=po)]))


def test_inbound_that_will_not_come_is_cancelled_and_promised_no_more(api, cat):
    sku, n1, n2 = cat.skus[0], cat.nodes[0], cat.nodes[1]
    po = f"{cat.prefix}-PO-3"
    arrival = now_ms() + 2 * DAY_MS
    api.inventory.ExpectInbound(inv.ExpectInboundRequest(request_id=api.rid(), reference=po, lines=[
        inv.InboundLine(sku_id=sku, node_id=n1, quantity=8, expected_time=ts(arrival)),
        inv.InboundLine(sku_id=sku, node_id=n2, quantity=5, expected_time=ts(arrival))]))
    api.inventory.ReceiveInventory(inv.ReceiveInventoryRequest(request_id=api.rid(), lines=[
        inv.ReceiptLine(sku_id=sku, node_id=n1, quantity=3, inbound_reference=po)]))
    request = inv.CancelInboundRequest(request_id=api.rid(), reference=po, lines=[
        inv.InboundCancelLine(sku_id=sku, node_id=n1, quantity=4)])
    first = api.inventory.CancelInbound(request)
    assert first.result.event_count == 1 and not first.result.replayed
    again = api.inventory.CancelInbound(request)  # a retry: answered, not cancelled twice
    assert again.result.replayed and again.result.last_sequence == first.result.last_sequence
    assert (api.level(sku, n1).in_transit, api.level(sku, n2).in_transit) == (1, 5)
    api.rejects(grpc.StatusCode.FAILED_PRECONDITION, api.inventory.CancelInbound,
                inv.CancelInboundRequest(request_id=api.rid(), reference=po, lines=[
                    inv.InboundCancelLine(sku_id=sku, node_id=n1, quantity=2)]))

    everything = api.inventory.CancelInbound(inv.CancelInboundRequest(
        request_id=api.rid(), reference=po))  # what is left, at both nodes
    assert everything.result.event_count == 2
    assert (api.level(sku, n1).in_transit, api.level(sku, n2).in_transit) == (0, 0)
    answer = api.inventory.GetAvailability(inv.GetAvailabilityRequest(
        sku_ids=[sku], node_ids=[n1, n2], include_promise_dates=True))
    assert [p.quantity for p in answer.skus[0].promise_dates] == [3]  # what came, no more
    api.rejects(grpc.StatusCode.NOT_FOUND, api.inventory.CancelInbound,
                inv.CancelInboundRequest(request_id=api.rid(), reference=po))
    api.rejects(grpc.StatusCode.NOT_FOUND, api.inventory.ReceiveInventory,  # none expected
                inv.ReceiveInventoryRequest(request_id=api.rid(), lines=[
                    inv.ReceiptLine(sku_id=sku, node_id=n2, quantity=1, inbound_reference=po)]))


def test_a_transfer_in_transit_is_not_cancelled(api, cat):
    sku, n1, n2 = cat.skus[0], cat.nodes[0], cat.nodes[1]
    api.receive(sku, n1, 5)
    transfer_id = f"{cat.prefix}-TR-9"
    api.inventory.TransferInventory(inv.TransferInventoryRequest(
        request_id=api.rid(), transfer_id=transfer_id, from_node_id=n1, to_node_id=n2,
        expected_time=ts(now_ms() + DAY_MS), lines=[inv.TransferLine(sku_id=sku, quantity=2)]))
    error = api.rejects(grpc.StatusCode.FAILED_PRECONDITION, api.inventory.CancelInbound,
                        inv.CancelInboundRequest(request_id=api.rid(), reference=transfer_id))
    assert "transfer" in error.details()
    assert api.level(sku, n2).in_transit == 2


def test_a_transfer_ships_now_and_arrives_when_received_against_its_id(api, cat):
    sku, n1, n2 = cat.skus[0], cat.nodes[0], cat.nodes[1]
    api.receive(sku, n1, 10)
    transfer_id = f"{cat.prefix}-TR-1"
    arrival = now_ms() + 2 * DAY_MS
    shipped = api.inventory.TransferInventory(inv.TransferInventoryRequest(
        request_id=api.rid(), transfer_id=transfer_id, from_node_id=n1, to_node_id=n2,
        expected_time=ts(arrival), lines=[inv.TransferLine(sku_id=sku, quantity=4)]))
    assert shipped.result.event_count == 2
    assert (api.level(sku, n1).available, api.level(sku, n1).in_transit) == (6, 0)
    assert (api.level(sku, n2).available, api.level(sku, n2).in_transit) == (0, 4)

    promise = api.inventory.GetAvailability(inv.GetAvailabilityRequest(
        sku_ids=[sku], node_ids=[n2], include_promise_dates=True)).skus[0].promise_dates
    assert [(p.date.ToMilliseconds(), p.quantity) for p in promise][1:] == [(arrival, 4)]

    api.inventory.ReceiveInventory(inv.ReceiveInventoryRequest(request_id=api.rid(), lines=[
        inv.ReceiptLine(sku_id=sku, node_id=n2, quantity=4, inbound_reference=transfer_id)]))
    level = api.level(sku, n2)
    assert (level.available, level.in_transit) == (4, 0)
    assert api.level(sku, n1).available == 6


def test_a_transfer_between_nodes_is_not_counted_as_units_received_or_shipped(api, cat):
    sku, n1, n2 = cat.skus[0], cat.nodes[0], cat.nodes[1]
    api.receive(sku, n1, 10)
    before = api.summary()
    api.inventory.TransferInventory(inv.TransferInventoryRequest(
        request_id=api.rid(), transfer_id=f"{cat.prefix}-TR-2", from_node_id=n1,
        to_node_id=n2, expected_time=ts(now_ms() + DAY_MS),
        lines=[inv.TransferLine(sku_id=sku, quantity=4)]))
    after = api.summary()
    # The units stay in the network: 4 fewer AVAILABLE, 4 more IN_TRANSIT.
    assert (after.available - before.available, after.in_transit - before.in_transit) == (-4, 4)
    assert (after.units_received, after.units_shipped) == (
        before.units_received, before.units_shipped)


def test_adjustments_book_gains_and_losses_by_reason(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 10)
    before = api.summary()
    answer = api.inventory.AdjustInventory(inv.AdjustInventoryRequest(
        request_id=api.rid(), reference="audit", lines=[
            inv.AdjustmentLine(sku_id=sku, node_id=node, delta=-2,
                               reason=types.ADJUSTMENT_REASON_DAMAGE),
            inv.AdjustmentLine(sku_id=sku, node_id=node, delta=3,
                               reason=types.ADJUSTMENT_REASON_FOUND),
            inv.AdjustmentLine(sku_id=sku, node_id=node, delta=-1,
                               reason=types.ADJUSTMENT_REASON_SHRINKAGE),
            inv.AdjustmentLine(sku_id=sku, node_id=node, delta=2,
                               reason=types.ADJUSTMENT_REASON_CORRECTION,
                               bucket=types.BUCKET_RETURNED)]))
    assert answer.result.event_count == 4
    level = api.level(sku, node)
    assert (level.available, level.returned) == (10, 2)
    after = api.summary()
    assert after.units_received - before.units_received == 5
    assert after.units_shipped - before.units_shipped == 3


def test_moves_quarantine_restock_and_release_units(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 10)

    def move(quantity: int, src: int, dst: int) -> None:
        api.inventory.MoveInventory(inv.MoveInventoryRequest(request_id=api.rid(), lines=[
            inv.MoveLine(sku_id=sku, node_id=node, quantity=quantity, from_bucket=src,
                         to_bucket=dst)]))

    move(4, types.BUCKET_AVAILABLE, types.BUCKET_QUARANTINED)
    move(2, types.BUCKET_QUARANTINED, types.BUCKET_RETURNED)
    move(1, types.BUCKET_RETURNED, types.BUCKET_AVAILABLE)
    level = api.level(sku, node)
    assert (level.available, level.quarantined, level.returned) == (7, 2, 1)
    api.rejects(grpc.StatusCode.FAILED_PRECONDITION, api.inventory.MoveInventory,
                inv.MoveInventoryRequest(request_id=api.rid(), lines=[
                    inv.MoveLine(sku_id=sku, node_id=node, quantity=3,
                                 from_bucket=types.BUCKET_QUARANTINED,
                                 to_bucket=types.BUCKET_AVAILABLE)]))


def test_a_cycle_count_books_a_small_variance_and_matches_an_exact_count(api, cat):
    sku_a, sku_b, node = cat.skus[0], cat.skus[1], cat.nodes[0]
    api.receive(sku_a, node, 10)
    api.receive(sku_b, node, 5)
    api.reserve([(sku_a, node, 2)])
    answer = api.inventory.SubmitCycleCount(inv.SubmitCycleCountRequest(
        request_id=api.rid(), reference="count-aisle-3", lines=[
            inv.CountLine(sku_id=sku_a, node_id=node, counted_quantity=12),
            inv.CountLine(sku_id=sku_b, node_id=node, counted_quantity=5)]))
    assert answer.result.event_count == 2  # the adjustment; the match (inventory accuracy)
    first, second = answer.lines
    assert (first.sku_id, first.expected_quantity, first.counted_quantity, first.variance,
            first.outcome, first.held_quantity, first.exception_id) == (
        sku_a, 10, 12, 2, inv.COUNT_OUTCOME_ADJUSTED, 0, "")
    assert (second.expected_quantity, second.variance, second.outcome) == (
        5, 0, inv.COUNT_OUTCOME_MATCHED)
    level = api.level(sku_a, node)
    assert (level.available, level.reserved, level.quarantined) == (10, 2, 0)


def test_a_cycle_count_holds_a_large_variance_for_approval_in_quarantine(api, cat):
    short, extra, node = cat.skus[0], cat.skus[1], cat.nodes[0]
    api.receive(short, node, 20)
    api.receive(extra, node, 20)
    before = api.summary()
    answer = api.inventory.SubmitCycleCount(inv.SubmitCycleCountRequest(
        request_id=api.rid(), reference="count-aisle-4", lines=[
            inv.CountLine(sku_id=short, node_id=node, counted_quantity=12),
            inv.CountLine(sku_id=extra, node_id=node, counted_quantity=30)]))
    missing, found = answer.lines
    assert (missing.variance, missing.outcome, missing.held_quantity) == (
        -8, inv.COUNT_OUTCOME_HELD_FOR_APPROVAL, 8)
    assert (found.variance, found.outcome, found.held_quantity) == (
        10, inv.COUNT_OUTCOME_HELD_FOR_APPROVAL, 10)
    assert missing.exception_id and found.exception_id
    assert missing.exception_id != found.exception_id

    level = api.level(short, node)
    assert (level.available, level.quarantined) == (12, 8)
    level = api.level(extra, node)
    assert (level.available, level.quarantined) == (20, 10)
    after = api.summary()
    assert after.held_count_variances - before.held_count_variances == 2
    assert after.quarantined - before.quarantined == 18


def test_a_held_count_variance_is_settled_by_someone_other_than_who_counted(api, cat):
    """The counter, read from the call, is kept with the variance: approving or rejecting
    it as the counter, or unnamed, is FAILED_PRECONDITION and changes nothing."""
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 20)

    def who(actor: str) -> tuple[tuple[str, str], ...]:
        return (("x-allocd-actor", actor), ("x-allocd-role", "inventory_control"))

    answer = api.inventory.SubmitCycleCount(inv.SubmitCycleCountRequest(
        request_id=api.rid(), reference="count-aisle-9",
        lines=[inv.CountLine(sku_id=sku, node_id=node, counted_quantity=5)]),
        metadata=who("kim"))
    (line,) = answer.lines
    assert line.outcome == inv.COUNT_OUTCOME_HELD_FOR_APPROVAL
    before = api.state()
    for actor in ("kim", ""):
        with pytest.raises(grpc.RpcError) as refused:
            api.orders.ResolveException(opb.ResolveExceptionRequest(
                request_id=api.rid(), exception_id=line.exception_id,
                resolution=opb.RESOLUTION_APPROVE), metadata=who(actor))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, actor
        assert "'kim' counted this variance" in (refused.value.details() or "")
        assert api.state() == before
    (open_one,) = [e for e in api.orders.ListExceptions(opb.ListExceptionsRequest(
        type=opb.EXCEPTION_TYPE_COUNT_VARIANCE)).exceptions
        if e.exception_id == line.exception_id]
    assert "by kim" in open_one.detail
    api.orders.ResolveException(opb.ResolveExceptionRequest(
        request_id=api.rid(), exception_id=line.exception_id,
        resolution=opb.RESOLUTION_APPROVE), metadata=who("lee"))
    level = api.level(sku, node)
    assert (level.available, level.quarantined) == (5, 0)

def test_sweeping_with_nothing_expired_writes_no_events(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 3)
    api.reserve([(sku, node, 1)])  # default ttl: far from expiry
    before = api.state()
    answer = api.inventory.SweepExpiredReservations(
        inv.SweepExpiredReservationsRequest(request_id=api.rid()))
    assert list(answer.reservation_ids) == []
    assert answer.result.event_count == 0
    assert api.state() == before


def test_the_ledger_summary_adds_up_every_bucket_of_a_fresh_server(server_factory):
    api = server_factory()
    cat = api.seed(n_nodes=2, n_skus=2)
    (s1, s2), (n1, n2) = cat.skus, cat.nodes
    api.receive(s1, n1, 10)
    api.receive(s2, n2, 7, to_bucket=types.BUCKET_QUARANTINED)
    api.reserve([(s1, n1, 4)])
    api.inventory.ExpectInbound(inv.ExpectInboundRequest(request_id=api.rid(), reference="PO",
                                                         lines=[inv.InboundLine(
                                                             sku_id=s2, node_id=n1, quantity=5,
                                                             expected_time=ts(now_ms() + DAY_MS))]))
    summary = api.summary()
    # 2 nodes + 2 channels + 2 SKUs, then receive, receive, reserve, expect
    assert summary.last_sequence == 10
    assert (summary.sku_count, summary.node_count, summary.shard_count) == (2, 2, 16)
    assert (summary.available, summary.reserved, summary.quarantined, summary.in_transit) == (
        6, 4, 7, 5)
    assert (summary.allocated, summary.returned) == (0, 0)
    assert summary.open_reservations == 1
    assert summary.held_count_variances == 0
    assert summary.units_shipped == 0
    assert len(summary.checksum) == 32


def test_a_summary_leaves_the_checksum_out_unless_asked(api, cat):
    """The checksum walks the whole state (seconds at a million orders, on the server's
    loop): a plain summary, the one a dashboard polls, leaves it out."""
    plain = api.inventory.GetLedgerSummary(inv.GetLedgerSummaryRequest(), timeout=10)
    full = api.summary()
    assert plain.checksum == "" and len(full.checksum) == 32
    full.checksum = ""
    assert plain == full
