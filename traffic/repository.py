"""SQL for the traffic measures: a controller's registry rows, its stored events, and the
stored measures (tables of migration 0006) that `cityops.traffic.store` writes and the
API and Grafana read."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.abc import Params
from psycopg.rows import class_row

from .errors import UnknownControllerError
from .events import (
    CONTROL_MODES,
    ControllerConfig,
    DetectorConfig,
    DetectorKind,
    Event,
    ModeChange,
    PhaseConfig,
)
from .measures import BIN_S, PhaseBin, PhaseMeasures

__all__ = [
    "ControllerRow",
    "HealthRow",
    "MeasureRow",
    "ModeRow",
    "Progress",
    "controller_ids",
    "event_span",
    "late_bins",
    "list_controllers",
    "load_config",
    "load_events",
    "load_health",
    "load_measures",
    "load_modes",
    "load_progress",
    "save_health",
    "save_measures",
    "save_modes",
    "save_progress",
]

Connection = psycopg.Connection[Any]
_Row = TypeVar("_Row")


def _fetch(
    conn: Connection, row: type[_Row], query: str | sql.Composed, params: Params | None = None
) -> list[_Row]:
    """The rows of `query` read straight into the dataclass `row` (its fields name the
    columns), for the read side of the API and Grafana."""
    with conn.cursor(row_factory=class_row(row)) as cur:
        return cur.execute(query, params).fetchall()


def load_config(conn: Connection, controller_id: str) -> ControllerConfig:
    """The controller's phases and detectors, or raise `UnknownControllerError`."""
    if (
        conn.execute(
            "SELECT 1 FROM signal_controllers WHERE controller_id = %s", (controller_id,)
        ).fetchone()
        is None
    ):
        raise UnknownControllerError(controller_id)
    phases = [
        PhaseConfig(
            int(r[0]),
            int(r[1]),
            str(r[2]),
            float(r[3]),
            float(r[4]),
            float(r[5]),
            float(r[6]),
            float(r[7]),
        )
        for r in conn.execute(
            "SELECT phase, seq, movement, min_green_s, max_green_s, fixed_green_s, yellow_s,"
            " red_clearance_s FROM signal_phases WHERE controller_id = %s ORDER BY seq, phase",
            (controller_id,),
        )
    ]
    detectors = [
        DetectorConfig(
            int(r[0]), int(r[1]), _kind(str(r[2])), None if r[3] is None else int(r[3]), float(r[4])
        )
        for r in conn.execute(
            "SELECT channel, phase, kind, lane, distance_m FROM signal_detectors"
            " WHERE controller_id = %s ORDER BY channel",
            (controller_id,),
        )
    ]
    return ControllerConfig.of(controller_id, phases, detectors)


def _kind(kind: str) -> DetectorKind:
    if kind == "stop_bar":
        return "stop_bar"
    if kind == "advance":
        return "advance"
    if kind == "count":
        return "count"
    if kind == "pedestrian":
        return "pedestrian"
    raise ValueError(f"unknown detector kind {kind!r}")


def load_events(
    conn: Connection, controller_id: str, start: datetime, end: datetime
) -> list[Event]:
    """The stored events in `[start, end)`, in time order (ties by code, then param)."""
    rows = conn.execute(
        "SELECT ts, code, param FROM signal_events WHERE controller_id = %s"
        " AND ts >= %s AND ts < %s ORDER BY ts, code, param",
        (controller_id, start, end),
    )
    return [Event(r[0].timestamp(), int(r[1]), int(r[2])) for r in rows]


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


# -- what the store needs ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """Bins before `computed_until` are stored; `checked_at` is when that was decided."""

    computed_until: datetime
    checked_at: datetime


def controller_ids(conn: Connection) -> list[str]:
    """Every registered controller, in id order."""
    return [
        str(r[0])
        for r in conn.execute("SELECT controller_id FROM signal_controllers ORDER BY controller_id")
    ]


def event_span(conn: Connection, controller_id: str) -> tuple[datetime, datetime] | None:
    """Time of the controller's first and newest stored event, None without events."""
    row = conn.execute(
        "SELECT (SELECT min(ts) FROM signal_events WHERE controller_id = %(c)s),"
        " (SELECT max(ts) FROM signal_events WHERE controller_id = %(c)s)",
        {"c": controller_id},
    ).fetchone()
    if row is None or row[0] is None or row[1] is None:
        return None
    return row[0], row[1]


def load_progress(conn: Connection, controller_id: str) -> Progress | None:
    row = conn.execute(
        "SELECT computed_until, checked_at FROM signal_measures_progress WHERE controller_id = %s",
        (controller_id,),
    ).fetchone()
    return None if row is None else Progress(row[0], row[1])


