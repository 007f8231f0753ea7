"""The problem that re-plans a fraction's remaining work at ``state.now``: its trucks
where and when they are, their remaining stops and the pool (``pool.py``), the visits
trucks are committed to (pinned), and the starting solution (``warm.py``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import time
from typing import Final

import numpy as np
import numpy.typing as npt

from cityops.ingest.contract import RouteStop
from cityops.routing.model import (
    UNREACHABLE,
    Plan,
    Problem,
    Site,
    SiteKind,
    Stop,
    TimeWindow,
    Vehicle,
    VehicleStart,
    VehicleType,
    Visit,
    VisitKind,
)
from cityops.routing.network import RoadNetwork, haversine_m
from cityops.routing.planning import DayAxis, Location, PlanningOptions
from cityops.routing.replan.day import DayState, TruckProgress
from cityops.routing.replan.options import ReplanOptions
from cityops.routing.replan.pool import demands, stop_pool
from cityops.routing.replan.triggers import Trigger, TriggerKind, describe
from cityops.routing.replan.warm import (
    PoolItem,
    Seq,
    insert_stops,
    pinned_prefix,
    repair,
    tidy,
    timed_plan,
)
from cityops.routing.rows import BinRow, TruckRow

__all__ = ["Replan", "build_replan", "relax_urgent"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

_DEFAULTS: Final = ReplanOptions()


@dataclass(frozen=True)
class Replan:
    """A fraction's re-planning problem and what is needed to judge and send its answer.

    ``before``: per truck in the problem, its remaining stops and unloads before the
    re-plan (``(kind, ref)``), ``etas`` their planned arrival (seconds on the day axis).
    ``named``: trucks a trigger names (late, skipped): they get a new version in any case.
    ``retired``: broken-down trucks whose route still had stops. ``positions`` and
    ``loads``: where every truck of the fraction is and what it carries.
    ``urgent``: fire bins, whose window ``relax_urgent`` can drop.

    Pinned visits: a truck serving its next stop (its position within ``at_stop_m`` of it)
    or driving (nearly full) to its next unload is committed to that visit. ``pinned``
    holds, per such truck, its route up to the end of that visit (start, perhaps a break,
    the visit); ``problem`` is what is left to solve: the pinned stops are not in it and
    the truck starts where and when the pinned visit ends, with the load after it. ``full``
    is the same day with the pinned stops and the trucks where they are now: :func:`unfold`
    turns an answer to ``problem`` into a plan of ``full``, which ``check_plan`` judges.
    ``forced``: trucks whose new route the event forces (a stop they skipped), see
    :func:`stabilize`.
    """

    fraction: str
    axis: DayAxis
    problem: Problem
    locations: tuple[Location, ...]
    initial: Plan
    triggers: tuple[Trigger, ...]
    before: Mapping[str, tuple[tuple[str, str], ...]]
    etas: Mapping[str, Mapping[str, int]]
    named: frozenset[str]
    retired: frozenset[str]
    positions: Mapping[str, Location]
    loads: Mapping[str, int]
    urgent: frozenset[str]
    base_windows: Mapping[str, TimeWindow | None]
    full: Problem | None = None
    pinned: Mapping[str, tuple[Visit, ...]] = field(default_factory=dict)
    forced: frozenset[str] = frozenset()

    @property
    def reason(self) -> str:
        return describe(self.triggers)

    @property
    def whole(self) -> Problem:
        """The problem a plan of the whole day (pinned visits included) answers."""
        return self.full if self.full is not None else self.problem


def build_replan(
    state: DayState,
    fraction: str,
    triggers: Sequence[Trigger],
    *,
    network: RoadNetwork,
    options: ReplanOptions = _DEFAULTS,
) -> Replan:
    """The problem re-planning `fraction` at ``state.now``.

    Trucks: those collecting the fraction today, still in their shift, not broken down and
    not finished. Each starts at its last position today (nearest node; else its depot) at
    ``now`` with its reported load (else the load the plan expected), and the work since
    its shift start or last planned break (capped at the break rule's limit: an overdue
    break is taken at once). Stops: each truck's remaining stops (required: the plan
    promised them), the remaining stops of broken-down or finished trucks, and the bins
    the triggers name (overflow and fire required, fire within ``fire_within_s``; skipped
    ones as described in the module docs), and the required bins the current routes
    report unserved (they are tried again). Demand: what the current version expected
    (load difference), else the reading's or the last known fill of the bin's capacity.

    The starting solution (``initial``, a timed plan that passes ``check_plan``) is every
    truck's remaining route in order; a route the truck can no longer drive in time loses
    its last stops; the new and the dropped stops are then inserted where they add the
    least distance and the route stays drivable. What it cannot place, it reports unserved.
    """
    fleet = _fleet(state, fraction, network)
    pins = {
        t.truck_id: pin
        for t in fleet.active
        if (pin := _pin(t, state, fleet.loads[t.truck_id], options)) is not None
    }
    pool = stop_pool(
        state,
        fraction,
        triggers,
        fleet=state.fraction_fleet(fraction),
        orphaned=fleet.orphaned,
        demand_of=fleet.demand_of,
        pins=pins,
        options=options,
    )
    before, etas, seqs, ordered = _sequences(state, fleet.active, pool)
    locations, sites = _sites(state, network, options.planning)
    stops, base_windows = _stops(state, network, ordered, pool, fleet, locations, options)
    vehicles = _vehicles(state, fleet, locations, options.planning)
    nodes = [loc.node for loc in locations]
    full = Problem(
        stops=tuple(stops),
        sites=sites,
        vehicles=tuple(vehicles),
        time_s=_as_int(network.matrix(nodes, nodes, "time")),
        distance_m=_as_int(network.matrix(nodes, nodes, "length")),
        break_rule=options.planning.break_rule,
        unload_before_return=True,
        name=f"{state.axis.day.isoformat()} {fraction} re-plan",
    )
    problem, pinned = _pin_visits(full, pins, seqs, fraction)
    items = [pool[b] for b in ordered if b in pool]
    for v in vehicles:
        seqs[v.id], dropped = repair(problem, v, seqs[v.id])
        for bin_id in dropped:
            stop = problem.stop_by_id[bin_id]
            items.append(PoolItem(bin_id, stop.demand_l, stop.required, stop.penalty))
            logger.info("%s: %s cannot keep %s in its route", fraction, v.id, bin_id)
    insert_stops(problem, seqs, items)
    named = frozenset(
        t.truck_id or ""
        for t in triggers
        if t.kind in (TriggerKind.LATE, TriggerKind.SKIPPED) and t.truck_id in seqs
    )
    forced = frozenset(
        t.truck_id or "" for t in triggers if t.kind is TriggerKind.SKIPPED and t.truck_id in seqs
    )
    return Replan(
        fraction=fraction,
        axis=state.axis,
        problem=problem,
        locations=tuple(locations),
        initial=timed_plan(problem, seqs),
        triggers=tuple(triggers),
        before=before,
        etas=etas,
        named=named,
        retired=frozenset(fleet.retired),
        positions=fleet.positions,
        loads=fleet.loads,
        urgent=frozenset(b for b, item in pool.items() if item.urgent),
        base_windows=base_windows,
        full=full,
        pinned=pinned,
        forced=forced,
    )


@dataclass
class _Fleet:
    """The fraction's trucks at ``now``: those that go on (``active``), where each is and
    what it carries, the stops of those that stopped (broken down, finished, past their
    shift; ``retired``: broken down with stops left), and each stop's expected demand."""

    active: list[TruckRow] = field(default_factory=list)
    retired: set[str] = field(default_factory=set)
    positions: dict[str, Location] = field(default_factory=dict)
    loads: dict[str, int] = field(default_factory=dict)
    orphaned: list[RouteStop] = field(default_factory=list)
    demand_of: dict[str, int] = field(default_factory=dict)


