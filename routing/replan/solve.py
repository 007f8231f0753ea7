"""Solving a re-plan: the warm and the cold solve side by side, and the better of them and
the starting solution by :func:`plan_score`."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from concurrent.futures import BrokenExecutor, Executor, Future
from dataclasses import dataclass, field
from time import monotonic
from typing import Final

from cityops.routing.check import check_plan, plan_cost
from cityops.routing.model import (
    Engine,
    Plan,
    Problem,
)
from cityops.routing.replan.problem import Replan

__all__ = ["Solved", "plan_score", "solve_replan"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Solved:
    """The answer to a re-plan's problem: the best of the candidates by
    :func:`plan_score`, which one it was (``"initial"``, ``"warm"`` or ``"cold"``) and every
    candidate's score (an initial plan that fails ``check_plan`` has none); ``seconds``:
    wall time of the warm solve and of waiting for the cold one after it."""

    plan: Plan
    source: str
    scores: Mapping[str, tuple[int, int]]
    seconds: Mapping[str, float] = field(default_factory=dict)


#: On equal scores the candidate closer to what the drivers have wins.
_PREFERENCE: Final = ("initial", "warm", "cold")


def solve_replan(
    engine: Engine,
    replan: Replan,
    *,
    time_limit_s: float,
    seed: int = 0,
    initial: Plan | None = None,
    pool: Executor | None = None,
) -> Solved:
    """Solve ``replan.problem`` twice, each with the whole `time_limit_s`: warm (from
    `initial`, by default ``replan.initial``, the current routes with what the event calls
    for) and cold (no starting solution, as a fresh solve); the best of the two and the
    starting solution itself (when it passes ``check_plan``) by :func:`plan_score` wins.

    Why both: within a second or two the engine's local search settles in the nearest
    local optimum and its guided search hardly leaves it. From the current routes that
    optimum keeps their structure (which truck does which trips, how many unloads), so
    each re-plan inherits the last one's detours and a chain of re-plans drifts away from
    what a fresh solve finds (docs/performance.md, "Re-planning latency"). A cold solve
    does not drift but can fail where the warm one does not (a fire bin's tight window, a
    first solution that drops most stops). Keeping the better of the two makes the answer
    never worse by score than the cold solve of the same problem, engine, seed and limit.

    With `pool` (a process pool: OR-Tools holds the GIL while it searches, so a thread
    would only run once the warm search is over) the cold solve runs there, beside the
    warm one, and both take one limit of wall time; without, one after the other. If the
    pool fails, the answer is the warm solve's or the starting solution.
    """
    start = replan.initial if initial is None else initial
    problem = replan.problem
    cold: Future[Plan] | None = None
    if pool is not None:
        try:
            cold = pool.submit(engine.solve, problem, time_limit_s=time_limit_s, seed=seed)
        except (RuntimeError, BrokenExecutor) as exc:
            logger.error("%s: cold solve not started: %s", replan.fraction, exc)
    began = monotonic()
    warm = engine.solve(problem, time_limit_s=time_limit_s, seed=seed, initial=start)
    candidates = {"warm": warm}
    seconds = {"warm": monotonic() - began}
    began = monotonic()
    if pool is None:
        candidates["cold"] = engine.solve(problem, time_limit_s=time_limit_s, seed=seed)
    elif cold is not None:
        try:
            candidates["cold"] = cold.result()
        except (BrokenExecutor, OSError, RuntimeError, pickle.PicklingError) as exc:
            logger.error("%s: cold solve failed: %s", replan.fraction, exc)
    seconds["cold"] = monotonic() - began
    problems = check_plan(problem, start)
    if problems:
        logger.warning(
            "%s: the starting solution fails the check (%s); not a candidate",
            replan.fraction,
            problems[0],
        )
    else:
        candidates["initial"] = start
    scores = {name: plan_score(problem, plan) for name, plan in candidates.items()}
    best = min(scores, key=lambda name: (scores[name], _PREFERENCE.index(name)))
    logger.info(
        "%s: %s plan kept (%s)",
        replan.fraction,
        best,
        ", ".join(f"{n} {m} unserved {c / 1000:.1f} km" for n, (m, c) in sorted(scores.items())),
    )
    return Solved(candidates[best], best, scores, seconds)


def plan_score(problem: Problem, plan: Plan) -> tuple[int, int]:
    """(required stops not served, distance plus penalties of optional stops left out):
    smaller is better."""
    stops = problem.stop_by_id
    missed = sum(1 for u in plan.unserved if u.stop_id in stops and stops[u.stop_id].required)
    return missed, plan_cost(problem, plan).total
