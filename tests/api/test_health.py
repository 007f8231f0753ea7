"""Health, stats, docs and the error format for unknown routes and an unreachable database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from cityops.api.app import create_app
from cityops.ingest.config import Settings
from tests.api.authn import operator_headers, with_auth
from tests.api.factories import (
    add_bin,
    add_controller,
    add_dead_letter,
    add_reading,
    set_bin_state,
)
from tests.api.testclient import TestClient
from tests.support.clock import now_utc

Conn = psycopg.Connection[tuple[object, ...]]


def test_health_reports_the_storage_mode(client: TestClient, conn: Conn) -> None:
    mode = conn.execute("SELECT storage_mode FROM cityops_schema_info").fetchone()
    assert mode is not None
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "database": "ok", "storage_mode": mode[0]}


@pytest.fixture
def down_client() -> Iterator[TestClient]:
    """An API whose database refuses connections (nothing listens on port 1)."""
    settings = with_auth(Settings(database_url="postgresql://postgres@127.0.0.1:1/cityops"))
    with TestClient(create_app(settings, db_timeout_s=0.5),
                    headers=operator_headers(settings)) as c:
        yield c


def test_database_down_is_503(down_client: TestClient) -> None:
    for path in ("/health", "/api/v1/bins", "/api/v1/bins/B-1/readings", "/api/v1/stats"):
        resp = down_client.get(path)
        assert resp.status_code == 503, path
        body = resp.json()
        assert body["error"] == "database_unavailable"
        assert "database" in body["message"]
    # bad input is still reported as such, without touching the database
    assert down_client.get("/api/v1/bins?limit=0").status_code == 422


def test_health_of_an_unmigrated_database_is_503(empty_db_url: str) -> None:
    with TestClient(create_app(Settings(database_url=empty_db_url))) as client:
        resp = client.get("/health")
    assert resp.status_code == 503
    assert "cityops db migrate" in resp.json()["message"]


def test_stats(client: TestClient, conn: Conn) -> None:
    now = now_utc()
    add_bin(conn, "B-1", sensor_id="S-1")
    add_bin(conn, "B-2")
    add_controller(conn, "C-1")
    add_reading(conn, "B-1", now, 10)
    add_reading(conn, "B-1", datetime(2024, 5, 1, tzinfo=UTC), 20)
    set_bin_state(conn, "B-1", now, 10)
    add_dead_letter(conn, "cityops/bin/S-9/reading", b"{}", "unknown_device")
    add_dead_letter(conn, "cityops/bin/S-8/reading", b"{}", "unknown_device")
    add_dead_letter(conn, "cityops/bin/S-1/reading", b"not json", "invalid_json")
    resp = client.get("/api/v1/stats")
    assert resp.status_code == 200
    assert resp.json() == {
        "bins": 2,
        "devices": 2,
        "bin_readings": {"count": 2, "exact": True},
        "signal_events": {"count": 0, "exact": True},
        "truck_positions": {"count": 0, "exact": True},
        "dead_letters": {"invalid_json": 1, "unknown_device": 2},
        "dead_letters_total": 3,
    }


def test_unknown_route_and_method_use_the_error_format(client: TestClient) -> None:
    resp = client.get("/api/v1/nothing")
    assert resp.status_code == 404
    assert resp.json() == {
        "error": "not_found", "message": "no such endpoint: /api/v1/nothing", "details": []
    }
    resp = client.post("/api/v1/bins")
    assert resp.status_code == 405
    assert resp.json()["error"] == "method_not_allowed"


def test_openapi_and_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/health", "/api/v1/bins", "/api/v1/bins/{bin_id}",
                 "/api/v1/bins/{bin_id}/readings", "/api/v1/devices", "/api/v1/stats"):
        assert path in spec["paths"]
    errors = spec["paths"]["/api/v1/bins"]["get"]["responses"]
    assert errors["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert client.get("/docs").status_code == 200
