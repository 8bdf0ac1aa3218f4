"""OrderService allocation end to end: sourcing, split versus ship complete, costs,
backorders with inbound promises, substitution, quotes, rate shopping, batches,
streams, idempotent retries and many clients racing for the last units.

The world is the demo's: nodes AVP3, IND1, ATL6 and STORE-NYC at their real
coordinates, the demo network restricted to them (see conftest.demo_world), orders
shipping to New York (ZIP 10001). Expected costs are worked out by hand from
service/demo_network.py:

* AVP3 -> new-york is a contracted lane: $5.50 + $0.10/unit + $0.15/lb; handling
  $1.30 a package, pick $0.23 a unit.
* IND1 -> new-york is zone 5 (653 mi): ground $9.20 for the first lb + $1.20 a lb
  more, 3 days; two_day $23.50, 2 days; overnight $46.00, 1 day. Handling $1.15,
  pick $0.20. ATL6 is zone 5 too: handling $1.50, pick $0.28.
* Extra packages pay the SLA tier's split penalty: $4 for STANDARD (the default).

Every test makes SKUs of its own, so tests share the server without sharing stock.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import order_service_pb2 as pb
from allocd.v1 import order_service_pb2_grpc as pb_grpc
from allocd.v1 import types_pb2 as types
from google.protobuf.timestamp_pb2 import Timestamp

from .conftest import DAY_MS, NEW_YORK_ZIP, RPC_TIMEOUT_S

NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT

#: A 2 lb SKU of 8x6x4 in (192 in^3, dimensional 1.4 lb): billable 2 lb alone.
HEAVY = {"weight_lb": 2.0, "dims": (8, 6, 4)}


def cost(carrier: int, handling: int, units: int, penalty: int = 0) -> pb.CostBreakdown:
    return pb.CostBreakdown(carrier_micros=carrier, handling_micros=handling,
                            units_micros=units, split_penalty_micros=penalty,
                            total_micros=carrier + handling + units + penalty)


def lines_of(package: pb.Package) -> list[tuple[str, str, int]]:
    return [(line.line_id, line.sku_id, line.quantity) for line in package.lines]


def ts(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


# ---- sourcing, split versus ship complete, costs ------------------------------------------
def test_an_order_ships_complete_from_the_only_node_holding_every_line(api, demo_world):
    w = demo_world
    a, b = w.sku(), w.sku(**HEAVY)
    w.stock(a, "IND1", 10)
    w.stock(a, "ATL6", 10)
    w.stock(b, "IND1", 10)

    answer = w.allocate(w.order((a, 2), (b, 1)), explain=True)

    alloc = answer.allocation
    assert alloc.status == pb.ORDER_STATUS_ALLOCATED
    assert alloc.method == pb.ALLOCATION_METHOD_EXACT
    assert not alloc.backorders and not alloc.exception_id
    (package,) = alloc.packages
    assert package.package_id == f"{alloc.order_id}-P1"
    assert (package.node_id, package.service_id, package.carrier) == ("IND1", "ground",
                                                                     "ParcelWay")
    assert lines_of(package) == [("1", a, 2), ("2", b, 1)]
    # 2 x 1 lb + 2 lb = 4 lb (dimensional 288 / 139 = 2.1): ground zone 5, 4 lb =
    # $9.20 + 3 x $1.20; handling $1.15; 3 picks x $0.20.
    assert package.billable_weight_lb == 4
    assert package.cost == cost(12_800_000, 1_150_000, 600_000)
    assert alloc.total_cost_micros == package.cost.total_micros == 14_550_000
    assert package.status == pb.PACKAGE_STATUS_ALLOCATED
    assert (package.promised_delivery.ToMilliseconds() - package.ship_date.ToMilliseconds()
            == 3 * DAY_MS)  # ground, zone 5
    assert alloc.promised_delivery == package.promised_delivery
    assert "ship complete from IND1" in alloc.rule

    options = {o.kind: o for o in alloc.options}
    assert [o.kind for o in alloc.options] == [pb.OPTION_KIND_SHIP_COMPLETE,
                                               pb.OPTION_KIND_SPLIT]
    assert [o.chosen for o in alloc.options] == [True, False]
    assert options[pb.OPTION_KIND_SHIP_COMPLETE].total_cost_micros == 14_550_000
    assert options[pb.OPTION_KIND_SHIP_COMPLETE].packages == 1
    # The cheapest split: a at IND1 ($9.20 + $1.20 + $1.15 + $0.40) and b at IND1
    # ($10.40 + $1.15 + $0.20), plus the $4 penalty.
    split = options[pb.OPTION_KIND_SPLIT]
    assert split.feasible and split.total_cost_micros == 11_950_000 + 11_750_000 + 4_000_000

    assert w.levels(a, "IND1") == (8, 2)
    assert w.levels(b, "IND1") == (9, 1)
    assert w.levels(a, "ATL6") == (10, 0)
    assert w.get(alloc.order_id).allocation == pb.Allocation(
        order_id=alloc.order_id, status=alloc.status, packages=alloc.packages,
        total_cost_micros=alloc.total_cost_micros, method=alloc.method, rule=alloc.rule,
        options=alloc.options, promised_delivery=alloc.promised_delivery, placed_units=3)
    assert alloc.placed_units == 3


def test_lines_at_two_nodes_split_into_two_packages_with_the_split_penalty_on_the_second(
        api, demo_world):
    w = demo_world
    a, b = w.sku(), w.sku(**HEAVY)
    w.stock(a, "AVP3", 5)
    w.stock(b, "IND1", 5)
    summary_before = api.summary()

    answer = w.allocate(w.order((a, 1), (b, 1)), explain=True)

    alloc = answer.allocation
    assert alloc.status == pb.ORDER_STATUS_ALLOCATED
    first, second = alloc.packages
    assert (first.package_id, second.package_id) == (f"{alloc.order_id}-P1",
                                                      f"{alloc.order_id}-P2")
    assert (first.node_id, lines_of(first)) == ("AVP3", [("1", a, 1)])
    assert (second.node_id, lines_of(second)) == ("IND1", [("2", b, 1)])
    # AVP3: the lane, $5.50 + $0.10 x 1 unit + $0.15 x 1 lb; handling $1.30; pick $0.23.
    assert first.cost == cost(5_750_000, 1_300_000, 230_000)
    # IND1: ground zone 5 at 2 lb, $9.20 + $1.20; $1.15; $0.20; the STANDARD penalty $4.
    assert second.cost == cost(10_400_000, 1_150_000, 200_000, 4_000_000)
    assert (first.billable_weight_lb, second.billable_weight_lb) == (1, 2)
    assert alloc.total_cost_micros == first.cost.total_micros + second.cost.total_micros
    assert alloc.total_cost_micros == 23_030_000
    assert alloc.promised_delivery == max(first.promised_delivery, second.promised_delivery,
                                          key=lambda t: t.ToMilliseconds())
    assert "2 packages" in alloc.rule

    kinds = [(o.kind, o.feasible, o.chosen) for o in alloc.options]
    assert kinds == [(pb.OPTION_KIND_SHIP_COMPLETE, False, False),
                     (pb.OPTION_KIND_SPLIT, True, True),
                     # A split also weighs waiting for inbound stock: there is none.
                     (pb.OPTION_KIND_WAIT_FOR_INBOUND, False, False)]
    assert sum(o.chosen for o in alloc.options) == 1
    (split,) = [o for o in alloc.options if o.chosen]
    assert (split.total_cost_micros, split.packages) == (23_030_000, 2)

    assert w.levels(a, "AVP3") == (4, 1)
    assert w.levels(b, "IND1") == (4, 1)
    summary = api.summary()
    assert summary.allocated == summary_before.allocated + 2
    assert summary.available == summary_before.available - 2


def test_allocate_without_explain_returns_no_options(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 1)
    alloc = w.allocate(w.order((a, 1))).allocation
    assert alloc.status == pb.ORDER_STATUS_ALLOCATED and not alloc.options
    assert alloc.rule  # the why is always there


def test_the_cheapest_node_wins_when_several_hold_the_line(api, demo_world):
    w = demo_world
    a = w.sku()
    for node in w.nodes:
        w.stock(a, node, 3)
    (package,) = w.allocate(w.order((a, 1))).allocation.packages
    # AVP3 $7.28 < IND1 $10.55 < ATL6 $10.98 < STORE-NYC $11.05 (ground zone 2 $8.20
    # + $2.40 + $0.45).
    assert package.node_id == "AVP3" and package.cost.total_micros == 7_280_000


def test_a_store_does_not_fulfil_the_marketplace_channel_it_blocks(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "STORE-NYC", 5)
    web = w.allocate(w.order((a, 1))).allocation
    (package,) = web.packages
    # ground zone 2, 1 lb $8.20; store handling $2.40, pick $0.45.
    assert package.node_id == "STORE-NYC" and package.cost == cost(8_200_000, 2_400_000,
                                                                   450_000)
    market = w.allocate(w.order((a, 1), channel_id="marketplace",
                                sla_tier=types.SLA_TIER_MARKETPLACE)).allocation
    assert market.status == pb.ORDER_STATUS_BACKORDERED and not market.packages
    assert [(b.sku_id, b.quantity) for b in market.backorders] == [(a, 1)]
    assert w.levels(a, "STORE-NYC") == (4, 1)


def test_an_unknown_postal_code_with_coordinates_goes_to_the_nearest_region(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 2)
    order = w.order((a, 1), postal_code="99999")
    order.ship_to.latitude, order.ship_to.longitude = 40.73, -73.99  # Manhattan
    (package,) = w.allocate(order).allocation.packages
    assert package.cost.carrier_micros == 9_200_000  # new-york, zone 5 from IND1


# ---- backorders ---------------------------------------------------------------------------
def test_a_backorder_without_a_date_is_given_one_when_inbound_stock_is_announced(
        api, demo_world):
    """No stock and none coming: backordered without a date. A purchase order is announced:
    the order is given the inbound's date in the same call (GetOrder says it, and its
    exception is superseded by one that does), and is filled when the stock is received."""
    w = demo_world
    a = w.sku()
    alloc = w.allocate(w.order((a, 2))).allocation
    (backorder,) = alloc.backorders
    assert not backorder.HasField("promised_date")
    arrival_ms = _now_ms() + 4 * DAY_MS
    reference = w.unique("PO")

    announced = api.inventory.ExpectInbound(inv.ExpectInboundRequest(
        request_id=api.rid(), reference=reference, lines=[
            inv.InboundLine(sku_id=a, node_id="IND1", quantity=2,
                            expected_time=ts(arrival_ms))]))

    assert not announced.result.backorders_filled  # dated, nothing placed
    (dated,) = w.get(alloc.order_id).allocation.backorders
    assert dated.promised_date.ToMilliseconds() // DAY_MS >= arrival_ms // DAY_MS
    first, second = w.exceptions(alloc.order_id, include_resolved=True)
    assert first.exception_id == alloc.exception_id and first.resolved
    assert second.exception_id in first.resolution_note and not second.resolved

    received = api.receive(a, "IND1", 2, inbound_reference=reference)

    assert list(received.result.backorders_filled) == [alloc.order_id]
    assert w.get(alloc.order_id).allocation.status == pb.ORDER_STATUS_ALLOCATED
    assert w.exceptions(alloc.order_id) == []


def test_ordering_more_than_exists_backorders_the_rest_with_the_inbound_date_as_promise(
        api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 2)
    arrival_ms = _now_ms() + 5 * DAY_MS
    api.inventory.ExpectInbound(inv.ExpectInboundRequest(
        request_id=api.rid(), reference=w.unique("PO"), lines=[
            inv.InboundLine(sku_id=a, node_id="IND1", quantity=10,
                            expected_time=ts(arrival_ms))]))

    alloc = w.allocate(w.order((a, 5)), explain=True).allocation

    assert alloc.status == pb.ORDER_STATUS_PARTIALLY_ALLOCATED
    (package,) = alloc.packages
    assert (package.node_id, lines_of(package)) == ("IND1", [("1", a, 2)])
    (backorder,) = alloc.backorders
    assert (backorder.line_id, backorder.sku_id, backorder.quantity) == ("1", a, 3)
    assert backorder.promised_date.ToMilliseconds() // DAY_MS == arrival_ms // DAY_MS
    assert alloc.exception_type == pb.EXCEPTION_TYPE_BACKORDER and alloc.exception_id
    assert "the rest is backordered" in alloc.rule
    chosen = [o.kind for o in alloc.options if o.chosen]
    assert pb.OPTION_KIND_BACKORDER in chosen
    (wait,) = [o for o in alloc.options if o.kind == pb.OPTION_KIND_WAIT_FOR_INBOUND]
    assert not wait.chosen
    (listed,) = w.exceptions(alloc.order_id)
    assert (listed.exception_id, listed.type, listed.owner_role, listed.resolved) == (
        alloc.exception_id, pb.EXCEPTION_TYPE_BACKORDER, "inventory_planning", False)
    assert w.levels(a, "IND1") == (0, 2)

    # The inbound arrives: the receipt allocates the three backordered units, and closes
    # the exception (a retry has nothing left to do).
    w.stock(a, "IND1", 10)
    (closed,) = w.exceptions(alloc.order_id, include_resolved=True)
    assert closed.resolved and closed.resolution == "RETRY"
    assert closed.resolution_note == "backorder filled"
    after = w.get(alloc.order_id).allocation
    assert after.status == pb.ORDER_STATUS_ALLOCATED and not after.backorders
    assert [(p.package_id, p.node_id, lines_of(p)) for p in after.packages] == [
        (f"{alloc.order_id}-P1", "IND1", [("1", a, 2)]),
        (f"{alloc.order_id}-P2", "IND1", [("1", a, 3)])]
    assert w.levels(a, "IND1") == (7, 5)
    assert w.exceptions(alloc.order_id) == []
    assert w.get(alloc.order_id).allocation.status == pb.ORDER_STATUS_ALLOCATED


def test_a_backorder_promised_from_inbound_that_is_cancelled_loses_its_date(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 2)
    po = w.unique("PO")
    api.inventory.ExpectInbound(inv.ExpectInboundRequest(
        request_id=api.rid(), reference=po, lines=[
            inv.InboundLine(sku_id=a, node_id="IND1", quantity=10,
                            expected_time=ts(_now_ms() + 5 * DAY_MS))]))
    alloc = w.allocate(w.order((a, 5))).allocation
    (backorder,) = alloc.backorders
    assert backorder.quantity == 3 and backorder.promised_date.ToMilliseconds()

    cancelled = api.inventory.CancelInbound(inv.CancelInboundRequest(
        request_id=api.rid(), reference=po))
    # The cancel, the old backorder exception resolved, the order decided again, and
    # the backorder exception that decision raises.
    assert cancelled.result.event_count == 4
    after = w.get(alloc.order_id).allocation
    assert after.status == pb.ORDER_STATUS_PARTIALLY_ALLOCATED
    (backorder,) = after.backorders
    assert backorder.quantity == 3 and not backorder.promised_date.ToMilliseconds()
    (listed,) = w.exceptions(alloc.order_id)  # asked again, without a date
    assert listed.exception_id != alloc.exception_id and not listed.resolved
    assert w.levels(a, "IND1") == (0, 2)


def test_an_order_for_stock_that_exists_nowhere_is_backordered_without_a_promise(
        api, demo_world):
    w = demo_world
    a = w.sku()
    alloc = w.allocate(w.order((a, 4))).allocation
    assert alloc.status == pb.ORDER_STATUS_BACKORDERED
    assert not alloc.packages and alloc.total_cost_micros == 0
    (backorder,) = alloc.backorders
    assert backorder.quantity == 4 and not backorder.HasField("promised_date")
    assert alloc.exception_type == pb.EXCEPTION_TYPE_BACKORDER
    assert "no sellable stock" in alloc.rule


@pytest.mark.parametrize("allow_split", [False, True])
def test_an_order_that_may_not_split_waits_whole_for_a_line_no_node_has(
        api, demo_world, allow_split):
    """One line in stock, the other nowhere: shipping the first now would make a second
    package later. An order that may not split waits whole, its stock left for others."""
    w = demo_world
    a, b = w.sku(), w.sku()
    w.stock(a, "IND1", 3)
    alloc = w.allocate(w.order((a, 1), (b, 2), allow_split=allow_split),
                       explain=True).allocation
    assert alloc.exception_type == pb.EXCEPTION_TYPE_BACKORDER and alloc.exception_id
    if allow_split:
        assert alloc.status == pb.ORDER_STATUS_PARTIALLY_ALLOCATED
        assert [[line.sku_id for line in p.lines] for p in alloc.packages] == [[a]]
        assert [bo.sku_id for bo in alloc.backorders] == [b]
        assert w.levels(a, "IND1") == (2, 1)
        return
    assert alloc.status == pb.ORDER_STATUS_BACKORDERED
    assert not alloc.packages and alloc.placed_units == 0
    assert sorted((bo.sku_id, bo.quantity) for bo in alloc.backorders) == sorted(
        [(a, 1), (b, 2)])
    assert "may not split" in alloc.rule
    assert [o.kind for o in alloc.options if o.chosen] == [pb.OPTION_KIND_BACKORDER]
    assert w.levels(a, "IND1") == (3, 0)
    assert w.get(alloc.order_id).allocation.status == pb.ORDER_STATUS_BACKORDERED


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


# ---- substitution ---------------------------------------------------------------------------
def test_an_out_of_stock_sku_is_replaced_by_the_closest_priced_sku_of_its_group(
        api, demo_world):
    w = demo_world
    group = w.unique("group")
    wanted = w.sku(group=group, price_micros=10_000_000)
    close = w.sku(group=group, price_micros=11_000_000)
    far = w.sku(group=group, price_micros=30_000_000)
    w.stock(close, "IND1", 5)
    w.stock(far, "AVP3", 5)  # cheaper to ship, but further in price

    alloc = w.allocate(w.order((wanted, 2), allow_substitution=True),
                       explain=True).allocation

    assert alloc.status == pb.ORDER_STATUS_ALLOCATED and not alloc.backorders
    (package,) = alloc.packages
    (line,) = package.lines
    assert (line.line_id, line.sku_id, line.quantity, line.substitutes_sku_id) == (
        "1", close, 2, wanted)
    assert package.node_id == "IND1"
    assert package.cost.split_penalty_micros == 0  # the order's only package
    (sub,) = [o for o in alloc.options if o.kind == pb.OPTION_KIND_SUBSTITUTE]
    assert sub.chosen and sub.feasible and sub.packages == 1
    assert f"substituted {wanted} -> {close}" in alloc.rule
    assert w.levels(close, "IND1") == (3, 2)
    assert w.levels(far, "AVP3") == (5, 0)


def test_without_allow_substitution_the_out_of_stock_line_is_backordered(api, demo_world):
    w = demo_world
    group = w.unique("group")
    wanted, other = w.sku(group=group), w.sku(group=group)
    w.stock(other, "IND1", 5)
    alloc = w.allocate(w.order((wanted, 2))).allocation
    assert alloc.status == pb.ORDER_STATUS_BACKORDERED and not alloc.packages
    assert w.levels(other, "IND1") == (5, 0)


# ---- quotes and rate shopping ---------------------------------------------------------------
def test_quote_promise_returns_the_plan_allocation_would_make_and_changes_nothing(
        api, demo_world):
    w = demo_world
    a, b = w.sku(), w.sku(**HEAVY)
    w.stock(a, "AVP3", 5)
    w.stock(b, "IND1", 5)
    order = w.order((a, 1), (b, 1))
    before = api.state()

    quote = api.orders.QuotePromise(pb.QuotePromiseRequest(order=order, explain=True))

    assert api.state() == before
    q = quote.allocation
    assert q.status == pb.ORDER_STATUS_ALLOCATED
    assert [(p.node_id, lines_of(p)) for p in q.packages] == [("AVP3", [("1", a, 1)]),
                                                             ("IND1", [("2", b, 1)])]
    assert q.total_cost_micros == 23_030_000
    assert sum(o.chosen for o in q.options) == 1
    assert w.levels(a, "AVP3") == (5, 0)
    with pytest.raises(grpc.RpcError) as caught:
        w.get(order.order_id)
    assert caught.value.code() == NOT_FOUND

    alloc = w.allocate(order, explain=True).allocation
    assert list(alloc.packages) == list(q.packages)
    assert (alloc.total_cost_micros, alloc.rule, list(alloc.options)) == (
        q.total_cost_micros, q.rule, list(q.options))


def test_quote_promise_without_an_order_id_and_for_too_much_stock(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 1)
    order = w.order((a, 3))
    order.order_id = ""
    before = api.state()
    q = api.orders.QuotePromise(pb.QuotePromiseRequest(order=order)).allocation
    assert api.state() == before
    assert q.order_id == "quote" and q.status == pb.ORDER_STATUS_PARTIALLY_ALLOCATED
    assert [(b.sku_id, b.quantity) for b in q.backorders] == [(a, 2)]


READY = dt.datetime(2030, 3, 4, 14, 0, tzinfo=dt.UTC)  # before IND1's 15:30 cut-off
READY_MS = int(READY.timestamp() * 1000)
READY_DAY_MS = READY_MS // DAY_MS * DAY_MS


def rate_shop(api, deliver_by_days: int | None, node: str = "IND1",
              ready_ms: int = READY_MS) -> pb.RateShopResponse:
    request = pb.RateShopRequest(
        node_id=node, ship_to=pb.ShipTo(postal_code=NEW_YORK_ZIP), weight_lb=1.0,
        dimensions=types.Dimensions(length_in=6, width_in=4, height_in=2), units=1,
        ready_time=ts(ready_ms))
    if deliver_by_days is not None:
        request.deliver_by.CopyFrom(ts(READY_DAY_MS + deliver_by_days * DAY_MS + 3_600_000))
    return api.orders.RateShop(request)


def test_rate_shop_quotes_every_service_and_picks_the_cheapest(api, demo_world):
    before = api.state()
    answer = rate_shop(api, None)
    assert api.state() == before
    assert (answer.zone, answer.billable_weight_lb) == (5, 1)
    got = [(q.service_id, q.carrier, q.cost_micros, q.transit_days,
            q.ship_date.ToMilliseconds(), q.delivery_date.ToMilliseconds(), q.meets_deadline)
           for q in answer.quotes]
    assert got == [
        ("ground", "ParcelWay", 9_200_000, 3, READY_DAY_MS, READY_DAY_MS + 3 * DAY_MS, True),
        ("two_day", "SkyBridge", 23_500_000, 2, READY_DAY_MS, READY_DAY_MS + 2 * DAY_MS, True),
        ("overnight", "RedEye Express", 46_000_000, 1, READY_DAY_MS, READY_DAY_MS + DAY_MS,
         True)]
    assert answer.best_service_id == "ground"


@pytest.mark.parametrize(("days", "meeting", "best"), [
    (3, ["ground", "two_day", "overnight"], "ground"),
    (2, ["two_day", "overnight"], "two_day"),
    (1, ["overnight"], "overnight"),
    (0, [], ""),
], ids=["three-days", "two-days", "next-day", "same-day"])
def test_with_a_tight_deliver_by_only_faster_services_meet_it(api, demo_world, days, meeting,
                                                               best):
    answer = rate_shop(api, days)
    assert [q.service_id for q in answer.quotes if q.meets_deadline] == meeting
    assert answer.best_service_id == best


def test_rate_shop_after_the_cut_off_ships_the_next_day(api, demo_world):
    late = READY_DAY_MS + 16 * 3_600_000  # 16:00 UTC, after IND1's 15:30
    answer = rate_shop(api, 3, ready_ms=late)
    assert {q.ship_date.ToMilliseconds() for q in answer.quotes} == {READY_DAY_MS + DAY_MS}
    # Shipped a day later, ground lands on day 4: too late for day 3.
    assert [q.service_id for q in answer.quotes if q.meets_deadline] == ["two_day",
                                                                         "overnight"]
    assert answer.best_service_id == "two_day"


def test_rate_shop_on_a_contracted_lane_prices_every_service_by_the_lane(api, demo_world):
    answer = rate_shop(api, None, node="AVP3")
    assert answer.zone == 2
    assert [q.cost_micros for q in answer.quotes] == [5_750_000] * 3
    assert answer.best_service_id == "ground"


# ---- many orders per call: AllocateOrders and AllocateStream ----------------------------------
def test_allocate_orders_answers_per_order_in_request_order_and_rejects_only_the_bad_one(
        api, demo_world):
    w = demo_world
    a, b = w.sku(), w.sku()
    w.stock(a, "IND1", 5)
    w.stock(b, "AVP3", 5)
    good1 = w.order((a, 2))
    bad = w.order(("NO-SUCH-SKU", 1))
    good2 = w.order((b, 1))
    dup = w.order((b, 1), order_id=good1.order_id)

    answer = api.orders.AllocateOrders(pb.AllocateOrdersRequest(
        request_id=api.rid(), orders=[good1, bad, good2, dup]))

    allocs = answer.allocations
    assert [x.order_id for x in allocs] == [good1.order_id, bad.order_id, good2.order_id,
                                            good1.order_id]
    assert [x.error_code for x in allocs] == [0, grpc.StatusCode.NOT_FOUND.value[0], 0,
                                              grpc.StatusCode.ALREADY_EXISTS.value[0]]
    assert "NO-SUCH-SKU" in allocs[1].error_message
    assert not allocs[1].packages and allocs[1].status == pb.ORDER_STATUS_UNSPECIFIED
    assert [(x.status, [p.node_id for p in x.packages]) for x in (allocs[0], allocs[2])] == [
        (pb.ORDER_STATUS_ALLOCATED, ["IND1"]), (pb.ORDER_STATUS_ALLOCATED, ["AVP3"])]
    assert w.levels(a, "IND1") == (3, 2)
    assert w.levels(b, "AVP3") == (4, 1)
    with pytest.raises(grpc.RpcError) as caught:
        w.get(bad.order_id)
    assert caught.value.code() == NOT_FOUND
    # The duplicate did not replace the first order.
    assert [line.sku_id for line in w.get(good1.order_id).order.lines] == [a]


def _basic_of(full: pb.Allocation) -> pb.Allocation:
    """What the basic view keeps of a full allocation."""
    basic = pb.Allocation()
    basic.CopyFrom(full)
    for name in ("packages", "backorders", "rule", "options"):
        basic.ClearField(name)
    return basic


def _without_exception(answer: pb.Allocation) -> pb.Allocation:
    """An allocation answer as GetOrder tells it (the exception is listed apart there)."""
    stripped = pb.Allocation()
    stripped.CopyFrom(answer)
    stripped.ClearField("exception_id")
    stripped.ClearField("exception_type")
    return stripped


def test_the_basic_view_answers_each_order_with_its_outcome_only(api, demo_world):
    # Allocated in one package, split in two with the rest backordered, held, refused:
    # each answer is the full allocation (as GetOrder tells it) without packages,
    # backorders and rule, and the orders are recorded in full.
    w = demo_world
    a, b = w.sku(), w.sku()
    w.stock(a, "IND1", 5)
    w.stock(b, "AVP3", 1)
    whole = w.order((a, 2))
    split = w.order((a, 1), (b, 3))
    held = w.order((a, 1), payment_status=pb.PAYMENT_STATUS_ON_HOLD)
    bad = w.order(("NO-SUCH-SKU", 1))

    answer = api.orders.AllocateOrders(pb.AllocateOrdersRequest(
        request_id=api.rid(), orders=[whole, split, held, bad],
        view=pb.ALLOCATION_VIEW_BASIC))

    allocs = answer.allocations
    assert [x.status for x in allocs] == [
        pb.ORDER_STATUS_ALLOCATED, pb.ORDER_STATUS_PARTIALLY_ALLOCATED, pb.ORDER_STATUS_HELD,
        pb.ORDER_STATUS_UNSPECIFIED]
    for order, basic in zip((whole, split, held), allocs, strict=False):
        full = w.get(order.order_id).allocation
        full.ClearField("options")
        assert full.packages or full.status == pb.ORDER_STATUS_HELD
        assert _without_exception(basic) == _basic_of(full)
    assert allocs[0].total_cost_micros > 0 and allocs[0].promised_delivery.seconds > 0
    assert allocs[1].exception_type == pb.EXCEPTION_TYPE_BACKORDER and allocs[1].exception_id
    assert allocs[2].exception_type == pb.EXCEPTION_TYPE_PAYMENT_HOLD
    assert allocs[3].error_code == NOT_FOUND.value[0] and "NO-SUCH-SKU" in allocs[3].error_message
    assert [len(w.get(o.order_id).allocation.packages) for o in (whole, split)] == [1, 2]
    assert w.levels(a, "IND1") == (2, 3)
    # The same calls with the full view (the default) answer in full.
    order = w.order((a, 1))
    full_answer = api.orders.AllocateOrders(pb.AllocateOrdersRequest(
        request_id=api.rid(), orders=[order], view=pb.ALLOCATION_VIEW_FULL))
    assert full_answer.allocations[0].packages and full_answer.allocations[0].rule


def test_the_basic_view_on_single_order_calls_and_streams(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 3)
    unary = api.orders.AllocateOrder(pb.AllocateOrderRequest(
        request_id=api.rid(), order=w.order((a, 1)), view=pb.ALLOCATION_VIEW_BASIC),
        timeout=RPC_TIMEOUT_S).allocation
    requests = [pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 1)),
                                         view=view)
                for view in (pb.ALLOCATION_VIEW_BASIC, pb.ALLOCATION_VIEW_UNSPECIFIED)]
    streamed = [x.allocation for x in api.orders.AllocateStream(iter(requests),
                                                                timeout=RPC_TIMEOUT_S)]
    for basic in (unary, streamed[0]):
        assert basic.status == pb.ORDER_STATUS_ALLOCATED and basic.total_cost_micros > 0
        assert not basic.packages and not basic.rule
        assert basic == _basic_of(w.get(basic.order_id).allocation)
    assert streamed[1].packages and streamed[1].rule  # unspecified: the full view
    assert w.levels(a, "IND1") == (0, 3)


@pytest.mark.parametrize("fields", [{"view": 7}, {"view": pb.ALLOCATION_VIEW_BASIC,
                                                   "explain": True}],
                         ids=["unknown-view", "explain-without-the-full-view"])
def test_a_bad_view_is_refused_and_changes_nothing(api, demo_world, fields):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 2)
    field = "view" if fields["view"] == 7 else "explain"
    for call, request in (
            (api.orders.AllocateOrders, pb.AllocateOrdersRequest(
                request_id=api.rid(), orders=[w.order((a, 1))], **fields)),
            (api.orders.AllocateOrder, pb.AllocateOrderRequest(
                request_id=api.rid(), order=w.order((a, 1)), **fields))):
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=RPC_TIMEOUT_S)
        assert caught.value.code() == INVALID and field in caught.value.details()
    stream = api.orders.AllocateStream(iter([pb.AllocateStreamRequest(
        request_id=api.rid(), order=w.order((a, 1)), **fields)]), timeout=RPC_TIMEOUT_S)
    (answer,) = stream  # refused (the undefined value at the edge), the stream goes on
    assert answer.error_code == INVALID.value[0] and field in answer.error_message
    assert w.levels(a, "IND1") == (2, 0)


@pytest.mark.parametrize("premium_first", [False, True], ids=["premium-last",
                                                              "premium-first"])
def test_the_premium_order_gets_the_last_unit_whatever_the_request_order(
        api, demo_world, premium_first):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 1)
    premium = w.order((a, 1), sla_tier=types.SLA_TIER_PREMIUM)
    standard = w.order((a, 1), sla_tier=types.SLA_TIER_STANDARD)
    orders = [premium, standard] if premium_first else [standard, premium]

    allocs = api.orders.AllocateOrders(pb.AllocateOrdersRequest(
        request_id=api.rid(), orders=orders)).allocations

    by_id = {x.order_id: x for x in allocs}
    assert [x.order_id for x in allocs] == [o.order_id for o in orders]
    assert by_id[premium.order_id].status == pb.ORDER_STATUS_ALLOCATED
    assert [p.node_id for p in by_id[premium.order_id].packages] == ["IND1"]
    assert by_id[standard.order_id].status == pb.ORDER_STATUS_BACKORDERED
    assert by_id[standard.order_id].exception_type == pb.EXCEPTION_TYPE_BACKORDER
    assert w.levels(a, "IND1") == (0, 1)


def test_allocate_stream_answers_each_message_in_order_and_goes_on_after_a_bad_one(
        api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 3)
    requests = [
        pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 1))),
        pb.AllocateStreamRequest(request_id=api.rid(), order=w.order(("NO-SUCH-SKU", 1))),
        pb.AllocateStreamRequest(request_id="", order=w.order((a, 1))),
        pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 0))),
        pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 2)), explain=True),
        pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 1))),
    ]

    answers = list(api.orders.AllocateStream(iter(requests), timeout=RPC_TIMEOUT_S))

    assert [x.request_id for x in answers] == [r.request_id for r in requests]
    assert [x.error_code for x in answers] == [
        0, NOT_FOUND.value[0], INVALID.value[0], INVALID.value[0], 0, 0]
    assert [x.allocation.status for x in answers] == [
        pb.ORDER_STATUS_ALLOCATED, 0, 0, 0, pb.ORDER_STATUS_ALLOCATED,
        pb.ORDER_STATUS_BACKORDERED]
    assert [x.allocation.order_id for x in (answers[0], answers[4], answers[5])] == [
        requests[0].order.order_id, requests[4].order.order_id, requests[5].order.order_id]
    assert answers[4].allocation.options and not answers[0].allocation.options
    assert all(x.error_message for x in answers[1:4])
    assert all(x.result.event_count > 0 for x in (answers[0], answers[4], answers[5]))
    assert w.levels(a, "IND1") == (0, 3)


def test_a_message_the_edge_refuses_is_answered_in_the_stream_which_goes_on(api, demo_world):
    """A message that parses but carries what no request may (NaN, a control character,
    an undefined enum value) is answered INVALID_ARGUMENT under its request id, like any
    other refusal; the messages after it are answered as usual."""
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 3)
    requests = [
        pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 1))),
        pb.AllocateStreamRequest(request_id=api.rid(),
                                 order=w.order((a, 1), fraud_score=float("nan"))),
        pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 1), channel_id="w\x01")),
        pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 1), sla_tier=77)),
        pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 1))),
    ]
    answers = list(api.orders.AllocateStream(iter(requests), timeout=RPC_TIMEOUT_S))
    assert [x.request_id for x in answers] == [r.request_id for r in requests]
    assert [x.error_code for x in answers] == [0, INVALID.value[0], INVALID.value[0],
                                               INVALID.value[0], 0]
    assert "fraud_score" in answers[1].error_message
    assert [x.allocation.status for x in (answers[0], answers[4])] == [
        pb.ORDER_STATUS_ALLOCATED] * 2
    assert w.levels(a, "IND1") == (1, 2)
    refused = requests[1].order.order_id
    api.rejects(NOT_FOUND, api.orders.GetOrder, pb.GetOrderRequest(order_id=refused))


@pytest.mark.parametrize("request_id", ["r" * 5000, "r\x1b[2J\x00"])
def test_a_message_whose_request_id_is_refused_ends_the_stream(api, demo_world, request_id):
    """Such a request id is not one to answer under: echoed back and written to the audit
    log, a caller could fill both at any size. The stream ends INVALID_ARGUMENT there."""
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 3)
    requests = [pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 1))),
                pb.AllocateStreamRequest(request_id=request_id, order=w.order((a, 1)))]
    answers = api.orders.AllocateStream(iter(requests), timeout=RPC_TIMEOUT_S)
    assert next(answers).error_code == 0
    with pytest.raises(grpc.RpcError) as ended:
        next(answers)
    assert ended.value.code() == INVALID and "request_id" in ended.value.details()
    assert w.levels(a, "IND1") == (2, 1)


def test_a_store_failure_is_answered_unavailable_in_the_stream_which_goes_on(api, demo_world):
    """A message whose commit the store fails is answered UNAVAILABLE under its request
    id (as a unary call would be), not the end of the stream with UNKNOWN; once the server
    has rebuilt its state from the store, the stream's next messages are allocated."""
    import time

    from service.store import StoreUnavailable

    from .conftest import RUNNING

    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 3)
    engine = RUNNING[int(api.target.rsplit(":", 1)[1])].engine
    real, failing = engine.store.append, [1]

    async def append(commit):
        if failing[0]:
            failing[0] -= 1
            raise StoreUnavailable("the disk is full (injected)")
        return await real(commit)

    def messages():
        yield pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 1)))
        deadline = time.monotonic() + 30
        while (engine.broken or failing[0]) and time.monotonic() < deadline:
            time.sleep(0.05)  # (the engine rebuilds itself from the store)
        yield pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 1)))

    engine.store.append = append
    try:
        answers = list(api.orders.AllocateStream(messages(), timeout=RPC_TIMEOUT_S))
    finally:
        engine.store.append = real
    assert [x.error_code for x in answers] == [grpc.StatusCode.UNAVAILABLE.value[0], 0]
    assert "disk is full" in answers[0].error_message
    assert answers[1].allocation.status == pb.ORDER_STATUS_ALLOCATED
    assert w.levels(a, "IND1") == (2, 1)  # the failed one changed nothing


