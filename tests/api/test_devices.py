"""GET /api/v1/devices: online, offline (reported or stale) and unknown devices."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from cityops.api.app import create_app
from cityops.ingest.config import Settings
from tests.api.authn import operator_headers
from tests.api.factories import add_bin, add_controller, add_depot, add_truck, set_device_status
from tests.api.testclient import TestClient
from tests.support.clock import now_utc

if TYPE_CHECKING:
    from collections.abc import Iterator

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def fleet(conn: Conn) -> None:
    now = now_utc()
    add_bin(conn, "B-1", sensor_id="S-1")
    add_bin(conn, "B-2", sensor_id="S-2")
    add_bin(conn, "B-3", sensor_id="S-3")
    add_bin(conn, "B-4", sensor_id="S-4")
    add_bin(conn, "B-5")  # no sensor: not a device
    add_controller(conn, "C-1")
    add_depot(conn)
    add_truck(conn, "T-1")
    add_truck(conn, "T-2")
    # recently seen, status online
    set_device_status(conn, "bin", "S-1", state="online", state_ts=now - timedelta(hours=5),
                      last_seen=now - timedelta(minutes=1))
    # reported offline by its last will, though a message arrived just before
    set_device_status(conn, "bin", "S-2", state="offline", state_ts=now,
                      last_seen=now - timedelta(seconds=10))
    # status says online, but silent for an hour
    set_device_status(conn, "bin", "S-3", state="online", state_ts=now - timedelta(hours=2),
                      last_seen=now - timedelta(hours=1))
    # S-4: no status row at all -> unknown
    set_device_status(conn, "signal", "C-1", last_seen=now - timedelta(seconds=30))
    # T-1: only a status message, no data yet: the status counts as a sign of life
    set_device_status(conn, "truck", "T-1", state="online", state_ts=now - timedelta(minutes=2))
    # T-2: a status row without any time -> unknown


def _states(body: dict[str, Any]) -> dict[str, str]:
    return {item["device_id"]: item["state"] for item in body["items"]}


def test_states(client: TestClient, fleet: None) -> None:
    resp = client.get("/api/v1/devices")
    assert resp.status_code == 200
    body = resp.json()
    assert body["stale_after_s"] == 900
    assert body["next_cursor"] is None
    assert [(i["kind"], i["device_id"]) for i in body["items"]] == [
        ("bin", "S-1"), ("bin", "S-2"), ("bin", "S-3"), ("bin", "S-4"),
        ("signal", "C-1"), ("truck", "T-1"), ("truck", "T-2"),
    ]
    assert _states(body) == {
        "S-1": "online", "S-2": "offline", "S-3": "offline", "S-4": "unknown",
        "C-1": "online", "T-1": "online", "T-2": "unknown",
    }
    s1 = body["items"][0]
    assert s1["entity_id"] == "B-1"
    assert s1["reported_state"] == "online"
    assert s1["last_seen"].endswith("Z")
    assert s1["last_seen_local"].endswith(("+01:00", "+02:00"))
    s4 = body["items"][3]
    assert (s4["reported_state"], s4["state_ts"], s4["last_seen"], s4["last_seen_local"]) == (
        None, None, None, None
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("state=online", ["S-1", "C-1", "T-1"]),
        ("state=offline", ["S-2", "S-3"]),
        ("state=unknown", ["S-4", "T-2"]),
        ("kind=truck", ["T-1", "T-2"]),
        ("kind=bin&state=offline", ["S-2", "S-3"]),
        ("kind=signal&state=offline", []),
    ],
)
def test_filters(client: TestClient, fleet: None, query: str, expected: list[str]) -> None:
    resp = client.get(f"/api/v1/devices?{query}")
    assert resp.status_code == 200, resp.text
    assert [i["device_id"] for i in resp.json()["items"]] == expected


def test_pagination_walks_every_device_once(client: TestClient, fleet: None) -> None:
    every = [i["device_id"] for i in client.get("/api/v1/devices").json()["items"]]
    for limit in (1, 2, 3, 7):
        seen: list[str] = []
        cursor = None
        while True:
            url = f"/api/v1/devices?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            body = client.get(url).json()
            seen += [i["device_id"] for i in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == every


@pytest.fixture
def patient_client(auth_settings: Settings) -> Iterator[TestClient]:
    app = create_app(auth_settings, device_stale_after=timedelta(hours=2))
    with TestClient(app, headers=operator_headers(auth_settings)) as c:
        yield c


def test_staleness_is_configurable(patient_client: TestClient, fleet: None) -> None:
    body = patient_client.get("/api/v1/devices?kind=bin").json()
    assert body["stale_after_s"] == 7200
    assert _states(body) == {"S-1": "online", "S-2": "offline", "S-3": "online", "S-4": "unknown"}


@pytest.mark.parametrize(
    ("query", "field"),
    [("kind=lamp", "kind"), ("state=sleeping", "state"), ("limit=5000", "limit")],
)
def test_bad_filters_are_422(client: TestClient, query: str, field: str) -> None:
    resp = client.get(f"/api/v1/devices?{query}")
    assert resp.status_code == 422
    assert resp.json()["details"][0]["field"] == field
