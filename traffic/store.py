"""Compute the measures of complete 15-minute bins from the stored events and store them.

Per controller a watermark (`signal_measures_progress.computed_until`) says up to where
every bin is stored. Each run:

1. **Late events**: bins before the watermark (within `late_lookback_s`) that hold
   events ingested since the previous run are recomputed, so a late batch from a
   controller that was offline replaces the bins it belongs to.
2. **New bins**: from the watermark (or the controller's first event) up to the last bin
   that is *complete*, i.e. ends at least `context_s` before the controller's newest
   event (cycles straddle bin edges; the next bin's first events must have arrived). At
   most `max_span_s` per run, so a long backlog does not starve the other controllers.

A range of bins is computed from the events of the range widened by `context_s` after
and `health_window_s` before (cycles, pedestrian calls and the trailing health window),
cleaned with `events.clean`, by the pure functions of `measures`; the rows are upserted
(recomputing a bin replaces it) and the watermark moved in the same transaction.

Completeness follows the controller's own clock (its newest event), not the wall clock,
so a simulation that runs in the past or faster than real time is measured the same way;
a silent controller's bins stay open until it reports again.
"""

from __future__ import annotations

import bisect
import logging
import math
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from . import repository as repo
from .events import (
    DETECTOR_ON,
    PED_DETECTOR_ON,
    ControllerConfig,
    Event,
    clean,
    mode_changes,
)
from .measures import BIN_S, DEFAULT_SPEED_KMH, detector_health, phase_measures
from .service_metrics import MeasuresMetrics

__all__ = [
    "ControllerRun",
    "StoreOptions",
    "compute_range",
    "refresh",
    "refresh_controller",
    "run_service",
]

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """How the store computes; the defaults suit a live deployment."""

    speed_kmh: float = DEFAULT_SPEED_KMH
    #: events loaded past a range's end; also how far behind the newest event a bin must end
    context_s: float = 300.0
    #: trailing window of the detector health status (`no_activity` needs an hour)
    health_window_s: float = 3600.0
    #: most new bins per controller and run (seconds of bins)
    max_span_s: float = 86400.0
    #: how far back late events still recompute bins
    late_lookback_s: float = 86400.0
    #: slack on `ingested_at` for ingest transactions still open at the previous run
    late_margin_s: float = 5.0

    def __post_init__(self) -> None:
        if self.speed_kmh <= 0 or self.context_s < 0 or self.health_window_s <= 0:
            raise ValueError("speed_kmh and health_window_s must be positive, context_s >= 0")
        if self.max_span_s < BIN_S:
            raise ValueError(f"max_span_s must be at least one bin ({BIN_S:g} s)")


@dataclass(slots=True)
class ControllerRun:
    """What one run did for one controller."""

    controller_id: str
    new_bins: int = 0
    late_bins: int = 0
    rows: int = 0
    flagged: Counter[str] = field(default_factory=Counter)
    computed_until: datetime | None = None
    #: False when `max_span_s` stopped the run before the last complete bin
    caught_up: bool = True

    @property
    def changed(self) -> bool:
        return self.new_bins > 0 or self.late_bins > 0


def _floor(ts: float) -> float:
    return math.floor(ts / BIN_S) * BIN_S


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _health_rows(
    events: Sequence[Event], config: ControllerConfig, start: float, end: float,
    first_event: float, options: StoreOptions,
) -> list[repo.HealthRow]:
    """Per bin of `[start, end)` and detector: actuations in the bin, health over the
    `health_window_s` ending at the bin's end (not before the controller's first event)."""
    times = [e.ts for e in events]
    out = []
    b = start
    while b < end:
        b_end = b + BIN_S
        w_start = max(b_end - options.health_window_s, first_event)
        hi = bisect.bisect_left(times, b_end)
        window = events[bisect.bisect_left(times, w_start):hi]
        in_bin = Counter(
            (e.code, e.param) for e in events[bisect.bisect_left(times, b):hi]
            if e.code in (DETECTOR_ON, PED_DETECTOR_ON)
        )
        for h in detector_health(window, config, w_start, b_end,
                                 quiet_s=options.health_window_s):
            on = PED_DETECTOR_ON if h.kind == "pedestrian" else DETECTOR_ON
            out.append(repo.HealthRow(config.controller_id, _utc(b), h.channel, h.phase,
                                      h.kind, in_bin[(on, h.channel)], h.longest_on_s,
                                      h.status))
        b = b_end
    return out