def _fleet(state: DayState, fraction: str, network: RoadNetwork) -> _Fleet:
    axis, t_now = state.axis, state.axis.since(state.now)
    out = _Fleet()
    for t in state.fraction_fleet(fraction):
        p = state.progress.get(t.truck_id, TruckProgress())
        rest = state.remaining(t.truck_id)
        route = state.routes.get(t.truck_id)
        if route is not None:
            out.demand_of.update(demands(route))
        out.positions[t.truck_id] = _truck_location(t, p, state, network)
        out.loads[t.truck_id] = min(t.capacity_l, _start_load(t.truck_id, p, state))
        over = t_now >= axis.seconds(t.shift_end)
        if p.broken or p.finished or over:
            out.orphaned.extend(s for s in rest if s.kind == "stop")
            if p.broken and any(s.kind == "stop" for s in rest):
                out.retired.add(t.truck_id)
        else:
            out.active.append(t)
    return out


_Before = dict[str, tuple[tuple[str, str], ...]]


def _sequences(
    state: DayState, active: Sequence[TruckRow], pool: Mapping[str, PoolItem]
) -> tuple[_Before, dict[str, dict[str, int]], dict[str, Seq], list[str]]:
    """Each active truck's remaining stops and unloads in route order (as ``before`` when
    it has a route, with their ETAs), and the stops of the problem: the remaining ones
    first (route order), then the pool."""
    axis = state.axis
    before: _Before = {}
    etas: dict[str, dict[str, int]] = {}
    seqs: dict[str, Seq] = {}
    ordered: list[str] = []
    for t in active:
        placed = set(ordered)
        rest = state.remaining(t.truck_id)
        seq: Seq = []
        for s in rest:
            if (
                s.kind == "stop"
                and s.bin_id in state.bins
                and s.bin_id not in pool
                and s.bin_id not in placed
            ):
                seq.append((VisitKind.STOP, s.bin_id or ""))
                ordered.append(s.bin_id or "")
                etas.setdefault(t.truck_id, {})[s.bin_id or ""] = axis.since(s.eta)
            elif s.kind == "unload" and s.site_id:
                seq.append((VisitKind.UNLOAD, s.site_id))
        seq = tidy(seq)
        seqs[t.truck_id] = seq
        if t.truck_id in state.routes:
            before[t.truck_id] = tuple((str(k), r) for k, r in seq)
    ordered.extend(b for b in pool if b not in ordered)
    return before, etas, seqs, ordered


