"""Fixtures shared by the ingest's MQTT credential tests."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from tests.api.factories import add_bin, add_controller, add_depot, add_truck
from tests.support.mqttauth import Registry


@pytest.fixture
def registry(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """Two bin sensors, a signal controller and a truck; CITYOPS_* pointing at them."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        add_bin(conn, "B1", sensor_id="S-B1")
        add_bin(conn, "B2", sensor_id="S-B2")
        add_bin(conn, "B3")  # no sensor: no account
        add_controller(conn, "K1")
        add_depot(conn)
        add_truck(conn, "T1")
    prefix = f"sec-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CITYOPS_DATABASE_URL", db_url)
    monkeypatch.setenv("CITYOPS_TOPIC_PREFIX", prefix)
    return Registry(prefix, tmp_path / "auth")
