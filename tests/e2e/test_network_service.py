"""NetworkService end to end: the cost model in and out, refusals that change nothing,
opportunity costs, idempotent retries, and the network applied at start.

The module's server is shared, and the network is one per server: every test that
sets it reads back only what it set itself.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from allocd.v1 import network_service_pb2 as pb
from allocd.v1 import types_pb2 as types
from google.protobuf import json_format

from core.network import MAX_PACKAGE_MICROS, MAX_RATE_WEIGHTS, MAX_UNIT_MICROS
from service.demo_network import demo_network
from service.network_codec import network_to_proto

from .conftest import MAX_LINES

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def zones(first: int, step: int, weights: int = 5) -> list[pb.ZoneRates]:
    return [pb.ZoneRates(zone=z, price_micros=[first + 100_000 * z + step * w
                                               for w in range(weights)],
                         per_lb_over_micros=step, transit_days=(z + 1) // 2)
            for z in range(2, 9)]


def network(nodes: list[str]) -> pb.Network:
    """A valid network over the test's nodes, in canonical form (zones 2..8, all tiers)."""
    return pb.Network(
        regions=[pb.Region(region_id="nyc", latitude=40.7128, longitude=-74.006,
                           postal_prefixes=["100", "101", "102"]),
                 pb.Region(region_id="chi", latitude=41.8781, longitude=-87.6298,
                           postal_prefixes=["606"])],
        services=[pb.CarrierService(service_id="ground", carrier="ParcelWay", name="Ground",
                                    zones=zones(8_000_000, 600_000), pickup_cutoff_minute=1020,
                                    oversize_surcharge_micros=30_000_000),
                  pb.CarrierService(service_id="overnight", carrier="RedEye", name="Overnight",
                                    zones=zones(30_000_000, 3_000_000),
                                    pickup_cutoff_minute=1020)],
        lanes=[pb.LaneCost(node_id=nodes[0], region_id="nyc", fixed_micros=5_500_000,
                           per_unit_micros=100_000, per_lb_micros=150_000)],
        node_costs=[pb.NodeCosts(node_id=n, handling_per_package_micros=1_250_000,
                                 pick_per_unit_micros=220_000, cutoff_minute=960,
                                 blocked_channel_ids=["marketplace"] if i else [])
                    for i, n in enumerate(nodes)],
        split_penalties=[pb.SplitPenalty(sla_tier=tier, per_extra_package_micros=micros)
                         for tier, micros in ((types.SLA_TIER_PREMIUM, 1_000_000),
                                              (types.SLA_TIER_MARKETPLACE, 3_000_000),
                                              (types.SLA_TIER_STANDARD, 4_000_000),
                                              (types.SLA_TIER_WHOLESALE, 6_000_000))])


def set_network(api, msg: pb.Network, request_id: str | None = None) -> pb.SetNetworkResponse:
    return api.network.SetNetwork(pb.SetNetworkRequest(request_id=request_id or api.rid(),
                                                       network=msg))


def get_network(api) -> pb.Network:
    return api.network.GetNetwork(pb.GetNetworkRequest()).network


def test_set_network_then_get_network_returns_the_same_network(api, cat):
    sent = network(cat.nodes)
    before = api.state()
    answer = set_network(api, sent)
    assert answer.result.event_count == 1 and not answer.result.replayed
    assert get_network(api) == sent
    after = api.state()
    assert after.last_sequence == before.last_sequence + 1
    assert after.checksum != before.checksum


def test_zones_may_be_sent_in_any_order(api, cat):
    sent = network(cat.nodes)
    shuffled = pb.Network()
    shuffled.CopyFrom(sent)
    for svc in shuffled.services:
        reordered = list(reversed(svc.zones))
        del svc.zones[:]
        svc.zones.extend(reordered)
    set_network(api, shuffled)
    assert get_network(api) == sent


def test_an_empty_network_clears_the_cost_model(api, cat):
    set_network(api, network(cat.nodes))
    set_network(api, pb.Network())
    got = get_network(api)
    assert not (got.regions or got.services or got.lanes or got.node_costs)
    assert all(p.per_extra_package_micros == 0 for p in got.split_penalties)


def _mutated(path: str, value: object):
    def mutate(msg: pb.Network) -> None:
        *parents, last = path.replace("[", ".").replace("]", "").split(".")
        target: object = msg
        for part in parents:
            target = target[int(part)] if part.isdigit() else getattr(target, part)
        if last.isdigit():
            target[int(last)] = value
        else:
            setattr(target, last, value)
    return mutate


def _drop_zone(msg: pb.Network) -> None:
    del msg.services[1].zones[4]


def _duplicate_zone(msg: pb.Network) -> None:
    msg.services[0].zones[3].zone = 2


