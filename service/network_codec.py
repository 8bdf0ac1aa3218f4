"""Translation between allocd.v1.Network and core.network.NetworkSpec.

The proto gives a rate card as one ZoneRates per zone, in any order; core wants dense
rows by zone. Checks on fields whose names differ between the two (zones, tiers,
minutes, money) are made here, so errors name the field the caller sent; the rest
is left to NetworkSpec.validate, with its field names prefixed the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from allocd.v1 import network_service_pb2 as pb
from allocd.v1 import types_pb2

from core.errors import DomainError, InvalidArgument
from core.network import (
    MAX_PACKAGE_MICROS,
    MAX_RATE_WEIGHTS,
    MAX_UNIT_MICROS,
    MAX_ZONE,
    MIN_ZONE,
    CarrierService,
    LaneCost,
    NetworkSpec,
    NodeCosts,
    Region,
    SlaTier,
)

ZONES = range(MIN_ZONE, MAX_ZONE + 1)
# Money fields are bounded (core.network's cost limits: per package or per unit / lb) so
# that the sums allocation makes of them stay far from int64 overflow.
MINUTES_PER_DAY = 24 * 60
MAX_TRANSIT_DAYS = 365
MAX_POSTAL_PREFIX = 10  # CompiledNetwork.region_for matches at most 10 characters

# Proto enums number from 1 where core starts at 0 (proto reserves 0 for UNSPECIFIED).
_TIER_FROM_PROTO: dict[int, SlaTier] = {int(t) + 1: t for t in SlaTier}


def sla_tier_from_proto(value: int, field: str) -> SlaTier:
    tier = _TIER_FROM_PROTO.get(value)
    if tier is None:
        raise InvalidArgument(f"{field}: an SLA tier is required", field)
    return tier


def sla_tier_to_proto(tier: SlaTier) -> types_pb2.SlaTier.ValueType:
    return types_pb2.SlaTier.ValueType(int(tier) + 1)


@contextlib.contextmanager
def prefixed(prefix: str) -> Iterator[None]:
    """Re-raise domain errors with `prefix.` before their field (`network.lanes[0]`)."""
    if not prefix:
        yield
        return
    try:
        yield
    except DomainError as error:
        field = f"{prefix}.{error.field}" if error.field else prefix
        if error.field and error.message.startswith(error.field):
            message = f"{prefix}.{error.message}"
        else:
            message = f"{field}: {error.message}"
        raise type(error)(message, field) from error


def _bounded(value: int, low: int, high: int, field: str) -> int:
    if not low <= value <= high:
        raise InvalidArgument(f"{field} must be between {low} and {high}, got {value}", field)
    return value


def _money(value: int, field: str) -> int:
    """A cost charged once a package (or an extra package)."""
    return _bounded(value, 0, MAX_PACKAGE_MICROS, field)


def _unit_money(value: int, field: str) -> int:
    """A cost charged per unit or per billable lb."""
    return _bounded(value, 0, MAX_UNIT_MICROS, field)


def _region(msg: pb.Region, field: str) -> Region:
    for k, prefix in enumerate(msg.postal_prefixes):
        if not 0 < len(prefix) <= MAX_POSTAL_PREFIX:
            raise InvalidArgument(
                f"{field}.postal_prefixes[{k}]: {prefix!r} must have 1..{MAX_POSTAL_PREFIX} "
                "characters", f"{field}.postal_prefixes[{k}]")
    return Region(msg.region_id, msg.latitude, msg.longitude, tuple(msg.postal_prefixes))


def _service(msg: pb.CarrierService, field: str) -> CarrierService:
    by_zone: dict[int, pb.ZoneRates] = {}
    for j, rates in enumerate(msg.zones):
        at = f"{field}.zones[{j}]"
        if rates.zone not in ZONES:
            raise InvalidArgument(f"{at}.zone: {rates.zone} is not a zone {MIN_ZONE}..{MAX_ZONE}",
                                  f"{at}.zone")
        if rates.zone in by_zone:
            raise InvalidArgument(f"{at}.zone: zone {rates.zone} appears twice", f"{at}.zone")
        by_zone[rates.zone] = rates
        if not rates.price_micros:
            raise InvalidArgument(f"{at}.price_micros must not be empty", f"{at}.price_micros")
        if len(rates.price_micros) > MAX_RATE_WEIGHTS:
            raise InvalidArgument(f"{at}.price_micros: at most {MAX_RATE_WEIGHTS} weights, got "
                                  f"{len(rates.price_micros)}", f"{at}.price_micros")
        if len(rates.price_micros) != len(msg.zones[0].price_micros):
            raise InvalidArgument(
                f"{at}.price_micros: every zone of a service must price the same weights "
                f"({len(msg.zones[0].price_micros)}, as zones[0] does)", f"{at}.price_micros")
        for k, price in enumerate(rates.price_micros):
            _money(price, f"{at}.price_micros[{k}]")
        _unit_money(rates.per_lb_over_micros, f"{at}.per_lb_over_micros")
        _bounded(rates.transit_days, 0, MAX_TRANSIT_DAYS, f"{at}.transit_days")
    missing = [z for z in ZONES if z not in by_zone]
    if missing:
        raise InvalidArgument(
            f"{field}.zones: one entry per zone {MIN_ZONE}..{MAX_ZONE} is required; "
            f"missing {', '.join(map(str, missing))}", f"{field}.zones")
    rows = [by_zone[z] for z in ZONES]
    return CarrierService(
        service_id=msg.service_id, carrier=msg.carrier, name=msg.name,
        rates_micros=tuple(tuple(r.price_micros) for r in rows),
        transit_days=tuple(r.transit_days for r in rows),
        per_lb_over_micros=tuple(r.per_lb_over_micros for r in rows),
        pickup_cutoff_min=_bounded(msg.pickup_cutoff_minute, 0, MINUTES_PER_DAY,
                                   f"{field}.pickup_cutoff_minute"),
        oversize_surcharge_micros=_money(msg.oversize_surcharge_micros,
                                         f"{field}.oversize_surcharge_micros"),
    )


def _lane(msg: pb.LaneCost, field: str) -> LaneCost:
    return LaneCost(msg.node_id, msg.region_id,
                    fixed_micros=_money(msg.fixed_micros, f"{field}.fixed_micros"),
                    per_unit_micros=_unit_money(msg.per_unit_micros,
                                                f"{field}.per_unit_micros"),
                    per_lb_micros=_unit_money(msg.per_lb_micros, f"{field}.per_lb_micros"))


def _node_costs(msg: pb.NodeCosts, field: str) -> NodeCosts:
    for k, channel_id in enumerate(msg.blocked_channel_ids):
        if not channel_id:  # core would read "" as "no channel"
            raise InvalidArgument(f"{field}.blocked_channel_ids[{k}] must not be empty",
                                  f"{field}.blocked_channel_ids[{k}]")
    return NodeCosts(
        msg.node_id,
        handling_per_package_micros=_money(msg.handling_per_package_micros,
                                           f"{field}.handling_per_package_micros"),
        pick_per_unit_micros=_unit_money(msg.pick_per_unit_micros,
                                         f"{field}.pick_per_unit_micros"),
        cutoff_min=_bounded(msg.cutoff_minute, 0, MINUTES_PER_DAY, f"{field}.cutoff_minute"),
        blocked_channels=tuple(msg.blocked_channel_ids))


def _split_penalties(entries: Sequence[pb.SplitPenalty]) -> tuple[int, ...]:
    values = [0] * len(SlaTier)
    seen: set[SlaTier] = set()
    for i, entry in enumerate(entries):
        field = f"split_penalties[{i}]"
        tier = sla_tier_from_proto(entry.sla_tier, f"{field}.sla_tier")
        if tier in seen:
            raise InvalidArgument(f"{field}.sla_tier: {tier.name} appears twice",
                                  f"{field}.sla_tier")
        seen.add(tier)
        values[tier] = _money(entry.per_extra_package_micros,
                              f"{field}.per_extra_package_micros")
    return tuple(values)


def _unique(keys: Sequence[object], field: str, what: str,
            names: Sequence[str] | None = None) -> None:
    """Later entries would silently override earlier ones in core; refuse instead."""
    names = names or [f"{field}[{i}]" for i in range(len(keys))]
    first: dict[object, int] = {}
    for i, key in enumerate(keys):
        if key in first:
            raise InvalidArgument(f"{names[i]}: {what} {key!r} appears twice "
                                  f"(also at {names[first[key]]})", names[i])
        first[key] = i


def network_from_proto(msg: pb.Network, field: str = "network") -> NetworkSpec:
    """A validated NetworkSpec; errors name fields under `field` (empty: the message root).

    Node and channel ids are not checked: that needs the catalogue (compile_network).
    """
    with prefixed(field):
        spec = NetworkSpec(
            regions=tuple(_region(r, f"regions[{i}]") for i, r in enumerate(msg.regions)),
            services=tuple(_service(s, f"services[{i}]") for i, s in enumerate(msg.services)),
            lanes=tuple(_lane(lane, f"lanes[{i}]") for i, lane in enumerate(msg.lanes)),
            node_costs=tuple(_node_costs(n, f"node_costs[{i}]")
                             for i, n in enumerate(msg.node_costs)),
            split_penalty_micros=_split_penalties(msg.split_penalties),
        )
        spec.validate()
        _unique([(lane.node_id, lane.region_id) for lane in spec.lanes], "lanes",
                "node and region")
        _unique([n.node_id for n in spec.node_costs], "node_costs", "node")
        _unique([p for r in spec.regions for p in r.postal_prefixes], "postal_prefixes",
                "postal prefix", [f"regions[{i}].postal_prefixes[{k}]"
                                  for i, r in enumerate(spec.regions)
                                  for k in range(len(r.postal_prefixes))])
    return spec


def network_to_proto(spec: NetworkSpec) -> pb.Network:
    """Zones in order 2..8 and every SLA tier's split penalty, zeros included."""
    return pb.Network(
        regions=[pb.Region(region_id=r.region_id, latitude=r.latitude, longitude=r.longitude,
                           postal_prefixes=r.postal_prefixes) for r in spec.regions],
        services=[pb.CarrierService(
            service_id=s.service_id, carrier=s.carrier, name=s.name,
            zones=[pb.ZoneRates(zone=zone, price_micros=row, per_lb_over_micros=over,
                                transit_days=days)
                   for zone, row, over, days in zip(ZONES, s.rates_micros,
                                                    s.per_lb_over_micros, s.transit_days,
                                                    strict=True)],
            pickup_cutoff_minute=s.pickup_cutoff_min,
            oversize_surcharge_micros=s.oversize_surcharge_micros) for s in spec.services],
        lanes=[pb.LaneCost(node_id=lane.node_id, region_id=lane.region_id,
                           fixed_micros=lane.fixed_micros, per_unit_micros=lane.per_unit_micros,
                           per_lb_micros=lane.per_lb_micros) for lane in spec.lanes],
        node_costs=[pb.NodeCosts(node_id=n.node_id,
                                 handling_per_package_micros=n.handling_per_package_micros,
                                 pick_per_unit_micros=n.pick_per_unit_micros,
                                 cutoff_minute=n.cutoff_min,
                                 blocked_channel_ids=n.blocked_channels)
                    for n in spec.node_costs],
        split_penalties=[pb.SplitPenalty(sla_tier=sla_tier_to_proto(tier),
                                         per_extra_package_micros=spec.split_penalty_micros[tier])
                         for tier in SlaTier],
    )
