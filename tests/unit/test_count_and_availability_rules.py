"""Units held for a count variance stay held until it is settled; a variance waiting for
approval is not counted twice; available-to-sell and promise dates read the floors and
the network's blocked channels as allocation does."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from core import commands as c
from core.availability import available_to_sell, promise_schedule
from core.errors import AlreadyExists, FailedPrecondition
from core.exceptions import Resolution
from core.ledger import Ledger, LedgerSettings
from core.model import AdjustReason, Bucket, ChannelSpec, Event, EventKind, NodeSpec, SkuSpec
from core.network import SlaTier
from core.operations import execute
from core.orders import OrderLineSpec, OrderSpec
from tests.unit.test_orders_stateful import NETWORK

NOW = 1_000


def _ledger(default_rules: bool = False, **settings) -> Ledger:
    """A three-node ledger with SKU "a"; without the default alert rules unless asked."""
    ledger = Ledger(LedgerSettings(n_shards=2, **settings))
    for command in (
            *(() if default_rules else (c.SetRules((), 1),)),
            c.UpsertNodes((NodeSpec("n0", latitude=40.0, longitude=-75.0),
                           NodeSpec("n1", latitude=34.0, longitude=-118.0),
                           NodeSpec("n2", latitude=41.8, longitude=-87.6))),
            c.UpsertChannels((ChannelSpec("web"), ChannelSpec("mkt"))),
            c.UpsertSkus((SkuSpec("a", weight_lb=1, unit_cost_micros=1_000_000,
                                  price_micros=2_000_000),)),
            c.SetNetwork(NETWORK)):
        execute(ledger, command, NOW)
    return ledger


def _levels(ledger: Ledger, node: int = 0) -> list[int]:
    return ledger.buckets(ledger.catalog.sku("a"), node).tolist()


def test_units_held_for_a_count_variance_leave_quarantine_only_when_it_is_settled():
    ledger = _ledger(count_hold_units=5)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 20),
                                    c.ReceiptLine("a", "n0", 4, to_bucket=Bucket.QUARANTINED))),
            NOW)
    count = execute(ledger, c.SubmitCycleCount((c.CountLine("a", "n0", 10),), "cc1"), NOW)
    (line,) = count.detail.lines
    assert line.held == 10 and _levels(ledger)[Bucket.QUARANTINED] == 14
    before = ledger.checksum()
    for command in (
            c.MoveStock((c.MoveLine("a", "n0", 5, Bucket.QUARANTINED, Bucket.AVAILABLE),)),
            c.AdjustStock((c.AdjustLine("a", "n0", -5, AdjustReason.DAMAGE,
                                        bucket=Bucket.QUARANTINED),), "adj")):
        with pytest.raises(FailedPrecondition, match="held for count variances"):
            execute(ledger, command, NOW)
        assert ledger.checksum() == before
    # The 4 damaged units are free to move; the held 10 wait for the decision.
    execute(ledger, c.MoveStock((c.MoveLine("a", "n0", 4, Bucket.QUARANTINED,
                                            Bucket.AVAILABLE),)), NOW)
    execute(ledger, c.ResolveException(line.exception_id, Resolution.APPROVE, actor="boss",
                                       role="operations"), NOW)
    assert _levels(ledger)[Bucket.QUARANTINED] == 0 and not ledger.held_variances


def test_a_count_is_refused_while_a_variance_of_its_sku_and_node_waits_for_approval():
    ledger = _ledger(count_hold_units=5)
    first = execute(ledger, c.SubmitCycleCount((c.CountLine("a", "n0", 10),), "cc1"), NOW)
    assert first.detail.lines[0].held == 10  # found: held for approval
    before = ledger.checksum()
    with pytest.raises(FailedPrecondition, match="waits for its approval"):
        execute(ledger, c.SubmitCycleCount((c.CountLine("a", "n0", 10),), "cc2"), NOW)
    assert ledger.checksum() == before
    execute(ledger, c.ResolveException(first.detail.lines[0].exception_id, Resolution.APPROVE,
                                       actor="boss", role="operations"), NOW)
    again = execute(ledger, c.SubmitCycleCount((c.CountLine("a", "n0", 10),), "cc3"), NOW)
    assert again.detail.lines[0].variance == 0  # 10 found once, not twice
    assert _levels(ledger)[Bucket.AVAILABLE] == 10


def test_nothing_is_sold_or_reserved_where_the_network_does_not_ship_the_channel():
    ledger = _ledger()
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n2", 5),)), NOW)  # n2 blocks mkt
    nodes = np.arange(3, dtype=np.int64)
    sku = np.array([ledger.catalog.sku("a")], np.int64)
    for channel, expected in (("mkt", 0), ("web", 5)):
        table = available_to_sell(ledger, sku, nodes, ledger.catalog.channel(channel))
        assert int(table.total_to_sell[0]) == expected, channel
        spec = OrderSpec(f"o-{channel}", channel, SlaTier.STANDARD,
                         (OrderLineSpec("1", "a", 5),), postal_code="10001")
        outcome = execute(ledger, c.AllocateOrders((spec,)), NOW).detail.outcomes[0]
        placed = sum(q for p in outcome.decision.packages for _, _, q, _ in p.lines)
        assert placed == expected, channel  # what allocation takes, as promised
        if placed:
            execute(ledger, c.CancelOrder(spec.order_id), NOW)
    # A reservation for the channel is refused there too, changing nothing.
    before = ledger.checksum()
    with pytest.raises(FailedPrecondition, match="does not ship channel 'mkt'"):
        execute(ledger, c.ReserveStock("cart-mkt", "mkt", NOW + 60_000,
                                       (c.StockLine("a", "n2", 1),)), NOW)
    assert ledger.checksum() == before
    execute(ledger, c.ReserveStock("cart-web", "web", NOW + 60_000,
                                   (c.StockLine("a", "n2", 5),)), NOW)


def test_promise_dates_count_inbound_units_above_the_floor_only():
    ledger = _ledger()
    execute(ledger, c.SetSafetyStock("a", "n0", 10), NOW)
    execute(ledger, c.ExpectInbound("po1", (c.InboundLine("a", "n0", 5, expected_ms=50_000),
                                           c.InboundLine("a", "n0", 8, expected_ms=90_000))),
            NOW)
    nodes = np.array([0], np.int64)
    sku = np.array([ledger.catalog.sku("a")], np.int64)
    web = ledger.catalog.channel("web")
    table = available_to_sell(ledger, sku, nodes, web)
    steps = promise_schedule(ledger, table, 0, web, NOW)
    # The first 5 only refill safety stock; of the next 8, 3 are sellable.
    assert [(s.date_ms, s.quantity) for s in steps] == [(NOW, 0), (90_000, 3)]
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 13, inbound_reference="po1"),)),
            100_000)
    after = available_to_sell(ledger, sku, nodes, web)
    assert int(after.total_to_sell[0]) == steps[-1].quantity


def test_a_backorder_s_promise_date_reads_inbound_stock_as_available_to_promise_does():
    """A backorder was promised the first date inbound units added up to it, though they
    only refilled safety stock, or came to a node that does not ship the order's channel:
    a date no stock would meet (GetAvailability's promise schedule had none)."""
    day = 86_400_000
    ledger = _ledger()
    execute(ledger, c.SetSafetyStock("a", "n0", 5), NOW)
    execute(ledger, c.ExpectInbound("po1", (c.InboundLine("a", "n0", 5, NOW + 2 * day),
                                           c.InboundLine("a", "n0", 3, NOW + 4 * day),
                                           c.InboundLine("a", "n2", 9, NOW + day))), NOW)

    def promised(order_id: str, channel: str, qty: int) -> int:
        spec = OrderSpec(order_id, channel, SlaTier.STANDARD,
                         (OrderLineSpec("1", "a", qty),), postal_code="10001")
        execute(ledger, c.AllocateOrders((spec,)), NOW)
        (backorder,) = ledger.orders.orders[order_id].backorders.values()
        return backorder.promise_ms

    # mkt: n2 does not ship it, and n0's first 5 only refill its safety stock.
    assert promised("m1", "mkt", 3) == NOW + 4 * day
    assert promised("m2", "mkt", 4) == 0  # 3 sellable ever come for mkt
    assert promised("w1", "web", 9) == NOW + day  # web: n2's 9 tomorrow


def test_a_purchase_s_reference_and_a_transfer_s_id_are_never_the_same():
    ledger = _ledger()
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 10),)), NOW)
    execute(ledger, c.ExpectInbound("PO-1", (c.InboundLine("a", "n1", 5, expected_ms=50_000),)),
            NOW)
    before = ledger.checksum()
    with pytest.raises(AlreadyExists, match="reference of inbound stock"):
        execute(ledger, c.TransferStock("PO-1", "n0", "n2", 60_000, (c.TransferLine("a", 2),)),
                NOW)
    assert ledger.checksum() == before
    execute(ledger, c.TransferStock("T-1", "n0", "n2", 60_000, (c.TransferLine("a", 2),)), NOW)
    before = ledger.checksum()
    with pytest.raises(AlreadyExists, match="transfer's id"):
        execute(ledger, c.ExpectInbound(
            "T-1", (c.InboundLine("a", "n1", 5, expected_ms=50_000),)), NOW)
    with pytest.raises(AlreadyExists, match="exists already"):
        execute(ledger, c.TransferStock("T-1", "n0", "n1", 60_000, (c.TransferLine("a", 1),)),
                NOW)
    assert ledger.checksum() == before


