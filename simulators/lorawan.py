"""LoRaWAN bin sensors as a network server publishes them: the vendors' payload layouts
(Milesight EM310-UDL, Dragino LDDS75) and the uplink messages of ChirpStack v4 and The
Things Stack v3, so that the simulated city can send part of its bins through the ingest's
LoRaWAN sources as real sensors would (`cityops.ingest.lorawan`, docs/devices.md)."""

from __future__ import annotations

import base64
import json
import struct
from datetime import UTC, datetime
from typing import Any

__all__ = ["chirpstack_uplink", "em310_udl", "ldds75", "tts_uplink"]


def em310_udl(distance_mm: int, battery_pct: int = 90, tilted: bool = False) -> bytes:
    """Milesight EM310-UDL: channel 01/75 battery %, 03/82 distance (uint16 LE, mm),
    04/00 position (0 normal, 1 tilt)."""
    return (bytes([0x01, 0x75, battery_pct]) + bytes([0x03, 0x82])
            + struct.pack("<H", distance_mm) + bytes([0x04, 0x00, int(tilted)]))


def ldds75(distance_mm: int, battery_mv: int = 3350, temp_c: float = 11.5,
           sensor: bool = True) -> bytes:
    """Dragino LDDS75 FPort 2: battery mV, distance mm, interrupt flag, DS18B20 temperature
    (x10, signed), sensor flag (1: sensor detected); big-endian."""
    return struct.pack(">HHBhB", battery_mv, distance_mm, 0, round(temp_c * 10), int(sensor))


def chirpstack_uplink(dev_eui: str, payload: bytes, f_cnt: int, time: datetime, *,
                      f_port: int = 2, app: str = "bins", gateways: int = 2,
                      obj: dict[str, Any] | None = None) -> tuple[str, bytes]:
    """(topic, body) of a ChirpStack v4 `up` event (JSON encoding)."""
    body: dict[str, Any] = {
        "deduplicationId": f"{dev_eui}-{f_cnt}",
        "time": time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "deviceInfo": {"tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
                       "tenantName": "Stadt", "applicationId": app,
                       "applicationName": "Abfall", "deviceProfileName": "Füllstand",
                       "deviceName": f"sensor-{dev_eui[-4:]}", "devEui": dev_eui},
        "devAddr": "01fa2b3c", "adr": True, "dr": 5, "fCnt": f_cnt, "fPort": f_port,
        "confirmed": False, "data": base64.b64encode(payload).decode(),
        "rxInfo": [{"gatewayId": f"00800000a000{i:04x}", "rssi": -90 - i, "snr": 7.5}
                   for i in range(gateways)],
        "txInfo": {"frequency": 868100000},
    }
    if obj is not None:
        body["object"] = obj
    return f"application/{app}/device/{dev_eui}/event/up", json.dumps(body).encode()


def tts_uplink(dev_eui: str, payload: bytes, f_cnt: int, time: datetime, *,
               f_port: int = 2, app: str = "abfall", tenant: str = "offenbach",
               device: str | None = None, gateways: int = 1,
               decoded: dict[str, Any] | None = None) -> tuple[str, bytes]:
    """(topic, body) of a The Things Stack v3 `up` message."""
    device = device or f"sensor-{dev_eui[-4:]}"
    received = time.astimezone(UTC).isoformat().replace("+00:00", "Z")
    message: dict[str, Any] = {
        "f_port": f_port, "f_cnt": f_cnt, "frm_payload": base64.b64encode(payload).decode(),
        "rx_metadata": [{"gateway_ids": {"gateway_id": f"gw-{i}"}, "rssi": -95, "snr": 6.0}
                        for i in range(gateways)],
        "received_at": received,
    }
    if decoded is not None:
        message["decoded_payload"] = decoded
    body = {
        "end_device_ids": {"device_id": device, "application_ids": {"application_id": app},
                           "dev_eui": dev_eui.upper(), "join_eui": "0000000000000000"},
        "received_at": received,
        "uplink_message": message,
    }
    return f"v3/{app}@{tenant}/devices/{device}/up", json.dumps(body).encode()