def _wide_rate_card(msg: pb.Network) -> None:
    """A zone pricing one weight more than a rate card may (refused before the others are
    looked at: kept small, under the test server's message limit)."""
    zone = msg.services[0].zones[0]
    zone.price_micros.extend([1] * (MAX_RATE_WEIGHTS + 1 - len(zone.price_micros)))


REFUSED = [
    ("missing zone", _drop_zone, INVALID, "network.services[1].zones"),
    ("duplicate zone", _duplicate_zone, INVALID, "network.services[0].zones[3].zone"),
    ("uneven weights", lambda m: m.services[0].zones[5].price_micros.append(1), INVALID,
     "network.services[0].zones[5].price_micros"),
    ("negative price", _mutated("services[0].zones[0].price_micros[2]", -1), INVALID,
     "network.services[0].zones[0].price_micros[2]"),
    ("negative lane cost", _mutated("lanes[0].per_lb_micros", -1), INVALID,
     "network.lanes[0].per_lb_micros"),
    ("negative handling", _mutated("node_costs[0].handling_per_package_micros", -1), INVALID,
     "network.node_costs[0].handling_per_package_micros"),
    ("cut-off after midnight", _mutated("node_costs[1].cutoff_minute", 1441), INVALID,
     "network.node_costs[1].cutoff_minute"),
    ("pickup after midnight", _mutated("services[1].pickup_cutoff_minute", 1500), INVALID,
     "network.services[1].pickup_cutoff_minute"),
    ("unspecified tier", _mutated("split_penalties[1].sla_tier", types.SLA_TIER_UNSPECIFIED),
     INVALID, "network.split_penalties[1].sla_tier"),
    ("latitude out of range", _mutated("regions[1].latitude", -95.0), INVALID,
     "network.regions[1]"),
    ("lane to an unknown node", _mutated("lanes[0].node_id", "NOWHERE"), NOT_FOUND,
     "network.lanes[0].node_id"),
    ("lane to an unknown region", _mutated("lanes[0].region_id", "atlantis"), NOT_FOUND,
     "network.lanes[0]"),
    ("costs of an unknown node", _mutated("node_costs[2].node_id", "NOWHERE"), NOT_FOUND,
     "network.node_costs[2].node_id"),
    ("unknown blocked channel", _mutated("node_costs[1].blocked_channel_ids[0]", "fax"),
     NOT_FOUND, "network.node_costs[1].blocked_channel_ids[0]"),
    # Past the cost limits (core.network): sums of them over an order would wrap in int64.
    ("price past its limit", _mutated("services[0].zones[0].price_micros[2]",
                                      MAX_PACKAGE_MICROS + 1), INVALID,
     "network.services[0].zones[0].price_micros[2]"),
    ("rate card too wide", _wide_rate_card, INVALID,
     "network.services[0].zones[0].price_micros"),
    ("per lb over past its limit", _mutated("services[1].zones[6].per_lb_over_micros",
                                            MAX_UNIT_MICROS + 1), INVALID,
     "network.services[1].zones[6].per_lb_over_micros"),
    ("surcharge past its limit", _mutated("services[0].oversize_surcharge_micros",
                                          MAX_PACKAGE_MICROS + 1), INVALID,
     "network.services[0].oversize_surcharge_micros"),
    ("lane fixed cost past its limit", _mutated("lanes[0].fixed_micros",
                                                MAX_PACKAGE_MICROS + 1), INVALID,
     "network.lanes[0].fixed_micros"),
    ("lane cost per unit past its limit", _mutated("lanes[0].per_unit_micros",
                                                   MAX_UNIT_MICROS + 1), INVALID,
     "network.lanes[0].per_unit_micros"),
    ("lane cost per lb past its limit", _mutated("lanes[0].per_lb_micros",
                                                 MAX_UNIT_MICROS + 1), INVALID,
     "network.lanes[0].per_lb_micros"),
    ("handling past its limit", _mutated("node_costs[2].handling_per_package_micros",
                                         MAX_PACKAGE_MICROS + 1), INVALID,
     "network.node_costs[2].handling_per_package_micros"),
    ("pick cost past its limit", _mutated("node_costs[2].pick_per_unit_micros",
                                          MAX_UNIT_MICROS + 1), INVALID,
     "network.node_costs[2].pick_per_unit_micros"),
    ("split penalty past its limit", _mutated("split_penalties[3].per_extra_package_micros",
                                              MAX_PACKAGE_MICROS + 1), INVALID,
     "network.split_penalties[3].per_extra_package_micros"),
]


