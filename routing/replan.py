"""Re-planning during the day: which events call for a new plan, and the problem that
re-plans the remaining work of a fraction's trucks.

Pure: readings and events, the day's state (rows from the database plus what the service
heard over MQTT) and the road network in; triggers, a :class:`Replan` (problem, locations,
starting solution) and the trucks whose route changed out. ``replanner.py`` does the I/O.

Rules (see docs of :func:`build_replan` for the details):

* A bin reading at or above ``overflow_pct`` (or ``fire_c``) for a bin on no current route
  of today adds it as a required stop for the trucks collecting its fraction today; a fire
  must be served within ``fire_within_s`` (relaxed when no truck can).
* A skipped stop goes back to the pool, not before ``skip_retry_s``; required when the bin
  is at least ``mandatory_pct`` full (or its level is unknown), else optional with the
  daily plan's reward.
* A broken-down (or finished) truck's remaining stops go to the other trucks of its
  fraction; it gets a final version without stops.
* A truck more than ``late_s`` behind the ETA of its next stop re-plans its fraction.
* Done stops (``stop_done`` of any truck since the day's first ETA minus ``done_margin``)
  never re-appear; every truck starts where and when it is, with its load and the work
  since its shift start or last planned break.
* A bin emptied today re-plans again only on a reading taken ``refill_after`` or more after
  its emptying, once the emptying has been known as long (it filled up again, or a fire);
  an earlier reading is a late one or the emptying itself. The version that takes it
  back lists it again, and the stop counts as done only when it is emptied again
  (:func:`emptied_for`, :func:`refilled`).
"""

from __future__ import annotations

import itertools
import logging
import pickle
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from time import monotonic
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt
from scipy.sparse.csgraph import dijkstra

from cityops.ingest.contract import BinTelemetry, RouteCommand, RouteStop, TruckEvent
from cityops.routing.check import check_plan, plan_cost
from cityops.routing.model import (
    UNREACHABLE,
    Engine,
    Plan,
    Problem,
    Route,
    Site,
    SiteKind,
    Stop,
    TimeWindow,
    Unserved,
    UnservedCode,
    Vehicle,
    VehicleStart,
    VehicleType,
    Visit,
    VisitKind,
    make_route,
    screen,
)
from cityops.routing.network import PathResult, RoadNetwork, haversine_m
from cityops.routing.planning import BERLIN, DayAxis, Location, PlanningOptions, fraction_of_day
from cityops.routing.rows import (
    BinRow,
    SiteRow,
    TruckEventRow,
    TruckRow,
    TruckStateRow,
)

