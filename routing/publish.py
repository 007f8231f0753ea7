"""Push route versions to the trucks' MQTT command topics (QoS 1, not retained): the one
push of routing, used by the daily plan (its own short-lived client) and the re-planner
(its long-lived one)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence

import paho.mqtt.client as mqtt

from cityops.ingest.config import Settings
from cityops.ingest.contract import DeviceKind, RouteCommand, command_topic
from cityops.ingest.mqttclient import make_client

__all__ = ["publish_routes", "push_routes"]

logger = logging.getLogger(__name__)


def push_routes(
    client: mqtt.Client,
    prefix: str,
    routes: Sequence[RouteCommand],
    *,
    timeout_s: float,
    before_wait: Callable[[RouteCommand], None] | None = None,
) -> int:
    """Publish each version on its truck's `{prefix}/v1/truck/{id}/cmd/route` with
    `client`, then wait up to `timeout_s` for each acknowledgement (``before_wait`` is
    called before each wait); returns how many the broker acknowledged. Not retained: a
    truck that was offline fetches its current route from the API
    (`GET /api/v1/trucks/{id}/route`) when it comes back."""
    infos = []
    for r in routes:
        topic = command_topic(prefix, DeviceKind.TRUCK, r.truck_id, "route")
        infos.append((r, client.publish(topic, r.model_dump_json(), qos=1)))
    acked = 0
    for r, info in infos:
        if before_wait is not None:
            before_wait(r)
        try:
            info.wait_for_publish(timeout=timeout_s)
        except (RuntimeError, ValueError) as exc:
            logger.error("route %s v%d stored but not pushed: %s", r.truck_id, r.version, exc)
            continue
        if info.is_published():
            acked += 1
        else:
            logger.error(
                "route %s v%d stored but not acknowledged by the broker; the truck gets it "
                "from the API",
                r.truck_id,
                r.version,
            )
    return acked


def publish_routes(
    settings: Settings, routes: Sequence[RouteCommand], *, timeout_s: float = 10.0
) -> int:
    """Publish the routes through a client of their own (see :func:`push_routes`); returns
    how many the broker acknowledged."""
    if not routes:
        return 0
    client = make_client(settings, f"cityops-planner-{uuid.uuid4().hex[:8]}")
    try:
        client.connect(settings.mqtt_host, settings.mqtt_port)
    except OSError as exc:
        logger.error("routes stored but not pushed: broker unreachable (%s)", exc)
        return 0
    client.loop_start()
    try:
        return push_routes(client, settings.topic_prefix, routes, timeout_s=timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
