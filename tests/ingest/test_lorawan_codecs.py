"""The bin sensors' codecs against their vendors' documented payload layouts.

Vectors are the documentation's own example hex strings where it gives one, otherwise bytes
packed with `struct` field by field as the layout describes:

* Milesight EM310-UDL: README of Milesight-IoT/SensorDecoders (em-series/em310-udl), whose
  example is ``01755C 03824408 040001`` -> battery 92 %, distance 2116 mm, tilt. Channels
  01 75 (battery, uint8 %), 03 82 (distance, uint16 LE, mm), 04 00 (position 0/1) and the
  ff attribute channels. The device-information example is the one of Milesight's EM400
  user guide, whose ff channels the EM310-UDL table repeats.
* Dragino LDDS75: user manual, 8 bytes on FPort 2: battery mV (2, low 14 bits), distance mm
  (2; 0 = no sensor, below 280 = invalid), interrupt flag (1), DS18B20 int16 0.1 °C (2),
  sensor flag (1). Examples of Dragino's manuals: battery 0x0B45 = 2885 mV, 0x8D41 & 0x3FFF
  = 3393 mV; DS18B20 0x0105 = 26.1 °C, 0xFF3F = -19.3 °C.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityops.ingest.codecs import (
    CODECS,
    CodecError,
    CodecReason,
    FieldMapping,
    SensorReading,
    decode_dragino_ldds75,
    decode_milesight_em310_udl,
    from_decoded,
)
from cityops.ingest.registry_model import SENSOR_MODELS


def _reading(out: SensorReading | CodecError) -> SensorReading:
    assert isinstance(out, SensorReading), out
    return out


def _error(out: SensorReading | CodecError) -> CodecError:
    assert isinstance(out, CodecError), out
    assert out.detail
    return out


def test_registry_has_a_codec_for_every_sensor_model() -> None:
    assert set(CODECS) == set(SENSOR_MODELS)
    for model, codec in CODECS.items():
        assert codec.model == model


# -- Milesight EM310-UDL -------------------------------------------------------------------

MILESIGHT = CODECS["milesight-em310-udl"]


def em310(*channels: tuple[int, int, bytes]) -> bytes:
    return b"".join(bytes([cid, ctype]) + data for cid, ctype, data in channels)


def battery(pct: int) -> tuple[int, int, bytes]:
    return (0x01, 0x75, struct.pack("<B", pct))


def distance(mm: int) -> tuple[int, int, bytes]:
    return (0x03, 0x82, struct.pack("<H", mm))


def position(value: int) -> tuple[int, int, bytes]:
    return (0x04, 0x00, struct.pack("<B", value))


def test_em310_readme_example() -> None:
    r = _reading(MILESIGHT.decode(bytes.fromhex("01755C03824408040001"), 85))
    assert (r.battery_pct, r.distance_mm, r.tilted) == (92.0, 2116.0, True)
    assert r.battery_v is None and r.temperature_c is None
    assert r.sensor_ok and r.notes == ()


def test_em500_udl_example_uses_the_same_battery_and_distance_channels() -> None:
    # README of EM500-UDL (same repository): 017564 03821E00 -> battery 100, distance 30
    r = _reading(decode_milesight_em310_udl(bytes.fromhex("01756403821E00"), None))
    assert (r.battery_pct, r.distance_mm, r.tilted) == (100.0, 30.0, None)


def test_em310_packed_channels_in_any_order() -> None:
    payload = em310(position(0), distance(1234), battery(55))
    r = _reading(MILESIGHT.decode(payload, 85))
    assert (r.battery_pct, r.distance_mm, r.tilted, r.sensor_ok) == (55.0, 1234.0, False, True)


def test_em310_distance_is_little_endian_unsigned() -> None:
    r = _reading(MILESIGHT.decode(em310(distance(0xFFFE)), 85))
    assert r.distance_mm == 65534.0


def test_em310_device_information_is_no_measurement() -> None:
    info = bytes.fromhex("ff0bff ff0101 ff166329c42503920003 ff090100 ff0a0101 ff0f00")
    r = _reading(MILESIGHT.decode(info, 85))
    assert r.distance_mm is None and r.battery_pct is None
    assert r.sensor_ok
    assert any("device information" in n for n in r.notes)


def test_em310_low_battery_report_alone() -> None:
    r = _reading(MILESIGHT.decode(bytes.fromhex("017501"), 85))
    assert r.battery_pct == 1.0 and r.distance_mm is None and r.sensor_ok


def test_em310_attributes_and_telemetry_together() -> None:
    payload = bytes.fromhex("ff0bff ff0101") + em310(battery(80), distance(700))
    r = _reading(MILESIGHT.decode(payload, 85))
    assert (r.battery_pct, r.distance_mm) == (80.0, 700.0)


@pytest.mark.parametrize(
    "payload",
    [
        bytes.fromhex("01"),  # a lone channel id
        bytes.fromhex("017564 0382"),  # distance header without data
        bytes.fromhex("017564 038244"),  # distance cut to one byte
        bytes.fromhex("ff16 6329c425"),  # serial number of 8 bytes cut to 4
    ],
)
def test_em310_truncated(payload: bytes) -> None:
    assert _error(MILESIGHT.decode(payload, 85)).reason == CodecReason.TRUNCATED


def test_em310_unknown_channel_is_refused_with_its_position() -> None:
    # the EM400-UDL user guide's example: its temperature channel 03 67 is no EM310 channel
    err = _error(MILESIGHT.decode(bytes.fromhex("017564 0367f800 04820101 050001"), 85))
    assert err.reason == CodecReason.UNKNOWN_CHANNEL
    assert "03 type 67 at byte 3" in err.detail


def test_em310_unknown_attribute_type_is_refused() -> None:
    err = _error(MILESIGHT.decode(em310(battery(90), (0xFF, 0x42, b"\x00")), 85))
    assert err.reason == CodecReason.UNKNOWN_CHANNEL


def test_em310_repeated_channel_is_refused() -> None:
    err = _error(MILESIGHT.decode(em310(distance(100), distance(200)), 85))
    assert err.reason == CodecReason.DUPLICATE_CHANNEL


def test_em310_out_of_range_values_become_notes() -> None:
    r = _reading(MILESIGHT.decode(em310(battery(101), distance(500), position(2)), 85))
    assert r.distance_mm == 500.0
    assert r.battery_pct is None and r.tilted is None
    assert len(r.notes) == 2


def test_em310_empty() -> None:
    assert _error(MILESIGHT.decode(b"", 85)).reason == CodecReason.EMPTY


# -- Dragino LDDS75 ------------------------------------------------------------------------

DRAGINO = CODECS["dragino-ldds75"]


def ldds75(bat_mv: int, dist_mm: int, interrupt: int, temp_raw: int, flag: int) -> bytes:
    """The manual's 8 bytes: BAT, distance, interrupt flag, DS18B20, sensor flag (BE)."""
    return struct.pack(">HHBhB", bat_mv, dist_mm, interrupt, temp_raw, flag)


