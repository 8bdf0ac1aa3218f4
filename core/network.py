"""The fulfilment network's cost model: regions, lanes, zones, carrier services, node costs.

Money is integer micros throughout (exact comparisons, deterministic tie-breaks).
Time of day is minutes after midnight UTC; delivery dates count calendar days.
`NetworkSpec` is what operators load (gRPC admin API or a TOML/JSON file);
`CompiledNetwork` is the same as dense arrays over the catalogue's node order,
which is what the allocation kernels read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

import numpy as np
from mypy_extensions import mypyc_attr

from core.catalog import Catalog
from core.errors import InvalidArgument, NotFound
from core.model import restore_frozen

#: Upper bounds (miles, inclusive) of parcel zones 2..7; farther is zone 8.
ZONE_BANDS_MI = (150.0, 300.0, 600.0, 1000.0, 1400.0, 1800.0)
MIN_ZONE, MAX_ZONE = 2, 8
DIM_DIVISOR_IN3_PER_LB = 139.0
OVERSIZE_LONGEST_SIDE_IN = 48.0
EARTH_RADIUS_MI = 3958.7613
NO_DEADLINE_DAYS = 1 << 30

# ---- cost limits ---------------------------------------------------------------------
#: The most a cost charged once a package (or once an extra package) may be: a rate card
#: price, an oversize surcharge, a lane's fixed cost, a node's handling, a split penalty.
#: A million currency units.
MAX_PACKAGE_MICROS: Final = 10**12
#: The most a cost charged per unit or per billable pound may be: a node's pick cost, a
#: lane's cost per unit and per lb, a rate card's per_lb_over, an opportunity cost
#: (SetOpportunityCosts, inventory values), a rule's routing penalty. Ten thousand
#: currency units.
MAX_UNIT_MICROS: Final = 10**10
#: The most weights (1..n lb) a rate card prices; heavier packages are priced per lb over.
MAX_RATE_WEIGHTS: Final = 10_000
#: What allocation reads a cost as at most (a package's or a plan's, or a part of one):
#: 10^17 micros, a hundred billion currency units.
#:
#: Why the sums allocation makes stay in int64, below 2^62 (the kernel's INF):
#:
#: - Without a quantity in it a package costs at most C = a carrier price (a rate card
#:   entry <= MAX_PACKAGE_MICROS + (MAX_RATE_WEIGHTS - 1) * MAX_UNIT_MICROS, a card shorter
#:   than the network's widest being extended per lb over; or a lane's fixed cost) + an
#:   oversize surcharge + the node's handling < 1.1e14 < 2^47. A split penalty is at most
#:   MAX_PACKAGE_MICROS an extra package (twice that in re-optimisation, with its weight).
#: - Per unit a package costs at most 5 * MAX_UNIT_MICROS (pick, opportunity cost, two
#:   routing penalties: a rule's and a fallback's are the most in force on a node at once,
#:   a lane's cost per unit); per billable lb at most MAX_UNIT_MICROS.
#: - The quantities are not bounded so: an order has up to max_lines_per_request lines
#:   (the service's setting) of up to QTY_MAX = 2^31 - 1 units each, a unit up to
#:   10,000 lb and 10,000 in a side (core.model), so no limit on the rates alone would do
#:   (2^31 units at 10^10 are 2.1e19 > 2^63 already). The allocation kernel saturates
#:   instead: each product of a quantity and a rate, and each sum, is min(exact value,
#:   COST_CAP), a product formed in int64 only when its float estimate is below 2^62, a
#:   sum of at most a few values each <= COST_CAP + C. All terms are >= 0, so every cost
#:   it keeps is exactly min(true cost, COST_CAP): never negative, never less than a
#:   cheaper plan's, and what it compares (the sum of two such costs and a penalty, or
#:   one per item of an order of up to 8 on its exact path) stays far below 2^62.
#: - Costs below the cap are exact: with every input at its limit, any plan of up to 10^6
#:   units, 10^6 billable lb and 100 packages (5e16 + 1e16 + 100 x (C + 2 x
#:   MAX_PACKAGE_MICROS) < 7.1e16).
#: - Re-optimisation's objective (core/reopt.py) adds to a plan's cost (<= COST_CAP) its
#:   backorder weight and its extra package weight, each saturated at COST_CAP: < 3e17.
#: - What is summed beyond one plan (an order's packages, the orders of a re-optimisation)
#:   has room for dozens of plans at the cap before int64's 9.2e18.
COST_CAP: Final = 10**17


class SlaTier(IntEnum):
    """Served in this order of priority."""

    PREMIUM = 0
    MARKETPLACE = 1
    STANDARD = 2
    WHOLESALE = 3


def great_circle_miles(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_MI * math.asin(min(1.0, math.sqrt(h)))


def zone_for_distance(miles: float) -> int:
    for zone, bound in enumerate(ZONE_BANDS_MI, start=MIN_ZONE):
        if miles <= bound:
            return zone
    return MAX_ZONE


def billable_weight_lb(actual_lb: float, volume_in3: float) -> int:
    """max(actual, dimensional = volume / 139), rounded up to the next pound, at least 1."""
    return max(1, math.ceil(max(actual_lb, volume_in3 / DIM_DIVISOR_IN3_PER_LB) - 1e-9))


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class Region:
    region_id: str
    latitude: float
    longitude: float
    postal_prefixes: tuple[str, ...] = ()


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class CarrierService:
    """A carrier's service level. `rates_micros[z - 2][w - 1]` is the price of a package of
    billable weight w lb to zone z; heavier than the table adds `per_lb_over_micros[z - 2]`
    per extra pound. `transit_days[z - 2]` days after pickup."""

    service_id: str
    carrier: str
    rates_micros: tuple[tuple[int, ...], ...]
    transit_days: tuple[int, ...]
    pickup_cutoff_min: int = 17 * 60
    per_lb_over_micros: tuple[int, ...] = (0,) * 7
    oversize_surcharge_micros: int = 0
    name: str = ""


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class LaneCost:
    """A contracted lane that replaces the rate card: fixed per package + per unit + per lb."""

    node_id: str
    region_id: str
    fixed_micros: int = 0
    per_unit_micros: int = 0
    per_lb_micros: int = 0


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class NodeCosts:
    node_id: str
    handling_per_package_micros: int = 0
    pick_per_unit_micros: int = 0
    cutoff_min: int = 24 * 60  # orders after this time of day ship tomorrow
    blocked_channels: tuple[str, ...] = ()


@mypyc_attr(native_class=False)
@dataclass(frozen=True, slots=True)
class NetworkSpec:
    regions: tuple[Region, ...] = ()
    services: tuple[CarrierService, ...] = ()
    lanes: tuple[LaneCost, ...] = ()
    node_costs: tuple[NodeCosts, ...] = ()
    # Penalty per package beyond the first, by SLA tier (SlaTier order).
    split_penalty_micros: tuple[int, ...] = (0, 0, 0, 0)
    # Set on every network made now: replacing another, it keeps each package's carrier
    # service by id (OrderBook.renumber_services). One logged before is read without it
    # (`getattr`, False): replayed, it changes no package, as it did when it was applied,
    # so a replay agrees with the snapshots written then.
    keeps_package_services: bool = field(default=True, repr=False, compare=False)

    def __setstate__(self, state: Any) -> None:
        restore_frozen(self, state, {"keeps_package_services": False})

    def validate(self, limits: bool = True) -> None:
        """Refuse a malformed spec (InvalidArgument naming the field). With `limits`, also
        costs past the cost limits above (a spec set before them, replayed or restored,
        compiles without: allocation saturates whatever it reads, see COST_CAP)."""
        seen: set[str] = set()
        for i, region in enumerate(self.regions):
            _id(region.region_id, f"regions[{i}].region_id", seen)
            if not (-90 <= region.latitude <= 90 and -180 <= region.longitude <= 180):
                raise InvalidArgument("latitude/longitude out of range", f"regions[{i}]")
        seen = set()
        for i, svc in enumerate(self.services):
            name = f"services[{i}]"
            _id(svc.service_id, f"{name}.service_id", seen)
            zones = MAX_ZONE - MIN_ZONE + 1
            if len(svc.rates_micros) != zones or not svc.rates_micros[0]:
                raise InvalidArgument(f"{name}.rates: one row per zone 2..8 with at least one "
                                      "weight", f"{name}.rates")
            width = len(svc.rates_micros[0])
            for row in svc.rates_micros:
                if len(row) != width or min(row) < 0:
                    raise InvalidArgument(f"{name}.rates: rows of equal length, prices >= 0",
                                          f"{name}.rates")
            for label, values in (("transit_days", svc.transit_days),
                                  ("per_lb_over", svc.per_lb_over_micros)):
                if len(values) != zones or min(values) < 0:
                    raise InvalidArgument(f"{name}.{label}: 7 values (zones 2..8), >= 0",
                                          f"{name}.{label}")
            if not 0 <= svc.pickup_cutoff_min <= 24 * 60:
                raise InvalidArgument(f"{name}.pickup_cutoff out of range", name)
            if svc.oversize_surcharge_micros < 0:
                raise InvalidArgument(f"{name}.oversize_surcharge must be >= 0", name)
            if limits:
                if width > MAX_RATE_WEIGHTS:
                    raise InvalidArgument(f"{name}.rates: at most {MAX_RATE_WEIGHTS} weights "
                                          f"a zone, got {width}", f"{name}.rates")
                _at_most(max(max(row) for row in svc.rates_micros), MAX_PACKAGE_MICROS,
                         f"{name}.rates")
                _at_most(max(svc.per_lb_over_micros), MAX_UNIT_MICROS, f"{name}.per_lb_over")
                _at_most(svc.oversize_surcharge_micros, MAX_PACKAGE_MICROS,
                         f"{name}.oversize_surcharge")
        region_ids = {r.region_id for r in self.regions}
        for i, lane in enumerate(self.lanes):
            if lane.region_id not in region_ids:
                raise NotFound(f"lanes[{i}]: unknown region {lane.region_id!r}", f"lanes[{i}]")
            if min(lane.fixed_micros, lane.per_unit_micros, lane.per_lb_micros) < 0:
                raise InvalidArgument(f"lanes[{i}]: costs must be >= 0", f"lanes[{i}]")
            if limits:
                _at_most(lane.fixed_micros, MAX_PACKAGE_MICROS, f"lanes[{i}].fixed_micros")
                _at_most(lane.per_unit_micros, MAX_UNIT_MICROS, f"lanes[{i}].per_unit_micros")
                _at_most(lane.per_lb_micros, MAX_UNIT_MICROS, f"lanes[{i}].per_lb_micros")
        for i, costs in enumerate(self.node_costs):
            if min(costs.handling_per_package_micros, costs.pick_per_unit_micros) < 0:
                raise InvalidArgument(f"node_costs[{i}]: costs must be >= 0", f"node_costs[{i}]")
            if limits:
                _at_most(costs.handling_per_package_micros, MAX_PACKAGE_MICROS,
                         f"node_costs[{i}].handling_per_package_micros")
                _at_most(costs.pick_per_unit_micros, MAX_UNIT_MICROS,
                         f"node_costs[{i}].pick_per_unit_micros")
            if not 0 <= costs.cutoff_min <= 24 * 60:
                raise InvalidArgument(f"node_costs[{i}].cutoff out of range", f"node_costs[{i}]")
            if not all(costs.blocked_channels):
                raise InvalidArgument(f"node_costs[{i}].blocked_channels: empty channel id",
                                      f"node_costs[{i}].blocked_channels")
        if len(self.split_penalty_micros) != len(SlaTier) or min(self.split_penalty_micros) < 0:
            raise InvalidArgument("split_penalty: one value >= 0 per SLA tier", "split_penalty")
        if limits:
            _at_most(max(self.split_penalty_micros), MAX_PACKAGE_MICROS, "split_penalty")


def _at_most(value: int, limit: int, field_name: str) -> None:
    if value > limit:
        raise InvalidArgument(f"{field_name}: at most {limit} micros, got {value}", field_name)


def _id(value: str, field_name: str, seen: set[str]) -> None:
    if not value:
        raise InvalidArgument(f"{field_name} is required", field_name)
    if value in seen:
        raise InvalidArgument(f"{field_name}: {value!r} appears twice", field_name)
    seen.add(value)


@dataclass(slots=True)
class CompiledNetwork:
    """NetworkSpec as arrays over (catalogue node order, region order, service order)."""

    spec: NetworkSpec
    region_index: dict[str, int]
    service_index: dict[str, int]
    postal_prefix: dict[str, int]
    region_lat: np.ndarray
    region_lon: np.ndarray
    zone: np.ndarray  # int64 [node, region]
    distance_mi: np.ndarray  # float64 [node, region]
    rates: np.ndarray  # int64 [service, zone 0..8, weight 0..W]; weight 0 unused
    over_per_lb: np.ndarray  # int64 [service, zone]
    transit: np.ndarray  # int64 [service, zone]
    service_cutoff: np.ndarray  # int64 [service]
    surcharge: np.ndarray  # int64 [service]
    lane_has: np.ndarray  # bool [node, region]
    lane_fixed: np.ndarray  # int64 [node, region]
    lane_per_unit: np.ndarray
    lane_per_lb: np.ndarray
    handling: np.ndarray  # int64 [node]
    pick: np.ndarray  # int64 [node]
    node_cutoff: np.ndarray  # int64 [node]
    blocked: np.ndarray  # bool [node, channel]
    split_penalty: np.ndarray  # int64 [tier]
    node_ids: tuple[str, ...] = field(default=())

    @property
    def n_services(self) -> int:
        return int(self.rates.shape[0])

    def region_for(self, postal_code: str = "", latitude: float | None = None,
                   longitude: float | None = None) -> int:
        """The ship-to's region: longest matching postal prefix, else the nearest region."""
        for length in range(min(len(postal_code), 10), 0, -1):
            region = self.postal_prefix.get(postal_code[:length])
            if region is not None:
                return region
        if latitude is None or longitude is None or not len(self.region_lat):
            raise InvalidArgument("ship_to: no region matches the postal code and no "
                                  "coordinates were given", "ship_to")
        distances = [great_circle_miles(latitude, longitude, float(a), float(b))
                     for a, b in zip(self.region_lat, self.region_lon, strict=True)]
        return int(np.argmin(distances))


