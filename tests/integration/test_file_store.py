"""The embedded file store: restart recovery, snapshots, torn and corrupt logs, replay."""

from __future__ import annotations

import asyncio
import copyreg
import dataclasses
import io
import os
import pickle
from pathlib import Path

import pytest
from allocd.v1 import inventory_service_pb2 as inv
from hypothesis import given, settings
from hypothesis import strategies as st

from core import commands as c
from core.demand import SmoothedDemand
from core.errors import InvalidArgument
from core.ledger import Ledger
from core.model import Bucket, ChannelSpec, Event, EventKind, NodeSpec, SkuSpec
from core.network import SlaTier
from core.operations import execute
from core.orders import (
    Backorder,
    Decision,
    Option,
    OptionKind,
    OrderLineSpec,
    OrderRecord,
    OrderSpec,
    OrderStatus,
    PackageLine,
    PackagePlan,
    PackageState,
)
from service import logcodec
from service.config import Settings
from service.filestore import FileEventStore
from service.server import AllocdServer
from service.servicers.inventory import InventoryServicer
from service.store import Commit, Snapshot, StoreCorrupt, StoreUnavailable
from tests.unit.shop import shop


class _Context:
    async def abort(self, code, details):
        raise RuntimeError(f"{code}: {details}")


def _settings(data_dir: Path, **overrides) -> Settings:
    values = {"port": 0, "store": "file", "data_dir": str(data_dir), "log_level": "WARNING",
              "sweep_interval_s": 3600.0, "checkpoint_every_s": 3600.0}
    values.update(overrides)
    return Settings(**values)


async def _seeded(data_dir: Path, **overrides) -> AllocdServer:
    server = AllocdServer(_settings(data_dir, **overrides))
    await server.start()
    if server.engine.ledger.catalog.n_skus == 0:
        for i, command in enumerate((
            c.UpsertNodes((NodeSpec("A"), NodeSpec("B"))),
            c.UpsertChannels((ChannelSpec("web"),)),
            c.UpsertSkus(tuple(SkuSpec(f"S{i}") for i in range(6))),
        )):
            await server.engine.mutate_internal(command, f"seed-{i}")
    return server


def _receive(sku: str, node: str, qty: int, request_id: str) -> inv.ReceiveInventoryRequest:
    return inv.ReceiveInventoryRequest(request_id=request_id, lines=[
        inv.ReceiptLine(sku_id=sku, node_id=node, quantity=qty)])


def _reserve(sku: str, qty: int, request_id: str) -> inv.ReserveInventoryRequest:
    return inv.ReserveInventoryRequest(request_id=request_id, channel_id="web",
                                       ttl_seconds=3600, lines=[
                                           inv.ReservationLine(sku_id=sku, node_id="A",
                                                               quantity=qty)])


def run(coro):
    return asyncio.run(coro)


def test_a_restart_recovers_every_acknowledged_change_and_answer(tmp_path):
    async def first():
        server = await _seeded(tmp_path)
        api = InventoryServicer(server.engine)
        await api.ReceiveInventory(_receive("S1", "A", 10, "r1"), _Context())
        reserved = await api.ReserveInventory(_reserve("S1", 3, "r2"), _Context())
        checksum = server.engine.ledger.checksum()
        await server.stop(0)
        return checksum, reserved

    async def second():
        server = await _seeded(tmp_path)
        api = InventoryServicer(server.engine)
        checksum = server.engine.ledger.checksum()
        retried = await api.ReserveInventory(_reserve("S1", 3, "r2"), _Context())
        after_retry = server.engine.ledger.checksum()
        await server.stop(0)
        return checksum, retried, after_retry

    before, reserved = run(first())
    after, retried, after_retry = run(second())
    assert after == before
    assert retried.result.replayed and retried.reservation_id == reserved.reservation_id
    assert after_retry == after  # the retry changed nothing


def test_a_snapshot_then_more_events_recover_to_the_same_state(tmp_path):
    async def first():
        server = await _seeded(tmp_path)
        api = InventoryServicer(server.engine)
        await api.ReceiveInventory(_receive("S2", "B", 7, "a"), _Context())
        assert await server.engine.checkpoint()
        earlier = server.engine.snapshot_seq
        await api.ReceiveInventory(_receive("S3", "A", 5, "b"), _Context())
        assert await server.engine.checkpoint()
        await api.ReserveInventory(_reserve("S3", 2, "c"), _Context())
        checksum = server.engine.ledger.checksum()
        await server.stop(0)
        return checksum, earlier

    async def second():
        server = await _seeded(tmp_path)
        state = (server.engine.ledger.checksum(), server.engine.snapshot_seq)
        api = InventoryServicer(server.engine)
        retried = await api.ReceiveInventory(_receive("S2", "B", 7, "a"), _Context())
        await server.stop(0)
        return state, retried

    before, earlier = run(first())
    (after, snapshot_seq), retried = run(second())
    assert after == before and snapshot_seq > earlier > 0
    assert retried.result.replayed  # answers from before the snapshot survive it too
    store = tmp_path / "default"
    assert len(list(store.glob("snapshot-*.bin"))) == 1
    # The segments before the earlier snapshot are gone; what is left starts after it
    # (the events between the two snapshots stay for watchers).
    firsts = sorted(int(p.name[4:24]) for p in store.glob("wal-*.log"))
    assert firsts[:2] == [earlier + 1, snapshot_seq + 1]


