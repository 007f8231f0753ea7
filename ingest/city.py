"""The city profile: one YAML file with everything that makes a city.

Name, time zone, bounds, metric CRS, districts (a GeoJSON of real boundaries, or grid cells
as the fallback), the OpenStreetMap extract, depots and disposal sites, the publisher of the
open-data feeds, and the public map's base layer. Every service reads it from
`CITYOPS_CITY_PROFILE` (a path, or the name of a bundled profile: `demo`); no setting of
a service defaults to a value of the demo city.

`read_profile` validates a file and reports every problem with its line and column
(`cityops city check FILE`). The demo city is a profile like any other, marked `demo: true`;
`load_city` refuses it unless `CITYOPS_ALLOW_DEMO_CITY=1` (which `cityops demo` and the
test suite set), so that a production start cannot silently run on the demo's Helsinki
bounds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cityops.ingest.config import ConfigError, Settings
from cityops.ingest.contract import DEVICE_ID_PATTERN
from cityops.ingest.districts import DistrictGrid, Districts, DistrictsError, read_districts
from cityops.ingest.yamlpos import YamlError, locate, parse_located

__all__ = [
    "BUNDLED",
    "City",
    "CityProblem",
    "CityProfileError",
    "Publisher",
    "Site",
    "announce_city",
    "bundled_profile",
    "describe",
    "load_city",
    "profile_path",
    "read_profile",
]

logger = logging.getLogger(__name__)

#: `osm_extract: bundled`: the small extract shipped with the platform (the demo's).
BUNDLED = "bundled"
_MODEL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_Name = Annotated[str, Field(min_length=1, max_length=120)]


@dataclass(frozen=True, slots=True)
class CityProblem:
    """One thing wrong in a profile, where it is (1-based) and what."""

    line: int
    column: int
    where: str
    message: str

    def render(self, source: str) -> str:
        return f"{source}:{self.line}:{self.column}: {self.where}: {self.message}"


class CityProfileError(ConfigError):
    """A profile that cannot be used; `problems` lists each with its place."""

    def __init__(self, source: str, problems: list[CityProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p.render(source)}" for p in problems)
        super().__init__(f"invalid city profile {source}:\n{lines}")


@dataclass(frozen=True, slots=True)
class Site:
    site_id: str
    name: str
    kind: str  # depot | disposal
    lon: float
    lat: float


@dataclass(frozen=True, slots=True)
class Publisher:
    name: str
    contact_name: str
    contact_email: str


@dataclass(frozen=True)
class City:
    """A validated city profile, with its districts read and paths resolved."""

    name: str
    timezone: ZoneInfo
    bounds: tuple[float, float, float, float]  # min_lon, min_lat, max_lon, max_lat
    metric_epsg: int | None
    districts: Districts
    osm_extract: Path | None  # None: the bundled extract
    sites: tuple[Site, ...]
    publisher: Publisher
    tile_url: str
    tile_attribution: str
    search_example: str
    demo: bool
    source: str
    #: sensor models the network server decodes: model -> FieldMapping.parse spec
    lorawan_mappings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def contains(self, lon: float, lat: float) -> bool:
        min_lon, min_lat, max_lon, max_lat = self.bounds
        return min_lon <= lon <= max_lon and min_lat <= lat <= max_lat


# -- the file format (pydantic at the edge) -----------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Grid(_Section):
    cell_m: float = Field(default=500.0, ge=50.0, le=20_000.0)
    north: float | None = Field(default=None, ge=-90, le=90, description="default: bounds")
    west: float | None = Field(default=None, ge=-180, le=180, description="default: bounds")
    ref_lat: float | None = Field(default=None, ge=-90, le=90)


class _Districts(_Section):
    geojson: Path | None = Field(default=None, description="relative to the profile")
    name_property: str = Field(default="name", min_length=1)
    grid: _Grid | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.geojson is None) == (self.grid is None):
            raise ValueError("give either geojson (real boundaries) or grid (cells), not both")
        return self


class _SiteIn(_Section):
    id: str = Field(pattern=DEVICE_ID_PATTERN, description="as the registry's site_id")
    name: _Name
    kind: Literal["depot", "disposal"]
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)


class _PublisherIn(_Section):
    name: _Name
    contact_name: _Name
    contact_email: str = Field(max_length=254)

    @field_validator("contact_email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not _EMAIL.match(value):
            raise ValueError(f"must be an e-mail address, got {value[:60]!r}")
        return value


class _MapIn(_Section):
    tile_url: str = Field(default="", max_length=500)
    tile_attribution: str = Field(default="", max_length=500)
    search_example: str = Field(default="", max_length=80)

    @field_validator("tile_url")
    @classmethod
    def _template(cls, value: str) -> str:
        if value and not (value.startswith(("https://", "http://", "/"))
                          and all(k in value for k in ("{z}", "{x}", "{y}"))):
            raise ValueError("must be an http(s) or /path URL template with {z}, {x} and {y}")
        return value

    @model_validator(mode="after")
    def _credit(self) -> Self:
        if self.tile_url and not self.tile_attribution.strip():
            raise ValueError("tile_attribution is required with tile_url (the tiles' licence)")
        return self


class _LorawanIn(_Section):
    mappings: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="sensor models decoded by the network server: per model, where each "
        "reading field sits in the server's decoded object (docs/devices.md)",
    )

    @field_validator("mappings")
    @classmethod
    def _mappings(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        from cityops.ingest.codecs import CODECS, FieldMapping

        for model, spec in value.items():
            if not _MODEL.match(model):
                raise ValueError(f"model name {model[:40]!r}: lowercase letters, digits, "
                                 "'.', '_', '-'")
            if model in CODECS:
                raise ValueError(f"{model} is a built-in codec; name the mapping otherwise")
            try:
                mapping = FieldMapping.parse(spec)
            except ValueError as exc:
                raise ValueError(f"{model}: {exc}") from None
            if "distance_mm" not in {target for target, _steps, _f in mapping.fields}:
                raise ValueError(f"{model}: the mapping needs distance_mm")
        return value


class _Profile(_Section):
    name: _Name
    demo: bool = False
    timezone: str = "Europe/Berlin"
    bounds: tuple[float, float, float, float] = Field(
        description="min_lon, min_lat, max_lon, max_lat in WGS84"
    )
    metric_epsg: int | None = None
    districts: _Districts = Field(default_factory=lambda: _Districts(grid=_Grid()))
    osm_extract: str = Field(min_length=1, description="path relative to the profile")
    sites: list[_SiteIn] = Field(min_length=1)
    publisher: _PublisherIn
    map: _MapIn = Field(default_factory=_MapIn)
    lorawan: _LorawanIn = Field(default_factory=_LorawanIn)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Berlin)") from None
        return value

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, value: tuple[float, float, float, float]) -> tuple[float, ...]:
        min_lon, min_lat, max_lon, max_lat = value
        if not (-180 <= min_lon < max_lon <= 180 and -90 <= min_lat < max_lat <= 90):
            raise ValueError(
                "must be [min_lon, min_lat, max_lon, max_lat] in degrees with min < max "
                "(longitude first)"
            )
        if max_lon - min_lon > 2 or max_lat - min_lat > 2:
            raise ValueError("spans more than 2 degrees: a city, not a region")
        return value

    @field_validator("metric_epsg")
    @classmethod
    def _metric(cls, value: int | None) -> int | None:
        if value is None:
            return None
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            crs = CRS.from_epsg(value)
        except CRSError:
            raise ValueError(f"EPSG:{value} is not a known coordinate system") from None
        units = {axis.unit_name for axis in crs.axis_info}
        if not crs.is_projected or units != {"metre"}:
            raise ValueError(f"EPSG:{value} is not a projected CRS in metres (e.g. 25832)")
        return value

    @field_validator("osm_extract")
    @classmethod
    def _extract(cls, value: str, info: ValidationInfo) -> str:
        if value == BUNDLED:
            return value
        path = _resolve(Path(value), info)
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        return value

    @model_validator(mode="after")
    def _inside(self, info: ValidationInfo) -> Self:
        min_lon, min_lat, max_lon, max_lat = self.bounds
        ids = [s.id for s in self.sites]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"sites: ids must be unique, {', '.join(dupes)} occur twice")
        for site in self.sites:
            if not (min_lon <= site.lon <= max_lon and min_lat <= site.lat <= max_lat):
                raise ValueError(
                    f"sites: {site.id} at lon {site.lon}, lat {site.lat} is outside the bounds"
                )
        if not any(s.kind == "depot" for s in self.sites):
            raise ValueError("sites: at least one depot is needed (trucks start there)")
        return self


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base")
    return path if path.is_absolute() or base is None else Path(base) / path


# -- reading -------------------------------------------------------------------------------


def bundled_profile(name: str) -> Path | None:
    """The path of a profile shipped with cityops (`demo`), or None."""
    resource = resources.files("cityops.ingest") / "cities" / name / "city.yaml"
    return Path(str(resource)) if resource.is_file() else None


def read_profile(path: Path) -> City:
    """Read and validate a profile; raise CityProfileError with every problem located."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
        raise CityProfileError(
            source, [CityProblem(1, 1, "(file)", f"cannot read: {reason}")]
        ) from None
    try:
        doc = parse_located(text)
    except YamlError as exc:
        raise CityProfileError(
            source, [CityProblem(exc.line, exc.column, "(file)", str(exc))]
        ) from None
    if not isinstance(doc.data, dict):
        raise CityProfileError(
            source, [CityProblem(1, 1, "(top level)", "must be a mapping of profile keys")]
        )
    try:
        profile = _Profile.model_validate(doc.data, context={"base": path.parent})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line, column = locate(doc.root, loc)
            message = "unknown key (typo?)" if err["type"] == "extra_forbidden" else err["msg"]
            message = message.removeprefix("Value error, ")
            where = ".".join(str(p) for p in loc) or "(top level)"
            problems.append(CityProblem(line, column, where, message))
        raise CityProfileError(source, problems) from None
    try:
        districts = _districts(profile, path.parent)
    except DistrictsError as exc:
        line, column = locate(doc.root, ("districts", "geojson"))
        raise CityProfileError(
            source, [CityProblem(line, column, "districts.geojson", str(exc))]
        ) from None
    return _city(profile, districts, path)


