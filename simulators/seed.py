"""Write the simulated city into the device registry, so the ingest accepts its devices.

Idempotent: every row is an `INSERT ... ON CONFLICT DO UPDATE`, so seeding twice leaves
the same rows (and keeps their `created_at`). Phases and detectors of a seeded
controller that the scenario no longer has are removed; other registry rows (devices
from other scenarios, real devices) are never touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from cityops.ingest.db import connect
from cityops.simulators.city import City

__all__ = ["SeedReport", "seed_registry"]

logger = logging.getLogger(__name__)

_POINT = "ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)"

_SITES = f"""
INSERT INTO sites (site_id, name, kind, geom)
VALUES (%(site_id)s, %(name)s, %(kind)s, {_POINT})
ON CONFLICT (site_id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind,
    geom = EXCLUDED.geom
"""

_BINS = f"""
INSERT INTO bins (bin_id, sensor_id, geom, street, house_number, district, capacity_l,
                  fraction, collection_weekday)
VALUES (%(bin_id)s, %(sensor_id)s, {_POINT}, %(street)s, %(house_number)s, %(district)s,
        %(capacity_l)s, %(fraction)s, %(collection_weekday)s)
ON CONFLICT (bin_id) DO UPDATE SET sensor_id = EXCLUDED.sensor_id, geom = EXCLUDED.geom,
    street = EXCLUDED.street, house_number = EXCLUDED.house_number,
    district = EXCLUDED.district, capacity_l = EXCLUDED.capacity_l,
    fraction = EXCLUDED.fraction, collection_weekday = EXCLUDED.collection_weekday
"""

_CONTROLLERS = f"""
INSERT INTO signal_controllers (controller_id, name, geom, cycle_s)
VALUES (%(controller_id)s, %(name)s, {_POINT}, %(cycle_s)s)
ON CONFLICT (controller_id) DO UPDATE SET name = EXCLUDED.name, geom = EXCLUDED.geom,
    cycle_s = EXCLUDED.cycle_s
"""

_PHASES = """
INSERT INTO signal_phases (controller_id, phase, seq, movement, min_green_s, max_green_s,
                           fixed_green_s, yellow_s, red_clearance_s)
VALUES (%(controller_id)s, %(phase)s, %(seq)s, %(movement)s, %(min_green_s)s,
        %(max_green_s)s, %(green_s)s, %(yellow_s)s, %(red_clearance_s)s)
ON CONFLICT (controller_id, phase) DO UPDATE SET seq = EXCLUDED.seq,
    movement = EXCLUDED.movement, min_green_s = EXCLUDED.min_green_s,
    max_green_s = EXCLUDED.max_green_s, fixed_green_s = EXCLUDED.fixed_green_s,
    yellow_s = EXCLUDED.yellow_s, red_clearance_s = EXCLUDED.red_clearance_s
"""

_DETECTORS = """
INSERT INTO signal_detectors (controller_id, channel, phase, kind, lane, distance_m)
VALUES (%(controller_id)s, %(channel)s, %(phase)s, %(kind)s, %(lane)s, %(distance_m)s)
ON CONFLICT (controller_id, channel) DO UPDATE SET phase = EXCLUDED.phase,
    kind = EXCLUDED.kind, lane = EXCLUDED.lane, distance_m = EXCLUDED.distance_m
"""

_TRUCKS = """
INSERT INTO trucks (truck_id, name, capacity_l, capacity_kg, depot_id, fractions, shift_start,
    shift_end)
VALUES (%(truck_id)s, %(name)s, %(capacity_l)s, %(capacity_kg)s, %(depot_id)s, %(fractions)s,
    %(shift_start)s, %(shift_end)s)
ON CONFLICT (truck_id) DO UPDATE SET name = EXCLUDED.name, capacity_l = EXCLUDED.capacity_l,
    capacity_kg = EXCLUDED.capacity_kg, depot_id = EXCLUDED.depot_id,
    fractions = EXCLUDED.fractions, shift_start = EXCLUDED.shift_start,
    shift_end = EXCLUDED.shift_end
"""


@dataclass(frozen=True, slots=True)
class SeedReport:
    sites: int
    bins: int
    controllers: int
    phases: int
    detectors: int
    trucks: int


def seed_registry(database_url: str, city: City) -> SeedReport:
    """Upsert every site, bin, controller (with phases and detectors) and truck of `city`."""
    with connect(database_url, application_name="cityops-simulate") as conn:
        report = seed_connection(conn, city)
    logger.info(
        "registry seeded: %d sites, %d bins, %d signal controllers (%d phases, %d detectors), "
        "%d trucks", report.sites, report.bins, report.controllers, report.phases,
        report.detectors, report.trucks,
    )
    return report


def seed_connection(conn: psycopg.Connection[tuple[object, ...]], city: City) -> SeedReport:
    """`seed_registry` on an open connection, in one transaction."""
    phases = [
        {"controller_id": c.controller_id, "phase": p.phase, "seq": p.seq,
         "movement": p.movement, "min_green_s": p.min_green_s, "max_green_s": p.max_green_s,
         "green_s": p.green_s, "yellow_s": p.yellow_s, "red_clearance_s": p.red_clearance_s}
        for c in city.controllers for p in c.phases
    ]
    detectors = [
        {"controller_id": c.controller_id, "channel": d.channel, "phase": d.phase,
         "kind": d.kind, "lane": d.lane, "distance_m": d.distance_m}
        for c in city.controllers for d in c.detectors
    ]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(_SITES, [
            {"site_id": s.site_id, "name": s.name, "kind": s.kind, "lat": s.lat, "lon": s.lon}
            for s in city.sites
        ])
        cur.executemany(_BINS, [
            {"bin_id": b.bin_id, "sensor_id": b.sensor_id, "lat": b.lat, "lon": b.lon,
             "street": b.street, "house_number": b.house_number, "district": b.district,
             "capacity_l": b.capacity_l, "fraction": b.fraction,
             "collection_weekday": b.collection_weekday}
            for b in city.bins
        ])
        cur.executemany(_CONTROLLERS, [
            {"controller_id": c.controller_id, "name": c.name, "lat": c.lat, "lon": c.lon,
             "cycle_s": c.cycle_s}
            for c in city.controllers
        ])
        for c in city.controllers:
            # Drop what an earlier version of the scenario had and this one has not.
            cur.execute(
                "DELETE FROM signal_detectors WHERE controller_id = %s AND channel <> ALL(%s)",
                (c.controller_id, [d.channel for d in c.detectors]),
            )
        cur.executemany(_PHASES, phases)
        cur.executemany(_DETECTORS, detectors)
        for c in city.controllers:
            cur.execute(
                "DELETE FROM signal_phases WHERE controller_id = %s AND phase <> ALL(%s)",
                (c.controller_id, [p.phase for p in c.phases]),
            )
        cur.executemany(_TRUCKS, [
            {"truck_id": t.truck_id, "name": t.name, "capacity_l": t.capacity_l,
             "capacity_kg": t.capacity_kg, "depot_id": t.depot_id,
             "fractions": list(t.fractions), "shift_start": t.shift_start,
             "shift_end": t.shift_end}
            for t in city.trucks
        ])
    return SeedReport(
        sites=len(city.sites), bins=len(city.bins), controllers=len(city.controllers),
        phases=len(phases), detectors=len(detectors), trucks=len(city.trucks),
    )
