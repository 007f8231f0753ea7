"""The scenario: what the simulated city contains and how its devices behave.

A scenario is a YAML file validated by the pydantic models below (the boundary of the
simulators: everything past `load_scenario` works on the validated, frozen model). Unknown
keys are refused so that a typo (`fill_rate_l_per_dya`) is not silently ignored. Bundled
scenarios live in `cityops/simulators/scenarios/` and are loaded by name (`demo`, `test`);
anything else is read as a path.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, time, timedelta, tzinfo
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cityops.simulators.errors import ScenarioError

__all__ = [
    "FRACTIONS",
    "BinFaults",
    "BinsConfig",
    "DetectorConfig",
    "Fraction",
    "PhaseConfig",
    "Scenario",
    "ShiftConfig",
    "SignalsConfig",
    "SiteConfig",
    "TrucksConfig",
    "bundled_scenarios",
    "load_scenario",
    "parse_scenario",
    "parse_start",
]

logger = logging.getLogger(__name__)

Fraction = Literal["residual", "paper", "packaging", "organic", "glass"]
#: Waste fractions in the order of the registry's CHECK constraint.
FRACTIONS: tuple[Fraction, ...] = ("residual", "paper", "packaging", "organic", "glass")

_ID = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"
_START_RE = re.compile(
    r"^now(?:\s*-\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>d|days?|h|hours?|m|min|minutes?))?$",
    re.IGNORECASE,
)
_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0}


def _tenths(value: float, what: str) -> float:
    """Signal timings are multiples of 0.1 s, the resolution of controller events."""
    if abs(value * 10 - round(value * 10)) > 1e-6:
        raise ValueError(f"{what} must be a multiple of 0.1 s, got {value}")
    return round(value, 1)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_DEFAULT_MIX: dict[Fraction, float] = {
    "residual": 0.35, "paper": 0.2, "packaging": 0.2, "organic": 0.15, "glass": 0.1
}
_DEFAULT_RATES: dict[Fraction, float] = {
    "residual": 20.0, "paper": 12.0, "packaging": 15.0, "organic": 18.0, "glass": 6.0
}

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Weight = Annotated[float, Field(gt=0.0)]


class BinFaults(_Section):
    """Fault probabilities, each per bin and simulated day."""

    stuck_sensor: Probability = Field(
        default=0.002, description="sensor freezes and repeats its last value for stuck_hours"
    )
    stuck_hours: float = Field(default=24.0, gt=0.0, le=24 * 30)
    battery_drain: Probability = Field(
        default=0.001, description="battery starts failing and drains a few percent a day"
    )
    fire: Probability = Field(default=0.0002, description="a fire: temperature spikes for ~1-2 h")
    tilt: Probability = Field(default=0.0005, description="bin tipped over until next emptying")


class LorawanConfig(_Section):
    """Bins whose sensors report through a LoRaWAN network server (docs/devices.md)."""

    share: float = Field(default=0.0, ge=0.0, le=1.0, description="share of the bins")
    networks: list[Literal["chirpstack", "tts"]] = Field(
        default_factory=lambda: list[Literal["chirpstack", "tts"]](["chirpstack", "tts"]),
        min_length=1,
        description="network servers, assigned in turn",
    )
    models: list[Literal["milesight-em310-udl", "dragino-ldds75"]] = Field(
        default_factory=lambda: list[Literal["milesight-em310-udl", "dragino-ldds75"]](
            ["milesight-em310-udl", "dragino-ldds75"]),
        min_length=1,
        description="sensor models, assigned in turn",
    )


class BinsConfig(_Section):
    """Waste bins with fill-level sensors."""

    count: int = Field(default=200, ge=0, le=100_000)
    fractions: dict[Fraction, Weight] = Field(
        default_factory=lambda: dict(_DEFAULT_MIX),
        description="relative share of each waste fraction",
    )
    capacities: dict[int, Weight] = Field(
        default_factory=lambda: {120: 0.3, 240: 0.4, 660: 0.15, 1100: 0.15},
        description="relative share of each bin size in litres",
    )
    fill_rate_l_per_day: dict[Fraction, Annotated[float, Field(ge=0.0)]] = Field(
        default_factory=lambda: dict(_DEFAULT_RATES),
        description="mean litres per day thrown into a 240 l bin; other sizes serve "
        "proportionally more or fewer households, so the rate scales with capacity",
    )
    weekday_factors: list[Annotated[float, Field(ge=0.0)]] = Field(
        default_factory=lambda: [0.95, 0.95, 0.95, 0.95, 1.0, 1.15, 1.05],
        min_length=7,
        max_length=7,
        description="fill-rate factors Monday..Sunday",
    )
    reading_interval_min: float = Field(default=15.0, gt=0.0, le=24 * 60)
    noise_pct: float = Field(default=1.5, ge=0.0, le=20.0, description="sensor noise, std dev")
    initial_fill_pct: tuple[float, float] = Field(
        default=(0.0, 70.0), description="fill at the start, uniform in this range"
    )
    street_classes: list[str] | None = Field(
        default=None,
        description="OSM highway classes bins stand on (default: residential streets)",
    )
    faults: BinFaults = Field(default_factory=BinFaults)
    lorawan: LorawanConfig = Field(default_factory=LorawanConfig)

    @field_validator("capacities")
    @classmethod
    def _positive_sizes(cls, value: dict[int, float]) -> dict[int, float]:
        bad = [size for size in value if not 10 <= size <= 40_000]
        if bad:
            raise ValueError(f"bin sizes must be 10..40000 litres, got {bad}")
        if not value:
            raise ValueError("at least one bin size is needed")
        return value

    @field_validator("initial_fill_pct")
    @classmethod
    def _fill_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.0 <= low <= high <= 100.0:
            raise ValueError(f"must be [low, high] with 0 <= low <= high <= 100, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _rates_for_every_fraction(self) -> Self:
        if not self.fractions:
            raise ValueError("fractions: at least one fraction is needed")
        missing = [f for f in self.fractions if f not in self.fill_rate_l_per_day]
        if missing:
            raise ValueError(f"fill_rate_l_per_day has no rate for {', '.join(missing)}")
        return self


class DetectorConfig(_Section):
    """A detector in each lane of a phase's approach."""

    kind: Literal["stop_bar", "advance"]
    distance_m: float = Field(
        default=0.0, ge=0.0, le=500.0, description="upstream of the stop line"
    )
    length_m: float = Field(default=2.0, gt=0.0, le=30.0, description="loop length along the lane")

    @model_validator(mode="after")
    def _distance_fits_kind(self) -> Self:
        if self.kind == "stop_bar" and self.distance_m != 0.0:
            raise ValueError("a stop_bar detector lies at the stop line: distance_m must be 0")
        if self.kind == "advance" and self.distance_m < 10.0:
            raise ValueError("an advance detector needs distance_m >= 10")
        return self


