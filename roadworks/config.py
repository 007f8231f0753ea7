"""Settings of the roadworks registry, from `CITYOPS_ROADWORKS_*` environment variables.

Built in each entry point next to `cityops.ingest.config.Settings` (which holds the
database URL) and passed down; `frame()` and `rules()` turn it into the domain's objects.
The defaults describe the demo city: the street network bundled with the platform (see
`cityops.routing.network.default_extract`) with a 1 km margin, districts as 500 m grid
cells named like the simulators' (`A1`, `B3`, ...). For Offenbach am Main one would set
e.g. `CITYOPS_ROADWORKS_BOUNDS='[8.70, 50.06, 8.84, 50.13]'` and the district grid's corner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cityops.ingest.config import ConfigError
from cityops.roadworks.coordination import CoordinationRules
from cityops.roadworks.geometry import BBox, CityFrame, DistrictGrid

__all__ = ["DEMO_EXTRACT_BBOX", "RoadworksSettings", "load_roadworks_settings"]

#: (min_lat, min_lon, max_lat, max_lon) of the bundled street network (RoadNetwork.bbox).
DEMO_EXTRACT_BBOX: Final = (60.1641581, 24.9352471, 60.1790146, 24.9534053)
_DEMO = BBox(DEMO_EXTRACT_BBOX[1], DEMO_EXTRACT_BBOX[0], DEMO_EXTRACT_BBOX[3],
             DEMO_EXTRACT_BBOX[2]).expanded(1000)


class RoadworksSettings(BaseSettings):
    """Runtime configuration of the roadworks registry."""

    model_config = SettingsConfigDict(env_prefix="CITYOPS_ROADWORKS_", extra="ignore",
                                      frozen=True)

    bounds: tuple[float, float, float, float] = Field(
        default=(round(_DEMO.min_lon, 4), round(_DEMO.min_lat, 4), round(_DEMO.max_lon, 4),
                 round(_DEMO.max_lat, 4)),
        description="city bounds min_lon, min_lat, max_lon, max_lat: geometries outside "
        "are refused",
    )
    metric_epsg: int | None = Field(
        default=None, description="metric CRS for distances and areas; default: the ETRS89 "
        "/ UTM zone of the city (EPSG:25832 in Offenbach)",
    )
    district_north: float = DEMO_EXTRACT_BBOX[2]
    district_west: float = DEMO_EXTRACT_BBOX[1]
    district_ref_lat: float | None = (DEMO_EXTRACT_BBOX[0] + DEMO_EXTRACT_BBOX[2]) / 2
    district_cell_m: float = Field(default=500.0, gt=0)

    buffer_m: float = Field(default=10.0, ge=0, description="clash buffer between footprints")
    dig_once_window_days: int = Field(default=180, ge=0)
    dig_once_distance_m: float = Field(default=25.0, ge=0)
    protection_years: int = Field(default=5, ge=0, description="no digging after resurfacing")
    parallel_max_distance_m: float = Field(default=250.0, ge=0)
    parallel_max_angle_deg: float = Field(default=25.0, ge=0, le=90)

    max_payload_bytes: int = Field(default=256 * 1024, ge=1024)
    horizon_days: int = Field(default=14, ge=1, le=90, description="daily overview look-ahead")
    overview_dir: Path = Field(default=Path("var/roadworks/overviews"))

    publisher: str = "Stadtverwaltung – Baustellenkoordination (cityops Demo)"
    contact_name: str = "Baustellenkoordination"
    contact_email: str = "baustellen@example.org"
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
        grid = DistrictGrid(self.district_north, self.district_west, self.district_cell_m,
                            self.district_ref_lat)
        return CityFrame(BBox(*self.bounds), grid, self.metric_epsg)

    def rules(self) -> CoordinationRules:
        return CoordinationRules(
            buffer_m=self.buffer_m,
            dig_once_window_days=self.dig_once_window_days,
            dig_once_distance_m=self.dig_once_distance_m,
            protection_years=self.protection_years,
            parallel_max_distance_m=max(self.parallel_max_distance_m, 20.0),
            parallel_max_angle_deg=self.parallel_max_angle_deg,
        )


def load_roadworks_settings(**overrides: object) -> RoadworksSettings:
    """Build settings from the environment (plus overrides) or raise `ConfigError`."""
    try:
        return RoadworksSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            lines.append(f"  CITYOPS_ROADWORKS_{name.upper()}: {err['msg']}")
        raise ConfigError("invalid roadworks configuration:\n" + "\n".join(lines)) from None
