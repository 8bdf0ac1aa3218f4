"""The Network codec, network files and the demo network, without a server."""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from pathlib import Path

import pytest
from allocd.v1 import network_service_pb2 as pb
from allocd.v1 import types_pb2
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from core import commands as c
from core.errors import DomainError, InvalidArgument, NotFound
from core.ledger import Ledger, LedgerSettings
from core.model import ChannelSpec, NodeSpec
from core.network import (
    MAX_PACKAGE_MICROS,
    MAX_UNIT_MICROS,
    CarrierService,
    LaneCost,
    NetworkSpec,
    NodeCosts,
    Region,
    SlaTier,
)
from core.operations import execute
from service.config import load_settings
from service.demo import DEMO_CHANNELS, DEMO_NODES
from service.demo_network import demo_network
from service.network_codec import network_from_proto, network_to_proto
from service.network_file import load_network_file, write_network_file
from service.servicers.network import check_references

# ---- valid specs --------------------------------------------------------------------
ids = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=10)
money = st.integers(0, MAX_PACKAGE_MICROS)  # a cost a package
unit_money = st.integers(0, MAX_UNIT_MICROS)  # a cost a unit or a lb
minutes = st.integers(0, 24 * 60)
NODES = ("n0", "n1", "n2")
CHANNELS = ("web", "marketplace")


@st.composite
def services(draw: st.DrawFn, service_id: str) -> CarrierService:
    width = draw(st.integers(1, 6))
    return CarrierService(
        service_id=service_id, carrier=draw(st.text(max_size=8)), name=draw(st.text(max_size=8)),
        rates_micros=tuple(tuple(draw(st.lists(money, min_size=width, max_size=width)))
                           for _ in range(7)),
        transit_days=tuple(draw(st.lists(st.integers(0, 365), min_size=7, max_size=7))),
        pickup_cutoff_min=draw(minutes),
        per_lb_over_micros=tuple(draw(st.lists(unit_money, min_size=7, max_size=7))),
        oversize_surcharge_micros=draw(money))


@st.composite
def specs(draw: st.DrawFn) -> NetworkSpec:
    region_ids = draw(st.lists(ids, unique=True, max_size=4))
    prefixes = draw(st.lists(st.text(string.digits, min_size=1, max_size=5), unique=True,
                             max_size=8)) if region_ids else []
    regions = tuple(
        Region(rid, draw(st.floats(-90, 90)), draw(st.floats(-180, 180)),
               tuple(prefixes[i::len(region_ids)]))
        for i, rid in enumerate(region_ids))
    lane_keys = draw(st.lists(st.tuples(st.sampled_from(NODES), st.sampled_from(region_ids)),
                              unique=True, max_size=4)) if region_ids else []
    return NetworkSpec(
        regions=regions,
        services=tuple(draw(services(sid))
                       for sid in draw(st.lists(ids, unique=True, max_size=3))),
        lanes=tuple(LaneCost(node, region, draw(money), draw(unit_money), draw(unit_money))
                    for node, region in lane_keys),
        node_costs=tuple(
            NodeCosts(node, draw(money), draw(unit_money), draw(minutes),
                      tuple(draw(st.lists(st.sampled_from(CHANNELS), max_size=2))))
            for node in draw(st.lists(st.sampled_from(NODES), unique=True))),
        split_penalty_micros=tuple(draw(st.lists(money, min_size=4, max_size=4))),
    )


@settings(max_examples=200, deadline=None)
@given(specs())
def test_a_spec_survives_proto_wire_and_json_mapping_exactly(spec):
    msg = network_to_proto(spec)
    assert network_from_proto(msg) == spec
    wire = pb.Network.FromString(msg.SerializeToString())
    assert network_from_proto(wire) == spec
    text = json.dumps(json_format.MessageToDict(msg, preserving_proto_field_name=True))
    assert network_from_proto(json_format.ParseDict(json.loads(text), pb.Network())) == spec