def _last_segment(tmp_path: Path) -> Path:
    return sorted((tmp_path / "default").glob("wal-*.log"))[-1]


def _state_after(tmp_path: Path, requests: int, prefix: str = "x") -> str:
    async def go():
        server = await _seeded(tmp_path)
        api = InventoryServicer(server.engine)
        for i in range(requests):
            await api.ReceiveInventory(_receive("S4", "A", 1 + i, f"{prefix}{i}"), _Context())
        checksum = server.engine.ledger.checksum()
        await server.stop(0)
        return checksum

    return run(go())


def _recover(tmp_path: Path) -> tuple[str, list[str]]:
    async def go():
        server = AllocdServer(_settings(tmp_path))
        await server.start()
        result = server.engine.ledger.checksum(), server.engine.recovery_notes
        await server.stop(0)
        return result

    return run(go())


def test_a_torn_last_record_is_cut_off_and_reported(tmp_path):
    intact = _state_after(tmp_path, 2)
    segment = _last_segment(tmp_path)
    size = segment.stat().st_size
    record = logcodec.frame(logcodec.dumps(Commit(())))
    with segment.open("ab") as fh:
        fh.write(record[: len(record) // 2])  # a write that never finished
    checksum, notes = _recover(tmp_path)
    assert checksum == intact
    assert any("cut the log" in note for note in notes)
    assert segment.stat().st_size == size


def test_a_corrupt_last_record_is_cut_off_and_reported(tmp_path):
    _state_after(tmp_path, 1)
    before_last = _recover(tmp_path)[0]
    _state_after(tmp_path, 1, prefix="y")  # one more commit: the one we corrupt
    segment = _last_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF
    segment.write_bytes(bytes(data))
    checksum, notes = _recover(tmp_path)
    assert checksum == before_last
    assert any("checksum mismatch" in note for note in notes)


def test_a_corrupt_record_before_the_last_segment_refuses_to_start(tmp_path):
    async def go():
        server = await _seeded(tmp_path)
        api = InventoryServicer(server.engine)
        await api.ReceiveInventory(_receive("S1", "A", 4, "p"), _Context())
        server.engine.store.begin_snapshot(server.engine.ledger.last_seq)  # a new segment
        await api.ReceiveInventory(_receive("S1", "A", 4, "q"), _Context())
        await server.stop(0)

    run(go())
    first = sorted((tmp_path / "default").glob("wal-*.log"))[0]
    data = bytearray(first.read_bytes())
    data[20] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt):
        _recover(tmp_path)


def test_the_store_refuses_to_unpickle_foreign_types(tmp_path):
    payload = logcodec.dumps(os.system)  # a function from outside allocd
    with pytest.raises(Exception, match="not allowed"):
        logcodec.loads(payload)


class _SlottedDefault(pickle.Pickler):
    """Pickles `types` the way pickle's default wrote a slotted dataclass: the class made
    empty, then every field set (what logs and snapshots hold from before a class named
    its own form, compiled or not)."""

    def __init__(self, file: io.BytesIO, types: tuple[type, ...]) -> None:
        super().__init__(file, protocol=5)
        self.types = types

    def reducer_override(self, obj: object) -> object:
        if type(obj) in self.types:
            state = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
            return copyreg.__newobj__, (type(obj),), (None, state)
        return NotImplemented


def _slotted_default(obj: object, *types: type) -> bytes:
    buffer = io.BytesIO()
    _SlottedDefault(buffer, types).dump(obj)
    return buffer.getvalue()


def _noting(real, note, line):
    """`real`, which first adds `line(*its arguments)` to the file `note` (a forked child's
    word to the test)."""

    def noted(*args):
        with note.open("a") as fh:
            fh.write(line(*args) + "\n")
        return real(*args)

    return noted


async def _checkpoint_with(monkeypatch, owner, name, replacement, data_dir: Path,
                           **overrides) -> bool:
    """Whether a seeded server's checkpoint, taken with `owner.name` replaced, is published
    (after one receipt, "receive-1": an answer to remember)."""
    server = await _seeded(data_dir, **overrides)
    await InventoryServicer(server.engine).ReceiveInventory(
        _receive("S1", "A", 5, "receive-1"), _Context())
    monkeypatch.setattr(owner, name, replacement)
    published = await server.engine.checkpoint()
    monkeypatch.undo()
    await server.stop(0)
    return published


def test_the_snapshot_is_written_below_the_server_and_published(tmp_path, monkeypatch):
    """The forked child lowers its priority by `snapshot_nice` before writing the image,
    and the snapshot is still published; a niceness outside 0-19 is refused."""
    told = tmp_path / "nice"
    recorded = _noting(os.nice, told, str)  # (called in the child)

    assert run(_checkpoint_with(monkeypatch, os, "nice", recorded, tmp_path / "data",
                                snapshot_nice=7))
    assert told.read_text() == "7\n"
    for wrong in (-1, 20):
        with pytest.raises(ValueError, match="snapshot_nice"):
            AllocdServer(_settings(tmp_path / "other", snapshot_nice=wrong))


def test_the_answers_go_into_the_snapshot_listed_by_the_child_not_the_server(tmp_path,
                                                                             monkeypatch):
    """Listing the remembered answers (up to idempotency_capacity) is the child's work: the
    server's loop does not wait for it. They are in the snapshot all the same: after a
    restart from it, a retry gets the first call's answer."""
    import service.engine as engine_module

    listed = tmp_path / "listed-by"
    recorded = _noting(engine_module.IdempotencyRecord, listed,
                       lambda *_: f"{os.getpid()}")  # (the process that lists each answer)

    async def checkpoint_then_restart() -> tuple[bool, bool]:
        published = await _checkpoint_with(monkeypatch, engine_module, "IdempotencyRecord",
                                           recorded, tmp_path)
        again = await _seeded(tmp_path)  # (the log before the snapshot is gone)
        retried = await InventoryServicer(again.engine).ReceiveInventory(
            _receive("S1", "A", 5, "receive-1"), _Context())
        await again.stop(0)
        return published, retried.result.replayed

    published, replayed = run(checkpoint_then_restart())
    assert published and replayed
    pids = set(listed.read_text().split())
    assert pids and str(os.getpid()) not in pids


def test_events_written_either_way_read_back_the_same():
    # Events are written as their fields in order (Event.__reduce__); logs written before
    # that hold pickle's default for slotted dataclasses, and must still read.
    ledger = Ledger()
    outcome = execute(ledger, c.UpsertNodes((NodeSpec("A", "A"),)), 1)
    outcome = execute(ledger, c.UpsertSkus((SkuSpec("S0"),)), 2)
    events = outcome.events + execute(ledger, c.ReceiveStock((c.ReceiptLine("S0", "A", 5),)),
                                      3).events
    compact = logcodec.dumps(Commit(events))
    default = _slotted_default(Commit(events), Event)
    assert compact != default and len(compact) < len(default)
    for data in (compact, default):
        back = logcodec.loads(data).events
        assert back == events
        assert [type(e.kind) for e in back] == [type(e.kind) for e in events]


def test_every_field_of_an_event_is_written_and_a_move_leaves_out_what_it_never_sets():
    # Event.__reduce__ names its fields one by one: a field added to Event but not there
    # would be lost silently in the log. Every field set to something not its default:
    everything = Event(7, EventKind.RECEIVED, 1, 2, Bucket.AVAILABLE, Bucket.RESERVED, 3,
                       "ref", "req", 4, 5, 6, 8, 9, 10, 11, ("a", "payload"))
    assert all(getattr(everything, f.name) != f.default for f in dataclasses.fields(Event))
    cls, args = everything.__reduce__()
    assert cls is Event and len(args) == len(dataclasses.fields(Event))
    move = Event(8, EventKind.ORDER_UNITS_ALLOCATED, 1, 2, Bucket.AVAILABLE,
                 Bucket.ALLOCATED, 3, "P1", "req", 4, 5)
    assert len(move.__reduce__()[1]) < len(args)
    for event in (everything, move, Event(9, EventKind.MOVED, payload=0),
                  Event(10, EventKind.MOVED, counted=0)):
        assert logcodec.loads(logcodec.dumps(event)) == event


def _two_package_order(ledger: Ledger):
    """Stock at two nodes, and an order of two lines allocated from both (two packages)."""
    for command in shop({("shirt", "n0"): 1, ("mug", "n1"): 5}):
        execute(ledger, command, 1)
    order = OrderSpec("o1", "web", SlaTier.STANDARD, (OrderLineSpec("l1", "shirt", 1),
                                                       OrderLineSpec("l2", "mug", 2)),
                      postal_code="10001")
    return execute(ledger, c.AllocateOrders((order,)), 2)


def test_orders_and_decisions_written_either_way_read_back_the_same(monkeypatch):
    # Event by event (how commits were written before the columns, and how a commit the
    # columns cannot hold still is), order specs and decisions (named tuples) are written
    # as their class and fields; logs written before that hold pickle's default for named
    # tuples, and must read. (The events alone are pickled here: a commit of these would
    # be written as columns, tests/unit/test_log_columns.py.)
    ledger = Ledger()
    events = _two_package_order(ledger).events
    payloads = [e.payload for e in events if e.payload is not None]
    assert {type(x) for x in payloads} >= {OrderSpec, Decision}
    assert any(len(x.packages) == 2 for x in payloads if isinstance(x, Decision))
    compact = logcodec.dumps(events)
    for cls in (OrderLineSpec, OrderSpec, PackageLine, PackagePlan, Backorder, Option,
                Decision):
        monkeypatch.delitem(copyreg.dispatch_table, cls)
    default = logcodec.dumps(events)
    monkeypatch.undo()
    assert compact != default
    for data in (compact, default):
        back = logcodec.loads(data)
        assert back == events
        assert [type(e.payload) for e in back] == [type(e.payload) for e in events]
        decision = next(e.payload for e in back if isinstance(e.payload, Decision))
        assert type(decision.packages[0]) is PackagePlan
        assert type(decision.options[0].kind) is OptionKind


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["S0", "S1", "S2"]), st.sampled_from(["A", "B"]),
                          st.integers(-3, 6)), min_size=1, max_size=25),
       st.data())