def _sites(
    state: DayState, network: RoadNetwork, opts: PlanningOptions
) -> tuple[list[Location], tuple[Site, ...]]:
    """The depots and disposal sites, the first locations of the problem."""
    locations = [
        Location("site", s.site_id, s.lat, s.lon, network.nearest_node(s.lat, s.lon))
        for s in state.sites
    ]
    sites = tuple(
        Site(
            s.site_id,
            i,
            SiteKind.DEPOT if s.kind == "depot" else SiteKind.DISPOSAL,
            unload_s=0 if s.kind == "depot" else opts.unload_s,
        )
        for i, s in enumerate(state.sites)
    )
    return locations, sites


def _stops(
    state: DayState,
    network: RoadNetwork,
    ordered: Sequence[str],
    pool: Mapping[str, PoolItem],
    fleet: _Fleet,
    locations: list[Location],
    options: ReplanOptions,
) -> tuple[list[Stop], dict[str, TimeWindow | None]]:
    """A stop per bin (its location appended to ``locations``): remaining stops required,
    pool items as the pool says (a fire within ``fire_within_s``, a skipped stop not
    before its retry), and each bin's own access window."""
    axis, t_now, opts = state.axis, state.axis.since(state.now), options.planning
    stops: list[Stop] = []
    base_windows: dict[str, TimeWindow | None] = {}
    for bin_id in ordered:
        b = state.bins[bin_id]
        index = len(locations)
        locations.append(
            Location("bin", b.bin_id, b.lat, b.lon, network.nearest_node(b.lat, b.lon), b.street)
        )
        base = _access_window(b, axis)
        base_windows[bin_id] = base
        item = pool.get(bin_id)
        window = base
        if item is not None and item.urgent:
            window = _intersect(base, TimeWindow(t_now, t_now + options.fire_within_s)) or base
        elif item is not None and item.not_before is not None:
            window = _not_before(base, item.not_before) or base
        required = item.required if item is not None else True
        stops.append(
            Stop(
                id=bin_id,
                location=index,
                demand_l=item.demand_l if item is not None else fleet.demand_of.get(bin_id, 1),
                service_s=opts.service_s,
                window=window,
                required=required,
                penalty=0 if required else max(1, item.penalty if item else 1),
            )
        )
    return stops, base_windows


