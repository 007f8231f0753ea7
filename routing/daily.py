"""`cityops routing plan`: plan a day for the whole fleet from the database.

Loads the registry, the recent readings and the closures (every closure in force at some
time during the day's shifts is applied for the whole plan), forecasts every bin, decides
which fractions' rounds go out and with which bins and trucks (the dispatch policy,
`routing/dispatch.py`), solves one problem per round, stores a new route version per
truck that goes out (one transaction) and pushes the versions to the trucks over MQTT.
Trucks with nothing due stay at the depot and keep whatever version they had.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from cityops.ingest.config import Settings
from cityops.ingest.contract import RouteCommand
from cityops.ingest.db import connect
from cityops.routing.closures import Closure, apply_closures
from cityops.routing.dispatch import (
    DEFAULT_DISPATCH,
    DispatchParams,
    decide,
    reach_from_history,
)
from cityops.routing.extract import network_for
from cityops.routing.forecast import Observation, estimate, rates_by_group
from cityops.routing.model import Engine, Unserved
from cityops.routing.network import RoadNetwork, load_network
from cityops.routing.planning import (
    BERLIN,
    DayAxis,
    build_problem,
    plan_to_routes,
)
from cityops.routing.publish import publish_routes
from cityops.routing.repository import (
    load_bins,
    load_closures,
    load_last_stops,
    load_readings_since,
    load_sites,
    load_trucks,
    next_version,
    store_route,
)
from cityops.routing.solver import OrToolsEngine

__all__ = ["DailyPlanReport", "closures_during", "plan_day"]

logger = logging.getLogger(__name__)

_HISTORY = timedelta(days=14)
_REACH_WINDOW_DAYS = 14  # rounds whose last stops set how far into a shift bins are reached


@dataclass
class DailyPlanReport:
    day: date
    routes: list[RouteCommand] = field(default_factory=list)
    unserved: list[Unserved] = field(default_factory=list)
    selected: int = 0
    required: int = 0
    pushed: int = 0
    solve_s: float = 0.0
    violations: list[str] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)  # fraction -> why no round today

    def lines(self) -> list[str]:
        out = [
            f"plan for {self.day.isoformat()}: {self.selected} bins selected "
            f"({self.required} required), {len(self.routes)} routes, solved in {self.solve_s:.1f} s"
        ]
        for r in self.routes:
            stops = sum(1 for s in r.stops if s.kind == "stop")
            unloads = sum(1 for s in r.stops if s.kind == "unload")
            first, last = r.stops[0].etd, r.stops[-1].eta
            out.append(
                f"  {r.truck_id} v{r.version}: {stops} bins, {unloads} unloads, "
                f"{r.distance_m / 1000:.1f} km, {first.astimezone(BERLIN):%H:%M}-"
                f"{last.astimezone(BERLIN):%H:%M} Europe/Berlin ({r.duration_s / 3600:.1f} h)"
            )
        for frac, why in sorted(self.held.items()):
            out.append(f"  no {frac} round: {why}")
        for u in self.unserved:
            out.append(f"  not served: {u.stop_id}: {u.reason}")
        out.append(f"  pushed {self.pushed} of {len(self.routes)} routes to the trucks over MQTT")
        return out


def closures_during(closures: Sequence[Closure], start: datetime, end: datetime) -> list[Closure]:
    """The closures in force at any moment of [start, end) (the day's shifts), each
    stretched over the whole of it. A daily plan is made on one network: a street that
    closes at 10:00, or reopens at 11:00, is avoided all day rather than driven into."""
    end = max(end, start + timedelta(minutes=1))
    return [
        replace(c, valid_from=start, valid_to=end)
        for c in closures
        if c.valid_from < end and c.valid_to > start
    ]


def plan_day(
    settings: Settings,
    day: date,
    *,
    time_limit_s: float = 10.0,
    engine: Engine | None = None,
    seed: int = 0,
    now: datetime | None = None,
    network: RoadNetwork | None = None,
    reason: str = "daily plan",
    push: bool = True,
    dispatch: DispatchParams = DEFAULT_DISPATCH,
) -> DailyPlanReport:
    """Plan `day` for the whole fleet from the database, store and push the routes.

    `dispatch` is the policy (`routing/dispatch.py`): a fraction's round goes out only
    when a bin cannot wait for its next chance (or its optional bins fill a round), and
    trucks go to the fractions that need collection, most urgent first; the rest stay at
    the depot and get no new route version.
    """
    engine = engine or OrToolsEngine(first_solution="PARALLEL_CHEAPEST_INSERTION")
    now = now or datetime.now(UTC)
    axis = DayAxis(day)
    report = DailyPlanReport(day)
    if network is None:
        network = load_network(network_for(settings))
    with connect(settings.database_url) as conn:
        bins = {b.bin_id: b for b in load_bins(conn)}
        sites = load_sites(conn)
        trucks = load_trucks(conn)
        readings = load_readings_since(conn, now - _HISTORY)
        closures = load_closures(conn, valid_at_or_after=axis.midnight)
        last_stops = load_last_stops(conn, day - timedelta(days=_REACH_WINDOW_DAYS), day)
    if not trucks:
        logger.warning("no trucks in the registry: nothing to plan")
        return report
    first_shift = min(axis.at(axis.seconds(t.shift_start)) for t in trucks)
    last_shift = max(axis.at(axis.seconds(t.shift_end)) for t in trucks)
    roads, effects = apply_closures(
        network, closures_during(closures, first_shift, last_shift), first_shift
    )
    for e in effects:
        logger.info("closure %s affects %s", e.closure_id, ", ".join(e.streets))

    # Observations are built once; the second pass re-estimates with the median rate of
    # each fraction (from the reliable first-pass forecasts) as the fallback.
    observations = {
        bin_id: obs
        for bin_id, rows in readings.items()
        if bin_id in bins
        and (obs := [Observation(ts, fill, fault) for ts, fill, fault in rows if ts <= now])
    }
    fraction = {b.bin_id: b.fraction for b in bins.values()}
    first_pass = [estimate(b, obs, now=now) for b, obs in observations.items()]
    fallback = rates_by_group(first_pass, fraction)
    forecasts = [
        estimate(b, obs, now=now, fallback_rate_pct_per_h=fallback.get(fraction[b]))
        for b, obs in observations.items()
    ]
    reach = reach_from_history(last_stops, day, window_days=_REACH_WINDOW_DAYS)
    for frac, hours in sorted(reach.items()):
        logger.info(
            "%s: rounds of the last %d days reached bins up to %.1f h into the shift",
            frac,
            _REACH_WINDOW_DAYS,
            hours,
        )
    decision = decide(
        forecasts,
        fraction_of=fraction,
        capacity_l={b: bins[b].capacity_l for b in observations},
        trucks=trucks,
        day=day,
        now=now,
        params=dispatch,
        reach_h=reach,
    )
    report.selected, report.required = decision.selected, decision.required
    report.held = dict(decision.held)
    report.unserved.extend(decision.unserved)
    for frac, why in decision.held.items():
        logger.info("%s: no round today: %s", frac, why)

    started = time.monotonic()
    plans = []
    for rnd in decision.rounds:
        if not rnd.trucks:
            continue  # its mandatory bins are in decision.unserved
        problem, locations = build_problem(
            axis=axis,
            network=roads,
            bins=bins,
            selections=rnd.selections,
            sites=sites,
            trucks=rnd.trucks,
        )
        plan = engine.solve(problem, time_limit_s=time_limit_s, seed=seed)
        logger.info(
            "%s (%s): %d bins, %d trucks -> %d unserved",
            rnd.fraction,
            rnd.reason,
            len(rnd.selections),
            len(rnd.trucks),
            len(plan.unserved),
        )
        plans.append((rnd.fraction, problem, plan, locations))
    report.solve_s = time.monotonic() - started

    with connect(settings.database_url) as conn, conn.transaction():
        for frac, problem, plan, locations in plans:
            versions = {v.id: next_version(conn, v.id, day) for v in problem.vehicles}
            routes = plan_to_routes(
                problem=problem,
                plan=plan,
                locations=locations,
                network=roads,
                axis=axis,
                versions=versions,
                reason=reason,
                created_at=now,
                fraction=frac,
            )
            for r in routes:
                store_route(conn, r)
            report.routes.extend(routes)
            report.unserved.extend(plan.unserved)
    if push:
        report.pushed = publish_routes(settings, report.routes)
    return report
