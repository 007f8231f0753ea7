"""Helpers for ingest tests: registry rows, a running ingest, a QoS 1 publisher, polling."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from cityops.ingest.config import Settings
from cityops.ingest.service import IngestService
from tests.support.clock import NOW

T0 = NOW - timedelta(hours=1)


def add_depot(conn: psycopg.Connection[Any], site_id: str = "D1") -> None:
    conn.execute(
        "INSERT INTO sites (site_id, name, kind, geom) VALUES "
        "(%s, 'Depot', 'depot', ST_SetSRID(ST_MakePoint(8.76, 50.10), 4326)) "
        "ON CONFLICT DO NOTHING",
        (site_id,),
    )


def add_bins(db_url: str, n: int) -> list[str]:
    """Register bins B1..Bn with sensors S-B1..S-Bn; returns the sensor ids."""
    with psycopg.connect(db_url) as conn:
        for i in range(1, n + 1):
            conn.execute(
                "INSERT INTO bins (bin_id, sensor_id, geom, street, capacity_l, fraction) "
                "VALUES (%s, %s, ST_SetSRID(ST_MakePoint(%s, 50.1), 4326), 'Kaiserstraße', 240, "
                "'residual')",
                (f"B{i}", f"S-B{i}", 8.76 + i * 1e-4),
            )
    return [f"S-B{i}" for i in range(1, n + 1)]


def add_signal(db_url: str, controller_id: str = "K1") -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO signal_controllers (controller_id, name, geom) VALUES "
            "(%s, 'Kaiserstraße / Berliner Straße', ST_SetSRID(ST_MakePoint(8.76, 50.1), 4326))",
            (controller_id,),
        )


def add_truck(db_url: str, truck_id: str = "T1") -> None:
    with psycopg.connect(db_url) as conn:
        add_depot(conn)
        conn.execute(
            "INSERT INTO trucks (truck_id, name, capacity_l, depot_id) "
            "VALUES (%s, 'Truck', 20000, 'D1')",
            (truck_id,),
        )


def reading(i: int, fill: float = 50.0) -> bytes:
    ts = (T0 + timedelta(milliseconds=i)).isoformat()
    return json.dumps({"ts": ts, "fill_pct": fill, "battery_pct": 90.0}).encode()


def bin_topic(settings: Settings, sensor: str) -> str:
    return f"{settings.topic_prefix}/v1/bin/{sensor}/telemetry"


class Publisher:
    """A QoS 1 device-like publisher that reconnects on its own."""

    def __init__(self, host: str, port: int) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"pub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(200)
        self._lock = threading.Lock()
        self._acked: set[int] = set()
        self.mids: list[int] = []
        self.client.on_publish = self._on_publish
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._lock:
            self._acked.add(mid)

    def publish(self, topic: str, payload: bytes) -> None:
        # While disconnected paho queues the message and sends it after reconnecting; its
        # MQTTMessageInfo then reports "not connected", so acknowledgements are tracked here.
        self.mids.append(self.client.publish(topic, payload, qos=1).mid)

    def wait_all(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                missing = len(set(self.mids) - self._acked)
            if missing == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"{missing} publishes were not acknowledged by the broker")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def running_ingest(settings: Settings) -> Iterator[IngestService]:
    service = IngestService(settings)
    service.start()
    assert service.wait_connected(10), "ingest did not connect to the broker"
    time.sleep(0.3)  # let the SUBACK arrive before tests publish
    try:
        yield service
    finally:
        service.stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def count(db_url: str, query: str, params: Sequence[object] = ()) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
        return int(row[0]) if row else 0


def publish_in_background(
    pub: Publisher, items: list[tuple[str, bytes]], rate_hz: float
) -> threading.Thread:
    def run() -> None:
        for topic, payload in items:
            pub.publish(topic, payload)
            time.sleep(1.0 / rate_hz)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
