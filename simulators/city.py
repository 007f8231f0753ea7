"""The simulated city: where every bin, signal controller, site and truck is.

`build_city` is pure and deterministic: the same scenario (seed included) on the same road
network gives the same city, device for device. Each part draws from its own random
stream (`[seed, part]`), so adding bins does not move the signal controllers.

* Bins (`B0001`, sensor `S-B0001`) stand at positions spread evenly along the named
  residential streets (`RoadNetwork.street_points`), with the street name from OSM.
* Districts are map grid cells ("Planquadrate"): the network's bounding box is cut into
  squares of `district_cell_m` metres from its north-west corner; columns are lettered
  west to east (A, B, ... Z, AA, ...), rows numbered north to south, so a bin in the
  second column and third row is in district `B3`. Purely positional, so it works for
  any extract without administrative boundaries.
* Signal controllers (`LSA-001`, for Lichtsignalanlage) sit at junctions: nodes with at
  least three legs on named streets carrying at least two different names, ranked by
  the classes of their two most important streets (primary before secondary before
  tertiary...), kept at least `min_spacing_m` apart.
* Sites are snapped to the nearest network node; a site without coordinates is placed
  at a node on the outer edge of the network (where depots usually are).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, TypeVar

import numpy as np

from cityops.routing.network import RoadNetwork, haversine_m
from cityops.simulators.scenario import Fraction, Scenario

__all__ = [
    "Bin",
    "City",
    "Controller",
    "Detector",
    "Phase",
    "Site",
    "Truck",
    "build_city",
    "district_of",
]

logger = logging.getLogger(__name__)

#: Importance of highway classes when choosing junctions for traffic signals.
_CLASS_RANK = {
    "motorway": 8, "trunk": 7, "primary": 6, "secondary": 5, "tertiary": 4,
    "unclassified": 3, "residential": 2, "living_street": 1, "service": 0,
}
K = TypeVar("K")
_M_PER_DEG = math.pi / 180 * 6_371_008.8

# Random streams of build_city, one per part of the city.
_STREAM_BINS, _STREAM_SIGNALS, _STREAM_SITES, _STREAM_LORA = 1, 2, 3, 4
#: Sensor to floor of an empty bin by size (litres), and to the fill line of a full one.
_EMPTY_DISTANCE_MM = {120: 950, 240: 1050, 660: 1150, 1100: 1300}
_FULL_DISTANCE_MM = 300  # above the LDDS75 blind zone (280 mm)


@dataclass(frozen=True, slots=True)
class Site:
    site_id: str
    name: str
    kind: Literal["depot", "disposal"]
    lat: float
    lon: float
    node: int


@dataclass(frozen=True, slots=True)
class LoraSpec:
    """A bin's LoRaWAN distance sensor: what the registry knows, and its network server."""

    dev_eui: str
    model: str
    network: str
    empty_distance_mm: int
    full_distance_mm: int


@dataclass(frozen=True, slots=True)
class Bin:
    bin_id: str
    sensor_id: str
    lat: float
    lon: float
    node: int
    street: str
    district: str
    capacity_l: int
    fraction: Fraction
    house_number: str | None = None
    collection_weekday: int | None = None
    lora: LoraSpec | None = None  # reports through a LoRaWAN network server


@dataclass(frozen=True, slots=True)
class Phase:
    """A signal group of a fixed-time plan (times in seconds, multiples of 0.1)."""

    phase: int
    seq: int
    movement: str
    green_s: float
    min_green_s: float
    max_green_s: float
    yellow_s: float
    red_clearance_s: float
    arrival_vph: float
    lanes: int
    speed_kmh: float

    @property
    def interval_s(self) -> float:
        """Green, yellow and red clearance together."""
        return self.green_s + self.yellow_s + self.red_clearance_s


@dataclass(frozen=True, slots=True)
class Detector:
    channel: int
    phase: int
    kind: Literal["stop_bar", "advance"]
    lane: int
    distance_m: float
    length_m: float


@dataclass(frozen=True, slots=True)
class Controller:
    controller_id: str
    name: str
    lat: float
    lon: float
    node: int
    offset_s: float
    phases: tuple[Phase, ...]
    detectors: tuple[Detector, ...]

    @property
    def cycle_s(self) -> float:
        return round(sum(p.interval_s for p in self.phases), 1)


@dataclass(frozen=True, slots=True)
class Truck:
    truck_id: str
    name: str
    capacity_l: int
    capacity_kg: int | None
    depot_id: str
    fractions: tuple[Fraction, ...]
    shift_start: dt.time = dt.time(6, 0)
    shift_end: dt.time = dt.time(14, 30)


@dataclass(frozen=True)
class City:
    name: str
    seed: int
    sites: tuple[Site, ...]
    bins: tuple[Bin, ...]
    controllers: tuple[Controller, ...]
    trucks: tuple[Truck, ...]
    _sites_by_id: dict[str, Site] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sites_by_id", {s.site_id: s for s in self.sites})

    def site(self, site_id: str) -> Site:
        return self._sites_by_id[site_id]

    def disposal_sites(self) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if s.kind == "disposal")


