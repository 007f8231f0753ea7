"""Write a batch of decoded messages and dead letters to PostgreSQL in one transaction.

Rows are COPYed into temporary staging tables and merged with `INSERT ... SELECT ... ON
CONFLICT DO NOTHING` on each table's natural key, so a redelivered message never adds a
row. Latest state is upserted only when newer. The caller acknowledges the MQTT messages
only after `write()` returned, i.e. after COMMIT.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from cityops.ingest.contract import (
    BinTelemetry,
    DeviceStatus,
    SignalEvents,
    TruckEvent,
    TruckTelemetry,
)
from cityops.ingest.decode import Decoded
from cityops.ingest.lorawan_readings import LoraSensor

__all__ = ["DeadLetter", "WriteResult", "Writer", "is_poison", "rows_for"]

logger = logging.getLogger(__name__)

_MAX_STORED_PAYLOAD = 256 * 1024

# SQLSTATE classes that a message's own data causes: data exception (22: NUL in text, a value
# out of a type's range), integrity constraint violation (23), program limit exceeded (54: a
# value too large for an index row). Every other failure (connection, serialization, disk,
# a missing table) is the database's, not the message's, and is retried.
_POISON_CLASSES = frozenset({"22", "23", "54"})
_UNSTORABLE_RE = re.compile("[\x00\ud800-\udfff]")


def is_poison(exc: psycopg.Error) -> bool:
    """True when the database (or psycopg on its behalf) refused a write for the data in it:
    retrying the same rows cannot succeed, so the messages behind them must be found."""
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return True  # also psycopg's own refusals (NUL in text), which carry no SQLSTATE
    return exc.sqlstate is not None and exc.sqlstate[:2] in _POISON_CLASSES


def _storable(text: str) -> str:
    """Text for a dead letter's topic, reason or detail, which must never be refused: NUL
    and lone surrogates (which PostgreSQL's text cannot hold) become U+FFFD."""
    return _UNSTORABLE_RE.sub("\ufffd", text)


# staging table -> (target table, columns)
_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "bin_readings": (
        "bin_readings",
        ("bin_id", "ts", "sensor_id", "fill_pct", "temperature_c", "battery_pct", "tilt", "fault"),
    ),
    "signal_events": ("signal_events", ("controller_id", "ts", "code", "param")),
    "truck_positions": (
        "truck_positions",
        ("truck_id", "ts", "lat", "lon", "speed_kmh", "heading_deg", "load_l", "route_version"),
    ),
    "truck_events": (
        "truck_events",
        ("truck_id", "ts", "kind", "bin_id", "route_version", "reason", "volume_l"),
    ),
    "device_seen": ("device_status", ("kind", "device_id", "state", "state_ts", "last_seen")),
    "lorawan_frames": (
        "lorawan_frames",
        ("dev_eui", "f_cnt", "ts", "bin_id", "network", "gateways", "payload_sha256"),
    ),
}

#: Staging tables COPYed in PostgreSQL's binary format: formatting a row as text costs about
#: 6 µs in psycopg, in binary under 1 µs (docs/performance.md). Binary COPY does not check
#: ranges (a float beyond `real` would become infinity, an int beyond `smallint` would wrap),
#: so these stage their `real` columns as `double precision` and the merge casts them as
#: text COPY did: out of range is refused (SQLSTATE 22003, poison) there. Their integer
#: columns hold only what the contract bounds (event codes 0-255); the other tables, with
#: unbounded integers, stay in text.
_BINARY_STAGES = frozenset({"bin_readings", "signal_events", "device_seen"})

#: A LoRaWAN frame seen before with the same counter and payload a few minutes apart
#: (another gateway's copy, a network server's redelivery after its restart) is a duplicate:
#: its reading and frame leave the stage before the merge. After a rejoin the counter starts
#: again: a frame with a reused counter but another payload is new (the same measurement
#: repeated within minutes of a rejoin is the one thing taken for a copy). Exact
#: redeliveries (same time) are merged away by the primary keys.
_DEDUP_WINDOW = "5 minutes"
_DEDUP_SQL = (
    f"""
    INSERT INTO dup_frames
    SELECT f.dev_eui, f.ts FROM stage_lorawan_frames f
    WHERE EXISTS (
        SELECT 1 FROM lorawan_frames o
        WHERE o.dev_eui = f.dev_eui AND o.f_cnt = f.f_cnt AND o.ts <> f.ts
          AND o.payload_sha256 = f.payload_sha256
          AND o.ts BETWEEN f.ts - interval '{_DEDUP_WINDOW}' AND f.ts + interval '{_DEDUP_WINDOW}');
    DELETE FROM stage_bin_readings r USING dup_frames d
        WHERE r.sensor_id = d.dev_eui AND r.ts = d.ts;
    DELETE FROM stage_lorawan_frames f USING dup_frames d
        WHERE f.dev_eui = d.dev_eui AND f.ts = d.ts
    """
)