def compile_network(spec: NetworkSpec, catalog: Catalog, n_channels: int = 64) -> CompiledNetwork:
    spec.validate(limits=False)  # (SetNetwork checks them: a spec from before them loads)
    n_nodes = catalog.n_nodes
    regions = spec.regions
    n_regions = len(regions)
    region_index = {r.region_id: i for i, r in enumerate(regions)}
    postal: dict[str, int] = {}
    for i, region in enumerate(regions):
        for prefix in region.postal_prefixes:
            postal[prefix] = i
    zone = np.full((n_nodes, n_regions), MAX_ZONE, np.int64)
    distance = np.zeros((n_nodes, n_regions), np.float64)
    for n, node in enumerate(catalog.nodes):
        for r, region in enumerate(regions):
            miles = great_circle_miles(node.latitude, node.longitude, region.latitude,
                                       region.longitude)
            distance[n, r] = miles
            zone[n, r] = zone_for_distance(miles)
    services = spec.services
    width = max((len(s.rates_micros[0]) for s in services), default=1)
    rates = np.zeros((len(services), MAX_ZONE + 1, width + 1), np.int64)
    over = np.zeros((len(services), MAX_ZONE + 1), np.int64)
    transit = np.zeros((len(services), MAX_ZONE + 1), np.int64)
    for s, svc in enumerate(services):
        for z in range(MIN_ZONE, MAX_ZONE + 1):
            row = svc.rates_micros[z - MIN_ZONE]
            rates[s, z, 1 : len(row) + 1] = row
            # A shorter table than the widest: heavier weights extrapolate per lb.
            for w in range(len(row) + 1, width + 1):
                rates[s, z, w] = min(COST_CAP, row[-1] + (w - len(row))
                                     * svc.per_lb_over_micros[z - MIN_ZONE])
            over[s, z] = svc.per_lb_over_micros[z - MIN_ZONE]
            transit[s, z] = svc.transit_days[z - MIN_ZONE]
    lane_has = np.zeros((n_nodes, n_regions), np.bool_)
    lane_fixed = np.zeros((n_nodes, n_regions), np.int64)
    lane_unit = np.zeros((n_nodes, n_regions), np.int64)
    lane_lb = np.zeros((n_nodes, n_regions), np.int64)
    for i, lane in enumerate(spec.lanes):
        n = catalog.node(lane.node_id, f"lanes[{i}].node_id")
        r = region_index[lane.region_id]
        lane_has[n, r] = True
        lane_fixed[n, r], lane_unit[n, r], lane_lb[n, r] = (
            lane.fixed_micros, lane.per_unit_micros, lane.per_lb_micros)
    handling = np.zeros(n_nodes, np.int64)
    pick = np.zeros(n_nodes, np.int64)
    cutoff = np.full(n_nodes, 24 * 60, np.int64)
    blocked = np.zeros((n_nodes, n_channels), np.bool_)
    for i, costs in enumerate(spec.node_costs):
        n = catalog.node(costs.node_id, f"node_costs[{i}].node_id")
        handling[n] = costs.handling_per_package_micros
        pick[n] = costs.pick_per_unit_micros
        cutoff[n] = costs.cutoff_min
        for ch in costs.blocked_channels:
            blocked[n, catalog.channel(ch, f"node_costs[{i}].blocked_channels")] = True
    return CompiledNetwork(
        spec=spec, region_index=region_index,
        service_index={s.service_id: i for i, s in enumerate(services)},
        postal_prefix=postal,
        region_lat=np.array([r.latitude for r in regions], np.float64),
        region_lon=np.array([r.longitude for r in regions], np.float64),
        zone=zone, distance_mi=distance, rates=rates, over_per_lb=over, transit=transit,
        service_cutoff=np.array([s.pickup_cutoff_min for s in services], np.int64),
        surcharge=np.array([s.oversize_surcharge_micros for s in services], np.int64),
        lane_has=lane_has, lane_fixed=lane_fixed, lane_per_unit=lane_unit, lane_per_lb=lane_lb,
        handling=handling, pick=pick, node_cutoff=cutoff, blocked=blocked,
        split_penalty=np.array(spec.split_penalty_micros, np.int64),
        node_ids=tuple(n.node_id for n in catalog.nodes),
    )
