"""Rows of ATSPM event log lines and local times read as UTC (pure, no database)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cityops.traffic.eventlog import (
    MAX_LINE_BYTES,
    BadRow,
    EventLogParser,
    LocalTimes,
    Row,
    file_sha256,
    iter_lines,
    open_log,
    parse_timestamp,
)

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2024, 12, 1, tzinfo=UTC)  # the wall clock of these parsers
T = datetime(2024, 3, 4, 5, 0, 0, 100_000, tzinfo=UTC)  # 06:00:00.1 in Berlin


def parser(controller_id: str | None = None, zone: ZoneInfo = BERLIN) -> EventLogParser:
    return EventLogParser(LocalTimes(zone), now=NOW, max_future=timedelta(minutes=5),
                          controller_id=controller_id)


def parse_all(lines: list[bytes], p: EventLogParser | None = None) -> list[Row | BadRow | None]:
    p = p or parser()
    return [p.parse(i, line) for i, line in enumerate(lines, 1)]


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-03-04 06:00:00.1", datetime(2024, 3, 4, 6, 0, 0, 100_000)),
    ("2024-03-04T06:00:00.1", datetime(2024, 3, 4, 6, 0, 0, 100_000)),
    ("2024-03-04 06:00:00", datetime(2024, 3, 4, 6, 0, 0)),
    ("2024-03-04 06:00:00,1", datetime(2024, 3, 4, 6, 0, 0, 100_000)),
    ("2024-03-04 06:00:00.1234567", datetime(2024, 3, 4, 6, 0, 0, 123_456)),
    ("03/04/2024 06:00:00.100", datetime(2024, 3, 4, 6, 0, 0, 100_000)),
    ("3/4/2024 6:00:00.1 PM", datetime(2024, 3, 4, 18, 0, 0, 100_000)),
    ("3/4/2024 12:00:00.1 AM", datetime(2024, 3, 4, 0, 0, 0, 100_000)),
    ("2024-03-04T05:00:00.1Z", T),
    ("2024-03-04T06:00:00.1+01:00", T),
    ("2024-03-04 00:00:00.1-0500", T),
])
def test_timestamps(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text", [
    "", "yesterday", "2024-02-30 06:00:00", "2024-03-04 24:00:00", "13/04/2024 06:00:00",
    "3/4/2024 13:00:00 PM", "2024-03-04 06:00", "2024-03-04 06:00:00.12345678",
    "2024-03-04 06:00:00+25:00", "0001-01-01 00:00:00+01:00",
])
def test_bad_timestamps(text: str) -> None:
    with pytest.raises(ValueError, match=r"time|offset|hour|range"):
        parse_timestamp(text)


def test_header_delimiters_quotes_and_bom() -> None:
    expected = Row(2, "7115", T, 82, 5)
    for lines in (
        [b"\xef\xbb\xbfSignalID,Timestamp,EventCode,EventParam",
         b"7115,2024-03-04 06:00:00.1,82,5"],
        [b"signal_id;timestamp;event_code;event_param", b"7115;2024-03-04 06:00:00,1;82;5"],
        [b"TimeStamp\tDeviceId\tEventId\tParameter", b"2024-03-04 06:00:00.1\t7115\t82\t5"],
        [b'"SignalID","Timestamp","EventCode","EventParam"\r',
         b'"7115","03/04/2024 06:00:00.100","82","5"\r'],
    ):
        assert parse_all(lines) == [None, expected]
    # no header: the ATSPM order
    assert parse_all([b"7115,2024-03-04 06:00:00.1,82,5"]) == [Row(1, "7115", T, 82, 5)]
    # blank lines are nothing
    assert parse_all([b"", b"  "]) == [None, None]


def test_a_controllers_own_log_may_leave_the_signal_out() -> None:
    p = parser("LSA-001")
    rows = parse_all([b"Timestamp,EventCode,EventParam", b"2024-03-04 06:00:00.1,82,5",
                      b"7115,2024-03-04 06:00:00.1,82,5"], p)
    assert rows[1] == Row(2, "LSA-001", T, 82, 5)
    assert isinstance(rows[2], BadRow) and rows[2].reason == "bad_columns"
    p.reset()  # a new file: another header, or none
    assert p.parse(1, b"7115,2024-03-04 06:00:00.1,82,5") == Row(1, "7115", T, 82, 5)
    assert parse_all([b"2024-03-04 06:00:00.1,82,5"])[0] == BadRow(
        1, b"2024-03-04 06:00:00.1,82,5", "bad_columns",  # type: ignore[arg-type]
        "expected 4 fields (SignalID,Timestamp,EventCode,EventParam), got 3")


@pytest.mark.parametrize(("line", "reason", "detail"), [
    (b"7115,2024-03-04 06:00:00.1,82", "bad_columns", "got 3"),
    (b"7115,2024-03-04 06:00:00.1,82,5,9", "bad_columns", "got 5"),
    (b"7115,2024-03-04 06:00:00.1,256,5", "out_of_range", "EventCode 256 is outside 0..255"),
    (b"7115,2024-03-04 06:00:00.1,82,999", "out_of_range", "EventParam 999"),
    (b"7115,2024-03-04 06:00:00.1,-1,5", "invalid_value", "EventCode '-1' is not a whole"),
    (b"7115,2024-03-04 06:00:00.1,8.2,5", "invalid_value", "EventCode '8.2'"),
    (b"7115,2024-03-04 06:00:00.1,,5", "invalid_value", "EventCode ''"),
    (b",2024-03-04 06:00:00.1,82,5", "invalid_value", "empty SignalID"),
    (b"7115,2024-03-04 6h,82,5", "bad_timestamp", "not a timestamp"),
    (b"7115,1970-01-01 00:00:00.0,82,5", "timestamp_too_old", "before 2001-01-01"),
    (b"7115,2000-12-31 23:00:00.0Z,82,5", "timestamp_too_old", "before 2001-01-01"),
    (b"7115,2024-12-01 01:10:00.0,82,5", "timestamp_in_future", "more than 300 s ahead"),
    (b"7115,9999-12-31 23:59:59.9,82,5", "timestamp_in_future", "more than 300 s ahead"),
    (b"7\x00115,2024-03-04 06:00:00.1,82,5", "bad_text", "NUL byte at position 1"),
    (b"7115,2024-03-04 06:00:00.1,82,5\xff", "bad_text", "not UTF-8"),
    (b"71\x0715,2024-03-04 06:00:00.1,82,5", "bad_text", "control characters"),
    (b"7115," + b"9" * MAX_LINE_BYTES, "bad_columns", "longer than 4096 bytes"),
])
def test_bad_lines(line: bytes, reason: str, detail: str) -> None:
    (bad,) = parse_all([line])
    assert isinstance(bad, BadRow)
    assert (bad.line, bad.raw, bad.reason) == (1, line, reason)
    assert detail in bad.detail


def test_the_repeated_hour_is_read_in_file_order() -> None:
    # 2024-10-27, Europe/Berlin: 02:00-03:00 local first in summer time (+02:00), then again
    # in winter time (+01:00)
    times = LocalTimes(BERLIN)
    local = [datetime(2024, 10, 27, h, m) for h, m in
             ((1, 59), (2, 0), (2, 30), (2, 59), (2, 0), (2, 30), (2, 59), (3, 0))]
    utc = [times.to_utc(t) for t in local]
    assert [f"{u:%H:%M}" for u in utc] == [
        "23:59", "00:00", "00:30", "00:59", "01:00", "01:30", "01:59", "02:00"]
    assert times.ambiguous == 6 and times.nonexistent == 0
    # a few minutes back within the first pass is out of order, not the second pass
    times = LocalTimes(BERLIN)
    assert [f"{times.to_utc(datetime(2024, 10, 27, 2, m)):%H:%M}" for m in (30, 25, 40)] == [
        "00:30", "00:25", "00:40"]
    # a file that begins in the second pass cannot tell: read as the first (fold=0)
    assert f"{LocalTimes(BERLIN).to_utc(datetime(2024, 10, 27, 2, 30)):%H:%M}" == "00:30"


def test_the_skipped_hour_and_offsets() -> None:
    times = LocalTimes(BERLIN)
    # 2024-03-31 02:30 does not exist in Berlin: read with the offset before the change
    assert times.to_utc(datetime(2024, 3, 31, 2, 30)) == datetime(2024, 3, 31, 1, 30, tzinfo=UTC)
    assert times.to_utc(datetime(2024, 3, 31, 3, 0)) == datetime(2024, 3, 31, 1, 0, tzinfo=UTC)
    assert times.nonexistent == 1 and times.ambiguous == 0
    # an offset in the file wins over the zone
    assert times.to_utc(datetime(2024, 7, 1, 12, 0, tzinfo=UTC)) == datetime(
        2024, 7, 1, 12, 0, tzinfo=UTC)
    utc = LocalTimes(ZoneInfo("UTC"))
    assert utc.to_utc(datetime(2024, 10, 27, 2, 30)) == datetime(2024, 10, 27, 2, 30, tzinfo=UTC)


def test_files_lines_and_their_hash(tmp_path: Path) -> None:
    data = b"a,b\r\nc\n\n" + b"x" * (MAX_LINE_BYTES + 10) + b"\nlast"
    plain = tmp_path / "log.csv"
    plain.write_bytes(data)
    packed = tmp_path / "log.csv.gz"
    packed.write_bytes(gzip.compress(data))
    for path in (plain, packed):
        stream, raw = open_log(path)
        with raw, stream:
            lines = list(iter_lines(stream))
        assert [n for n, _ in lines] == [1, 2, 3, 4, 5]
        assert lines[0][1] == b"a,b" and lines[2][1] == b"" and lines[4][1] == b"last"
        assert len(lines[3][1]) == MAX_LINE_BYTES + 1
    # the same content compressed or not is the same file
    assert file_sha256(plain) == file_sha256(packed)
    assert parser().parse(4, lines[3][1]).reason == "bad_columns"  # type: ignore[union-attr]
