"""The SQL of works: a work's row and its streets, the registry's lock, the listings
the service and coordination need, and the audit trail of every change.

The columns of a work are the fields of `model.Roadwork` and `model.RoadworkSpec` (the
streets in their own table): the INSERT, the UPDATE and the SELECT are built from those
fields, and rows are read back into them by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import psycopg
import shapely
from psycopg.rows import RowMaker
from psycopg.types.json import Jsonb

from cityops.roadworks.errors import DuplicateReferenceError, RoadworkNotFoundError
from cityops.roadworks.geometry import BBox
from cityops.roadworks.labels import BERLIN, street_key
from cityops.roadworks.model import (
    COORDINATED_STATUSES,
    PUBLIC_STATUSES,
    Actor,
    AuditEntry,
    Category,
    Measure,
    Period,
    Roadwork,
    RoadworkSpec,
    Role,
    Sector,
    Status,
    Street,
)
from cityops.roadworks.store_sql import (
    EFF_END,
    EFF_START,
    STREET_MATCH,
    Conn,
    converted,
    fetch_all,
    fetch_one,
    from_wkb,
    typed_row,
)

__all__ = [
    "WorkFilter",
    "audit_history",
    "candidates",
    "count_works",
    "delete_works",
    "get_work",
    "get_work_by_reference",
    "insert_audit",
    "insert_work",
    "list_works",
    "lock_registry",
    "next_reference",
    "update_work",
]

logger = logging.getLogger(__name__)

_LOCK_KEY = 0x726F_6164_776B  # "roadwk": serialises writers so coordination sees them all

# What a promoter edits plus what validation derives from it: the columns every write sets.
_SPEC_FIELDS = tuple(f.name for f in fields(RoadworkSpec) if f.name != "streets")
_SPEC_COLUMNS = (*_SPEC_FIELDS, "area_m2", "district")
_GEOMETRIES = frozenset({"footprint", "detour"})


def _value(column: str) -> str:
    return f"ST_GeomFromWKB(%({column})s, 4326)" if column in _GEOMETRIES else f"%({column})s"


def _select(column: str) -> str:
    return f"ST_AsBinary(w.{column}) AS {column}" if column in _GEOMETRIES else f"w.{column}"


_WORK_COLUMNS = ", ".join(
    [
        *(_select(f.name) for f in fields(Roadwork) if f.name != "spec"),
        *map(_select, _SPEC_FIELDS),
        "ARRAY(SELECT s.name FROM roadwork_streets s WHERE s.work_id = w.id ORDER BY s.seq)"
        " AS street_names",
        "ARRAY(SELECT ST_AsBinary(s.geom) FROM roadwork_streets s WHERE s.work_id = w.id"
        " ORDER BY s.seq) AS street_geoms",
    ]
)
_SPEC_SET = ", ".join(f"{c} = {_value(c)}" for c in _SPEC_COLUMNS)
_INSERT = (
    f"INSERT INTO roadworks (reference, status, {', '.join(_SPEC_COLUMNS)}, created_at,"
    " created_by, updated_at) VALUES (%(reference)s, %(status)s,"
    f" {', '.join(map(_value, _SPEC_COLUMNS))}, %(at)s, %(created_by)s, %(at)s) RETURNING id"
)


@dataclass(frozen=True, slots=True)
class WorkFilter:
    """Which works `list_works` returns; every condition given must hold."""

    statuses: frozenset[Status] | None = None
    public_only: bool = False  # public flag set and in a public state
    bbox: BBox | None = None  # footprint intersects
    street: str | None = None  # an affected street of that name (folded, see street_key)
    active: Period | None = None  # effective period overlaps
    starts_in: Period | None = None  # effective start within
    promoter: str | None = None  # case-insensitive
    sector: Sector | None = None
    district: str | None = None
    ids: Sequence[int] | None = None
    reference_prefix: str | None = None
    limit: int | None = None
    offset: int = 0


def lock_registry(conn: Conn) -> None:
    """Serialise registry writes until the end of the transaction."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))


def next_reference(conn: Conn, at: datetime) -> str:
    row = conn.execute("SELECT nextval('roadwork_reference_seq')").fetchone()
    assert row is not None
    return f"RW-{at.astimezone(BERLIN).year}-{int(row[0]):05d}"


def insert_work(
    conn: Conn,
    *,
    reference: str,
    status: Status,
    spec: RoadworkSpec,
    area_m2: float,
    district: str,
    actor: Actor,
    at: datetime,
) -> int:
    """Insert a work with its streets; returns its id."""
    params = _spec_params(spec, area_m2, district)
    params.update(reference=reference, status=status.value, at=at, created_by=actor.name)
    try:
        row = conn.execute(_INSERT, params).fetchone()
    except psycopg.errors.UniqueViolation:
        raise DuplicateReferenceError(reference) from None
    assert row is not None
    work_id = int(row[0])
    _write_streets(conn, work_id, spec.streets)
    return work_id


