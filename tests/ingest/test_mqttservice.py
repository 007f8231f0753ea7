"""The MQTT service skeleton: how the worker takes batches, and a round trip on the broker
(subscribe on connect, the ready event, batches handled, acknowledgements of the current
connection, drain on stop)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityops.ingest.config import Settings
from cityops.ingest.health import Heartbeat
from cityops.ingest.mqttservice import Batching, Inbound, MqttService, Session, as_is
from tests.conftest import MQTT_URL


def _ignore(batch: list[int]) -> None:
    raise AssertionError(f"not started, yet handled {batch}")


@contextmanager
def _service(batching: Batching) -> Iterator[MqttService[int]]:
    """A service that is never started: only its queue and `_take` are used."""
    service: MqttService[int] = MqttService(
        Settings(mqtt_url=MQTT_URL),
        Session(f"take-{uuid.uuid4().hex[:8]}", ("unused/#",)),
        name="test",
        accept=lambda _m: None,
        handle=_ignore,
        heartbeat=Heartbeat("worker", time.monotonic),
        batching=batching,
    )
    try:
        yield service
    finally:
        service.close()


def test_a_backlog_is_taken_in_full_batches() -> None:
    with _service(Batching(max_size=3)) as service:
        for i in range(5):
            service.put(i)
        assert service._take(0.1) == [0, 1, 2]
        assert service._take(0.1) == [3, 4]
        assert service._take(0.01) == []


def test_a_closed_window_leaves_the_backlog_for_the_next_batch() -> None:
    with _service(Batching(max_size=0, fill_from_backlog=False)) as service:
        for i in range(3):
            service.put(i)
        assert [service._take(0.1) for _ in range(3)] == [[0], [1], [2]]


def test_the_window_waits_for_what_comes_after_the_first_item() -> None:
    with _service(Batching(max_size=0, window_s=0.5, fill_from_backlog=False)) as service:
        service.put(1)
        later = threading.Timer(0.1, service.put, (2,))
        later.start()
        started = time.monotonic()
        assert service._take(0.1) == [1, 2]
        assert time.monotonic() - started >= 0.45, "the window stays open until it ends"
        later.join()


def test_batching_refuses_a_wait_of_zero() -> None:
    with pytest.raises(ValueError, match="wait_s"):
        Batching(wait_s=0)


def test_messages_are_handled_acknowledged_and_drained_on_stop(topic_prefix: str) -> None:
    handled: list[str] = []
    acked: list[int] = []
    release = threading.Event()
    service: MqttService[Inbound]

    def handle(batch: list[Inbound]) -> bool:
        release.wait(10)  # the first batch holds the worker while more is queued
        handled.extend(m.payload.decode() for m in batch)
        acked.append(service.ack(batch))
        return True

    service = MqttService(
        Settings(mqtt_url=MQTT_URL),
        Session(
            f"svc-{uuid.uuid4().hex[:8]}",
            (f"{topic_prefix}/a/#", f"{topic_prefix}/b/#"),
            clean_start=False,
            session_expiry_s=60,
            manual_ack=True,
        ),
        name="test",
        accept=as_is,
        handle=handle,
        heartbeat=Heartbeat("worker", time.monotonic),
        batching=Batching(max_size=100, window_s=0.05, drain_on_stop=True),
    )
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(service.settings.mqtt_host, service.settings.mqtt_port)
    pub.loop_start()
    service.start()
    try:
        assert service.wait_ready(10), "subscriptions granted"
        assert service.running
        infos = [pub.publish(f"{topic_prefix}/a/1", b"first", qos=1)]
        infos[0].wait_for_publish(5)
        time.sleep(0.5)  # the worker took "first" and waits in handle
        infos += [pub.publish(f"{topic_prefix}/b/{i}", f"m{i}".encode(), qos=1) for i in range(3)]
        for info in infos:
            info.wait_for_publish(5)
        deadline = time.monotonic() + 5
        while service.backlog < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        threading.Timer(0.2, release.set).start()
        service.stop(10)  # drains what is queued before it ends
    finally:
        release.set()
        service.close()
        pub.disconnect()
        pub.loop_stop()
    assert handled == ["first", "m0", "m1", "m2"]
    assert acked == [1, 3], "acknowledged on the connection they came on"
    assert not service.running
