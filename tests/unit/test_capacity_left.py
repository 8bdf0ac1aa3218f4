"""A node's capacity left today: its daily capacity less the orders it ships today
(0 means unlimited), as the allocation kernel reads it."""

from __future__ import annotations

import dataclasses

import numpy as np

from core import commands as c
from core.decisions import UNLIMITED_CAPACITY, capacity_left
from core.exceptions import ExceptionType, Resolution
from core.model import NodeSpec
from core.operations import execute
from tests.unit.test_orders_stateful import DAY_MS, NOW
from tests.unit.test_reopt import _ledger, _order


def test_capacity_left_is_the_daily_capacity_less_the_orders_shipping_that_day():
    ledger = _ledger({("a", "n0"): 5})
    execute(ledger, c.UpsertNodes((NodeSpec("n0", latitude=40.0, longitude=-75.0,
                                            daily_capacity=3),)), NOW)
    execute(ledger, c.AllocateOrders((_order("o1", {"a": 1}), _order("o2", {"a": 1}))), NOW)
    (ship_day,) = {ledger.orders.packages[p].plan.ship_ms // DAY_MS
                   for o in ("o1", "o2") for p in ledger.orders.orders[o].package_ids}
    left = capacity_left(ledger, ledger.orders, ship_day * DAY_MS)
    assert left.dtype == np.int64
    assert left.tolist() == [1, UNLIMITED_CAPACITY, UNLIMITED_CAPACITY]
    # Another day, the whole capacity again.
    assert capacity_left(ledger, ledger.orders, (ship_day + 1) * DAY_MS).tolist()[0] == 3
    # A third order fills n0 for that day.
    execute(ledger, c.AllocateOrders((_order("o3", {"a": 1}),)), NOW)
    assert capacity_left(ledger, ledger.orders, ship_day * DAY_MS).tolist()[0] == 0


def _slots_at_n0(capacity: int = 1, stock: int = 5):
    """n0 with `stock` units of 'a' and a daily capacity of `capacity` orders."""
    ledger = _ledger({("a", "n0"): stock})
    execute(ledger, c.UpsertNodes((NodeSpec("n0", latitude=40.0, longitude=-75.0,
                                            daily_capacity=capacity),)), NOW)
    return ledger


def _ships_from(ledger, order_id):
    book = ledger.orders
    return {ledger.catalog.nodes[book.packages[p].plan.node].node_id
            for p in book.orders[order_id].package_ids
            if book.packages[p].quantities}


def test_a_cancelled_order_gives_its_slot_at_the_node_back():
    ledger = _slots_at_n0()
    execute(ledger, c.AllocateOrders((_order("o1", {"a": 1}),)), NOW)
    assert _ships_from(ledger, "o1") == {"n0"}
    execute(ledger, c.CancelOrder("o1"), NOW)
    assert not any(ledger.orders.node_day_orders.values())
    execute(ledger, c.AllocateOrders((_order("o2", {"a": 1}),)), NOW)
    assert _ships_from(ledger, "o2") == {"n0"}  # the slot o1 no longer takes


def test_a_package_picked_short_to_nothing_gives_its_slot_back():
    ledger = _slots_at_n0()
    execute(ledger, c.AllocateOrders((_order("o1", {"a": 1}),)), NOW)
    (package_id,) = ledger.orders.orders["o1"].package_ids
    execute(ledger, c.ReleaseWave("n0"), NOW)
    execute(ledger, c.ConfirmPick(package_id, (("0", 0),)), NOW)
    # Nothing was found: the package does not ship, and takes no slot once the pick is
    # recorded (the pick's own re-allocation still saw it taken: backordered).
    assert ledger.orders.packages[package_id].status.name == "CANCELLED"
    assert ledger.orders.node_day_orders.get((0, _day(ledger, package_id)), 0) == 0
    assert _ships_from(ledger, "o1") == set()
    (backorder,) = [e for e in ledger.exceptions.open_for("o1")
                    if e.exception_type == ExceptionType.BACKORDER]
    execute(ledger, c.ResolveException(backorder.exception_id, Resolution.RETRY,
                                         role="inventory_planning"), NOW)
    assert _ships_from(ledger, "o1") == {"n0"}  # n0 has 4 more, and its slot is free


