"""Inbound stock that will not come: a purchase cancelled or closed short leaves IN_TRANSIT,
promises stop counting on it, and what is later received under the reference is valued at
the purchase's own cost for the units still expected."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from core import commands as c
from core.availability import available_to_sell, promise_schedule
from core.errors import FailedPrecondition, InvalidArgument, NotFound
from core.exceptions import ExceptionType, Resolution
from core.finance import Account
from core.model import Bucket, EventKind
from core.operations import execute
from core.orders import OptionKind, OrderStatus
from tests.unit.test_finance_costs import NOW, UNIT, _balanced, _ledger, _run
from tests.unit.test_orders_stateful import NOW as ORDERS_NOW
from tests.unit.test_reopt import _ledger as reopt_ledger
from tests.unit.test_reopt import _order as reopt_order

DAY_MS = 86_400_000


def _promised(ledger, sku: int, node: int) -> list[int]:
    """What can be promised of `sku` at `node` now and as inbound stock arrives."""
    table = available_to_sell(ledger, np.array([sku]), np.array([node]), -1)
    return [step.quantity for step in promise_schedule(ledger, table, 0, -1, NOW)]


def _in_transit(ledger, sku: str, node: str) -> int:
    cat = ledger.catalog
    return int(ledger.buckets(cat.sku(sku), cat.node(node))[Bucket.IN_TRANSIT])


def test_part_of_a_line_is_cancelled_and_the_rest_is_still_expected():
    ledger, log = _ledger()
    _run(ledger, log, c.ExpectInbound("PO1", (
        c.InboundLine("a", "n0", 10, NOW + DAY_MS), c.InboundLine("b", "n1", 4, NOW + DAY_MS))))
    outcome = execute(ledger, c.CancelInbound("PO1", (c.StockLine("a", "n0", 6),)),
                      NOW)
    log.extend(outcome.events)
    (event,) = outcome.events
    assert (event.kind, event.from_bucket, event.to_bucket, event.quantity, event.reference) == (
        EventKind.INBOUND_CANCELLED, Bucket.IN_TRANSIT, Bucket.EXTERNAL, 6, "PO1")
    assert (_in_transit(ledger, "a", "n0"), _in_transit(ledger, "b", "n1")) == (4, 4)
    a, n0 = ledger.catalog.sku("a"), ledger.catalog.node("n0")
    assert ledger.inbound[("PO1", a, n0)].remaining == 4
    _run(ledger, log, c.ReceiveStock((c.ReceiptLine("a", "n0", 4, inbound_reference="PO1"),)))
    assert ("PO1", a, n0) not in ledger.inbound
    _balanced(ledger, log)


def test_a_reference_cancelled_whole_takes_every_line_and_every_promise_it_made():
    ledger, log = _ledger()
    a, n0 = ledger.catalog.sku("a"), ledger.catalog.node("n0")
    _run(ledger, log,
         c.ReceiveStock((c.ReceiptLine("a", "n0", 2),)),
         c.ExpectInbound("PO1", (c.InboundLine("a", "n0", 5, NOW + DAY_MS),
                                 c.InboundLine("a", "n1", 3, NOW + 2 * DAY_MS),
                                 c.InboundLine("b", "n0", 7, NOW + DAY_MS))),
         c.ExpectInbound("PO2", (c.InboundLine("a", "n0", 1, NOW + 3 * DAY_MS),)))
    assert _promised(ledger, a, n0) == [2, 7, 8]
    _run(ledger, log, c.ReceiveStock((c.ReceiptLine("a", "n1", 1, inbound_reference="PO1"),)))
    outcome = execute(ledger, c.CancelInbound("PO1"), NOW)
    log.extend(outcome.events)
    assert sorted((ledger.catalog.sku_ids[e.sku], ledger.catalog.nodes[e.node].node_id,
                   e.quantity) for e in outcome.events) == [
        ("a", "n0", 5), ("a", "n1", 2), ("b", "n0", 7)]
    assert [k for k in ledger.inbound] == [("PO2", a, n0)]  # another purchase stays
    assert _promised(ledger, a, n0) == [2, 3]
    assert (_in_transit(ledger, "a", "n0"), _in_transit(ledger, "a", "n1"),
            _in_transit(ledger, "b", "n0")) == (1, 0, 0)
    with pytest.raises(NotFound):  # nothing left under it
        execute(ledger, c.CancelInbound("PO1"), NOW)
    _balanced(ledger, log)


def test_units_expected_again_after_a_cancellation_are_valued_at_their_own_cost():
    ledger, log = _ledger()
    a = ledger.catalog.sku("a")
    _run(ledger, log,
         c.ExpectInbound("PO1", (c.InboundLine("a", "n0", 10, NOW + DAY_MS,
                                               unit_cost_micros=UNIT),)),
         c.ReceiveStock((c.ReceiptLine("a", "n0", 4, inbound_reference="PO1"),)),
         c.CancelInbound("PO1", (c.StockLine("a", "n0", 6),)),
         c.ExpectInbound("PO1", (c.InboundLine("a", "n0", 5, NOW + DAY_MS,
                                               unit_cost_micros=3 * UNIT),)),
         c.ReceiveStock((c.ReceiptLine("a", "n0", 5, inbound_reference="PO1"),)))
    # 4 x 1.00 then 5 x 3.00: the cancelled six take their 6.00 with them.
    assert -ledger.books.balances[Account.ACCOUNTS_PAYABLE] == (4 + 15) * UNIT
    assert ledger.books.value[a] == 19 * UNIT and not ledger.books.po_lines
    _balanced(ledger, log)


@pytest.mark.parametrize(("command", "error"), [
    (c.CancelInbound("PO9"), NotFound),  # no such purchase
    (c.CancelInbound("PO1", (c.StockLine("b", "n0", 1),)), NotFound),  # not its line
    (c.CancelInbound("PO1", (c.StockLine("a", "n0", 4),
                             c.StockLine("a", "n0", 2))), FailedPrecondition),
    (c.CancelInbound("PO1", (c.StockLine("a", "n0", 0),)), InvalidArgument),
    (c.CancelInbound("PO1", (c.StockLine("zz", "n0", 1),)), NotFound),
    (c.CancelInbound("", ()), InvalidArgument),
    (c.CancelInbound("TR1"), FailedPrecondition),  # a transfer's units
    (c.CancelInbound("TR1", (c.StockLine("a", "n1", 1),)), FailedPrecondition),
])
def test_a_cancellation_that_cannot_be_done_is_refused_and_changes_nothing(command, error):
    ledger, log = _ledger()
    _run(ledger, log,
         c.ReceiveStock((c.ReceiptLine("a", "n0", 5),)),
         c.ExpectInbound("PO1", (c.InboundLine("a", "n0", 5, NOW + DAY_MS),)),
         # (More in transit at the same place: the bucket alone would not refuse.)
         c.ExpectInbound("PO2", (c.InboundLine("a", "n0", 5, NOW + DAY_MS),)),
         c.TransferStock("TR1", "n0", "n1", NOW + DAY_MS, (c.TransferLine("a", 2),)))
    before = ledger.checksum()
    with pytest.raises(error):
        execute(ledger, command, NOW)
    assert ledger.checksum() == before


# ---- orders that counted on it ---------------------------------------------------------
def _cancelled(ledger, command):
    """Run `command`; its events, replayed on a copy of the state before it, give the same
    state (the orders decided again included)."""
    before = pickle.loads(pickle.dumps(ledger))
    outcome = execute(ledger, command, ORDERS_NOW)
    before.apply(outcome.events, replay=True)
    assert before.checksum() == ledger.checksum()
    return outcome


def _open_backorder_exceptions(ledger, order_id: str) -> list:
    return [e for e in ledger.exceptions.open_for(order_id)
            if e.exception_type in (ExceptionType.BACKORDER, ExceptionType.NO_FEASIBLE_NODE)]


def test_an_order_waiting_for_inbound_stock_that_is_cancelled_is_decided_again():
    ledger = reopt_ledger({("a", "n0"): 1, ("b", "n2"): 1})
    for command in (c.ExpectInbound("PO-1", (c.InboundLine("b", "n0", 5, ORDERS_NOW + DAY_MS),)),
                    c.AllocateOrders((reopt_order("waits", {"a": 1, "b": 1}),))):
        execute(ledger, command, ORDERS_NOW)
    record = ledger.orders.orders["waits"]
    chosen = [o.kind for o in record.last_decision.options if o.chosen]
    assert chosen == [OptionKind.WAIT_FOR_INBOUND]
    assert all(b.promise_ms for b in record.backorders.values())
    (waiting,) = _open_backorder_exceptions(ledger, "waits")

    outcome = _cancelled(ledger, c.CancelInbound("PO-1"))
    # Decided again against what is left: a from n0 and b from n2, in two packages.
    assert record.status == OrderStatus.ALLOCATED and not record.backorders
    assert sorted(ledger.orders.packages[p].plan.node for p in record.package_ids[-2:]) == [
        ledger.catalog.node("n0"), ledger.catalog.node("n2")]
    resolved = [e for e in outcome.events if e.kind == EventKind.EXCEPTION_RESOLVED]
    assert [(e.reference, e.reason, e.payload) for e in resolved] == [
        (waiting.exception_id, int(Resolution.RETRY), "inbound PO-1 cancelled")]
    assert not _open_backorder_exceptions(ledger, "waits")


def test_a_backorder_promised_from_cancelled_inbound_stock_loses_its_date_and_asks_again():
    ledger = reopt_ledger({("a", "n0"): 1})
    for command in (
            c.ExpectInbound("PO-2", (c.InboundLine("b", "n1", 5, ORDERS_NOW + 3 * DAY_MS),)),
            c.ExpectInbound("PO-3", (c.InboundLine("a", "n1", 5, ORDERS_NOW + 3 * DAY_MS),)),
            c.AllocateOrders((reopt_order("bo", {"b": 2}), reopt_order("other", {"a": 3})))):
        execute(ledger, command, ORDERS_NOW)
    record, other = ledger.orders.orders["bo"], ledger.orders.orders["other"]
    assert record.backorders["0"].promise_ms and other.backorders["0"].promise_ms
    (before,) = _open_backorder_exceptions(ledger, "bo")
    other_before = (dict(other.backorders), _open_backorder_exceptions(ledger, "other"))

    outcome = _cancelled(ledger, c.CancelInbound("PO-2"))
    assert record.status == OrderStatus.BACKORDERED
    assert record.backorders["0"].quantity == 2 and record.backorders["0"].promise_ms == 0
    (after,) = _open_backorder_exceptions(ledger, "bo")  # raised again, without a date
    assert after.exception_id != before.exception_id
    # An order waiting for another purchase, of another SKU, is left as it was.
    assert (dict(other.backorders), _open_backorder_exceptions(ledger, "other")) == other_before
    assert {e.reference for e in outcome.events if e.kind == EventKind.ORDER_ALLOCATED} == {"bo"}


def test_an_order_no_region_maps_now_keeps_its_date_and_the_cancellation_goes_through():
    """The network is re-zoned after two orders were promised from a purchase: one's
    ship-to maps to no region now (a RETRY of it would be refused). Cancelling the purchase
    decides the other again and leaves that one as it was, instead of failing."""
    import dataclasses

    from core.network import Region
    from tests.unit.test_orders_stateful import NETWORK

    ledger = reopt_ledger({("a", "n0"): 1})
    execute(ledger, c.ExpectInbound("PO-2", (c.InboundLine("b", "n1", 5,
                                                           ORDERS_NOW + 3 * DAY_MS),)),
            ORDERS_NOW)
    execute(ledger, c.AllocateOrders((reopt_order("lost", {"b": 2}),
                                      reopt_order("mapped", {"b": 2})._replace(
                                          postal_code="10099"))), ORDERS_NOW)
    execute(ledger, c.SetNetwork(dataclasses.replace(NETWORK, regions=(
        Region("east", 40.7, -74.0, ("1009",)),))), ORDERS_NOW)
    lost = ledger.orders.orders["lost"]
    before = (dict(lost.backorders), _open_backorder_exceptions(ledger, "lost"))
    assert lost.backorders["0"].promise_ms

    outcome = _cancelled(ledger, c.CancelInbound("PO-2"))

    assert (dict(lost.backorders), _open_backorder_exceptions(ledger, "lost")) == before
    assert ledger.orders.orders["mapped"].backorders["0"].promise_ms == 0
    assert {e.reference for e in outcome.events
            if e.kind == EventKind.ORDER_ALLOCATED} == {"mapped"}
