"""Order lines that carry the price the customer pays: revenue is booked, a return refunded
and a batch's priority weighed at it; without one, at the catalogue price."""

from __future__ import annotations

import dataclasses

import pytest

from core import commands as c
from core.errors import InvalidArgument
from core.finance import Account
from core.ledger import Ledger, LedgerSettings
from core.model import LINE_VALUE_MAX, MONEY_MAX, Event, EventKind
from core.network import SlaTier
from core.operations import execute
from core.orders import (
    OrderLineSpec,
    OrderSpec,
    _book_columns,
    _read_book_columns,
    event_columns,
    events_from_columns,
)
from tests.unit.shop import SKUS, shop
from tests.unit.test_orders_stateful import NOW

SHIRT, SOCKS = SKUS["shirt"][0], SKUS["socks"][0]  # catalogue prices


def _world(stock: int = 50) -> tuple[Ledger, list[Event]]:
    ledger = Ledger(LedgerSettings(n_shards=2))
    log: list[Event] = []
    for command in shop({("shirt", "n0"): stock, ("socks", "n0"): stock}, n_nodes=1):
        log.extend(execute(ledger, command, NOW).events)
    return ledger, log


def _order(order_id: str, *lines: tuple[str, int, int]) -> OrderSpec:
    return OrderSpec(order_id, "web", SlaTier.STANDARD, tuple(
        OrderLineSpec(str(i + 1), sku, qty, price) for i, (sku, qty, price) in enumerate(lines)),
        postal_code="10001")


def _ship(ledger: Ledger, log: list[Event], spec: OrderSpec) -> None:
    """Allocate `spec` and ship it whole from n0, its events added to `log`."""
    outcome = execute(ledger, c.AllocateOrders((spec,)), NOW)
    assert outcome.detail.outcomes[0].error is None
    log.extend(outcome.events)
    (package_id,) = ledger.orders.orders[spec.order_id].package_ids
    scanned = tuple((line.sku_id, line.quantity) for line in spec.lines)
    for command in (c.ReleaseWave("n0"), c.ConfirmPick(package_id, ()),
                    c.ConfirmPack(package_id, scanned), c.ConfirmShipment(package_id, "T")):
        log.extend(execute(ledger, command, NOW).events)


def _revenue(ledger: Ledger) -> int:
    return -ledger.books.trial_balance()[Account.REVENUE]


def test_revenue_and_a_refund_are_at_the_price_the_line_gives():
    ledger, log = _world()
    # The shirt's catalogue price changes after the order: the line's own price holds.
    _ship(ledger, log, _order("o1", ("shirt", 2, 15_000_000), ("socks", 1, -1)))
    assert _revenue(ledger) == 2 * 15_000_000 + SOCKS
    assert ledger.books.trial_balance()[Account.ACCOUNTS_RECEIVABLE] == _revenue(ledger)
    spec = ledger.catalog.sku_spec(ledger.catalog.sku("shirt"))
    execute(ledger, c.UpsertSkus((dataclasses.replace(spec, price_micros=99_000_000),)), NOW)
    decision = execute(ledger, c.CreateReturn("r1", "o1", (("1", 1), ("2", 1))), NOW).detail
    assert decision.eligible, decision.reasons
    assert sorted(line.unit_price_micros for line in decision.authorization.lines) == [
        SOCKS, 15_000_000]
    assert ledger.books.trial_balance()[Account.INVENTORY] >= 0
    assert sum(ledger.books.trial_balance().values()) == 0


def test_a_line_with_no_price_is_booked_at_the_catalogue_price_when_it_ships():
    ledger, _ = _world()
    spec = ledger.catalog.sku_spec(ledger.catalog.sku("shirt"))
    execute(ledger, c.AllocateOrders((_order("o1", ("shirt", 1, -1)),)), NOW)
    execute(ledger, c.UpsertSkus((dataclasses.replace(spec, price_micros=25_000_000),)), NOW)
    (package_id,) = ledger.orders.orders["o1"].package_ids
    for command in (c.ReleaseWave("n0"), c.ConfirmPick(package_id, ()),
                    c.ConfirmPack(package_id, (("shirt", 1),)), c.ConfirmShipment(package_id, "T")):
        execute(ledger, command, NOW)
    assert _revenue(ledger) == 25_000_000


