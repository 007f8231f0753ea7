"""Write the simulated controllers, phases and detectors into the database registry.

So that the ingest accepts the simulator's events (it checks the device registry) and
`cityops.traffic.repository.load_config` sees the same phases and detectors the
simulator uses. Idempotent (upserts; detectors a junction no longer has are removed).
Positions: the grid's metres placed around `origin` (lat, lon); the OSM network's
junctions where they are in the extract, named after their streets.

Links (`signal_links`, for max-pressure's downstream queues) come from the network's own
connections (`Intersection.turns`): where a controlled link of one junction leads into a
lane that is an approach lane of another of the junctions seeded together, the upstream
lane's stop-bar channel is linked to the downstream lane's stop-bar channel. The share is
the link's part of the lane's links: equal parts (`1 / number of links leaving the
lane`), or, given turning counts per movement (incoming edge -> outgoing edge, say from
the demand's routes or a traffic count), in proportion to them. Links to a lane with no
loops (the network's fringe, or on the OSM network a junction in between) are not
written. On the symmetric grid with equal parts both phases feed every outgoing lane
alike, so their downstream terms are equal and max-pressure decides as
longest-queue-first; turning counts make them differ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from cityops.simulators.sumo.network import GridSpec, Intersection
from cityops.simulators.sumo.osm import OsmNetwork
from cityops.traffic.maxpressure import Link

__all__ = ["junction_links", "seed_grid", "seed_osm"]

_M_PER_DEG = math.pi / 180 * 6_371_008.8
DEFAULT_ORIGIN = (60.1699, 24.9384)

_MOVEMENTS = {
    2: "north-south through, right, permitted left",
    4: "east-west through, right, permitted left",
}


def seed_grid(
    conn: psycopg.Connection[Any],
    spec: GridSpec,
    junctions: Sequence[Intersection],
    origin: tuple[float, float] = DEFAULT_ORIGIN,
    links: bool = True,
    turn_counts: Mapping[tuple[str, str], float] | None = None,
) -> int:
    """Upsert every junction as a controller, and (`links`) the links between them
    (shares from `turn_counts` if given, see `junction_links`); returns the number of
    detectors written."""
    lat0, lon0 = origin
    n = 0
    with conn.transaction(), conn.cursor() as cur:
        for j in junctions:
            lat = lat0 + j.y / _M_PER_DEG
            lon = lon0 + j.x / (_M_PER_DEG * math.cos(math.radians(lat0)))
            name = f"SUMO grid junction {j.tls_id}"
            n += _upsert(cur, spec, j, name, lat, lon, _MOVEMENTS)
        _insert_links(cur, junction_links(junctions, turn_counts) if links else [])
    return n


def seed_osm(
    conn: psycopg.Connection[Any], spec: GridSpec, network: OsmNetwork, links: bool = True
) -> int:
    """Upsert the OSM network's controllers (timings from `spec`) and (`links`) the links
    between directly connected ones; returns detectors."""
    n = 0
    with conn.transaction(), conn.cursor() as cur:
        for j in network.junctions:
            site = network.sites[j.controller_id]
            name = f"SUMO OSM junction {site.name} (node {site.osm_node})"
            n += _upsert(cur, spec, j, name, site.lat, site.lon, site.movements)
        _insert_links(cur, junction_links(network.junctions) if links else [])
    return n


def junction_links(
    junctions: Sequence[Intersection],
    turn_counts: Mapping[tuple[str, str], float] | None = None,
) -> list[Link]:
    """The links between `junctions` from their turns (see the module docstring), sorted.

    `turn_counts`: vehicles per movement (SUMO incoming edge id, outgoing edge id); a lane
    whose movements have no count at all falls back to equal parts, a movement without
    count gets no link."""
    approach: dict[str, tuple[str, int]] = {}  # SUMO lane -> (controller, stop-bar channel)
    for j in junctions:
        for lp in j.loops:
            if lp.kind == "stop_bar":
                approach.setdefault(lp.sumo_lane, (j.controller_id, lp.channel))
    shares: dict[tuple[str, int, str, int], float] = {}
    for j in junctions:
        weight = dict.fromkeys(j.turns, 1.0)
        if turn_counts is not None:
            counted = {
                (a, b): float(turn_counts.get((_edge(a), _edge(b)), 0.0)) for a, b in j.turns
            }
            counted_total = _sum_by_lane(counted)
            weight = {t: counted[t] if counted_total[t[0]] > 0 else 1.0 for t in j.turns}
        leaving = _sum_by_lane(weight)
        for a, b in j.turns:
            up, down = approach.get(a), approach.get(b)
            if up is None or down is None or up[0] != j.controller_id or down[0] == up[0]:
                continue
            if weight[(a, b)] <= 0:
                continue
            key = (*up, *down)
            shares[key] = shares.get(key, 0.0) + weight[(a, b)] / leaving[a]
    return [Link(c, ch, tc, tch, min(1.0, s)) for (c, ch, tc, tch), s in sorted(shares.items())]


def _sum_by_lane(weight: Mapping[tuple[str, str], float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for (a, _b), w in weight.items():
        out[a] = out.get(a, 0.0) + w
    return out


def _edge(lane_id: str) -> str:
    return lane_id.rpartition("_")[0]


def _insert_links(cur: psycopg.Cursor[Any], links: Sequence[Link]) -> None:
    cur.executemany(
        "INSERT INTO signal_links (controller_id, channel, to_controller_id, to_channel,"
        " share) VALUES (%s, %s, %s, %s, %s)",
        [
            (lk.controller_id, lk.channel, lk.to_controller_id, lk.to_channel, lk.share)
            for lk in links
        ],
    )


def _upsert(
    cur: psycopg.Cursor[Any],
    spec: GridSpec,
    j: Intersection,
    name: str,
    lat: float,
    lon: float,
    movements: Mapping[int, str],
) -> int:
    cycle = 2 * (spec.green_s + spec.yellow_s + spec.red_clearance_s)
    cur.execute(
        "INSERT INTO signal_controllers (controller_id, name, geom, cycle_s)"
        " VALUES (%s, %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s)"
        " ON CONFLICT (controller_id) DO UPDATE SET name = EXCLUDED.name,"
        " geom = EXCLUDED.geom, cycle_s = EXCLUDED.cycle_s",
        (j.controller_id, name, lon, lat, cycle),
    )
    cur.execute("DELETE FROM signal_detectors WHERE controller_id = %s", (j.controller_id,))
    for seq, phase in enumerate((2, 4), 1):
        cur.execute(
            "INSERT INTO signal_phases (controller_id, phase, seq, movement, min_green_s,"
            " max_green_s, fixed_green_s, yellow_s, red_clearance_s)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (controller_id, phase) DO UPDATE SET seq = EXCLUDED.seq,"
            " movement = EXCLUDED.movement, min_green_s = EXCLUDED.min_green_s,"
            " max_green_s = EXCLUDED.max_green_s, fixed_green_s = EXCLUDED.fixed_green_s,"
            " yellow_s = EXCLUDED.yellow_s, red_clearance_s = EXCLUDED.red_clearance_s",
            (
                j.controller_id,
                phase,
                seq,
                movements[phase],
                spec.min_green_s,
                spec.max_green_s,
                spec.green_s,
                spec.yellow_s,
                spec.red_clearance_s,
            ),
        )
    cur.executemany(
        "INSERT INTO signal_detectors (controller_id, channel, phase, kind, lane,"
        " distance_m) VALUES (%s, %s, %s, %s, %s, %s)",
        [
            (j.controller_id, lp.channel, lp.phase, lp.kind, lp.lane, lp.distance_m)
            for lp in j.loops
        ],
    )
    return len(j.loops)
