"""The roadworks registry's SQL: works, streets, audit, findings, resurfacing, overviews.

Every function takes an open connection and runs inside the caller's transaction; the
service decides where transactions begin and end. Geometries travel as WKB (shapely on
our side, PostGIS on the other), times as timestamptz, rows come back as the domain's
dataclasses. Queries are parameterised; the only SQL built at run time are WHERE clauses
assembled from fixed fragments.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
import shapely
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cityops.roadworks.errors import (
    DuplicateReference,
    FindingNotFound,
    RoadworkNotFound,
    SegmentNotFound,
)
from cityops.roadworks.geometry import BBox
from cityops.roadworks.labels import BERLIN, street_key
from cityops.roadworks.model import (
    COORDINATED_STATUSES,
    PUBLIC_STATUSES,
    Actor,
    AuditEntry,
    Category,
    Decision,
    Finding,
    FindingDraft,
    FindingKind,
    FindingStatus,
    Measure,
    Period,
    ResurfacedSegment,
    Roadwork,
    RoadworkSpec,
    Role,
    Sector,
    Severity,
    Status,
    Street,
)
from cityops.roadworks.search_index import IndexRow

__all__ = [
    "Conn",
    "OverviewSnapshot",
    "PublicKey",
    "PublicKeys",
    "PublicSearch",
    "PublicText",
    "WorkFilter",
    "audit_history",
    "candidates",
    "count_public",
    "count_works",
    "data_version",
    "decide_finding",
    "delete_segments",
    "delete_works",
    "get_finding",
    "get_overview",
    "get_segment",
    "get_work",
    "get_work_by_reference",
    "insert_audit",
    "insert_segment",
    "insert_work",
    "list_findings",
    "list_overviews",
    "list_segments",
    "list_works",
    "lock_registry",
    "next_public_start",
    "next_reference",
    "public_index_rows",
    "render_public",
    "save_overview",
    "search_public_keys",
    "search_public_texts",
    "segments_near",
    "sync_findings",
    "update_work",
]

logger = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

_LOCK_KEY = 0x726F_6164_776B  # "roadwk": serialises writers so coordination sees them all

# The effective period (model.Roadwork.effective_period) in SQL.
_EFF_START = "coalesce(w.actual_start, w.planned_start)"
_EFF_END = f"""(CASE
    WHEN w.actual_end IS NOT NULL THEN greatest(w.actual_end, {_EFF_START} + interval '1 minute')
    WHEN w.planned_end > {_EFF_START} THEN w.planned_end
    ELSE {_EFF_START} + (w.planned_end - w.planned_start) END)"""

_WORK_COLUMNS = """
    w.id, w.reference, w.title, w.description, w.promoter, w.sector, w.contractor,
    w.public_contact, w.category, w.status, ST_AsBinary(w.footprint) AS footprint, w.area_m2,
    w.district, w.planned_start, w.planned_end, w.actual_start, w.actual_end,
    w.working_hours, w.night_works, w.excavation, w.measures, w.lanes_affected,
    w.detour_description, ST_AsBinary(w.detour) AS detour, w.bus_lines,
    w.waste_collection_affected, w.is_public, w.public_text, w.version, w.created_at,
    w.created_by, w.updated_at,
    ARRAY(SELECT s.name FROM roadwork_streets s WHERE s.work_id = w.id ORDER BY s.seq)
        AS street_names,
    ARRAY(SELECT ST_AsBinary(s.geom) FROM roadwork_streets s WHERE s.work_id = w.id
          ORDER BY s.seq) AS street_geoms
"""

_SPEC_PARAMS = """
    title = %(title)s, description = %(description)s, promoter = %(promoter)s,
    sector = %(sector)s, contractor = %(contractor)s, public_contact = %(public_contact)s,
    category = %(category)s, footprint = ST_GeomFromWKB(%(footprint)s, 4326),
    area_m2 = %(area_m2)s, district = %(district)s, planned_start = %(planned_start)s,
    planned_end = %(planned_end)s, working_hours = %(working_hours)s,
    night_works = %(night_works)s, excavation = %(excavation)s, measures = %(measures)s,
    lanes_affected = %(lanes_affected)s, detour_description = %(detour_description)s,
    detour = ST_GeomFromWKB(%(detour)s, 4326), bus_lines = %(bus_lines)s,
    waste_collection_affected = %(waste_collection_affected)s, is_public = %(is_public)s,
    public_text = %(public_text)s
