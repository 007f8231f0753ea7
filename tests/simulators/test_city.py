"""The city builder: deterministic, and devices where they belong on the real network."""

from __future__ import annotations

import re

import numpy as np

from cityops.routing.network import haversine_m
from cityops.simulators.city import build_city, district_of
from cityops.simulators.scenario import load_scenario
from tests.simulators.factories import network


def test_same_seed_same_city_other_seed_other_bins() -> None:
    scenario = load_scenario("demo")
    first = build_city(scenario, network())
    again = build_city(scenario, network())
    assert first == again
    other = build_city(scenario.model_copy(update={"seed": 43}), network())
    assert [b.node for b in other.bins] != [b.node for b in first.bins]


def test_bins_stand_on_named_streets_of_the_network() -> None:
    net = network()
    city = build_city(load_scenario("demo"), net)
    assert len(city.bins) == 200
    assert [b.bin_id for b in city.bins[:2]] == ["B0001", "B0002"]
    assert all(b.sensor_id == f"S-{b.bin_id}" for b in city.bins)
    names = set(net.name.tolist()) - {""}
    for b in city.bins:
        assert b.street in names
        # the bin's node is an end of an edge of its street, and the bin lies on the street
        on_street = (net.name == b.street) & ((net.src == b.node) | (net.dst == b.node))
        assert on_street.any(), b
        assert net.snap(b.lat, b.lon).street_distance_m < 1.0
        assert re.fullmatch(r"[A-Z]+[1-9][0-9]*", b.district)
    assert {b.fraction for b in city.bins} == {"residual", "paper", "packaging", "organic", "glass"}
    assert {b.capacity_l for b in city.bins} == {120, 240, 660, 1100}


def test_controllers_sit_at_junctions_apart() -> None:
    net = network()
    scenario = load_scenario("demo")
    city = build_city(scenario, net)
    ids = [c.controller_id for c in city.controllers]
    assert ids == ["LSA-001", "LSA-002", "LSA-003", "LSA-004"]
    for c in city.controllers:
        incident = (net.src == c.node) | (net.dst == c.node)
        named = incident & (net.name != "")
        legs = set(net.dst[named & (net.src == c.node)].tolist()) | set(
            net.src[named & (net.dst == c.node)].tolist()
        )
        assert len(legs) >= 3
        assert len(set(net.name[named].tolist())) >= 2
        major, minor = c.name.split(" / ")
        assert {major, minor} <= set(net.name[named].tolist())
        assert [p.phase for p in c.phases] == [p.phase for p in scenario.signals.phases]
        channels = [d.channel for d in c.detectors]
        assert channels == list(range(1, len(channels) + 1))
        assert 0 <= c.offset_s < c.cycle_s
    for i, a in enumerate(city.controllers):
        for b in city.controllers[i + 1 :]:
            assert float(haversine_m(a.lat, a.lon, b.lat, b.lon)) >= scenario.signals.min_spacing_m
    # the highest-ranked junctions are on main roads
    best = city.controllers[0].node
    classes = set(net.highway[(net.src == best) | (net.dst == best)].tolist())
    assert classes & {"primary", "secondary", "trunk"}


def test_sites_and_trucks() -> None:
    net = network()
    city = build_city(load_scenario("demo"), net)
    assert [s.kind for s in city.sites] == ["depot", "disposal"]
    for s in city.sites:
        assert (s.lat, s.lon) == (float(net.lat[s.node]), float(net.lon[s.node]))
    assert [t.truck_id for t in city.trucks] == ["T01", "T02", "T03", "T04"]
    assert [t.fractions for t in city.trucks] == [
        ("residual", "glass"), ("paper",), ("packaging",), ("organic",)
    ]
    assert all(t.depot_id == "DEPOT-1" for t in city.trucks)


def test_district_grid_names() -> None:
    bbox = (60.0, 24.0, 60.1, 24.1)  # about 11 km north-south, 5.6 km east-west
    assert district_of(60.1, 24.0, bbox, 1000) == "A1"  # north-west corner
    assert district_of(60.0995, 24.02, bbox, 1000) == "B1"
    assert district_of(60.08, 24.0, bbox, 1000) == "A3"
    assert district_of(60.1, 24.0 + 27.5 * 1000 / (111_195 * np.cos(np.radians(60.05))),
                       bbox, 1000) == "AB1"
