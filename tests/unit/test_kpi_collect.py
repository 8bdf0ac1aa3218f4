"""Counting a run of events at once (KpiBook.collect ... flush, as the ledger does) leaves
every window exactly as counting each event as it comes, whatever the times."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from core.kpis import HOUR_MS, KpiBook

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