def test_a_stream_with_many_messages_in_flight_applies_them_in_stream_order(api, demo_world):
    # 300 one-unit orders for 120 units, sent without waiting: exactly the first 120 get
    # stock (the stream's order is the order of application), the rest are backordered;
    # a request id sent twice in the stream is answered twice with the same allocation.
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 120)
    requests = [pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 1)))
                for _ in range(300)]
    requests.insert(150, requests[10])
    answers = list(api.orders.AllocateStream(iter(requests), timeout=RPC_TIMEOUT_S))
    assert [x.request_id for x in answers] == [r.request_id for r in requests]
    statuses = [x.allocation.status for x in answers]
    allocated = [i for i, status in enumerate(statuses)
                 if status == pb.ORDER_STATUS_ALLOCATED]
    assert allocated == [*range(120), 150]
    assert answers[150].result.replayed and answers[150].allocation == answers[10].allocation
    assert all(status == pb.ORDER_STATUS_BACKORDERED for status in statuses[120:150])
    assert w.levels(a, "IND1") == (0, 120)


def test_a_request_id_reused_in_a_stream_for_another_order_is_refused_and_the_stream_goes_on(
        api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 5)
    first = pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 1)))
    reused = pb.AllocateStreamRequest(request_id=first.request_id, order=w.order((a, 2)))
    after = pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 1)))
    answers = list(api.orders.AllocateStream(iter([first, reused, first, after]),
                                             timeout=RPC_TIMEOUT_S))
    assert [x.error_code for x in answers] == [
        0, grpc.StatusCode.ALREADY_EXISTS.value[0], 0, 0]
    assert answers[2].result.replayed and answers[2].allocation == answers[0].allocation
    assert answers[3].allocation.status == pb.ORDER_STATUS_ALLOCATED
    assert w.levels(a, "IND1") == (3, 2)


