"""The pure decoder: valid payloads pass, every kind of malformed message gets its reason."""

from __future__ import annotations

import json
from datetime import timedelta, timezone

import pytest

from cityops.ingest.contract import BinTelemetry, SignalEvents, TruckEvent, TruckTelemetry
from cityops.ingest.decode import Decoded, Limits, Reason, Rejected, decode
from tests.support.clock import NOW

# Every time is relative to the suite's now: the live ingest (test_ingest_service.py) sends
# this corpus too, and judges "too old" and "in the future" by its own clock.
WHEN = NOW - timedelta(minutes=1)
TS = WHEN.strftime("%Y-%m-%dT%H:%M:%SZ")
NAIVE_TS = WHEN.strftime("%Y-%m-%dT%H:%M:%S")
FUTURE_TS = (NOW + timedelta(hours=16)).strftime("%Y-%m-%dT%H:%M:%SZ")
P = "city"
BIN = f"{P}/v1/bin/S-1/telemetry"
LIMITS = Limits(max_payload_bytes=4096)


def j(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_valid_payloads_of_every_kind_decode() -> None:
    cases = [
        (
            BIN,
            j({"ts": TS, "fill_pct": 42.5, "temperature_c": 11.0, "battery_pct": 88}),
            BinTelemetry,
        ),
        (
            f"{P}/v1/signal/K1/events",
            j({"events": [{"ts": TS, "code": 1, "param": 2}, {"ts": TS, "code": 82, "param": 5}]}),
            SignalEvents,
        ),
        (
            f"{P}/v1/truck/T1/telemetry",
            j({"ts": TS, "lat": 50.1, "lon": 8.76, "speed_kmh": 20}),
            TruckTelemetry,
        ),
        (f"{P}/v1/truck/T1/events", j({"ts": TS, "kind": "stop_done", "bin_id": "B1"}), TruckEvent),
    ]
    for topic, raw, model in cases:
        out = decode(P, topic, raw, NOW, LIMITS)
        assert isinstance(out, Decoded), out
        assert isinstance(out.payload, model)


def test_offsets_other_than_utc_are_accepted_and_compare_correctly() -> None:
    in_berlin_winter = WHEN.astimezone(timezone(timedelta(hours=1))).isoformat()
    out = decode(P, BIN, j({"ts": in_berlin_winter, "fill_pct": 1}), NOW, LIMITS)
    assert isinstance(out, Decoded)
    assert out.payload.ts == WHEN  # type: ignore[attr-defined]


MALFORMED: list[tuple[str, str, bytes, Reason, str]] = [
    ("empty", BIN, b"", Reason.EMPTY, "empty"),
    ("whitespace only", BIN, b"   \n", Reason.EMPTY, "empty"),
    ("oversized", BIN, b"{" + b" " * 5000 + b"}", Reason.OVERSIZED, "limit 4096"),
    ("not json", BIN, b"fill=42", Reason.NOT_JSON, "Invalid JSON"),
    (
        "truncated json",
        BIN,
        b'{"ts": "' + TS.encode() + b'", "fill_pct": 4',
        Reason.NOT_JSON,
        "JSON",
    ),
    (
        "latin-1 bytes",
        BIN,
        '{"ts": "x", "street": "Straße"}'.encode("latin-1"),
        Reason.NOT_UTF8,
        "UTF-8",
    ),
    ("json array", BIN, b"[1, 2, 3]", Reason.NOT_OBJECT, "JSON object"),
    ("json string", BIN, b'"hello"', Reason.NOT_OBJECT, "JSON object"),
    ("missing fill", BIN, j({"ts": TS}), Reason.MISSING_FIELD, "fill_pct"),
    ("missing ts", BIN, j({"fill_pct": 3}), Reason.MISSING_FIELD, "ts"),
    (
        "unknown field",
        BIN,
        j({"ts": TS, "fill_pct": 3, "fil_pct": 3}),
        Reason.UNKNOWN_FIELD,
        "fil_pct",
    ),
    ("fill as string", BIN, j({"ts": TS, "fill_pct": "42"}), Reason.WRONG_TYPE, "fill_pct"),
    ("tilt as number", BIN, j({"ts": TS, "fill_pct": 4, "tilt": 1}), Reason.WRONG_TYPE, "tilt"),
    ("fill above 100", BIN, j({"ts": TS, "fill_pct": 140}), Reason.OUT_OF_RANGE, "fill_pct"),
    ("negative fill", BIN, j({"ts": TS, "fill_pct": -1}), Reason.OUT_OF_RANGE, "fill_pct"),
    (
        "nan fill",
        BIN,
        b'{"ts": "' + TS.encode() + b'", "fill_pct": NaN}',
        Reason.OUT_OF_RANGE,
        "fill_pct",
    ),
    (
        "absurd temperature",
        BIN,
        j({"ts": TS, "fill_pct": 4, "temperature_c": 900}),
        Reason.OUT_OF_RANGE,
        "temperature_c",
    ),
    (
        "unknown fault",
        BIN,
        j({"ts": TS, "fill_pct": 4, "fault": "melted"}),
        Reason.INVALID_VALUE,
        "fault",
    ),
    (
        "naive timestamp",
        BIN,
        j({"ts": NAIVE_TS, "fill_pct": 4}),
        Reason.NAIVE_TIMESTAMP,
        "ts",
    ),
    (
        "unparseable timestamp",
        BIN,
        j({"ts": "yesterday", "fill_pct": 4}),
        Reason.BAD_TIMESTAMP,
        "ts",
    ),
    (
        "epoch number timestamp",
        BIN,
        j({"ts": 1763712000, "fill_pct": 4}),
        Reason.BAD_TIMESTAMP,
        "ts",
    ),
    (
        "far future",
        BIN,
        j({"ts": (NOW + timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%SZ"), "fill_pct": 4}),
        Reason.TIMESTAMP_IN_FUTURE,
        "device clock",
    ),
    (
        "too old",
        BIN,
        j({"ts": (NOW - timedelta(days=6 * 365)).strftime("%Y-%m-%dT%H:%M:%SZ"), "fill_pct": 4}),
        Reason.TIMESTAMP_TOO_OLD,
        "older",
    ),
    (
        "topic outside prefix",
        "other/v1/bin/S-1/telemetry",
        j({"ts": TS, "fill_pct": 1}),
        Reason.BAD_TOPIC,
        "not under",
    ),
    (
        "unknown kind",
        f"{P}/v1/lamp/L1/telemetry",
        j({"ts": TS}),
        Reason.BAD_TOPIC,
        "unknown device kind",
    ),
    (
        "unknown channel",
        f"{P}/v1/bin/S-1/debug",
        j({"ts": TS}),
        Reason.BAD_TOPIC,
        "unknown channel",
    ),
    (
        "bad device id",
        f"{P}/v1/bin/-S 1/telemetry",
        j({"ts": TS}),
        Reason.BAD_TOPIC,
        "invalid device id",
    ),
    (
        "bin publishing events",
        f"{P}/v1/bin/S-1/events",
        j({"ts": TS}),
        Reason.NOT_IN_CONTRACT,
        "does not publish",
    ),
    (
        "empty event batch",
        f"{P}/v1/signal/K1/events",
        j({"events": []}),
        Reason.INVALID_VALUE,
        "events",
    ),
    (
        "event code out of range",
        f"{P}/v1/signal/K1/events",
        j({"events": [{"ts": TS, "code": 300, "param": 1}]}),
        Reason.OUT_OF_RANGE,
        "events.0.code",
    ),
    (
        "one event in the future",
        f"{P}/v1/signal/K1/events",
        j(
            {
                "events": [
                    {"ts": TS, "code": 1, "param": 1},
                    {"ts": FUTURE_TS, "code": 8, "param": 1},
                ]
            }
        ),
        Reason.TIMESTAMP_IN_FUTURE,
        "events.1.ts",
    ),
    (
        "latitude out of range",
        f"{P}/v1/truck/T1/telemetry",
        j({"ts": TS, "lat": 95, "lon": 8}),
        Reason.OUT_OF_RANGE,
        "lat",
    ),
    (
        "unknown truck event",
        f"{P}/v1/truck/T1/events",
        j({"ts": TS, "kind": "nap"}),
        Reason.INVALID_VALUE,
        "kind",
    ),
    (
        "bad status",
        f"{P}/v1/bin/S-1/status",
        j({"state": "sleeping"}),
        Reason.INVALID_VALUE,
        "state",
    ),
]


@pytest.mark.parametrize(
    ("topic", "raw", "reason", "needle"),
    [pytest.param(t, r, reason, n, id=name) for name, t, r, reason, n in MALFORMED],
)
def test_malformed_messages_are_rejected_with_a_precise_reason(
    topic: str, raw: bytes, reason: Reason, needle: str
) -> None:
    out = decode(P, topic, raw, NOW, LIMITS)
    assert isinstance(out, Rejected), f"accepted: {out}"
    assert out.reason is reason, out
    assert needle in out.detail


def test_corpus_covers_at_least_twenty_reasons_or_shapes() -> None:
    assert len(MALFORMED) >= 20
    assert len({case[3] for case in MALFORMED}) >= 15


def test_future_limit_is_configurable() -> None:
    raw = j({"ts": (NOW + timedelta(minutes=10)).isoformat(), "fill_pct": 1})
    assert isinstance(decode(P, BIN, raw, NOW, Limits()), Rejected)
    lenient = Limits(max_future=timedelta(hours=1))
    assert isinstance(decode(P, BIN, raw, NOW, lenient), Decoded)