"""


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


@dataclass(frozen=True, slots=True)
class OverviewSnapshot:
    id: int
    day: date
    generated_at: datetime
    active: int
    upcoming: int
    html: str
    geojson: dict[str, Any]


def lock_registry(conn: Conn) -> None:
    """Serialise registry writes until the end of the transaction."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))


# -- works --------------------------------------------------------------------------------


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
        row = conn.execute(
            """
            INSERT INTO roadworks (reference, status, title, description, promoter, sector,
                contractor, public_contact, category, footprint, area_m2, district,
                planned_start, planned_end, working_hours, night_works, excavation, measures,
                lanes_affected, detour_description, detour, bus_lines,
                waste_collection_affected, is_public, public_text, created_at, created_by,
                updated_at)
            VALUES (%(reference)s, %(status)s, %(title)s, %(description)s, %(promoter)s,
                %(sector)s, %(contractor)s, %(public_contact)s, %(category)s,
                ST_GeomFromWKB(%(footprint)s, 4326), %(area_m2)s, %(district)s,
                %(planned_start)s, %(planned_end)s, %(working_hours)s, %(night_works)s,
                %(excavation)s, %(measures)s, %(lanes_affected)s, %(detour_description)s,
                ST_GeomFromWKB(%(detour)s, 4326), %(bus_lines)s,
                %(waste_collection_affected)s, %(is_public)s, %(public_text)s, %(at)s,
                %(created_by)s, %(at)s)
            RETURNING id
            """,
            params,
        ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise DuplicateReference(reference) from None
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
    sets = [sql.SQL("version = version + 1, updated_at = %(at)s")]
    params: dict[str, Any] = {"id": work_id, "at": at}
    if spec is not None:
        sets.append(sql.SQL(_SPEC_PARAMS))
        params.update(_spec_params(spec, area_m2, district))
    if status is not None:
        sets.append(sql.SQL("status = %(status)s"))
        params["status"] = status.value
    if actual_start is not None:
        sets.append(sql.SQL("actual_start = %(actual_start)s"))
        params["actual_start"] = actual_start
    if actual_end is not None:
        sets.append(sql.SQL("actual_end = %(actual_end)s"))
        params["actual_end"] = actual_end
    query = sql.SQL("UPDATE roadworks SET {} WHERE id = %(id)s RETURNING version").format(
        sql.SQL(", ").join(sets)
    )
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise RoadworkNotFound(work_id)
    if spec is not None:
        conn.execute("DELETE FROM roadwork_streets WHERE work_id = %s", (work_id,))
        _write_streets(conn, work_id, spec.streets)
    return int(row[0])


def get_work(conn: Conn, work_id: int, *, for_update: bool = False) -> Roadwork:
    lock = " FOR UPDATE" if for_update else ""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_WORK_COLUMNS} FROM roadworks w WHERE w.id = %s{lock}", (work_id,)
        ).fetchone()
    if row is None:
        raise RoadworkNotFound(work_id)
    return _work(row)


def get_work_by_reference(conn: Conn, reference: str) -> Roadwork:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_WORK_COLUMNS} FROM roadworks w WHERE w.reference = %s", (reference,)
        ).fetchone()
    if row is None:
        raise RoadworkNotFound(reference)
    return _work(row)


def list_works(conn: Conn, filt: WorkFilter | None = None) -> list[Roadwork]:
    """Works matching the filter, by effective start, then id."""
    where, params = _where(filt or WorkFilter())
    query = f"SELECT {_WORK_COLUMNS} FROM roadworks w WHERE {where} ORDER BY {_EFF_START}, w.id"
    if filt is not None and filt.limit is not None:
        query += " LIMIT %(limit)s OFFSET %(offset)s"
        params.update(limit=filt.limit, offset=filt.offset)
    with conn.cursor(row_factory=dict_row) as cur:
        return [_work(r) for r in cur.execute(query, params).fetchall()]


