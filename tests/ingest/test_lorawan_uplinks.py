"""Network-server uplinks in each server's documented JSON, and everything that is none.

The messages are built here after the servers' documentation: ChirpStack v4's `up` event
(the UplinkEvent message in the Protobuf JSON mapping, with `deviceInfo`; topic
application/{application_id}/device/{dev_eui}/event/{event}) and The Things Stack v3's
uplink message (`end_device_ids`, `uplink_message`; topic v3/{application id}@{tenant
id}/devices/{device id}/{event}, without the tenant on the open-source stack).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityops.ingest.lorawan import (
    SUBSCRIPTIONS,
    Uplink,
    UplinkReason,
    UplinkRejected,
    network_of,
    parse_uplink,
)

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
EUI = "0101010101010101"
APP = "17c82e96-be03-4f38-aef3-f83d48582d97"
CS_TOPIC = f"application/{APP}/device/{EUI}/event/up"
TTS_TOPIC = "v3/bins-city@ttn/devices/bin-0042/up"
MILESIGHT = bytes.fromhex("01755C03824408040001")


def chirpstack_up(**changes: Any) -> dict[str, Any]:
    """A ChirpStack v4 `up` event as its documentation describes it."""
    doc: dict[str, Any] = {
        "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
        "time": "2026-11-21T07:59:58.775023242+00:00",
        "deviceInfo": {
            "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
            "tenantName": "City",
            "applicationId": APP,
            "applicationName": "bins",
            "deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
            "deviceProfileName": "EM310-UDL",
            "deviceName": "bin-0042",
            "devEui": EUI,
            "tags": {"district": "Mitte"},
        },
        "devAddr": "00189440",
        "adr": True,
        "dr": 5,
        "fCnt": 17,
        "fPort": 85,
        "confirmed": False,
        "data": base64.b64encode(MILESIGHT).decode(),
        "object": {"battery": 92, "distance": 2116, "position": "tilt"},
        "rxInfo": [
            {"gatewayId": "0016c001f153a14c", "uplinkId": 4217106255, "rssi": -36, "snr": 10.5,
             "context": "E3OWOQ==", "metadata": {"region_name": "eu868"}},
            {"gatewayId": "0016c001f153a14d", "uplinkId": 11, "rssi": -101, "snr": -3.0},
        ],
        "txInfo": {"frequency": 868100000,
                   "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7,
                                           "codeRate": "CR_4_5"}}},
    }  # fmt: skip
    doc.update(changes)
    return doc


def tts_up(**changes: Any) -> dict[str, Any]:
    """A The Things Stack v3 uplink message as its documentation describes it."""
    doc: dict[str, Any] = {
        "end_device_ids": {
            "device_id": "bin-0042",
            "application_ids": {"application_id": "bins-city"},
            "dev_eui": "70B3D57ED005A1B2",
            "join_eui": "0000000000000001",
            "dev_addr": "260BABCD",
        },
        "correlation_ids": ["as:up:01HX6YGQ7E0V83YRZ7K4S5J4ZN"],
        "received_at": "2026-11-21T07:59:59.935284891Z",
        "uplink_message": {
            "session_key_id": "AWNbm/4zfqx0jZ5q1NlBmw==",
            "f_port": 2,
            "f_cnt": 1834,
            "frm_payload": base64.b64encode(bytes.fromhex("0B450B0500010501")).decode(),
            "decoded_payload": {"Bat": 2.885, "Distance": "2821 mm"},
            "rx_metadata": [
                {"gateway_ids": {"gateway_id": "eui-aa555a0000000101", "eui": "AA555A0000000101"},
                 "time": "2026-11-21T07:59:59.892Z", "rssi": -68, "snr": 9.2},
            ],
            "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}},
                         "frequency": "868100000"},
            "received_at": "2026-11-21T07:59:59.912345678Z",
            "consumed_airtime": "0.061696s",
        },
    }  # fmt: skip
    doc.update(changes)
    return doc


def encode(doc: object) -> bytes:
    return json.dumps(doc).encode()


def ok(topic: str, raw: bytes, **kw: Any) -> Uplink:
    out = parse_uplink(topic, raw, NOW, **kw)
    assert isinstance(out, Uplink), out
    return out


def rejected(topic: str, raw: bytes, reason: UplinkReason, **kw: Any) -> UplinkRejected:
    out = parse_uplink(topic, raw, NOW, **kw)
    assert isinstance(out, UplinkRejected), out
    assert out.reason == reason, out
    assert out.detail
    return out


# -- ChirpStack v4 -------------------------------------------------------------------------


def test_chirpstack_uplink() -> None:
    up = ok(CS_TOPIC, encode(chirpstack_up()))
    assert up.network == "chirpstack"
    assert up.dev_eui == EUI
    assert (up.f_cnt, up.f_port, up.gateways) == (17, 85, 2)
    assert up.payload == MILESIGHT
    assert up.decoded == {"battery": 92, "distance": 2116, "position": "tilt"}
    assert up.time == datetime(2026, 11, 21, 7, 59, 58, 775023, tzinfo=UTC)


def test_chirpstack_without_time_codec_or_gateways() -> None:
    doc = chirpstack_up(time=None, object=None)
    del doc["rxInfo"]
    up = ok(CS_TOPIC, encode(doc))
    assert up.time == NOW and up.decoded is None and up.gateways == 0


def test_chirpstack_receive_time_in_another_zone_becomes_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    up = parse_uplink(CS_TOPIC, encode(chirpstack_up(time=None)), NOW.astimezone(plus2))
    assert isinstance(up, Uplink)
    assert up.time == NOW and up.time.tzinfo == UTC


def test_chirpstack_offset_time_is_converted_to_utc() -> None:
    up = ok(CS_TOPIC, encode(chirpstack_up(time="2026-11-21T09:00:00+01:00")))
    assert up.time == datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


def test_chirpstack_zero_counter_and_no_port() -> None:
    up = ok(CS_TOPIC, encode(chirpstack_up(fCnt=0, fPort=0, data="")))
    assert (up.f_cnt, up.f_port, up.payload) == (0, None, b"")


def test_chirpstack_early_v4_counter_name() -> None:
    doc = chirpstack_up(fCntUp=9)
    del doc["fCnt"]
    assert ok(CS_TOPIC, encode(doc)).f_cnt == 9


def test_chirpstack_dev_eui_case_is_normalised() -> None:
    doc = chirpstack_up()
    doc["deviceInfo"]["devEui"] = "70B3D57ED005A1B2"
    topic = f"application/{APP}/device/70b3d57ed005A1B2/event/up"
    assert ok(topic, encode(doc)).dev_eui == "70b3d57ed005a1b2"


def test_chirpstack_mismatched_dev_eui() -> None:
    doc = chirpstack_up()
    doc["deviceInfo"]["devEui"] = "0202020202020202"
    err = rejected(CS_TOPIC, encode(doc), UplinkReason.TOPIC_MISMATCH)
    assert "0202020202020202" in err.detail and EUI in err.detail


def test_chirpstack_mismatched_application() -> None:
    topic = f"application/other-app/device/{EUI}/event/up"
    rejected(topic, encode(chirpstack_up()), UplinkReason.TOPIC_MISMATCH)


@pytest.mark.parametrize(
    "suffix",
    ["event/join", "event/status", "event/ack", "event/txack", "event/log", "event/location",
     "event/integration", "command/down", "event/up/extra"],
)  # fmt: skip
def test_chirpstack_other_events(suffix: str) -> None:
    topic = f"application/{APP}/device/{EUI}/{suffix}"
    assert network_of(topic) == "chirpstack"
    err = rejected(topic, encode(chirpstack_up()), UplinkReason.NOT_AN_UPLINK)
    assert suffix in err.detail


def test_chirpstack_v3_message_is_named() -> None:
    v3 = {"applicationID": "123", "applicationName": "bins", "deviceName": "bin",
          "devEUI": "AgICAgICAgI=", "fCnt": 10, "fPort": 5, "data": "AQID"}  # fmt: skip
    err = rejected(CS_TOPIC, encode(v3), UplinkReason.MISSING_FIELD)
    assert "deviceInfo" in err.detail and "v3" in err.detail


def test_chirpstack_protobuf_encoding_is_not_json() -> None:
    protobuf = b"\n$3ac7e3c4\x12\x0c\x08\xde\xc1\x85\x9a\x06\x10\x80\x94\xeb\xdc\x03\x1a"
    err = rejected(CS_TOPIC, protobuf, UplinkReason.NOT_JSON)
    assert "Protobuf" in err.detail


# -- The Things Stack v3 -------------------------------------------------------------------


def test_tts_uplink() -> None:
    up = ok(TTS_TOPIC, encode(tts_up()))
    assert up.network == "tts"
    assert up.dev_eui == "70b3d57ed005a1b2"
    assert (up.f_cnt, up.f_port, up.gateways) == (1834, 2, 1)
    assert up.payload == bytes.fromhex("0B450B0500010501")
    assert up.decoded == {"Bat": 2.885, "Distance": "2821 mm"}
    assert up.time == datetime(2026, 11, 21, 7, 59, 59, 935284, tzinfo=UTC)


def test_tts_open_source_topic_without_tenant() -> None:
    assert ok("v3/bins-city/devices/bin-0042/up", encode(tts_up())).network == "tts"


def test_tts_time_falls_back_to_the_network_server_then_to_receipt() -> None:
    doc = tts_up()
    del doc["received_at"]
    up = ok(TTS_TOPIC, encode(doc))
    assert up.time == datetime(2026, 11, 21, 7, 59, 59, 912345, tzinfo=UTC)
    del doc["uplink_message"]["received_at"]
    assert ok(TTS_TOPIC, encode(doc)).time == NOW


def test_tts_omitted_zero_fields() -> None:
    # "Empty fields are omitted": f_cnt 0, no FRMPayload, no formatter, no FPort
    doc = tts_up()
    for key in ("f_cnt", "f_port", "frm_payload", "decoded_payload", "rx_metadata"):
        del doc["uplink_message"][key]
    up = ok(TTS_TOPIC, encode(doc))
    assert (up.f_cnt, up.f_port, up.payload, up.decoded, up.gateways) == (0, None, b"", None, 0)


def test_tts_mismatched_device() -> None:
    err = rejected("v3/bins-city@ttn/devices/bin-0043/up", encode(tts_up()),
                   UplinkReason.TOPIC_MISMATCH)  # fmt: skip
    assert "bin-0043" in err.detail


def test_tts_mismatched_application() -> None:
    rejected("v3/other@ttn/devices/bin-0042/up", encode(tts_up()), UplinkReason.TOPIC_MISMATCH)


@pytest.mark.parametrize(
    "suffix",
    ["join", "down/queued", "down/sent", "down/ack", "down/nack", "down/failed",
     "service/data", "location/solved", "down/push", "up/normalized"],
)  # fmt: skip
def test_tts_other_events(suffix: str) -> None:
    topic = f"v3/bins-city@ttn/devices/bin-0042/{suffix}"
    assert network_of(topic) == "tts"
    err = rejected(topic, encode(tts_up()), UplinkReason.NOT_AN_UPLINK)
    assert suffix in err.detail


def test_tts_join_accept_on_the_up_topic() -> None:
    doc = tts_up(join_accept={"session_key_id": "AXBSH1Pk6Z0G166RlH16CQ=="})
    del doc["uplink_message"]
    err = rejected(TTS_TOPIC, encode(doc), UplinkReason.NOT_AN_UPLINK)
    assert "join_accept" in err.detail


def test_tts_device_without_dev_eui() -> None:
    doc = tts_up()
    del doc["end_device_ids"]["dev_eui"]
    err = rejected(TTS_TOPIC, encode(doc), UplinkReason.MISSING_FIELD)
    assert "dev_eui" in err.detail


# -- topics and subscriptions --------------------------------------------------------------


def _matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching with single-level wildcards (all SUBSCRIPTIONS use)."""
    want, have = pattern.split("/"), topic.split("/")
    return len(want) == len(have) and all(w in ("+", h) for w, h in zip(want, have, strict=True))


