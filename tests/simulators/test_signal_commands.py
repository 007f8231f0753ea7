"""The lightweight controller emulator obeys timing commands, safely (pure and over MQTT)."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityops.ingest.config import Settings
from cityops.ingest.contract import (
    Channel,
    DeviceKind,
    TimingCommand,
    command_topic,
    device_topic,
)
from cityops.simulators.city import City, Controller, Detector
from cityops.simulators.emission import LocalClock
from cityops.simulators.models import CitySim
from cityops.simulators.runner import run
from cityops.simulators.signal_sim import SignalControllerSim
from tests.simulators.factories import START, make_controller, make_phase, network, small_scenario
from tests.support.ingest import Publisher

CLOCK = LocalClock(ZoneInfo("Europe/Berlin"))
BEGIN_GREEN, MAX_OUT, FORCE_OFF, END_GREEN, PATTERN = 1, 5, 6, 7, 131


def command(
    cid: str,
    seq: int,
    at: float,
    action: str | None = None,
    phase: int | None = None,
    mode: str = "adaptive",
    valid_for_s: float = 10.0,
) -> TimingCommand:
    return TimingCommand(
        controller_id=cid,
        issuer="test",
        seq=seq,
        issued_at=datetime.fromtimestamp(at, UTC),
        valid_for_s=valid_for_s,
        mode=mode,  # type: ignore[arg-type]
        phase=phase,
        action=action,  # type: ignore[arg-type]
    )


def greens_of(events: list[tuple[int, int, int]], phase: int) -> list[tuple[float, float]]:
    """(begin, end) of each complete green of `phase`, seconds."""
    out, begin = [], None
    for ts, code, param in events:
        if param == phase and code == BEGIN_GREEN:
            begin = ts / 10
        elif param == phase and code == END_GREEN and begin is not None:
            out.append((begin, ts / 10))
    return out


# -- pure: departures follow the greens the controller really gives ----------------------


def test_vehicles_leave_on_the_commanded_greens_only() -> None:
    """Adaptive control cuts both greens short (8 s and 6 s instead of 30 s and 20 s):
    every stop-bar occupancy ends on a green the controller gave (or its clearance), none
    in the red that the fixed cycle would have shown as green; batches stay in order."""
    spec = make_controller()
    sim = SignalControllerSim(spec, CLOCK, seed=1, index=0, start=START)
    ctrl = sim.controller
    events: list[tuple[int, int, int]] = []
    t, seq, last = START, 0, START
    while t < START + 1800:
        t += 2.0
        got = sim.raw_events_until(t)
        assert all(last * 10 <= ts <= t * 10 for ts, _, _ in got)  # never late, never ahead
        events += got
        last = t
        seq += 1
        target = {2: 8.0, 4: 6.0}[ctrl.phase]
        green = ctrl.interval.value == "green"
        action = "advance" if green and ctrl.interval_elapsed_s >= target else "hold"
        phase = ctrl.phase if green else ctrl.next_phase
        sim.receive(command(spec.controller_id, seq, t, action, phase), t)
    assert ctrl.counts["accepted:advance"] > 100 and ctrl.counts["refused:min_green"] == 0
    assert [ts for ts, _, _ in events] == sorted(ts for ts, _, _ in events)
    assert (PATTERN, 3) in {(c, p) for _, c, p in events}
    for phase, channel, yellow, red, want in ((2, 1, 4.0, 2.0, 8.0), (4, 3, 3.0, 1.5, 6.0)):
        greens = greens_of(events, phase)
        assert len(greens) > 60  # cycles of ~26 s instead of 60.5 s
        assert all(want <= end - begin <= want + 2.0 for begin, end in greens[1:])
        offs = [ts / 10 for ts, code, p in events if code == 81 and p == channel]
        ons = [ts / 10 for ts, code, p in events if code == 82 and p == channel]
        assert len(offs) > 100 and abs(len(ons) - len(offs)) <= 1
        # a vehicle leaves in green (queued ones up to 1 s into yellow) and rolls off the
        # loop within seconds: an occupancy never ends deep in the red
        for off in offs:
            assert any(b < off <= e + yellow + red + 3.0 for b, e in greens), (phase, off)
    # force-offs, not the fixed plan's own ends: every adaptive green ends with code 6
    assert sum(1 for _, c, _ in events if c == FORCE_OFF) >= 120


def test_without_commands_the_log_is_the_fixed_plan_for_a_seed() -> None:
    def log(seed: int, step: float) -> list[tuple[int, int, int]]:
        sim = SignalControllerSim(make_controller(), CLOCK, seed=seed, index=0, start=START)
        out, t = [], START
        while t < START + 900:
            t += step
            out += sim.raw_events_until(t)
        return out

    a = log(1, 1.0)
    assert a[: len(log(1, 13.7))] == log(1, 13.7)[: len(a)]
    assert a != log(2, 1.0)
    assert not {c for _, c, _ in a} & {FORCE_OFF, MAX_OUT, PATTERN}
    assert {round(e - b, 1) for b, e in greens_of(a, 2)} == {30.0}


# -- over the broker: cmd/timing into the running simulator, events out -------------------


@dataclass
class Log:
    events: list[tuple[float, int, int]] = field(default_factory=list)
    online_at: float | None = None  # wall time the controller's online status arrived
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[tuple[float, int, int]]:
        with self.lock:
            return list(self.events)

    def wait(self, what: str, pred: object, timeout: float = 30.0) -> list[tuple[float, int, int]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.snapshot()
            if pred(events):  # type: ignore[operator]
                return events
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {self.snapshot()[-20:]}")


@contextmanager
def event_log(settings: Settings, topic: str) -> Iterator[Log]:
    log = Log()
    ready = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        payload = json.loads(msg.payload)
        if msg.topic.endswith("/status"):
            if payload["state"] == "online" and log.online_at is None:
                log.online_at = time.time()
            return
        batch = payload["events"]
        with log.lock:
            log.events += [
                (datetime.fromisoformat(e["ts"]).timestamp(), e["code"], e["param"]) for e in batch
            ]

    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = on_message
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    try:
        assert ready.wait(5), "subscription not acknowledged"
        yield log
    finally:
        client.disconnect()
        client.loop_stop()


def slow_controller(start: float) -> Controller:
    """Phase 2 green since 1 s before `start` on its own plan of 20 s (min 12, max 30)."""
    p2 = replace(make_phase(2, 1, 20.0, 3.0, 2.0, 900.0), min_green_s=12.0, max_green_s=30.0)
    p4 = replace(make_phase(4, 2, 12.0, 3.0, 1.0, 300.0), min_green_s=8.0)
    cycle = 20.0 + 5.0 + 12.0 + 4.0
    offset = round((start - 1.0) % cycle, 1)
    return Controller(
        controller_id="LSA-CMD",
        name="Command test",
        lat=60.17,
        lon=24.94,
        node=0,
        offset_s=offset,
        phases=(p2, p4),
        detectors=(
            Detector(channel=1, phase=2, kind="stop_bar", lane=1, distance_m=0.0, length_m=2.0),
        ),
    )


def test_runner_obeys_safe_commands_refuses_unsafe_ones_and_falls_back(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    roads = network()  # loaded first: simulated time starts at `start` when the run does
    start = float(int(time.time()))
    spec = slow_controller(start)
    cid = spec.controller_id
    city = City("test", 1, (), (), (spec,), ())
    sim = CitySim(city, small_scenario(), roads, start)
    prefix = settings.topic_prefix
    cmd_topic = command_topic(prefix, DeviceKind.SIGNAL, cid, "timing")
    stop = threading.Event()
    out: dict[str, object] = {}

    def runner() -> None:
        out["stats"] = run(
            sim, settings, speed=1.0, stop=stop, client_id_prefix=f"t{uuid.uuid4().hex[:6]}-"
        )

    pub = Publisher(settings.mqtt_host, settings.mqtt_port)
    thread = threading.Thread(target=runner, daemon=True)
    topics = device_topic(prefix, DeviceKind.SIGNAL, cid, Channel.EVENTS).replace("/events", "/+")
    with event_log(settings, topics) as log:
        thread.start()
        try:
            # The controller is online (connected and subscribed); simulated time starts at
            # `start` right after, then runs at real time: phase 2 has been green for about
            # 1 s of its 12 s min green. The wall clock is never behind simulated time, so
            # issued_at = wall time is never stale.
            deadline = time.monotonic() + 15
            while log.online_at is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert log.online_at is not None, "the controller did not come online"
            first = time.time()
            pub.publish(cmd_topic, b"{not json")
            pub.publish(cmd_topic, json.dumps({"controller_id": cid, "seq": 1}).encode())
            pub.publish(cmd_topic, command(cid, 1, first, "advance", 2).model_dump_json().encode())
            hold = command(cid, 2, first, "hold", 2, valid_for_s=30.0)
            pub.publish(cmd_topic, hold.model_dump_json().encode())
            # past min green (simulated time about start + 15): advance, valid for 3 s;
            # the same seq again is dropped
            time.sleep(max(0.0, log.online_at + 15.0 - time.time()))
            advance = command(cid, 3, time.time(), "advance", 2, valid_for_s=3.0)
            pub.publish(cmd_topic, advance.model_dump_json().encode())
            pub.publish(cmd_topic, advance.model_dump_json().encode())
            pub.wait_all()
            # then silence: back to the own fixed-time plan
            events = log.wait("fallback", lambda ev: (PATTERN, 1) in {(c, p) for _, c, p in ev})
        finally:
            stop.set()
            thread.join(15)
            pub.close()
    assert not thread.is_alive()

    phase_events = [(ts, c, p) for ts, c, p in events if c < 80 or c == PATTERN]
    first_end = next(ts for ts, c, p in phase_events if c == END_GREEN and p == 2)
    # the unsafe advance changed nothing: the green (begun at start - 1 s) lasted past its
    # 12 s min green, held, and was ended by the commanded advance (force-off)
    assert first_end >= start - 1.0 + 12.0
    assert (first_end, FORCE_OFF, 2) in phase_events
    modes = [(ts, p) for ts, c, p in phase_events if c == PATTERN]
    assert [p for _, p in modes] == [3, 1]  # adaptive on the first command, then fallback
    assert modes[1][0] >= advance.issued_at.timestamp() + 3.0 - 0.1
    # the next phase runs on after the fallback; phase events keep their order
    assert [c for _, c, p in phase_events if p == 2 and c != PATTERN][:4] == [6, 7, 8, 9]

    stats = out["stats"]
    assert stats.commands == {  # type: ignore[attr-defined]
        "refused:invalid": 2,
        "refused:min_green": 1,
        "accepted:hold": 1,
        "accepted:advance": 1,
        "dropped:seq": 1,
    }
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("invalid timing command refused" in m for m in logged)
    assert any("before min green" in m and cid in m for m in logged)
    assert any("back to its own fixed-time plan" in m for m in logged)
