"""The truck tablet's endpoints against the real database and broker."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from cityops.api.app import create_app
from cityops.api.auth import Principal, current_principal
from cityops.api.credentials import create_key, revoke_key
from cityops.api.errors import AuthProviderUnavailableError
from cityops.ingest.config import Settings
from cityops.ingest.contract import RouteCommand
from cityops.routing.repository import next_version, store_route
from tests.api.authn import bearer, with_auth
from tests.api.testclient import TestClient
from tests.support.clock import now_utc
from tests.support.ingest import add_truck

DAY = date(2026, 11, 23)


def _route(
    truck_id: str, version: int, reason: str = "daily plan", day: date = DAY
) -> RouteCommand:
    t0 = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=5)
    stops = [
        {
            "seq": 0,
            "kind": "start",
            "site_id": "D1",
            "lat": 50.10,
            "lon": 8.76,
            "eta": t0,
            "etd": t0,
            "load_after_l": 0,
        },
        {
            "seq": 1,
            "kind": "stop",
            "bin_id": "B1",
            "lat": 50.101,
            "lon": 8.761,
            "street": "Kaiserstraße",
            "eta": t0 + timedelta(minutes=10),
            "etd": t0 + timedelta(minutes=12),
            "load_after_l": 240,
        },
        {
            "seq": 2,
            "kind": "end",
            "site_id": "D1",
            "lat": 50.10,
            "lon": 8.76,
            "eta": t0 + timedelta(minutes=25),
            "etd": t0 + timedelta(minutes=25),
            "load_after_l": 240,
        },
    ]
    return RouteCommand.model_validate(
        {
            "truck_id": truck_id,
            "plan_date": day,
            "version": version,
            "created_at": now_utc(),
            "reason": reason,
            "engine": "test",
            "distance_m": 2400.0,
            "duration_s": 1500.0,
            "stops": stops,
            "geometry": {"type": "LineString", "coordinates": [[8.76, 50.10], [8.761, 50.101]]},
        }
    )


def _store(db_url: str, truck_id: str, reason: str = "daily plan", day: date = DAY) -> int:
    with psycopg.connect(db_url) as conn:
        version = next_version(conn, truck_id, day)
        store_route(conn, _route(truck_id, version, reason, day))
    return version


def test_current_route_with_etag_and_304(db_url: str, client: TestClient) -> None:
    add_truck(db_url, "T1")
    assert (
        client.get("/api/v1/trucks/T1/route", params={"date": DAY.isoformat()}).status_code == 404
    )
    _store(db_url, "T1")
    first = client.get("/api/v1/trucks/T1/route", params={"date": DAY.isoformat()})
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert first.json()["version"] == 1 and [s["kind"] for s in first.json()["stops"]] == [
        "start",
        "stop",
        "end",
    ]
    same = client.get(
        "/api/v1/trucks/T1/route", params={"date": DAY.isoformat()}, headers={"If-None-Match": etag}
    )
    assert same.status_code == 304 and same.headers["etag"] == etag
    _store(db_url, "T1", reason="bin B7 overflowing")
    changed = client.get(
        "/api/v1/trucks/T1/route", params={"date": DAY.isoformat()}, headers={"If-None-Match": etag}
    )
    assert changed.status_code == 200
    assert changed.json()["version"] == 2 and changed.json()["reason"] == "bin B7 overflowing"
    assert changed.headers["etag"] != etag


def test_bad_input_gets_4xx(client: TestClient) -> None:
    assert client.get("/api/v1/trucks/T%201/route").status_code == 422
    assert client.get("/api/v1/trucks/T1/route", params={"date": "tomorrow"}).status_code == 422
    r = client.post(
        "/api/v1/trucks/T1/events",
        json={"ts": "2026-11-23T06:00:00Z", "kind": "stop_skipped", "bin_id": "B1"},
    )
    assert r.status_code == 422 and "reason" in r.json()["message"]
    r = client.post(
        "/api/v1/trucks/T1/events",
        json={"ts": "2026-11-23T06:00:00", "kind": "stop_done", "bin_id": "B1"},
    )
    assert r.status_code == 422


def test_a_truck_sees_only_its_own_route(db_url: str, client: TestClient) -> None:
    add_truck(db_url, "T1")
    _store(db_url, "T1")
    app: Any = client.app
    app.dependency_overrides[current_principal] = lambda: Principal(
        "tablet-T2", frozenset({"truck"}), truck_id="T2"
    )
    try:
        r = client.get("/api/v1/trucks/T1/route", params={"date": DAY.isoformat()})
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        app.dependency_overrides[current_principal] = lambda: Principal(
            "tablet-T1", frozenset({"truck"}), truck_id="T1"
        )
        assert (
            client.get("/api/v1/trucks/T1/route", params={"date": DAY.isoformat()}).status_code
            == 200
        )
    finally:
        app.dependency_overrides.clear()


@contextmanager
def _route_stream(
    client: TestClient, headers: dict[str, str], day: date = DAY
) -> Iterator[Any]:
    """Truck T1's route stream for `day`, open (200)."""
    with client.stream(
        "GET",
        "/api/v1/trucks/T1/route/stream",
        params={"date": day.isoformat()},
        headers=headers,
    ) as resp:
        assert resp.status_code == 200
        yield resp


