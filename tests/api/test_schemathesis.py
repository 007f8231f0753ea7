"""Schemathesis against the API's own OpenAPI document: no request, valid or not, may end in
a server error, and every response must match the schema the operation claims.

The API runs in uvicorn on a free loopback port over a fresh database seeded with the demo
roadworks (for SEED_DAY, the app's roadworks clock fixed at SEED_DAY 08:00 like the other
roadworks API tests), bins with readings, a depot, trucks with today's route, and a signal
controller, so that generated requests meet real rows as well as unknown ids. Each
operation gets a few valid (positive) and invalid (negative) requests plus valid ones with
the seeded ids; generation is derandomized, so a run is repeatable. Every failure of every
operation is collected, and the test fails listing them all (with a curl line each).

Two callers: an admin with a dispatcher's role too (every operation authorised), and an
anonymous client (public operations answer, the others must refuse with 401, not fail).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
import schemathesis
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from cityops.api.app import create_app
from cityops.api.roadworks.context import roadworks_api
from cityops.ingest.db import connect
from cityops.roadworks.seed import seed_demo
from cityops.routing.network import load_network
from cityops.routing.repository import next_version, store_route
from tests.api import factories
from tests.api.authn import bearer
from tests.api.test_roadworks_api import api_settings, roadworks_context
from tests.api.test_trucks import _route
from tests.roadworks.conftest import SEED_DAY
from tests.roadworks.factories import service
from tests.support.clock import now_utc
from tests.support.servers import serving

pytestmark = pytest.mark.slow

BERLIN = ZoneInfo("Europe/Berlin")
#: Generated requests per operation and generation mode (about 35 operations x 3 modes);
#: raise it with CITYOPS_SCHEMATHESIS_EXAMPLES for a deeper run.
MAX_EXAMPLES = int(os.environ.get("CITYOPS_SCHEMATHESIS_EXAMPLES", "10"))
#: The route stream never ends: schemathesis reads it this long; other requests may take
#: up to REQUEST_TIMEOUT_S.
STREAM_TIMEOUT_S = 0.3
REQUEST_TIMEOUT_S = 30.0
WAIT_S = 20.0

#: Ids of seeded rows, per path parameter name.
KNOWN = {
    "bin_id": "B-001",
    "truck_id": "T01",
    "reference": "DEMO-01",
    "controller_id": "K1",
    "kind": "geojson",
    "day": SEED_DAY.isoformat(),
}


@dataclass(frozen=True)
class Server:
    url: str
    settings: Any


def _seed(url: str) -> None:
    now = now_utc()
    with connect(url, autocommit=True) as conn:
        seed_demo(conn, service(), load_network(), SEED_DAY)
        factories.add_depot(conn)
        for i in range(1, 4):
            bin_id = f"B-00{i}"
            factories.add_bin(conn, bin_id, sensor_id=f"S-00{i}", lon=8.40 + i / 1000)
            factories.set_bin_state(conn, bin_id, now - timedelta(minutes=5), 40.0 + 20 * i)
            for h in range(6):
                factories.add_reading(conn, bin_id, now - timedelta(hours=h), 30.0 + h * 5)
        for truck in ("T01", "T02"):
            factories.add_truck(conn, truck)
        factories.add_controller(conn, "K1")
        factories.set_device_status(conn, "bin", "S-001", state="online", last_seen=now)
    today = now_utc().astimezone(BERLIN).date()
    with connect(url) as conn:
        route = _route("T01", next_version(conn, "T01", today))
        store_route(conn, route.model_copy(update={"plan_date": today}))


@pytest.fixture
def server(db_url: str) -> Iterator[Server]:
    """The seeded API in uvicorn on a free loopback port."""
    _seed(db_url)
    settings_ = api_settings(db_url)
    app = create_app(settings_, db_timeout_s=5.0)
    ctx = roadworks_context()
    app.dependency_overrides[roadworks_api] = lambda: ctx
    with serving(app, log_level="critical", wait_s=WAIT_S) as url:
        yield Server(url, settings_)


def _schema(url: str) -> schemathesis.BaseSchema:
    doc = requests.get(f"{url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(doc)
    schema.config.update(base_url=url)
    return schema


class _Adapter(requests.adapters.BaseAdapter):
    """requests' HTTP adapter behind a plain BaseAdapter.

    grafana-client pulls in niquests and with it urllib3-future, which takes the `urllib3`
    import name; its pool container cannot be listed the way schemathesis counts open
    connections (on `HTTPAdapter` instances only), so the adapter is wrapped.
    """

    def __init__(self) -> None:
        super().__init__()
        self._inner = requests.adapters.HTTPAdapter()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        return self._inner.send(request, **kwargs)

    def close(self) -> None:
        self._inner.close()


def _session() -> requests.Session:
    session = requests.Session()
    session.adapters.clear()
    session.mount("http://", _Adapter())
    return session


def _fuzz(url: str, headers: dict[str, str]) -> list[str]:
    """Every operation's failures, as `label: check: message` lines with a curl line."""
    # uvicorn closes a connection after an unhandled error; a new one per request keeps
    # the next request from failing on it
    sent = {**headers, "Connection": "close"}
    failures: list[str] = []
    with _session() as session:
        for result in _schema(url).get_all_operations():
            operation = result.ok()
            seen = _fuzz_operation(operation, session, sent)
            failures.extend(f"{operation.label}: {msg}\n    {curl}" for msg, curl in seen.items())
    return failures