def _districts(profile: _Profile, base: Path) -> Districts:
    d = profile.districts
    if d.geojson is not None:
        path = d.geojson if d.geojson.is_absolute() else base / d.geojson
        return read_districts(path, d.name_property)
    grid = d.grid or _Grid()
    min_lon, min_lat, _max_lon, max_lat = profile.bounds
    return DistrictGrid(
        north=max_lat if grid.north is None else grid.north,
        west=min_lon if grid.west is None else grid.west,
        cell_m=grid.cell_m,
        ref_lat=(min_lat + max_lat) / 2 if grid.ref_lat is None else grid.ref_lat,
    )


def _city(profile: _Profile, districts: Districts, path: Path) -> City:
    extract = None if profile.osm_extract == BUNDLED else Path(profile.osm_extract)
    if extract is not None and not extract.is_absolute():
        extract = (path.parent / extract).resolve()
    m = profile.map
    return City(
        name=profile.name,
        timezone=ZoneInfo(profile.timezone),
        bounds=profile.bounds,
        metric_epsg=profile.metric_epsg,
        districts=districts,
        osm_extract=extract,
        sites=tuple(Site(s.id, s.name, s.kind, s.lon, s.lat) for s in profile.sites),
        publisher=Publisher(
            profile.publisher.name, profile.publisher.contact_name,
            profile.publisher.contact_email,
        ),
        tile_url=m.tile_url,
        tile_attribution=m.tile_attribution,
        search_example=m.search_example,
        demo=profile.demo,
        source=str(path),
        lorawan_mappings=profile.lorawan.mappings,
    )