def test_a_free_line_ships_books_no_revenue_and_refunds_nothing():
    ledger, log = _world()
    _ship(ledger, log, _order("o1", ("shirt", 1, 20_000_000), ("socks", 2, 0)))
    assert _revenue(ledger) == 20_000_000
    assert ledger.books.trial_balance()[Account.COST_OF_GOODS_SOLD] == (
        SKUS["shirt"][1] + 2 * SKUS["socks"][1])  # the free socks still cost what they cost
    decision = execute(ledger, c.CreateReturn("r1", "o1", (("2", 2),)), NOW).detail
    assert decision.eligible and decision.authorization.refund_micros == 0


@pytest.mark.parametrize(("qty", "price", "field"), [
    (1, MONEY_MAX + 1, "lines[1].unit_price_micros"),
    (10**5, MONEY_MAX, "lines[1].unit_price_micros"),  # worth 10^17
    (1, -2, "lines[1].unit_price_micros"),
])
def test_a_price_out_of_bounds_is_refused_naming_the_line_and_changes_nothing(qty, price,
                                                                                field):
    ledger, _ = _world(stock=10**6)
    before = ledger.checksum()
    bad = _order("bad", ("socks", 1, 1), ("shirt", qty, price))
    outcome = execute(ledger, c.AllocateOrders((bad,)), NOW)
    error = outcome.detail.outcomes[0].error
    assert isinstance(error, InvalidArgument) and error.field == f"order.{field}", error
    assert not outcome.events and ledger.checksum() == before
    # In a batch, the others go on.
    good = _order("good", ("shirt", 1, 1))
    outcome = execute(ledger, c.AllocateOrders((bad, good)), NOW)
    assert [o.error is None for o in outcome.detail.outcomes] == [False, True]
    assert "bad" not in ledger.orders.orders and ledger.orders.orders["good"].spec == good


