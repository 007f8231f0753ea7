"""What a re-plan must or may serve besides the trucks' remaining stops: the stops of
broken-down and finished trucks, the required bins the current routes left unserved, and
the bins the triggers name (overflow and fire required, a fire soon; a skipped stop back,
not before ``skip_retry_s``, required or optional by its level)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from cityops.ingest.contract import RouteCommand, RouteStop
from cityops.routing.model import UnservedCode, VisitKind
from cityops.routing.replan.day import DayState, skip_done
from cityops.routing.replan.options import ReplanOptions
from cityops.routing.replan.triggers import Trigger, TriggerKind
from cityops.routing.replan.warm import PoolItem
from cityops.routing.rows import BinRow, TruckRow

__all__ = ["demands", "fill_demand", "stop_pool"]


def stop_pool(
    state: DayState,
    fraction: str,
    triggers: Sequence[Trigger],
    *,
    fleet: Sequence[TruckRow],
    orphaned: Sequence[RouteStop],
    demand_of: dict[str, int],
    pins: Mapping[str, tuple[VisitKind, str]],
    options: ReplanOptions,
) -> dict[str, PoolItem]:
    """The pool, by bin, in the order its stops are added. A bin a pinned truck is
    emptying leaves the pool (its demand raised in ``demand_of`` when the pool's is
    larger, e.g. a fire in the bin the truck is emptying)."""
    t_now = state.axis.since(state.now)
    pool: dict[str, PoolItem] = {}

    def add(item: PoolItem) -> None:
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
            add(PoolItem(s.bin_id or "", demand_of.get(s.bin_id or "", 1), True))
    for bin_id in _left_out(state, fleet):
        row = state.bins[bin_id]
        if row.fraction == fraction and bin_id not in pool and state.on_route(bin_id) is None:
            add(PoolItem(bin_id, fill_demand(row, row.fill_pct), True))
    for trig in triggers:
        b = state.bins.get(trig.bin_id or "")
        if b is None or b.fraction != fraction:
            continue
        moot = (
            skip_done(trig, state)
            if trig.kind is TriggerKind.SKIPPED
            else not state.refilled(b.bin_id, trig.at)
        )
        if moot:
            continue
        if trig.kind in (TriggerKind.OVERFLOW, TriggerKind.FIRE):
            fill = trig.fill_pct if trig.fill_pct is not None else b.fill_pct
            demand = demand_of.get(b.bin_id) or fill_demand(b, fill)
            add(PoolItem(b.bin_id, demand, True, urgent=trig.kind is TriggerKind.FIRE))
        elif trig.kind is TriggerKind.SKIPPED:
            fill = b.fill_pct
            demand = demand_of.get(b.bin_id) or fill_demand(b, fill)
            required = fill is None or fill >= options.mandatory_pct
            penalty = 0 if required else _reward(fill or 0.0, options)
            retry = t_now + options.skip_retry_s
            add(PoolItem(b.bin_id, demand, required, penalty, not_before=retry))
    for kind, ref in pins.values():
        item = pool.pop(ref, None) if kind is VisitKind.STOP else None
        if item is not None:  # e.g. a fire in the bin the truck is emptying
            demand_of[ref] = max(demand_of.get(ref, 1), item.demand_l)
    return pool


def demands(route: RouteCommand) -> dict[str, int]:
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


def fill_demand(b: BinRow, fill_pct: float | None) -> int:
    pct = 100.0 if fill_pct is None else fill_pct
    return max(1, round(b.capacity_l * pct / 100.0))


def _reward(fill_pct: float, options: ReplanOptions) -> int:
    """The daily plan's reward of an optional bin (see ``forecast.select_bins``)."""
    band = options.mandatory_pct - options.optional_pct
    scaled = round(options.reward_scale * (fill_pct - options.optional_pct) / band)
    return min(options.reward_scale - 1, max(1, scaled))
