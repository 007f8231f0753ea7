"""The API's boundary: response models, query value types and the parsing of values that
FastAPI cannot check alone (bounding boxes, opaque cursors, time ranges).

The parsing functions are pure and raise `InvalidParameterError`, which the app reports as a
422 with the same body as FastAPI's own validation errors.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from cityops.api.errors import InvalidParameterError
from cityops.api.repository import (
    BBox,
    BinRow,
    DeviceRow,
    FillBucketRow,
    ReadingRow,
    Stats,
)
from cityops.ingest.contract import STORABLE, Text

__all__ = [
    "AUTH_RESPONSES",
    "BERLIN",
    "BUCKET_WIDTH",
    "ERROR_RESPONSES",
    "MAX_BUCKETS",
    "MAX_SPAN",
    "PUBLIC_RESPONSES",
    "STORABLE",
    "BinOut",
    "BinPage",
    "BucketName",
    "DeviceKind",
    "DeviceOut",
    "DevicePage",
    "DeviceState",
    "ErrorBody",
    "ErrorDetail",
    "FillBucketOut",
    "Fraction",
    "HealthOut",
    "ReadingOut",
    "ReadingsOut",
    "StatsOut",
    "Text",
    "TimeRange",
    "choose_bucket",
    "decode_cursor",
    "encode_cursor",
    "local_iso",
    "parse_bbox",
    "resolve_range",
]

BERLIN = ZoneInfo("Europe/Berlin")

Fraction = Literal["residual", "paper", "packaging", "organic", "glass"]
BucketName = Literal["raw", "15m", "1h", "1d"]
DeviceKind = Literal["bin", "signal", "truck"]
DeviceState = Literal["online", "offline", "unknown"]



# `Text` (and `STORABLE` for constrained strings): text PostgreSQL can store, under the MQTT
# contract's rule (no NUL nor other control characters, no lone surrogates); re-exported
# for the API's parameters and bodies (bin ids, districts, audit reasons).

DEFAULT_SPAN = timedelta(hours=24)
MAX_SPAN = timedelta(days=366)
RAW_MAX_SPAN = timedelta(days=2)  # longer ranges default to hourly buckets
MAX_BUCKETS = 10_000
BUCKET_WIDTH: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}


# -- pure parsing ----------------------------------------------------------------------


def parse_bbox(text: str) -> BBox:
    """`min_lon,min_lat,max_lon,max_lat` in WGS84 degrees."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        raise InvalidParameterError(
            "bbox", f"expected 4 comma-separated numbers min_lon,min_lat,max_lon,max_lat, "
            f"got {len(parts)} value(s)"
        )
    values: list[float] = []
    for name, part in zip(("min_lon", "min_lat", "max_lon", "max_lat"), parts, strict=True):
        try:
            value = float(part)
        except ValueError:
            raise InvalidParameterError("bbox", f"{name} is not a number: {part!r}") from None
        if not math.isfinite(value):
            raise InvalidParameterError("bbox", f"{name} is not a finite number: {part!r}")
        values.append(value)
    min_lon, min_lat, max_lon, max_lat = values
    for name, value in (("min_lon", min_lon), ("max_lon", max_lon)):
        if not -180.0 <= value <= 180.0:
            raise InvalidParameterError("bbox", f"{name} must be between -180 and 180, got {value}")
    for name, value in (("min_lat", min_lat), ("max_lat", max_lat)):
        if not -90.0 <= value <= 90.0:
            raise InvalidParameterError("bbox", f"{name} must be between -90 and 90, got {value}")
    if min_lon >= max_lon:
        raise InvalidParameterError(
            "bbox", f"min_lon ({min_lon}) must be less than max_lon ({max_lon})"
        )
    if min_lat >= max_lat:
        raise InvalidParameterError(
            "bbox", f"min_lat ({min_lat}) must be less than max_lat ({max_lat})"
        )
    return BBox(min_lon, min_lat, max_lon, max_lat)


