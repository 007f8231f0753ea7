"""One LoRaWAN network-server message (MQTT topic and bytes) as an `Uplink`, or why not.

Pure: no MQTT, no database; fuzzed and unit-tested directly. The ingest subscribes to
`SUBSCRIPTIONS`, hands every message to `parse_uplink` and dead-letters an `UplinkRejected`
under its stable `reason`. Two network servers, each in its documented JSON:

* ChirpStack v4, MQTT integration with JSON encoding. Default event topic
  ``application/{application_id}/device/{dev_eui}/event/{event}`` with the events ``up``,
  ``join``, ``ack``, ``txack``, ``status``, ``log``, ``location`` and ``integration``. An
  ``up`` event is the `UplinkEvent` message in the Protobuf JSON mapping: ``time``,
  ``deviceInfo`` (``tenantId``, ``applicationId``, ``devEui``, ``deviceName``, ...),
  ``fCnt``, ``fPort``, ``data`` (base64), ``object`` (only with a codec in the device
  profile) and ``rxInfo`` (one entry per receiving gateway).
* The Things Stack v3 MQTT server. Topic ``v3/{application_id}@{tenant_id}/devices/
  {device_id}/{event}`` (without ``@{tenant_id}`` on the open-source stack) with the events
  ``up``, ``join``, ``down/queued``, ``down/sent``, ``down/ack``, ``down/nack``,
  ``down/failed``, ``service/data`` and ``location/solved``. An ``up`` message has
  ``end_device_ids`` (``device_id``, ``application_ids.application_id``, ``dev_eui``),
  ``received_at`` and ``uplink_message`` (``f_port``, ``f_cnt``, ``frm_payload`` (base64),
  ``decoded_payload`` (with a payload formatter), ``rx_metadata``, ``received_at``). Fields
  whose value is ``""``, ``0`` or ``false`` are left out of these messages.

Both formats come from protobuf, whose JSON leaves out (TTS) or zeroes (ChirpStack) unset
fields: an absent frame counter is therefore 0, and an absent or zero FPort (0 is for MAC
commands, never application data) is given as ``f_port=None``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, Literal, NoReturn

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "SUBSCRIPTIONS",
    "Network",
    "Uplink",
    "UplinkReason",
    "UplinkRejected",
    "network_of",
    "parse_uplink",
]

Network = Literal["chirpstack", "tts"]

#: The MQTT filters of each network server's uplinks (other events are not subscribed).
SUBSCRIPTIONS: Final = MappingProxyType(
    {"chirpstack": "application/+/device/+/event/up", "tts": "v3/+/devices/+/up"}
)

DEFAULT_MAX_BYTES: Final = 64 * 1024
DEFAULT_MAX_DEPTH: Final = 32
_MAX_FRAME_PAYLOAD = 255  # no LoRa frame carries more; the FRMPayload is even smaller
_MAX_F_CNT = 2**32 - 1
_EUI = re.compile(r"[0-9a-fA-F]{16}")
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?P<frac>\.\d{1,12})?(?P<tz>[Zz]|[+-]\d{2}:\d{2})"
)
_TTS_BODIES = (
    "join_accept", "downlink_ack", "downlink_nack", "downlink_sent", "downlink_failed",
    "downlink_queued", "downlink_queue_invalidated", "location_solved", "service_data",
)  # fmt: skip


class UplinkReason(StrEnum):
    """Why a message is no uplink. Stable codes: dead letters and alerts group by them."""

    OVERSIZED = "oversized"  # more bytes than max_bytes
    BAD_TOPIC = "bad_topic"  # neither server's topic layout
    NOT_AN_UPLINK = "not_an_uplink"  # another event of a known server (join, ack, status, ...)
    NOT_JSON = "not_json"  # empty, not UTF-8, invalid JSON, NaN, duplicate keys
    DEEP_JSON = "deep_json"  # nested deeper than max_depth
    NOT_OBJECT = "not_object"  # the document is not a JSON object
    NUL_CHARACTER = "nul_character"  # a U+0000 in a key or string (PostgreSQL refuses it)
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"  # frame counter or FPort outside its LoRaWAN range
    BAD_DEV_EUI = "bad_dev_eui"  # not 16 hex digits
    TOPIC_MISMATCH = "topic_mismatch"  # the body names another device or application
    BAD_PAYLOAD = "bad_payload"  # invalid base64, or longer than a LoRa frame
    BAD_TIMESTAMP = "bad_timestamp"  # not RFC 3339 with an offset


@dataclass(frozen=True, slots=True)
class Uplink:
    """One uplink of one device as its network server reported it."""

    network: Network
    dev_eui: str  # 16 lowercase hex digits
    f_cnt: int | None  # uplink frame counter; absent in a message means 0, so never None here
    f_port: int | None  # 1..255; None when the frame had no application port
    time: datetime  # aware, UTC: the server's receive time, else the ingest's
    payload: bytes  # the decrypted FRMPayload (empty when the frame had none)
    decoded: dict[str, object] | None = field(hash=False)  # the server's codec output
    gateways: int  # how many gateways received the frame


@dataclass(frozen=True, slots=True)
class UplinkRejected:
    reason: UplinkReason
    detail: str


class _RejectError(Exception):
    def __init__(self, reason: UplinkReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _fail(reason: UplinkReason, detail: str) -> NoReturn:
    raise _RejectError(reason, detail)


def network_of(topic: str) -> Network | None:
    """The network server whose topic layout `topic` has (any event), or None."""
    parts = topic.split("/")
    if len(parts) >= 5 and parts[0] == "application" and parts[2] == "device":
        return "chirpstack"
    if len(parts) >= 5 and parts[0] == "v3" and parts[2] == "devices":
        return "tts"
    return None


def parse_uplink(
    topic: str,
    raw: bytes,
    received_at: datetime,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Uplink | UplinkRejected:
    """The uplink in one MQTT message, or why it is none (`UplinkReason`); never raises
    for any topic or bytes.

    `received_at` is the ingest's receive time, used when the server gives none; a naive
    one is a programming error (ValueError). `max_bytes` bounds the message, `max_depth`
    the nesting of its JSON.
    """
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    try:
        if len(raw) > max_bytes:
            _fail(UplinkReason.OVERSIZED, f"message is {len(raw)} bytes, limit {max_bytes}")
        network = network_of(topic)
        if network == "chirpstack":
            app_id, dev_eui = _chirpstack_topic(topic)
            doc = _load(raw, max_depth, network)
            return _chirpstack(doc, app_id, dev_eui, received_at)
        if network == "tts":
            app_id, device_id = _tts_topic(topic)
            doc = _load(raw, max_depth, network)
            return _tts(doc, app_id, device_id, received_at)
        _fail(
            UplinkReason.BAD_TOPIC,
            f"topic {_show(topic)} is neither ChirpStack's {SUBSCRIPTIONS['chirpstack']} "
            f"nor The Things Stack's {SUBSCRIPTIONS['tts']}",
        )
    except _RejectError as exc:
        return UplinkRejected(exc.reason, exc.detail)


# -- topics ------------------------------------------------------------------------------


def _chirpstack_topic(topic: str) -> tuple[str, str]:
    parts = topic.split("/")
    event = "/".join(parts[4:])
    if len(parts) != 6 or parts[4] != "event" or parts[5] != "up":
        _fail(UplinkReason.NOT_AN_UPLINK, f"ChirpStack {_show(event)} message, not event/up")
    if not parts[1]:
        _fail(UplinkReason.BAD_TOPIC, f"topic {_show(topic)} has no application id")
    return parts[1], _eui(parts[3], "the topic's DevEUI")


def _tts_topic(topic: str) -> tuple[str, str]:
    parts = topic.split("/")
    event = "/".join(parts[4:])
    if len(parts) != 5 or parts[4] != "up":
        _fail(UplinkReason.NOT_AN_UPLINK, f"The Things Stack {_show(event)} message, not up")
    app_id = parts[1].partition("@")[0]
    if not app_id or not parts[3]:
        _fail(UplinkReason.BAD_TOPIC, f"topic {_show(topic)} lacks an application or device id")
    return app_id, parts[3]


# -- JSON --------------------------------------------------------------------------------


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            _fail(UplinkReason.NOT_JSON, f"key {_show(key)} appears twice in one object")
        out[key] = value
    return out


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        _fail(UplinkReason.NOT_JSON, f"number {_show(text)} is out of range")
    return number


def _constant(name: str) -> NoReturn:
    _fail(UplinkReason.NOT_JSON, f"{name} is not a JSON value")


def _load(raw: bytes, max_depth: int, network: Network) -> dict[str, Any]:
    hint = " (is the server's MQTT integration set to JSON, not Protobuf?)"
    if not raw.strip():
        _fail(UplinkReason.NOT_JSON, "message is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(UplinkReason.NOT_JSON, f"not UTF-8: {exc.reason} at byte {exc.start}{hint}")
    try:
        doc = json.loads(
            text, object_pairs_hook=_object_pairs, parse_float=_finite, parse_constant=_constant
        )
    except RecursionError:
        _fail(UplinkReason.DEEP_JSON, f"JSON nested too deep to parse (limit {max_depth})")
    except ValueError as exc:  # JSONDecodeError, and integers of more than 4300 digits
        _fail(UplinkReason.NOT_JSON, f"invalid JSON: {_show(str(exc), 120)}{hint}")
    if not isinstance(doc, dict):
        _fail(UplinkReason.NOT_OBJECT, f"the message is a JSON {type(doc).__name__}, not object")
    _scan(doc, max_depth)
    return doc


def _scan(doc: dict[str, Any], max_depth: int) -> None:
    """Depth and NUL characters, walked without recursion."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list) and depth > max_depth:
            _fail(UplinkReason.DEEP_JSON, f"JSON is nested deeper than {max_depth} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    _fail(UplinkReason.NUL_CHARACTER, f"key {_show(key)} contains U+0000")
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and "\x00" in value:
            _fail(UplinkReason.NUL_CHARACTER, f"string {_show(value)} contains U+0000")


# -- fields ------------------------------------------------------------------------------


def _show(value: str, limit: int = 60) -> str:
    """A value quoted for a detail: shortened, control characters escaped."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return repr(text)


def _kind(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
             float: "number", type(None): "null"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _get(obj: dict[str, Any], key: str) -> object:
    """The value at `key`; None when absent or null (protobuf JSON: unset)."""
    return obj.get(key)


def _object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(UplinkReason.WRONG_TYPE, f"{path} must be an object, not {_kind(value)}")
    return value


def _required(obj: dict[str, Any], key: str, path: str, hint: str = "") -> object:
    value = _get(obj, key)
    if value is None:
        _fail(UplinkReason.MISSING_FIELD, f"{path} is missing{hint}")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        _fail(UplinkReason.WRONG_TYPE, f"{path} must be a string, not {_kind(value)}")
    return value


def _uint(value: object, path: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(UplinkReason.WRONG_TYPE, f"{path} must be an integer, not {_kind(value)}")
    if not 0 <= value <= maximum:
        shown = str(value) if abs(value) < 10**30 else f"a {len(str(value))}-digit number"
        _fail(UplinkReason.OUT_OF_RANGE, f"{path} {shown} is outside 0..{maximum}")
    return value


def _f_cnt(value: object, path: str) -> int:
    return 0 if value is None else _uint(value, path, _MAX_F_CNT)


def _f_port(value: object, path: str) -> int | None:
    return None if value is None else (_uint(value, path, 255) or None)


def _eui(value: object, path: str) -> str:
    text = _string(value, path)
    if not _EUI.fullmatch(text):
        _fail(UplinkReason.BAD_DEV_EUI, f"{path} {_show(text)} is not 16 hex digits")
    return text.lower()


def _payload(value: object, path: str) -> bytes:
    if value is None:
        return b""
    text = _string(value, path)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        _fail(UplinkReason.BAD_PAYLOAD, f"{path} is not base64: {exc}")
    if len(data) > _MAX_FRAME_PAYLOAD:
        _fail(
            UplinkReason.BAD_PAYLOAD,
            f"{path} holds {len(data)} bytes; no LoRa frame carries more than "
            f"{_MAX_FRAME_PAYLOAD}",
        )
    return data


def _decoded(value: object, path: str) -> dict[str, object] | None:
    return None if value is None else _object(value, path)


def _gateways(value: object, path: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, list):
        _fail(UplinkReason.WRONG_TYPE, f"{path} must be an array, not {_kind(value)}")
    return len(value)


def _time(value: object, path: str) -> datetime:
    text = _string(value, path)
    match = _RFC3339.fullmatch(text)
    if match is None:
        _fail(UplinkReason.BAD_TIMESTAMP, f"{path} {_show(text)} is not RFC 3339 with an offset")
    frac = match["frac"] or ""
    stamp = text[: match.start("frac") if frac else match.start("tz")]
    tz = "+00:00" if match["tz"] in ("Z", "z") else match["tz"]
    try:
        moment = datetime.fromisoformat(stamp.replace("t", "T") + frac[:7] + tz)
    except ValueError as exc:
        _fail(UplinkReason.BAD_TIMESTAMP, f"{path} {_show(text)}: {exc}")
    return moment.astimezone(UTC)


# -- the two servers ---------------------------------------------------------------------


def _chirpstack(
    doc: dict[str, Any], topic_app: str, topic_eui: str, received_at: datetime
) -> Uplink:
    hint = ""
    if "devEUI" in doc or "applicationID" in doc:
        hint = " (a ChirpStack v3 message? v4 is supported)"
    info = _object(_required(doc, "deviceInfo", "deviceInfo", hint), "deviceInfo")
    dev_eui = _eui(_required(info, "devEui", "deviceInfo.devEui"), "deviceInfo.devEui")
    if dev_eui != topic_eui:
        _fail(
            UplinkReason.TOPIC_MISMATCH,
            f"deviceInfo.devEui {dev_eui} differs from the topic's DevEUI {topic_eui}",
        )
    app_id = _get(info, "applicationId")
    if app_id is not None and _string(app_id, "deviceInfo.applicationId") != topic_app:
        _fail(
            UplinkReason.TOPIC_MISMATCH,
            f"deviceInfo.applicationId {_show(str(app_id))} differs from the topic's "
            f"{_show(topic_app)}",
        )
    counter = _get(doc, "fCnt")
    counter_path = "fCnt"
    if counter is None and _get(doc, "fCntUp") is not None:  # early v4 releases
        counter, counter_path = _get(doc, "fCntUp"), "fCntUp"
    stamp = _get(doc, "time")
    return Uplink(
        network="chirpstack",
        dev_eui=dev_eui,
        f_cnt=_f_cnt(counter, counter_path),
        f_port=_f_port(_get(doc, "fPort"), "fPort"),
        time=received_at.astimezone(UTC) if stamp is None else _time(stamp, "time"),
        payload=_payload(_get(doc, "data"), "data"),
        decoded=_decoded(_get(doc, "object"), "object"),
        gateways=_gateways(_get(doc, "rxInfo"), "rxInfo"),
    )


def _tts(doc: dict[str, Any], topic_app: str, topic_device: str, received_at: datetime) -> Uplink:
    ids = _object(_required(doc, "end_device_ids", "end_device_ids"), "end_device_ids")
    device_id = _string(
        _required(ids, "device_id", "end_device_ids.device_id"), "end_device_ids.device_id"
    )
    if device_id != topic_device:
        _fail(
            UplinkReason.TOPIC_MISMATCH,
            f"end_device_ids.device_id {_show(device_id)} differs from the topic's "
            f"{_show(topic_device)}",
        )
    path = "end_device_ids.application_ids"
    app_ids = _object(_required(ids, "application_ids", path), path)
    app_id = _string(
        _required(app_ids, "application_id", f"{path}.application_id"), f"{path}.application_id"
    )
    if app_id != topic_app:
        _fail(
            UplinkReason.TOPIC_MISMATCH,
            f"{path}.application_id {_show(app_id)} differs from the topic's {_show(topic_app)}",
        )
    up_value = _get(doc, "uplink_message")
    if up_value is None:
        other = next((key for key in _TTS_BODIES if key in doc), None)
        carries = f" (it carries {other})" if other else ""
        _fail(UplinkReason.NOT_AN_UPLINK, f"no uplink_message on an 'up' topic{carries}")
    up = _object(up_value, "uplink_message")
    dev_eui = _eui(
        _required(
            ids, "dev_eui", "end_device_ids.dev_eui", " (a device registered without DevEUI?)"
        ),
        "end_device_ids.dev_eui",
    )
    stamp, stamp_path = _get(doc, "received_at"), "received_at"
    if stamp is None:
        stamp, stamp_path = _get(up, "received_at"), "uplink_message.received_at"
    return Uplink(
        network="tts",
        dev_eui=dev_eui,
        f_cnt=_f_cnt(_get(up, "f_cnt"), "uplink_message.f_cnt"),
        f_port=_f_port(_get(up, "f_port"), "uplink_message.f_port"),
        time=received_at.astimezone(UTC) if stamp is None else _time(stamp, stamp_path),
        payload=_payload(_get(up, "frm_payload"), "uplink_message.frm_payload"),
        decoded=_decoded(_get(up, "decoded_payload"), "uplink_message.decoded_payload"),
        gateways=_gateways(_get(up, "rx_metadata"), "uplink_message.rx_metadata"),
    )
