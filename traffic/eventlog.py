"""ATSPM-style controller event log files: their rows, their timestamps, their local time.

A high-resolution event log as ATSPM exports it (`SignalID,Timestamp,EventCode,EventParam`,
one Indiana event per line, the time in the controller's local time to a tenth of a
second, without an offset) is read here line by line into `Row`s, or `BadRow`s that say
why a line cannot be stored. Pure: no database, no network; the file reading helpers only
open and hash files. Used by `cityops traffic import-events` (`event_import`) and
`cityops traffic follow-log` (`follow_log`).

Variants read: with or without a header line (the names ATSPM and its descendants use,
in any order); comma, semicolon or tab between the fields, quoted or not; `.csv` or
gzipped (`.csv.gz`, recognised by its magic bytes); timestamps `2024-03-04 06:00:00.1`,
`2024-03-04T06:00:00.1`, `03/04/2024 06:00:00.100` (month first, as ATSPM's US exports;
12-hour times with AM/PM too), with up to 7 fractional digits (SQL Server's datetime2,
cut to microseconds) or none. A timestamp with an offset (`Z`, `+01:00`) is taken as it
says; one without is the controller's local time (`LocalTimes`).
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from io import BufferedIOBase
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cityops.ingest.contract import text_problem

__all__ = [
    "MAX_LINE_BYTES",
    "MIN_TIME",
    "BadRow",
    "EventLogParser",
    "LocalTimes",
    "Reason",
    "Row",
    "file_sha256",
    "iter_lines",
    "open_log",
    "parse_timestamp",
    "zone",
]

#: Earlier event times are a controller clock reset (to 1970 or 2000), not an event.
MIN_TIME = datetime(2001, 1, 1, tzinfo=UTC)
#: Longer lines are refused whole (a binary file, a missing newline).
MAX_LINE_BYTES = 4096
#: Inside the repeated hour of a clock change, local time going back by more than this
#: means the file has reached the hour's second pass.
REWIND = timedelta(minutes=10)


class Reason(StrEnum):
    """Why a line was dead-lettered; stable codes, as the ingest's (`ingest.decode.Reason`)
    where they mean the same."""

    BAD_COLUMNS = "bad_columns"
    BAD_TEXT = "bad_text"
    INVALID_VALUE = "invalid_value"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    UNKNOWN_DEVICE = "unknown_device"  # decided by the importer, against the registry


@dataclass(frozen=True, slots=True)
class Row:
    """One good line: an event of a controller, its time in UTC."""

    line: int
    controller_id: str
    ts: datetime
    code: int
    param: int


@dataclass(frozen=True, slots=True)
class BadRow:
    """One line that cannot be stored, the bytes as read (without the line end)."""

    line: int
    raw: bytes
    reason: Reason
    detail: str


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`, or ValueError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)") from None


_ISO_RE = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})[T ](\d{1,2}):(\d{2}):(\d{2})(?:[.,](\d{1,7}))?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?"
)
_US_RE = re.compile(
    r"(\d{1,2})/(\d{1,2})/(\d{4}) (\d{1,2}):(\d{2}):(\d{2})(?:[.,](\d{1,7}))?\s*([AaPp][Mm])?"
)


def parse_timestamp(text: str) -> datetime:
    """A timestamp of an event log: naive (local time) unless it carries an offset.

    Raises ValueError naming what is wrong."""
    m = _ISO_RE.fullmatch(text)
    offset = None
    if m:
        year, month, day, hour, minute, second, frac, offset = m.groups()
    else:
        m = _US_RE.fullmatch(text)
        if not m:
            raise ValueError(
                f"not a timestamp: {text[:40]!r} (expected 2024-03-04 06:00:00.1 or "
                "03/04/2024 06:00:00.100)"
            )
        month, day, year, hour, minute, second, frac, half = m.groups()
        if half is not None:
            h = int(hour)
            if not 1 <= h <= 12:
                raise ValueError(f"hour {h} with {half.upper()}")
            hour = str(h % 12 + (12 if half.upper() == "PM" else 0))
    micro = int((frac or "").ljust(6, "0")[:6])
    try:  # naive on purpose: a local time until `LocalTimes` reads it
        value = datetime(  # noqa: DTZ001
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro)
    except ValueError as exc:
        raise ValueError(f"not a valid time: {text[:40]!r} ({exc})") from None
    if not offset:
        return value
    if offset == "Z":
        return value.replace(tzinfo=UTC)
    sign = -1 if offset[0] == "-" else 1
    hh, mm = int(offset[1:3]), int(offset[-2:])
    if hh > 23 or mm > 59:
        raise ValueError(f"offset {offset} out of range")
    try:
        return (value - sign * timedelta(hours=hh, minutes=mm)).replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError(f"{text[:40]!r} is out of range") from None


@dataclass(slots=True)
class _RepeatedHour:
    latest: datetime | None = None
    second_pass: bool = False


@dataclass(slots=True)
class LocalTimes:
    """Reads a controller's local times as UTC, where the clock changes too.

    * An ordinary local time has one offset.
    * A time in the **repeated hour** (clocks go back: 02:00-03:00 twice in Europe/Berlin
      on the last Sunday of October) is read as its first pass (summer time, Python's
      `fold=0`) until the times of this reader go back by more than `REWIND` within that
      hour: from that row on they are the second pass (winter time, `fold=1`). A log in
      time order thus comes out right; a log that begins in the second pass is read as
      the first (a controller logging in UTC or standard time avoids the question).
    * A time in the **skipped hour** (clocks go forward: 02:00-03:00 does not exist on
      the last Sunday of March) is read with the offset before the change (`fold=0`): a
      controller whose clock changes a little late logged it so.

    One reader per file (or followed log): the repeated hour's pass is the file's state.
    """

    zone: ZoneInfo
    ambiguous: int = 0
    nonexistent: int = 0
    _repeated: dict[date, _RepeatedHour] = field(default_factory=dict)

    def to_utc(self, local: datetime) -> datetime:
        if local.tzinfo is not None:
            return local.astimezone(UTC)
        first = local.replace(tzinfo=self.zone)
        off0 = first.utcoffset()
        off1 = local.replace(tzinfo=self.zone, fold=1).utcoffset()
        assert off0 is not None and off1 is not None
        offset = off0
        if off0 > off1:  # the offset drops: this local time happens twice
            self.ambiguous += 1
            state = self._repeated.setdefault(local.date(), _RepeatedHour())
            if (not state.second_pass and state.latest is not None
                    and local < state.latest - REWIND):
                state.second_pass = True
            if state.second_pass:
                offset = off1
            else:
                state.latest = local if state.latest is None else max(state.latest, local)
        elif off0 < off1:  # the offset jumps: this local time does not exist
            self.nonexistent += 1
        return (local - offset).replace(tzinfo=UTC)


_HEADER_NAMES = {
    "signalid": "signal", "signal": "signal", "deviceid": "signal", "device": "signal",
    "locationidentifier": "signal", "controllerid": "signal",
    "timestamp": "ts", "time": "ts", "eventtime": "ts",
    "eventcode": "code", "eventid": "code", "code": "code",
    "eventparam": "param", "eventparameter": "param", "parameter": "param", "param": "param",
}
_DELIMITERS = (",", ";", "\t")
_COLUMNS = "SignalID,Timestamp,EventCode,EventParam"


def _field(text: str) -> str:
    return text.strip().strip('"').strip()


class EventLogParser:
    """Turns the lines of one file into `Row`s and `BadRow`s, in order.

    Keeps what a file decides once: its delimiter and column order (from a header line,
    else the ATSPM order), and the pass of a repeated hour (`LocalTimes`). With
    `controller_id`, lines may also leave the SignalID out (`Timestamp,EventCode,
    EventParam`, a controller's own log); they belong to that controller.
    """

    def __init__(
        self, times: LocalTimes, *, now: datetime, max_future: timedelta,
        controller_id: str | None = None,
    ) -> None:
        self.times = times
        self._latest = now + max_future
        self._max_future = max_future
        self._controller = controller_id
        self._delimiter: str | None = None
        self._order: dict[str, int] | None = None  # column name -> index, from a header
        self._seen_line = False

    def set_now(self, now: datetime) -> None:
        """Move the wall clock that later times are checked against (a long-running reader)."""
        self._latest = now + self._max_future

    def reset(self) -> None:
        """A new file begins (a followed log rotated or was truncated): it may have a header."""
        self._delimiter = None
        self._order = None
        self._seen_line = False

    def parse(self, line: int, raw: bytes) -> Row | BadRow | None:
        """The row of one line (without its line end); None for a header or a blank line."""
        if b"\x00" in raw:
            return BadRow(line, raw, Reason.BAD_TEXT, f"NUL byte at position {raw.index(0)}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return BadRow(line, raw, Reason.BAD_TEXT, f"not UTF-8: {exc.reason} at byte "
                          f"{exc.start}")
        if len(raw) > MAX_LINE_BYTES:
            return BadRow(line, raw, Reason.BAD_COLUMNS,
                          f"line longer than {MAX_LINE_BYTES} bytes")
        if not self._seen_line:
            text = text.removeprefix("\ufeff")
        text = text.rstrip("\r")
        if not text.strip():
            return None
        problem = text_problem(text)
        if problem is not None:
            return BadRow(line, raw, Reason.BAD_TEXT, problem)
        first = not self._seen_line
        self._seen_line = True
        fields = self._split(text)
        if fields is None:
            got = len(text.split(self._delimiter or ","))
            return BadRow(line, raw, Reason.BAD_COLUMNS,
                          f"expected 4 fields ({_COLUMNS}), got {got}")
        if first and self._header(fields):
            return None
        return self._row(line, raw, fields)

    def _split(self, text: str) -> list[str] | None:
        counts = (4, 3) if self._controller is not None else (4,)
        if self._delimiter is None:
            for d in _DELIMITERS:
                if text.count(d) + 1 in counts:
                    self._delimiter = d
                    break
            else:
                return None
        fields = [_field(f) for f in text.split(self._delimiter)]
        return fields if len(fields) in counts else None

    def _header(self, fields: list[str]) -> bool:
        names = [_HEADER_NAMES.get(re.sub(r"[\s_\-]", "", f).lower()) for f in fields]
        if None in names or len(set(names)) != len(names):
            return False
        if len(fields) == 3 and "signal" in names:
            return False
        self._order = {n: i for i, n in enumerate(names) if n is not None}
        return True

    def _row(self, line: int, raw: bytes, fields: list[str]) -> Row | BadRow:
        order = self._order
        if len(fields) == 3:
            if order is not None and "signal" in order:
                return BadRow(line, raw, Reason.BAD_COLUMNS,
                              f"3 fields under a header of {len(order)}")
            i_ts, i_code, i_param = (
                (order["ts"], order["code"], order["param"]) if order else (0, 1, 2))
            signal = self._controller or ""
        else:
            if order is not None and len(order) == 3:
                return BadRow(line, raw, Reason.BAD_COLUMNS, "4 fields under a header of 3")
            o = order or {"signal": 0, "ts": 1, "code": 2, "param": 3}
            i_ts, i_code, i_param = o["ts"], o["code"], o["param"]
            signal = fields[o["signal"]]
        if not signal:
            return BadRow(line, raw, Reason.INVALID_VALUE, "empty SignalID")
        values = []
        for name, text in (("EventCode", fields[i_code]), ("EventParam", fields[i_param])):
            if not text.isdigit() or not text.isascii():
                return BadRow(line, raw, Reason.INVALID_VALUE,
                              f"{name} {text[:20]!r} is not a whole number")
            value = int(text)
            if value > 255:
                return BadRow(line, raw, Reason.OUT_OF_RANGE,
                              f"{name} {value} is outside 0..255")
            values.append(value)
        try:
            local = parse_timestamp(fields[i_ts])
        except ValueError as exc:
            return BadRow(line, raw, Reason.BAD_TIMESTAMP, str(exc))
        # far off years never reach the time zone (whose arithmetic would overflow)
        if local.tzinfo is None and local.year < MIN_TIME.year - 1:
            return BadRow(line, raw, Reason.TIMESTAMP_TOO_OLD,
                          f"{fields[i_ts]} is before {MIN_TIME:%Y-%m-%d}: a reset clock?")
        future = (f"{fields[i_ts]} is more than {self._max_future.total_seconds():.0f} s "
                  "ahead of now: check the controller clock and --timezone")
        if local.tzinfo is None and local.year > self._latest.year + 1:
            return BadRow(line, raw, Reason.TIMESTAMP_IN_FUTURE, future)
        ts = self.times.to_utc(local)
        if ts < MIN_TIME:
            return BadRow(line, raw, Reason.TIMESTAMP_TOO_OLD,
                          f"{fields[i_ts]} is before {MIN_TIME:%Y-%m-%d}: a reset clock?")
        if ts > self._latest:
            return BadRow(line, raw, Reason.TIMESTAMP_IN_FUTURE, future)
        return Row(line, signal, ts, values[0], values[1])


def open_log(path: Path) -> tuple[BufferedIOBase, BufferedIOBase]:
    """(the decompressed stream, the file underneath it, for progress by `tell()`).

    Gzip is recognised by its magic bytes, whatever the name."""
    raw = path.open("rb")
    try:
        magic = raw.read(2)
        raw.seek(0)
    except OSError:
        raw.close()
        raise
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return raw, raw


def iter_lines(stream: BufferedIOBase) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, the line without its end); an over-long line comes whole as
    its first `MAX_LINE_BYTES` bytes plus one, so that it cannot parse."""
    number = 0
    while True:
        chunk = stream.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        number += 1
        if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
            while True:  # skip the rest of the over-long line
                rest = stream.readline(65536)
                if not rest or rest.endswith(b"\n"):
                    break
            yield number, chunk[: MAX_LINE_BYTES + 1]
            continue
        yield number, chunk.rstrip(b"\n").rstrip(b"\r")


def file_sha256(path: Path) -> bytes:
    """The sha256 of the file's content (after gunzip): the same log compressed or not is
    the same file."""
    digest = hashlib.sha256()
    stream, raw = open_log(path)
    with raw, stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.digest()
