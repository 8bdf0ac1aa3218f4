"""The audit log records every mutating call, accepted or refused, and detects edits."""

from __future__ import annotations

import asyncio
import json

import pytest
from allocd.v1 import inventory_service_pb2 as inv
from hypothesis import given
from hypothesis import strategies as st

from service.audit import _CANONICAL, AuditLog, canonical_body, verify_lines
from service.config import Settings
from service.server import AllocdServer
from service.servicers.inventory import InventoryServicer
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
