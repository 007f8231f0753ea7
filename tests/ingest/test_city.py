"""The city profile: validation with places, districts, and the demo city's refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cityops.api.cli import main
from cityops.ingest.city import CityProfileError, bundled_profile, load_city, read_profile
from cityops.ingest.config import ConfigError, load_settings
from cityops.ingest.districts import OUTSIDE, DistrictGrid, DistrictsError, read_districts
from cityops.routing.network import load_network
from cityops.simulators.city import build_city
from cityops.simulators.scenario import load_scenario
from tests.support import musterstadt


@pytest.fixture
def city_dir(tmp_path: Path) -> Path:
    musterstadt.write_city(tmp_path)
    return tmp_path


def test_a_second_city_reads_with_its_own_districts_and_crs(city_dir: Path) -> None:
    city = read_profile(city_dir / "city.yaml")
    assert city.name == musterstadt.NAME
    assert city.metric_epsg == 25832
    assert city.bounds == musterstadt.BOUNDS
    assert city.osm_extract == (city_dir / "musterstadt.osm").resolve()
    assert [s.site_id for s in city.sites] == ["BH-SUED", "MHKW"]
    assert city.publisher.name == musterstadt.PUBLISHER
    assert city.search_example == "Mühlgasse"
    assert not city.demo
    assert city.districts.district_of(8.75, 50.1) == "Altstadt"
    assert city.districts.district_of(8.77, 50.1) == "Bürgerviertel"
    assert city.districts.district_of(8.79, 50.1) == "Hafenäcker"
    # just outside the city line: the nearest district; far away: outside
    assert city.districts.district_of(8.7995, 50.1205) == "Hafenäcker"
    assert city.districts.district_of(9.5, 50.1) == OUTSIDE


def _problems(path: Path) -> list[str]:
    with pytest.raises(CityProfileError) as info:
        read_profile(path)
    return [p.render(info.value.source) for p in info.value.problems]


def test_every_problem_is_reported_with_its_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "city.yaml").write_text(
        "name: Beispielstadt\n"
        "timezone: Europe/Offenbach\n"
        "bounds: [8.84, 50.06, 8.70, 50.13]\n"
        "metric_epsg: 4326\n"
        "osm_extract: fehlt.osm.pbf\n"
        "sites:\n"
        "  - {id: BH-1, name: Betriebshof, kind: depot, lon: 8.76, lat: 50.1}\n"
        "  - {id: X, name: Deponie, kind: landfill, lon: 8.76, lat: 50.1}\n"
        "publisher: {name: Stadt, contact_name: Amt, contact_email: nobody}\n"
        "mapp: {}\n",
        encoding="utf-8",
    )
    problems = _problems(tmp_path / "city.yaml")
    src = str(tmp_path / "city.yaml")
    assert f"{src}:2:11: timezone: unknown time zone 'Europe/Offenbach' (e.g. Europe/Berlin)" in (
        problems
    )
    assert any(p.startswith(f"{src}:3:9: bounds: must be [min_lon") for p in problems)
    assert f"{src}:4:14: metric_epsg: EPSG:4326 is not a projected CRS in metres (e.g. 25832)" in (
        problems
    )
    assert any(p.startswith(f"{src}:5:14: osm_extract: no such file:") for p in problems)
    assert any(p.startswith(f"{src}:8:34: sites.1.kind:") for p in problems)
    assert any(p.startswith(f"{src}:9:") and "contact_email: must be an e-mail" in p
               for p in problems)
    assert f"{src}:10:7: mapp: unknown key (typo?)" in problems
    assert len(problems) == 7


def test_sites_outside_the_bounds_and_bad_districts_are_named(city_dir: Path) -> None:
    profile = city_dir / "city.yaml"
    text = profile.read_text(encoding="utf-8")
    profile.write_text(text.replace("lon: 8.758, lat: 50.088", "lon: 50.088, lat: 8.758"),
                       encoding="utf-8")
    (problem,) = _problems(profile)
    assert "BH-SUED at lon 50.088, lat 8.758 is outside the bounds" in problem

    profile.write_text(text, encoding="utf-8")
    districts = json.loads((city_dir / "stadtteile.geojson").read_text(encoding="utf-8"))
    districts["features"][1]["geometry"]["coordinates"][0][2] = [8.76, 50.08]  # bow tie
    (city_dir / "stadtteile.geojson").write_text(json.dumps(districts), encoding="utf-8")
    (problem,) = _problems(profile)
    assert ":7:12: districts.geojson:" in problem
    assert "feature 2 (Bürgerviertel): invalid polygon" in problem


def test_hostile_profiles_get_a_reason_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "city.yaml"
    for content, expected in [
        (b"name: [unclosed\n", "not valid YAML"),
        (b"- a list\n", "must be a mapping"),
        (b"\xff\xfe name", "not UTF-8"),
        (b"name: !!python/object:os.system x\n", "not valid YAML"),
    ]:
        path.write_bytes(content)
        (problem,) = _problems(path)
        assert expected in problem


def test_districts_files_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "d.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", '
                    '"properties": {"name": "A"}, "geometry": {"type": "Point", '
                    '"coordinates": [8.7, 50.1]}}]}', encoding="utf-8")
    with pytest.raises(DistrictsError, match=r"feature 1 .A.: geometry must be a Polygon"):
        read_districts(path)
    path.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", '
                    '"properties": {"name": "A"}, "geometry": {"type": "Polygon", '
                    '"coordinates": [[[470000, 5550000], [480000, 5550000], [480000, 5560000],'
                    ' [470000, 5550000]]]}}]}', encoding="utf-8")
    with pytest.raises(DistrictsError, match="not WGS84 longitude/latitude"):
        read_districts(path)
    path.write_text("[" * 100_000, encoding="utf-8")
    with pytest.raises(DistrictsError, match="not valid JSON"):
        read_districts(path)


def test_the_grid_is_the_fallback_from_the_bounds_corner(tmp_path: Path) -> None:
    musterstadt.write_city(tmp_path)
    profile = tmp_path / "city.yaml"
    text = profile.read_text(encoding="utf-8")
    profile.write_text(text.replace("  geojson: stadtteile.geojson\n  name_property: STADTTEIL",
                                    "  grid: {cell_m: 1000}"), encoding="utf-8")
    grid = read_profile(profile).districts
    assert isinstance(grid, DistrictGrid)
    assert (grid.north, grid.west, grid.cell_m) == (50.12, 8.74, 1000)
    assert grid.district_of(8.741, 50.119) == "A1"


def test_the_demo_profile_is_refused_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYOPS_CITY_PROFILE", "demo")
    monkeypatch.setenv("CITYOPS_ALLOW_DEMO_CITY", "0")
    with pytest.raises(ConfigError, match=r"demo city's profile .* a production start refuses"):
        load_city(load_settings())
    assert main(["routing", "replan"]) == 2  # a service start says so and exits
    monkeypatch.delenv("CITYOPS_CITY_PROFILE")
    with pytest.raises(ConfigError, match="no city profile: set CITYOPS_CITY_PROFILE"):
        load_city(load_settings())
    monkeypatch.setenv("CITYOPS_CITY_PROFILE", "demo")
    monkeypatch.setenv("CITYOPS_ALLOW_DEMO_CITY", "1")
    assert load_city(load_settings()).demo


def test_the_demo_profile_places_sites_where_the_demo_scenario_does() -> None:
    path = bundled_profile("demo")
    assert path is not None
    profile = read_profile(path)
    city = build_city(load_scenario("demo"), load_network(None))
    assert {(s.site_id, s.kind, round(s.lon, 7), round(s.lat, 7)) for s in profile.sites} == {
        (s.site_id, s.kind, round(s.lon, 7), round(s.lat, 7)) for s in city.sites
    }
    # and its grid names districts as the simulators do
    assert {profile.districts.district_of(b.lon, b.lat) for b in city.bins} == {
        b.district for b in city.bins
    }
    assert all(profile.districts.district_of(b.lon, b.lat) == b.district for b in city.bins)


def test_city_check_prints_problems_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                ) -> None:
    musterstadt.write_city(tmp_path)
    assert main(["city", "check", str(tmp_path / "city.yaml")]) == 0
    out = capsys.readouterr().out
    assert "valid city profile" in out and "3 districts (Altstadt, Bürgerviertel" in out
    (tmp_path / "city.yaml").write_text("name: x\n", encoding="utf-8")
    assert main(["city", "check", str(tmp_path / "city.yaml")]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'city.yaml'}:1:1: bounds: Field required" in out


def test_a_city_setting_left_in_the_environment_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cityops.roadworks.config import load_roadworks_settings

    monkeypatch.setenv("CITYOPS_ROADWORKS_BOUNDS", "[8.70, 50.06, 8.84, 50.13]")
    with pytest.raises(ConfigError, match=r"CITYOPS_ROADWORKS_BOUNDS: .* set in the city profile"):
        load_roadworks_settings()


def test_lorawan_mappings_are_checked(tmp_path: Path) -> None:
    musterstadt.write_city(tmp_path)
    profile = tmp_path / "city.yaml"
    text = profile.read_text(encoding="utf-8")
    profile.write_text(text + "lorawan:\n  mappings:\n    acme-level: {distance_mm: level.cm*10}\n",
                       encoding="utf-8")
    assert read_profile(profile).lorawan_mappings == {"acme-level": {"distance_mm": "level.cm*10"}}
    profile.write_text(text + "lorawan:\n  mappings:\n    dragino-ldds75: {distance_mm: d}\n"
                       "    acme: {battery_pct: bat}\n", encoding="utf-8")
    (problem,) = _problems(profile)
    assert "lorawan.mappings: dragino-ldds75 is a built-in codec" in problem