@settings(max_examples=100, deadline=None)
@given(specs(), st.randoms(use_true_random=False))
def test_zones_and_split_penalties_may_come_in_any_order(spec, rnd):
    msg = network_to_proto(spec)
    for svc in msg.services:
        zones = list(svc.zones)
        rnd.shuffle(zones)
        del svc.zones[:]
        svc.zones.extend(zones)
    penalties = [p for p in msg.split_penalties if p.per_extra_package_micros]
    rnd.shuffle(penalties)
    del msg.split_penalties[:]
    msg.split_penalties.extend(penalties)  # tiers left out are 0
    assert network_from_proto(msg) == spec


def test_split_penalties_map_proto_tiers_onto_core_tiers():
    msg = pb.Network(split_penalties=[
        pb.SplitPenalty(sla_tier=types_pb2.SLA_TIER_WHOLESALE, per_extra_package_micros=6),
        pb.SplitPenalty(sla_tier=types_pb2.SLA_TIER_PREMIUM, per_extra_package_micros=1)])
    spec = network_from_proto(msg)
    assert spec.split_penalty_micros[SlaTier.PREMIUM] == 1
    assert spec.split_penalty_micros[SlaTier.WHOLESALE] == 6
    assert spec.split_penalty_micros[SlaTier.STANDARD] == 0
    assert [(p.sla_tier, p.per_extra_package_micros)
            for p in network_to_proto(spec).split_penalties] == [
        (types_pb2.SLA_TIER_PREMIUM, 1), (types_pb2.SLA_TIER_MARKETPLACE, 0),
        (types_pb2.SLA_TIER_STANDARD, 0), (types_pb2.SLA_TIER_WHOLESALE, 6)]


# ---- invalid networks ---------------------------------------------------------------
def small_network() -> pb.Network:
    """One of everything, valid against a catalogue with NODES and CHANNELS."""
    return network_to_proto(NetworkSpec(
        regions=(Region("east", 40.7, -74.0, ("100", "101")), Region("west", 34.0, -118.2)),
        services=(CarrierService("ground", "C", ((5, 6, 7),) * 7, (1, 2, 3, 3, 4, 5, 5)),),
        lanes=(LaneCost("n0", "east", 1, 2, 3),),
        node_costs=(NodeCosts("n0", 100, 20, 900, ("marketplace",)),),
        split_penalty_micros=(1, 3, 4, 6)))


def _drop_zone(m: pb.Network) -> None:
    del m.services[0].zones[3]


def _no_weights(m: pb.Network) -> None:
    for zone in m.services[0].zones:
        del zone.price_micros[:]


def _set(path: str, value: object) -> Callable[[pb.Network], None]:
    """A mutation setting the attribute at dotted `path` (list indexes as [i])."""
    def mutate(m: pb.Network) -> None:
        *parents, last = path.replace("[", ".").replace("]", "").split(".")
        target: object = m
        for part in parents:
            target = target[int(part)] if part.isdigit() else getattr(target, part)  # type: ignore[index]
        if last.isdigit():
            target[int(last)] = value  # type: ignore[index]
        else:
            setattr(target, last, value)
    return mutate


def _append(attr: str, item: Callable[[pb.Network], object]) -> Callable[[pb.Network], None]:
    return lambda m: getattr(m, attr).append(item(m))


def _copy_of(attr: str) -> Callable[[pb.Network], object]:
    return lambda m: getattr(m, attr)[0]


