"""WatchInventoryEvents: the whole log in order without gaps, then live events."""

from __future__ import annotations

import threading

import grpc
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import types_pb2 as types

STREAM_TIMEOUT_S = 10


def watch(api, **request):
    return api.inventory.WatchInventoryEvents(inv.WatchInventoryEventsRequest(**request),
                                              timeout=STREAM_TIMEOUT_S)


def take(stream, count: int) -> list[types.InventoryEvent]:
    return [next(stream).event for _ in range(count)]


def test_watching_from_sequence_one_replays_every_event_in_order_without_gaps(api, cat):
    sku, n1, n2 = cat.skus[0], cat.nodes[0], cat.nodes[1]
    received = api.receive(sku, n1, 10)
    reserved = api.reserve([(sku, n1, 3)], channel_id="web")
    transfer = api.inventory.TransferInventory(inv.TransferInventoryRequest(
        request_id=api.rid(), transfer_id=f"{cat.prefix}-TR", from_node_id=n1, to_node_id=n2,
        expected_time=reserved.expire_time, lines=[inv.TransferLine(sku_id=sku, quantity=2)]))
    last = api.summary().last_sequence

    stream = watch(api, from_sequence=1)
    try:
        events = take(stream, last)
    finally:
        stream.cancel()
    assert [e.sequence for e in events] == list(range(1, last + 1))
    assert all(e.time.seconds > 0 and e.request_id for e in events)

    by_seq = {e.sequence: e for e in events}
    receipt = by_seq[received.result.first_sequence]
    assert (receipt.kind, receipt.sku_id, receipt.node_id, receipt.quantity,
            receipt.from_bucket, receipt.to_bucket) == (
        types.EVENT_KIND_RECEIVED, sku, n1, 10, types.BUCKET_EXTERNAL, types.BUCKET_AVAILABLE)
    hold = by_seq[reserved.result.first_sequence]
    assert (hold.kind, hold.sku_id, hold.node_id, hold.quantity, hold.from_bucket,
            hold.to_bucket, hold.reference, hold.channel_id) == (
        types.EVENT_KIND_RESERVED, sku, n1, 3, types.BUCKET_AVAILABLE, types.BUCKET_RESERVED,
        reserved.reservation_id, "web")
    assert hold.due_time == reserved.expire_time
    shipped, in_transit = (by_seq[transfer.result.first_sequence],
                           by_seq[transfer.result.last_sequence])
    assert (shipped.kind, shipped.node_id, shipped.from_bucket, shipped.to_bucket) == (
        types.EVENT_KIND_TRANSFER_SHIPPED, n1, types.BUCKET_AVAILABLE, types.BUCKET_EXTERNAL)
    assert (in_transit.kind, in_transit.node_id, in_transit.to_bucket, in_transit.quantity,
            in_transit.reference) == (types.EVENT_KIND_TRANSFER_IN_TRANSIT, n2,
                                      types.BUCKET_IN_TRANSIT, 2, f"{cat.prefix}-TR")

    # The catalogue events of the seed carry their entities.
    sku_events = [e for e in events if e.kind == types.EVENT_KIND_SKU_UPSERTED
                  and e.sku_id in cat.skus]
    assert [e.sku.sku_id for e in sku_events] == cat.skus
    node_events = [e for e in events if e.kind == types.EVENT_KIND_NODE_UPSERTED
                   and e.node_id in cat.nodes]
    assert [(e.node.node_id, e.node.enabled) for e in node_events] == [
        (n, True) for n in cat.nodes]


def test_watching_from_a_later_sequence_starts_there(api, cat):
    api.receive(cat.skus[0], cat.nodes[0], 1)
    last = api.summary().last_sequence
    stream = watch(api, from_sequence=last - 2)
    try:
        assert [e.sequence for e in take(stream, 3)] == [last - 2, last - 1, last]
    finally:
        stream.cancel()


def test_a_watcher_receives_an_event_written_after_it_subscribed(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, 1)
    last = api.summary().last_sequence
    stream = watch(api, from_sequence=last)
    try:
        (caught_up,) = take(stream, 1)  # the stream is open and has sent the log's end
        assert caught_up.sequence == last
        written = api.inventory.AdjustInventory(inv.AdjustInventoryRequest(
            request_id=api.rid(), reference="live", lines=[
                inv.AdjustmentLine(sku_id=sku, node_id=node, delta=4,
                                   reason=types.ADJUSTMENT_REASON_FOUND)]))
        (live,) = take(stream, 1)
    finally:
        stream.cancel()
    assert live.sequence == written.result.first_sequence == last + 1
    assert (live.kind, live.sku_id, live.node_id, live.quantity, live.reason,
            live.reference) == (types.EVENT_KIND_ADJUSTED, sku, node, 4,
                                types.ADJUSTMENT_REASON_FOUND, "live")


def test_a_live_only_watcher_skips_the_history_and_sees_new_events(api, cat):
    sku, node = cat.skus[0], cat.nodes[0]
    history_end = api.summary().last_sequence
    stream = watch(api, live_only=True)
    first: list[types.InventoryEvent] = []
    done = threading.Event()

    def read_one() -> None:
        try:
            first.extend(take(stream, 1))
        except grpc.RpcError:
            pass
        finally:
            done.set()

    reader = threading.Thread(target=read_one, daemon=True)
    reader.start()
    # Until the server has registered the watcher, a write may land before it; keep
    # writing (one unit at a time) until the watcher reports an event.
    written: dict[int, str] = {}
    try:
        for _ in range(50):
            answer = api.receive(sku, node, 1)
            written[answer.result.first_sequence] = "ours"
            if done.wait(0.1):
                break
        reader.join(timeout=STREAM_TIMEOUT_S)
    finally:
        stream.cancel()
    assert first, "the live watcher received nothing"
    (event,) = first
    assert event.sequence > history_end
    assert event.sequence in written
    assert (event.kind, event.sku_id, event.quantity) == (types.EVENT_KIND_RECEIVED, sku, 1)


def test_several_watchers_see_the_same_events(api, cat):
    watchers = 3
    sku, node = cat.skus[0], cat.nodes[0]
    start = api.summary().last_sequence + 1
    streams = [watch(api, from_sequence=start) for _ in range(watchers)]
    try:
        for quantity in (1, 2, 3):
            api.receive(sku, node, quantity)
        seen = [[(e.sequence, e.quantity) for e in take(s, 3)] for s in streams]
    finally:
        for s in streams:
            s.cancel()
    assert seen == [[(start, 1), (start + 1, 2), (start + 2, 3)]] * watchers


def test_watching_from_beyond_any_sequence_number_is_invalid_not_a_wait(api):
    refused = watch(api, from_sequence=1 << 63)
    try:
        next(refused)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert "from_sequence" in error.details()
    else:
        raise AssertionError("the watch was not refused")
    # The last there can be is a watch like any other: it waits (here until its deadline).
    waiting = api.inventory.WatchInventoryEvents(
        inv.WatchInventoryEventsRequest(from_sequence=(1 << 63) - 1), timeout=0.5)
    try:
        next(waiting)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error
    else:
        raise AssertionError("an event came from beyond the log's end")
