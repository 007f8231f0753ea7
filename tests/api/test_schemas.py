"""Pure parsing at the API boundary: bounding boxes, cursors, time ranges, buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from cityops.api.errors import InvalidParameterError
from cityops.api.repository import BBox
from cityops.api.schemas import (
    TimeRange,
    choose_bucket,
    cursor_int,
    decode_cursor,
    encode_cursor,
    local_iso,
    parse_bbox,
    resolve_range,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_parse_bbox_accepts_four_ordered_numbers() -> None:
    assert parse_bbox(" 8.3,48.9, 8.5 ,49.1") == BBox(8.3, 48.9, 8.5, 49.1)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("8.3,48.9,8.5", "expected 4"),
        ("8.3,48.9,8.5,49.1,1", "expected 4"),
        ("8.3,north,8.5,49.1", "min_lat is not a number"),
        ("8.3,48.9,nan,49.1", "max_lon is not a finite number"),
        ("-181,48.9,8.5,49.1", "min_lon must be between -180 and 180"),
        ("8.3,48.9,8.5,91", "max_lat must be between -90 and 90"),
        ("8.5,48.9,8.3,49.1", "min_lon (8.5) must be less than max_lon (8.3)"),
        ("8.3,49.1,8.5,49.1", "min_lat (49.1) must be less than max_lat (49.1)"),
    ],
)
def test_parse_bbox_rejects_with_a_reason(text: str, fragment: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        parse_bbox(text)
    assert info.value.field == "bbox"
    assert fragment in info.value.message


def test_cursor_round_trip_and_tampering() -> None:
    cursor = encode_cursor("bins", ["B-0007"])
    assert decode_cursor("bins", cursor, 1) == ["B-0007"]
    for bad in ("", "!!!", "bm90IGpzb24", encode_cursor("devices", ["bin", "x"])):
        with pytest.raises(InvalidParameterError):
            decode_cursor("bins", bad, 1)
    with pytest.raises(InvalidParameterError):
        decode_cursor("devices", encode_cursor("devices", ["bin"]), 2)


@pytest.mark.parametrize("text", ["+5", " 5", "-1", "\u00b2", "\u0665", "5.0", ""])
def test_a_number_in_a_cursor_is_ascii_digits_only(text: str) -> None:
    # "\u00b2" passes str.isdigit() but not int(): it once reached int() as a 500
    with pytest.raises(InvalidParameterError, match="not a cursor"):
        cursor_int(text)
    assert cursor_int("0042") == 42


def test_resolve_range_defaults_to_the_last_24_hours() -> None:
    assert resolve_range(None, None, NOW) == TimeRange(NOW - timedelta(hours=24), NOW)
    end = datetime(2024, 4, 1, tzinfo=UTC)
    assert resolve_range(None, end, NOW) == TimeRange(end - timedelta(hours=24), end)


def test_resolve_range_converts_offsets_to_utc() -> None:
    start = datetime(2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    span = resolve_range(start, None, NOW)
    assert span.start == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert span.start.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("start", "end", "field", "fragment"),
    [
        (datetime(2024, 5, 1, 10), None, "from", "UTC offset"),
        (None, datetime(2024, 5, 1, 10), "to", "UTC offset"),
        (NOW, NOW, "from", "must be before"),
        (NOW, NOW - timedelta(hours=1), "from", "must be before"),
        (NOW - timedelta(days=367), NOW, "to", "at most 366 days"),
    ],
)
def test_resolve_range_rejects(
    start: datetime | None, end: datetime | None, field: str, fragment: str
) -> None:
    with pytest.raises(InvalidParameterError) as info:
        resolve_range(start, end, NOW)
    assert info.value.field == field
    assert fragment in info.value.message


def test_resolve_range_allows_exactly_366_days() -> None:
    span = resolve_range(NOW - timedelta(days=366), NOW, NOW)
    assert span.end - span.start == timedelta(days=366)


def test_choose_bucket_defaults_and_limits() -> None:
    two_days = TimeRange(NOW - timedelta(days=2), NOW)
    three_days = TimeRange(NOW - timedelta(days=3), NOW)
    year = TimeRange(NOW - timedelta(days=366), NOW)
    assert choose_bucket(None, two_days) == "raw"
    assert choose_bucket(None, three_days) == "1h"
    assert choose_bucket("1d", two_days) == "1d"
    assert choose_bucket(None, year) == "1h"  # 8784 buckets
    with pytest.raises(InvalidParameterError, match="more than 10000 buckets"):
        choose_bucket("15m", year)


def test_local_iso_is_berlin_time_with_offset() -> None:
    assert local_iso(datetime(2024, 1, 15, 12, 0, tzinfo=UTC)) == "2024-01-15T13:00:00+01:00"
    assert local_iso(datetime(2024, 7, 15, 12, 0, tzinfo=UTC)) == "2024-07-15T14:00:00+02:00"
    assert local_iso(None) is None
