"""Turn one MQTT message (topic and bytes) into a validated payload or a rejection.

Pure: no I/O, so it is fuzzed and unit-tested directly. The ingest service adds the checks
that need the database (unknown devices) and stores rejections as dead letters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ValidationError

from cityops.ingest.contract import (
    Channel,
    DeviceKind,
    SignalEvents,
    TopicError,
    TopicInfo,
    parse_topic,
    payload_model,
)

__all__ = [
    "Decoded",
    "Frame",
    "Limits",
    "Reason",
    "Rejected",
    "check_times",
    "decode",
    "payload_times",
]


class Reason(StrEnum):
    """Why a message was dead-lettered. Stable codes: dashboards and alerts group by them."""

    EMPTY = "empty_payload"
    OVERSIZED = "oversized"
    BAD_TOPIC = "bad_topic"
    NOT_IN_CONTRACT = "not_in_contract"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    INVALID_VALUE = "invalid_value"
    BAD_TIMESTAMP = "bad_timestamp"
    NAIVE_TIMESTAMP = "naive_timestamp"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    UNKNOWN_DEVICE = "unknown_device"
    # LoRaWAN uplinks through a network server (cityops.ingest.lorawan, docs/devices.md)
    UNDECODABLE = "undecodable_payload"
    IMPLAUSIBLE = "implausible_reading"
    NO_READING = "no_reading"  # a valid uplink without a measurement (device information)
    UNSTORABLE = "unstorable"  # valid by the contract, refused by the database (its reason)


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = 64 * 1024
    max_future: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Frame:
    """The LoRaWAN frame a reading came in: deduplicated by (DevEUI, frame counter,
    payload)."""

    dev_eui: str
    f_cnt: int
    network: str
    gateways: int
    payload_sha256: bytes  # copies of one frame carry the same payload


@dataclass(frozen=True, slots=True)
class Decoded:
    kind: DeviceKind
    device_id: str
    channel: Channel
    payload: BaseModel
    frame: Frame | None = None  # set for a reading that came through a LoRaWAN server


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    detail: str


_ERROR_REASONS: dict[str, Reason] = {
    "missing": Reason.MISSING_FIELD,
    "extra_forbidden": Reason.UNKNOWN_FIELD,
    "greater_than": Reason.OUT_OF_RANGE,
    "greater_than_equal": Reason.OUT_OF_RANGE,
    "less_than": Reason.OUT_OF_RANGE,
    "less_than_equal": Reason.OUT_OF_RANGE,
    "finite_number": Reason.OUT_OF_RANGE,
    "timezone_aware": Reason.NAIVE_TIMESTAMP,
    "datetime_parsing": Reason.BAD_TIMESTAMP,
    "datetime_from_date_parsing": Reason.BAD_TIMESTAMP,
    "datetime_type": Reason.BAD_TIMESTAMP,
    "json_invalid": Reason.NOT_JSON,
    "literal_error": Reason.INVALID_VALUE,
    "string_pattern_mismatch": Reason.INVALID_VALUE,
    "string_too_long": Reason.INVALID_VALUE,
    "too_short": Reason.INVALID_VALUE,
    "too_long": Reason.INVALID_VALUE,
}


def _classify(exc: ValidationError) -> Rejected:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] == "model_type" and not first["loc"]:
        return Rejected(Reason.NOT_OBJECT, "payload must be a JSON object")
    reason = _ERROR_REASONS.get(first["type"])
    if reason is None:
        reason = Reason.WRONG_TYPE if first["type"].endswith("_type") else Reason.INVALID_VALUE
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    if len(errors) > 5:
        parts.append(f"... and {len(errors) - 5} more")
    return Rejected(reason, "; ".join(parts))


#: Topics parsed before (a city has a few thousand devices): (prefix, topic) -> its parts.
_TOPICS: dict[tuple[str, str], TopicInfo] = {}
_TOPICS_MAX = 200_000


def _topic_info(prefix: str, topic: str) -> TopicInfo:
    """`parse_topic`, remembered for the topics that parse (a refused one raises again)."""
    key = (prefix, topic)
    info = _TOPICS.get(key)
    if info is None:
        info = parse_topic(prefix, topic)
        if len(_TOPICS) >= _TOPICS_MAX:
            _TOPICS.clear()
        _TOPICS[key] = info
    return info


def payload_times(payload: BaseModel) -> list[datetime]:
    """Every device timestamp in a payload (one, or one per event of a batch)."""
    if isinstance(payload, SignalEvents):
        return [e.ts for e in payload.events]
    ts = getattr(payload, "ts", None)
    return [ts] if isinstance(ts, datetime) else []


def decode(
    prefix: str, topic: str, raw: bytes, now: datetime, limits: Limits
) -> Decoded | Rejected:
    """Validate topic and payload; `now` is the receive time used for the timestamp checks."""
    if len(raw) > limits.max_payload_bytes:
        return Rejected(
            Reason.OVERSIZED, f"payload is {len(raw)} bytes, limit {limits.max_payload_bytes}"
        )
    try:
        info = _topic_info(prefix, topic)
    except TopicError as exc:
        return Rejected(Reason.BAD_TOPIC, str(exc))
    model = payload_model(info.kind, info.channel)
    if model is None:
        return Rejected(
            Reason.NOT_IN_CONTRACT,
            f"a {info.kind} device does not publish on '{info.channel}' (see docs/mqtt.md)",
        )
    if not raw or raw.isspace():
        return Rejected(Reason.EMPTY, "payload is empty")
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejected(
                Reason.NOT_UTF8, f"payload is not UTF-8: {exc.reason} at byte {exc.start}"
            )
    try:
        payload = model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        return _classify(exc)
    late = check_times(payload, now, limits)
    if late is not None:
        return late
    return Decoded(info.kind, info.device_id, info.channel, payload)


def check_times(payload: BaseModel, now: datetime, limits: Limits) -> Rejected | None:
    """The payload's device times against the receive time `now`, or None when fine."""
    ts = getattr(payload, "ts", None)
    if isinstance(ts, datetime) and -limits.max_future <= now - ts <= limits.max_age:
        return None  # the common case: one timestamp, inside the window
    for i, ts in enumerate(payload_times(payload)):
        where = f"events.{i}.ts" if isinstance(payload, SignalEvents) else "ts"
        if ts - now > limits.max_future:
            return Rejected(
                Reason.TIMESTAMP_IN_FUTURE,
                f"{where} {ts.isoformat()} is {(ts - now).total_seconds():.0f} s after receipt "
                f"(limit {limits.max_future.total_seconds():.0f} s): check the device clock",
            )
        if now - ts > limits.max_age:
            return Rejected(
                Reason.TIMESTAMP_TOO_OLD,
                f"{where} {ts.isoformat()} is older than {limits.max_age.days} days",
            )
    return None
