"""A commit's events in the log: allocations written as columns, read back event for event
(test_orders_stateful checks every workflow's commits; these, what it cannot reach)."""

from __future__ import annotations

import copyreg
import dataclasses
import io
import pickle

import pytest

from core import commands as c
from core import orders
from core.exceptions import ExceptionInfo
from core.ledger import Ledger, LedgerSettings
from core.model import ChannelSpec, EventKind, NodeSpec, SkuSpec
from core.network import SlaTier
from core.operations import execute
from core.orders import Decision, OrderLineSpec, OrderSpec, events_from_columns
from service.logcodec import dumps, loads
from service.store import ColumnsCommit, Commit, IdempotencyRecord
from tests.unit.test_orders_stateful import NETWORK, NOW


def _ledger() -> Ledger:
    ledger = Ledger(LedgerSettings(n_shards=2))
    for command in (c.UpsertNodes((NodeSpec("n0", latitude=40.0, longitude=-75.0),
                                   NodeSpec("n1", latitude=34.0, longitude=-118.0))),
                    c.UpsertChannels((ChannelSpec("web"),)),
                    c.UpsertSkus((SkuSpec("a", weight_lb=1.0), SkuSpec("b", weight_lb=2.0))),
                    c.SetNetwork(dataclasses.replace(NETWORK,
                                                     node_costs=NETWORK.node_costs[:2])),
                    c.ReceiveStock((c.ReceiptLine("a", "n0", 6), c.ReceiptLine("b", "n1", 2)))):
        execute(ledger, command, NOW)
    return ledger


def _joined_allocation() -> tuple[Ledger, tuple]:
    """Two calls answered together: one order with coordinates, one partly backordered."""
    ledger = _ledger()
    first = OrderSpec("o-1", "web", SlaTier.PREMIUM,
                      (OrderLineSpec("1", "a", 2), OrderLineSpec("2", "b", 1)),
                      latitude=40.7128, longitude=-74.006, fraud_score=0.125,
                      customer_id="Åsa Öberg")
    second = OrderSpec("o-2", "web", SlaTier.STANDARD, (OrderLineSpec("1", "b", 5),),
                       postal_code="10001")
    outcome = execute(ledger, c.AllocateOrders((first, second), request_ids=("call-a", "call-b")),
                      NOW, "joined")
    return ledger, outcome.events


def _same(a: tuple, b: tuple) -> bool:
    return [repr(e.__reduce__()) for e in a] == [repr(e.__reduce__()) for e in b]


def test_an_allocation_commit_reads_back_event_for_event():
    _, events = _joined_allocation()
    kinds = {e.kind for e in events}
    assert {EventKind.ORDER_RECEIVED, EventKind.ORDER_ALLOCATED,
            EventKind.ORDER_UNITS_ALLOCATED, EventKind.EXCEPTION_RAISED} <= kinds
    assert {e.request_id for e in events} == {"call-a", "call-b"}
    answer = IdempotencyRecord("AllocateOrder", "call-a", b"\x01" * 20, b"answer")
    commit = Commit(events, (answer,))
    assert commit.__reduce__()[0] is ColumnsCommit
    back = loads(dumps(commit))
    assert type(back) is Commit
    assert back.idempotency == (answer,)
    assert _same(back.events, events)
    received = [e.payload for e in back.events if e.kind == EventKind.ORDER_RECEIVED]
    assert type(received[0].latitude) is float and received[0].customer_id == "Åsa Öberg"
    raised = [e.payload for e in back.events if e.kind == EventKind.EXCEPTION_RAISED]
    assert raised and all(type(p) is ExceptionInfo for p in raised)


def test_a_commit_the_columns_cannot_hold_is_written_event_by_event():
    ledger, _ = _joined_allocation()
    cancelled = execute(ledger, c.CancelOrder("o-1"), NOW, "cancel").events
    commit = Commit(cancelled)
    assert commit.__reduce__()[0] is Commit  # (a cancellation's record is not in columns)
    assert _same(loads(dumps(commit)).events, cancelled)
    spec = OrderSpec("o-3", "web", SlaTier.PREMIUM, (OrderLineSpec("1", "a", 1),),
                     latitude=40, longitude=-74)  # ints where floats belong: kept as they are
    received = execute(ledger, c.AllocateOrders((spec,)), NOW, "ints").events
    assert Commit(received).__reduce__()[0] is Commit
    back = loads(dumps(Commit(received))).events
    assert _same(back, received) and type(back[0].payload.latitude) is int


