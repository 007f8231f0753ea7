"""The control service over the real broker and database: events in, TimingCommands out."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityops.api.app import create_app
from cityops.api.auth import Principal, current_principal
from cityops.ingest.config import Settings
from cityops.ingest.contract import SignalEvent, SignalEvents, TimingCommand, utc_iso
from cityops.traffic.control import ControlService
from cityops.traffic.control_state import ControllerClock, ControlOptions, clock_topic
from cityops.traffic.maxpressure import ControlParams
from tests.api.testclient import TestClient

T0 = datetime(2024, 5, 6, 7, 0, tzinfo=UTC)
SB2, ADV2, SB4, ADV4 = 1, 2, 3, 4


def seed(db_url: str, *ids: str) -> None:
    with psycopg.connect(db_url) as conn:
        for cid in ids:
            conn.execute(
                "INSERT INTO signal_controllers (controller_id, name, geom, cycle_s)"
                " VALUES (%s, 'Test', ST_SetSRID(ST_MakePoint(13.4, 52.5), 4326), 60)",
                (cid,),
            )
            conn.execute(
                "INSERT INTO signal_phases VALUES (%s, 2, 1, 'NS', 5, 60, 20, 3, 2),"
                " (%s, 4, 2, 'EW', 5, 60, 20, 3, 2)",
                (cid, cid),
            )
            conn.execute(
                "INSERT INTO signal_detectors (controller_id, channel, phase, kind, lane,"
                " distance_m) VALUES (%s, 1, 2, 'stop_bar', 1, 0), (%s, 2, 2, 'advance', 1, 70),"
                " (%s, 3, 4, 'stop_bar', 1, 0), (%s, 4, 4, 'advance', 1, 70)",
                (cid, cid, cid, cid),
            )


class Broker:
    """A test client: publishes controller events and ticks, collects timing commands."""

    def __init__(self, settings: Settings) -> None:
        self.prefix = settings.topic_prefix
        self.commands: list[TimingCommand] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(
            f"{self.prefix}/v1/signal/+/cmd/timing", qos=1
        )
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(settings.mqtt_host, settings.mqtt_port)
        self.client.loop_start()
        assert self._ready.wait(10)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        assert not msg.retain
        cmd = TimingCommand.model_validate_json(msg.payload)
        with self._lock:
            self.commands.append(cmd)

    def events(self, cid: str, *events: tuple[float, int, int]) -> None:
        payload = SignalEvents(
            events=[
                SignalEvent(ts=T0 + timedelta(seconds=t), code=c, param=p) for t, c, p in events
            ]
        )
        self.client.publish(
            f"{self.prefix}/v1/signal/{cid}/events", payload.model_dump_json(), qos=1
        ).wait_for_publish(5)

    def tick(self, t: float, step: int) -> datetime:
        ts = T0 + timedelta(seconds=t)
        self.client.publish(
            clock_topic(self.prefix), f'{{"ts": "{utc_iso(ts)}", "step": {step}}}', qos=1
        ).wait_for_publish(5)
        return ts

    def snapshot(self) -> list[TimingCommand]:
        with self._lock:
            return list(self.commands)

    def wait_for(
        self, pred: Callable[[TimingCommand], bool], n: int = 1, timeout: float = 10.0
    ) -> list[TimingCommand]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [c for c in self.snapshot() if pred(c)]
            if len(found) >= n:
                return found
            time.sleep(0.02)
        raise AssertionError(f"timed out; commands so far: {self.snapshot()}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(settings: Settings) -> Iterator[Broker]:
    b = Broker(settings)
    yield b
    b.close()


def run(settings: Settings, **kw: object) -> ControlService:
    options = ControlOptions(
        decision_interval_s=0.2,
        modes_refresh_s=0.2,
        summary_every_s=1.0,
        issuer=f"ctl-{uuid.uuid4().hex[:6]}",
        **kw,  # type: ignore[arg-type]
    )
    service = ControlService(settings, options)
    service.start()
    assert service.wait_connected(10)
    time.sleep(0.2)  # let the subscription settle before the first publish
    return service


def car(t: float, ch: int) -> list[tuple[float, int, int]]:
    return [(t, 82, ch), (t + 0.5, 81, ch)]


def test_events_in_decisions_out_with_increasing_seq(settings: Settings, broker: Broker) -> None:
    seed(settings.database_url, "c1")
    service = run(settings)
    try:
        # phase 2 green from 0 with nobody; three vehicles queue on phase 4
        broker.events(
            "c1",
            (0, 131, 3),
            (0, 1, 2),
            (0.5, 82, SB4),
            *car(1, ADV4),
            *car(2, ADV4),
            *car(3, ADV4),
        )
        # decided at the controller's time: its newest event (3.5 s) plus the wall time
        # since that arrived; before min green (5 s) that is hold
        holds = broker.wait_for(lambda c: c.issued_at < T0 + timedelta(seconds=5), n=2)
        assert all((c.mode, c.phase, c.action) == ("adaptive", 2, "hold") for c in holds)
        assert all(c.issued_at >= T0 + timedelta(seconds=3.5) for c in holds)
        # min green has passed (at the latest with the vehicle at 6 s): advance
        broker.events("c1", *car(6, ADV4))
        (adv,) = broker.wait_for(lambda c: c.action == "advance")[:1]
        assert adv.issued_at >= T0 + timedelta(seconds=5) and adv.phase == 2
    finally:
        service.stop()
    # a graceful stop hands the controller back to its own plan: the last command. Wait for
    # it to arrive before looking at all of them (it is published during stop()).
    last = broker.wait_for(lambda c: c.mode == "fallback")[-1]
    cmds = broker.snapshot()
    seqs = [c.seq for c in cmds]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert {c.issuer for c in cmds} == {service.issuer} and {c.controller_id for c in cmds} == {
        "c1"
    }
    assert all(c.valid_for_s == 10.0 for c in cmds)
    assert last.seq == max(seqs)


def test_controller_clock_runs_on_from_the_newest_event_received() -> None:
    clock = ControllerClock(T0, heard=100.0)
    assert clock.now(103.5, cap_s=300) == T0 + timedelta(seconds=3.5)
    clock.heard_event(T0 - timedelta(seconds=5), 104.0)  # a late batch of older events
    assert clock.now(104.0, cap_s=300) == T0 + timedelta(seconds=4)
    clock.heard_event(T0 + timedelta(seconds=1), 104.0)  # newer events: counted from now
    assert clock.now(104.0, cap_s=300) == T0 + timedelta(seconds=1)
    assert clock.now(200.0, cap_s=2.0) == T0 + timedelta(seconds=3)  # unheard: capped
    assert clock.silent_s(200.0) == 96.0 and clock.silent_s(50.0) == 0.0


def test_a_quiet_controller_gets_fresh_commands_until_its_detectors_go_stale(
    settings: Settings, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty junction resting in green logs nothing; its commands must not go stale."""
    seed(settings.database_url, "c1")
    caplog.set_level(logging.INFO, logger="cityops.traffic.control")
    service = run(settings, valid_for_s=1.0, params=ControlParams(stale_after_s=3.0))
    try:
        broker.events("c1", (0, 131, 3), (0, 1, 2))  # then nothing at all
        # valid for 1 s: a command issued after 1.5 s is fresh 1.5 s after the last event
        broker.wait_for(lambda c: c.issued_at > T0 + timedelta(seconds=1.5), timeout=15)
        fb = broker.wait_for(lambda c: c.mode == "fallback", timeout=15)
        time.sleep(0.6)  # three more decision steps: nothing more for it
        cmds = broker.snapshot()
    finally:
        service.stop()
    adaptive = [c for c in cmds if c.mode == "adaptive"]
    assert all((c.phase, c.action) == (2, "hold") for c in adaptive)
    issued = [c.issued_at for c in adaptive]
    assert issued == sorted(issued) and issued[-1] < T0 + timedelta(seconds=3)
    # unheard for the stale-detector limit: every detector is stale, fallback once, and
    # the estimated time stops there
    assert fb[0].issued_at == T0 + timedelta(seconds=3) and cmds[-1] == fb[0]
    assert "c1 degraded to fallback" in caplog.text and "1 stale, 2 stale" in caplog.text


