"""The Redis store: recovery, snapshots that trim the stream, and a Redis outage."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis
from allocd.v1 import inventory_service_pb2 as inv

from core import commands as c
from core.model import ChannelSpec, NodeSpec, SkuSpec
from service.audit import MEMORY_ENTRIES, AuditLog, verify_lines
from service.config import Settings
from service.server import AllocdServer
from service.servicers.inventory import InventoryServicer
from service.store import StoreUnavailable


class _Context:
    async def abort(self, code, details):
        raise RuntimeError(f"{code}: {details}")


async def _server(url: str) -> AllocdServer:
    server = AllocdServer(Settings(port=0, redis_url=url, log_level="WARNING",
                                   sweep_interval_s=3600.0, checkpoint_every_s=3600.0))
    await server.start()
    if server.engine.ledger.catalog.n_skus == 0:
        for i, command in enumerate((c.UpsertNodes((NodeSpec("A"),)),
                                     c.UpsertChannels((ChannelSpec("web"),)),
                                     c.UpsertSkus(tuple(SkuSpec(f"S{i}") for i in range(4))))):
            await server.engine.mutate_internal(command, f"seed-{i}")
    return server


def _receive(qty: int, request_id: str) -> inv.ReceiveInventoryRequest:
    return inv.ReceiveInventoryRequest(request_id=request_id, lines=[
        inv.ReceiptLine(sku_id="S1", node_id="A", quantity=qty)])


def test_redis_recovers_snapshot_and_log_and_trims_the_stream(redis_server):
    async def first():
        server = await _server(redis_server.url)
        api = InventoryServicer(server.engine)
        for i in range(5):
            await api.ReceiveInventory(_receive(i + 1, f"a{i}"), _Context())
        assert await server.engine.checkpoint()
        for i in range(2):
            await api.ReceiveInventory(_receive(7, f"m{i}"), _Context())
        assert await server.engine.checkpoint()
        for i in range(3):
            await api.ReceiveInventory(_receive(10, f"b{i}"), _Context())
        checksum = server.engine.ledger.checksum()
        await server.stop(0)
        return checksum

    async def second():
        server = await _server(redis_server.url)
        api = InventoryServicer(server.engine)
        checksum = server.engine.ledger.checksum()
        retried = await api.ReceiveInventory(_receive(1, "a0"), _Context())
        await server.stop(0)
        return checksum, retried, server.engine.snapshot_seq

    before = asyncio.run(first())
    after, retried, snapshot_seq = asyncio.run(second())
    assert after == before and snapshot_seq > 0
    assert retried.result.replayed
    client = redis.Redis.from_url(redis_server.url)
    # Only the commits after the snapshot before the newest (those between the two stay
    # for watchers resuming from before the newest).
    assert client.xlen("allocd:{default}:log") == 2 + 3
    keys = {k.decode() for k in client.keys("allocd:{default}:*")}
    assert all("{default}" in k for k in keys)  # one hash slot for the whole partition
    client.close()


def test_a_redis_outage_refuses_writes_quickly_keeps_reads_and_heals_itself(redis_server):
    async def go():
        server = await _server(redis_server.url)
        api = InventoryServicer(server.engine)
        await api.ReceiveInventory(_receive(5, "before"), _Context())
        acknowledged = server.engine.ledger.checksum()
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="UNAVAILABLE"):
            await api.ReceiveInventory(_receive(1, "during"), _Context())
        assert time.monotonic() - started < 5
        # Reads keep working meanwhile.
        levels = await api.GetStockLevels(inv.GetStockLevelsRequest(sku_ids=["S1"]), _Context())
        assert levels.levels[0].available >= 5
        with pytest.raises(StoreUnavailable):  # and writes fail at once while it is away
            await server.engine.mutate_internal(
                c.ReceiveStock((c.ReceiptLine("S1", "A", 1),)), "during-2")
        redis_server.start()
        deadline = time.monotonic() + 20
        while server.engine.broken and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not server.engine.broken, "the server did not resume after Redis returned"
        # The reloaded state is exactly what was acknowledged: the refused write is absent.
        assert server.engine.ledger.checksum() == acknowledged
        answer = await api.ReceiveInventory(_receive(2, "after"), _Context())
        assert answer.result.event_count == 1
        await server.stop(0)

    asyncio.run(go())


def test_answers_without_events_survive_snapshots_and_restarts_in_redis(redis_server):
    """An answer-only commit (a call that changed nothing) written after a snapshot keeps
    its place in the stream (a sub-id after the snapshot's event) and is recovered."""
    from allocd.v1 import order_service_pb2 as opb

    from service.servicers.orders import OrderServicer

    request = opb.AllocateOrdersRequest(request_id="only-errors", orders=[
        opb.Order(order_id="o-x", lines=[opb.OrderLine(sku_id="NOPE", quantity=1)])])

    async def first():
        server = await _server(redis_server.url)
        assert await server.engine.checkpoint()
        answer = await OrderServicer(server.engine).AllocateOrders(request, _Context())
        await server.stop(0)
        return opb.AllocateOrdersResponse.FromString(answer)  # (answered as its bytes)

    async def second():
        server = await _server(redis_server.url)
        found = server.engine._answers.get(("AllocateOrders", "only-errors"))
        replayed = await OrderServicer(server.engine).AllocateOrders(request, _Context())
        await server.stop(0)
        return found, replayed

    answer = asyncio.run(first())
    assert answer.allocations[0].error_code == 5
    found, replayed = asyncio.run(second())
    assert found is not None and found.durable
    assert replayed.result.replayed


def test_with_the_redis_store_the_audit_log_is_a_file_in_the_data_directory(redis_server,
                                                                             tmp_path):
    async def go():
        server = AllocdServer(Settings(port=0, redis_url=redis_server.url, data_dir=str(tmp_path),
                                       partition="p1", log_level="WARNING",
                                       sweep_interval_s=3600.0, checkpoint_every_s=3600.0))
        await server.start()
        for i, command in enumerate((c.UpsertNodes((NodeSpec("A"),)),
                                     c.UpsertSkus((SkuSpec("S1"),)))):
            await server.engine.mutate_internal(command, f"seed-{i}")
        api = InventoryServicer(server.engine)
        await api.ReceiveInventory(_receive(2, "audited-1"), _Context())
        await server.stop(0)

    asyncio.run(go())
    lines = (tmp_path / "p1" / "audit.log").read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["audited-1"]
    assert verify_lines(lines) == (True, 0)


def test_without_a_file_the_audit_log_keeps_only_the_newest_entries_in_memory():
    log = AuditLog(None)
    for i in range(MEMORY_ENTRIES + 5):
        log.record(i, "alice", "ReceiveInventory", f"r{i}", "OK")
    assert len(log.entries) == MEMORY_ENTRIES
    assert log.entries[0]["request_id"] == "r5" and log.count == MEMORY_ENTRIES + 5


def test_a_reload_while_a_write_is_in_flight_answers_it_and_loses_nothing(redis_server,
                                                                         monkeypatch):
    """As with the file store: a break that is not the store's reloads the engine while an
    earlier call's pipeline is in flight. The pipeline finishes before the log is read
    again: the call is answered and the reloaded state holds it."""
    from redis.asyncio import client

    from core.model import Bucket
    from service.engine import Engine
    from service.redisstore import RedisEventStore

    real, slowed = client.Pipeline.execute, {"on": False}

    async def execute(self, *args, **kwargs):
        if slowed["on"]:
            await asyncio.sleep(0.5)  # (a slow round trip)
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(client.Pipeline, "execute", execute)

    def receiving(qty: int):
        return (inv.ReceiveInventoryRequest(request_id=f"in-{qty}", lines=[
            inv.ReceiptLine(sku_id="S", node_id="A", quantity=qty)]),
            lambda: c.ReceiveStock((c.ReceiptLine("S", "A", qty),)))

    def ok(_outcome):
        return inv.ReceiveInventoryResponse()

    def unwritable(_outcome):
        raise ValueError("cannot encode the answer")

    async def go() -> tuple[int, int, bool]:
        store = RedisEventStore(redis_server.url)
        engine = Engine(Settings(store="redis", redis_url=redis_server.url), store)
        await engine.start()
        await engine.mutate_internal(c.UpsertNodes((NodeSpec("A"),)), "n")
        await engine.mutate_internal(c.UpsertChannels((ChannelSpec("web"),)), "ch")
        await engine.mutate_internal(c.UpsertSkus((SkuSpec("S"),)), "s")
        slowed["on"] = True
        first = asyncio.ensure_future(engine.mutate("ReceiveInventory", *receiving(5), ok))
        await asyncio.sleep(0.05)  # (its pipeline in flight)
        with pytest.raises(ValueError):
            await engine.mutate("ReceiveInventory", *receiving(1), unwritable)
        while engine.broken:
            await asyncio.sleep(0.02)
        slowed["on"] = False
        await asyncio.wait_for(first, 5)  # answered, not left waiting
        await engine.mutate("ReceiveInventory", *receiving(7), ok)
        live = engine.ledger.quantity(0, 0, Bucket.AVAILABLE)
        await store.close()
        again = Engine(Settings(store="redis", redis_url=redis_server.url),
                       RedisEventStore(redis_server.url))
        await again.start()
        rebuilt = again.ledger.quantity(0, 0, Bucket.AVAILABLE)
        kept = ("ReceiveInventory", "in-5") in again._answers
        await again.store.close()
        return live, rebuilt, kept

    assert asyncio.run(go()) == (12, 12, True)


def test_snapshots_never_published_are_dropped_once_a_newer_one_is(redis_server):
    """A server stopped while a checkpoint was being written leaves that snapshot's chunks
    behind, a whole snapshot's size each time; they go once a newer snapshot is published
    (at that checkpoint, or at the next start). A newer one than the published snapshot is
    left alone: it may be one being written now."""
    from service.redisstore import RedisEventStore

    client = redis.Redis.from_url(redis_server.url)
    prefix = "allocd:{default}:snapshot:"

    async def go():
        server = await _server(redis_server.url)
        api = InventoryServicer(server.engine)
        await api.ReceiveInventory(_receive(3, "x0"), _Context())
        store = server.engine.store
        assert isinstance(store, RedisEventStore)
        store.write_snapshot(2, b"orphan")  # written, never published (the server died)
        store.write_snapshot(10**9, b"later")  # a newer one, as if being written now
        assert await server.engine.checkpoint()
        published = server.engine.snapshot_seq
        await server.stop(0)
        return published

    published = asyncio.run(go())
    seqs = {k.decode()[len(prefix):].split(":")[0] for k in client.keys(prefix + "*")}
    assert seqs == {str(published), str(10**9)}
    # ... and at the next start, of what was left before the published one.
    RedisEventStore(redis_server.url).write_snapshot(3, b"orphan")

    async def restart():
        server = await _server(redis_server.url)
        await server.stop(0)

    asyncio.run(restart())
    seqs = {k.decode()[len(prefix):].split(":")[0] for k in client.keys(prefix + "*")}
    assert seqs == {str(published), str(10**9)}
    client.close()


def test_a_watcher_resumes_from_before_the_snapshot_after_a_restart(redis_server):
    """As with the file store: the stream keeps the commits since the snapshot before the
    newest, and a watcher resuming from before the newest reads them after a restart."""
    async def first():
        server = await _server(redis_server.url)
        api = InventoryServicer(server.engine)
        await api.ReceiveInventory(_receive(3, "a"), _Context())
        assert await server.engine.checkpoint()
        earlier = server.engine.snapshot_seq
        for i in range(4):
            await api.ReceiveInventory(_receive(1 + i, f"b{i}"), _Context())
        assert await server.engine.checkpoint()
        await api.ReceiveInventory(_receive(5, "c"), _Context())
        last = server.engine.ledger.last_seq
        await server.stop(0)
        return earlier, last

    async def second(earlier: int, last: int):
        server = await _server(redis_server.url)
        engine = server.engine
        seqs: list[int] = []
        try:
            assert engine._recent_first > earlier + 1
            async for events in engine.follow(earlier + 1):
                seqs += [e.seq for e in events]
                if seqs[-1] >= last:
                    break
        finally:
            await server.stop(0)
        return seqs

    earlier, last = asyncio.run(first())
    assert asyncio.run(asyncio.wait_for(second(earlier, last), 30)) == list(
        range(earlier + 1, last + 1))


def test_a_redis_store_not_open_says_unavailable_to_a_watcher_rather_than_gone():
    """While the store reconnects, [] told a watcher behind memory that its place in the
    log was gone for good (INVALID_ARGUMENT): it is UNAVAILABLE, to be retried."""
    from service.redisstore import RedisEventStore
    from service.store import StoreUnavailable

    store = RedisEventStore("redis://127.0.0.1:1")
    with pytest.raises(StoreUnavailable, match="reconnecting"):
        asyncio.run(store.history(1, 10))