class PhaseConfig(_Section):
    """One signal group of the fixed-time plan, served in the order listed."""

    phase: int = Field(ge=1, le=16)
    approach: Literal["major", "minor"] = Field(
        default="major", description="which of the intersection's streets this phase serves"
    )
    movement: str = Field(default="through", min_length=1, max_length=40)
    green_s: float = Field(gt=0.0, le=300.0)
    min_green_s: float = Field(default=5.0, gt=0.0)
    max_green_s: float | None = Field(default=None, description="default: 1.5 x green_s")
    yellow_s: float = Field(default=3.0, ge=3.0, le=6.0, description="RiLSA: 3 s at 50 km/h")
    red_clearance_s: float = Field(default=2.0, ge=0.0, le=10.0)
    arrival_vph: float = Field(
        default=400.0, ge=0.0, le=3000.0, description="vehicles/h in the peak hour, all lanes"
    )
    lanes: int = Field(default=1, ge=1, le=4)
    speed_kmh: float = Field(default=50.0, ge=10.0, le=100.0, description="approach speed")
    detectors: list[DetectorConfig] = Field(
        default_factory=lambda: [DetectorConfig(kind="stop_bar")], max_length=4
    )

    @field_validator("green_s", "min_green_s", "yellow_s", "red_clearance_s", "max_green_s")
    @classmethod
    def _tenth_seconds(cls, value: float | None) -> float | None:
        return None if value is None else _tenths(value, "signal timings")

    @model_validator(mode="after")
    def _green_bounds(self) -> Self:
        if self.min_green_s > self.green_s:
            raise ValueError(f"min_green_s {self.min_green_s} exceeds green_s {self.green_s}")
        if self.max_green_s is not None and self.max_green_s < self.green_s:
            raise ValueError(f"max_green_s {self.max_green_s} is below green_s {self.green_s}")
        if self.arrival_vph / self.lanes > 1800.0:
            raise ValueError("arrival_vph exceeds 1800 vehicles/h per lane")
        return self