def test_ldds75_documented_values() -> None:
    r = _reading(DRAGINO.decode(ldds75(0x0B45, 0x0B05, 0, 0x0105, 1), 2))
    assert r.battery_v == pytest.approx(2.885)
    assert r.distance_mm == 2821.0
    assert r.temperature_c == pytest.approx(26.1)
    assert r.sensor_ok and r.battery_pct is None and r.tilted is None
    assert r.notes == ()


def test_ldds75_negative_temperature() -> None:
    payload = ldds75(3600, 1500, 0, 0, 1)[:5] + bytes.fromhex("FF3F") + b"\x01"
    r = _reading(decode_dragino_ldds75(payload, 2))
    assert r.temperature_c == pytest.approx(-19.3)


def test_ldds75_battery_uses_the_low_14_bits() -> None:
    r = _reading(DRAGINO.decode(ldds75(0x8D41, 1000, 0, 200, 1), 2))
    assert r.battery_v == pytest.approx(3.393)


def test_ldds75_unknown_port_is_accepted() -> None:
    assert _reading(DRAGINO.decode(ldds75(3600, 1000, 0, 200, 1), None)).distance_mm == 1000.0


def test_ldds75_no_sensor_distance_zero() -> None:
    r = _reading(DRAGINO.decode(ldds75(3600, 0, 0, 200, 1), 2))
    assert not r.sensor_ok and r.distance_mm is None
    assert r.battery_v == pytest.approx(3.6)  # the rest of the uplink still counts
    assert "no ultrasonic sensor" in r.notes[0]


