"""The routing model: validation on construction, screening of unplannable stops, helpers."""

from __future__ import annotations

import numpy as np
import pytest

from cityops.routing.model import (
    GERMAN_BREAK_RULE,
    UNREACHABLE,
    BreakRule,
    Plan,
    Problem,
    Site,
    SiteKind,
    Stop,
    TimeWindow,
    Unserved,
    UnservedCode,
    Vehicle,
    VehicleStart,
    VehicleType,
    Visit,
    VisitKind,
    fleet,
    format_clock,
    make_route,
)
from cityops.routing.screening import screen

H = 3600
TRUCK = VehicleType("truck", 1000, capacity_kg=500)


def line(n: int, step: int = 10) -> np.ndarray:
    x = np.arange(n) * step
    return np.abs(np.subtract.outer(x, x))


def problem(
    stops: list[Stop],
    *,
    n: int = 5,
    time_s: np.ndarray | None = None,
    vehicles: tuple[Vehicle, ...] | None = None,
    **kwargs: object,
) -> Problem:
    dist = line(n)
    return Problem(
        tuple(stops),
        (Site("depot", 0), Site("tip", n - 1, SiteKind.DISPOSAL, unload_s=300)),
        vehicles or fleet(TRUCK, 2, depot="depot", shift=TimeWindow(6 * H, 14 * H)),
        dist if time_s is None else time_s,
        dist,
        **kwargs,  # type: ignore[arg-type]
    )


# -- validation ---------------------------------------------------------------------


