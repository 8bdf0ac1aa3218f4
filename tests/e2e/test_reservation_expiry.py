"""Reservations past their expiry: released by SweepExpiredReservations and by the server."""

from __future__ import annotations

import time

import grpc
import pytest
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import types_pb2 as types

# Long enough for the calls made before a reservation expires to be done by then on a
# loaded machine; the tests wait for the expire_time the server answered, not a fixed time.
TTL_S = 5


def test_sweeping_releases_a_reservation_whose_ttl_has_passed(server_factory):
    # The server's own sweep stays out of the way, so the RPC is what expires it.
    api = server_factory(sweep_interval_s=3600)
    cat = api.seed(n_nodes=2, n_skus=1)
    sku, n1, n2 = cat.skus[0], cat.nodes[0], cat.nodes[1]
    api.receive(sku, n1, 10)
    api.receive(sku, n2, 10)
    short = api.reserve([(sku, n1, 3), (sku, n2, 2)], ttl_seconds=TTL_S)
    long = api.reserve([(sku, n1, 1)], ttl_seconds=600)
    expires = short.expire_time.ToMilliseconds()

    early = api.inventory.SweepExpiredReservations(
        inv.SweepExpiredReservationsRequest(request_id=api.rid()))
    assert (list(early.reservation_ids), early.result.event_count) == ([], 0)
    assert api.level(sku, n1).reserved == 4

    time.sleep(max(0.0, expires / 1000 - time.time()) + 0.5)
    swept = api.inventory.SweepExpiredReservations(
        inv.SweepExpiredReservationsRequest(request_id=api.rid()))
    assert list(swept.reservation_ids) == [short.reservation_id]
    assert swept.result.event_count == 2

    assert (api.level(sku, n1).available, api.level(sku, n1).reserved) == (9, 1)
    assert (api.level(sku, n2).available, api.level(sku, n2).reserved) == (10, 0)
    with pytest.raises(grpc.RpcError) as caught:
        api.inventory.GetReservation(inv.GetReservationRequest(
            reservation_id=short.reservation_id))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert api.inventory.GetReservation(inv.GetReservationRequest(
        reservation_id=long.reservation_id)).lines[0].quantity == 1
    assert api.summary().open_reservations == 1

    events = api.inventory.WatchInventoryEvents(inv.WatchInventoryEventsRequest(
        from_sequence=swept.result.first_sequence), timeout=10)
    try:
        expired = [next(events).event for _ in range(2)]
    finally:
        events.cancel()
    assert [(e.kind, e.reference, e.node_id, e.quantity, e.from_bucket, e.to_bucket)
            for e in expired] == [
        (types.EVENT_KIND_RESERVATION_EXPIRED, short.reservation_id, node, quantity,
         types.BUCKET_RESERVED, types.BUCKET_AVAILABLE) for node, quantity in ((n1, 3), (n2, 2))]


def test_the_server_expires_reservations_on_its_own(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 10)
    reservation = api.reserve([(sku, node, 6)], ttl_seconds=TTL_S)
    assert api.level(sku, node).reserved == 6
    expires = reservation.expire_time.ToMilliseconds()

    # Until well after the expiry (the sweep runs every 0.2 s).
    deadline = time.monotonic() + max(0.0, expires / 1000 - time.time()) + 30
    while time.monotonic() < deadline:
        if api.level(sku, node).reserved == 0:
            break
        time.sleep(0.05)
    level = api.level(sku, node)
    assert (level.available, level.reserved) == (10, 0)
    assert time.time_ns() // 1_000_000 >= reservation.expire_time.ToMilliseconds()
    with pytest.raises(grpc.RpcError) as caught:
        api.inventory.GetReservation(inv.GetReservationRequest(
            reservation_id=reservation.reservation_id))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
