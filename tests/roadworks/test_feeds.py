"""Open-data feeds: WZDx 4.2 and GeoJSON validate against the official schemas, iCalendar
and Atom are well-formed, CSV has its header."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cityops.roadworks.feeds import atom, csv_feed, geojson, ical, wzdx
from cityops.roadworks.feeds.common import FeedContext, FeedQuery, obstructions_de
from cityops.roadworks.model import Measure, Roadwork, Sector, Status, Street
from tests.roadworks.factories import T0, make_spec, make_work, street_line, to_lonlat
from tests.roadworks.schemas import WZDX, errors, feature_collection_validator, wzdx_feed_validator

CTX = FeedContext(generated_at=datetime(2025, 3, 3, 7, 0, tzinfo=UTC), publisher="Stadt Test",
                  contact_email="baustellen@example.org", base_url="https://stadt.example")
EXAMPLES = sorted((WZDX / "examples").glob("*.geojson"))
A = "{http://www.w3.org/2005/Atom}"


def works() -> list[Roadwork]:
    """A mix: several streets with a detour, in progress, reported end, odd texts."""
    closure = make_spec(
        street="Frankfurter Straße",
        streets=(Street("Frankfurter Straße", to_lonlat(street_line())),
                 Street("Kaiserstraße", to_lonlat(street_line(30, -40, 80, angle_east=False)))),
        measures=(Measure.ROAD_CLOSURE, Measure.PARKING_SUSPENDED, Measure.SIDEWALK_CLOSURE),
        detour=to_lonlat(street_line(0, 80, 200)), detour_description="Umleitung über B-Straße",
        bus_lines=("103", "X83"), waste_collection_affected=True, night_works=True,
        working_hours="Mo–Fr 07:00–17:00; Sa 08:00–12:00",
        public_text="Kanal, Gas & Wasser; \"Bauabschnitt 2\"\nZufahrt frei <für Anlieger>",
    )
    lanes = make_spec(y=300, street="Herrnstraße", sector=Sector.TELECOM, excavation=False,
                      measures=(Measure.LANE_CLOSURE,), start=T0 - timedelta(days=3))
    quiet = make_spec(y=600, street="Bahnhofstraße", sector=Sector.ROAD, excavation=False,
                      title="Markierung " + "sehr lange Beschreibung " * 8)
    return [
        make_work(closure, id=1),
        make_work(lanes, id=2, status=Status.IN_PROGRESS, actual_start=T0 - timedelta(days=2)),
        make_work(quiet, id=3, status=Status.APPROVED, version=4),
    ]


# -- WZDx ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_official_examples_validate(path: Path) -> None:
    assert errors(wzdx_feed_validator(), json.loads(path.read_text(encoding="utf-8"))) == []


def _without_feed_info(f: dict[str, Any]) -> None:
    del f["feed_info"]


def _bad_impact(f: dict[str, Any]) -> None:
    f["features"][0]["properties"]["vehicle_impact"] = "closed"


def _one_position(f: dict[str, Any]) -> None:
    f["features"][0]["geometry"]["coordinates"] = [[1.0, 2.0]]


def _bad_date(f: dict[str, Any]) -> None:
    f["features"][0]["properties"]["start_date"] = "2010-01-01 1:00"


def _bad_email(f: dict[str, Any]) -> None:
    f["feed_info"]["contact_email"] = "nobody"


@pytest.mark.parametrize("spoil", [_without_feed_info, _bad_impact, _one_position, _bad_date,
                                   _bad_email])
def test_the_validator_has_teeth(spoil: Any) -> None:
    broken = json.loads(EXAMPLES[0].read_text(encoding="utf-8"))
    spoil(broken)
    assert errors(wzdx_feed_validator(), broken)


def test_our_feed_validates() -> None:
    feed = wzdx.work_zone_feed(works(), CTX)
    assert errors(wzdx_feed_validator(), feed) == []
    assert feed["feed_info"]["version"] == "4.2"
    events = feed["features"]
    kinds = [(e["properties"]["core_details"]["event_type"],
              e["properties"]["core_details"]["road_names"]) for e in events]
    assert kinds == [
        ("work-zone", ["Frankfurter Straße"]), ("work-zone", ["Kaiserstraße"]),
        ("detour", ["Frankfurter Straße", "Kaiserstraße"]),
        ("work-zone", ["Herrnstraße"]), ("work-zone", ["Bahnhofstraße"]),
    ]
    first = events[0]["properties"]
    assert first["vehicle_impact"] == "all-lanes-closed"
    assert first["restrictions"] == [{"type": "no-parking"}]
    assert first["types_of_work"] == [{"type_name": "below-road-work",
                                       "is_architectural_change": False}]
    related = {(r["type"], r["id"]) for r in first["core_details"]["related_road_events"]}
    assert related == {("related-work-zone", events[1]["id"]), ("related-detour", events[2]["id"])}
    assert first["start_date"] == "2025-03-10T06:00:00Z"
    assert events[3]["properties"]["is_start_date_verified"] is True
    assert events[3]["properties"]["vehicle_impact"] == "some-lanes-closed"
    assert events[4]["properties"]["types_of_work"][0]["type_name"] == "surface-work"
    # ids are stable from run to run
    assert [e["id"] for e in wzdx.work_zone_feed(works(), CTX)["features"]] == \
        [e["id"] for e in events]
    assert errors(wzdx_feed_validator(), wzdx.work_zone_feed([], CTX)) == []


def test_vehicle_impact_mapping() -> None:
    assert wzdx.vehicle_impact([Measure.LANE_CLOSURE, Measure.ALTERNATING_ONE_WAY]) == \
        "alternating-one-way"
    assert wzdx.vehicle_impact([Measure.TEMPORARY_SIGNALS]) == "temporary-traffic-signal"
    assert wzdx.vehicle_impact([Measure.SIDEWALK_CLOSURE]) == "all-lanes-open"


# -- GeoJSON -------------------------------------------------------------------------------


def test_geojson_validates() -> None:
    collection = geojson.feature_collection(works(), CTX)
    assert errors(feature_collection_validator(), collection) == []
    props = collection["features"][0]["properties"]
    assert collection["features"][0]["id"] == "RW-2025-00001"
    assert collection["features"][0]["geometry"]["type"] == "Polygon"
    assert props["streets"] == ["Frankfurter Straße", "Kaiserstraße"]
    assert props["obstructions_de"] == [
        "Vollsperrung", "Gehwegsperrung", "Halteverbot", "Buslinien 103, X83 betroffen",
        "Müllabfuhr betroffen", "Nachtarbeit",
    ]
    assert props["period_de"] == "10.03.2025 bis 20.03.2025"
    assert props["url"] == "https://stadt.example/roadworks/RW-2025-00001"
    assert errors(feature_collection_validator(), {"type": "FeatureCollection"})  # teeth


# -- iCalendar -----------------------------------------------------------------------------


def _unfold(text: str) -> list[str]:
    return text.replace("\r\n ", "").split("\r\n")[:-1]


def test_ical_is_well_formed() -> None:
    text = ical.calendar(works(), CTX, FeedQuery(street="Frankfurter Straße"))
    assert text.endswith("END:VCALENDAR\r\n")
    assert "\n" not in text.replace("\r\n", "")  # CRLF only
    for line in text.split("\r\n"):
        assert len(line.encode("utf-8")) <= 75
    assert any(line.startswith(" ") for line in text.split("\r\n"))  # something was folded
    lines = _unfold(text)
    assert lines[:3] == ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//cityops//Baustellen "
                         "stadt.example//DE"]
    events = "\r\n".join(lines).split("BEGIN:VEVENT")[1:]
    assert len(events) == 3
    for event in events:
        props = {line.split(":", 1)[0].split(";")[0] for line in event.split("\r\n") if line}
        assert {"UID", "DTSTAMP", "DTSTART", "DTEND", "SUMMARY", "END"} <= props
    first = dict(line.split(":", 1) for line in events[0].split("\r\n")[1:] if ":" in line)
    assert first["UID"] == "rw-2025-00001@stadt.example"
    assert first["DTSTART"] == "20250310T060000Z"
    assert first["DTSTAMP"] == "20250303T070000Z"
    assert first["GEO"].count(";") == 1
    assert first["SEQUENCE"] == "0"
    assert "Kanal\\, Gas & Wasser\\; \"Bauabschnitt 2\"\\nZufahrt frei <für Anlieger>" in \
        first["DESCRIPTION"]
    assert lines.count("BEGIN:VCALENDAR") == 1
    assert "X-WR-CALNAME:Baustellen in der Frankfurter Straße" in lines


def test_folding_keeps_utf8_characters_whole() -> None:
    line = "DESCRIPTION:" + "Straßenbäume " * 20
    folded = ical.fold_line(line)
    pieces = folded.split("\r\n")
    assert all(len(p.encode("utf-8")) <= 75 for p in pieces)
    assert all(p.startswith(" ") for p in pieces[1:])
    assert "".join(p[1:] if i else p for i, p in enumerate(pieces)) == line
    assert ical.fold_line("SHORT:x") == "SHORT:x"
    assert ical.escape_text("a,b;c\\d\ne") == "a\\,b\\;c\\\\d\\ne"


# -- Atom ------------------------------------------------------------------------------------


def test_atom_is_well_formed() -> None:
    text = atom.feed(works(), CTX, FeedQuery(street="Frankfurter Straße"))
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>')
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == f"{A}feed"
    for tag in ("id", "title", "updated", "author"):
        assert root.find(f"{A}{tag}") is not None, tag
    assert root.findtext(f"{A}title") == "Baustellen in der Frankfurter Straße"
    self_link = root.find(f"{A}link[@rel='self']")
    assert self_link is not None
    assert self_link.get("href") == \
        "https://stadt.example/roadworks/feeds/atom?street=Frankfurter%20Stra%C3%9Fe"
    entries = root.findall(f"{A}entry")
    assert len(entries) == 3
    ids = [e.findtext(f"{A}id") for e in entries]
    assert len(set(ids)) == 3
    assert all(i and i.startswith("urn:uuid:") for i in ids)
    for entry in entries:
        for tag in ("id", "title", "updated", "summary", "link"):
            assert entry.find(f"{A}{tag}") is not None, tag
    summary = entries[0].findtext(f"{A}summary")
    assert summary is not None
    assert "Zufahrt frei <für Anlieger>" in summary  # escaped in XML, intact after parsing
    point = entries[0].findtext("{http://www.georss.org/georss}point")
    assert point is not None
    assert len(point.split()) == 2
    updated = root.findtext(f"{A}updated")
    assert updated == "2025-02-01T10:30:00Z"
    datetime.fromisoformat(updated.replace("Z", "+00:00"))


def test_area_feed_title() -> None:
    from cityops.roadworks.geometry import BBox

    query = FeedQuery(bbox=BBox(24.94, 60.16, 24.96, 60.18))
    root = ET.fromstring(atom.feed([], CTX, query))
    assert root.findtext(f"{A}title") == "Baustellen im Gebiet 60.1600–60.1800 N, " \
        "24.9400–24.9600 O"
    assert root.findall(f"{A}entry") == []


# -- CSV -------------------------------------------------------------------------------------


def test_csv_header_and_rows() -> None:
    text = csv_feed.to_csv(works(), CTX)
    assert text.startswith(",".join(csv_feed.CSV_COLUMNS) + "\r\n")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == 3
    assert list(rows[0]) == list(csv_feed.CSV_COLUMNS)
    first: dict[str, Any] = rows[0]
    assert first["streets"] == "Frankfurter Straße; Kaiserstraße"
    assert first["measures"] == "road_closure; sidewalk_closure; parking_suspended"
    assert first["description"].endswith("Zufahrt frei <für Anlieger>")
    assert first["start"] == "2025-03-10T06:00:00Z"
    assert rows[1]["actual_start"] == "2025-03-08T06:00:00Z"
    assert float(first["lon"]) > 24 and float(first["lat"]) > 60
    assert csv_feed.to_csv([], CTX) == ",".join(csv_feed.CSV_COLUMNS) + "\r\n"


def test_obstructions_in_german() -> None:
    work = make_work(make_spec(measures=(Measure.LANE_CLOSURE, Measure.TEMPORARY_SIGNALS),
                               lanes_affected=2))
    assert obstructions_de(work) == ["Fahrstreifensperrung (2 Fahrstreifen)", "Baustellenampel"]
