"""The dispatch policy: which fraction's round goes out today, with which bins and trucks.

Pure functions over the forecasts, the fleet and the calendar: no clock, no database.
`routing/daily.py` (`cityops routing plan`) and the savings benchmark both call `decide`.

Why a policy at all: on a city's streets a round costs its drive from the depot to the
district, to the disposal site and back whatever the number of bins on it, so sensors save
kilometres by *skipping rounds* (a fraction's truck stays home when nothing is due) and by
collecting fewer, fuller bins, not by sending every truck out every day for a few bins.

How a day is decided (`decide`):

* **Next chance.** For each fraction, the next day after the plan day on which a truck
  that carries it works (`DispatchParams.workdays`, per truck `truck_workdays`): Saturday's
  next chance is Monday. The deadline is the end of the latest shift of those trucks on
  that day (the worst case: a bin last on a round that takes the whole shift), or, as
  soon as the fraction has rounds in the last 14 days, the latest hour into the shift at
  which one of them reached a bin (`reach_from_history`; `reach_within_h` overrides it).
* **Mandatory bins.** `forecast.select_bins` against that deadline: a bin predicted at
  or above `mandatory_pct` then cannot wait for the next chance.
* **A round goes out** if the fraction has a mandatory bin, or if the predicted litres of
  its optional bins reach `min_optional_load` of the largest truck that carries it (a
  round that is worth driving on its own). Otherwise the fraction is held; its optional
  bins wait.
* **Optional bins** (predicted at or above `optional_pct`) join only rounds that go out,
  with a reward (the solver's penalty for leaving one out, in metres of route) of
  `reward_scale` at `mandatory_pct` falling linearly to 1 at `optional_pct`: a nearly
  full bin is worth a detour, a half-full one is not.
* **Look-ahead** (`ahead_reward` > 0): when a round goes out, today's bins decide when
  the fraction's next round must go anyway: emptied today and filling again at their
  rates, the fastest of them is back at `mandatory_pct` before the deadline of some later
  chance (at most `ahead_days` on). The bins that would send a round out *before* that
  one (they pass `mandatory_pct` before its deadline) join today's worth `ahead_reward`
  metres, about what a round costs, so that the days in between can skip the round.
  When the bins that join are faster still, the horizon is set again with them.
* **Trucks by urgency.** Fractions that go out are ranked by how many of their bins would
  overflow (100 %) by the deadline if the round waited for the next chance, then by the
  earliest predicted overflow among their mandatory bins, then required litres (so a
  truck shared by two fractions goes where waiting would let more bins overflow, not to
  the one glass bin that overflows first). Each takes, in that
  order, a free truck that carries it, preferring the truck that carries the fewest other
  fractions going out today (so a shared truck stays free for a fraction only it can
  collect), then the largest. A fraction gets another free truck while its selected
  litres exceed `max_loads_per_truck` loads of the trucks it has. Trucks with nothing due
  stay at the depot. A fraction that goes out without a truck (none carries it, or the
  only ones are on more urgent rounds) reports its mandatory bins as not planned.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from cityops.routing.dispatch_params import DEFAULT_DISPATCH, DispatchParams
from cityops.routing.forecast import FillForecast, Selection, select_bins
from cityops.routing.model import Unserved, UnservedCode
from cityops.routing.planning import BERLIN, DayAxis
from cityops.routing.rows import TruckRow

__all__ = [
    "DEFAULT_DISPATCH",
    "Dispatch",
    "DispatchParams",
    "Round",
    "assign_trucks",
    "decide",
    "next_chance",
    "reach_from_history",
]

logger = logging.getLogger(__name__)

_FOREVER = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Round:
    """One fraction's work today: its bins and its trucks (none: it cannot be collected)."""

    fraction: str
    selections: tuple[Selection, ...]
    trucks: tuple[TruckRow, ...]
    deadline: datetime
    first_overflow: datetime | None
    reason: str

    @property
    def required(self) -> int:
        return sum(1 for s in self.selections if s.required)


@dataclass(frozen=True)
class Dispatch:
    """The day's decision: rounds that go out, fractions held back (with why), and the
    mandatory bins that no truck can collect today."""

    rounds: tuple[Round, ...]
    held: Mapping[str, str]
    unserved: tuple[Unserved, ...]

    @property
    def selected(self) -> int:
        return sum(len(r.selections) for r in self.rounds)

    @property
    def required(self) -> int:
        return sum(r.required for r in self.rounds)