def test_a_snapshot_at_any_point_plus_replay_gives_identical_state(ops, data):
    ledger = Ledger()
    commits: list[Commit] = []

    def run_command(command):
        try:
            outcome = execute(ledger, command, 1000, f"r{len(commits)}")
        except Exception:
            return
        commits.append(Commit(outcome.events))

    run_command(c.UpsertNodes((NodeSpec("A"), NodeSpec("B"))))
    run_command(c.UpsertSkus(tuple(SkuSpec(s) for s in ("S0", "S1", "S2"))))
    for sku, node, delta in ops:
        if delta > 0:
            run_command(c.ReceiveStock((c.ReceiptLine(sku, node, delta),)))
        elif delta < 0:
            run_command(c.MoveStock((c.MoveLine(sku, node, -delta, Bucket.AVAILABLE,
                                                Bucket.QUARANTINED),)))
        else:
            run_command(c.SetSafetyStock(sku, node, 1))
    cut = data.draw(st.integers(0, len(commits)))
    # State after `cut` commits, snapshotted through the store's codec, then the rest.
    partial = Ledger()
    for commit in commits[:cut]:
        partial.apply(commit.events, replay=True)
    snapshot = logcodec.loads(logcodec.dumps(Snapshot(partial.last_seq, partial)))
    restored = snapshot.ledger
    for commit in commits[cut:]:
        restored.apply(commit.events, replay=True)
    assert restored.checksum() == ledger.checksum()
    for shard, original in zip(restored.shards, ledger.shards, strict=True):
        assert (shard.qty == original.qty).all()