def update_work(
    conn: Conn,
    work_id: int,
    *,
    spec: RoadworkSpec | None = None,
    area_m2: float = 0.0,
    district: str = "",
    status: Status | None = None,
    actual_start: datetime | None = None,
    actual_end: datetime | None = None,
    at: datetime,
) -> int:
    """Change a work's content and/or state and bump its version; returns the version."""
    sets = ["version = version + 1, updated_at = %(at)s"]
    params: dict[str, Any] = {"id": work_id, "at": at}
    if spec is not None:
        sets.append(_SPEC_SET)
        params.update(_spec_params(spec, area_m2, district))
    if status is not None:
        sets.append("status = %(status)s")
        params["status"] = status.value
    if actual_start is not None:
        sets.append("actual_start = %(actual_start)s")
        params["actual_start"] = actual_start
    if actual_end is not None:
        sets.append("actual_end = %(actual_end)s")
        params["actual_end"] = actual_end
    query = f"UPDATE roadworks SET {', '.join(sets)} WHERE id = %(id)s RETURNING version"
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise RoadworkNotFoundError(work_id)
    if spec is not None:
        conn.execute("DELETE FROM roadwork_streets WHERE work_id = %s", (work_id,))
        _write_streets(conn, work_id, spec.streets)
    return int(row[0])


def get_work(conn: Conn, work_id: int, *, for_update: bool = False) -> Roadwork:
    lock = " FOR UPDATE" if for_update else ""
    query = f"SELECT {_WORK_COLUMNS} FROM roadworks w WHERE w.id = %s{lock}"
    return fetch_one(conn, _work_row, query, (work_id,), RoadworkNotFoundError(work_id))


def get_work_by_reference(conn: Conn, reference: str) -> Roadwork:
    query = f"SELECT {_WORK_COLUMNS} FROM roadworks w WHERE w.reference = %s"
    return fetch_one(conn, _work_row, query, (reference,), RoadworkNotFoundError(reference))


def list_works(conn: Conn, filt: WorkFilter | None = None) -> list[Roadwork]:
    """Works matching the filter, by effective start, then id."""
    where, params = _where(filt or WorkFilter())
    query = f"SELECT {_WORK_COLUMNS} FROM roadworks w WHERE {where} ORDER BY {EFF_START}, w.id"
    if filt is not None and filt.limit is not None:
        query += " LIMIT %(limit)s OFFSET %(offset)s"
        params.update(limit=filt.limit, offset=filt.offset)
    return fetch_all(conn, _work_row, query, params)


def count_works(conn: Conn, filt: WorkFilter | None = None) -> int:
    where, params = _where(filt or WorkFilter())
    row = conn.execute(f"SELECT count(*) FROM roadworks w WHERE {where}", params).fetchone()
    return int(row[0]) if row else 0


def delete_works(conn: Conn, reference_prefix: str) -> int:
    """Delete works whose reference starts with the prefix (demo data); returns the count."""
    cur = conn.execute(
        "DELETE FROM roadworks WHERE starts_with(reference, %s)", (reference_prefix,)
    )
    return cur.rowcount


def candidates(conn: Conn, work: Roadwork, reach_m: float, window: Period) -> list[Roadwork]:
    """Coordinated works other than `work` within `reach_m` of its footprint whose
    effective period overlaps `window`: what coordination must look at."""
    return fetch_all(
        conn,
        _work_row,
        f"""
        SELECT {_WORK_COLUMNS} FROM roadworks w
        WHERE w.id <> %(id)s AND w.status = ANY(%(statuses)s)
          AND w.footprint && ST_Expand(ST_GeomFromWKB(%(fp)s, 4326), %(deg)s)
          AND ST_DWithin(w.footprint::geography,
                         ST_GeomFromWKB(%(fp)s, 4326)::geography, %(reach)s)
          AND {EFF_START} < %(to)s AND {EFF_END} > %(from)s
        ORDER BY w.id
        """,
        {
            "id": work.id,
            "statuses": sorted(s.value for s in COORDINATED_STATUSES),
            "fp": shapely.to_wkb(work.spec.footprint),
            "deg": reach_m / 40_000.0,
            "reach": reach_m,
            "from": window.start,
            "to": window.end,
        },
    )


