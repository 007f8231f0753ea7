"""The SQL of coordination: the findings the rules report (upserted so that a decision
outlives a change, obsolete when no longer found) and the resurfaced segments the
protection-period rule looks at.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import shapely
from psycopg.types.json import Jsonb

from cityops.roadworks.errors import FindingNotFoundError, SegmentNotFoundError
from cityops.roadworks.model import (
    Actor,
    Decision,
    Finding,
    FindingDraft,
    FindingKind,
    FindingStatus,
    ResurfacedSegment,
    Severity,
)
from cityops.roadworks.store_sql import Conn, fetch_all, fetch_one, from_wkb, typed_row

__all__ = [
    "decide_finding",
    "delete_segments",
    "get_finding",
    "get_segment",
    "insert_segment",
    "list_findings",
    "list_segments",
    "segments_near",
    "sync_findings",
]

logger = logging.getLogger(__name__)

# -- resurfaced segments ------------------------------------------------------------------


def insert_segment(
    conn: Conn,
    *,
    street: str,
    line: Any,
    resurfaced_on: date,
    note: str | None,
    actor: Actor,
    at: datetime,
) -> int:
    row = conn.execute(
        "INSERT INTO resurfaced_segments (street, geom, resurfaced_on, note, created_at, "
        "created_by) VALUES (%s, ST_GeomFromWKB(%s, 4326), %s, %s, %s, %s) RETURNING id",
        (street, shapely.to_wkb(line), resurfaced_on, note, at, actor.name),
    ).fetchone()
    assert row is not None
    return int(row[0])


_SEGMENT_COLUMNS = "id, street, ST_AsBinary(geom) AS line, resurfaced_on, note"
_SEGMENT_ROW = typed_row(ResurfacedSegment, line=from_wkb)


def get_segment(conn: Conn, segment_id: int) -> ResurfacedSegment:
    query = f"SELECT {_SEGMENT_COLUMNS} FROM resurfaced_segments WHERE id = %s"
    return fetch_one(conn, _SEGMENT_ROW, query, (segment_id,), SegmentNotFoundError(segment_id))


def list_segments(conn: Conn) -> list[ResurfacedSegment]:
    query = f"SELECT {_SEGMENT_COLUMNS} FROM resurfaced_segments ORDER BY id"
    return fetch_all(conn, _SEGMENT_ROW, query)


def segments_near(conn: Conn, geom: Any, distance_m: float) -> list[ResurfacedSegment]:
    return fetch_all(
        conn,
        _SEGMENT_ROW,
        f"""
        SELECT {_SEGMENT_COLUMNS} FROM resurfaced_segments
        WHERE geom && ST_Expand(ST_GeomFromWKB(%(g)s, 4326), %(deg)s)
          AND ST_DWithin(geom::geography, ST_GeomFromWKB(%(g)s, 4326)::geography, %(d)s)
        ORDER BY id
        """,
        {"g": shapely.to_wkb(geom), "deg": distance_m / 40_000.0 + 1e-5, "d": distance_m},
    )


def delete_segments(conn: Conn, *, created_by: str) -> int:
    """Delete the resurfaced segments one user recorded (demo data); returns the count."""
    return conn.execute(
        "DELETE FROM resurfaced_segments WHERE created_by = %s", (created_by,)
    ).rowcount


# -- findings -----------------------------------------------------------------------------

_FINDING_COLUMNS = """
    f.id, f.kind, f.severity, f.work_a, f.work_b, a.reference AS reference_a,
    b.reference AS reference_b, f.segment_id, f.street, f.message, f.details,
    ST_AsBinary(f.location) AS location,
    CASE WHEN f.obsolete_since IS NOT NULL THEN 'obsolete'
         WHEN f.decision IS NOT NULL THEN f.decision ELSE 'open' END AS status,
    f.first_found_at, f.last_found_at, f.decision_note, f.decided_by, f.decided_at
"""
_FINDING_FROM = """
    roadwork_findings f JOIN roadworks a ON a.id = f.work_a
    LEFT JOIN roadworks b ON b.id = f.work_b
