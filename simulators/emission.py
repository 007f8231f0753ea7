"""What the device models produce, and the time helpers they share.

Simulated time is a float of UNIX seconds (UTC) inside the models, converted to aware
datetimes only when a payload is built. Daily patterns use local time of the scenario's
zone: waste is thrown away and cars drive by the local clock, not by UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from cityops.ingest.contract import (
    BinTelemetry,
    Channel,
    DeviceKind,
    DeviceStatus,
    SignalEvents,
    TruckEvent,
    TruckTelemetry,
)

__all__ = [
    "TRAFFIC_PROFILE",
    "WASTE_PROFILE",
    "DeviceSim",
    "Emission",
    "LocalClock",
    "Payload",
    "to_datetime",
]

Payload = BinTelemetry | SignalEvents | TruckTelemetry | TruckEvent | DeviceStatus

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Relative rate at which households throw waste away, by local hour (mean 1.0):
#: low at night, peaks after breakfast and in the evening.
WASTE_PROFILE: tuple[float, ...] = tuple(
    v / (sum(_w) / 24)
    for _w in [[0.2, 0.1, 0.1, 0.1, 0.1, 0.3, 0.9, 1.6, 1.8, 1.5, 1.2, 1.1,
                1.2, 1.1, 1.0, 1.0, 1.1, 1.4, 1.8, 2.0, 1.7, 1.2, 0.7, 0.4]]
    for v in _w
)

#: Traffic volume by local hour on a working day, relative to the peak hour (1.0), after
#: typical German urban count profiles: morning peak 7-8, afternoon peak 16-17.
TRAFFIC_PROFILE: tuple[float, ...] = (
    0.08, 0.05, 0.04, 0.04, 0.07, 0.22, 0.55, 0.95, 0.90, 0.70, 0.65, 0.70,
    0.75, 0.72, 0.75, 0.85, 1.00, 0.98, 0.80, 0.60, 0.45, 0.35, 0.25, 0.14,
)
#: Weekend traffic relative to a working day at the same hour.
TRAFFIC_WEEKEND = 0.65


@dataclass(frozen=True, slots=True)
class Emission:
    """One message a device sends: published on `device_topic(prefix, kind, device_id, channel)`."""

    kind: DeviceKind
    device_id: str
    channel: Channel
    payload: Payload
    #: sent instead as this (topic under the LoRaWAN root, body): a network server's uplink
    uplink: tuple[str, bytes] | None = None

    def to_json(self) -> str:
        return self.payload.model_dump_json(exclude_none=True)


class DeviceSim(Protocol):
    """A simulated device: stepped by `CitySim` at `next_time`, in global time order."""

    @property
    def kind(self) -> DeviceKind: ...

    @property
    def device_id(self) -> str: ...

    @property
    def next_time(self) -> float: ...

    def step(self) -> list[Emission]: ...


def to_datetime(t: float, resolution_ms: int = 1) -> datetime:
    """Aware UTC datetime of UNIX time `t`, rounded to `resolution_ms` (exact, no float drift)."""
    ms = round(t * 1000 / resolution_ms) * resolution_ms
    return _EPOCH + timedelta(milliseconds=ms)


class LocalClock:
    """Local hour and weekday of UNIX times in one zone (memoised per hour)."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._hour_key = -1
        self._value = (0.0, 0)

    def hour_weekday(self, t: float) -> tuple[float, int]:
        """(hour of day as a float 0..24, weekday 0 = Monday) at `t`."""
        key = int(t // 3600)
        if key != self._hour_key:
            local = datetime.fromtimestamp(key * 3600, self.zone)
            self._hour_key = key
            self._value = (float(local.hour), local.weekday())
        hour, weekday = self._value
        return hour + (t - key * 3600) / 3600, weekday

    def traffic_factor(self, t: float) -> float:
        hour, weekday = self.hour_weekday(t)
        factor = TRAFFIC_PROFILE[int(hour) % 24]
        return factor * TRAFFIC_WEEKEND if weekday >= 5 else factor