def test_time_window_validation() -> None:
    assert str(TimeWindow(8 * H, 9 * H + 30 * 60)) == "08:00-09:30"
    with pytest.raises(ValueError, match="start <= end"):
        TimeWindow(10, 5)
    with pytest.raises(TypeError, match="integer"):
        TimeWindow(1.5, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"demand_l": -1}, "demand_l"),
        ({"demand_kg": -5}, "demand_kg"),
        ({"service_s": -1}, "service_s"),
        ({"penalty": 10}, "only to optional"),
        ({"id": ""}, "empty"),
    ],
)
def test_stop_validation(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"id": "b1", "location": 1, "demand_l": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        Stop(**fields)  # type: ignore[arg-type]


def test_optional_stop_with_penalty() -> None:
    stop = Stop("b1", 1, 10, required=False, penalty=500)
    assert stop.penalty == 500


def test_vehicle_start_inside_shift() -> None:
    with pytest.raises(ValueError, match="outside its shift"):
        Vehicle("t1", TRUCK, "depot", TimeWindow(6 * H, 14 * H), VehicleStart(1, 15 * H))


def test_break_rule_defaults_to_german_law() -> None:
    assert (GERMAN_BREAK_RULE.max_work_s, GERMAN_BREAK_RULE.duration_s) == (6 * H, 30 * 60)
    with pytest.raises(ValueError, match="positive"):
        BreakRule(0, 10)


def test_problem_validation() -> None:
    with pytest.raises(ValueError, match="duplicate stop"):
        problem([Stop("b1", 1, 1), Stop("b1", 2, 1)])
    with pytest.raises(ValueError, match="outside the matrix"):
        problem([Stop("b1", 9, 1)])
    with pytest.raises(ValueError, match="square"):
        problem([], time_s=np.zeros((5, 4)))
    with pytest.raises(ValueError, match="differ"):
        problem([], time_s=np.zeros((4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        problem([], time_s=np.full((5, 5), np.nan))
    with pytest.raises(ValueError, match="negative"):
        problem([], time_s=-line(5))
    bad_depot = fleet(TRUCK, 1, depot="tip", shift=TimeWindow(0, H))
    with pytest.raises(ValueError, match="not a depot"):
        problem([], vehicles=bad_depot)
    with pytest.raises(ValueError, match="disposal"):
        Problem((), (Site("depot", 0),), (), line(2), line(2), unload_before_return=True)


def test_matrices_are_normalised() -> None:
    t = line(5).astype(float) + 0.4
    t[1, 2] = np.inf
    t[2, 1] = 5e12
    p = problem([], time_s=t)
    assert p.time_s.dtype == np.int64
    assert p.time_s[0, 1] == 10
    assert p.time_s[1, 2] == p.time_s[2, 1] == UNREACHABLE
    with pytest.raises(ValueError, match="read-only"):
        p.time_s[0, 0] = 1


def test_problem_lookups() -> None:
    p = problem([Stop("b1", 1, 10, demand_kg=3)])
    assert p.stop_by_id["b1"].location == 1
    assert [s.id for s in p.disposal_sites] == ["tip"]
    assert p.uses_kg
    assert p.start_location(p.vehicles[0]) == p.end_location(p.vehicles[0]) == 0


def test_needs_breaks_only_when_the_shift_is_long() -> None:
    long = fleet(TRUCK, 1, depot="depot", shift=TimeWindow(6 * H, 14 * H))
    short = fleet(TRUCK, 1, depot="depot", shift=TimeWindow(6 * H, 12 * H), prefix="s-")
    ruled = problem([], vehicles=long + short, break_rule=GERMAN_BREAK_RULE)
    assert ruled.needs_breaks(long[0]) and not ruled.needs_breaks(short[0])
    assert not problem([], vehicles=long).needs_breaks(long[0])
    tired = Vehicle(
        "t9", TRUCK, "depot", TimeWindow(6 * H, 14 * H), VehicleStart(1, 10 * H, worked_s=4 * H)
    )
    assert ruled.needs_breaks(tired)


# -- screening ----------------------------------------------------------------------


def test_screen_reports_each_kind_of_impossible_stop() -> None:
    t = line(6).astype(float)
    t[3, :] = np.inf  # no way out of location 3
    t[3, 3] = 0
    stops = [
        Stop("ok", 1, 10),
        Stop("huge", 1, 5000),
        Stop("heavy", 1, 10, demand_kg=900),
        Stop("trap", 3, 10),
        Stop("early", 2, 10, window=TimeWindow(0, H)),
        Stop("late", 4, 10, service_s=9 * H),
    ]
    p = problem(stops, n=6, time_s=t)
    s = screen(p)
    assert [p.stops[k].id for k in s.stops] == ["ok"]
    assert s.vehicles == (0, 1)
    codes = {u.stop_id: u.code for u in s.unserved}
    assert codes == {
        "huge": UnservedCode.CAPACITY,
        "heavy": UnservedCode.CAPACITY,
        "trap": UnservedCode.UNREACHABLE,
        "early": UnservedCode.TIME_WINDOW,
        "late": UnservedCode.SHIFT,
    }
    reasons = {u.stop_id: u.reason for u in s.unserved}
    assert "5000 L" in reasons["huge"] and "1000 L" in reasons["huge"]
    assert "900 kg" in reasons["heavy"]
    assert "back to any depot" in reasons["trap"]
    assert "00:00-01:00" in reasons["early"] and "06:00" in reasons["early"]


def test_screen_counts_a_break_when_the_trip_alone_needs_one() -> None:
    # 6 h 5 min of service fits a 6 h 10 min shift, but not with the break it then needs
    stop = Stop("slow", 1, 10, service_s=6 * H + 5 * 60)
    vehicles = fleet(TRUCK, 1, depot="depot", shift=TimeWindow(0, 6 * H + 10 * 60))
    assert screen(problem([stop], vehicles=vehicles)).unserved == ()
    ruled = problem([stop], vehicles=vehicles, break_rule=GERMAN_BREAK_RULE)
    assert [u.code for u in screen(ruled).unserved] == [UnservedCode.SHIFT]


def test_screen_drops_vehicles_that_cannot_get_home() -> None:
    t = line(5).astype(float)
    t[2, 0] = np.inf
    stuck = Vehicle("t9", TRUCK, "depot", TimeWindow(0, 10 * H), VehicleStart(2, 0))
    s = screen(problem([Stop("b1", 1, 1)], time_s=t, vehicles=(stuck,)))
    assert s.vehicles == ()
    assert [u.code for u in s.unserved] == [UnservedCode.SHIFT]


# -- plans --------------------------------------------------------------------------


def test_make_route_fills_loads_distance_and_duration() -> None:
    p = problem([Stop("b1", 1, 600, demand_kg=100), Stop("b2", 2, 300)])
    visits = [
        Visit(VisitKind.DEPOT, "depot", 0, 100, 100),
        Visit(VisitKind.STOP, "b1", 1, 110, 120),
        Visit(VisitKind.UNLOAD, "tip", 4, 150, 450),
        Visit(VisitKind.BREAK, "", 4, 450, 2250),
        Visit(VisitKind.STOP, "b2", 2, 2270, 2280),
        Visit(VisitKind.DEPOT, "depot", 0, 2300, 2300),
    ]
    route = make_route(p, p.vehicles[0], visits)
    assert [v.load_l for v in route.visits] == [0, 600, 0, 0, 300, 300]
    assert [v.load_kg for v in route.visits] == [0, 100, 0, 0, 0, 0]
    assert route.distance_m == 10 + 30 + 20 + 20
    assert route.duration_s == 2200
    assert route.stop_ids == ("b1", "b2")
    assert make_route(p, p.vehicles[0], ()).is_empty


def test_plan_helpers() -> None:
    p = problem([Stop("b1", 1, 1), Stop("opt", 2, 1, required=False, penalty=70)])
    route = make_route(
        p,
        p.vehicles[0],
        [
            Visit(VisitKind.DEPOT, "depot", 0, 0, 0),
            Visit(VisitKind.STOP, "b1", 1, 10, 10),
            Visit(VisitKind.DEPOT, "depot", 0, 20, 20),
        ],
    )
    plan = Plan((route,), (Unserved("opt", UnservedCode.OPTIONAL_DROPPED, "cheap"),))
    assert plan.distance_m == 20
    assert plan.served == {"b1"}
    assert plan.penalty(p) == 70
    assert plan.route("truck-1") is route and plan.route("nope") is None
    with pytest.raises(ValueError, match="departure before arrival"):
        Visit(VisitKind.STOP, "b1", 1, 10, 5)


def test_format_clock() -> None:
    assert format_clock(0) == "00:00"
    assert format_clock(6 * H + 5 * 60 + 59) == "06:05"
    assert format_clock(25 * H) == "01:00+1d"