# ---- idempotency ------------------------------------------------------------------------------
def test_a_retried_allocate_order_replays_the_same_allocation_and_writes_nothing(
        api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 5)
    request = pb.AllocateOrderRequest(request_id=api.rid(), order=w.order((a, 2)),
                                      explain=True)
    first = api.orders.AllocateOrder(request)
    state = api.state()

    again = api.orders.AllocateOrder(request)

    assert not first.result.replayed and again.result.replayed
    assert again.allocation == first.allocation
    assert (again.result.first_sequence, again.result.last_sequence,
            again.result.event_count) == (first.result.first_sequence,
                                          first.result.last_sequence,
                                          first.result.event_count)
    assert api.state() == state
    assert w.levels(a, "IND1") == (3, 2)


def test_the_same_request_id_with_another_order_is_refused(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 5)
    request_id = api.rid()
    w.allocate(w.order((a, 1)), request_id=request_id)
    other = pb.AllocateOrderRequest(request_id=request_id, order=w.order((a, 1)))
    api.rejects(grpc.StatusCode.ALREADY_EXISTS, api.orders.AllocateOrder, other,
                details="request_id")
    with pytest.raises(grpc.RpcError) as caught:
        w.get(other.order.order_id)
    assert caught.value.code() == NOT_FOUND
    assert w.levels(a, "IND1") == (4, 1)


