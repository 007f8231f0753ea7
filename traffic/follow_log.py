"""Follow one controller's event log file as it grows and publish its new rows over MQTT.

For a real controller that writes its high-resolution log to a file (on a cabinet
computer, or a file an upload keeps appending to) rather than speaking our MQTT contract:
`cityops traffic follow-log FILE --controller ID` reads the new complete lines like
`tail -F` (a truncated file is read again from its start; a rotated one, renamed away
and created anew, is read to its end, then the new file from its start), turns them into
`SignalEvents` batches (`eventlog.EventLogParser`, the rows of `import-events`) and
publishes them at QoS 1 on the controller's events topic, so the ingest stores them and
adaptive control sees them as from any controller of ours.

A position file (device, inode, byte offset and line number of the last line whose batch
the broker acknowledged) lets a restart go on where it stopped. Delivery is at least
once: a batch published but not yet acknowledged when the process died is published
again, and the ingest stores it once (`signal_events` primary key, `ON CONFLICT DO
NOTHING`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from cityops.ingest.config import Settings
from cityops.ingest.contract import (
    DEVICE_ID_PATTERN,
    Channel,
    DeviceKind,
    SignalEvent,
    SignalEvents,
    device_topic,
)
from cityops.ingest.mqttclient import make_client

from .eventlog import MAX_LINE_BYTES, BadRow, EventLogParser, LocalTimes, zone

__all__ = ["FollowOptions", "FollowStats", "LogTail", "Position", "TailLine", "follow"]

logger = logging.getLogger(__name__)

#: Events per message: the contract's maximum.
MAX_EVENTS = 5000
_CHUNK = 1 << 16
_LOGGED_BAD_LINES = 20


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading stopped: after line `line`, at byte `offset` of the file (device,
    inode)."""

    device: int
    inode: int
    offset: int
    line: int

    @classmethod
    def load(cls, path: Path) -> Position | None:
        try:
            data = json.loads(path.read_text("utf-8"))
            return cls(int(data["device"]), int(data["inode"]), int(data["offset"]),
                       int(data["line"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("position file %s is unreadable (%s): starting afresh", path, exc)
            return None

    def save(self, path: Path) -> None:
        """Written to a temporary file and renamed over the old one: never half written."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self)), "utf-8")
        os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class TailLine:
    number: int  # 1 is the first line of a file (a header may follow)
    raw: bytes  # without the line end
    after: Position


class LogTail:
    """The complete new lines of a growing file, across truncation and rotation.

    A line is complete once its newline is written; the last, unfinished one waits. At the
    first open the file is read from `position` when it still names that file (same device
    and inode, not shorter), else from its end (`from_start`: from its beginning).
    """

    def __init__(self, path: Path, position: Position | None = None, *,
                 from_start: bool = False) -> None:
        self.path = path
        self._position = position
        self._from_start = from_start
        self._opened_once = False
        self._fh: BinaryIO | None = None
        self._ident = (0, 0)
        self._offset = 0  # end of the last line returned
        self._line = 0
        self._buf = b""  # read after _offset: an unfinished line
        self._missing_logged = False

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _open(self) -> bool:
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            if not self._missing_logged:
                logger.info("%s does not exist (yet): waiting for it", self.path)
                self._missing_logged = True
            return False
        self._missing_logged = False
        st = os.fstat(fh.fileno())
        ident = (st.st_dev, st.st_ino)
        offset = line = 0
        if not self._opened_once:
            self._opened_once = True
            pos = self._position
            if pos is not None and (pos.device, pos.inode) == ident and pos.offset <= st.st_size:
                offset, line = pos.offset, pos.line
                logger.info("%s: going on after line %d (byte %d)", self.path, line, offset)
            elif pos is not None:
                logger.warning("%s was rotated or truncated since the position was saved: "
                               "reading it from its start", self.path)
            elif not self._from_start:
                offset, line = _last_line_end(fh)
                logger.info("%s: following from its end (line %d)", self.path, line)
        fh.seek(offset)
        self._fh, self._ident, self._offset, self._line, self._buf = fh, ident, offset, line, b""
        return True

    def read(self, max_lines: int = MAX_EVENTS) -> list[TailLine]:
        """The complete lines written since the last call (at most `max_lines`)."""
        if self._fh is None and not self._open():
            return []
        out = self._drain(max_lines)
        if len(out) >= max_lines:
            return out
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return out  # renamed away, the new file not there yet: the old one may still grow
        if (st.st_dev, st.st_ino) != self._ident:
            if self._buf:  # the rotated file ended without a newline: its last line
                out.append(self._take(len(self._buf), len(self._buf)))
            logger.info("%s was rotated: reading the new file from its start", self.path)
            self.close()
            if self._open():
                out += self._drain(max_lines - len(out))
        elif st.st_size < self._offset + len(self._buf):
            logger.warning("%s was truncated: reading it again from its start", self.path)
            assert self._fh is not None
            self._fh.seek(0)
            self._offset, self._line, self._buf = 0, 0, b""
            out += self._drain(max_lines - len(out))
        return out

    def _take(self, end: int, skip: int) -> TailLine:
        """The line of the buffer's first `end` bytes; `skip` bytes (with the newline) go."""
        raw = self._buf[:end].rstrip(b"\r")
        self._buf = self._buf[skip:]
        self._offset += skip
        self._line += 1
        return TailLine(self._line, raw,
                        Position(self._ident[0], self._ident[1], self._offset, self._line))

    def _drain(self, max_lines: int) -> list[TailLine]:
        assert self._fh is not None
        out: list[TailLine] = []
        while len(out) < max_lines:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                out.append(self._take(nl, nl + 1))
                continue
            if len(self._buf) > MAX_LINE_BYTES:  # no newline in sight: refuse it as a line
                out.append(self._take(len(self._buf), len(self._buf)))
                continue
            chunk = self._fh.read(_CHUNK)
            if not chunk:
                break
            self._buf += chunk
        return out


def _last_line_end(fh: BinaryIO) -> tuple[int, int]:
    """(offset after the file's last newline, lines before it)."""
    lines = end = pos = 0
    fh.seek(0)
    while chunk := fh.read(1 << 20):
        lines += chunk.count(b"\n")
        last = chunk.rfind(b"\n")
        if last >= 0:
            end = pos + last + 1
        pos += len(chunk)
    return end, lines


@dataclass(frozen=True, slots=True)
class FollowOptions:
    controller_id: str
    time_zone: str = "Europe/Berlin"
    #: default: next to the log, `<FILE>.<controller>.pos`
    position_file: Path | None = None
    from_start: bool = False
    interval_s: float = 0.5
    max_future: timedelta = timedelta(minutes=5)
    #: how often the numbers are logged
    summary_every_s: float = 60.0

    def __post_init__(self) -> None:
        zone(self.time_zone)
        if not re.match(DEVICE_ID_PATTERN, self.controller_id):
            raise ValueError(f"not a controller id: {self.controller_id!r}")
        if self.interval_s <= 0:
            raise ValueError("interval_s must be positive")

    def position_path(self, log: Path) -> Path:
        return self.position_file or log.with_name(f"{log.name}.{self.controller_id}.pos")


@dataclass(slots=True)
class FollowStats:
    lines: int = 0
    events: int = 0
    messages: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    other_controllers: int = 0


class _Acks:
    """Which publishes the broker acknowledged (paho queues them while disconnected, so
    the message info cannot tell)."""

    def __init__(self) -> None:
        self._done: set[int] = set()
        self._cond = threading.Condition()

    def on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._cond:
            self._done.add(mid)
            self._cond.notify_all()

    def wait(self, mid: int, stop: threading.Event, timeout_s: float = 1.0) -> bool:
        with self._cond:
            while mid not in self._done:
                if stop.is_set():
                    return False
                self._cond.wait(timeout_s)
            self._done.discard(mid)
            return True


def follow(
    settings: Settings, log: Path, options: FollowOptions, *, stop: threading.Event,
) -> FollowStats:
    """Follow `log` until `stop` is set; returns what was read and published."""
    cid = options.controller_id
    topic = device_topic(settings.topic_prefix, DeviceKind.SIGNAL, cid, Channel.EVENTS)
    pos_file = options.position_path(log)
    acks = _Acks()
    client = make_client(settings, f"cityops-follow-{cid}-{uuid.uuid4().hex[:6]}"[:64])
    client.on_publish = acks.on_publish
    client.on_connect = lambda *_a: logger.info("follow-log %s: connected to the broker", cid)
    client.on_disconnect = lambda *_a: None if stop.is_set() else logger.warning(
        "follow-log %s: disconnected from the broker, reconnecting", cid)
    client.connect_async(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    tail = LogTail(log, Position.load(pos_file), from_start=options.from_start)
    parser = EventLogParser(LocalTimes(zone(options.time_zone)), now=datetime.now(UTC),
                            max_future=options.max_future, controller_id=cid)
    stats = FollowStats()
    logger.info("follow-log %s: %s -> %s (position file %s)", cid, log, topic, pos_file)
    summary_at = time.monotonic() + options.summary_every_s
    try:
        while not stop.is_set():
            lines = tail.read(MAX_EVENTS)
            if not lines:
                if time.monotonic() >= summary_at:
                    summary_at = time.monotonic() + options.summary_every_s
                    _summary(cid, stats)
                stop.wait(options.interval_s)
                continue
            parser.set_now(datetime.now(UTC))
            events = _events(lines, parser, cid, log, stats)
            if events:
                info = client.publish(topic, SignalEvents(events=events).model_dump_json(),
                                      qos=1)
                if not acks.wait(info.mid, stop):
                    break  # stopped before the broker took it: published again next time
                stats.events += len(events)
                stats.messages += 1
            lines[-1].after.save(pos_file)
    finally:
        tail.close()
        client.disconnect()
        client.loop_stop()
        _summary(cid, stats)
    return stats


def _events(lines: list[TailLine], parser: EventLogParser, cid: str, log: Path,
            stats: FollowStats) -> list[SignalEvent]:
    events = []
    for line in lines:
        if line.number == 1:
            parser.reset()
        parsed = parser.parse(line.number, line.raw)
        if parsed is None:
            continue
        stats.lines += 1
        if isinstance(parsed, BadRow):
            stats.bad[parsed.reason.value] += 1
            if sum(stats.bad.values()) <= _LOGGED_BAD_LINES:
                logger.warning("%s line %d not published: %s: %s", log.name, line.number,
                               parsed.reason.value, parsed.detail)
            continue
        if parsed.controller_id != cid:
            stats.other_controllers += 1
            continue
        events.append(SignalEvent(ts=parsed.ts, code=parsed.code, param=parsed.param))
    return events


def _summary(cid: str, stats: FollowStats) -> None:
    bad = ", ".join(f"{n} {r}" for r, n in sorted(stats.bad.items())) or "none"
    logger.info("follow-log %s: %d lines read, %d events published in %d messages; "
                "not published: %s bad, %d of other controllers", cid, stats.lines,
                stats.events, stats.messages, bad, stats.other_controllers)
