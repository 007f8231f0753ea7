"""The PyVRP engine: hybrid genetic search for what PyVRP represents natively.

Supported: capacities (litres, and kg as a second load dimension), time windows, service
times, shifts, several depots and vehicle types, optional stops (PyVRP prizes),
re-planning starts (a depot at the truck's position with its initial load) and multi-trip
via disposal sites (PyVRP reload depots whose service time is the unload time).

Not supported, raising :class:`~cityops.routing.errors.UnsupportedProblemError` so callers
can fall back to OR-Tools: driver breaks (when the break rule can bind) and trucks that must
return empty (``unload_before_return``: PyVRP's last trip ends at the depot).

PyVRP searches with a seed-driven random stream: deterministic for a seed when stopped
after ``max_iterations``; with only a time limit, how far it gets depends on the machine.
The model is built with :class:`pyvrp.Model` (locations, depots, clients, vehicle types)
and its matrices are then set in bulk with ``ProblemData.replace``: adding the n² edges
one by one through ``Model.add_edge`` is too slow for city-sized matrices.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyvrp
from pyvrp import Model

from .errors import UnsupportedProblemError
from .model import (
    UNREACHABLE,
    Plan,
    Problem,
    Route,
    SiteKind,
    Unserved,
    UnservedCode,
    Vehicle,
    Visit,
    VisitKind,
    make_route,
)
from .screening import Screening, screen

logger = logging.getLogger(__name__)

__all__ = ["PyVrpEngine", "unsupported_reason"]


def unsupported_reason(problem: Problem) -> str | None:
    """Why PyVRP cannot represent this problem, or None if it can."""
    if any(problem.needs_breaks(v) for v in problem.vehicles):
        return "PyVRP cannot model driver breaks (shifts longer than the break rule allows)"
    if problem.unload_before_return:
        return "PyVRP cannot make trucks return empty (its last trip ends at the depot)"
    return None


@dataclass(frozen=True)
class PyVrpEngine:
    """Solve with PyVRP. ``max_iterations`` makes the result independent of machine speed.

    PyVRP treats required stops as hard: if they cannot all fit, its best solution is
    infeasible as a whole. So the search starts with every required stop required and
    gives up once the ``probe`` share of the budget (time and iterations) has passed
    without a feasible solution; the rest of the budget then goes to a relaxed instance
    where a required stop is optional with a prize larger than any set of routes, so the
    stops that cannot fit are dropped and reported instead. Prizes slow PyVRP down, hence
    not the default.
    """

    max_iterations: int | None = None
    probe: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.probe <= 1:
            raise ValueError("probe must be in (0, 1]")
        if self.max_iterations is not None and self.max_iterations < 0:
            raise ValueError("max_iterations must be >= 0")

    @property
    def name(self) -> str:
        return "pyvrp"

    def solve(
        self,
        problem: Problem,
        *,
        time_limit_s: float,
        seed: int = 0,
        initial: Plan | None = None,
    ) -> Plan:
        reason = unsupported_reason(problem)
        if reason is not None:
            raise UnsupportedProblemError(reason)
        if time_limit_s <= 0:
            raise ValueError("time_limit_s must be positive")
        started = time.monotonic()
        screening = screen(problem)
        if not screening.stops or not screening.vehicles:
            routes = tuple(Route(v.id) for v in problem.vehicles)
            return Plan(routes, _in_order(problem, screening.unserved), self.name)
        strict = _Built(problem, screening, prize_required=False)
        warm = strict.initial_solution(initial) if initial is not None else None
        left = max(time_limit_s - (time.monotonic() - started), 0.001)
        strict_stop = _StopOrGiveUp(left, self.max_iterations, self.probe)
        result = self._run(strict, strict_stop, seed, warm)
        if result.is_feasible():
            return strict.plan(result.best, self.name)
        logger.info("pyvrp: not every required stop fits; letting it drop some")
        relaxed = _Built(problem, screening, prize_required=True)
        left_s = max(time_limit_s - (time.monotonic() - started), 0.001)
        left_its = (
            None
            if self.max_iterations is None
            else max(self.max_iterations - strict_stop.iterations, 0)
        )
        result = self._run(relaxed, _StopOrGiveUp(left_s, left_its, 1.0), seed, None)
        return relaxed.plan(result.best, self.name)

    @staticmethod
    def _run(
        built: _Built, stop: _StopOrGiveUp, seed: int, initial: pyvrp.Solution | None
    ) -> pyvrp.Result:
        started = time.monotonic()
        result = pyvrp.solve(
            built.data,
            stop=stop,
            seed=seed,
            collect_stats=False,
            display=False,
            initial_solution=initial,
        )
        logger.info(
            "pyvrp: cost %s, feasible %s, %d iterations in %.1f s",
            result.cost(),
            result.is_feasible(),
            result.num_iterations,
            time.monotonic() - started,
        )
        return result


class _StopOrGiveUp:
    """PyVRP stopping criterion: the time or iteration budget is spent, or the ``probe``
    share of it is and the best solution is still infeasible (PyVRP then reports its cost
    as the largest integer)."""

    def __init__(self, seconds: float, iterations: int | None, probe: float) -> None:
        self.seconds = seconds
        self.max_iterations = iterations
        self.probe = probe
        self.iterations = -1  # PyVRP calls once before its first iteration
        # the clock starts now, so PyVRP's initial construction counts against the budget
        self._started = time.perf_counter()

    def __call__(self, best_cost: float) -> bool:
        now = time.perf_counter()
        self.iterations += 1
        used_s = now - self._started
        if used_s > self.seconds or (
            self.max_iterations is not None and self.iterations >= self.max_iterations
        ):
            return True
        if best_cost < sys.maxsize:
            return False
        probe_its = None if self.max_iterations is None else self.max_iterations * self.probe
        return used_s > self.seconds * self.probe or (
            probe_its is not None and self.iterations >= probe_its
        )


class _Built:
    """A PyVRP instance for the plannable part of a problem, and the way back."""

    def __init__(self, problem: Problem, screening: Screening, *, prize_required: bool) -> None:
        self.problem = problem
        self.screening = screening
        model = Model()
        self.matrix_index: list[int] = []  # problem location of each PyVRP location
        locations: dict[int, pyvrp.Location] = {}

        def location(index: int) -> pyvrp.Location:
            if index not in locations:
                locations[index] = model.add_location(0, 0, name=str(index))
                self.matrix_index.append(index)
            return locations[index]

        vehicles = [problem.vehicles[i] for i in screening.vehicles]
        # depots: home depots first, then trucks' current positions, then disposal sites
        self.depot_kind: list[tuple[VisitKind, str]] = []
        depots: dict[str, pyvrp.Depot] = {}
        for v in vehicles:
            if v.depot not in depots:
                site = problem.site_by_id[v.depot]
                depots[v.depot] = model.add_depot(location(site.location), name=site.id)
                self.depot_kind.append((VisitKind.DEPOT, site.id))
        starts: dict[str, pyvrp.Depot] = {}
        for v in vehicles:
            if v.start is not None:
                starts[v.id] = model.add_depot(location(v.start.location), name=v.id)
                self.depot_kind.append((VisitKind.START, v.id))
        reloads: list[pyvrp.Depot] = []
        for site in problem.disposal_sites:
            window = site.opening
            reloads.append(
                model.add_depot(
                    location(site.location),
                    tw_early=window.start if window else 0,
                    tw_late=window.end if window else np.iinfo(np.int64).max,
                    service_duration=site.unload_s,
                    name=site.id,
                )
            )
            self.depot_kind.append((VisitKind.UNLOAD, site.id))

        uses_kg = problem.uses_kg
        self.client_stop: list[str] = []
        must = _required_prize(problem, screening) if prize_required else 0
        for k in screening.stops:
            stop = problem.stops[k]
            load = [stop.demand_l, stop.demand_kg or 0] if uses_kg else [stop.demand_l]
            model.add_client(
                location(stop.location),
                pickup=load,
                service_duration=stop.service_s,
                tw_early=stop.window.start if stop.window else 0,
                tw_late=stop.window.end if stop.window else np.iinfo(np.int64).max,
                prize=must if stop.required and prize_required else stop.penalty,
                required=stop.required and not prize_required,
                name=stop.id,
            )
            self.client_stop.append(stop.id)

        unlimited_kg = sum(s.demand_kg or 0 for s in problem.stops) + 1
        groups: dict[tuple[object, ...], list[Vehicle]] = {}
        for v in vehicles:
            key = (v.type, v.depot, v.shift, v.start, v.id if v.start is not None else None)
            groups.setdefault(key, []).append(v)
        self.type_vehicles: list[list[Vehicle]] = []
        for group in groups.values():
            v = group[0]
            capacity = [v.type.capacity_l]
            initial_load = [v.start.load_l if v.start else 0]
            if uses_kg:
                kg = v.type.capacity_kg
                capacity.append(kg if kg is not None else unlimited_kg)
                initial_load.append(v.start.load_kg if v.start else 0)
            model.add_vehicle_type(
                num_available=len(group),
                capacity=capacity,
                start_depot=starts[v.id] if v.start is not None else depots[v.depot],
                end_depot=depots[v.depot],
                tw_early=v.start_time,
                tw_late=v.shift.end,
                initial_load=initial_load,
                reload_depots=reloads,
                name=v.type.name,
            )
            self.type_vehicles.append(group)

        index = np.array(self.matrix_index, dtype=np.int64)
        sub = np.ix_(index, index)
        # PyVRP's stubs type matrices as ``np.ndarray[int]``, which numpy's own types are not
        distances: list[Any] = [np.array(problem.distance_m[sub])]
        durations: list[Any] = [np.array(problem.time_s[sub])]
        self.data = model.data().replace(distance_matrices=distances, duration_matrices=durations)
        self.n_depots = len(self.depot_kind)
        logger.info(
            "pyvrp model: %d clients, %d depots (%d reload), %d vehicle types",
            len(self.client_stop),
            self.n_depots,
            len(reloads),
            len(self.type_vehicles),
        )

    def initial_solution(self, initial: Plan) -> pyvrp.Solution | None:
        """The plan's routes as a PyVRP solution (stops only), or None if they do not fit."""
        client = {sid: i for i, sid in enumerate(self.client_stop)}
        routes: list[pyvrp.Route] = []
        for t, group in enumerate(self.type_vehicles):
            for v in group:
                route = initial.route(v.id)
                visits = [client[x] for x in (route.stop_ids if route else ()) if x in client]
                if visits:
                    routes.append(pyvrp.Route(self.data, visits, t))
        try:
            return pyvrp.Solution(self.data, routes)
        except (ValueError, RuntimeError, IndexError) as exc:
            logger.warning("initial plan does not fit this problem (%s); ignored", exc)
            return None

    def plan(self, solution: pyvrp.Solution, engine: str) -> Plan:
        problem = self.problem
        free = [list(group) for group in self.type_vehicles]
        built: dict[str, Route] = {}
        unserved = list(self.screening.unserved)
        visited: set[str] = set()
        for route in solution.routes():
            vehicle = free[route.vehicle_type()].pop(0)
            stop_ids = [self.client_stop[a.idx] for a in route.schedule() if a.is_client()]
            if not route.is_feasible():
                logger.warning("pyvrp: route of %s infeasible; stops unserved", vehicle.id)
                unserved.extend(
                    Unserved(
                        sid,
                        UnservedCode.NOT_PLANNED,
                        "PyVRP found no feasible route for it within the time limit",
                    )
                    for sid in stop_ids
                )
                visited.update(stop_ids)
                continue
            visits: list[Visit] = []
            for activity in route.schedule():
                if activity.is_client():
                    kind, ref = VisitKind.STOP, self.client_stop[activity.idx]
                    where = problem.stop_by_id[ref].location
                else:
                    kind, ref = self.depot_kind[activity.idx]
                    where = self._depot_location(kind, ref, vehicle)
                visits.append(Visit(kind, ref, where, activity.start_time, activity.end_time))
            built[vehicle.id] = make_route(problem, vehicle, visits)
            visited.update(stop_ids)
        for sid in self.client_stop:
            if sid in visited:
                continue
            stop = problem.stop_by_id[sid]
            if stop.required:
                why = "PyVRP found no feasible route for it within the time limit"
                unserved.append(Unserved(sid, UnservedCode.NOT_PLANNED, why))
            else:
                why = (
                    f"optional stop left out: serving it costs more than its penalty {stop.penalty}"
                )
                unserved.append(Unserved(sid, UnservedCode.OPTIONAL_DROPPED, why))
        routes = tuple(built.get(v.id, Route(v.id)) for v in problem.vehicles)
        return Plan(routes, _in_order(problem, unserved), engine)

    def _depot_location(self, kind: VisitKind, ref: str, vehicle: Vehicle) -> int:
        if kind is VisitKind.START:
            assert vehicle.start is not None
            return vehicle.start.location
        site = self.problem.site_by_id[ref]
        assert kind is not VisitKind.UNLOAD or site.kind is SiteKind.DISPOSAL
        return site.location


def _required_prize(problem: Problem, screening: Screening) -> int:
    """A prize that outweighs any set of routes: serving a required stop always pays."""
    longest = int(problem.distance_m.max(initial=0, where=problem.distance_m < UNREACHABLE))
    n = len(screening.stops) + 2 * len(screening.vehicles)
    optional = sum(s.penalty for s in problem.stops if not s.required)
    return n * max(longest, 1) + optional + 1


def _in_order(
    problem: Problem, unserved: list[Unserved] | tuple[Unserved, ...]
) -> tuple[Unserved, ...]:
    order = {s.id: i for i, s in enumerate(problem.stops)}
    return tuple(sorted(unserved, key=lambda u: order[u.stop_id]))
