"""What the soak checks after the run, in SQL over the soak's database: rows, lost and
duplicate rows, dead letters, commits per second (stalls, recovery after each fault) and
publish-to-row latency outside the fault windows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg

__all__ = [
    "TABLES",
    "Fault",
    "caught_up",
    "commits_per_second",
    "dead_letters",
    "duplicate_rows",
    "latency_by_second",
    "load_acked",
    "longest_stall",
    "lost",
    "p99_outside",
    "recovery_s",
    "row_counts",
    "rows_inserted",
]

Conn = psycopg.Connection[tuple[object, ...]]

#: kind of message -> (table, natural key); a signal batch's events are rows of its own
TABLES = {
    "bin": ("bin_readings", "bin_id, ts"),
    "signal": ("signal_events", "controller_id, ts, code, param"),
    "truck": ("truck_positions", "truck_id, ts"),
    "truck_event": ("truck_events", "truck_id, ts, kind, bin_id"),
}
_ALL_ROWS = " UNION ALL ".join(f"SELECT ts, ingested_at FROM {t}" for t, _ in TABLES.values())
_MS = "(timestamptz 'epoch' + a.ms * interval '1 millisecond')"


@dataclass(slots=True)
class Fault:
    name: str
    started: float  # epoch seconds
    ended: float = 0.0  # when the fault's action was over (broker up, cluster up, ingest started)
    note: str = ""
    recovered_s: float | None = None  # from `started` to full rate again
    caught_up: float | None = None  # epoch second from which messages were on time again


def _one(conn: Conn, query: str, params: tuple[object, ...] = ()) -> tuple[object, ...]:
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return tuple(row)


def rows_inserted(conn: Conn) -> int:
    """Rows ever inserted into the four tables (hypertable chunks included), from the
    statistics: cheap, a second or so behind."""
    names = [t for t, _ in TABLES.values()]
    row = _one(
        conn,
        "SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables "
        "WHERE relid = ANY(%s::regclass[]) OR relid IN "
        "(SELECT inhrelid FROM pg_inherits WHERE inhparent = ANY(%s::regclass[]))",
        (names, names),
    )
    return int(str(row[0]))


def row_counts(conn: Conn) -> dict[str, int]:
    return {kind: int(str(_one(conn, f"SELECT count(*) FROM {t}")[0]))
            for kind, (t, _) in TABLES.items()}


def duplicate_rows(conn: Conn) -> dict[str, int]:
    """Rows minus distinct natural keys, per kind (the primary keys should make it 0)."""
    return {
        kind: int(str(_one(conn, f"SELECT count(*) - (SELECT count(*) FROM "
                                 f"(SELECT DISTINCT {key} FROM {t}) d) FROM {t}")[0]))
        for kind, (t, key) in TABLES.items()
    }


def dead_letters(conn: Conn) -> dict[str, int]:
    rows = conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY 1 ORDER BY 2 DESC")
    return {str(r): int(str(n)) for r, n in rows}


def load_acked(conn: Conn, files: Iterable[Path]) -> int:
    """The publishers' acknowledged messages (kind, registry id, ts in ms, rows) as a table."""
    conn.execute("CREATE TABLE soak_acked (kind text, entity text, ms bigint, n int)")
    n = 0
    with conn.cursor() as cur, cur.copy("COPY soak_acked FROM STDIN") as copy:
        for path in files:
            with path.open("rb") as f:
                while block := f.read(1 << 20):
                    copy.write(block)
            n += 1
    conn.execute("CREATE INDEX ON soak_acked (kind)")
    conn.execute("ANALYZE soak_acked")
    return int(str(_one(conn, "SELECT count(*) FROM soak_acked")[0]))


