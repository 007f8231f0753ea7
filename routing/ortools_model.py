"""The OR-Tools model of a :class:`~cityops.routing.model.Problem` (``solver.py`` searches
it) and the way back from a solution to a :class:`~cityops.routing.model.Plan`.

Modelling (see docs for the why):

* **Nodes.** One node per depot used as a start/end, one per re-planned truck's current
  position, one per plannable stop and, for multi-trip, ``K`` optional copies of each
  disposal site ("reload nodes"; ``K`` = trips the whole fleet could need). Stops are
  numbered in an order shuffled by the seed: OR-Tools' routing search has no random seed
  of its own, its choices follow node order, so the seed changes the answer
  deterministically.
* **Cost.** Arc cost is the distance matrix (plus one unit per unload, breaking ties
  against needless unloads). Every stop is a disjunction: optional stops
  with their penalty, required stops with a penalty larger than any possible route cost,
  so a required stop that cannot fit is dropped (and reported) instead of the search
  failing. Reload nodes are free disjunctions.
* **Capacity (multi-trip).** A litres dimension (and kg when trucks have a payload) whose
  transit is the stop's demand. A reload node's transit is ``-C`` (the largest capacity)
  and it alone has slack in ``[0, C]``, so the load after an unload can drop to any value
  down to zero; everywhere else the slack is fixed at zero. Reported loads are recomputed
  with a full unload (never worse than what the solver chose). A re-planned truck that
  starts loaded picks its load up at its own start node (transit = its load, capped at
  its capacity), not as a fixed start cumul: OR-Tools' insertion heuristics found no
  first solution with the latter when the truck had to come back empty (status 3).
* **Time.** Added only when it can bind (windows, openings, breaks or short shifts):
  transit = service at the origin + travel time; windows bound the service start; each
  truck's start/end cumuls lie in its shift. Finalizers minimise the end and then maximise
  the start, so trucks leave no earlier than they need to.
* **Breaks.** ``SetBreakIntervalsOfVehicle`` with optional fixed-duration break intervals
  (enough to cover the shift) plus ``SetBreakDistanceDurationOfVehicle(max_work, duration)``:
  no stretch of the route longer than ``max_work`` without a break of at least
  ``duration``. Breaks cannot overlap a service. A re-planned truck that has already
  worked gets a first break due within its remaining allowance, owed only if its route
  ends after that (as ``check.check_plan`` judges it).
* **Unreachable arcs** (``UNREACHABLE`` in a matrix) are removed from the successor
  domains.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from ortools.constraint_solver import (  # type: ignore[import-untyped]
    pywrapcp,
)

from .model import (
    UNREACHABLE,
    Plan,
    Problem,
    Unserved,
    UnservedCode,
    Vehicle,
    Visit,
    VisitKind,
    make_route,
)
from .screening import Screening

__all__ = ["OrToolsModel", "unserved_in_order"]

logger = logging.getLogger(__name__)

# OR-Tools' Python bindings are untyped (SWIG stubs of `Incomplete`); its objects are
# handled as `Any` here and values read back are converted with int().

_KIND_TERMINAL: Final = 0
_KIND_STOP: Final = 1
_KIND_RELOAD: Final = 2
#: Objective cost of an unload beyond its distance, so that an unneeded unload is not
#: kept when it happens to be on the way (a tie in distance).
_UNLOAD_COST: Final = 1

IntArray = npt.NDArray[np.int64]


class OrToolsModel:
    """The node table, the OR-Tools model built from it and the way back to a Plan."""

    def __init__(
        self, problem: Problem, screening: Screening, seed: int, max_reloads: int | None
    ) -> None:
        self.problem = problem
        self.screening = screening
        self.vehicles = [problem.vehicles[i] for i in screening.vehicles]
        stop_order = list(screening.stops)
        random.Random(seed).shuffle(stop_order)

        loc: list[int] = []
        kind: list[int] = []
        ref: list[int] = []  # stop index, site index or vehicle position
        terminals: dict[tuple[str, int], int] = {}

        def terminal(key: tuple[str, int], location: int) -> int:
            if key not in terminals:
                terminals[key] = len(loc)
                loc.append(location)
                kind.append(_KIND_TERMINAL)
                ref.append(key[1])
            return terminals[key]

        site_index = {s.id: i for i, s in enumerate(problem.sites)}
        self.starts: list[int] = []
        self.ends: list[int] = []
        for m, v in enumerate(self.vehicles):
            depot = site_index[v.depot]
            if v.start is None:
                self.starts.append(terminal(("site", depot), problem.start_location(v)))
            else:
                self.starts.append(terminal(("vehicle", m), v.start.location))
            self.ends.append(terminal(("site", depot), problem.end_location(v)))
        self.stop_node: dict[str, int] = {}
        for k in stop_order:
            self.stop_node[problem.stops[k].id] = len(loc)
            loc.append(problem.stops[k].location)
            kind.append(_KIND_STOP)
            ref.append(k)
        self.reload_nodes: dict[str, list[int]] = {}
        copies = self._reload_copies(max_reloads)
        for i, site in enumerate(problem.sites):
            if site in problem.disposal_sites and copies:
                nodes = list(range(len(loc), len(loc) + copies))
                self.reload_nodes[site.id] = nodes
                loc.extend([site.location] * copies)
                kind.extend([_KIND_RELOAD] * copies)
                ref.extend([i] * copies)
        self.loc = np.array(loc, dtype=np.int64)
        self.kind = np.array(kind, dtype=np.int64)
        self.ref = np.array(ref, dtype=np.int64)
        self.routing: Any = None
        self.manager: Any = None
        self.time_dim: Any = None
        self.breaks: list[list[Any]] = []

    # -- building -------------------------------------------------------------------

    def _reload_copies(self, cap: int | None) -> int:
        problem = self.problem
        if not problem.disposal_sites:
            return 0
        stops = [problem.stops[k] for k in self.screening.stops]
        trips = 0
        min_l = min(v.type.capacity_l for v in self.vehicles)
        trips = max(trips, math.ceil(sum(s.demand_l for s in stops) / max(min_l, 1)))
        kg_caps = [v.type.capacity_kg for v in self.vehicles if v.type.capacity_kg is not None]
        if kg_caps and problem.uses_kg:
            total_kg = sum(s.demand_kg or 0 for s in stops)
            trips = max(trips, math.ceil(total_kg / max(min(kg_caps), 1)))
        trips += len(self.vehicles)  # a final unload or a truck starting loaded
        return trips if cap is None else min(trips, cap)

    def _service(self) -> IntArray:
        problem = self.problem
        out = np.zeros(len(self.loc), dtype=np.int64)
        for n in np.flatnonzero(self.kind == _KIND_STOP):
            out[n] = problem.stops[self.ref[n]].service_s
        for n in np.flatnonzero(self.kind == _KIND_RELOAD):
            out[n] = problem.sites[self.ref[n]].unload_s
        return out

    def _demand(self, unit: str) -> tuple[IntArray, int]:
        """Transit of the load dimension per node, and the reload drop ``C``."""
        problem = self.problem
        out = np.zeros(len(self.loc), dtype=np.int64)
        for n in np.flatnonzero(self.kind == _KIND_STOP):
            stop = problem.stops[self.ref[n]]
            out[n] = stop.demand_l if unit == "l" else (stop.demand_kg or 0)
        # A truck that starts loaded picks its load up at its own start node: the load
        # then grows along the route like any other, which the insertion heuristics
        # handle (a fixed start cumul they do not: status 3, no first solution).
        # A load reported above the capacity counts as a full truck: it must unload
        # before its next bin.
        capacities = self._capacities(unit)
        for m, v in enumerate(self.vehicles):
            if v.start is not None:
                load = v.start.load_l if unit == "l" else v.start.load_kg
                out[self.starts[m]] = min(load, capacities[m])
        drop = max(capacities)
        out[self.kind == _KIND_RELOAD] = -drop
        return out, drop

    def _capacities(self, unit: str) -> list[int]:
        if unit == "l":
            return [v.type.capacity_l for v in self.vehicles]
        unlimited = sum(s.demand_kg or 0 for s in self.problem.stops) + max(
            (v.start.load_kg for v in self.vehicles if v.start is not None), default=0
        )
        return [
            v.type.capacity_kg if v.type.capacity_kg is not None else unlimited
            for v in self.vehicles
        ]

    def _needs_time(self, service: IntArray) -> bool:
        problem = self.problem
        stops = [problem.stops[k] for k in self.screening.stops]
        if any(s.window is not None for s in stops):
            return True
        if any(s.opening is not None for s in problem.disposal_sites):
            return True
        if any(problem.needs_breaks(v) for v in self.vehicles):
            return True
        times = problem.time_s[np.ix_(self.loc, self.loc)]
        bound = int(service.sum()) + len(self.loc) * int(times.max(initial=0))
        return any(v.shift.end - v.start_time < bound for v in self.vehicles)

    def build(self, params: Any) -> Any:
        problem = self.problem
        n_vehicles = len(self.vehicles)
        manager: Any = pywrapcp.RoutingIndexManager(
            len(self.loc), n_vehicles, self.starts, self.ends
        )
        routing: Any = pywrapcp.RoutingModel(manager)
        self.manager, self.routing = manager, routing
        has_reloads = bool(self.reload_nodes)

        dist = problem.distance_m[np.ix_(self.loc, self.loc)]
        cost = dist.copy()
        cost[:, self.kind == _KIND_RELOAD] += _UNLOAD_COST
        dist_cb = routing.RegisterTransitMatrix(cost.tolist())
        routing.SetArcCostEvaluatorOfAllVehicles(dist_cb)

        units = ["l", "kg"] if problem.uses_kg else ["l"]
        for unit in units:
            demand, drop = self._demand(unit)
            cb = routing.RegisterUnaryTransitVector(demand.tolist())
            routing.AddDimensionWithVehicleCapacity(
                cb, drop if has_reloads else 0, self._capacities(unit), True, f"load_{unit}"
            )
            dim: Any = routing.GetDimensionOrDie(f"load_{unit}")
            for m in range(n_vehicles):
                if problem.unload_before_return:
                    dim.CumulVar(routing.End(m)).SetValue(0)
            if has_reloads:
                for index in range(routing.Size()):
                    if self.kind[manager.IndexToNode(index)] != _KIND_RELOAD:
                        dim.SlackVar(index).SetValue(0)

        service = self._service()
        if self._needs_time(service):
            self._add_time(service)

        penalties = self._penalties(dist)
        for n in np.flatnonzero(self.kind == _KIND_STOP):
            routing.AddDisjunction([manager.NodeToIndex(int(n))], int(penalties[n]))
        for nodes in self.reload_nodes.values():
            for node in nodes:
                routing.AddDisjunction([manager.NodeToIndex(node)], 0)

        routing.CloseModelWithParameters(params)
        self._remove_unreachable_arcs()
        logger.info(
            "ortools model: %d stops, %d reload nodes, %d vehicles, time dimension %s",
            int((self.kind == _KIND_STOP).sum()),
            int((self.kind == _KIND_RELOAD).sum()),
            n_vehicles,
            "on" if self.time_dim is not None else "off",
        )
        return routing

    def _penalties(self, dist: IntArray) -> IntArray:
        """Optional stops: their penalty; required: more than any set of routes costs."""
        problem = self.problem
        finite = dist[dist < UNREACHABLE]
        worst_route_set = (len(self.loc) + len(self.vehicles)) * int(finite.max(initial=0))
        optional_total = sum(s.penalty for s in problem.stops if not s.required)
        required = worst_route_set + optional_total + 1
        out = np.zeros(len(self.loc), dtype=np.int64)
        for n in np.flatnonzero(self.kind == _KIND_STOP):
            stop = problem.stops[self.ref[n]]
            out[n] = required if stop.required else stop.penalty
        return out

    def _add_time(self, service: IntArray) -> None:
        problem, routing, manager = self.problem, self.routing, self.manager
        times = problem.time_s[np.ix_(self.loc, self.loc)] + service[:, None]
        times = np.minimum(times, UNREACHABLE)
        cb = routing.RegisterTransitMatrix(times.tolist())
        horizon = max(v.shift.end for v in self.vehicles)
        routing.AddDimension(cb, horizon, horizon, False, "time")
        dim: Any = routing.GetDimensionOrDie("time")
        self.time_dim = dim
        for n in np.flatnonzero(self.kind == _KIND_STOP):
            window = problem.stops[self.ref[n]].window
            if window is not None:
                dim.CumulVar(manager.NodeToIndex(int(n))).SetRange(
                    window.start, min(window.end, horizon)
                )
        for n in np.flatnonzero(self.kind == _KIND_RELOAD):
            opening = problem.sites[self.ref[n]].opening
            if opening is not None:
                dim.CumulVar(manager.NodeToIndex(int(n))).SetRange(
                    opening.start, min(opening.end, horizon)
                )
        solver: Any = routing.solver()
        visit = [int(service[manager.IndexToNode(i)]) for i in range(routing.Size())]
        for m, v in enumerate(self.vehicles):
            if v.start is None:
                dim.CumulVar(routing.Start(m)).SetRange(v.start_time, v.shift.end)
            else:  # a re-planned truck is on the road now; it waits at its next stop
                dim.CumulVar(routing.Start(m)).SetValue(v.start_time)
            dim.CumulVar(routing.End(m)).SetRange(v.start_time, v.shift.end)
            routing.AddVariableMinimizedByFinalizer(dim.CumulVar(routing.End(m)))
            if v.start is None:
                routing.AddVariableMaximizedByFinalizer(dim.CumulVar(routing.Start(m)))
            self.breaks.append(self._add_breaks(solver, dim, m, v, visit))

    def _add_breaks(self, solver: Any, dim: Any, m: int, v: Vehicle, visit: list[int]) -> list[Any]:
        rule = self.problem.break_rule
        if rule is None or not self.problem.needs_breaks(v):
            return []
        worked = v.start.worked_s if v.start is not None else 0
        latest = v.shift.end - rule.duration_s
        count = max(1, (v.shift.end - v.start_time + worked) // rule.max_work_s)
        breaks: list[Any] = []
        if worked:
            # The driver owes a break by `deadline` only if the route runs past it: a
            # truck back at its depot before then needs none (as check_plan sees it).
            deadline = v.start_time + max(0, rule.max_work_s - worked)
            due = solver.FixedDurationIntervalVar(
                v.start_time,
                max(v.start_time, min(latest, deadline)),
                rule.duration_s,
                True,
                f"{v.id} due",
            )
            horizon = max(x.shift.end for x in self.vehicles)
            end = dim.CumulVar(self.routing.End(m))
            solver.Add(end <= deadline + horizon * due.PerformedExpr())
            breaks.append(due)
        for b in range(count):
            breaks.append(
                solver.FixedDurationIntervalVar(
                    v.start_time, max(v.start_time, latest), rule.duration_s, True, f"{v.id} {b}"
                )
            )
        dim.SetBreakIntervalsOfVehicle(breaks, m, visit)
        dim.SetBreakDistanceDurationOfVehicle(rule.max_work_s, rule.duration_s, m)
        return breaks

    def _remove_unreachable_arcs(self) -> None:
        problem, routing, manager = self.problem, self.routing, self.manager
        size = int(routing.Size())
        index_loc = self.loc[[manager.IndexToNode(i) for i in range(size + len(self.vehicles))]]
        sub = np.ix_(index_loc, index_loc)
        bad = (problem.time_s[sub] >= UNREACHABLE) | (problem.distance_m[sub] >= UNREACHABLE)
        # An unload right after an unload is never useful, and copies of a site chain for
        # free: forbid those arcs.
        reload = self.kind[[manager.IndexToNode(i) for i in range(size + len(self.vehicles))]]
        reload = reload == _KIND_RELOAD
        bad[np.ix_(reload, reload)] = True
        removed = 0
        for i, j in np.argwhere(bad[:size]):
            if i != j:
                routing.NextVar(int(i)).RemoveValue(int(j))
                removed += 1
        if removed:
            logger.info("ortools model: %d unreachable or useless arcs removed", removed)

    # -- initial solution -----------------------------------------------------------

    def initial_assignment(self, initial: Plan) -> Any:
        """The plan's routes as an assignment, or None if it does not fit this model."""
        manager, routing = self.manager, self.routing
        free = {site: list(nodes) for site, nodes in self.reload_nodes.items()}
        routes: list[list[int]] = []
        for v in self.vehicles:
            route = initial.route(v.id)
            indices: list[int] = []
            for visit in route.visits if route is not None else ():
                if visit.kind is VisitKind.STOP and visit.ref in self.stop_node:
                    indices.append(manager.NodeToIndex(self.stop_node[visit.ref]))
                elif visit.kind is VisitKind.UNLOAD and free.get(visit.ref):
                    indices.append(manager.NodeToIndex(free[visit.ref].pop(0)))
            routes.append(indices)
        assignment = routing.ReadAssignmentFromRoutes(routes, True)
        if assignment is None:
            logger.warning("initial plan is not feasible for this problem; ignored")
        return assignment

    # -- back to a plan -------------------------------------------------------------

    def plan(self, solution: Any, engine: str) -> Plan:
        problem, routing, manager = self.problem, self.routing, self.manager
        by_vehicle = {v.id: m for m, v in enumerate(self.vehicles)}
        routes = []
        for v in problem.vehicles:
            m = by_vehicle.get(v.id)
            if m is None:
                routes.append(make_route(problem, v, ()))
                continue
            indices = [int(routing.Start(m))]
            while not routing.IsEnd(indices[-1]):
                indices.append(int(solution.Value(routing.NextVar(indices[-1]))))
            if len(indices) == 2:
                routes.append(make_route(problem, v, ()))
                continue
            routes.append(make_route(problem, v, self._visits(solution, m, v, indices)))

        unserved = list(self.screening.unserved)
        for stop_id, n in self.stop_node.items():
            index = manager.NodeToIndex(n)
            if int(solution.Value(routing.NextVar(index))) != index:
                continue
            stop = problem.stop_by_id[stop_id]
            if stop.required:
                unserved.append(
                    Unserved(
                        stop_id,
                        UnservedCode.NOT_PLANNED,
                        "no room in any route: the fleet's capacity, time windows or shifts "
                        "are too tight (solver, within the time limit)",
                    )
                )
            else:
                unserved.append(
                    Unserved(
                        stop_id,
                        UnservedCode.OPTIONAL_DROPPED,
                        f"optional stop left out: serving it costs more than its penalty "
                        f"{stop.penalty}",
                    )
                )
        return Plan(tuple(routes), unserved_in_order(problem, unserved), engine)

    def _visits(self, solution: Any, m: int, v: Vehicle, indices: list[int]) -> list[Visit]:
        manager = self.manager
        nodes = [int(manager.IndexToNode(i)) for i in indices]
        service = [self._node_service(n) for n in nodes]
        if self.time_dim is not None:
            starts = [int(solution.Value(self.time_dim.CumulVar(i))) for i in indices]
        else:
            starts = self._simulate(v, nodes, service)
        visits: list[Visit] = []
        for pos, n in enumerate(nodes):
            kind, ref = self._describe(n, v, first=pos == 0)
            visits.append(
                Visit(kind, ref, int(self.loc[n]), starts[pos], starts[pos] + service[pos])
            )
        if self.breaks and self.breaks[m]:
            visits = self._insert_breaks(solution, m, visits)
        return visits

    def _node_service(self, n: int) -> int:
        if self.kind[n] == _KIND_STOP:
            return self.problem.stops[int(self.ref[n])].service_s
        if self.kind[n] == _KIND_RELOAD:
            return self.problem.sites[int(self.ref[n])].unload_s
        return 0

    def _describe(self, n: int, v: Vehicle, *, first: bool) -> tuple[VisitKind, str]:
        if self.kind[n] == _KIND_STOP:
            return VisitKind.STOP, self.problem.stops[self.ref[n]].id
        if self.kind[n] == _KIND_RELOAD:
            return VisitKind.UNLOAD, self.problem.sites[self.ref[n]].id
        if first and v.start is not None:
            return VisitKind.START, v.id
        return VisitKind.DEPOT, v.depot

    def _simulate(self, v: Vehicle, nodes: list[int], service: list[int]) -> list[int]:
        """Service start times when no time dimension was needed: drive, wait, serve."""
        times = self.problem.time_s
        starts = [v.start_time]
        for pos in range(1, len(nodes)):
            a, b = self.loc[nodes[pos - 1]], self.loc[nodes[pos]]
            starts.append(starts[-1] + service[pos - 1] + int(times[a, b]))
        return starts

    def _insert_breaks(self, solution: Any, m: int, visits: list[Visit]) -> list[Visit]:
        """Breaks taken between the route's first departure and last arrival."""
        first, last = visits[0].departure_s, visits[-1].arrival_s
        taken = sorted(
            int(solution.StartValue(b)) for b in self.breaks[m] if solution.PerformedValue(b) == 1
        )
        duration = self.problem.break_rule.duration_s if self.problem.break_rule else 0
        out = list(visits)
        for start in taken:
            if start < first or start + duration > last:
                continue  # before the truck leaves or after it is back: not part of the day
            pos = max(i for i, visit in enumerate(out) if visit.departure_s <= start)
            where = out[pos].location
            out.insert(pos + 1, Visit(VisitKind.BREAK, "", where, start, start + duration))
        return out


def unserved_in_order(problem: Problem, unserved: Any) -> tuple[Unserved, ...]:
    order = {s.id: i for i, s in enumerate(problem.stops)}
    return tuple(sorted(unserved, key=lambda u: order[u.stop_id]))
