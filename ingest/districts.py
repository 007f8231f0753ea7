"""A city's districts: the real boundaries from a GeoJSON file, or map grid cells.

Both answer `district_of(lon, lat)` with a name. Real districts (Stadtteile) come from the
city profile's GeoJSON (`cityops.ingest.city`); the grid (Planquadrate of `cell_m` metres,
lettered west to east, numbered north to south) is the fallback for a city that has none
at hand, and what the demo city uses.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import shapely
from shapely.geometry import shape
from shapely.strtree import STRtree

__all__ = ["DistrictGrid", "DistrictMap", "Districts", "DistrictsError", "read_districts"]

_M_PER_DEG = math.pi / 180 * 6_371_008.8
#: A point outside every polygon (a site on the city line) still gets the nearest district
#: when it lies within this many degrees (about 500 m); farther out it is "outside".
_NEAREST_DEG = 0.005
OUTSIDE = "außerhalb"


class Districts(Protocol):
    def district_of(self, lon: float, lat: float) -> str: ...

    def describe(self) -> str: ...


class DistrictsError(ValueError):
    """A districts file that cannot be used; the message names the file and the feature."""


@dataclass(frozen=True, slots=True)
class DistrictGrid:
    """Districts as map grid cells named `A1`, `B3`, ...: columns lettered west to east
    from `west`, rows numbered north to south from `north`."""

    north: float
    west: float
    cell_m: float = 500.0
    ref_lat: float | None = None  # latitude of the east-west scale; default `north`

    def district_of(self, lon: float, lat: float) -> str:
        ref = self.north if self.ref_lat is None else self.ref_lat
        cos_lat = math.cos(math.radians(ref))
        col = max(0, int((lon - self.west) * _M_PER_DEG * cos_lat // self.cell_m))
        row = max(0, int((self.north - lat) * _M_PER_DEG // self.cell_m))
        letters = ""
        col += 1
        while col:
            col, rem = divmod(col - 1, 26)
            letters = chr(ord("A") + rem) + letters
        return f"{letters}{row + 1}"

    def describe(self) -> str:
        return f"grid cells of {self.cell_m:g} m from {self.north:.5f} N, {self.west:.5f} E"


@dataclass(frozen=True)
class DistrictMap:
    """Named district polygons (WGS84). A point belongs to the polygon that contains it;
    on a shared border, the first in file order; just outside all of them, the nearest."""

    names: tuple[str, ...]
    polygons: tuple[Any, ...]
    _tree: STRtree = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.names or len(self.names) != len(self.polygons):
            raise DistrictsError("a district map needs one name per polygon, and at least one")
        for polygon in self.polygons:
            shapely.prepare(polygon)
        object.__setattr__(self, "_tree", STRtree(list(self.polygons)))

    def district_of(self, lon: float, lat: float) -> str:
        point = shapely.Point(lon, lat)
        hits = self._tree.query(point, predicate="intersects")
        if len(hits):
            return self.names[int(min(hits))]
        nearest = self._tree.query_nearest(point, max_distance=_NEAREST_DEG)
        if len(nearest):
            return self.names[int(min(nearest))]
        return OUTSIDE

    def describe(self) -> str:
        shown = ", ".join(self.names[:4]) + (", ..." if len(self.names) > 4 else "")
        return f"{len(self.names)} districts ({shown})"


def read_districts(path: Path, name_property: str = "name") -> DistrictMap:
    """The districts of a GeoJSON FeatureCollection of (Multi)Polygons in WGS84, named by
    each feature's `name_property`. Raises DistrictsError naming the feature at fault."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise DistrictsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise DistrictsError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise DistrictsError(f"{path}: must be a GeoJSON FeatureCollection")
    features = data.get("features")
    if not isinstance(features, list) or not features:
        raise DistrictsError(f"{path}: has no features")
    names: list[str] = []
    polygons: list[Any] = []
    for i, feature in enumerate(features, start=1):
        where = f"{path}: feature {i}"
        name, polygon = _feature(feature, name_property, where)
        if name in names:
            raise DistrictsError(f"{where}: district name {name!r} occurs twice")
        names.append(name)
        polygons.append(polygon)
    return DistrictMap(tuple(names), tuple(polygons))


def _feature(feature: object, name_property: str, where: str) -> tuple[str, Any]:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise DistrictsError(f"{where}: not a GeoJSON Feature")
    props = feature.get("properties") or {}
    name = props.get(name_property) if isinstance(props, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise DistrictsError(f"{where}: property {name_property!r} must be a non-empty name")
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
        raise DistrictsError(f"{where} ({name}): geometry must be a Polygon or MultiPolygon")
    try:
        polygon = shape(geometry)
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DistrictsError(f"{where} ({name}): malformed geometry: {exc}") from None
    if polygon.is_empty or not polygon.is_valid:
        reason = shapely.is_valid_reason(polygon)
        raise DistrictsError(f"{where} ({name}): invalid polygon: {reason}")
    lon_min, lat_min, lon_max, lat_max = polygon.bounds
    if not (lon_min >= -180 and lon_max <= 180 and lat_min >= -90 and lat_max <= 90):
        raise DistrictsError(
            f"{where} ({name}): coordinates are not WGS84 longitude/latitude "
            "(a projected file? export it as EPSG:4326)"
        )
    return name.strip(), polygon

