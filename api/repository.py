"""Read-only SQL for the API: bins with their latest state, readings, devices, counts.

Rows come back as frozen dataclasses (psycopg's `class_row`); the HTTP layer turns them
into response schemas. Every query is parameterised; the few SQL fragments chosen at run
time (bucket expressions, table names) come from fixed tables in this module.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, class_row
from psycopg_pool import ConnectionPool

from cityops.api.errors import BinNotFoundError, DatabaseUnavailableError
from cityops.ingest.db import StorageMode, storage_mode

__all__ = [
    "BBox",
    "BinFilter",
    "BinRow",
    "DeviceRow",
    "FillBucketRow",
    "ReadingRow",
    "Repository",
    "Stats",
    "TableCount",
    "open_pool",
]

logger = logging.getLogger(__name__)

Pool = ConnectionPool[psycopg.Connection[TupleRow]]
Bucket = Literal["15m", "1h", "1d"]

# Above this estimated size a table is not counted exactly (a full scan) but estimated.
EXACT_COUNT_LIMIT = 1_000_000

# 15 minutes and 1 hour buckets are aligned on UTC (the same as on Berlin time, whose offsets
# are whole hours); days are Berlin calendar days, 23 or 25 hours long at the DST switches.
_BUCKET_EXPR: dict[str, sql.Composable] = {
    "15m": sql.SQL("date_bin('15 minutes', ts, TIMESTAMPTZ '2000-01-01 00:00+00')"),
    "1h": sql.SQL("date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00+00')"),
    "1d": sql.SQL("date_trunc('day', ts, 'Europe/Berlin')"),
}

_COUNTED_TABLES = ("bin_readings", "signal_events", "truck_positions")


@dataclass(frozen=True, slots=True)
class BBox:
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float


@dataclass(frozen=True, slots=True)
class BinFilter:
    min_fill: float | None = None
    fraction: str | None = None
    district: str | None = None
    bbox: BBox | None = None


@dataclass(frozen=True, slots=True)
class BinRow:
    bin_id: str
    sensor_id: str | None
    lat: float
    lon: float
    street: str
    house_number: str | None
    district: str | None
    fraction: str
    capacity_l: int
    fill_pct: float | None
    temperature_c: float | None
    battery_pct: float | None
    fault: str | None
    tilt: bool | None
    last_reading_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReadingRow:
    ts: datetime
    fill_pct: float
    temperature_c: float | None
    battery_pct: float | None
    tilt: bool
    fault: str | None


@dataclass(frozen=True, slots=True)
class FillBucketRow:
    bucket_start: datetime
    avg_fill_pct: float
    min_fill_pct: float
    max_fill_pct: float
    readings: int


@dataclass(frozen=True, slots=True)
class DeviceRow:
    kind: str
    device_id: str
    entity_id: str
    state: str  # online, offline or unknown, after the staleness rule
    reported_state: str | None
    state_ts: datetime | None
    last_seen: datetime | None


@dataclass(frozen=True, slots=True)
class TableCount:
    count: int
    exact: bool


@dataclass(frozen=True, slots=True)
class Stats:
    bins: int
    devices: int
    tables: dict[str, TableCount]
    dead_letters: dict[str, int]


def open_pool(database_url: str, *, timeout_s: float, max_size: int = 10) -> Pool:
    """A pool of autocommit connections in UTC, opened without waiting for the database.

    The API starts even when the database is down; requests then fail with
    `DatabaseUnavailableError` after `timeout_s` and succeed again once it is back.
    """
    statement_ms = max(1000, int(timeout_s * 1000) * 2)
    pool: Pool = ConnectionPool(
        database_url,
        min_size=1,
        max_size=max_size,
        timeout=timeout_s,
        open=False,
        check=ConnectionPool.check_connection,
        kwargs={
            "autocommit": True,
            "application_name": "cityops-api",
            "connect_timeout": max(1, int(timeout_s)),
            "options": f"-c TimeZone=UTC -c statement_timeout={statement_ms}",
        },
        name="cityops-api",
    )
    pool.open(wait=False)
    return pool


class Repository:
    """The API's queries over one connection pool."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def storage_mode(self) -> StorageMode:
        with self._pool.connection() as conn:
            mode = storage_mode(conn)
        if mode is None:
            raise DatabaseUnavailableError(
                "the database is reachable but not migrated: run 'cityops db migrate'"
            )
        return mode

    # -- bins --------------------------------------------------------------------------

    _BIN_SELECT = """
        SELECT b.bin_id, b.sensor_id, ST_Y(b.geom) AS lat, ST_X(b.geom) AS lon,
               b.street, b.house_number, b.district, b.fraction, b.capacity_l,
               s.fill_pct, s.temperature_c, s.battery_pct, s.fault, s.tilt,
               s.ts AS last_reading_at
        FROM bins b LEFT JOIN bin_state s ON s.bin_id = b.bin_id
    """

    def list_bins(self, filt: BinFilter, *, after: str | None, limit: int) -> list[BinRow]:
        """Up to `limit` bins in bin_id order, starting after the bin id `after`."""
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            where.append("b.bin_id > %(after)s")
            params["after"] = after
        if filt.min_fill is not None:
            # compared as real, the column's type: 70.1::real < 70.1::float8; rounded to
            # real here, as PostgreSQL refuses a cast that underflows (1e-320::real)
            where.append("s.fill_pct >= %(min_fill)s::real")
            params["min_fill"] = _as_real(filt.min_fill)
        if filt.fraction is not None:
            where.append("b.fraction = %(fraction)s")
            params["fraction"] = filt.fraction
        if filt.district is not None:
            where.append("b.district = %(district)s")
            params["district"] = filt.district
        if filt.bbox is not None:
            where.append(
                "b.geom && ST_MakeEnvelope("
                "%(min_lon)s, %(min_lat)s, %(max_lon)s, %(max_lat)s, 4326)"
            )
            params.update(
                min_lon=filt.bbox.min_lon, min_lat=filt.bbox.min_lat,
                max_lon=filt.bbox.max_lon, max_lat=filt.bbox.max_lat,
            )
        query = self._BIN_SELECT
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY b.bin_id LIMIT %(limit)s"
        with self._pool.connection() as conn, conn.cursor(row_factory=class_row(BinRow)) as cur:
            return cur.execute(query.encode(), params).fetchall()

    def get_bin(self, bin_id: str) -> BinRow:
        with self._pool.connection() as conn, conn.cursor(row_factory=class_row(BinRow)) as cur:
            row = cur.execute(
                (self._BIN_SELECT + " WHERE b.bin_id = %s").encode(), (bin_id,)
            ).fetchone()
        if row is None:
            raise BinNotFoundError(bin_id)
        return row

    # -- readings ----------------------------------------------------------------------

    def raw_readings(
        self, bin_id: str, start: datetime, end: datetime, *, after: datetime | None, limit: int
    ) -> list[ReadingRow]:
        """Readings with start <= ts < end (and ts > after), oldest first."""
        with self._pool.connection() as conn:
            self._require_bin(conn, bin_id)
            with conn.cursor(row_factory=class_row(ReadingRow)) as cur:
                return cur.execute(
                    """
                    SELECT ts, fill_pct, temperature_c, battery_pct, tilt, fault
                    FROM bin_readings
                    WHERE bin_id = %(bin_id)s AND ts >= %(start)s AND ts < %(end)s
                      AND (%(after)s::timestamptz IS NULL OR ts > %(after)s::timestamptz)
                    ORDER BY ts
                    LIMIT %(limit)s
                    """,
                    {"bin_id": bin_id, "start": start, "end": end, "after": after, "limit": limit},
                ).fetchall()

    def bucketed_readings(
        self, bin_id: str, start: datetime, end: datetime, bucket: Bucket
    ) -> list[FillBucketRow]:
        """Average (to 0.01), minimum and maximum fill per bucket of the readings in [start, end).

        Computed from the raw readings rather than the `bin_fill_hourly` view: in plain
        mode the view is a rollup refreshed periodically and may lag behind the readings.
        """
        query = sql.SQL(
            """
            SELECT {expr} AS bucket_start,
                   round(avg(fill_pct)::numeric, 2)::float8 AS avg_fill_pct,
                   min(fill_pct) AS min_fill_pct, max(fill_pct) AS max_fill_pct,
                   count(*) AS readings
            FROM bin_readings
            WHERE bin_id = %(bin_id)s AND ts >= %(start)s AND ts < %(end)s
            GROUP BY 1
            ORDER BY 1
            """
        ).format(expr=_BUCKET_EXPR[bucket])
        with self._pool.connection() as conn:
            self._require_bin(conn, bin_id)
            with conn.cursor(row_factory=class_row(FillBucketRow)) as cur:
                return cur.execute(
                    query, {"bin_id": bin_id, "start": start, "end": end}
                ).fetchall()

    @staticmethod
    def _require_bin(conn: psycopg.Connection[TupleRow], bin_id: str) -> None:
        if conn.execute("SELECT 1 FROM bins WHERE bin_id = %s", (bin_id,)).fetchone() is None:
            raise BinNotFoundError(bin_id)

    # -- devices -----------------------------------------------------------------------

    def list_devices(
        self,
        *,
        kind: str | None,
        state: str | None,
        stale_after: timedelta,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[DeviceRow]:
        """Devices in (kind, device_id) order with their effective state.

        A device is offline when its status topic says so or when nothing was heard from it
        (message or status) for longer than `stale_after`; unknown when never heard from.
        """
        where: list[str] = []
        params: dict[str, Any] = {"stale": stale_after, "limit": limit}
        if kind is not None:
            where.append("kind = %(kind)s")
            params["kind"] = kind
        if state is not None:
            where.append("state = %(state)s")
            params["state"] = state
        if after is not None:
            where.append("(kind, device_id) > (%(after_kind)s, %(after_id)s)")
            params.update(after_kind=after[0], after_id=after[1])
        query = """
            SELECT * FROM (
                SELECT d.kind, d.device_id, d.entity_id,
                       CASE
                           WHEN s.state = 'offline' THEN 'offline'
                           WHEN GREATEST(s.last_seen, s.state_ts) IS NULL THEN 'unknown'
                           WHEN GREATEST(s.last_seen, s.state_ts) < now() - %(stale)s::interval
                               THEN 'offline'
                           ELSE 'online'
                       END AS state,
                       s.state AS reported_state, s.state_ts, s.last_seen
                FROM devices d
                LEFT JOIN device_status s ON s.kind = d.kind AND s.device_id = d.device_id
            ) dev
        """
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY kind, device_id LIMIT %(limit)s"
        with self._pool.connection() as conn, conn.cursor(row_factory=class_row(DeviceRow)) as cur:
            return cur.execute(query.encode(), params).fetchall()

    # -- stats -------------------------------------------------------------------------

    def stats(self) -> Stats:
        """Counts for the demo; large time-series tables are estimated, not scanned."""
        with self._pool.connection() as conn:
            mode = storage_mode(conn)
            bins = _scalar(conn, "SELECT count(*) FROM bins")
            devices = _scalar(conn, "SELECT count(*) FROM devices")
            tables = {name: _count_table(conn, name, mode) for name in _COUNTED_TABLES}
            dead = {
                str(reason): int(n)
                for reason, n in conn.execute(
                    "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason"
                ).fetchall()
            }
        return Stats(bins=bins, devices=devices, tables=tables, dead_letters=dead)


def _as_real(value: float) -> float:
    """`value` rounded to single precision (PostgreSQL's real); what is too small for it
    becomes 0.0, which the server's float8-to-real cast would refuse as an underflow."""
    rounded: float = struct.unpack("f", struct.pack("f", value))[0]
    return rounded


def _scalar(conn: psycopg.Connection[TupleRow], query: str, params: tuple[Any, ...] = ()) -> int:
    row = conn.execute(query.encode(), params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _count_table(
    conn: psycopg.Connection[TupleRow], table: str, mode: StorageMode | None
) -> TableCount:
    if mode is StorageMode.TIMESCALE:
        estimate = _scalar(conn, "SELECT approximate_row_count(%s::regclass)", (table,))
    else:
        estimate = _scalar(
            conn, "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", (table,)
        )
    if estimate >= EXACT_COUNT_LIMIT:
        return TableCount(count=estimate, exact=False)
    # Small, or never analysed (estimate -1): an exact count is cheap enough.
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
    row = conn.execute(query).fetchone()
    return TableCount(count=int(row[0]) if row else 0, exact=True)