def test_group_and_async_modes_also_recover_what_they_acknowledged(tmp_path):
    for mode in ("group", "async-may-lose-1s"):
        directory = tmp_path / mode

        async def first(directory=directory, mode=mode):
            server = await _seeded(directory, durability=mode)
            api = InventoryServicer(server.engine)
            await asyncio.gather(*(api.ReceiveInventory(_receive("S5", "B", 1, f"g{i}"),
                                                        _Context()) for i in range(20)))
            checksum = server.engine.ledger.checksum()
            await server.stop(0)
            return checksum

        before = run(first())
        assert _recover(directory)[0] == before


def test_file_store_appends_survive_a_reopen_without_a_server(tmp_path):
    async def go():
        store = FileEventStore(tmp_path)
        recovered = await store.open()
        assert recovered.snapshot is None and list(recovered.commits) == []
        await store.close()

    run(go())


def test_concurrent_commits_share_writes_up_to_the_group_limit(tmp_path):
    async def go(limit):
        store = FileEventStore(tmp_path / f"g{limit}", group_max_commits=limit)
        await store.open()
        writes = []
        original = store._write

        def counting(data, sync):
            writes.append(len(data))
            original(data, sync)

        store._write = counting
        ledger = Ledger()
        outcome = execute(ledger, c.UpsertNodes((NodeSpec("A"),)), 0, "n")
        await store.append(Commit(outcome.events))
        commits = []
        for i in range(20):
            outcome = execute(ledger, c.UpsertChannels((ChannelSpec(f"c{i}"),)), 0, f"r{i}")
            commits.append(Commit(outcome.events))
        writes.clear()
        await asyncio.gather(*(store.append(commit) for commit in commits))
        await store.close()
        return writes

    shared = run(go(1000))
    assert len(shared) < 20  # group commit: commits in flight together share a write
    limited = run(go(3))
    assert len(limited) >= 7  # 20 commits, at most 3 a write


