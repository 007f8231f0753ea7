"""One way to build a paho MQTT client from the settings (protocol, credentials, TLS).

Every cityops service that talks MQTT builds its client here, so authentication and TLS
are configured in one place.
"""

from __future__ import annotations

import functools
import logging

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cityops.ingest.config import ConfigError, Settings

__all__ = ["close_client", "make_client"]

logger = logging.getLogger(__name__)


def make_client(settings: Settings, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """An MQTT 5 client with the configured credentials and TLS; not yet connected.

    Raises `ConfigError` when the configured CA file does not exist."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    if settings.mqtt_tls:
        # The broker's certificate is verified against the CA file when one is configured
        # (a private CA), else against the system's trust store; the host name is checked.
        ca_file = settings.mqtt_ca_file
        if ca_file is not None and not ca_file.is_file():
            raise ConfigError(f"invalid configuration:\n  CITYOPS_MQTT_CA_FILE: no file {ca_file}")
        client.tls_set(ca_certs=str(ca_file) if ca_file else None)
    elif settings.mqtt_ca_file is not None:
        _warn_unencrypted(settings.mqtt_url)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


@functools.cache
def _warn_unencrypted(url: str) -> None:
    """Once per broker URL: the simulators build a client per device."""
    logger.warning(
        "CITYOPS_MQTT_CA_FILE is set but %s is not mqtts://: the connection is NOT encrypted", url
    )


def close_client(client: mqtt.Client) -> None:
    """Disconnect, stop the network thread and close its wake-up sockets: paho keeps the
    socket pair of `loop_start` open after `loop_stop` when the connection never came up
    (a client stopped while the broker was away), one leaked pair per client."""
    client.disconnect()
    client.loop_stop()
    reset = getattr(client, "_reset_sockets", None)  # paho 2.x; absent: nothing to close
    if callable(reset):
        reset()
