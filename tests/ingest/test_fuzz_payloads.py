"""Property-based fuzzing of every device payload of the MQTT contract through the ingest's
decoder, model by model (tests/ingest/test_decode_fuzz.py throws random bytes, random JSON
and loose field mixes at random topics; this module starts from valid payloads).

* A valid payload of each (kind, channel) decodes to the same model, and its re-encoding
  decodes to the same again (round trip).
* A near miss, one valid payload with one thing wrong (a required field dropped, a field
  added, a number out of its range or sent as a string, a timestamp naive, malformed, in
  the future or too old), is rejected with the reason the dead-letter table documents.
* Any prefix of a valid payload, and a valid payload with bytes appended or flipped, is
  decoded or rejected, never raises.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import annotated_types
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from cityops.ingest.contract import (
    DEVICE_ID_PATTERN,
    BinTelemetry,
    Channel,
    DeviceKind,
    DeviceStatus,
    SignalEvents,
    TruckEvent,
    TruckTelemetry,
    contract_pairs,
    device_topic,
)
from cityops.ingest.decode import Decoded, Limits, Reason, Rejected, decode
from tests.support.text import storable_text

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
LIMITS = Limits()
PREFIX = "fuzz"
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None)

Payload = dict[str, Any]

# -- valid payloads ----------------------------------------------------------------------

OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


def _times(earliest: timedelta, latest: timedelta) -> st.SearchStrategy[str]:
    """RFC 3339 strings with an offset, between NOW + earliest and NOW + latest."""
    return st.builds(
        lambda seconds, tz, z: _rfc3339((NOW + timedelta(seconds=seconds)).astimezone(tz), z),
        st.floats(earliest.total_seconds(), latest.total_seconds()),
        OFFSETS,
        st.booleans(),
    )


def _rfc3339(ts: datetime, z: bool) -> str:
    text = ts.isoformat()
    return text.replace("+00:00", "Z") if z else text


TS = _times(-LIMITS.max_age + timedelta(minutes=1), LIMITS.max_future - timedelta(seconds=1))
DEVICE_IDS = st.from_regex(DEVICE_ID_PATTERN, fullmatch=True)


def _num(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def _optional(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(_ABSENT), st.none(), values)


_ABSENT = object()


def _payload(
    required: dict[str, st.SearchStrategy[Any]], **optional: st.SearchStrategy[Any]
) -> st.SearchStrategy[Payload]:
    """Dictionaries with every required field and each optional one absent, null or set."""
    return st.fixed_dictionaries(
        {**required, **{k: _optional(v) for k, v in optional.items()}}
    ).map(lambda d: {k: v for k, v in d.items() if v is not _ABSENT})


BIN_TELEMETRY = _payload(
    {"ts": TS, "fill_pct": _num(0, 100)},
    temperature_c=_num(-50, 200),
    battery_pct=_num(0, 100),
    fault=st.sampled_from(["stuck", "sensor_error", "low_battery"]),
).flatmap(lambda d: st.just(d) | st.booleans().map(lambda tilt: {**d, "tilt": tilt}))
SIGNAL_EVENTS = st.fixed_dictionaries(
    {
        "events": st.lists(
            st.fixed_dictionaries(
                {"ts": TS, "code": st.integers(0, 255), "param": st.integers(0, 255)}
            ),
            min_size=1,
            max_size=20,
        )
    }
)
TRUCK_TELEMETRY = _payload(
    {"ts": TS, "lat": _num(-90, 90), "lon": _num(-180, 180)},
    heading_deg=_num(0, 359.99),
    load_l=_num(0, 1e6),
    route_version=st.integers(1, 2**31),
).flatmap(lambda d: st.just(d) | _num(0, 200).map(lambda v: {**d, "speed_kmh": v}))
TRUCK_EVENT = _payload(
    {
        "ts": TS,
        "kind": st.sampled_from(
            ["stop_done", "stop_skipped", "unloaded", "shift_start", "shift_end", "breakdown"]
        ),
    },
    bin_id=DEVICE_IDS,
    route_version=st.integers(1, 2**31),
    reason=storable_text(max_size=200),
    volume_l=_num(0, 1e5),
)
DEVICE_STATUS = _payload(
    {"state": st.sampled_from(["online", "offline"])},
    ts=TS,
    firmware=storable_text(max_size=64),
)

VALID: dict[type[BaseModel], st.SearchStrategy[Payload]] = {
    BinTelemetry: BIN_TELEMETRY,
    SignalEvents: SIGNAL_EVENTS,
    TruckTelemetry: TRUCK_TELEMETRY,
    TruckEvent: TRUCK_EVENT,
    DeviceStatus: DEVICE_STATUS,
}
PAIRS = [(kind, channel, model) for kind, channel, model in contract_pairs()]


def test_every_contract_payload_has_a_generator() -> None:
    assert {model for _, _, model in PAIRS} == set(VALID)


@st.composite
def messages(draw: st.DrawFn) -> tuple[DeviceKind, str, Channel, type[BaseModel], Payload]:
    kind, channel, model = draw(st.sampled_from(PAIRS))
    return kind, draw(DEVICE_IDS), channel, model, draw(VALID[model])


def _decode(kind: DeviceKind, device_id: str, channel: Channel, raw: bytes) -> Decoded | Rejected:
    return decode(PREFIX, device_topic(PREFIX, kind, device_id, channel), raw, NOW, LIMITS)


def _encode(payload: Payload) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


# -- round trip --------------------------------------------------------------------------


@FUZZ
@given(messages())
def test_valid_payloads_decode_and_round_trip(
    message: tuple[DeviceKind, str, Channel, type[BaseModel], Payload],
) -> None:
    kind, device_id, channel, model, payload = message
    out = _decode(kind, device_id, channel, _encode(payload))
    assert isinstance(out, Decoded), out
    assert (out.kind, out.device_id, out.channel) == (kind, device_id, channel)
    assert out.payload == model.model_validate(payload)
    again = _decode(kind, device_id, channel, out.payload.model_dump_json().encode())
    assert isinstance(again, Decoded) and again.payload == out.payload


# -- near misses -------------------------------------------------------------------------


def _bounds(model: type[BaseModel], name: str) -> list[tuple[str, float]]:
    """The numeric bounds of a field: ("ge", 0.0), ("lt", 360.0), ..."""
    out = []
    for meta in model.model_fields[name].metadata:
        for attr in ("ge", "gt", "le", "lt"):
            value = getattr(meta, attr, None)
            if isinstance(value, int | float) and isinstance(meta, annotated_types.BaseMetadata):
                out.append((attr, float(value)))
    return out


def _outside(bound: tuple[str, float], by: float) -> float:
    kind, value = bound
    if kind == "ge":
        return value - by
    if kind == "gt":
        return value - by if by else value
    if kind == "le":
        return value + by
    return value + by if by else value  # lt


Mutation = tuple[str, Callable[[Payload], Payload], set[Reason]]


@st.composite
def near_misses(draw: st.DrawFn) -> tuple[DeviceKind, str, Channel, Payload, set[Reason]]:
    """A valid message with one field broken, and the reasons the decoder may give."""
    kind, device_id, channel, model, payload = draw(messages())
    target: Payload = payload
    model_of: type[BaseModel] = model
    if model is SignalEvents:  # break one event of the batch
        from cityops.ingest.contract import SignalEvent

        i = draw(st.integers(0, len(payload["events"]) - 1))
        target = dict(payload["events"][i])
        model_of = SignalEvent
    fields = model_of.model_fields
    options: list[tuple[str, Callable[[Payload], Payload], set[Reason]]] = []
    for name, info in fields.items():
        if info.is_required():
            options.append(
                (
                    "drop",
                    lambda p, n=name: {k: v for k, v in p.items() if k != n},
                    {Reason.MISSING_FIELD},
                )
            )
        integer = int in (info.annotation, *get_args(info.annotation))
        for bound in _bounds(model_of, name):
            by = draw(st.sampled_from([1.0, 1e6] if integer else [0.0, 1e-6, 1.0, 1e6]))
            if by == 0.0 and bound[0] in ("ge", "le"):
                continue  # the bound itself is valid
            bad = _outside(bound, by)
            options.append(
                (
                    "range",
                    lambda p, n=name, v=int(bad) if integer else bad: {**p, n: v},
                    {Reason.OUT_OF_RANGE},
                )
            )
        if (
            name in target
            and isinstance(target[name], int | float)
            and not isinstance(target[name], bool)
        ):
            options.append(
                ("as string", lambda p, n=name: {**p, n: str(p[n])}, {Reason.WRONG_TYPE})
            )
    if "ts" in fields:
        naive = (NOW - timedelta(minutes=1)).replace(tzinfo=None).isoformat()
        future = (NOW + LIMITS.max_future + timedelta(minutes=1)).isoformat()
        old = (NOW - LIMITS.max_age - timedelta(minutes=1)).isoformat()
        garbage = draw(st.sampled_from(["yesterday", "2026-13-01T00:00:00Z", "", "12:00"]))
        options += [
            ("naive ts", lambda p: {**p, "ts": naive}, {Reason.NAIVE_TIMESTAMP}),
            ("bad ts", lambda p: {**p, "ts": garbage}, {Reason.BAD_TIMESTAMP}),
            ("future ts", lambda p: {**p, "ts": future}, {Reason.TIMESTAMP_IN_FUTURE}),
            ("old ts", lambda p: {**p, "ts": old}, {Reason.TIMESTAMP_TOO_OLD}),
        ]
    extra = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in fields))
    options.append(("extra", lambda p: {**p, extra: 1}, {Reason.UNKNOWN_FIELD}))
    label, mutate, reasons = draw(st.sampled_from(options))
    event(f"{model.__name__}: {label}")
    broken = mutate(target)
    if model is SignalEvents:
        events = list(payload["events"])
        events[i] = broken
        broken = {"events": events}
    return kind, device_id, channel, broken, reasons


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(near_misses())
def test_near_misses_are_rejected_with_their_reason(
    miss: tuple[DeviceKind, str, Channel, Payload, set[Reason]],
) -> None:
    kind, device_id, channel, payload, reasons = miss
    out = _decode(kind, device_id, channel, _encode(payload))
    assert isinstance(out, Rejected), (payload, out)
    assert out.reason in reasons, (payload, out)
    assert out.detail


def test_timestamps_on_the_limits_are_accepted() -> None:
    """The edges of the window the near misses step over."""
    for ts in (NOW + LIMITS.max_future, NOW - LIMITS.max_age):
        raw = _encode({"ts": ts.isoformat(), "fill_pct": 50.0})
        assert isinstance(_decode(DeviceKind.BIN, "S-1", Channel.TELEMETRY, raw), Decoded)


# -- damaged bytes -----------------------------------------------------------------------


def _never_raises(kind: DeviceKind, device_id: str, channel: Channel, raw: bytes) -> None:
    out = _decode(kind, device_id, channel, raw)
    assert isinstance(out, Decoded | Rejected)
    if isinstance(out, Rejected):
        assert isinstance(out.reason, Reason) and out.detail


@FUZZ
@given(messages(), st.data())
def test_truncated_payloads_are_rejected(
    message: tuple[DeviceKind, str, Channel, type[BaseModel], Payload], data: st.DataObject
) -> None:
    kind, device_id, channel, _, payload = message
    raw = _encode(payload)
    cut = data.draw(st.integers(0, len(raw) - 1))
    out = _decode(kind, device_id, channel, raw[:cut])
    assert isinstance(out, Rejected)
    assert out.reason in {Reason.EMPTY, Reason.NOT_JSON, Reason.NOT_UTF8}, out


@FUZZ
@given(messages(), st.binary(min_size=1, max_size=8), st.data())
def test_damaged_payloads_never_raise(
    message: tuple[DeviceKind, str, Channel, type[BaseModel], Payload],
    noise: bytes,
    data: st.DataObject,
) -> None:
    kind, device_id, channel, _, payload = message
    raw = bytearray(_encode(payload))
    _never_raises(kind, device_id, channel, bytes(raw) + noise)
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at : at + len(noise)] = noise
    _never_raises(kind, device_id, channel, bytes(raw))
