"""The ingest's liveness on its metrics port, scraped over HTTP from the running service:
200 while the writer idles or rides out a database outage, 503 naming the writer once it
hangs inside a database call, 200 again when the call returns."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest

from cityops.ingest import service as service_module
from cityops.ingest.config import Settings
from cityops.ingest.writer import WriteResult
from tests.support.brokers import free_port
from tests.support.health import get, sample, scrape, wait_status
from tests.support.ingest import (
    Publisher,
    add_bins,
    bin_topic,
    count,
    reading,
    running_ingest,
    wait_for,
)

_LIMIT_S = 1.0


def _served(settings: Settings) -> tuple[Settings, str]:
    port = free_port()
    changes = {"ingest_metrics_port": port, "ingest_liveness_limit_s": _LIMIT_S}
    return settings.model_copy(update=changes), f"http://127.0.0.1:{port}"


def _live_until(base: str, done: Callable[[], bool], timeout: float = 8.0) -> float:
    """Ask /healthz every 50 ms until `done()`; every answer must be 200. The longest
    silence of the writer seen meanwhile."""
    deadline, longest = time.monotonic() + timeout, 0.0
    while not done():
        assert time.monotonic() < deadline, "timed out"
        status, body = get(f"{base}/healthz")
        assert status == 200, body
        (writer,) = json.loads(body)["loops"]
        longest = max(longest, float(writer["age_s"]))
        time.sleep(0.05)
    return longest


def test_the_probe_turns_503_when_the_writer_hangs_in_the_database_and_200_after(
    settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (sensor,) = add_bins(db_url, 1)
    settings, base = _served(settings)
    hang, release = threading.Event(), threading.Event()
    pub = Publisher(settings.mqtt_host, settings.mqtt_port)
    with running_ingest(settings) as service:
        write = service._writer.write

        def stuck_write(decoded: Sequence[Any], dead: Sequence[Any]) -> WriteResult:
            if hang.is_set():  # a statement that never returns (a lock, a dead socket)
                release.wait(30)
            return write(decoded, dead)

        monkeypatch.setattr(service._writer, "write", stuck_write)
        try:
            body = wait_status(f"{base}/healthz", 200)
            assert body["service"] == "ingest" and [x["loop"] for x in body["loops"]] == ["writer"]
            # idle, no messages, for longer than the limit: the writer keeps beating
            beats = sample(scrape(base), "cityops_ingest_heartbeats_total", loop="writer")
            idle_until = time.monotonic() + 2 * _LIMIT_S
            assert _live_until(base, lambda: time.monotonic() > idle_until) < _LIMIT_S
            samples = scrape(base)
            assert sample(samples, "cityops_ingest_heartbeats_total", loop="writer") > beats
            assert sample(samples, "cityops_ingest_heartbeat_limit_seconds", loop="writer") < 2

            hang.set()
            pub.publish(bin_topic(settings, sensor), reading(1))
            body = wait_status(f"{base}/healthz", 503)
            (writer,) = body["loops"]
            assert writer["stale"] and writer["doing"] == "writing to the database: 1 good, 0 dead"
            assert body["reason"].startswith("ingest: writer: no heartbeat for ")
            age = sample(scrape(base), "cityops_ingest_heartbeat_age_seconds", loop="writer")
            assert age > _LIMIT_S
            assert count(db_url, "SELECT count(*) FROM bin_readings") == 0

            release.set()
            assert wait_status(f"{base}/healthz", 200)["status"] == "ok"
            wait_for(lambda: count(db_url, "SELECT count(*) FROM bin_readings") == 1, what="row")
            assert sample(scrape(base), "cityops_ingest_messages_received_total") == 1
        finally:
            release.set()
            pub.close()
    assert service.metrics.endpoint.port is None, "stop() closes the endpoint"


def test_a_database_outage_keeps_the_probe_200_while_the_writer_retries(
    settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write fails at once, as when the database refuses connections: the writer
    backs off, one pause longer than the limit, and announces each pause with its beat, so
    the probe stays 200 throughout and the message is stored once the database is back."""
    (sensor,) = add_bins(db_url, 1)
    settings, base = _served(settings)
    down = threading.Event()
    pub = Publisher(settings.mqtt_host, settings.mqtt_port)
    with running_ingest(settings) as service:
        write = service._writer.write

        def failing_write(decoded: Sequence[Any], dead: Sequence[Any]) -> WriteResult:
            if down.is_set():
                raise psycopg.OperationalError("connection refused (simulated outage)")
            return write(decoded, dead)

        monkeypatch.setattr(service._writer, "write", failing_write)
        # the backoff without its jitter: the second pause is longer than the limit
        monkeypatch.setattr(
            service_module, "_backoff", lambda attempt: 1.6 * _LIMIT_S if attempt == 1 else 0.2
        )
        errors = service.metrics.db_errors
        try:
            wait_status(f"{base}/healthz", 200)
            down.set()
            pub.publish(bin_topic(settings, sensor), reading(1))
            longest = _live_until(base, lambda: errors._value.get() >= 4)
            assert longest > _LIMIT_S, "the long pause was announced, not stale"
            down.clear()
            wait_for(lambda: count(db_url, "SELECT count(*) FROM bin_readings") == 1, what="row")
            assert wait_status(f"{base}/healthz", 200)["status"] == "ok"
        finally:
            down.clear()
            pub.close()


def test_the_liveness_limit_is_a_positive_setting() -> None:
    assert Settings().ingest_liveness_limit_s == 60.0
    with pytest.raises(ValueError, match="greater than 0"):
        Settings(ingest_liveness_limit_s=0)