def test_stream_sends_the_newest_version_first(db_url: str, client: TestClient) -> None:
    add_truck(db_url, "T1")
    _store(db_url, "T1")
    _store(db_url, "T1", reason="re-plan")

    def first_route_event(headers: dict[str, str]) -> dict[str, Any] | None:
        with _route_stream(client, headers) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            deadline = time.monotonic() + 5
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    return dict(json.loads(line[6:]))
                if time.monotonic() > deadline:
                    return None
        return None

    event = first_route_event({})
    assert event is not None and event["version"] == 2 and event["reason"] == "re-plan"


def test_stream_resumes_after_last_event_id(db_url: str, client: TestClient) -> None:
    """A tablet that reconnects with the id of the version it has (N) gets N+1 when it
    exists, never N again; without a newer one it waits and gets N+1 once it is stored."""
    add_truck(db_url, "T1")
    _store(db_url, "T1")
    _store(db_url, "T1", reason="re-plan")

    first = _first_route_event(client, None)
    assert first is not None and first[1]["version"] == 2  # the current version
    last_id = first[0]
    behind = _first_route_event(client, last_id.replace(":2", ":1"))
    assert behind is not None and behind[1]["version"] == 2  # the newer one at once
    # up to date with version 2: the next event is version 3, stored after reconnecting
    again = _first_route_event(client, last_id, on_open=lambda: _store(db_url, "T1", "B9 full"))
    assert again is not None and again[1]["version"] == 3 and again[1]["reason"] == "B9 full"
    assert again[0] != last_id
    for bad_id in ("v2", "2026-13-01:2", "2026-11-23:x"):
        bad = client.get(
            "/api/v1/trucks/T1/route/stream",
            params={"date": DAY.isoformat()},
            headers={"Last-Event-ID": bad_id},
        )
        assert bad.status_code == 422 and bad.json()["error"], bad_id


def test_a_stream_resumed_on_the_next_day_starts_with_that_days_route(
    db_url: str, client: TestClient
) -> None:
    """The id a tablet kept from yesterday's stream (version 3 of yesterday) must not hide
    today's version 1 and 2 when it reconnects (EventSource resends its last id)."""
    add_truck(db_url, "T1")
    for _ in range(3):
        _store(db_url, "T1", day=DAY - timedelta(days=1))
    _store(db_url, "T1")
    yesterday = _first_route_event(client, None, day=DAY - timedelta(days=1))
    assert yesterday is not None and yesterday[1]["version"] == 3
    today = _first_route_event(client, yesterday[0])
    assert today is not None, "today's route is sent although its version is lower"
    assert today[1]["version"] == 1 and today[1]["plan_date"] == DAY.isoformat()


def _first_route_event(
    client: TestClient,
    last_id: str | None,
    *,
    day: date = DAY,
    on_open: Callable[[], object] | None = None,
) -> tuple[str, dict[str, Any]] | None:
    """(id, route) of the first route event of the truck's stream, or None within 10 s;
    `on_open` runs once the stream is open (its first line, the retry hint, arrived)."""
    headers = {} if last_id is None else {"Last-Event-ID": last_id}
    with _route_stream(client, headers, day) as resp:
        event_id = ""
        deadline = time.monotonic() + 10
        for line in resp.iter_lines():
            if line.startswith("retry:") and on_open is not None:
                on_open()
            if line.startswith("id: "):
                event_id = line[4:]
            if line.startswith("data: "):
                return event_id, dict(json.loads(line[6:]))
            if time.monotonic() > deadline:
                break
    return None


