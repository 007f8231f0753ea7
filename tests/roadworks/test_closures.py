"""The pure rule from a work to its street closure: every measure in every status."""

from __future__ import annotations

from datetime import timedelta

import pytest
from shapely.geometry import MultiLineString, Polygon

from cityops.roadworks.closures import (
    BUFFER_M,
    CLOSING_STATUSES,
    NO_EFFECT,
    SLOWDOWNS,
    closure_for,
    closure_id,
)
from cityops.roadworks.model import Measure, Roadwork, Status
from tests.roadworks.factories import T0, make_spec, make_work, with_

M = Measure

#: What each measure alone does to a truck: None closes the road, a float slows it,
#: "none" means no closure row at all.
EXPECTED: dict[Measure, float | str | None] = {
    M.ROAD_CLOSURE: None,
    M.LANE_CLOSURE: 1.5,
    M.ALTERNATING_ONE_WAY: 2.0,
    M.TEMPORARY_SIGNALS: 1.5,
    M.SIDEWALK_CLOSURE: "none",
    M.CYCLE_LANE_CLOSURE: "none",
    M.PARKING_SUSPENDED: "none",
}


def _work(status: Status, *measures: Measure) -> Roadwork:
    actual_start = T0 if status in (Status.IN_PROGRESS, Status.COMPLETED) else None
    actual_end = T0 + timedelta(days=2) if status is Status.COMPLETED else None
    return make_work(
        make_spec(measures=measures, street="Hauptstraße"),
        status=status,
        reference="RW-2025-00007",
        actual_start=actual_start,
        actual_end=actual_end,
    )


def test_every_measure_is_classified() -> None:
    assert set(EXPECTED) == set(Measure)
    assert set(SLOWDOWNS) | NO_EFFECT | {M.ROAD_CLOSURE} == set(Measure)
    assert all(1.5 <= f <= 2.0 for f in SLOWDOWNS.values())


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("measure", list(Measure))
def test_each_measure_in_each_status(status: Status, measure: Measure) -> None:
    work = _work(status, measure)
    closure = closure_for(work)
    expected = EXPECTED[measure]
    if status not in CLOSING_STATUSES or expected == "none":
        assert closure is None
        return
    assert closure is not None
    assert closure.slowdown == expected
    assert closure.closure_id == "roadwork:RW-2025-00007" == closure_id(work.reference)
    assert closure.buffer_m == BUFFER_M
    period = work.effective_period
    assert (closure.valid_from, closure.valid_to) == (period.start, period.end)
    assert "RW-2025-00007" in closure.reason and "Hauptstraße" in closure.reason


def test_the_closing_statuses() -> None:
    assert {Status.APPROVED, Status.SCHEDULED, Status.IN_PROGRESS} == CLOSING_STATUSES


@pytest.mark.parametrize("status", sorted(CLOSING_STATUSES))
def test_a_road_closure_wins_over_everything_else(status: Status) -> None:
    closure = closure_for(_work(status, *Measure))
    assert closure is not None and closure.slowdown is None
    assert "Vollsperrung" in closure.reason


def test_the_strongest_slowdown_wins() -> None:
    closure = closure_for(
        _work(Status.SCHEDULED, M.LANE_CLOSURE, M.ALTERNATING_ONE_WAY, M.PARKING_SUSPENDED)
    )
    assert closure is not None and closure.slowdown == 2.0
    closure = closure_for(_work(Status.SCHEDULED, M.LANE_CLOSURE, M.SIDEWALK_CLOSURE))
    assert closure is not None and closure.slowdown == 1.5


def test_no_measure_no_closure() -> None:
    assert closure_for(_work(Status.IN_PROGRESS)) is None
    assert closure_for(_work(Status.APPROVED, *NO_EFFECT)) is None


def test_geometry_is_the_affected_centrelines() -> None:
    work = _work(Status.APPROVED, M.ROAD_CLOSURE)
    closure = closure_for(work)
    assert closure is not None
    assert isinstance(closure.geometry, MultiLineString)
    assert closure.geometry.equals(MultiLineString([s.line for s in work.spec.streets]))


def test_without_centrelines_the_footprint() -> None:
    spec = make_spec(measures=(M.ROAD_CLOSURE,))
    work = make_work(with_(spec, streets=()), status=Status.SCHEDULED)
    closure = closure_for(work)
    assert closure is not None and isinstance(closure.geometry, Polygon)
    assert closure.geometry.equals(spec.footprint)


def test_validity_follows_the_reported_start() -> None:
    late = T0 + timedelta(days=2)
    spec = make_spec(measures=(M.ROAD_CLOSURE,), start=T0, days=10)
    work = make_work(spec, status=Status.IN_PROGRESS, actual_start=late)
    closure = closure_for(work)
    assert closure is not None
    assert closure.valid_from == late and closure.valid_to == spec.planned_end
    planned = closure_for(make_work(spec, status=Status.SCHEDULED))
    assert planned is not None and planned.valid_from == T0
