"""Reading drivable roads out of OpenStreetMap extracts.

Two layers, kept apart so the rules can be tested without any file:

* pure tag rules (:func:`way_profile`, :func:`parse_maxspeed`, :func:`oneway_direction`)
  decide whether a way is drivable by car, in which directions and how fast;
* :func:`read_drivable_ways` is the only place that touches a file: it streams an
  ``.osm.pbf`` (or ``.osm``/``.osm.bz2``) with pyosmium and returns one
  :class:`DrivableWay` per contiguous run of located nodes.

The rules follow the usual car-routing reading of OSM tags (OSRM's car profile, the
OSM wiki): they are meant to give a believable city network for simulation and waste
route planning, not turn-by-turn legal routing (turn restrictions, time-conditional
access and barriers on nodes are ignored).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import osmium

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SPEED_KMH",
    "DRIVABLE_CLASSES",
    "DrivableWay",
    "WayProfile",
    "oneway_direction",
    "parse_maxspeed",
    "read_drivable_ways",
    "way_profile",
]

#: Default speed (km/h) by highway class when a way has no usable ``maxspeed``.
#: Urban-leaning figures: the extracts we route on are cities.
DEFAULT_SPEED_KMH: Mapping[str, float] = {
    "motorway": 100.0,
    "motorway_link": 60.0,
    "trunk": 80.0,
    "trunk_link": 50.0,
    "primary": 50.0,
    "primary_link": 40.0,
    "secondary": 50.0,
    "secondary_link": 40.0,
    "tertiary": 40.0,
    "tertiary_link": 30.0,
    "unclassified": 40.0,
    "residential": 30.0,
    "living_street": 7.0,
    "service": 20.0,
}

#: Highway classes a car may use (``*_link`` included).
DRIVABLE_CLASSES: frozenset[str] = frozenset(DEFAULT_SPEED_KMH)

#: ``service=*`` values that are not through roads for a vehicle fleet.
_EXCLUDED_SERVICE = frozenset({"parking_aisle", "driveway", "drive-through", "emergency_access"})

#: Access values that forbid ordinary motor traffic. ``destination``, ``delivery``,
#: ``permissive`` and the like stay open: a refuse truck has a destination there.
_FORBIDDEN_ACCESS = frozenset({"no", "private", "agricultural", "forestry", "military"})

#: ``tunnel=*`` values that still leave the road at street level.
_SURFACE_TUNNEL_VALUES = frozenset({"no", "building_passage", "avalanche_protector"})

#: Access keys from least to most specific; the most specific key present decides.
_ACCESS_KEYS = ("access", "vehicle", "motor_vehicle", "motorcar")

#: Implicit limits given as zone codes (``DE:urban``, ``FI:rural``...), by the part after
#: the colon. Rural limits differ by country, hence the table of exceptions.
_ZONE_SPEED_KMH: Mapping[str, float] = {
    "urban": 50.0,
    "rural": 80.0,
    "living_street": 20.0,
    "trunk": 100.0,
    "motorway": 120.0,
}
_COUNTRY_RURAL_KMH: Mapping[str, float] = {"DE": 100.0, "AT": 100.0, "FR": 80.0, "IT": 90.0}
_WALK_KMH = 7.0
_MPH = 1.609344

_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(mph|km/h|kmh|kph)?\s*$", re.IGNORECASE)
_ZONE_NUMBER = re.compile(r"zone:?(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class WayProfile:
    """How a car may use one OSM way: directions allowed and speed in each direction.

    ``tunnel`` marks roads below street level: routable, but no place to snap a kerbside
    position to.
    """

    highway: str
    name: str
    forward: bool
    backward: bool
    speed_forward_kmh: float
    speed_backward_kmh: float
    tunnel: bool = False


@dataclass(frozen=True)
class DrivableWay:
    """A contiguous run of located nodes of one drivable way, with its profile.

    A way that leaves the extract (nodes without a location) is split into several
    runs, so no edge ever jumps across the missing part.
    """

    way_id: int
    node_ids: tuple[int, ...]
    lats: tuple[float, ...]
    lons: tuple[float, ...]
    profile: WayProfile


def parse_maxspeed(value: str | None) -> float | None:
    """Speed limit in km/h from a ``maxspeed`` value, or None if it gives no number.

    Handles plain numbers (``"50"``), units (``"30 mph"``, ``"50 km/h"``), zone codes
    (``"DE:urban"``, ``"DE:zone30"``), ``"walk"`` and multiple values (``"30;50"`` takes
    the lowest: the conservative travel time). ``"none"``, ``"signals"`` and the like give
    None so the caller falls back to the class default.
    """
    if value is None:
        return None
    speeds = [s for s in (_parse_one_speed(part) for part in value.split(";")) if s is not None]
    return min(speeds) if speeds else None


def _parse_one_speed(value: str) -> float | None:
    text = value.strip()
    match = _NUMBER.match(text)
    if match:
        speed = float(match.group(1))
        if match.group(2) and match.group(2).lower() == "mph":
            speed *= _MPH
        return speed if speed > 0 else None
    lowered = text.lower()
    if lowered == "walk":
        return _WALK_KMH
    if ":" in text:
        country, _, zone = text.partition(":")
        zone_number = _ZONE_NUMBER.search(zone)
        if zone_number:
            return float(zone_number.group(1))
        zone = zone.lower()
        if zone == "rural":
            return _COUNTRY_RURAL_KMH.get(country.upper(), _ZONE_SPEED_KMH["rural"])
        return _ZONE_SPEED_KMH.get(zone)
    return None


def oneway_direction(tags: Mapping[str, str]) -> int | None:
    """Travel direction allowed on a way: 1 forward only, -1 backward only, 0 both.

    None for ``oneway=reversible``/``alternating``: such ways change direction during the
    day and are left out of a static network. Roundabouts and motorways are one-way
    unless tagged ``oneway=no``.
    """
    value = tags.get("oneway", "").strip().lower()
    if value in {"yes", "1", "true"}:
        return 1
    if value in {"-1", "reverse"}:
        return -1
    if value in {"reversible", "alternating"}:
        return None
    if value in {"no", "0", "false"}:
        return 0
    if tags.get("junction") in {"roundabout", "circular"} or tags.get("highway") == "motorway":
        return 1
    return 0


def _car_allowed(tags: Mapping[str, str]) -> bool:
    verdict = True
    for key in _ACCESS_KEYS:
        value = tags.get(key)
        if value is not None:
            verdict = value.strip().lower() not in _FORBIDDEN_ACCESS
    return verdict


def way_profile(tags: Mapping[str, str]) -> WayProfile | None:
    """The car profile of a way with these tags, or None if a car may not use it."""
    highway = tags.get("highway")
    if highway not in DRIVABLE_CLASSES:
        return None
    if tags.get("area") == "yes" or not _car_allowed(tags):
        return None
    if highway == "service" and tags.get("service") in _EXCLUDED_SERVICE:
        return None
    direction = oneway_direction(tags)
    if direction is None:
        return None
    default = DEFAULT_SPEED_KMH[highway]
    speed = parse_maxspeed(tags.get("maxspeed")) or default
    forward = parse_maxspeed(tags.get("maxspeed:forward")) or speed
    backward = parse_maxspeed(tags.get("maxspeed:backward")) or speed
    return WayProfile(
        highway=highway,
        name=tags.get("name", "").strip(),
        forward=direction >= 0,
        backward=direction <= 0,
        speed_forward_kmh=forward,
        speed_backward_kmh=backward,
        tunnel=tags.get("tunnel", "no") not in _SURFACE_TUNNEL_VALUES,
    )


def read_drivable_ways(path: Path) -> Iterator[DrivableWay]:
    """Stream the drivable ways of an OSM file, split at nodes the extract lacks.

    Raises whatever pyosmium raises for an unreadable file (``RuntimeError`` for a
    corrupt or unknown format); callers turn that into their own error.
    """
    roads_only = osmium.filter.KeyFilter("highway")
    roads_only.enable_for(osmium.osm.WAY)  # nodes must all pass: ways need their locations
    processor = (
        osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY)
        .with_locations()
        .with_filter(roads_only)
    )
    skipped = 0
    for obj in processor:
        if not isinstance(obj, osmium.osm.Way):
            continue
        profile = way_profile({tag.k: tag.v for tag in obj.tags})
        if profile is None:
            continue
        run: list[tuple[int, float, float]] = []
        for node in obj.nodes:
            location = node.location
            if location.valid():
                run.append((node.ref, location.lat, location.lon))
                continue
            skipped += 1
            if len(run) >= 2:
                yield _make_way(obj.id, run, profile)
            run = []
        if len(run) >= 2:
            yield _make_way(obj.id, run, profile)
    if skipped:
        logger.debug("skipped %d way nodes outside the extract %s", skipped, path)


def _make_way(way_id: int, run: list[tuple[int, float, float]], profile: WayProfile) -> DrivableWay:
    ids, lats, lons = zip(*run, strict=True)
    return DrivableWay(way_id=way_id, node_ids=ids, lats=lats, lons=lons, profile=profile)