def lost(conn: Conn) -> dict[str, tuple[int, int]]:
    """Per kind: (acknowledged messages with a row missing, rows missing)."""
    out: dict[str, tuple[int, int]] = {}
    for kind in ("bin", "truck", "truck_event"):
        table, key = TABLES[kind]
        ident = key.split(",")[0]
        n = int(str(_one(
            conn,
            f"SELECT count(*) FROM soak_acked a WHERE a.kind = %s AND NOT EXISTS "
            f"(SELECT 1 FROM {table} r WHERE r.{ident} = a.entity AND r.ts = {_MS})",
            (kind,),
        )[0]))
        out[kind] = (n, n)
    msgs, rows = _one(
        conn,
        f"""SELECT count(*), coalesce(sum(a.n - f.c), 0) FROM soak_acked a CROSS JOIN LATERAL
            (SELECT count(*) AS c FROM signal_events e WHERE e.controller_id = a.entity
             AND e.ts BETWEEN {_MS} AND {_MS} + (a.n - 1) * interval '1 millisecond') f
            WHERE a.kind = 'signal' AND f.c < a.n""",
    )
    out["signal"] = (int(str(msgs)), int(str(rows)))
    return out


def commits_per_second(conn: Conn) -> dict[int, int]:
    """Rows committed in each second (epoch second of `ingested_at`), all four tables."""
    rows = conn.execute(
        f"SELECT extract(epoch FROM date_trunc('second', ingested_at))::bigint, count(*) "
        f"FROM ({_ALL_ROWS}) x GROUP BY 1"
    )
    return {int(str(s)): int(str(n)) for s, n in rows}


def longest_stall(conn: Conn) -> tuple[float, float]:
    """The longest time without a commit between the first and the last: (seconds, epoch
    second it ended)."""
    gap, ended = _one(
        conn,
        f"""SELECT extract(epoch FROM t - prev)::float8, extract(epoch FROM t)::float8 FROM
            (SELECT t, lag(t) OVER (ORDER BY t) AS prev FROM
             (SELECT DISTINCT ingested_at AS t FROM ({_ALL_ROWS}) x) d) g
            WHERE prev IS NOT NULL ORDER BY t - prev DESC LIMIT 1""",
    )
    return (float(str(gap)), float(str(ended))) if gap is not None else (0.0, 0.0)


def recovery_s(per_second: dict[int, int], fault: Fault, full_rows_s: float,
               hold_s: int = 3, share: float = 0.9) -> float | None:
    """Seconds from the fault's start until rows were committed at `share` of the offered
    rate for `hold_s` whole seconds in a row, counted from the first whole second after the
    fault's action ended; None when that never happened."""
    if not per_second:
        return None
    first = int(fault.ended) + 1
    for s in range(first, max(per_second) - hold_s + 2):
        if all(per_second.get(s + k, 0) >= share * full_rows_s for k in range(hold_s)):
            return s - fault.started
    return None


def latency_by_second(conn: Conn) -> dict[int, float]:
    """p99 publish-to-row (ms) of the rows published in each second (epoch second of ts)."""
    rows = conn.execute(
        f"""SELECT extract(epoch FROM date_trunc('second', ts))::bigint,
                   percentile_cont(0.99) WITHIN GROUP
                   (ORDER BY extract(epoch FROM ingested_at - ts) * 1000)
            FROM ({_ALL_ROWS}) x GROUP BY 1"""
    )
    return {int(str(s)): float(str(p)) for s, p in rows}


def caught_up(by_second: dict[int, float], fault: Fault, limit_ms: float) -> float | None:
    """The first second (of publishing), from the fault's start on, whose rows had a p99 of
    at most `limit_ms`, and the following ones too for 3 s."""
    for s in sorted(by_second):
        if s >= int(fault.ended) and all(
            by_second.get(s + k, limit_ms + 1) <= limit_ms for k in range(3)
        ):
            return float(s)
    return None


def p99_outside(conn: Conn, windows: list[tuple[float, float]]) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, rows) of publish-to-row over the rows published outside `windows`
    (epoch seconds, start and end)."""
    cond = " AND ".join(
        f"NOT (ts >= to_timestamp({a:.3f}) AND ts < to_timestamp({b:.3f}))" for a, b in windows
    ) or "true"
    p50, p99, n = _one(
        conn,
        f"""SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lat),
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY lat), count(*)
            FROM (SELECT extract(epoch FROM ingested_at - ts)::float8 * 1000 AS lat
                  FROM ({_ALL_ROWS}) x WHERE {cond}) l""",
    )
    nan = float("nan")
    return (float(str(p50)) if p50 is not None else nan,
            float(str(p99)) if p99 is not None else nan, int(str(n)))
