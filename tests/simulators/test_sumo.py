"""The SUMO grid with our controllers: real SUMO (libsumo), real broker, real database."""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from cityops.ingest.config import Settings
from cityops.ingest.contract import DeviceKind, SignalEvents, TimingCommand, command_topic
from cityops.ingest.mqttclient import make_client
from cityops.simulators.controller import RawEvent
from cityops.simulators.sumo.mqtt import MqttBus
from cityops.simulators.sumo.network import GridSpec
from cityops.simulators.sumo.registry import seed_grid
from cityops.simulators.sumo.sim import RunConfig, run
from cityops.traffic.control_state import clock_topic
from cityops.traffic.events import Event, clean
from cityops.traffic.repository import load_config

START = 1_763_622_000.0


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sumo")


def cfg(work_dir: Path, **kw: object) -> RunConfig:
    base: dict[str, object] = {
        "start": START,
        "work_dir": work_dir,
        "duration_s": 120.0,
        "vph": 3600.0,
        "seed": 3,
        "keep_events": True,
    }
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


def test_events_fit_the_registry_and_detectors_alternate(work_dir: Path, db_url: str) -> None:
    result = run(cfg(work_dir))
    assert result.departed > 50 and result.arrived > 0
    assert len(result.events) == 9
    with psycopg.connect(db_url) as conn:
        seed_grid(conn, GridSpec(), result.junctions)
        for cid, raw in result.events.items():
            config = load_config(conn, cid)
            events = [Event(e.ts_ds / 10, e.code, e.param) for e in raw]
            cleaned = clean(events, config)
            assert cleaned.flags == (), cleaned.flags[:3]
            assert set(config.detectors) == {
                lp.channel for j in result.junctions if j.controller_id == cid for lp in j.loops
            }
            _check_detectors(raw)
            # phase events: fixed order 2 -> 4 with 25 s greens, 3 s yellow, 2 s red
            begins = [e.ts_ds for e in raw if e.code == 1]
            phases = [e.param for e in raw if e.code == 1]
            assert phases[:4] == [2, 4, 2, 4]
            assert {b - a for a, b in itertools.pairwise(begins)} == {300}
    # some vehicles cross the loops of every junction
    on = sum(1 for raw in result.events.values() for e in raw if e.code == 82)
    assert on > result.departed


def _check_detectors(raw: list[RawEvent]) -> None:
    state: dict[int, int] = {}
    for e in raw:
        if e.code in (81, 82):
            assert state.get(e.param, 81) != e.code, f"channel {e.param} repeats {e.code}"
            state[e.param] = e.code
    ts = [e.ts_ds for e in raw]
    assert ts == sorted(ts)


def test_deterministic_for_a_seed(work_dir: Path) -> None:
    a = run(cfg(work_dir, duration_s=60.0))
    b = run(cfg(work_dir, duration_s=60.0))
    c = run(cfg(work_dir, duration_s=60.0, seed=4))
    assert a.events == b.events
    assert a.summary()["mean_time_loss_s"] == b.summary()["mean_time_loss_s"]
    assert a.events != c.events


def test_actuated_reference_runs(work_dir: Path) -> None:
    result = run(cfg(work_dir, control="actuated", duration_s=60.0))
    assert result.departed > 0
    assert not any(e.code < 80 for raw in result.events.values() for e in raw)


class _Service:
    """A stand-in control service: on every tick, hold the green until 20 s, then advance;
    its first decision is an unsafe advance (before min green). Stops at `stop_at`."""

    def __init__(self, settings: Settings, stop_at: float) -> None:
        self.prefix = settings.topic_prefix
        self.stop_at = stop_at
        self.green: dict[str, tuple[int, float, bool]] = {}
        self.seq = 0
        self.sent = 0
        self.batches: list[bytes] = []
        self.lock = threading.Lock()
        self.client = make_client(settings, f"svc-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self.on_message
        self.ready = threading.Event()
        self.client.on_connect = lambda c, *a: (
            c.subscribe([(clock_topic(self.prefix), 1), (f"{self.prefix}/v1/signal/+/events", 1)]),
        )
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.connect(settings.mqtt_host, settings.mqtt_port)
        self.client.loop_start()
        assert self.ready.wait(10)

    def on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/events"):
            cid = msg.topic.split("/")[-2]
            self.batches.append(bytes(msg.payload))
            for ev in SignalEvents.model_validate_json(msg.payload).events:
                if ev.code == 1:
                    self.green[cid] = (ev.param, ev.ts.timestamp(), False)
                elif ev.code == 8 and cid in self.green:
                    p, since, _ = self.green[cid]
                    self.green[cid] = (p, since, True)
            return
        tick = json.loads(msg.payload)
        ts = datetime.fromisoformat(tick["ts"]).timestamp()
        if ts - START > self.stop_at:
            return
        for cid, (phase, since, clearing) in self.green.items():
            unsafe = tick["step"] == 1
            action = "advance" if unsafe or clearing or ts - since >= 20.0 else "hold"
            self.seq += 1
            cmd = TimingCommand(
                controller_id=cid,
                issuer="test",
                seq=self.seq,
                issued_at=datetime.fromtimestamp(ts, UTC),
                valid_for_s=6.0,
                mode="adaptive",
                phase=phase,
                action=action,
            )
            client.publish(
                command_topic(self.prefix, DeviceKind.SIGNAL, cid, "timing"),
                cmd.model_dump_json(),
                qos=1,
            )
            self.sent += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_commands_obeyed_unsafe_refused_and_fallback(work_dir: Path, settings: Settings) -> None:
    config = cfg(work_dir, control="commands", duration_s=100.0, tick_timeout_s=0.3)
    service = _Service(settings, stop_at=60.0)
    ids = [f"GRID-{a}{b}" for a in "ABC" for b in "012"]
    bus = MqttBus(settings, ids, f"sumo-{uuid.uuid4().hex[:6]}")
    try:
        result = run(config, bus)
    finally:
        bus.close(START + 100.0)
        service.close()
    counts = result.command_counts
    assert counts["refused:min_green"] == 9  # the first decision, for each controller
    assert counts["accepted:advance"] >= 9 and counts["accepted:hold"] > 50
    assert counts["fallback:silence"] == 9
    assert result.ticks == 50 and result.tick_timeouts >= 18
    for cid, raw in result.events.items():
        modes = [(e.ts_ds / 10 - START, e.param) for e in raw if e.code == 131]
        assert [m for _, m in modes] == [1, 3, 1], cid
        assert 66.0 <= modes[-1][0] <= 68.0  # last command at tick 60 s, valid for 6 s
        greens = _greens(raw)
        adaptive = [g for b, g in greens if b > 4.0 and b + g <= 62.0]  # service alive
        # held to 20 s, advanced at the next decision step (every 2 s)
        assert adaptive and all(20.0 <= g <= 22.0 for g in adaptive), (cid, greens)
        assert all(g <= 60.0 for _, g in greens)
        assert any(e.code == 6 for e in raw)
    # what reached the broker is valid against the contract
    assert service.batches
    for payload in service.batches:
        SignalEvents.model_validate_json(payload)


def _greens(raw: list[RawEvent]) -> list[tuple[float, float]]:
    out = []
    begin: float | None = None
    for e in raw:
        if e.code == 1:
            begin = e.ts_ds / 10
        elif e.code == 8 and begin is not None:
            out.append((begin - START, e.ts_ds / 10 - begin))
            begin = None
    return out
