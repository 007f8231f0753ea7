"""Scenario files: bundled ones load, mistakes are reported clearly."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cityops.simulators.errors import ScenarioError
from cityops.simulators.scenario import (
    bundled_scenarios,
    load_scenario,
    parse_scenario,
    parse_start,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_bundled_scenarios_load() -> None:
    assert {"demo", "test"} <= set(bundled_scenarios())
    demo = load_scenario("demo")
    assert demo.bins.count == 200
    assert set(demo.bins.fractions) == {"residual", "paper", "packaging", "organic", "glass"}
    assert set(demo.bins.capacities) == {120, 240, 660, 1100}
    assert demo.trucks.count == 4
    assert demo.signals.count == 4
    assert {s.kind for s in demo.sites} == {"depot", "disposal"}
    assert demo.speed == 120


def test_defaults_fill_a_minimal_scenario() -> None:
    scenario = parse_scenario("name: tiny\n")
    assert scenario.start == "now - 2 days"
    assert scenario.speed == 120
    assert scenario.osm_file is None


def test_unknown_key_is_refused_with_its_path() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario("name: x\nbins:\n  count: 3\n  fill_rate_per_day: {residual: 3}\n")
    message = str(info.value)
    assert "bins.fill_rate_per_day: unknown key (typo?)" in message


def test_bad_values_are_named() -> None:
    text = """
name: x
bins: {fractions: {plastic: 1.0}}
signals:
  phases: [{phase: 2, green_s: 30, yellow_s: 2}]
"""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "city.yaml")
    message = str(info.value)
    assert message.startswith("city.yaml: invalid scenario:")
    assert "bins.fractions.plastic" in message
    assert "signals.phases.0.yellow_s: Input should be greater than or equal to 3" in message


def test_cross_field_checks() -> None:
    with pytest.raises(ScenarioError, match=re.escape("depot 'NOPE' is not a site of kind depot")):
        parse_scenario("name: x\ntrucks: {depot: NOPE}\n")
    with pytest.raises(ScenarioError, match=re.escape("min_green_s 8.0 exceeds green_s 5.0")):
        parse_scenario("name: x\nsignals: {phases: [{phase: 2, green_s: 5, min_green_s: 8}]}\n")
    with pytest.raises(ScenarioError, match=re.escape("multiple of 0.1 s")):
        parse_scenario("name: x\nsignals: {phases: [{phase: 2, green_s: 30.05}]}\n")
    with pytest.raises(ScenarioError, match="fill_rate_l_per_day has no rate for glass"):
        parse_scenario("name: x\nbins: {fractions: {glass: 1}, fill_rate_l_per_day: {paper: 3}}\n")


def test_unquoted_time_of_day_gets_a_hint() -> None:
    # YAML 1.1 turns an unquoted 22:00 into the integer 1320.
    with pytest.raises(ScenarioError, match="write times of day in quotes"):
        parse_scenario("name: x\ntrucks: {shift: {start: '06:00', end: 22:00}}\n")


def test_not_yaml_and_not_a_mapping() -> None:
    with pytest.raises(ScenarioError, match="not valid YAML"):
        parse_scenario("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="must be a mapping"):
        parse_scenario("- a list\n")


def test_unknown_name_lists_bundled_scenarios() -> None:
    with pytest.raises(ScenarioError, match="unknown scenario 'nowhere': bundled ones are demo"):
        load_scenario("nowhere")


def test_load_from_path_resolves_osm_file_next_to_it(tmp_path: Path) -> None:
    path = tmp_path / "city.yaml"
    path.write_text("name: city\nosm_file: extract.osm.pbf\nseed: 5\n", encoding="utf-8")
    scenario = load_scenario(path)
    assert scenario.seed == 5
    assert scenario.osm_file == tmp_path / "extract.osm.pbf"
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load_scenario(tmp_path / "missing.yaml")


def test_parse_start() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert parse_start("now", NOW) == NOW
    assert parse_start("now - 2 days", NOW) == NOW - timedelta(days=2)
    assert parse_start("now-6h", NOW) == NOW - timedelta(hours=6)
    assert parse_start("now - 90 minutes", NOW) == NOW - timedelta(minutes=90)
    assert parse_start("2026-03-09T08:00:00Z", NOW) == datetime(2026, 3, 9, 8, tzinfo=UTC)
    # without an offset: the scenario's local time (CET is UTC+1 in March before DST)
    assert parse_start("2026-03-09T08:00", NOW, berlin) == datetime(2026, 3, 9, 7, tzinfo=UTC)
    with pytest.raises(ValueError, match="start must be 'now'"):
        parse_start("yesterday", NOW)
    with pytest.raises(ScenarioError, match="start: Value error, start must be"):
        parse_scenario("name: x\nstart: tomorrow\n")