def _where(f: WorkFilter) -> tuple[str, dict[str, Any]]:
    parts = ["true"]
    params: dict[str, Any] = {}
    statuses = f.statuses
    if f.public_only:
        parts.append("w.is_public")
        statuses = PUBLIC_STATUSES if statuses is None else statuses & PUBLIC_STATUSES
    if statuses is not None:
        parts.append("w.status = ANY(%(statuses)s)")
        params["statuses"] = sorted(s.value for s in statuses)
    if f.bbox is not None:
        parts.append(
            "ST_Intersects(w.footprint, ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326))"
        )
        params.update(x0=f.bbox.min_lon, y0=f.bbox.min_lat, x1=f.bbox.max_lon, y1=f.bbox.max_lat)
    if f.street is not None:
        parts.append(STREET_MATCH)
        params["street_key"] = street_key(f.street)
    if f.active is not None:
        parts.append(f"{EFF_START} < %(active_to)s AND {EFF_END} > %(active_from)s")
        params.update(active_from=f.active.start, active_to=f.active.end)
    if f.starts_in is not None:
        parts.append(f"{EFF_START} >= %(starts_from)s AND {EFF_START} < %(starts_to)s")
        params.update(starts_from=f.starts_in.start, starts_to=f.starts_in.end)
    if f.promoter is not None:
        parts.append("lower(trim(w.promoter)) = lower(trim(%(promoter)s))")  # same_organisation
        params["promoter"] = f.promoter
    if f.sector is not None:
        parts.append("w.sector = %(sector)s")
        params["sector"] = f.sector.value
    if f.district is not None:
        parts.append("w.district = %(district)s")
        params["district"] = f.district
    if f.ids is not None:
        parts.append("w.id = ANY(%(ids)s)")
        params["ids"] = list(f.ids)
    if f.reference_prefix is not None:
        parts.append("starts_with(w.reference, %(reference_prefix)s)")
        params["reference_prefix"] = f.reference_prefix
    return " AND ".join(parts), params


def _spec_params(spec: RoadworkSpec, area_m2: float, district: str) -> dict[str, Any]:
    params = {c: getattr(spec, c) for c in _SPEC_FIELDS}
    params.update(
        sector=spec.sector.value,
        category=spec.category.value,
        footprint=shapely.to_wkb(spec.footprint),
        measures=[m.value for m in spec.sorted_measures],
        detour=shapely.to_wkb(spec.detour) if spec.detour is not None else None,
        bus_lines=list(spec.bus_lines),
        area_m2=area_m2,
        district=district,
    )
    return params


def _write_streets(conn: Conn, work_id: int, streets: Iterable[Street]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO roadwork_streets (work_id, seq, name, street_key, geom) "
            "VALUES (%s, %s, %s, %s, ST_GeomFromWKB(%s, 4326))",
            [
                (work_id, i, s.name, street_key(s.name), shapely.to_wkb(s.line))
                for i, s in enumerate(streets)
            ],
        )


_WORK_CONVERT: dict[str, Callable[[Any], Any]] = {
    "status": Status,
    "sector": Sector,
    "category": Category,
    "footprint": from_wkb,
    "detour": from_wkb,
    "measures": lambda ms: frozenset(Measure(m) for m in ms),
    "bus_lines": tuple,
}


def _work_row(cur: psycopg.Cursor[Any]) -> RowMaker[Roadwork]:
    """Rows of `_WORK_COLUMNS` as works. `class_row` cannot nest, so this is its two-level
    form: the spec's columns by name into a `RoadworkSpec` (the streets from their two
    arrays), the other columns by name into the `Roadwork`."""
    names = [c.name for c in cur.description or ()]
    apply = converted(_WORK_CONVERT, cur)

    def make(values: Sequence[Any]) -> Roadwork:
        row = dict(zip(names, apply(values), strict=True))
        streets = tuple(
            Street(n, from_wkb(g))
            for n, g in zip(row.pop("street_names"), row.pop("street_geoms"), strict=True)
        )
        spec = RoadworkSpec(streets=streets, **{c: row.pop(c) for c in _SPEC_FIELDS})
        return Roadwork(spec=spec, **row)

    return make


# -- audit --------------------------------------------------------------------------------


def insert_audit(
    conn: Conn,
    work_id: int,
    *,
    actor: Actor,
    at: datetime,
    action: str,
    from_status: Status | None = None,
    to_status: Status | None = None,
    changes: dict[str, object] | None = None,
    note: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO roadwork_audit (work_id, at, actor, organisation, role, action, "
        "from_status, to_status, changes, note) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            work_id,
            at,
            actor.name,
            actor.organisation,
            actor.role.value,
            action,
            from_status.value if from_status else None,
            to_status.value if to_status else None,
            Jsonb(changes or {}),
            note,
        ),
    )


def audit_history(conn: Conn, work_id: int) -> list[AuditEntry]:
    """Every recorded change of a work, oldest first."""
    return fetch_all(
        conn,
        typed_row(AuditEntry, role=Role, from_status=Status, to_status=Status),
        "SELECT id, work_id, at, actor, organisation, role, action, from_status, "
        "to_status, changes, note FROM roadwork_audit WHERE work_id = %s ORDER BY id",
        (work_id,),
    )
