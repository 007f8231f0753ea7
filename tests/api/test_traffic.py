"""/api/v1/traffic: controllers, stored measures (paged), detector health, modes and the
Purdue diagram, over a real database filled from the lightweight signal simulator."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from cityops.api.app import create_app
from cityops.api.auth import Principal, current_principal
from cityops.ingest.config import Settings
from cityops.ingest.db import connect
from cityops.traffic import repository as repo
from cityops.traffic.events import clean
from cityops.traffic.purdue import purdue
from cityops.traffic.store import StoreOptions, refresh
from tests.api.testclient import TestClient
from tests.traffic.store_support import CID, at, insert_events, seed_controller, simulate

BASE = f"/api/v1/traffic/controllers/{CID}"
RANGE = {"from": "2025-11-20T07:00:00Z", "to": "2025-11-20T08:30:00Z"}
ENGINEER = Principal("eng", frozenset({"traffic_engineer"}))


@pytest.fixture
def filled(db_url: str) -> str:
    with connect(db_url, autocommit=True) as conn:
        seed_controller(conn)
        insert_events(conn, simulate(5760.0))
        refresh(conn, StoreOptions(late_margin_s=0.0))
    return db_url


def _client(settings: Settings, principal: Principal) -> TestClient:
    app = create_app(settings, db_timeout_s=5.0)
    app.dependency_overrides[current_principal] = lambda: principal
    return TestClient(app)


@pytest.fixture
def api(filled: str, settings: Settings) -> Iterator[TestClient]:
    with _client(settings, ENGINEER) as c:
        yield c


def _get(api: TestClient, path: str, **params: Any) -> Any:
    r = api.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_controllers(api: TestClient) -> None:
    (c,) = _get(api, "/api/v1/traffic/controllers")["items"]
    assert c["controller_id"] == CID and c["phases"] == [2, 4] and c["detectors"] == 4
    assert c["mode"] == "fixed" and c["mode_since"] == "2025-11-20T07:50:00.050000Z"
    assert c["mode_since_local"] == "2025-11-20T08:50:00.050000+01:00"
    assert c["measures_until"] == "2025-11-20T08:30:00Z"


def test_controllers_report_the_live_mode_not_the_stored_history(
    api: TestClient, filled: str
) -> None:
    """The measures store modes up to their watermark (08:30); the list reads newer 131
    events straight from signal_events, the history endpoint keeps the stored rows."""
    with connect(filled, autocommit=True) as conn:
        insert_events(conn, [(at(5500.0), 131, 3)])  # after the watermark, not yet stored
        seed_controller_row(conn, "LSA-002")
    items = _get(api, "/api/v1/traffic/controllers")["items"]
    c = next(i for i in items if i["controller_id"] == CID)
    assert c["mode"] == "adaptive" and c["mode_since"] == "2025-11-20T08:31:40Z"
    assert c["measures_until"] == "2025-11-20T08:30:00Z"
    other = next(i for i in items if i["controller_id"] == "LSA-002")
    assert other["mode"] is None and other["mode_since"] is None
    history = _get(api, f"{BASE}/modes", **{"from": RANGE["from"], "to": "2025-11-20T09:00:00Z"})
    assert [m["mode"] for m in history["items"]][-1] == "fixed"
    with connect(filled, autocommit=True) as conn:
        # two in one tenth (older controllers logged that): the lower, never overstated
        insert_events(conn, [(at(5600.0), 131, 3), (at(5600.0), 131, 1)])
        insert_events(conn, [(at(5650.0), 131, 7)])
        c = next(i for i in repo.list_controllers(conn) if i.controller_id == CID)
        assert (c.pattern, c.mode, c.mode_since) == (7, "unknown", at(5650.0))
        conn.execute("DELETE FROM signal_events WHERE ts >= %s", (at(5650.0),))
        c = next(i for i in repo.list_controllers(conn) if i.controller_id == CID)
        assert (c.mode, c.mode_since) == ("fixed", at(5600.0))


def seed_controller_row(conn: Any, cid: str) -> None:
    conn.execute(
        "INSERT INTO signal_controllers (controller_id, name, geom)"
        " VALUES (%s, 'no events', ST_SetSRID(ST_MakePoint(13.4, 52.5), 4326))",
        (cid,),
    )


def test_measures_are_the_stored_rows_paged(api: TestClient, filled: str) -> None:
    body = _get(api, f"{BASE}/measures", **RANGE, limit=5)
    assert len(body["items"]) == 5 and body["next_cursor"]
    items = body["items"]
    while body["next_cursor"]:
        body = _get(api, f"{BASE}/measures", **RANGE, limit=5, cursor=body["next_cursor"])
        items += body["items"]
    assert len(items) == 12
    with connect(filled) as conn:
        rows = repo.load_measures(conn, CID, at(0), at(5400))
    assert [(i["phase"], i["volume"], i["pct_aog"], i["split_failures"]) for i in items] == [
        (r.phase, r.volume, r.pct_aog, r.split_failures) for r in rows
    ]
    first = items[0]
    assert first["bin_start"] == "2025-11-20T07:00:00Z"
    assert first["bin_start_local"] == "2025-11-20T08:00:00+01:00"
    only4 = _get(api, f"{BASE}/measures", **RANGE, phase=4)["items"]
    assert len(only4) == 6 and {i["phase"] for i in only4} == {4}


def test_detector_health(api: TestClient) -> None:
    body = _get(api, f"{BASE}/detectors/health", **RANGE)
    by = {d["channel"]: d for d in body["detectors"]}
    assert sorted(by) == [1, 2, 3, 9]
    assert by[9]["status"] == "no_activity" and by[9]["actuations"] == 0
    assert by[2]["status"] == "ok" and by[2]["actuations"] > 100 and by[2]["bins"] == 6


def test_modes(api: TestClient) -> None:
    body = _get(
        api, f"{BASE}/modes", **{"from": "2025-11-20T07:30:00Z", "to": "2025-11-20T08:30:00Z"}
    )
    assert [(m["mode"], m["ts"]) for m in body["items"]] == [
        ("adaptive", "2025-11-20T07:20:00.050000Z"),
        ("fixed", "2025-11-20T07:50:00.050000Z"),
    ]


def test_purdue(api: TestClient, filled: str) -> None:
    params = {"phase": 2, "from": "2025-11-20T07:30:00Z", "to": "2025-11-20T08:00:00Z"}
    body = _get(api, f"{BASE}/purdue", **params)
    assert body["phase"] == 2 and len(body["cycles"]) in (29, 30)
    c = body["cycles"][0]
    assert (c["green_s"], c["yellow_end_s"], c["length_s"]) == (30.0, 34.0, 60.5)
    assert body["arrivals"] and all(0 <= a["offset_s"] < 60.5 for a in body["arrivals"])
    assert all(a["on_green"] == (a["offset_s"] < 30) for a in body["arrivals"])
    # the same as the pure function over the same events
    with connect(filled) as conn:
        config = repo.load_config(conn, CID)
        events = repo.load_events(conn, CID, at(1800 - 300), at(3600 + 300))
    d = purdue(clean(events, config).events, config, 2, at(1800).timestamp(), at(3600).timestamp())
    assert len(body["arrivals"]) == len(d.arrivals)
    assert body["pct_on_green"] == pytest.approx(d.pct_on_green)
    assert body["arrivals"][0]["ts"] == datetime.fromtimestamp(
        d.arrivals[0].ts, UTC
    ).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        (
            f"{BASE}/measures",
            {"from": "2025-11-20T08:00:00Z", "to": "2025-11-20T07:00:00Z"},
            422,
            "from",
        ),
        (f"{BASE}/measures", {"from": "2025-11-20T08:00:00"}, 422, "from"),  # no offset
        (f"{BASE}/measures", {**RANGE, "phase": 6}, 422, "phase"),
        (f"{BASE}/measures", {**RANGE, "cursor": "garbage"}, 422, "cursor"),
        (
            f"{BASE}/measures",
            {"from": "2024-01-01T00:00:00Z", "to": "2025-11-20T00:00:00Z"},
            422,
            "to",
        ),
        (
            f"{BASE}/detectors/health",
            {"from": "2025-09-01T00:00:00Z", "to": "2025-11-20T00:00:00Z"},
            422,
            "to",
        ),
        (f"{BASE}/purdue", {"phase": 2, **RANGE}, 422, "to"),  # 90 min is fine, see below
        (f"{BASE}/purdue", {"from": "2025-11-20T07:00:00Z"}, 422, "phase"),
        (f"{BASE}/purdue", {"phase": 4, "speed_kmh": 0}, 422, "speed_kmh"),
        ("/api/v1/traffic/controllers/nope/measures", {}, 404, None),
        ("/api/v1/traffic/controllers/nope/purdue", {"phase": 2}, 404, None),
        ("/api/v1/traffic/controllers/bad%20id/measures", {}, 422, "controller_id"),
    ],
)
def test_bad_requests_are_4xx_with_a_message(
    api: TestClient, path: str, params: dict[str, Any], status: int, field: str | None
) -> None:
    if path.endswith("/purdue") and params.get("to") == RANGE["to"]:
        params = {**params, "from": "2025-11-20T05:00:00Z"}  # 3.5 hours: too long
    r = api.get(path, params=params)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] and body["message"]
    if field is not None:
        assert field in {d["field"] for d in body["details"]}, body
    else:
        assert "nope" in body["message"]


@pytest.mark.parametrize("roles", [{"dispatcher"}, {"admin"}, {"traffic_engineer"}])
def test_readers(filled: str, settings: Settings, roles: set[str]) -> None:
    with _client(settings, Principal("x", frozenset(roles))) as c:
        assert c.get("/api/v1/traffic/controllers").status_code == 200


@pytest.mark.parametrize("roles", [{"truck"}, {"roadworks_editor"}, {"public"}, set()])
def test_others_are_forbidden(filled: str, settings: Settings, roles: set[str]) -> None:
    with _client(settings, Principal("x", frozenset(roles))) as c:
        for path in (
            "/api/v1/traffic/controllers",
            f"{BASE}/measures",
            f"{BASE}/purdue?phase=2",
            f"{BASE}/detectors/health",
            f"{BASE}/modes",
        ):
            r = c.get(path)
            assert r.status_code == 403, (path, r.text)
            assert "traffic_engineer" in r.json()["message"]
