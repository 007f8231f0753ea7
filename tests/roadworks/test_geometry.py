"""Geometry validation at the edge: every bad input gets a precise message."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from shapely.geometry import Polygon

from cityops.roadworks.config import load_roadworks_settings
from cityops.roadworks.errors import InvalidGeometryError, PayloadTooLargeError
from cityops.roadworks.geometry import (
    BBox,
    CityFrame,
    DistrictGrid,
    check_geometry,
    parse_geometry,
    to_geojson,
    utm_epsg,
)
from cityops.simulators.city import district_of
from tests.roadworks.factories import FRAME, make_spec

POLY = ("Polygon", "MultiPolygon")


def _square(lon: float = 24.945, lat: float = 60.170, d: float = 0.0005) -> dict[str, Any]:
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def _parse(obj: object, kinds: tuple[str, ...] = POLY, frame: CityFrame = FRAME) -> Any:
    return parse_geometry(obj, field="footprint", kinds=kinds, frame=frame)


def test_a_good_polygon() -> None:
    geom = _parse(_square())
    assert geom.geom_type == "Polygon"
    assert geom.is_valid
    assert FRAME.projector.area_m2(geom) == pytest.approx(55.7 * 27.8, rel=0.02)
    assert to_geojson(geom)["coordinates"][0][0] == [24.945, 60.17]
    # a third coordinate (altitude) is accepted and dropped
    ring = [[*p, 12.0] for p in _square()["coordinates"][0]]
    assert not _parse({"type": "Polygon", "coordinates": [ring]}).has_z


@pytest.mark.parametrize(("obj", "message"), [
    ("POLYGON((0 0, 1 0, 1 1, 0 0))", "footprint: expected a GeoJSON geometry object, got str"),
    ({"type": "Point", "coordinates": [24.94, 60.17]},
     "footprint: expected MultiPolygon or Polygon, got 'Point'"),
    ({"type": "Polygon"}, "footprint: has no 'coordinates'"),
    ({"type": "Polygon", "coordinates": []}, "footprint: is empty"),
    ({"type": "Polygon", "coordinates": [[]]}, "footprint: is empty"),
    ({"type": "Polygon", "coordinates": [[[24.94, 60.17], [24.95, "60.17"], [24.95, 60.18],
                                          [24.94, 60.17]]]},
     "footprint: coordinates must be numbers, got '60.17'"),
    ({"type": "Polygon", "coordinates": [[[24.94, 60.17], [24.95, math.nan], [24.95, 60.18],
                                          [24.94, 60.17]]]},
     "footprint: coordinates must be finite numbers, got nan"),
    ({"type": "Polygon", "coordinates": [[[24.94, 60.17], [24.95], [24.95, 60.18],
                                          [24.94, 60.17]]]},
     "footprint: a position must be [longitude, latitude], got [24.95]"),
    ({"type": "Polygon", "coordinates": [[[24.94, 60.17], [24.95, 60.17], [24.94, 60.17]]]},
     "footprint: ring 0 has 3 positions; a ring needs at least 4"),
    ({"type": "Polygon", "coordinates": [[[24.94, 60.17], [24.95, 60.17], [24.95, 60.18],
                                          [24.94, 60.18]]]},
     "footprint: ring 0 is not closed: it starts at (24.94, 60.17) but ends at (24.94, 60.18)"),
])
def test_malformed_geometries(obj: object, message: str) -> None:
    with pytest.raises(InvalidGeometryError) as err:
        _parse(obj)
    assert err.value.message.startswith(message)
    assert err.value.field == "footprint"
    assert err.value.code == "invalid_geometry"


def test_self_intersection_names_the_place() -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[24.940, 60.170], [24.942, 60.172],
                                                  [24.942, 60.170], [24.940, 60.172],
                                                  [24.940, 60.170]]]}
    with pytest.raises(InvalidGeometryError, match=r"footprint: is not a valid Polygon: "
                       r"self-intersection at \(24\.941000, 60\.171000\)"):
        _parse(bowtie)


def test_outside_the_city() -> None:
    frankfurt = _square(8.68, 50.11)
    with pytest.raises(InvalidGeometryError,
                       match=r"lies outside the city bounds \(lon 24\.9172\.\."
                       r"24\.9715, lat 60\.1552\.\.60\.1880\): 5 of 5 positions are outside"):
        _parse(frankfurt)


def test_swapped_coordinates_are_recognised() -> None:
    swapped = _square()
    swapped["coordinates"] = [[[lat, lon] for lon, lat in swapped["coordinates"][0]]]
    with pytest.raises(InvalidGeometryError, match=r"look like \(latitude, longitude\), e\.g\. "
                       r"\(60\.17, 24\.945\), but GeoJSON expects \(longitude, latitude\)"):
        _parse(swapped)


def test_projected_coordinates_are_recognised() -> None:
    utm = {"type": "LineString", "coordinates": [[386000, 6671900], [386050, 6671900]]}
    with pytest.raises(InvalidGeometryError, match="not longitude/latitude in degrees"):
        _parse(utm, kinds=("LineString",))


def test_too_many_vertices() -> None:
    small = CityFrame(FRAME.bounds, FRAME.districts, max_vertices=50)
    circle = Polygon([(24.945 + 0.001 * math.cos(a / 10), 60.17 + 0.0005 * math.sin(a / 10))
                      for a in range(63)])
    with pytest.raises(PayloadTooLargeError, match="has 64 positions, more than the limit of 50"):
        _parse(to_geojson(circle), frame=small)
    with pytest.raises(PayloadTooLargeError):
        check_geometry(circle, field="footprint", kinds=POLY, frame=small)


def test_empty_and_degenerate_shapely_geometries() -> None:
    with pytest.raises(InvalidGeometryError, match="footprint: is empty"):
        check_geometry(Polygon(), field="footprint", kinds=POLY, frame=FRAME)
    with pytest.raises(InvalidGeometryError, match="expected LineString, got nothing"):
        check_geometry(None, field="detour", kinds=("LineString",), frame=FRAME)
    line = {"type": "LineString", "coordinates": [[24.94, 60.17], [24.94, 60.17]]}
    with pytest.raises(InvalidGeometryError, match="has zero length"):
        _parse(line, kinds=("LineString",))


def test_utm_zones() -> None:
    assert utm_epsg(8.76, 50.10) == 25832  # Offenbach am Main
    assert utm_epsg(24.94, 60.17) == 25835  # the demo extract
    assert utm_epsg(-74.0, 40.7) == 32618  # outside Europe: WGS84 / UTM
    assert FRAME.projector.epsg == 25835
    offenbach = load_roadworks_settings(bounds=(8.70, 50.06, 8.84, 50.13), metric_epsg=None)
    assert offenbach.frame().projector.epsg == 25832  # no EPSG given: the UTM zone


def test_bbox_checks_its_corners() -> None:
    with pytest.raises(ValueError, match="longitudes"):
        BBox(10, 50, 9, 51)
    with pytest.raises(ValueError, match="latitudes"):
        BBox(9, 51, 10, 50)


def test_districts_match_the_simulators_grid(network: Any) -> None:
    # the demo profile's grid is laid over the bundled extract as the simulators lay theirs
    box = network.bbox
    grid = FRAME.districts
    rng = random.Random(5)
    for _ in range(200):
        lat = rng.uniform(box[0], box[2])
        lon = rng.uniform(box[1], box[3])
        assert grid.district_of(lon, lat) == district_of(lat, lon, box, 500.0)
    assert DistrictGrid(50.13, 8.70, 1000).district_of(8.70 + 0.03, 50.13 - 0.02) == "C3"


def test_a_spec_gets_a_district() -> None:
    assert FRAME.district_of(make_spec().footprint) == "B3"