class SignalsConfig(_Section):
    """Traffic signal controllers running a fixed-time plan, with detectors."""

    count: int = Field(default=4, ge=0, le=500)
    phases: list[PhaseConfig] = Field(
        default_factory=lambda: [
            PhaseConfig(phase=2, approach="major", green_s=30.0, yellow_s=4.0),
            PhaseConfig(phase=4, approach="minor", green_s=20.0, arrival_vph=200.0),
        ],
        min_length=1,
        max_length=16,
    )
    batch_s: float = Field(
        default=1.0, gt=0.0, le=60.0, description="controllers publish their events every batch_s"
    )
    min_spacing_m: float = Field(default=150.0, ge=0.0, description="between two controllers")

    @field_validator("phases")
    @classmethod
    def _unique_phases(cls, value: list[PhaseConfig]) -> list[PhaseConfig]:
        numbers = [p.phase for p in value]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"phase numbers must be unique, got {numbers}")
        channels = sum(p.lanes * len(p.detectors) for p in value)
        if channels > 255:
            raise ValueError(f"{channels} detector channels: at most 255 per controller")
        return value


class ShiftConfig(_Section):
    """Working hours of the collection crews, in the scenario's time zone."""

    start: time = Field(default=time(6, 0))
    end: time = Field(default=time(22, 0), description="'24:00' for midnight")
    weekdays: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4, 5], min_length=1, description="0 = Monday"
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock_time(cls, value: object) -> object:
        if isinstance(value, int):
            # YAML 1.1 reads an unquoted 22:00 as the base-60 integer 1320.
            raise ValueError("write times of day in quotes, e.g. '22:00'")
        if isinstance(value, str) and value.strip() == "24:00":
            return time.max
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError(f"shift end {self.end} must be after its start {self.start}")
        return self


class TrucksConfig(_Section):
    """Refuse collection trucks."""

    count: int = Field(default=4, ge=0, le=1000)
    capacity_l: int = Field(
        default=8000, gt=0, description="bin volume a truck takes before unloading"
    )
    capacity_kg: int | None = Field(default=None, gt=0)
    depot: str = Field(default="DEPOT-1", pattern=_ID, description="site id of the trucks' depot")
    fractions: list[Fraction] = Field(
        default_factory=lambda: list(FRACTIONS),
        min_length=1,
        description="handed out round-robin: truck i collects fractions[j] for j % count == i",
    )
    report_interval_s: float = Field(default=10.0, ge=1.0, le=600.0)
    speed_factor: float = Field(
        default=0.8, gt=0.0, le=1.0, description="share of the edge speed a loaded truck reaches"
    )
    fill_threshold_pct: float = Field(default=70.0, ge=0.0, le=100.0)
    unload_at_pct: float = Field(default=90.0, gt=0.0, le=100.0)
    service_s: float = Field(default=40.0, gt=0.0, le=1800.0, description="per bin up to 240 l")
    service_large_s: float = Field(default=90.0, gt=0.0, le=1800.0, description="per larger bin")
    unload_s: float = Field(default=600.0, gt=0.0, le=7200.0)
    replan_min: float = Field(default=20.0, gt=0.0, le=24 * 60, description="idle check interval")
    shift: ShiftConfig = Field(default_factory=ShiftConfig)


