"""Closing journal entries into the store: the books let the oldest entries go once the
store holds them (JOURNAL_CLOSED), and nothing else changes. The balances, the daily
totals and the accounts' entry lists stay; the entries closed and those kept chain on as
one journal; numbering goes on; snapshots and replays agree."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import commands as c
from core.errors import FailedPrecondition, InvalidArgument, InvariantViolation
from core.finance import (
    GENESIS,
    JournalClosed,
    chain_break,
    decode_segment,
    encode_segment,
    segment_digest,
)
from core.model import AdjustReason, Bucket
from core.operations import execute
from service import logcodec
from tests.unit.test_finance_costs import _ledger

DAY_MS = 86_400_000


def _close(ledger, store: dict[int, bytes], before_ms: int, limit: int, now_ms: int) -> list:
    """What the server does: the oldest entries before `before_ms` to the store, then the
    event. Returns the events."""
    entries = ledger.books.closable(before_ms, limit)
    if not entries:
        return []
    data = encode_segment(entries)
    store[entries[0].number] = data
    outcome = execute(ledger, c.CloseJournal(entries[0].number, entries[-1].number,
                                             entries[-1].hash, segment_digest(data)), now_ms)
    return list(outcome.events)


def _all_entries(ledger, store: dict[int, bytes]) -> list:
    closed = [e for first, _, _ in ledger.books.closed for e in decode_segment(store[first])]
    return closed + list(ledger.books.entries)


def _posted(entry) -> tuple:
    return entry.number, entry.time_ms, entry.kind, entry.memo, entry.sku, entry.lines


_STEPS = st.lists(st.one_of(
    st.tuples(st.just("receive"), st.sampled_from(["a", "b"]), st.integers(1, 50)),
    st.tuples(st.just("adjust"), st.sampled_from(["a", "b"]), st.integers(-5, 5)),
    st.tuples(st.just("close"), st.integers(0, 4), st.integers(1, 6)),
    st.tuples(st.just("day"), st.integers(1, 3), st.just(0))), max_size=40)


@settings(max_examples=60, deadline=None)
@given(_STEPS)
def test_closing_entries_changes_nothing_but_where_they_are_kept(steps):
    """The same commands with and without closes between them: the same journal (closed
    segments read back, then the entries kept), balances, views and next number; the
    chain verifies; a snapshot and a replay of the log give the books they were."""
    ledger, log = _ledger()
    plain, _ = _ledger()
    store: dict[int, bytes] = {}
    now = 10 * DAY_MS
    for kind, sku, amount in steps:
        if kind == "day":
            now += sku * DAY_MS
            continue
        if kind == "close":
            log.extend(_close(ledger, store, now - sku * DAY_MS, amount, now))
            continue
        if kind == "receive":
            command: object = c.ReceiveStock((c.ReceiptLine(sku, "n0", amount),))
        else:
            held = ledger.quantity(ledger.catalog.sku(sku), 0, Bucket.AVAILABLE)
            if amount == 0 or held + amount < 0:
                continue
            command = c.AdjustStock((c.AdjustLine(
                sku, "n0", amount, AdjustReason.FOUND if amount > 0 else AdjustReason.DAMAGE),))
        log.extend(execute(ledger, command, now).events)
        execute(plain, command, now)
    books, reference = ledger.books, plain.books
    # (The same but for the events' sequence numbers, and so the hashes: the closes are
    # events too.)
    assert [_posted(e) for e in _all_entries(ledger, store)] == [
        _posted(e) for e in reference.entries]
    assert books.count == reference.count == len(reference.entries)
    assert books.trial_balance() == reference.trial_balance()
    assert (books.days, books.numbers_by_account) == (reference.days,
                                                      reference.numbers_by_account)
    assert books.verify() == (True, 0)
    assert books.views_agree(e for first, _, _ in books.closed
                             for e in decode_segment(store[first]))
    previous = GENESIS
    for first, last, digest in books.closed:
        assert segment_digest(store[first]) == digest
        segment = decode_segment(store[first])
        assert chain_break(segment, first, previous) == 0 and segment[-1].number == last
        previous = segment[-1].hash
    assert previous == books.closed_hash
    for number in range(1, books.count + 1):
        kept = books.entry(number)
        segment = books.segment_of(number)
        assert (kept is None) == (segment is not None) == (number <= books.closed_through)
    back = logcodec.loads(logcodec.dumps(books))
    assert (back.entries, back.closed, back.closed_hash, back.count) == (
        books.entries, books.closed, books.closed_hash, books.count)
    replayed, _ = _ledger()
    replayed_log = [e for e in log if e.seq > replayed.last_seq]
    replayed.apply(replayed_log, replay=True)
    assert (replayed.books.entries, replayed.books.closed) == (books.entries, books.closed)
    assert replayed.checksum() == ledger.checksum()


def test_a_close_is_refused_for_entries_that_are_not_the_oldest_kept_or_changed():
    ledger, _ = _ledger()
    for k in range(3):
        execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 1 + k),)), DAY_MS)
    books = ledger.books
    first, second = books.entry(1), books.entry(2)
    assert first is not None and second is not None
    digest = "0" * 32
    with pytest.raises(FailedPrecondition):  # not the oldest kept
        execute(ledger, c.CloseJournal(2, 2, second.hash, digest), DAY_MS)
    with pytest.raises(FailedPrecondition):  # entry 2 read was another one
        execute(ledger, c.CloseJournal(1, 2, first.hash, digest), DAY_MS)
    with pytest.raises(InvalidArgument):  # past the last
        execute(ledger, c.CloseJournal(1, 9, first.hash, digest), DAY_MS)
    with pytest.raises(InvalidArgument):
        execute(ledger, c.CloseJournal(1, 1, first.hash, "x"), DAY_MS)
    assert books.closed_through == 0 and len(books.entries) == 3
    execute(ledger, c.CloseJournal(1, 2, second.hash, digest), DAY_MS)
    assert books.closed == [(1, 2, digest)] and [e.number for e in books.entries] == [3]
    with pytest.raises(InvariantViolation):  # (as a replay of a wrong log would)
        books.close(JournalClosed(1, 1, first.hash, digest))


def test_the_chain_of_the_kept_entries_is_checked_from_the_last_closed_one():
    ledger, _ = _ledger()
    for k in range(4):
        execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 1 + k),)), DAY_MS)
    store: dict[int, bytes] = {}
    _close(ledger, store, 2 * DAY_MS, 2, DAY_MS)
    books = ledger.books
    assert books.verify() == (True, 0)
    books.closed_hash = "f" * 32  # the kept entries no longer chain on from the closed
    assert books.verify() == (False, 3)


def test_a_segment_that_is_not_one_is_refused_and_a_changed_one_breaks_the_chain():
    ledger, _ = _ledger()
    for k in range(3):
        execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 1 + k),)), DAY_MS)
    entries = list(ledger.books.entries)
    data = encode_segment(entries)
    assert decode_segment(data) == entries
    with pytest.raises(ValueError):
        decode_segment(b"not a segment")
    forged = pickle.loads(pickle.dumps(entries))
    forged[1] = forged[1].__class__(*[getattr(forged[1], f) for f in (
        "number", "seq", "time_ms", "kind", "memo")], forged[1].sku + 1, *[
        getattr(forged[1], f) for f in ("lines", "prev_hash", "hash")])
    back = decode_segment(encode_segment(forged))
    assert chain_break(back, 1, GENESIS) == 2