INVALID: list[tuple[str, Callable[[pb.Network], None], type[DomainError], str]] = [
    ("missing zone", _drop_zone, InvalidArgument, "network.services[0].zones"),
    ("duplicate zone", _set("services[0].zones[1].zone", 2), InvalidArgument,
     "network.services[0].zones[1].zone"),
    ("zone 9", _set("services[0].zones[6].zone", 9), InvalidArgument,
     "network.services[0].zones[6].zone"),
    ("uneven weights", lambda m: m.services[0].zones[2].price_micros.append(8),
     InvalidArgument, "network.services[0].zones[2].price_micros"),
    ("no weights", _no_weights, InvalidArgument, "network.services[0].zones[0].price_micros"),
    ("negative price", _set("services[0].zones[4].price_micros[1]", -1), InvalidArgument,
     "network.services[0].zones[4].price_micros[1]"),
    ("huge price", _set("services[0].zones[0].price_micros[0]", MAX_PACKAGE_MICROS + 1),
     InvalidArgument, "network.services[0].zones[0].price_micros[0]"),
    ("negative per lb over", _set("services[0].zones[0].per_lb_over_micros", -5),
     InvalidArgument, "network.services[0].zones[0].per_lb_over_micros"),
    ("negative transit", _set("services[0].zones[0].transit_days", -1), InvalidArgument,
     "network.services[0].zones[0].transit_days"),
    ("pickup cut-off > 1440", _set("services[0].pickup_cutoff_minute", 1441), InvalidArgument,
     "network.services[0].pickup_cutoff_minute"),
    ("negative surcharge", _set("services[0].oversize_surcharge_micros", -1), InvalidArgument,
     "network.services[0].oversize_surcharge_micros"),
    ("no service id", _set("services[0].service_id", ""), InvalidArgument,
     "network.services[0].service_id"),
    ("duplicate service", _append("services", _copy_of("services")), InvalidArgument,
     "network.services[1].service_id"),
    ("latitude 91", _set("regions[0].latitude", 91.0), InvalidArgument, "network.regions[0]"),
    ("NaN longitude", _set("regions[1].longitude", float("nan")), InvalidArgument,
     "network.regions[1]"),
    ("duplicate region", _set("regions[1].region_id", "east"), InvalidArgument,
     "network.regions[1].region_id"),
    ("empty postal prefix", lambda m: m.regions[1].postal_prefixes.append(""),
     InvalidArgument, "network.regions[1].postal_prefixes[0]"),
    ("prefix in two regions", lambda m: m.regions[1].postal_prefixes.append("101"),
     InvalidArgument, "network.regions[1].postal_prefixes[0]"),
    ("lane to unknown region", _set("lanes[0].region_id", "north"), NotFound,
     "network.lanes[0]"),
    ("negative lane cost", _set("lanes[0].fixed_micros", -1), InvalidArgument,
     "network.lanes[0].fixed_micros"),
    ("duplicate lane", _append("lanes", _copy_of("lanes")), InvalidArgument,
     "network.lanes[1]"),
    ("negative handling", _set("node_costs[0].handling_per_package_micros", -1),
     InvalidArgument, "network.node_costs[0].handling_per_package_micros"),
    ("negative pick", _set("node_costs[0].pick_per_unit_micros", -1), InvalidArgument,
     "network.node_costs[0].pick_per_unit_micros"),
    ("cut-off > 1440", _set("node_costs[0].cutoff_minute", 1441), InvalidArgument,
     "network.node_costs[0].cutoff_minute"),
    ("negative cut-off", _set("node_costs[0].cutoff_minute", -1), InvalidArgument,
     "network.node_costs[0].cutoff_minute"),
    ("empty blocked channel", lambda m: m.node_costs[0].blocked_channel_ids.append(""),
     InvalidArgument, "network.node_costs[0].blocked_channel_ids[1]"),
    ("node costed twice", _append("node_costs", _copy_of("node_costs")), InvalidArgument,
     "network.node_costs[1]"),
    ("unspecified tier", _set("split_penalties[2].sla_tier", types_pb2.SLA_TIER_UNSPECIFIED),
     InvalidArgument, "network.split_penalties[2].sla_tier"),
    ("unknown tier", _set("split_penalties[2].sla_tier", 9), InvalidArgument,
     "network.split_penalties[2].sla_tier"),
    ("duplicate tier", _set("split_penalties[3].sla_tier", types_pb2.SLA_TIER_PREMIUM),
     InvalidArgument, "network.split_penalties[3].sla_tier"),
    ("negative split penalty", _set("split_penalties[0].per_extra_package_micros", -1),
     InvalidArgument, "network.split_penalties[0].per_extra_package_micros"),
]


