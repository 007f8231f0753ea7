"""From a LoRaWAN uplink of a bin's distance sensor to a reading of the MQTT contract.

Pure. The ingest parses the network server's message (`cityops.ingest.lorawan`), finds the
bin by DevEUI in the registry (`LoraSensor`: the bin, the sensor model, its calibration),
and this module decodes the payload with the model's codec (`cityops.ingest.codecs`; the
network server's decoded object when it sent one), checks that the distance is plausible,
turns it into fill percent and builds the `BinTelemetry` the ingest stores like any other,
with the frame for deduplication. A reading that cannot be trusted is rejected with a
reason, for the dead letters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import ValidationError

from cityops.ingest.codecs import (
    CODECS,
    CodecError,
    CodecReason,
    FieldMapping,
    SensorReading,
    from_decoded,
)
from cityops.ingest.contract import BinTelemetry, Channel, DeviceKind
from cityops.ingest.decode import Decoded, Frame, Limits, Reason, Rejected, check_times
from cityops.ingest.lorawan import Uplink

__all__ = [
    "LoraSensor",
    "battery_percent",
    "decode_sensor",
    "fill_percent",
    "reading_from",
    "uplink_reading",
]

#: A distance this much beyond the empty bin's floor is no echo from the bin (the sensor
#: came loose, the lid is open and it sees the ground): implausible, not "empty".
_BEYOND_FLOOR = 1.15
#: Lithium thionyl chloride cells (Dragino's ER26500, 3.6 V nominal): empty at 3.0 V.
_CELL_EMPTY_V, _CELL_FULL_V = 3.0, 3.6


class Reading(Protocol):
    """What a codec gives (`cityops.ingest.codecs.SensorReading`)."""

    @property
    def distance_mm(self) -> float | None: ...

    @property
    def battery_pct(self) -> float | None: ...

    @property
    def battery_v(self) -> float | None: ...

    @property
    def temperature_c(self) -> float | None: ...

    @property
    def tilted(self) -> bool | None: ...

    @property
    def sensor_ok(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class LoraSensor:
    """A bin's LoRaWAN sensor as the registry has it."""

    bin_id: str
    dev_eui: str
    model: str
    empty_distance_mm: int
    full_distance_mm: int


def fill_percent(distance_mm: float, sensor: LoraSensor) -> float:
    """0 % at the empty distance, 100 % at the full one; a heap above the fill line is
    100 % (overflowing), not more."""
    span = sensor.empty_distance_mm - sensor.full_distance_mm
    fill = (sensor.empty_distance_mm - distance_mm) / span * 100.0
    return round(min(100.0, max(0.0, fill)), 1)


def battery_percent(volts: float) -> float:
    """A lithium cell's voltage as a rough percentage (linear between 3.0 V and 3.6 V)."""
    pct = (volts - _CELL_EMPTY_V) / (_CELL_FULL_V - _CELL_EMPTY_V) * 100.0
    return round(min(100.0, max(0.0, pct)), 0)


def reading_from(
    reading: Reading, sensor: LoraSensor, ts: datetime, frame: Frame, now: datetime,
    limits: Limits,
) -> Decoded | Rejected:
    """The contract reading of one decoded uplink, or why it is not stored."""
    d = reading.distance_mm
    notes = "; ".join(getattr(reading, "notes", ()))
    if not reading.sensor_ok:
        return Rejected(Reason.IMPLAUSIBLE, f"{sensor.model} {sensor.dev_eui} reports no "
                        f"valid distance: {notes or 'sensor fault'}")
    if d is None:
        return Rejected(Reason.NO_READING, f"{sensor.model} {sensor.dev_eui}: no measurement "
                        f"in this uplink ({notes or 'no distance'})")
    if d < 0 or d > sensor.empty_distance_mm * _BEYOND_FLOOR:
        return Rejected(
            Reason.IMPLAUSIBLE,
            f"distance {d:.0f} mm is outside 0..{sensor.empty_distance_mm * _BEYOND_FLOOR:.0f} "
            f"mm for bin {sensor.bin_id} (empty at {sensor.empty_distance_mm} mm): check the "
            "sensor's mounting or the calibration",
        )
    battery = reading.battery_pct
    if battery is None and reading.battery_v is not None:
        battery = battery_percent(reading.battery_v)
    try:
        payload = BinTelemetry(
            ts=ts, fill_pct=fill_percent(d, sensor), temperature_c=reading.temperature_c,
            battery_pct=battery, tilt=bool(reading.tilted),
        )
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        return Rejected(Reason.IMPLAUSIBLE, f"{where}: {err['msg']}")
    late = check_times(payload, now, limits)
    if late is not None:
        return late
    return Decoded(DeviceKind.BIN, sensor.dev_eui, Channel.TELEMETRY, payload, frame)


def decode_sensor(
    up: Uplink, sensor: LoraSensor, mappings: Mapping[str, FieldMapping]
) -> SensorReading | CodecError:
    """The model's mapping of the server's decoded object (city profile), else its
    built-in codec."""
    mapping = mappings.get(sensor.model)
    if mapping is not None:
        return from_decoded(up.decoded, mapping)
    codec = CODECS.get(sensor.model)
    if codec is None:
        return CodecError(
            CodecReason.NO_FIELDS,
            f"sensor model {sensor.model!r} has no built-in codec and no mapping in the city "
            "profile's lorawan section",
        )
    return codec.decode(up.payload, up.f_port)


def uplink_reading(
    up: Uplink, sensor: LoraSensor, mappings: Mapping[str, FieldMapping], received: datetime,
    limits: Limits,
) -> Decoded | Rejected:
    """One uplink of a registered sensor as the contract's reading, or why not: what the
    ingest stores and what the re-planner reacts to."""
    reading = decode_sensor(up, sensor, mappings)
    if isinstance(reading, CodecError):
        return Rejected(Reason.UNDECODABLE, f"{sensor.model} payload of {up.dev_eui} (fPort "
                        f"{up.f_port}): {reading.reason.value}: {reading.detail}")
    frame = Frame(up.dev_eui, up.f_cnt or 0, up.network, up.gateways,
                  hashlib.sha256(up.payload).digest())
    return reading_from(reading, sensor, up.time, frame, received, limits)
