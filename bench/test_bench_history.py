"""Calls a busy server answers while its history grows, with 100,000 orders in the book
(and the exceptions their backorders raised), each against the walk it replaced:

- a Prometheus scrape of the engine's gauges, against counting every order and every
  exception one by one, as a scrape did;
- a ReleaseWave of 10 packages, against finding the node's waiting packages among every
  package ever made and sorting them all, as it did;
- collecting re-optimisation's orders when all but 2,000 of them have been released to
  the warehouses, against looking at every order ever received, as it did;
- a page of the open tasks (ListTasks) when all but 100 of 100,000 are done, against
  filtering every task ever opened.

All run on the server's event loop, so whatever they take, every call in flight waits
out.

    python -m pytest bench/test_bench_history.py --benchmark-only
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
from allocd.v1 import order_service_pb2 as opb

from bench.grpc_ratio import OrderFactory
from bench.test_bench_order_path import N_SKUS, NOW_MS, loaded_demo_ledger, order_path
from core import commands as c
from core import reopt
from core.alerts import OpsBook, TaskDone, TaskInfo, TaskType
from core.ledger import Ledger
from core.model import EventKind
from core.operations import execute
from core.orders import PackageState, PackageStatus
from core.reopt import _eligible
from service.metrics import EngineCollector
from service.paging import keep_all, page, page_open

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
                             snapshot_seq=0, snapshot_took_s=0.0, broken=False, joined_by={},
                             clock=lambda: NOW_MS)
    collector = EngineCollector(engine, lambda read: read())
    families = benchmark(lambda: list(collector.collect()))
    orders = next(f for f in families if f.name == "allocd_orders")
    assert sum(s.value for s in orders.samples) == ORDERS


def test_the_count_a_scrape_made_before(benchmark, busy_ledger):
    orders, _ = benchmark(_counted_one_by_one, busy_ledger)
    assert sum(orders.values()) == ORDERS


def _waiting_found_by_walking(ledger: Ledger, node: int, limit: int) -> list[PackageState]:
    """What ReleaseWave did before the book kept each node's waiting packages."""
    book = ledger.orders
    candidates = [s for s in book.packages.values()
                  if s.plan.node == node and s.status == PackageStatus.ALLOCATED]

    def priority(state: PackageState) -> tuple[int, int, int, int, str]:
        record = book.orders[state.order_id]
        return (int(record.spec.tier), record.spec.deliver_by_ms or (1 << 62),
                state.plan.ship_ms, record.seq, state.plan.package_id)

    candidates.sort(key=priority)
    return candidates[:limit]


def _busiest_node(ledger: Ledger) -> int:
    return max(ledger.orders.allocated_at, key=lambda n: len(ledger.orders.allocated_at[n]))


def test_release_wave(benchmark, busy_ledger):
    node = _busiest_node(busy_ledger)
    node_id = busy_ledger.catalog.nodes[node].node_id
    waves = itertools.count()
    expected = [s.plan.package_id for s in _waiting_found_by_walking(busy_ledger, node, 10)]

    def release() -> object:
        return execute(busy_ledger, c.ReleaseWave(node_id, 10), NOW_MS,
                       f"wave-{next(waves)}").detail

    first = benchmark(release)
    assert len(first.package_ids) == 10
    assert busy_ledger.orders.packages[expected[0]].status == PackageStatus.RELEASED


def test_the_wave_search_release_made_before(benchmark, busy_ledger):
    node = _busiest_node(busy_ledger)
    assert len(benchmark(_waiting_found_by_walking, busy_ledger, node, 10)) == 10


@pytest.fixture(scope="module")
def released_ledger() -> Ledger:
    """100,000 orders, all but the last 2,000 released to their warehouses (those with a
    package): history that re-optimisation may no longer change."""
    ledger = loaded_demo_ledger()
    factory = OrderFactory(N_SKUS, 100, "R")
    ids = itertools.count()

    def allocate(orders: int) -> None:
        for _ in range(orders // 100):
            order_path(ledger, opb.AllocateOrdersRequest(
                request_id=f"r{next(ids)}", orders=[factory.order() for _ in range(100)]),
                False)

    allocate(ORDERS - 2_000)
    for node in list(ledger.orders.allocated_at):
        execute(ledger, c.ReleaseWave(ledger.catalog.nodes[node].node_id, 1_000_000), NOW_MS,
                f"all-{node}")
    allocate(2_000)
    return ledger


def _reopt_candidates_by_walking(ledger: Ledger) -> list[str]:
    """How re-optimisation found its orders before the book kept the open ones."""
    return [order_id for order_id, record in ledger.orders.orders.items()
            if _eligible(ledger, record)]


def test_reopt_collect(benchmark, released_ledger):
    problem = benchmark(reopt.collect, released_ledger, NOW_MS)
    assert sorted(problem.order_ids) == sorted(_reopt_candidates_by_walking(released_ledger))
    # The 2,000 allocated last, and the earlier orders backordered whole (nothing to
    # release): 2,153 here.
    assert 2_000 < len(problem.order_ids) < 3_000


def test_the_reopt_search_collect_made_before(benchmark, released_ledger):
    assert 2_000 < len(benchmark(_reopt_candidates_by_walking, released_ledger)) < 3_000


@pytest.fixture(scope="module")
def long_task_history() -> OpsBook:
    """100,000 tasks opened, all but the last 100 done."""
    book = OpsBook()
    for k in range(ORDERS):
        book.apply(None, SimpleNamespace(  # type: ignore[arg-type]
            kind=EventKind.TASK_OPENED, time_ms=k, payload=TaskInfo(
                f"TK-{k}", TaskType.CYCLE_COUNT, "", f"S{k}", "")))
        if k < ORDERS - 100:
            book.apply(None, SimpleNamespace(  # type: ignore[arg-type]
                kind=EventKind.TASK_COMPLETED, time_ms=k, payload=TaskDone(f"TK-{k}", "p", "")))
    return book


def test_open_tasks_page(benchmark, long_task_history):
    """ListTasks's first page of open tasks, from the open ones the book keeps."""
    request = SimpleNamespace(page_size=50, page_token="")
    found, token = benchmark(page_open, long_task_history.tasks,
                             long_task_history.open_task_places, request, keep_all)
    assert len(found) == 50 and token


def test_the_open_tasks_page_made_before(benchmark, long_task_history):
    """The same page found by filtering every task ever opened."""
    request = SimpleNamespace(page_size=50, page_token="")
    found, _ = benchmark(page, long_task_history.tasks.values(), request,
                         lambda r: r.done is None)
    assert len(found) == 50