def profile_path(name_or_path: str) -> Path:
    """A bundled profile by name, else the path as given."""
    if "/" not in name_or_path and not name_or_path.endswith((".yaml", ".yml")):
        bundled = bundled_profile(name_or_path)
        if bundled is not None:
            return bundled
    return Path(name_or_path)


def load_city(settings: Settings, *, demo_ok: bool | None = None) -> City:
    """The city this installation serves, from CITYOPS_CITY_PROFILE.

    Raises ConfigError when no profile is set, when it is invalid, or when it is the demo
    city's and neither CITYOPS_ALLOW_DEMO_CITY nor `demo_ok` allows it.
    """
    if settings.city_profile is None:
        raise ConfigError(
            "no city profile: set CITYOPS_CITY_PROFILE to your city's profile (docs/city.md; "
            "`cityops city check FILE` validates one), or to `demo` for the demo city"
        )
    city = read_profile(profile_path(settings.city_profile))
    allowed = settings.allow_demo_city if demo_ok is None else demo_ok
    if city.demo and not allowed:
        raise ConfigError(
            f"{city.source} is the demo city's profile ({city.name}): a production start "
            "refuses it. Set CITYOPS_CITY_PROFILE to your city's profile, or "
            "CITYOPS_ALLOW_DEMO_CITY=1 to run the demo city on purpose"
        )
    return city


def describe(city: City) -> dict[str, Any]:
    """A summary for `cityops city check` and start-up logs."""
    return {
        "name": city.name,
        "timezone": str(city.timezone),
        "bounds": list(city.bounds),
        "metric_epsg": city.metric_epsg,
        "districts": city.districts.describe(),
        "osm_extract": str(city.osm_extract) if city.osm_extract else "bundled (demo extract)",
        "sites": [f"{s.site_id} ({s.kind}) {s.name}" for s in city.sites],
        "publisher": city.publisher.name,
        "demo": city.demo,
    }


def announce_city(settings: Settings, service: str) -> City:
    """`load_city` for a service's start, logged: which city, from which profile."""
    city = load_city(settings)
    logger.info("%s for %s (city profile %s; districts: %s)%s", service, city.name,
                city.source, city.districts.describe(), " DEMO CITY" if city.demo else "")
    return city
