"""SQL for routing: versioned routes, closures and the planning inputs.

The only routing module that talks to the database. Route versions are append-only: a
change is a new version with its reason; `current_routes` is the newest per truck and day.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from shapely import from_wkb

from cityops.ingest.contract import RouteCommand
from cityops.ingest.lorawan_readings import LoraSensor
from cityops.routing.closures import Closure
from cityops.routing.rows import BinRow, SiteRow, TruckEventRow, TruckRow, TruckStateRow

__all__ = [
    "closures_active_at",
    "closures_changed_since",
    "closures_stamp",
    "current_route",
    "current_routes_on",
    "load_bin_sensors",
    "load_bins",
    "load_break_ends",
    "load_closures",
    "load_readings_since",
    "load_sites",
    "load_truck_events",
    "load_truck_states",
    "load_trucks",
    "next_version",
    "store_route",
]

logger = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]


def next_version(conn: Conn, truck_id: str, plan_date: date) -> int:
    row = conn.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM route_versions "
        "WHERE truck_id = %s AND plan_date = %s",
        (truck_id, plan_date),
    ).fetchone()
    return int(row[0]) if row else 1


def store_route(conn: Conn, route: RouteCommand) -> None:
    """Insert one route version and its stops (in the caller's transaction)."""
    doc = route.model_dump(mode="json")
    conn.execute(
        "INSERT INTO route_versions (truck_id, plan_date, version, created_at, reason, engine, "
        "fraction, distance_m, duration_s, stops, geometry, unserved) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            route.truck_id,
            route.plan_date,
            route.version,
            route.created_at,
            route.reason,
            route.engine,
            route.fraction,
            route.distance_m,
            route.duration_s,
            Jsonb(doc["stops"]),
            Jsonb(doc["geometry"]),
            Jsonb(doc["unserved"]),
        ),
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO route_stops (truck_id, plan_date, version, seq, kind, bin_id, site_id, "
            "eta, etd, load_after_l) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    route.truck_id,
                    route.plan_date,
                    route.version,
                    s.seq,
                    s.kind,
                    s.bin_id,
                    s.site_id,
                    s.eta,
                    s.etd,
                    s.load_after_l,
                )
                for s in route.stops
            ],
        )
    logger.info(
        "stored route %s %s v%d: %d visits, %.1f km (%s)",
        route.truck_id,
        route.plan_date,
        route.version,
        len(route.stops),
        route.distance_m / 1000,
        route.reason,
    )


