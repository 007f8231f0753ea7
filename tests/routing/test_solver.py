"""Both engines on tiny hand-made instances with known answers.

Every plan is also verified by the independent checker. The engines run with a fixed
number of solutions/iterations so the results do not depend on the machine's speed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from cityops.routing.check import check_plan, plan_cost
from cityops.routing.errors import UnsupportedProblemError
from cityops.routing.model import (
    GERMAN_BREAK_RULE,
    Engine,
    Plan,
    Problem,
    Site,
    SiteKind,
    Stop,
    TimeWindow,
    UnservedCode,
    Vehicle,
    VehicleStart,
    VehicleType,
    VisitKind,
    fleet,
)
from cityops.routing.pyvrp_engine import PyVrpEngine
from cityops.routing.solver import OrToolsEngine, SearchMode

H = 3600
LIMIT = 10.0  # safety net only: the engines below stop on solutions/iterations

ORTOOLS = OrToolsEngine(solution_limit=300)
PYVRP = PyVrpEngine(max_iterations=300)
BOTH = [pytest.param(ORTOOLS, id="ortools"), pytest.param(PYVRP, id="pyvrp")]
ALL = [*BOTH, pytest.param(OrToolsEngine(SearchMode.DEFAULTS), id="ortools-default")]


# -- factories ----------------------------------------------------------------------


def euclid(points: Sequence[tuple[float, float]]) -> np.ndarray:
    p = np.array(points, dtype=float)
    return np.floor(np.hypot(*(p[:, None, :] - p[None, :, :]).transpose(2, 0, 1)) + 0.5)


def make_problem(
    points: Sequence[tuple[float, float]],
    stops: Sequence[Stop],
    *,
    capacity: int = 100,
    trucks: int = 1,
    shift: tuple[int, int] = (0, 24 * H),
    seconds_per_unit: int = 1,
    disposal: int | None = None,
    **kwargs: object,
) -> Problem:
    """Depot at location 0; an optional disposal site at location ``disposal``."""
    dist = euclid(points)
    sites = [Site("depot", 0)]
    if disposal is not None:
        sites.append(Site("tip", disposal, SiteKind.DISPOSAL, unload_s=60))
    vehicles = fleet(
        VehicleType("truck", capacity), trucks, depot="depot", shift=TimeWindow(*shift)
    )
    return Problem(
        tuple(stops),
        tuple(sites),
        vehicles,
        dist * seconds_per_unit,
        dist,
        **kwargs,  # type: ignore[arg-type]
    )


def solve_checked(engine: Engine, problem: Problem, **kwargs: object) -> Plan:
    plan = engine.solve(problem, time_limit_s=LIMIT, **kwargs)  # type: ignore[arg-type]
    assert check_plan(problem, plan) == []
    return plan


def partitions(items: list[str]) -> Iterator[list[list[str]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in partitions(rest):
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]
        yield [[first], *part]


def brute_force_cvrp(problem: Problem) -> int:
    """Optimal total distance by enumerating partitions and tours (a handful of stops)."""
    cap = problem.vehicles[0].type.capacity_l
    stops = problem.stop_by_id
    d = problem.distance_m

    def tour(route: list[str]) -> int:
        best = math.inf
        for order in itertools.permutations(route):
            locs = [0, *(stops[s].location for s in order), 0]
            best = min(best, sum(int(d[a, b]) for a, b in itertools.pairwise(locs)))
        return int(best)

    return min(
        sum(tour(r) for r in part)
        for part in partitions(list(stops))
        if len(part) <= len(problem.vehicles)
        and all(sum(stops[s].demand_l for s in r) <= cap for r in part)
    )


SQUARE = [(0, 0), (3, 4), (6, 8), (-3, 4), (-6, 8), (0, -7)]


def square_problem(trucks: int = 4) -> Problem:
    demands = [4, 5, 4, 5, 2]
    stops = [Stop(f"b{i}", i, q) for i, q in enumerate(demands, start=1)]
    return make_problem(SQUARE, stops, capacity=10, trucks=trucks)


# -- plain CVRP ---------------------------------------------------------------------


def test_brute_force_reference() -> None:
    assert brute_force_cvrp(square_problem()) == 54


@pytest.mark.parametrize("engine", ALL)
def test_known_optimum(engine: Engine) -> None:
    problem = square_problem()
    plan = solve_checked(engine, problem)
    assert plan.unserved == ()
    assert plan_cost(problem, plan).total == plan.distance_m == brute_force_cvrp(problem)


@pytest.mark.parametrize("engine", BOTH)
def test_capacity_forces_two_routes(engine: Engine) -> None:
    points = [(0, 0), (10, 0), (11, 0), (12, 0), (13, 0)]
    stops = [Stop(f"b{i}", i, 6) for i in range(1, 5)]
    problem = make_problem(points, stops, capacity=12, trucks=3)
    plan = solve_checked(engine, problem)
    used = [r for r in plan.routes if not r.is_empty]
    assert len(used) == 2
    assert sorted(len(r.stop_ids) for r in used) == [2, 2]
    assert plan.distance_m == brute_force_cvrp(problem) == (10 + 1 + 11) + (12 + 1 + 13)


# -- multi-trip ---------------------------------------------------------------------


@pytest.mark.parametrize("engine", BOTH)
def test_multi_trip_unloads_when_full(engine: Engine) -> None:
    # one truck for two bins at a time; the tip sits between the two pairs of bins
    points = [(0, 0), (10, 0), (11, 0), (20, 0), (21, 0), (15, 0)]
    stops = [Stop(f"b{i}", i, 6) for i in range(1, 5)]
    problem = make_problem(points, stops, capacity=12, disposal=5)
    plan = solve_checked(engine, problem)
    assert plan.unserved == ()
    (route,) = [r for r in plan.routes if r.visits]
    kinds = [v.kind for v in route.visits]
    assert kinds.count(VisitKind.UNLOAD) == 1
    assert max(v.load_l for v in route.visits) == 12
    assert route.visits[kinds.index(VisitKind.UNLOAD)].load_l == 0
    assert route.distance_m == 42  # 0→10→11→15(tip)→20→21→0


def test_multi_trip_return_empty() -> None:
    points = [(0, 0), (10, 0), (11, 0), (20, 0), (21, 0), (15, 0)]
    stops = [Stop(f"b{i}", i, 6) for i in range(1, 5)]
    problem = make_problem(points, stops, capacity=12, disposal=5, unload_before_return=True)
    plan = solve_checked(ORTOOLS, problem)
    assert plan.unserved == ()
    (route,) = [r for r in plan.routes if r.visits]
    assert [v.kind for v in route.visits].count(VisitKind.UNLOAD) == 2
    assert route.visits[-2].kind is VisitKind.UNLOAD
    assert route.visits[-1].load_l == 0
    with pytest.raises(UnsupportedProblemError, match="empty"):
        PYVRP.solve(problem, time_limit_s=LIMIT)


# -- time ---------------------------------------------------------------------------


@pytest.mark.parametrize("engine", BOTH)
def test_time_windows_force_the_order(engine: Engine) -> None:
    # near bin first would be shortest, but the far one closes early
    points = [(0, 0), (10, 0), (20, 0), (0, 10)]
    stops = [
        Stop("near", 1, 1, window=TimeWindow(60, 1000)),
        Stop("far", 2, 1, window=TimeWindow(0, 25)),
        Stop("side", 3, 1),
    ]
    problem = make_problem(points, stops)
    plan = solve_checked(engine, problem)
    (route,) = [r for r in plan.routes if r.visits]
    assert route.stop_ids[:2] == ("far", "near")
    free = make_problem(points, [Stop(s.id, s.location, 1) for s in stops])
    assert solve_checked(engine, free).distance_m < plan.distance_m


def long_day(shift_h: float, break_rule: bool) -> Problem:
    """Four bins of 1 h 55 min service each, one minute apart: 7 h 45 min of work."""
    points = [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0)]
    stops = [Stop(f"b{i}", i, 1, service_s=115 * 60) for i in range(1, 5)]
    return make_problem(
        points,
        stops,
        shift=(6 * H, 6 * H + int(shift_h * H)),
        seconds_per_unit=60,
        break_rule=GERMAN_BREAK_RULE if break_rule else None,
    )


def test_break_inserted_in_a_long_shift() -> None:
    problem = long_day(10, break_rule=True)
    plan = solve_checked(ORTOOLS, problem)
    assert plan.unserved == ()
    (route,) = plan.routes
    breaks = [v for v in route.visits if v.kind is VisitKind.BREAK]
    assert len(breaks) == 1
    assert breaks[0].departure_s - breaks[0].arrival_s == 30 * 60
    assert breaks[0].arrival_s - route.visits[0].departure_s <= 6 * H


def test_break_is_enforced() -> None:
    # 7 h 45 min fits an 8 h shift, but not with the 30 min break it then requires
    assert solve_checked(ORTOOLS, long_day(8, break_rule=False)).unserved == ()
    plan = solve_checked(ORTOOLS, long_day(8, break_rule=True))
    assert len(plan.unserved) == 1
    assert plan.unserved[0].code is UnservedCode.NOT_PLANNED


def test_pyvrp_refuses_breaks_but_not_short_shifts() -> None:
    with pytest.raises(UnsupportedProblemError, match="break"):
        PYVRP.solve(long_day(10, break_rule=True), time_limit_s=LIMIT)
    short = long_day(5.5, break_rule=True)  # the rule cannot bind
    assert len(solve_checked(PYVRP, short).unserved) == 2


def test_replanning_with_a_break_due() -> None:
    """A truck out since 06:00 (5 h worked) must break within the hour."""
    points = [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0)]
    stops = [Stop(f"b{i}", i, 1, service_s=40 * 60) for i in range(2, 5)]
    problem = make_problem(points, stops, shift=(6 * H, 14 * H), seconds_per_unit=60)
    start = VehicleStart(location=1, time_s=11 * H, load_l=5, worked_s=5 * H)
    truck = Vehicle("t1", problem.vehicles[0].type, "depot", TimeWindow(6 * H, 14 * H), start)
    replanned = Problem(
        problem.stops,
        problem.sites,
        (truck,),
        problem.time_s,
        problem.distance_m,
        break_rule=GERMAN_BREAK_RULE,
    )
    plan = solve_checked(ORTOOLS, replanned)
    assert plan.unserved == ()
    (route,) = plan.routes
    assert route.visits[0].kind is VisitKind.START
    assert route.visits[0].arrival_s >= 11 * H
    assert route.visits[-1].load_l == 5 + 3
    first_break = next(v for v in route.visits if v.kind is VisitKind.BREAK)
    assert first_break.arrival_s <= 12 * H


@pytest.mark.parametrize("engine", BOTH)
def test_replanning_start_position_and_load(engine: Engine) -> None:
    points = [(0, 0), (10, 0), (20, 0), (30, 0)]
    stops = [Stop("b2", 2, 4), Stop("b3", 3, 4)]
    base = make_problem(points, stops, capacity=10)
    truck = Vehicle(
        "t1",
        VehicleType("truck", 10),
        "depot",
        TimeWindow(0, 24 * H),
        VehicleStart(location=1, time_s=500, load_l=2),
    )
    problem = Problem(base.stops, base.sites, (truck,), base.time_s, base.distance_m)
    plan = solve_checked(engine, problem)
    (route,) = plan.routes
    assert route.visits[0].kind is VisitKind.START
    assert route.visits[0].location == 1
    assert route.visits[0].arrival_s >= 500
    assert route.visits[-1].load_l == 10
    assert route.distance_m == 10 + 10 + 30


# -- optional stops and infeasibility -------------------------------------------------


@pytest.mark.parametrize("engine", BOTH)
@pytest.mark.parametrize(("penalty", "served"), [(150, False), (250, True)])
def test_optional_stop_follows_its_penalty(engine: Engine, penalty: int, served: bool) -> None:
    points = [(0, 0), (1, 0), (0, 100)]
    stops = [Stop("near", 1, 1), Stop("far", 2, 1, required=False, penalty=penalty)]
    problem = make_problem(points, stops)
    plan = solve_checked(engine, problem)
    assert ("far" in plan.served) is served
    if not served:
        assert [u.code for u in plan.unserved] == [UnservedCode.OPTIONAL_DROPPED]
    assert plan_cost(problem, plan).total == (1 + 100 + 100 if served else 2 + penalty)


@pytest.mark.parametrize("engine", BOTH)
def test_infeasible_stops_are_reported_and_the_rest_planned(engine: Engine) -> None:
    points = [(0, 0), (10, 0), (20, 0), (30, 0), (40, 0), (50, 0)]
    stops = [
        Stop("ok1", 1, 5),
        Stop("huge", 2, 500),
        Stop("island", 3, 5),
        Stop("too-early", 4, 5, window=TimeWindow(0, 10)),
        Stop("ok2", 5, 5),
    ]
    base = make_problem(points, stops, capacity=100, trucks=2)
    time_s = base.time_s.astype(float)
    time_s[3, :] = time_s[:, 3] = np.inf
    time_s[3, 3] = 0
    problem = Problem(base.stops, base.sites, base.vehicles, time_s, base.distance_m)
    plan = solve_checked(engine, problem)
    assert plan.served == {"ok1", "ok2"}
    codes = {u.stop_id: u.code for u in plan.unserved}
    assert codes == {
        "huge": UnservedCode.CAPACITY,
        "island": UnservedCode.UNREACHABLE,
        "too-early": UnservedCode.TIME_WINDOW,
    }
    reasons = {u.stop_id: u.reason for u in plan.unserved}
    assert "500 L" in reasons["huge"] and "100 L" in reasons["huge"]
    assert "00:00-00:00" in reasons["too-early"]


@pytest.mark.parametrize("engine", BOTH)
def test_nothing_plannable_still_answers(engine: Engine) -> None:
    stops = [Stop("huge", 1, 500)]
    problem = make_problem([(0, 0), (1, 0)], stops, capacity=10)
    plan = solve_checked(engine, problem)
    assert [u.code for u in plan.unserved] == [UnservedCode.CAPACITY]
    assert all(r.visits == () for r in plan.routes)


def test_required_stops_beyond_the_fleet_are_dropped_with_a_reason() -> None:
    points = [(0, 0), (1, 0), (2, 0), (3, 0)]
    stops = [Stop(f"b{i}", i, 6) for i in range(1, 4)]
    problem = make_problem(points, stops, capacity=12)  # one truck, room for two
    plan = solve_checked(ORTOOLS, problem)
    assert len(plan.served) == 2
    assert [u.code for u in plan.unserved] == [UnservedCode.NOT_PLANNED]


@pytest.mark.parametrize("engine", BOTH)
def test_weight_limit(engine: Engine) -> None:
    points = [(0, 0), (10, 0), (11, 0)]
    stops = [Stop("b1", 1, 100, demand_kg=800), Stop("b2", 2, 100, demand_kg=800)]
    base = make_problem(points, stops, capacity=10_000, trucks=2)
    vtype = VehicleType("truck", 10_000, capacity_kg=1000)
    vehicles = fleet(vtype, 2, depot="depot", shift=TimeWindow(0, 24 * H))
    problem = Problem(base.stops, base.sites, vehicles, base.time_s, base.distance_m)
    plan = solve_checked(engine, problem)
    assert sorted(len(r.stop_ids) for r in plan.routes) == [1, 1]


# -- determinism and warm starts -------------------------------------------------------


def random_problem(seed: int, n: int = 25) -> Problem:
    rng = np.random.default_rng(seed)
    points = [tuple(p) for p in rng.integers(0, 1000, size=(n + 1, 2))]
    stops = [Stop(f"b{i}", i, int(rng.integers(1, 10))) for i in range(1, n + 1)]
    return make_problem(points, stops, capacity=30, trucks=8)


@pytest.mark.parametrize(
    "engine", [OrToolsEngine(solution_limit=200), PyVrpEngine(max_iterations=200)]
)
def test_deterministic_for_a_seed(engine: Engine) -> None:
    problem = random_problem(7)
    runs = [engine.solve(problem, time_limit_s=LIMIT, seed=3) for _ in range(2)]
    assert runs[0].routes == runs[1].routes


@pytest.mark.parametrize(
    ("engine", "limit"),
    [(OrToolsEngine(solution_limit=1), 1), (PyVrpEngine(max_iterations=0), 0)],
)
def test_initial_solution_is_the_starting_point(engine: Engine, limit: int) -> None:
    """Stopped at once, an engine returns the (deliberately poor) plan it was given."""
    problem = square_problem()
    swapped = [("b1", "b4"), ("b2", "b3"), ("b5",)]
    initial = _plan_from_stop_lists(problem, swapped)
    assert check_plan(problem, initial) == []
    assert plan_cost(problem, initial).total == 64  # optimum: 54
    plan = solve_checked(engine, problem, initial=initial)
    assert [r.stop_ids for r in plan.routes if r.stop_ids] == swapped


@pytest.mark.parametrize("engine", BOTH)
def test_initial_solution_that_does_not_fit_is_ignored(engine: Engine) -> None:
    problem = square_problem()
    junk = _plan_from_stop_lists(problem, [("b1", "b2", "b3", "b4", "b5")])  # over capacity
    plan = solve_checked(engine, problem, initial=junk)
    assert plan.unserved == ()


def _plan_from_stop_lists(problem: Problem, routes: Sequence[Sequence[str]]) -> Plan:
    from cityops.routing.model import Visit, make_route

    out = []
    for vehicle, stop_ids in itertools.zip_longest(problem.vehicles, routes, fillvalue=()):
        assert isinstance(vehicle, Vehicle)
        if not stop_ids:
            out.append(make_route(problem, vehicle, ()))
            continue
        clock, here = 0, 0
        visits = [Visit(VisitKind.DEPOT, "depot", 0, 0, 0)]
        for sid in stop_ids:
            loc = problem.stop_by_id[sid].location
            clock += int(problem.time_s[here, loc])
            visits.append(Visit(VisitKind.STOP, sid, loc, clock, clock))
            here = loc
        clock += int(problem.time_s[here, 0])
        visits.append(Visit(VisitKind.DEPOT, "depot", 0, clock, clock))
        out.append(make_route(problem, vehicle, visits))
    return Plan(tuple(out))


def test_engine_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="strategy"):
        OrToolsEngine(first_solution="NOPE")
    with pytest.raises(ValueError, match="time_limit"):
        ORTOOLS.solve(square_problem(), time_limit_s=0)
    assert OrToolsEngine(SearchMode.DEFAULTS).name == "ortools-default"
