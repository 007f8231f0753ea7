"""Independent verification of a plan against its problem.

This module deliberately shares no code with the engines or with the helpers in
``model`` that they use: it reads only the data fields of the problem and the plan and
re-derives everything (loads, times, breaks, distance) from the matrices, so a bug in
an engine's modelling or in the shared plan-building helper shows up here.

:func:`check_plan` returns every :class:`Violation` found (empty list = feasible);
:func:`plan_cost` recomputes the objective (distance plus penalties of the optional stops
left out).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise

from .model import UNREACHABLE, Plan, Problem, Route, SiteKind, Vehicle, Visit, VisitKind

logger = logging.getLogger(__name__)

__all__ = ["PlanCost", "Violation", "ViolationKind", "check_plan", "plan_cost"]


class ViolationKind(StrEnum):
    MISSING = "missing"  # a stop neither served nor reported unserved
    DUPLICATE = "duplicate"  # served twice, or served and reported, or two routes per truck
    UNKNOWN = "unknown"  # a reference to no stop, site or vehicle of the problem
    ROUTE_SHAPE = "route_shape"  # not from the truck's start to its depot, wrong location
    UNREACHABLE = "unreachable"  # a leg with no road path
    CAPACITY = "capacity"  # load above the truck's capacity, or not empty when required
    LOAD = "load"  # reported load differs from the recomputed one
    TIME_WINDOW = "time_window"  # service outside a bin's window or a site's opening
    SHIFT = "shift"  # leaving before the shift or the truck is free, back after it
    TRAVEL = "travel"  # arriving earlier than driving, serving and breaks allow
    BREAK = "break"  # a stretch of work longer than the break rule allows
    DISTANCE = "distance"  # reported distance or duration differs from the recomputed one


@dataclass(frozen=True, slots=True)
class Violation:
    kind: ViolationKind
    vehicle_id: str | None
    ref: str | None
    message: str

    def __str__(self) -> str:
        where = "/".join(x for x in (self.vehicle_id, self.ref) if x)
        return f"{self.kind}: {where}: {self.message}" if where else f"{self.kind}: {self.message}"


@dataclass(frozen=True, slots=True)
class PlanCost:
    distance_m: int
    penalty: int

    @property
    def total(self) -> int:
        return self.distance_m + self.penalty


def plan_cost(problem: Problem, plan: Plan) -> PlanCost:
    """Distance recomputed from the matrix along every route (breaks do not move the
    truck), plus the penalties of optional stops the plan does not serve."""
    distance = 0
    for route in plan.routes:
        places = [v.location for v in route.visits if v.kind is not VisitKind.BREAK]
        distance += sum(int(problem.distance_m[a, b]) for a, b in pairwise(places))
    served = {v.ref for r in plan.routes for v in r.visits if v.kind is VisitKind.STOP}
    penalty = sum(s.penalty for s in problem.stops if not s.required and s.id not in served)
    return PlanCost(distance, penalty)


def check_plan(problem: Problem, plan: Plan) -> list[Violation]:
    """Every way the plan breaks the problem's rules; an empty list means feasible."""
    out: list[Violation] = []
    vehicles = {v.id: v for v in problem.vehicles}
    seen_routes = Counter(r.vehicle_id for r in plan.routes)
    for vid, count in seen_routes.items():
        if vid not in vehicles:
            out.append(Violation(ViolationKind.UNKNOWN, vid, None, "no such vehicle"))
        elif count > 1:
            out.append(Violation(ViolationKind.DUPLICATE, vid, None, f"{count} routes"))
    for route in plan.routes:
        vehicle = vehicles.get(route.vehicle_id)
        if vehicle is not None and route.visits:
            out.extend(_check_route(problem, vehicle, route))
    out.extend(_check_coverage(problem, plan))
    for v in out:
        logger.debug("violation: %s", v)
    return out


def _check_coverage(problem: Problem, plan: Plan) -> list[Violation]:
    out: list[Violation] = []
    stops = {s.id: s for s in problem.stops}
    served = Counter(v.ref for r in plan.routes for v in r.visits if v.kind is VisitKind.STOP)
    reported = Counter(u.stop_id for u in plan.unserved)
    for u in plan.unserved:
        if u.stop_id not in stops:
            out.append(Violation(ViolationKind.UNKNOWN, None, u.stop_id, "unserved: no such stop"))
        elif not u.reason.strip():
            out.append(Violation(ViolationKind.MISSING, None, u.stop_id, "unserved without reason"))
    for stop in problem.stops:
        n_served, n_reported = served[stop.id], reported[stop.id]
        if n_served > 1:
            out.append(Violation(ViolationKind.DUPLICATE, None, stop.id, f"served {n_served}x"))
        if n_reported > 1:
            msg = f"reported unserved {n_reported}x"
            out.append(Violation(ViolationKind.DUPLICATE, None, stop.id, msg))
        if n_served and n_reported:
            msg = "served and reported unserved"
            out.append(Violation(ViolationKind.DUPLICATE, None, stop.id, msg))
        if not n_served and not n_reported:
            what = "required" if stop.required else "optional"
            msg = f"{what} stop neither served nor reported unserved"
            out.append(Violation(ViolationKind.MISSING, None, stop.id, msg))
    return out