@pytest.mark.parametrize("dist", [1, 20, 279])
def test_ldds75_below_measuring_range_is_invalid(dist: int) -> None:
    r = _reading(DRAGINO.decode(ldds75(3600, dist, 0, 200, 1), 2))
    assert not r.sensor_ok and r.distance_mm is None
    assert "invalid" in r.notes[0]


def test_ldds75_range_edges() -> None:
    assert _reading(DRAGINO.decode(ldds75(3600, 280, 0, 200, 1), 2)).distance_mm == 280.0
    far = _reading(DRAGINO.decode(ldds75(3600, 7501, 0, 200, 1), 2))
    assert far.distance_mm == 7501.0 and far.sensor_ok
    assert "measuring range" in far.notes[0]


def test_ldds75_sensor_flag_zero() -> None:
    r = _reading(DRAGINO.decode(ldds75(3600, 1000, 0, 200, 0), 2))
    assert not r.sensor_ok and r.distance_mm is None
    assert "sensor flag 0" in r.notes[0]


def test_ldds75_interrupt_uplink_is_a_note() -> None:
    r = _reading(DRAGINO.decode(ldds75(3600, 1000, 1, 200, 1), 2))
    assert r.sensor_ok and r.notes == ("interrupt uplink",)


def test_ldds75_temperature_outside_ds18b20_range() -> None:
    r = _reading(DRAGINO.decode(ldds75(3600, 1000, 0, 0x7FFF, 1), 2))
    assert r.temperature_c is None and r.distance_mm == 1000.0
    assert "DS18B20" in r.notes[0]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", CodecReason.EMPTY),
        (ldds75(3600, 1000, 0, 200, 1)[:7], CodecReason.TRUNCATED),
        (bytes([0x0E, 0x1C, 0x0B, 0x05]), CodecReason.TRUNCATED),
        (ldds75(3600, 1000, 0, 200, 1) + b"\x00", CodecReason.BAD_LENGTH),
    ],
)
def test_ldds75_lengths(payload: bytes, reason: CodecReason) -> None:
    assert _error(DRAGINO.decode(payload, 2)).reason == reason


@pytest.mark.parametrize("port", [1, 5, 42, 0])
def test_ldds75_other_ports(port: int) -> None:
    err = _error(DRAGINO.decode(ldds75(3600, 1000, 0, 200, 1), port))
    assert err.reason == CodecReason.WRONG_PORT


# -- objects decoded by the network server -------------------------------------------------

MILESIGHT_MAP = FieldMapping.parse(
    {"distance_mm": "distance", "battery_pct": "battery", "tilted": "position"}
)
DRAGINO_MAP = FieldMapping.parse(
    {"distance_mm": "Distance", "battery_v": "Bat", "temperature_c": "TempC_DS18B20",
     "sensor_ok": "Sensor_flag"}
)  # fmt: skip


def test_milesight_decoder_object() -> None:
    obj = {"battery": 92, "distance": 2116, "position": "tilt"}
    r = _reading(from_decoded(obj, MILESIGHT_MAP))
    assert (r.distance_mm, r.battery_pct, r.tilted, r.sensor_ok) == (2116.0, 92.0, True, True)


