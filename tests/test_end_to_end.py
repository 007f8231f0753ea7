"""The whole data plane as a user runs it: `cityops simulate` (a real process with its own
MQTT clients) -> Mosquitto -> ingest -> PostgreSQL -> API."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from cityops.api.app import create_app
from cityops.ingest.config import Settings
from tests.api.testclient import TestClient
from tests.support.clock import now_utc
from tests.support.ingest import count, running_ingest, wait_for


@pytest.mark.slow
def test_simulated_city_flows_through_ingest_into_the_api(settings: Settings, db_url: str) -> None:
    env = {
        **os.environ,
        "CITYOPS_DATABASE_URL": db_url,
        "CITYOPS_MQTT_URL": settings.mqtt_url,
        "CITYOPS_TOPIC_PREFIX": settings.topic_prefix,
    }
    with running_ingest(settings) as ingest:
        sim = subprocess.run(
            [
                sys.executable,
                "-m",
                "cityops.api.cli",
                "simulate",
                "--scenario",
                "test",
                "--duration",
                "8",
                "--client-id-prefix",
                f"{settings.topic_prefix}-",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert sim.returncode == 0, sim.stderr[-2000:]
        wait_for(
            lambda: count(db_url, "SELECT count(*) FROM truck_positions") > 0,
            what="truck positions",
        )
        wait_for(lambda: ingest.metrics.snapshot(0)[0] > 50, what="messages through the ingest")

    assert count(db_url, "SELECT count(*) FROM dead_letters") == 0, (
        "simulated devices broke the contract"
    )
    assert count(db_url, "SELECT count(*) FROM signal_events WHERE code = 1") > 0
    assert count(db_url, "SELECT count(*) FROM signal_events WHERE code = 82") > 0

    # a dispatcher's API key, made as an operator makes one
    key = subprocess.run(
        [
            sys.executable,
            "-m",
            "cityops.api.cli",
            "auth",
            "create-key",
            "--name",
            "e2e",
            "--role",
            "dispatcher",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    with TestClient(create_app(settings), headers={"X-API-Key": key}) as client:
        assert client.get("/api/v1/bins", headers={"X-API-Key": ""}).status_code == 401
        bins = client.get("/api/v1/bins", params={"limit": 100}).json()
        assert len(bins["items"]) == 12  # the test scenario's bins
        with_reading = [b for b in bins["items"] if b["fill_pct"] is not None]
        assert with_reading, "no bin has a reading in the API"
        assert all(b["street"] for b in bins["items"]), "bins are placed on named streets"
        one = with_reading[0]
        now = now_utc()
        span = {
            "from": (now - timedelta(days=2)).isoformat(),
            "to": (now + timedelta(minutes=1)).isoformat(),
        }
        raw = client.get(f"/api/v1/bins/{one['bin_id']}/readings", params={**span, "bucket": "raw"})
        assert raw.status_code == 200, raw.text
        assert raw.json()["readings"], "the bin's readings are served"
        hourly = client.get(
            f"/api/v1/bins/{one['bin_id']}/readings", params={**span, "bucket": "1h"}
        )
        assert hourly.status_code == 200, hourly.text
        n_raw = len(raw.json()["readings"])
        assert sum(b["readings"] for b in hourly.json()["buckets"]) == n_raw
        devices = client.get("/api/v1/devices", params={"kind": "signal"}).json()
        assert len(devices["items"]) == 2
        # the simulator published a retained "offline" on its clean exit
        assert {d["state"] for d in devices["items"]} == {"offline"}