def encode_cursor(kind: str, key: list[str]) -> str:
    """An opaque cursor: the list it belongs to and the sort key of the last item served."""
    raw = json.dumps({"k": kind, "after": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, size: int) -> list[str]:
    """The sort key in `cursor`; raises InvalidParameterError unless it came from this list."""
    problem = InvalidParameterError("cursor", "not a cursor returned by this endpoint")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise problem from None
    if not isinstance(data, dict) or data.get("k") != kind:
        raise problem
    key = data.get("after")
    if not isinstance(key, list) or len(key) != size:
        raise problem
    if not all(isinstance(k, str) and "\x00" not in k for k in key):
        raise problem
    return key


def cursor_time(text: str) -> datetime:
    """A time kept in a cursor (`encode_cursor(kind, [ts.isoformat(), ...])`)."""
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidParameterError("cursor", "not a cursor returned by this endpoint") from None
    if ts.utcoffset() is None:
        raise InvalidParameterError("cursor", "not a cursor returned by this endpoint")
    return ts


def cursor_int(text: str) -> int:
    """A number kept in a cursor: ASCII digits only (no sign, space or other digits)."""
    if not (text.isascii() and text.isdigit()):
        raise InvalidParameterError("cursor", "not a cursor returned by this endpoint")
    return int(text)


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime
    end: datetime


def resolve_range(start: datetime | None, end: datetime | None, now: datetime) -> TimeRange:
    """[start, end) in UTC: `end` defaults to now, `start` to 24 hours before `end`."""
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.utcoffset() is None:
            raise InvalidParameterError(
                name, "must include a UTC offset, e.g. 2024-05-01T10:00:00Z"
            )
    try:
        end = (end or now).astimezone(UTC)
    except OverflowError:
        raise InvalidParameterError("to", "is out of the supported range") from None
    try:
        start = start.astimezone(UTC) if start is not None else end - DEFAULT_SPAN
    except OverflowError:
        raise InvalidParameterError("from", "is out of the supported range") from None
    if start >= end:
        raise InvalidParameterError(
            "from", f"must be before 'to' ({start.isoformat()} is not before {end.isoformat()})"
        )
    if end - start > MAX_SPAN:
        raise InvalidParameterError(
            "to", f"the range may span at most {MAX_SPAN.days} days, got {end - start}"
        )
    return TimeRange(start, end)


def choose_bucket(requested: BucketName | None, span: TimeRange) -> BucketName:
    """The bucket to use: raw for up to two days and hourly beyond, unless requested."""
    length = span.end - span.start
    bucket: BucketName = requested or ("raw" if length <= RAW_MAX_SPAN else "1h")
    if bucket != "raw" and length / BUCKET_WIDTH[bucket] > MAX_BUCKETS:
        raise InvalidParameterError(
            "bucket", f"{bucket} buckets over {length} give more than {MAX_BUCKETS} buckets; "
            "choose a coarser bucket or a shorter range"
        )
    return bucket


def local_iso(ts: datetime | None) -> str | None:
    """Europe/Berlin wall-clock time with its offset, for display."""
    return ts.astimezone(BERLIN).isoformat() if ts is not None else None


def _utc(ts: datetime | None) -> datetime | None:
    return ts.astimezone(UTC) if ts is not None else None


# -- response models -------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorDetail(_Out):
    location: str = Field(description="query, path, header, body, or request (as a whole)")
    field: str
    message: str
    type: str | None = None


class ErrorBody(_Out):
    error: str = Field(description="machine-readable code", examples=["not_found"])
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


# What the OpenAPI document says about the error bodies (api/errors.py makes them).
#: Added to the endpoints that need a login.
AUTH_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    401: {
        "model": ErrorBody,
        "description": "no, invalid, expired or revoked credentials (with WWW-Authenticate)",
    },
    403: {"model": ErrorBody, "description": "the caller's role may not do this"},
}
#: Added to the public endpoints.
PUBLIC_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    429: {"model": ErrorBody, "description": "rate limit of the client address (Retry-After)"},
}
#: Every endpoint's.
ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": ErrorBody, "description": "unknown id"},
    413: {"model": ErrorBody, "description": "request body over the limit"},
    422: {"model": ErrorBody, "description": "invalid parameters, with one detail per field"},
    503: {"model": ErrorBody, "description": "database unreachable"},
}


class HealthOut(_Out):
    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"
    storage_mode: Literal["plain", "timescale"]