def test_alerts_actions_and_kpis_survive_a_snapshot_and_a_restart(tmp_path):
    """The operations state (windowed KPI counters, the rule set, alerts, tasks and the
    actions in force) is in the snapshot and rebuilt from the log after it."""
    count = c.SubmitCycleCount((c.CountLine("S4", "A", 40),))

    async def first():
        server = await _seeded(tmp_path)
        engine = server.engine
        await engine.mutate_internal(c.ReceiveStock((c.ReceiptLine("S4", "A", 10),)), "in")
        await engine.mutate_internal(count, "count-1")  # 30 over: alert, task, sales hold
        assert await engine.checkpoint()
        rules = engine.ledger.ops.rules.rules
        await engine.mutate_internal(c.SetRules(rules, 1, "lead"), "rules-2")
        ledger = engine.ledger
        state = (ledger.checksum(), ledger.ops.fingerprint(),
                 ledger.kpis.report(engine.clock(), trend=True))
        await server.stop(0)
        return state, engine.clock()

    async def second(at):
        server = await _seeded(tmp_path)
        ledger = server.engine.ledger
        state = (ledger.checksum(), ledger.ops.fingerprint(), ledger.kpis.report(at, trend=True))
        await server.stop(0)
        return state, ledger

    before, at = run(first())
    after, ledger = run(second(at))
    assert after == before
    assert ledger.ops.rules.version == 2
    (alert,) = ledger.ops.alerts.values()
    assert alert.info.subject == "S4@A" and len(alert.action_ids) == 1


def test_kpi_subjects_forgotten_replay_from_a_snapshot_and_the_log_the_same(tmp_path):
    """Node B counted once, then nine days of event time later only A: B's counters are
    forgotten, by the server that ran the commands and by one replaying them from the
    snapshot before it; a snapshot of after, with the log after it, restores the same."""
    day = 86_400_000
    start = 1_800_000_000_000
    clock = [start]

    def count(*nodes: str) -> c.SubmitCycleCount:
        return c.SubmitCycleCount(tuple(c.CountLine("S1", node, 0) for node in nodes))

    def state(ledger: Ledger, at: int) -> tuple:
        kpis = ledger.kpis
        return (ledger.checksum(), ledger.ops.fingerprint(), kpis.newest_day,
                {key: [(r.index, r.value) for r in (w.hour, w.day, w.week)]
                 for key, w in kpis.counters.items()},
                kpis.subjects_of, kpis.report(at, trend=True))

    async def served(*steps: tuple[int, c.Command], checkpoint: bool = False,
                     at: int) -> tuple:
        server = await _seeded(tmp_path)
        engine = server.engine
        engine.clock = lambda: clock[0]
        for i, (time_ms, command) in enumerate(steps):
            clock[0] = time_ms
            await engine.mutate_internal(command, f"count-{time_ms}-{i}")
            if checkpoint and i == 0:
                assert await engine.checkpoint()
        if checkpoint and not steps:
            assert await engine.checkpoint()
        held = sorted(k[2] for k in engine.ledger.kpis.counters if k[1] == "node")
        result = state(engine.ledger, at), held
        await server.stop(0)
        return result

    later = start + 9 * day
    # A and B counted, a snapshot; nine days on, A alone (in the log after the snapshot).
    live, held = run(served((start, count("A", "B")), (later, count("A")), checkpoint=True,
                            at=later + day))
    assert held == ["A", "A"]  # count_lines and count_lines_accurate
    replayed, held = run(served(at=later + day))  # the snapshot, then the log replayed
    assert replayed == live and held == ["A", "A"]
    # A snapshot of after the forgetting, then a day on A again, in the log after it.
    run(served(checkpoint=True, at=later))
    live, _ = run(served((later + day, count("A")), at=later + 2 * day))
    restored, held = run(served(at=later + 2 * day))
    assert restored == live and held == ["A", "A"]


