"""The audit log records every mutating call, accepted or refused, and detects edits."""

from __future__ import annotations

import asyncio
import json

import pytest
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import order_service_pb2 as opb
from hypothesis import given, settings
from hypothesis import strategies as st

from service.audit import _CANONICAL, AuditLog, canonical_body, verify_lines
from service.config import Settings
from service.server import AllocdServer
from service.servicers.inventory import InventoryServicer
from service.servicers.orders import OrderServicer
from service.verify import verify


class _Context:
    def __init__(self, actor: str) -> None:
        self.actor = actor

    def invocation_metadata(self):
        return (("x-allocd-actor", self.actor), ("authorization", "Bearer SECRET-TOKEN"))

    def peer(self):
        return "ipv4:127.0.0.1:1"

    async def abort(self, code, details):
        raise RuntimeError(f"{code}: {details}")

    def add_done_callback(self, callback):
        pass  # (called when the call ends: these calls end as their handlers return)


def test_mutating_calls_are_audited_and_an_edit_is_detected(tmp_path, capsys):
    async def go():
        server = AllocdServer(Settings(port=0, data_dir=str(tmp_path), log_level="WARNING",
                                       demo=True, demo_skus=20))
        await server.start()
        api = InventoryServicer(server.engine)
        await api.ReceiveInventory(inv.ReceiveInventoryRequest(
            request_id="good-1", lines=[inv.ReceiptLine(sku_id="SKU-000001", node_id="IND1",
                                                       quantity=3)]), _Context("alice"))
        with pytest.raises(RuntimeError, match="NOT_FOUND"):
            await api.ReceiveInventory(inv.ReceiveInventoryRequest(
                request_id="bad-1", lines=[inv.ReceiptLine(sku_id="NOPE", node_id="IND1",
                                                          quantity=3)]), _Context("bob"))
        await api.GetLedgerSummary(inv.GetLedgerSummaryRequest(), _Context("carol"))
        await server.stop(0)

    asyncio.run(go())
    path = tmp_path / "default" / "audit.log"
    lines = path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["who"], e["what"], e["request_id"], e["outcome"]) for e in entries] == [
        ("alice", "ReceiveInventory", "good-1", "OK"),
        ("bob", "ReceiveInventory", "bad-1", "NOT_FOUND"),
    ]  # reads are not audited
    assert "SECRET-TOKEN" not in path.read_text()
    assert verify_lines(lines) == (True, 0)
    edited = json.loads(lines[0])
    edited["who"] = "mallory"
    path.write_text("\n".join([json.dumps(edited, sort_keys=True), *lines[1:]]) + "\n")
    assert verify_lines(path.read_text().splitlines()) == (False, 1)
    assert verify(tmp_path / "default") == 1
    assert "CHANGED at line 1" in capsys.readouterr().out
    # A torn last line (the disk filled, the machine stopped) is an unfinished write, not
    # an edit: the server cuts it when it starts.
    path.write_text("\n".join(lines) + '\n{"hash":"0a1b","n":3,"outc')
    assert verify(tmp_path / "default") == 0
    assert "hash chain intact; a torn last line 3" in capsys.readouterr().out