def test_the_small_network_is_valid():
    assert network_from_proto(small_network()) == network_from_proto(small_network())


@pytest.mark.parametrize(("mutate", "error", "field"), [case[1:] for case in INVALID],
                         ids=[case[0] for case in INVALID])
def test_an_invalid_network_is_refused_naming_the_field(mutate, error, field):
    msg = small_network()
    mutate(msg)
    with pytest.raises(DomainError) as caught:
        network_from_proto(msg)
    assert type(caught.value) is error
    assert caught.value.field == field
    assert field in caught.value.message


def catalog_ledger() -> Ledger:
    ledger = Ledger(LedgerSettings(n_shards=2))
    execute(ledger, c.UpsertNodes(tuple(NodeSpec(n, latitude=40.0, longitude=-80.0)
                                        for n in NODES)), 1)
    execute(ledger, c.UpsertChannels(tuple(ChannelSpec(ch) for ch in CHANNELS)), 1)
    return ledger


@pytest.mark.parametrize(("path", "value", "field"), [
    ("lanes[0].node_id", "nowhere", "network.lanes[0].node_id"),
    ("node_costs[0].node_id", "nowhere", "network.node_costs[0].node_id"),
    ("node_costs[0].blocked_channel_ids[0]", "telesales",
     "network.node_costs[0].blocked_channel_ids[0]"),
])
def test_unknown_nodes_and_channels_are_not_found_naming_the_field(path, value, field):
    ledger = catalog_ledger()
    msg = small_network()
    check_references(network_from_proto(msg), ledger.catalog)
    _set(path, value)(msg)
    with pytest.raises(NotFound) as caught:
        check_references(network_from_proto(msg), ledger.catalog)
    assert caught.value.field == field
    assert field in caught.value.message and repr(value) in caught.value.message


# ---- files --------------------------------------------------------------------------
SMALL_TOML = """
split_penalties = [{ sla_tier = "SLA_TIER_PREMIUM", per_extra_package_micros = 1000000 }]

[[regions]]
region_id = "east"
latitude = 40.7
longitude = -74.0
postal_prefixes = ["100", "101"]

[[services]]
service_id = "ground"
carrier = "C"
pickup_cutoff_minute = 1020
zones = [
  { zone = 8, price_micros = [9, 10], transit_days = 5, per_lb_over_micros = 2 },
  { zone = 2, price_micros = [3, 4], transit_days = 1, per_lb_over_micros = 1 },
  { zone = 3, price_micros = [4, 5], transit_days = 2 },
  { zone = 4, price_micros = [5, 6], transit_days = 3 },
  { zone = 5, price_micros = [6, 7], transit_days = 3 },
  { zone = 6, price_micros = [7, 8], transit_days = 4 },
  { zone = 7, price_micros = ["8", "9"], transit_days = 5 },
]

[[node_costs]]
node_id = "n0"
handlingPerPackageMicros = 1500000
cutoff_minute = 960
blocked_channel_ids = ["marketplace"]
"""


def test_a_toml_network_file_loads(tmp_path: Path):
    path = tmp_path / "network.toml"
    path.write_text(SMALL_TOML)
    spec = load_network_file(path)
    assert spec.regions == (Region("east", 40.7, -74.0, ("100", "101")),)
    (ground,) = spec.services
    assert ground.rates_micros[0] == (3, 4) and ground.rates_micros[6] == (9, 10)
    assert ground.transit_days == (1, 2, 3, 3, 4, 5, 5)
    assert ground.per_lb_over_micros == (1, 0, 0, 0, 0, 0, 2)
    assert ground.pickup_cutoff_min == 1020
    assert spec.node_costs == (NodeCosts("n0", 1_500_000, 0, 960, ("marketplace",)),)
    assert spec.split_penalty_micros == (1_000_000, 0, 0, 0)


