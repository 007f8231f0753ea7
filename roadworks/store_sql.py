"""What the registry's SQL modules share: the connection type, the row factory that reads
rows into the domain's dataclasses, and the effective period in SQL.

The SQL is split by concern: `store_works` (works, their streets and audit),
`store_public` (the public search and rendering), `store_coordination` (findings and
resurfaced segments), `store_overview` (the daily overview's snapshots). Every function
there takes an open connection and runs inside the caller's transaction; the service
decides where transactions begin and end. Geometries travel as WKB (shapely on our side,
PostGIS on the other), times as timestamptz. Queries are parameterised; the only SQL
built at run time are WHERE clauses assembled from fixed fragments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
import shapely
from psycopg.abc import Params
from psycopg.rows import RowFactory, RowMaker, class_row

__all__ = [
    "EFF_END",
    "EFF_START",
    "STREET_MATCH",
    "Conn",
    "converted",
    "fetch_all",
    "fetch_one",
    "from_wkb",
    "typed_row",
]

Conn = psycopg.Connection[Any]

T = TypeVar("T")

# The effective period (model.Roadwork.effective_period) of a row `w` of roadworks in SQL.
EFF_START = "coalesce(w.actual_start, w.planned_start)"
EFF_END = f"""(CASE
    WHEN w.actual_end IS NOT NULL THEN greatest(w.actual_end, {EFF_START} + interval '1 minute')
    WHEN w.planned_end > {EFF_START} THEN w.planned_end
    ELSE {EFF_START} + (w.planned_end - w.planned_start) END)"""
# An affected street of `w` whose folded name (labels.street_key) is %(street_key)s.
STREET_MATCH = (
    "EXISTS (SELECT 1 FROM roadwork_streets s WHERE s.work_id = w.id "
    "AND s.street_key = %(street_key)s)"
)


def from_wkb(value: bytes) -> Any:
    """A shapely geometry from the WKB of `ST_AsBinary`."""
    return shapely.from_wkb(value)


def converted(
    convert: dict[str, Callable[[Any], Any]], cur: psycopg.Cursor[Any]
) -> Callable[[Sequence[Any]], list[Any]]:
    """A function that passes the values of a row of `cur` through the converter named
    after their column, where there is one; NULL stays None."""
    fns = [convert.get(c.name) for c in cur.description or ()]

    def apply(values: Sequence[Any]) -> list[Any]:
        return [v if f is None or v is None else f(v) for f, v in zip(fns, values, strict=True)]

    return apply


def typed_row(cls: type[T], **convert: Callable[[Any], Any]) -> RowFactory[T]:
    """psycopg's `class_row` for the domain's dataclasses: the columns name the fields;
    the columns named in `convert` go through their function first (text to an enum,
    WKB to a shapely geometry, an array to a tuple)."""

    def factory(cur: psycopg.Cursor[Any]) -> RowMaker[T]:
        make = class_row(cls)(cur)
        if not convert:
            return make
        apply = converted(convert, cur)
        return lambda values: make(apply(values))

    return factory


def fetch_all(
    conn: Conn, row: RowFactory[T], query: str, params: Params | None = None
) -> list[T]:
    """Every row of `query`, read by `row`."""
    with conn.cursor(row_factory=row) as cur:
        return cur.execute(query, params).fetchall()


def fetch_one(
    conn: Conn, row: RowFactory[T], query: str, params: Params, missing: Exception
) -> T:
    """The row of `query`, read by `row`; raises `missing` when there is none."""
    with conn.cursor(row_factory=row) as cur:
        found = cur.execute(query, params).fetchone()
    if found is None:
        raise missing
    return found
