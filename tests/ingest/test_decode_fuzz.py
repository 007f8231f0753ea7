"""Property-based fuzzing: the decoder returns Decoded or Rejected for any input, never raises."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from cityops.ingest.decode import Decoded, Limits, Rejected, decode

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
LIMITS = Limits(max_payload_bytes=2048)
TOPICS = st.one_of(
    st.sampled_from(
        [
            "p/v1/bin/S-1/telemetry",
            "p/v1/signal/K1/events",
            "p/v1/truck/T1/telemetry",
            "p/v1/truck/T1/events",
            "p/v1/bin/S-1/status",
        ]
    ),
    st.text(max_size=80),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "ts": st.one_of(
            st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()), st.text(max_size=30)
        ),
        "fill_pct": st.one_of(st.floats(), st.integers(), st.text(max_size=5)),
        "temperature_c": st.floats(),
        "tilt": st.one_of(st.booleans(), st.integers()),
        "lat": st.floats(),
        "lon": st.floats(),
        "kind": st.text(max_size=12),
        "state": st.sampled_from(["online", "offline", "x"]),
        "events": st.lists(
            st.fixed_dictionaries(
                {"ts": st.text(max_size=30), "code": st.integers(), "param": st.integers()}
            ),
            max_size=3,
        ),
    },
)


def _check(topic: str, raw: bytes) -> None:
    out = decode("p", topic, raw, NOW, LIMITS)
    assert isinstance(out, Decoded | Rejected)
    if isinstance(out, Rejected):
        assert out.detail


@settings(max_examples=150, deadline=None, derandomize=True)
@given(TOPICS, st.binary(max_size=3000))
def test_arbitrary_bytes(topic: str, raw: bytes) -> None:
    _check(topic, raw)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(TOPICS, JSON_VALUES)
def test_arbitrary_json(topic: str, value: object) -> None:
    _check(topic, json.dumps(value, allow_nan=True).encode())


@settings(max_examples=250, deadline=None, derandomize=True)
@given(TOPICS, FIELDS)
def test_plausible_payloads(topic: str, fields: dict[str, object]) -> None:
    _check(topic, json.dumps(fields, allow_nan=True).encode())
