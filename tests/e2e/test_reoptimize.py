"""OrderService.Reoptimize through gRPC: progress then a summary, a split taken back,
dry runs that change nothing, idempotent replays, one run at a time, bad input, and a
call that ends early stopping its solver."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from allocd.v1 import (
    catalog_service_pb2,
    inventory_service_pb2,
    network_service_pb2,
    types_pb2,
)
from allocd.v1 import order_service_pb2 as pb

from service.codec import node_to_proto
from service.demo import DEMO_NODES
from service.demo_network import METROS
from tests.e2e.conftest import (
    NEW_YORK_ZIP,
    RPC_TIMEOUT_S,
    RUNNING,
    demo_network_proto,
    order_world,
    rid,
)

DAY_MS = 86_400_000


@pytest.fixture
def morning(allocd_port):
    """Pin the server's clock to 09:00 UTC: before every node's cut-off, so the promise of
    each node does not depend on when the tests run."""
    engine = RUNNING[allocd_port].engine
    real = engine.clock
    today = real() // DAY_MS * DAY_MS
    engine.clock = lambda: today + 9 * 3_600_000
    yield
    engine.clock = real


def reoptimize(api, **fields):
    fields.setdefault("request_id", rid())
    fields.setdefault("time_limit_seconds", 10)
    return list(api.orders.Reoptimize(pb.ReoptimizeRequest(**fields), timeout=RPC_TIMEOUT_S))


def live(world, order_id):
    return [p for p in world.get(order_id).allocation.packages
            if p.status == pb.PACKAGE_STATUS_ALLOCATED]


def test_a_split_forced_by_an_earlier_order_is_taken_back(api, demo_world, morning):
    w = demo_world
    a, b = w.sku(), w.sku()
    w.stock(a, "AVP3", 1)
    w.stock(b, "AVP3", 1)
    w.stock(a, "STORE-NYC", 1)
    first = w.allocate(w.order((a, 1))).allocation
    second = w.allocate(w.order((a, 1), (b, 1))).allocation
    assert [p.node_id for p in first.packages] == ["AVP3"]
    assert sorted(p.node_id for p in second.packages) == ["AVP3", "STORE-NYC"]
    before = api.state()

    dry = reoptimize(api, dry_run=True)
    assert dry[-1].phase == "done" and not dry[-1].summary.applied
    assert second.order_id in dry[-1].summary.changed_order_ids
    assert api.state() == before, "a dry run changed the ledger"

    request_id = rid()
    responses = reoptimize(api, request_id=request_id, seed=3)
    phases = [r.phase for r in responses]
    assert phases[0] == "candidates" and "solving" in phases and phases[-1] == "done"
    summary = responses[-1].summary
    assert summary.applied and summary.open_orders >= 2
    assert {first.order_id, second.order_id} <= set(summary.changed_order_ids)
    assert summary.new_packages < summary.old_packages
    assert summary.new_objective_micros < summary.old_objective_micros
    assert 0 < summary.lower_bound_micros <= summary.new_objective_micros
    assert responses[-1].result.event_count > 0

    (kept,) = live(w, second.order_id)
    assert kept.node_id == "AVP3" and len(kept.lines) == 2
    (moved,) = live(w, first.order_id)
    assert moved.node_id == "STORE-NYC"
    replanned = [p for p in w.get(second.order_id).allocation.packages
                 if p.status == pb.PACKAGE_STATUS_REPLANNED]
    assert len(replanned) == 2
    # Superseded packages are shown, but the order costs and promises what it ships.
    after = w.get(second.order_id).allocation
    assert after.total_cost_micros == kept.cost.total_micros
    assert after.placed_units == sum(line.quantity for line in kept.lines)  # not the old
    assert w.levels(a, "AVP3") == (0, 1) and w.levels(a, "STORE-NYC") == (0, 1)

    # The same request again: the stored answer, nothing re-planned twice.
    state = api.state()
    again = reoptimize(api, request_id=request_id, seed=3)
    assert len(again) == 1 and again[0].result.replayed
    assert again[0].summary == summary
    assert api.state() == state


def test_the_current_plans_are_valued_at_the_rates_of_today(server_factory):
    """A dry run's old cost is what the open orders' packages cost at the network as it is
    now (carrier rates and node costs changed since they were decided), not the costs
    stored with them."""
    api = server_factory()
    w = order_world(api)
    a = w.sku()
    w.stock(a, "IND1", 2)  # (IND1 only: zone 5 from New York, by the rate card)
    order = w.allocate(w.order((a, 2))).allocation
    (package,) = live(w, order.order_id)
    assert package.node_id == "IND1" and package.service_id
    stored = package.cost.total_micros
    # Every rate up $3, IND1's handling up 50 cents and its picks 10 cents a unit.
    network = api.network.GetNetwork(network_service_pb2.GetNetworkRequest(),
                                     timeout=RPC_TIMEOUT_S).network
    for service in network.services:
        for zone in service.zones:
            zone.price_micros[:] = [p + 3_000_000 for p in zone.price_micros]
    (costs,) = [n for n in network.node_costs if n.node_id == "IND1"]
    costs.handling_per_package_micros += 500_000
    costs.pick_per_unit_micros += 100_000
    api.network.SetNetwork(network_service_pb2.SetNetworkRequest(
        request_id=rid(), network=network), timeout=RPC_TIMEOUT_S)
    # The same parcel (two units of 1 lb, 6x4x2 in) quoted now, by its service.
    units = sum(line.quantity for line in package.lines)
    assert units == 2
    quote = api.orders.RateShop(pb.RateShopRequest(
        node_id="IND1", ship_to=pb.ShipTo(postal_code=NEW_YORK_ZIP), weight_lb=2.0,
        dimensions=types_pb2.Dimensions(length_in=6, width_in=4, height_in=4),
        units=units), timeout=RPC_TIMEOUT_S)
    (by_service,) = [q for q in quote.quotes if q.service_id == package.service_id]
    today = (by_service.cost_micros + costs.handling_per_package_micros
             + units * costs.pick_per_unit_micros)
    assert today > stored

    summary = reoptimize(api, dry_run=True)[-1].summary
    assert summary.open_orders == 1 and not summary.applied
    assert summary.old_cost_micros == summary.old_objective_micros == today


def test_bad_requests_are_refused_and_change_nothing(api, demo_world):
    for fields, field in (({"time_limit_seconds": -1}, "time_limit_seconds"),
                          ({"time_limit_seconds": 1e9}, "time_limit_seconds"),
                          ({"time_limit_seconds": float("nan")}, "time_limit_seconds"),
                          ({"max_orders": -5}, "max_orders"),
                          ({"seed": -1}, "seed"),
                          ({"extra_package_penalty_micros": -1},
                           "extra_package_penalty_micros"),
                          ({"extra_package_penalty_micros": 10**12},
                           "extra_package_penalty_micros"),
                          ({"request_id": ""}, "request_id")):
        before = api.state()
        with pytest.raises(grpc.RpcError) as caught:
            reoptimize(api, **fields)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert field in caught.value.details()
        assert api.state() == before
    # A request id used for something else is refused too.
    request_id = rid()
    reoptimize(api, request_id=request_id, seed=1)
    with pytest.raises(grpc.RpcError) as caught:
        reoptimize(api, request_id=request_id, seed=2)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_the_command_line_runs_it_with_progress_and_a_summary(api, demo_world, allocd_port,
                                                               capsys):
    from service.cli import main

    w = demo_world
    a = w.sku()
    w.stock(a, "IND1", 2)
    w.allocate(w.order((a, 1)))
    before = api.state()
    assert main(["reopt", "--address", f"127.0.0.1:{allocd_port}", "--dry-run",
                 "--time-limit", "5"]) == 0
    out = capsys.readouterr()
    assert "dry run: nothing changed" in out.out and "gap to lower bound" in out.out
    assert "solving" in out.err and "done" in out.err
    assert api.state() == before
    assert main(["reopt", "--address", f"127.0.0.1:{allocd_port}", "--time-limit", "-1"]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


def test_a_server_with_no_open_orders_answers_with_an_empty_summary(server_factory):
    api = server_factory()
    for dry_run in (True, False):
        responses = reoptimize(api, dry_run=dry_run)
        summary = responses[-1].summary
        assert responses[-1].phase == "done"
        assert (summary.open_orders, summary.orders_changed, summary.applied) == (
            0, 0, not dry_run)


def _contested_orders(api, n_orders: int = 380, n_skus: int = 60) -> None:
    """Every demo node, and `n_orders` orders of 1-5 lines (popular SKUs most often) to
    metros all over, allocated as they came, with just enough stock spread thinly over
    the nodes: one component of orders contesting the same units, a model CP-SAT does not
    prove optimal in two minutes (it searches for as long as it is given)."""
    rng = np.random.default_rng(7)
    nodes = [n.node_id for n in DEMO_NODES]
    api.catalog.UpsertNodes(catalog_service_pb2.UpsertNodesRequest(
        request_id=rid(), nodes=[node_to_proto(n) for n in DEMO_NODES]), timeout=RPC_TIMEOUT_S)
    api.catalog.UpsertChannels(catalog_service_pb2.UpsertChannelsRequest(
        request_id=rid(), channels=[types_pb2.Channel(channel_id="web", name="Web store"),
                                    types_pb2.Channel(channel_id="marketplace",
                                                      name="Marketplace")]),
        timeout=RPC_TIMEOUT_S)
    api.network.SetNetwork(network_service_pb2.SetNetworkRequest(
        request_id=rid(), network=demo_network_proto(nodes)), timeout=RPC_TIMEOUT_S)
    skus = [f"CONTESTED-{i:03d}" for i in range(n_skus)]
    api.catalog.UpsertSkus(catalog_service_pb2.UpsertSkusRequest(request_id=rid(), skus=[
        types_pb2.Sku(sku_id=sku, name=sku, weight_lb=round(float(rng.uniform(0.2, 6)), 2),
                      dimensions=types_pb2.Dimensions(length_in=float(rng.uniform(4, 16)),
                                                      width_in=float(rng.uniform(3, 12)),
                                                      height_in=float(rng.uniform(1, 8))),
                      unit_cost_micros=5_000_000, price_micros=12_000_000, category="home")
        for sku in skus]), timeout=RPC_TIMEOUT_S)
    popularity = 1.0 / np.arange(1, n_skus + 1) ** 0.8
    popularity /= popularity.sum()
    demand = np.zeros(n_skus, np.int64)
    orders = []
    for o in range(n_orders):
        chosen = rng.choice(n_skus, int(rng.integers(1, 6)), replace=False, p=popularity)
        qty = rng.integers(1, 3, len(chosen))
        demand[chosen] += qty
        metro = METROS[int(rng.integers(len(METROS)))]
        orders.append(pb.Order(
            order_id=f"CONTESTED-{o:04d}", channel_id="web",
            ship_to=pb.ShipTo(postal_code=metro[3][0] + "01"),
            lines=[pb.OrderLine(sku_id=skus[s], quantity=int(q))
                   for s, q in zip(chosen.tolist(), qty.tolist(), strict=True)]))
    stocked = rng.random((n_skus, len(nodes))) < 0.6
    stocked[np.arange(n_skus), rng.integers(0, len(nodes), n_skus)] = True
    receipts = []
    for s in range(n_skus):
        where = np.flatnonzero(stocked[s])
        split = rng.multinomial(int(demand[s]), np.full(len(where), 1 / len(where)))
        receipts += [inventory_service_pb2.ReceiptLine(sku_id=skus[s], node_id=nodes[n],
                                                       quantity=int(q))
                     for n, q in zip(where.tolist(), split.tolist(), strict=True) if q]
    api.inventory.ReceiveInventory(inventory_service_pb2.ReceiveInventoryRequest(
        request_id=rid(), reference="e2e-receipt", lines=receipts), timeout=RPC_TIMEOUT_S)
    for i in range(0, n_orders, 100):
        api.orders.AllocateOrders(pb.AllocateOrdersRequest(
            request_id=rid(), orders=orders[i:i + 100]), timeout=RPC_TIMEOUT_S)


@pytest.mark.parametrize("ended_by", ["cancel", "deadline"])
def test_a_call_that_ends_early_stops_its_solver_and_applies_nothing(server_factory,
                                                                      ended_by):
    # The solver ran on after its caller had gone, for the rest of its time limit (up to
    # an hour, on a server of two cores), and no other run could start meanwhile. Here the
    # one chunk of 380 orders is given most of 120 s (its CP-SAT search, in a worker
    # process, would take them all); the call ends a few seconds into that search, and
    # the server must be free again within 15 s: a run is refused while another's solver
    # runs.
    api = server_factory(max_lines_per_request=10_000, max_message_bytes=8 << 20)
    _contested_orders(api)
    before = api.state()
    request = pb.ReoptimizeRequest(request_id=rid(), time_limit_seconds=120)
    details = []
    if ended_by == "cancel":
        responses = api.orders.Reoptimize(request, timeout=300)
        for response in responses:
            details.append(response.detail)
            if "best whole plan" in response.detail:
                break  # the model is built: the search of its chunk starts
        time.sleep(3.0)
        responses.cancel()
    else:
        with pytest.raises(grpc.RpcError) as caught:
            for response in api.orders.Reoptimize(request, timeout=6.0):
                details.append(response.detail)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    ended = time.monotonic()
    assert any("best whole plan" in detail for detail in details), details

    while True:
        try:
            probe = list(api.orders.Reoptimize(pb.ReoptimizeRequest(
                request_id=rid(), time_limit_seconds=1, dry_run=True), timeout=RPC_TIMEOUT_S))
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
            assert time.monotonic() - ended < 15, "the solver ran on after its call had ended"
            time.sleep(0.2)
    assert probe[-1].phase == "done" and probe[-1].summary.open_orders == 380
    assert api.state() == before, "a call that had ended applied its plans"