def compute_range(
    conn: Connection, config: ControllerConfig, start: float, end: float,
    first_event: float, options: StoreOptions,
) -> tuple[int, Counter[str]]:
    """Compute and upsert every bin of `[start, end)` (bin-aligned) for one controller.

    Returns the rows written and the flagged events of the range by problem.
    """
    cid = config.controller_id
    lead = max(options.context_s, options.health_window_s)
    events = repo.load_events(conn, cid, _utc(start - lead), _utc(end + options.context_s))
    cleaned = clean(events, config)
    bins = phase_measures(cleaned.events, config, start, end, speed_kmh=options.speed_kmh)
    flagged_per_bin = Counter(
        _floor(f.event.ts) for f in cleaned.flags if start <= f.event.ts < end
    )
    problems = Counter(f.problem.value for f in cleaned.flags if start <= f.event.ts < end)
    rows = repo.save_measures(conn, cid, bins, dict(flagged_per_bin))
    rows += repo.save_health(
        conn, _health_rows(cleaned.events, config, start, end, first_event, options)
    )
    changes = [c for c in mode_changes(cleaned.events) if start <= c.ts < end]
    rows += repo.save_modes(conn, cid, _utc(start), _utc(end), changes)
    return rows, problems


def _runs(starts: Sequence[float]) -> list[tuple[float, float]]:
    """Contiguous ranges of bins from their sorted starts."""
    out: list[tuple[float, float]] = []
    for s in starts:
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], s + BIN_S)
        else:
            out.append((s, s + BIN_S))
    return out


def refresh_controller(
    conn: Connection, controller_id: str, options: StoreOptions = StoreOptions(),
    *, recompute_from: datetime | None = None,
) -> ControllerRun:
    """One run for one controller (see the module docstring), in one transaction: pass an
    autocommit connection (or one without an open transaction) so that it commits.

    `recompute_from`: also recompute every stored bin from there to the watermark.
    """
    run = ControllerRun(controller_id)
    with conn.transaction():
        config = repo.load_config(conn, controller_id)
        now_row = conn.execute("SELECT now()").fetchone()
        assert now_row is not None
        checked_at: datetime = now_row[0]
        span = repo.event_span(conn, controller_id)
        progress = repo.load_progress(conn, controller_id)
        if span is None:
            return run
        first, newest = span[0].timestamp(), span[1].timestamp()
        done = progress.computed_until.timestamp() if progress else _floor(first)
        # 1. late events, and bins to recompute on request
        redo: set[float] = set()
        if progress is not None:
            since = _utc(done - options.late_lookback_s)
            after = progress.checked_at - timedelta(seconds=options.late_margin_s)
            redo |= {b.timestamp() for b in repo.late_bins(
                conn, controller_id, since, progress.computed_until, after)}
            run.late_bins = len(redo)
        if recompute_from is not None:
            b = max(_floor(recompute_from.timestamp()), _floor(first))
            while b < done:
                redo.add(b)
                b += BIN_S
        for a, z in _runs(sorted(redo)):
            n, problems = compute_range(conn, config, a, z, first, options)
            run.rows += n
            run.flagged += problems
        if recompute_from is not None:
            run.late_bins = len(redo)
        # 2. new complete bins
        complete = _floor(newest - options.context_s)
        horizon = _floor(min(complete, done + options.max_span_s))
        run.caught_up = horizon >= complete
        if horizon > done:
            n, problems = compute_range(conn, config, done, horizon, first, options)
            run.rows += n
            run.flagged += problems
            run.new_bins = round((horizon - done) / BIN_S)
            done = horizon
        run.computed_until = _utc(done)
        repo.save_progress(conn, controller_id, repo.Progress(_utc(done), checked_at))
    return run


