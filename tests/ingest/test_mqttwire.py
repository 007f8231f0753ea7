"""The ingest's MQTT 5 subscriber (`cityops.ingest.mqttwire`): packets cut out of reads of
any size, and a round trip on the real broker through the MQTT service skeleton (persistent
session, batches acknowledged on their connection, unacknowledged messages redelivered)."""

from __future__ import annotations

import struct
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cityops.ingest.config import Settings
from cityops.ingest.health import Heartbeat
from cityops.ingest.mqttservice import Batching, Inbound, MqttService, Session, as_is
from cityops.ingest.mqttwire import (
    ProtocolError,
    Received,
    WireOptions,
    connect_packet,
    parse,
)
from tests.conftest import MQTT_URL


def _publish(topic: str, payload: bytes, mid: int, props: bytes = b"") -> bytes:
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t + struct.pack("!H", mid) + bytes([len(props)]) + props
    body += payload
    length = len(body)
    enc = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        enc.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([0x32]) + bytes(enc) + body


def test_packets_are_cut_out_of_reads_of_any_size() -> None:
    big = b"x" * 300  # a two-byte remaining length
    stream = (
        _publish("a/b", b"one", 1)
        + b"\xd0\x00"  # PINGRESP
        + _publish("c", big, 2, props=b"\x01\x01")  # payload format indicator: skipped
        + _publish("d/e/f", b"", 65535)
    )
    for step in (1, 2, 3, 7, 64, len(stream)):
        got: list[Received] = []
        others: list[int] = []
        pending = b""
        for i in range(0, len(stream), step):
            pending += stream[i : i + step]
            used, other = parse(pending, got)
            others += [kind for kind, _body in other]
            pending = pending[used:]
        assert pending == b""
        assert got == [("a/b", b"one", 1, 1), ("c", big, 2, 1), ("d/e/f", b"", 65535, 1)]
        assert others == [13]


def test_qos0_has_no_packet_id_and_qos2_is_refused() -> None:
    got: list[Received] = []
    body = b"\x00\x01t\x00hi"  # topic "t", no packet id, empty properties, payload "hi"
    used, _ = parse(bytes([0x30, len(body)]) + body, got)
    assert used == 2 + len(body) and got == [("t", b"hi", 0, 0)]
    with pytest.raises(ProtocolError):
        parse(b"\x34\x06\x00\x01t\x00\x01\x00", [])


def test_connect_asks_for_the_persistent_session_and_receive_maximum() -> None:
    packet = connect_packet(
        WireOptions("h", 1, "ingest-1", ("t/#",), clean_start=False,
                    session_expiry_s=3600, receive_maximum=500, keepalive_s=120,
                    username="u", password="p")
    )
    assert packet[0] == 0x10
    assert packet[2:9] == b"\x00\x04MQTT\x05"
    assert packet[9] == 0xC0, "username and password, no clean start"
    assert packet[10:12] == struct.pack("!H", 120)
    assert packet[12:19] == b"\x08\x11" + struct.pack("!I", 3600) + b"\x21"
    assert packet[19:21] == struct.pack("!H", 500)
    assert packet.endswith(b"\x00\x08ingest-1\x00\x01u\x00\x01p")


def _service(
    client_id: str, topic_prefix: str, handle: object, batching: Batching
) -> MqttService[Inbound]:
    return MqttService(
        Settings(mqtt_url=MQTT_URL),
        Session(client_id, (f"{topic_prefix}/#",), clean_start=False, session_expiry_s=60,
                receive_maximum=100, manual_ack=True, wire=True),
        name="wire-test",
        accept=as_is,
        handle=handle,  # type: ignore[arg-type]
        heartbeat=Heartbeat("worker", time.monotonic),
        batching=batching,
    )


def test_round_trip_acks_after_handling_and_redelivers_what_was_not_acked(
    topic_prefix: str,
) -> None:
    client_id = f"wire-{uuid.uuid4().hex[:8]}"
    seen: list[str] = []
    acked: list[int] = []
    lock = threading.Lock()

    def keep_unacked(batch: list[Inbound]) -> bool:
        with lock:
            seen.extend(m.payload.decode() for m in batch)
        return True

    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(Settings(mqtt_url=MQTT_URL).mqtt_host, Settings(mqtt_url=MQTT_URL).mqtt_port)
    pub.loop_start()
    first = _service(client_id, topic_prefix, keep_unacked, Batching(max_size=50, window_s=0.05))
    with pytest.raises(RuntimeError):
        _ = first.client  # a wire session cannot publish
    first.start()
    try:
        assert first.wait_ready(10), "subscriptions granted"
        infos = [pub.publish(f"{topic_prefix}/x/{i}", f"m{i}".encode(), qos=1) for i in range(20)]
        for info in infos:
            info.wait_for_publish(5)
        deadline = time.monotonic() + 5
        while len(seen) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(seen) == sorted(f"m{i}" for i in range(20))
    finally:
        first.stop(5)
    # nothing was acknowledged: the persistent session redelivers all of it
    seen.clear()

    def ack_them(batch: list[Inbound]) -> bool:
        with lock:
            seen.extend(m.payload.decode() for m in batch)
        acked.append(current[0].ack(batch))
        return True

    second = _service(client_id, topic_prefix, ack_them, Batching(max_size=50, window_s=0.05))
    current = [second]
    second.start()
    try:
        assert second.wait_ready(10)
        deadline = time.monotonic() + 5
        while len(seen) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(seen) == sorted(f"m{i}" for i in range(20)), "redelivered"
        assert sum(acked) == 20
    finally:
        second.stop(5)
    # all acknowledged: a third connection gets nothing
    seen.clear()
    third = _service(client_id, topic_prefix, ack_them, Batching(max_size=50, window_s=0.05))
    current[0] = third
    third.start()
    try:
        assert third.wait_ready(10)
        time.sleep(0.5)
        assert seen == []
    finally:
        third.stop(5)
        pub.disconnect()
        pub.loop_stop()
