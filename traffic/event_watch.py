"""Watch the folders controllers upload their event logs to, and import each new file once.

Every `interval_s` the folders are listed (not their subfolders): `*.csv` and `*.csv.gz`,
names starting with a dot left out (uploads in progress under a temporary name). A file
is imported once it has stopped growing: the same size and modification time on two
polls in a row. Files already imported (the sha256 of their content in
`signal_event_imports`) are recognised and skipped; a file is looked at again only when
its size or time changes. An upload that stalls for longer than an interval is imported
in two parts: the first part's cut last line is dead-lettered, the second import stores
only the rows the first did not (primary key), so nothing is stored twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from .event_import import EventLogError, FileReport, ImportOptions, Progress, import_file

__all__ = ["WatchState", "candidates", "poll_once", "watch"]

logger = logging.getLogger(__name__)

_SUFFIXES = (".csv", ".csv.gz")

Stamp = tuple[int, int]  # size, modification time (ns)


def candidates(folders: Sequence[Path]) -> list[Path]:
    """The event log files in the folders, by name."""
    out = []
    for folder in folders:
        try:
            entries = list(folder.iterdir())
        except FileNotFoundError:
            logger.warning("watch: folder %s does not exist", folder)
            continue
        out += [p for p in entries
                if p.name.lower().endswith(_SUFFIXES) and not p.name.startswith(".")
                and p.is_file()]
    return sorted(out, key=lambda p: (p.name, str(p)))


@dataclass(slots=True)
class WatchState:
    pending: dict[Path, Stamp] = field(default_factory=dict)  # seen once with this stamp
    done: dict[Path, Stamp] = field(default_factory=dict)  # imported, skipped or failed
    failed: int = 0


def poll_once(
    conn: psycopg.Connection[Any], folders: Sequence[Path], state: WatchState,
    options: ImportOptions, *, on_report: Callable[[FileReport], None],
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """One look at the folders: import the files that stopped growing. Returns how many
    files were handed to the import (imported or already imported)."""
    handled = 0
    present = set()
    for path in candidates(folders):
        if stop is not None and stop.is_set():
            break
        present.add(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        stamp = (st.st_size, st.st_mtime_ns)
        if state.done.get(path) == stamp:
            continue
        if state.pending.get(path) != stamp:
            state.pending[path] = stamp  # new or still growing: wait for the next poll
            continue
        del state.pending[path]
        try:
            report = import_file(conn, path, options, on_progress=on_progress)
        except EventLogError as exc:
            logger.error("watch: %s", exc)
            state.failed += 1
            state.done[path] = stamp  # not again until it changes
            continue
        state.done[path] = stamp
        handled += 1
        on_report(report)
    for gone in (set(state.pending) | set(state.done)) - present:
        state.pending.pop(gone, None)
        state.done.pop(gone, None)
    return handled


def watch(
    database_url: str, folders: Sequence[Path], options: ImportOptions, interval_s: float,
    *, stop: threading.Event, on_report: Callable[[FileReport], None],
    on_progress: Callable[[Progress], None] | None = None, max_polls: int | None = None,
) -> WatchState:
    """Poll the folders every `interval_s` seconds until `stop` is set (or `max_polls`).
    A database failure is logged and the poll retried at the next tick."""
    from cityops.ingest.db import connect

    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    state = WatchState()
    conn: psycopg.Connection[Any] | None = None
    polls = 0
    logger.info("watching %s every %g s", ", ".join(map(str, folders)), interval_s)
    try:
        while not stop.is_set():
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = connect(database_url, autocommit=True,
                                   application_name="cityops-import-events")
                poll_once(conn, folders, state, options, on_report=on_report,
                          on_progress=on_progress, stop=stop)
            except psycopg.Error as exc:
                logger.warning("watch: database failed, retrying in %g s: %s", interval_s, exc)
                if conn is not None:
                    conn.close()
                conn = None
            polls += 1
            if max_polls is not None and polls >= max_polls:
                break
            stop.wait(interval_s)
    finally:
        if conn is not None:
            conn.close()
    return state
