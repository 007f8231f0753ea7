"""What the re-planner listens to: the topic filters (bin telemetry, truck telemetry and
events, and the LoRaWAN network servers' uplinks when the city has them), and each message
(as the MQTT service skeleton, ``cityops.ingest.mqttservice``, hands it over) decoded into
the device and the reading, event or position it carries.

An uplink is decoded as the ingest decodes it (its function and the city profile's
mappings), so an overflow a LoRaWAN sensor reports re-plans like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final

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
from cityops.ingest.mqttservice import Inbound

__all__ = ["SESSION_EXPIRY_S", "Listen", "Payload"]

logger = logging.getLogger(__name__)

#: Events older than this are of little use for re-planning; the database has the rest.
SESSION_EXPIRY_S: Final = 3600

Payload = BinTelemetry | TruckEvent | TruckTelemetry


class Listen:
    """The re-planner's topic filters and the decoding of what arrives on them."""

    def __init__(
        self, settings: Settings, lora_sensors: Callable[[], Mapping[str, LoraSensor]]
    ) -> None:
        self.settings = settings
        self._lora = lora_sensors
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

    @property
    def topics(self) -> tuple[str, ...]:
        head = f"{self.settings.topic_prefix}/{CONTRACT_VERSION}"
        topics = [f"{head}/bin/+/telemetry", f"{head}/truck/+/+"]
        if self.lora_root is not None:
            topics += [
                f"{self.lora_root}{lorawan.SUBSCRIPTIONS[s]}"
                for s in self.settings.sources
                if s != "cityops"
            ]
        return tuple(topics)

    def decode(self, msg: Inbound) -> tuple[str, Payload] | None:
        """The device and the reading, event or position a message carries, or None (not
        one the re-planner reads, or invalid: the ingest dead-letters it)."""
        if self.lora_root is not None and not msg.topic.startswith(
            f"{self.settings.topic_prefix}/{CONTRACT_VERSION}/"
        ):
            return self._uplink(msg)
        try:
            info = parse_topic(self.settings.topic_prefix, msg.topic)
        except TopicError:
            return None
        model = payload_model(info.kind, info.channel)
        if model not in (BinTelemetry, TruckTelemetry, TruckEvent):
            return None
        try:
            payload = model.model_validate_json(msg.payload)
        except ValidationError:
            logger.debug("invalid payload on %s ignored (the ingest dead-letters it)", msg.topic)
            return None
        return info.device_id, payload

    def _uplink(self, msg: Inbound) -> tuple[str, Payload] | None:
        """A LoRaWAN uplink: the same reading the ingest stores, then as any bin reading."""
        root = self.lora_root or ""
        if not msg.topic.startswith(root):
            return None
        now = datetime.now(UTC)
        up = lorawan.parse_uplink(msg.topic[len(root) :], msg.payload, now)
        if not isinstance(up, lorawan.Uplink):
            return None  # the ingest dead-letters it
        sensor = self._lora().get(up.dev_eui)
        if sensor is None:
            return None
        result = uplink_reading(up, sensor, self._mappings, now, Limits())
        if not isinstance(result, Decoded) or not isinstance(result.payload, BinTelemetry):
            return None
        return up.dev_eui, result.payload
