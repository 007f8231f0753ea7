"""`cityops grafana publish` against a stub Grafana on 127.0.0.1 that records every request
and answers like Grafana 11 does (404 for missing uids). No real Grafana runs here."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cityops.api.cli import main


class StubGrafana(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, Any, str]] = []
        self.objects: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: StubGrafana

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        path = self.path.split("?")[0]
        self.server.requests.append(
            (self.command, path, body, self.headers.get("Authorization", ""))
        )
        objects = self.server.objects
        if self.command == "GET":
            if path in objects:
                self._answer(200, objects[path])
            else:
                self._answer(404, {"message": "not found"})
            return
        if self.command == "POST" and path == "/api/folders":
            objects[f"/api/folders/{body['uid']}"] = body
        elif self.command == "POST" and path == "/api/datasources":
            objects[f"/api/datasources/uid/{body['uid']}"] = body
        elif self.command == "POST" and path == "/api/v1/provisioning/alert-rules":
            objects[f"/api/v1/provisioning/alert-rules/{body['uid']}"] = body
        elif self.command == "PUT":
            objects[path] = body
        self._answer(200, {"status": "success"})

    do_GET = do_POST = do_PUT = _handle  # noqa: N815


@pytest.fixture
def grafana() -> Iterator[StubGrafana]:
    server = StubGrafana()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _publish(grafana: StubGrafana) -> int:
    return main(["grafana", "publish", "--url", grafana.url, "--token", "tok-123",
                 "--db-host", "db:5432", "--db-name", "city"])


def test_publish_creates_then_updates(
    grafana: StubGrafana, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CITYOPS_GRAFANA_DB_PASSWORD", "s3cret")
    assert _publish(grafana) == 0
    first = [(m, p) for m, p, _, _ in grafana.requests]
    assert all(auth == "Bearer tok-123" for *_, auth in grafana.requests)
    assert ("POST", "/api/folders") in first
    assert ("POST", "/api/datasources") in first
    assert first.count(("POST", "/api/dashboards/db")) == 4
    assert first.count(("POST", "/api/v1/provisioning/alert-rules")) == 5
    ds = next(b for m, p, b, _ in grafana.requests if (m, p) == ("POST", "/api/datasources"))
    assert ds["uid"] == "cityops-pg" and ds["user"] == "cityops_grafana"
    assert ds["jsonData"]["database"] == "city" and ds["secureJsonData"]["password"] == "s3cret"
    dashboards = [b for m, p, b, _ in grafana.requests if p == "/api/dashboards/db"]
    assert {d["dashboard"]["uid"] for d in dashboards} == {
        "cityops-waste", "cityops-traffic", "cityops-roadworks", "cityops-platform"}
    assert all(d["folderUid"] == "cityops" and d["overwrite"] for d in dashboards)
    rule = next(b for m, p, b, _ in grafana.requests
                if (m, p) == ("POST", "/api/v1/provisioning/alert-rules"))
    assert rule["folderUID"] == "cityops" and rule["ruleGroup"] == "cityops"

    grafana.requests.clear()
    assert _publish(grafana) == 0  # second run: everything exists, only updates
    second = [(m, p) for m, p, _, _ in grafana.requests]
    assert not [r for r in second if r[0] == "POST" and r[1] != "/api/dashboards/db"]
    assert ("PUT", "/api/folders/cityops") in second
    assert ("PUT", "/api/datasources/uid/cityops-pg") in second
    assert sum(1 for m, p in second if m == "PUT" and "alert-rules" in p) == 5


def test_publish_needs_the_password(
    grafana: StubGrafana, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CITYOPS_GRAFANA_DB_PASSWORD", raising=False)
    assert _publish(grafana) == 2
    assert grafana.requests == []
