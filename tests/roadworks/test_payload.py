"""Bad input at the boundary: JSON payloads and the domain rules on a spec."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from cityops.roadworks.errors import (
    InvalidGeometryError,
    InvalidPayloadError,
    InvalidPeriodError,
    PayloadTooLargeError,
)
from cityops.roadworks.model import Category, Measure, Sector
from cityops.roadworks.schemas import parse_spec, parse_spec_json, spec_to_payload
from cityops.roadworks.validation import validate_spec
from tests.roadworks.factories import FRAME, T0, make_spec, with_


def payload(**changes: Any) -> dict[str, Any]:
    data = spec_to_payload(make_spec(
        measures=(Measure.LANE_CLOSURE, Measure.PARKING_SUSPENDED), bus_lines=("103",),
        contractor="Tiefbau Müller",
    ))
    data.update(changes)
    return data


def test_round_trip() -> None:
    spec = parse_spec_json(json.dumps(payload()).encode(), FRAME)
    assert spec.sector is Sector.GAS
    assert spec.category is Category.STANDARD
    assert spec.measures == {Measure.LANE_CLOSURE, Measure.PARKING_SUSPENDED}
    assert spec.bus_lines == ("103",)
    assert spec.planned_start == T0
    assert spec_to_payload(spec) == payload()
    assert validate_spec(spec, FRAME).spec.footprint.equals_exact(spec.footprint, 1e-9)


def test_unknown_sector() -> None:
    with pytest.raises(InvalidPayloadError) as err:
        parse_spec(payload(sector="telekom"), FRAME)
    assert err.value.message == (
        "sector: unknown sector 'telekom'; expected one of: 'electricity', 'gas', "
        "'district_heating', 'water', 'telecom', 'sewer', 'road' or 'other'"
    )
    assert err.value.details == [{"field": "sector", "message": err.value.message[8:]}]


def test_every_problem_is_listed() -> None:
    with pytest.raises(InvalidPayloadError) as err:
        parse_spec(payload(measures=["road_closure", "lane_shift"], planned_end=None,
                           colour="red", lanes_affected=-1), FRAME)
    fields = [d["field"] for d in err.value.details]
    assert fields == ["planned_end", "measures[1]", "lanes_affected", "colour"]
    assert "measures[1]: unknown measure 'lane_shift'; expected one of:" in err.value.message
    assert "colour: is not a field of a roadwork" in err.value.message


def test_times_need_a_time_zone() -> None:
    with pytest.raises(InvalidPayloadError, match=r"planned_start: '2025-03-10T07:00:00' has no "
                       r"time zone; give an offset such as \+01:00 or Z"):
        parse_spec(payload(planned_start="2025-03-10T07:00:00"), FRAME)


def test_geometry_errors_name_the_field() -> None:
    data = payload()
    data["streets"][0]["geometry"]["coordinates"] = [
        [lat, lon] for lon, lat in data["streets"][0]["geometry"]["coordinates"]
    ]
    with pytest.raises(InvalidGeometryError,
                       match=r"^streets\[0\]\.geometry: lies outside the city "
                       r"bounds .* look like \(latitude, longitude\)"):
        parse_spec(data, FRAME)


def test_oversized_payloads() -> None:
    body = json.dumps(payload(description="x" * 300_000)).encode()
    with pytest.raises(PayloadTooLargeError, match=r"^body: is \d+ bytes, more than the limit of "
                       r"262144 bytes"):
        parse_spec_json(body, FRAME)
    with pytest.raises(PayloadTooLargeError, match="title: String should have at most 200"):
        parse_spec(payload(title="x" * 201), FRAME)
    with pytest.raises(PayloadTooLargeError, match="streets: List should have at most 20 items"):
        parse_spec(payload(streets=payload()["streets"] * 21), FRAME)


def test_bodies_that_are_not_a_roadwork() -> None:
    with pytest.raises(InvalidPayloadError, match="body: is not valid JSON"):
        parse_spec_json(b"{'title': 1}", FRAME)
    with pytest.raises(InvalidPayloadError, match="body: must be a JSON object, got list"):
        parse_spec_json(b"[]", FRAME)


# -- the domain rules on a spec (whoever built it) ------------------------------------------


def test_end_before_start() -> None:
    spec = make_spec(planned_end=T0 - timedelta(hours=2))
    with pytest.raises(InvalidPeriodError) as err:
        validate_spec(spec, FRAME)
    assert err.value.message == (
        "planned_end: 2025-03-10T05:00:00+01:00 is before planned_start "
        "2025-03-10T07:00:00+01:00; a work must end after it starts"
    )
    with pytest.raises(InvalidPeriodError, match="is the same as planned_start"):
        validate_spec(make_spec(planned_end=T0), FRAME)


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"planned_start": datetime(2025, 3, 10, 7)}, InvalidPeriodError,
     "planned_start: 2025-03-10T07:00:00 has no time zone"),
    ({"planned_end": T0 + timedelta(days=2000)}, InvalidPeriodError,
     "planned_end: the work would last 2000 days, more than the 1830 days"),
    ({"sector": "telekom"}, InvalidPayloadError,
     "sector: unknown sector 'telekom'; expected one of: electricity, gas, district_heating"),
    ({"title": "  "}, InvalidPayloadError, "title: must not be empty"),
    ({"streets": ()}, InvalidPayloadError, "streets: name at least one affected street"),
    ({"measures": frozenset({Measure.LANE_CLOSURE}), "lanes_affected": 0}, InvalidPayloadError,
     "lanes_affected: a lane closure closes at least one lane"),
    ({"bus_lines": ("103", "Linie 103 (Umleitung)")}, InvalidPayloadError,
     "bus_lines[1]: 'Linie 103 (Umleitung)' is not a bus line name"),
    ({"description": "x" * 5001}, PayloadTooLargeError, "description: has 5001 characters"),
])
def test_spec_rules(changes: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as err:
        validate_spec(with_(make_spec(), **changes), FRAME)
    assert str(err.value).startswith(message)


def test_a_street_far_from_the_footprint() -> None:
    far = make_spec(y=400)
    spec = with_(make_spec(), streets=far.streets)
    with pytest.raises(InvalidPayloadError, match=r"streets\[0\]\.geometry: the centreline of "
                       r"'Teststraße' is 396 m away from the footprint"):
        validate_spec(spec, FRAME)


def test_an_implausibly_large_footprint() -> None:
    spec = make_spec(x=-1000, length=1500, width=400)
    with pytest.raises(InvalidPayloadError, match=r"footprint: covers 0\.60 km², more than the "
                       r"plausible maximum of 0\.50 km²"):
        validate_spec(spec, FRAME)


def test_derived_values() -> None:
    valid = validate_spec(make_spec(length=60, width=8, title="  Gas  "), FRAME)
    assert valid.area_m2 == pytest.approx(480.0, abs=0.5)
    assert valid.district == "B3"
    assert valid.spec.title == "Gas"