def test_two_requests_to_make_a_channel_safety_stock_only_reserve_once():
    from core.alerts import ActionSpec, ActionType

    ledger = _ledger()
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 100),)), NOW)
    asked = [execute(ledger, c.RequestEmergencyChange(ActionSpec(
        ActionType.CHANNEL_SAFETY_STOCK_ONLY, channel_id="web", amount=30, reason="storm"),
        actor=who), NOW).detail for who in ("alice", "carol")]
    for approval_id in asked:
        execute(ledger, c.DecideApproval(approval_id, True, "bob", "operations"), NOW)
    web = ledger.catalog.channel("web")
    assert ledger.ops.channel_reserve == {web: 30}
    assert len(ledger.ops.active_action_records()) == 1
    table = available_to_sell(ledger, np.array([ledger.catalog.sku("a")], np.int64),
                              np.array([0], np.int64), web)
    assert int(table.total_to_sell[0]) == 70


def _order_all_20() -> c.AllocateOrders:
    return c.AllocateOrders((OrderSpec("o1", "web", SlaTier.STANDARD,
                                       (OrderLineSpec("1", "a", 20),), postal_code="10001"),))


def test_a_variance_that_holds_nothing_does_not_stop_the_next_count():
    ledger = _ledger(count_hold_units=5)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 20),)), NOW)
    execute(ledger, _order_all_20(), NOW)
    count = execute(ledger, c.SubmitCycleCount((c.CountLine("a", "n0", 0),), "cc1"), NOW)
    assert count.detail.lines[0].held == 0  # all 20 allocated: none to quarantine
    execute(ledger, c.SubmitCycleCount((c.CountLine("a", "n0", 0),), "cc2"), NOW)