def test_order_state_in_snapshots_written_either_way_reads_back_the_same():
    # Order records, package states and smoothed demand are written as their fields in
    # order (their __reduce__); snapshots written before that hold pickle's default for
    # slotted dataclasses, and must still read: compiled, the default form makes each
    # empty through its __init__ and then sets every field (their __setstate__).
    ledger = Ledger()
    _two_package_order(ledger)
    state = (ledger.orders.orders, ledger.orders.packages, ledger.drawn_units,
             ledger.learned_demand)
    assert len(state[1]) == 2 and state[2] and state[3]
    compact = logcodec.dumps(state)
    default = _slotted_default(state, OrderRecord, PackageState, SmoothedDemand)
    assert compact != default and len(compact) < len(default)
    for data in (compact, default):
        back = logcodec.loads(data)
        assert back == state
        assert [type(x) for x in back[1].values()] == [PackageState] * 2
        record = back[0]["o1"]
        assert record.status == OrderStatus.ALLOCATED and record.package_ids == ["o1-P1",
                                                                                 "o1-P2"]
        assert {type(x) for x in back[2].values()} == {SmoothedDemand}


# ---- a reload while writes are in flight ---------------------------------------------------
def _receiving(qty: int) -> tuple[inv.ReceiveInventoryRequest, object]:
    return (inv.ReceiveInventoryRequest(request_id=f"in-{qty}", lines=[
        inv.ReceiptLine(sku_id="S", node_id="A", quantity=qty)]),
        lambda: c.ReceiveStock((c.ReceiptLine("S", "A", qty),)))


@pytest.mark.parametrize("slow", ["group window", "fsync"])
def test_a_reload_while_a_write_is_in_flight_loses_and_doubles_nothing(tmp_path, monkeypatch,
                                                                      slow):
    """A break that is not the store's (an answer that cannot be written) reloads the
    engine while an earlier call's commit waits in the group window, or while its fsync
    runs. The commit is written before the store is read again: the call is answered,
    the reloaded state holds it, and later commits follow it (no sequence number twice,
    nothing dropped at the next restart)."""
    from service.engine import Engine
    from service.store import Durability

    if slow == "fsync":
        from service import filestore

        real, slowed = os.fsync, {"on": False}

        def fsync(fd: int) -> None:
            if slowed["on"]:
                import time
                time.sleep(0.5)
            real(fd)

        monkeypatch.setattr(filestore.os, "fsync", fsync)
        store = FileEventStore(tmp_path)
    else:
        store = FileEventStore(tmp_path, Durability.GROUP, group_window_ms=500)

    def ok(_outcome: object) -> inv.ReceiveInventoryResponse:
        return inv.ReceiveInventoryResponse()

    def unwritable(_outcome: object) -> inv.ReceiveInventoryResponse:
        raise ValueError("cannot encode the answer")

    async def go() -> tuple[int, str, int, str]:
        engine = Engine(Settings(store="file"), store)
        await engine.start()
        await engine.mutate_internal(c.UpsertNodes((NodeSpec("A"),)), "n")
        await engine.mutate_internal(c.UpsertChannels((ChannelSpec("web"),)), "ch")
        await engine.mutate_internal(c.UpsertSkus((SkuSpec("S"),)), "s")
        if slow == "fsync":
            slowed["on"] = True
        first = asyncio.ensure_future(engine.mutate("ReceiveInventory", *_receiving(5), ok))
        await asyncio.sleep(0.05)  # (applied; its write waits, or runs)
        with pytest.raises(ValueError):
            await engine.mutate("ReceiveInventory", *_receiving(1), unwritable)
        while engine.broken:
            await asyncio.sleep(0.02)
        if slow == "fsync":
            slowed["on"] = False
        await asyncio.wait_for(first, 5)  # answered, not left waiting
        await engine.mutate("ReceiveInventory", *_receiving(7), ok)
        live = engine.ledger.quantity(0, 0, Bucket.AVAILABLE), engine.ledger.checksum()
        await store.close()
        again = Engine(Settings(store="file"), FileEventStore(tmp_path))
        await again.start()
        rebuilt = again.ledger.quantity(0, 0, Bucket.AVAILABLE), again.ledger.checksum()
        answered = {("ReceiveInventory", "in-5"), ("ReceiveInventory", "in-7")}
        assert answered <= set(again._answers)
        await again.store.close()
        return (*live, *rebuilt)

    live_qty, live_sum, rebuilt_qty, rebuilt_sum = run(go())
    assert live_qty == rebuilt_qty == 12 and live_sum == rebuilt_sum


def test_a_damaged_length_in_the_last_segment_refuses_to_start(tmp_path):
    """A record whose length field was damaged points past the end of the file, as an
    unfinished write's would; but whole records follow it, acknowledged ones: the store
    refuses to start rather than cut them off."""
    _state_after(tmp_path, 6)
    segment = _last_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    offset = 0
    for _ in range(3):
        _, offset = logcodec.load_record(bytes(data), offset)
    data[offset + 3] ^= 0x40  # (one bit of the fourth record's length)
    segment.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt, match="whole record"):
        _recover(tmp_path)
    assert segment.stat().st_size == len(data)  # nothing cut


