"""What every roadworks route depends on: `RoadworksApi` (settings, the map's settings,
the service with its clock, the cache of rendered responses), the dependencies that hand
it and the connection pool to a route, the parameters the public routes share, and
`respond` (a rendered response, or 304 when the client has it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Final

import xstatic.pkg.leaflet  # type: ignore[import-untyped]
from fastapi import Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from psycopg_pool import ConnectionPool
from pydantic import Field, StringConstraints, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cityops.api.errors import InvalidParameterError
from cityops.api.roadworks.cache import Rendered, RoadworksCache
from cityops.api.schemas import STORABLE, parse_bbox
from cityops.ingest.city import City
from cityops.ingest.config import ConfigError
from cityops.roadworks.config import RoadworksSettings, load_roadworks_settings
from cityops.roadworks.feeds.common import FeedContext
from cityops.roadworks.geometry import BBox
from cityops.roadworks.labels import BERLIN, street_key
from cityops.roadworks.service import RoadworksService
from cityops.roadworks.validation import LIMITS

__all__ = [
    "LEAFLET_DIR",
    "STATIC_DIR",
    "BBoxParam",
    "Ctx",
    "MapSettings",
    "Pool",
    "Reference",
    "RoadworksApi",
    "StreetParam",
    "parse_area",
    "parse_street",
    "respond",
    "roadworks_api",
]

logger = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
#: The map page's own CSS and JavaScript, served at /static/roadworks.
STATIC_DIR: Final = _HERE / "static"


#: leaflet.js, leaflet.css and images/ from the XStatic-Leaflet package (/static/leaflet).
LEAFLET_DIR: Final = Path(xstatic.pkg.leaflet.BASE_DIR)

_REFERENCE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class MapSettings(BaseSettings):
    """The map page's base layer and search hint: the city profile's `map`, unless
    `CITYOPS_ROADWORKS_MAP_*` names another tile server. Without a tile URL the page draws
    the works on a plain background (it needs no internet access)."""

    model_config = SettingsConfigDict(
        env_prefix="CITYOPS_ROADWORKS_MAP_", extra="ignore", frozen=True
    )

    tile_url: str = Field(
        default="", description="e.g. https://tile.example.org/{z}/{x}/{y}.png; empty: no base map"
    )
    tile_attribution: str = Field(default="", description="shown on the map (licence!)")
    tile_max_zoom: int = Field(default=19, ge=1, le=22)
    search_example: str = Field(default="", max_length=80, description="a street of the city")

    @field_validator("tile_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("https://", "http://", "/")):
            raise ValueError(f"must be empty or an http(s) URL or a path, got {value!r}")
        if value and not all(p in value for p in ("{z}", "{x}", "{y}")):
            raise ValueError(f"must contain {{z}}, {{x}} and {{y}}, got {value!r}")
        return value


@dataclass(frozen=True)
class RoadworksApi:
    """What the roadworks routes need: settings and the service (with its clock)."""

    settings: RoadworksSettings
    map: MapSettings
    service: RoadworksService
    cache: RoadworksCache = field(default_factory=RoadworksCache, compare=False)

    @classmethod
    def for_city(cls, city: City) -> RoadworksApi:
        """For the city of its profile, with `CITYOPS_ROADWORKS_*`; raises ConfigError
        naming each bad variable."""
        settings = load_roadworks_settings(city)
        try:
            map_settings = MapSettings()
        except ValidationError as exc:
            lines = [
                f"  CITYOPS_ROADWORKS_MAP_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                for e in exc.errors()
            ]
            raise ConfigError("invalid map configuration:\n" + "\n".join(lines)) from None
        updates: dict[str, object] = {}
        if not map_settings.tile_url and city.tile_url:  # no other tile server set here
            updates |= {"tile_url": city.tile_url, "tile_attribution": city.tile_attribution}
        if not map_settings.search_example:
            updates["search_example"] = city.search_example
        map_settings = map_settings.model_copy(update=updates)
        logger.info(
            "roadworks API for bounds %s, public base %s, base map %s",
            settings.bounds,
            settings.public_base_url,
            map_settings.tile_url or "none (plain background)",
        )
        return cls(settings, map_settings, RoadworksService.from_settings(settings))

    def now(self) -> datetime:
        return self.service.clock()

    def today(self) -> date:
        return self.now().astimezone(BERLIN).date()

    def feed_context(self) -> FeedContext:
        return FeedContext.from_settings(self.settings, self.now())


def roadworks_api(request: Request) -> RoadworksApi:
    """The app's `RoadworksApi` (tests override this dependency)."""
    ctx: RoadworksApi = request.app.state.roadworks
    return ctx


def _pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.pool
    return pool


Ctx = Annotated[RoadworksApi, Depends(roadworks_api)]
Pool = Annotated[ConnectionPool, Depends(_pool)]
Reference = Annotated[str, PathParam(pattern=_REFERENCE, description="e.g. RW-2025-00042")]
BBoxParam = Annotated[
    str | None,
    Query(
        description="min_lon,min_lat,max_lon,max_lat (WGS84): works whose footprint intersects",
        examples=["24.93,60.16,24.96,60.18"],
    ),
]
StreetParam = Annotated[
    Annotated[str, StringConstraints(min_length=1, max_length=LIMITS.short_text), STORABLE]
    | None,
    Query(description="an affected street (case, spaces, 'Str.'/'Straße' do not matter)"),
]


def parse_area(text: str | None) -> BBox | None:
    """The `bbox` parameter as the registry's box."""
    if text is None:
        return None
    b = parse_bbox(text)
    return BBox(b.min_lon, b.min_lat, b.max_lon, b.max_lat)


def parse_street(text: str | None) -> str | None:
    if text is None:
        return None
    if not street_key(text):
        raise InvalidParameterError("street", "must name a street, not only spaces")
    return text




def respond(request: Request, rendered: Rendered) -> Response:
    """`rendered`, or `304 Not Modified` when the request names its ETag."""
    headers = {"ETag": rendered.etag, **dict(rendered.headers)}
    match = request.headers.get("if-none-match")
    if match and (match.strip() == "*" or rendered.etag in [t.strip() for t in match.split(",")]):
        return Response(status_code=304, headers=headers)
    return Response(content=rendered.body, media_type=rendered.media_type, headers=headers)
