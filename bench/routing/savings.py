"""Savings from sensors: a simulated week of collection on the demo city, sensor-driven
planning against the fixed schedule, on the same fill trajectories.

    .venv/bin/python bench/routing/savings.py [--days 7] [--warmup-days 7] [--time-limit 3]
        [--seed N | --seeds N [N ...] [--jobs 2]] [--scenario demo] [--start 2024-03-04]
        [--references] [--no-weekly] [--mandatory-pct 95] [--optional-pct 70]
        [--reward-scale 1000] [--min-optional-load 0.75] [--reach-within-h H]
        [--ahead-reward 2000] [--ahead-days 7]

`make bench-savings` runs seeds 42, 7 and 1 to 6, two at a time (about 17 minutes on
2 cores), and judges the target on the mean: one simulated week is a small sample (the
same policy drove 29.8 % and 44.1 % fewer km on two seeds).

The city is the scenario's (`build_city`: bins on the real streets of the OSM extract,
trucks, depot, disposal site). Every bin is the simulator's `BinSim` (fraction rate scaled
by size, a per-bin factor, weekday and hour-of-day pattern, sensor noise and faults), one
copy per policy with the same seed, so both policies see the same waste thrown in; they
differ only in when the bins are emptied. Each working day at the shift start a policy
plans, with the same engine, time limit, fleet, sites and road network (matrices from
`RoadNetwork.matrix` through `planning.build_problem`), and every plan is verified with
`check_plan`; each bin on a route is emptied at its planned arrival.

* **fixed schedule** (the baseline): every bin on fixed days of a two-week cycle, at a
  frequency per fraction sized to the fill model's typical rates as a city sizes its
  schedule (`design_frequencies`): the least frequent of fortnightly, weekly, twice and
  three times a week at which a bin filling at the fraction's 90th-percentile rate
  (the scenario's litres per day into a 240 l bin, times the 90th percentile of
  `BinSim`'s per-bin factor, lognormal(0, 0.35): x1.57; weekday and hour factors average
  1) does not fill up within the longest gap between its collection days. Each truck
  works every working day (the crews are paid anyway): its days are shared among the
  fractions it alone collects and each fraction's bins, by district from west to east,
  are cut into as many contiguous areas as its share of days holds
  (`frequency_schedule`). The day's bins of a fraction form one problem for its truck; its
  loads are the true fill at the shift start (the schedule cannot know them; it only
  helps it place its unloads).
* **fixed schedule, weekly** (reference; the earlier baseline): every bin once a week.
* **fixed schedule, fewest rounds** (reference, `--references`): the same frequencies
  with one area per fraction, i.e. each fraction's whole round on its days, trucks idle
  otherwise: what a fixed schedule costs when it, too, skips rounds.
* **sensor-driven**: the daily plan's logic (`routing/daily.py`): forecasts from the
  readings so far, the dispatch policy (`routing/dispatch.decide`: a fraction's round goes
  out only when a bin would pass 95 % before its next chance's round reaches it, as far
  into the shift as the policy's own rounds of the last 14 days reached bins, or when its
  optional bins fill a round; bins that would send a round out before the one that
  today's bins, filling again, send out anyway join; trucks by urgency), one problem per
  round.

A bin full to the brim (100 %: the rest lands beside it) counts one overflow per bin and
local day on which it is seen full (every reading, and at the emptying). `--warmup-days`
run both policies first without counting, so each starts the measured days from its own
steady state rather than from the scenario's random initial fill.

Prints a table per policy and day, the totals and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import time as wall
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np

from cityops.ingest.contract import BinTelemetry
from cityops.routing.check import check_plan
from cityops.routing.dispatch import DispatchParams, decide, reach_from_history
from cityops.routing.forecast import Observation, Selection, estimate, rates_by_group
from cityops.routing.model import Engine, VisitKind
from cityops.routing.network import RoadNetwork, load_network
from cityops.routing.planning import DayAxis, build_problem
from cityops.routing.rows import BinRow, SiteRow, TruckRow
from cityops.routing.solver import OrToolsEngine
from cityops.simulators.bin_sim import BinSim
from cityops.simulators.city import Bin, build_city
from cityops.simulators.emission import Emission, LocalClock
from cityops.simulators.scenario import BinsConfig, load_scenario

logger = logging.getLogger("bench.savings")

FULL_PCT = 100.0 - 1e-6  # the simulator caps the fill at the bin's volume
TARGET_KM_REDUCTION = 0.30
_HISTORY = timedelta(days=14)  # readings a forecast looks back on, as the daily plan
BIN_RATE_SIGMA = 0.35  # BinSim: each bin's rate is the fraction's times lognormal(0, 0.35)
DESIGN_QUANTILE_Z = 1.2816  # the 90th percentile of a standard normal
PER_WEEK = (0.5, 1.0, 2.0, 3.0)  # the frequencies a schedule is drawn from
CYCLE_WEEKS = 2
Slot = tuple[int, int]  # (week of the two-week cycle, weekday)


# -- the week simulation ------------------------------------------------------------


class FillModel(Protocol):
    """What the simulation needs of a bin: `BinSim` is one."""

    @property
    def spec(self) -> Bin: ...

    @property
    def next_time(self) -> float: ...

    @property
    def fill_pct(self) -> float: ...

    def step(self) -> list[Emission]: ...

    def empty(self, t: float) -> float: ...


@dataclass(frozen=True)
class DayPlan:
    """A policy's decision for one day: when each bin is emptied and the route length."""

    emptyings: Mapping[str, datetime]
    distance_m: int = 0
    rounds: int = 0  # routes that empty at least one bin
    unserved_required: int = 0
    violations: int = 0
    # per fraction, hours from the earliest shift start of its trucks to its last stop
    last_stop_h: Mapping[str, float] = field(default_factory=dict)