def test_subscriptions_match_each_servers_uplinks_only() -> None:
    assert _matches(SUBSCRIPTIONS["chirpstack"], CS_TOPIC)
    assert _matches(SUBSCRIPTIONS["tts"], TTS_TOPIC)
    assert not _matches(SUBSCRIPTIONS["chirpstack"], CS_TOPIC.replace("/up", "/join"))
    assert not _matches(SUBSCRIPTIONS["tts"], TTS_TOPIC + "/normalized")
    assert not _matches(SUBSCRIPTIONS["tts"], CS_TOPIC)


@pytest.mark.parametrize(
    "topic",
    ["", "cityops/v1/bin/S-1/telemetry", "application/x/devices/y/event/up", "v3/x/device/y/up",
     "application/x/device", "v3", "/" * 6],
)  # fmt: skip
def test_topics_of_neither_server(topic: str) -> None:
    assert network_of(topic) is None
    rejected(topic, encode(chirpstack_up()), UplinkReason.BAD_TOPIC)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        (f"application//device/{EUI}/event/up", UplinkReason.BAD_TOPIC),
        (f"application/{APP}/device//event/up", UplinkReason.BAD_DEV_EUI),
        (f"application/{APP}/device/01010101010101/event/up", UplinkReason.BAD_DEV_EUI),
        (f"application/{APP}/device/010101010101010g/event/up", UplinkReason.BAD_DEV_EUI),
        ("v3/@ttn/devices/bin-0042/up", UplinkReason.BAD_TOPIC),
        ("v3/bins-city/devices//up", UplinkReason.BAD_TOPIC),
    ],
)
def test_malformed_topics(topic: str, reason: UplinkReason) -> None:
    rejected(topic, encode(chirpstack_up()), reason)