def district_of(
    lat: float, lon: float, bbox: tuple[float, float, float, float], cell_m: float
) -> str:
    """The grid-cell name (`B3`) of a position in `bbox` (min_lat, min_lon, max_lat, max_lon)."""
    min_lat, min_lon, max_lat, _ = bbox
    cos_lat = math.cos(math.radians((min_lat + max_lat) / 2))
    col = max(0, int((lon - min_lon) * _M_PER_DEG * cos_lat // cell_m))
    row = max(0, int((max_lat - lat) * _M_PER_DEG // cell_m))
    letters = ""
    col += 1
    while col:
        col, rem = divmod(col - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return f"{letters}{row + 1}"


def build_city(scenario: Scenario, network: RoadNetwork) -> City:
    """Place every device of the scenario on the network; deterministic for the seed."""
    sites = _place_sites(scenario, network)
    bins = _place_bins(scenario, network)
    controllers = _place_controllers(scenario, network)
    trucks = _make_trucks(scenario)
    city = City(scenario.name, scenario.seed, sites, bins, controllers, trucks)
    logger.info(
        "built city %s (seed %d): %d bins, %d signal controllers, %d trucks, %d sites",
        scenario.name, scenario.seed, len(bins), len(controllers), len(trucks), len(sites),
    )
    return city


def _rng(scenario: Scenario, stream: int) -> np.random.Generator:
    return np.random.default_rng([scenario.seed, stream])


def _place_sites(scenario: Scenario, network: RoadNetwork) -> tuple[Site, ...]:
    rng = _rng(scenario, _STREAM_SITES)
    centre_lat, centre_lon = float(network.lat.mean()), float(network.lon.mean())
    dist = haversine_m(network.lat, network.lon, centre_lat, centre_lon)
    # Outer ring: the 10 % of nodes farthest from the centre.
    edge_nodes = np.flatnonzero(dist >= np.quantile(dist, 0.9))
    taken: list[int] = []
    sites = []
    for cfg in scenario.sites:
        if cfg.lat is not None and cfg.lon is not None:
            node = network.nearest_node(cfg.lat, cfg.lon)
        else:
            free = [int(n) for n in edge_nodes if int(n) not in taken]
            if taken:  # spread the sites out: prefer nodes far from those already placed
                far = np.min(
                    [haversine_m(network.lat[free], network.lon[free],
                                 network.lat[t], network.lon[t]) for t in taken], axis=0
                )
                free = [n for n, d in zip(free, far, strict=True) if d >= np.quantile(far, 0.5)]
            node = int(free[int(rng.integers(len(free)))])
        taken.append(node)
        sites.append(Site(
            site_id=cfg.id, name=cfg.name, kind=cfg.kind,
            lat=float(network.lat[node]), lon=float(network.lon[node]), node=node,
        ))
    return tuple(sites)


def _choice(rng: np.random.Generator, weights: Mapping[K, float], n: int) -> list[K]:
    keys = list(weights)
    p = np.asarray([weights[k] for k in keys], dtype=np.float64)
    picks = rng.choice(len(keys), size=n, p=p / p.sum())
    return [keys[int(i)] for i in picks]


def _place_bins(scenario: Scenario, network: RoadNetwork) -> tuple[Bin, ...]:
    cfg = scenario.bins
    if cfg.count == 0:
        return ()
    rng = _rng(scenario, _STREAM_BINS)
    if cfg.street_classes:
        points = network.street_points(cfg.count, rng, classes=frozenset(cfg.street_classes))
    else:
        points = network.street_points(cfg.count, rng)
    fractions = _choice(rng, cfg.fractions, cfg.count)
    sizes = _choice(rng, cfg.capacities, cfg.count)
    width = max(4, len(str(cfg.count)))
    bbox = network.bbox
    bins = []
    for i, (point, fraction, size) in enumerate(zip(points, fractions, sizes, strict=True), 1):
        bin_id = f"B{i:0{width}d}"
        bins.append(Bin(
            bin_id=bin_id,
            sensor_id=f"S-{bin_id}",
            lat=round(point.lat, 7),
            lon=round(point.lon, 7),
            node=point.node,
            street=point.street,
            district=district_of(point.lat, point.lon, bbox, scenario.district_cell_m),
            capacity_l=size,
            fraction=fraction,
        ))
    return _with_lora(scenario, bins)


def _with_lora(scenario: Scenario, bins: list[Bin]) -> tuple[Bin, ...]:
    """Give `lorawan.share` of the bins a LoRaWAN sensor (their own random stream, so the
    rest of the city stays as it was)."""
    cfg = scenario.bins.lorawan
    n = round(cfg.share * len(bins))
    if n == 0:
        return tuple(bins)
    rng = _rng(scenario, _STREAM_LORA)
    chosen = sorted(int(i) for i in rng.choice(len(bins), size=n, replace=False))
    out = list(bins)
    for k, i in enumerate(chosen):
        b = bins[i]
        empty = _EMPTY_DISTANCE_MM.get(b.capacity_l, 100 + round(b.capacity_l ** (1 / 3) * 100))
        spec = LoraSpec(
            dev_eui=f"70b3d5e75e{i + 1:06x}",
            model=cfg.models[k % len(cfg.models)],
            network=cfg.networks[k % len(cfg.networks)],
            empty_distance_mm=min(empty, 5000),
            full_distance_mm=_FULL_DISTANCE_MM,
        )
        out[i] = replace(b, lora=spec)
    return tuple(out)


def _junctions(network: RoadNetwork) -> list[tuple[tuple[int, int, int], int, str, str]]:
    """Signal candidates as (score, node, major street, minor street)."""
    legs: dict[int, set[int]] = defaultdict(set)
    streets: dict[int, dict[str, tuple[int, int]]] = defaultdict(dict)
    for s, d, name, hw in zip(
        network.src.tolist(), network.dst.tolist(), network.name.tolist(),
        network.highway.tolist(), strict=True,
    ):
        if not name:
            continue
        rank = _CLASS_RANK.get(hw.removesuffix("_link"), 0)
        for node, other in ((s, d), (d, s)):
            legs[node].add(other)
            best, count = streets[node].get(name, (0, 0))
            streets[node][name] = (max(best, rank), count + 1)
    out = []
    for node, names in streets.items():
        if len(legs[node]) < 3 or len(names) < 2:
            continue
        ordered = sorted(names.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
        (major, (r1, _)), (minor, (r2, _)) = ordered[0], ordered[1]
        out.append(((r1, r2, len(legs[node])), node, major, minor))
    return out


def _place_controllers(scenario: Scenario, network: RoadNetwork) -> tuple[Controller, ...]:
    cfg = scenario.signals
    if cfg.count == 0:
        return ()
    rng = _rng(scenario, _STREAM_SIGNALS)
    candidates = _junctions(network)
    tie_break = rng.permutation(len(candidates))
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i][0], -tie_break[i]),
                   reverse=True)
    chosen: list[tuple[int, str, str]] = []
    for i in order:
        _, node, major, minor = candidates[i]
        if all(
            float(haversine_m(network.lat[node], network.lon[node],
                              network.lat[c], network.lon[c])) >= cfg.min_spacing_m
            for c, _, _ in chosen
        ):
            chosen.append((node, major, minor))
            if len(chosen) == cfg.count:
                break
    if len(chosen) < cfg.count:
        logger.warning(
            "only %d junctions for %d signal controllers (min spacing %.0f m)",
            len(chosen), cfg.count, cfg.min_spacing_m,
        )
    controllers = []
    for k, (node, major, minor) in enumerate(chosen, 1):
        phases = []
        detectors = []
        channel = 0
        for seq, p in enumerate(cfg.phases, 1):
            street = major if p.approach == "major" else minor
            max_green = p.max_green_s if p.max_green_s is not None else round(p.green_s * 1.5, 1)
            phases.append(Phase(
                phase=p.phase, seq=seq, movement=f"{street} {p.movement}", green_s=p.green_s,
                min_green_s=p.min_green_s, max_green_s=max_green, yellow_s=p.yellow_s,
                red_clearance_s=p.red_clearance_s, arrival_vph=p.arrival_vph, lanes=p.lanes,
                speed_kmh=p.speed_kmh,
            ))
            for lane in range(1, p.lanes + 1):
                for det in p.detectors:
                    channel += 1
                    detectors.append(Detector(
                        channel=channel, phase=p.phase, kind=det.kind, lane=lane,
                        distance_m=det.distance_m, length_m=det.length_m,
                    ))
        cycle = sum(p.interval_s for p in phases)
        controllers.append(Controller(
            controller_id=f"LSA-{k:03d}",
            name=f"{major} / {minor}",
            lat=float(network.lat[node]),
            lon=float(network.lon[node]),
            node=node,
            offset_s=float(rng.integers(0, max(1, int(cycle)))),
            phases=tuple(phases),
            detectors=tuple(detectors),
        ))
    return tuple(controllers)


def _make_trucks(scenario: Scenario) -> tuple[Truck, ...]:
    cfg = scenario.trucks
    assigned: list[list[Fraction]] = [[] for _ in range(cfg.count)]
    for j, fraction in enumerate(cfg.fractions):
        if cfg.count:
            assigned[j % cfg.count].append(fraction)
    trucks = []
    for i in range(cfg.count):
        fractions = assigned[i] or [cfg.fractions[i % len(cfg.fractions)]]
        trucks.append(Truck(
            truck_id=f"T{i + 1:02d}",
            name=f"Truck {i + 1} ({'/'.join(fractions)})",
            capacity_l=cfg.capacity_l,
            capacity_kg=cfg.capacity_kg,
            depot_id=cfg.depot,
            fractions=tuple(fractions),
            shift_start=cfg.shift.start,
            shift_end=cfg.shift.end,
        ))
    return tuple(trucks)