class SiteConfig(_Section):
    """A depot (trucks start and end there) or a disposal site (trucks unload there)."""

    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1, max_length=120)
    kind: Literal["depot", "disposal"]
    lat: float | None = Field(default=None, ge=-90.0, le=90.0)
    lon: float | None = Field(default=None, ge=-180.0, le=180.0)

    @model_validator(mode="after")
    def _both_or_neither(self) -> Self:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither (placed at the city's edge)")
        return self


class Scenario(_Section):
    """A whole simulated city. Field docs double as the YAML reference."""

    name: str = Field(min_length=1, max_length=80)
    seed: int = Field(default=1, ge=0)
    osm_file: Path | None = Field(default=None, description="default: the bundled OSM extract")
    timezone: str = Field(default="Europe/Berlin", description="for daily and weekly patterns")
    start: str = Field(
        default="now - 2 days",
        description="'now', 'now - N days|hours|minutes' or an ISO 8601 time",
    )
    speed: float = Field(default=120.0, ge=1.0, le=10_000.0, description="clock acceleration")
    district_cell_m: float = Field(
        default=500.0, ge=50.0, le=20_000.0, description="size of the grid cells naming districts"
    )
    bins: BinsConfig = Field(default_factory=BinsConfig)
    signals: SignalsConfig = Field(default_factory=SignalsConfig)
    trucks: TrucksConfig = Field(default_factory=TrucksConfig)
    sites: list[SiteConfig] = Field(
        default_factory=lambda: [
            SiteConfig(id="DEPOT-1", name="Betriebshof", kind="depot"),
            SiteConfig(id="DISPOSAL-1", name="Wertstoffhof", kind="disposal"),
        ]
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("start")
    @classmethod
    def _parsable_start(cls, value: str) -> str:
        parse_start(value, datetime(2000, 1, 1, tzinfo=UTC), UTC)
        return value

    @model_validator(mode="after")
    def _sites_fit_trucks(self) -> Self:
        ids = [s.id for s in self.sites]
        if len(set(ids)) != len(ids):
            raise ValueError(f"sites: ids must be unique, got {ids}")
        if self.trucks.count:
            kinds = {s.id: s.kind for s in self.sites}
            if kinds.get(self.trucks.depot) != "depot":
                raise ValueError(f"trucks.depot {self.trucks.depot!r} is not a site of kind depot")
            if "disposal" not in kinds.values():
                raise ValueError("trucks need at least one site of kind disposal")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def parse_start(text: str, now: datetime, zone: tzinfo = UTC) -> datetime:
    """The start time from 'now', 'now - 2 days' (also h, hours, m, minutes) or ISO 8601.

    An ISO time without offset is read in `zone`. Raises ValueError with a usage hint.
    """
    text = text.strip()
    match = _START_RE.match(text)
    if match:
        if match.group("n") is None:
            return now
        seconds = float(match.group("n")) * _UNIT_S[match.group("unit")[0].lower()]
        return now - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"start must be 'now', 'now - N days|hours|minutes' or ISO 8601, got {text!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


def bundled_scenarios() -> list[str]:
    """Names of the scenarios shipped with cityops."""
    folder = resources.files("cityops.simulators") / "scenarios"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Validate scenario YAML text, or raise ScenarioError naming every bad field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: must be a mapping of scenario fields")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (typo?)"
            lines.append(f"  {where}: {msg}")
        raise ScenarioError(f"{source}: invalid scenario:\n" + "\n".join(lines)) from None


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A bundled scenario by name (`demo`, `test`) or a YAML file by path."""
    text_name = str(name_or_path)
    path = Path(text_name)
    looks_like_path = isinstance(name_or_path, Path) or path.suffix in (".yaml", ".yml") or (
        "/" in text_name
    )
    if looks_like_path:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"cannot read scenario {path}: {exc.strerror or exc}") from None
        scenario = parse_scenario(text, str(path))
        if scenario.osm_file is not None and not scenario.osm_file.is_absolute():
            # A relative extract path means relative to the scenario file.
            scenario = scenario.model_copy(update={"osm_file": path.parent / scenario.osm_file})
        return scenario
    resource = resources.files("cityops.simulators") / "scenarios" / f"{text_name}.yaml"
    if not resource.is_file():
        names = ", ".join(bundled_scenarios())
        raise ScenarioError(
            f"unknown scenario {text_name!r}: bundled ones are {names}; "
            f"or give a path to a .yaml file"
        )
    logger.debug("loading bundled scenario %s", text_name)
    return parse_scenario(resource.read_text(encoding="utf-8"), f"scenario {text_name}")