# -- hostile input -------------------------------------------------------------------------


def test_oversized() -> None:
    err = rejected(CS_TOPIC, encode(chirpstack_up()), UplinkReason.OVERSIZED, max_bytes=100)
    assert "limit 100" in err.detail


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"\xff\xfe{}",  # not UTF-8
        b'{"deviceInfo": {"devEui": "0101010101010101"',  # cut off
        b'{"a": "x\x00y"}',  # a raw NUL is no JSON
        b'{"a": 1, "a": 2}',  # duplicate keys could smuggle a second devEui
        b'{"fCnt": NaN}',
        b'{"fCnt": Infinity}',
        b'{"fCnt": 1e999}',
        b'{"fCnt": ' + b"9" * 5000 + b"}",  # beyond Python's int digits limit
        "\ufeff{}".encode(),  # byte-order mark
    ],
)
def test_not_json(raw: bytes) -> None:
    rejected(CS_TOPIC, raw, UplinkReason.NOT_JSON)


def test_duplicate_dev_eui_key_is_refused() -> None:
    raw = encode(chirpstack_up()).replace(
        b'"devEui": "0101010101010101"', b'"devEui": "0101010101010101", "devEui": "ff"'
    )
    rejected(CS_TOPIC, raw, UplinkReason.NOT_JSON)