class Policy(Protocol):
    name: str

    def plan(
        self,
        day: date,
        now: datetime,
        readings: Mapping[str, Sequence[Observation]],
        levels: Mapping[str, float],
    ) -> DayPlan:
        """The day's plan from the readings up to `now` (and, for the fixed schedule's
        loads only, the true `levels` in percent at `now`)."""
        ...


@dataclass
class DayResult:
    day: date
    planned: bool = False
    distance_m: int = 0
    rounds: int = 0
    collections: int = 0
    overflows: int = 0  # bins seen full on this day
    unserved_required: int = 0
    violations: int = 0
    last_h: float = 0.0  # the day's last emptying, hours after the plan (the shift start)


@dataclass
class _Bin:
    model: FillModel
    readings: list[Observation] = field(default_factory=list)
    pending: list[float] = field(default_factory=list)  # emptying times, ascending


def simulate(
    bins: Sequence[FillModel],
    policy: Policy,
    days: Sequence[date],
    *,
    zone: ZoneInfo,
    plan_at: time,
    workdays: frozenset[int],
) -> list[DayResult]:
    """Run `policy` over consecutive local `days`: plan at `plan_at` on working days,
    empty the planned bins at their times, count collections and overflows per day.

    Pure apart from the bins' own state: no clock, no I/O.
    """
    state = {b.spec.bin_id: _Bin(b) for b in bins}
    results = {d: DayResult(d) for d in days}
    overflowed: set[tuple[str, date]] = set()

    def local_day(t: float) -> date:
        return datetime.fromtimestamp(t, zone).date()

    def full(bin_id: str, t: float) -> None:
        d = local_day(t)
        if d in results and (bin_id, d) not in overflowed:
            overflowed.add((bin_id, d))
            results[d].overflows += 1

    def advance(until: float) -> None:
        for bin_id, s in state.items():
            while True:
                t_step = s.model.next_time
                t_empty = s.pending[0] if s.pending else math.inf
                if min(t_step, t_empty) > until:
                    break
                if t_empty <= t_step:
                    s.pending.pop(0)
                    if s.model.empty(t_empty) >= s.model.spec.capacity_l * FULL_PCT / 100.0:
                        full(bin_id, t_empty)
                    if local_day(t_empty) in results:
                        results[local_day(t_empty)].collections += 1
                    continue
                for emission in s.model.step():
                    if isinstance(emission.payload, BinTelemetry):
                        p = emission.payload
                        s.readings.append(Observation(p.ts, p.fill_pct, p.fault))
                if s.model.fill_pct >= FULL_PCT:
                    full(bin_id, t_step)

    for d in days:
        now = datetime.combine(d, plan_at, tzinfo=zone)
        advance(now.timestamp())
        if d.weekday() not in workdays:
            continue
        horizon = now - _HISTORY
        readings = {
            bin_id: [o for o in s.readings if o.ts >= horizon] for bin_id, s in state.items()
        }
        levels = {bin_id: s.model.fill_pct for bin_id, s in state.items()}
        plan = policy.plan(d, now, readings, levels)
        r = results[d]
        r.planned = True
        r.distance_m += plan.distance_m
        r.rounds += plan.rounds
        r.unserved_required += plan.unserved_required
        r.violations += plan.violations
        if plan.emptyings:
            r.last_h = max(r.last_h, (max(plan.emptyings.values()) - now).total_seconds() / 3600)
        for bin_id, at in plan.emptyings.items():
            state[bin_id].pending.append(at.timestamp())
            state[bin_id].pending.sort()
    end = datetime.combine(days[-1] + timedelta(days=1), time(0), tzinfo=zone)
    advance(end.timestamp() - 1e-3)
    return [results[d] for d in days]


