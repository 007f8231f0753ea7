"""The Mosquitto settings shipped in deploy/ keep QoS 1 messages that the defaults drop."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.conftest import REPO
from tests.support.brokers import start_mosquitto
from tests.support.ingest import Publisher

N = 3000


def _offline_then_count(workdir: Path, include_dir: Path | None) -> int:
    """Subscribe with a persistent session, go offline, receive N messages' worth, come back."""
    broker = start_mosquitto(workdir, include_dir=include_dir)
    got: set[bytes] = set()
    lock = threading.Lock()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            got.add(msg.payload)

    def connect() -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="ingest-like",
            protocol=mqtt.MQTTv5,
        )
        client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        props.ReceiveMaximum = 1000
        client.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
        client.loop_start()
        return client

    try:
        sub = connect()
        sub.subscribe("city/#", qos=1)
        time.sleep(0.3)
        sub.disconnect()
        sub.loop_stop()
        pub = Publisher("127.0.0.1", broker.port)
        for i in range(N):
            pub.publish("city/v1/bin/S1/telemetry", f"{i}".encode())
        pub.wait_all()
        pub.close()
        sub = connect()
        deadline = time.monotonic() + 10
        last, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with lock:
                n = len(got)
            if n != last:
                last, stable_since = n, time.monotonic()
            elif n == N or time.monotonic() - stable_since > 1.5:
                break
            time.sleep(0.05)
        sub.disconnect()
        sub.loop_stop()
        return len(got)
    finally:
        broker.stop()


def test_shipped_queueing_keeps_every_message_the_default_drops(tmp_path: Path) -> None:
    shipped = _offline_then_count(
        tmp_path / f"shipped-{uuid.uuid4().hex[:4]}", REPO / "deploy/mosquitto/conf.d"
    )
    default = _offline_then_count(tmp_path / f"default-{uuid.uuid4().hex[:4]}", None)
    assert shipped == N, f"shipped configuration lost {N - shipped} of {N} messages"
    # Mosquitto's default max_queued_messages (1000) drops the rest while the client is away.
    assert default < N, "expected the default configuration to drop queued messages"


def test_shipped_config_is_complete() -> None:
    main = (REPO / "deploy/mosquitto/mosquitto.conf").read_text()
    assert "include_dir /mosquitto/config/conf.d" in main
    assert "persistence true" in main