def test_switching_off_via_the_api_sends_fallback_once(settings: Settings, broker: Broker) -> None:
    seed(settings.database_url, "c1", "c2")
    app = create_app(settings)
    app.dependency_overrides[current_principal] = lambda: Principal(
        "eng", frozenset({"traffic_engineer"})
    )
    service = run(settings)
    try:
        with TestClient(app) as api:
            for cid in ("c1", "c2"):
                broker.events(cid, (0, 1, 2), *car(1, ADV2))
            broker.wait_for(lambda c: c.controller_id == "c1" and c.mode == "adaptive")
            r = api.put(
                "/api/v1/traffic/control/modes/c1",
                json={"mode": "fixed", "reason": "roadworks at the junction"},
            )
            assert r.status_code == 200, r.text
            assert r.json()["mode"] == "fixed" and r.json()["changed_by"] == "eng"
            fb = broker.wait_for(lambda c: c.controller_id == "c1" and c.mode == "fallback")
            time.sleep(1.0)  # five more decision steps
            c1_after = [
                c for c in broker.snapshot() if c.controller_id == "c1" and c.seq > fb[0].seq
            ]
            assert c1_after == [] and len(fb) == 1
            # c2 is still under adaptive control
            assert any(
                c.controller_id == "c2" and c.mode == "adaptive" and c.seq > fb[0].seq
                for c in broker.snapshot()
            )
            r = api.put(
                "/api/v1/traffic/control/modes/c1",
                json={"mode": "adaptive", "reason": "roadworks done"},
            )
            assert r.status_code == 200
            broker.wait_for(
                lambda c: c.controller_id == "c1" and c.mode == "adaptive" and c.seq > fb[0].seq
            )
    finally:
        service.stop()


