"""The SQL of the public side: the public search (keys of a page, its count, the texts
for a free-text filter), the rows the in-memory index is built from, works rendered by
PostgreSQL, and the registry's data version that keys every cached answer.

`search_index.PublicIndex` answers the same search in memory; `_public_where` is the
meaning both keep (tested against each other).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cityops.roadworks.geometry import BBox
from cityops.roadworks.labels import street_key
from cityops.roadworks.model import PUBLIC_STATUSES, Period, Sector
from cityops.roadworks.search_index import IndexRow
from cityops.roadworks.store_sql import (
    EFF_END,
    EFF_START,
    STREET_MATCH,
    Conn,
    fetch_all,
    typed_row,
)

__all__ = [
    "PublicKey",
    "PublicKeys",
    "PublicSearch",
    "PublicText",
    "count_public",
    "data_version",
    "next_public_start",
    "public_index_rows",
    "render_public",
    "search_public_keys",
    "search_public_texts",
]


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


# The public impact class of a work's measures (api/roadworks/schemas.impact_of) in SQL.
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
        f"SELECT min({EFF_START}) FROM roadworks w WHERE w.is_public "
        f"AND w.status IN ({_PUBLIC_STATUS_LIST}) AND {EFF_START} >= %s",
        (at,),
    ).fetchone()
    return row[0] if row else None


def _public_where(s: PublicSearch) -> tuple[str, dict[str, Any]]:
    parts = [
        "w.is_public",
        f"w.status IN ({_PUBLIC_STATUS_LIST})",
        # on site: effective period overlaps the window, or in progress and not
        # reported finished while the window reaches past now (model: _occupied)
        f"{EFF_START} < %(win_to)s",
        f"({EFF_END} > %(win_from)s OR (%(win_to)s > %(now)s AND %(now)s > %(win_from)s"
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
        parts.append(STREET_MATCH)
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
    text = _KEYS_SQL.format(eff_start=EFF_START, eff_end=EFF_END, where=where, after=cond)
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
                {EFF_START}, {EFF_END}, w.status = 'in_progress' AND w.actual_end IS NULL,
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
    text = _ITEMS_SQL.format(eff_start=EFF_START, eff_end=EFF_END, head=head, tail=tail)
    rows = conn.execute(text, {**params, "ids": list(ids)}).fetchall()
    return {int(r[0]): (str(r[1]), str(r[2]), str(r[3])) for r in rows}


def search_public_texts(conn: Conn, s: PublicSearch) -> list[PublicText]:
    """The texts of every public work matching `s`, by effective start and id, for a
    free-text filter applied by the caller (no geometries are decoded)."""
    where, params = _public_where(s)
    return fetch_all(
        conn,
        typed_row(PublicText, road_names=lambda names: tuple(dict.fromkeys(names))),
        f"SELECT w.id, {EFF_START} AS start, w.reference, w.title, w.public_text, "
        "ARRAY(SELECT s.name FROM roadwork_streets s WHERE s.work_id = w.id ORDER BY s.seq)"
        f" AS road_names FROM roadworks w WHERE {where} ORDER BY {EFF_START}, w.id",
        params,
    )