def save_progress(conn: Connection, controller_id: str, progress: Progress) -> None:
    conn.execute(
        "INSERT INTO signal_measures_progress (controller_id, computed_until, checked_at)"
        " VALUES (%s, %s, %s) ON CONFLICT (controller_id) DO UPDATE SET"
        " computed_until = EXCLUDED.computed_until, checked_at = EXCLUDED.checked_at,"
        " updated_at = now()",
        (controller_id, progress.computed_until, progress.checked_at),
    )


def late_bins(
    conn: Connection,
    controller_id: str,
    since: datetime,
    until: datetime,
    ingested_after: datetime,
    bin_s: float = BIN_S,
) -> list[datetime]:
    """Starts of the bins in `[since, until)` holding events ingested after `ingested_after`.

    Reads the controller's events of that range through the primary key (controller, ts).
    """
    rows = conn.execute(
        "SELECT DISTINCT date_bin(make_interval(secs => %(b)s), ts,"
        " TIMESTAMPTZ '2000-01-01 00:00+00') FROM signal_events"
        " WHERE controller_id = %(c)s AND ts >= %(s)s AND ts < %(u)s"
        " AND ingested_at >= %(i)s ORDER BY 1",
        {"b": bin_s, "c": controller_id, "s": since, "u": until, "i": ingested_after},
    )
    return [r[0] for r in rows]


_MEASURE_COLUMNS = tuple(f.name for f in fields(PhaseMeasures))


def save_measures(
    conn: Connection,
    controller_id: str,
    bins: Iterable[PhaseBin],
    flagged: dict[float, int],
) -> int:
    """Upsert the bins (key: controller, bin, phase); returns the rows written."""
    cols = ("controller_id", "bin_start", *_MEASURE_COLUMNS, "flagged_events")
    query = sql.SQL(
        "INSERT INTO signal_measures ({cols}) VALUES ({values})"
        " ON CONFLICT (controller_id, bin_start, phase) DO UPDATE SET {updates},"
        " computed_at = now()"
    ).format(
        cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
        values=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
        updates=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in cols[2:]
        ),
    )
    rows = [
        (
            controller_id,
            _utc(b.bin_start),
            *(getattr(b, c) for c in _MEASURE_COLUMNS),
            flagged.get(b.bin_start, 0),
        )
        for b in bins
    ]
    with conn.cursor() as cur:
        cur.executemany(query, rows)
    return len(rows)


@dataclass(frozen=True, slots=True)
class HealthRow:
    """A row of `signal_detector_health` (see migration 0006)."""

    controller_id: str
    bin_start: datetime
    channel: int
    phase: int
    kind: str
    actuations: int
    longest_on_s: float
    status: str


def save_health(conn: Connection, rows: Sequence[HealthRow]) -> int:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO signal_detector_health (controller_id, bin_start, channel, phase,"
            " kind, actuations, longest_on_s, status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (controller_id, bin_start, channel) DO UPDATE SET"
            " phase = EXCLUDED.phase, kind = EXCLUDED.kind, actuations = EXCLUDED.actuations,"
            " longest_on_s = EXCLUDED.longest_on_s, status = EXCLUDED.status,"
            " computed_at = now()",
            [tuple(asdict(r).values()) for r in rows],
        )
    return len(rows)


def save_modes(
    conn: Connection,
    controller_id: str,
    start: datetime,
    end: datetime,
    changes: Sequence[ModeChange],
) -> int:
    """Replace the controller's mode history in `[start, end)` with `changes`."""
    conn.execute(
        "DELETE FROM signal_mode_history WHERE controller_id = %s AND ts >= %s AND ts < %s",
        (controller_id, start, end),
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO signal_mode_history (controller_id, ts, pattern, mode)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (controller_id, ts) DO UPDATE SET"
            " pattern = EXCLUDED.pattern, mode = EXCLUDED.mode",
            [(controller_id, _utc(c.ts), c.pattern, c.mode) for c in changes],
        )
    return len(changes)


# -- what the API reads --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControllerRow:
    """A controller for the API: registry data, its live mode and its measures' progress.

    `pattern`/`mode_since`: its newest event 131 (the mode it reports now), None before
    the first; `mode` is the pattern's name (`events.CONTROL_MODES`, else `unknown`).
    """

    controller_id: str
    name: str
    lat: float
    lon: float
    cycle_s: float | None
    phases: list[int]
    detectors: int
    pattern: int | None
    mode_since: datetime | None
    computed_until: datetime | None

    @property
    def mode(self) -> str | None:
        return None if self.pattern is None else CONTROL_MODES.get(self.pattern, "unknown")


