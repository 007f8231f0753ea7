"""The SQL of the daily construction overview: each publication is kept as a snapshot
(HTML and GeoJSON as published), the newest of a day is the one served."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from cityops.roadworks.store_sql import Conn

__all__ = ["OverviewSnapshot", "get_overview", "list_overviews", "save_overview"]


@dataclass(frozen=True, slots=True)
class OverviewSnapshot:
    id: int
    day: date
    generated_at: datetime
    active: int
    upcoming: int
    html: str
    geojson: dict[str, Any]


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
    with conn.cursor(row_factory=class_row(OverviewSnapshot)) as cur:
        return cur.execute(
            "SELECT id, day, generated_at, active, upcoming, html, geojson "
            "FROM roadwork_overviews WHERE day = %s ORDER BY generated_at DESC, id DESC LIMIT 1",
            (day,),
        ).fetchone()


def list_overviews(conn: Conn) -> list[tuple[date, datetime, int, int]]:
    """(day, generated_at, active, upcoming) of the newest publication per day, newest first."""
    rows = conn.execute(
        "SELECT DISTINCT ON (day) day, generated_at, active, upcoming FROM roadwork_overviews "
        "ORDER BY day DESC, generated_at DESC, id DESC"
    ).fetchall()
    return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]
