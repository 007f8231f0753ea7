"""GET /api/v1/bins and /api/v1/bins/{bin_id} against the real database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from tests.api.factories import add_bin, add_controller, set_bin_state

if TYPE_CHECKING:
    from tests.api.testclient import TestClient

Conn = psycopg.Connection[tuple[object, ...]]
TS = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)


@pytest.fixture
def few_bins(conn: Conn) -> None:
    """Four bins in two districts; B-4 has no reading yet."""
    add_bin(conn, "B-1", lon=8.40, lat=49.01, sensor_id="S-1", district="Innenstadt-West")
    add_bin(conn, "B-2", lon=8.42, lat=49.02, sensor_id="S-2", district="Innenstadt-West",
            fraction="paper", capacity_l=240)
    add_bin(conn, "B-3", lon=8.47, lat=49.00, sensor_id="S-3", district="Durlach",
            fraction="glass", house_number=None)
    add_bin(conn, "B-4", lon=8.38, lat=48.99, district="Südstadt")
    set_bin_state(conn, "B-1", TS, 85.0, fault="lid_open", tilt=True)
    set_bin_state(conn, "B-2", TS, 40.0)
    set_bin_state(conn, "B-3", TS, 70.1, temperature_c=None, battery_pct=None)


def _ids(body: dict[str, Any]) -> list[str]:
    return [item["bin_id"] for item in body["items"]]


def test_lists_bins_with_latest_state(client: TestClient, few_bins: None) -> None:
    resp = client.get("/api/v1/bins")
    assert resp.status_code == 200
    body = resp.json()
    assert _ids(body) == ["B-1", "B-2", "B-3", "B-4"]
    assert body["next_cursor"] is None
    first = body["items"][0]
    assert first == {
        "bin_id": "B-1", "sensor_id": "S-1", "lat": pytest.approx(49.01),
        "lon": pytest.approx(8.40), "street": "Kaiserstraße", "house_number": "1",
        "district": "Innenstadt-West", "fraction": "residual", "capacity_l": 1100,
        "fill_pct": 85.0, "temperature_c": 18.5, "battery_pct": 90.0, "fault": "lid_open",
        "tilt": True, "last_reading_at": "2024-05-01T08:30:00Z",
        "last_reading_local": "2024-05-01T10:30:00+02:00",
    }
    never = body["items"][3]
    assert never["fill_pct"] is None
    assert never["last_reading_at"] is None
    assert never["last_reading_local"] is None
    assert never["sensor_id"] is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("min_fill=70", ["B-1", "B-3"]),
        ("min_fill=70.1", ["B-1", "B-3"]),  # stored as real, still equal
        ("min_fill=70.2", ["B-1"]),
        ("min_fill=0", ["B-1", "B-2", "B-3"]),  # a bin without reading has no fill level
        ("min_fill=85.5", []),
        ("fraction=paper", ["B-2"]),
        ("district=Durlach", ["B-3"]),
        ("district=Innenstadt-West&min_fill=50", ["B-1"]),
        ("bbox=8.39,49.005,8.43,49.03", ["B-1", "B-2"]),
        ("bbox=8.40,49.01,8.40001,49.01001", ["B-1"]),  # a point on the edge is inside
        ("bbox=8.0,48.0,8.1,48.1", []),
        ("bbox=8.3,48.9,8.5,49.1&fraction=glass", ["B-3"]),
    ],
)
def test_filters(client: TestClient, few_bins: None, query: str, expected: list[str]) -> None:
    resp = client.get(f"/api/v1/bins?{query}")
    assert resp.status_code == 200, resp.text
    assert _ids(resp.json()) == expected


def test_one_bin_and_404(client: TestClient, few_bins: None) -> None:
    resp = client.get("/api/v1/bins/B-3")
    assert resp.status_code == 200
    assert resp.json()["fraction"] == "glass"
    assert resp.json()["fill_pct"] == 70.1  # the real's value, not 70.0999984741211
    assert resp.json()["house_number"] is None

    missing = client.get("/api/v1/bins/B-99")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": "not_found", "message": "no bin with id 'B-99'", "details": []
    }


def test_pagination_walks_every_bin_once(client: TestClient, conn: Conn) -> None:
    ids = [f"B-{n:03d}" for n in range(1, 24)]
    for n, bin_id in enumerate(reversed(ids)):  # insertion order differs from key order
        add_bin(conn, bin_id, fraction="paper" if n % 3 == 0 else "residual")
    for page_size, query in ((5, ""), (1, ""), (23, ""), (4, "&fraction=paper")):
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            url = f"/api/v1/bins?limit={page_size}{query}"
            if cursor:
                url += f"&cursor={cursor}"
            body = client.get(url).json()
            assert len(body["items"]) <= page_size
            seen += _ids(body)
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
            assert pages < 100
        wanted = [
            b for n, b in enumerate(reversed(ids))
            if not query or n % 3 == 0
        ]
        assert seen == sorted(wanted), (page_size, query)
        assert len(set(seen)) == len(seen)


@pytest.mark.parametrize(
    ("query", "field", "fragment"),
    [
        ("bbox=8.3,48.9,8.5", "bbox", "expected 4 comma-separated numbers"),
        ("bbox=8.5,48.9,8.3,49.1", "bbox", "min_lon (8.5) must be less than max_lon (8.3)"),
        ("bbox=8.3,48.9,8.5,95", "bbox", "max_lat must be between -90 and 90"),
        ("bbox=8.3,48.9,east,49.1", "bbox", "max_lon is not a number"),
        ("limit=0", "limit", "greater than or equal to 1"),
        ("limit=1001", "limit", "less than or equal to 1000"),
        ("limit=ten", "limit", "valid integer"),
        ("min_fill=101", "min_fill", "less than or equal to 100"),
        ("min_fill=-1", "min_fill", "greater than or equal to 0"),
        ("fraction=plastic", "fraction", "'residual'"),
        ("cursor=garbage", "cursor", "not a cursor returned by this endpoint"),
    ],
)
def test_bad_parameters_are_422_with_field_messages(
    client: TestClient, query: str, field: str, fragment: str
) -> None:
    resp = client.get(f"/api/v1/bins?{query}")
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "validation_error"
    assert [d["field"] for d in body["details"]] == [field]
    assert body["details"][0]["location"] == "query"
    assert fragment in body["details"][0]["message"]
    assert fragment in body["message"]


def test_cursor_of_another_list_is_rejected(client: TestClient, conn: Conn) -> None:
    add_controller(conn, "C-1")
    add_controller(conn, "C-2")
    cursor = client.get("/api/v1/devices?limit=1").json()["next_cursor"]
    assert cursor
    resp = client.get(f"/api/v1/bins?cursor={cursor}")
    assert resp.status_code == 422
    assert resp.json()["details"][0]["field"] == "cursor"


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/bins/a%00b",
        "/api/v1/bins/a%00b/readings",
        "/api/v1/bins?district=Durl%00ach",
        "/api/v1/bins?min_fill=nan",
        "/api/v1/bins?limit=99999999999999999999999",
        "/api/v1/bins?bbox=inf,1,2,3",
        "/api/v1/bins?bbox=",
        "/api/v1/bins?cursor=eyJrIjoiYmlucyIsImFmdGVyIjpbImFcdTAwMDAiXX0",  # id with NUL
        "/api/v1/bins/" + "x" * 300,
    ],
)
def test_hostile_input_is_422_not_500(client: TestClient, url: str) -> None:
    resp = client.get(url)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "validation_error"
    assert body["details"], body