def _vehicles(
    state: DayState, fleet: _Fleet, locations: list[Location], opts: PlanningOptions
) -> list[Vehicle]:
    """A vehicle per active truck; one in its shift starts where it is now (its location
    appended to ``locations``), with its load and the work since its shift start or
    break."""
    axis, t_now = state.axis, state.axis.since(state.now)
    vehicles: list[Vehicle] = []
    for t in fleet.active:
        p = state.progress.get(t.truck_id, TruckProgress())
        shift = TimeWindow(axis.seconds(t.shift_start), axis.seconds(t.shift_end))
        start: VehicleStart | None = None
        if t_now >= shift.start:
            index = len(locations)
            locations.append(fleet.positions[t.truck_id])
            start = VehicleStart(
                location=index,
                time_s=t_now,
                load_l=fleet.loads[t.truck_id],
                worked_s=_worked(p, shift, state, opts),
            )
        vehicles.append(
            Vehicle(
                id=t.truck_id,
                type=VehicleType(f"{t.capacity_l} l", t.capacity_l, t.capacity_kg),
                depot=t.depot_id,
                shift=shift,
                start=start,
            )
        )
    return vehicles


def _pin_visits(
    full: Problem, pins: Mapping[str, tuple[VisitKind, str]], seqs: dict[str, Seq], fraction: str
) -> tuple[Problem, dict[str, tuple[Visit, ...]]]:
    """The problem left after the pinned visits (a pinned truck starts where its visit
    ends; its first visit leaves ``seqs``), and each pinned truck's route up to it."""
    pinned: dict[str, tuple[Visit, ...]] = {}
    starts: dict[str, Vehicle] = {}
    for v in full.vehicles:
        pin = pins.get(v.id)
        ahead = pinned_prefix(full, v, *pin) if pin is not None else None
        if pin is None or ahead is None or not seqs[v.id] or seqs[v.id][0] != pin:
            continue
        visits, after = ahead
        pinned[v.id] = visits
        starts[v.id] = replace(v, start=after)
        seqs[v.id] = seqs[v.id][1:]
        logger.info("%s: %s keeps %s %s first", fraction, v.id, pin[0], pin[1])
    gone = {visits[-1].ref for visits in pinned.values() if visits[-1].kind is VisitKind.STOP}
    problem = replace(
        full,
        stops=tuple(s for s in full.stops if s.id not in gone),
        vehicles=tuple(starts.get(v.id, v) for v in full.vehicles),
    )
    return problem, pinned


def _as_int(matrix: FloatArray) -> npt.NDArray[np.int64]:
    out = np.where(np.isfinite(matrix), np.rint(matrix), UNREACHABLE)
    return np.asarray(out, dtype=np.int64)


def relax_urgent(replan: Replan) -> Replan:
    """The same re-plan without the fire deadline (when no truck can make it)."""

    def relaxed(problem: Problem) -> Problem:
        stops = tuple(
            replace(s, window=replan.base_windows.get(s.id)) if s.id in replan.urgent else s
            for s in problem.stops
        )
        return replace(problem, stops=stops)

    full = relaxed(replan.full) if replan.full is not None else None
    return replace(replan, problem=relaxed(replan.problem), full=full)


