"""Musterstadt am Main: a made-up second city, to show that a city is set up from files.

Everything differs from the demo city: bounds near Offenbach am Main (the demo's are in
Helsinki), EPSG:25832, districts as polygons from a GeoJSON file, German street names with
umlauts and ß, its own depot ids, publisher and map hint. `write_city(folder)` writes the
profile, its districts, a small OpenStreetMap extract (a street grid, in OSM XML) and
registry files for sites, trucks, bins and signal controllers.
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

NAME = "Musterstadt am Main"
BOUNDS = (8.740, 50.080, 8.800, 50.120)
PUBLISHER = "Stadt Musterstadt am Main – Amt für Straßenbau"
#: east-west streets (north to south) and north-south streets (west to east)
EAST_WEST = ("Schloßstraße", "Mühlgasse", "Bürgerstraße", "Hauptstraße", "Größenweg")
NORTH_SOUTH = ("Frankfurter Straße", "Kaiserstraße", "Löwenstraße", "Ährenweg",
               "Brückenstraße")
LATS = (50.112, 50.106, 50.100, 50.094, 50.088)
LONS = (8.748, 8.758, 8.768, 8.778, 8.788)
#: (name, west, east): three districts side by side over the whole city
DISTRICTS = (("Altstadt", 8.740, 8.760), ("Bürgerviertel", 8.760, 8.780),
             ("Hafenäcker", 8.780, 8.800))


def district_of(lon: float) -> str:
    return next(name for name, west, east in DISTRICTS if west <= lon < east)


def osm_xml() -> str:
    """A 5 x 5 street grid, two-way residential streets, a node every ~0.002 degrees."""
    nodes: dict[tuple[float, float], int] = {}
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<osm version="0.6" generator="tests">']

    def node(lat: float, lon: float) -> int:
        key = (round(lat, 6), round(lon, 6))
        if key not in nodes:
            nodes[key] = len(nodes) + 1
        return nodes[key]

    ways: list[tuple[str, list[int]]] = []
    for lat, name in zip(LATS, EAST_WEST, strict=True):
        steps = [LONS[0] + i * 0.002 for i in range(int((LONS[-1] - LONS[0]) / 0.002) + 1)]
        ways.append((name, [node(lat, lon) for lon in steps]))
    for lon, name in zip(LONS, NORTH_SOUTH, strict=True):
        steps = [LATS[0] - i * 0.002 for i in range(int((LATS[0] - LATS[-1]) / 0.002) + 1)]
        ways.append((name, [node(lat, lon) for lat in steps]))
    for (lat, lon), nid in nodes.items():
        lines.append(f'  <node id="{nid}" version="1" lat="{lat}" lon="{lon}"/>')
    for wid, (name, refs) in enumerate(ways, start=1):
        lines.append(f'  <way id="{wid}" version="1">')
        lines += [f'    <nd ref="{r}"/>' for r in refs]
        lines.append('    <tag k="highway" v="residential"/>')
        lines.append(f'    <tag k="name" v={quoteattr(name)}/>')
        lines.append('    <tag k="maxspeed" v="30"/>')
        lines.append("  </way>")
    lines.append("</osm>")
    return "\n".join(lines) + "\n"


def districts_geojson() -> dict[str, object]:
    south, north = BOUNDS[1], BOUNDS[3]
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"STADTTEIL": name},
         "geometry": {"type": "Polygon", "coordinates": [[
             [west, south], [east, south], [east, north], [west, north], [west, south]]]}}
        for name, west, east in DISTRICTS
    ]}


PROFILE = f"""\
# Musterstadt am Main: a made-up city for the test suite (tests/support/musterstadt.py)
name: {NAME}
timezone: Europe/Berlin
bounds: [{BOUNDS[0]}, {BOUNDS[1]}, {BOUNDS[2]}, {BOUNDS[3]}]
metric_epsg: 25832
districts:
  geojson: stadtteile.geojson
  name_property: STADTTEIL
osm_extract: musterstadt.osm
sites:
  - {{id: BH-SUED, name: Betriebshof Süd, kind: depot, lon: 8.758, lat: 50.088}}
  - {{id: MHKW, name: Müllheizkraftwerk, kind: disposal, lon: 8.788, lat: 50.094}}
