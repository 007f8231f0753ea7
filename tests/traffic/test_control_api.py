"""The traffic engineers' API for control modes: list, read, switch, and refuse bad input."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from cityops.api.app import create_app
from cityops.api.auth import Principal, current_principal
from cityops.ingest.config import Settings
from tests.api.testclient import TestClient
from tests.traffic.test_control import seed

URL = "/api/v1/traffic/control/modes"


@pytest.fixture
def api(settings: Settings) -> Iterator[tuple[TestClient, dict[str, Principal]]]:
    seed(settings.database_url, "c1", "c2")
    app = create_app(settings)
    caller = {"who": Principal("eng", frozenset({"traffic_engineer"}))}
    app.dependency_overrides[current_principal] = lambda: caller["who"]
    with TestClient(app) as client:
        yield client, caller


def test_modes_default_to_adaptive_and_switches_are_logged(
    api: tuple[TestClient, dict[str, Principal]], settings: Settings
) -> None:
    client, _ = api
    r = client.get(URL)
    assert r.status_code == 200
    assert [(m["controller_id"], m["mode"], m["changed_by"]) for m in r.json()["items"]] == [
        ("c1", "adaptive", None),
        ("c2", "adaptive", None),
    ]
    r = client.put(f"{URL}/c2", json={"mode": "fixed", "reason": " detector repair "})
    assert r.status_code == 200
    body = r.json()
    assert body["mode"] == "fixed" and body["reason"] == "detector repair"
    assert body["changed_by"] == "eng" and body["changed_at"] is not None
    assert client.get(f"{URL}/c2").json()["mode"] == "fixed"
    client.put(f"{URL}/c2", json={"mode": "adaptive", "reason": "repaired"})
    with psycopg.connect(settings.database_url) as conn:
        log = conn.execute(
            "SELECT mode, changed_by, reason FROM signal_control_mode_log ORDER BY id"
        ).fetchall()
    assert log == [("fixed", "eng", "detector repair"), ("adaptive", "eng", "repaired")]


_BAD = [
    ({"mode": "off", "reason": "x"}, "body.mode"),
    ({"mode": "fixed"}, "body.reason"),
    ({"mode": "fixed", "reason": ""}, "body.reason"),
    ({"mode": "fixed", "reason": "   "}, "body.reason"),  # blank once stripped (issue 14)
    ({"mode": "fixed", "reason": "Reparatur\x00"}, "body.reason"),
    ({"mode": "fixed", "reason": "x" * 501}, "body.reason"),
    ({"mode": "fixed", "reason": "x", "extra": 1}, "body.extra"),
]


def test_bad_bodies_are_422(api: tuple[TestClient, dict[str, Principal]]) -> None:
    client, _ = api
    for body, field in _BAD:
        r = client.put(f"{URL}/c1", json=body)
        assert r.status_code == 422, body
        assert r.json()["error"] == "validation_error"
        assert field in [f"{d['location']}.{d['field']}" for d in r.json()["details"]], body
    assert client.put(f"{URL}/c1", content=b"{not json").status_code == 422
    assert client.get(f"{URL}/c1").json()["mode"] == "adaptive"


def test_unknown_controller_is_404_and_bad_id_422(
    api: tuple[TestClient, dict[str, Principal]],
) -> None:
    client, _ = api
    r = client.put(f"{URL}/nope", json={"mode": "fixed", "reason": "x"})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert client.get(f"{URL}/nope").status_code == 404
    assert client.get(f"{URL}/bad%20id").status_code == 422


def test_only_traffic_engineers_and_admins_may_switch(
    api: tuple[TestClient, dict[str, Principal]],
) -> None:
    client, caller = api
    caller["who"] = Principal("disp", frozenset({"dispatcher"}))
    r = client.put(f"{URL}/c1", json={"mode": "fixed", "reason": "x"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert client.get(f"{URL}/c1").json()["mode"] == "adaptive"
    caller["who"] = Principal("t1", frozenset({"truck"}), truck_id="T01")
    assert client.get(URL).status_code == 403
    assert client.get(f"{URL}/c1").status_code == 403
    caller["who"] = Principal("root", frozenset({"admin"}))
    assert client.put(f"{URL}/c1", json={"mode": "fixed", "reason": "x"}).status_code == 200


def test_an_unknown_controller_is_the_same_404_on_every_route(
    api: tuple[TestClient, dict[str, Principal]],
) -> None:
    """One error table (api/errors.py): the same body from the measures and the control
    routes, naming the path parameter."""
    client, _ = api
    bodies = [
        client.get(f"{URL}/nope").json(),
        client.get("/api/v1/traffic/controllers/nope/measures").json(),
    ]
    for body in bodies:
        assert body["error"] == "not_found"
        assert body["message"] == "no signal controller 'nope' in the registry"
        assert body["details"][0]["location"] == "path"
        assert body["details"][0]["field"] == "controller_id"