def next_chance(
    fraction: str, day: date, trucks: Sequence[TruckRow], params: DispatchParams
) -> tuple[date, list[TruckRow]] | None:
    """The first day after `day` on which a truck carrying `fraction` works, and those
    trucks; None if no truck carries it on any day."""
    carriers = [t for t in trucks if fraction in t.fractions]
    for ahead in range(1, 8):
        d = day + timedelta(days=ahead)
        working = [t for t in carriers if params.works(t, d)]
        if working:
            return d, working
    return None


def _deadline(
    fraction: str,
    day: date,
    trucks: Sequence[TruckRow],
    params: DispatchParams,
    reach_h: float | None = None,
) -> tuple[date, datetime]:
    """The fraction's next chance after `day` and its deadline then: `reach_h` hours
    after the earliest shift start, at most the end of the latest shift (any truck's if
    none carries it, so that its full bins are still found and reported)."""
    found = next_chance(fraction, day, trucks, params)
    if found is None:
        d = day + timedelta(days=1)
        while d.weekday() not in params.workdays:
            d += timedelta(days=1)
        found = d, list(trucks)
    d, working = found
    axis = DayAxis(d)
    end = max(axis.at(axis.seconds(t.shift_end)) for t in working)
    if reach_h is None:
        return d, end
    start = min(axis.at(axis.seconds(t.shift_start)) for t in working)
    return d, min(end, start + timedelta(hours=reach_h))


def reach_from_history(
    last_stops: Iterable[tuple[str, date, float]], day: date, *, window_days: int = 14
) -> dict[str, float]:
    """Per fraction, the latest its rounds reached a bin in the `window_days` before
    `day`: the largest of (fraction, plan day, hours from the shift start to the round's
    last stop). Fractions without rounds in the window are left out (their deadline is
    the shift's end)."""
    since = day - timedelta(days=window_days)
    out: dict[str, float] = {}
    for fraction, plan_day, hours in last_stops:
        if since <= plan_day < day and hours > 0:
            out[fraction] = max(out.get(fraction, 0.0), hours)
    return out


def _ahead(
    forecasts: Sequence[FillForecast],
    chosen: Sequence[Selection],
    *,
    after: datetime,
    by: datetime,
    params: DispatchParams,
) -> tuple[list[Selection], int]:
    """`chosen` with the bins that would pass `mandatory_pct` before `by` (so each would
    send a round out before the one due at `by`) worth `ahead_reward`: optional bins
    raised to it, the others added. Returns the selections and how many were."""
    index = {f.bin_id: f for f in forecasts}
    out: list[Selection] = []
    for s in chosen:
        f = index.get(s.bin_id)
        if s.required or f is None or s.reward >= params.ahead_reward:
            out.append(s)
        elif f.predict(by) >= params.mandatory_pct:
            out.append(replace(s, reward=params.ahead_reward, reason=s.reason + "; ahead"))
        else:
            out.append(s)
    taken = {s.bin_id for s in chosen}
    raised = sum(1 for a, b in zip(out, chosen, strict=True) if a is not b)
    added: list[Selection] = []
    for f in forecasts:
        if f.bin_id in taken:
            continue
        p = f.predict(by)
        if p < params.mandatory_pct:
            continue
        reason = (
            f"ahead: {f.predict(after):.0f}% at next collection, {p:.0f}% by "
            f"{by.astimezone(BERLIN):%a %H:%M} Europe/Berlin (would send a round out earlier)"
        )
        if not f.reliable:
            reason += f"; unreliable: {f.note}"
        added.append(Selection(f.bin_id, False, f.predict(after), params.ahead_reward, reason))
    out.extend(added)
    out.sort(key=lambda s: (not s.required, -s.reward, s.bin_id))
    return out, raised + len(added)


def _deadlines(
    fraction: str,
    chance: date,
    first: datetime,
    trucks: Sequence[TruckRow],
    params: DispatchParams,
    reach_h: float | None,
    now: datetime,
) -> list[datetime]:
    """The deadlines of the fraction's next chances: `first` (the next chance's), then
    each following chance's, up to `ahead_days` after `now`."""
    out = [first]
    limit = now + timedelta(days=params.ahead_days)
    while True:
        chance, last = _deadline(fraction, chance, trucks, params, reach_h)
        if last > limit:
            return out
        out.append(max(last, now))


