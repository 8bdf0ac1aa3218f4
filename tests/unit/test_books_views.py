"""The books' kept views (daily totals per account, each account's entry numbers)
against the journal walked entry by entry, as the queries did before them; the hash
chain checked in steps against the chain checked in one go; and books from a snapshot
written before the views, which rebuild them."""

from __future__ import annotations

import asyncio
import pickle
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.test_bench_finance import walked_activity
from core.finance import DAY_MS, GENESIS, Account, Books, JournalLine
from service.logcodec import dumps, loads

ACCOUNTS = list(Account)

# A posting: (time in ms, [(account, amount)...] debited, the total credited to one account).
postings = st.lists(
    st.tuples(st.integers(0, 40 * DAY_MS),
              st.lists(st.tuples(st.sampled_from(ACCOUNTS), st.integers(1, 10**9)),
                       min_size=1, max_size=3),
              st.sampled_from(ACCOUNTS)),
    max_size=60)


def posted(rows: list[tuple[int, list[tuple[Account, int]], Account]]) -> Books:
    books = Books()
    for seq, (time_ms, debits, credit_account) in enumerate(rows, start=1):
        lines = [JournalLine(account, debit=amount) for account, amount in debits]
        lines.append(JournalLine(credit_account, credit=sum(a for _, a in debits)))
        books._post(SimpleNamespace(seq=seq, time_ms=time_ms), "test", "", -1, lines)
    return books


def walked_numbers(books: Books, account: Account, from_number: int) -> list[int]:
    return [e.number for e in books.entries
            if e.number >= from_number and any(x.account == account for x in e.lines)]


@settings(max_examples=200, deadline=None)
@given(postings, st.integers(1, 45), st.sampled_from([None, *ACCOUNTS]))
def test_activity_from_daily_totals_is_the_journal_walked(rows, period_days, account):
    books = posted(rows)
    assert books.activity(period_days, account) == walked_activity(books, period_days, account)


@settings(max_examples=200, deadline=None)
@given(postings, st.sampled_from(ACCOUNTS), st.integers(0, 70), st.integers(1, 7))
def test_an_accounts_entries_page_by_page_are_the_journal_filtered(rows, account, start,
                                                                   size):
    books = posted(rows)
    expected = walked_numbers(books, account, start)
    page, after = books.entry_numbers(account, start, size)
    assert page == expected[:size]
    assert after == (expected[size] if len(expected) > size else 0)
    # Following next numbers reads every entry once, in order.
    seen, number = [], start
    while True:
        page, number = books.entry_numbers(account, number, size)
        seen += page
        if not number:
            break
    assert seen == expected


@settings(max_examples=100, deadline=None)
@given(postings, st.integers(1, 8), st.data())
def test_the_chain_checked_in_steps_finds_what_the_whole_check_finds(rows, chunk, data):
    books = posted(rows)
    steps = list(books.verify_steps(chunk))
    assert steps[-1] == books.verify() == (True, 0)
    assert all(step is None for step in steps[:-1])
    assert len(steps) == max(1, -(-len(books.entries) // chunk))
    if books.entries:
        bad = data.draw(st.integers(0, len(books.entries) - 1))
        original = books.entries[bad]
        books.entries[bad] = SimpleNamespace(  # a memo changed after the fact
            number=original.number, prev_hash=original.prev_hash, hash=original.hash,
            body=lambda: b"edited")
        assert books.verify() == (False, bad + 1)
        assert list(books.verify_steps(chunk))[-1] == (False, bad + 1)


@settings(max_examples=50, deadline=None)
@given(postings)
def test_books_from_a_snapshot_without_the_views_rebuild_them(rows):
    books = posted(rows)
    again = pickle.loads(pickle.dumps(books))
    assert (again.days, again.numbers_by_account) == (books.days, books.numbers_by_account)
    stored = loads(dumps(books))  # what the store's unpickler (an allow-list) reads back
    assert (stored.days, stored.numbers_by_account) == (books.days, books.numbers_by_account)
    state = {name: getattr(books, name) for name in Books.__slots__
             if name not in ("days", "numbers_by_account")}
    older = Books.__new__(Books)
    older.__setstate__((None, state))  # pickle's form for a class with slots
    assert older.days == books.days
    assert older.numbers_by_account == books.numbers_by_account
    assert older.activity(1, None) == walked_activity(books, 1, None)


def journal(entries: int) -> Books:
    return posted([(k * 1000, [(Account.INVENTORY, 5)], Account.ACCOUNTS_PAYABLE)
                   for k in range(entries)])


def verify_call(books: Books, monkeypatch) -> tuple[SimpleNamespace, Any]:
    """The servicer's VerifyJournal over `books` in steps of 10 entries, and its engine."""
    from service.servicers import finance as servicer

    monkeypatch.setattr(servicer, "VERIFY_STEP", 10)
    engine = SimpleNamespace(ledger=SimpleNamespace(books=books))
    finance = servicer.FinanceServicer.__new__(servicer.FinanceServicer)
    finance.engine = engine  # type: ignore[assignment]
    return engine, lambda: servicer.FinanceServicer.VerifyJournal.__wrapped__(
        finance, servicer.pb.VerifyJournalRequest(), None)


def test_verify_journal_lets_other_calls_run_between_its_steps(monkeypatch):
    """The servicer checks a long journal in steps, the loop free between them."""
    _, verify_journal = verify_call(journal(50), monkeypatch)
    turns = []

    async def other_calls() -> None:
        while True:
            turns.append(len(turns))
            await asyncio.sleep(0)

    async def main():
        other = asyncio.ensure_future(other_calls())
        await asyncio.sleep(0)
        before = len(turns)
        response = await verify_journal()
        other.cancel()
        return response, len(turns) - before

    response, turns_during = asyncio.run(main())
    assert response.intact and response.entries == 50 and response.last_hash != GENESIS
    assert turns_during >= 4  # 5 steps of 10: the loop ran other work between them


def test_verify_journal_checks_the_state_reloaded_while_it_ran(monkeypatch):
    """A reload from the store (after a change that could not be answered) replaces the
    ledger: a check under way answers for the reloaded journal, not the discarded one."""
    reloaded = journal(20)
    engine, verify_journal = verify_call(journal(30), monkeypatch)

    async def reload_soon() -> None:
        await asyncio.sleep(0)
        engine.ledger = SimpleNamespace(books=reloaded)

    async def main():
        reload = asyncio.ensure_future(reload_soon())
        response = await verify_journal()
        await reload
        return response

    response = asyncio.run(main())
    assert response.intact
    assert (response.entries, response.last_hash) == (20, reloaded.last_hash)


@settings(max_examples=50, deadline=None)
@given(postings.filter(bool), st.data())
def test_views_that_differ_from_the_entries_are_found(rows, data):
    """`allocd verify` checks the kept views against the entries (the hash chain covers
    the entries alone): a changed daily total or a lost entry number is found."""
    books = posted(rows)
    assert books.views_agree()
    if data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(books.days)))
        books.days[key][0] += 1
    else:
        account = data.draw(st.sampled_from(sorted(books.numbers_by_account)))
        books.numbers_by_account[account].pop()
    assert not books.views_agree()
