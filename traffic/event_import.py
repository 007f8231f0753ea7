"""Import controller event log files into `signal_events`, then measure what they added.

One file, one transaction: its good rows are COPYed in batches into a staging table and
merged into `signal_events` with `ON CONFLICT DO NOTHING` on the table's primary key
(controller, ts, code, param), its bad lines go to `dead_letters` (topic
`import/atspm/<file name>`, the line as payload, a reason code, the line number in the
detail), and the file is recorded in `signal_event_imports` under the sha256 of its
content; all of it commits together or not at all. A file whose sha256 is recorded is
not read again ("already imported"); a different file holding events that are already
stored adds none of them twice (overlapping exports, a file renamed or recompressed).

After the commit the measures of every controller that got new events are recomputed
from its first new event on (`store.refresh(..., recompute_from=..., until_caught_up=True)`),
so an old file replaces the bins it belongs to and a new one adds the bins it completes.

The rows are those of the MQTT contract (`ingest/contract.py` `SignalEvent`): any code and
parameter 0..255 of a registered controller; events the measures cannot use are flagged by
`events.clean` when measured, as events from MQTT are.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import psycopg

from .errors import TrafficError
from .eventlog import (
    BadRow,
    EventLogParser,
    LocalTimes,
    Reason,
    Row,
    file_sha256,
    iter_lines,
    open_log,
    zone,
)
from .store import ControllerRun, StoreOptions, refresh

__all__ = [
    "DEAD_LETTER_TOPIC",
    "ControllerSpan",
    "EventLogError",
    "FileReport",
    "ImportOptions",
    "Progress",
    "import_file",
]

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]

#: Topic of a file's dead letters, by its name.
DEAD_LETTER_TOPIC = "import/atspm/{name}"
#: Line numbers named in the detail of a dead letter whose line occurs several times.
_LINES_NAMED = 10

_STAGE_SQL = (
    "CREATE TEMP TABLE event_import_stage (controller_id text NOT NULL, ts timestamptz NOT "
    "NULL, code smallint NOT NULL, param smallint NOT NULL) ON COMMIT DROP"
)
# ingested_at is the time of the merge, as the ingest's (the store's late-event detection)
_MERGE_SQL = """
    WITH ins AS (
        INSERT INTO signal_events (controller_id, ts, code, param, ingested_at)
        SELECT controller_id, ts, code, param, clock_timestamp() FROM event_import_stage
        ORDER BY controller_id, ts
        ON CONFLICT DO NOTHING
        RETURNING controller_id, ts)
    SELECT controller_id, count(*), min(ts), max(ts) FROM ins GROUP BY controller_id
"""


class EventLogError(TrafficError):
    """A file that cannot be read (missing, unreadable, a broken gzip stream)."""


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How files are imported; the defaults suit a city in Europe/Berlin."""

    time_zone: str = "Europe/Berlin"
    dry_run: bool = False
    #: rows per COPY into the staging table and merge
    batch_rows: int = 50_000
    #: event times further ahead of the wall clock are refused (as the ingest's limit)
    max_future: timedelta = timedelta(minutes=5)
    #: distinct bad lines stored as dead letters per file; the rest are only counted
    max_dead_letters: int = 1000
    #: recompute the measures after a file
    measure: bool = True
    store: StoreOptions = field(default_factory=StoreOptions)
    #: seconds between progress reports while a file is read
    progress_s: float = 5.0

    def __post_init__(self) -> None:
        zone(self.time_zone)  # ValueError for an unknown zone
        if self.batch_rows < 1 or self.max_dead_letters < 0 or self.progress_s < 0:
            raise ValueError("batch_rows must be positive, max_dead_letters and progress_s >= 0")


@dataclass(slots=True)
class ControllerSpan:
    """The new events of one controller in one file."""

    rows: int
    first: datetime
    last: datetime


@dataclass(frozen=True, slots=True)
class Progress:
    path: Path
    lines: int
    rows: int
    bytes_read: int
    bytes_total: int


