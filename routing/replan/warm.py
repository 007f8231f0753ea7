"""The warm start of a re-plan: every truck's remaining route timed as it would be driven,
shortened where it can no longer be, with the new stops inserted where they cost least.

The solver starts from this plan, and the stability rule compares against it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from cityops.routing.model import (
    UNREACHABLE,
    Plan,
    Problem,
    Route,
    TimeWindow,
    Unserved,
    UnservedCode,
    Vehicle,
    VehicleStart,
    Visit,
    VisitKind,
    make_route,
)
from cityops.routing.screening import screen

__all__ = [
    "PoolItem",
    "Seq",
    "insert_stops",
    "pinned_prefix",
    "repair",
    "tidy",
    "timed",
    "timed_plan",
]

logger = logging.getLogger(__name__)


Seq = list[tuple[VisitKind, str]]


@dataclass
class PoolItem:
    bin_id: str
    demand_l: int
    required: bool
    penalty: int = 0
    not_before: int | None = None
    urgent: bool = False


def tidy(seq: list[tuple[VisitKind, str]]) -> list[tuple[VisitKind, str]]:
    """No unload right after another (the engines forbid it)."""
    out: list[tuple[VisitKind, str]] = []
    for item in seq:
        if item[0] is VisitKind.UNLOAD and out and out[-1][0] is VisitKind.UNLOAD:
            continue
        out.append(item)
    return out


def timed(
    problem: Problem,
    v: Vehicle,
    seq: Sequence[tuple[VisitKind, str]],
    *,
    drive_home: bool = False,
) -> list[Visit] | None:
    """The route driven as early as possible; None when it misses a window, overloads the
    truck, returns loaded or ends after the shift. Without visits: no route (``[]``),
    unless ``drive_home`` (then the drive from the start to the depot).

    A break is taken before a leg whenever that leg's visit would end a stretch of work
    longer than the rule allows, and, as the OR-Tools model requires of a truck that has
    worked already, before the route runs past its due time (the end of its allowance, at
    the latest the shift end minus a break). No break starts after the shift end minus a
    break.
    """
    if not seq and not drive_home:
        return []
    stops, sites, rule = problem.stop_by_id, problem.site_by_id, problem.break_rule
    t, loc = v.start_time, problem.start_location(v)
    if v.start is not None:
        visits = [Visit(VisitKind.START, v.id, loc, t, t)]
    else:
        visits = [Visit(VisitKind.DEPOT, v.depot, loc, t, t)]
    worked = v.start.worked_s if v.start is not None else 0
    stretch = t - worked
    load = v.start.load_l if v.start is not None else 0
    due: int | None = None
    latest = v.shift.end
    if rule is not None and problem.needs_breaks(v):
        latest = v.shift.end - rule.duration_s
        if worked:
            due = min(latest, t + max(0, rule.max_work_s - worked))
    for kind, ref in [*seq, (VisitKind.DEPOT, v.depot)]:
        window: TimeWindow | None = None
        if kind is VisitKind.STOP:
            stop = stops[ref]
            where, service, window = stop.location, stop.service_s, stop.window
            load += stop.demand_l
        elif kind is VisitKind.UNLOAD:
            site = sites[ref]
            where, service, window = site.location, site.unload_s, site.opening
            load = 0
        else:
            where, service = problem.end_location(v), 0
        travel = int(problem.time_s[loc, where])
        if load > v.type.capacity_l or travel >= UNREACHABLE:
            return None
        lo = window.start if window is not None else 0
        arrive = max(t + travel, lo)
        overdue = due is not None and arrive + service > due
        if rule is not None and (arrive + service - stretch > rule.max_work_s or overdue):
            if t > latest or (due is not None and t > due):
                return None
            visits.append(Visit(VisitKind.BREAK, "", loc, t, t + rule.duration_s))
            stretch = t + rule.duration_s
            due = None
            arrive = max(stretch + travel, lo)
            if arrive + service - stretch > rule.max_work_s:
                return None
        if window is not None and arrive > window.end:
            return None
        visits.append(Visit(kind, ref, where, arrive, arrive + service))
        t, loc = arrive + service, where
    if t > v.shift.end or (problem.unload_before_return and load > 0):
        return None
    return visits


def pinned_prefix(
    problem: Problem, v: Vehicle, kind: VisitKind, ref: str
) -> tuple[tuple[Visit, ...], VehicleStart] | None:
    """The truck's route from where it is to the end of its pinned visit (a break first
    when the visit would end a stretch longer than the rule allows: the break is due at
    once), and where, when and with what load and work it is free after it. None when
    the visit cannot be made (no start, unreachable, a closed window, over capacity, past
    the shift)."""
    start = v.start
    if start is None:
        return None
    window: TimeWindow | None
    if kind is VisitKind.STOP:
        stop = problem.stop_by_id.get(ref)
        if stop is None:
            return None
        where, service, window = stop.location, stop.service_s, stop.window
        load = start.load_l + stop.demand_l
    else:
        site = problem.site_by_id[ref]
        where, service, window, load = site.location, site.unload_s, site.opening, 0
    travel = int(problem.time_s[start.location, where])
    if travel >= UNREACHABLE or load > v.type.capacity_l:
        return None
    t, lo = start.time_s, window.start if window is not None else 0
    visits = [Visit(VisitKind.START, v.id, start.location, t, t)]
    stretch = t - start.worked_s
    arrive = max(t + travel, lo)
    rule = problem.break_rule
    if (
        rule is not None
        and problem.needs_breaks(v)
        and arrive + service - stretch > rule.max_work_s
    ):
        visits.append(Visit(VisitKind.BREAK, "", start.location, t, t + rule.duration_s))
        stretch = t = t + rule.duration_s
        arrive = max(t + travel, lo)
    end = arrive + service
    if (window is not None and arrive > window.end) or end > v.shift.end:
        return None
    visits.append(Visit(kind, ref, where, arrive, end))
    after = VehicleStart(location=where, time_s=end, load_l=load, worked_s=end - stretch)
    return tuple(visits), after


def repair(problem: Problem, v: Vehicle, seq: Seq) -> tuple[Seq, list[str]]:
    """The route with its last stops dropped until it can be driven (a truck running late
    cannot keep all of them); returns it and the dropped stops."""
    dropped: list[str] = []
    while seq and timed(problem, v, seq) is None:
        at = [i for i, (kind, _) in enumerate(seq) if kind is VisitKind.STOP]
        if not at:
            return [], dropped
        dropped.append(seq[at[-1]][1])
        seq = tidy([*seq[: at[-1]], *seq[at[-1] + 1 :]])
    return seq, dropped


@dataclass
class _Shape:
    """A route's places and trips, for insertion: ``places`` from the start to the depot;
    gap ``g`` lies between ``places[g]`` and ``places[g + 1]`` in trip ``trip[g]``, whose
    load is ``loads[trip[g]]``; a trip after the last unload cannot take a stop."""

    places: npt.NDArray[np.int64]
    trip: npt.NDArray[np.int64]
    loads: npt.NDArray[np.int64]
    end_s: int


def _shape(problem: Problem, v: Vehicle, seq: Seq) -> _Shape:
    stops, sites = problem.stop_by_id, problem.site_by_id
    places = [problem.start_location(v)]
    unload = []
    loads = [v.start.load_l if v.start is not None else 0]
    for kind, ref in seq:
        is_unload = kind is VisitKind.UNLOAD
        places.append(sites[ref].location if is_unload else stops[ref].location)
        unload.append(is_unload)
        if is_unload:
            loads.append(0)
        else:
            loads[-1] += stops[ref].demand_l
    places.append(problem.end_location(v))
    visits = timed(problem, v, seq)
    end_s = UNREACHABLE if visits is None else (visits[-1].arrival_s if visits else v.start_time)
    return _Shape(
        np.asarray(places, dtype=np.int64),
        np.concatenate([[0], np.cumsum(np.asarray(unload, dtype=np.int64))]).astype(np.int64),
        np.asarray(loads, dtype=np.int64),
        end_s,
    )


def insert_stops(problem: Problem, seqs: dict[str, Seq], items: Sequence[PoolItem]) -> None:
    """Cheapest insertion of the new stops into the starting solution.

    Positions by added distance (a fire: right after the start, by time to reach it),
    with room in their trip and a detour that fits in what is left of the shift; a stop
    may also open a trip of its own before the return to the depot. The ``_PER_TRUCK``
    cheapest of each truck are tried in order of cost until one keeps the route drivable.
    """
    dist, times = problem.distance_m, problem.time_s
    stops = problem.stop_by_id
    disposals = problem.disposal_sites
    vehicles = {v.id: v for v in problem.vehicles}
    shapes: dict[str, _Shape] = {}
    for item in sorted(items, key=lambda i: (not i.urgent, not i.required, -i.demand_l)):
        x = stops[item.bin_id].location
        service = stops[item.bin_id].service_s
        options: list[tuple[int, str, int, Seq]] = []
        for v in problem.vehicles:
            if v.id not in shapes:
                shapes[v.id] = _shape(problem, v, seqs[v.id])
            sh = shapes[v.id]
            spare = v.shift.end - sh.end_s
            a, b = sh.places[:-1], sh.places[1:]
            fits = (sh.trip < len(sh.loads) - 1) & (
                sh.loads[sh.trip] + item.demand_l <= v.type.capacity_l
            )
            fits &= times[a, x] + times[x, b] - times[a, b] + service <= spare
            if item.urgent:
                fits[1:] = False
                cost = times[a, x]
            else:
                cost = dist[a, x] + dist[x, b] - dist[a, b]
            gaps = np.flatnonzero(fits)
            for g in gaps[np.argsort(cost[gaps], kind="stable")[:_PER_TRUCK]]:
                options.append((int(cost[g]), v.id, int(g), [(VisitKind.STOP, item.bin_id)]))
            if not disposals or sh.loads[-1] + item.demand_l > v.type.capacity_l:
                continue
            if item.urgent and len(sh.places) > 2:
                continue
            last, end = int(sh.places[-2]), int(sh.places[-1])
            site = min(disposals, key=lambda s: int(dist[x, s.location]))
            detour = times[last, x] + times[x, site.location] + times[site.location, end]
            if int(detour - times[last, end]) + service + site.unload_s > spare:
                continue
            extra = dist[last, x] + dist[x, site.location] + dist[site.location, end]
            own = int(times[last, x]) if item.urgent else int(extra - dist[last, end])
            trip = [(VisitKind.STOP, item.bin_id), (VisitKind.UNLOAD, site.id)]
            options.append((own, v.id, len(seqs[v.id]), trip))
        options.sort(key=lambda o: (o[0], o[1], o[2]))
        for _cost, vid, gap, extra_visits in options:
            candidate = tidy([*seqs[vid][:gap], *extra_visits, *seqs[vid][gap:]])
            if timed(problem, vehicles[vid], candidate) is not None:
                seqs[vid] = candidate
                shapes.pop(vid, None)
                break
        else:
            logger.debug("stop %s: no place in the starting solution", item.bin_id)


_PER_TRUCK: Final = 6


def timed_plan(problem: Problem, seqs: Mapping[str, Seq]) -> Plan:
    """The starting solution with times and loads, and the stops it leaves out."""
    routes: list[Route] = []
    for v in problem.vehicles:
        visits = timed(problem, v, seqs[v.id]) or []
        routes.append(make_route(problem, v, visits))
    served = {sid for r in routes for sid in r.stop_ids}
    # A stop no truck can serve at all (no road path, too big, ...) says why, as a
    # solver's plan would; the others were left out of the current routes.
    cannot = {u.stop_id: u for u in screen(problem).unserved}
    unserved = tuple(
        cannot.get(s.id)
        or (
            Unserved(s.id, UnservedCode.NOT_PLANNED, "no room in the current routes")
            if s.required
            else Unserved(s.id, UnservedCode.OPTIONAL_DROPPED, "optional stop left out")
        )
        for s in problem.stops
        if s.id not in served
    )
    return Plan(tuple(routes), unserved, "insertion")
