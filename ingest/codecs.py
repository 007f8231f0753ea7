"""Payload codecs of the bin-level sensors, and the mapping of a server-decoded object.

Pure. `CODECS` holds one built-in codec per sensor model (the registry's `sensor_model`);
each turns a frame payload into a `SensorReading` or a `CodecError`, never raises. For a
sensor the network server decodes itself, `from_decoded` reads the server's object through
a `FieldMapping`. Battery is in percent where the device reports percent and in volts where
it reports volts; converting volts is the caller's business (it knows the cell chemistry).

Built from the vendors' public payload descriptions:

* Milesight EM310-UDL (README of Milesight-IoT/SensorDecoders, em-series/em310-udl):
  channels of ``id (1 byte), type (1 byte), data``; battery ``01 75`` uint8 in %; distance
  ``03 82`` uint16 little-endian in mm; position ``04 00`` 0 normal, 1 tilt; attributes on
  channel ``ff`` (``01`` 1 byte, ``09`` 2, ``0a`` 2, ``ff`` 2, ``16`` 8, ``0f`` 1, ``fe`` 1,
  ``0b`` 1). The length of a channel follows from its type, so a channel outside the table
  cannot be skipped: the payload is refused (``unknown_channel``), which also shows a
  payload of another model decoded with the wrong codec. A repeated channel is refused too.
* Dragino LDDS75 (user manual, uplink payload on FPort 2, 8 bytes, big-endian): battery
  2 bytes in mV (the low 14 bits); distance 2 bytes in mm, measuring range 280..7500 mm,
  0 when no ultrasonic sensor is detected and below 280 mm invalid; interrupt flag 1 byte;
  DS18B20 temperature int16 in 0.1 °C (optional probe, -55..125 °C); sensor flag 1 byte
  (1: ultrasonic sensor detected).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

__all__ = [
    "CODECS",
    "Codec",
    "CodecError",
    "CodecReason",
    "FieldMapping",
    "SensorReading",
    "decode_dragino_ldds75",
    "decode_milesight_em310_udl",
    "from_decoded",
]


@dataclass(frozen=True, slots=True)
class SensorReading:
    """What one uplink says. `distance_mm` None with `sensor_ok` True: the uplink carried
    no measurement (e.g. the device information sent after a join); `sensor_ok` False: the
    device reported a missing sensor or an invalid measurement (see `notes`)."""

    distance_mm: float | None
    battery_pct: float | None
    battery_v: float | None
    temperature_c: float | None
    tilted: bool | None
    sensor_ok: bool
    notes: tuple[str, ...] = ()


class CodecReason(StrEnum):
    """Why a payload gave no reading. Stable codes for dead letters."""

    EMPTY = "empty_payload"
    TRUNCATED = "truncated"  # shorter than its layout
    BAD_LENGTH = "bad_length"  # longer than its layout
    UNKNOWN_CHANNEL = "unknown_channel"  # Milesight: a channel outside the model's table
    DUPLICATE_CHANNEL = "duplicate_channel"
    WRONG_PORT = "wrong_port"  # an FPort on which the model sends no readings
    NO_OBJECT = "no_object"  # from_decoded: the server sent no decoded object
    NO_FIELDS = "no_fields"  # from_decoded: none of the mapped fields is in the object


@dataclass(frozen=True, slots=True)
class CodecError:
    reason: CodecReason
    detail: str


@dataclass(frozen=True, slots=True)
class Codec:
    """A sensor model's payload decoder: `decode(payload, f_port)`."""

    model: str
    decode: Callable[[bytes, int | None], SensorReading | CodecError]


# -- Milesight EM310-UDL -----------------------------------------------------------------

_EM310_TELEMETRY: Final = {(0x01, 0x75): 1, (0x03, 0x82): 2, (0x04, 0x00): 1}
_EM310_ATTRIBUTES: Final = {0x01: 1, 0x09: 2, 0x0A: 2, 0xFF: 2, 0x16: 8, 0x0F: 1, 0xFE: 1,
                            0x0B: 1}  # fmt: skip


