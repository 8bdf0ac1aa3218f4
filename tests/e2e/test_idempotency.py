"""Request ids: a retry gets the first answer and changes nothing; a reused id is refused."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from allocd.v1 import catalog_service_pb2 as cat_pb
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import types_pb2 as types


def test_a_retry_with_the_same_request_id_and_body_replays_the_first_answer(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    request = inv.ReceiveInventoryRequest(request_id=api.rid(), reference="asn-1", lines=[
        inv.ReceiptLine(sku_id=sku, node_id=node, quantity=10)])
    first = api.inventory.ReceiveInventory(request)
    assert not first.result.replayed
    state = api.state()

    again = api.inventory.ReceiveInventory(request)
    assert again.result.replayed
    assert (again.result.first_sequence, again.result.last_sequence,
            again.result.event_count) == (first.result.first_sequence,
                                          first.result.last_sequence, 1)
    assert api.state() == state
    assert api.level(sku, node).available == 10


def test_a_replayed_reservation_returns_the_same_id_and_expiry(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 5)
    request = inv.ReserveInventoryRequest(request_id=api.rid(), channel_id="web", ttl_seconds=600,
                                          lines=[inv.ReservationLine(sku_id=sku, node_id=node,
                                                                     quantity=2)])
    first = api.inventory.ReserveInventory(request)
    state = api.state()
    again = api.inventory.ReserveInventory(request)
    assert again.result.replayed
    assert (again.reservation_id, again.expire_time) == (first.reservation_id, first.expire_time)
    assert again.result.first_sequence == first.result.first_sequence
    assert api.state() == state
    assert api.level(sku, node).reserved == 2


def test_a_replayed_release_reports_the_units_it_released_the_first_time(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 5)
    reservation_id = api.reserve([(sku, node, 4)]).reservation_id
    request = inv.ReleaseReservationRequest(request_id=api.rid(), reservation_id=reservation_id)
    first = api.inventory.ReleaseReservation(request)
    state = api.state()
    again = api.inventory.ReleaseReservation(request)
    assert (first.released_quantity, again.released_quantity) == (4, 4)
    assert again.result.replayed and not first.result.replayed
    assert api.state() == state


def test_a_replayed_cycle_count_returns_the_same_line_results(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 20)
    request = inv.SubmitCycleCountRequest(request_id=api.rid(), lines=[
        inv.CountLine(sku_id=sku, node_id=node, counted_quantity=5)])
    first = api.inventory.SubmitCycleCount(request)
    state = api.state()
    again = api.inventory.SubmitCycleCount(request)
    assert list(again.lines) == list(first.lines)
    assert again.lines[0].outcome == inv.COUNT_OUTCOME_HELD_FOR_APPROVAL
    assert again.result.replayed
    assert api.state() == state
    assert api.level(sku, node).quarantined == 15


def test_a_replayed_catalogue_upsert_writes_no_new_events(api):
    request = cat_pb.UpsertSkusRequest(request_id=api.rid(), skus=[
        types.Sku(sku_id=f"{api.rid()}-sku", name="once")])
    first = api.catalog.UpsertSkus(request)
    summary = api.summary()
    again = api.catalog.UpsertSkus(request)
    assert again.result.replayed
    assert again.result.last_sequence == first.result.last_sequence
    after = api.summary()
    assert (after.last_sequence, after.sku_count, after.checksum) == (
        summary.last_sequence, summary.sku_count, summary.checksum)


@pytest.mark.parametrize("rpc", ["ReceiveInventory", "ReserveInventory", "UpsertSkus",
                                 "SetSafetyStock"])
def test_the_same_request_id_with_a_different_body_is_already_exists(api, cat, rpc):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 10)
    rid = api.rid()

    def request(quantity: int):
        if rpc == "ReceiveInventory":
            return inv.ReceiveInventoryRequest(request_id=rid, lines=[
                inv.ReceiptLine(sku_id=sku, node_id=node, quantity=quantity)])
        if rpc == "ReserveInventory":
            return inv.ReserveInventoryRequest(request_id=rid, lines=[
                inv.ReservationLine(sku_id=sku, node_id=node, quantity=quantity)])
        if rpc == "SetSafetyStock":
            return inv.SetSafetyStockRequest(request_id=rid, sku_id=sku, quantity=quantity)
        return cat_pb.UpsertSkusRequest(request_id=rid, skus=[
            types.Sku(sku_id=sku, name=f"name {quantity}")])

    call = getattr(api.catalog if rpc == "UpsertSkus" else api.inventory, rpc)
    call(request(1))
    error = api.rejects(grpc.StatusCode.ALREADY_EXISTS, call, request(2))
    assert rid in error.details()


def test_a_request_that_failed_can_be_retried_with_the_same_id_once_it_can_succeed(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    request = inv.ReserveInventoryRequest(request_id=api.rid(), lines=[
        inv.ReservationLine(sku_id=sku, node_id=node, quantity=3)])
    api.rejects(grpc.StatusCode.FAILED_PRECONDITION, api.inventory.ReserveInventory, request)
    api.receive(sku, node, 3)
    answer = api.inventory.ReserveInventory(request)
    assert not answer.result.replayed
    assert answer.result.event_count == 1
    assert api.level(sku, node).reserved == 3


def test_concurrent_retries_of_one_request_apply_it_once(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    request = inv.ReceiveInventoryRequest(request_id=api.rid(), lines=[
        inv.ReceiptLine(sku_id=sku, node_id=node, quantity=7)])
    clients = 16
    barrier = threading.Barrier(clients)

    def send(_: int) -> inv.ReceiveInventoryResponse:
        barrier.wait(timeout=10)
        return api.inventory.ReceiveInventory(request, timeout=10)

    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(send, range(clients)))
    assert len({(a.result.first_sequence, a.result.last_sequence) for a in answers}) == 1
    assert sum(not a.result.replayed for a in answers) == 1
    assert api.level(sku, node).available == 7


def test_a_reservation_without_an_id_accepts_the_longest_valid_request_id(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 2)
    request_id = "r" * 128  # the longest request id the service accepts
    answer = api.inventory.ReserveInventory(inv.ReserveInventoryRequest(
        request_id=request_id, lines=[inv.ReservationLine(sku_id=sku, node_id=node, quantity=1)]))
    assert answer.reservation_id
    got = api.inventory.GetReservation(inv.GetReservationRequest(
        reservation_id=answer.reservation_id))
    assert [(line.sku_id, line.quantity) for line in got.lines] == [(sku, 1)]