# -- planning, shared by both policies ------------------------------------------------


@dataclass
class Planner:
    """One problem per fraction with the given trucks, solved, checked, turned into
    emptying times (the planned service starts)."""

    network: RoadNetwork
    bins: Mapping[str, BinRow]
    sites: Sequence[SiteRow]
    engine: Engine
    time_limit_s: float
    seed: int = 0

    def solve(
        self, day: date, work: Mapping[str, tuple[Sequence[Selection], Sequence[TruckRow]]]
    ) -> DayPlan:
        axis = DayAxis(day)
        emptyings: dict[str, datetime] = {}
        distance = unserved = violations = rounds = 0
        last_stop_h: dict[str, float] = {}
        for fraction in sorted(work):
            chosen, fleet = work[fraction]
            if not chosen:
                continue
            if not fleet:
                unserved += sum(1 for s in chosen if s.required)
                continue
            problem, _ = build_problem(
                axis=axis,
                network=self.network,
                bins=self.bins,
                selections=chosen,
                sites=self.sites,
                trucks=fleet,
            )
            plan = self.engine.solve(problem, time_limit_s=self.time_limit_s, seed=self.seed)
            found = check_plan(problem, plan)
            for v in found:
                logger.error("%s %s: %s", day, fraction, v)
            violations += len(found)
            distance += plan.distance_m
            required = {s.id for s in problem.stops if s.required}
            unserved += sum(1 for u in plan.unserved if u.stop_id in required)
            start_s = min(axis.seconds(t.shift_start) for t in fleet)
            for route in plan.routes:
                rounds += any(v.kind is VisitKind.STOP for v in route.visits)
                for visit in route.visits:
                    if visit.kind is VisitKind.STOP:
                        emptyings[visit.ref] = axis.at(visit.arrival_s)
                        last_stop_h[fraction] = max(
                            last_stop_h.get(fraction, 0.0), (visit.arrival_s - start_s) / 3600
                        )
        return DayPlan(emptyings, distance, rounds, unserved, violations, last_stop_h)


# -- the fixed schedule ---------------------------------------------------------------


def _district_key(district: str) -> tuple[int, str, int]:
    letters = district.rstrip("0123456789")
    return len(letters), letters, int(district[len(letters) :] or 0)


def _split_even(counts: Sequence[int], parts: int) -> list[int]:
    """Group index per item: consecutive items cut into `parts` groups of similar total."""
    total = sum(counts)
    out, running = [], 0
    for c in counts:
        out.append(min(parts - 1, int(parts * (running + c / 2) / max(total, 1))))
        running += c
    return out


def fixed_schedule(
    bins: Sequence[Bin], trucks: Sequence[TruckRow], workdays: Sequence[int]
) -> tuple[dict[str, int], dict[str, TruckRow]]:
    """Each bin's weekday and each fraction's truck.

    A fraction goes to the first truck that lists it. A truck's working days are shared
    among its fractions in proportion to their bins (at least one day each, largest
    remainders first); a fraction's bins, by district from west to east, are cut into one
    contiguous group per day of the fraction.
    """
    by_fraction: dict[str, list[Bin]] = defaultdict(list)
    for b in bins:
        by_fraction[b.fraction].append(b)
    truck_of: dict[str, TruckRow] = {}
    for t in trucks:
        for f in t.fractions:
            truck_of.setdefault(f, t)
    weekday: dict[str, int] = {}
    for t in trucks:
        mine = [f for f in t.fractions if truck_of[f] is t and by_fraction.get(f)]
        if not mine:
            continue
        sizes = [len(by_fraction[f]) for f in mine]
        share = [max(1.0, len(workdays) * n / sum(sizes)) for n in sizes]
        days_of = [int(s) for s in share]
        order = sorted(range(len(mine)), key=lambda i: int(share[i]) - share[i])
        for i in order:
            if sum(days_of) >= len(workdays):
                break
            days_of[i] += 1
        first = 0
        for f, n_days in zip(mine, days_of, strict=True):
            own_days = list(workdays[first : first + n_days]) or [workdays[-1]]
            first += n_days
            ordered = sorted(by_fraction[f], key=lambda b: (_district_key(b.district), b.bin_id))
            districts = sorted({b.district for b in ordered}, key=_district_key)
            count = [sum(1 for b in ordered if b.district == d) for d in districts]
            group = dict(zip(districts, _split_even(count, len(own_days)), strict=True))
            for b in ordered:
                weekday[b.bin_id] = own_days[group[b.district]]
    return weekday, truck_of


