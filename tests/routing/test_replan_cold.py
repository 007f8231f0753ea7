"""A re-plan is never worse than a cold solve with the same engine and limit: the warm
solve (from the current routes) and a cold one run side by side and the better wins
(`solve_replan`). Hand-made cases on the street of `test_replan.py`."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from cityops.routing.check import check_plan
from cityops.routing.replan.problem import build_replan
from cityops.routing.replan.solve import plan_score, solve_replan
from cityops.routing.replan.stability import stabilize
from cityops.routing.replan.startup import ColdPool
from cityops.routing.replan.triggers import Trigger, TriggerKind
from cityops.routing.rows import TruckStateRow
from cityops.routing.solver import OrToolsEngine
from tests.routing.test_replan import (
    DLON,
    ENGINE,
    LAT,
    LON0,
    NET,
    NOW,
    OPTIONS,
    ROUTES,
    overflow,
    route,
    state,
)

CLOSURE = Trigger(TriggerKind.CLOSURE, NOW, detail="C1")
#: An engine that stops at its first solution: from a starting solution that is the
#: starting solution itself, as when a search is stuck in the current routes' structure;
#: cold, parallel cheapest insertion's answer.
FIRST = OrToolsEngine(first_solution="PARALLEL_CHEAPEST_INSERTION", solution_limit=1)


def zigzag() -> dict[str, TruckStateRow]:
    """T02 far away at the disposal site; T01's route zigzags along the street."""
    return {"T02": TruckStateRow("T02", NOW, LAT, LON0 + DLON * 20, 0.0)}


def test_the_cold_solve_wins_when_the_warm_one_is_stuck_in_the_current_routes() -> None:
    routes = {"T01": route("T01", ["B09", "B01", "B08", "B02"])}
    replan = build_replan(
        state(routes=routes, states=zigzag()), "residual", [CLOSURE], network=NET, options=OPTIONS
    )
    problem = replan.problem
    stuck = FIRST.solve(problem, time_limit_s=5, initial=replan.initial)
    assert plan_score(problem, stuck) == plan_score(problem, replan.initial)
    cold = FIRST.solve(problem, time_limit_s=5)
    assert plan_score(problem, cold) < plan_score(problem, stuck)

    solved = solve_replan(FIRST, replan, time_limit_s=5)
    assert solved.source == "cold"
    assert solved.plan == cold, "the same cold solve as one run on its own"
    assert solved.scores == {
        "initial": plan_score(problem, replan.initial),
        "warm": plan_score(problem, stuck),
        "cold": plan_score(problem, cold),
    }
    assert check_plan(problem, solved.plan) == []


def test_never_worse_than_a_cold_solve_with_the_same_engine() -> None:
    cases = [
        (ROUTES, [overflow("B04")]),
        (ROUTES, [overflow("B04"), overflow("B09")]),
        ({"T01": route("T01", ["B03", "B01", "B02"])}, [CLOSURE]),
        ({"T01": route("T01", ["B09", "B01", "B08", "B02"])}, [overflow("B05")]),
    ]
    for engine in (ENGINE, FIRST):
        for routes, triggers in cases:
            s = state(routes=routes, states=zigzag())
            replan = build_replan(s, "residual", triggers, network=NET, options=OPTIONS)
            problem = replan.problem
            solved = solve_replan(engine, replan, time_limit_s=5)
            cold = engine.solve(problem, time_limit_s=5)
            best = plan_score(problem, solved.plan)
            assert best <= plan_score(problem, cold)
            assert best == min(solved.scores.values())
            # after the stability rule: the same stops, at most stable_pct % more distance
            stable, _kept = stabilize(replan, solved.plan, OPTIONS)
            missed, cost = plan_score(problem, stable)
            assert missed == best[0]
            sent_m = sum(r.distance_m for r in stable.routes)
            assert cost <= best[1] + OPTIONS.stable_pct / 100 * sent_m
            assert check_plan(problem, stable) == []


def test_on_a_tie_the_current_routes_win() -> None:
    # already in street order: nothing to gain, nothing reshuffled
    routes = {"T01": route("T01", ["B01", "B02", "B03"])}
    replan = build_replan(
        state(routes=routes, states=zigzag()), "residual", [CLOSURE], network=NET, options=OPTIONS
    )
    solved = solve_replan(ENGINE, replan, time_limit_s=5)
    assert set(solved.scores.values()) == {solved.scores["initial"]}
    assert solved.source == "initial" and solved.plan == replan.initial


def test_the_cold_solve_runs_in_a_process_beside_the_warm_one() -> None:
    # as the service runs it: OR-Tools holds the GIL while it searches, a thread would wait
    routes = {"T01": route("T01", ["B09", "B01", "B08", "B02"])}
    replan = build_replan(
        state(routes=routes, states=zigzag()), "residual", [CLOSURE], network=NET, options=OPTIONS
    )
    with ColdPool() as pool:
        solved = solve_replan(FIRST, replan, time_limit_s=5, pool=pool)
    assert solved.source == "cold"
    assert solved.plan == FIRST.solve(replan.problem, time_limit_s=5), "the same as in-process"
    # a pool that cannot take work: the warm answer (or the starting solution) still comes
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        pool.shutdown()
        solved = solve_replan(FIRST, replan, time_limit_s=5, pool=pool)
    assert set(solved.scores) == {"initial", "warm"}
