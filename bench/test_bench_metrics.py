"""A Prometheus scrape of the engine's gauges with 100,000 orders in the book (and the
exceptions their backorders raised), against the count it replaced: every order and
every exception walked at each scrape. A scrape runs on the server's event loop, so
whatever it takes, every call in flight waits out.

    python -m pytest bench/test_bench_metrics.py --benchmark-only
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
from allocd.v1 import order_service_pb2 as opb

from bench.grpc_ratio import OrderFactory
from bench.test_bench_order_path import N_SKUS, NOW_MS, loaded_demo_ledger, order_path
from core.ledger import Ledger
from service.metrics import EngineCollector

ORDERS = 100_000


@pytest.fixture(scope="module")
def busy_ledger() -> Ledger:
    ledger = loaded_demo_ledger()
    factory = OrderFactory(N_SKUS, 100, "M")
    ids = itertools.count()
    for _ in range(ORDERS // 100):
        order_path(ledger, opb.AllocateOrdersRequest(
            request_id=f"m{next(ids)}", orders=[factory.order() for _ in range(100)]), False)
    assert len(ledger.orders.orders) == ORDERS
    return ledger


def _counted_one_by_one(ledger: Ledger) -> tuple[dict[str, int], dict[str, int]]:
    """What a scrape counted before the books kept the counts."""
    orders: dict[str, int] = {}
    for record in ledger.orders.orders.values():
        orders[record.status.name.lower()] = orders.get(record.status.name.lower(), 0) + 1
    open_: dict[str, int] = {}
    for exception in ledger.exceptions.by_id.values():
        if not exception.resolved:
            name = exception.exception_type.name.lower()
            open_[name] = open_.get(name, 0) + 1
    return orders, open_


def test_scrape(benchmark, busy_ledger):
    engine = SimpleNamespace(ledger=busy_ledger, durable_seq=busy_ledger.last_seq,
                             snapshot_seq=0, broken=False, joined_by={},
                             clock=lambda: NOW_MS)
    collector = EngineCollector(engine, lambda read: read())
    families = benchmark(lambda: list(collector.collect()))
    orders = next(f for f in families if f.name == "allocd_orders")
    assert sum(s.value for s in orders.samples) == ORDERS


def test_the_count_a_scrape_made_before(benchmark, busy_ledger):
    orders, _ = benchmark(_counted_one_by_one, busy_ledger)
    assert sum(orders.values()) == ORDERS
