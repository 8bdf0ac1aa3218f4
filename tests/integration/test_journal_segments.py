"""Journal entries past their retention are closed into the store, in each kind of
store: GetJournal and VerifyJournal answer as before (the closed entries read back from
the store), a restart from a snapshot keeps only the entries not closed in memory, and a
segment changed or lost in the store is reported (DATA_LOSS, `allocd verify`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from allocd.v1 import finance_service_pb2 as fpb
from allocd.v1 import inventory_service_pb2 as inv

from core import commands as c
from core.finance import Account
from core.model import ChannelSpec, NodeSpec, SkuSpec
from service.config import Settings
from service.server import AllocdServer
from service.servicers.finance import FinanceServicer
from service.servicers.inventory import InventoryServicer
from service.verify import verify

DAY_MS = 86_400_000
T0 = 1_800_000_000_000


class _Context:
    async def abort(self, code, details):
        raise RuntimeError(f"{code}: {details}")


def _settings(kind: str, tmp_path: Path, redis_url: str) -> Settings:
    values: dict[str, object] = {
        "port": 0, "log_level": "WARNING", "sweep_interval_s": 3600.0,
        "checkpoint_every_s": 3600.0, "journal_retention_days": 1.0,
        "journal_close_interval_s": 0.0, "data_dir": str(tmp_path)}
    if kind == "redis":
        values["redis_url"] = redis_url
    else:
        values["store"] = kind
    return Settings(**values)


async def _server(settings: Settings, now: list[int]) -> AllocdServer:
    server = AllocdServer(settings)
    await server.start()
    server.engine.clock = lambda: now[0]
    if server.engine.ledger.catalog.n_skus == 0:
        for i, command in enumerate((c.UpsertNodes((NodeSpec("A"),)),
                                     c.UpsertChannels((ChannelSpec("web"),)),
                                     c.UpsertSkus(tuple(SkuSpec(f"S{i}", unit_cost_micros=10 ** 6)
                                                        for i in range(3))))):
            await server.engine.mutate_internal(command, f"seed-{i}")
    return server


async def _journal(finance: FinanceServicer, account: int = 0, size: int = 3) -> list:
    """Every entry, page by page."""
    entries, number = [], 1
    while number:
        page = await finance.GetJournal(fpb.GetJournalRequest(
            account=account, from_number=number, page_size=size), _Context())
        entries.extend(page.entries)
        number = page.next_number
    return entries


@pytest.fixture(params=["memory", "file", "redis"])
def kind(request) -> str:
    return request.param


def test_closed_entries_read_back_the_same_and_survive_a_restart(kind, tmp_path, request):
    redis_url = (request.getfixturevalue("redis_server").url if kind == "redis" else "")
    settings = _settings(kind, tmp_path, redis_url)
    now = [T0]

    async def first():
        server = await _server(settings, now)
        engine = server.engine
        stock, finance = InventoryServicer(engine), FinanceServicer(engine)
        for day in range(4):
            now[0] = T0 + day * DAY_MS
            for k in range(3):
                await stock.ReceiveInventory(inv.ReceiveInventoryRequest(
                    request_id=f"r{day}-{k}", lines=[inv.ReceiptLine(
                        sku_id=f"S{k}", node_id="A", quantity=1 + day + k)]), _Context())
        before = await _journal(finance)
        by_account = await _journal(finance, int(Account.INVENTORY), 2)
        verified = await finance.VerifyJournal(fpb.VerifyJournalRequest(), _Context())
        assert len(before) == 12 and verified.intact and verified.closed_entries == 0

        # On day 3, days 0 and 1 are more than a day old: 6 entries, in segments of at
        # most 4.
        now[0] = T0 + 3 * DAY_MS
        assert await engine.close_journal_due(limit=4) == 6
        assert await engine.close_journal_due(limit=4) == 0  # (nothing more is due)
        books = engine.ledger.books
        assert [(first, last) for first, last, _ in books.closed] == [(1, 4), (5, 6)]
        assert [e.number for e in books.entries] == [7, 8, 9, 10, 11, 12]
        assert await _journal(finance) == before
        assert await _journal(finance, int(Account.INVENTORY), 2) == by_account
        verified = await finance.VerifyJournal(fpb.VerifyJournalRequest(), _Context())
        assert (verified.intact, verified.entries, verified.closed_entries) == (True, 12, 6)
        balance = await finance.GetTrialBalance(fpb.GetTrialBalanceRequest(), _Context())
        if engine.store.supports_snapshots:
            assert await engine.checkpoint()
        await server.stop(0)
        return before, balance

    async def second():
        server = await _server(settings, now)
        finance = FinanceServicer(server.engine)
        kept = [e.number for e in server.engine.ledger.books.entries]
        journal = await _journal(finance)
        balance = await finance.GetTrialBalance(fpb.GetTrialBalanceRequest(), _Context())
        verified = await finance.VerifyJournal(fpb.VerifyJournalRequest(), _Context())
        await server.stop(0)
        return kept, journal, balance, verified

    before, balance = asyncio.run(first())
    if kind == "memory":
        return  # (nothing outlives the process)
    kept, journal, balance_after, verified = asyncio.run(second())
    assert kept == [7, 8, 9, 10, 11, 12] and journal == before and balance_after == balance
    assert verified.intact and verified.closed_entries == 6
    if kind == "file":
        assert verify(tmp_path / "default", settings=settings) == 0


def test_a_segment_changed_or_lost_in_the_store_is_reported(tmp_path, capsys):
    settings = _settings("file", tmp_path, "")
    now = [T0]

    async def run(change):
        server = await _server(settings, now)
        engine = server.engine
        stock, finance = InventoryServicer(engine), FinanceServicer(engine)
        if not engine.ledger.books.closed:
            for k in range(3):
                await stock.ReceiveInventory(inv.ReceiveInventoryRequest(
                    request_id=f"r{k}", lines=[inv.ReceiptLine(
                        sku_id="S0", node_id="A", quantity=1 + k)]), _Context())
            now[0] = T0 + 2 * DAY_MS
            assert await engine.close_journal_due() == 3
            assert await engine.checkpoint()
        change()
        engine._segments.clear()  # (as after a restart: read from the store again)
        errors = []
        for call in (lambda: _journal(finance),
                     lambda: finance.VerifyJournal(fpb.VerifyJournalRequest(), _Context())):
            try:
                await call()
            except RuntimeError as error:
                errors.append(str(error))
        await server.stop(0)
        return errors

    segment = tmp_path / "default" / "journal" / f"{1:020d}.seg"
    assert asyncio.run(run(lambda: None)) == []
    assert verify(tmp_path / "default", settings=settings) == 0
    original = segment.read_bytes()
    middle = len(original) // 2
    changed = original[:middle] + bytes([original[middle] ^ 1]) + original[middle + 1:]
    errors = asyncio.run(run(lambda: segment.write_bytes(changed)))
    assert len(errors) == 2 and all("DATA_LOSS" in e and "not the one closed" in e
                                    for e in errors)
    capsys.readouterr()
    assert verify(tmp_path / "default", settings=settings) == 1
    assert "CHANGED: the closed segment from entry 1" in capsys.readouterr().out
    errors = asyncio.run(run(segment.unlink))
    assert len(errors) == 2 and all("DATA_LOSS" in e and "no journal segment 1" in e
                                    for e in errors)
    assert verify(tmp_path / "default", settings=settings) == 1
    assert "MISSING the closed segment from entry 1" in capsys.readouterr().out