# ingested_at is the time of the merge, moments before COMMIT (not the transaction start).
_MERGE_SQL = {
    "bin_readings": """
        INSERT INTO bin_readings ({cols}, ingested_at) SELECT {cols}, clock_timestamp()
        FROM stage_bin_readings ON CONFLICT DO NOTHING""",
    "signal_events": """
        INSERT INTO signal_events ({cols}, ingested_at) SELECT {cols}, clock_timestamp()
        FROM stage_signal_events ON CONFLICT DO NOTHING""",
    "truck_positions": """
        INSERT INTO truck_positions ({cols}, ingested_at) SELECT {cols}, clock_timestamp()
        FROM stage_truck_positions ON CONFLICT DO NOTHING""",
    "truck_events": """
        INSERT INTO truck_events ({cols}, ingested_at) SELECT {cols}, clock_timestamp()
        FROM stage_truck_events ON CONFLICT DO NOTHING""",
    "lorawan_frames": """
        INSERT INTO lorawan_frames ({cols}, ingested_at) SELECT {cols}, clock_timestamp()
        FROM stage_lorawan_frames ON CONFLICT DO NOTHING""",
}

_STATE_SQL = (
    """
    INSERT INTO bin_state AS s (bin_id, ts, fill_pct, temperature_c, battery_pct, tilt, fault)
    SELECT DISTINCT ON (bin_id) bin_id, ts, fill_pct, temperature_c, battery_pct, tilt, fault
    FROM stage_bin_readings ORDER BY bin_id, ts DESC
    ON CONFLICT (bin_id) DO UPDATE SET
        ts = EXCLUDED.ts, fill_pct = EXCLUDED.fill_pct, temperature_c = EXCLUDED.temperature_c,
        battery_pct = EXCLUDED.battery_pct, tilt = EXCLUDED.tilt, fault = EXCLUDED.fault,
        updated_at = now()
    WHERE s.ts < EXCLUDED.ts
    """,
    """
    INSERT INTO truck_state AS s (truck_id, ts, lat, lon, speed_kmh, load_l, route_version)
    SELECT DISTINCT ON (truck_id) truck_id, ts, lat, lon, speed_kmh, load_l, route_version
    FROM stage_truck_positions ORDER BY truck_id, ts DESC
    ON CONFLICT (truck_id) DO UPDATE SET
        ts = EXCLUDED.ts, lat = EXCLUDED.lat, lon = EXCLUDED.lon, speed_kmh = EXCLUDED.speed_kmh,
        load_l = EXCLUDED.load_l, route_version = EXCLUDED.route_version, updated_at = now()
    WHERE s.ts < EXCLUDED.ts
    """,
    # last_seen only moves forward; an explicit status (state_ts) only replaces an older one.
    """
    INSERT INTO device_status AS s (kind, device_id, state, state_ts, last_seen)
    SELECT kind, device_id,
           (array_agg(state ORDER BY state_ts DESC NULLS LAST))[1],
           max(state_ts), max(last_seen)
    FROM stage_device_seen GROUP BY kind, device_id
    ON CONFLICT (kind, device_id) DO UPDATE SET
        last_seen = GREATEST(s.last_seen, EXCLUDED.last_seen),
        state = CASE WHEN EXCLUDED.state_ts IS NOT NULL
                      AND (s.state_ts IS NULL OR EXCLUDED.state_ts >= s.state_ts)
                     THEN EXCLUDED.state ELSE s.state END,
        state_ts = CASE WHEN EXCLUDED.state_ts IS NOT NULL
                         AND (s.state_ts IS NULL OR EXCLUDED.state_ts >= s.state_ts)
                        THEN EXCLUDED.state_ts ELSE s.state_ts END
    """,
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: str
    detail: str


@dataclass(slots=True)
class WriteResult:
    rows: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    duplicates: int = 0  # LoRaWAN frames already stored (another gateway, a redelivery)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def add(self, other: WriteResult) -> WriteResult:
        """The sum of two results (a batch written in parts)."""
        rows = dict(self.rows)
        for table, n in other.rows.items():
            rows[table] = rows.get(table, 0) + n
        return WriteResult(rows, self.dead_letters + other.dead_letters,
                           self.duplicates + other.duplicates)


Row = tuple[object, ...]


def rows_for(msg: Decoded, entity_id: str, received: datetime) -> dict[str, list[Row]]:
    """The staging rows for one decoded message; `entity_id` is the registry id (bin id)."""
    out: defaultdict[str, list[Row]] = defaultdict(list)
    _stage(out, msg, entity_id, received)
    return out


def _stage(out: defaultdict[str, list[Row]], msg: Decoded, entity_id: str,
           received: datetime) -> None:
    """Append the staging rows of one message to a batch's `out` (see `rows_for`)."""
    p = msg.payload
    seen_ts = received
    if isinstance(p, BinTelemetry):
        out["bin_readings"].append(
            (
                entity_id,
                p.ts,
                msg.device_id,
                p.fill_pct,
                p.temperature_c,
                p.battery_pct,
                p.tilt,
                p.fault,
            )
        )
    elif isinstance(p, SignalEvents):
        out["signal_events"].extend((entity_id, e.ts, e.code, e.param) for e in p.events)
    elif isinstance(p, TruckTelemetry):
        out["truck_positions"].append(
            (entity_id, p.ts, p.lat, p.lon, p.speed_kmh, p.heading_deg, p.load_l, p.route_version)
        )
    elif isinstance(p, TruckEvent):
        out["truck_events"].append(
            (entity_id, p.ts, p.kind, p.bin_id or "", p.route_version, p.reason, p.volume_l)
        )
    if isinstance(p, DeviceStatus):
        out["device_seen"].append(
            (msg.kind.value, msg.device_id, p.state, p.ts or received, received)
        )
    else:
        out["device_seen"].append((msg.kind.value, msg.device_id, None, None, seen_ts))
    if msg.frame is not None and isinstance(p, BinTelemetry):
        f = msg.frame
        out["lorawan_frames"].append(
            (f.dev_eui, f.f_cnt, p.ts, entity_id, f.network, f.gateways, f.payload_sha256)
        )


class Writer:
    """Owns one connection; `write()` stores a batch atomically or raises psycopg errors."""

    def __init__(self, url: str, application_name: str = "cityops-ingest") -> None:
        self._url = url
        self._app = application_name
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._types: dict[str, list[int]] = {}  # binary stage -> its COPY columns' type oids

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            conn = psycopg.connect(self._url, application_name=self._app, connect_timeout=5)
            conn.execute("SET TIME ZONE 'UTC'")
            conn.execute("SET synchronous_commit = on")
            for stage, (target, _cols) in _TABLES.items():
                conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS stage_{stage} "
                    f"(LIKE {target} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS dup_frames (dev_eui text, ts timestamptz) "
                "ON COMMIT DELETE ROWS"
            )
            self._types = {stage: self._binary_stage(conn, stage) for stage in _BINARY_STAGES}
            conn.commit()
            self._conn = conn
            logger.info("ingest writer connected to the database")
        return self._conn

    @staticmethod
    def _binary_stage(conn: psycopg.Connection[tuple[object, ...]], stage: str) -> list[int]:
        """Widen the stage's `real` columns to `double precision`; the type oids of its
        COPY columns, in their order."""
        table = f"stage_{stage}"
        rows = conn.execute(
            "SELECT attname, atttypid::int, atttypid = 'real'::regtype "
            "FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped",
            (table,),
        ).fetchall()
        columns: dict[str, int] = {}
        for name, oid, real in rows:
            if real:
                conn.execute(f"ALTER TABLE {table} ALTER COLUMN {name} TYPE double precision")
                oid = 701  # double precision: a built-in type, its oid is fixed
            columns[str(name)] = int(str(oid))
        return [columns[c] for c in _TABLES[stage][1]]

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):  # already broken; nothing to flush
                self._conn.close()
            self._conn = None

    def load_registry(self) -> dict[tuple[str, str], str]:
        """(kind, device id) -> registry id, for every device allowed to publish."""
        conn = self._connection()
        rows = conn.execute("SELECT kind, device_id, entity_id FROM devices").fetchall()
        conn.commit()
        return {(str(k), str(d)): str(e) for k, d, e in rows}

    def lookup_devices(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Registry ids of just these (kind, device id) pairs: devices registered since the
        last full load are found before a message of theirs is called unknown."""
        if not keys:
            return {}
        conn = self._connection()
        rows = conn.execute(
            "SELECT kind, device_id, entity_id FROM devices "
            "WHERE (kind, device_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([k for k, _ in keys], [d for _, d in keys]),
        ).fetchall()
        conn.commit()
        return {(str(k), str(d)): str(e) for k, d, e in rows}

    def lookup_lorawan(self, dev_euis: Sequence[str]) -> dict[str, LoraSensor]:
        """The active bins' LoRaWAN sensors with these DevEUIs (calibration included)."""
        if not dev_euis:
            return {}
        conn = self._connection()
        rows = conn.execute(
            "SELECT bin_id, dev_eui, sensor_model, empty_distance_mm, full_distance_mm "
            "FROM bins WHERE dev_eui = ANY(%s) AND sensor_model IS NOT NULL",
            (list(dev_euis),),
        ).fetchall()
        conn.commit()
        return {
            str(eui): LoraSensor(str(bin_id), str(eui), str(model), int(str(empty)), int(str(full)))
            for bin_id, eui, model, empty, full in rows
        }

    def write(
        self,
        decoded: Sequence[tuple[Decoded, str, datetime]],
        dead: Sequence[DeadLetter],
    ) -> WriteResult:
        """Store decoded messages (with registry id and receive time) and dead letters."""
        staged: defaultdict[str, list[Row]] = defaultdict(list)
        result = WriteResult()
        for msg, entity_id, received in decoded:
            _stage(staged, msg, entity_id, received)
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                for table, rows in staged.items():
                    cols = _TABLES[table][1]
                    types = self._types.get(table)
                    binary = " (FORMAT BINARY)" if types else ""
                    with cur.copy(
                        f"COPY stage_{table} ({', '.join(cols)}) FROM STDIN{binary}"
                    ) as copy:
                        if types:
                            copy.set_types(types)
                        for row in rows:
                            copy.write_row(row)
                if staged.get("lorawan_frames"):
                    for stmt in _DEDUP_SQL.split(";"):
                        cur.execute(stmt.encode())
                    cur.execute("SELECT count(*) FROM dup_frames")
                    counted = cur.fetchone()
                    result.duplicates = int(str(counted[0])) if counted else 0
                for table, stmt in _MERGE_SQL.items():
                    if staged.get(table):
                        cur.execute(stmt.format(cols=", ".join(_TABLES[table][1])).encode())
                        result.rows[table] = cur.rowcount
                for stmt in _STATE_SQL:
                    cur.execute(stmt.encode())
                for d in dead:
                    body = d.payload[:_MAX_STORED_PAYLOAD]
                    cur.execute(
                        "INSERT INTO dead_letters (topic, payload, payload_sha256, reason, detail)"
                        " VALUES (%s, %s, %s, %s, %s)"
                        " ON CONFLICT (topic, payload_sha256) DO NOTHING",
                        (
                            _storable(d.topic),
                            body,
                            hashlib.sha256(d.payload).digest(),
                            _storable(d.reason),
                            _storable(d.detail),
                        ),
                    )
                    result.dead_letters += cur.rowcount
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            except psycopg.Error:
                self.close()
            raise
        return result

    def record_metrics(
        self, instance: str, values: tuple[int, int, int, int, float | None, int]
    ) -> None:
        conn = self._connection()
        conn.execute(
            "INSERT INTO ingest_metrics (ts, instance, received, rows_written, dead_letters, "
            "batches, batch_latency_ms, backlog) VALUES (now(), %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (instance, *values),
        )
        conn.commit()

    def apply_retention(self, days: int) -> int:
        conn = self._connection()
        row = conn.execute(
            "SELECT cityops_apply_retention(make_interval(days => %s))", (days,)
        ).fetchone()
        conn.commit()
        deleted = int(str(row[0])) if row else 0
        # LoRaWAN frames serve deduplication (minutes) and diagnosis: a week is plenty
        frames = conn.execute(
            "DELETE FROM lorawan_frames WHERE ts < now() - interval '7 days'"
        ).rowcount
        conn.commit()
        deleted += frames
        if deleted:
            logger.info("retention: deleted %d raw rows older than %d days", deleted, days)
        return deleted
