"""The broker edge of the SUMO simulator: events out, timing commands in, the lockstep tick.

One MQTT client for the whole grid (the controllers are simulated in one process): it
publishes each controller's `SignalEvents` on `{prefix}/v1/signal/{id}/events` and its
retained online/offline status, subscribes to `{prefix}/v1/signal/+/cmd/timing`, and in
lockstep publishes `{"ts", "step"}` on `{prefix}/v1/sim/clock`. Everything at QoS 1.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cityops.ingest.config import Settings
from cityops.ingest.contract import (
    CONTRACT_VERSION,
    Channel,
    DeviceKind,
    DeviceStatus,
    SignalEvent,
    SignalEvents,
    device_topic,
    utc_iso,
)
from cityops.ingest.mqttclient import close_client, make_client
from cityops.simulators.controller import RawEvent
from cityops.simulators.emission import to_datetime
from cityops.traffic.control_state import clock_topic

__all__ = ["MqttBus"]

logger = logging.getLogger(__name__)

_MAX_EVENTS = 5000
_CONNECT_WAIT_S = 10.0


class MqttBus:
    """Connects on construction; `close()` publishes offline statuses and disconnects."""

    def __init__(self, settings: Settings, controller_ids: list[str], client_id: str) -> None:
        self._prefix = settings.topic_prefix
        self._ids = controller_ids
        self._lock = threading.Condition()
        self._inbox: list[tuple[str, bytes]] = []
        self._latest: dict[str, float] = {}
        self._connected = threading.Event()
        self._cmd_prefix = f"{self._prefix}/{CONTRACT_VERSION}/{DeviceKind.SIGNAL.value}/"
        client = make_client(settings, client_id)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        self._client = client
        self._last: mqtt.MQTTMessageInfo | None = None
        client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=60)
        client.loop_start()
        if not self._connected.wait(_CONNECT_WAIT_S):
            close_client(client)
            raise ConnectionError(
                f"no MQTT connection to {settings.mqtt_host}:"
                f"{settings.mqtt_port} within {_CONNECT_WAIT_S:g} s"
            )

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            logger.warning("broker refused the connection: %s", reason_code)
            return
        client.subscribe(f"{self._cmd_prefix}+/cmd/timing", qos=1)
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        rest = msg.topic[len(self._cmd_prefix) :]
        cid = rest.split("/", 1)[0]
        payload = bytes(msg.payload)
        issued = _issued_at(payload)
        with self._lock:
            self._inbox.append((cid, payload))
            if issued is not None:
                self._latest[cid] = max(self._latest.get(cid, issued), issued)
            self._lock.notify_all()

    def online(self, sim_now: float) -> None:
        for cid in self._ids:
            self._status(cid, "online", sim_now)

    def _status(self, cid: str, state: str, sim_now: float) -> mqtt.MQTTMessageInfo:
        payload = DeviceStatus.model_validate(
            {"state": state, "ts": to_datetime(sim_now), "firmware": "cityops-sumo/1"}
        ).model_dump_json(exclude_none=True)
        topic = device_topic(self._prefix, DeviceKind.SIGNAL, cid, Channel.STATUS)
        return self._client.publish(topic, payload, qos=1, retain=True)

    def publish_events(self, controller_id: str, events: list[RawEvent]) -> None:
        topic = device_topic(self._prefix, DeviceKind.SIGNAL, controller_id, Channel.EVENTS)
        for i in range(0, len(events), _MAX_EVENTS):
            batch = SignalEvents(
                events=[
                    SignalEvent(ts=to_datetime(e.ts_ds / 10, 100), code=e.code, param=e.param)
                    for e in events[i : i + _MAX_EVENTS]
                ]
            )
            self._last = self._client.publish(topic, batch.model_dump_json(), qos=1)

    def tick(self, ts: float, step: int) -> None:
        payload = json.dumps({"ts": utc_iso(to_datetime(ts, 100)), "step": step})
        self._last = self._client.publish(clock_topic(self._prefix), payload, qos=1)

    def wait_commands(self, ts: float, expected: set[str], timeout_s: float) -> bool:
        """Wait until each expected controller has a command issued at or after `ts`."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                missing = [c for c in expected if self._latest.get(c, -1.0) < ts - 1e-6]
                if not missing:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.debug("tick %.1f: no command from %s", ts, ", ".join(missing))
                    return False
                self._lock.wait(left)

    def take_commands(self) -> list[tuple[str, bytes]]:
        with self._lock:
            out, self._inbox = self._inbox, []
        return out

    def close(self, sim_now: float, timeout_s: float = 10.0) -> None:
        """Wait for what is queued, publish offline statuses, disconnect."""
        infos = [self._status(cid, "offline", sim_now) for cid in self._ids]
        deadline = time.monotonic() + timeout_s
        pending = [*infos, *([self._last] if self._last is not None else [])]
        while time.monotonic() < deadline and not all(i.is_published() for i in pending):
            time.sleep(0.02)
        close_client(self._client)


def _issued_at(payload: bytes) -> float | None:
    try:
        data = json.loads(payload)
        return datetime.fromisoformat(str(data["issued_at"])).timestamp()
    except (ValueError, KeyError, TypeError):
        return None