def test_lockstep_ticks_are_answered_at_tick_time(settings: Settings, broker: Broker) -> None:
    seed(settings.database_url, "c1", "c2")
    service = run(settings, clock="mqtt")
    try:
        for cid in ("c1", "c2"):
            broker.events(cid, (0, 131, 3), (0, 1, 2))
        for step in range(1, 5):
            t = 2.0 * step
            for cid in ("c1", "c2"):
                broker.events(cid, *car(t - 1.5, ADV4))
            tick = broker.tick(t, step)
            got = broker.wait_for(lambda c, tick=tick: c.issued_at == tick, n=2)
            assert sorted(c.controller_id for c in got) == ["c1", "c2"]
            assert all(c.mode == "adaptive" and c.phase == 2 for c in got)
        actions = [c.action for c in broker.snapshot() if c.controller_id == "c1"]
        # min green 5 s: hold at 2 and 4 s; at 6 s four vehicles wait on phase 4
        assert actions == ["hold", "hold", "advance", "advance"]
        assert service.stats["ticks"] == 4
    finally:
        service.stop()


def test_a_stale_detector_degrades_to_fallback(
    settings: Settings, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    seed(settings.database_url, "c1")
    caplog.set_level(logging.INFO, logger="cityops.traffic.control")
    service = run(settings, clock="mqtt", params=ControlParams(stale_after_s=10.0))
    try:
        broker.events("c1", (0, 131, 3), (0, 1, 2))
        # phase 2's detectors report every 2 s; phase 4's never do
        modes = []
        for step, t in enumerate((4.0, 8.0, 12.0, 14.0), start=1):
            broker.events("c1", *car(t - 1.0, ADV2), *car(t - 0.8, SB2))
            tick = broker.tick(t, step)
            (cmd,) = broker.wait_for(lambda c, tick=tick: c.issued_at == tick)
            modes.append(cmd.mode)
        assert modes == ["adaptive", "adaptive", "fallback", "fallback"]
        assert "c1 degraded to fallback" in caplog.text and "3 stale, 4 stale" in caplog.text
        # a phase 4 detector reports again: adaptive control resumes
        broker.events("c1", *car(15.0, SB4))
        tick = broker.tick(16.0, 5)
        (cmd,) = broker.wait_for(lambda c: c.issued_at == tick)
        assert cmd.mode == "adaptive"
        assert service.stats["degradations"] == 1
    finally:
        service.stop()


def test_cli_refuses_bad_options_and_nothing_to_control(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cityops.api.cli import main

    seed(settings.database_url, "c1")
    monkeypatch.setenv("CITYOPS_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CITYOPS_TOPIC_PREFIX", settings.topic_prefix)
    assert main(["traffic", "control", "--valid-for", "500"]) == 2
    assert "valid_for_s must be in (0, 300]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["traffic", "control", "--clock", "sundial"])
    assert main(["traffic", "control", "--controllers", "nope,other"]) == 2


def test_the_command_runs_in_lockstep_and_stops_on_sigterm(
    settings: Settings, broker: Broker
) -> None:
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    seed(settings.database_url, "c1")
    cityops = Path(sys.executable).with_name("cityops")
    env = {
        **os.environ,
        "CITYOPS_DATABASE_URL": settings.database_url,
        "CITYOPS_TOPIC_PREFIX": settings.topic_prefix,
        "CITYOPS_MQTT_URL": settings.mqtt_url,
    }
    proc = subprocess.Popen(
        [str(cityops), "traffic", "control", "--clock", "mqtt", "--issuer", "bench-1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        step = 0
        while not [c for c in broker.snapshot() if c.issuer == "bench-1"]:
            assert time.monotonic() < deadline, "no command from the subprocess"
            assert proc.poll() is None, "the subprocess exited"
            # what is published before it subscribed is lost: send the green again
            broker.events("c1", (0, 131, 3), (0, 1, 2))
            step += 1
            broker.tick(2.0 * step, step)
            time.sleep(0.3)
        (cmd,) = broker.snapshot()[:1]
        assert cmd.mode == "adaptive" and cmd.phase == 2 and cmd.action == "hold"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    with proc.stderr:
        log = proc.stderr.read().decode()
    assert "fallback sent to c1" in log, log
