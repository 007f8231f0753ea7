"""Liveness and metrics of the two traffic services, scraped over HTTP while they run:
traffic control (events in, commands out) and the measures service (`run_service`)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from cityops.ingest.config import Settings
from cityops.ingest.db import connect
from cityops.traffic import repository as repo
from cityops.traffic import store
from cityops.traffic.control import ControlService
from cityops.traffic.control_state import ControlOptions
from cityops.traffic.service_metrics import MeasuresMetrics
from cityops.traffic.store import StoreOptions, run_service
from tests.support.brokers import free_port
from tests.support.health import Samples, sample, scrape, wait_status
from tests.traffic.store_support import CID, insert_events, seed_controller, simulate
from tests.traffic.test_control import ADV4, SB4, Broker, seed


@pytest.fixture
def broker(settings: Settings) -> Iterator[Broker]:
    b = Broker(settings)
    yield b
    b.close()


def test_control_probe_turns_503_when_the_worker_hangs_and_metrics_count_commands(
    settings: Settings, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(settings.database_url, "c1")
    port = free_port()
    settings = settings.model_copy(
        update={"traffic_control_metrics_port": port, "traffic_control_liveness_limit_s": 1.0}
    )
    service = ControlService(
        settings,
        ControlOptions(
            decision_interval_s=0.2, modes_refresh_s=0.2, issuer=f"ctl-{uuid.uuid4().hex[:6]}"
        ),
    )
    hang, release = threading.Event(), threading.Event()
    decide = service._decide_all

    def stuck_decide(tick: object) -> None:
        if hang.is_set():  # a publish or computation that never returns
            release.wait(30)
        decide(tick)

    monkeypatch.setattr(service, "_decide_all", stuck_decide)
    base = f"http://127.0.0.1:{port}"
    service.start()
    try:
        assert service.wait_connected(10)
        time.sleep(0.2)  # let the subscription settle before the first publish
        body = wait_status(f"{base}/healthz", 200)
        assert body["service"] == "traffic-control" and body["loops"][0]["loop"] == "worker"
        broker.events("c1", (0, 131, 3), (0, 1, 2), (0.5, 82, SB4), (1, 82, ADV4), (1.5, 81, ADV4))
        broker.wait_for(lambda c: c.mode == "adaptive")
        samples = scrape(base)
        assert sample(samples, "cityops_traffic_control_events_total") == 5
        hold = sample(samples, "cityops_traffic_control_commands_total", kind="hold")
        advance = sample(samples, "cityops_traffic_control_commands_total", kind="advance")
        assert hold + advance >= 1
        assert sample(samples, "cityops_traffic_control_decision_steps_total") >= 1
        assert sample(samples, "cityops_traffic_control_controllers", state="controlled") == 1
        assert sample(samples, "cityops_traffic_control_broker_connected") == 1
        assert sample(samples, "cityops_traffic_control_last_decision_timestamp_seconds") > 0

        hang.set()
        body = wait_status(f"{base}/healthz", 503)
        (worker,) = body["loops"]
        assert worker["stale"] and worker["doing"] == "deciding"
        release.set()
        wait_status(f"{base}/healthz", 200)
    finally:
        release.set()
        service.stop()
    assert service.metrics.endpoint.port is None


_LIMIT = ("cityops_traffic_measures_heartbeat_limit_seconds", frozenset({("loop", "runs")}))


def _wait_samples(base: str, cond: Callable[[Samples], bool], timeout: float = 10.0) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(base)
        if cond(samples):
            return samples
        assert time.monotonic() < deadline, f"timed out; last scrape: {samples}"
        time.sleep(0.05)


@pytest.fixture
def measured_db(db_url: str) -> str:
    with connect(db_url, autocommit=True, application_name="cityops-test") as conn:
        seed_controller(conn)
        insert_events(conn, simulate(2400.0))
    return db_url


def test_measures_service_is_live_between_runs_and_503_when_a_run_hangs(
    measured_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hang, release = threading.Event(), threading.Event()
    refresh_controller = store.refresh_controller

    def stuck(*args: object, **kwargs: object) -> store.ControllerRun:
        if hang.is_set():  # a query that never returns
            release.wait(30)
        return refresh_controller(*args, **kwargs)

    monkeypatch.setattr(store, "refresh_controller", stuck)
    port = free_port()
    metrics = MeasuresMetrics(1.0)
    stop = threading.Event()
    result: list[int] = []
    # runs every 2 s, longer than the liveness limit: the pause is announced, not stale
    thread = threading.Thread(
        target=lambda: result.append(
            run_service(
                measured_db,
                2.0,
                StoreOptions(late_margin_s=0.0),
                stop=stop,
                metrics=metrics,
                metrics_port=port,
            )
        )
    )
    base = f"http://127.0.0.1:{port}"
    thread.start()
    try:
        body = wait_status(f"{base}/healthz", 200)
        assert body["service"] == "traffic-measures" and body["loops"][0]["loop"] == "runs"
        # the first run is done and the loop pauses (its limit grows by the interval)
        samples = _wait_samples(base, lambda s: s.get(_LIMIT) == 3.0)
        assert sample(samples, "cityops_traffic_measures_runs_total", outcome="ok") == 1
        with connect(measured_db) as conn:
            progress = repo.load_progress(conn, CID)
        assert progress is not None
        until = sample(samples, "cityops_traffic_measures_oldest_computed_until_timestamp_seconds")
        assert until == progress.computed_until.timestamp()
        assert sample(samples, "cityops_traffic_measures_bins_total", kind="new") >= 1
        assert sample(samples, "cityops_traffic_measures_rows_written_total") > 0
        assert sample(samples, "cityops_traffic_measures_controllers_behind") == 0
        assert sample(samples, "cityops_traffic_measures_last_success_timestamp_seconds") > 0
        assert sample(samples, "cityops_traffic_measures_run_seconds_count") == 1
        assert wait_status(f"{base}/healthz", 200)["status"] == "ok"

        hang.set()  # the next run hangs in its controller
        body = wait_status(f"{base}/healthz", 503)
        assert body["loops"][0]["doing"] == f"run 2: controller {CID}"
        release.set()
        wait_status(f"{base}/healthz", 200)
    finally:
        release.set()
        stop.set()
        thread.join(10)
    assert result and result[0] >= 2
    assert metrics.endpoint.port is None
