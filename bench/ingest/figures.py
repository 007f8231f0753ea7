"""What is measured: rows and publish-to-row latency in SQL, CPU time per process from /proc."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

__all__ = [
    "CpuSnapshot",
    "RowStats",
    "all_processes",
    "backend_pid",
    "committed_by",
    "count_rows",
    "descendants",
    "inserted",
    "machine_busy",
    "others",
    "row_stats",
    "time_rollup_refresh",
    "wait_drained",
    "worst_seconds",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TICK = os.sysconf("SC_CLK_TCK")


def ms_to_dt(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


@dataclass(frozen=True, slots=True)
class RowStats:
    rows: int
    last_ingested: float  # epoch seconds of the last row's ingested_at
    p50_ms: float
    p99_ms: float
    max_ms: float


def row_stats(conn: psycopg.Connection[tuple[object, ...]], min_ms: int, max_ms: int) -> RowStats:
    """Rows of one phase (its `ts` range) and publish-to-row latency over all of them."""
    row = conn.execute(
        """
        SELECT count(*),
               extract(epoch FROM max(ingested_at))::float8,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY lat),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY lat),
               max(lat)
        FROM (SELECT ingested_at, extract(epoch FROM ingested_at - ts)::float8 * 1000 AS lat
              FROM bin_readings WHERE ts BETWEEN %s AND %s) r
        """,
        (ms_to_dt(min_ms), ms_to_dt(max_ms)),
    ).fetchone()
    assert row is not None
    n, last, p50, p99, worst = row
    return RowStats(
        rows=int(str(n)),
        last_ingested=float(str(last)) if last is not None else 0.0,
        p50_ms=float(str(p50)) if p50 is not None else float("nan"),
        p99_ms=float(str(p99)) if p99 is not None else float("nan"),
        max_ms=float(str(worst)) if worst is not None else float("nan"),
    )


def worst_seconds(
    conn: psycopg.Connection[tuple[object, ...]], min_ms: int, max_ms: int, top: int = 3
) -> list[tuple[float, float, int]]:
    """The seconds (by publish time) with the highest latency: (offset s, max ms, rows)."""
    rows = conn.execute(
        """
        SELECT extract(epoch FROM date_trunc('second', ts) - %s)::float8,
               max(extract(epoch FROM ingested_at - ts)::float8 * 1000), count(*)
        FROM bin_readings WHERE ts BETWEEN %s AND %s
        GROUP BY date_trunc('second', ts) ORDER BY 2 DESC LIMIT %s
        """,
        (ms_to_dt(min_ms), ms_to_dt(min_ms), ms_to_dt(max_ms), top),
    ).fetchall()
    return [(float(str(a)), float(str(b)), int(str(c))) for a, b, c in rows]


def time_rollup_refresh(
    conn: psycopg.Connection[tuple[object, ...]], since_ms: int
) -> tuple[float, int]:
    """Run the rollup repair function (`cityops_refresh_rollups`) once, timed. The write path
    no longer calls it: statement-level triggers fold inserted rows into the rollups.

    Returns (seconds, raw rows it aggregates: every reading since the start of the hour).
    """
    since = ms_to_dt(since_ms)
    row = conn.execute(
        "SELECT count(*) FROM bin_readings "
        "WHERE ts >= date_bin('1 hour', %s::timestamptz, TIMESTAMPTZ '2000-01-01 00:00+00')",
        (since,),
    ).fetchone()
    t = time.perf_counter()
    conn.execute("SELECT cityops_refresh_rollups(%s)", (since,))
    return time.perf_counter() - t, int(str(row[0])) if row else 0


def count_rows(conn: psycopg.Connection[tuple[object, ...]], min_ms: int, max_ms: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM bin_readings WHERE ts BETWEEN %s AND %s",
        (ms_to_dt(min_ms), ms_to_dt(max_ms)),
    ).fetchone()
    return int(str(row[0])) if row else 0


def committed_by(
    conn: psycopg.Connection[tuple[object, ...]], min_ms: int, max_ms: int, until: float
) -> int:
    """Rows of the phase whose merge happened at or before `until` (epoch seconds)."""
    row = conn.execute(
        "SELECT count(*) FROM bin_readings WHERE ts BETWEEN %s AND %s "
        "AND ingested_at <= to_timestamp(%s)",
        (ms_to_dt(min_ms), ms_to_dt(max_ms), until),
    ).fetchone()
    return int(str(row[0])) if row else 0


def inserted(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """Rows ever inserted into bin_readings, from the statistics (cheap, about 1 s behind).
    In TimescaleDB mode the rows live in the hypertable's chunks: their counts are added."""
    row = conn.execute(
        "SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables WHERE relid = "
        "'bin_readings'::regclass OR relid IN (SELECT inhrelid FROM pg_inherits "
        "WHERE inhparent = 'bin_readings'::regclass)"
    ).fetchone()
    return int(str(row[0])) if row else 0


