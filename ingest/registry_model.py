"""The device registry's records, as a city keeps them in files and as the API takes them.

Bins with their sensors, trucks, depots and disposal sites, signal controllers with their
phases, detectors and links. One pydantic model per record validates a row from a CSV or
GeoJSON file, a controller from YAML and a request body alike; `to_record` turns it into
the frozen dataclass the store writes. Text goes through the one text rule of the MQTT
contract (`Text`): NUL bytes and control characters are refused, HTML stays text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from cityops.ingest.contract import DEVICE_ID_PATTERN, Text

__all__ = [
    "FRACTIONS",
    "KINDS",
    "SENSOR_MODELS",
    "WEEKDAYS",
    "BinIn",
    "BinRecord",
    "ControllerIn",
    "ControllerRecord",
    "DetectorRecord",
    "LinkRecord",
    "PhaseRecord",
    "SiteIn",
    "SiteRecord",
    "TruckIn",
    "TruckRecord",
    "format_days",
    "parse_days",
]

FRACTIONS = ("residual", "paper", "packaging", "organic", "glass")
Fraction = Literal["residual", "paper", "packaging", "organic", "glass"]
#: Record kinds, as in the audit and on the command line.
KINDS = ("site", "bin", "truck", "signal_controller")
#: Distance sensors with a built-in payload codec (`cityops.ingest.codecs`).
SENSOR_MODELS = ("milesight-em310-udl", "dragino-ldds75")
#: Monday = 0, as Python and the planner count; German abbreviations in files.
WEEKDAYS = ("Mo", "Di", "Mi", "Do", "Fr", "Sa", "So")
_ALIASES = {
    **{d.lower(): i for i, d in enumerate(WEEKDAYS)},
    **{d: i for i, d in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))},
}


def parse_days(value: object) -> tuple[int, ...]:
    """`Mo,Do` / `Mo Do` / `mon;thu` / [0, 3] -> (0, 3); raises ValueError naming the bad one."""
    if value is None or value == "":
        return ()
    items: list[object]
    if isinstance(value, str):
        items = [p for p in value.replace(";", ",").replace(" ", ",").split(",") if p]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("weekdays must be text such as 'Mo,Do' or a list")
    days: set[int] = set()
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 6:
            days.add(item)
            continue
        day = _ALIASES.get(str(item).strip().lower())
        if day is None:
            raise ValueError(
                f"unknown weekday {str(item)[:20]!r}: use {', '.join(WEEKDAYS)} (or Mon..Sun)"
            )
        days.add(day)
    return tuple(sorted(days))


def format_days(days: tuple[int, ...]) -> str:
    return ",".join(WEEKDAYS[d] for d in days)


def _blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _no_offset(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("a local time of day without an offset, such as 06:30")
    return value


def _eui(value: object) -> object:
    """`70-B3-D5-7E-D0-05-A1-B2`, `70:b3:...` or `70B3D57ED005A1B2` -> lowercase hex."""
    if isinstance(value, str):
        value = value.strip().replace("-", "").replace(":", "").lower()
        return value or None
    return value


Id = Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
OptId = Annotated[Id | None, BeforeValidator(_blank_is_none)]
Name = Annotated[Text, Field(min_length=1, max_length=200)]
OptText = Annotated[Annotated[Text, Field(max_length=40)] | None, BeforeValidator(_blank_is_none)]
Lon = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
Lat = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
LocalTime = Annotated[time, AfterValidator(_no_offset)]
OptTime = Annotated[LocalTime | None, BeforeValidator(_blank_is_none)]
Days = Annotated[tuple[int, ...], BeforeValidator(parse_days)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# -- records (what the store writes) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteRecord:
    site_id: str
    name: str
    kind: str
    lon: float
    lat: float


@dataclass(frozen=True, slots=True)
class BinRecord:
    bin_id: str
    sensor_id: str | None
    lon: float
    lat: float
    street: str
    house_number: str | None
    district: str | None  # None: from the city profile's districts
    fraction: str
    capacity_l: int
    collection_days: tuple[int, ...]
    access_from: time | None
    access_to: time | None
    dev_eui: str | None = None  # LoRaWAN sensors: as the network server names them
    sensor_model: str | None = None  # its codec (SENSOR_MODELS)
    empty_distance_mm: int | None = None  # calibration: sensor to floor, empty bin
    full_distance_mm: int | None = None  # sensor to fill line, full bin


@dataclass(frozen=True, slots=True)
class TruckRecord:
    truck_id: str
    name: str
    capacity_l: int
    capacity_kg: int | None
    depot_id: str
    fractions: tuple[str, ...]
    shift_start: time
    shift_end: time


@dataclass(frozen=True, slots=True)
class PhaseRecord:
    phase: int
    seq: int
    movement: str
    min_green_s: float
    max_green_s: float
    fixed_green_s: float
    yellow_s: float
    red_clearance_s: float


@dataclass(frozen=True, slots=True)
class DetectorRecord:
    channel: int
    phase: int
    kind: str
    lane: int | None
    distance_m: float


@dataclass(frozen=True, slots=True)
class LinkRecord:
    channel: int
    to_controller_id: str
    to_channel: int
    share: float


@dataclass(frozen=True, slots=True)
class ControllerRecord:
    controller_id: str
    name: str
    lon: float
    lat: float
    cycle_s: float | None
    phases: tuple[PhaseRecord, ...]
    detectors: tuple[DetectorRecord, ...]
    links: tuple[LinkRecord, ...]


Record = SiteRecord | BinRecord | TruckRecord | ControllerRecord


# -- input models (files and the API) -------------------------------------------------------


class SiteIn(_In):
    site_id: Id
    name: Name
    kind: Literal["depot", "disposal"]
    lon: Lon
    lat: Lat

    def to_record(self) -> SiteRecord:
        return SiteRecord(self.site_id, self.name, self.kind, self.lon, self.lat)


class BinIn(_In):
    bin_id: Id
    sensor_id: OptId = None
    lon: Lon
    lat: Lat
    street: Name
    house_number: OptText = None
    district: OptText = None
    fraction: Fraction
    capacity_l: int = Field(gt=0, le=40_000)
    collection_days: Days = ()
    access_from: OptTime = None
    access_to: OptTime = None
    dev_eui: Annotated[
        Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")] | None, BeforeValidator(_eui)
    ] = Field(default=None, description="LoRaWAN DevEUI, 16 hex digits")
    sensor_model: Annotated[
        Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")] | None,
        BeforeValidator(_blank_is_none),
    ] = Field(default=None, description="the distance sensor's model: a built-in codec "
              "(SENSOR_MODELS) or a mapping of the city profile's lorawan section")
    empty_distance_mm: Annotated[
        Annotated[int, Field(ge=100, le=5000)] | None, BeforeValidator(_blank_is_none)
    ] = Field(default=None, description="from the sensor to the bin's floor, bin empty")
    full_distance_mm: Annotated[
        Annotated[int, Field(ge=0, le=5000)] | None, BeforeValidator(_blank_is_none)
    ] = Field(default=None, description="from the sensor to the fill line, bin full")

    @model_validator(mode="after")
    def _window(self) -> Self:
        if (self.access_from is None) != (self.access_to is None):
            raise ValueError("give both access_from and access_to, or neither")
        if self.access_from is not None and self.access_from == self.access_to:
            raise ValueError("access_from and access_to are the same time")
        return self

    @model_validator(mode="after")
    def _calibrated(self) -> Self:
        if self.dev_eui is not None and self.sensor_model is None:
            raise ValueError("a bin with a dev_eui needs its sensor_model")
        if self.sensor_model is not None and (
            self.empty_distance_mm is None or self.full_distance_mm is None
        ):
            raise ValueError("a distance sensor needs empty_distance_mm and full_distance_mm")
        if (self.empty_distance_mm is not None and self.full_distance_mm is not None
                and self.full_distance_mm >= self.empty_distance_mm):
            raise ValueError("full_distance_mm must be less than empty_distance_mm (the "
                             "sensor looks down: a fuller bin is nearer)")
        return self

    def to_record(self) -> BinRecord:
        return BinRecord(
            self.bin_id, self.sensor_id, self.lon, self.lat, self.street, self.house_number,
            self.district, self.fraction, self.capacity_l, self.collection_days,
            self.access_from, self.access_to, self.dev_eui, self.sensor_model,
            self.empty_distance_mm, self.full_distance_mm,
        )


def _fractions(value: object) -> object:
    if isinstance(value, str):
        return tuple(p.strip() for p in value.replace(";", ",").split(",") if p.strip())
    return value


class TruckIn(_In):
    truck_id: Id
    name: Name
    capacity_l: int = Field(gt=0, le=100_000)
    capacity_kg: Annotated[
        Annotated[int, Field(gt=0, le=50_000)] | None, BeforeValidator(_blank_is_none)
    ] = None
    depot_id: Id
    fractions: Annotated[tuple[Fraction, ...], BeforeValidator(_fractions)] = Field(min_length=1)
    shift_start: LocalTime = time(6, 0)
    shift_end: LocalTime = time(14, 30)

    @model_validator(mode="after")
    def _shift(self) -> Self:
        if self.shift_end <= self.shift_start:
            raise ValueError("shift_end must be after shift_start (same day)")
        return self

    def to_record(self) -> TruckRecord:
        return TruckRecord(
            self.truck_id, self.name, self.capacity_l, self.capacity_kg, self.depot_id,
            self.fractions, self.shift_start, self.shift_end,
        )


class PhaseIn(_In):
    phase: int = Field(ge=1, le=16)
    movement: Name
    min_green_s: float = Field(gt=0, le=120)
    max_green_s: float = Field(gt=0, le=300)
    fixed_green_s: float = Field(gt=0, le=300)
    yellow_s: float = Field(ge=3, le=6, description="at least 3 s (RiLSA)")
    red_clearance_s: float = Field(ge=0, le=10)

    @model_validator(mode="after")
    def _greens(self) -> Self:
        if not self.min_green_s <= self.fixed_green_s <= self.max_green_s:
            raise ValueError("needs min_green_s <= fixed_green_s <= max_green_s")
        return self


class DetectorIn(_In):
    channel: int = Field(ge=1, le=255)
    phase: int = Field(ge=1, le=16)
    kind: Literal["stop_bar", "advance", "count", "pedestrian"]
    lane: int | None = Field(default=None, ge=1, le=12)
    distance_m: float = Field(default=0.0, ge=0, le=500)


class LinkIn(_In):
    channel: int = Field(ge=1, le=255)
    to_controller_id: Id
    to_channel: int = Field(ge=1, le=255)
    share: float = Field(default=1.0, gt=0, le=1)


class ControllerIn(_In):
    controller_id: Id
    name: Name
    lon: Lon
    lat: Lat
    cycle_s: float | None = Field(default=None, gt=0, le=300)
    phases: list[PhaseIn] = Field(min_length=1, max_length=16)
    detectors: list[DetectorIn] = Field(default_factory=list, max_length=255)
    links: list[LinkIn] = Field(default_factory=list, max_length=255)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        phases = [p.phase for p in self.phases]
        if len(set(phases)) != len(phases):
            raise ValueError(f"phases: a phase number occurs twice ({phases})")
        channels = [d.channel for d in self.detectors]
        if len(set(channels)) != len(channels):
            raise ValueError(f"detectors: a channel occurs twice ({channels})")
        for d in self.detectors:
            if d.phase not in phases:
                raise ValueError(f"detectors: channel {d.channel} serves phase {d.phase}, "
                                 f"which is not among the phases {sorted(phases)}")
        for link in self.links:
            if link.channel not in channels:
                raise ValueError(f"links: channel {link.channel} is not a detector of "
                                 f"{self.controller_id}")
            if link.to_controller_id == self.controller_id:
                raise ValueError("links: a link leads to another controller")
        return self

    def to_record(self) -> ControllerRecord:
        return ControllerRecord(
            self.controller_id, self.name, self.lon, self.lat, self.cycle_s,
            tuple(PhaseRecord(p.phase, seq, p.movement, p.min_green_s, p.max_green_s,
                              p.fixed_green_s, p.yellow_s, p.red_clearance_s)
                  for seq, p in enumerate(self.phases, start=1)),
            tuple(DetectorRecord(d.channel, d.phase, d.kind, d.lane, d.distance_m)
                  for d in self.detectors),
            tuple(LinkRecord(k.channel, k.to_controller_id, k.to_channel, k.share)
                  for k in self.links),
        )


MODELS: dict[str, type[SiteIn | BinIn | TruckIn | ControllerIn]] = {
    "site": SiteIn, "bin": BinIn, "truck": TruckIn, "signal_controller": ControllerIn,
}
ID_FIELD = {"site": "site_id", "bin": "bin_id", "truck": "truck_id",
            "signal_controller": "controller_id"}


def record_id(record: Record) -> str:
    if isinstance(record, SiteRecord):
        return record.site_id
    if isinstance(record, BinRecord):
        return record.bin_id
    if isinstance(record, TruckRecord):
        return record.truck_id
    return record.controller_id


def record_kind(record: Record) -> str:
    return {SiteRecord: "site", BinRecord: "bin", TruckRecord: "truck",
            ControllerRecord: "signal_controller"}[type(record)]


def as_json(record: Record) -> dict[str, Any]:
    """The record as JSON-able values (audit, API, YAML export)."""
    from dataclasses import asdict

    out: dict[str, Any] = {}
    for key, value in asdict(record).items():
        if isinstance(value, time):
            out[key] = value.strftime("%H:%M")
        elif isinstance(value, tuple):
            out[key] = list(value)
        else:
            out[key] = value
    return out