def test_stop_events_are_published_on_the_trucks_topic(
    settings: Settings, client: TestClient
) -> None:
    got: list[tuple[str, bytes]] = []
    ready = threading.Event()
    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = lambda _c, _u, m: got.append((m.topic, m.payload))
    sub.on_subscribe = lambda *_a: ready.set()
    sub.connect(settings.mqtt_host, settings.mqtt_port)
    sub.loop_start()
    sub.subscribe(f"{settings.topic_prefix}/v1/truck/+/events", qos=1)
    assert ready.wait(5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the API's publisher connects in the background
        r = client.post(
            "/api/v1/trucks/T1/events",
            json={
                "ts": "2026-11-23T06:00:00Z",
                "kind": "stop_skipped",
                "bin_id": "B1",
                "reason": "blocked access",
            },
        )
        if r.status_code != 503:
            break
        time.sleep(0.2)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.disconnect()
    sub.loop_stop()
    assert got and got[0][0] == f"{settings.topic_prefix}/v1/truck/T1/events"
    assert json.loads(got[0][1])["reason"] == "blocked access"


def _stream_until_closed(client: TestClient, headers: dict[str, str],
                         on_route: Callable[[], object] = lambda: None) -> list[str]:
    """Every line of the truck's stream until the server closes it (at most 20 s)."""
    lines: list[str] = []
    with _route_stream(client, headers) as resp:
        deadline = time.monotonic() + 20
        for line in resp.iter_lines():
            lines.append(line)
            if line.startswith("event: route"):
                on_route()
            assert time.monotonic() < deadline, f"the stream stayed open: {lines}"
    return lines


def _closing_event(lines: list[str]) -> dict[str, Any]:
    assert "event: unauthorized" in lines, lines
    data = lines[lines.index("event: unauthorized") + 1]
    return dict(json.loads(data.removeprefix("data: ")))


def test_a_stream_ends_when_its_token_expires(auth_settings: Settings, db_url: str) -> None:
    """A token that expired at 33 s still received routes at 47 s (issue 14)."""
    add_truck(db_url, "T1")
    _store(db_url, "T1")
    settings = with_auth(auth_settings, auth_leeway_s=0.0, api_stream_recheck_s=1.0)
    with TestClient(create_app(settings, db_timeout_s=5.0)) as client:
        headers = bearer(settings, "truck", sub="tablet-T1", truck="T1", ttl=timedelta(seconds=2))
        lines = _stream_until_closed(client, headers)
    assert any(line.startswith("event: route") for line in lines)  # served while valid
    assert "expired" in _closing_event(lines)["message"]


def test_a_stream_ends_when_its_api_key_is_revoked(auth_settings: Settings, db_url: str) -> None:
    """A stream on a key revoked at 4 s stayed open for over 60 s (issue 14)."""
    add_truck(db_url, "T1")
    _store(db_url, "T1")
    with psycopg.connect(db_url, autocommit=True) as conn:
        key = create_key(conn, "tablet T1", ["truck"], truck_id="T1")

    def revoke() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            assert revoke_key(conn, key.key.key_id)

    settings = with_auth(auth_settings, api_stream_recheck_s=1.0)
    with TestClient(create_app(settings, db_timeout_s=5.0)) as client:
        lines = _stream_until_closed(client, {"X-API-Key": key.clear}, on_route=revoke)
    assert "revoked" in _closing_event(lines)["message"]


def test_a_stream_survives_an_identity_provider_outage(
    auth_settings: Settings, db_url: str
) -> None:
    """A re-check that cannot be made (the identity provider away) keeps the stream open:
    an outage must not sign out every truck; the next check that can be made decides."""
    add_truck(db_url, "T1")
    _store(db_url, "T1")
    settings = with_auth(auth_settings, auth_leeway_s=0.0, api_stream_recheck_s=1.0)
    app = create_app(settings, db_timeout_s=5.0)
    with TestClient(app) as client:
        real = app.state.authenticator
        outages = [0]

        class Flaky:
            def authenticate(self, headers: Any, pool: Any) -> Principal:
                if outages[0] < 2:
                    outages[0] += 1
                    raise AuthProviderUnavailableError("the identity provider is away")
                return real.authenticate(headers, pool)  # type: ignore[no-any-return]

        def break_provider() -> None:  # after the stream opened with valid credentials
            app.state.authenticator = Flaky()

        headers = bearer(settings, "truck", sub="tablet-T1", truck="T1", ttl=timedelta(seconds=3))
        lines = _stream_until_closed(client, headers, on_route=break_provider)
    assert outages[0] == 2, "the re-checks during the outage were made"
    assert "expired" in _closing_event(lines)["message"]
