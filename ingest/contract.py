"""The MQTT contract: topic layout and JSON payload models (see docs/mqtt.md).

Topics are `{prefix}/v1/{kind}/{device_id}/{channel}`:

* kind: `bin`, `signal` (a signal controller) or `truck`;
* channel: `telemetry`, `events` or `status` (device to platform), and
  `cmd/{name}` (platform to device: `cmd/timing` for controllers, `cmd/route` for trucks).

Everything here is pure: no I/O, so simulators, ingest, tests and docs share it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

__all__ = [
    "CONTRACT_VERSION",
    "DEVICE_ID_PATTERN",
    "STORABLE",
    "BinTelemetry",
    "Channel",
    "DeviceKind",
    "DeviceStatus",
    "RouteCommand",
    "RouteGeometry",
    "RouteStop",
    "SignalEvent",
    "SignalEvents",
    "Text",
    "TimingCommand",
    "TopicError",
    "TopicInfo",
    "TruckEvent",
    "TruckTelemetry",
    "command_topic",
    "contract_pairs",
    "device_topic",
    "ingest_subscription",
    "json_schemas",
    "parse_topic",
    "payload_model",
    "text_problem",
    "utc_iso",
]

CONTRACT_VERSION = "v1"
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"
_DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)


class DeviceKind(StrEnum):
    BIN = "bin"
    SIGNAL = "signal"
    TRUCK = "truck"


class Channel(StrEnum):
    TELEMETRY = "telemetry"
    EVENTS = "events"
    STATUS = "status"


class TopicError(ValueError):
    """A topic outside the contract."""


@dataclass(frozen=True, slots=True)
class TopicInfo:
    kind: DeviceKind
    device_id: str
    channel: Channel


def device_topic(prefix: str, kind: DeviceKind, device_id: str, channel: Channel) -> str:
    """Topic a device publishes on."""
    return f"{prefix}/{CONTRACT_VERSION}/{kind.value}/{device_id}/{channel.value}"


def command_topic(prefix: str, kind: DeviceKind, device_id: str, command: str) -> str:
    """Topic a device subscribes to for commands (`timing` for signals, `route` for trucks)."""
    return f"{prefix}/{CONTRACT_VERSION}/{kind.value}/{device_id}/cmd/{command}"


def ingest_subscription(prefix: str, share_group: str | None) -> str:
    """Filter for everything devices publish (not commands), shared when a group is given."""
    topic_filter = f"{prefix}/{CONTRACT_VERSION}/+/+/+"
    return f"$share/{share_group}/{topic_filter}" if share_group else topic_filter


def parse_topic(prefix: str, topic: str) -> TopicInfo:
    """Split a device topic into kind, device id and channel, or raise `TopicError`."""
    head = f"{prefix}/{CONTRACT_VERSION}/"
    if not topic.startswith(head):
        raise TopicError(f"topic {topic!r} is not under {head!r}")
    levels = topic[len(head) :].split("/")
    if len(levels) != 3:
        raise TopicError(f"topic {topic!r} must be {head}<kind>/<device_id>/<channel>")
    kind_s, device_id, channel_s = levels
    try:
        kind = DeviceKind(kind_s)
    except ValueError:
        raise TopicError(f"unknown device kind {kind_s!r} in topic {topic!r}") from None
    try:
        channel = Channel(channel_s)
    except ValueError:
        raise TopicError(f"unknown channel {channel_s!r} in topic {topic!r}") from None
    if not _DEVICE_ID_RE.match(device_id):
        raise TopicError(f"invalid device id {device_id!r} in topic {topic!r}")
    return TopicInfo(kind, device_id, channel)


# C0 and C1 control characters other than tab, line feed and carriage return, and lone
# UTF-16 surrogates (JSON can escape them, UTF-8 cannot carry them): PostgreSQL refuses NUL in
# text and no surrogate can be encoded for it, and the rest have no business in a device's
# or an editor's text.
_BAD_TEXT_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None. The one rule for every string in the
    MQTT contract and in the API's text fields."""
    bad = _BAD_TEXT_RE.search(value)
    if bad is None:
        return None
    return (
        f"must not contain control characters or lone surrogates "
        f"(U+{ord(bad.group()):04X} at position {bad.start()})"
    )


