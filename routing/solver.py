"""The OR-Tools routing engine: with ``ortools_model.py``, the only modules that import
OR-Tools.

The model (nodes, cost, capacity, time, breaks) is ``ortools_model.py``.

Search: ``GLS`` builds a first solution (path-cheapest-arc by default) and improves it with
guided local search until the limit, with a leaner operator set than OR-Tools' default
(see ``_SLOW_OPERATORS``/``_DROP_OPERATORS``); ``DEFAULTS`` is OR-Tools' default parameters
(greedy descent to the first local optimum), kept as the benchmark baseline.

Determinism: with ``solution_limit`` set, the search stops after that many solutions and
the result depends only on the problem, the parameters and the seed. With only a time
limit, the number of iterations and thus the result can vary with machine load.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from ortools.constraint_solver import (  # type: ignore[import-untyped]
    pywrapcp,
    routing_enums_pb2,
)
from ortools.util import optional_boolean_pb2  # type: ignore[import-untyped]

from .model import (
    Plan,
    Problem,
    Unserved,
    UnservedCode,
    make_route,
)
from .ortools_model import OrToolsModel, unserved_in_order
from .screening import screen

logger = logging.getLogger(__name__)

__all__ = ["OrToolsEngine", "SearchMode"]

# OR-Tools' Python bindings are untyped (SWIG stubs of `Incomplete`); its objects are
# handled as `Any` here and values read back are converted with int().

_BOOL_TRUE: Final = optional_boolean_pb2.BOOL_TRUE
_BOOL_FALSE: Final = optional_boolean_pb2.BOOL_FALSE
#: Operators whose few improvements cost more search time than they save within seconds
#: (measured on CVRPLIB X instances with a 5 s limit: mean gap 9.4 % -> 6.4 %).
_SLOW_OPERATORS: Final = (
    "use_lin_kernighan",
    "use_relocate_expensive_chain",
    "use_global_cheapest_insertion_path_lns",
    "use_local_cheapest_insertion_path_lns",
)
#: Operators that drop visits: useless when every stop is required (dropping one never
#: pays) and there are no unloads to drop.
_DROP_OPERATORS: Final = (
    "use_make_inactive",
    "use_make_chain_inactive",
    "use_swap_active",
    "use_shortest_path_swap_active",
    "use_swap_active_chain",
)


class SearchMode(StrEnum):
    GLS = "gls"  # strong first solution + guided local search until the limit
    DEFAULTS = "defaults"  # OR-Tools default parameters (no metaheuristic): the baseline


@dataclass(frozen=True)
class OrToolsEngine:
    """Solve a :class:`Problem` with OR-Tools' routing library.

    ``first_solution`` names a ``FirstSolutionStrategy`` (GLS mode only).
    ``solution_limit`` stops after that many solutions, which makes the result
    independent of the machine's speed (used by the tests). ``max_reloads`` caps the
    reload copies per disposal site.
    """

    mode: SearchMode = SearchMode.GLS
    first_solution: str = "PATH_CHEAPEST_ARC"
    solution_limit: int | None = None
    max_reloads: int | None = None
    log_search: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", SearchMode(self.mode))
        if not hasattr(routing_enums_pb2.FirstSolutionStrategy, self.first_solution):
            raise ValueError(f"unknown first solution strategy {self.first_solution!r}")
        if self.solution_limit is not None and self.solution_limit <= 0:
            raise ValueError("solution_limit must be positive")

    @property
    def name(self) -> str:
        return "ortools" if self.mode is SearchMode.GLS else "ortools-default"

    def solve(
        self,
        problem: Problem,
        *,
        time_limit_s: float,
        seed: int = 0,
        initial: Plan | None = None,
    ) -> Plan:
        if time_limit_s <= 0:
            raise ValueError("time_limit_s must be positive")
        started = time.monotonic()
        screening = screen(problem)
        if not screening.stops or not screening.vehicles:
            return Plan(
                tuple(_empty_routes(problem)),
                unserved_in_order(problem, screening.unserved),
                self.name,
            )
        model = OrToolsModel(problem, screening, seed, self.max_reloads)
        params = self._parameters(
            time_limit_s,
            multi_trip=bool(model.reload_nodes),
            all_required=all(problem.stops[k].required for k in screening.stops),
        )
        routing = model.build(params)
        # the limit covers building the model too (a second or so for 3000 stops)
        left_s = time_limit_s - (time.monotonic() - started)
        params.time_limit.FromMilliseconds(max(100, round(left_s * 1000)))
        start_assignment = model.initial_assignment(initial) if initial is not None else None
        if start_assignment is not None:
            solution = routing.SolveFromAssignmentWithParameters(start_assignment, params)
        else:
            solution = routing.SolveWithParameters(params)
        elapsed = time.monotonic() - started
        if solution is None:
            logger.warning(
                "%s: no solution (status %s) after %.1f s", self.name, routing.status(), elapsed
            )
            unserved = [
                Unserved(
                    problem.stops[k].id,
                    UnservedCode.NOT_PLANNED,
                    "the solver found no solution within the time limit",
                )
                for k in screening.stops
            ]
            return Plan(
                tuple(_empty_routes(problem)),
                unserved_in_order(problem, (*screening.unserved, *unserved)),
                self.name,
            )
        logger.info(
            "%s: objective %d after %.1f s (status %s)",
            self.name,
            solution.ObjectiveValue(),
            elapsed,
            routing.status(),
        )
        return model.plan(solution, self.name)

    def _parameters(self, time_limit_s: float, *, multi_trip: bool, all_required: bool) -> Any:
        params: Any = pywrapcp.DefaultRoutingSearchParameters()
        if self.mode is SearchMode.GLS:
            params.first_solution_strategy = getattr(
                routing_enums_pb2.FirstSolutionStrategy, self.first_solution
            )
            params.local_search_metaheuristic = (
                routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
            )
            operators = params.local_search_operators
            for name in _SLOW_OPERATORS:
                setattr(operators, name, _BOOL_FALSE)
            if all_required and not multi_trip:
                for name in _DROP_OPERATORS:
                    setattr(operators, name, _BOOL_FALSE)
            if multi_trip:
                # Serving one more stop often needs an unload inserted with it; the default
                # operators insert one node at a time, this LNS inserts several together.
                operators.use_inactive_lns = _BOOL_TRUE
        params.time_limit.FromMilliseconds(max(1, round(time_limit_s * 1000)))
        if self.solution_limit is not None:
            params.solution_limit = self.solution_limit
        params.log_search = self.log_search
        return params


def _empty_routes(problem: Problem) -> list[Any]:
    return [make_route(problem, v, ()) for v in problem.vehicles]
