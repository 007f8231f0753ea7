"""Roadworks as street closures for routing: what a work does to the trucks' streets.

The registry is the writer of `street_closures` (the table routing reads, see
`cityops.routing.repository.load_closures`). Every work that will or does happen and
that restricts motor traffic has exactly one row, `closure_id = 'roadwork:<reference>'`,
`source = 'roadworks'`; a work that is a draft, still under review, refused, cancelled,
revoked or completed has none. `closure_for` is the pure rule; `sync_work_closure` writes
its answer in the caller's transaction (the service calls it in the same transaction as
every create, update and transition, so the API, the CLI and the seed all keep the table
in step); `rebuild_closures` recomputes every row from the registry
(`cityops roadworks sync-closures`, a repair that is safe to repeat).

What a measure means for a truck:

| measure | effect |
|---|---|
| road closure | the street is closed (`slowdown` NULL): its edges leave the network |
| alternating one-way | travel time x2.0 (waiting for the other direction) |
| lane closure, temporary signals | travel time x1.5 |
| sidewalk, cycle lane closure, parking suspended | none: no row |

With several measures the strongest wins. The row covers the work's effective period
(reported start, else the planned one, to the planned end; see
`Roadwork.effective_period`) around the clock: working hours are not modelled, a work
site is an obstruction day and night. A work that overruns its planned end is extended
by editing its planned end, which updates the row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from shapely import MultiLineString, to_wkb

from cityops.roadworks import store_works
from cityops.roadworks.model import Measure, Roadwork, Status
from cityops.routing.closures import Closure

__all__ = [
    "BUFFER_M",
    "CLOSING_STATUSES",
    "NO_EFFECT",
    "SLOWDOWNS",
    "SOURCE",
    "ClosureSync",
    "closure_for",
    "closure_id",
    "rebuild_closures",
    "sync_work_closure",
]

logger = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

#: `street_closures.source` of the rows the registry writes (and may delete).
SOURCE: Final = "roadworks"
_PREFIX: Final = "roadwork:"
#: Distance around the affected centrelines within which edges count as affected: the
#: centrelines a promoter draws lie a few metres off the map's; edges that only meet the
#: closed street at a junction are spared by `apply_closures` whatever the buffer.
BUFFER_M: Final = 8.0
#: Statuses in which a work will or does happen: approved, scheduled, in progress.
CLOSING_STATUSES: Final = frozenset({Status.APPROVED, Status.SCHEDULED, Status.IN_PROGRESS})
#: Travel-time factors of the measures that slow motor traffic without closing the road.
SLOWDOWNS: Final[Mapping[Measure, float]] = {
    Measure.ALTERNATING_ONE_WAY: 2.0,
    Measure.LANE_CLOSURE: 1.5,
    Measure.TEMPORARY_SIGNALS: 1.5,
}
#: Measures that do not affect a truck on the carriageway.
NO_EFFECT: Final = frozenset(
    {Measure.SIDEWALK_CLOSURE, Measure.CYCLE_LANE_CLOSURE, Measure.PARKING_SUSPENDED}
)

_EFFECT_TEXT: Final = {
    Measure.ROAD_CLOSURE: "Vollsperrung",
    Measure.ALTERNATING_ONE_WAY: "wechselseitiger Verkehr",
    Measure.LANE_CLOSURE: "Fahrstreifen gesperrt",
    Measure.TEMPORARY_SIGNALS: "Baustellenampel",
}


def closure_id(reference: str) -> str:
    """The `street_closures` id of a work."""
    return f"{_PREFIX}{reference}"


def closure_for(work: Roadwork) -> Closure | None:
    """The closure a work imposes on the street network, or None when it imposes none
    (not in a closing status, or no measure that affects motor traffic)."""
    if work.status not in CLOSING_STATUSES:
        return None
    measures = work.spec.measures
    slowdown: float | None
    if Measure.ROAD_CLOSURE in measures:
        slowdown, strongest = None, Measure.ROAD_CLOSURE
    else:
        slowing = [m for m in measures if m in SLOWDOWNS]
        if not slowing:
            return None
        strongest = max(slowing, key=lambda m: (SLOWDOWNS[m], m.value))
        slowdown = SLOWDOWNS[strongest]
    spec = work.spec
    streets = [s.line for s in spec.streets if not s.line.is_empty]
    geometry = MultiLineString(streets) if streets else spec.footprint
    where = ", ".join(spec.road_names) or work.district
    effect = _EFFECT_TEXT[strongest] + ("" if slowdown is None else f" (x{slowdown:g})")
    period = work.effective_period
    return Closure(
        closure_id=closure_id(work.reference),
        geometry=geometry,
        valid_from=period.start,
        valid_to=period.end,
        reason=f"Baustelle {work.reference} {spec.title} ({where}): {effect}",
        buffer_m=BUFFER_M,
        slowdown=slowdown,
    )


# -- storage -------------------------------------------------------------------------------

_UPSERT: Final = """
INSERT INTO street_closures
    (closure_id, geom, buffer_m, slowdown, valid_from, valid_to, source, reason, updated_at)
