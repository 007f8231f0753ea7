"""Savings from sensors: a simulated week of collection on the demo city, sensor-driven
planning against the fixed schedule, on the same fill trajectories.

    .venv/bin/python bench/routing/savings.py [--days 7] [--warmup-days 7] [--time-limit 3]
        [--seed N] [--scenario demo] [--start 2024-03-04]

The city is the scenario's (`build_city`: bins on the real streets of the OSM extract,
trucks, depot, disposal site). Every bin is the simulator's `BinSim` (fraction rate scaled
by size, a per-bin factor, weekday and hour-of-day pattern, sensor noise and faults), one
copy per policy with the same seed, so both policies see the same waste thrown in; they
differ only in when the bins are emptied. Each working day at the shift start a policy
plans, with the same engine, time limit, fleet, sites and road network (matrices from
`RoadNetwork.matrix` through `planning.build_problem`), and every plan is verified with
`check_plan`; each bin on a route is emptied at its planned arrival.

* **fixed schedule**: every bin has a fixed weekday. Each truck spreads its working days
  over its fractions in proportion to their bins; a fraction's districts (map grid cells,
  west to east) are cut into one contiguous group per day, as a city draws collection
  areas. The day's bins of a fraction form one problem for that truck. Its loads are the
  true fill at the shift start (the schedule cannot know them; it only helps it place its
  unloads).
* **sensor-driven**: the daily plan's logic (`routing/daily.py`): forecasts from the
  readings so far, `select_bins` with the next working day's shift end as the next
  collection (required at 80 %, optional with a reward from 50 %), `assign_fractions`,
  one problem per fraction.

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
import sys
import time as wall
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from cityops.ingest.contract import BinTelemetry
from cityops.routing.check import check_plan
from cityops.routing.forecast import Observation, Selection, estimate, rates_by_group, select_bins
from cityops.routing.model import Engine, VisitKind
from cityops.routing.network import RoadNetwork, load_network
from cityops.routing.planning import DayAxis, assign_fractions, build_problem
from cityops.routing.repository import BinRow, SiteRow, TruckRow
from cityops.routing.solver import OrToolsEngine
from cityops.simulators.bin_sim import BinSim
from cityops.simulators.city import Bin, build_city
from cityops.simulators.emission import Emission, LocalClock
from cityops.simulators.scenario import load_scenario

logger = logging.getLogger("bench.savings")

FULL_PCT = 100.0 - 1e-6  # the simulator caps the fill at the bin's volume
TARGET_KM_REDUCTION = 0.30
_HISTORY = timedelta(days=14)  # readings a forecast looks back on, as the daily plan


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
    unserved_required: int = 0
    violations: int = 0


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
    collections: int = 0
    overflows: int = 0  # bins seen full on this day
    unserved_required: int = 0
    violations: int = 0


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
        r.unserved_required += plan.unserved_required
        r.violations += plan.violations
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
        distance = unserved = violations = 0
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
            for route in plan.routes:
                for visit in route.visits:
                    if visit.kind is VisitKind.STOP:
                        emptyings[visit.ref] = axis.at(visit.arrival_s)
        return DayPlan(emptyings, distance, unserved, violations)


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


@dataclass
class FixedSchedule:
    planner: Planner
    weekday: Mapping[str, int]
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
        work: dict[str, tuple[list[Selection], list[TruckRow]]] = {}
        for bin_id in sorted(b for b, w in self.weekday.items() if w == day.weekday()):
            f = self.fraction[bin_id]
            chosen, _ = work.setdefault(f, ([], [self.truck_of[f]]))
            chosen.append(Selection(bin_id, True, levels[bin_id], 0, "fixed day"))
        return self.planner.solve(day, work)


@dataclass
class SensorDriven:
    planner: Planner
    trucks: Sequence[TruckRow]
    fraction: Mapping[str, str]
    next_collection: Callable[[date], datetime]
    optional_pct: float = 50.0  # select_bins' defaults, as the daily plan uses them
    reward_scale: int = 1000
    name: str = "sensor-driven"

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
        selections = select_bins(
            forecasts,
            now=now,
            next_collection=self.next_collection(day),
            optional_pct=self.optional_pct,
            reward_scale=self.reward_scale,
        )
        demand: dict[str, tuple[float, float]] = {}
        for sel in selections:
            req, opt = demand.get(self.fraction[sel.bin_id], (0.0, 0.0))
            litres = self.planner.bins[sel.bin_id].capacity_l * sel.predicted_fill_pct / 100.0
            demand[self.fraction[sel.bin_id]] = (
                (req + litres, opt) if sel.required else (req, opt + litres)
            )
        today = assign_fractions(self.trucks, demand)
        work = {
            f: (
                [s for s in selections if self.fraction[s.bin_id] == f],
                [t for t in self.trucks if today[t.truck_id] == f],
            )
            for f in demand
        }
        return self.planner.solve(day, work)


# -- the command ----------------------------------------------------------------------


def _totals(results: Sequence[DayResult]) -> dict[str, float]:
    return {
        "km": round(sum(r.distance_m for r in results) / 1000.0, 2),
        "collections": sum(r.collections for r in results),
        "overflows": sum(r.overflows for r in results),
        "unserved_required": sum(r.unserved_required for r in results),
        "violations": sum(r.violations for r in results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=7, help="measured days")
    parser.add_argument("--warmup-days", type=int, default=7, help="days run but not counted")
    parser.add_argument("--time-limit", type=float, default=3.0, help="seconds per problem")
    parser.add_argument("--seed", type=int, default=None, help="default: the scenario's")
    parser.add_argument("--scenario", default="demo")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 3, 4))
    parser.add_argument(
        "--optional-pct",
        type=float,
        default=50.0,
        help="sensor-driven: optional bins from this predicted fill (< 80; default as daily)",
    )
    parser.add_argument(
        "--reward-scale",
        type=int,
        default=1000,
        help="sensor-driven: reward in metres of an optional bin at 80 %% (default as daily)",
    )
    args = parser.parse_args(argv)
    if args.days < 1 or args.warmup_days < 0 or args.time_limit <= 0:
        parser.error("need --days >= 1, --warmup-days >= 0 and a positive --time-limit")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

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

    def next_collection(day: date) -> datetime:
        d = day + timedelta(days=1)
        while d.weekday() not in workdays:
            d += timedelta(days=1)
        axis = DayAxis(d)
        return axis.at(axis.seconds(max(t.shift_end for t in trucks)))

    weekday, truck_of = fixed_schedule(city.bins, trucks, sorted(workdays))
    policies: list[Policy] = [
        FixedSchedule(planner, weekday, truck_of, fraction),
        SensorDriven(
            planner, trucks, fraction, next_collection, args.optional_pct, args.reward_scale
        ),
    ]
    days = [args.start + timedelta(days=i) for i in range(args.warmup_days + args.days)]
    sim_start = datetime.combine(args.start - timedelta(days=1), time(0), tzinfo=zone)
    measured: dict[str, list[DayResult]] = {}
    print(
        f"scenario {scenario.name} (seed {scenario.seed}): {len(city.bins)} bins, "
        f"{len(trucks)} trucks of {trucks[0].capacity_l} l, road network "
        f"{network.n_nodes} nodes; {args.warmup_days} warm-up + {args.days} measured days "
        f"from {days[args.warmup_days]}, {args.time_limit:g} s per problem; sensor-driven: "
        f"optional from {args.optional_pct:g} %, reward scale {args.reward_scale} m"
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
        print(f"{'day':<14}{'km':>9}{'collections':>13}{'overflows':>11}{'unserved':>10}")
        for r in results:
            print(
                f"{r.day.isoformat()} {r.day:%a}{r.distance_m / 1000:>9.1f}"
                f"{r.collections:>13}{r.overflows:>11}{r.unserved_required:>10}"
            )
        t = _totals(results)
        print(
            f"{'total':<14}{t['km']:>9.1f}{t['collections']:>13}{t['overflows']:>11}"
            f"{t['unserved_required']:>10}   plan violations {t['violations']}"
        )

    fixed, sensor = (_totals(measured[p.name]) for p in policies)
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
        "optional_pct": args.optional_pct,
        "reward_scale": args.reward_scale,
        "fixed": fixed,
        "sensor": sensor,
        "km_reduction": round(reduction, 4),
        "target_met": met,
    }
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