class BinOut(_Out):
    bin_id: str
    sensor_id: str | None
    lat: float
    lon: float
    street: str
    house_number: str | None
    district: str | None
    fraction: str
    capacity_l: int
    fill_pct: float | None = Field(description="latest fill level; null before the first reading")
    temperature_c: float | None
    battery_pct: float | None
    fault: str | None
    tilt: bool | None
    last_reading_at: AwareDatetime | None = Field(description="UTC")
    last_reading_local: str | None = Field(description="Europe/Berlin, for display")

    @classmethod
    def from_row(cls, row: BinRow) -> BinOut:
        return cls(
            bin_id=row.bin_id, sensor_id=row.sensor_id, lat=row.lat, lon=row.lon,
            street=row.street, house_number=row.house_number, district=row.district,
            fraction=row.fraction, capacity_l=row.capacity_l, fill_pct=row.fill_pct,
            temperature_c=row.temperature_c, battery_pct=row.battery_pct, fault=row.fault,
            tilt=row.tilt, last_reading_at=_utc(row.last_reading_at),
            last_reading_local=local_iso(row.last_reading_at),
        )


class BinPage(_Out):
    items: list[BinOut]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


class ReadingOut(_Out):
    ts: AwareDatetime
    ts_local: str
    fill_pct: float
    temperature_c: float | None
    battery_pct: float | None
    tilt: bool
    fault: str | None

    @classmethod
    def from_row(cls, row: ReadingRow) -> ReadingOut:
        return cls(
            ts=row.ts.astimezone(UTC), ts_local=row.ts.astimezone(BERLIN).isoformat(),
            fill_pct=row.fill_pct, temperature_c=row.temperature_c,
            battery_pct=row.battery_pct, tilt=row.tilt, fault=row.fault,
        )


class FillBucketOut(_Out):
    bucket_start: AwareDatetime
    bucket_start_local: str
    avg_fill_pct: float
    min_fill_pct: float
    max_fill_pct: float
    readings: int

    @classmethod
    def from_row(cls, row: FillBucketRow) -> FillBucketOut:
        return cls(
            bucket_start=row.bucket_start.astimezone(UTC),
            bucket_start_local=row.bucket_start.astimezone(BERLIN).isoformat(),
            avg_fill_pct=row.avg_fill_pct, min_fill_pct=row.min_fill_pct,
            max_fill_pct=row.max_fill_pct, readings=row.readings,
        )


class ReadingsOut(_Out):
    bin_id: str
    from_: AwareDatetime = Field(serialization_alias="from")
    to: AwareDatetime
    bucket: BucketName
    readings: list[ReadingOut] | None = Field(
        default=None, description="raw readings, oldest first (bucket=raw)"
    )
    buckets: list[FillBucketOut] | None = Field(
        default=None, description="fill per bucket, oldest first (bucketed)"
    )
    next_cursor: str | None = Field(
        default=None, description="raw only: more readings follow; pass as `cursor`"
    )


class DeviceOut(_Out):
    kind: DeviceKind
    device_id: str
    entity_id: str
    state: DeviceState = Field(description="offline when reported offline or silent too long")
    reported_state: Literal["online", "offline"] | None = Field(
        description="last state published on the device's status topic"
    )
    state_ts: AwareDatetime | None
    last_seen: AwareDatetime | None
    last_seen_local: str | None

    @classmethod
    def from_row(cls, row: DeviceRow) -> DeviceOut:
        return cls.model_validate(
            {
                "kind": row.kind, "device_id": row.device_id, "entity_id": row.entity_id,
                "state": row.state, "reported_state": row.reported_state,
                "state_ts": _utc(row.state_ts), "last_seen": _utc(row.last_seen),
                "last_seen_local": local_iso(row.last_seen),
            }
        )


class DevicePage(_Out):
    items: list[DeviceOut]
    next_cursor: str | None
    stale_after_s: int = Field(description="silence after which a device counts as offline")


class CountOut(_Out):
    count: int
    exact: bool = Field(description="false when estimated from table statistics")


class StatsOut(_Out):
    bins: int
    devices: int
    bin_readings: CountOut
    signal_events: CountOut
    truck_positions: CountOut
    dead_letters: dict[str, int] = Field(description="dead letters by reason")
    dead_letters_total: int

    @classmethod
    def from_stats(cls, stats: Stats) -> StatsOut:
        counts = {
            name: CountOut(count=c.count, exact=c.exact) for name, c in stats.tables.items()
        }
        return cls(
            bins=stats.bins, devices=stats.devices,
            bin_readings=counts["bin_readings"], signal_events=counts["signal_events"],
            truck_positions=counts["truck_positions"], dead_letters=stats.dead_letters,
            dead_letters_total=sum(stats.dead_letters.values()),
        )