def _check_route(problem: Problem, vehicle: Vehicle, route: Route) -> list[Violation]:
    out: list[Violation] = []
    vid = vehicle.id

    def flag(kind: ViolationKind, ref: str | None, message: str) -> None:
        out.append(Violation(kind, vid, ref, message))

    sites = {s.id: s for s in problem.sites}
    stops = {s.id: s for s in problem.stops}
    depot = sites[vehicle.depot]
    visits = route.visits
    first, last = visits[0], visits[-1]
    start = vehicle.start

    # -- shape and references ------------------------------------------------------
    if start is None:
        if first.kind is not VisitKind.DEPOT or first.location != depot.location:
            flag(ViolationKind.ROUTE_SHAPE, first.ref, f"does not start at depot {depot.id}")
    elif first.kind is not VisitKind.START or first.location != start.location:
        flag(ViolationKind.ROUTE_SHAPE, first.ref, "does not start at the truck's position")
    if last.kind is not VisitKind.DEPOT or last.location != depot.location or len(visits) < 2:
        flag(ViolationKind.ROUTE_SHAPE, last.ref, f"does not end at depot {depot.id}")
    for visit in visits[1:-1]:
        if visit.kind in (VisitKind.DEPOT, VisitKind.START):
            flag(ViolationKind.ROUTE_SHAPE, visit.ref, f"{visit.kind} visit inside the route")
        elif visit.kind is VisitKind.STOP:
            stop = stops.get(visit.ref)
            if stop is None:
                flag(ViolationKind.UNKNOWN, visit.ref, "no such stop")
            elif visit.location != stop.location:
                flag(ViolationKind.ROUTE_SHAPE, visit.ref, "visit location is not the bin's")
        elif visit.kind is VisitKind.UNLOAD:
            site = sites.get(visit.ref)
            if site is None or site.kind is not SiteKind.DISPOSAL:
                flag(ViolationKind.UNKNOWN, visit.ref, "no such disposal site")
            elif visit.location != site.location:
                flag(ViolationKind.ROUTE_SHAPE, visit.ref, "visit location is not the site's")

    # -- loads ---------------------------------------------------------------------
    load_l = start.load_l if start is not None else 0
    load_kg = start.load_kg if start is not None else 0
    cap_l, cap_kg = vehicle.type.capacity_l, vehicle.type.capacity_kg
    for visit in visits:
        if visit.kind is VisitKind.STOP and visit.ref in stops:
            load_l += stops[visit.ref].demand_l
            load_kg += stops[visit.ref].demand_kg or 0
        elif visit.kind is VisitKind.UNLOAD:
            load_l = load_kg = 0
        # Only a pick-up can overload the truck: one that starts over-full (its reported
        # load is an estimate) and drives to unload breaks no rule.
        if visit.kind is VisitKind.STOP and load_l > cap_l:
            flag(ViolationKind.CAPACITY, visit.ref, f"{load_l} L on board, capacity {cap_l} L")
        if visit.kind is VisitKind.STOP and cap_kg is not None and load_kg > cap_kg:
            flag(ViolationKind.CAPACITY, visit.ref, f"{load_kg} kg on board, payload {cap_kg} kg")
        if (visit.load_l, visit.load_kg) != (load_l, load_kg):
            flag(
                ViolationKind.LOAD,
                visit.ref,
                f"reports {visit.load_l} L/{visit.load_kg} kg, recomputed {load_l} L/{load_kg} kg",
            )
    if problem.unload_before_return and (load_l or load_kg):
        flag(ViolationKind.CAPACITY, last.ref, f"returns with {load_l} L on board")

    # -- times ---------------------------------------------------------------------
    free_at = vehicle.shift.start if start is None else start.time_s
    if first.arrival_s < free_at:
        flag(ViolationKind.SHIFT, first.ref, f"leaves at {first.arrival_s}, free from {free_at}")
    if last.arrival_s > vehicle.shift.end:
        msg = f"back at {last.arrival_s}, shift ends {vehicle.shift.end}"
        flag(ViolationKind.SHIFT, last.ref, msg)
    rule = problem.break_rule
    for visit in visits:
        need = 0
        if visit.kind is VisitKind.STOP and visit.ref in stops:
            stop = stops[visit.ref]
            need = stop.service_s
            w = stop.window
            if w is not None and not w.start <= visit.arrival_s <= w.end:
                msg = f"service at {visit.arrival_s}, window {w.start}..{w.end}"
                flag(ViolationKind.TIME_WINDOW, visit.ref, msg)
        elif visit.kind is VisitKind.UNLOAD and visit.ref in sites:
            site = sites[visit.ref]
            need = site.unload_s
            w = site.opening
            if w is not None and not w.start <= visit.arrival_s <= w.end:
                msg = f"unload at {visit.arrival_s}, open {w.start}..{w.end}"
                flag(ViolationKind.TIME_WINDOW, visit.ref, msg)
        if visit.departure_s - visit.arrival_s < need:
            msg = f"{visit.departure_s - visit.arrival_s} s on site, service needs {need} s"
            flag(ViolationKind.TRAVEL, visit.ref, msg)

    # legs between places, with the breaks taken on the way
    prev: Visit = first
    pauses: list[Visit] = []
    for visit in visits[1:]:
        if visit.kind is VisitKind.BREAK:
            pauses.append(visit)
            continue
        t = int(problem.time_s[prev.location, visit.location])
        d = int(problem.distance_m[prev.location, visit.location])
        if t >= UNREACHABLE or d >= UNREACHABLE:
            msg = f"no road path from {prev.location} to {visit.location}"
            flag(ViolationKind.UNREACHABLE, visit.ref, msg)
            prev, pauses = visit, []
            continue  # no meaningful travel time to compare with
        clock = prev.departure_s
        for pause in pauses:
            if pause.arrival_s < clock:
                flag(ViolationKind.TRAVEL, "break", f"break at {pause.arrival_s} overlaps work")
            clock = max(clock, pause.departure_s)
        paused = sum(p.departure_s - p.arrival_s for p in pauses)
        if visit.arrival_s < prev.departure_s + t + paused:
            msg = (
                f"arrives at {visit.arrival_s}, cannot before "
                f"{prev.departure_s + t + paused} (left {prev.ref} at {prev.departure_s}, "
                f"{t} s drive, {paused} s break)"
            )
            flag(ViolationKind.TRAVEL, visit.ref, msg)
        if pauses and pauses[-1].departure_s > visit.arrival_s:
            flag(ViolationKind.TRAVEL, "break", f"break runs past arrival at {visit.ref}")
        prev, pauses = visit, []
    if pauses:
        flag(ViolationKind.ROUTE_SHAPE, "break", "break after the route's end")

    # -- breaks --------------------------------------------------------------------
    if rule is not None:
        # A re-planned truck's driver has worked ``worked_s`` up to ``time_s`` (waiting
        # counts as work); otherwise work starts when the route does.
        # A driver already past the limit when the plan starts cannot be helped by it:
        # the plan is right if the break starts at once.
        if start is not None and start.worked_s:
            stretch_from = start.time_s - start.worked_s
            due_by = max(stretch_from + rule.max_work_s, start.time_s)
        else:
            stretch_from = first.arrival_s
            due_by = stretch_from + rule.max_work_s
        for visit in visits:
            if visit.kind is not VisitKind.BREAK:
                continue
            if visit.departure_s - visit.arrival_s < rule.duration_s:
                continue  # too short to count as the legal break
            if visit.arrival_s > due_by:
                msg = f"{visit.arrival_s - stretch_from} s of work before this break"
                flag(ViolationKind.BREAK, "break", msg)
            stretch_from = visit.departure_s
            due_by = stretch_from + rule.max_work_s
        if last.arrival_s > due_by:
            msg = (
                f"{last.arrival_s - stretch_from} s of work without a "
                f"{rule.duration_s} s break (max {rule.max_work_s} s)"
            )
            flag(ViolationKind.BREAK, None, msg)

    # -- summaries -----------------------------------------------------------------
    places = [v.location for v in visits if v.kind is not VisitKind.BREAK]
    distance = sum(int(problem.distance_m[a, b]) for a, b in pairwise(places))
    if distance != route.distance_m:
        flag(ViolationKind.DISTANCE, None, f"reports {route.distance_m} m, recomputed {distance}")
    duration = last.arrival_s - first.departure_s
    if duration != route.duration_s:
        flag(ViolationKind.DISTANCE, None, f"reports {route.duration_s} s, recomputed {duration}")
    return out
