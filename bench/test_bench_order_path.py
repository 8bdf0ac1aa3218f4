"""The order path in process, without gRPC or the engine: `AllocateOrders` commands of 1, 4
and 100 orders on the demo catalogue (5,000 SKUs, 13 nodes, the demo network), each read
from protobuf, decided, applied to the ledger and answered as protobuf. The kernel alone
decides in ~1.5 µs an order (test_bench_allocate.py); this is what the rest of the path
costs, an order, and what a rebuilt batch path would be measured against.

Every round allocates new orders (the ledger keeps them, as the server does); every case
starts from a fresh ledger, so that the views are measured on the same state.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator

import pytest
from allocd.v1 import order_service_pb2 as opb

from bench.grpc_ratio import OrderFactory
from core import commands as c
from core.ledger import Ledger
from core.operations import execute
from core.order_ops import AllocateResult
from service.demo import demo_commands
from service.demo_network import demo_network
from service.order_codec import orders_from_proto
from service.server import SERVER_GC_THRESHOLDS
from service.servicers.orders import allocations_response

NOW_MS = 1_795_000_000_000  # a Tuesday, 08:53 UTC: before every cut-off
N_SKUS = 5000


def loaded_demo_ledger() -> Ledger:
    """The demo catalogue and network, with the collector as the server sets it
    (service.server): the loaded state frozen, young objects collected less often. Under
    Python's defaults, full collections rescanning the growing ledger would be most of
    what is measured."""
    ledger = Ledger()
    for i, command in enumerate(demo_commands(N_SKUS, 7, NOW_MS)):
        execute(ledger, command, NOW_MS, f"demo-{i}")
    execute(ledger, c.SetNetwork(demo_network()), NOW_MS, "demo-network")
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVER_GC_THRESHOLDS)
    return ledger


@pytest.fixture
def demo_ledger() -> Iterator[Ledger]:
    thresholds = gc.get_threshold()
    yield loaded_demo_ledger()
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def order_path(ledger: Ledger, request: opb.AllocateOrdersRequest, full: bool) -> bytes:
    """What the server does with a call, less the engine and gRPC."""
    outcome = execute(ledger, c.AllocateOrders(orders_from_proto(request)), NOW_MS,
                      request.request_id)
    result = outcome.detail
    assert isinstance(result, AllocateResult)
    for order in result.outcomes:
        assert order.error is None, order.error
    return allocations_response(ledger, outcome, False, full)


@pytest.mark.parametrize(("orders", "view", "rounds"), [
    (1, "full", 300), (4, "full", 150), (100, "full", 30), (100, "basic", 30)])
def test_order_path(benchmark, demo_ledger, orders, view, rounds):
    factory = OrderFactory(N_SKUS, orders, f"P{orders}{view}")
    ids = itertools.count()

    def request() -> tuple[tuple[opb.AllocateOrdersRequest], dict[str, object]]:
        return (opb.AllocateOrdersRequest(request_id=f"r{next(ids)}",
                                          orders=[factory.order() for _ in range(orders)]),), {}

    def run(message: opb.AllocateOrdersRequest) -> bytes:
        return order_path(demo_ledger, message, view == "full")

    answer = benchmark.pedantic(run, setup=request, rounds=rounds, warmup_rounds=3)
    reply = opb.AllocateOrdersResponse.FromString(answer)
    assert len(reply.allocations) == orders
    assert all(a.status for a in reply.allocations)
    assert all(bool(a.packages) == (view == "full") for a in reply.allocations
               if a.placed_units)
    if benchmark.stats is not None:  # (None with --benchmark-disable)
        stats = benchmark.stats.stats
        benchmark.extra_info["us_per_order_median"] = round(stats.median / orders * 1e6, 1)
        benchmark.extra_info["us_per_order_min"] = round(stats.min / orders * 1e6, 1)
