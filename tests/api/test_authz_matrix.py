"""Who may call what: every route of the real app against every role, on a real database.

`MATRIX` has one row per route (method and path template, as the app declares them) with
sample requests and the callers each one admits. Every caller is tried on every sample:

* admitted: the answer is neither 401 nor 403 (nor a server error): a 404 for an unknown
  id or a 409 for a step the work cannot take still shows that the caller got through;
* not admitted, without credentials: 401 with `WWW-Authenticate` and the JSON error body;
* not admitted, signed in: 403 with the JSON error body.

`test_every_route_has_a_row` enumerates the app's routes and fails for a route missing
from the table (or a row whose route is gone), so no endpoint can be added unguarded.

Callers authenticate for real: some with HS256 tokens, truck A and the editor of X with
API keys stored in the database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

import psycopg
import pytest
from fastapi.routing import iter_route_contexts
from psycopg import sql
from starlette.routing import Mount

from cityops.api.app import create_app
from cityops.api.credentials import create_key
from cityops.api.roadworks.context import MapSettings, RoadworksApi, roadworks_api
from cityops.ingest.config import Settings
from cityops.ingest.contract import RouteCommand
from cityops.roadworks.config import load_roadworks_settings
from cityops.roadworks.schemas import spec_to_payload
from cityops.routing.repository import next_version, store_route
from tests.api.authn import bearer, operator_headers, with_auth
from tests.api.testclient import TestClient
from tests.conftest import ADMIN_URL, MQTT_URL, url_with
from tests.roadworks.factories import NOW, Clock, make_spec, service
from tests.support.clock import now_utc
from tests.support.ingest import add_truck

ORG_X: Final = "Stadtwerke"
ORG_Y: Final = "Glasfaser Plus"
DAY: Final = date(2026, 11, 23)
MANAGE: Final = "/api/v1/roadworks/manage"

# The callers: every role, plus a second truck and an editor of another organisation.
CALLERS: Final = (
    "public",
    "truck_a",
    "truck_b",
    "dispatcher",
    "editor_x",
    "editor_y",
    "traffic_engineer",
    "admin",
)
EVERYONE: Final = frozenset(CALLERS)
STAFF: Final = frozenset({"dispatcher", "traffic_engineer", "admin"})  # city staff
DISPATCH: Final = frozenset({"dispatcher", "admin"})
ADMIN: Final = frozenset({"admin"})
FLEET: Final = DISPATCH | {"traffic_engineer"}
EDITORS: Final = STAFF | {"editor_x", "editor_y"}
OF_X: Final = STAFF | {"editor_x"}  # a work (or payload) whose promoter is X
OF_Y: Final = STAFF | {"editor_y"}
TRUCK_A: Final = DISPATCH | {"truck_a"}  # truck T01
TRUCK_B: Final = DISPATCH | {"truck_b"}  # truck T02


@dataclass(frozen=True)
class Sample:
    """One request (`{x}` and `{y}` in the path become the works of X and Y)."""

    path: str
    allowed: frozenset[str]
    json: Any = None
    stream: bool = False


@dataclass(frozen=True)
class Row:
    samples: tuple[Sample, ...]


def work_payload(promoter: str, y: float = 0.0) -> dict[str, Any]:
    return dict(spec_to_payload(make_spec(promoter=promoter, y=y)))


def one(path: str, allowed: frozenset[str], **kw: Any) -> Row:
    return Row((Sample(path, allowed, **kw),))


EVENT: Final = {"ts": "2026-11-23T06:00:00Z", "kind": "stop_done", "bin_id": "B1"}
DECISION: Final = {"decision": "accepted", "note": "bekannt"}

MATRIX: Final[dict[tuple[str, str], Row]] = {
    # open: documentation, health, the public roadworks map, search and feeds
    ("GET", "/openapi.json"): one("/openapi.json", EVERYONE),
    ("GET", "/docs"): one("/docs", EVERYONE),
    ("GET", "/docs/oauth2-redirect"): one("/docs/oauth2-redirect", EVERYONE),
    ("GET", "/health"): one("/health", EVERYONE),
    ("GET", "/api/v1/roadworks"): one("/api/v1/roadworks", EVERYONE),
    ("GET", "/api/v1/roadworks/{reference}"): one("/api/v1/roadworks/{x}", EVERYONE),
    ("GET", "/api/v1/roadworks/feeds/{kind}"): one("/api/v1/roadworks/feeds/geojson", EVERYONE),
    ("GET", "/api/v1/roadworks/overview"): one("/api/v1/roadworks/overview", EVERYONE),
    ("GET", "/api/v1/roadworks/overview/{day}"): one(
        "/api/v1/roadworks/overview/2026-11-23", EVERYONE
    ),
    ("GET", "/roadworks"): one("/roadworks", EVERYONE),
    ("GET", "/roadworks/{reference}"): one("/roadworks/{x}", EVERYONE),
    ("MOUNT", "/static/leaflet"): one("/static/leaflet/leaflet.js", EVERYONE),
    ("MOUNT", "/static/roadworks"): one("/static/roadworks/map.js", EVERYONE),
    ("MOUNT", "/static/docs"): one("/static/docs/swagger-ui-bundle.js", EVERYONE),
    # the data plane: bins for dispatchers; devices and counts also for traffic engineers
    ("GET", "/api/v1/bins"): one("/api/v1/bins", DISPATCH),
    ("GET", "/api/v1/bins/{bin_id}"): one("/api/v1/bins/B1", DISPATCH),
    ("GET", "/api/v1/bins/{bin_id}/readings"): one("/api/v1/bins/B1/readings", DISPATCH),
    ("GET", "/api/v1/devices"): one("/api/v1/devices", FLEET),
    # the device registry: admins only
    ("GET", "/api/v1/registry/{kind}"): one("/api/v1/registry/bins", ADMIN),
    ("GET", "/api/v1/registry/{kind}/{record_id}"): one("/api/v1/registry/sites/D1", ADMIN),
    ("PUT", "/api/v1/registry/{kind}/{record_id}"): one(
        "/api/v1/registry/sites/D9", ADMIN,
        json={"name": "Wertstoffhof", "kind": "disposal", "lon": 24.945, "lat": 60.17},
    ),
    ("DELETE", "/api/v1/registry/{kind}/{record_id}"): one("/api/v1/registry/bins/B404", ADMIN),
    ("GET", "/api/v1/stats"): one("/api/v1/stats", FLEET),
    # trucks: each truck only itself; dispatchers every truck
    ("GET", "/api/v1/trucks/{truck_id}/route"): Row(
        (
            Sample("/api/v1/trucks/T01/route?date=2026-11-23", TRUCK_A),
            Sample("/api/v1/trucks/T02/route?date=2026-11-23", TRUCK_B),
        )
    ),
    ("GET", "/api/v1/trucks/{truck_id}/route/stream"): Row(
        (
            Sample("/api/v1/trucks/T01/route/stream?date=2026-11-23", TRUCK_A, stream=True),
            Sample("/api/v1/trucks/T02/route/stream?date=2026-11-23", TRUCK_B, stream=True),
        )
    ),
    ("POST", "/api/v1/trucks/{truck_id}/events"): Row(
        (
            Sample("/api/v1/trucks/T01/events", TRUCK_A, json=EVENT),
            Sample("/api/v1/trucks/T02/events", TRUCK_B, json=EVENT),
        )
    ),
    ("GET", "/api/v1/routes"): one("/api/v1/routes?date=2026-11-23", DISPATCH),
    # roadworks editing: an editor only its organisation's works; city staff every work
    ("GET", f"{MANAGE}/works"): one(f"{MANAGE}/works", EDITORS),
    ("POST", f"{MANAGE}/works"): Row(
        (
            Sample(f"{MANAGE}/works", OF_X, json=work_payload(ORG_X, y=300)),
            Sample(f"{MANAGE}/works", OF_Y, json=work_payload(ORG_Y, y=400)),
        )
    ),
    ("GET", f"{MANAGE}/works/{{reference}}"): Row(
        (
            Sample(f"{MANAGE}/works/{{x}}", OF_X),
            Sample(f"{MANAGE}/works/{{y}}", OF_Y),
        )
    ),
    ("PUT", f"{MANAGE}/works/{{reference}}"): Row(
        (
            Sample(f"{MANAGE}/works/{{x}}", OF_X, json=work_payload(ORG_X)),
            Sample(f"{MANAGE}/works/{{y}}", OF_Y, json=work_payload(ORG_Y, y=100)),
        )
    ),
    ("PATCH", f"{MANAGE}/works/{{reference}}"): Row(
        (
            Sample(f"{MANAGE}/works/{{x}}", OF_X, json={"description": "geändert"}),
            Sample(f"{MANAGE}/works/{{y}}", OF_Y, json={"description": "geändert"}),
        )
    ),
    ("POST", f"{MANAGE}/works/{{reference}}/transitions"): Row(
        (
            Sample(f"{MANAGE}/works/{{x}}/transitions", OF_X, json={"to": "submitted"}),
            Sample(f"{MANAGE}/works/{{y}}/transitions", OF_Y, json={"to": "submitted"}),
        )
    ),
    ("POST", f"{MANAGE}/works/{{reference}}/submit"): Row(
        (
            Sample(f"{MANAGE}/works/{{x}}/submit", OF_X),
            Sample(f"{MANAGE}/works/{{y}}/submit", OF_Y),
        )
    ),
    ("GET", f"{MANAGE}/works/{{reference}}/history"): Row(
        (
            Sample(f"{MANAGE}/works/{{x}}/history", OF_X),
            Sample(f"{MANAGE}/works/{{y}}/history", OF_Y),
        )
    ),
    ("GET", f"{MANAGE}/works/{{reference}}/findings"): Row(
        (
            Sample(f"{MANAGE}/works/{{x}}/findings", OF_X),
            Sample(f"{MANAGE}/works/{{y}}/findings", OF_Y),
        )
    ),
    ("POST", f"{MANAGE}/preview"): Row(
        (
            Sample(f"{MANAGE}/preview", OF_X, json=work_payload(ORG_X, y=500)),
            Sample(f"{MANAGE}/preview", OF_Y, json=work_payload(ORG_Y, y=500)),
        )
    ),
    # traffic: measures and modes for traffic engineers and dispatchers; control switched by
    # traffic engineers (and admins) only
    ("GET", "/api/v1/traffic/controllers"): one("/api/v1/traffic/controllers", FLEET),
    ("GET", "/api/v1/traffic/controllers/{controller_id}/measures"): one(
        "/api/v1/traffic/controllers/C01/measures", FLEET
    ),
    ("GET", "/api/v1/traffic/controllers/{controller_id}/detectors/health"): one(
        "/api/v1/traffic/controllers/C01/detectors/health", FLEET
    ),
    ("GET", "/api/v1/traffic/controllers/{controller_id}/modes"): one(
        "/api/v1/traffic/controllers/C01/modes", FLEET
    ),
    ("GET", "/api/v1/traffic/controllers/{controller_id}/purdue"): one(
        "/api/v1/traffic/controllers/C01/purdue", FLEET
    ),
    ("GET", "/api/v1/traffic/control/modes"): one("/api/v1/traffic/control/modes", FLEET),
    ("GET", "/api/v1/traffic/control/modes/{controller_id}"): one(
        "/api/v1/traffic/control/modes/C01", FLEET
    ),
    ("PUT", "/api/v1/traffic/control/modes/{controller_id}"): one(
        "/api/v1/traffic/control/modes/C01",
        frozenset({"traffic_engineer", "admin"}),
        json={"mode": "fixed", "reason": "Wartung"},
    ),
    ("GET", f"{MANAGE}/findings"): one(f"{MANAGE}/findings", EDITORS),
    ("PUT", f"{MANAGE}/findings/{{finding_id}}/decision"): one(
        f"{MANAGE}/findings/1/decision", STAFF, json=DECISION
    ),
}


# -- the app, its data and the callers ------------------------------------------------------


def _route(truck_id: str, version: int) -> RouteCommand:
    t0 = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
    stop = {"lat": 50.10, "lon": 8.76, "eta": t0, "etd": t0, "load_after_l": 0}
    return RouteCommand.model_validate(
        {
            "truck_id": truck_id,
            "plan_date": DAY,
            "version": version,
            "created_at": now_utc(),
            "reason": "daily plan",
            "engine": "test",
            "distance_m": 100.0,
            "duration_s": 60.0,
            "stops": [
                {"seq": 0, "kind": "start", "site_id": "D1", **stop},
                {"seq": 1, "kind": "end", "site_id": "D1", **stop},
            ],
            "geometry": {"type": "LineString", "coordinates": [[8.76, 50.10], [8.761, 50.101]]},
        }
    )


@dataclass
class World:
    client: TestClient
    headers: dict[str, dict[str, str]]
    works: dict[str, str]  # "x"/"y" -> reference
    db_url: str


@pytest.fixture(scope="module")
def world(template_db: str) -> Iterator[World]:
    name = f"cityops_authz_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    url = url_with(ADMIN_URL, dbname=name)
    try:
        add_truck(url, "T01")
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO trucks (truck_id, name, capacity_l, depot_id) "
                "VALUES ('T02', 'Truck', 20000, 'D1')"
            )
            for truck in ("T01", "T02"):
                store_route(conn, _route(truck, next_version(conn, truck, DAY)))
        with psycopg.connect(url, autocommit=True) as conn:
            truck_key = create_key(conn, "tablet T01", ["truck"], truck_id="T01").clear
            editor_key = create_key(
                conn, "Stadtwerke GIS", ["roadworks_editor"], organisation=ORG_X
            ).clear
        settings = with_auth(
            Settings(
                database_url=url, mqtt_url=MQTT_URL, topic_prefix=f"test-{uuid.uuid4().hex[:10]}"
            )
        )
        headers = {
            "public": {},
            "truck_a": {"X-API-Key": truck_key},
            "truck_b": bearer(settings, "truck", sub="tablet-T02", truck="T02"),
            "dispatcher": bearer(settings, "dispatcher", sub="disp"),
            "editor_x": {"Authorization": f"ApiKey {editor_key}"},
            "editor_y": bearer(settings, "roadworks_editor", sub="lukas", organisation=ORG_Y),
            "traffic_engineer": bearer(settings, "traffic_engineer", sub="eng"),
            "admin": bearer(settings, "admin", sub="root"),
        }
        app = create_app(settings, db_timeout_s=5.0)
        ctx = RoadworksApi(
            load_roadworks_settings(public_base_url="https://baustellen.example.org"),
            MapSettings(),
            service(Clock(NOW)),
        )
        app.dependency_overrides[roadworks_api] = lambda: ctx
        with TestClient(app) as client:
            works = {}
            for key, org, y in (("x", ORG_X, 0.0), ("y", ORG_Y, 100.0)):
                r = client.post(
                    f"{MANAGE}/works", json=work_payload(org, y), headers=operator_headers(settings)
                )
                assert r.status_code == 201, r.text
                works[key] = r.json()["reference"]
            yield World(client, headers, works, url)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _call(world: World, method: str, sample: Sample, caller: str) -> tuple[int, Any, Any]:
    """(status, headers, JSON body or None) of one request."""
    path = sample.path.replace("{x}", world.works["x"]).replace("{y}", world.works["y"])
    headers = world.headers[caller]
    if sample.stream:
        with world.client.stream(method, path, headers=headers) as resp:
            body = resp.read() if resp.status_code != 200 else b""
            return resp.status_code, resp.headers, _json(body)
    resp = world.client.request(
        "GET" if method == "MOUNT" else method, path, headers=headers, json=sample.json
    )
    return resp.status_code, resp.headers, _json(resp.content)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _problems(world: World, method: str, sample: Sample) -> list[str]:
    out = []
    for caller in CALLERS:
        status, headers, body = _call(world, method, sample, caller)
        where = f"{caller} {method} {sample.path}: {status}"
        if caller in sample.allowed:
            if status in (401, 403) or status >= 500:
                out.append(f"{where}, expected to be let through ({body})")
        elif caller == "public":
            if status != 401:
                out.append(f"{where}, expected 401")
            elif (
                "Bearer" not in headers.get("www-authenticate", "")
                or not body
                or body.get("error") != "unauthenticated"
            ):
                out.append(f"{where} without WWW-Authenticate or the JSON error body")
        elif status != 403:
            out.append(f"{where}, expected 403")
        elif not body or body.get("error") != "forbidden" or not body.get("message"):
            out.append(f"{where} without the JSON error body ({body})")
    return out


@pytest.mark.parametrize(("method", "path"), list(MATRIX), ids=[f"{m} {p}" for m, p in MATRIX])
def test_route_admits_exactly_its_roles(world: World, method: str, path: str) -> None:
    problems = [p for s in MATRIX[(method, path)].samples for p in _problems(world, method, s)]
    assert not problems, "\n".join(problems)


def test_every_route_has_a_row(world: World) -> None:
    declared: set[tuple[str, str]] = set()
    for ctx in iter_route_contexts(world.client.app.routes):  # type: ignore[attr-defined]
        if isinstance(ctx.route, Mount):
            declared.add(("MOUNT", str(ctx.path)))
            continue
        for method in ctx.methods or ():
            if method != "HEAD":
                declared.add((method, str(ctx.path)))
    missing = sorted(declared - set(MATRIX))
    stale = sorted(set(MATRIX) - declared)
    assert not missing, f"routes without a row in MATRIX (who may call them?): {missing}"
    assert not stale, f"rows in MATRIX for routes the app no longer has: {stale}"


def test_truck_a_is_refused_truck_bs_route_and_editor_x_org_ys_work(world: World) -> None:
    """The two resource-bound cases spelled out (they are also rows of the matrix)."""
    r = world.client.get(
        "/api/v1/trucks/T02/route?date=2026-11-23", headers=world.headers["truck_a"]
    )
    assert r.status_code == 403 and "T02" in r.json()["message"]
    assert (
        world.client.get(
            "/api/v1/trucks/T01/route?date=2026-11-23", headers=world.headers["truck_a"]
        ).json()["truck_id"]
        == "T01"
    )
    r = world.client.get(f"{MANAGE}/works/{world.works['y']}", headers=world.headers["editor_x"])
    assert r.status_code == 403 and ORG_Y in r.json()["message"]
    own = world.client.get(f"{MANAGE}/works", headers=world.headers["editor_x"]).json()
    assert own["items"] and {w["spec"]["promoter"] for w in own["items"]} == {ORG_X}


def test_dispatcher_lists_all_routes_of_a_day_paginated(world: World) -> None:
    h = world.headers["dispatcher"]
    first = world.client.get("/api/v1/routes?date=2026-11-23&limit=1", headers=h).json()
    assert [r["truck_id"] for r in first["items"]] == ["T01"] and first["next_cursor"]
    assert first["items"][0]["geometry"]["coordinates"] == []  # left out unless asked for
    second = world.client.get(
        f"/api/v1/routes?date=2026-11-23&limit=1&cursor={first['next_cursor']}&geometry=true",
        headers=h,
    ).json()
    assert [r["truck_id"] for r in second["items"]] == ["T02"] and second["next_cursor"] is None
    assert second["items"][0]["geometry"]["coordinates"]
    other_day = world.client.get(
        f"/api/v1/routes?date=2026-11-24&cursor={first['next_cursor']}", headers=h
    )
    assert other_day.status_code == 422
    assert world.client.get("/api/v1/routes?date=2026-11-24", headers=h).json()["items"] == []
