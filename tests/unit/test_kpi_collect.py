"""Counting a run of events at once (KpiBook.collect ... flush, as the ledger does) leaves
every window exactly as counting each event as it comes, whatever the times within the
week or so the windows see (an observation older than that may be dropped by one and
kept, never read, by the other). Subjects whose every window has passed are forgotten,
and no reading changes for it."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from core.kpis import (
    HOUR_MS,
    SCOPES,
    SLOTS,
    WINDOWS,
    KpiBook,
    Windowed,
    forgotten_before_ms,
)
from core.orders import DAY_MS

bumps = st.lists(st.tuples(
    st.sampled_from(["orders_decided", "units_allocated", "decision_cost_micros"]),
    st.sampled_from(["", "channel", "node"]),
    st.sampled_from(["web", "mkt"]),
    # now, within the hour, a slot or two back, or a week back (out of every window)
    st.sampled_from([0, 1, 59_999, 60_000, 2 * HOUR_MS, 7 * 24 * HOUR_MS]).map(
        lambda back: 10**12 - back),
    st.integers(0, 10**9)), max_size=40)


def windows(book: KpiBook) -> dict:
    return {key: [(ring.index, ring.value) for ring in (w.hour, w.day, w.week)]
            for key, w in book.counters.items()}


@settings(max_examples=300, deadline=None)
@given(st.lists(bumps, max_size=4))
def test_collected_runs_count_as_single_bumps(runs):
    one_by_one, collected = KpiBook(), KpiBook()
    for run in runs:
        collected.collect()
        for counter, scope, subject, time_ms, amount in run:
            one_by_one.bump1(counter, time_ms, amount, scope, subject)
            collected.bump1(counter, time_ms, amount, scope, subject)
            one_by_one.bump(counter, time_ms, amount, type=subject)
            collected.bump(counter, time_ms, amount, type=subject)
        collected.flush()
    assert windows(collected) == windows(one_by_one)
    assert list(collected.counters) == list(one_by_one.counters)
    assert collected.subjects_of == one_by_one.subjects_of


def test_what_is_held_is_not_state():
    book = KpiBook()
    book.bump1("orders_decided", 10**12, 1, "channel", "web")
    book.collect()
    copy = pickle.loads(pickle.dumps(book))
    assert copy.pending is None and list(copy.counters) == list(book.counters)


# ---- subjects whose every window has passed are forgotten ----------------------------------
def held(book: KpiBook, scope: str) -> list[tuple[str, str, str]]:
    return sorted(key for key in book.counters if key[1] == scope)


def test_a_subject_out_of_every_window_is_forgotten_and_reads_as_zeros():
    book = KpiBook()
    start = 10**12
    skus = [f"S{i}" for i in range(1000)]
    book.collect()
    for i, sku in enumerate(skus):
        book.bump("units_shipped", start + i, 1, sku=sku, category="apparel")
    book.flush()
    assert len(held(book, "sku")) == 1000
    # Six days on, still in the week window: nothing to forget.
    book.bump("units_shipped", start + 6 * DAY_MS, 1, sku="fresh", category="apparel")
    assert len(held(book, "sku")) == 1001
    assert book.total("units_shipped", "sku", "S5", "week", start + 6 * DAY_MS) == 1
    # Nine days on (the week, and the day before the newest observation's, passed): the
    # thousand SKUs are gone, read as zeros, and are listed as before.
    later = start + 9 * DAY_MS
    book.bump("units_shipped", later, 2, sku="fresh", category="apparel")
    assert held(book, "sku") == [("units_shipped", "sku", "fresh")]
    assert held(book, "category") == [("units_shipped", "category", "apparel")]
    assert book.subjects("units_shipped", "sku") == sorted([*skus, "fresh"])
    for now in (later - DAY_MS, later, later + 3 * DAY_MS):
        for window in WINDOWS:
            assert book.total("units_shipped", "sku", "S0", window, now) == 0.0
            assert book.total("units_returned", "sku", "S0", window, now) == 0.0
        rows = book.report(now, names=("return_rate",), scopes=("sku",),
                           subjects=("S0", "S999", "fresh", "never-seen"), trend=True)
        assert [(r.window, r.subject) for r in rows] == [
            (w, s) for w in WINDOWS for s in ("S0", "S999", "fresh")]
        for row in rows:
            if row.subject != "fresh":
                assert (row.value, row.numerator, row.denominator) == (0.0, 0.0, 0.0)
                assert row.trend == (0.0,) * SLOTS
    assert book.total("units_shipped", "sku", "fresh", "week", later) == 3
    assert book.total("units_shipped", "all", "", "week", later) == 3
    # Observed again, a forgotten SKU counts from nothing.
    book.bump("units_shipped", later + 1, 4, sku="S7", category="apparel")
    assert book.total("units_shipped", "sku", "S7", "week", later + 1) == 4
    assert len(held(book, "sku")) == 2


def test_what_a_snapshot_written_before_forgetting_holds_still_reads():
    book = KpiBook()
    book.bump("units_shipped", 10**12, 1, sku="old", category="c")
    state = book.__getstate__()
    del state["newest_day"]  # (as written before subjects were forgotten)
    older = KpiBook.__new__(KpiBook)
    older.__setstate__(state)
    assert older.newest_day == -1 and held(older, "sku") == [("units_shipped", "sku", "old")]
    older.bump("units_shipped", 10**12 + 9 * DAY_MS, 1, sku="new", category="c")
    assert held(older, "sku") == [("units_shipped", "sku", "new")]
    assert older.newest_day == (10**12 + 9 * DAY_MS) // DAY_MS


def never_forgetting(observations: list[tuple[str, str, str, int, int]]) -> KpiBook:
    """Every observation added to its windows as they always were: nothing forgotten."""
    book = KpiBook()
    for counter, scope, subject, time_ms, amount in observations:
        for key in ((counter, "all", ""), *([(counter, scope, subject)] if scope else [])):
            windowed = book.counters.get(key)
            if windowed is None:
                windowed = book.counters[key] = Windowed()
                book.subjects_of.setdefault((key[0], key[1]), set()).add(key[2])
            windowed.add(time_ms, amount)
    return book


def series(book: KpiBook, key: tuple[str, str, str], window: str, now: int) -> list[float]:
    windowed = book.counters.get(key)
    return windowed.rings[window].series(now) if windowed else [0.0] * SLOTS


# Runs of events days apart (0 to 5 days after the run before), each event up to ten days
# before its run's time or a day after: subjects come, go quiet, come back; some events
# arrive later than a week after their time.
spread_runs = st.lists(st.tuples(
    st.integers(0, 5),
    st.lists(st.tuples(
        st.sampled_from([("units_shipped", "sku"), ("units_returned", "sku"),
                         ("units_shipped", "category"), ("count_lines", "node"),
                         ("count_lines_accurate", "node"), ("exceptions", "type"),
                         ("exceptions", "")]),
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.integers(-HOUR_MS, HOUR_MS), st.integers(-10 * DAY_MS, DAY_MS)),
        st.integers(1, 9)), max_size=8)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(spread_runs, st.integers(0, 10 * DAY_MS))
def test_forgetting_changes_no_reading_from_the_day_before_the_newest_on(runs, ahead):
    """Against a book that forgets nothing: every report (every KPI, window, scope and
    subject, with the trend) and every counter read at any time from the start of the day
    before the newest observation's day on is the same; and the book holds no subject all
    of whose observations are out of those windows."""
    book = KpiBook()
    seen: list[tuple[str, str, str, int, int]] = []
    day = 0
    for days_on, run in runs:
        day += days_on
        book.collect()
        for (counter, scope), subject, jitter, amount in run:
            time_ms = 10**12 + day * DAY_MS + jitter
            book.bump1(counter, time_ms, amount, scope, subject)
            seen.append((counter, scope, subject, time_ms, amount))
        book.flush()
        if not seen:
            continue
        reference = never_forgetting(seen)
        newest = max(t for *_, t, _ in seen)
        assert book.newest_day == newest // DAY_MS
        assert book.subjects_of == reference.subjects_of
        floor = forgotten_before_ms(book.newest_day)
        for key, windowed in book.counters.items():
            assert key[1] == "all" or max(windowed.week.index) >= floor // (7 * DAY_MS // SLOTS)
        first = (newest // DAY_MS - 1) * DAY_MS
        for now in (first, newest, newest + ahead):
            assert book.report(now, scopes=SCOPES, trend=True) == \
                reference.report(now, scopes=SCOPES, trend=True)
            for key in reference.counters:
                for window in WINDOWS:
                    assert book.total(*key, window, now) == reference.total(*key, window, now)
                    assert series(book, key, window, now) == series(reference, key, window, now)
