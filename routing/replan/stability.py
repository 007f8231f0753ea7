"""What a re-plan changes for the drivers: the stability rule that keeps a driver's order
for a small gain, the trucks that need a new version, and the answer as a plan of the
whole day (pinned visits first)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Final

from cityops.routing.model import (
    Plan,
    Route,
    VisitKind,
    make_route,
)
from cityops.routing.replan.options import ReplanOptions
from cityops.routing.replan.problem import Replan
from cityops.routing.replan.warm import Seq, timed

__all__ = ["changed_trucks", "stabilize", "unfold"]

logger = logging.getLogger(__name__)


def stabilize(
    replan: Replan, plan: Plan, options: ReplanOptions, *, forced: Iterable[str] = ()
) -> tuple[Plan, list[str]]:
    """The engine's plan, except where it only shuffles a driver's stops for little gain.

    The baseline is the starting solution (``replan.initial``): every truck's current
    order with only the changes the event calls for (a new required bin inserted where it
    costs least, the stops of a broken-down truck, a skipped stop taken out or back). A
    truck keeps its baseline route unless the engine's route is shorter (in duration, from
    where the truck is now) by more than ``stable_pct`` % of the baseline's duration and
    more than ``stable_s`` seconds. Trucks between which the engine moved stops are judged
    together (their summed durations), and only when they serve the same stops together
    in both plans; a truck ``forced`` by the event (a stop it skipped, a closure on its
    route) always takes the engine's route, and so do the trucks it traded stops with.
    Coverage never changes: what the engine serves, the result serves.

    A truck (or group) keeps its baseline only when the engine's route is also at most
    ``stable_pct`` % shorter in distance (see ``_worth``). Hence the bound: the result
    serves exactly what `plan` serves, and its distance exceeds `plan`'s by at most
    ``stable_pct`` % of the kept routes' distance, less than ``stable_pct`` % of its own.

    Returns the plan and the trucks that kept their baseline route although the engine's
    differed. ``changed_trucks`` then sends a new version only to trucks whose stops or
    order changed, whose ETAs moved beyond the tolerance or that a trigger names.
    """
    base = {r.vehicle_id: r for r in replan.initial.routes}
    must = replan.forced | frozenset(forced)
    mine = {r.vehicle_id: r for r in plan.routes}
    singles: list[str] = []
    group: list[str] = []
    for vid, route in mine.items():
        old = base.get(vid)
        if old is None:
            group.append(vid)
        elif _order(route) != _order(old):
            (singles if set(route.stop_ids) == set(old.stop_ids) else group).append(vid)
    keep: list[str] = []
    for vid in singles:
        if vid not in must and not _worth(options, [base[vid]], [mine[vid]]):
            keep.append(vid)
    if group and not must & set(group) and all(vid in base for vid in group):
        olds, news = [base[v] for v in group], [mine[v] for v in group]
        together = {s for r in olds for s in r.stop_ids} == {s for r in news for s in r.stop_ids}
        if together and not _worth(options, olds, news):
            keep.extend(group)
    for vid in keep:
        logger.info(
            "%s: %s keeps its order (the new one saves %d s of %d s)",
            replan.fraction,
            vid,
            base[vid].duration_s - mine[vid].duration_s,
            base[vid].duration_s,
        )
    routes = tuple(base[r.vehicle_id] if r.vehicle_id in keep else r for r in plan.routes)
    return replace(plan, routes=routes), sorted(keep)


def _order(route: Route) -> tuple[tuple[VisitKind, str], ...]:
    return tuple((v.kind, v.ref) for v in route.visits if v.kind in _ORDERED)


def _worth(options: ReplanOptions, old: Sequence[Route], new: Sequence[Route]) -> bool:
    """Whether the new routes save more than the stability threshold over the old ones:
    in duration more than ``stable_pct`` % of the old duration and ``stable_s``, or in
    distance more than ``stable_pct`` % of the old distance. The distance part bounds what
    keeping old routes may cost: at most ``stable_pct`` % of their distance, so the plan
    sent is at most that much longer than the engine's best (see :func:`stabilize`)."""
    before = sum(r.duration_s for r in old if r.visits)
    gain = before - sum(r.duration_s for r in new if r.visits)
    if gain > max(before * options.stable_pct / 100.0, options.stable_s):
        return True
    far = sum(r.distance_m for r in old if r.visits)
    shorter = far - sum(r.distance_m for r in new if r.visits)
    return shorter > far * options.stable_pct / 100.0


_ORDERED: Final = frozenset({VisitKind.STOP, VisitKind.UNLOAD})


def changed_trucks(replan: Replan, plan: Plan, *, eta_tolerance_s: int) -> list[str]:
    """The trucks that need a new version: their stops or unloads changed, an ETA moved
    by more than the tolerance, or a trigger names them. A truck without a current route
    needs one when it now has stops."""
    out: list[str] = []
    for route in plan.routes:
        vid = route.vehicle_id
        seq = tuple(
            (str(v.kind), v.ref)
            for v in route.visits
            if v.kind in (VisitKind.STOP, VisitKind.UNLOAD)
        )
        old = replan.before.get(vid)
        if old is None:
            if route.stop_ids:
                out.append(vid)
            continue
        if vid in replan.named or seq != old:
            out.append(vid)
            continue
        planned = replan.etas.get(vid, {})
        if any(
            v.kind is VisitKind.STOP
            and v.ref in planned
            and abs(v.arrival_s - planned[v.ref]) > eta_tolerance_s
            for v in route.visits
        ):
            out.append(vid)
    return out


def unfold(replan: Replan, plan: Plan) -> Plan:
    """A plan of ``replan.problem`` as a plan of the whole day (``replan.whole``): each
    pinned truck's route begins where it is, with its pinned visit, then goes on as
    planned. Without pinned trucks, the plan itself."""
    if not replan.pinned or replan.full is None:
        return plan
    full, solved = replan.full, replan.problem
    vehicles = {v.id: v for v in full.vehicles}
    starts = {v.id: v for v in solved.vehicles}
    routes: list[Route] = []
    for route in plan.routes:
        head = replan.pinned.get(route.vehicle_id)
        if head is None:
            routes.append(route)
            continue
        tail = list(route.visits[1:])
        if not tail:  # the solver left it idle: it still has to unload and drive home
            v = starts[route.vehicle_id]
            home: Seq = []
            load = v.start.load_l if v.start is not None else 0
            if load and solved.disposal_sites:
                here = solved.start_location(v)
                site = min(
                    solved.disposal_sites, key=lambda s: int(solved.time_s[here, s.location])
                )
                home = [(VisitKind.UNLOAD, site.id)]
            tail = list((timed(solved, v, home, drive_home=True) or [])[1:])
        if head[-1].kind is VisitKind.UNLOAD and tail and tail[0].kind is VisitKind.UNLOAD:
            tail = tail[1:]
        routes.append(make_route(full, vehicles[route.vehicle_id], [*head, *tail]))
    return Plan(tuple(routes), plan.unserved, plan.engine)