def _access_window(b: BinRow, axis: DayAxis) -> TimeWindow | None:
    if b.access_from_s is None or b.access_to_s is None:
        return None

    def clock(seconds: int) -> time:
        seconds = min(max(seconds, 0), 86_399)
        return time(seconds // 3600, seconds % 3600 // 60)

    start, end = axis.seconds(clock(b.access_from_s)), axis.seconds(clock(b.access_to_s))
    return TimeWindow(start, end) if start <= end else None


def _intersect(a: TimeWindow | None, b: TimeWindow) -> TimeWindow | None:
    if a is None:
        return b
    lo, hi = max(a.start, b.start), min(a.end, b.end)
    return TimeWindow(lo, hi) if lo <= hi else None


def _not_before(a: TimeWindow | None, start: int) -> TimeWindow | None:
    if a is None:
        return TimeWindow(start, UNREACHABLE)
    return TimeWindow(start, a.end) if start <= a.end else None


def _truck_location(
    t: TruckRow, p: TruckProgress, state: DayState, network: RoadNetwork
) -> Location:
    if p.position is not None:
        pos = p.position
        node = network.nearest_node(pos.lat, pos.lon)
        return Location("truck", t.truck_id, pos.lat, pos.lon, node)
    depot = next((s for s in state.sites if s.site_id == t.depot_id), None)
    if depot is None:
        raise ValueError(f"truck {t.truck_id}: depot {t.depot_id} is not a site")
    node = network.nearest_node(depot.lat, depot.lon)
    return Location("truck", t.truck_id, depot.lat, depot.lon, node)


def _start_load(truck_id: str, p: TruckProgress, state: DayState) -> int:
    """The reported load, else what the current version expected before its next visit."""
    if p.position is not None and p.position.load_l is not None:
        return max(0, round(p.position.load_l))
    route = state.routes.get(truck_id)
    rest = state.remaining(truck_id)
    if route is None or not rest:
        return 0
    first = route.stops.index(rest[0])
    return max(0, round(route.stops[first - 1].load_after_l)) if first > 0 else 0


def _worked(p: TruckProgress, shift: TimeWindow, state: DayState, opts: PlanningOptions) -> int:
    """Seconds worked since the shift start (reported, else planned) or the last break."""
    axis = state.axis
    began = p.shift_started_at
    if began is None and p.position is not None:
        began = axis.at(shift.start)
    if began is None:
        return 0
    if p.break_end is not None and p.break_end > began:
        began = p.break_end
    worked = max(0, int((state.now - began).total_seconds()))
    rule = opts.break_rule
    return min(worked, rule.max_work_s) if rule is not None else worked


def _pin(
    t: TruckRow, state: DayState, load_l: int, options: ReplanOptions
) -> tuple[VisitKind, str] | None:
    """The visit the truck is committed to, if any: its next stop when its last position
    today is within ``at_stop_m`` of that bin (it has arrived and not yet reported the
    stop done or skipped), or its next unload when that comes first and the truck is at
    least ``full_pct`` full (it is driving there)."""
    rest = state.remaining(t.truck_id)
    if not rest:
        return None
    first = rest[0]
    p = state.progress.get(t.truck_id)
    pos = p.position if p is not None else None
    if first.kind == "stop" and first.bin_id in state.bins and pos is not None:
        b = state.bins[first.bin_id or ""]
        if float(haversine_m(pos.lat, pos.lon, b.lat, b.lon)) <= options.at_stop_m:
            return VisitKind.STOP, b.bin_id
    if first.kind == "unload" and first.site_id and load_l >= t.capacity_l * options.full_pct / 100:
        return VisitKind.UNLOAD, first.site_id
    return None