"""
_FINDING_ROW = typed_row(
    Finding, kind=FindingKind, severity=Severity, location=from_wkb, status=FindingStatus
)


def sync_findings(
    conn: Conn, work_id: int, found: Sequence[FindingDraft], at: datetime
) -> list[int]:
    """Store what coordination found for a work: upsert each finding (decisions stay),
    mark the work's findings that were not found again obsolete. Returns the ids kept."""
    kept: list[int] = []
    for f in found:
        if work_id not in (f.work_a, f.work_b):
            raise ValueError(f"finding {f.key} does not involve work {work_id}")
        row = conn.execute(
            """
            INSERT INTO roadwork_findings (kind, severity, work_a, work_b, segment_id, street,
                message, details, location, first_found_at, last_found_at)
            VALUES (%(kind)s, %(severity)s, %(a)s, %(b)s, %(seg)s, %(street)s, %(message)s,
                %(details)s, ST_GeomFromWKB(%(loc)s, 4326), %(at)s, %(at)s)
            ON CONFLICT (kind, work_a, work_b, segment_id) DO UPDATE SET
                severity = EXCLUDED.severity, street = EXCLUDED.street,
                message = EXCLUDED.message, details = EXCLUDED.details,
                location = EXCLUDED.location, last_found_at = EXCLUDED.last_found_at,
                obsolete_since = NULL
            RETURNING id
            """,
            {
                "kind": f.kind.value,
                "severity": f.severity.value,
                "a": f.work_a,
                "b": f.work_b,
                "seg": f.segment_id,
                "street": f.street,
                "message": f.message,
                "details": Jsonb(dict(f.details)),
                "loc": shapely.to_wkb(f.location) if f.location is not None else None,
                "at": at,
            },
        ).fetchone()
        assert row is not None
        kept.append(int(row[0]))
    cur = conn.execute(
        "UPDATE roadwork_findings SET obsolete_since = %s "
        "WHERE (work_a = %s OR work_b = %s) AND obsolete_since IS NULL AND id <> ALL(%s)",
        (at, work_id, work_id, kept),
    )
    if cur.rowcount:
        logger.info("work %d: %d finding(s) no longer apply", work_id, cur.rowcount)
    return kept


def list_findings(
    conn: Conn,
    *,
    work_id: int | None = None,
    statuses: Iterable[FindingStatus] | None = None,
    kinds: Iterable[FindingKind] | None = None,
    ids: Sequence[int] | None = None,
) -> list[Finding]:
    parts = ["true"]
    params: dict[str, Any] = {}
    if work_id is not None:
        parts.append("(f.work_a = %(work)s OR f.work_b = %(work)s)")
        params["work"] = work_id
    if kinds is not None:
        parts.append("f.kind = ANY(%(kinds)s)")
        params["kinds"] = [k.value for k in kinds]
    if ids is not None:
        parts.append("f.id = ANY(%(ids)s)")
        params["ids"] = list(ids)
    query = (
        f"SELECT * FROM (SELECT {_FINDING_COLUMNS} FROM {_FINDING_FROM} "
        f"WHERE {' AND '.join(parts)}) x"
    )
    if statuses is not None:
        query += " WHERE x.status = ANY(%(statuses)s)"
        params["statuses"] = [s.value for s in statuses]
    query += " ORDER BY x.kind, x.work_a, x.work_b NULLS FIRST, x.segment_id NULLS FIRST"
    return fetch_all(conn, _FINDING_ROW, query, params)


def get_finding(conn: Conn, finding_id: int, *, for_update: bool = False) -> Finding:
    lock = " FOR UPDATE OF f" if for_update else ""
    query = f"SELECT {_FINDING_COLUMNS} FROM {_FINDING_FROM} WHERE f.id = %s{lock}"
    return fetch_one(conn, _FINDING_ROW, query, (finding_id,), FindingNotFoundError(finding_id))


def decide_finding(
    conn: Conn, finding_id: int, decision: Decision, note: str, actor: Actor, at: datetime
) -> None:
    cur = conn.execute(
        "UPDATE roadwork_findings SET decision = %s, decision_note = %s, decided_by = %s, "
        "decided_at = %s WHERE id = %s",
        (decision.value, note, f"{actor.name} ({actor.organisation})", at, finding_id),
    )
    if cur.rowcount == 0:
        raise FindingNotFoundError(finding_id)
