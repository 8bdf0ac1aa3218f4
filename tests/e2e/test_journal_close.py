"""Journal entries past their retention leave the server's memory through its own closing
(into the store): GetJournal and VerifyJournal answer through gRPC as before, the event
stream carries JOURNAL_CLOSED, and /metrics counts the entries closed and kept."""

from __future__ import annotations

import time
import urllib.request

from allocd.v1 import finance_service_pb2 as fpb
from allocd.v1 import finance_service_pb2_grpc as fgrpc
from allocd.v1 import types_pb2 as types
from prometheus_client.parser import text_string_to_metric_families

from core.finance import Account
from tests.e2e.conftest import RPC_TIMEOUT_S, RUNNING, first_watched
from tests.e2e.test_metrics import _free_port

DAY_MS = 86_400_000


def _journal(finance, account: int = 0) -> list[fpb.JournalEntry]:
    entries, number = [], 1
    while number:
        page = finance.GetJournal(fpb.GetJournalRequest(account=account, from_number=number,
                                                        page_size=5), timeout=RPC_TIMEOUT_S)
        entries.extend(page.entries)
        number = page.next_number
    return entries


def test_entries_past_their_retention_are_closed_into_the_store_and_read_back(
        server_factory):
    metrics_port = _free_port()
    api = server_factory(journal_retention_days=30.0, journal_close_interval_s=0.2,
                         metrics_port=metrics_port)
    engine = RUNNING[int(api.target.rsplit(":", 1)[1])].engine
    finance = fgrpc.FinanceServiceStub(api.channel)
    today = engine.clock() // DAY_MS * DAY_MS
    engine.clock = lambda: today
    cat = api.seed()
    for k, sku in enumerate(cat.skus):
        api.receive(sku, cat.nodes[0], 5 + k)
    engine.clock = lambda: today + 40 * DAY_MS
    api.receive(cat.skus[0], cat.nodes[1], 7)  # (posted now: kept)
    before = _journal(finance)
    inventory = _journal(finance, int(Account.INVENTORY))
    time.sleep(0.5)  # (a close may have run already: the journal reads the same either way)

    deadline = time.monotonic() + 20
    books = engine.ledger.books
    while time.monotonic() < deadline and books.closed_through < len(before) - 1:
        time.sleep(0.1)
        books = engine.ledger.books
    assert books.closed_through == len(before) - 1 and len(books.entries) == 1
    assert _journal(finance) == before
    assert _journal(finance, int(Account.INVENTORY)) == inventory
    verified = finance.VerifyJournal(fpb.VerifyJournalRequest(), timeout=RPC_TIMEOUT_S)
    assert verified.intact and verified.entries == len(before)
    assert verified.closed_entries == len(before) - 1

    assert first_watched(api, types.EVENT_KIND_JOURNAL_CLOSED).startswith("1-")
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                timeout=RPC_TIMEOUT_S) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    gauges = {name: families[name].samples[0].value
              for name in ("allocd_journal_entries", "allocd_journal_entries_closed")}
    assert gauges == {"allocd_journal_entries": 1.0,
                      "allocd_journal_entries_closed": float(len(before) - 1)}
