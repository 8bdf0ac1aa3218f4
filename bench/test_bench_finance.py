"""Finance queries on a long journal (200,000 entries, a month of postings), each against
the walk it replaced:

- GetAccountActivity from the books' daily totals, against summing every line of every
  entry, as it did;
- a page of one account's journal (GetJournal with an account) from that account's entry
  numbers, against scanning the journal for them from the start;
- one step of VerifyJournal (1,000 entries; the loop is free between steps), against
  checking the whole chain in one go, as it did.

They run on the server's event loop, so whatever one takes, every call in flight waits
out.

    python -m pytest bench/test_bench_finance.py --benchmark-only
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from core.finance import DAY_MS, Account, Books, JournalEntry, JournalLine
from service.servicers.finance import VERIFY_STEP

ENTRIES = 200_000


def walked_activity(books: Books, period_days: int, account: Account | None
                    ) -> list[tuple[int, Account, int, int, int]]:
    """The activity as GetAccountActivity computed it: every entry, every line."""
    period_ms = period_days * DAY_MS
    totals: dict[tuple[int, Account], list[int]] = {}
    for entry in books.entries:
        start = entry.time_ms - entry.time_ms % period_ms
        for line in entry.lines:
            if account is not None and line.account != account:
                continue
            row = totals.setdefault((start, line.account), [0, 0, 0])
            row[0] += line.debit
            row[1] += line.credit
            row[2] += 1
    return [(start, acct, d, cr, n) for (start, acct), (d, cr, n) in sorted(totals.items())]


def scanned_page(books: Books, account: Account, from_number: int, size: int
                 ) -> list[JournalEntry]:
    """A page of an account's entries as GetJournal found them: scanning from the start."""
    page, number = [], from_number
    while number <= len(books.entries) and len(page) < size:
        entry = books.entries[number - 1]
        number += 1
        if any(x.account == account for x in entry.lines):
            page.append(entry)
    return page


@pytest.fixture(scope="module")
def long_journal() -> Books:
    """Shipments (COGS, inventory, receivables, revenue) with a rare landed cost among
    them: the account a controller pages through is often the rare one."""
    books = Books()
    inv, cogs = Account.INVENTORY, Account.COST_OF_GOODS_SOLD
    for k in range(ENTRIES):
        event = SimpleNamespace(seq=k + 1, time_ms=1_790_000_000_000 + k * 13_000)
        if k % 1000 == 999:
            lines = (JournalLine(inv, debit=500), JournalLine(Account.ACCRUED_LANDED_COST,
                                                              credit=500))
        else:
            lines = (JournalLine(cogs, debit=7), JournalLine(inv, credit=7),
                     JournalLine(Account.ACCOUNTS_RECEIVABLE, debit=20),
                     JournalLine(Account.REVENUE, credit=20))
        books._post(event, "shipment", f"P{k}", k % 500, lines)
    return books


def test_account_activity_kept(benchmark, long_journal):
    rows = benchmark(long_journal.activity, 7, None)
    assert rows == walked_activity(long_journal, 7, None)


def test_account_activity_walked(benchmark, long_journal):
    benchmark.pedantic(walked_activity, (long_journal, 7, None), rounds=3)


def test_account_page_kept(benchmark, long_journal):
    numbers, _ = benchmark(long_journal.entry_numbers, Account.ACCRUED_LANDED_COST,
                           150_000, 50)
    assert numbers == [e.number for e in scanned_page(
        long_journal, Account.ACCRUED_LANDED_COST, 150_000, 50)]


def test_account_page_scanned(benchmark, long_journal):
    benchmark.pedantic(scanned_page, (long_journal, Account.ACCRUED_LANDED_COST, 150_000,
                                      50), rounds=3)


def test_verify_one_step(benchmark, long_journal):
    def one_step() -> object:
        return next(long_journal.verify_steps(VERIFY_STEP))

    assert benchmark(one_step) is None


def test_verify_whole_chain(benchmark, long_journal):
    assert benchmark.pedantic(long_journal.verify, rounds=2) == (True, 0)
