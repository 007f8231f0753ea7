"""The runner against the machine's real Mosquitto: topics, payloads, retained status."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityops.ingest.config import Settings
from cityops.ingest.contract import Channel, DeviceKind, parse_topic, payload_model
from cityops.simulators.city import build_city
from cityops.simulators.models import CitySim
from cityops.simulators.runner import SimClock, _Link, run
from tests.simulators.factories import network, small_scenario
from tests.support.brokers import MosquittoProcess
from tests.support.clock import BERLIN, now_utc


def test_clock_runs_fast_then_real_time() -> None:
    clock = SimClock(start=1000.0, speed=100.0, wall0=2000.0)
    assert clock.now(2000.0) == 1000.0
    assert clock.now(2005.0) == 1500.0
    assert clock.caught_up_at() == 2000.0 + 1000.0 / 99.0
    assert clock.now(2010.0) == 2000.0  # still catching up
    assert clock.now(2011.0) == 2011.0  # caught up at 2010.1: real time from then on
    assert clock.now(3000.0) == 3000.0
    assert all(clock.now(w) <= w for w in (2000.0, 2009.0, 2010.1, 2500.0))


@dataclass
class Received:
    messages: list[tuple[str, bytes, bool, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


@contextmanager
def subscribed(settings: Settings, topic_filter: str) -> Iterator[Received]:
    got = Received()
    subscribed_ev = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )

    def on_connect(c: mqtt.Client, *_: object) -> None:
        c.subscribe(topic_filter, qos=1)

    def on_subscribe(*_: object) -> None:
        subscribed_ev.set()

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with got.lock:
            got.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain), time.time()))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    try:
        assert subscribed_ev.wait(5), "subscription not acknowledged"
        yield got
    finally:
        client.disconnect()
        client.loop_stop()


def test_short_run_publishes_as_real_devices(settings: Settings) -> None:
    prefix = settings.topic_prefix
    scenario = small_scenario()
    city = build_city(scenario, network())
    sim = CitySim(city, scenario, network(), time.time() - 600)
    devices = {d.device_id: d.kind for d in sim.devices}
    with subscribed(settings, f"{prefix}/v1/#") as got:
        stats = run(
            sim, settings, speed=600.0, duration_s=2.5, client_id_prefix=f"t{uuid.uuid4().hex[:6]}-"
        )
        published = sum(stats.published.values())
        deadline = time.time() + 5
        # everything published plus an online and an offline status per device
        while got.count() < published + 2 * len(devices) and time.time() < deadline:
            time.sleep(0.05)
    assert stats.sim_end >= time.time() - 5  # 10 minutes at x600 caught up in 1 s

    status: dict[str, list[str]] = {}
    kinds = set()
    for topic, payload, _, received_at in got.messages:
        info = parse_topic(prefix, topic)
        assert devices[info.device_id] == info.kind
        model = payload_model(info.kind, info.channel)
        assert model is not None
        model.model_validate_json(payload)
        data = json.loads(payload)
        if info.channel == Channel.STATUS:
            status.setdefault(info.device_id, []).append(data["state"])
            continue
        kinds.add((info.kind, info.channel))
        stamps = [e["ts"] for e in data["events"]] if "events" in data else [data["ts"]]
        for ts in stamps:  # never in the future
            assert datetime.fromisoformat(ts).timestamp() <= received_at
    assert kinds >= {
        (DeviceKind.BIN, Channel.TELEMETRY),
        (DeviceKind.SIGNAL, Channel.EVENTS),
        (DeviceKind.TRUCK, Channel.TELEMETRY),
        (DeviceKind.TRUCK, Channel.EVENTS),
    }
    assert got.count() - sum(len(v) for v in status.values()) == published
    assert status == {d: ["online", "offline"] for d in devices}
    assert "S-B0001" in devices

    # a device that connects later sees each device's retained status: offline
    with subscribed(settings, f"{prefix}/v1/+/+/status") as late:
        deadline = time.time() + 5
        while late.count() < len(devices) and time.time() < deadline:
            time.sleep(0.05)
    retained = {
        parse_topic(prefix, t).device_id: (json.loads(p)["state"], r)
        for t, p, r, _ in late.messages
    }
    assert retained == {d: ("offline", True) for d in devices}


def test_last_will_marks_a_vanished_device_offline(settings: Settings) -> None:
    link = _Link(settings, DeviceKind.BIN, "S-B0042", f"t{uuid.uuid4().hex[:6]}-S-B0042", time.time)
    topic = link.status_topic
    with subscribed(settings, topic) as got:
        link.connect()
        deadline = time.time() + 5
        while not link.connected and time.time() < deadline:
            link.client.loop(0.05)
        assert link.connected
        while got.count() < 1 and time.time() < deadline:
            link.client.loop(0.05)
        sock = link.client.socket()
        assert sock is not None
        sock.close()  # power cut: no DISCONNECT, the broker publishes the will
        while got.count() < 2 and time.time() < deadline:
            time.sleep(0.05)
    states = [json.loads(p) for _, p, _, _ in got.messages]
    assert states[0]["state"] == "online" and states[0]["firmware"]
    assert states[1] == {"state": "offline"}


def test_devices_reconnect_after_a_broker_restart(own_broker: MosquittoProcess) -> None:
    settings = Settings(mqtt_url=own_broker.url, topic_prefix=f"test-{uuid.uuid4().hex[:8]}")
    prefix = settings.topic_prefix
    scenario = small_scenario()
    city = build_city(scenario, network())
    sim = CitySim(city, scenario, network(), time.time() - 3600)
    devices = {d.device_id for d in sim.devices}
    stop = threading.Event()
    runner = threading.Thread(
        target=run, args=(sim, settings), kwargs={"speed": 600.0, "stop": stop}, daemon=True
    )
    runner.start()
    try:
        time.sleep(1.0)
        own_broker.restart(downtime_s=0.3)
        with subscribed(settings, f"{prefix}/v1/+/+/telemetry") as got:
            deadline = time.time() + 8
            while time.time() < deadline:
                with got.lock:
                    senders = {parse_topic(prefix, t).kind for t, _, _, _ in got.messages}
                if senders >= {DeviceKind.BIN, DeviceKind.TRUCK}:
                    break
                time.sleep(0.1)
        assert senders >= {DeviceKind.BIN, DeviceKind.TRUCK}
    finally:
        stop.set()
        runner.join(15)
    assert not runner.is_alive()
    # every device was connected again at shutdown: each left a retained offline status
    with subscribed(settings, f"{prefix}/v1/+/+/status") as late:
        deadline = time.time() + 5
        while late.count() < len(devices) and time.time() < deadline:
            time.sleep(0.05)
    states = {
        parse_topic(prefix, t).device_id: json.loads(p)["state"] for t, p, _, _ in late.messages
    }
    assert states == dict.fromkeys(devices, "offline")


def test_trucks_follow_routes_received_on_their_command_topic(settings: Settings) -> None:

    from cityops.ingest.contract import RouteCommand, command_topic
    from tests.support.ingest import Publisher

    prefix = settings.topic_prefix
    scenario = small_scenario()
    city = build_city(scenario, network())
    sim = CitySim(city, scenario, network(), time.time() - 3600)
    truck = city.trucks[0].truck_id
    chosen = [city.bins[-1], city.bins[-2]]
    now = now_utc()
    stops = [
        {
            "seq": i + 1,
            "kind": "stop",
            "bin_id": b.bin_id,
            "lat": b.lat,
            "lon": b.lon,
            "eta": now,
            "etd": now,
            "load_after_l": 0,
        }
        for i, b in enumerate(chosen)
    ]
    route = RouteCommand.model_validate(
        {
            "truck_id": truck,
            "plan_date": now_utc().astimezone(BERLIN).date(),
            "version": 7,
            "created_at": now,
            "reason": "test",
            "engine": "test",
            "distance_m": 0,
            "duration_s": 0,
            "stops": stops,
            "geometry": {"type": "LineString", "coordinates": []},
        }
    )
    stop = threading.Event()
    with subscribed(settings, f"{prefix}/v1/truck/{truck}/events") as got:
        runner = threading.Thread(
            target=run,
            args=(sim, settings),
            kwargs={
                "speed": 600.0,
                "duration_s": 12.0,
                "stop": stop,
                "client_id_prefix": f"t{uuid.uuid4().hex[:6]}-",
            },
        )
        runner.start()
        time.sleep(1.0)  # the truck's client connects and subscribes
        pub = Publisher(settings.mqtt_host, settings.mqtt_port)
        pub.publish(
            command_topic(prefix, DeviceKind.TRUCK, truck, "route"),
            route.model_dump_json().encode(),
        )
        pub.wait_all()
        pub.close()
        done: set[str] = set()
        deadline = time.time() + 11
        while time.time() < deadline and not {b.bin_id for b in chosen} <= done:
            with got.lock:
                for _t, payload, _r, _ts in got.messages:
                    event = json.loads(payload)
                    if event["kind"] == "stop_done" and event.get("route_version") == 7:
                        done.add(event["bin_id"])
            time.sleep(0.1)
        stop.set()
        runner.join(15)
    # Both bins of the route are emptied; a stop the truck was already driving to when the
    # route arrived is finished first, as a driver would.
    assert {b.bin_id for b in chosen} <= done
    assert len(done) <= len(chosen) + 1