@pytest.mark.parametrize("resolution", [Resolution.APPROVE, Resolution.REJECT])
def test_a_variance_that_holds_nothing_is_gone_once_settled(resolution):
    ledger = _ledger(count_hold_units=5)
    replayed = _ledger(count_hold_units=5)  # (applies the same events as they come)
    outcomes = [execute(ledger, command, NOW) for command in (
        c.ReceiveStock((c.ReceiptLine("a", "n0", 20),)),
        _order_all_20(),
        c.SubmitCycleCount((c.CountLine("a", "n0", 0),), "cc1"))]
    (line,) = outcomes[-1].detail.lines
    assert line.held == 0 and line.exception_id in ledger.held_variances
    levels = _levels(ledger)
    outcomes.append(execute(ledger, c.ResolveException(
        line.exception_id, resolution, actor="boss", role="operations"), NOW))
    assert not ledger.held_variances  # (each one is read at every count and quarantine move)
    assert _levels(ledger) == levels
    for outcome in outcomes:  # the settlement is an event like any other
        replayed.apply(outcome.events, replay=True)
    assert not replayed.held_variances and replayed.checksum() == ledger.checksum()
    # A log written before such a variance was settled by an event (its resolution the
    # last event there is) leaves no record either.
    older = _ledger(count_hold_units=5)
    *resolved, settled = [e for outcome in outcomes for e in outcome.events]
    assert settled.kind == EventKind.COUNT_VARIANCE_SETTLED and settled.quantity == 0
    older.apply(resolved, replay=True)
    assert not older.held_variances


