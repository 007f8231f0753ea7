"""Screening a problem before solving: the stops no engine could plan (a bin larger than
any truck, a location with no road path to or from the depots, a time window no truck can
reach), so that engines report them with a clear reason instead of failing."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .model import UNREACHABLE, Problem, Unserved, UnservedCode, format_clock

__all__ = ["Screening", "screen"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Screening:
    """What can be planned: indices into ``problem.stops`` and ``problem.vehicles``, and
    the stops that no truck could serve even alone, with why."""

    stops: tuple[int, ...]
    vehicles: tuple[int, ...]
    unserved: tuple[Unserved, ...] = field(default=())


def screen(problem: Problem) -> Screening:
    """Stops no usable truck could serve on an otherwise empty route, with a reason.

    A vehicle is usable when it can drive from its start to its depot within its shift.
    A stop passes when one usable vehicle has room for it, a road path to it and back, and
    time to reach it within its window and return within its shift (with a break if the
    trip alone is long enough to need one). Checks run per distinct vehicle profile, as
    vectors over stops.
    """
    time_s, dist = problem.time_s, problem.distance_m
    usable: list[int] = []
    for i, v in enumerate(problem.vehicles):
        s, e = problem.start_location(v), problem.end_location(v)
        if time_s[s, e] >= UNREACHABLE or dist[s, e] >= UNREACHABLE:
            logger.warning("vehicle %s: no road path from its start to depot %s", v.id, v.depot)
        elif v.start_time + int(time_s[s, e]) > v.shift.end:
            logger.warning("vehicle %s: cannot reach depot %s within its shift", v.id, v.depot)
        else:
            usable.append(i)

    stops = problem.stops
    if not stops:
        return Screening((), tuple(usable))
    loc = np.array([s.location for s in stops], dtype=np.int64)
    demand_l = np.array([s.demand_l for s in stops], dtype=np.int64)
    demand_kg = np.array([s.demand_kg or 0 for s in stops], dtype=np.int64)
    service = np.array([s.service_s for s in stops], dtype=np.int64)
    lo = np.array([s.window.start if s.window else 0 for s in stops], dtype=np.int64)
    hi = np.array([s.window.end if s.window else UNREACHABLE for s in stops], dtype=np.int64)

    fits = np.zeros(len(stops), dtype=bool)
    reach_from = np.zeros(len(stops), dtype=bool)
    reach_to = np.zeros(len(stops), dtype=bool)
    in_window = np.zeros(len(stops), dtype=bool)
    ok = np.zeros(len(stops), dtype=bool)
    earliest = np.full(len(stops), UNREACHABLE, dtype=np.int64)
    profiles: dict[tuple[int, int, int, int, int, int, int], None] = {}
    for i in usable:
        v = problem.vehicles[i]
        worked = v.start.worked_s if v.start is not None else 0
        key = (
            problem.start_location(v),
            problem.end_location(v),
            v.start_time,
            v.shift.end,
            v.type.capacity_l,
            v.type.capacity_kg if v.type.capacity_kg is not None else -1,
            worked,
        )
        profiles.setdefault(key)
    for s, e, t0, t_end, cap_l, cap_kg, worked in profiles:
        fit = demand_l <= cap_l
        if cap_kg >= 0:
            fit &= demand_kg <= cap_kg
        there = (time_s[s, loc] < UNREACHABLE) & (dist[s, loc] < UNREACHABLE)
        back = (time_s[loc, e] < UNREACHABLE) & (dist[loc, e] < UNREACHABLE)
        arrive = np.maximum(t0 + time_s[s, loc], lo)
        finish = arrive + service + time_s[loc, e]
        rule = problem.break_rule
        if rule is not None:
            finish = finish + np.where(finish - t0 + worked > rule.max_work_s, rule.duration_s, 0)
        fits |= fit
        reach_from |= fit & there
        reach_to |= fit & back
        reachable = fit & there & back
        earliest = np.where(reachable, np.minimum(earliest, arrive), earliest)
        timely = reachable & (arrive <= hi)
        in_window |= timely
        ok |= timely & (finish <= t_end)

    unserved: list[Unserved] = []
    max_l = max((problem.vehicles[i].type.capacity_l for i in usable), default=0)
    kg_caps = [problem.vehicles[i].type.capacity_kg for i in usable]
    for k, stop in enumerate(stops):
        if ok[k]:
            continue
        if not usable:
            why = "no vehicle can leave and return to its depot"
            unserved.append(Unserved(stop.id, UnservedCode.SHIFT, why))
        elif not fits[k]:
            if stop.demand_l > max_l:
                why = f"bin holds {stop.demand_l} L, more than the largest truck ({max_l} L)"
            else:
                why = f"bin weighs {stop.demand_kg} kg, more than any truck's payload"
                if None not in kg_caps:
                    why += f" (max {max(c for c in kg_caps if c is not None)} kg)"
            unserved.append(Unserved(stop.id, UnservedCode.CAPACITY, why))
        elif not reach_from[k]:
            why = f"no road path from any depot to location {stop.location}"
            unserved.append(Unserved(stop.id, UnservedCode.UNREACHABLE, why))
        elif not reach_to[k]:
            why = f"no road path from location {stop.location} back to any depot"
            unserved.append(Unserved(stop.id, UnservedCode.UNREACHABLE, why))
        elif not in_window[k] and stop.window is not None:
            why = (
                f"time window {stop.window} cannot be met by any truck "
                f"(earliest arrival {format_clock(int(earliest[k]))})"
            )
            unserved.append(Unserved(stop.id, UnservedCode.TIME_WINDOW, why))
        else:
            why = "no truck can serve it and return to its depot within its shift"
            unserved.append(Unserved(stop.id, UnservedCode.SHIFT, why))
    for u in unserved:
        logger.info("stop %s cannot be planned: %s", u.stop_id, u.reason)
    plannable = tuple(int(k) for k in np.flatnonzero(ok))
    return Screening(plannable, tuple(usable), tuple(unserved))
