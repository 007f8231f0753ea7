"""The API's MQTT connection: publishes what the API accepts on behalf of devices."""

from __future__ import annotations

import logging
import uuid

from cityops.api.errors import BrokerUnavailableError
from cityops.ingest.config import Settings
from cityops.ingest.mqttclient import close_client, make_client

__all__ = ["ApiPublisher"]

logger = logging.getLogger(__name__)


class ApiPublisher:
    """A QoS 1 publisher that connects in the background and reconnects on its own."""

    def __init__(self, settings: Settings) -> None:
        self._client = make_client(settings, f"cityops-api-{uuid.uuid4().hex[:8]}")
        self._host, self._port = settings.mqtt_host, settings.mqtt_port

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        close_client(self._client)

    def publish(self, topic: str, payload: bytes, *, timeout_s: float = 5.0) -> None:
        """Publish at QoS 1 and wait for the broker's acknowledgement."""
        if not self._client.is_connected():
            raise BrokerUnavailableError("the MQTT broker is not reachable; try again shortly")
        info = self._client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(timeout=timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise BrokerUnavailableError(
                f"the MQTT broker did not take the message: {exc}"
            ) from exc
        if not info.is_published():
            raise BrokerUnavailableError("the MQTT broker did not acknowledge in time; try again")
