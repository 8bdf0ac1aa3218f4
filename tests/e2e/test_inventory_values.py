"""Inventory values end to end: with the policy on, a unit a later order needs is kept for
it and the two orders cost less in total than the myopic choice; the forecast supplied
or learned, the policy switch, periodic refresh, refusals and idempotent retries.

Scenario: nodes A and B; regions E (A's doorstep) and M (between). A holds 1 X and 1 Y,
B holds 5 X. An order from M for X is a little cheaper from A; a later order from E
for X and Y can then only ship in two packages. Valued, A's last X stays for E's order.
"""

from __future__ import annotations

import math
import time

import grpc
import pytest
from allocd.v1 import network_service_pb2 as pb
from allocd.v1 import order_service_pb2 as opb

from .conftest import RPC_TIMEOUT_S, Api, rid

FIXED = 8_000_000
LANES = {("A", "E"): 1_000_000, ("A", "M"): 1_000_000,
         ("B", "E"): 3_000_000, ("B", "M"): 1_200_000}
POSTAL = {"E": "100", "M": "606"}
SOLVE_TIMEOUT_S = 60.0  # a refresh solves an LP; generous on a loaded machine


def scenario(api: Api) -> tuple[dict[str, str], dict[str, str]]:
    """The catalogue, network and stock above, named for this test."""
    cat = api.seed(n_nodes=2, n_skus=2)
    nodes = dict(zip("AB", cat.nodes, strict=True))
    skus = dict(zip("XY", cat.skus, strict=True))
    free = [pb.ZoneRates(zone=z, price_micros=[0], transit_days=1) for z in range(2, 9)]
    api.network.SetNetwork(pb.SetNetworkRequest(request_id=rid(), network=pb.Network(
        regions=[pb.Region(region_id="E", latitude=40.0, longitude=-75.0,
                           postal_prefixes=[POSTAL["E"]]),
                 pb.Region(region_id="M", latitude=40.5, longitude=-75.5,
                           postal_prefixes=[POSTAL["M"]])],
        services=[pb.CarrierService(service_id="lane", carrier="Contract", zones=free,
                                    pickup_cutoff_minute=1440)],
        lanes=[pb.LaneCost(node_id=nodes[n], region_id=r, fixed_micros=FIXED,
                           per_unit_micros=unit) for (n, r), unit in LANES.items()])),
        timeout=RPC_TIMEOUT_S)
    for sku, node, qty in (("X", "A", 1), ("Y", "A", 1), ("X", "B", 5)):
        api.receive(skus[sku], nodes[node], qty)
    return nodes, skus


def allocate(api: Api, region: str, *skus: str) -> opb.Allocation:
    order = opb.Order(order_id=f"ORD-{rid()}", channel_id="web",
                      ship_to=opb.ShipTo(postal_code=POSTAL[region]),
                      lines=[opb.OrderLine(sku_id=s, quantity=1) for s in skus])
    return api.orders.AllocateOrder(opb.AllocateOrderRequest(request_id=rid(), order=order),
                                    timeout=RPC_TIMEOUT_S).allocation


def shipping(*allocations: opb.Allocation) -> int:
    """What the packages cost to ship (the opportunity costs are not money spent)."""
    return sum(p.cost.carrier_micros for a in allocations for p in a.packages)


def policy_request(enabled: bool, **fields) -> pb.SetInventoryValuePolicyRequest:
    return pb.SetInventoryValuePolicyRequest(
        request_id=rid(), policy=pb.InventoryValuePolicy(enabled=enabled, **fields))


def forecast(api: Api, skus: dict[str, str]) -> pb.SetDemandForecastResponse:
    return api.network.SetDemandForecast(pb.SetDemandForecastRequest(
        request_id=rid(), lines=[
            pb.DemandForecastLine(region_id="E", sku_id=skus["X"], units_per_day=1.0),
            pb.DemandForecastLine(region_id="E", sku_id=skus["Y"], units_per_day=1.0),
            pb.DemandForecastLine(region_id="M", sku_id=skus["X"], units_per_day=1.0)]),
        timeout=RPC_TIMEOUT_S)


def test_values_keep_the_scarce_unit_for_the_order_that_needs_it(server_factory):
    myopic_api, valued_api = server_factory(), server_factory()
    # Myopic (the default): M's order takes A's only X; E's order splits.
    nodes, skus = scenario(myopic_api)
    first = allocate(myopic_api, "M", skus["X"])
    second = allocate(myopic_api, "E", skus["X"], skus["Y"])
    assert [p.node_id for p in first.packages] == [nodes["A"]]
    assert len(second.packages) == 2
    myopic_cost = shipping(first, second)

    nodes, skus = scenario(valued_api)
    valued_api.network.SetInventoryValuePolicy(policy_request(True, horizon_days=1.0),
                                               timeout=RPC_TIMEOUT_S)
    forecast(valued_api, skus)
    refreshed = valued_api.network.RefreshInventoryValues(
        pb.RefreshInventoryValuesRequest(request_id=rid()), timeout=SOLVE_TIMEOUT_S)
    assert refreshed.solver_status == "OPTIMAL" and refreshed.value_count >= 1
    values = valued_api.network.GetInventoryValues(pb.GetInventoryValuesRequest(),
                                                   timeout=RPC_TIMEOUT_S)
    assert values.forecast_source == pb.FORECAST_SOURCE_SUPPLIED
    priced = {(v.sku_id, v.node_id): v.per_unit_micros for v in values.values}
    assert priced[(skus["X"], nodes["A"])] > LANES[("B", "M")] - LANES[("A", "M")]
    first = allocate(valued_api, "M", skus["X"])
    second = allocate(valued_api, "E", skus["X"], skus["Y"])
    assert [p.node_id for p in first.packages] == [nodes["B"]]
    assert [p.node_id for p in second.packages] == [nodes["A"]]
    assert shipping(first, second) < myopic_cost
    assert shipping(first, second) == (FIXED + LANES[("B", "M")] + FIXED
                                       + 2 * LANES[("A", "E")])


