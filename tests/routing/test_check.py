"""The independent checker: a hand-made feasible plan passes, each kind of hand-made
violation is caught, and every engine's plan passes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cityops.routing.check import Violation, ViolationKind, check_plan, plan_cost
from cityops.routing.model import (
    GERMAN_BREAK_RULE,
    Engine,
    Plan,
    Problem,
    Route,
    Site,
    SiteKind,
    Stop,
    TimeWindow,
    Unserved,
    UnservedCode,
    VehicleType,
    Visit,
    VisitKind,
    fleet,
)
from cityops.routing.pyvrp_engine import PyVrpEngine
from cityops.routing.solver import OrToolsEngine, SearchMode

H = 3600
D, S, U, B = VisitKind.DEPOT, VisitKind.STOP, VisitKind.UNLOAD, VisitKind.BREAK


def base_problem(**kwargs: object) -> Problem:
    """Depot at 0, bins at 10, 20, 30 m, tip at 50 m; one metre per second."""
    x = np.arange(6) * 10
    dist = np.abs(np.subtract.outer(x, x))
    stops = (
        Stop("b1", 1, 400, service_s=60, window=TimeWindow(0, 1000)),
        Stop("b2", 2, 400, service_s=60),
        Stop("b3", 3, 400),
        Stop("opt", 4, 100, required=False, penalty=75),
    )
    sites = (Site("depot", 0), Site("tip", 5, SiteKind.DISPOSAL, unload_s=300))
    vehicles = fleet(VehicleType("truck", 1000), 2, depot="depot", shift=TimeWindow(0, 10_000))
    fields: dict[str, object] = {"time_s": dist, "distance_m": dist, **kwargs}
    return Problem(stops, sites, vehicles, **fields)  # type: ignore[arg-type]


def good_visits() -> list[Visit]:
    return [
        Visit(D, "depot", 0, 0, 0, 0),
        Visit(S, "b1", 1, 10, 70, 400),
        Visit(S, "b2", 2, 80, 140, 800),
        Visit(U, "tip", 5, 170, 470, 0),
        Visit(S, "b3", 3, 490, 490, 400),
        Visit(D, "depot", 0, 520, 520, 400),
    ]


def plan_of(visits: list[Visit], *, distance: int = 100, duration: int = 520, **kw: object) -> Plan:
    routes = (Route("truck-1", tuple(visits), distance, duration), Route("truck-2"))
    unserved = (Unserved("opt", UnservedCode.OPTIONAL_DROPPED, "too far"),)
    fields: dict[str, object] = {"routes": routes, "unserved": unserved, **kw}
    return Plan(**fields)  # type: ignore[arg-type]


def kinds(violations: list[Violation]) -> set[ViolationKind]:
    return {v.kind for v in violations}


def test_good_plan_passes_and_costs_distance_plus_penalty() -> None:
    problem = base_problem()
    plan = plan_of(good_visits())
    assert check_plan(problem, plan) == []
    cost = plan_cost(problem, plan)
    assert (cost.distance_m, cost.penalty, cost.total) == (100, 75, 175)


def test_missing_stops() -> None:
    problem = base_problem()
    found = check_plan(problem, Plan((Route("truck-1"), Route("truck-2"))))
    assert kinds(found) == {ViolationKind.MISSING}
    assert {v.ref for v in found} == {"b1", "b2", "b3", "opt"}
    no_reason = plan_of(good_visits(), unserved=(Unserved("opt", UnservedCode.SHIFT, " "),))
    assert kinds(check_plan(problem, no_reason)) == {ViolationKind.MISSING}


def test_duplicates() -> None:
    problem = base_problem()
    twice = plan_of(
        good_visits(),
        unserved=(
            Unserved("opt", UnservedCode.OPTIONAL_DROPPED, "x"),
            Unserved("b1", UnservedCode.NOT_PLANNED, "y"),
        ),
    )
    assert [(v.kind, v.ref) for v in check_plan(problem, twice)] == [
        (ViolationKind.DUPLICATE, "b1")
    ]
    good = plan_of(good_visits())
    two_routes = Plan((*good.routes, good.routes[0]), good.unserved)
    assert ViolationKind.DUPLICATE in kinds(check_plan(problem, two_routes))


def test_unknown_references() -> None:
    problem = base_problem()
    visits = good_visits()
    visits[4] = replace(visits[4], ref="nope")
    found = check_plan(problem, plan_of(visits))
    assert {(v.kind, v.ref) for v in found} >= {
        (ViolationKind.UNKNOWN, "nope"),
        (ViolationKind.MISSING, "b3"),
    }
    ghost = Plan((Route("ghost", tuple(good_visits()), 100, 520),))
    assert ViolationKind.UNKNOWN in kinds(check_plan(problem, ghost))


def test_route_shape() -> None:
    problem = base_problem()
    found = check_plan(problem, plan_of(good_visits()[1:], distance=90, duration=510))
    assert ViolationKind.ROUTE_SHAPE in kinds(found)
    visits = good_visits()
    visits[1] = replace(visits[1], location=2)
    assert ViolationKind.ROUTE_SHAPE in kinds(check_plan(problem, plan_of(visits)))


def test_unreachable_leg() -> None:
    dist = np.abs(np.subtract.outer(np.arange(6) * 10, np.arange(6) * 10)).astype(float)
    time_s = dist.copy()
    time_s[5, 3] = np.inf
    problem = base_problem(time_s=time_s, distance_m=dist)
    assert kinds(check_plan(problem, plan_of(good_visits()))) == {ViolationKind.UNREACHABLE}


def test_capacity_and_reported_load() -> None:
    problem = base_problem()
    no_unload = [
        Visit(D, "depot", 0, 0, 0, 0),
        Visit(S, "b1", 1, 10, 70, 400),
        Visit(S, "b2", 2, 80, 140, 800),
        Visit(S, "b3", 3, 150, 150, 1200),
        Visit(D, "depot", 0, 180, 180, 1200),
    ]
    found = check_plan(problem, plan_of(no_unload, distance=60, duration=180))
    assert kinds(found) == {ViolationKind.CAPACITY}
    visits = good_visits()
    visits[3] = replace(visits[3], load_l=800)
    assert kinds(check_plan(problem, plan_of(visits))) == {ViolationKind.LOAD}
    empty_required = base_problem(unload_before_return=True)
    assert kinds(check_plan(empty_required, plan_of(good_visits()))) == {ViolationKind.CAPACITY}


def test_time_window_shift_and_travel() -> None:
    visits = good_visits()
    narrow = base_problem()
    narrow_stops = (replace(narrow.stops[0], window=TimeWindow(0, 5)), *narrow.stops[1:])
    narrow = Problem(narrow_stops, narrow.sites, narrow.vehicles, narrow.time_s, narrow.distance_m)
    assert kinds(check_plan(narrow, plan_of(visits))) == {ViolationKind.TIME_WINDOW}

    problem = base_problem()
    late = [*visits[:-1], replace(visits[-1], arrival_s=10_001, departure_s=10_001)]
    found = check_plan(problem, plan_of(late, duration=10_001))
    assert kinds(found) == {ViolationKind.SHIFT}

    early = list(visits)
    early[2] = replace(early[2], arrival_s=75, departure_s=140)  # 10 m after leaving at 70
    assert kinds(check_plan(problem, plan_of(early))) == {ViolationKind.TRAVEL}
    short_service = list(visits)
    short_service[1] = replace(short_service[1], departure_s=30)
    assert kinds(check_plan(problem, plan_of(short_service))) == {ViolationKind.TRAVEL}


def test_distance_and_duration_as_reported() -> None:
    problem = base_problem()
    assert kinds(check_plan(problem, plan_of(good_visits(), distance=99))) == {
        ViolationKind.DISTANCE
    }
    assert kinds(check_plan(problem, plan_of(good_visits(), duration=1))) == {
        ViolationKind.DISTANCE
    }


def long_route(break_at: int | None, break_len: int = 30 * 60) -> list[Visit]:
    """Three bins, 2 h 30 min of service each (load 100 each in a 1000 L truck)."""
    service = 150 * 60
    visits = [Visit(D, "depot", 0, 0, 0, 0)]
    clock, load = 0, 0
    for pos, sid in enumerate(("b1", "b2", "b3"), start=1):
        clock += 10
        if break_at is not None and visits[-1].departure_s <= break_at < clock + break_len:
            visits.append(Visit(B, "", visits[-1].location, break_at, break_at + break_len, load))
            clock = max(clock, break_at + break_len + 10)
        load += 100
        visits.append(Visit(S, sid, pos, clock, clock + service, load))
        clock += service
    clock += 30
    visits.append(Visit(D, "depot", 0, clock, clock, load))
    return visits


def break_problem() -> Problem:
    x = np.arange(6) * 10
    dist = np.abs(np.subtract.outer(x, x))
    stops = tuple(Stop(f"b{i}", i, 100, service_s=150 * 60) for i in (1, 2, 3))
    vehicles = fleet(VehicleType("truck", 1000), 1, depot="depot", shift=TimeWindow(0, 10 * H))
    return Problem(stops, (Site("depot", 0),), vehicles, dist, dist, break_rule=GERMAN_BREAK_RULE)


def route_plan(visits: list[Visit]) -> Plan:
    distance = 60
    return Plan((Route("truck-1", tuple(visits), distance, visits[-1].arrival_s),))


def test_breaks() -> None:
    problem = break_problem()
    # after b2 (leaves at 5 h 0 min 20 s): fine
    assert check_plan(problem, route_plan(long_route(break_at=18_020))) == []
    found = check_plan(problem, route_plan(long_route(break_at=None)))
    assert kinds(found) == {ViolationKind.BREAK}
    too_short = check_plan(problem, route_plan(long_route(break_at=18_020, break_len=20 * 60)))
    assert kinds(too_short) == {ViolationKind.BREAK}
    overlapping = long_route(break_at=18_020)
    overlapping[3] = replace(overlapping[3], arrival_s=17_000, departure_s=18_800)
    assert ViolationKind.TRAVEL in kinds(check_plan(problem, route_plan(overlapping)))


def mixed_problem(seed: int) -> Problem:
    """Random bins with windows, some optional, a tip for second trips."""
    rng = np.random.default_rng(seed)
    n = 18
    points = rng.integers(0, 3000, size=(n + 2, 2))
    dist = np.floor(np.hypot(*(points[:, None, :] - points[None, :, :]).transpose(2, 0, 1)) + 0.5)
    stops = []
    for i in range(2, n + 2):
        start = int(rng.integers(6, 12)) * H
        window = TimeWindow(start, start + 3 * H) if i % 3 == 0 else None
        optional = i % 5 == 0
        stops.append(
            Stop(
                f"b{i}",
                i,
                int(rng.integers(100, 400)),
                service_s=120,
                window=window,
                required=not optional,
                penalty=int(rng.integers(0, 3000)) if optional else 0,
            )
        )
    sites = (Site("depot", 0), Site("tip", 1, SiteKind.DISPOSAL, unload_s=900))
    vehicles = fleet(VehicleType("truck", 1200), 2, depot="depot", shift=TimeWindow(6 * H, 12 * H))
    return Problem(tuple(stops), sites, vehicles, dist / 8, dist)


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param(OrToolsEngine(solution_limit=30), id="ortools"),
        pytest.param(OrToolsEngine(SearchMode.DEFAULTS), id="ortools-default"),
        pytest.param(PyVrpEngine(max_iterations=200), id="pyvrp"),
    ],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_every_engine_plan_passes(engine: Engine, seed: int) -> None:
    problem = mixed_problem(seed)
    plan = engine.solve(problem, time_limit_s=10, seed=seed)
    assert check_plan(problem, plan) == []
    assert len(plan.served) + len(plan.unserved) == len(problem.stops)
    assert any(v.kind is U for r in plan.routes for v in r.visits)