def test_a_network_with_every_cost_at_its_limit_is_taken(api, cat):
    sent = network(cat.nodes)
    for svc in sent.services:
        svc.oversize_surcharge_micros = MAX_PACKAGE_MICROS
        for zone in svc.zones:
            zone.price_micros[-1] = MAX_PACKAGE_MICROS
            zone.per_lb_over_micros = MAX_UNIT_MICROS
    sent.lanes[0].fixed_micros = MAX_PACKAGE_MICROS
    sent.lanes[0].per_unit_micros = sent.lanes[0].per_lb_micros = MAX_UNIT_MICROS
    for costs in sent.node_costs:
        costs.handling_per_package_micros = MAX_PACKAGE_MICROS
        costs.pick_per_unit_micros = MAX_UNIT_MICROS
    for penalty in sent.split_penalties:
        penalty.per_extra_package_micros = MAX_PACKAGE_MICROS
    set_network(api, sent)
    assert get_network(api) == sent


@pytest.mark.parametrize(("mutate", "code", "field"), [case[1:] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
def test_a_refused_network_changes_nothing_and_names_the_field(api, cat, mutate, code, field):
    current = network(cat.nodes)
    set_network(api, current)
    bad = pb.Network()
    bad.CopyFrom(current)
    mutate(bad)
    api.rejects(code, api.network.SetNetwork,
                pb.SetNetworkRequest(request_id=api.rid(), network=bad), details=field)
    assert get_network(api) == current


def test_a_retried_set_network_is_replayed_and_a_reused_id_is_refused(api, cat):
    request = pb.SetNetworkRequest(request_id=api.rid(), network=network(cat.nodes))
    first = api.network.SetNetwork(request)
    state = api.state()
    again = api.network.SetNetwork(request)
    assert again.result.replayed and not first.result.replayed
    assert again.result.first_sequence == first.result.first_sequence
    assert api.state() == state

    other = pb.SetNetworkRequest()
    other.CopyFrom(request)
    other.network.split_penalties[0].per_extra_package_micros += 1
    api.rejects(grpc.StatusCode.ALREADY_EXISTS, api.network.SetNetwork, other)


def costs_request(api, *costs: tuple[str, str, int]) -> pb.SetOpportunityCostsRequest:
    return pb.SetOpportunityCostsRequest(request_id=api.rid(), costs=[
        pb.OpportunityCost(sku_id=s, node_id=n, per_unit_micros=m) for s, n, m in costs])


def test_opportunity_costs_are_set_cleared_and_replayed(api, cat):
    request = costs_request(api, (cat.skus[0], cat.nodes[0], 750_000),
                            (cat.skus[1], cat.nodes[1], 250_000))
    before = api.state()
    first = api.network.SetOpportunityCosts(request)
    assert first.result.event_count == 2 and not first.result.replayed
    state = api.state()
    assert state.checksum != before.checksum

    again = api.network.SetOpportunityCosts(request)
    assert again.result.replayed
    assert again.result.last_sequence == first.result.last_sequence
    assert api.state() == state

    cleared = api.network.SetOpportunityCosts(costs_request(
        api, (cat.skus[0], cat.nodes[0], 0), (cat.skus[1], cat.nodes[1], 0)))
    assert cleared.result.event_count == 2 and not cleared.result.replayed


@pytest.mark.parametrize(("line", "code"), [
    (("NO-SUCH-SKU", 0, 1), NOT_FOUND),
    ((0, "NO-SUCH-NODE", 1), NOT_FOUND),
    ((0, 0, -1), INVALID),
    ((0, 0, MAX_UNIT_MICROS + 1), INVALID),
])
def test_bad_opportunity_costs_change_nothing(api, cat, line, code):
    sku, node, micros = line
    valid = (cat.skus[1], cat.nodes[1], 5)
    api.rejects(code, api.network.SetOpportunityCosts, costs_request(
        api, valid, (cat.skus[sku] if isinstance(sku, int) else sku,
                     cat.nodes[node] if isinstance(node, int) else node, micros)))


def test_an_opportunity_cost_at_its_limit_is_taken(api, cat):
    answer = api.network.SetOpportunityCosts(costs_request(
        api, (cat.skus[2], cat.nodes[2], MAX_UNIT_MICROS)))
    assert answer.result.event_count == 1


def test_opportunity_costs_are_limited_to_max_lines_per_request(api, cat):
    too_many = [(cat.skus[0], cat.nodes[0], 1)] * (MAX_LINES + 1)
    api.rejects(INVALID, api.network.SetOpportunityCosts, costs_request(api, *too_many),
                details="max_lines_per_request")
    api.rejects(INVALID, api.network.SetOpportunityCosts, costs_request(api))


# ---- the network applied at start -----------------------------------------------------
def test_a_network_file_is_applied_at_start(server_factory, tmp_path: Path):
    sent = network(["unused"])
    del sent.lanes[:]
    del sent.node_costs[:]  # a fresh server has no nodes to refer to
    path = tmp_path / "network.json"
    path.write_text(json_format.MessageToJson(sent))
    api = server_factory(network_file=str(path))
    assert get_network(api) == sent


def test_the_demo_server_starts_with_the_demo_network(server_factory):
    api = server_factory(demo=True, demo_skus=20)
    assert get_network(api) == network_to_proto(demo_network())