__all__ = [
    "CachingNetwork",
    "DayState",
    "Emptying",
    "Replan",
    "ReplanOptions",
    "Solved",
    "Trigger",
    "TriggerKind",
    "TruckProgress",
    "bin_trigger",
    "build_replan",
    "changed_trucks",
    "day_state",
    "describe",
    "emptied_for",
    "event_trigger",
    "idle_route",
    "late_trigger",
    "plan_score",
    "refilled",
    "relax_urgent",
    "solve_replan",
    "stabilize",
    "triggers_by_fraction",
    "unfold",
    "with_fraction",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: The longest reason a route version may carry (RouteCommand.reason).
MAX_REASON: Final = 500


@dataclass(frozen=True)
class ReplanOptions:
    overflow_pct: float = 95.0
    fire_c: float = 70.0
    late_s: int = 15 * 60
    fire_within_s: int = 30 * 60
    skip_retry_s: int = 30 * 60
    # A skipped bin's level *now* decides: this full, it is required on the retry, else
    # optional with the daily plan's reward. Lower than the daily plan's 95 % / 70 %
    # (routing/dispatch.py), which are *predicted* levels at the end of the next chance's
    # shift: a bin 80 % full now is at or past 95 % by then at the rates seen here.
    mandatory_pct: float = 80.0
    optional_pct: float = 50.0
    reward_scale: int = 1000
    eta_tolerance_s: int = 10 * 60  # a route whose ETAs move more than this is re-sent
    done_margin: timedelta = timedelta(hours=2)
    # A bin emptied today re-plans again only on a reading taken this long after the
    # emptying (readings every 15 minutes, so an earlier one can be late or taken during
    # it), and once the emptying has been known this long; a route version made less than
    # this after an emptying became known counts the bin's stop as done (emptied_for).
    refill_after: timedelta = timedelta(minutes=30)
    at_stop_m: float = 30.0  # a truck this close to its next stop is serving it
    full_pct: float = 90.0  # a truck this full keeps the unload it drives to
    stable_pct: float = 1.0  # a new order must save this much of the remaining duration ...
    stable_s: int = 3 * 60  # ... and at least this many seconds (see stabilize)
    planning: PlanningOptions = field(default_factory=PlanningOptions)

    def __post_init__(self) -> None:
        if not 0 < self.optional_pct < self.mandatory_pct <= 100:
            raise ValueError("need 0 < optional_pct < mandatory_pct <= 100")
        for name in ("late_s", "fire_within_s", "skip_retry_s", "eta_tolerance_s", "stable_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.refill_after <= timedelta(0) or self.done_margin < timedelta(0):
            raise ValueError("need refill_after > 0 and done_margin >= 0")
        if self.at_stop_m < 0 or self.stable_pct < 0 or not 0 < self.full_pct <= 100:
            raise ValueError("need at_stop_m >= 0, stable_pct >= 0 and 0 < full_pct <= 100")


# -- triggers ---------------------------------------------------------------------------


class TriggerKind(StrEnum):
    OVERFLOW = "overflow"
    FIRE = "fire"
    SKIPPED = "skipped"
    BREAKDOWN = "breakdown"
    LATE = "late"
    CLOSURE = "closure"


@dataclass(frozen=True, slots=True)
class Trigger:
    """One event that calls for a re-plan. ``detail`` is the skip reason, the delay or the
    closure id; ``fill_pct`` the reading that raised an overflow or fire."""

    kind: TriggerKind
    at: datetime
    bin_id: str | None = None
    truck_id: str | None = None
    detail: str = ""
    fill_pct: float | None = None

    def __str__(self) -> str:
        k = self.kind
        if k is TriggerKind.OVERFLOW:
            return f"bin {self.bin_id} overflow"
        if k is TriggerKind.FIRE:
            return f"bin {self.bin_id} fire"
        if k is TriggerKind.SKIPPED:
            tail = f": {self.detail}" if self.detail else ""
            return f"truck {self.truck_id} skipped {self.bin_id}{tail}"
        if k is TriggerKind.BREAKDOWN:
            return f"truck {self.truck_id} breakdown"
        if k is TriggerKind.LATE:
            return f"truck {self.truck_id} {self.detail} behind"
        return f"street closure {self.detail} changed" if self.detail else "street closures changed"


_BAD_SENSOR: Final = frozenset({"stuck", "sensor_error"})


def bin_trigger(bin_id: str, reading: BinTelemetry, options: ReplanOptions) -> Trigger | None:
    """A fire (temperature) or overflow (fill level) trigger, or None. Readings the sensor
    itself marks as unreliable (stuck, sensor error) never trigger."""
    if reading.fault in _BAD_SENSOR:
        return None
    if reading.temperature_c is not None and reading.temperature_c >= options.fire_c:
        return Trigger(TriggerKind.FIRE, reading.ts, bin_id=bin_id, fill_pct=reading.fill_pct)
    if reading.fill_pct >= options.overflow_pct:
        return Trigger(TriggerKind.OVERFLOW, reading.ts, bin_id=bin_id, fill_pct=reading.fill_pct)
    return None


def event_trigger(truck_id: str, event: TruckEvent) -> Trigger | None:
    """A skipped stop or a breakdown; other events only update progress."""
    if event.kind == "stop_skipped" and event.bin_id:
        return Trigger(
            TriggerKind.SKIPPED,
            event.ts,
            bin_id=event.bin_id,
            truck_id=truck_id,
            detail=event.reason or "",
        )
    if event.kind == "breakdown":
        return Trigger(TriggerKind.BREAKDOWN, event.ts, truck_id=truck_id)
    return None


@dataclass(frozen=True, slots=True)
class Emptying:
    """A bin's last emptying today: when the truck emptied it (``at``, the truck's clock)
    and when the platform learned of it (``known_at``, the server's clock: when the ingest
    stored the ``stop_done`` or the re-planner heard it)."""

    at: datetime
    known_at: datetime


def emptied_for(
    route: RouteCommand, done: Mapping[str, Emptying], refill_after: timedelta
) -> frozenset[str]:
    """The bins whose stops on ``route`` are done: of ``done``, those whose emptying became
    known later than ``refill_after`` before the version was made (the version was planned
    without knowing it, or while the ``stop_done`` was on its way). A version made later
    lists an emptied bin on purpose: it filled up again (:func:`refilled`). Both times are
    the server's, so a truck's clock or a late ``stop_done`` cannot shift the rule."""
    since = route.created_at - refill_after
    return frozenset(b for b, e in done.items() if e.known_at > since)


def refilled(
    bin_id: str,
    at: datetime,
    now: datetime,
    done: Mapping[str, Emptying],
    refill_after: timedelta,
) -> bool:
    """Whether a reading taken at ``at`` may re-plan the bin at ``now``: it was not emptied
    today, or the reading was taken ``refill_after`` or more after the emptying and the
    emptying has been known that long (so the version that takes it back lists it as a
    stop to come, see :func:`emptied_for`)."""
    e = done.get(bin_id)
    return e is None or (at >= e.at + refill_after and now >= e.known_at + refill_after)


def late_trigger(
    truck_id: str,
    at: datetime,
    route: RouteCommand | None,
    done: Mapping[str, Emptying],
    options: ReplanOptions,
) -> Trigger | None:
    """A truck more than ``late_s`` behind the ETA of its next stop (the first stop of its
    current route not yet done, :func:`emptied_for`), or None. ``done`` holds each bin
    emptied today."""
    if route is None or route.truck_id != truck_id:
        return None
    finished = emptied_for(route, done, options.refill_after)
    nxt = next((s for s in route.stops if s.kind == "stop" and s.bin_id not in finished), None)
    if nxt is None:
        return None
    behind = (at - nxt.eta).total_seconds()
    if behind <= options.late_s:
        return None
    return Trigger(TriggerKind.LATE, at, truck_id=truck_id, detail=f"{int(behind // 60)} min")


def describe(triggers: Sequence[Trigger]) -> str:
    """The reason of a re-planned version: every trigger once, oldest first, ``; ``-joined,
    shortened to fit a route document."""
    parts: list[str] = []
    for t in sorted(triggers, key=lambda t: t.at):
        text = str(t)
        if text not in parts:
            parts.append(text)
    out = "; ".join(parts)
    if len(out) <= MAX_REASON:
        return out
    for n in range(len(parts) - 1, 0, -1):
        text = "; ".join(parts[:n]) + f"; and {len(parts) - n} more"
        if len(text) <= MAX_REASON:
            return text
    return out[: MAX_REASON - 3] + "..."


# -- the day's state --------------------------------------------------------------------


@dataclass(frozen=True)
class TruckProgress:
    """What a truck reported today: position and load, shift start, breakdown, shift end,
    the bins it skipped (bin id -> (when, reason))."""

    position: TruckStateRow | None = None
    shift_started_at: datetime | None = None
    broken_at: datetime | None = None
    ended_at: datetime | None = None
    break_end: datetime | None = None
    skipped: Mapping[str, tuple[datetime, str]] = field(default_factory=dict)

    @property
    def broken(self) -> bool:
        return self.broken_at is not None and (
            self.shift_started_at is None or self.broken_at >= self.shift_started_at
        )

    @property
    def finished(self) -> bool:
        return self.ended_at is not None and (
            self.shift_started_at is None or self.ended_at >= self.shift_started_at
        )


@dataclass(frozen=True)
class DayState:
    """Everything a re-plan of `day` at `now` reads."""

    now: datetime
    axis: DayAxis
    bins: Mapping[str, BinRow]
    sites: Sequence[SiteRow]
    trucks: Sequence[TruckRow]
    routes: Mapping[str, RouteCommand]  # current version per truck, this day
    done: Mapping[str, Emptying]  # bin -> its last emptying today
    progress: Mapping[str, TruckProgress]
    refill_after: timedelta = timedelta(minutes=30)  # ReplanOptions.refill_after

    @property
    def day(self) -> date:
        return self.axis.day

    def fraction_fleet(self, fraction: str) -> list[TruckRow]:
        return [t for t in self.trucks if self.fraction_of(t) == fraction]

    def fraction_of(self, truck: TruckRow) -> str:
        """The fraction the truck collects today: as its current route records it, else by
        the weekday rotation of its fractions."""
        route = self.routes.get(truck.truck_id)
        recorded = getattr(route, "fraction", None) if route is not None else None
        return str(recorded) if recorded else fraction_of_day(truck, self.day)

    def truck(self, truck_id: str) -> TruckRow | None:
        return next((t for t in self.trucks if t.truck_id == truck_id), None)

    def remaining(self, truck_id: str) -> list[RouteStop]:
        """The stops and unloads of the truck's current route still ahead of it."""
        route = self.routes.get(truck_id)
        if route is None:
            return []
        gone = self.emptied_for(route) | self._skipped_since(truck_id, route.created_at)
        return _remaining(route, gone)

    def emptied_for(self, route: RouteCommand) -> frozenset[str]:
        """The bins whose stops on ``route`` are done (see :func:`emptied_for`)."""
        return emptied_for(route, self.done, self.refill_after)

    def refilled(self, bin_id: str, at: datetime) -> bool:
        """Whether a reading at ``at`` may re-plan the bin now (see :func:`refilled`)."""
        return refilled(bin_id, at, self.now, self.done, self.refill_after)

    def on_route(self, bin_id: str) -> str | None:
        """The truck whose remaining route has the bin, or None."""
        for truck_id in self.routes:
            if any(s.bin_id == bin_id for s in self.remaining(truck_id) if s.kind == "stop"):
                return truck_id
        return None

    def _skipped_since(self, truck_id: str, since: datetime) -> frozenset[str]:
        p = self.progress.get(truck_id)
        if p is None:
            return frozenset()
        return frozenset(b for b, (ts, _why) in p.skipped.items() if ts >= since)


def day_state(
    *,
    now: datetime,
    bins: Iterable[BinRow],
    sites: Sequence[SiteRow],
    trucks: Sequence[TruckRow],
    routes: Mapping[str, RouteCommand],
    events: Iterable[TruckEventRow],
    states: Mapping[str, TruckStateRow],
    break_ends: Mapping[str, datetime],
    options: ReplanOptions,
) -> DayState:
    """The state of the day of `now` (Europe/Berlin) from database rows and heard events.

    Done bins are ``stop_done`` events since the earliest first ETA of today's routes minus
    ``done_margin`` (never before local midnight); positions older than midnight are
    ignored (the truck is then at its depot).
    """
    axis = DayAxis(now.astimezone(BERLIN).date())
    midnight = axis.midnight
    firsts = [r.stops[0].eta for r in routes.values() if r.stops]
    since = max(midnight, min(firsts) - options.done_margin) if firsts else midnight
    done: dict[str, Emptying] = {}
    per_truck: dict[str, dict[str, object]] = {}
    skipped: dict[str, dict[str, tuple[datetime, str]]] = {}
    for e in sorted(events, key=lambda e: e.ts):
        if e.ts < midnight:
            continue
        if e.kind == "stop_done" and e.bin_id and e.ts >= since:
            done[e.bin_id] = Emptying(e.ts, e.known_at or e.ts)  # in time order: the last
        elif e.kind == "stop_skipped" and e.bin_id:
            skipped.setdefault(e.truck_id, {})[e.bin_id] = (e.ts, e.reason or "")
        elif e.kind in ("shift_start", "breakdown", "shift_end"):
            per_truck.setdefault(e.truck_id, {})[e.kind] = e.ts
    progress: dict[str, TruckProgress] = {}
    for t in trucks:
        seen = per_truck.get(t.truck_id, {})
        state = states.get(t.truck_id)
        progress[t.truck_id] = TruckProgress(
            position=state if state is not None and state.ts >= midnight else None,
            shift_started_at=_ts(seen.get("shift_start")),
            broken_at=_ts(seen.get("breakdown")),
            ended_at=_ts(seen.get("shift_end")),
            break_end=break_ends.get(t.truck_id),
            skipped=skipped.get(t.truck_id, {}),
        )
    return DayState(
        now=now,
        axis=axis,
        bins={b.bin_id: b for b in bins},
        sites=tuple(sites),
        trucks=tuple(trucks),
        routes={k: r for k, r in routes.items() if r.plan_date == axis.day},
        done=done,
        progress=progress,
        refill_after=options.refill_after,
    )


def _ts(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _remaining(route: RouteCommand, gone: frozenset[str]) -> list[RouteStop]:
    """Stops not done or skipped, in order, and the unloads after the last stop done."""
    last = max(
        (i for i, s in enumerate(route.stops) if s.kind == "stop" and s.bin_id in gone),
        default=0,
    )
    out: list[RouteStop] = []
    for i, s in enumerate(route.stops):
        stop = s.kind == "stop" and bool(s.bin_id) and s.bin_id not in gone
        unload = s.kind == "unload" and i > last and not (out and out[-1].kind == "unload")
        if stop or unload:
            out.append(s)
    return out


def _skip_done(trigger: Trigger, state: DayState) -> bool:
    """Whether a skipped stop's bin was emptied as far as the skipping truck's current
    route knows (a stale tablet skipping a bin another truck emptied)."""
    route = state.routes.get(trigger.truck_id or "")
    if route is None:
        return trigger.bin_id in state.done
    return (trigger.bin_id or "") in state.emptied_for(route)


def triggers_by_fraction(
    triggers: Iterable[Trigger], state: DayState
) -> dict[str, tuple[Trigger, ...]]:
    """The triggers that still matter, grouped by the fraction they re-plan.

    Dropped: unknown bins and trucks, bins already emptied today, an overflow of a bin
    that is on a route already, delays of trucks without a route. A closure re-plans
    every fraction collected today (the affected legs are not worked out: the re-plan
    keeps routes that do not change, see :func:`changed_trucks`).
    """
    fractions_today = sorted({state.fraction_of(t) for t in state.trucks})
    out: dict[str, list[Trigger]] = {}
    for t in triggers:
        targets: list[str] = []
        if t.kind in (TriggerKind.OVERFLOW, TriggerKind.FIRE, TriggerKind.SKIPPED):
            b = state.bins.get(t.bin_id or "")
            if b is None:
                logger.info("%s: unknown bin, ignored", t)
            elif t.kind is TriggerKind.SKIPPED and _skip_done(t, state):
                logger.info("%s: bin already emptied, ignored", t)
            elif t.kind is not TriggerKind.SKIPPED and not state.refilled(b.bin_id, t.at):
                logger.info(
                    "%s: bin emptied at %s, reading of %s too close to it, ignored",
                    t,
                    f"{state.done[b.bin_id].at.astimezone(BERLIN):%H:%M}",
                    f"{t.at.astimezone(BERLIN):%H:%M}",
                )
            elif t.kind is TriggerKind.OVERFLOW and state.on_route(b.bin_id):
                logger.debug("%s: bin is on a route already", t)
            else:
                targets.append(b.fraction)
        elif t.kind in (TriggerKind.BREAKDOWN, TriggerKind.LATE):
            truck = state.truck(t.truck_id or "")
            if truck is None:
                logger.info("%s: unknown truck, ignored", t)
            elif t.kind is TriggerKind.LATE and t.truck_id not in state.routes:
                logger.info("%s: truck has no route today, ignored", t)
            else:
                targets.append(state.fraction_of(truck))
        else:
            targets.extend(fractions_today)
        for f in targets:
            out.setdefault(f, []).append(t)
    return {f: tuple(ts) for f, ts in sorted(out.items())}


# -- the network, with memory ------------------------------------------------------------


class CachingNetwork(RoadNetwork):
    """A road network that remembers, per source node, the shortest-path tree it searched
    (costs to every node and predecessors), so that consecutive re-plans compute only what
    is new: the trucks' new positions, new bins. Matrix rows and street geometry of any leg
    from a known place are then free. Make one per network with :meth:`of`; closures give a
    new network and thus empty memory, which also starts over past ``max_bytes``.
    """

    _trees: dict[tuple[str, int], tuple[FloatArray, npt.NDArray[np.int32]]]

    max_bytes: ClassVar[int] = 512 * 2**20
    _BATCH: ClassVar[int] = 64

    @classmethod
    def of(cls, network: RoadNetwork) -> CachingNetwork:
        if isinstance(network, CachingNetwork):
            return network
        return cls(**{f.name: getattr(network, f.name) for f in fields(network) if f.init})

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "_trees", {})

    def _search(self, sources: Iterable[int], weight: str) -> None:
        wanted = {int(n) for n in sources}
        missing = sorted(wanted - {n for w, n in self._trees if w == weight})
        if not missing:
            return
        if (len(self._trees) + len(missing)) * 12 * self.n_nodes > self.max_bytes:
            self._trees.clear()
            missing = sorted(wanted)
        self._node_indices(missing)
        graph = self._graph(weight)
        for at in range(0, len(missing), self._BATCH):
            batch = missing[at : at + self._BATCH]
            dist, pred = dijkstra(graph, directed=True, indices=batch, return_predecessors=True)
            for i, n in enumerate(batch):
                self._trees[(weight, n)] = (
                    np.asarray(dist[i], dtype=np.float64),
                    np.asarray(pred[i], dtype=np.int32),
                )

    def matrix(
        self, sources: Sequence[int], targets: Sequence[int], weight: str = "time"
    ) -> FloatArray:
        self._weight(weight)  # validates the name
        self._search(sources, weight)
        if len(sources) == 0:
            return np.full((0, len(targets)), np.inf)
        idx = self._node_indices(targets)
        return np.stack([self._trees[(weight, int(n))][0][idx] for n in sources])

    def shortest_path(self, src: int, dst: int, weight: str = "time") -> PathResult | None:
        self._weight(weight)
        self._node_indices([src, dst])
        if src == dst:
            return PathResult(nodes=[src], edges=[], length_m=0.0, travel_time_s=0.0)
        self._search([src], weight)
        pred = self._trees[(weight, int(src))][1]
        if pred[dst] < 0:
            return None
        nodes = [int(dst)]
        while nodes[-1] != src:
            nodes.append(int(pred[nodes[-1]]))
        nodes.reverse()
        edges = [self.edge_between(u, v, weight) for u, v in itertools.pairwise(nodes)]
        idx = np.asarray(edges, dtype=np.int64)
        return PathResult(
            nodes=nodes,
            edges=[int(e) for e in idx],
            length_m=float(self.length_m[idx].sum()),
            travel_time_s=float(self.travel_time_s[idx].sum()),
        )


def _as_int(matrix: FloatArray) -> npt.NDArray[np.int64]:
    out = np.where(np.isfinite(matrix), np.rint(matrix), UNREACHABLE)
    return np.asarray(out, dtype=np.int64)


# -- the re-planning problem ------------------------------------------------------------


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


@dataclass
class _PoolItem:
    bin_id: str
    demand_l: int
    required: bool
    penalty: int = 0
    not_before: int | None = None
    urgent: bool = False


def build_replan(
    state: DayState,
    fraction: str,
    triggers: Sequence[Trigger],
    *,
    network: RoadNetwork,
    options: ReplanOptions = ReplanOptions(),
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
    axis, now = state.axis, state.now
    t_now = axis.since(now)
    opts = options.planning
    fleet = state.fraction_fleet(fraction)
    active: list[TruckRow] = []
    retired: set[str] = set()
    positions: dict[str, Location] = {}
    loads: dict[str, int] = {}
    orphaned: list[RouteStop] = []
    demand_of: dict[str, int] = {}
    for t in fleet:
        p = state.progress.get(t.truck_id, TruckProgress())
        rest = state.remaining(t.truck_id)
        route = state.routes.get(t.truck_id)
        if route is not None:
            demand_of.update(_demands(route))
        positions[t.truck_id] = _truck_location(t, p, state, network)
        loads[t.truck_id] = min(t.capacity_l, _start_load(t.truck_id, p, state))
        over = t_now >= axis.seconds(t.shift_end)
        if p.broken or p.finished or over:
            orphaned.extend(s for s in rest if s.kind == "stop")
            if p.broken and any(s.kind == "stop" for s in rest):
                retired.add(t.truck_id)
        else:
            active.append(t)

    pins = {
        t.truck_id: pin
        for t in active
        if (pin := _pin(t, state, loads[t.truck_id], options)) is not None
    }

    pool: dict[str, _PoolItem] = {}

    def add(item: _PoolItem) -> None:
        old = pool.get(item.bin_id)
        if old is None:
            pool[item.bin_id] = item
            return
        old.required = old.required or item.required
        old.penalty = 0 if old.required else max(old.penalty, item.penalty)
        old.urgent = old.urgent or item.urgent
        old.demand_l = max(old.demand_l, item.demand_l)
        if item.not_before is not None:
            old.not_before = max(old.not_before or 0, item.not_before)

    for s in orphaned:
        if s.bin_id in state.bins:
            add(_PoolItem(s.bin_id or "", demand_of.get(s.bin_id or "", 1), True))
    for bin_id in _left_out(state, fleet):
        row = state.bins[bin_id]
        if row.fraction == fraction and bin_id not in pool and state.on_route(bin_id) is None:
            add(_PoolItem(bin_id, _fill_demand(row, row.fill_pct), True))
    for trig in triggers:
        b = state.bins.get(trig.bin_id or "")
        if b is None or b.fraction != fraction:
            continue
        moot = (
            _skip_done(trig, state)
            if trig.kind is TriggerKind.SKIPPED
            else not state.refilled(b.bin_id, trig.at)
        )
        if moot:
            continue
        if trig.kind in (TriggerKind.OVERFLOW, TriggerKind.FIRE):
            fill = trig.fill_pct if trig.fill_pct is not None else b.fill_pct
            demand = demand_of.get(b.bin_id) or _fill_demand(b, fill)
            add(_PoolItem(b.bin_id, demand, True, urgent=trig.kind is TriggerKind.FIRE))
        elif trig.kind is TriggerKind.SKIPPED:
            fill = b.fill_pct
            demand = demand_of.get(b.bin_id) or _fill_demand(b, fill)
            required = fill is None or fill >= options.mandatory_pct
            penalty = 0 if required else _reward(fill or 0.0, options)
            retry = t_now + options.skip_retry_s
            add(_PoolItem(b.bin_id, demand, required, penalty, not_before=retry))
    for kind, ref in pins.values():
        item = pool.pop(ref, None) if kind is VisitKind.STOP else None
        if item is not None:  # e.g. a fire in the bin the truck is emptying
            demand_of[ref] = max(demand_of.get(ref, 1), item.demand_l)

    # -- stops: remaining ones first (route order), then the pool -------------------
    before: dict[str, tuple[tuple[str, str], ...]] = {}
    etas: dict[str, dict[str, int]] = {}
    seqs: dict[str, list[tuple[VisitKind, str]]] = {}
    ordered: list[str] = []
    for t in active:
        placed = set(ordered)
        rest = state.remaining(t.truck_id)
        seq: list[tuple[VisitKind, str]] = []
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
        seq = _tidy(seq)
        seqs[t.truck_id] = seq
        if t.truck_id in state.routes:
            before[t.truck_id] = tuple((str(k), r) for k, r in seq)
    ordered.extend(b for b in pool if b not in ordered)

    locations: list[Location] = [
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
                demand_l=item.demand_l if item is not None else demand_of.get(bin_id, 1),
                service_s=opts.service_s,
                window=window,
                required=required,
                penalty=0 if required else max(1, item.penalty if item else 1),
            )
        )

    vehicles: list[Vehicle] = []
    for t in active:
        p = state.progress.get(t.truck_id, TruckProgress())
        shift = TimeWindow(axis.seconds(t.shift_start), axis.seconds(t.shift_end))
        start: VehicleStart | None = None
        if t_now >= shift.start:
            index = len(locations)
            locations.append(positions[t.truck_id])
            start = VehicleStart(
                location=index,
                time_s=t_now,
                load_l=loads[t.truck_id],
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

    nodes = [loc.node for loc in locations]
    full = Problem(
        stops=tuple(stops),
        sites=sites,
        vehicles=tuple(vehicles),
        time_s=_as_int(network.matrix(nodes, nodes, "time")),
        distance_m=_as_int(network.matrix(nodes, nodes, "length")),
        break_rule=opts.break_rule,
        unload_before_return=True,
        name=f"{axis.day.isoformat()} {fraction} re-plan",
    )
    pinned: dict[str, tuple[Visit, ...]] = {}
    starts: dict[str, Vehicle] = {}
    for v in full.vehicles:
        pin = pins.get(v.id)
        ahead = _prefix(full, v, *pin) if pin is not None else None
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
    urgent = frozenset(b for b, item in pool.items() if item.urgent)
    items = [pool[b] for b in ordered if b in pool]
    for v in vehicles:
        seqs[v.id], dropped = _repair(problem, v, seqs[v.id])
        for bin_id in dropped:
            stop = problem.stop_by_id[bin_id]
            items.append(_PoolItem(bin_id, stop.demand_l, stop.required, stop.penalty))
            logger.info("%s: %s cannot keep %s in its route", fraction, v.id, bin_id)
    _insert(problem, seqs, items)
    initial = _timed_plan(problem, seqs)
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
        axis=axis,
        problem=problem,
        locations=tuple(locations),
        initial=initial,
        triggers=tuple(triggers),
        before=before,
        etas=etas,
        named=named,
        retired=frozenset(retired),
        positions=positions,
        loads=loads,
        urgent=urgent,
        base_windows=base_windows,
        full=full,
        pinned=pinned,
        forced=forced,
    )


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
            tail = list((_timed(solved, v, home, drive_home=True) or [])[1:])
        if head[-1].kind is VisitKind.UNLOAD and tail and tail[0].kind is VisitKind.UNLOAD:
            tail = tail[1:]
        routes.append(make_route(full, vehicles[route.vehicle_id], [*head, *tail]))
    return Plan(tuple(routes), plan.unserved, plan.engine)


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


def with_fraction(route: RouteCommand, fraction: str) -> RouteCommand:
    """The route document with the fraction it collects, where the contract records it."""
    if "fraction" in RouteCommand.model_fields:
        return route.model_copy(update={"fraction": fraction})
    return route


def idle_route(
    *,
    truck_id: str,
    day: date,
    version: int,
    at: datetime,
    where: Location,
    load_l: float,
    reason: str,
    engine: str = "replanner",
) -> RouteCommand:
    """A version without stops, only where the truck stands: a broken-down truck's last
    one (reason "breakdown"), or a truck whose remaining stops all went to others."""
    return RouteCommand.model_validate(
        {
            "truck_id": truck_id,
            "plan_date": day,
            "version": version,
            "created_at": at,
            "reason": reason,
            "engine": engine,
            "distance_m": 0.0,
            "duration_s": 0.0,
            "stops": [
                {
                    "seq": 0,
                    "kind": "start",
                    "lat": where.lat,
                    "lon": where.lon,
                    "eta": at,
                    "etd": at,
                    "load_after_l": max(0.0, load_l),
                }
            ],
            "geometry": {"type": "LineString", "coordinates": []},
            "unserved": [],
        }
    )


# -- helpers ----------------------------------------------------------------------------


def _demands(route: RouteCommand) -> dict[str, int]:
    """What each stop of a version was expected to add to the load (its demand)."""
    out: dict[str, int] = {}
    for prev, s in itertools.pairwise(route.stops):
        if s.kind == "stop" and s.bin_id:
            out[s.bin_id] = max(1, round(s.load_after_l - prev.load_after_l))
    return out


def _left_out(state: DayState, fleet: Sequence[TruckRow]) -> list[str]:
    """Required bins today's current routes of these trucks report unserved, not emptied
    since: every re-plan tries them again."""
    out: list[str] = []
    for t in fleet:
        route = state.routes.get(t.truck_id)
        emptied = state.emptied_for(route) if route is not None else frozenset()
        for u in route.unserved if route is not None else ():
            bin_id = u.get("bin_id", "")
            if (
                u.get("code") != str(UnservedCode.OPTIONAL_DROPPED)
                and bin_id in state.bins
                and bin_id not in emptied
                and bin_id not in out
            ):
                out.append(bin_id)
    return out


def _fill_demand(b: BinRow, fill_pct: float | None) -> int:
    pct = 100.0 if fill_pct is None else fill_pct
    return max(1, round(b.capacity_l * pct / 100.0))


def _reward(fill_pct: float, options: ReplanOptions) -> int:
    """The daily plan's reward of an optional bin (see ``forecast.select_bins``)."""
    band = options.mandatory_pct - options.optional_pct
    scaled = round(options.reward_scale * (fill_pct - options.optional_pct) / band)
    return min(options.reward_scale - 1, max(1, scaled))


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


def _tidy(seq: list[tuple[VisitKind, str]]) -> list[tuple[VisitKind, str]]:
    """No unload right after another (the engines forbid it)."""
    out: list[tuple[VisitKind, str]] = []
    for item in seq:
        if item[0] is VisitKind.UNLOAD and out and out[-1][0] is VisitKind.UNLOAD:
            continue
        out.append(item)
    return out


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


Seq = list[tuple[VisitKind, str]]


def _timed(
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


def _prefix(
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


def _repair(problem: Problem, v: Vehicle, seq: Seq) -> tuple[Seq, list[str]]:
    """The route with its last stops dropped until it can be driven (a truck running late
    cannot keep all of them); returns it and the dropped stops."""
    dropped: list[str] = []
    while seq and _timed(problem, v, seq) is None:
        at = [i for i, (kind, _) in enumerate(seq) if kind is VisitKind.STOP]
        if not at:
            return [], dropped
        dropped.append(seq[at[-1]][1])
        seq = _tidy([*seq[: at[-1]], *seq[at[-1] + 1 :]])
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
    visits = _timed(problem, v, seq)
    end_s = UNREACHABLE if visits is None else (visits[-1].arrival_s if visits else v.start_time)
    return _Shape(
        np.asarray(places, dtype=np.int64),
        np.concatenate([[0], np.cumsum(np.asarray(unload, dtype=np.int64))]).astype(np.int64),
        np.asarray(loads, dtype=np.int64),
        end_s,
    )


def _insert(problem: Problem, seqs: dict[str, Seq], items: Sequence[_PoolItem]) -> None:
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
            candidate = _tidy([*seqs[vid][:gap], *extra_visits, *seqs[vid][gap:]])
            if _timed(problem, vehicles[vid], candidate) is not None:
                seqs[vid] = candidate
                shapes.pop(vid, None)
                break
        else:
            logger.debug("stop %s: no place in the starting solution", item.bin_id)


_PER_TRUCK: Final = 6


def _timed_plan(problem: Problem, seqs: Mapping[str, Seq]) -> Plan:
    """The starting solution with times and loads, and the stops it leaves out."""
    routes: list[Route] = []
    for v in problem.vehicles:
        visits = _timed(problem, v, seqs[v.id]) or []
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


def plan_score(problem: Problem, plan: Plan) -> tuple[int, int]:
    """(required stops not served, distance plus penalties of optional stops left out):
    smaller is better."""
    stops = problem.stop_by_id
    missed = sum(1 for u in plan.unserved if u.stop_id in stops and stops[u.stop_id].required)
    return missed, plan_cost(problem, plan).total