def test_an_order_placed_again_where_it_already_ships_takes_one_slot_not_two():
    ledger = _ledger({("a", "n0"): 5})
    execute(ledger, c.AllocateOrders((_order("o1", {"a": 3}),)), NOW)
    (package_id,) = ledger.orders.orders["o1"].package_ids
    execute(ledger, c.ReleaseWave("n0"), NOW)
    execute(ledger, c.ConfirmPick(package_id, (("0", 2),)), NOW)  # one short
    packages = ledger.orders.orders["o1"].package_ids
    assert len(packages) == 2
    days = {(ledger.orders.packages[p].plan.node, _day(ledger, p)) for p in packages}
    assert len(days) == 1  # placed again at n0, the same day
    assert ledger.orders.node_day_orders[days.pop()] == 1


def _day(ledger, package_id):
    return ledger.orders.packages[package_id].plan.ship_ms // DAY_MS


HOUR_MS = 3_600_000


def _placed(ledger, order_ids):
    return [bool(_ships_from(ledger, o)) for o in order_ids]


def test_after_the_pickup_a_node_takes_no_more_than_its_capacity_for_tomorrow():
    # At 18:00 every service's pickup (17:00) is past: orders ship tomorrow, and take
    # tomorrow's slots. Counted against today's, n0 took any number of them.
    ledger = _slots_at_n0(capacity=2, stock=10)
    late = NOW + 9 * HOUR_MS
    for k in range(4):
        execute(ledger, c.AllocateOrders((_order(f"o{k}", {"a": 1}),)), late)
    assert _placed(ledger, [f"o{k}" for k in range(4)]) == [True, True, False, False]
    tomorrow = NOW // DAY_MS + 1
    assert ledger.orders.node_day_orders == {(0, tomorrow): 2}
    assert capacity_left(ledger, ledger.orders, late).tolist()[0] == 0
    # Before the pickup, today's slots are free still: n0 takes two more for today.
    assert capacity_left(ledger, ledger.orders, NOW).tolist()[0] == 2


def test_between_two_pickups_the_fewer_slots_of_the_two_days_hold():
    # Ground's pickup at 17:00, air's at 20:00: at 18:00 an order ships tomorrow by
    # ground, today by air. n0 ships one today already and none tomorrow: a command may
    # place one more there, whichever day it takes, and neither day passes its capacity
    # of two.
    from core.decisions import SHIPS_EITHER, SHIPS_TODAY, SHIPS_TOMORROW, ship_days
    from tests.unit.test_orders_stateful import NETWORK

    ledger = _slots_at_n0(capacity=2, stock=10)
    ground, air = NETWORK.services
    network = dataclasses.replace(NETWORK, services=(
        ground, dataclasses.replace(air, pickup_cutoff_min=20 * 60)))
    execute(ledger, c.SetNetwork(network), NOW)
    execute(ledger, c.AllocateOrders((_order("o0", {"a": 1}),)), NOW)
    evening = NOW + 9 * HOUR_MS
    assert ship_days(ledger, NOW)[0] == SHIPS_TODAY
    assert ship_days(ledger, evening)[0] == SHIPS_EITHER
    assert ship_days(ledger, NOW + 12 * HOUR_MS)[0] == SHIPS_TOMORROW
    assert capacity_left(ledger, ledger.orders, evening).tolist()[0] == 1
    batch = tuple(_order(f"b{k}", {"a": 1}) for k in range(3))
    execute(ledger, c.AllocateOrders(batch), evening)
    assert _placed(ledger, ["b0", "b1", "b2"]) == [True, False, False]
    for k in range(3):
        execute(ledger, c.AllocateOrders((_order(f"u{k}", {"a": 1}),)), evening)
    assert _placed(ledger, ["u0", "u1", "u2"]) == [True, False, False]
    assert sorted(ledger.orders.node_day_orders.values()) == [1, 2]


def test_a_pickup_at_the_minute_itself_still_ships_today():
    from core.decisions import SHIPS_TODAY, SHIPS_TOMORROW, ship_days

    ledger = _slots_at_n0(capacity=2, stock=10)
    day0 = NOW // DAY_MS * DAY_MS
    assert ship_days(ledger, day0 + 17 * HOUR_MS + 59_999)[0] == SHIPS_TODAY
    assert ship_days(ledger, day0 + 17 * HOUR_MS + 60_000)[0] == SHIPS_TOMORROW