def count_works(conn: Conn, filt: WorkFilter | None = None) -> int:
    where, params = _where(filt or WorkFilter())
    row = conn.execute(f"SELECT count(*) FROM roadworks w WHERE {where}", params).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class PublicSearch:
    """The public search (`search_public_keys`): public works on site during `window`.

    On site: the effective period overlaps the window; a work in progress whose end was
    not reported also stays on site until `now`, even past its planned end. `impacts` are
    the public impact classes of the works' measures: "closure" (road closed),
    "restriction" (lane closure, alternating one-way, temporary signals), else "minor".
    """

    window: Period
    now: datetime
    bbox: BBox | None = None  # footprint intersects
    street: str | None = None  # an affected street of that name (folded, see street_key)
    sectors: frozenset[Sector] = frozenset()  # any of them; empty: all
    impacts: frozenset[str] = frozenset()  # any of them; empty: all


@dataclass(frozen=True, slots=True)
class PublicText:
    """What the free-text search of the public API looks at, per matching work."""

    id: int
    start: datetime  # effective start
    reference: str
    title: str
    public_text: str | None
    road_names: tuple[str, ...]  # distinct, in the order given


# The public impact class of a work's measures (api.roadworks_schemas.impact_of) in SQL.
_IMPACT = """(CASE
    WHEN 'road_closure' = ANY(w.measures) THEN 'closure'
    WHEN w.measures && ARRAY['lane_closure', 'alternating_one_way', 'temporary_signals']
        THEN 'restriction'
    ELSE 'minor' END)"""


# A literal list, so that the planner can use the partial index on public works.
_PUBLIC_STATUS_LIST = ", ".join(f"'{x.value}'" for x in sorted(PUBLIC_STATUSES))


def next_public_start(conn: Conn, at: datetime) -> datetime | None:
    """The earliest effective start at or after `at` among the public works."""
    row = conn.execute(
        f"SELECT min({_EFF_START}) FROM roadworks w WHERE w.is_public "
        f"AND w.status IN ({_PUBLIC_STATUS_LIST}) AND {_EFF_START} >= %s",
        (at,),
    ).fetchone()
    return row[0] if row else None


def _public_where(s: PublicSearch) -> tuple[str, dict[str, Any]]:
    parts = [
        "w.is_public",
        f"w.status IN ({_PUBLIC_STATUS_LIST})",
        # on site: effective period overlaps the window, or in progress and not
        # reported finished while the window reaches past now (model: _occupied)
        f"{_EFF_START} < %(win_to)s",
        f"({_EFF_END} > %(win_from)s OR (%(win_to)s > %(now)s AND %(now)s > %(win_from)s"
        " AND w.status = 'in_progress' AND w.actual_end IS NULL))",
    ]
    params: dict[str, Any] = {
        "win_from": s.window.start,
        "win_to": s.window.end,
        "now": s.now,
    }
    if s.bbox is not None:
        parts.append(
            "w.footprint && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326)"
            " AND ST_Intersects(w.footprint, "
            "ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326))"
        )
        params.update(x0=s.bbox.min_lon, y0=s.bbox.min_lat, x1=s.bbox.max_lon, y1=s.bbox.max_lat)
    if s.street is not None:
        parts.append(
            "EXISTS (SELECT 1 FROM roadwork_streets s WHERE s.work_id = w.id "
            "AND s.street_key = %(street_key)s)"
        )
        params["street_key"] = street_key(s.street)
    if s.sectors:
        parts.append("w.sector = ANY(%(sectors)s)")
        params["sectors"] = sorted(x.value for x in s.sectors)
    if s.impacts:
        parts.append(f"{_IMPACT} = ANY(%(impacts)s)")
        params["impacts"] = sorted(s.impacts)
    return " AND ".join(parts), params


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A work of a public page, without its content: its id, a key that changes whenever
    the work or its streets change (their row versions), its effective start (the page
    order and cursor) and, for a work in progress whose end was not reported, its
    effective end (from then on it is overdue)."""

    id: int
    key: str
    start: datetime
    overdue_from: datetime | None


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """A page of `search_public_keys`, read with the registry's data version."""

    works: list[PublicKey]
    more: bool
    total: int
    version: str