def cycle_week(day: date) -> int:
    """The week of the two-week cycle `day` falls in (ISO week parity)."""
    return day.isocalendar().week % CYCLE_WEEKS


def weekly_slots(weekday: Mapping[str, int]) -> dict[str, frozenset[Slot]]:
    """The weekly schedule as slots of the two-week cycle."""
    return {b: frozenset((w, d) for w in range(CYCLE_WEEKS)) for b, d in weekday.items()}


def _pattern(per_week: float, workdays: Sequence[int], offset: int) -> list[int]:
    """Indices into `workdays` of one area's collection days within a week (k >= 1)."""
    n, k = len(workdays), round(per_week)
    return sorted({(offset + round(j * n / k)) % n for j in range(k)})


def longest_gap_days(per_week: float, workdays: Sequence[int]) -> int:
    """The longest gap in calendar days between an area's collections at `per_week`,
    over the day patterns the schedule may give it."""
    if per_week < 1:
        return 7 * round(1 / per_week)
    worst = 0
    for offset in range(len(workdays)):
        days = [workdays[i] for i in _pattern(per_week, workdays, offset)]
        gaps = [(b - a) % 7 or 7 for a, b in zip(days, days[1:] + days[:1], strict=True)]
        worst = max(worst, *gaps)
    return worst


def design_frequencies(cfg: BinsConfig, workdays: Sequence[int]) -> dict[str, float]:
    """Collections per week for each fraction, sized to the fill model's typical rates.

    The design rate is the fraction's litres per day into a 240 l bin (as %/day) times
    the 90th percentile of the per-bin factor; weekday and hour factors are taken at their
    mean. The least frequent of `PER_WEEK` whose longest gap keeps such a bin below 100 %
    (the most frequent if none does).
    """
    weekday_mean = sum(cfg.weekday_factors) / 7
    factor = math.exp(DESIGN_QUANTILE_Z * BIN_RATE_SIGMA) * weekday_mean
    out: dict[str, float] = {}
    for fraction in cfg.fractions:
        pct_per_day = 100.0 * cfg.fill_rate_l_per_day[fraction] / 240.0 * factor
        fits = [k for k in PER_WEEK if pct_per_day * longest_gap_days(k, workdays) < 100.0]
        out[fraction] = min(fits) if fits else max(PER_WEEK)
    return out


def frequency_schedule(
    bins: Sequence[Bin],
    trucks: Sequence[TruckRow],
    workdays: Sequence[int],
    per_week: Mapping[str, float],
    *,
    fill_days: bool = True,
) -> tuple[dict[str, frozenset[Slot]], dict[str, TruckRow]]:
    """Each bin's collection days (slots of the two-week cycle) and each fraction's truck.

    A fraction goes to the first truck that lists it. An area of a fraction collected k
    times a week takes k of its truck's weekdays in both weeks, spread evenly (twice a
    week on six working days: Monday and Thursday); a fortnightly area takes one day of
    one week. With `fill_days` a truck's slots are filled: areas are added, one at a
    time, to the fraction with the most bins per area that still fits; otherwise every
    fraction is one area. A fraction's bins, by district from west to east, are cut into
    contiguous areas of similar size.
    """
    by_fraction: dict[str, list[Bin]] = defaultdict(list)
    for b in bins:
        by_fraction[b.fraction].append(b)
    truck_of: dict[str, TruckRow] = {}
    for t in trucks:
        for f in t.fractions:
            truck_of.setdefault(f, t)
    n = len(workdays)
    slots_per_area = {f: max(1, round(CYCLE_WEEKS * k)) for f, k in per_week.items()}
    schedule: dict[str, frozenset[Slot]] = {}
    for t in trucks:
        mine = [f for f in t.fractions if truck_of[f] is t and by_fraction.get(f)]
        if not mine:
            continue
        areas = dict.fromkeys(mine, 1)
        room = CYCLE_WEEKS * n - sum(slots_per_area[f] for f in mine)
        while fill_days:
            fits = [f for f in mine if slots_per_area[f] <= room]
            if not fits:
                break
            best = max(fits, key=lambda f: (len(by_fraction[f]) / areas[f], f))
            areas[best] += 1
            room -= slots_per_area[best]
        free = {(w, i) for w in range(CYCLE_WEEKS) for i in range(n)}
        for f in sorted(mine, key=lambda f: (-per_week[f], mine.index(f))):
            placed: list[frozenset[Slot]] = []
            for _ in range(areas[f]):
                if per_week[f] >= 1:
                    options = [
                        {
                            (w, i)
                            for w in range(CYCLE_WEEKS)
                            for i in _pattern(per_week[f], workdays, o)
                        }
                        for o in range(n)
                    ]
                else:
                    options = [{(w, i)} for i in range(n) for w in range(CYCLE_WEEKS)]
                fit = next((o for o in options if o <= free), None)
                if fit is None:
                    break  # fewer, larger areas
                free -= fit
                placed.append(frozenset((w, workdays[i]) for w, i in fit))
            if not placed:
                raise ValueError(f"truck {t.truck_id} has no days left for {f}")
            ordered = sorted(by_fraction[f], key=lambda b: (_district_key(b.district), b.bin_id))
            districts = sorted({b.district for b in ordered}, key=_district_key)
            count = [sum(1 for b in ordered if b.district == d) for d in districts]
            area = dict(zip(districts, _split_even(count, len(placed)), strict=True))
            for b in ordered:
                schedule[b.bin_id] = placed[area[b.district]]
    return schedule, truck_of


