"""A node's capacity left today: its daily capacity less the orders it ships today
(0 means unlimited), as the allocation kernel reads it."""

from __future__ import annotations

import numpy as np

from core import commands as c
from core.decisions import UNLIMITED_CAPACITY, capacity_left
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
