"""`cityops traffic follow-log`: a growing controller log file (tail -F) published as
SignalEvents on the controller's events topic of the machine's Mosquitto."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityops.api.cli import main
from cityops.ingest.config import Settings
from cityops.ingest.contract import Channel, DeviceKind, SignalEvents, device_topic
from cityops.traffic.follow_log import FollowOptions, FollowStats, LogTail, Position, follow
from tests.support.ingest import wait_for
from tests.traffic.eventlog_support import csv_lines, sim_events
from tests.traffic.store_support import CID, at

HEADER = "SignalID,Timestamp,EventCode,EventParam\n"

Event = tuple[datetime, int, int]


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return sim_events(at(0), 600.0)


def _append(path: Path, rows: list[Event], *, header: bool = False) -> None:
    with path.open("a") as f:
        f.write((HEADER if header else "") + "".join(f"{x}\n" for x in csv_lines(rows)))


class Subscriber:
    """Collects the SignalEvents published on one topic."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.events: list[Event] = []
        self.messages = 0
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"sub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect(settings.mqtt_host, settings.mqtt_port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        batch = SignalEvents.model_validate_json(msg.payload, strict=True)  # valid by contract
        with self._lock:
            self.messages += 1
            self.events += [(e.ts, e.code, e.param) for e in batch.events]

    def wait(self, n: int) -> list[Event]:
        wait_for(lambda: len(self.events) >= n, timeout=20, what=f"{n} events")
        with self._lock:
            return list(self.events)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(settings: Settings) -> Iterator[Subscriber]:
    sub = Subscriber(settings, device_topic(settings.topic_prefix, DeviceKind.SIGNAL, CID,
                                            Channel.EVENTS))
    yield sub
    sub.close()


class Following:
    """`follow` in a thread, stopped as the CLI's SIGTERM would."""

    def __init__(self, settings: Settings, log: Path, **options: Any) -> None:
        self.stop = threading.Event()
        self.stats: list[FollowStats] = []
        opts = FollowOptions(CID, interval_s=0.02, **options)
        self.thread = threading.Thread(
            target=lambda: self.stats.append(follow(settings, log, opts, stop=self.stop)))
        self.thread.start()

    def close(self) -> FollowStats:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        return self.stats[0]


def test_new_rows_arrive_on_the_broker_across_restarts_truncation_and_rotation(
    settings: Settings, subscriber: Subscriber, tmp_path: Path, events: list[Event],
) -> None:
    log = tmp_path / "controller.csv"
    pos = tmp_path / "controller.pos"
    _append(log, events[:10], header=True)
    following = Following(settings, log, position_file=pos, from_start=True)
    try:
        assert subscriber.wait(10) == events[:10]
        _append(log, events[10:30])
        with log.open("a") as f:  # a line being written: published once it is complete
            f.write(csv_lines(events[30:31])[0][:12])
        assert subscriber.wait(30) == events[:30]
        with log.open("a") as f:
            f.write(csv_lines(events[30:31])[0][12:] + "\nLSA-001,garbage,1,1\n")
        _append(log, events[31:40])
        assert subscriber.wait(40) == events[:40]
    finally:
        stats = following.close()
    assert stats.events == 40 and stats.bad == {"bad_timestamp": 1}
    assert Position.load(pos) == Position(os.stat(log).st_dev, os.stat(log).st_ino,
                                          log.stat().st_size, 42)

    # stopped: rows written meanwhile come after the restart, nothing before them again
    _append(log, events[40:50])
    following = Following(settings, log, position_file=pos)
    try:
        assert subscriber.wait(50) == events[:50]
        # truncated and written anew (copytruncate)
        log.write_text(HEADER + "".join(f"{x}\n" for x in csv_lines(events[50:52])))
        assert subscriber.wait(52) == events[:52]
        # rotated: renamed away, the last rows of the old file, then a new file
        _append(log, events[52:55])
        os.rename(log, tmp_path / "controller.csv.1")
        _append(log, events[55:60], header=True)
        assert subscriber.wait(60) == events[:60]
    finally:
        following.close()
    assert len(subscriber.events) == 60


def test_the_cli_follows_from_the_end_of_the_file(
    settings: Settings, subscriber: Subscriber, tmp_path: Path, events: list[Event],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in (("MQTT_URL", settings.mqtt_url), ("TOPIC_PREFIX", settings.topic_prefix),
                        ("DATABASE_URL", settings.database_url)):
        monkeypatch.setenv(f"CITYOPS_{name}", value)
    log = tmp_path / "c.csv"
    _append(log, events[:5], header=True)
    # the CLI stops on SIGTERM; here its stop event comes from a timer instead
    stop = threading.Event()
    monkeypatch.setattr("cityops.traffic.eventlog_cli._stop_on_signals", lambda: stop)
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(main(
        ["traffic", "follow-log", str(log), "--controller", CID, "--interval", "0.02"])))
    thread.start()
    pos = tmp_path / f"c.csv.{CID}.pos"  # the default: next to the log

    def taken() -> bool:
        """A row appended until the follower (which began at the file's end) took one."""
        if pos.exists():
            return True
        _append(log, events[5:6])
        return False

    try:
        wait_for(taken, what="the follower to take a row")
        got = subscriber.wait(1)
        assert set(got) == {events[5]}  # the rows before it started are not published
    finally:
        stop.set()
        thread.join(10)
    assert code == [0]
    assert main(["traffic", "follow-log", str(log), "--controller", "bad id"]) == 2
    assert main(["traffic", "follow-log", str(log), "--controller", CID, "--timezone",
                 "Nowhere/Town"]) == 2


def test_log_tail_without_a_broker(tmp_path: Path, events: list[Event]) -> None:
    log = tmp_path / "t.csv"
    assert LogTail(log).read() == []  # not there yet: waits for it
    _append(log, events[:3], header=True)
    tail = LogTail(log)  # from the end
    assert tail.read() == []
    _append(log, events[3:5])
    lines = tail.read()
    assert [line.number for line in lines] == [5, 6]
    assert lines[-1].after.offset == log.stat().st_size
    with log.open("ab") as f:
        f.write(b"x" * 5000)  # no newline in sight: taken as one (bad) line
    (long,) = tail.read()
    assert len(long.raw) == 5000 and long.number == 7
    tail.close()
    # a position of another file (same path, new inode): read from the start
    other = Position(0, 1, 10, 2)
    log.unlink()
    _append(log, events[:2], header=True)
    tail = LogTail(log, other)
    assert [line.number for line in tail.read()] == [1, 2, 3]
    tail.close()
    bad = tmp_path / "bad.pos"
    bad.write_text("{not json")
    assert Position.load(bad) is None
    assert Position.load(tmp_path / "none.pos") is None
    with pytest.raises(ValueError, match="interval_s"):
        FollowOptions(CID, interval_s=0)
    assert FollowOptions(CID).position_path(log) == tmp_path / f"t.csv.{CID}.pos"