publisher:
  name: {PUBLISHER}
  contact_name: Baustellenkoordination
  contact_email: baustellen@musterstadt.example
map:
  search_example: Mühlgasse
"""

TRUCKS = """\
truck_id,name,capacity_l,capacity_kg,depot_id,fractions,shift_start,shift_end
MS-EB-101,Müllwagen 1,16000,9000,BH-SUED,"residual,paper",06:00,14:30
MS-EB-102,Müllwagen 2,16000,,BH-SUED,organic,06:00,14:30
"""


def bins_csv() -> str:
    """Twelve bins along the streets, semicolon separated with decimal commas (as a German
    spreadsheet saves them), districts left to the profile."""
    rows = ["bin_id;sensor_id;lon;lat;street;house_number;district;fraction;capacity_l;"
            "collection_days;access_from;access_to;dev_eui;sensor_model;empty_distance_mm;"
            "full_distance_mm"]
    fractions = ("residual", "paper", "organic")
    for i in range(12):
        lat = LATS[i % 5]
        lon = LONS[0] + 0.001 + 0.0035 * i
        street = EAST_WEST[i % 5]
        fraction = fractions[i % 3]
        days = "Mo,Do" if i % 2 else "Di"
        access = "07:00;18:00" if i == 3 else ";"
        rows.append(
            f"MS-B{i + 1:03d};MS-S{i + 1:03d};{lon:.4f}".replace(".", ",")
            + f";{lat:.4f}".replace(".", ",")
            + f";{street};{i + 1}a;;{fraction};{(240, 660, 1100)[i % 3]};{days};{access};"
            + (f"70-B3-D5-7E-D0-05-{i:02X}-01;milesight-em310-udl;1200;150" if i % 4 == 0
               else ";;;")
        )
    return "\n".join(rows) + "\n"


CONTROLLERS = """\
controllers:
  - id: MS-LSA-01
    name: Hauptstraße / Löwenstraße
    lon: 8.768
    lat: 50.094
    cycle_s: 60
    phases:
      - {phase: 2, movement: Hauptstraße geradeaus, min_green_s: 5, max_green_s: 40,
         fixed_green_s: 25, yellow_s: 3, red_clearance_s: 2}
      - {phase: 4, movement: Löwenstraße geradeaus, min_green_s: 5, max_green_s: 30,
         fixed_green_s: 20, yellow_s: 3, red_clearance_s: 2}
    detectors:
      - {channel: 1, phase: 2, kind: stop_bar, lane: 1}
      - {channel: 2, phase: 4, kind: advance, lane: 1, distance_m: 40}
    links:
      - {channel: 1, to_controller_id: MS-LSA-02, to_channel: 1}
  - id: MS-LSA-02
    name: Hauptstraße / Ährenweg
    lon: 8.778
    lat: 50.094
    phases:
      - {phase: 2, movement: Hauptstraße geradeaus, min_green_s: 5, max_green_s: 40,
         fixed_green_s: 25, yellow_s: 3, red_clearance_s: 2}
      - {phase: 4, movement: Ährenweg geradeaus, min_green_s: 5, max_green_s: 30,
         fixed_green_s: 20, yellow_s: 3, red_clearance_s: 2}
    detectors:
      - {channel: 1, phase: 2, kind: stop_bar, lane: 1}
"""


def write_city(folder: Path) -> dict[str, Path]:
    """Write the profile and every file it and the registry import need; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "profile": folder / "city.yaml",
        "districts": folder / "stadtteile.geojson",
        "extract": folder / "musterstadt.osm",
        "trucks": folder / "fahrzeuge.csv",
        "bins": folder / "behälter.csv",
        "controllers": folder / "lsa.yaml",
    }
    files["profile"].write_text(PROFILE, encoding="utf-8")
    files["districts"].write_text(json.dumps(districts_geojson(), ensure_ascii=False),
                                  encoding="utf-8")
    files["extract"].write_text(osm_xml(), encoding="utf-8")
    files["trucks"].write_text(TRUCKS, encoding="utf-8")
    files["bins"].write_text(bins_csv(), encoding="utf-8")
    files["controllers"].write_text(CONTROLLERS, encoding="utf-8")
    return files