def data_version(conn: Conn) -> str:
    """The registry's data version: changes with every transaction that changes a work or
    its streets (`roadworks_data_version`, kept by triggers; the database name included,
    so that versions of different databases never compare equal)."""
    row = conn.execute(
        "SELECT current_database() || ':' || version::text FROM roadworks_data_version"
    ).fetchone()
    assert row is not None
    return str(row[0])


_KEYS_SQL = """
SELECT current_database() || ':' || v.version::text, p.id, p.start, p.overdue_from, p.total,
    p.x || '.' || coalesce((SELECT max(s.xmin::text::bigint) FROM roadwork_streets s
                            WHERE s.work_id = p.id), 0)
FROM roadworks_data_version v LEFT JOIN LATERAL (
    SELECT * FROM (
        SELECT w.id, w.xmin::text AS x, {eff_start} AS start,
            CASE WHEN w.status = 'in_progress' AND w.actual_end IS NULL THEN {eff_end} END
                AS overdue_from,
            count(*) OVER () AS total
        FROM roadworks w WHERE {where}
    ) m WHERE {after}
    ORDER BY m.start, m.id LIMIT %(fetch)s
) p ON true
ORDER BY p.start, p.id
"""


def search_public_keys(
    conn: Conn,
    s: PublicSearch | Sequence[int],
    *,
    limit: int,
    after: tuple[datetime, int] | None = None,
) -> PublicKeys:
    """The public search without the content, in one statement: the page's works as
    `PublicKey`s, whether more follow, how many match in all, and the data version read
    in the same snapshot. `s` is the search, or the ids of the works to page through
    (a caller's own match, in effective start order like any page)."""
    if isinstance(s, PublicSearch):
        where, args = _public_where(s)
    else:
        where, args = "w.id = ANY(%(ids)s)", {"ids": list(s)}
    cond = "true"
    if after is not None:
        cond = "(m.start, m.id) > (%(after_start)s, %(after_id)s)"
        args.update(after_start=after[0], after_id=after[1])
    args["fetch"] = limit + 1
    text = _KEYS_SQL.format(eff_start=_EFF_START, eff_end=_EFF_END, where=where, after=cond)
    rows = conn.execute(text, args).fetchall()
    version = str(rows[0][0])
    found = [PublicKey(int(r[1]), str(r[5]), r[2], r[3]) for r in rows if r[1] is not None]
    total = int(rows[0][4]) if found else 0
    if not found and after is not None:  # past the last page: count without the cursor
        total = len(s) if not isinstance(s, PublicSearch) else count_public(conn, s)
    return PublicKeys(found[:limit], len(found) > limit, total, version)


def public_index_rows(conn: Conn) -> tuple[str, list[IndexRow]]:
    """The data version and every public work as `search_index.PublicIndex` needs it, in
    one statement (one snapshot)."""
    rows = conn.execute(
        f"""
        SELECT current_database() || ':' || v.version::text, p.* FROM roadworks_data_version v
        LEFT JOIN LATERAL (
            SELECT w.id, w.xmin::text || '.' || coalesce(
                       (SELECT max(s.xmin::text::bigint) FROM roadwork_streets s
                        WHERE s.work_id = w.id), 0),
                {_EFF_START}, {_EFF_END}, w.status = 'in_progress' AND w.actual_end IS NULL,
                w.sector, {_IMPACT},
                ARRAY(SELECT s.street_key FROM roadwork_streets s WHERE s.work_id = w.id),
                ST_AsBinary(w.footprint)
            FROM roadworks w
            WHERE w.is_public AND w.status IN ({_PUBLIC_STATUS_LIST})
        ) p ON true
        """
    ).fetchall()
    version = str(rows[0][0])
    return version, [
        IndexRow(
            int(r[1]),
            str(r[2]),
            r[3],
            r[4],
            bool(r[5]),
            str(r[6]),
            str(r[7]),
            tuple(r[8]),
            bytes(r[9]),
        )
        for r in rows
        if r[1] is not None
    ]