@pytest.mark.parametrize("raw", [b"[]", b'"up"', b"17", b"null", b"true"])
def test_not_an_object(raw: bytes) -> None:
    rejected(CS_TOPIC, raw, UplinkReason.NOT_OBJECT)


def test_deep_json_beyond_the_parser() -> None:
    raw = b'{"object": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    rejected(CS_TOPIC, raw, UplinkReason.DEEP_JSON, max_bytes=1_000_000)


def test_deep_json_beyond_the_limit() -> None:
    nested: Any = 1
    for _ in range(40):
        nested = {"n": nested}
    rejected(CS_TOPIC, encode(chirpstack_up(object=nested)), UplinkReason.DEEP_JSON)
    ok(CS_TOPIC, encode(chirpstack_up(object=nested)), max_depth=64)


@pytest.mark.parametrize("where", ["value", "key", "name"])
def test_nul_characters(where: str) -> None:
    doc = chirpstack_up()
    if where == "value":
        doc["object"] = {"note": "a\x00b"}
    elif where == "key":
        doc["object"] = {"a\x00": 1}
    else:
        doc["deviceInfo"]["deviceName"] = "bin\x00"
    rejected(CS_TOPIC, encode(doc), UplinkReason.NUL_CHARACTER)


def test_nul_in_dev_eui() -> None:
    doc = chirpstack_up()
    doc["deviceInfo"]["devEui"] = "01010101010101\x00\x00"
    rejected(CS_TOPIC, encode(doc), UplinkReason.NUL_CHARACTER)


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"deviceInfo": None}, UplinkReason.MISSING_FIELD, "deviceInfo"),
        ({"deviceInfo": "x"}, UplinkReason.WRONG_TYPE, "deviceInfo"),
        ({"deviceInfo": {"applicationId": APP}}, UplinkReason.MISSING_FIELD, "devEui"),
        ({"fCnt": "17"}, UplinkReason.WRONG_TYPE, "fCnt"),
        ({"fCnt": True}, UplinkReason.WRONG_TYPE, "fCnt"),
        ({"fCnt": 17.5}, UplinkReason.WRONG_TYPE, "fCnt"),
        ({"fCnt": -1}, UplinkReason.OUT_OF_RANGE, "fCnt"),
        ({"fCnt": 2**32}, UplinkReason.OUT_OF_RANGE, "fCnt"),
        ({"fCnt": 10**4000}, UplinkReason.OUT_OF_RANGE, "fCnt"),
        ({"fPort": 256}, UplinkReason.OUT_OF_RANGE, "fPort"),
        ({"fPort": [85]}, UplinkReason.WRONG_TYPE, "fPort"),
        ({"data": "not base64!"}, UplinkReason.BAD_PAYLOAD, "data"),
        ({"data": "AQI"}, UplinkReason.BAD_PAYLOAD, "data"),  # padding missing
        ({"data": "AQI=\n"}, UplinkReason.BAD_PAYLOAD, "data"),
        ({"data": "AQÏ="}, UplinkReason.BAD_PAYLOAD, "data"),
        ({"data": 12}, UplinkReason.WRONG_TYPE, "data"),
        ({"data": base64.b64encode(bytes(256)).decode()}, UplinkReason.BAD_PAYLOAD, "data"),
        ({"object": [1, 2]}, UplinkReason.WRONG_TYPE, "object"),
        ({"rxInfo": {"gatewayId": "x"}}, UplinkReason.WRONG_TYPE, "rxInfo"),
        ({"time": "2026-11-21T08:00:00"}, UplinkReason.BAD_TIMESTAMP, "time"),  # naive
        ({"time": "2026-13-21T08:00:00Z"}, UplinkReason.BAD_TIMESTAMP, "time"),
        ({"time": "yesterday"}, UplinkReason.BAD_TIMESTAMP, "time"),
        ({"time": "2026-11-21"}, UplinkReason.BAD_TIMESTAMP, "time"),
        ({"time": "2026-11-21T08:00:00Z\n"}, UplinkReason.BAD_TIMESTAMP, "time"),
        ({"time": 1795000000}, UplinkReason.WRONG_TYPE, "time"),
    ],
)
def test_chirpstack_field_errors(changes: dict[str, Any], reason: UplinkReason, field: str) -> None:
    err = rejected(CS_TOPIC, encode(chirpstack_up(**changes)), reason)
    assert field in err.detail