@dataclass(slots=True)
class FileReport:
    """What importing one file did."""

    path: Path
    sha256: str
    status: Literal["imported", "already_imported", "dry_run"]
    rows: int = 0  # good rows in the file
    new_rows: int = 0  # of them not stored before (dry run: that would be stored)
    dead_rows: int = 0
    dead_letters: int = 0  # distinct dead letters written (identical lines once)
    reasons: Counter[str] = field(default_factory=Counter)
    first_event: datetime | None = None
    last_event: datetime | None = None
    controllers: dict[str, ControllerSpan] = field(default_factory=dict)  # with new rows
    seen: set[str] = field(default_factory=set)  # controllers with rows in the file
    ambiguous: int = 0  # rows in a repeated hour of a clock change
    nonexistent: int = 0  # rows in a skipped hour
    imported_at: datetime | None = None  # already_imported: when it was
    runs: list[ControllerRun] = field(default_factory=list)


@dataclass(slots=True)
class _Dead:
    reason: Reason
    detail: str
    lines: list[int]
    count: int = 1


class _DeadLetters:
    """The bad lines of a file, identical lines collected into one dead letter."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.by_payload: dict[bytes, _Dead] = {}
        self.reasons: Counter[str] = Counter()
        self.rows = 0

    def add(self, bad: BadRow) -> None:
        self.rows += 1
        self.reasons[bad.reason.value] += 1
        known = self.by_payload.get(bad.raw)
        if known is not None:
            known.count += 1
            if len(known.lines) < _LINES_NAMED:
                known.lines.append(bad.line)
        elif len(self.by_payload) < self._limit:
            self.by_payload[bad.raw] = _Dead(bad.reason, bad.detail, [bad.line])

    def write(self, conn: Connection, topic: str) -> int:
        written = 0
        with conn.cursor() as cur:
            for payload, d in self.by_payload.items():
                detail = f"line {d.lines[0]}: {d.detail}"
                if d.count > 1:
                    more = ", ".join(str(n) for n in d.lines[1:])
                    detail += f" (the same line {d.count} times: also line {more}"
                    detail += ", ...)" if d.count > len(d.lines) else ")"
                cur.execute(
                    "INSERT INTO dead_letters (topic, payload, payload_sha256, reason, detail)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (topic, payload_sha256) DO NOTHING",
                    (topic, payload, hashlib.sha256(payload).digest(), d.reason.value, detail),
                )
                written += cur.rowcount
        return written


def _topic(path: Path) -> str:
    name = "".join(c if c.isprintable() else "?" for c in path.name)
    return DEAD_LETTER_TOPIC.format(name=name)


def _already(conn: Connection, path: Path, digest: bytes) -> FileReport | None:
    row = conn.execute(
        "SELECT file_name, imported_at, rows, new_rows, dead_rows, first_event, last_event "
        "FROM signal_event_imports WHERE sha256 = %s", (digest,),
    ).fetchone()
    if row is None:
        return None
    logger.debug("%s: already imported as %s at %s (sha256 %s)", path.name, row[0], row[1],
                 digest.hex()[:12])
    return FileReport(path, digest.hex(), "already_imported", rows=row[2], new_rows=0,
                      dead_rows=row[4], first_event=row[5], last_event=row[6],
                      imported_at=row[1])


class _AlreadyImportedError(Exception):
    """Another import of the same file committed first (raised to roll back)."""


def import_file(
    conn: Connection, path: Path, options: ImportOptions = ImportOptions(), *,
    now: datetime | None = None, on_progress: Callable[[Progress], None] | None = None,
) -> FileReport:
    """Import one file (see the module docstring) over an autocommit connection.

    Raises `EventLogError` when the file cannot be read (nothing is stored then), psycopg
    errors when the database fails (nothing is stored either)."""
    try:
        digest = file_sha256(path)
    except (OSError, EOFError, ValueError) as exc:  # gzip.BadGzipFile is an OSError
        raise EventLogError(f"{path}: cannot read: {exc}") from exc
    done = _already(conn, path, digest)
    if done is not None:
        return done
    known = {str(r[0]) for r in conn.execute("SELECT controller_id FROM signal_controllers")}
    report = FileReport(path, digest.hex(), "dry_run" if options.dry_run else "imported")
    try:
        with conn.transaction(force_rollback=options.dry_run):
            _import(conn, path, digest, known, options, report,
                    now or datetime.now(UTC), on_progress)
    except _AlreadyImportedError:
        done = _already(conn, path, digest)
        assert done is not None
        return done
    if options.measure and not options.dry_run:
        for cid, span in sorted(report.controllers.items()):
            report.runs += refresh(conn, options.store, controllers=[cid],
                                   recompute_from=span.first, until_caught_up=True)
    return report


def _import(
    conn: Connection, path: Path, digest: bytes, known: set[str], options: ImportOptions,
    report: FileReport, now: datetime, on_progress: Callable[[Progress], None] | None,
) -> None:
    claimed = conn.execute(
        "INSERT INTO signal_event_imports (sha256, file_name, time_zone) VALUES (%s, %s, %s) "
        "ON CONFLICT (sha256) DO NOTHING", (digest, path.name, options.time_zone),
    )
    if claimed.rowcount == 0:  # a concurrent import of the same file won
        raise _AlreadyImportedError
    conn.execute(_STAGE_SQL)
    times = LocalTimes(zone(options.time_zone))
    parser = EventLogParser(times, now=now, max_future=options.max_future)
    dead = _DeadLetters(options.max_dead_letters)
    batch: list[Row] = []
    try:
        stream, raw = open_log(path)
    except OSError as exc:
        raise EventLogError(f"{path}: cannot read: {exc}") from exc
    total = path.stat().st_size
    last_report = time.monotonic()
    lines = 0
    reported = False  # a long file: progress is shown, its end too
    with raw, stream:
        try:
            for lines, line in iter_lines(stream):
                parsed = parser.parse(lines, line)
                if parsed is None:
                    continue
                if isinstance(parsed, Row) and parsed.controller_id not in known:
                    parsed = BadRow(lines, line, Reason.UNKNOWN_DEVICE,
                                    f"no signal controller {parsed.controller_id!r} in the "
                                    "registry (signal_controllers)")
                if isinstance(parsed, BadRow):
                    dead.add(parsed)
                    continue
                batch.append(parsed)
                if len(batch) >= options.batch_rows:
                    _merge(conn, batch, report)
                    batch.clear()
                    if on_progress and time.monotonic() - last_report >= options.progress_s:
                        last_report, reported = time.monotonic(), True
                        on_progress(Progress(path, lines, report.rows, raw.tell(), total))
        except (OSError, EOFError, ValueError) as exc:  # a gzip stream broken mid-way
            raise EventLogError(f"{path}: cannot read after line {lines}: {exc}") from exc
    _merge(conn, batch, report)
    report.dead_rows, report.reasons = dead.rows, dead.reasons
    report.dead_letters = dead.write(conn, _topic(path))
    report.ambiguous, report.nonexistent = times.ambiguous, times.nonexistent
    conn.execute(
        "UPDATE signal_event_imports SET rows = %s, new_rows = %s, dead_rows = %s, "
        "first_event = %s, last_event = %s, controllers = %s, imported_at = now() "
        "WHERE sha256 = %s",
        (report.rows, report.new_rows, report.dead_rows, report.first_event,
         report.last_event, sorted(report.seen), digest),
    )
    if on_progress and reported:
        on_progress(Progress(path, lines, report.rows, total, total))


def _merge(conn: Connection, rows: Iterable[Row], report: FileReport) -> None:
    """COPY one batch into the staging table and merge the rows new to signal_events."""
    n = 0
    with conn.cursor() as cur:
        with cur.copy("COPY event_import_stage (controller_id, ts, code, param) FROM STDIN"
                      ) as copy:
            for r in rows:
                copy.write_row((r.controller_id, r.ts, r.code, r.param))
                n += 1
                report.seen.add(r.controller_id)
                if report.first_event is None or r.ts < report.first_event:
                    report.first_event = r.ts
                if report.last_event is None or r.ts > report.last_event:
                    report.last_event = r.ts
        if n == 0:
            return
        report.rows += n
        for cid, count, first, last in cur.execute(_MERGE_SQL).fetchall():
            span = report.controllers.get(cid)
            if span is None:
                report.controllers[cid] = ControllerSpan(count, first, last)
            else:
                span.rows += count
                span.first, span.last = min(span.first, first), max(span.last, last)
            report.new_rows += count
        cur.execute("TRUNCATE event_import_stage")
