"""Orders of many lines end to end: a wholesale order of hundreds of lines is allocated
(it once took the server down at 64 lines, and was refused past that), and an order that
may not split ships whole from the one node that holds all of it."""

from __future__ import annotations

import pytest
from allocd.v1 import order_service_pb2 as pb

from service.config import Settings

from .conftest import e2e_settings

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server_settings() -> Settings:
    """The server's own limits (the default e2e server's are kept small to exceed)."""
    return e2e_settings(max_lines_per_request=1_000, max_message_bytes=4 * 1024 * 1024)


@pytest.mark.parametrize("n_lines", [64, 200])
def test_an_order_of_many_lines_is_allocated_and_the_server_lives_on(api, demo_world,
                                                                     n_lines):
    w = demo_world
    skus = [w.sku() for _ in range(n_lines)]
    for sku in skus:
        w.stock(sku, "IND1", 3)
    w.stock(skus[-1], "ATL6", 3)

    answer = w.allocate(w.order(*((sku, 1) for sku in skus)))

    alloc = answer.allocation
    assert alloc.status == pb.ORDER_STATUS_ALLOCATED
    assert alloc.method == pb.ALLOCATION_METHOD_HEURISTIC
    assert sum(len(package.lines) for package in alloc.packages) == n_lines
    assert alloc.placed_units == n_lines
    assert [package.node_id for package in alloc.packages] == ["IND1"]
    assert w.levels(skus[0], "IND1") == (2, 1)
    # The server still answers (a crash in the kernel would have ended the process).
    assert w.get(alloc.order_id).allocation.status == pb.ORDER_STATUS_ALLOCATED


def test_an_order_that_may_not_split_ships_whole_from_the_node_that_holds_it_all(
        api, demo_world):
    """Past the exact path's eight items, the first items went to the cheapest node and
    the order, not allowed to split, was then refused for the one line that node lacks."""
    w = demo_world
    skus = [w.sku() for _ in range(12)]
    for sku in skus[:-1]:
        w.stock(sku, "AVP3", 5)  # the contracted lane: the cheapest to New York
    for sku in skus:
        w.stock(sku, "IND1", 5)

    answer = w.allocate(w.order(*((sku, 1) for sku in skus), allow_split=False))

    alloc = answer.allocation
    assert alloc.status == pb.ORDER_STATUS_ALLOCATED, alloc
    assert [package.node_id for package in alloc.packages] == ["IND1"]
    assert w.levels(skus[0], "AVP3") == (5, 0)
    assert w.get(alloc.order_id).allocation.packages == alloc.packages
    # Allowed to split, the heuristic weighs the same single package against a split.
    split_skus = [w.sku() for _ in range(12)]
    for sku in split_skus[:-1]:
        w.stock(sku, "AVP3", 5)
    for sku in split_skus:
        w.stock(sku, "IND1", 5)
    answer = w.allocate(w.order(*((sku, 1) for sku in split_skus)), explain=True)
    options = {o.kind: o for o in answer.allocation.options}
    chosen = [o for o in answer.allocation.options if o.chosen]
    assert len(chosen) == 1
    assert answer.allocation.total_cost_micros == chosen[0].total_cost_micros
    assert answer.allocation.total_cost_micros <= options[
        pb.OPTION_KIND_SHIP_COMPLETE].total_cost_micros