def test_a_damaged_snapshot_with_the_log_it_covered_gone_refuses_to_start(tmp_path):
    """Publishing a snapshot deletes the segments the one before it covered: if it cannot be
    read, starting without it would serve a ledger without them. The store refuses to
    start."""
    async def go():
        server = await _seeded(tmp_path)
        api = InventoryServicer(server.engine)
        await api.ReceiveInventory(_receive("S1", "A", 42, "r"), _Context())
        assert await server.engine.checkpoint()
        await api.ReceiveInventory(_receive("S1", "A", 1, "s"), _Context())
        assert await server.engine.checkpoint()
        await server.stop(0)

    run(go())
    (snapshot,) = (tmp_path / "default").glob("snapshot-*.bin")
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 1
    snapshot.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt, match="no readable snapshot"):
        _recover(tmp_path)


def _commit(seq: int) -> Commit:
    return Commit((Event(seq, EventKind.RECEIVED, sku=0, node=0, from_bucket=Bucket.EXTERNAL,
                         to_bucket=Bucket.AVAILABLE, quantity=1, reference=f"r{seq}"),))


def test_a_second_store_on_a_directory_in_use_is_refused_until_the_first_closes(tmp_path):
    """One store, one writer: two would number their events apart, and a restart would keep
    one's acknowledged changes and drop the other's."""
    async def go():
        first, second = FileEventStore(tmp_path), FileEventStore(tmp_path)
        await first.open()
        await first.append(_commit(1))
        with pytest.raises(StoreUnavailable, match=f"in use by another allocd .*{os.getpid()}"):
            await second.open()
        await first.append(_commit(2))  # the first writes on
        await first.close()
        recovered = await second.open()
        assert [commit.last_seq for commit in recovered.commits] == [1, 2]
        await second.close()

    run(go())


def test_an_event_logged_twice_after_the_snapshot_refuses_to_start(tmp_path):
    async def go():
        store = FileEventStore(tmp_path)
        await store.open()
        for seq in (1, 2, 3):
            await store.append(_commit(seq))
        await store.close()
        with open(sorted(tmp_path.glob("wal-*.log"))[-1], "ab") as fh:  # a 2nd writer's event 2
            fh.write(logcodec.frame(logcodec.dumps(_commit(2))))
        with pytest.raises(StoreCorrupt, match="event 2 is logged twice"):
            await store.open()

    run(go())


