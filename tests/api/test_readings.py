"""GET /api/v1/bins/{bin_id}/readings: time ranges, raw pages and buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import psycopg
import pytest

from tests.api.factories import add_bin, add_reading
from tests.support.clock import now_utc

if TYPE_CHECKING:
    from tests.api.testclient import TestClient

Conn = psycopg.Connection[tuple[object, ...]]
DAY: dict[str, str | int] = {"from": "2024-05-01T00:00:00Z", "to": "2024-05-02T00:00:00Z"}


def at(hour: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2024, 5, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def readings(conn: Conn) -> None:
    """Hour 10: 10, 20, 30, 40 (avg 25); hour 11: 60, 80 (avg 70); one reading of another bin."""
    add_bin(conn, "B-1", sensor_id="S-1")
    add_bin(conn, "B-2", sensor_id="S-2")
    for ts, fill in ((at(10, 0), 10), (at(10, 10), 20), (at(10, 20), 30), (at(10, 50), 40),
                     (at(11, 5), 60), (at(11, 40), 80)):
        add_reading(conn, "B-1", ts, fill, sensor_id="S-1")
    add_reading(conn, "B-2", at(10, 30), 99, sensor_id="S-2")


def get(client: TestClient, bin_id: str = "B-1", /, **params: str | int) -> dict[str, object]:
    resp = client.get(f"/api/v1/bins/{bin_id}/readings?{urlencode(params)}")
    assert resp.status_code == 200, resp.text
    body: dict[str, object] = resp.json()
    return body


def test_raw_readings_in_range(client: TestClient, readings: None) -> None:
    body = get(client, **{"from": "2024-05-01T10:10:00Z", "to": "2024-05-01T11:05:00+00:00"})
    assert body["bucket"] == "raw"
    assert body["from"] == "2024-05-01T10:10:00Z"
    assert body["to"] == "2024-05-01T11:05:00Z"
    assert body["buckets"] is None
    rows = body["readings"]
    assert isinstance(rows, list)
    # from is inclusive, to exclusive
    assert [r["fill_pct"] for r in rows] == [20, 30, 40]
    assert rows[0]["ts"] == "2024-05-01T10:10:00Z"
    assert rows[0]["ts_local"] == "2024-05-01T12:10:00+02:00"
    assert rows[0]["temperature_c"] == 18.0
    assert rows[0]["tilt"] is False


def test_offsets_other_than_utc_are_converted(client: TestClient, readings: None) -> None:
    body = get(client, **{"from": "2024-05-01T12:00:00+02:00", "to": "2024-05-01T12:20:00+02:00"})
    assert body["from"] == "2024-05-01T10:00:00Z"
    rows = body["readings"]
    assert isinstance(rows, list)
    assert [r["fill_pct"] for r in rows] == [10, 20]


def test_raw_pagination(client: TestClient, readings: None) -> None:
    params: dict[str, str | int] = {**DAY, "limit": 4}
    first = get(client, **params)
    page1 = first["readings"]
    assert isinstance(page1, list)
    assert [r["fill_pct"] for r in page1] == [10, 20, 30, 40]
    cursor = first["next_cursor"]
    assert isinstance(cursor, str)
    second = get(client, **params, cursor=cursor)
    page2 = second["readings"]
    assert isinstance(page2, list)
    assert [r["fill_pct"] for r in page2] == [60, 80]
    assert second["next_cursor"] is None


def test_hourly_buckets(client: TestClient, readings: None) -> None:
    body = get(client, bucket="1h", **DAY)
    assert body["readings"] is None
    assert body["buckets"] == [
        {"bucket_start": "2024-05-01T10:00:00Z", "bucket_start_local": "2024-05-01T12:00:00+02:00",
         "avg_fill_pct": 25.0, "min_fill_pct": 10.0, "max_fill_pct": 40.0, "readings": 4},
        {"bucket_start": "2024-05-01T11:00:00Z", "bucket_start_local": "2024-05-01T13:00:00+02:00",
         "avg_fill_pct": 70.0, "min_fill_pct": 60.0, "max_fill_pct": 80.0, "readings": 2},
    ]


def test_quarter_hour_buckets(client: TestClient, readings: None) -> None:
    body = get(client, bucket="15m", **{"from": "2024-05-01T10:00:00Z", "to": "2024-05-01T12:00Z"})
    buckets = body["buckets"]
    assert isinstance(buckets, list)
    assert [(b["bucket_start"][11:16], b["avg_fill_pct"], b["readings"]) for b in buckets] == [
        ("10:00", 15.0, 2), ("10:15", 30.0, 1), ("10:45", 40.0, 1),
        ("11:00", 60.0, 1), ("11:30", 80.0, 1),
    ]


def test_bucket_values_are_not_float4_noise(client: TestClient, conn: Conn) -> None:
    add_bin(conn, "B-7")
    add_reading(conn, "B-7", at(10, 0), 70.1)
    add_reading(conn, "B-7", at(10, 5), 70.2)
    body = get(client, "B-7", bucket="1h", **DAY)
    assert body["buckets"] == [
        {"bucket_start": "2024-05-01T10:00:00Z", "bucket_start_local": "2024-05-01T12:00:00+02:00",
         "avg_fill_pct": 70.15, "min_fill_pct": 70.1, "max_fill_pct": 70.2, "readings": 2},
    ]
    raw = get(client, "B-7", **DAY)["readings"]
    assert isinstance(raw, list)
    assert [r["fill_pct"] for r in raw] == [70.1, 70.2]


def test_daily_buckets_are_berlin_days(client: TestClient, conn: Conn) -> None:
    add_bin(conn, "B-9")
    add_reading(conn, "B-9", at(21, 30), 20)  # 23:30 in Berlin on 1 May
    add_reading(conn, "B-9", at(22, 30), 50)  # 00:30 in Berlin on 2 May
    add_reading(conn, "B-9", at(9, 0, day=2), 70)
    body = get(client, "B-9", bucket="1d",
               **{"from": "2024-04-30T00:00:00Z", "to": "2024-05-04T00:00:00Z"})
    buckets = body["buckets"]
    assert isinstance(buckets, list)
    assert [(b["bucket_start"], b["bucket_start_local"], b["avg_fill_pct"]) for b in buckets] == [
        ("2024-04-30T22:00:00Z", "2024-05-01T00:00:00+02:00", 20.0),
        ("2024-05-01T22:00:00Z", "2024-05-02T00:00:00+02:00", 60.0),
    ]


def test_default_range_and_bucket(client: TestClient, conn: Conn) -> None:
    now = now_utc()
    add_bin(conn, "B-5")
    add_reading(conn, "B-5", now - timedelta(hours=2), 33)
    add_reading(conn, "B-5", now - timedelta(hours=30), 11)  # outside the default 24 h
    add_reading(conn, "B-5", now - timedelta(days=4), 22)
    body = get(client, "B-5")
    assert body["bucket"] == "raw"
    rows = body["readings"]
    assert isinstance(rows, list)
    assert [r["fill_pct"] for r in rows] == [33]

    three_days = (now - timedelta(days=3)).isoformat()
    hourly = get(client, "B-5", **{"from": three_days})
    assert hourly["bucket"] == "1h"
    buckets = hourly["buckets"]
    assert isinstance(buckets, list)
    assert [b["avg_fill_pct"] for b in buckets] == [11, 33]


def test_unknown_bin_is_404_even_without_readings(client: TestClient, readings: None) -> None:
    for query in ("", "?bucket=1h"):
        resp = client.get(f"/api/v1/bins/NOPE/readings{query}")
        assert resp.status_code == 404
        assert resp.json()["error"] == "not_found"
        assert "NOPE" in resp.json()["message"]


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ({"from": "2024-05-01T10:00:00"}, "from", "must include a UTC offset"),
        ({"to": "2024-05-01T10:00:00"}, "to", "must include a UTC offset"),
        ({"from": "yesterday"}, "from", "valid datetime"),
        ({"from": "2024-05-02T00:00:00Z", "to": "2024-05-01T00:00:00Z"}, "from", "must be before"),
        ({"from": "2024-05-01T00:00:00Z", "to": "2024-05-01T00:00:00Z"}, "from", "must be before"),
        ({"from": "2023-01-01T00:00:00Z", "to": "2024-05-01T00:00:00Z"}, "to", "at most 366 days"),
        ({"from": "2024-01-01T00:00:00Z", "to": "2024-05-01T00:00:00Z", "bucket": "15m"},
         "bucket", "coarser bucket"),
        ({"bucket": "5m"}, "bucket", "'raw'"),
        ({"limit": 10_001}, "limit", "less than or equal to 10000"),
        ({"bucket": "1h", "cursor": "abc"}, "cursor", "only raw readings are paginated"),
        ({"cursor": "abc"}, "cursor", "not a cursor"),
    ],
)
def test_bad_ranges_are_422(
    client: TestClient, readings: None, params: dict[str, str | int], field: str, fragment: str
) -> None:
    resp = client.get(f"/api/v1/bins/B-1/readings?{urlencode(params)}")
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "validation_error"
    assert body["details"][0]["field"] == field
    assert fragment in body["details"][0]["message"]


def test_unencoded_plus_gets_a_hint(client: TestClient, readings: None) -> None:
    # "+02:00" written literally in a URL arrives as " 02:00"
    resp = client.get("/api/v1/bins/B-1/readings?from=2024-05-01T10:00:00+02:00")
    assert resp.status_code == 422
    assert "%2B" in resp.json()["details"][0]["message"]


@pytest.mark.parametrize(
    "query",
    [
        "to=0001-01-01T00:00:00%2B14:00",
        "from=9999-12-31T00:00:00Z&to=9999-12-31T23:00:00-14:00",
        "from=0001-01-01T00:00:00Z&to=0001-01-01T01:00:00Z&bucket=1d",
    ],
)
def test_extreme_dates_are_not_500(client: TestClient, readings: None, query: str) -> None:
    resp = client.get(f"/api/v1/bins/B-1/readings?{query}")
    assert resp.status_code in (200, 422), resp.text
