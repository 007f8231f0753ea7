"""Prometheus metrics (own registry per service) and worker liveness of the two traffic
services: adaptive control (`cityops traffic control`) and the measures service
(`cityops traffic measures-service`).

Served by `cityops.ingest.health.Endpoint` on CITYOPS_TRAFFIC_CONTROL_METRICS_PORT and
CITYOPS_TRAFFIC_MEASURES_METRICS_PORT; the series are listed in docs/operations.md
("Liveness and metrics of the services").
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cityops.ingest.health import Endpoint, Liveness

__all__ = ["CONTROL_NAMESPACE", "MEASURES_NAMESPACE", "ControlMetrics", "MeasuresMetrics"]

CONTROL_NAMESPACE = "cityops_traffic_control"
MEASURES_NAMESPACE = "cityops_traffic_measures"


class ControlMetrics:
    """Counters, gauges and the worker's heartbeat of one control instance."""

    def __init__(self, liveness_limit_s: float) -> None:
        self.registry = r = CollectorRegistry()
        self.liveness = Liveness("traffic-control", liveness_limit_s)
        self.liveness.register(r, CONTROL_NAMESPACE)
        ns = CONTROL_NAMESPACE
        self.events = Counter(f"{ns}_events", "controller events received", registry=r)
        self.ignored = Counter(
            f"{ns}_messages_ignored",
            "messages ignored, by reason (bad_message, bad_tick, unknown_controller)",
            ["reason"],
            registry=r,
        )
        self.commands = Counter(
            f"{ns}_commands",
            "timing commands sent, by kind (hold, advance, fallback)",
            ["kind"],
            registry=r,
        )
        self.decision_steps = Counter(
            f"{ns}_decision_steps", "decision steps over every controlled controller", registry=r
        )
        self.decision_seconds = Histogram(
            f"{ns}_decision_seconds",
            "time of one decision step (every controlled controller)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.last_decision = Gauge(
            f"{ns}_last_decision_timestamp_seconds",
            "Unix time of the last decision step",
            registry=r,
        )
        self.db_errors = Counter(
            f"{ns}_db_errors", "failed reads of modes or registry (last ones kept)", registry=r
        )
        self.degradations = Counter(
            f"{ns}_degradations",
            "controllers degraded to fallback for unusable detectors",
            registry=r,
        )
        self.disconnects = Counter(f"{ns}_disconnects", "unexpected broker disconnects", registry=r)
        self.connected = Gauge(f"{ns}_broker_connected", "1 while connected", registry=r)
        self.backlog = Gauge(f"{ns}_backlog", "messages received, not yet handled", registry=r)
        self.controllers = Gauge(
            f"{ns}_controllers",
            "controlled controllers by state: controlled (all), degraded (fallback for "
            "detectors), fixed (switched off in the database), silent (no events lately)",
            ["state"],
            registry=r,
        )
        for reason in ("bad_message", "bad_tick", "unknown_controller"):
            self.ignored.labels(reason)
        for kind in ("hold", "advance", "fallback"):
            self.commands.labels(kind)
        self.endpoint = Endpoint(r, self.liveness)


class _Run(Protocol):
    """What the measures service reports of one controller (`store.ControllerRun`)."""

    @property
    def new_bins(self) -> int: ...
    @property
    def late_bins(self) -> int: ...
    @property
    def rows(self) -> int: ...
    @property
    def caught_up(self) -> bool: ...
    @property
    def computed_until(self) -> datetime | None: ...


class MeasuresMetrics:
    """Counters, histograms and the loop's heartbeat of the measures service."""

    def __init__(self, liveness_limit_s: float) -> None:
        self.registry = r = CollectorRegistry()
        self.liveness = Liveness("traffic-measures", liveness_limit_s)
        self.liveness.register(r, MEASURES_NAMESPACE)
        ns = MEASURES_NAMESPACE
        self.runs = Counter(
            f"{ns}_runs", "runs over every controller, by outcome (ok, failed)", ["outcome"],
            registry=r,
        )
        self.run_seconds = Histogram(
            f"{ns}_run_seconds",
            "time of one run over every controller",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.last_success = Gauge(
            f"{ns}_last_success_timestamp_seconds",
            "Unix time of the end of the last successful run",
            registry=r,
        )
        self.bins = Counter(
            f"{ns}_bins", "15-minute bins computed, by kind (new, recomputed)", ["kind"],
            registry=r,
        )
        self.rows = Counter(f"{ns}_rows_written", "measure rows written", registry=r)
        self.behind = Gauge(
            f"{ns}_controllers_behind",
            "controllers with complete bins left for the next run (a backlog)",
            registry=r,
        )
        self.oldest = Gauge(
            f"{ns}_oldest_computed_until_timestamp_seconds",
            "Unix time up to which every controller's bins are computed",
            registry=r,
        )
        for outcome in ("ok", "failed"):
            self.runs.labels(outcome)
        for kind in ("new", "recomputed"):
            self.bins.labels(kind)
        self.endpoint = Endpoint(r, self.liveness)

    def observe_run(self, runs: Sequence[_Run], seconds: float) -> None:
        self.runs.labels("ok").inc()
        self.run_seconds.observe(seconds)
        self.last_success.set(time.time())
        self.bins.labels("new").inc(sum(r.new_bins for r in runs))
        self.bins.labels("recomputed").inc(sum(r.late_bins for r in runs))
        self.rows.inc(sum(r.rows for r in runs))
        self.behind.set(sum(1 for r in runs if not r.caught_up))
        until = [r.computed_until for r in runs if r.computed_until is not None]
        if until:
            self.oldest.set(min(until).timestamp())
