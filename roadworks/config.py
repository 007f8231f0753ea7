"""Settings of the roadworks registry, from `CITYOPS_ROADWORKS_*` environment variables and
the city profile.

Built in each entry point next to `cityops.ingest.config.Settings` (which holds the
database URL) and passed down; `frame()` and `rules()` turn it into the domain's objects.
Where the city is (bounds, metric CRS, districts) and who publishes its feeds come from the
city profile (`cityops.ingest.city`, docs/city.md), never from a default: a city's own
bounds and Stadtteile, not the demo's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cityops.ingest.city import City, load_city
from cityops.ingest.config import ConfigError, load_settings
from cityops.ingest.districts import Districts
from cityops.roadworks.coordination import CoordinationRules
from cityops.roadworks.geometry import BBox, CityFrame

__all__ = ["RoadworksSettings", "load_roadworks_settings"]


class RoadworksSettings(BaseSettings):
    """Runtime configuration of the roadworks registry."""

    model_config = SettingsConfigDict(env_prefix="CITYOPS_ROADWORKS_", extra="ignore",
                                      frozen=True, arbitrary_types_allowed=True)

    # From the city profile (`for_city`): no defaults, so no city runs on another's.
    bounds: tuple[float, float, float, float] = Field(
        description="city bounds min_lon, min_lat, max_lon, max_lat: geometries outside "
        "are refused",
    )
    metric_epsg: int | None = Field(
        default=None, description="metric CRS for distances and areas; default: the ETRS89 "
        "/ UTM zone of the city (EPSG:25832 in Offenbach)",
    )
    districts: Any = Field(description="the city's districts (`Districts`)", exclude=True)
    publisher: str = Field(min_length=1)
    contact_name: str = Field(min_length=1)
    contact_email: str = Field(min_length=3)
    city_name: str = ""

    buffer_m: float = Field(default=10.0, ge=0, description="clash buffer between footprints")
    dig_once_window_days: int = Field(default=180, ge=0)
    dig_once_distance_m: float = Field(default=25.0, ge=0)
    protection_years: int = Field(default=5, ge=0, description="no digging after resurfacing")
    parallel_max_distance_m: float = Field(default=250.0, ge=0)
    parallel_max_angle_deg: float = Field(default=25.0, ge=0, le=90)

    max_payload_bytes: int = Field(default=256 * 1024, ge=1024)
    horizon_days: int = Field(default=14, ge=1, le=90, description="daily overview look-ahead")
    overview_dir: Path = Field(default=Path("var/roadworks/overviews"))

    data_source_id: str = "cityops-roadworks"
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="base of public links in feeds ({base}/roadworks/{reference})",
    )

    @field_validator("bounds")
    @classmethod
    def _check_bounds(cls, value: tuple[float, float, float, float]) -> tuple[float, ...]:
        BBox(*value)  # raises ValueError with the reason
        return value

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    def frame(self) -> CityFrame:
        districts: Districts = self.districts
        return CityFrame(BBox(*self.bounds), districts, self.metric_epsg)

    def rules(self) -> CoordinationRules:
        return CoordinationRules(
            buffer_m=self.buffer_m,
            dig_once_window_days=self.dig_once_window_days,
            dig_once_distance_m=self.dig_once_distance_m,
            protection_years=self.protection_years,
            parallel_max_distance_m=max(self.parallel_max_distance_m, 20.0),
            parallel_max_angle_deg=self.parallel_max_angle_deg,
        )


#: Former variables and fields of the city profile: refused, so that none is set in vain.
_FROM_PROFILE = frozenset(f"CITYOPS_ROADWORKS_{n}" for n in (
    "BOUNDS", "METRIC_EPSG", "DISTRICTS", "CITY_NAME", "PUBLISHER", "CONTACT_NAME",
    "CONTACT_EMAIL", "DISTRICT_NORTH", "DISTRICT_WEST", "DISTRICT_REF_LAT", "DISTRICT_CELL_M"))


def city_fields(city: City) -> dict[str, object]:
    """What the roadworks registry takes from the city profile."""
    return {
        "bounds": city.bounds,
        "metric_epsg": city.metric_epsg,
        "districts": city.districts,
        "publisher": city.publisher.name,
        "contact_name": city.publisher.contact_name,
        "contact_email": city.publisher.contact_email,
        "city_name": city.name,
    }


def load_roadworks_settings(city: City | None = None, **overrides: object) -> RoadworksSettings:
    """Settings for `city` (default: the profile of CITYOPS_CITY_PROFILE) from the
    environment, plus overrides; raise `ConfigError`."""
    if city is None:
        city = load_city(load_settings())
    moved = sorted(k for k in os.environ if k.upper() in _FROM_PROFILE)
    if moved:
        raise ConfigError(
            f"{', '.join(moved)}: the city's bounds, districts and publisher are set in the "
            f"city profile ({city.source}), not in the environment (docs/city.md); remove "
            "the variable"
        )
    try:
        return RoadworksSettings(**{**city_fields(city), **overrides})  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            lines.append(f"  CITYOPS_ROADWORKS_{name.upper()}: {err['msg']}")
        raise ConfigError("invalid roadworks configuration:\n" + "\n".join(lines)) from None
