"""Faults around the write path: nothing applied without being recorded, no answer lost."""

from __future__ import annotations

import asyncio
import pickle
import time

import pytest
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import order_service_pb2 as opb

from core import commands as c
from core.errors import ApplyFailed
from core.model import ChannelSpec, NodeSpec, SkuSpec
from service import logcodec
from service.config import Settings
from service.engine import Engine
from service.filestore import FileEventStore
from service.store import Commit, MemoryEventStore, StoreCorrupt


async def _engine(store) -> Engine:
    engine = Engine(Settings(store="memory"), store)
    await engine.start()
    if engine.ledger.catalog.n_skus == 0:
        await engine.mutate_internal(c.UpsertNodes((NodeSpec("A"),)), "n")
        await engine.mutate_internal(c.UpsertChannels((ChannelSpec("web"),)), "ch")
        await engine.mutate_internal(c.UpsertSkus((SkuSpec("S"),)), "s")
    return engine


def _receive(request_id: str, qty: int = 5) -> inv.ReceiveInventoryRequest:
    return inv.ReceiveInventoryRequest(request_id=request_id, lines=[
        inv.ReceiptLine(sku_id="S", node_id="A", quantity=qty)])


def _build(qty: int = 5):
    return lambda: c.ReceiveStock((c.ReceiptLine("S", "A", qty),))


async def _reloaded(engine: Engine, checksum: str) -> None:
    """The engine paused writes, then reloaded from the store the state it had (with the
    checksum given)."""
    assert engine.broken
    for _ in range(100):
        if not engine.broken:
            break
        await asyncio.sleep(0.05)
    assert not engine.broken and engine.ledger.checksum() == checksum


def test_a_change_that_cannot_be_answered_is_rolled_back_by_a_reload():
    async def go():
        engine = await _engine(MemoryEventStore())
        before = engine.ledger.checksum()

        def broken_respond(outcome):
            raise ValueError("cannot encode")

        with pytest.raises(ValueError):
            await engine.mutate("ReceiveInventory", _receive("r1"), _build(), broken_respond)
        await _reloaded(engine, before)
        ok = await engine.mutate("ReceiveInventory", _receive("r2"), _build(),
                                 lambda o: inv.ReceiveInventoryResponse())
        assert engine.durable_seq == engine.ledger.last_seq
        del ok

    asyncio.run(go())


class _SlowStore(MemoryEventStore):
    async def append(self, commit: Commit) -> None:
        await asyncio.sleep(0.2)
        await super().append(commit)


def test_a_change_that_fails_halfway_through_being_applied_is_rolled_back_by_a_reload(
        monkeypatch):
    """An error that is not a refusal, raised once some of a command's events are applied
    (here a fault in the catalogue on the second of two SKUs, the first taken already),
    leaves no trace: the state is reloaded from the store, which has none of them, before
    anything else runs."""
    from core.catalog import Catalog

    real = Catalog.put_sku

    def put_sku(self, spec, dense):
        if spec.sku_id == "X":
            raise OverflowError("a fault while the SKU was taken (injected)")
        return real(self, spec, dense)

    async def go():
        engine = await _engine(MemoryEventStore())
        before = engine.ledger.checksum()
        monkeypatch.setattr(Catalog, "put_sku", put_sku)
        with pytest.raises(ApplyFailed, match="OverflowError"):
            await engine.mutate_internal(c.UpsertSkus((SkuSpec("W"), SkuSpec("X"))),
                                         "bad-sku")
        monkeypatch.setattr(Catalog, "put_sku", real)
        await _reloaded(engine, before)
        assert engine.ledger.catalog.n_skus == 1
        await engine.mutate("ReceiveInventory", _receive("r2"), _build(),
                            lambda o: inv.ReceiveInventoryResponse())
        assert engine.durable_seq == engine.ledger.last_seq

    asyncio.run(go())


def test_a_cancelled_call_still_records_its_change_and_its_answer():
    async def go():
        engine = await _engine(_SlowStore())
        respond = lambda o: inv.ReceiveInventoryResponse()  # noqa: E731
        call = asyncio.ensure_future(engine.mutate("ReceiveInventory", _receive("r1"),
                                                   _build(), respond))
        await asyncio.sleep(0.05)  # applied, the write in flight
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        retry = await engine.mutate("ReceiveInventory", _receive("r1"), _build(), respond)
        del retry
        assert engine.ledger.quantity(0, 0, 0) == 5  # once, not twice
        assert engine.durable_seq == engine.ledger.last_seq

    asyncio.run(go())


def test_an_answer_without_events_survives_a_restart(tmp_path):
    async def first():
        engine = await _engine(FileEventStore(tmp_path))
        request = opb.AllocateOrdersRequest(request_id="batch-1", orders=[
            opb.Order(order_id="o1", lines=[opb.OrderLine(sku_id="NOPE", quantity=1)])])
        from service.servicers.orders import OrderServicer

        class Ctx:
            async def abort(self, code, details):
                raise RuntimeError(details)

        answer = await OrderServicer(engine).AllocateOrders(request, Ctx())
        await engine.store.close()
        return request, answer

    async def second(request):
        engine = await _engine(FileEventStore(tmp_path))
        key = ("AllocateOrders", "batch-1")
        found = engine._answers.get(key)
        await engine.store.close()
        return found

    request, answer = asyncio.run(first())
    answer = opb.AllocateOrdersResponse.FromString(answer)  # (answered as its bytes)
    assert answer.allocations[0].error_code == 5  # NOT_FOUND, nothing recorded
    found = asyncio.run(second(request))
    assert found is not None and found.durable