def _refill_horizon(
    forecasts: Mapping[str, FillForecast],
    emptied: Iterable[str],
    deadlines: Sequence[datetime],
    *,
    now: datetime,
    pct: float,
) -> int:
    """The index into `deadlines` of the chance whose round today's emptied bins, filling
    again at their rates from empty, would send out at the latest: the first chance by the
    deadline of whose successor one of them would be back at `pct` (the last one if none)."""
    fastest = max((forecasts[b].rate_pct_per_h for b in emptied if b in forecasts), default=0.0)
    for j in range(len(deadlines) - 1):
        if fastest * (deadlines[j + 1] - now) / timedelta(hours=1) >= pct:
            return j
    return len(deadlines) - 1


def _look_ahead(
    forecasts: Sequence[FillForecast],
    chosen: Sequence[Selection],
    deadlines: Sequence[datetime],
    *,
    now: datetime,
    params: DispatchParams,
) -> tuple[list[Selection], int, datetime]:
    """`chosen` with the bins that would send a round out before the next round that
    today's bins force anyway (`_refill_horizon`) worth `ahead_reward`. The horizon is
    first set by the bins chosen so far, then by those and the bins that join (a fast bin
    that joins can bring the next round closer). Returns the selections, how many were
    added or raised, and the horizon."""
    index = {f.bin_id: f for f in forecasts}
    pct = params.mandatory_pct
    j = _refill_horizon(index, (s.bin_id for s in chosen), deadlines, now=now, pct=pct)
    while True:
        out, n = _ahead(forecasts, chosen, after=deadlines[0], by=deadlines[j], params=params)
        k = _refill_horizon(index, (s.bin_id for s in out), deadlines, now=now, pct=pct)
        if k >= j:
            return out, n, deadlines[j]
        j = k


def _first_overflow(
    selections: Sequence[Selection], forecasts: Mapping[str, FillForecast]
) -> datetime | None:
    times = [
        forecasts[s.bin_id].time_to(100.0) or _FOREVER
        for s in selections
        if s.required and s.bin_id in forecasts
    ]
    return min(times) if times else None


def assign_trucks(
    rounds: Sequence[Round],
    trucks: Sequence[TruckRow],
    params: DispatchParams,
    day: date,
    litres: Mapping[str, float] | None = None,
) -> dict[str, list[TruckRow]]:
    """The trucks of each fraction in `rounds` (ranked most urgent first), see the module
    docstring. `litres` holds each fraction's selected litres (a fraction without gets one
    truck); trucks not working on `day` are not used, unless none works on it."""
    litres = litres or {}
    # A plan asked for a day no truck works (a catch-up Sunday) uses the whole fleet.
    free = [t for t in trucks if params.works(t, day)] or list(trucks)
    going = {r.fraction for r in rounds}
    out: dict[str, list[TruckRow]] = defaultdict(list)

    def flexibility(t: TruckRow) -> tuple[int, int, str]:
        return (sum(1 for f in t.fractions if f in going), -t.capacity_l, t.truck_id)

    for r in rounds:
        able = sorted((t for t in free if r.fraction in t.fractions), key=flexibility)
        if able:
            out[r.fraction].append(able[0])
            free.remove(able[0])
    for r in rounds:
        while True:
            mine = out.get(r.fraction, [])
            room = sum(t.capacity_l for t in mine) * params.max_loads_per_truck
            able = sorted((t for t in free if r.fraction in t.fractions), key=flexibility)
            if not mine or litres.get(r.fraction, 0.0) <= room or not able:
                break
            out[r.fraction].append(able[0])
            free.remove(able[0])
    return dict(out)