@pytest.mark.parametrize("fails", ["write", "fsync"])
def test_a_failed_write_leaves_none_of_its_commits_in_the_log(tmp_path, monkeypatch, fails):
    """Every call of a failed write is answered UNAVAILABLE (nothing applied): so a reload
    must not find a record of it, though the disk took some of the bytes (it filled up
    part-way) or all of them (the fsync failed)."""
    from service import filestore

    real_write, real_fsync = os.write, os.fsync
    armed: list[int] = []

    def write(fd, data):
        if armed and fd == armed[0] and fails == "write":
            real_write(fd, bytes(data[: len(data) * 2 // 3]))  # whole records, and a torn one
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    def fsync(fd):
        if armed and fd == armed[0] and fails == "fsync":
            armed.clear()
            raise OSError(5, "Input/output error")
        return real_fsync(fd)

    async def go():
        store = FileEventStore(tmp_path, filestore.Durability.GROUP, group_window_ms=50)
        await store.open()
        await store.append(_commit(1))
        monkeypatch.setattr(filestore.os, "write", write)
        monkeypatch.setattr(filestore.os, "fsync", fsync)
        armed.append(store._file)
        answers = await asyncio.gather(*(store.append(_commit(seq)) for seq in (2, 3, 4)),
                                       return_exceptions=True)
        assert all(isinstance(a, StoreUnavailable) for a in answers), answers
        armed.clear()
        await store.close()
        recovered = await store.open()
        assert [commit.last_seq for commit in recovered.commits] == [1]
        await store.close()

    run(go())


@pytest.mark.parametrize("shards", [4, 16])
def test_verify_prints_the_server_s_checksum_for_any_shard_count(tmp_path, capsys, shards):
    """Before the first snapshot the store is replayed into a new ledger: laid out as the
    server's (its shard count), or its checksum never matches the server's."""
    from service.verify import verify

    async def go() -> str:
        server = await _seeded(tmp_path, shards=shards, checkpoint_every_events=10**9)
        api = InventoryServicer(server.engine)
        for i in range(6):
            await api.ReceiveInventory(_receive(f"S{i}", "A", 3 + i, f"v-{i}"), _Context())
        checksum = server.engine.ledger.checksum()
        await server.stop(0)
        return checksum

    checksum = run(go())
    assert not list((tmp_path / "default").glob("snapshot-*"))
    assert verify(tmp_path / "default", settings=Settings(shards=shards)) == 0
    assert f"checksum:     {checksum}" in capsys.readouterr().out


def test_a_snapshot_writer_forked_from_the_server_does_not_hold_its_directory_lock(tmp_path):
    """The lock is the open file's: a child forked to write a snapshot shares it, and a
    reload of the server's store while the child wrote found the directory "in use by
    another allocd" (itself). The child lets go of its copy (EventStore.forked), and the
    server releases the lock itself, so a reload in the moment before the child has let
    go (here held open on purpose) finds the directory free too."""
    import time as clock

    async def go():
        store = FileEventStore(tmp_path)
        await store.open()
        pid = os.fork()
        if pid == 0:  # as Engine.checkpoint's child, a moment before it lets go
            clock.sleep(1.0)
            store.forked()
            clock.sleep(0.5)
            os._exit(0)
        try:
            await store.open()  # a reload: close, then open (and lock) again
        finally:
            os.waitpid(pid, 0)
        await store.close()

    run(go())


async def _followed(engine, from_seq: int, until: int) -> list[int]:
    """The sequence numbers `engine.follow(from_seq)` gives, up to event `until`."""
    seqs: list[int] = []
    async for events in engine.follow(from_seq):
        seqs += [e.seq for e in events]
        if seqs[-1] >= until:
            return seqs
    return seqs


def test_a_watcher_resumes_from_before_the_snapshot_after_a_restart(tmp_path):
    """After a restart the engine holds in memory only the events since the snapshot: a
    watcher resuming from before it was refused, and lost what it had not read. The log
    since the snapshot before the newest is kept, and read for it."""
    async def first():
        server = await _seeded(tmp_path)
        api = InventoryServicer(server.engine)
        await api.ReceiveInventory(_receive("S1", "A", 3, "a"), _Context())
        assert await server.engine.checkpoint()
        earlier = server.engine.snapshot_seq
        for i in range(4):
            await api.ReceiveInventory(_receive("S2", "A", 1 + i, f"b{i}"), _Context())
        assert await server.engine.checkpoint()
        await api.ReceiveInventory(_receive("S3", "B", 5, "c"), _Context())
        last = server.engine.ledger.last_seq
        await server.stop(0)
        return earlier, last

    async def second(earlier: int, last: int):
        server = await _seeded(tmp_path)
        engine = server.engine
        try:
            assert engine._recent_first > earlier + 1  # (memory holds less than asked)
            seqs = await asyncio.wait_for(_followed(engine, earlier + 1, last), 30)
            assert seqs == list(range(earlier + 1, last + 1))
            # Before the earlier snapshot: no longer held (one event, or none at all).
            with pytest.raises(InvalidArgument, match="older than the events kept"):
                await asyncio.wait_for(_followed(engine, earlier, last), 30)
        finally:
            await server.stop(0)

    run(second(*run(first())))


def test_a_watcher_behind_the_events_in_memory_is_served_from_the_log(tmp_path):
    """A watcher slower than the events kept in memory (watch_buffer_events) was refused;
    it reads on from the log."""
    async def go():
        server = await _seeded(tmp_path, watch_buffer_events=3)
        api = InventoryServicer(server.engine)
        try:
            for i in range(12):
                await api.ReceiveInventory(_receive("S2", "A", 1 + i, f"r{i}"), _Context())
            last = server.engine.ledger.last_seq
            assert server.engine._recent_first > 2
            assert await asyncio.wait_for(_followed(server.engine, 1, last), 30) == list(
                range(1, last + 1))
        finally:
            await server.stop(0)

    run(go())


def test_a_watcher_reading_on_through_the_log_starts_near_where_it_left_off(tmp_path,
                                                                           monkeypatch):
    """Each read of the log for a watcher decoded its segment from the top: catching up
    through a segment of a million events took ~120 reads of up to seven seconds each.
    Where records start is marked as they are passed, and the next read starts there."""
    from service import filestore

    async def go():
        store = FileEventStore(tmp_path)
        await store.open()
        for seq in range(1, 2001):
            await store.append(_commit(seq))
        first = await store.history(1, 1500)
        decoded = []
        real = filestore.logcodec.load_record
        monkeypatch.setattr(filestore.logcodec, "load_record",
                            lambda *a: (decoded.append(1), real(*a))[1])
        later = await store.history(1400, 50)
        await store.close()
        return first, later, len(decoded)

    first, later, decoded = run(go())
    assert [e.seq for e in first] == list(range(1, 1501))
    assert [e.seq for e in later] == list(range(1400, 1450))
    assert decoded <= 64 + 50  # from the nearest mark, not from event 1
