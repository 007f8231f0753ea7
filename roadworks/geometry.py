"""Geometry at the registry's edge: GeoJSON validation, the city frame, metric CRS.

Storage and the wire use WGS84 longitude/latitude (EPSG:4326, GeoJSON axis order).
Distances, buffers and areas are computed in a metric CRS: by default the ETRS89 / UTM
zone of the city (EPSG:25832 for Offenbach am Main, 25835 for the Helsinki demo extract),
where scale errors stay below 0.1 % across a city.

Validation names the field and the exact problem: wrong type, malformed or non-finite
coordinates, unclosed rings, empty, self-intersecting (with the place), outside the city
(and when swapping the axes would put it inside, that it looks like lat/lon order), too
many vertices.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from pyproj import Transformer
from shapely.geometry import shape

from cityops.ingest.districts import DistrictGrid, Districts
from cityops.roadworks.errors import InvalidGeometryError, PayloadTooLargeError

__all__ = [
    "DEFAULT_MAX_VERTICES",
    "BBox",
    "CityFrame",
    "DistrictGrid",
    "Projector",
    "check_geometry",
    "parse_geometry",
    "to_geojson",
    "utm_epsg",
]

Geometry = Any
#: Vertices one geometry may have; a street-works footprint needs a few dozen.
DEFAULT_MAX_VERTICES = 2000
_M_PER_DEG = math.pi / 180 * 6_371_008.8
_REASON_RE = re.compile(r"^(?P<what>[^\[]+)\[(?P<x>[-\d.e+]+) (?P<y>[-\d.e+]+)\]$")


@dataclass(frozen=True, slots=True)
class BBox:
    """A longitude/latitude box (GeoJSON bbox order)."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def __post_init__(self) -> None:
        if not (-180 <= self.min_lon < self.max_lon <= 180):
            raise ValueError(f"longitudes must satisfy -180 <= min < max <= 180: {self}")
        if not (-90 <= self.min_lat < self.max_lat <= 90):
            raise ValueError(f"latitudes must satisfy -90 <= min < max <= 90: {self}")

    def contains(self, geom: Geometry) -> bool:
        x0, y0, x1, y1 = geom.bounds
        return bool(
            self.min_lon <= x0 and x1 <= self.max_lon and self.min_lat <= y0 and y1 <= self.max_lat
        )

    def polygon(self) -> Geometry:
        return shapely.box(self.min_lon, self.min_lat, self.max_lon, self.max_lat)

    def expanded(self, metres: float) -> BBox:
        dlat = metres / _M_PER_DEG
        dlon = dlat / math.cos(math.radians((self.min_lat + self.max_lat) / 2))
        return BBox(self.min_lon - dlon, self.min_lat - dlat, self.max_lon + dlon,
                    self.max_lat + dlat)

    def describe(self) -> str:
        return (f"lon {self.min_lon:.4f}..{self.max_lon:.4f}, "
                f"lat {self.min_lat:.4f}..{self.max_lat:.4f}")


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the UTM zone at a position: ETRS89 (258zz) in Europe, else WGS84."""
    zone = min(60, max(1, int((lon + 180) // 6) + 1))
    if 28 <= zone <= 38 and 34 <= lat <= 72:
        return 25800 + zone
    return (32600 if lat >= 0 else 32700) + zone


@dataclass(frozen=True)
class Projector:
    """Transforms lon/lat geometries to a metric CRS and back."""

    epsg: int

    @cached_property
    def _forward(self) -> Transformer:
        return Transformer.from_crs(4326, self.epsg, always_xy=True)

    @cached_property
    def _inverse(self) -> Transformer:
        return Transformer.from_crs(self.epsg, 4326, always_xy=True)

    def to_metric(self, geom: Geometry) -> Geometry:
        return shapely.transform(geom, self._apply(self._forward))

    def to_lonlat(self, geom: Geometry) -> Geometry:
        return shapely.transform(geom, self._apply(self._inverse))

    def area_m2(self, geom: Geometry) -> float:
        return float(self.to_metric(geom).area)

    @staticmethod
    def _apply(tr: Transformer) -> Any:
        def fn(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            x, y = tr.transform(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

        return fn


@dataclass(frozen=True)
class CityFrame:
    """Where the city is: accepted bounds, metric CRS, districts (real or grid cells)."""

    bounds: BBox
    districts: Districts
    epsg: int | None = None  # None: the UTM zone of the bounds' centre
    max_vertices: int = DEFAULT_MAX_VERTICES
    projector: Projector = field(init=False)

    def __post_init__(self) -> None:
        epsg = self.epsg
        if epsg is None:
            epsg = utm_epsg((self.bounds.min_lon + self.bounds.max_lon) / 2,
                            (self.bounds.min_lat + self.bounds.max_lat) / 2)
        object.__setattr__(self, "projector", Projector(epsg))

    def district_of(self, geom: Geometry) -> str:
        p = geom.representative_point()
        return self.districts.district_of(float(p.x), float(p.y))


# -- validation ---------------------------------------------------------------------------

_DEPTH = {"Point": 1, "LineString": 2, "MultiPoint": 2, "Polygon": 3, "MultiLineString": 3,
          "MultiPolygon": 4}


def parse_geometry(
    obj: object, *, field: str, kinds: Collection[str], frame: CityFrame
) -> Geometry:
    """A GeoJSON geometry object, checked, as a 2D shapely geometry.

    Raises InvalidGeometryError (or PayloadTooLargeError for too many vertices) naming `field`.
    """
    if not isinstance(obj, Mapping):
        raise InvalidGeometryError(field, f"expected a GeoJSON geometry object, got {_kind(obj)}")
    gtype = obj.get("type")
    if gtype not in kinds:
        raise InvalidGeometryError(field, f"expected {_one_of(kinds)}, got {gtype!r}")
    assert isinstance(gtype, str)
    coords = obj.get("coordinates")
    if coords is None:
        raise InvalidGeometryError(field, "has no 'coordinates'")
    count = _check_positions(coords, _DEPTH[gtype], field)
    if count > frame.max_vertices:
        raise PayloadTooLargeError(
            field, f"has {count} positions, more than the limit of {frame.max_vertices}"
        )
    if gtype in ("Polygon", "MultiPolygon"):
        polygons = [coords] if gtype == "Polygon" else coords
        for p, rings in enumerate(polygons):
            for r, ring in enumerate(rings):
                where = f"ring {r}" if gtype == "Polygon" else f"polygon {p} ring {r}"
                if len(ring) < 4:
                    raise InvalidGeometryError(
                        field, f"{where} has {len(ring)} positions; a ring needs at least 4 "
                        "(the first repeated at the end)"
                    )
                if list(ring[0][:2]) != list(ring[-1][:2]):
                    raise InvalidGeometryError(
                        field, f"{where} is not closed: it starts at {_pos(ring[0])} but ends "
                        f"at {_pos(ring[-1])}"
                    )
    if gtype in ("LineString",) and len(coords) < 2:
        raise InvalidGeometryError(field, "a LineString needs at least 2 positions")
    try:
        geom = shape(obj)
    except (ValueError, TypeError, IndexError, AttributeError, shapely.errors.GEOSException) as exc:
        raise InvalidGeometryError(field, f"cannot be read: {exc}") from None
    return check_geometry(geom, field=field, kinds=kinds, frame=frame)


def check_geometry(
    geom: Geometry, *, field: str, kinds: Collection[str], frame: CityFrame
) -> Geometry:
    """Check a shapely geometry (lon/lat): type, not empty, in the city, valid, size."""
    if geom is None or geom.geom_type not in kinds:
        got = "nothing" if geom is None else geom.geom_type
        raise InvalidGeometryError(field, f"expected {_one_of(kinds)}, got {got}")
    if geom.is_empty:
        raise InvalidGeometryError(field, "is empty")
    geom = shapely.force_2d(geom)
    count = int(shapely.get_num_coordinates(geom))
    if count > frame.max_vertices:
        raise PayloadTooLargeError(
            field, f"has {count} positions, more than the limit of {frame.max_vertices}"
        )
    xy = shapely.get_coordinates(geom)
    if not np.isfinite(xy).all():
        raise InvalidGeometryError(field, "has coordinates that are not finite numbers")
    bounds = frame.bounds
    if not bounds.contains(geom):
        raise InvalidGeometryError(field, _outside_message(geom, xy, bounds))
    if geom.geom_type in ("LineString", "MultiLineString") and geom.length == 0:
        raise InvalidGeometryError(field, "has zero length (all positions are the same)")
    if not geom.is_valid:
        raise InvalidGeometryError(field, f"is not a valid {geom.geom_type}: "
                              f"{_reason(shapely.is_valid_reason(geom))}")
    return geom


def _outside_message(geom: Geometry, xy: npt.NDArray[np.float64], bounds: BBox) -> str:
    inside = (
        (xy[:, 0] >= bounds.min_lon) & (xy[:, 0] <= bounds.max_lon)
        & (xy[:, 1] >= bounds.min_lat) & (xy[:, 1] <= bounds.max_lat)
    )
    first_out = xy[int(np.flatnonzero(~inside)[0])]
    swapped = (
        (xy[:, 1] >= bounds.min_lon) & (xy[:, 1] <= bounds.max_lon)
        & (xy[:, 0] >= bounds.min_lat) & (xy[:, 0] <= bounds.max_lat)
    )
    where = f"outside the city bounds ({bounds.describe()})"
    if swapped.all():
        return (
            f"lies {where}; its coordinates look like (latitude, longitude), e.g. "
            f"{_pos(first_out)}, but GeoJSON expects (longitude, latitude): swap the two "
            "numbers of each position"
        )
    if (np.abs(xy[:, 0]) > 180).any() or (np.abs(xy[:, 1]) > 90).any():
        return (
            f"has position {_pos(first_out)} which is not longitude/latitude in degrees "
            "(EPSG:4326); projected coordinates (e.g. UTM metres) must be converted first"
        )
    n_out = int((~inside).sum())
    return f"lies {where}: {n_out} of {len(xy)} positions are outside, e.g. {_pos(first_out)}"


def _check_positions(coords: object, depth: int, field: str) -> int:
    """Walk nested coordinate arrays; count positions, reject anything but numbers."""
    if depth == 1:
        if not isinstance(coords, list | tuple) or len(coords) not in (2, 3):
            raise InvalidGeometryError(field, f"a position must be [longitude, latitude], got "
                                  f"{_short(coords)}")
        for v in coords:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise InvalidGeometryError(field, f"coordinates must be numbers, got {_short(v)}")
            if not math.isfinite(v):
                raise InvalidGeometryError(field, f"coordinates must be finite numbers, got {v}")
        return 1
    if not isinstance(coords, list | tuple):
        raise InvalidGeometryError(field, f"malformed coordinates: expected an array, got "
                              f"{_short(coords)}")
    if not coords:
        raise InvalidGeometryError(field, "is empty")
    return sum(_check_positions(c, depth - 1, field) for c in coords)


def _reason(reason: str) -> str:
    m = _REASON_RE.match(reason)
    if not m:
        return reason
    return f"{m['what'].strip().lower()} at ({float(m['x']):.6f}, {float(m['y']):.6f})"


def _pos(p: object) -> str:
    try:
        x, y = float(p[0]), float(p[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        return repr(p)
    return f"({x:.6g}, {y:.6g})"


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(v: object) -> str:
    return type(v).__name__


def _one_of(kinds: Collection[str]) -> str:
    names = sorted(kinds)
    return names[0] if len(names) == 1 else " or ".join(names)


def to_geojson(geom: Geometry, precision: int = 7) -> dict[str, Any]:
    """A shapely geometry as a GeoJSON geometry object with lists, rounded coordinates."""
    mapping = shapely.geometry.mapping(geom)
    return {"type": mapping["type"], "coordinates": _round(mapping["coordinates"], precision)}


def _round(value: Any, precision: int) -> Any:
    if isinstance(value, list | tuple):
        if value and isinstance(value[0], int | float):
            return [round(float(v), precision) for v in value]
        return [_round(v, precision) for v in value]
    return value