def current_version(conn: Conn, truck_id: str, plan_date: date) -> int | None:
    """The newest route version number of a truck for a day (an index lookup), or None."""
    row = conn.execute(
        "SELECT max(version) FROM route_versions WHERE truck_id = %s AND plan_date = %s",
        (truck_id, plan_date),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def current_route(conn: Conn, truck_id: str, plan_date: date) -> RouteCommand | None:
    row = conn.execute(
        "SELECT truck_id, plan_date, version, created_at, reason, engine, fraction, distance_m, "
        "duration_s, stops, geometry, unserved FROM current_routes "
        "WHERE truck_id = %s AND plan_date = %s",
        (truck_id, plan_date),
    ).fetchone()
    if row is None:
        return None
    keys = (
        "truck_id",
        "plan_date",
        "version",
        "created_at",
        "reason",
        "engine",
        "fraction",
        "distance_m",
        "duration_s",
        "stops",
        "geometry",
        "unserved",
    )
    doc = dict(zip(keys, row, strict=True))
    return RouteCommand.model_validate_json(json.dumps(doc, default=str))


def load_bins(conn: Conn) -> list[BinRow]:
    rows = conn.execute(
        "SELECT b.bin_id, ST_Y(b.geom), ST_X(b.geom), b.street, b.fraction, b.capacity_l, "
        "extract(epoch FROM b.access_from)::int, extract(epoch FROM b.access_to)::int, "
        "s.fill_pct FROM bins b LEFT JOIN bin_state s USING (bin_id) ORDER BY b.bin_id"
    ).fetchall()
    return [BinRow(*r) for r in rows]


def load_sites(conn: Conn) -> list[SiteRow]:
    rows = conn.execute(
        "SELECT site_id, kind, ST_Y(geom), ST_X(geom) FROM sites ORDER BY site_id"
    ).fetchall()
    return [SiteRow(*r) for r in rows]


def load_trucks(conn: Conn) -> list[TruckRow]:
    rows = conn.execute(
        "SELECT truck_id, capacity_l, capacity_kg, depot_id, fractions, shift_start, shift_end "
        "FROM trucks ORDER BY truck_id"
    ).fetchall()
    return [TruckRow(t, c, kg, d, tuple(f), s, e) for t, c, kg, d, f, s, e in rows]


def load_readings_since(
    conn: Conn, since: datetime
) -> dict[str, list[tuple[datetime, float, str | None]]]:
    """Readings per bin since `since`, oldest first (for the fill forecast)."""
    out: dict[str, list[tuple[datetime, float, str | None]]] = {}
    for bin_id, ts, fill, fault in conn.execute(
        "SELECT bin_id, ts, fill_pct, fault FROM bin_readings WHERE ts >= %s ORDER BY bin_id, ts",
        (since,),
    ):
        out.setdefault(str(bin_id), []).append((ts, float(fill), fault))
    return out


def load_closures(conn: Conn, *, valid_at_or_after: datetime) -> list[Closure]:
    rows = conn.execute(
        "SELECT closure_id, ST_AsBinary(geom), valid_from, valid_to, reason, buffer_m, slowdown "
        "FROM street_closures WHERE valid_to > %s ORDER BY closure_id",
        (valid_at_or_after,),
    ).fetchall()
    return [
        Closure(
            cid,
            from_wkb(bytes(wkb)),
            vf,
            vt,
            reason,
            float(buf),
            float(slow) if slow is not None else None,
        )
        for cid, wkb, vf, vt, reason, buf, slow in rows
    ]


def load_last_stops(conn: Conn, since: date, until: date) -> list[tuple[str, date, float]]:
    """Per fraction and plan day in [since, until), the hours from the shift start (local
    time) to the latest stop of the day's current route versions: how far into the shift
    the fraction's rounds reached bins (`dispatch.reach_from_history`)."""
    rows = conn.execute(
        "SELECT r.fraction, r.plan_date, max(extract(epoch FROM s.eta - "
        "((r.plan_date + t.shift_start) AT TIME ZONE 'Europe/Berlin')) / 3600.0) "
        "FROM current_routes r "
        "JOIN route_stops s USING (truck_id, plan_date, version) "
        "JOIN trucks t USING (truck_id) "
        "WHERE s.kind = 'stop' AND r.fraction IS NOT NULL "
        "AND r.plan_date >= %s AND r.plan_date < %s "
        "GROUP BY r.fraction, r.plan_date ORDER BY r.fraction, r.plan_date",
        (since, until),
    ).fetchall()
    return [(f, d, float(h)) for f, d, h in rows]


# -- re-planning during the day ------------------------------------------------------


def current_routes_on(
    conn: Conn, plan_date: date, *, geometry: bool = True
) -> dict[str, RouteCommand]:
    """The current (newest) route version of every truck for `plan_date`; without their
    street geometry (an empty line) when `geometry` is False. Columns the route document
    does not know are left out."""
    rows = conn.execute(
        "SELECT to_jsonb(r) - 'geometry' - 'fraction', "
        "CASE WHEN %s THEN r.geometry END, to_jsonb(r) -> 'fraction' "
        "FROM current_routes r WHERE plan_date = %s ORDER BY truck_id",
        (geometry, plan_date),
    ).fetchall()
    known = RouteCommand.model_fields
    out: dict[str, RouteCommand] = {}
    for doc, geom, fraction in rows:
        doc = {k: v for k, v in doc.items() if k in known}
        doc["geometry"] = geom or {"type": "LineString", "coordinates": []}
        if "fraction" in known:
            doc["fraction"] = fraction
        route = RouteCommand.model_validate(doc)
        out[route.truck_id] = route
    return out


def load_truck_events(conn: Conn, since: datetime) -> list[TruckEventRow]:
    """Truck events (stop done or skipped, shift start and end, breakdown) since `since`,
    oldest first."""
    rows = conn.execute(
        "SELECT truck_id, ts, kind, nullif(bin_id, ''), reason, ingested_at FROM truck_events "
        "WHERE ts >= %s AND kind IN "
        "('stop_done', 'stop_skipped', 'shift_start', 'shift_end', 'breakdown') "
        "ORDER BY ts, truck_id",
        (since,),
    ).fetchall()
    return [TruckEventRow(*r) for r in rows]


def load_truck_states(conn: Conn) -> dict[str, TruckStateRow]:
    """The last reported position and load of every truck."""
    rows = conn.execute(
        "SELECT truck_id, ts, lat, lon, load_l FROM truck_state ORDER BY truck_id"
    ).fetchall()
    return {
        str(t): TruckStateRow(t, ts, float(lat), float(lon), None if load is None else float(load))
        for t, ts, lat, lon, load in rows
    }


def load_break_ends(conn: Conn, plan_date: date, until: datetime) -> dict[str, datetime]:
    """Per truck, the end of the last break planned on `plan_date` that ended by `until`
    while its version was current (a later version had not replaced it yet)."""
    rows = conn.execute(
        "WITH v AS (SELECT truck_id, version, "
        "  lead(created_at) OVER (PARTITION BY truck_id ORDER BY version) AS replaced_at "
        "  FROM route_versions WHERE plan_date = %(day)s) "
        "SELECT s.truck_id, max(s.etd) FROM route_stops s JOIN v USING (truck_id, version) "
        "WHERE s.plan_date = %(day)s AND s.kind = 'break' AND s.etd <= %(until)s "
        "AND (v.replaced_at IS NULL OR s.etd <= v.replaced_at) GROUP BY s.truck_id",
        {"day": plan_date, "until": until},
    ).fetchall()
    return {str(t): ts for t, ts in rows}


def closures_stamp(conn: Conn) -> tuple[datetime | None, int]:
    """`(max(updated_at), count)` of the street closures: changes when one is added,
    changed or removed."""
    row = conn.execute("SELECT max(updated_at), count(*) FROM street_closures").fetchone()
    return (row[0], int(row[1])) if row else (None, 0)


def closures_changed_since(conn: Conn, since: datetime | None) -> list[str]:
    """Ids of the closures added or changed after `since` (all when None)."""
    rows = conn.execute(
        "SELECT closure_id FROM street_closures WHERE %s::timestamptz IS NULL "
        "OR updated_at > %s ORDER BY closure_id",
        (since, since),
    ).fetchall()
    return [str(r[0]) for r in rows]


def closures_active_at(conn: Conn, at: datetime) -> frozenset[str]:
    """Ids of the closures in force at `at` (a closure can begin or end without its row
    changing: a roadwork approved last week that starts at 09:00 today)."""
    rows = conn.execute(
        "SELECT closure_id FROM street_closures WHERE valid_from <= %s AND valid_to > %s",
        (at, at),
    ).fetchall()
    return frozenset(str(r[0]) for r in rows)


def load_bin_sensors(conn: Conn) -> dict[str, str]:
    """Sensor id (the device id in a bin's topics), or a LoRaWAN sensor's DevEUI -> bin id."""
    rows = conn.execute(
        "SELECT sensor_id, bin_id FROM bins WHERE sensor_id IS NOT NULL "
        "UNION ALL SELECT dev_eui, bin_id FROM bins WHERE dev_eui IS NOT NULL ORDER BY 2"
    ).fetchall()
    return {str(s): str(b) for s, b in rows}


def load_lora_sensors(conn: Conn) -> dict[str, LoraSensor]:
    """DevEUI -> the bin's LoRaWAN sensor (model and calibration)."""
    rows = conn.execute(
        "SELECT bin_id, dev_eui, sensor_model, empty_distance_mm, full_distance_mm FROM bins "
        "WHERE dev_eui IS NOT NULL AND sensor_model IS NOT NULL"
    ).fetchall()
    return {str(e): LoraSensor(str(b), str(e), str(m), int(str(lo)), int(str(hi)))
            for b, e, m, lo, hi in rows}


def record_network(
    conn: Conn,
    *,
    source: str,
    sha256: str,
    nodes: int,
    edges: int,
    km: float,
    bbox: tuple[float, float, float, float],
) -> int:
    """Record an imported network and make it the active one; returns its id."""
    min_lat, min_lon, max_lat, max_lon = bbox
    conn.execute("UPDATE road_networks SET active = false WHERE active")
    row = conn.execute(
        "INSERT INTO road_networks (source, sha256, nodes, edges, km, bbox) VALUES "
        "(%s, %s, %s, %s, %s, ST_MakeEnvelope(%s, %s, %s, %s, 4326)) RETURNING network_id",
        (source, sha256, nodes, edges, km, min_lon, min_lat, max_lon, max_lat),
    ).fetchone()
    return int(row[0]) if row else 0


def active_network_source(conn: Conn) -> str | None:
    row = conn.execute("SELECT source FROM road_networks WHERE active").fetchone()
    return str(row[0]) if row else None
