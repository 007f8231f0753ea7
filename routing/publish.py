"""Push route versions to the trucks' MQTT command topics (QoS 1, not retained)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from cityops.ingest.config import Settings
from cityops.ingest.contract import DeviceKind, RouteCommand, command_topic
from cityops.ingest.mqttclient import make_client

__all__ = ["publish_routes"]

logger = logging.getLogger(__name__)


def publish_routes(
    settings: Settings, routes: Sequence[RouteCommand], *, timeout_s: float = 10.0
) -> int:
    """Publish each route on `{prefix}/v1/truck/{id}/cmd/route`; returns how many the
    broker acknowledged. Not retained: a truck that was offline fetches its current route
    from the API (`GET /api/v1/trucks/{id}/route`) when it comes back."""
    if not routes:
        return 0
    client = make_client(settings, f"cityops-planner-{uuid.uuid4().hex[:8]}")
    try:
        client.connect(settings.mqtt_host, settings.mqtt_port)
    except OSError as exc:
        logger.error("routes stored but not pushed: broker unreachable (%s)", exc)
        return 0
    client.loop_start()
    acked = 0
    try:
        for route in routes:
            topic = command_topic(settings.topic_prefix, DeviceKind.TRUCK, route.truck_id, "route")
            info = client.publish(topic, route.model_dump_json(), qos=1)
            info.wait_for_publish(timeout=timeout_s)
            if info.is_published():
                acked += 1
            else:
                logger.error(
                    "route %s v%d not acknowledged by the broker", route.truck_id, route.version
                )
    finally:
        client.disconnect()
        client.loop_stop()
    return acked
