"""The shared liveness and metrics endpoint: the probe follows the loops' heartbeats (a loop
stuck in a call turns it 503, naming the loop), the metrics parse as Prometheus text."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from cityops.ingest.health import Endpoint, Liveness
from cityops.ingest.metrics import IngestMetrics
from tests.support.health import get, sample, scrape, wait_status


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_verdict_follows_the_heartbeats() -> None:
    clock = FakeClock()
    liveness = Liveness("svc", 10.0, clock=clock)
    worker, poller = liveness.loop("worker"), liveness.loop("poller")
    assert liveness.loop("worker") is worker
    worker.beat("step 1")
    clock.now += 9
    poller.beat("polling")
    assert liveness.verdict().live
    clock.now += 2  # worker silent 11 s, poller 2 s
    verdict = liveness.verdict()
    assert not verdict.live
    (stale,) = [s for s in verdict.loops if s.stale]
    assert (stale.loop, stale.age_s, stale.limit_s, stale.doing) == ("worker", 11.0, 10.0, "step 1")
    assert verdict.reason == "svc: worker: no heartbeat for 11.0 s (limit 10 s), last: step 1"
    body = verdict.as_json()
    assert body["status"] == "stale" and [x["stale"] for x in body["loops"]] == [True, False]
    # a step that announces its length gets that much more time
    worker.beat("solving", grace_s=20.0)
    poller.beat()
    clock.now += 29
    poller.beat()
    assert liveness.verdict().live
    clock.now += 2
    assert [s.loop for s in liveness.verdict().loops if s.stale] == ["worker"]
    # the next ordinary beat takes the grace back
    worker.beat("step 2")
    clock.now += 10.5
    assert {s.loop for s in liveness.verdict().loops if s.stale} == {"worker", "poller"}


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Liveness("svc", 0)


class Loop:
    """A worker loop that beats every iteration and hangs in its work while `hang` is set
    (until `release` is)."""

    def __init__(self, liveness: Liveness) -> None:
        self.heartbeat = liveness.loop("worker")
        self.hang, self.release, self.stop = threading.Event(), threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            self.heartbeat.beat(f"step {n}")
            if self.hang.is_set():
                self.release.wait(10)
                self.hang.clear()
            self.stop.wait(0.01)


@pytest.fixture
def served() -> Iterator[tuple[str, Loop, CollectorRegistry]]:
    registry = CollectorRegistry()
    liveness = Liveness("svc", 1.0)  # a busy CI machine can stall a thread for 0.3 s
    liveness.register(registry, "cityops_svc")
    Counter("cityops_svc_things", "things done", registry=registry).inc(3)
    endpoint = Endpoint(registry, liveness)
    assert endpoint.serve(0, addr="127.0.0.1")
    loop = Loop(liveness)
    loop.thread.start()
    try:
        yield f"http://127.0.0.1:{endpoint.port}", loop, registry
    finally:
        loop.stop.set()
        loop.release.set()
        loop.thread.join(5)
        endpoint.shutdown()


def test_the_probe_is_200_while_the_loop_beats_and_503_once_it_hangs(
    served: tuple[str, Loop, CollectorRegistry],
) -> None:
    base, loop, _ = served
    body = wait_status(f"{base}/healthz", 200)
    assert body["status"] == "ok" and body["loops"][0]["loop"] == "worker"
    loop.hang.set()
    body = wait_status(f"{base}/healthz", 503)
    assert body["status"] == "stale"
    (worker,) = body["loops"]
    assert worker["stale"] and worker["age_s"] > 1.0 and worker["doing"].startswith("step ")
    assert body["reason"].startswith("svc: worker: no heartbeat for ")
    assert wait_status(f"{base}/livez", 503)["status"] == "stale"
    loop.release.set()
    assert wait_status(f"{base}/healthz", 200)["status"] == "ok"


def test_metrics_parse_and_carry_the_heartbeat(
    served: tuple[str, Loop, CollectorRegistry],
) -> None:
    base, _loop, _ = served
    wait_status(f"{base}/healthz", 200)
    samples = scrape(base)
    assert sample(samples, "cityops_svc_things_total") == 3
    assert 0 <= sample(samples, "cityops_svc_heartbeat_age_seconds", loop="worker") < 1.0
    assert sample(samples, "cityops_svc_heartbeat_limit_seconds", loop="worker") == 1.0
    assert sample(samples, "cityops_svc_heartbeats_total", loop="worker") >= 1


def test_other_paths_and_methods(served: tuple[str, Loop, CollectorRegistry]) -> None:
    base, _loop, _ = served
    assert get(f"{base}/")[0] == 404
    assert get(f"{base}/healthz", method="POST")[0] == 405


def test_a_taken_port_is_logged_and_the_service_runs_on(
    served: tuple[str, Loop, CollectorRegistry], caplog: pytest.LogCaptureFixture
) -> None:
    base, _loop, registry = served
    port = int(base.rsplit(":", 1)[1])
    with caplog.at_level(logging.ERROR, logger="cityops.ingest.health"):
        assert not Endpoint(registry).serve(port, addr="127.0.0.1")
    assert f"metrics endpoint not started on port {port}" in caplog.text


def test_the_ingest_serves_its_metrics_on_the_same_endpoint() -> None:
    metrics = IngestMetrics("ingest-test", 60.0)
    metrics.received.inc(5)
    metrics.serve(0)
    try:
        port = metrics.endpoint.port
        assert port is not None
        samples = scrape(f"http://127.0.0.1:{port}")
        assert sample(samples, "cityops_ingest_messages_received_total") == 5
        # the liveness of its writer (tests/ingest/test_ingest_health.py): no loop yet
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        metrics.shutdown()
    assert metrics.endpoint.port is None