def test_dragino_decoder_object_with_units_in_strings() -> None:
    obj = {"Node_type": "LDDS75", "Bat": "3.6 V", "Distance": "2821 mm", "Interrupt_flag": 0,
           "TempC_DS18B20": "26.10 °C", "Sensor_flag": 1}  # fmt: skip
    r = _reading(from_decoded(obj, DRAGINO_MAP))
    assert (r.distance_mm, r.battery_v, r.temperature_c) == (2821.0, 3.6, 26.1)
    assert r.sensor_ok and r.battery_pct is None


def test_dragino_decoder_object_without_sensor() -> None:
    obj = {"Bat": 3.6, "Distance": "No Sensor", "Sensor_flag": 0}
    r = _reading(from_decoded(obj, DRAGINO_MAP))
    assert not r.sensor_ok and r.distance_mm is None and r.battery_v == 3.6


def test_unusable_distance_without_a_mapped_flag_means_no_valid_sensor() -> None:
    mapping = FieldMapping.parse({"distance_mm": "distance"})
    assert not _reading(from_decoded({"distance": "Invalid Reading"}, mapping)).sensor_ok


def test_dotted_paths_scale_and_array_index() -> None:
    mapping = FieldMapping.parse(
        {"distance_mm": "level.cm*10", "battery_pct": ("status.0.bat", 100), "tilted": "tilt"}
    )
    obj = {"level": {"cm": 28.2}, "status": [{"bat": 0.5}], "tilt": 0}
    r = _reading(from_decoded(obj, mapping))
    assert r.distance_mm == pytest.approx(282.0)
    assert r.battery_pct == pytest.approx(50.0)
    assert r.tilted is False


def test_missing_and_wrong_fields_become_notes() -> None:
    obj = {"distance": 900, "battery": True, "position": "sideways"}
    r = _reading(from_decoded(obj, MILESIGHT_MAP))
    assert r.distance_mm == 900.0 and r.battery_pct is None and r.tilted is None
    assert r.sensor_ok
    assert len(r.notes) == 2


def test_a_wrong_unit_is_not_taken() -> None:
    mapping = FieldMapping.parse({"distance_mm": "d"})
    r = _reading(from_decoded({"d": "28 cm"}, mapping))
    assert r.distance_mm is None and "unit" in r.notes[0]


def test_huge_numbers_do_not_raise() -> None:
    mapping = FieldMapping.parse({"distance_mm": "d", "battery_v": "b*1e300"})
    r = _reading(from_decoded({"d": 10**400, "b": 1e300}, mapping))
    assert r.distance_mm is None and r.battery_v is None
    assert len(r.notes) == 2


def test_no_mapped_field_present() -> None:
    err = _error(from_decoded({"something": "else"}, MILESIGHT_MAP))
    assert err.reason == CodecReason.NO_FIELDS


def test_no_object_from_the_server() -> None:
    assert _error(from_decoded(None, MILESIGHT_MAP)).reason == CodecReason.NO_OBJECT


@pytest.mark.parametrize(
    "spec",
    [
        {"fill": "x"},  # unknown target
        {"distance_mm": "a..b"},  # empty path step
        {"distance_mm": "a*ten"},  # factor no number
        {"distance_mm": "a*0"},  # zero factor
        {"distance_mm": ("a", float("inf"))},
        {"tilted": "t*2"},  # a flag has no factor
    ],
)
def test_bad_mappings_are_configuration_errors(spec: dict[str, str | tuple[str, float]]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        FieldMapping.parse(spec)


# -- hostile bytes -------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.sampled_from(sorted(CODECS)), st.binary(max_size=64), st.none() | st.integers(0, 255))
def test_codecs_never_raise(model: str, payload: bytes, port: int | None) -> None:
    out = CODECS[model].decode(payload, port)
    assert isinstance(out, SensorReading | CodecError)
    if isinstance(out, CodecError):
        assert out.detail


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(st.sampled_from(["distance", "battery", "position", "x"]), JSON_VALUES))
def test_from_decoded_never_raises(obj: dict[str, object]) -> None:
    out = from_decoded(obj, MILESIGHT_MAP)
    assert isinstance(out, SensorReading | CodecError)