def count_public(conn: Conn, s: PublicSearch) -> int:
    """How many public works match the search."""
    where, params = _public_where(s)
    row = conn.execute(f"SELECT count(*) FROM roadworks w WHERE {where}", params).fetchone()
    return int(row[0]) if row else 0


_ITEMS_SQL = """
SELECT w.id, w.row_x || '.' || coalesce((SELECT max(s.xmin::text::bigint)
                                          FROM roadwork_streets s WHERE s.work_id = w.id), 0),
    {head}::text, {tail}::text
FROM (SELECT w.*, w.xmin::text AS row_x, {eff_start} AS eff_start, {eff_end} AS eff_end
      FROM roadworks w WHERE w.id = ANY(%(ids)s)) w
"""


def render_public(
    conn: Conn,
    ids: Sequence[int],
    *,
    head: str,
    tail: str,
    params: dict[str, Any],
) -> dict[int, tuple[str, str, str]]:
    """Works rendered by PostgreSQL: id -> (key as in `PublicKey`, `head` as text, `tail`
    as text), where `head` and `tail` are SQL expressions over a row `w` of `roadworks`
    plus its effective period `w.eff_start`, `w.eff_end`, with the named `params`."""
    text = _ITEMS_SQL.format(eff_start=_EFF_START, eff_end=_EFF_END, head=head, tail=tail)
    rows = conn.execute(text, {**params, "ids": list(ids)}).fetchall()
    return {int(r[0]): (str(r[1]), str(r[2]), str(r[3])) for r in rows}


def search_public_texts(conn: Conn, s: PublicSearch) -> list[PublicText]:
    """The texts of every public work matching `s`, by effective start and id, for a
    free-text filter applied by the caller (no geometries are decoded)."""
    where, params = _public_where(s)
    rows = conn.execute(
        f"SELECT w.id, {_EFF_START}, w.reference, w.title, w.public_text, "
        "ARRAY(SELECT s.name FROM roadwork_streets s WHERE s.work_id = w.id ORDER BY s.seq) "
        f"FROM roadworks w WHERE {where} ORDER BY {_EFF_START}, w.id",
        params,
    ).fetchall()
    return [PublicText(int(r[0]), r[1], r[2], r[3], r[4], tuple(dict.fromkeys(r[5]))) for r in rows]


def delete_works(conn: Conn, reference_prefix: str) -> int:
    """Delete works whose reference starts with the prefix (demo data); returns the count."""
    cur = conn.execute(
        "DELETE FROM roadworks WHERE starts_with(reference, %s)", (reference_prefix,)
    )
    return cur.rowcount


