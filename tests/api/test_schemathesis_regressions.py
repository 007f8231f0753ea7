"""Requests schemathesis (tests/api/test_schemathesis.py) once answered with a server
error, each kept here as a plain test against the real database."""

from __future__ import annotations

import psycopg

from tests.api import factories
from tests.api.testclient import TestClient
from tests.support.clock import now_utc


def test_a_min_fill_too_small_for_real_is_zero_not_a_server_error(
    client: TestClient, conn: psycopg.Connection[tuple[object, ...]]
) -> None:
    # 1e-320 is a valid float8 but underflows PostgreSQL's real, the fill column's type
    factories.add_bin(conn, "B-1")
    factories.set_bin_state(conn, "B-1", now_utc(), 0.0)
    factories.add_bin(conn, "B-2")
    # compared in real precision: below its smallest value is 0, the empty bin qualifies
    for value in ("1e-320", "5e-324"):
        r = client.get("/api/v1/bins", params={"min_fill": value})
        assert r.status_code == 200, (value, r.text)
        assert [b["bin_id"] for b in r.json()["items"]] == ["B-1"], value
    for value in ("1e-40", "1e-30"):  # still above zero as a real
        r = client.get("/api/v1/bins", params={"min_fill": value})
        assert r.status_code == 200 and r.json()["items"] == [], (value, r.text)