# ---- concurrency ------------------------------------------------------------------------------
CLIENTS = 100
UNITS_PER_NODE = 15


@pytest.mark.timeout(300)  # CLIENTS channels and threads: slow on a loaded machine
def test_concurrent_clients_allocate_exactly_the_units_on_hand(api, demo_world):
    w = demo_world
    a = w.sku()
    w.stock(a, "AVP3", UNITS_PER_NODE)
    w.stock(a, "IND1", UNITS_PER_NODE)
    barrier = threading.Barrier(CLIENTS)

    def client(i: int) -> pb.Allocation:
        with grpc.insecure_channel(api.target) as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
            stub = pb_grpc.OrderServiceStub(channel)
            request = pb.AllocateOrderRequest(request_id=api.rid(), order=w.order((a, 1)))
            barrier.wait(timeout=30)
            return stub.AllocateOrder(request, timeout=30).allocation

    seen: list[tuple[int, int]] = []  # (least AVAILABLE, AVAILABLE + ALLOCATED in all)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            levels = api.inventory.GetStockLevels(inv.GetStockLevelsRequest(
                sku_ids=[a], node_ids=["AVP3", "IND1"]), timeout=RPC_TIMEOUT_S).levels
            seen.append((min(lv.available for lv in levels),
                         sum(lv.available + lv.allocated for lv in levels)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            allocs = list(pool.map(client, range(CLIENTS)))
    finally:
        done.set()
        watcher.join(timeout=30)
    # Every view during the race: never negative, and no unit created or lost.
    assert seen and all(least >= 0 and units == 2 * UNITS_PER_NODE for least, units in seen)

    allocated = sum(line.quantity for x in allocs for p in x.packages for line in p.lines)
    assert allocated == 2 * UNITS_PER_NODE
    assert Counter(x.status for x in allocs) == {
        pb.ORDER_STATUS_ALLOCATED: 2 * UNITS_PER_NODE,
        pb.ORDER_STATUS_BACKORDERED: CLIENTS - 2 * UNITS_PER_NODE}
    assert Counter(p.node_id for x in allocs for p in x.packages) == {
        "AVP3": UNITS_PER_NODE, "IND1": UNITS_PER_NODE}
    assert all(x.exception_type == pb.EXCEPTION_TYPE_BACKORDER
               for x in allocs if x.status == pb.ORDER_STATUS_BACKORDERED)
    levels = api.inventory.GetStockLevels(inv.GetStockLevelsRequest(
        sku_ids=[a], node_ids=["AVP3", "IND1"])).levels
    assert [(lv.node_id, lv.available, lv.allocated) for lv in levels] == [
        ("AVP3", 0, UNITS_PER_NODE), ("IND1", 0, UNITS_PER_NODE)]
    assert api.sellable(a) == 0
    # What GetOrder says agrees with what the callers were told.
    for x in allocs[:10]:
        assert w.get(x.order_id).allocation.status == x.status


def test_a_malformed_message_amid_many_in_flight_ends_the_stream_cleanly(api, demo_world):
    # Valid orders in flight, then bytes that do not parse: the call ends with
    # INVALID_ARGUMENT (never a hang or an internal error), and the server goes on.
    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 100)
    good = [pb.AllocateStreamRequest(request_id=api.rid(), order=w.order((a, 1)))
            .SerializeToString() for _ in range(60)]
    payloads = [*good, b"\xff\xff\xff", *good[:3]]
    call = api.channel.stream_stream(
        "/allocd.v1.OrderService/AllocateStream", request_serializer=lambda m: m,
        response_deserializer=pb.AllocateStreamResponse.FromString)
    answered = []
    with pytest.raises(grpc.RpcError) as caught:
        for response in call(iter(payloads), timeout=RPC_TIMEOUT_S):
            answered.append(response.request_id)
    assert caught.value.code() == INVALID
    assert len(answered) <= 60
    assert api.orders.AllocateOrder(pb.AllocateOrderRequest(
        request_id=api.rid(), order=w.order((a, 1))), timeout=RPC_TIMEOUT_S).allocation.packages