@dataclass
class FixedSchedule:
    planner: Planner
    slots: Mapping[str, frozenset[Slot]]
    truck_of: Mapping[str, TruckRow]
    fraction: Mapping[str, str]
    name: str = "fixed schedule"

    def plan(
        self,
        day: date,
        now: datetime,
        readings: Mapping[str, Sequence[Observation]],
        levels: Mapping[str, float],
    ) -> DayPlan:
        today = (cycle_week(day), day.weekday())
        work: dict[str, tuple[list[Selection], list[TruckRow]]] = {}
        for bin_id in sorted(b for b, s in self.slots.items() if today in s):
            f = self.fraction[bin_id]
            chosen, _ = work.setdefault(f, ([], [self.truck_of[f]]))
            chosen.append(Selection(bin_id, True, levels[bin_id], 0, "fixed day"))
        return self.planner.solve(day, work)


@dataclass
class SensorDriven:
    planner: Planner
    trucks: Sequence[TruckRow]
    fraction: Mapping[str, str]
    params: DispatchParams
    name: str = "sensor-driven"
    # (fraction, day, hours into the shift of its last stop) of the policy's own plans,
    # as the daily plan reads them from the stored routes
    last_stops: list[tuple[str, date, float]] = field(default_factory=list)

    def plan(
        self,
        day: date,
        now: datetime,
        readings: Mapping[str, Sequence[Observation]],
        levels: Mapping[str, float],
    ) -> DayPlan:
        observed = {b: obs for b, obs in readings.items() if obs}
        first_pass = [estimate(b, obs, now=now) for b, obs in observed.items()]
        fallback = rates_by_group(first_pass, self.fraction)
        forecasts = [
            estimate(b, obs, now=now, fallback_rate_pct_per_h=fallback.get(self.fraction[b]))
            for b, obs in observed.items()
        ]
        decision = decide(
            forecasts,
            fraction_of=self.fraction,
            capacity_l={b: self.planner.bins[b].capacity_l for b in observed},
            trucks=self.trucks,
            day=day,
            now=now,
            params=self.params,
            reach_h=reach_from_history(self.last_stops, day),
        )
        work = {r.fraction: (list(r.selections), list(r.trucks)) for r in decision.rounds}
        plan = self.planner.solve(day, work)
        self.last_stops.extend((f, day, h) for f, h in plan.last_stop_h.items())
        return plan


# -- the command ----------------------------------------------------------------------


def _totals(results: Sequence[DayResult]) -> dict[str, float]:
    return {
        "km": round(sum(r.distance_m for r in results) / 1000.0, 2),
        "rounds": sum(r.rounds for r in results),
        "collections": sum(r.collections for r in results),
        "overflows": sum(r.overflows for r in results),
        "unserved_required": sum(r.unserved_required for r in results),
        "violations": sum(r.violations for r in results),
        "last_stop_h": round(max((r.last_h for r in results), default=0.0), 2),
    }


