"""Which solver engine a name means: one policy for the commands, the daily plan and the
benchmarks.

The engines' modules are imported when one is made (OR-Tools and PyVRP take seconds to
import; a command needs one of them).
"""

from __future__ import annotations

import logging
from typing import Final

from .errors import UnsupportedProblemError
from .model import Engine, Plan, Problem

__all__ = ["ENGINES", "daily_engine", "make_engine", "solve_with_fallback"]

logger = logging.getLogger(__name__)

#: Engine names understood by :func:`make_engine`.
ENGINES: Final = ("ortools", "ortools-default", "pyvrp")


def make_engine(name: str) -> Engine:
    """The engine called ``name`` (see :data:`ENGINES`)."""
    if name in ("ortools", "ortools-default"):
        from .solver import OrToolsEngine, SearchMode

        return OrToolsEngine(mode=SearchMode.GLS if name == "ortools" else SearchMode.DEFAULTS)
    if name == "pyvrp":
        from .pyvrp_engine import PyVrpEngine

        return PyVrpEngine()
    raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")


def daily_engine(name: str) -> Engine:
    """The engine ``name`` as the day's plan uses it: OR-Tools starts from parallel cheapest
    insertion, since with hundreds of bins and multi-trip the default first solution (path
    cheapest arc) left most bins unplanned (found by bench/routing/replan.py at 450 bins)."""
    if name == "ortools":
        from .solver import OrToolsEngine

        return OrToolsEngine(first_solution="PARALLEL_CHEAPEST_INSERTION")
    return make_engine(name)


def solve_with_fallback(
    engine: Engine, problem: Problem, *, time_limit_s: float, seed: int
) -> Plan:
    """Solve; if the engine cannot represent the problem, fall back to OR-Tools."""
    try:
        return engine.solve(problem, time_limit_s=time_limit_s, seed=seed)
    except UnsupportedProblemError as exc:
        logger.warning("%s: %s; falling back to ortools", engine.name, exc)
        return make_engine("ortools").solve(problem, time_limit_s=time_limit_s, seed=seed)
