"""What a receipt costs once it fills backorders (core.order_ops.stock_arrived), on the
demo catalogue: one unit received of a SKU with a backlog of 100 or 10,000 single-unit
backorders (it fills the first by priority, deciding at most 40 of them), against the
same receipt of a SKU no order waits for, measured in the same run.

    python -m pytest bench/test_bench_backorder_fill.py --benchmark-only
"""

from __future__ import annotations

import itertools

import pytest

from bench.test_bench_order_path import NOW_MS, loaded_demo_ledger
from core import commands as c
from core.ledger import Ledger
from core.model import SkuSpec
from core.network import SlaTier
from core.operations import execute
from core.orders import OrderLineSpec, OrderSpec, OrderStatus

NODE = "IND1"


def _backlog(ledger: Ledger, sku_id: str, orders: int) -> None:
    """A new SKU with no stock, and `orders` single-unit orders of it: all backordered."""
    execute(ledger, c.UpsertSkus((SkuSpec(sku_id, weight_lb=1.0, length_in=6, width_in=4,
                                          height_in=2),)), NOW_MS)
    for start in range(0, orders, 1000):
        execute(ledger, c.AllocateOrders(tuple(
            OrderSpec(f"{sku_id}-o{k}", "web", SlaTier.STANDARD,
                      (OrderLineSpec("1", sku_id, 1),), postal_code="10001")
            for k in range(start, min(start + 1000, orders)))), NOW_MS)
    assert all(ledger.orders.orders[f"{sku_id}-o{k}"].status == OrderStatus.BACKORDERED
               for k in range(orders))


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    ledger = loaded_demo_ledger()
    for backlog in (0, 100, 10_000):
        _backlog(ledger, f"WAITED-{backlog}", backlog)
    return ledger


@pytest.mark.parametrize("backlog", [0, 100, 10_000])
def test_a_receipt_of_one_unit(benchmark, ledger, backlog):
    sku_id = f"WAITED-{backlog}"
    ids = itertools.count()

    def receive() -> tuple[str, ...]:
        return execute(ledger, c.ReceiveStock((c.ReceiptLine(sku_id, NODE, 1),)), NOW_MS,
                       f"fill-{backlog}-{next(ids)}").filled

    filled = benchmark.pedantic(receive, rounds=60, warmup_rounds=3)
    assert len(filled) == (1 if backlog else 0)