def decode_milesight_em310_udl(payload: bytes, f_port: int | None) -> SensorReading | CodecError:
    """A Milesight EM310-UDL uplink (any FPort): distance, battery %, tilt."""
    if not payload:
        return CodecError(CodecReason.EMPTY, "EM310-UDL payload is empty")
    values: dict[tuple[int, int], bytes] = {}
    attributes = False
    i = 0
    while i < len(payload):
        if len(payload) - i < 2:
            return CodecError(
                CodecReason.TRUNCATED, f"channel header at byte {i} cut off ({payload.hex()})"
            )
        channel = (payload[i], payload[i + 1])
        size = _EM310_TELEMETRY.get(channel)
        if size is None and channel[0] == 0xFF:
            size = _EM310_ATTRIBUTES.get(channel[1])
        if size is None:
            return CodecError(
                CodecReason.UNKNOWN_CHANNEL,
                f"channel {channel[0]:02x} type {channel[1]:02x} at byte {i} is not in the "
                "EM310-UDL payload table (01 75 battery, 03 82 distance, 04 00 position, ff "
                "attributes), so the rest cannot be framed: another model's payload?",
            )
        if channel in values:
            return CodecError(
                CodecReason.DUPLICATE_CHANNEL,
                f"channel {channel[0]:02x} type {channel[1]:02x} appears twice",
            )
        start = i + 2
        if start + size > len(payload):
            return CodecError(
                CodecReason.TRUNCATED,
                f"channel {channel[0]:02x} type {channel[1]:02x} at byte {i} needs {size} "
                f"bytes, {len(payload) - start} left",
            )
        values[channel] = payload[start : start + size]
        attributes = attributes or channel[0] == 0xFF
        i = start + size
    notes: list[str] = []
    if attributes:
        notes.append("device information (attribute channels)")
    battery: float | None = None
    if (raw := values.get((0x01, 0x75))) is not None:
        if raw[0] <= 100:
            battery = float(raw[0])
        else:
            notes.append(f"battery {raw[0]} % is above 100: ignored")
    distance: float | None = None
    if (raw := values.get((0x03, 0x82))) is not None:
        distance = float(int.from_bytes(raw, "little"))
    tilted: bool | None = None
    if (raw := values.get((0x04, 0x00))) is not None:
        if raw[0] in (0, 1):
            tilted = raw[0] == 1
        else:
            notes.append(f"position value {raw[0]} is neither 0 (normal) nor 1 (tilt)")
    if distance is None:
        notes.append("no distance channel in this uplink")
    return SensorReading(distance, battery, None, None, tilted, True, tuple(notes))


# -- Dragino LDDS75 ----------------------------------------------------------------------

_LDDS75: Final = struct.Struct(">HHBhB")
_LDDS75_PORT: Final = 2
_LDDS75_MIN_MM, _LDDS75_MAX_MM = 280, 7500
_DS18B20_MIN_C, _DS18B20_MAX_C = -55.0, 125.0


def decode_dragino_ldds75(payload: bytes, f_port: int | None) -> SensorReading | CodecError:
    """A Dragino LDDS75 reading (FPort 2, or unknown): distance, battery V, temperature."""
    if f_port is not None and f_port != _LDDS75_PORT:
        return CodecError(
            CodecReason.WRONG_PORT,
            f"LDDS75 sends readings on FPort {_LDDS75_PORT}; FPort {f_port} is no reading",
        )
    if not payload:
        return CodecError(CodecReason.EMPTY, "LDDS75 payload is empty")
    if len(payload) != _LDDS75.size:
        reason = CodecReason.TRUNCATED if len(payload) < _LDDS75.size else CodecReason.BAD_LENGTH
        return CodecError(
            reason, f"LDDS75 payload is {len(payload)} bytes, not {_LDDS75.size} ({payload.hex()})"
        )
    bat, dist, interrupt, temp, flag = _LDDS75.unpack(payload)
    notes: list[str] = []
    sensor_ok = True
    distance: float | None = float(dist)
    if flag != 1:
        sensor_ok, distance = False, None
        notes.append(f"sensor flag {flag}: no ultrasonic sensor detected")
    elif dist == 0:
        sensor_ok, distance = False, None
        notes.append("distance 0: no ultrasonic sensor detected")
    elif dist < _LDDS75_MIN_MM:
        sensor_ok, distance = False, None
        notes.append(f"distance {dist} mm is below the {_LDDS75_MIN_MM} mm minimum: invalid")
    elif dist > _LDDS75_MAX_MM:
        notes.append(f"distance {dist} mm is beyond the {_LDDS75_MAX_MM} mm measuring range")
    if interrupt == 1:
        notes.append("interrupt uplink")
    elif interrupt != 0:
        notes.append(f"interrupt flag {interrupt} is neither 0 nor 1")
    temperature: float | None = temp / 10
    if not _DS18B20_MIN_C <= temp / 10 <= _DS18B20_MAX_C:
        temperature = None
        notes.append(f"temperature {temp / 10} °C is outside the DS18B20 range: no probe?")
    return SensorReading(distance, None, (bat & 0x3FFF) / 1000, temperature, None, sensor_ok,
                         tuple(notes))  # fmt: skip


CODECS: Final[Mapping[str, Codec]] = MappingProxyType(
    {
        "milesight-em310-udl": Codec("milesight-em310-udl", decode_milesight_em310_udl),
        "dragino-ldds75": Codec("dragino-ldds75", decode_dragino_ldds75),
    }
)


# -- an object decoded by the network server ---------------------------------------------