def test_a_json_network_file_loads_and_an_exported_file_reads_back(tmp_path: Path):
    source = tmp_path / "network.toml"
    source.write_text(SMALL_TOML)
    spec = load_network_file(source)
    exported = tmp_path / "network.json"
    write_network_file(spec, exported)
    assert load_network_file(exported) == spec
    hand_written = tmp_path / "hand.json"
    hand_written.write_text(json.dumps({"regions": [{"regionId": "w", "latitude": 1,
                                                     "longitude": 2}]}))
    assert load_network_file(hand_written) == NetworkSpec(regions=(Region("w", 1.0, 2.0),))


def test_the_demo_network_round_trips_through_a_file(tmp_path: Path):
    path = tmp_path / "demo.json"
    write_network_file(demo_network(), path)
    assert load_network_file(path) == demo_network()


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("network.yaml", "regions: []", ".toml or .json"),
    ("network.toml", "regions = [", "not valid TOML"),
    ("network.json", "{", "not valid JSON"),
    ("network.json", "[]", "top level"),
    ("network.toml", "[[regions]]\nregion = 'x'\n", "region"),
    ("network.toml", "[[regions]]\nregion_id = 'x'\nlatitude = 'north'\n", "latitude"),
    ("network.toml", SMALL_TOML.replace("{ zone = 3,", "{ zone = 2,"), "services[0].zones[2]"),
    ("network.toml", SMALL_TOML.replace("SLA_TIER_PREMIUM", "SLA_TIER_UNSPECIFIED"),
     "split_penalties[0].sla_tier"),
])
def test_a_bad_network_file_is_a_value_error_naming_the_file(tmp_path: Path, name, content,
                                                             problem):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError) as caught:
        load_network_file(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)
    assert ": network." not in str(caught.value)  # a file's fields are at its top level


def test_a_missing_network_file_is_a_value_error(tmp_path: Path):
    with pytest.raises(ValueError, match="cannot read"):
        load_network_file(tmp_path / "absent.toml")


def test_the_network_file_setting_comes_from_the_environment_and_flags():
    assert load_settings(environ={}).network_file == ""
    assert load_settings(environ={"ALLOCD_NETWORK_FILE": "a.toml"}).network_file == "a.toml"
    assert load_settings(flags={"network_file": "b.json"},
                         environ={"ALLOCD_NETWORK_FILE": "a.toml"}).network_file == "b.json"


# ---- the demo network ------------------------------------------------------------------
def test_the_demo_network_costs_every_demo_node_and_compiles_against_the_demo_catalogue():
    spec = demo_network()
    assert {n.node_id for n in spec.node_costs} == {n.node_id for n in DEMO_NODES}
    assert 20 <= len(spec.regions) <= 30
    ledger = Ledger(LedgerSettings(n_shards=2))
    execute(ledger, c.UpsertNodes(DEMO_NODES), 1)
    execute(ledger, c.UpsertChannels(DEMO_CHANNELS), 1)
    execute(ledger, c.SetNetwork(spec), 1)
    network = ledger.network()
    assert network.region_for("10001") == network.region_index["new-york"]
    assert network.region_for("60614") == network.region_index["chicago"]
    assert network_from_proto(network_to_proto(spec)) == spec


def test_demo_rates_rise_with_weight_and_zone_and_ground_is_cheapest():
    ground, two_day, overnight = demo_network().services
    for svc in (ground, two_day, overnight):
        for row in svc.rates_micros:
            assert list(row) == sorted(row) and len(row) == 70
        for lighter, heavier in zip(svc.rates_micros, svc.rates_micros[1:], strict=False):
            assert all(a <= b for a, b in zip(lighter, heavier, strict=True))
    for z in range(7):
        for w in range(70):
            assert (ground.rates_micros[z][w] < two_day.rates_micros[z][w]
                    < overnight.rates_micros[z][w])
    assert max(ground.transit_days) <= 5 and set(two_day.transit_days) == {2}
    assert set(overnight.transit_days) == {1}
    assert len({s.carrier for s in (ground, two_day, overnight)}) == 3