def _layout_1(events: tuple) -> tuple:
    """The events' columns as layout 1 wrote them: every event's sequence number, time and
    reference, and the payload's code in the flags' bits from 2 up."""
    ints, floats, strs = [len(events)], [], []
    request_id = ""
    for i, e in enumerate(events):
        code = {type(None): 0, OrderSpec: 1, Decision: 2, ExceptionInfo: 3}[type(e.payload)]
        extended = (e.due_ms, e.reason, e.amount, e.counted, e.expected) != (0, 0, 0, -1, -1)
        same = i > 0 and e.request_id == request_id
        ints += [code << 2 | extended | same << 1, int(e.kind), e.sku, e.node,
                 int(e.from_bucket), int(e.to_bucket), e.quantity, e.channel, e.seq, e.time_ms]
        strs.append(e.reference)
        if not same:
            request_id = e.request_id
            strs.append(request_id)
        if extended:
            ints += [e.due_ms, e.reason, e.amount, e.counted, e.expected]
        if code == 1:
            orders._put_spec(e.payload, ints, floats, strs)
        elif code == 2:
            orders._put_decision(e.payload, e.reference, ints, strs)
        elif code == 3:
            ints.append(int(e.payload.exception_type))
            strs += [e.payload.order_id, e.payload.detail, e.payload.reference]
    return 1, ints, floats, strs


def test_events_share_what_they_repeat_and_layout_1_still_reads():
    """Layout 2 writes an event's sequence number, time and reference only when they are
    not the previous event's next number, time and reference; layout 1 wrote them all."""
    _, events = _joined_allocation()
    columns = orders.event_columns(events)
    assert columns[0] == 2
    old = _layout_1(events)
    assert len(columns[1]) == len(old[1]) - 2 * (len(events) - 1)  # (one time, one seq)
    assert len(columns[3]) < len(old[3])  # (an order's events share its id)
    assert _same(events_from_columns(columns), events)

    class Before(pickle.Pickler):  # a commit as layout 1 wrote it to the log
        def reducer_override(self, obj):
            if type(obj) is Commit:
                return ColumnsCommit, (old, obj.idempotency)
            return NotImplemented

    buffer = io.BytesIO()
    Before(buffer, protocol=5).dump(Commit(events))
    assert b"ColumnsCommit" in buffer.getvalue()
    assert _same(loads(buffer.getvalue()).events, events)


def test_a_log_written_before_the_columns_still_reads():
    _, events = _joined_allocation()
    commit = Commit(events)

    class Before(pickle.Pickler):  # pickle's default form for the commit, as logs held it
        def reducer_override(self, obj):
            if type(obj) is Commit:
                return copyreg.__newobj__, (Commit,), obj.__getstate__()
            return NotImplemented

    buffer = io.BytesIO()
    Before(buffer, protocol=5).dump(commit)
    assert b"ColumnsCommit" not in buffer.getvalue()
    assert _same(loads(buffer.getvalue()).events, events)


def test_answers_are_written_as_their_fields_and_the_older_form_still_reads():
    answers = (IdempotencyRecord("AllocateStream", "s-1", b"\x02" * 20, b"\x0a\x03s-1"),
               IdempotencyRecord("AllocateStream", "s-2", b"\x03" * 20, b""))
    assert answers[0].__reduce__() == (IdempotencyRecord, ("AllocateStream", "s-1",
                                                            b"\x02" * 20, b"\x0a\x03s-1"))
    assert loads(dumps(Commit((), answers))).idempotency == answers

    class Before(pickle.Pickler):  # the dataclass's own form, as logs held it
        def reducer_override(self, obj):
            if type(obj) is IdempotencyRecord:
                return copyreg.__newobj__, (IdempotencyRecord,), obj.__getstate__()
            return NotImplemented

    buffer = io.BytesIO()
    Before(buffer, protocol=5).dump(Commit((), answers))
    assert loads(buffer.getvalue()).idempotency == answers


def test_columns_of_an_unknown_layout_are_refused():
    _, events = _joined_allocation()
    _, (columns, _) = Commit(events).__reduce__()
    with pytest.raises(ValueError, match="version 7"):
        events_from_columns((7, *columns[1:]))