def _per_week_text(k: float) -> str:
    return {0.5: "fortnightly", 1.0: "weekly"}.get(k, f"{k:g}x a week")


def round_cost(days: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Least squares of a day's km on its rounds and emptied bins (no intercept): what a
    round costs on its own and what each bin on it adds, in km."""
    a = np.array([[d[1], d[2]] for d in days], dtype=float)
    km = np.array([d[0] for d in days], dtype=float)
    (per_round, per_bin), *_ = np.linalg.lstsq(a, km, rcond=None)
    return float(per_round), float(per_bin)


def _over_seeds(argv: list[str], seeds: Sequence[int], jobs: int) -> int:
    """Run this benchmark once per seed in child processes, `jobs` at a time; print each
    run's output as it ends, then the per-seed figures and their mean."""
    began = wall.perf_counter()
    waiting = list(seeds)
    running: list[tuple[int, subprocess.Popen[str]]] = []
    results: dict[int, dict[str, object]] = {}
    failed: list[int] = []
    while waiting or running:
        while waiting and len(running) < jobs:
            seed = waiting.pop(0)
            cmd = [sys.executable, __file__, *argv, "--seed", str(seed)]
            child = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            running.append((seed, child))
            print(f"seed {seed}: started", flush=True)
        seed, child = running.pop(0)
        out, _ = child.communicate()
        print(f"\n===== seed {seed} =====\n{out.rstrip()}", flush=True)
        last = out.strip().splitlines()[-1] if out.strip() else ""
        if child.returncode != 0 or not last.startswith("{"):
            failed.append(seed)
            continue
        results[seed] = json.loads(last)
    print(f"\n{'seed':>6}{'fixed km':>10}{'sensor km':>11}{'fewer km':>10}{'overflows':>14}")
    reductions = []
    overflows_ok = True
    for seed in seeds:
        if seed not in results:
            print(f"{seed:>6}  failed")
            continue
        r = results[seed]
        fixed, sensor = r["fixed"], r["sensor"]
        assert isinstance(fixed, dict) and isinstance(sensor, dict)
        reduction = float(str(r["km_reduction"]))
        reductions.append(reduction)
        overflows_ok &= sensor["overflows"] <= fixed["overflows"]
        print(
            f"{seed:>6}{fixed['km']:>10.1f}{sensor['km']:>11.1f}{100 * reduction:>9.1f} %"
            f"{sensor['overflows']:>7} vs {fixed['overflows']:<4}"
        )
    days: list[list[float]] = []
    for r in results.values():
        rows = r.get("days_planned", [])
        if isinstance(rows, list):
            days.extend(rows)
    per_round, per_bin = round_cost(days) if len(days) >= 2 else (float("nan"), float("nan"))
    print(
        f"what a day's km cost (least squares over {len(days)} planned days, both "
        f"policies): {per_round:.2f} km a round + {per_bin:.3f} km an emptied bin"
    )
    mean = sum(reductions) / len(reductions) if reductions else float("nan")
    met = bool(reductions) and not failed and mean >= TARGET_KM_REDUCTION and overflows_ok
    print(
        f"mean over {len(reductions)} seeds: {100 * mean:.1f} % fewer km; target (>= 30 % "
        f"fewer km on the mean, no more overflows on any seed) {'met' if met else 'NOT met'}"
        f"  ({wall.perf_counter() - began:.0f} s)"
    )
    summary = {
        "bench": "routing.savings.seeds",
        "seeds": list(seeds),
        "failed": failed,
        "runs": {str(k): v for k, v in results.items()},
        "mean_km_reduction": round(mean, 4),
        "km_per_round": round(per_round, 3),
        "km_per_emptied_bin": round(per_bin, 4),
        "days_fitted": len(days),
        "target_met": met,
    }
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=7, help="measured days")
    parser.add_argument("--warmup-days", type=int, default=7, help="days run but not counted")
    parser.add_argument("--time-limit", type=float, default=3.0, help="seconds per problem")
    parser.add_argument("--seed", type=int, default=None, help="default: the scenario's")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="run each seed in its own process (--jobs at a time) and judge the target on "
        "the mean over them",
    )
    parser.add_argument("--jobs", type=int, default=2, help="processes for --seeds (default 2)")
    parser.add_argument("--scenario", default="demo")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 3, 4))
    defaults = DispatchParams()
    parser.add_argument(
        "--mandatory-pct",
        type=float,
        default=defaults.mandatory_pct,
        help="sensor-driven: a bin is due at this predicted fill (default as the daily plan)",
    )
    parser.add_argument(
        "--optional-pct",
        type=float,
        default=defaults.optional_pct,
        help="sensor-driven: optional bins from this predicted fill (default as daily)",
    )
    parser.add_argument(
        "--reward-scale",
        type=int,
        default=defaults.reward_scale,
        help="sensor-driven: reward in metres of an optional bin at the mandatory fill",
    )
    parser.add_argument(
        "--min-optional-load",
        type=float,
        default=defaults.min_optional_load,
        help="sensor-driven: optional litres, in truck loads, that send a round alone",
    )
    parser.add_argument(
        "--reach-within-h",
        type=float,
        default=defaults.reach_within_h,
        help="sensor-driven: hours into the next chance's shift by which a bin is counted "
        "on to be reached (default: learned from its own rounds of the last 14 days)",
    )
    parser.add_argument(
        "--ahead-reward",
        type=int,
        default=defaults.ahead_reward,
        help="sensor-driven: metres a bin is worth that would send a round out before "
        "the one today's bins force anyway, when it joins today's (0: off)",
    )
    parser.add_argument(
        "--ahead-days",
        type=float,
        default=defaults.ahead_days,
        help="sensor-driven: how many days the look-ahead looks at most",
    )
    parser.add_argument(
        "--references",
        action="store_true",
        help="also run the fixed schedule with the fewest rounds (reference)",
    )
    parser.add_argument(
        "--no-weekly", action="store_true", help="skip the weekly schedule (reference)"
    )
    args = parser.parse_args(argv)
    if args.days < 1 or args.warmup_days < 0 or args.time_limit <= 0:
        parser.error("need --days >= 1, --warmup-days >= 0 and a positive --time-limit")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.seeds and args.seed is None:
        if args.jobs < 1:
            parser.error("need --jobs >= 1")
        return _over_seeds(list(argv if argv is not None else sys.argv[1:]), args.seeds, args.jobs)

    scenario = load_scenario(args.scenario)
    if args.seed is not None:
        scenario = scenario.model_copy(update={"seed": args.seed})
    zone = scenario.zone
    began = wall.perf_counter()
    network = load_network(scenario.osm_file)
    city = build_city(scenario, network)
    shift = scenario.trucks.shift
    workdays = frozenset(shift.weekdays)
    bin_rows = {
        b.bin_id: BinRow(
            b.bin_id, b.lat, b.lon, b.street, b.fraction, b.capacity_l, None, None, None
        )
        for b in city.bins
    }
    sites = [SiteRow(s.site_id, s.kind, s.lat, s.lon) for s in city.sites]
    trucks = [
        TruckRow(
            t.truck_id,
            t.capacity_l,
            t.capacity_kg,
            t.depot_id,
            t.fractions,
            t.shift_start,
            t.shift_end,
        )
        for t in city.trucks
    ]
    fraction = {b.bin_id: b.fraction for b in city.bins}
    engine = OrToolsEngine(first_solution="PARALLEL_CHEAPEST_INSERTION")
    planner = Planner(network, bin_rows, sites, engine, args.time_limit)

    ordered_days = sorted(workdays)
    per_week = design_frequencies(scenario.bins, ordered_days)
    slots, truck_of = frequency_schedule(city.bins, trucks, ordered_days, per_week)
    weekday, _ = fixed_schedule(city.bins, trucks, ordered_days)
    params = DispatchParams(
        workdays=workdays,
        mandatory_pct=args.mandatory_pct,
        optional_pct=args.optional_pct,
        reward_scale=args.reward_scale,
        min_optional_load=args.min_optional_load,
        ahead_reward=args.ahead_reward,
        ahead_days=args.ahead_days,
        reach_within_h=args.reach_within_h,
    )
    baseline = FixedSchedule(planner, slots, truck_of, fraction)
    policies: list[Policy] = [baseline]
    if not args.no_weekly:
        policies.append(
            FixedSchedule(planner, weekly_slots(weekday), truck_of, fraction, "fixed, weekly")
        )
    if args.references:
        fewest, _ = frequency_schedule(city.bins, trucks, ordered_days, per_week, fill_days=False)
        policies.append(FixedSchedule(planner, fewest, truck_of, fraction, "fixed, fewest rounds"))
    sensor_driven = SensorDriven(planner, trucks, fraction, params)
    policies.append(sensor_driven)
    areas: dict[str, set[frozenset[Slot]]] = defaultdict(set)
    for bin_id, s in slots.items():
        areas[fraction[bin_id]].add(s)
    design = ", ".join(
        f"{f} {_per_week_text(k)} ({len(areas[f])} areas, truck {truck_of[f].truck_id})"
        for f, k in per_week.items()
    )
    days = [args.start + timedelta(days=i) for i in range(args.warmup_days + args.days)]
    sim_start = datetime.combine(args.start - timedelta(days=1), time(0), tzinfo=zone)
    measured: dict[str, list[DayResult]] = {}
    print(
        f"scenario {scenario.name} (seed {scenario.seed}): {len(city.bins)} bins, "
        f"{len(trucks)} trucks of {trucks[0].capacity_l} l, road network "
        f"{network.n_nodes} nodes; {args.warmup_days} warm-up + {args.days} measured days "
        f"from {days[args.warmup_days]}, {args.time_limit:g} s per problem\n"
        f"fixed schedule (90th-percentile bin of each fraction never full): {design}\n"
        f"sensor-driven: due at {params.mandatory_pct:g} % by the next chance ("
        + (
            "learned from its rounds of the last 14 days, else its shift's end"
            if params.reach_within_h is None
            else f"{params.reach_within_h:g} h into its shift"
        )
        + f"), optional "
        f"from {params.optional_pct:g} % (reward up to {params.reward_scale} m), an "
        f"optional-only round from {params.min_optional_load:g} truck loads, "
        + (
            f"bins that would send a round out before the one today's bins force worth "
            f"{params.ahead_reward} m (up to {params.ahead_days:g} days)"
            if params.ahead_reward
            else "no look-ahead"
        )
    )
    for policy in policies:
        clock = LocalClock(zone)
        sims = [
            BinSim(b, scenario.bins, clock, scenario.seed, i, sim_start.timestamp())
            for i, b in enumerate(city.bins)
        ]
        results = simulate(sims, policy, days, zone=zone, plan_at=shift.start, workdays=workdays)[
            args.warmup_days :
        ]
        measured[policy.name] = results
        print(f"\n{policy.name}")
        print(
            f"{'day':<14}{'km':>9}{'rounds':>8}{'collections':>13}{'overflows':>11}{'unserved':>10}"
            f"{'last stop':>11}"
        )
        for r in results:
            print(
                f"{r.day.isoformat()} {r.day:%a}{r.distance_m / 1000:>9.1f}{r.rounds:>8}"
                f"{r.collections:>13}{r.overflows:>11}{r.unserved_required:>10}"
                f"{r.last_h:>9.1f} h"
            )
        t = _totals(results)
        print(
            f"{'total':<14}{t['km']:>9.1f}{t['rounds']:>8}{t['collections']:>13}"
            f"{t['overflows']:>11}{t['unserved_required']:>10}   plan violations "
            f"{t['violations']}",
            flush=True,
        )

    fixed, sensor = _totals(measured[baseline.name]), _totals(measured[sensor_driven.name])
    reduction = 1.0 - sensor["km"] / fixed["km"] if fixed["km"] else float("nan")
    met = reduction >= TARGET_KM_REDUCTION and sensor["overflows"] <= fixed["overflows"]
    print(
        f"\nsensor-driven vs fixed schedule: {100 * reduction:.1f} % fewer km, collections "
        f"{sensor['collections']} vs {fixed['collections']}, overflows "
        f"{sensor['overflows']} vs {fixed['overflows']} -> target (>= 30 % fewer km, no more "
        f"overflows) {'met' if met else 'NOT met'}  ({wall.perf_counter() - began:.0f} s)"
    )
    result = {
        "bench": "routing.savings",
        "scenario": scenario.name,
        "seed": scenario.seed,
        "days": args.days,
        "warmup_days": args.warmup_days,
        "time_limit_s": args.time_limit,
        "mandatory_pct": params.mandatory_pct,
        "reach_within_h": params.reach_within_h,
        "ahead_reward": params.ahead_reward,
        "ahead_days": params.ahead_days,
        "optional_pct": params.optional_pct,
        "reward_scale": params.reward_scale,
        "min_optional_load": params.min_optional_load,
        "per_week": per_week,
        "fixed": fixed,
        "sensor": sensor,
        "references": {
            p.name: _totals(measured[p.name])
            for p in policies
            if p is not baseline and p is not sensor_driven
        },
        "km_reduction": round(reduction, 4),
        "target_met": met,
        # every planned day with a round, of every policy: [km, rounds, collections]
        "days_planned": [
            [round(r.distance_m / 1000.0, 3), r.rounds, r.collections]
            for p in policies
            for r in measured[p.name]
            if r.rounds
        ],
    }
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