def candidates(conn: Conn, work: Roadwork, reach_m: float, window: Period) -> list[Roadwork]:
    """Coordinated works other than `work` within `reach_m` of its footprint whose
    effective period overlaps `window`: what coordination must look at."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"""
            SELECT {_WORK_COLUMNS} FROM roadworks w
            WHERE w.id <> %(id)s AND w.status = ANY(%(statuses)s)
              AND w.footprint && ST_Expand(ST_GeomFromWKB(%(fp)s, 4326), %(deg)s)
              AND ST_DWithin(w.footprint::geography,
                             ST_GeomFromWKB(%(fp)s, 4326)::geography, %(reach)s)
              AND {_EFF_START} < %(to)s AND {_EFF_END} > %(from)s
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
        ).fetchall()
    return [_work(r) for r in rows]


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
        parts.append(
            "EXISTS (SELECT 1 FROM roadwork_streets s WHERE s.work_id = w.id "
            "AND s.street_key = %(street_key)s)"
        )
        params["street_key"] = street_key(f.street)
    if f.active is not None:
        parts.append(f"{_EFF_START} < %(active_to)s AND {_EFF_END} > %(active_from)s")
        params.update(active_from=f.active.start, active_to=f.active.end)
    if f.starts_in is not None:
        parts.append(f"{_EFF_START} >= %(starts_from)s AND {_EFF_START} < %(starts_to)s")
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
    return {
        "title": spec.title,
        "description": spec.description,
        "promoter": spec.promoter,
        "sector": spec.sector.value,
        "contractor": spec.contractor,
        "public_contact": spec.public_contact,
        "category": spec.category.value,
        "footprint": shapely.to_wkb(spec.footprint),
        "area_m2": area_m2,
        "district": district,
        "planned_start": spec.planned_start,
        "planned_end": spec.planned_end,
        "working_hours": spec.working_hours,
        "night_works": spec.night_works,
        "excavation": spec.excavation,
        "measures": [m.value for m in spec.sorted_measures],
        "lanes_affected": spec.lanes_affected,
        "detour_description": spec.detour_description,
        "detour": shapely.to_wkb(spec.detour) if spec.detour is not None else None,
        "bus_lines": list(spec.bus_lines),
        "waste_collection_affected": spec.waste_collection_affected,
        "is_public": spec.is_public,
        "public_text": spec.public_text,
    }


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


def _work(r: dict[str, Any]) -> Roadwork:
    spec = RoadworkSpec(
        title=r["title"],
        promoter=r["promoter"],
        sector=Sector(r["sector"]),
        category=Category(r["category"]),
        footprint=shapely.from_wkb(r["footprint"]),
        streets=tuple(
            Street(n, shapely.from_wkb(g))
            for n, g in zip(r["street_names"], r["street_geoms"], strict=True)
        ),
        planned_start=r["planned_start"],
        planned_end=r["planned_end"],
        description=r["description"],
        contractor=r["contractor"],
        public_contact=r["public_contact"],
        working_hours=r["working_hours"],
        night_works=r["night_works"],
        excavation=r["excavation"],
        measures=frozenset(Measure(m) for m in r["measures"]),
        lanes_affected=r["lanes_affected"],
        detour_description=r["detour_description"],
        detour=shapely.from_wkb(r["detour"]) if r["detour"] is not None else None,
        bus_lines=tuple(r["bus_lines"]),
        waste_collection_affected=r["waste_collection_affected"],
        is_public=r["is_public"],
        public_text=r["public_text"],
    )
    return Roadwork(
        id=r["id"],
        reference=r["reference"],
        status=Status(r["status"]),
        spec=spec,
        district=r["district"],
        area_m2=r["area_m2"],
        version=r["version"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        created_by=r["created_by"],
        actual_start=r["actual_start"],
        actual_end=r["actual_end"],
    )


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
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT id, work_id, at, actor, organisation, role, action, from_status, "
            "to_status, changes, note FROM roadwork_audit WHERE work_id = %s ORDER BY id",
            (work_id,),
        ).fetchall()
    return [
        AuditEntry(
            id=r["id"],
            work_id=r["work_id"],
            at=r["at"],
            actor=r["actor"],
            organisation=r["organisation"],
            role=Role(r["role"]),
            action=r["action"],
            from_status=Status(r["from_status"]) if r["from_status"] else None,
            to_status=Status(r["to_status"]) if r["to_status"] else None,
            changes=r["changes"],
            note=r["note"],
        )
        for r in rows
    ]


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


_SEGMENT_COLUMNS = "id, street, ST_AsBinary(geom) AS geom, resurfaced_on, note"


def get_segment(conn: Conn, segment_id: int) -> ResurfacedSegment:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_SEGMENT_COLUMNS} FROM resurfaced_segments WHERE id = %s", (segment_id,)
        ).fetchone()
    if row is None:
        raise SegmentNotFound(segment_id)
    return _segment(row)


def list_segments(conn: Conn) -> list[ResurfacedSegment]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_SEGMENT_COLUMNS} FROM resurfaced_segments ORDER BY id"
        ).fetchall()
    return [_segment(r) for r in rows]