def test_a_reservation_for_no_channel_is_not_refused_for_a_channel_a_node_blocks():
    """No channel is no column of the blocked table (not its last one)."""
    import dataclasses

    ledger = Ledger(LedgerSettings(n_shards=2))
    network = dataclasses.replace(NETWORK, node_costs=tuple(
        dataclasses.replace(costs, blocked_channels=("ch63",) if costs.node_id == "n2" else ())
        for costs in NETWORK.node_costs))
    for command in (
            c.SetRules((), 1),
            c.UpsertNodes((NodeSpec("n0", latitude=40.0, longitude=-75.0),
                           NodeSpec("n1", latitude=34.0, longitude=-118.0),
                           NodeSpec("n2", latitude=41.8, longitude=-87.6))),
            c.UpsertChannels(tuple(ChannelSpec(f"ch{i}") for i in range(64))),
            c.UpsertSkus((SkuSpec("a", weight_lb=1),)),
            c.SetNetwork(network),
            c.ReceiveStock((c.ReceiptLine("a", "n2", 5),))):
        execute(ledger, command, NOW)
    execute(ledger, c.ReserveStock("cart", "", NOW + 60_000, (c.StockLine("a", "n2", 1),)),
            NOW)
    with pytest.raises(FailedPrecondition, match="does not ship channel 'ch63'"):
        execute(ledger, c.ReserveStock("cart-63", "ch63", NOW + 60_000,
                                       (c.StockLine("a", "n2", 1),)), NOW)


def _web_sellable(ledger: Ledger) -> int:
    table = available_to_sell(ledger, np.array([ledger.catalog.sku("a")], np.int64),
                              np.array([0], np.int64), ledger.catalog.channel("web"))
    return int(table.total_to_sell[0])


def test_a_safety_stock_is_not_set_under_a_sales_hold_and_the_hold_puts_back_its_own():
    """A count far off holds the SKU at the node from sale (RESTRICT_SKU, through its own
    safety stock) until it is recounted. Setting that safety stock meanwhile would sell the
    SKU again while the hold shows in force, and be lost when the hold ends: refused."""
    ledger = _ledger(default_rules=True)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 40),)), NOW)
    execute(ledger, c.SetSafetyStock("a", "n0", 3), NOW)
    execute(ledger, c.SubmitCycleCount((c.CountLine("a", "n0", 28),), "cc1"), NOW)
    (hold,) = ledger.ops.active_action_records()
    assert _web_sellable(ledger) == 0
    before = ledger.checksum()
    with pytest.raises(FailedPrecondition, match=f"held from sale by action {hold.info.action_id}"):
        execute(ledger, c.SetSafetyStock("a", "n0", 5), NOW)
    assert ledger.checksum() == before and _web_sellable(ledger) == 0
    # The node's own default and the SKU's across nodes are other settings: the hold,
    # the SKU's own at the node, still wins over them.
    execute(ledger, c.SetSafetyStock("", "n0", 1), NOW)
    execute(ledger, c.SetSafetyStock("a", "", 2), NOW)
    assert _web_sellable(ledger) == 0
    (task,) = ledger.ops.open_task_records()
    execute(ledger, c.CompleteTask(task.info.task_id, actor="ic", role="operations"), NOW)
    assert not ledger.ops.active_action_records()
    assert ledger.safety_stock(ledger.catalog.sku("a"), 0) == 3  # what it was before
    execute(ledger, c.SetSafetyStock("a", "n0", 5), NOW)
    assert _web_sellable(ledger) == 28 - 5