@pytest.mark.parametrize("payload", [
    b"ccore.ledger\nnp\n.",  # a module reached through an allowed module
    b"cbuiltins\ngetattr\n.",
    b"cos\nsystem\n.",
    b"ccore.operations\nexecute\n.",  # a function, not a class
])
def test_the_store_codec_refuses_anything_but_allocd_classes(payload):
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        logcodec.loads(payload)


def test_corruption_with_good_records_after_it_refuses_to_start(tmp_path):
    async def write():
        engine = await _engine(FileEventStore(tmp_path))
        for i in range(4):
            await engine.mutate("ReceiveInventory", _receive(f"w{i}", 1 + i), _build(1 + i),
                                lambda o: inv.ReceiveInventoryResponse())
        await engine.store.close()

    asyncio.run(write())
    segment = sorted(tmp_path.glob("wal-*.log"))[-1]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # in the middle: whole records follow it
    segment.write_bytes(bytes(data))

    async def recover():
        store = FileEventStore(tmp_path)
        try:
            await store.open()
        finally:
            await store.close()

    with pytest.raises(StoreCorrupt, match="not an unfinished write"):
        asyncio.run(recover())


def test_a_retry_waits_for_the_answer_in_flight_and_an_answer_costs_little_to_keep():
    """The idempotency table keeps up to `idempotency_capacity` answers: each must be
    small (no event object of its own), yet a retry that comes while the first call is
    in flight still waits for it, even when another waiter went away."""
    import tracemalloc

    from service.engine import _Answer

    async def go():
        answer = _Answer(b"print", None)
        gone = asyncio.ensure_future(answer.wait())
        retry = asyncio.ensure_future(answer.wait())
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        assert not retry.done() and not answer.settled
        answer.settle()
        await asyncio.wait_for(retry, 1)
        await asyncio.wait_for(answer.wait(), 1)  # settled: at once
        assert gone.cancelled() and answer.waiters is None

        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        kept = [_Answer(b"x" * 16, b"") for _ in range(10_000)]
        each = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
        tracemalloc.stop()
        assert each < 200, each  # an asyncio.Event alone takes ~850 bytes

    asyncio.run(go())


def test_snapshots_rest_in_proportion_to_what_the_last_one_took(tmp_path):
    """A snapshot's cost grows with the state: after one, published or not, the next waits
    checkpoint_rest_factor times as long as it took, however many events come, unless the
    log has grown by checkpoint_max_events (a restart's replay stays bounded), which is
    never taken below checkpoint_every_events."""
    def settings(**values):
        return Settings(store="file", checkpoint_every_s=3600.0,
                        checkpoint_rest_factor=4.0, **values)

    async def scenario():
        engine = await _engine(FileEventStore(tmp_path))
        engine.settings = settings(checkpoint_every_events=3, checkpoint_max_events=1000)
        for k in range(3):
            await engine.mutate_internal(_build()(), f"r{k}")
        assert engine.checkpoint_due()  # nothing written before: no rest to wait
        before = time.monotonic()
        assert await engine.checkpoint()
        took = engine.snapshot_took_s
        assert took > 0 and engine.snapshot_seq == engine.durable_seq
        assert engine.snapshot_rest_until >= before + 4 * took  # (it ended >= took after)
        assert not engine.checkpoint_due()  # nothing new yet
        for k in range(3, 6):
            await engine.mutate_internal(_build()(), f"r{k}")
        # As if the snapshot had taken 10 s: 3 events are due by count, but not before the
        # 40 s after it have passed.
        engine.snapshot_rest_until = time.monotonic() + 1.0
        assert not engine.checkpoint_due()
        engine.snapshot_rest_until = time.monotonic() - 0.001
        assert engine.checkpoint_due()
        # However long the rest, a log grown by checkpoint_max_events is due...
        engine.snapshot_rest_until = time.monotonic() + 3600.0
        behind = engine.durable_seq - engine.snapshot_seq
        engine.settings = settings(checkpoint_every_events=3, checkpoint_max_events=behind)
        assert engine.checkpoint_due()
        # ... but never before checkpoint_every_events (a load run that sets it very high
        # to keep snapshots out takes none).
        engine.settings = settings(checkpoint_every_events=behind + 1,
                                   checkpoint_max_events=behind)
        assert not engine.checkpoint_due()
        # A snapshot that fails rests as well: it is not retried back to back. (A rest of a
        # million times its few milliseconds, so that a slow machine does not end it
        # before it is looked at.)
        engine.settings = Settings(store="file", checkpoint_every_s=3600.0,
                                   checkpoint_rest_factor=1e6, checkpoint_every_events=3,
                                   checkpoint_max_events=1000)
        engine.snapshot_rest_until = 0.0

        def full_disk(seq, data):
            raise OSError("no space left on device")

        engine.store.write_snapshot = full_disk  # (the forked child inherits it)
        assert engine.checkpoint_due()
        before = time.monotonic()
        assert not await engine.checkpoint()
        assert engine.snapshot_took_s > 0
        assert engine.snapshot_rest_until >= before + 1e6 * engine.snapshot_took_s
        assert not engine.checkpoint_due()
        await engine.store.close()

    asyncio.run(scenario())
