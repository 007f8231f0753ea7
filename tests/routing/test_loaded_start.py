"""Re-planned trucks that start loaded or have already worked: solver and checker agree.

Regressions from the re-planning benchmark: a cold OR-Tools solve found no first solution
(status 3) when a truck already carried load and had to come back empty, and a driver who
had worked 5 h was made to take a break although the rest of the route ended before
the 6 h limit, dropping bins the checker would have accepted.
"""

from __future__ import annotations

import numpy as np
import pytest

from cityops.routing.check import ViolationKind, check_plan
from cityops.routing.model import (
    GERMAN_BREAK_RULE,
    Plan,
    Problem,
    Site,
    SiteKind,
    Stop,
    TimeWindow,
    Vehicle,
    VehicleStart,
    VehicleType,
    Visit,
    VisitKind,
    make_route,
)
from cityops.routing.solver import OrToolsEngine

H = 3600
# Depot at 0, bins along a line, the disposal site off to the side; 1 unit = 60 s.
POINTS = [(0, 0), (10, 0), (20, 0), (30, 0), (40, 0), (5, 5)]
INSERTION = ["PARALLEL_CHEAPEST_INSERTION", "LOCAL_CHEAPEST_INSERTION", "PATH_CHEAPEST_ARC"]


def distances() -> np.ndarray:
    p = np.array(POINTS, dtype=float)
    out: np.ndarray = np.floor(np.hypot(*(p[:, None, :] - p[None, :, :]).transpose(2, 0, 1)) + 0.5)
    return out


def problem_with(
    start: VehicleStart,
    stops: tuple[Stop, ...],
    *,
    shift: tuple[int, int] = (6 * H, 14 * H),
    unload_before_return: bool = True,
    break_rule: bool = False,
) -> Problem:
    d = distances()
    sites = (Site("depot", 0), Site("tip", 5, SiteKind.DISPOSAL, unload_s=60))
    truck = Vehicle("t1", VehicleType("truck", 10), "depot", TimeWindow(*shift), start)
    return Problem(
        stops,
        sites,
        (truck,),
        d * 60,
        d,
        break_rule=GERMAN_BREAK_RULE if break_rule else None,
        unload_before_return=unload_before_return,
    )


def bins(*demands: int) -> tuple[Stop, ...]:
    return tuple(Stop(f"b{i}", i, q, service_s=60) for i, q in enumerate(demands, start=2))


@pytest.mark.parametrize("first_solution", INSERTION)
@pytest.mark.parametrize("load", [1, 5, 9, 10])
def test_loaded_truck_that_must_return_empty_gets_a_cold_plan(
    first_solution: str, load: int
) -> None:
    problem = problem_with(VehicleStart(location=1, time_s=11 * H, load_l=load), bins(4, 4))
    plan = OrToolsEngine(first_solution=first_solution, solution_limit=50).solve(
        problem, time_limit_s=5
    )
    assert check_plan(problem, plan) == []
    assert plan.unserved == ()
    (route,) = plan.routes
    assert route.visits[0].kind is VisitKind.START
    assert route.visits[0].load_l == load
    assert route.visits[-1].load_l == 0
    # 8 L of bins on top of the load need one unload if they fit with it, else two
    unloads = sum(1 for v in route.visits if v.kind is VisitKind.UNLOAD)
    assert unloads == (1 if load + 8 <= 10 else 2)


def test_loaded_truck_with_breaks_due() -> None:
    start = VehicleStart(location=1, time_s=11 * H, load_l=6, worked_s=5 * H)
    problem = problem_with(start, bins(4, 4, 3), break_rule=True)
    engine = OrToolsEngine(first_solution="PARALLEL_CHEAPEST_INSERTION", solution_limit=50)
    plan = engine.solve(problem, time_limit_s=5)
    assert check_plan(problem, plan) == []
    assert plan.unserved == ()


