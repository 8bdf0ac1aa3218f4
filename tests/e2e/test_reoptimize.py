"""OrderService.Reoptimize through gRPC: progress then a summary, a split taken back,
dry runs that change nothing, idempotent replays, one run at a time, bad input."""

from __future__ import annotations

import grpc
import pytest
from allocd.v1 import order_service_pb2 as pb

from tests.e2e.conftest import RPC_TIMEOUT_S, RUNNING, rid

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
