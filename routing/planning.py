"""From the city's state to a routing problem, and from a plan to route documents.

Pure: rows from the database, forecasts, the road network in; `Problem` and `RouteCommand`
out. Times on the problem's axis are seconds elapsed since local midnight (Europe/Berlin)
of the plan day, so a DST day is handled by converting through UTC, never by adding
wall-clock hours.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from cityops.ingest.contract import RouteCommand
from cityops.routing.forecast import Selection
from cityops.routing.model import (
    UNREACHABLE,
    BreakRule,
    Plan,
    Problem,
    Site,
    SiteKind,
    Stop,
    TimeWindow,
    Vehicle,
    VehicleType,
    VisitKind,
)
from cityops.routing.network import RoadNetwork
from cityops.routing.rows import BinRow, SiteRow, TruckRow

__all__ = [
    "BERLIN",
    "DayAxis",
    "Location",
    "PlanningOptions",
    "build_problem",
    "fraction_of_day",
    "plan_to_routes",
]

logger = logging.getLogger(__name__)

BERLIN = ZoneInfo("Europe/Berlin")


@dataclass(frozen=True)
class DayAxis:
    """Seconds since local midnight of `day` <-> aware datetimes."""

    day: date

    @property
    def midnight(self) -> datetime:
        return datetime.combine(self.day, time(0), tzinfo=BERLIN).astimezone(UTC)

    def at(self, seconds: float) -> datetime:
        return self.midnight + timedelta(seconds=seconds)

    def seconds(self, local: time) -> int:
        """Elapsed seconds from local midnight to the local wall-clock time `local`."""
        wall = datetime.combine(self.day, local, tzinfo=BERLIN).astimezone(UTC)
        return int((wall - self.midnight).total_seconds())

    def since(self, t: datetime) -> int:
        return int((t - self.midnight).total_seconds())


@dataclass(frozen=True)
class PlanningOptions:
    service_s: int = 60  # per bin: walk, hook, tip, return
    unload_s: int = 900  # at a disposal site
    break_rule: BreakRule | None = field(default_factory=BreakRule)


@dataclass(frozen=True)
class Location:
    kind: str  # "site" or "bin"
    ref: str
    lat: float
    lon: float
    node: int
    street: str | None = None


def fraction_of_day(truck: TruckRow, day: date) -> str:
    """The fraction by weekday rotation: the re-planner's fallback for a route version
    stored without its fraction. The daily plan assigns fractions by urgency
    (`cityops.routing.dispatch`) and records them on each route version."""
    return truck.fractions[day.weekday() % len(truck.fractions)]


def build_problem(
    *,
    axis: DayAxis,
    network: RoadNetwork,
    bins: Mapping[str, BinRow],
    selections: Sequence[Selection],
    sites: Sequence[SiteRow],
    trucks: Sequence[TruckRow],
    options: PlanningOptions = PlanningOptions(),
) -> tuple[Problem, list[Location]]:
    """One problem for a set of trucks and the bins selected for them.

    Locations are the sites first, then the bins, each at the nearest network node.
    """
    locations: list[Location] = []
    for s in sites:
        locations.append(
            Location("site", s.site_id, s.lat, s.lon, network.nearest_node(s.lat, s.lon))
        )
    problem_sites = tuple(
        Site(
            s.site_id,
            i,
            SiteKind.DEPOT if s.kind == "depot" else SiteKind.DISPOSAL,
            unload_s=0 if s.kind == "depot" else options.unload_s,
        )
        for i, s in enumerate(sites)
    )
    stops: list[Stop] = []
    for sel in selections:
        b = bins[sel.bin_id]
        index = len(locations)
        locations.append(
            Location("bin", b.bin_id, b.lat, b.lon, network.nearest_node(b.lat, b.lon), b.street)
        )
        window = None
        if b.access_from_s is not None and b.access_to_s is not None:
            window = TimeWindow(
                axis.seconds(time.fromisoformat(_clock(b.access_from_s))),
                axis.seconds(time.fromisoformat(_clock(b.access_to_s))),
            )
        stops.append(
            Stop(
                id=b.bin_id,
                location=index,
                demand_l=max(1, round(b.capacity_l * sel.predicted_fill_pct / 100.0)),
                service_s=options.service_s,
                window=window,
                required=sel.required,
                penalty=0 if sel.required else sel.reward,
            )
        )
    vehicles = tuple(
        Vehicle(
            id=t.truck_id,
            type=VehicleType(f"{t.capacity_l} l", t.capacity_l, t.capacity_kg),
            depot=t.depot_id,
            shift=TimeWindow(axis.seconds(t.shift_start), axis.seconds(t.shift_end)),
        )
        for t in trucks
    )
    nodes = [loc.node for loc in locations]
    time_m = network.matrix(nodes, nodes, "time")
    dist_m = network.matrix(nodes, nodes, "length")
    problem = Problem(
        stops=tuple(stops),
        sites=problem_sites,
        vehicles=vehicles,
        time_s=_as_int(time_m),
        distance_m=_as_int(dist_m),
        break_rule=options.break_rule,
        unload_before_return=True,
        name=f"{axis.day.isoformat()}",
    )
    return problem, locations


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


def _as_int(matrix: np.ndarray) -> np.ndarray:
    out = np.where(np.isfinite(matrix), np.rint(matrix), UNREACHABLE)
    return out.astype(np.int64)


_KIND = {
    VisitKind.DEPOT: "start",
    VisitKind.START: "start",
    VisitKind.STOP: "stop",
    VisitKind.UNLOAD: "unload",
    VisitKind.BREAK: "break",
}


def plan_to_routes(
    *,
    problem: Problem,
    plan: Plan,
    locations: Sequence[Location],
    network: RoadNetwork,
    axis: DayAxis,
    versions: Mapping[str, int],
    reason: str,
    created_at: datetime,
    fraction: str | None = None,
) -> list[RouteCommand]:
    """One route document per vehicle that has visits; geometry follows the streets."""
    unserved = [
        {"bin_id": u.stop_id, "code": str(u.code), "reason": u.reason} for u in plan.unserved
    ]
    out: list[RouteCommand] = []
    for route in plan.routes:
        if not route.visits:
            continue
        stops = []
        last = len(route.visits) - 1
        for seq, v in enumerate(route.visits):
            loc = locations[v.location]
            kind = _KIND[v.kind]
            if v.kind is VisitKind.DEPOT and seq == last:
                kind = "end"
            stops.append(
                {
                    "seq": seq,
                    "kind": kind,
                    "bin_id": loc.ref if loc.kind == "bin" else None,
                    "site_id": loc.ref if loc.kind == "site" else None,
                    "lat": loc.lat,
                    "lon": loc.lon,
                    "street": loc.street,
                    "eta": axis.at(v.arrival_s),
                    "etd": axis.at(v.departure_s),
                    "load_after_l": float(v.load_l),
                }
            )
        coords: list[tuple[float, float]] = []
        places = [locations[v.location].node for v in route.visits if v.kind is not VisitKind.BREAK]
        for a, b in itertools.pairwise(places):
            path = network.shortest_path(a, b, "time")
            if path is None:
                continue
            for lat, lon in network.coords(path.nodes):
                if not coords or coords[-1] != (lon, lat):
                    coords.append((lon, lat))
        out.append(
            RouteCommand.model_validate(
                {
                    "truck_id": route.vehicle_id,
                    "plan_date": axis.day,
                    "version": versions[route.vehicle_id],
                    "created_at": created_at,
                    "reason": reason,
                    "engine": plan.engine,
                    "fraction": fraction,
                    "distance_m": float(route.distance_m),
                    "duration_s": float(route.duration_s),
                    "stops": stops,
                    "geometry": {"type": "LineString", "coordinates": coords},
                    "unserved": unserved,
                }
            )
        )
    return out