VALUES (%(id)s, ST_GeomFromWKB(%(wkb)s, 4326), %(buffer)s, %(slowdown)s, %(from)s, %(to)s,
        %(source)s, %(reason)s, clock_timestamp())
ON CONFLICT (closure_id) DO UPDATE SET
    geom = EXCLUDED.geom, buffer_m = EXCLUDED.buffer_m, slowdown = EXCLUDED.slowdown,
    valid_from = EXCLUDED.valid_from, valid_to = EXCLUDED.valid_to,
    source = EXCLUDED.source, reason = EXCLUDED.reason, updated_at = clock_timestamp()
WHERE (ST_AsEWKB(street_closures.geom), street_closures.buffer_m, street_closures.slowdown,
       street_closures.valid_from, street_closures.valid_to, street_closures.source,
       street_closures.reason)
      IS DISTINCT FROM
      (ST_AsEWKB(EXCLUDED.geom), EXCLUDED.buffer_m, EXCLUDED.slowdown, EXCLUDED.valid_from,
       EXCLUDED.valid_to, EXCLUDED.source, EXCLUDED.reason)
RETURNING (xmax = 0)
"""


def _write(conn: Conn, cid: str, closure: Closure | None) -> str:
    """Insert, update or delete one row; returns what happened: 'added', 'updated',
    'removed' or 'unchanged'. An unchanged row keeps its `updated_at`, so an edit that
    does not touch the closure does not make the re-planner re-plan."""
    if closure is None:
        cur = conn.execute(
            "DELETE FROM street_closures WHERE closure_id = %s AND source = %s", (cid, SOURCE)
        )
        return "removed" if cur.rowcount else "unchanged"
    row = conn.execute(
        _UPSERT,
        {
            "id": cid,
            "wkb": to_wkb(closure.geometry),
            "buffer": closure.buffer_m,
            "slowdown": closure.slowdown,
            "from": closure.valid_from,
            "to": closure.valid_to,
            "source": SOURCE,
            "reason": closure.reason,
        },
    ).fetchone()
    if row is None:
        return "unchanged"
    return "added" if row[0] else "updated"


def sync_work_closure(conn: Conn, work: Roadwork) -> str:
    """Bring the work's `street_closures` row in line with the work, in the caller's
    transaction; returns 'added', 'updated', 'removed' or 'unchanged'."""
    closure = closure_for(work)
    outcome = _write(conn, closure_id(work.reference), closure)
    if outcome != "unchanged":
        logger.info(
            "street closure %s %s (%s)",
            closure_id(work.reference),
            outcome,
            closure.reason if closure else work.status.value,
        )
    return outcome


@dataclass(frozen=True, slots=True)
class ClosureSync:
    """What `rebuild_closures` did."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0

    @property
    def rows(self) -> int:
        """Rows of the registry in `street_closures` afterwards."""
        return self.added + self.updated + self.unchanged


def rebuild_closures(conn: Conn) -> ClosureSync:
    """Recompute every registry row of `street_closures` from the works, in one
    transaction under the registry's lock: rows of works that impose a closure are
    written, every other `source = 'roadworks'` row is deleted. Idempotent."""
    counts = {"added": 0, "updated": 0, "removed": 0, "unchanged": 0}
    with conn.transaction():
        store_works.lock_registry(conn)
        works = store_works.list_works(conn, store_works.WorkFilter(statuses=CLOSING_STATUSES))
        wanted = {closure_id(w.reference): c for w in works if (c := closure_for(w))}
        for cid, closure in sorted(wanted.items()):
            counts[_write(conn, cid, closure)] += 1
        stale = _stale_ids(conn, wanted)
        if stale:
            conn.execute(
                "DELETE FROM street_closures WHERE source = %s AND closure_id = ANY(%s)",
                (SOURCE, stale),
            )
            counts["removed"] += len(stale)
    result = ClosureSync(**counts)
    logger.info("street closures rebuilt from the registry: %s", result)
    return result


def _stale_ids(conn: Conn, wanted: Iterable[str]) -> list[str]:
    keep = set(wanted)
    rows = conn.execute(
        "SELECT closure_id FROM street_closures WHERE source = %s ORDER BY closure_id",
        (SOURCE,),
    ).fetchall()
    return [str(r[0]) for r in rows if str(r[0]) not in keep]