@pytest.mark.parametrize("eui", ["010101010101010", "01010101010101010", "0x01010101010101",
                                 "０１０１０１０１０１０１０１０１", 1010101010101010])  # fmt: skip
def test_bad_dev_eui_in_the_body(eui: object) -> None:
    doc = tts_up()
    doc["end_device_ids"]["dev_eui"] = eui
    out = parse_uplink(TTS_TOPIC, encode(doc), NOW)
    assert isinstance(out, UplinkRejected)
    assert out.reason in (UplinkReason.BAD_DEV_EUI, UplinkReason.WRONG_TYPE)


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("end_device_ids",), None, UplinkReason.MISSING_FIELD),
        (("end_device_ids", "application_ids"), "bins-city", UplinkReason.WRONG_TYPE),
        (("uplink_message",), [], UplinkReason.WRONG_TYPE),
        (("uplink_message", "f_cnt"), "1834", UplinkReason.WRONG_TYPE),
        (("uplink_message", "frm_payload"), "%%%", UplinkReason.BAD_PAYLOAD),
        (("uplink_message", "decoded_payload"), "x", UplinkReason.WRONG_TYPE),
        (("received_at",), "2026-11-21 08:00", UplinkReason.BAD_TIMESTAMP),
    ],
)
def test_tts_field_errors(path: tuple[str, ...], value: object, reason: UplinkReason) -> None:
    doc = tts_up()
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    rejected(TTS_TOPIC, encode(doc), reason)


def test_naive_receive_time_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_uplink(CS_TOPIC, encode(chirpstack_up()), datetime(2026, 11, 21, 8, 0))


# -- fuzzing -------------------------------------------------------------------------------

TOPICS = st.one_of(
    st.sampled_from([CS_TOPIC, TTS_TOPIC, "v3/a/devices/b/up", f"application/a/device/{EUI}/x"]),
    st.text(max_size=60),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def _check(topic: str, raw: bytes) -> None:
    out = parse_uplink(topic, raw, NOW, max_bytes=4096)
    assert isinstance(out, Uplink | UplinkRejected)
    if isinstance(out, UplinkRejected):
        assert out.detail and out.reason in set(UplinkReason)
    else:
        assert out.time.tzinfo == UTC and len(out.dev_eui) == 16


@settings(max_examples=200, deadline=None, derandomize=True)
@given(TOPICS, st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(topic: str, raw: bytes) -> None:
    _check(topic, raw)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(TOPICS, JSON_VALUES)
def test_arbitrary_json_never_raises(topic: str, value: object) -> None:
    _check(topic, json.dumps(value).encode())


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.sampled_from(["chirpstack", "tts"]),
    st.dictionaries(
        st.sampled_from(["deviceInfo", "fCnt", "fPort", "data", "object", "rxInfo", "time",
                         "end_device_ids", "uplink_message", "received_at"]),
        JSON_VALUES,
        max_size=3,
    ),
)  # fmt: skip
def test_documented_messages_with_random_fields_never_raise(
    server: str, changes: dict[str, object]
) -> None:
    if server == "chirpstack":
        _check(CS_TOPIC, encode(chirpstack_up(**changes)))
    else:
        _check(TTS_TOPIC, encode(tts_up(**changes)))