def refresh(
    conn: Connection, options: StoreOptions = StoreOptions(), *,
    controllers: Sequence[str] | None = None, recompute_from: datetime | None = None,
    until_caught_up: bool = False, on_controller: Callable[[str], None] | None = None,
) -> list[ControllerRun]:
    """One run over `controllers` (default: every registered one).

    `until_caught_up`: repeat each controller until no new bin is complete (a backlog
    longer than `max_span_s`); the service leaves that to its next runs instead.
    `on_controller`: called with each controller's id before its turn (the service's
    heartbeat).
    """
    out = []
    for cid in controllers if controllers is not None else repo.controller_ids(conn):
        if on_controller is not None:
            on_controller(cid)
        run = refresh_controller(conn, cid, options, recompute_from=recompute_from)
        while until_caught_up and not run.caught_up:
            more = refresh_controller(conn, cid, options)
            run.new_bins += more.new_bins
            run.late_bins += more.late_bins
            run.rows += more.rows
            run.flagged += more.flagged
            run.computed_until = more.computed_until
            run.caught_up = more.caught_up
        _log(run)
        out.append(run)
    return out


def _log(run: ControllerRun) -> None:
    if not run.changed:
        logger.debug("%s: nothing new (computed until %s)", run.controller_id,
                     run.computed_until)
        return
    logger.info(
        "%s: %d new and %d recomputed bins, %d rows, computed until %s%s",
        run.controller_id, run.new_bins, run.late_bins, run.rows,
        run.computed_until.isoformat() if run.computed_until else "-",
        "".join(f", {n} events flagged {p}" for p, n in sorted(run.flagged.items())),
    )


#: The liveness limit when no `metrics` are given (as CITYOPS_TRAFFIC_MEASURES_LIVENESS_LIMIT_S).
DEFAULT_LIVENESS_LIMIT_S = 300.0


def run_service(
    database_url: str, interval_s: float = 60.0, options: StoreOptions = StoreOptions(),
    *, stop: threading.Event | None = None, max_runs: int | None = None,
    metrics: MeasuresMetrics | None = None, metrics_port: int = 0,
) -> int:
    """Refresh every controller every `interval_s` seconds until `stop` is set (or SIGTERM
    / Ctrl-C in the main thread). A failing run is logged and retried at the next tick.
    Returns the number of runs.

    The loop beats `metrics.liveness` before each controller and before each pause (which
    may last `interval_s` on top of the liveness limit); with `metrics_port`, `/healthz`
    and `/metrics` are served there while the service runs."""
    from cityops.ingest.db import connect

    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    metrics = metrics or MeasuresMetrics(DEFAULT_LIVENESS_LIMIT_S)
    heartbeat = metrics.liveness.loop("runs")
    if metrics_port:
        metrics.endpoint.serve(metrics_port)
    runs = 0
    logger.info("traffic measures service: every %g s", interval_s)

    def beat_for(cid: str) -> None:
        heartbeat.beat(f"run {runs + 1}: controller {cid}")

    try:
        while not stop.is_set():
            run = runs + 1
            heartbeat.beat(f"run {run}: connecting")
            started = time.monotonic()
            try:
                with connect(database_url, autocommit=True,
                             application_name="cityops-traffic-measures") as conn:
                    done = refresh(conn, options, on_controller=beat_for)
                metrics.observe_run(done, time.monotonic() - started)
                logger.info("run %d: %d controllers, %d with new bins", run, len(done),
                            sum(1 for r in done if r.changed))
            except psycopg.Error as exc:
                metrics.runs.labels("failed").inc()
                logger.warning("traffic measures run failed, retrying in %g s: %s",
                               interval_s, exc)
            runs = run
            if max_runs is not None and runs >= max_runs:
                break
            heartbeat.beat("waiting for the next run", grace_s=interval_s)
            stop.wait(interval_s)
    finally:
        metrics.endpoint.shutdown()
    return runs