@pytest.mark.parametrize("resolution", [Resolution.APPROVE, Resolution.REJECT])
def test_units_a_count_finds_missing_leave_the_reservations_that_held_them(resolution):
    """Units a count finds missing, past what is available, are taken from the reservations
    holding them (ending last first) and held with the rest: else they come back as
    sellable stock when the reservations end, and are promised to customers again."""
    ledger = _ledger(count_hold_units=5)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 12),)), NOW)
    execute(ledger, c.ReserveStock("soon", "web", NOW + 60_000, (c.StockLine("a", "n0", 4),)),
            NOW)
    execute(ledger, c.ReserveStock("late", "web", NOW + 600_000, (c.StockLine("a", "n0", 5),)),
            NOW)
    count = execute(ledger, c.SubmitCycleCount((c.CountLine("a", "n0", 1),), "cc1"), NOW)
    (line,) = count.detail.lines
    # 11 missing: the 3 available, then "late" (5) and 3 of "soon"; 1 left reserved.
    assert (line.variance, line.held) == (-11, 11)
    assert _levels(ledger)[:4] == [0, 1, 0, 11]
    assert "late" not in ledger.reservations.by_id
    assert ledger.reservations.lines("soon") == [(ledger.catalog.sku("a"), 0, 1)]
    execute(ledger, c.ResolveException(line.exception_id, resolution, actor="boss",
                                       role="operations"), NOW)
    sku = ledger.catalog.sku("a")
    if resolution == Resolution.APPROVE:  # written off: the reservations stay short
        assert "late" not in ledger.reservations.by_id
        assert ledger.reservations.lines("soon") == [(sku, 0, 1)]
        assert _levels(ledger)[:4] == [0, 1, 0, 0]
    else:  # a recount found them: the customers' reservations get them back
        assert ledger.reservations.lines("late") == [(sku, 0, 5)]
        assert ledger.reservations.lines("soon") == [(sku, 0, 4)]
        assert ledger.reservations.by_id["late"].channel == ledger.catalog.channel("web")
        assert _levels(ledger)[:4] == [3, 9, 0, 0]
        assert _web_sellable(ledger) == 3
    execute(ledger, c.ExpireReservations(), NOW + 10**9)  # both end
    levels = _levels(ledger)
    assert levels[Bucket.RESERVED] == 0 and levels[Bucket.QUARANTINED] == 0
    # Approved: written off, and only the unit counted is left to sell. Refused: all 12.
    assert levels[Bucket.AVAILABLE] == (1 if resolution == Resolution.APPROVE else 12)
    assert _web_sellable(ledger) == levels[Bucket.AVAILABLE]


def test_a_refused_count_gives_units_back_only_to_reservations_no_one_else_ended():
    """On refusal, units go back to the reservations the count took them from while those
    are open, or closed by the count itself and not yet expired; a reservation its owner
    released meanwhile, or one that expired, does not come back: its units are for sale."""
    ledger = _ledger(count_hold_units=5)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 10), c.ReceiptLine("a", "n1", 5))),
            NOW)
    # "two" holds units at two nodes: the count closes its n0 line, not the reservation.
    execute(ledger, c.ReserveStock("two", "web", NOW + 900_000,
                                   (c.StockLine("a", "n0", 3), c.StockLine("a", "n1", 2))), NOW)
    execute(ledger, c.ReserveStock("gone", "web", NOW + 600_000, (c.StockLine("a", "n0", 3),)),
            NOW)
    execute(ledger, c.ReserveStock("ends", "web", NOW + 60_000, (c.StockLine("a", "n0", 2),)),
            NOW)
    count = execute(ledger, c.SubmitCycleCount((c.CountLine("a", "n0", 0),), "cc1"), NOW)
    (line,) = count.detail.lines
    assert (line.variance, line.held) == (-10, 10)
    assert set(ledger.reservations.by_id) == {"two"}
    execute(ledger, c.ReleaseReservation("two"), NOW)  # its owner lets it go
    later = NOW + 120_000  # "ends" has expired by now; "gone" has not
    execute(ledger, c.ResolveException(line.exception_id, Resolution.REJECT, actor="boss",
                                       role="operations"), later)
    sku = ledger.catalog.sku("a")
    assert set(ledger.reservations.by_id) == {"gone"}
    assert ledger.reservations.lines("gone") == [(sku, 0, 3)]
    assert _levels(ledger)[:4] == [7, 3, 0, 0]
    assert not ledger.held_variances


def test_a_refused_count_that_closed_a_reservation_line_by_line_gives_it_back_whole():
    """One count takes both lines of a reservation (two nodes): each line alone left the
    reservation open, so neither was marked as closing it, and the refusal put the units
    on sale instead of back in the reservation."""
    ledger = _ledger(count_hold_units=1)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 3), c.ReceiptLine("a", "n1", 3))),
            NOW)
    execute(ledger, c.ReserveStock("both", "web", NOW + 600_000,
                                   (c.StockLine("a", "n0", 3), c.StockLine("a", "n1", 3))), NOW)
    count = execute(ledger, c.SubmitCycleCount((c.CountLine("a", "n0", 0),
                                                c.CountLine("a", "n1", 0)), "cc"), NOW)
    assert "both" not in ledger.reservations.by_id
    for line in count.detail.lines:
        execute(ledger, c.ResolveException(line.exception_id, Resolution.REJECT, actor="boss",
                                           role="operations"), NOW)
    sku = ledger.catalog.sku("a")
    assert ledger.reservations.lines("both") == [(sku, 0, 3), (sku, 1, 3)]