def decide(
    forecasts: Sequence[FillForecast],
    *,
    fraction_of: Mapping[str, str],
    capacity_l: Mapping[str, int],
    trucks: Sequence[TruckRow],
    day: date,
    now: datetime,
    params: DispatchParams = DEFAULT_DISPATCH,
    reach_h: Mapping[str, float] | None = None,
) -> Dispatch:
    """The day's rounds from the bins' forecasts (made at `now`, before the shifts).

    `fraction_of` and `capacity_l` map every forecast bin to its fraction and volume.
    `reach_h` holds, per fraction, the hours into a shift by which its round is counted
    on to reach its bins (`reach_from_history`); `params.reach_within_h`, when set,
    overrides it; without either the deadline is the shift's end.
    """
    by_fraction: dict[str, list[FillForecast]] = defaultdict(list)
    for f in forecasts:
        by_fraction[fraction_of[f.bin_id]].append(f)
    index = {f.bin_id: f for f in forecasts}
    candidates: list[tuple[Round, float, int]] = []
    selected_l: dict[str, float] = {}
    held: dict[str, str] = {}
    for frac in sorted(by_fraction):
        reach = params.reach_within_h or (reach_h or {}).get(frac)
        chance, last = _deadline(frac, day, trucks, params, reach)
        deadline = max(last, now)
        chosen = select_bins(
            by_fraction[frac],
            now=now,
            next_collection=deadline,
            mandatory_pct=params.mandatory_pct,
            optional_pct=params.optional_pct,
            reward_scale=params.reward_scale,
        )
        litres = {s.bin_id: capacity_l[s.bin_id] * s.predicted_fill_pct / 100.0 for s in chosen}
        required_l = sum(litres[s.bin_id] for s in chosen if s.required)
        optional_l = sum(litres[s.bin_id] for s in chosen if not s.required)
        carriers = [t.capacity_l for t in trucks if frac in t.fractions]
        worth = params.min_optional_load * max(carriers, default=0)
        when = f"{deadline.astimezone(BERLIN):%a %Y-%m-%d %H:%M} Europe/Berlin"
        if any(s.required for s in chosen):
            n = sum(1 for s in chosen if s.required)
            reason = f"{n} bins would pass {params.mandatory_pct:g}% before {when}"
        elif chosen and carriers and optional_l >= worth:
            reason = f"optional bins hold {optional_l:.0f} l (a round from {worth:.0f} l)"
        else:
            held[frac] = (
                f"no bin passes {params.mandatory_pct:g}% before {when}; optional bins hold "
                f"{optional_l:.0f} l, a round from {worth:.0f} l"
            )
            continue
        if params.ahead_reward:
            deadlines = _deadlines(frac, chance, deadline, trucks, params, reach, now)
            before = {s.bin_id for s in chosen}
            chosen, n_ahead, by = _look_ahead(
                by_fraction[frac], chosen, deadlines, now=now, params=params
            )
            if n_ahead:
                reason += (
                    f"; {n_ahead} bins that would send a round out before "
                    f"{by.astimezone(BERLIN):%a %H:%M} are worth more"
                )
                optional_l += sum(
                    capacity_l[s.bin_id] * s.predicted_fill_pct / 100.0
                    for s in chosen
                    if s.bin_id not in before
                )
        r = Round(frac, tuple(chosen), (), deadline, _first_overflow(chosen, index), reason)
        # bins that would overflow if the round waited for the next chance
        overflowing = sum(
            1
            for s in chosen
            if s.required and s.bin_id in index and index[s.bin_id].predict(deadline) >= 100.0
        )
        candidates.append((r, required_l, overflowing))
        selected_l[frac] = required_l + optional_l

    def urgency(item: tuple[Round, float, int]) -> tuple[int, datetime, float, str]:
        r, required_l, overflowing = item
        return (-overflowing, r.first_overflow or _FOREVER, -required_l, r.fraction)

    ranked = [r for r, _, _ in sorted(candidates, key=urgency)]
    fleets = assign_trucks(ranked, trucks, params, day, selected_l)
    rounds: list[Round] = []
    unserved: list[Unserved] = []
    for r in ranked:
        fleet = tuple(fleets.get(r.fraction, ()))
        rounds.append(
            Round(r.fraction, r.selections, fleet, r.deadline, r.first_overflow, r.reason)
        )
        if fleet:
            continue
        carriers_busy = sorted(
            f"{t.truck_id} collects {f}"
            for f, ts in fleets.items()
            for t in ts
            if r.fraction in t.fractions
        )
        why = f"no truck collects {r.fraction} on {day.isoformat()}" + (
            f" ({', '.join(carriers_busy)}, more urgent)" if carriers_busy else ""
        )
        if r.required:
            logger.warning("%s: %d mandatory bins not planned: %s", r.fraction, r.required, why)
        else:
            logger.info("%s: optional round not planned: %s", r.fraction, why)
        unserved.extend(
            Unserved(s.bin_id, UnservedCode.NOT_PLANNED, why) for s in r.selections if s.required
        )
    return Dispatch(tuple(rounds), held, tuple(unserved))
