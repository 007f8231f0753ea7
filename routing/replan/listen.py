"""The re-planner's MQTT side: its client (own id, persistent session, QoS 1), the
subscriptions (bin telemetry, truck telemetry and events, and the LoRaWAN network
servers' uplinks when the city has them), and each message decoded into the reading,
event or position it carries, handed to ``hear`` on paho's network thread.

An uplink is decoded as the ingest decodes it (its function and the city profile's
mappings), so an overflow a LoRaWAN sensor reports re-plans like any other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import ValidationError

from cityops.ingest import lorawan
from cityops.ingest.city import load_city
from cityops.ingest.codecs import FieldMapping
from cityops.ingest.config import Settings
from cityops.ingest.contract import (
    CONTRACT_VERSION,
    BinTelemetry,
    TopicError,
    TruckEvent,
    TruckTelemetry,
    parse_topic,
    payload_model,
)
from cityops.ingest.decode import Decoded, Limits
from cityops.ingest.lorawan_readings import LoraSensor, uplink_reading
from cityops.ingest.mqttclient import close_client, make_client

__all__ = ["SESSION_EXPIRY_S", "Hear", "Listener"]

logger = logging.getLogger(__name__)

#: Events older than this are of little use for re-planning; the database has the rest.
SESSION_EXPIRY_S: Final = 3600

Payload = BinTelemetry | TruckEvent | TruckTelemetry
#: ``hear(device_id, payload, topic, received)``; ``received`` is time.monotonic().
Hear = Callable[[str, Payload, str, float], None]


class Listener:
    """Connects in the background (:meth:`connect`), subscribes on every connection, and
    hands each decoded message to ``hear``; ``ready`` is set while subscribed."""

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        *,
        hear: Hear,
        lora_sensors: Callable[[], Mapping[str, LoraSensor]],
        connected: Callable[[bool], None],
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.ready = threading.Event()
        self._hear = hear
        self._lora = lora_sensors
        self._connected = connected
        self._stopping = False
        # Bins reporting through LoRaWAN network servers (docs/devices.md).
        lorawan_on = bool(set(settings.sources) - {"cityops"})
        root = settings.ingest_lorawan_root
        self.lora_root: str | None = (f"{root}/" if root else "") if lorawan_on else None
        self._mappings: dict[str, FieldMapping] = {}
        if lorawan_on:
            self._mappings = {
                model: FieldMapping.parse(spec)
                for model, spec in load_city(settings).lorawan_mappings.items()
            }
        self.client = make_client(settings, client_id)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    @property
    def subscriptions(self) -> list[str]:
        head = f"{self.settings.topic_prefix}/{CONTRACT_VERSION}"
        topics = [f"{head}/bin/+/telemetry", f"{head}/truck/+/+"]
        if self.lora_root is not None:
            topics += [
                f"{self.lora_root}{lorawan.SUBSCRIPTIONS[s]}"
                for s in self.settings.sources
                if s != "cityops"
            ]
        return topics

    def connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        s = self.settings
        self.client.connect_async(
            s.mqtt_host, s.mqtt_port, keepalive=30, clean_start=False, properties=props
        )
        self.client.loop_start()

    def close(self) -> None:
        self._stopping = True
        close_client(self.client)

    def _on_connect(
        self, client: mqtt.Client, _ud: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            logger.error("broker refused the connection of %s: %s", self.client_id, reason)
            return
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.subscriptions])
        logger.info(
            "replanner connected to %s:%s as %s (session present: %s), subscribing to %s",
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            self.client_id,
            flags.session_present,
            ", ".join(self.subscriptions),
        )

    def _on_subscribe(self, _c: mqtt.Client, _ud: Any, _mid: int, codes: Any, _p: Any) -> None:
        if any(getattr(c, "is_failure", False) for c in codes):
            logger.error("subscription refused: %s", codes)
            return
        self.ready.set()
        self._connected(True)

    def _on_disconnect(
        self, _client: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self.ready.clear()
        self._connected(False)
        if not self._stopping:
            logger.warning("replanner disconnected from broker (%s); reconnecting", reason)

    def _on_message(self, _client: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        received = time.monotonic()
        if self.lora_root is not None and not msg.topic.startswith(
            f"{self.settings.topic_prefix}/{CONTRACT_VERSION}/"
        ):
            self._on_uplink(msg, received)
            return
        try:
            info = parse_topic(self.settings.topic_prefix, msg.topic)
        except TopicError:
            return
        model = payload_model(info.kind, info.channel)
        if model not in (BinTelemetry, TruckTelemetry, TruckEvent):
            return
        try:
            payload = model.model_validate_json(msg.payload)
        except ValidationError:
            logger.debug("invalid payload on %s ignored (the ingest dead-letters it)", msg.topic)
            return
        if isinstance(payload, BinTelemetry | TruckEvent | TruckTelemetry):
            self._hear(info.device_id, payload, msg.topic, received)

    def _on_uplink(self, msg: mqtt.MQTTMessage, received: float) -> None:
        """A LoRaWAN uplink: the same reading the ingest stores, then as any bin reading."""
        root = self.lora_root or ""
        if not msg.topic.startswith(root):
            return
        now = datetime.now(UTC)
        up = lorawan.parse_uplink(msg.topic[len(root) :], bytes(msg.payload), now)
        if not isinstance(up, lorawan.Uplink):
            return  # the ingest dead-letters it
        sensor = self._lora().get(up.dev_eui)
        if sensor is None:
            return
        result = uplink_reading(up, sensor, self._mappings, now, Limits())
        if not isinstance(result, Decoded) or not isinstance(result.payload, BinTelemetry):
            return
        self._hear(up.dev_eui, result.payload, msg.topic, received)
