"""The re-planner's own metrics (Prometheus, own registry) and the liveness of its worker.

Served by `cityops.ingest.health.Endpoint` on `CITYOPS_REPLANNER_METRICS_PORT`; the
series are listed in docs/operations.md ("Liveness and metrics of the services").
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cityops.ingest.health import Endpoint, Liveness

__all__ = ["NAMESPACE", "ReplannerMetrics"]

NAMESPACE = "cityops_replanner"
_PHASES = ("load", "build", "solve", "check", "store", "push")


class ReplannerMetrics:
    """Counters, histograms and the worker's heartbeat of one re-planner."""

    def __init__(self, liveness_limit_s: float) -> None:
        self.registry = r = CollectorRegistry()
        self.liveness = Liveness("replanner", liveness_limit_s)
        self.liveness.register(r, NAMESPACE)
        ns = NAMESPACE
        self.triggers = Counter(
            f"{ns}_triggers", "events that call for a re-plan, by kind", ["kind"], registry=r
        )
        self.replans = Counter(
            f"{ns}_replans",
            "re-plans of one fraction by outcome: sent (new versions), unchanged (no route "
            "changed), rejected (failed the feasibility check, nothing sent)",
            ["outcome"],
            registry=r,
        )
        self.errors = Counter(
            f"{ns}_errors",
            "failures by stage: replan (a window's re-plan failed; its triggers may come "
            "again), poll (closures and routes could not be read)",
            ["stage"],
            registry=r,
        )
        self.routes_pushed = Counter(
            f"{ns}_routes_pushed", "route versions acknowledged by the broker", registry=r
        )
        self.routes_unacked = Counter(
            f"{ns}_routes_unacknowledged",
            "route versions stored but not acknowledged by the broker (the API serves them)",
            registry=r,
        )
        self.phase_seconds = Histogram(
            f"{ns}_phase_seconds",
            "time of each phase of a re-plan",
            ["phase"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60),
            registry=r,
        )
        self.event_to_push = Histogram(
            f"{ns}_event_to_push_seconds",
            "from the first trigger of a window to its last version acknowledged",
            buckets=(0.5, 1, 2, 3, 5, 8, 12, 20, 30, 60, 120),
            registry=r,
        )
        self.last_replan = Gauge(
            f"{ns}_last_replan_timestamp_seconds",
            "Unix time of the last re-plan that was not rejected",
            registry=r,
        )
        self.last_poll = Gauge(
            f"{ns}_last_poll_timestamp_seconds",
            "Unix time of the last successful poll of closures and current routes",
            registry=r,
        )
        self.queued = Gauge(f"{ns}_queued_triggers", "triggers waiting for a window", registry=r)
        self.connected = Gauge(
            f"{ns}_broker_connected", "1 while subscribed on the broker", registry=r
        )
        for phase in _PHASES:
            self.phase_seconds.labels(phase)
        for outcome in ("sent", "unchanged", "rejected"):
            self.replans.labels(outcome)
        for stage in ("replan", "poll"):
            self.errors.labels(stage)
        self.endpoint = Endpoint(r, self.liveness)

    def observe_replan(
        self,
        *,
        sent: int,
        pushed: int,
        rejected: bool,
        phases_ms: Mapping[str, float],
        event_to_push_s: float,
    ) -> None:
        """One re-plan of one fraction ended (see `ReplanReport`)."""
        outcome = "rejected" if rejected else "sent" if sent else "unchanged"
        self.replans.labels(outcome).inc()
        for phase, ms in phases_ms.items():
            self.phase_seconds.labels(phase).observe(ms / 1000.0)
        if rejected:
            return
        self.routes_pushed.inc(pushed)
        self.routes_unacked.inc(sent - pushed)
        if sent:
            self.event_to_push.observe(event_to_push_s)
        self.last_replan.set(time.time())
