"""The cost model `allocd serve --demo` applies: ship-to regions for big US metros,
three carrier services, node costs for every demo node, two contracted lanes.

Rates are invented but shaped like discounted US parcel rate cards: a first-pound
price and a per-pound slope that both grow with the zone, ground far below air.
Cut-offs are minutes after midnight UTC.
"""

from __future__ import annotations

from core.network import (
    CarrierService,
    LaneCost,
    NetworkSpec,
    NodeCosts,
    Region,
    SlaTier,
)

DOLLAR = 1_000_000
CENT = DOLLAR // 100
MAX_WEIGHT_LB = 70
PICKUP_CUTOFF = 17 * 60

# (region id, latitude, longitude, 3-digit ZIP prefixes)
METROS: tuple[tuple[str, float, float, tuple[str, ...]], ...] = (
    ("new-york", 40.7128, -74.0060, ("100", "101", "102", "103", "104", "112", "113", "114")),
    ("los-angeles", 34.0522, -118.2437, ("900", "902", "903", "904", "905", "906", "907",
                                         "908", "910", "911", "912", "913")),
    ("chicago", 41.8781, -87.6298, ("600", "601", "602", "603", "604", "605", "606", "607",
                                    "608")),
    ("houston", 29.7604, -95.3698, ("770", "772", "773", "774", "775")),
    ("phoenix", 33.4484, -112.0740, ("850", "852", "853")),
    ("philadelphia", 39.9526, -75.1652, ("080", "081", "190", "191", "193", "194")),
    ("san-antonio", 29.4241, -98.4936, ("780", "781", "782")),
    ("san-diego", 32.7157, -117.1611, ("919", "920", "921")),
    ("dallas-fort-worth", 32.7767, -96.7970, ("750", "751", "752", "753", "760", "761", "762")),
    ("san-francisco", 37.7749, -122.4194, ("940", "941", "943", "944", "945", "946", "947",
                                           "948", "949", "950", "951")),
    ("austin", 30.2672, -97.7431, ("786", "787")),
    ("jacksonville", 30.3322, -81.6557, ("320", "322")),
    ("columbus", 39.9612, -82.9988, ("430", "431", "432")),
    ("charlotte", 35.2271, -80.8431, ("280", "281", "282")),
    ("indianapolis", 39.7684, -86.1581, ("460", "461", "462")),
    ("seattle", 47.6062, -122.3321, ("980", "981", "982", "983", "984")),
    ("denver", 39.7392, -104.9903, ("800", "801", "802", "803", "804", "805")),
    ("washington", 38.9072, -77.0369, ("200", "202", "203", "204", "205", "206", "207", "208",
                                       "209", "220", "221", "222", "223")),
    ("boston", 42.3601, -71.0589, ("018", "019", "020", "021", "022", "023", "024")),
    ("nashville", 36.1627, -86.7816, ("370", "371", "372")),
    ("detroit", 42.3314, -83.0458, ("480", "481", "482", "483")),
    ("portland", 45.5152, -122.6784, ("970", "971", "972")),
    ("las-vegas", 36.1699, -115.1398, ("889", "890", "891")),
    ("atlanta", 33.7490, -84.3880, ("300", "301", "302", "303", "311", "399")),
    ("miami", 25.7617, -80.1918, ("330", "331", "332", "333", "334")),
    ("minneapolis", 44.9778, -93.2650, ("550", "551", "553", "554", "555")),
)

# (service id, carrier, name, first-lb price in cents by zone 2..8, cents per extra lb by
#  zone, transit days by zone, oversize surcharge in dollars)
SERVICES = (
    ("ground", "ParcelWay", "ParcelWay Ground",
     (820, 845, 885, 920, 945, 980, 1020), (55, 70, 95, 120, 145, 165, 185),
     (1, 2, 3, 3, 4, 5, 5), 30),
    ("two_day", "SkyBridge", "SkyBridge 2Day",
     (1850, 2000, 2150, 2350, 2500, 2650, 2800), (160, 200, 260, 310, 360, 400, 440),
     (2,) * 7, 40),
    ("overnight", "RedEye Express", "RedEye Priority Overnight",
     (3200, 3600, 4100, 4600, 5000, 5400, 5800), (300, 380, 460, 540, 600, 660, 720),
     (1,) * 7, 50),
)

# node id -> (handling per package in cents, pick per unit in cents, cut-off minute UTC)
NODE_COSTS = {
    "OAK4": (125, 22, 16 * 60), "ONT6": (120, 21, 16 * 60), "PHX6": (110, 20, 16 * 60),
    "IND1": (115, 20, 15 * 60 + 30), "AVP3": (130, 23, 15 * 60 + 30),
    "DFW7": (115, 21, 15 * 60 + 30), "ATL6": (150, 28, 15 * 60), "SEA8": (155, 30, 16 * 60),
    "MDW2": (120, 22, 15 * 60 + 30), "JAX3": (125, 22, 15 * 60),
    "STORE-NYC": (240, 45, 15 * 60), "STORE-CHI": (235, 45, 15 * 60),
    "DS-ACME": (200, 40, 15 * 60),
}
# Stores fulfil the web and store channels only.
BLOCKED_CHANNELS = {"STORE-NYC": ("marketplace",), "STORE-CHI": ("marketplace",)}

# Extra package cost per SLA tier: splitting hurts least where speed matters most.
SPLIT_PENALTY = {SlaTier.PREMIUM: 1 * DOLLAR, SlaTier.MARKETPLACE: 3 * DOLLAR,
                 SlaTier.STANDARD: 4 * DOLLAR, SlaTier.WHOLESALE: 6 * DOLLAR}


def _service(service_id: str, carrier: str, name: str, first_lb: tuple[int, ...],
             per_lb: tuple[int, ...], transit: tuple[int, ...], oversize: int) -> CarrierService:
    return CarrierService(
        service_id=service_id, carrier=carrier, name=name,
        rates_micros=tuple(tuple((first + slope * (w - 1)) * CENT
                                 for w in range(1, MAX_WEIGHT_LB + 1))
                           for first, slope in zip(first_lb, per_lb, strict=True)),
        transit_days=transit,
        per_lb_over_micros=tuple(slope * CENT for slope in per_lb),
        pickup_cutoff_min=PICKUP_CUTOFF,
        oversize_surcharge_micros=oversize * DOLLAR,
    )


def demo_network() -> NetworkSpec:
    return NetworkSpec(
        regions=tuple(Region(rid, lat, lon, prefixes) for rid, lat, lon, prefixes in METROS),
        services=tuple(_service(*row) for row in SERVICES),
        lanes=(
            # Regional couriers, cheaper than the ground card into the nearest metro.
            LaneCost("AVP3", "new-york", fixed_micros=550 * CENT, per_unit_micros=10 * CENT,
                     per_lb_micros=15 * CENT),
            LaneCost("ONT6", "los-angeles", fixed_micros=475 * CENT, per_unit_micros=10 * CENT,
                     per_lb_micros=12 * CENT),
        ),
        node_costs=tuple(
            NodeCosts(node_id, handling * CENT, pick * CENT, cutoff,
                      BLOCKED_CHANNELS.get(node_id, ()))
            for node_id, (handling, pick, cutoff) in NODE_COSTS.items()),
        split_penalty_micros=tuple(SPLIT_PENALTY[tier] for tier in SlaTier),
    )
