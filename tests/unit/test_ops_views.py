"""The operations book's kept views (the tasks not done, the actions in force) against
its records walked one by one, after any sequence of their events; and a book from a
snapshot written before the views, which rebuilds them."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.alerts import (
    ActionInfo,
    ActionSpec,
    ActionType,
    ActionUndo,
    AlertAck,
    AlertInfo,
    OpsBook,
    RuleKind,
    TaskDone,
    TaskInfo,
    TaskType,
)
from core.model import EventKind

steps = st.lists(st.tuples(st.sampled_from(["task", "done", "act", "reverse", "alert", "ack"]),
                           st.integers(0, 30), st.sampled_from(["A", "B", "C"])),
                 max_size=80)


def event(kind: EventKind, payload: object, time_ms: int) -> SimpleNamespace:
    return SimpleNamespace(kind=kind, payload=payload, time_ms=time_ms, node=0, channel=0)


def close_one(book: OpsBook, records: dict[str, Any], still_open: Callable[[Any], bool],
              kind: EventKind, payload: Callable[[str, str, str], object], k: int,
              t: int) -> None:
    """Settle the k-th (modulo) of the records still open, if any: (id, actor, note)."""
    waiting = [i for i, r in records.items() if still_open(r)]
    if waiting:
        book.apply(None, event(kind, payload(waiting[k % len(waiting)], "p", ""), t))


def run(book: OpsBook, program: list[tuple[str, int, str]]) -> None:
    for t, (step, k, sku) in enumerate(program):
        if step == "task":
            book.apply(None, event(EventKind.TASK_OPENED, TaskInfo(
                f"TK-{t}", TaskType.CYCLE_COUNT, "", sku, ""), t))
        elif step == "done":
            close_one(book, book.tasks, lambda r: r.done is None, EventKind.TASK_COMPLETED,
                      TaskDone, k, t)
        elif step == "alert":
            book.apply(None, event(EventKind.ALERT_RAISED, AlertInfo(
                f"AL-{t}", "count-variance", 1, RuleKind.COUNT_VARIANCE, f"{sku}{t}", 1.0,
                1.0, "day", ""), t))
        elif step == "ack":
            close_one(book, book.alerts, lambda r: r.ack is None,
                      EventKind.ALERT_ACKNOWLEDGED, AlertAck, k, t)
        elif step == "act":
            book.apply(None, event(EventKind.ACTION_APPLIED, ActionInfo(
                f"AC-{t}", ActionSpec(ActionType.RESTRICT_SKU, node_id="N1", sku_id=sku),
                -1, "p"), t))
        else:
            close_one(book, book.actions, lambda r: r.active, EventKind.ACTION_REVERSED,
                      ActionUndo, k, t)


def assert_views_match(book: OpsBook) -> None:
    assert book.open_task_records() == [r for r in book.tasks.values() if r.done is None]
    assert book.active_action_records() == [r for r in book.actions.values() if r.active]
    assert book.open_alert_records() == [r for r in book.alerts.values() if r.ack is None]
    for places, records in ((book.open_task_places, book.tasks),
                            (book.active_action_places, book.actions),
                            (book.open_alert_places, book.alerts)):
        ids = list(records)
        assert all(ids[place] == record_id for record_id, place in places.items())
    for sku in "ABCD":
        walked = next((r for r in book.actions.values() if r.active
                       and r.info.spec.action_type == ActionType.RESTRICT_SKU
                       and r.info.spec.subject == f"{sku}@N1"), None)
        assert book.active_action(ActionType.RESTRICT_SKU, f"{sku}@N1") is walked


@settings(max_examples=300, deadline=None)
@given(steps)
def test_open_tasks_and_active_actions_are_the_records_walked(program):
    book = OpsBook()
    run(book, program)
    assert_views_match(book)


@settings(max_examples=100, deadline=None)
@given(steps)
def test_a_book_from_an_older_snapshot_rebuilds_its_views(program):
    book = OpsBook()
    run(book, program)
    kept = ("open_alert_places", "open_task_places", "active_action_places")
    state = {name: getattr(book, name) for name in OpsBook.__slots__ if name not in kept}
    older = OpsBook.__new__(OpsBook)
    older.__setstate__((None, state))  # pickle's form for a class with slots
    assert_views_match(older)
    assert [getattr(older, name) for name in kept] == [getattr(book, name) for name in kept]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10**6), st.booleans()), max_size=260))
def test_the_dashboard_lists_open_alerts_then_the_latest_acknowledged(alerts):
    """The page's alerts as sorting them all gave them: open first, each group newest
    first, at most MAX_ROWS. Raised in time order (the wall clock), a tick or more apart
    (alerts raised in the same millisecond may show in either order)."""
    from core.ledger import Ledger
    from service.dashboard import MAX_ROWS, overview

    ledger = Ledger()
    book = ledger.ops
    created = 0
    for k, (gap, acknowledged) in enumerate(alerts):
        created += gap
        info = AlertInfo(f"AL-{k}", "count-variance", 1, RuleKind.COUNT_VARIANCE,
                         f"S{k}", 1.0, 1.0, "day", "")
        book.apply(ledger, event(EventKind.ALERT_RAISED, info, created))
        if acknowledged:
            book.apply(ledger, event(EventKind.ALERT_ACKNOWLEDGED,
                                     AlertAck(info.alert_id, "p", ""), created))
    every = sorted(book.alerts.values(), key=lambda r: (r.ack is not None, -r.created_ms))
    shown = overview(ledger, created)["alerts"]
    assert [a["alert_id"] for a in shown] == [r.info.alert_id for r in every[:MAX_ROWS]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ask", "approve", "reject"]), st.integers(0, 20),
                          st.integers(1, 2)), max_size=60))
def test_pending_approvals_are_the_undecided_ones_walked(program):
    """Asked for, approved (some need two people) or rejected in any order: the pending
    ones the book keeps are those walking every approval finds undecided, in the order
    asked, after an older snapshot too."""
    from core.approvals import ApprovalBook, ApprovalDecision, ApprovalRecord, ApprovalRequest

    book = ApprovalBook()
    for t, (step, k, required) in enumerate(program):
        if step == "ask":
            book.ask(ApprovalRecord(ApprovalRequest(f"AP-{t}", "refund", "R", 1, "p", "",
                                                    required=required), t))
            continue
        undecided = [i for i, r in book.by_id.items() if r.decision is None]
        if undecided:
            book.record(ApprovalDecision(undecided[k % len(undecided)], step == "approve",
                                         f"person-{t}", "finance", ""))
    walked = [r for r in book.by_id.values() if r.decision is None]
    assert book.pending() == walked
    ids = list(book.by_id)
    assert all(ids[place] == i for i, place in book.pending_places.items())
    older = ApprovalBook.__new__(ApprovalBook)
    older.__setstate__((None, {"by_id": book.by_id}))  # written before pending_places
    assert older.pending() == walked and older.pending_places == book.pending_places