def test_every_stream_message_is_audited_with_its_own_outcome(tmp_path):
    """AllocateStream mutates as AllocateOrder does: each message is an entry of its own,
    accepted or refused, under the stream's caller."""
    async def go():
        server = AllocdServer(Settings(port=0, data_dir=str(tmp_path), log_level="WARNING",
                                       demo=True, demo_skus=20))
        await server.start()
        api = OrderServicer(server.engine)

        def message(request_id: str, order_id: str, sku: str) -> opb.AllocateStreamRequest:
            return opb.AllocateStreamRequest(request_id=request_id, order=opb.Order(
                order_id=order_id, channel_id="web", ship_to=opb.ShipTo(postal_code="10001"),
                lines=[opb.OrderLine(sku_id=sku, quantity=1)]))

        async def requests():
            yield message("s-1", "o-1", "SKU-000001")
            yield message("s-2", "o-2", "NOPE")
            yield message("s-3", "o-3", "SKU-000002")
            yield message("s-1", "o-1", "SKU-000001")  # a retry: the first answer again

        # (an answer may come as the response's bytes, which the server sends as they are)
        answers = [a if isinstance(a, opb.AllocateStreamResponse)
                   else opb.AllocateStreamResponse.FromString(a)
                   async for a in api.AllocateStream(requests(), _Context("dora"))]
        assert [a.error_code for a in answers] == [0, 5, 0, 0]  # 5: NOT_FOUND
        await server.stop(0)

    asyncio.run(go())
    lines = (tmp_path / "default" / "audit.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    streamed = [(e["who"], e["request_id"], e["outcome"]) for e in entries
                if e["what"] == "AllocateStream"]
    # (in the order the answers were settled: a refusal at once, the others once durable)
    assert sorted(streamed) == [("dora", "s-1", "OK"), ("dora", "s-1", "OK"),
                                ("dora", "s-2", "NOT_FOUND"), ("dora", "s-3", "OK")]
    assert verify_lines(lines) == (True, 0)


def test_a_reoptimisation_is_audited_as_any_mutating_call(tmp_path):
    """Reoptimize changes orders (a server-streaming call, with progress): an entry, as
    for every mutating call; a watch of the events (a read) none."""
    async def go():
        server = AllocdServer(Settings(port=0, data_dir=str(tmp_path), log_level="WARNING",
                                       demo=True, demo_skus=20))
        await server.start()
        api = OrderServicer(server.engine)
        answers = [a async for a in api.Reoptimize(opb.ReoptimizeRequest(
            request_id="reopt-1", time_limit_seconds=1), _Context("olga"))]
        assert answers
        await server.stop(0)

    asyncio.run(go())
    entries = [json.loads(line)
               for line in (tmp_path / "default" / "audit.log").read_text().splitlines()]
    assert [(e["who"], e["what"], e["request_id"], e["outcome"]) for e in entries] == [
        ("olga", "Reoptimize", "reopt-1", "OK")]


@settings(deadline=None)
@given(st.integers(0, 2**63), st.integers(0, 2**63), st.text(), st.text(), st.text(),
       st.text(), st.text())
def test_an_entry_body_is_the_canonical_json_of_its_fields(n, time_ms, who, what, request_id,
                                                          outcome, prev):
    """Entries are written without building their JSON from a dict: the text must be the
    very one json's canonical encoding gives (verify_lines recomputes it that way)."""
    entry = {"n": n, "time_ms": time_ms, "who": who, "what": what, "request_id": request_id,
             "outcome": outcome, "prev": prev}
    assert canonical_body(n, time_ms, who, what, request_id, outcome, prev) == (
        _CANONICAL.encode(entry))


def test_entries_written_to_a_file_verify_and_chain(tmp_path):
    log = AuditLog(tmp_path / "audit.log")
    names = ["ann", 'quo"te', "\u00fcn\u00efcode\\", "tab\there\u2028"]
    for i, who in enumerate(names):
        log.record(1_000 + i, who, "allocd.v1.X/Y", f"r-{i}", "OK")
    log.close()
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert verify_lines(lines) == (True, 0)
    assert [json.loads(line)["who"] for line in lines] == names
    reopened = AuditLog(tmp_path / "audit.log")
    reopened.record(2_000, "bob", "allocd.v1.X/Y", "r-9", "OK")
    reopened.close()
    assert verify_lines((tmp_path / "audit.log").read_text().splitlines()) == (True, 0)


