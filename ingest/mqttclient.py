"""One way to build a paho MQTT client from the settings (protocol, credentials, TLS).

Every cityops service that talks MQTT builds its client here, so authentication and TLS
are configured in one place.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityops.ingest.config import Settings

__all__ = ["make_client"]


def make_client(settings: Settings, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """An MQTT 5 client with the configured credentials and TLS; not yet connected."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    if settings.mqtt_tls:
        client.tls_set(ca_certs=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client