def _storable(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


#: The check as pydantic metadata, for types with constraints of their own (after them).
STORABLE = AfterValidator(_storable)
#: Every free-text string of the contract (and of the API): checked where it is, so that
#: payloads without text (bin telemetry, controller events) pay nothing for it.
Text = Annotated[str, STORABLE]


class _Payload(BaseModel):
    # Unknown fields are refused so that a typo ("fil_pct") is not silently dropped. Raw
    # device JSON is validated with strict=True (decode.py): "42" is not a number there.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Percent = Annotated[float, Field(ge=0.0, le=100.0)]


class BinTelemetry(_Payload):
    """A fill-level sensor reading. Topic `.../bin/{id}/telemetry`."""

    ts: AwareDatetime = Field(description="measurement time, RFC 3339 with offset (UTC preferred)")
    fill_pct: Percent = Field(description="fill level in percent of the bin's volume")
    temperature_c: float | None = Field(
        default=None, ge=-50.0, le=200.0, description="temperature inside the bin in degC"
    )
    battery_pct: Percent | None = Field(default=None, description="sensor battery in percent")
    tilt: bool = Field(default=False, description="bin tipped over (tilt switch)")
    fault: Literal["stuck", "sensor_error", "low_battery"] | None = Field(
        default=None, description="fault the sensor diagnosed itself"
    )


class SignalEvent(_Payload):
    """One Indiana high-resolution controller event."""

    ts: AwareDatetime = Field(description="event time, 0.1 s resolution")
    code: int = Field(ge=0, le=255, description="Indiana event code (1 begin green, 82 det on…)")
    param: int = Field(ge=0, le=255, description="event parameter: phase, detector channel…")


class SignalEvents(_Payload):
    """A batch of controller events. Topic `.../signal/{id}/events`."""

    events: list[SignalEvent] = Field(min_length=1, max_length=5000)


class TruckTelemetry(_Payload):
    """A truck's position. Topic `.../truck/{id}/telemetry`."""

    ts: AwareDatetime
    lat: float = Field(ge=-90.0, le=90.0, description="WGS84 latitude in degrees")
    lon: float = Field(ge=-180.0, le=180.0, description="WGS84 longitude in degrees")
    speed_kmh: float = Field(default=0.0, ge=0.0, le=200.0)
    heading_deg: float | None = Field(default=None, ge=0.0, lt=360.0)
    load_l: float | None = Field(default=None, ge=0.0, description="load on board in litres")
    route_version: int | None = Field(default=None, ge=1)


class TruckEvent(_Payload):
    """A stop event from a truck. Topic `.../truck/{id}/events`.

    `breakdown`: the truck cannot go on today; its remaining stops are re-planned.
    """

    ts: AwareDatetime
    kind: Literal["stop_done", "stop_skipped", "unloaded", "shift_start", "shift_end", "breakdown"]
    bin_id: str | None = Field(default=None, pattern=DEVICE_ID_PATTERN)
    route_version: int | None = Field(default=None, ge=1)
    reason: Text | None = Field(default=None, max_length=200, description="why a stop was skipped")
    volume_l: float | None = Field(default=None, ge=0.0, description="volume emptied in litres")


class DeviceStatus(_Payload):
    """Retained online/offline state, also the last will. Topic `.../{kind}/{id}/status`."""

    state: Literal["online", "offline"]
    ts: AwareDatetime | None = Field(default=None, description="absent in a last will")
    firmware: Text | None = Field(default=None, max_length=64)


class RouteStop(_Payload):
    """One visit of a planned route, in the order the truck drives them."""

    seq: int = Field(ge=0)
    kind: Literal["start", "stop", "unload", "break", "end"]
    bin_id: str | None = Field(default=None, pattern=DEVICE_ID_PATTERN)
    site_id: Text | None = Field(default=None, max_length=64)
    lat: float = Field(ge=-90.0, le=90.0)
    lon: float = Field(ge=-180.0, le=180.0)
    street: Text | None = Field(default=None, max_length=200)
    eta: AwareDatetime = Field(description="planned arrival")
    etd: AwareDatetime = Field(description="planned departure")
    load_after_l: float = Field(ge=0.0, description="load on board after this visit, litres")


class RouteGeometry(_Payload):
    type: Literal["LineString"] = "LineString"
    coordinates: list[tuple[float, float]] = Field(description="[lon, lat] along the streets")


class RouteCommand(_Payload):
    """A truck's route version. Topic `.../truck/{id}/cmd/route`; also `GET .../route`."""

    truck_id: str = Field(pattern=DEVICE_ID_PATTERN)
    plan_date: date
    version: int = Field(ge=1, description="grows with every change; the newest one counts")
    created_at: AwareDatetime
    reason: Text = Field(max_length=500, description="why this version exists")
    engine: Text = Field(max_length=40)
    fraction: Literal["residual", "paper", "packaging", "organic", "glass"] | None = Field(
        default=None, description="the waste fraction this truck collects on this route"
    )
    distance_m: float = Field(ge=0.0)
    duration_s: float = Field(ge=0.0)
    stops: list[RouteStop]
    geometry: RouteGeometry
    unserved: list[dict[Text, Text]] = Field(
        default_factory=list, description="stops this plan could not serve, with the reason"
    )


class TimingCommand(_Payload):
    """A timing decision for a signal controller. Topic `.../signal/{id}/cmd/timing`.

    Sent by the adaptive control service (`cityops traffic control`). The controller stays
    in charge of safety: it never shortens yellow or red clearance, never ends a green
    before its minimum or holds it past its maximum, and refuses (and logs) a command that
    asks for either. Times are in the controller's own clock, which is the clock of the
    events it publishes (`issued_at` is the time of the newest event the decision used).

    * `mode="adaptive"`: a decision about the phase now green: `hold` keeps it green (up
      to its max green), `advance` ends it (once min green has passed) and the controller
      moves on to the next phase of its fixed order. The service sends one per controller
      at every decision step, so silence means the service or the link is gone.
    * `mode="plan"`: a fixed-time plan (`greens_s`: green seconds per phase number, each
      between the phase's min and max green) run from the next cycle on.
    * `mode="fallback"`: return to the controller's own fixed-time plan now.

    A command is dropped when `issued_at + valid_for_s` is at or before the controller's
    time on arrival (stale, compared in tenths of a second) or when its `seq` is not above
    the last accepted one from the same `issuer`. When no valid command has arrived for
    `valid_for_s` seconds, the controller reverts to its own fixed-time plan on its own.
    """

    controller_id: str = Field(pattern=DEVICE_ID_PATTERN)
    issuer: Text = Field(
        max_length=64, description="instance of the control service (seq restarts per issuer)"
    )
    seq: int = Field(ge=1, description="grows with every command of this issuer")
    issued_at: AwareDatetime = Field(description="controller time the decision is based on")
    valid_for_s: float = Field(
        gt=0.0, le=300.0, description="stale after this; silence this long -> fixed-time plan"
    )
    mode: Literal["adaptive", "plan", "fallback"]
    phase: int | None = Field(
        default=None, ge=1, le=16, description="adaptive: the phase the decision is about"
    )
    action: Literal["hold", "advance"] | None = Field(
        default=None, description="adaptive: keep the phase green, or end it"
    )
    greens_s: dict[Text, float] | None = Field(
        default=None, description="plan: green seconds per phase number (as a string key)"
    )


_MODELS: dict[tuple[DeviceKind, Channel], type[_Payload]] = {
    (DeviceKind.BIN, Channel.TELEMETRY): BinTelemetry,
    (DeviceKind.SIGNAL, Channel.EVENTS): SignalEvents,
    (DeviceKind.TRUCK, Channel.TELEMETRY): TruckTelemetry,
    (DeviceKind.TRUCK, Channel.EVENTS): TruckEvent,
    (DeviceKind.BIN, Channel.STATUS): DeviceStatus,
    (DeviceKind.SIGNAL, Channel.STATUS): DeviceStatus,
    (DeviceKind.TRUCK, Channel.STATUS): DeviceStatus,
}


def payload_model(kind: DeviceKind, channel: Channel) -> type[_Payload] | None:
    """The payload model for a kind and channel, or None when the pair is not in the contract."""
    return _MODELS.get((kind, channel))


def contract_pairs() -> list[tuple[DeviceKind, Channel, type[_Payload]]]:
    """Every (kind, channel, model) in the contract, for docs and schema export."""
    return [(k, c, m) for (k, c), m in _MODELS.items()]


def utc_iso(ts: datetime) -> str:
    """RFC 3339 in UTC with milliseconds (`2026-11-21T08:00:00.000Z`), as devices send it."""
    if ts.tzinfo is None:
        raise ValueError("naive datetime: cityops only handles timezone-aware times")
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_schemas() -> dict[str, dict[str, object]]:
    """JSON Schema of every payload, keyed by file name (`bin.telemetry.schema.json`, ...)."""
    out: dict[str, dict[str, object]] = {}
    for kind, channel, model in contract_pairs():
        schema = model.model_json_schema()
        schema["$id"] = f"https://cityops.example/schemas/{CONTRACT_VERSION}/{kind}.{channel}.json"
        schema["description"] = (
            f"Payload on {{prefix}}/{CONTRACT_VERSION}/{kind}/{{device_id}}/{channel}. "
            + (model.__doc__ or "").strip().split("\n")[0]
        )
        out[f"{kind}.{channel}.schema.json"] = schema
    route = RouteCommand.model_json_schema()
    route["$id"] = f"https://cityops.example/schemas/{CONTRACT_VERSION}/truck.cmd.route.json"
    route["description"] = f"Payload on {{prefix}}/{CONTRACT_VERSION}/truck/{{id}}/cmd/route."
    out["truck.cmd.route.schema.json"] = route
    timing = TimingCommand.model_json_schema()
    timing["$id"] = f"https://cityops.example/schemas/{CONTRACT_VERSION}/signal.cmd.timing.json"
    timing["description"] = (
        f"Payload on {{prefix}}/{CONTRACT_VERSION}/signal/{{id}}/cmd/timing. "
        + (TimingCommand.__doc__ or "").strip().split("\n")[0]
    )
    out["signal.cmd.timing.schema.json"] = timing
    return out