def _full_disk(monkeypatch, log: AuditLog, takes_part: bool) -> list[bool]:
    """The audit file's disk full (taking part of a write first, if `takes_part`) while the
    flag returned holds True."""
    import os

    from service import audit

    real_write = os.write
    full = [True]

    def write(fd, data):
        if full[0] and fd == log._file:
            if takes_part:
                real_write(fd, bytes(data[: len(data) // 2]))  # part of a line
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(audit.os, "write", write)
    return full


def test_a_full_disk_delays_audit_entries_and_loses_none(tmp_path, monkeypatch):
    """The call an entry records is done (its change durable): a disk that cannot take the
    line must not turn its answer into an error, nor leave a torn line behind. The entries
    wait, in order, and are written once the disk has room."""
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.record(1, "ann", "X/Y", "r-1", "OK")
    full = _full_disk(monkeypatch, log, takes_part=True)
    log.record(2, "bob", "X/Y", "r-2", "OK")  # does not raise
    log.record(3, "cy", "X/Y", "r-3", "ABORTED")
    assert log.waiting == 2
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 1 and lines[0].endswith("\n")  # no torn line left
    full[0] = False
    log.record(4, "dee", "X/Y", "r-4", "OK")
    log.close()
    lines = path.read_text().splitlines()
    assert verify_lines(lines) == (True, 0)
    assert [json.loads(line)["request_id"] for line in lines] == ["r-1", "r-2", "r-3", "r-4"]


def test_a_torn_last_line_is_cut_at_start_and_the_chain_goes_on(tmp_path):
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    for i in range(3):
        log.record(i, "ann", "X/Y", f"r-{i}", "OK")
    log.close()
    with open(path, "ab") as fh:
        fh.write(b'{"hash":"0123","n":4,"outco')  # the machine stopped mid-line
    reopened = AuditLog(path)
    reopened.record(9, "bob", "X/Y", "r-9", "OK")
    reopened.close()
    lines = path.read_text().splitlines()
    assert verify_lines(lines) == (True, 0)
    assert [json.loads(line)["request_id"] for line in lines] == ["r-0", "r-1", "r-2", "r-9"]


def test_entries_waiting_for_the_disk_are_bounded_and_the_chain_stays_whole(tmp_path,
                                                                           monkeypatch):
    from service import audit

    monkeypatch.setattr(audit, "MAX_WAITING", 3)
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.record(0, "ann", "X/Y", "r-0", "OK")
    full = _full_disk(monkeypatch, log, takes_part=False)
    for i in range(1, 6):
        log.record(i, "ann", "X/Y", f"r-{i}", "OK")
    assert (log.waiting, log.dropped) == (3, 2)  # memory bounded, the rest counted
    full[0] = False
    log.close()  # the waiting ones written on the way out
    lines = path.read_text().splitlines()
    assert verify_lines(lines) == (True, 0)
    assert [json.loads(line)["request_id"] for line in lines] == ["r-0", "r-1", "r-2", "r-3"]


def test_the_audit_file_is_synced_after_lines_are_written_and_not_again_without(
        tmp_path, monkeypatch):
    """Written lines sat in the page cache: a power cut took the last of the record of
    calls whose changes were durable. The file is synced (fdatasync) when lines were
    written since the last sync, by the server every audit_sync_interval_s."""
    import service.audit as audit_module

    synced: list[int] = []
    real = audit_module.os.fdatasync
    monkeypatch.setattr(audit_module.os, "fdatasync",
                        lambda fd: (synced.append(fd), real(fd))[1])
    log = AuditLog(tmp_path / "audit.log")
    assert not log.sync()  # nothing written yet
    log.record(1, "alice", "ReceiveInventory", "r1", "OK")
    assert log.sync() and len(synced) == 1
    assert not log.sync() and len(synced) == 1  # nothing new
    log.record(2, "alice", "ReceiveInventory", "r2", "OK")
    log.close()  # a last sync as it closes
    assert len(synced) == 2

    async def go():
        server = AllocdServer(Settings(port=0, data_dir=str(tmp_path / "srv"),
                                       log_level="WARNING", demo=True, demo_skus=20,
                                       audit_sync_interval_s=0.05))
        await server.start()
        try:
            before = len(synced)
            api = InventoryServicer(server.engine)
            await api.ReceiveInventory(inv.ReceiveInventoryRequest(
                request_id="good-1", lines=[inv.ReceiptLine(
                    sku_id="SKU-000001", node_id="IND1", quantity=3)]), _Context("alice"))
            for _ in range(400):  # (synced within an interval; 20 s at most)
                if len(synced) > before:
                    break
                await asyncio.sleep(0.05)
            assert len(synced) > before
        finally:
            await server.stop(0)

    asyncio.run(go())
