"""The re-planner's liveness and metrics endpoint, scraped over HTTP from the running
service: 200 while its worker beats, 503 naming the worker once it hangs in a call."""

from __future__ import annotations

import threading

import pytest

from cityops.ingest.config import Settings
from cityops.routing.network import RoadNetwork
from cityops.routing.replan.metrics import ReplannerMetrics
from cityops.routing.replan.pipeline import ReplanReport
from cityops.routing.replan.service import Replanner, run_replanner
from tests.routing.replan_support import (
    PATIENCE_S,
    Devices,
    clock,
    make_replanner,
    route_bins,
    seed_city,
    wait_for,
)
from tests.support.brokers import free_port
from tests.support.health import sample, scrape, wait_status

_SENT = ("cityops_replanner_replans_total", frozenset({("outcome", "sent")}))


def test_the_probe_turns_503_when_the_worker_hangs_and_metrics_are_served(
    settings: Settings, network: RoadNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    settings = settings.model_copy(
        update={"replanner_metrics_port": port, "replanner_liveness_limit_s": 2.0}
    )
    reports: list[ReplanReport] = []
    rp: Replanner = make_replanner(settings, network, reports)
    hang, release = threading.Event(), threading.Event()
    poll = rp._poll_closures

    def stuck_poll() -> None:
        if hang.is_set():  # a database call that never returns
            release.wait(PATIENCE_S)
        poll()

    monkeypatch.setattr(rp, "_poll_closures", stuck_poll)
    base = f"http://127.0.0.1:{port}"
    rp.start()
    try:
        assert rp.wait_ready(PATIENCE_S)
        body = wait_status(f"{base}/healthz", 200)
        assert body["service"] == "replanner" and body["loops"][0]["loop"] == "worker"
        samples = scrape(base)
        assert sample(samples, "cityops_replanner_broker_connected") == 1
        assert sample(samples, "cityops_replanner_heartbeat_limit_seconds", loop="worker") >= 2
        assert sample(samples, "cityops_replanner_last_poll_timestamp_seconds") > 0
        assert sample(samples, "cityops_replanner_replans_total", outcome="sent") == 0
        assert sample(samples, "cityops_replanner_errors_total", stage="replan") == 0
        assert sample(samples, "cityops_replanner_phase_seconds_count", phase="solve") == 0

        hang.set()
        body = wait_status(f"{base}/healthz", 503, timeout=PATIENCE_S)
        (worker,) = body["loops"]
        assert worker["stale"] and worker["doing"] == "polling street closures"
        assert "worker: no heartbeat for" in body["reason"]
        assert sample(scrape(base), "cityops_replanner_heartbeat_age_seconds", loop="worker") > 2

        release.set()
        wait_status(f"{base}/healthz", 200, timeout=PATIENCE_S)
    finally:
        release.set()
        rp.stop()
    assert rp.metrics.endpoint.port is None, "stop() closes the endpoint"


def test_the_entry_point_serves_the_metrics_of_a_replan(
    settings: Settings, network: RoadNetwork, devices: Devices
) -> None:
    """`cityops routing replan` as run in production (run_replanner), scraped like
    Prometheus does after one overflow re-plan."""
    port = free_port()
    settings = settings.model_copy(update={"replanner_metrics_port": port})
    planned = seed_city(settings, network)
    stop, ready = threading.Event(), threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_replanner(
                settings, time_limit_s=1.0, coalesce_s=0.3, stop=stop, ready=ready, clock=clock
            )
        )
    )
    base = f"http://127.0.0.1:{port}"
    thread.start()
    try:
        assert ready.wait(PATIENCE_S), "the replanner subscribed"
        assert wait_status(f"{base}/healthz", 200)["status"] == "ok"
        extra = next(f"B{i:04d}" for i in range(1, 13) if f"B{i:04d}" not in planned)
        devices.bin_reading(extra, 98.0)
        devices.wait_route(lambda r: extra in route_bins(r))
        # the version reaches the truck just before the service counts its re-plan
        wait_for("the re-plan counted", lambda: scrape(base).get(_SENT) == 1)
        samples = scrape(base)
        assert sample(samples, "cityops_replanner_triggers_total", kind="overflow") == 1
        assert sample(samples, "cityops_replanner_replans_total", outcome="sent") == 1
        assert sample(samples, "cityops_replanner_routes_pushed_total") >= 1
        assert sample(samples, "cityops_replanner_event_to_push_seconds_count") == 1
        assert sample(samples, "cityops_replanner_phase_seconds_count", phase="solve") == 1
        assert sample(samples, "cityops_replanner_last_replan_timestamp_seconds") > 0
        assert wait_status(f"{base}/healthz", 200)["status"] == "ok"
    finally:
        stop.set()
        thread.join(30)
    assert result == [0]


def test_a_replan_is_counted_by_its_outcome() -> None:
    metrics = ReplannerMetrics(60.0)
    phases = {"load": 20.0, "build": 5.0, "solve": 1000.0, "check": 3.0, "store": 8.0}
    metrics.observe_replan(
        sent=3, pushed=2, rejected=False, phases_ms=phases, event_to_push_s=1.5
    )
    metrics.observe_replan(sent=0, pushed=0, rejected=True, phases_ms=phases, event_to_push_s=9)
    value = metrics.registry.get_sample_value
    name = "cityops_replanner"
    assert [value(f"{name}_replans_total", {"outcome": o}) for o in ("sent", "unchanged")] == [1, 0]
    assert value(f"{name}_replans_total", {"outcome": "rejected"}) == 1
    assert value(f"{name}_routes_pushed_total") == 2
    assert value(f"{name}_routes_unacknowledged_total") == 1
    assert value(f"{name}_event_to_push_seconds_count") == 1
    assert value(f"{name}_phase_seconds_sum", {"phase": "solve"}) == pytest.approx(2.0)
    assert (value(f"{name}_last_replan_timestamp_seconds") or 0) > 0