def backend_pid(conn: psycopg.Connection[tuple[object, ...]], application_name: str) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = "
        "current_database() ORDER BY backend_start DESC LIMIT 1",
        (application_name,),
    ).fetchone()
    return int(str(row[0])) if row else None


def wait_drained(
    conn: psycopg.Connection[tuple[object, ...]],
    *,
    expected: int,
    min_ms: int,
    max_ms: int,
    inserted_before: int,
    stall_s: float,
    report: Callable[[int], None],
) -> int:
    """Wait until the phase's rows reach `expected` or stop growing for `stall_s`.

    The statistics counter is cheap but lags (up to 10 s for a backend that went idle), so
    the exact count runs when the counter looks complete, and every 2 s otherwise.
    """
    start = last_change = time.monotonic()
    last_exact = last_report = -1e9
    best = -1
    while True:
        now = time.monotonic()
        n = inserted(conn) - inserted_before
        if n >= expected or now - last_exact >= 2.0:
            n = count_rows(conn, min_ms, max_ms)
            last_exact = now
            if n >= expected:
                return n
        if n > best:
            best, last_change = n, now
        elif now - last_change > stall_s:
            return count_rows(conn, min_ms, max_ms)
        if now - last_report >= 2.0 and now - start >= 1.0:
            report(best)
            last_report = now
        time.sleep(0.25)


def _proc_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _postgres_pids() -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if Path(entry.path, "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _system_cpu() -> tuple[float, float, float]:
    """(busy, steal, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    steal = values[7]  # time the hypervisor gave to others
    total = sum(values[:8])  # without guest time, which is already in user
    return (total - idle - steal) / _TICK, steal / _TICK, total / _TICK


def machine_busy(seconds: float) -> float:
    """Share of the machine's CPUs busy over the next `seconds`, 0..1 (a quietness check)."""
    busy0, steal0, total0 = _system_cpu()
    time.sleep(seconds)
    busy1, steal1, total1 = _system_cpu()
    return (busy1 - busy0 + steal1 - steal0) / max(1e-9, total1 - total0)


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds so far of named processes, all postgres processes and the machine."""

    at: float
    named: dict[str, float]
    postgres: dict[int, float]
    busy: float
    steal: float
    total: float

    @classmethod
    def take(cls, pids: dict[str, list[int | None]]) -> CpuSnapshot:
        named = {}
        for name, group in pids.items():
            values = [v for v in (_proc_cpu(pid) for pid in group if pid) if v is not None]
            if values:
                named[name] = sum(values)
        pg = {}
        for pid in _postgres_pids():
            value = _proc_cpu(pid)
            if value is not None:
                pg[pid] = value
        busy, steal, total = _system_cpu()
        me = os.times()
        named["benchmark runner"] = me.user + me.system
        return cls(time.monotonic(), named, pg, busy, steal, total)

    def since(self, before: CpuSnapshot) -> dict[str, float]:
        """CPU seconds spent in between, per process; processes born in between count fully."""
        out = {name: v - before.named.get(name, 0.0) for name, v in self.named.items()}
        out["postgres (all processes)"] = sum(
            v - before.postgres.get(pid, 0.0) for pid, v in self.postgres.items()
        )
        out["machine busy"] = self.busy - before.busy
        out["steal"] = self.steal - before.steal
        out["machine capacity"] = self.total - before.total
        return out


def all_processes() -> dict[int, tuple[float, str]]:
    """CPU seconds and a short command line of every process (to say what else ran)."""
    out: dict[int, tuple[float, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        cpu = _proc_cpu(pid)
        if cpu is None:
            continue
        try:
            raw = Path(entry.path, "cmdline").read_bytes()
            comm = Path(entry.path, "comm").read_text().strip()
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace").strip() or f"[{comm}]"
        out[pid] = (cpu, comm if comm == "postgres" else cmd)
    return out


def others(
    before: dict[int, tuple[float, str]],
    after: dict[int, tuple[float, str]],
    ours: set[int],
    seconds: float,
    top: int = 6,
) -> list[tuple[float, str]]:
    """Processes not ours (and not postgres) that used CPU in between: (% of a core, command)."""
    rows = []
    for pid, (cpu, cmd) in after.items():
        if pid in ours or cmd == "postgres":
            continue
        used = cpu - before.get(pid, (0.0, cmd))[0]
        if used > 0.01 * seconds:
            rows.append((100.0 * used / seconds, cmd[:110]))
    rows.sort(reverse=True)
    return rows[:top]


def descendants(root: int) -> set[int]:
    """Every living process below `root`."""
    parent: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat[1])
    found: set[int] = set()
    for pid in parent:
        p = pid
        while p in parent and p not in (0, 1):
            p = parent[p]
            if p == root:
                found.add(pid)
                break
    return found