def test_a_line_at_the_bound_itself_is_taken():
    ledger, _ = _world(stock=10**6)
    spec = _order("o1", ("shirt", 10**4, LINE_VALUE_MAX // 10**4))
    outcome = execute(ledger, c.AllocateOrders((spec,)), NOW)
    assert outcome.detail.outcomes[0].error is None


def test_a_line_of_more_than_ten_thousand_units_gives_its_price():
    # 10^4 units at any unit price (10^12 at most) are within the bound. Without a price of
    # its own a line is booked at the catalogue price when it ships, which may have been
    # raised by then, or be a substitute's: a larger line gives its price.
    ledger, _ = _world(stock=10**6)
    before = ledger.checksum()
    outcome = execute(ledger, c.AllocateOrders((_order("big", ("socks", 10**4 + 1, -1)),)),
                      NOW)
    error = outcome.detail.outcomes[0].error
    assert isinstance(error, InvalidArgument)
    assert error.field == "order.lines[0].unit_price_micros" and "10000 units" in error.message
    assert ledger.checksum() == before
    for order_id, qty, price in (("at", 10**4, -1), ("priced", 10**5, 1_000)):
        outcome = execute(ledger, c.AllocateOrders((_order(order_id, ("shirt", qty, price)),)),
                          NOW)
        assert outcome.detail.outcomes[0].error is None


def test_a_negative_price_refuses_its_order_alone():
    from allocd.v1 import order_service_pb2 as pb

    from service.order_codec import orders_from_proto

    ledger, _ = _world()
    request = pb.AllocateOrdersRequest(request_id="r", orders=[
        pb.Order(order_id=f"o{k}", channel_id="web", ship_to=pb.ShipTo(postal_code="10001"),
                 lines=[pb.OrderLine(sku_id="shirt", quantity=1, unit_price_micros=price)])
        for k, price in enumerate((-1, 5_000_000, -(2**63)))])
    outcome = execute(ledger, c.AllocateOrders(orders_from_proto(request)), NOW)
    errors = [o.error for o in outcome.detail.outcomes]
    assert errors[1] is None
    for k in (0, 2):
        assert isinstance(errors[k], InvalidArgument)
        assert errors[k].field == f"orders[{k}].lines[0].unit_price_micros"


@pytest.mark.parametrize(("paid", "winner"), [(SHIRT + 1, "second"), (SHIRT - 1, "first")])
def test_a_batch_serves_the_order_worth_more_at_the_price_paid_first(paid, winner):
    # One shirt for two orders of the same tier and no deliver-by: the higher margin wins.
    ledger, _ = _world(stock=1)
    first = _order("first", ("shirt", 1, -1))
    second = _order("second", ("shirt", 1, paid))
    outcome = execute(ledger, c.AllocateOrders((first, second)), NOW)
    placed = {o.order_id: bool(o.decision and o.decision.packages)
              for o in outcome.detail.outcomes}
    assert placed == {"first": winner == "first", "second": winner == "second"}


def test_many_orders_are_weighed_at_their_prices_too():
    # (A batch of 16 or more orders takes its margins in one pass over all its lines.)
    ledger, _ = _world(stock=1)
    orders = [_order(f"o{i}", ("shirt", 1, -1)) for i in range(20)]
    orders.append(_order("dear", ("socks", 1, -1), ("shirt", 1, SHIRT + 1)))
    outcome = execute(ledger, c.AllocateOrders(tuple(orders)), NOW)
    served = [o.order_id for o in outcome.detail.outcomes
              if o.decision and any(line.sku == ledger.catalog.sku("shirt")
                                    for p in o.decision.packages for line in p.lines)]
    assert served == ["dear"]


def test_prices_go_through_the_log_and_snapshot_columns():
    ledger, log = _world()
    priced = _order("o1", ("shirt", 1, 15_000_000), ("socks", 1, -1))
    plain = _order("o2", ("shirt", 1, -1))
    _ship(ledger, log, priced)
    _ship(ledger, log, plain)
    received = [e for e in log if e.kind == EventKind.ORDER_RECEIVED]
    columns = event_columns(received)
    assert columns is not None
    assert [e.payload for e in events_from_columns(columns)] == [priced, plain]
    again = Ledger(LedgerSettings(n_shards=2))
    _read_book_columns(again.orders, _book_columns(ledger.orders))
    assert again.orders.orders["o1"].spec == priced
    assert again.orders.orders["o2"].spec.lines[0].unit_price_micros == -1
    package = again.orders.orders["o1"].package_ids[0]
    assert again.orders.packages[package].unit_prices == {"1": 15_000_000, "2": SOCKS}


def test_an_unpriced_order_writes_the_columns_it_wrote_before_prices():
    # The layout of an order with no price is unchanged: logs and snapshots written
    # before read as they are, and read-back orders have no price.
    spec = _order("o1", ("shirt", 2, -1))
    columns = event_columns([Event(1, EventKind.ORDER_RECEIVED, reference="o1", payload=spec)])
    assert columns is not None
    ints = columns[1]
    flags = ints[-5 - 2]  # (flags, tier, deliver-by, payment, address, lines, quantity)
    assert flags & 16 == 0 and ints[-2:] == [1, 2]
    assert events_from_columns(columns)[0].payload.lines[0].unit_price_micros == -1


def test_a_replayed_log_books_the_same_revenue_and_an_older_one_the_catalogue_price():
    ledger, log = _world()
    _ship(ledger, log, _order("o1", ("shirt", 2, 15_000_000)))
    replayed = Ledger(LedgerSettings(n_shards=2))
    replayed.apply(tuple(log), replay=True)
    assert replayed.checksum() == ledger.checksum()
    assert _revenue(replayed) == 30_000_000
    # Shipments logged before their events named the line: at the catalogue price then.
    older = tuple(Event(e.seq, e.kind, e.sku, e.node, e.from_bucket, e.to_bucket, e.quantity,
                        e.reference, e.request_id, e.time_ms, e.channel, e.due_ms, e.reason,
                        e.amount, e.counted, e.expected, None)
                  if e.kind == EventKind.ORDER_UNITS_SHIPPED else e for e in log)
    old = Ledger(LedgerSettings(n_shards=2))
    old.apply(older, replay=True)
    assert _revenue(old) == 2 * SHIRT