def test_refresh_is_idempotent_and_refused_while_the_policy_is_off(server_factory):
    api = server_factory()
    _, skus = scenario(api)
    api.rejects(grpc.StatusCode.FAILED_PRECONDITION, api.network.RefreshInventoryValues,
                pb.RefreshInventoryValuesRequest(request_id=rid()), details="off")
    api.network.SetInventoryValuePolicy(policy_request(True, horizon_days=1.0),
                                        timeout=RPC_TIMEOUT_S)
    forecast(api, skus)
    request = pb.RefreshInventoryValuesRequest(request_id=rid())
    first = api.network.RefreshInventoryValues(request, timeout=SOLVE_TIMEOUT_S)
    before = api.state()
    again = api.network.RefreshInventoryValues(request, timeout=SOLVE_TIMEOUT_S)
    assert again.result.replayed and not first.result.replayed
    assert again.value_count == first.value_count
    assert api.state() == before
    # Off is myopic: the values go.
    api.network.SetInventoryValuePolicy(policy_request(False), timeout=RPC_TIMEOUT_S)
    values = api.network.GetInventoryValues(pb.GetInventoryValuesRequest(sku_ids=[skus["X"]]),
                                            timeout=RPC_TIMEOUT_S)
    assert not values.policy.enabled and not values.values
    # A retry of the answered call gets its answer, though the model would not solve now;
    # a request without an id is refused as such.
    late = api.network.RefreshInventoryValues(request, timeout=SOLVE_TIMEOUT_S)
    assert late.result.replayed and late.value_count == first.value_count
    api.rejects(grpc.StatusCode.INVALID_ARGUMENT, api.network.RefreshInventoryValues,
                pb.RefreshInventoryValuesRequest(), details="request_id")


@pytest.mark.parametrize("line, code", [
    (dict(region_id="nowhere", units_per_day=1.0), grpc.StatusCode.NOT_FOUND),
    (dict(sku_id="no-such-sku", units_per_day=1.0), grpc.StatusCode.NOT_FOUND),
    (dict(units_per_day=-2.0), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(units_per_day=math.nan), grpc.StatusCode.INVALID_ARGUMENT),
])
def test_a_bad_forecast_changes_nothing(api, line, code):
    _, skus = scenario(api)
    fields = {"region_id": "E", "sku_id": skus["X"], **line}
    api.rejects(code, api.network.SetDemandForecast, pb.SetDemandForecastRequest(
        request_id=rid(), lines=[pb.DemandForecastLine(**fields)]))


def test_a_bad_policy_changes_nothing(api):
    scenario(api)
    api.rejects(grpc.StatusCode.INVALID_ARGUMENT, api.network.SetInventoryValuePolicy,
                policy_request(True, scale=-1.0))
    api.rejects(grpc.StatusCode.INVALID_ARGUMENT, api.network.SetInventoryValuePolicy,
                policy_request(True, horizon_days=-3.0))


def test_orders_teach_the_forecast(server_factory):
    api = server_factory()
    _, skus = scenario(api)
    for _ in range(3):
        allocate(api, "M", skus["X"])
    values = api.network.GetInventoryValues(pb.GetInventoryValuesRequest(),
                                            timeout=RPC_TIMEOUT_S)
    assert values.forecast_source == pb.FORECAST_SOURCE_LEARNED
    rates = {(f.region_id, f.sku_id): f.units_per_day for f in values.forecast}
    assert set(rates) == {("M", skus["X"])}
    half_life = values.policy.half_life_days
    assert rates[("M", skus["X"])] == pytest.approx(3 * math.log(2) / half_life, rel=1e-3)


def test_with_the_policy_on_values_are_refreshed_periodically(server_factory):
    api = server_factory(inventory_values=True, inventory_value_refresh_s=1.0)
    nodes, skus = scenario(api)
    forecast(api, skus)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        values = api.network.GetInventoryValues(pb.GetInventoryValuesRequest(),
                                                timeout=RPC_TIMEOUT_S)
        if values.values:
            break
        time.sleep(0.2)
    assert values.policy.enabled and values.policy.refresh_interval_seconds == 1.0
    assert (skus["X"], nodes["A"]) in {(v.sku_id, v.node_id) for v in values.values}


def test_the_policy_reads_back_as_set_with_defaults_for_unset_tuning(api):
    scenario(api)
    api.network.SetInventoryValuePolicy(policy_request(
        True, horizon_days=2.0, shortage_weight=0.0, tail_from_drawn_units=True),
        timeout=RPC_TIMEOUT_S)
    policy = api.network.GetInventoryValues(pb.GetInventoryValuesRequest(),
                                            timeout=RPC_TIMEOUT_S).policy
    assert policy.enabled and policy.tail_from_drawn_units
    assert (policy.horizon_days, policy.shortage_weight) == (2.0, 0.0)
    assert (policy.refresh_interval_seconds, policy.half_life_days, policy.scale) == (
        300.0, 7.0, 1.0)
    api.network.SetInventoryValuePolicy(policy_request(False), timeout=RPC_TIMEOUT_S)