def _fuzz_operation(
    operation: schemathesis.APIOperation, session: requests.Session, headers: dict[str, str]
) -> dict[str, str]:
    """Valid and invalid requests to one operation; first failure message -> curl line."""
    path_params = {p.name for p in operation.path_parameters}
    known = {k: v for k, v in KNOWN.items() if k in path_params}
    strategies = [
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    ]
    if known:
        strategies.append(operation.as_strategy(path_parameters=known))
    timeout = STREAM_TIMEOUT_S if operation.path.endswith("/stream") else REQUEST_TIMEOUT_S
    seen: dict[str, str] = {}

    @settings(
        max_examples=MAX_EXAMPLES * len(strategies),
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(strategies))
    def run(case: Case) -> None:
        try:
            response = case.call(session=session, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            seen.setdefault(f"no response: {exc}", case.as_curl_command(headers=headers))
            return
        try:
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )
        except FailureGroup as group:
            failures: list[Failure] = list(group.exceptions)
        except Failure as failure:
            failures = [failure]
        else:
            return
        for failure in failures:
            summary = f"{failure.title}: {_first_line(failure.message)}"
            seen.setdefault(summary, case.as_curl_command(headers=headers))

    run()
    return seen


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[:3])


def test_admin_meets_no_server_error(server: Server) -> None:
    failures = _fuzz(server.url, bearer(server.settings, "admin", "dispatcher", sub="fuzz"))
    assert not failures, "\n".join(failures)


def test_anonymous_meets_no_server_error(server: Server) -> None:
    failures = _fuzz(server.url, {})
    assert not failures, "\n".join(failures)


class Out(BaseModel):
    n: int


def test_the_fuzzer_reports_server_errors_and_schema_violations() -> None:
    """The harness itself: an app with one endpoint that fails on large numbers and one
    that answers outside its declared schema must give one failure each."""
    app = FastAPI()

    @app.get("/fragile")
    def fragile(n: int) -> Out:
        if n > 10:
            raise RuntimeError("fragile")
        return Out(n=n)

    @app.get("/liar", response_model=Out)
    def liar() -> Response:
        return JSONResponse({"n": "not a number"})

    with serving(app, log_level="critical", wait_s=WAIT_S) as url:
        failures = _fuzz(url, {})
    assert any(f.startswith("GET /fragile: Server error") for f in failures), failures
    assert any(f.startswith("GET /liar: Response violates schema") for f in failures), failures


# -- hostile values on every route (issue 14) --------------------------------------------------

#: What devices, tablets and editors send: NUL and other control characters, a lone
#: surrogate's UTF-8 bytes (invalid UTF-8), markup, absurd dates and numbers.
HOSTILE_VALUES = (
    "a\x00b", "\x07\x1b[31m", "%ED%A0%80", "<b>x</b>", "9999-12-31", "0001-01-01",
    "9999-12-31T23:59:59Z", "-1", "1e308", "x" * 5000,
)
#: JSON bodies that no operation can take: deep nesting, NUL in keys and values.
HOSTILE_BODIES = (
    "[" * 100_000 + "]" * 100_000,
    '{"a": ' * 50_000 + "1" + "}" * 50_000,
    '{"title\\u0000": "x\\u0000", "reason": "\\ud800", "mode": "fixed"}',
    # well-formed but for one text: each endpoint's own fields, with NUL or a surrogate
    '{"to": "submitted", "note": "Abstimmung\\u0000"}',
    '{"decision": "accepted", "note": "\\ud800"}',
    '{"mode": "fixed", "reason": "Reparatur\\u0000"}',
    '{"ts": "2026-01-01T00:00:00Z", "kind": "stop_skipped", "bin_id": "B-001", '
    '"reason": "Zufahrt\\u0000blockiert"}',
)


def _hostile_requests(url: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, requests keywords) with one hostile value at a time in each path or
    query parameter of every operation, and each hostile body for those that take one."""
    doc = requests.get(f"{url}/openapi.json", timeout=10).json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            params = op.get("parameters", [])
            base_path = path
            for p in params:
                if p["in"] == "path":
                    base_path = base_path.replace(f"{{{p['name']}}}", KNOWN.get(p["name"], "x"))
            for p in params:
                if p["in"] not in ("path", "query"):
                    continue
                for value in HOSTILE_VALUES:
                    if p["in"] == "path":
                        quoted = requests.utils.quote(value, safe="%")
                        yield method, path.replace(f"{{{p['name']}}}", quoted), {}
                    else:
                        yield method, base_path, {"params": {p["name"]: value}}
            if method in ("post", "put", "patch"):
                for body in HOSTILE_BODIES:
                    yield method, base_path, {
                        "data": body.encode(), "headers": {"Content-Type": "application/json"}
                    }


def test_hostile_values_on_every_route_get_no_server_error(server: Server) -> None:
    auth = bearer(server.settings, "admin", "dispatcher", sub="fuzz")
    failures = []
    sent = 0
    with _session() as session:
        for method, path, kwargs in _hostile_requests(server.url):
            if path.endswith("/stream"):
                continue  # never ends; its parameters are checked before it opens
            headers = {**auth, **kwargs.pop("headers", {}), "Connection": "close"}
            r = session.request(method.upper(), f"{server.url}{path}", headers=headers,
                                timeout=REQUEST_TIMEOUT_S, **kwargs)
            sent += 1
            if r.status_code >= 500:
                failures.append(f"{method.upper()} {path} {kwargs}: {r.status_code} {r.text[:200]}")
    assert sent > 300, f"only {sent} requests: the sweep missed operations"
    assert not failures, "\n".join(failures)