def list_controllers(conn: Connection) -> list[ControllerRow]:
    """Every controller with its phases, detector count, live mode and progress.

    The live mode is the controller's newest event 131 in `signal_events`: one backward
    scan of the primary key (controller, ts, code, param) from the newest event down to
    the measures' watermark, stopping at the first 131. Older 131 events are all in
    `signal_mode_history` (the measures store them for every range it computes), which
    answers when none is that recent; so the scan is bounded by the events since the
    watermark (minutes), not by how long the controller has kept its mode (months). Two
    131 in one tenth (older controllers logged that) read as the lower pattern, so
    adaptive control is never overstated.
    """
    return _fetch(
        conn,
        ControllerRow,
        """
            SELECT c.controller_id, c.name, ST_Y(c.geom) AS lat, ST_X(c.geom) AS lon,
                   c.cycle_s::float8 AS cycle_s,
                   coalesce((SELECT array_agg(p.phase::int ORDER BY p.seq, p.phase)
                             FROM signal_phases p WHERE p.controller_id = c.controller_id),
                            '{}') AS phases,
                   (SELECT count(*)::int FROM signal_detectors d
                     WHERE d.controller_id = c.controller_id) AS detectors,
                   coalesce(e.param, h.pattern)::int AS pattern,
                   coalesce(n.ts, h.ts) AS mode_since, g.computed_until
            FROM signal_controllers c
            LEFT JOIN signal_measures_progress g ON g.controller_id = c.controller_id
            LEFT JOIN LATERAL (SELECT se.ts FROM signal_events se
                               WHERE se.controller_id = c.controller_id AND se.code = 131
                                 AND se.ts >= coalesce(g.computed_until, '-infinity')
                               ORDER BY se.ts DESC LIMIT 1) n ON true
            LEFT JOIN LATERAL (SELECT min(se.param) AS param FROM signal_events se
                               WHERE se.controller_id = c.controller_id AND se.ts = n.ts
                                 AND se.code = 131) e ON true
            LEFT JOIN LATERAL (SELECT cm.ts, cm.pattern FROM signal_mode_history cm
                               WHERE cm.controller_id = c.controller_id AND n.ts IS NULL
                               ORDER BY cm.ts DESC LIMIT 1) h ON true
            ORDER BY c.controller_id
            """,
    )


@dataclass(frozen=True, slots=True)
class MeasureRow(PhaseMeasures):
    """A row of `signal_measures`: the measures with the controller, the bin's real time
    and the events kept out of them."""

    controller_id: str
    bin_start: datetime
    flagged_events: int

    def phase_bin(self) -> PhaseBin:
        """The pure measures' value this row stores."""
        values = {c: getattr(self, c) for c in _MEASURE_COLUMNS}
        return PhaseBin(bin_start=self.bin_start.timestamp(), **values)


def load_measures(
    conn: Connection,
    controller_id: str,
    start: datetime,
    end: datetime,
    phase: int | None = None,
    *,
    limit: int | None = None,
    after: tuple[datetime, int] | None = None,
) -> list[MeasureRow]:
    """Stored bins starting in `[start, end)`, by bin then phase; `after`: only those
    after that (bin_start, phase), for paging."""
    query = sql.SQL(
        "SELECT {cols} FROM signal_measures WHERE controller_id = %(c)s"
        " AND bin_start >= %(s)s AND bin_start < %(e)s"
        " AND (%(p)s::int IS NULL OR phase = %(p)s)"
        " AND (%(ab)s::timestamptz IS NULL OR (bin_start, phase) > (%(ab)s, %(ap)s))"
        " ORDER BY bin_start, phase LIMIT %(n)s"
    ).format(cols=sql.SQL(", ").join(sql.Identifier(f.name) for f in fields(MeasureRow)))
    params = {
        "c": controller_id,
        "s": start,
        "e": end,
        "p": phase,
        "n": limit,
        "ab": after[0] if after else None,
        "ap": after[1] if after else None,
    }
    return _fetch(conn, MeasureRow, query, params)


def load_health(
    conn: Connection,
    controller_id: str,
    start: datetime,
    end: datetime,
) -> list[HealthRow]:
    """Stored detector health of bins starting in `[start, end)`, by bin then channel."""
    return _fetch(
        conn,
        HealthRow,
        "SELECT controller_id, bin_start, channel, phase, kind, actuations,"
        " longest_on_s, status FROM signal_detector_health WHERE controller_id = %s"
        " AND bin_start >= %s AND bin_start < %s ORDER BY bin_start, channel",
        (controller_id, start, end),
    )


@dataclass(frozen=True, slots=True)
class ModeRow:
    ts: datetime
    pattern: int
    mode: str


def load_modes(
    conn: Connection,
    controller_id: str,
    start: datetime,
    end: datetime,
) -> list[ModeRow]:
    """Mode changes in `[start, end)`, led by the one in force at `start` (if any)."""
    return _fetch(
        conn,
        ModeRow,
        "(SELECT ts, pattern, mode FROM signal_mode_history WHERE controller_id = %(c)s"
        " AND ts < %(s)s ORDER BY ts DESC LIMIT 1) UNION ALL"
        " (SELECT ts, pattern, mode FROM signal_mode_history WHERE controller_id = %(c)s"
        " AND ts >= %(s)s AND ts < %(e)s ORDER BY ts) ORDER BY ts",
        {"c": controller_id, "s": start, "e": end},
    )
