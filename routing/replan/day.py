"""The day's state a re-plan reads (rows from the database merged with what the service
heard), each truck's progress, and which fraction each trigger re-plans."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from cityops.ingest.contract import RouteCommand, RouteStop
from cityops.routing.planning import BERLIN, DayAxis, fraction_of_day
from cityops.routing.replan.options import ReplanOptions
from cityops.routing.replan.triggers import Emptying, Trigger, TriggerKind, emptied_for, refilled
from cityops.routing.rows import BinRow, SiteRow, TruckEventRow, TruckRow, TruckStateRow

__all__ = ["DayState", "TruckProgress", "day_state", "skip_done", "triggers_by_fraction"]

logger = logging.getLogger(__name__)


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


def skip_done(trigger: Trigger, state: DayState) -> bool:
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
            elif t.kind is TriggerKind.SKIPPED and skip_done(t, state):
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