def segments_near(conn: Conn, geom: Any, distance_m: float) -> list[ResurfacedSegment]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"""
            SELECT {_SEGMENT_COLUMNS} FROM resurfaced_segments
            WHERE geom && ST_Expand(ST_GeomFromWKB(%(g)s, 4326), %(deg)s)
              AND ST_DWithin(geom::geography, ST_GeomFromWKB(%(g)s, 4326)::geography, %(d)s)
            ORDER BY id
            """,
            {"g": shapely.to_wkb(geom), "deg": distance_m / 40_000.0 + 1e-5, "d": distance_m},
        ).fetchall()
    return [_segment(r) for r in rows]


def delete_segments(conn: Conn, *, created_by: str) -> int:
    """Delete the resurfaced segments one user recorded (demo data); returns the count."""
    return conn.execute(
        "DELETE FROM resurfaced_segments WHERE created_by = %s", (created_by,)
    ).rowcount


def _segment(r: dict[str, Any]) -> ResurfacedSegment:
    return ResurfacedSegment(
        r["id"], r["street"], shapely.from_wkb(r["geom"]), r["resurfaced_on"], r["note"]
    )


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
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
    return [_finding(r) for r in rows]


def get_finding(conn: Conn, finding_id: int, *, for_update: bool = False) -> Finding:
    lock = " FOR UPDATE OF f" if for_update else ""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_FINDING_COLUMNS} FROM {_FINDING_FROM} WHERE f.id = %s{lock}",
            (finding_id,),
        ).fetchone()
    if row is None:
        raise FindingNotFound(finding_id)
    return _finding(row)


def decide_finding(
    conn: Conn, finding_id: int, decision: Decision, note: str, actor: Actor, at: datetime
) -> None:
    cur = conn.execute(
        "UPDATE roadwork_findings SET decision = %s, decision_note = %s, decided_by = %s, "
        "decided_at = %s WHERE id = %s",
        (decision.value, note, f"{actor.name} ({actor.organisation})", at, finding_id),
    )
    if cur.rowcount == 0:
        raise FindingNotFound(finding_id)


def _finding(r: dict[str, Any]) -> Finding:
    return Finding(
        id=r["id"],
        kind=FindingKind(r["kind"]),
        severity=Severity(r["severity"]),
        work_a=r["work_a"],
        work_b=r["work_b"],
        reference_a=r["reference_a"],
        reference_b=r["reference_b"],
        segment_id=r["segment_id"],
        street=r["street"],
        message=r["message"],
        details=r["details"],
        location=shapely.from_wkb(r["location"]) if r["location"] is not None else None,
        status=FindingStatus(r["status"]),
        first_found_at=r["first_found_at"],
        last_found_at=r["last_found_at"],
        decision_note=r["decision_note"],
        decided_by=r["decided_by"],
        decided_at=r["decided_at"],
    )


# -- daily overview snapshots ---------------------------------------------------------------


def save_overview(
    conn: Conn,
    *,
    day: date,
    generated_at: datetime,
    active: int,
    upcoming: int,
    html: str,
    geojson: dict[str, Any],
) -> int:
    row = conn.execute(
        "INSERT INTO roadwork_overviews (day, generated_at, active, upcoming, html, geojson) "
        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (day, generated_at, active, upcoming, html, Jsonb(geojson)),
    ).fetchone()
    assert row is not None
    return int(row[0])


def get_overview(conn: Conn, day: date) -> OverviewSnapshot | None:
    """The newest publication for a day, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT id, day, generated_at, active, upcoming, html, geojson "
            "FROM roadwork_overviews WHERE day = %s ORDER BY generated_at DESC, id DESC LIMIT 1",
            (day,),
        ).fetchone()
    return OverviewSnapshot(**row) if row else None


def list_overviews(conn: Conn) -> list[tuple[date, datetime, int, int]]:
    """(day, generated_at, active, upcoming) of the newest publication per day, newest first."""
    rows = conn.execute(
        "SELECT DISTINCT ON (day) day, generated_at, active, upcoming FROM roadwork_overviews "
        "ORDER BY day DESC, generated_at DESC, id DESC"
    ).fetchall()
    return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]