_NUMERIC_UNITS: Final = {
    "distance_mm": ("mm",),
    "battery_pct": ("%",),
    "battery_v": ("v",),
    "temperature_c": ("°c", "c", "degc"),
}
_FLAGS: Final = ("tilted", "sensor_ok")
_TRUE: Final = frozenset({"true", "yes", "on", "1", "tilt", "tilted", "ok"})
_FALSE: Final = frozenset({"false", "no", "off", "0", "normal", "error", "fault"})
_NUMBER_WITH_UNIT = re.compile(r"\s*([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(\S*)\s*")


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """Where each `SensorReading` field sits in a server-decoded object.

    Build it with `FieldMapping.parse({"distance_mm": "level.cm*10", "battery_pct":
    "battery", "tilted": "position"})`: per target field a dotted path into the object
    (digits index arrays), optionally ``*factor`` (or a ``(path, factor)`` pair) to scale a
    number. A string value may carry the target's unit ("2821 mm", "3.6 V"), no other.
    """

    fields: tuple[tuple[str, tuple[str, ...], float], ...]

    @classmethod
    def parse(cls, spec: Mapping[str, str | tuple[str, float]]) -> FieldMapping:
        """Raises ValueError for a mapping that cannot work (a configuration error)."""
        fields = []
        for target, value in spec.items():
            if target not in _NUMERIC_UNITS and target not in _FLAGS:
                raise ValueError(
                    f"unknown target {target!r}; one of {sorted([*_NUMERIC_UNITS, *_FLAGS])}"
                )
            if isinstance(value, tuple):
                path, factor = value[0], float(value[1])
            else:
                path, star, text = value.partition("*")
                try:
                    factor = float(text) if star else 1.0
                except ValueError:
                    raise ValueError(f"{target}: factor {text!r} is not a number") from None
            steps = tuple(path.strip().split("."))
            if not all(steps):
                raise ValueError(f"{target}: path {path!r} has an empty step")
            if not math.isfinite(factor) or factor == 0:
                raise ValueError(f"{target}: factor {factor} must be finite and non-zero")
            if target in _FLAGS and factor != 1.0:
                raise ValueError(f"{target} is true/false: no factor")
            fields.append((target, steps, factor))
        return cls(tuple(fields))


def _lookup(obj: object, steps: tuple[str, ...]) -> object:
    for step in steps:
        if isinstance(obj, Mapping):
            obj = obj.get(step)
        elif isinstance(obj, list) and step.isdigit() and int(step) < len(obj):
            obj = obj[int(step)]
        else:
            return None
    return obj


def _number(value: object, target: str, factor: float) -> float | str:
    """The value as a float, or why not."""
    if isinstance(value, bool):
        return f"{target}: {value} is true/false, not a number"
    if isinstance(value, str):
        match = _NUMBER_WITH_UNIT.fullmatch(value)
        if match is None:
            return f"{target}: {value[:40]!r} is not a number"
        if match[2] and match[2].lower() not in _NUMERIC_UNITS[target]:
            return f"{target}: unit {match[2][:10]!r} of {value[:40]!r} is not {target}'s"
        value = float(match[1])
    if not isinstance(value, int | float):
        return f"{target}: a {type(value).__name__} is not a number"
    try:
        number = float(value) * factor
    except OverflowError:
        return f"{target}: {str(value)[:20]}... is too large"
    if not math.isfinite(number):
        return f"{target}: {str(value)[:20]} scaled by {factor} is not finite"
    return number


def _flag(value: object, target: str) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return f"{target}: {str(value)[:40]!r} is not true/false"


def from_decoded(
    obj: Mapping[str, object] | None, mapping: FieldMapping
) -> SensorReading | CodecError:
    """A reading from the network server's decoded object; never raises.

    A mapped field that is absent or unusable is None, with a note. `sensor_ok` is the
    mapped flag (False when it is there but unusable), else False only when a distance was
    sent but is no number (a codec's "No Sensor"). No mapped field there at all is a
    `CodecError`.
    """
    if obj is None:
        return CodecError(
            CodecReason.NO_OBJECT,
            "the network server sent no decoded object: configure its payload codec, or a "
            "built-in codec for this sensor model",
        )
    found: dict[str, float | bool] = {}
    notes: list[str] = []
    present = 0
    unusable: set[str] = set()
    for target, steps, factor in mapping.fields:
        value = _lookup(obj, steps)
        if value is None:
            notes.append(f"{target}: {'.'.join(steps)} is absent")
            continue
        present += 1
        result = _flag(value, target) if target in _FLAGS else _number(value, target, factor)
        if isinstance(result, str):
            notes.append(result)
            unusable.add(target)
        else:
            found[target] = result
    if present == 0:
        paths = ", ".join(".".join(steps) for _, steps, _ in mapping.fields) or "none"
        return CodecError(CodecReason.NO_FIELDS, f"none of the mapped fields ({paths}) is there")

    def num(name: str) -> float | None:
        value = found.get(name)
        return None if value is None or isinstance(value, bool) else float(value)

    tilted = found.get("tilted")
    sensor_ok = found.get("sensor_ok")
    return SensorReading(
        distance_mm=num("distance_mm"),
        battery_pct=num("battery_pct"),
        battery_v=num("battery_v"),
        temperature_c=num("temperature_c"),
        tilted=tilted if isinstance(tilted, bool) else None,
        sensor_ok=(
            sensor_ok
            if isinstance(sensor_ok, bool)
            else not unusable & {"sensor_ok", "distance_mm"}
        ),
        notes=tuple(notes),
    )