def test_a_refused_count_does_not_fill_a_new_reservation_under_a_closed_one_s_id():
    """Reservation ids are the caller's: one the count closed may be made again, for
    other units. Those are not the count's to fill: its units go back on sale."""
    ledger = _ledger(count_hold_units=1)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 4), c.ReceiptLine("a", "n1", 5))),
            NOW)
    execute(ledger, c.ReserveStock("r", "web", NOW + 600_000, (c.StockLine("a", "n0", 4),)), NOW)
    count = execute(ledger, c.SubmitCycleCount((c.CountLine("a", "n0", 0),), "cc"), NOW)
    execute(ledger, c.ReserveStock("r", "web", NOW + 900_000, (c.StockLine("a", "n1", 2),)), NOW)
    execute(ledger, c.ResolveException(count.detail.lines[0].exception_id, Resolution.REJECT,
                                       actor="boss", role="operations"), NOW)
    sku = ledger.catalog.sku("a")
    assert ledger.reservations.lines("r") == [(sku, 1, 2)]
    assert _levels(ledger, 0)[:4] == [4, 0, 0, 0]


@pytest.mark.parametrize("resolution", [Resolution.APPROVE, Resolution.REJECT])
def test_whoever_counted_a_variance_cannot_approve_or_reject_it(resolution):
    """Segregation of duties: the counter is recorded with the variance (in the log, so a
    replay and a snapshot know it too) and settling it takes another, named person."""
    ledger = _ledger(count_hold_units=5)
    replayed = _ledger(count_hold_units=5)
    outcomes = [execute(ledger, command, NOW) for command in (
        c.ReceiveStock((c.ReceiptLine("a", "n0", 20),)),
        c.SubmitCycleCount((c.CountLine("a", "n0", 8),), "cc1", actor="kim"))]
    (line,) = outcomes[-1].detail.lines
    assert line.held == 12
    record = ledger.exceptions.by_id[line.exception_id]
    assert "counted 8 by kim" in record.detail
    for outcome in outcomes:
        replayed.apply(outcome.events, replay=True)
    back = pickle.loads(pickle.dumps(ledger))
    for book in (ledger, replayed, back):
        before = book.checksum()
        for actor in ("kim", ""):
            with pytest.raises(FailedPrecondition, match="'kim' counted this variance"):
                execute(book, c.ResolveException(line.exception_id, resolution, actor=actor,
                                                  role="operations"), NOW)
            assert book.checksum() == before
            assert not book.exceptions.by_id[line.exception_id].resolved
        execute(book, c.ResolveException(line.exception_id, resolution, actor="lee",
                                          role="operations"), NOW)
        assert not book.held_variances
        assert _levels(book)[Bucket.AVAILABLE] == (8 if resolution == Resolution.APPROVE
                                                   else 20)


def test_a_variance_logged_before_counters_were_recorded_is_settled_by_anyone_allowed():
    """A COUNT_VARIANCE_HELD from an older log carries the bare tuple (or None): no
    counter to compare with, settled as it was then."""
    ledger = _ledger(count_hold_units=5)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("a", "n0", 20),)), NOW)
    count = execute(ledger, c.SubmitCycleCount((c.CountLine("a", "n0", 8),), "cc1",
                                               actor="kim"), NOW)
    older = _ledger(count_hold_units=5)
    execute(older, c.ReceiveStock((c.ReceiptLine("a", "n0", 20),)), NOW)
    (held,) = [e for e in count.events if e.kind == EventKind.COUNT_VARIANCE_HELD]
    assert held.payload.counted_by == "kim"
    as_before = Event(held.seq, held.kind, held.sku, held.node, held.from_bucket,
                      held.to_bucket, held.quantity, held.reference, held.request_id,
                      held.time_ms, held.channel, held.due_ms, held.reason, held.amount,
                      held.counted, held.expected, None)
    older.apply([as_before if e is held else e for e in count.events], replay=True)
    (line,) = count.detail.lines
    assert "by kim" not in older.exceptions.by_id[line.exception_id].detail
    execute(older, c.ResolveException(line.exception_id, Resolution.APPROVE, actor="kim",
                                      role="operations"), NOW)
    assert not older.held_variances