def test_load_reported_above_capacity_unloads_before_the_next_bin() -> None:
    problem = problem_with(VehicleStart(location=1, time_s=11 * H, load_l=12), bins(4))
    plan = OrToolsEngine(solution_limit=50).solve(problem, time_limit_s=5)
    assert check_plan(problem, plan) == []
    (route,) = plan.routes
    kinds = [v.kind for v in route.visits]
    assert kinds.index(VisitKind.UNLOAD) < kinds.index(VisitKind.STOP)


def test_checker_flags_a_pick_up_into_an_overfull_truck() -> None:
    problem = problem_with(VehicleStart(location=1, time_s=11 * H, load_l=12), bins(4))
    (truck,) = problem.vehicles
    t = problem.time_s
    # straight to the bin, then unload, then home: the pick-up overloads the truck
    times = [11 * H]
    for a, b, service in [(1, 2, 0), (2, 5, 60), (5, 0, 60)]:
        times.append(times[-1] + service + int(t[a, b]))
    visits = [
        Visit(VisitKind.START, "t1", 1, times[0], times[0]),
        Visit(VisitKind.STOP, "b2", 2, times[1], times[1] + 60),
        Visit(VisitKind.UNLOAD, "tip", 5, times[2], times[2] + 60),
        Visit(VisitKind.DEPOT, "depot", 0, times[3], times[3]),
    ]
    plan = Plan((make_route(problem, truck, visits),))
    found = check_plan(problem, plan)
    assert [(v.kind, v.ref) for v in found] == [(ViolationKind.CAPACITY, "b2")]


def test_driver_who_worked_5h_needs_no_break_if_back_within_the_hour() -> None:
    """The rest of the route ends at 11:52, 5 h 52 min of work: no break is owed."""
    start = VehicleStart(location=1, time_s=11 * H, worked_s=5 * H)
    problem = problem_with(
        start,
        bins(1, 1),
        shift=(6 * H, 12 * H + 20 * 60),
        break_rule=True,
        unload_before_return=False,
    )
    plan = OrToolsEngine(solution_limit=50).solve(problem, time_limit_s=5)
    assert check_plan(problem, plan) == []
    assert plan.unserved == ()
    (route,) = plan.routes
    assert route.visits[-1].arrival_s <= 12 * H
    assert not any(v.kind is VisitKind.BREAK for v in route.visits)


def test_driver_who_worked_5h_breaks_within_the_hour_on_a_longer_route() -> None:
    start = VehicleStart(location=1, time_s=11 * H, worked_s=5 * H)
    problem = problem_with(
        start, bins(1, 1, 1), shift=(6 * H, 15 * H), break_rule=True, unload_before_return=False
    )
    problem = Problem(
        tuple(Stop(s.id, s.location, 1, service_s=30 * 60) for s in problem.stops),
        problem.sites,
        problem.vehicles,
        problem.time_s,
        problem.distance_m,
        break_rule=GERMAN_BREAK_RULE,
    )
    plan = OrToolsEngine(solution_limit=50).solve(problem, time_limit_s=5)
    assert check_plan(problem, plan) == []
    assert plan.unserved == ()
    (route,) = plan.routes
    first_break = next(v for v in route.visits if v.kind is VisitKind.BREAK)
    assert first_break.arrival_s <= 12 * H


def test_overdue_driver_breaks_at_once_and_the_checker_accepts_it() -> None:
    """7 h worked at 11:00: the best any plan can do is a break at 11:00."""
    start = VehicleStart(location=1, time_s=11 * H, worked_s=7 * H)
    problem = problem_with(start, bins(1), break_rule=True, unload_before_return=False)
    plan = OrToolsEngine(solution_limit=50).solve(problem, time_limit_s=5)
    assert check_plan(problem, plan) == []
    (route,) = plan.routes
    first_break = next(v for v in route.visits if v.kind is VisitKind.BREAK)
    assert first_break.arrival_s == 11 * H
    late = [
        Visit(v.kind, v.ref, v.location, v.arrival_s + 60, v.departure_s + 60)
        if v.kind is not VisitKind.START
        else v
        for v in route.visits
    ]
    late_plan = Plan((make_route(problem, problem.vehicles[0], late),))
    assert [v.kind for v in check_plan(problem, late_plan)] == [ViolationKind.BREAK]
