"""``cityops traffic import-events`` and ``cityops traffic follow-log``: controller event
log files into the platform (docs/traffic.md, "Controller event logs").

``import-events PATH...`` imports ATSPM-style CSV files (or every ``*.csv``/``*.csv.gz``
of a folder) into `signal_events` and recomputes the measures of the period they cover;
``--watch`` keeps polling the folders for new uploads. ``follow-log FILE --controller ID``
publishes the new rows of a growing log over MQTT. Exit 0 on success (bad lines are
dead-lettered, not failures), 1 when a file could not be read or the database failed,
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .measures import DEFAULT_SPEED_KMH

if TYPE_CHECKING:
    from .event_import import FileReport, Progress

__all__ = ["format_report", "register"]

Subparsers = Any  # argparse's _SubParsersAction, private in typeshed's eyes


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def register(traffic_sub: Subparsers) -> None:
    p = traffic_sub.add_parser(
        "import-events", help="import controller event log files (ATSPM CSV) and measure them",
        description="Import ATSPM-style high-resolution event logs (SignalID,Timestamp,"
        "EventCode,EventParam; header optional; .csv or .csv.gz; local time without offset) "
        "into signal_events, one transaction per file; bad lines and unknown controllers are "
        "dead-lettered; a file already imported (sha256) stores nothing. Then the measures "
        "of the imported period are recomputed. A PATH that is a folder means its *.csv and "
        "*.csv.gz files.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    p.add_argument("--watch", action="store_true",
                   help="keep polling the folders; import each new file once it stopped "
                   "growing; stop with Ctrl-C or SIGTERM")
    p.add_argument("--interval", type=_positive, default=30.0, metavar="S",
                   help="seconds between polls with --watch (default 30)")
    p.add_argument("--timezone", default="Europe/Berlin", metavar="TZ",
                   help="the controllers' local time zone, for timestamps without an offset "
                   "(default Europe/Berlin)")
    p.add_argument("--dry-run", action="store_true",
                   help="read, check and merge each file in a transaction that is rolled back: "
                   "the counts, nothing stored")
    p.add_argument("--speed-kmh", type=_positive, default=DEFAULT_SPEED_KMH,
                   help=f"approach speed of the measures (default {DEFAULT_SPEED_KMH:g})")
    p.set_defaults(func=_import_events)

    p = traffic_sub.add_parser(
        "follow-log", help="publish the new rows of a controller's growing event log over MQTT",
        description="Follow one controller's event log CSV as it grows (like tail -F: "
        "truncation and rotation handled) and publish its new rows as SignalEvents on the "
        "controller's events topic (QoS 1). A position file lets a restart go on where it "
        "stopped; the ingest stores a republished batch once.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--controller", required=True, metavar="ID",
                   help="the controller (registry id); rows of other SignalIDs are skipped")
    p.add_argument("--timezone", default="Europe/Berlin", metavar="TZ",
                   help="the controller's local time zone (default Europe/Berlin)")
    p.add_argument("--position-file", type=Path, metavar="P",
                   help="default: FILE.<controller>.pos next to the log")
    p.add_argument("--from-start", action="store_true",
                   help="without a position, publish the whole file (default: from its end)")
    p.add_argument("--interval", type=_positive, default=0.5, metavar="S",
                   help="seconds between looks at the file (default 0.5)")
    p.set_defaults(func=_follow_log)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    return stop


def _utc(ts: datetime | None) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-5] + "Z" if ts else "-"


def format_report(report: FileReport) -> str:
    """One line per file (`event_import.FileReport`), plus one per measured controller."""
    name = report.path.name
    if report.status == "already_imported":
        when = f"{report.imported_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}" \
            if report.imported_at else "-"
        return (f"{name}: already imported at {when} (sha256 "
                f"{report.sha256[:12]}), nothing stored")
    verb = "would import" if report.status == "dry_run" else "imported"
    dead = ""
    if report.dead_rows:
        reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(report.reasons.items()))
        dead = f", {report.dead_rows:,} dead-lettered ({reasons})"
    text = (f"{name}: {verb} {report.rows:,} rows ({report.new_rows:,} new, "
            f"{report.rows - report.new_rows:,} already stored){dead}, events "
            f"{_utc(report.first_event)}..{_utc(report.last_event)}")
    if report.ambiguous or report.nonexistent:
        text += (f"; clock change: {report.ambiguous} rows in a repeated hour, "
                 f"{report.nonexistent} in a skipped hour")
    for r in report.runs:
        until = _utc(r.computed_until)
        text += (f"\n  measures {r.controller_id}: {r.new_bins} new and {r.late_bins} "
                 f"recomputed bins, computed until {until}")
    return text


def _progress(p: Progress) -> None:
    pct = f" ({100 * p.bytes_read / p.bytes_total:.0f} %)" if p.bytes_total else ""
    print(f"{p.path.name}: {p.lines:,} lines, {p.rows:,} rows{pct}", file=sys.stderr,
          flush=True)


def _expand(paths: list[Path]) -> list[Path]:
    from .event_watch import candidates

    out: list[Path] = []
    for path in paths:
        out += candidates([path]) if path.is_dir() else [path]
    return out


def _import_events(args: argparse.Namespace) -> int:
    import psycopg

    from cityops.ingest.config import load_settings
    from cityops.ingest.db import connect

    from .event_import import EventLogError, ImportOptions, import_file
    from .event_watch import watch
    from .store import StoreOptions

    cmd = "cityops traffic import-events"
    try:
        options = ImportOptions(time_zone=args.timezone, dry_run=args.dry_run,
                                store=StoreOptions(speed_kmh=args.speed_kmh))
    except ValueError as exc:
        print(f"{cmd}: {exc}", file=sys.stderr)
        return 2
    missing = [p for p in args.paths if not p.exists()]
    if args.watch:
        missing += [p for p in args.paths if p.exists() and not p.is_dir()]
    if missing:
        what = "folder" if args.watch else "file or folder"
        print(f"{cmd}: no such {what}: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    settings = load_settings()

    def report(r: FileReport) -> None:
        print(format_report(r), flush=True)

    if args.watch:
        stop = _stop_on_signals()
        state = watch(settings.database_url, args.paths, options, args.interval, stop=stop,
                      on_report=report, on_progress=_progress)
        return 1 if state.failed else 0
    failed = 0
    try:
        with connect(settings.database_url, autocommit=True,
                     application_name="cityops-import-events") as conn:
            for path in _expand(args.paths):
                try:
                    report(import_file(conn, path, options, on_progress=_progress))
                except EventLogError as exc:
                    print(f"{cmd}: {exc}", file=sys.stderr)
                    failed += 1
    except psycopg.Error as exc:
        print(f"{cmd}: database: {exc}", file=sys.stderr)
        return 1
    return 1 if failed else 0


def _follow_log(args: argparse.Namespace) -> int:
    from cityops.ingest.config import load_settings

    from .follow_log import FollowOptions, follow

    try:
        options = FollowOptions(args.controller, time_zone=args.timezone,
                                position_file=args.position_file, from_start=args.from_start,
                                interval_s=args.interval)
    except ValueError as exc:
        print(f"cityops traffic follow-log: {exc}", file=sys.stderr)
        return 2
    follow(load_settings(), args.file, options, stop=_stop_on_signals())
    return 0
