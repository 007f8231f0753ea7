"""A refuse collection truck driving the road network through its stops.

During its shift (`trucks.shift`, local time) the truck reports its position every
`report_interval_s`; outside it is parked at the depot with the engine off and silent.
It works through a list of stops: it drives the time-shortest path to each bin at the
edge speeds (times `speed_factor`), empties it (`stop_done` with the litres taken) and
drives on. When nearly full (`unload_at_pct`), or when the next bin would not fit, it
drives to the nearest disposal site and unloads (`unloaded`). At the end of the shift
it unloads what it carries and returns to the depot (`shift_end`).

Where the stops come from is injectable: `assign()` hands the truck a route (a later
`cmd/route` handler will call it); when the truck has none it asks its `StopPlanner`.
The stand-in planner, `ThresholdPlanner`, takes the bins of one of the truck's fractions
above `fill_threshold_pct` in nearest-neighbour order, as much as fits in the truck.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

import numpy as np

from cityops.ingest.contract import Channel, DeviceKind, TruckEvent, TruckTelemetry
from cityops.routing.network import RoadNetwork
from cityops.simulators.bin_sim import BinSim
from cityops.simulators.city import City, Truck
from cityops.simulators.emission import Emission, LocalClock, to_datetime
from cityops.simulators.scenario import ShiftConfig, TrucksConfig

__all__ = ["Stop", "StopPlanner", "ThresholdPlanner", "TruckSim", "in_shift", "next_shift_start"]

_SMALL_BIN_L = 240
_WAIT_AT_STOP_S = 5.0

EventKind = Literal["stop_done", "stop_skipped", "unloaded", "shift_start", "shift_end"]


@dataclass(frozen=True, slots=True)
class Stop:
    """A bin to empty, reached at a network node."""

    bin_id: str
    node: int


class StopPlanner(Protocol):
    """Gives an idle truck its next stops."""

    def plan(self, truck: Truck, node: int, t: float, space_l: float) -> list[Stop]: ...

    def release(self, bin_id: str) -> None:
        """The bin was emptied or dropped from a plan: another truck may take it."""


class ThresholdPlanner:
    """Stand-in dispatcher: full bins of the truck's fraction, nearest neighbour first.

    It reads the bins' true fill (at their last update), which a real dispatcher only
    knows from telemetry; the routing service will replace it.
    """

    def __init__(
        self, network: RoadNetwork, bins: Mapping[str, BinSim], threshold_pct: float
    ) -> None:
        self._network = network
        self._bins = bins
        self._threshold = threshold_pct
        self._claimed: set[str] = set()

    def plan(self, truck: Truck, node: int, t: float, space_l: float) -> list[Stop]:
        best: list[BinSim] = []
        for fraction in truck.fractions:
            due = [
                b
                for b in self._bins.values()
                if b.spec.fraction == fraction
                and b.spec.bin_id not in self._claimed
                and b.fill_pct >= self._threshold
            ]
            if sum(b.fill_l for b in due) > sum(b.fill_l for b in best):
                best = due
        if not best:
            return []
        nodes = [node] + [b.spec.node for b in best]
        cost = self._network.matrix(nodes, nodes)
        order: list[int] = []
        left = set(range(1, len(nodes)))
        here, volume = 0, 0.0
        while left:
            nxt = min(left, key=lambda j: (cost[here, j], j))
            left.discard(nxt)
            if volume + best[nxt - 1].fill_l > space_l:
                continue
            volume += best[nxt - 1].fill_l
            order.append(nxt)
            here = nxt
        stops = [Stop(best[j - 1].spec.bin_id, best[j - 1].spec.node) for j in order]
        self._claimed.update(s.bin_id for s in stops)
        return stops

    def release(self, bin_id: str) -> None:
        self._claimed.discard(bin_id)


def in_shift(local: datetime, shift: ShiftConfig) -> bool:
    return local.weekday() in shift.weekdays and shift.start <= local.time() < shift.end


def next_shift_start(local: datetime, shift: ShiftConfig) -> datetime:
    """The first shift start after `local` (an aware local time)."""
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    for k in range(8):
        candidate = datetime.combine(
            (day + timedelta(days=k)).date(), shift.start, tzinfo=local.tzinfo
        )
        if candidate > local and candidate.weekday() in shift.weekdays:
            return candidate
    raise AssertionError("shift weekdays are never empty")


@dataclass
class _Drive:
    t0: float
    nodes: list[int]
    edges: list[int]
    ends: list[float]  # time since t0 at the end of each edge

    @property
    def duration(self) -> float:
        return self.ends[-1] if self.ends else 0.0


class TruckSim:
    """One truck; deterministic given the bins it finds and its planner."""

    kind = DeviceKind.TRUCK

    def __init__(
        self,
        spec: Truck,
        cfg: TrucksConfig,
        city: City,
        network: RoadNetwork,
        bins: Mapping[str, BinSim],
        clock: LocalClock,
        seed: int,
        index: int,
        start: float,
        planner: StopPlanner | None = None,
    ) -> None:
        self.spec = spec
        self.cfg = cfg
        self._network = network
        self._bins = bins
        self._clock = clock
        self._planner = planner
        self._rng = np.random.default_rng([seed, 30, index])
        self._depot = city.site(spec.depot_id)
        self._disposal = city.disposal_sites()
        self.node = self._depot.node
        self.load_l = 0.0
        self.route_version: int | None = None
        self.stops: deque[Stop] = deque()
        self.engine_on = False
        self._activity: Literal["parked", "idle", "drive", "service", "unload"] = "parked"
        self._goal: Literal["service", "unload", "depot"] = "depot"
        self._drive: _Drive | None = None
        self._service_bin: BinSim | None = None
        self._target: Stop | None = None  # the stop being driven to
        self._served: set[str] = set()  # bins emptied this shift
        self._until = start  # end of the current activity: decide at once
        self._now = start
        self._next_report = math.inf

    @property
    def device_id(self) -> str:
        return self.spec.truck_id

    @property
    def next_time(self) -> float:
        return min(self._until, self._next_report)

    @property
    def activity(self) -> str:
        return self._activity

    def follow_dispatcher(self) -> None:
        """From now on only routes from the dispatcher (cmd/route) give this truck stops."""
        if self._planner is not None:
            for stop in self.stops:
                self._planner.release(stop.bin_id)
        self._planner = None

    def assign(
        self, stops: Sequence[Stop], route_version: int | None = None, *, at: float | None = None
    ) -> None:
        """Replace the truck's remaining stops with a route version from the dispatcher,
        received at `at` (default: the truck's last step).

        The newest version rules: a truck driving to a bin keeps going only if that bin is
        still its next stop (the re-planner pins a stop in progress); otherwise it turns at
        the end of the street it is on and heads for the new version's next stop, so it
        never serves a bin the new version gave to another truck. A truck driving home
        with nothing to do turns the same way. Bins it emptied this shift are left out (a
        version planned before their `stop_done` arrived still lists them). The re-planner
        can list a bin again that filled up after its emptying (`refill_after`); simulated
        bins do not fill up twice in a shift, and in `make demo` the simulated clock runs
        behind while it catches up, so the re-planner does not see its emptyings as today's:
        taking every listed bin as a stale listing is the safe reading here.
        """
        if self._planner is not None:
            for stop in self.stops:
                self._planner.release(stop.bin_id)
        now = self._now if at is None else max(at, self._now)
        fresh = deque(s for s in stops if s.bin_id not in self._served)
        target = self._target
        driving = self._activity == "drive" and self._drive is not None
        if driving and self._goal == "service" and target is not None:
            if fresh and fresh[0].bin_id == target.bin_id:
                fresh.popleft()  # still its next stop: keep driving there
            else:
                self._turn(now)
        elif driving and self._goal == "depot" and fresh:
            self._turn(now)
        self.stops = fresh
        self.route_version = route_version
        if self._activity == "idle":
            self._until = now  # start on it at once

    def _turn(self, t: float) -> None:
        """Give up the current drive: end it at the end of the street (edge) the truck is on
        at `t`, without a target, so that it chooses its next move there."""
        drive = self._drive
        assert drive is not None
        if self._target is not None and self._planner is not None:
            self._planner.release(self._target.bin_id)
        self._target = None
        if not drive.edges:
            return
        i = min(bisect.bisect_right(drive.ends, t - drive.t0), len(drive.edges) - 1)
        self._drive = _Drive(
            drive.t0, drive.nodes[: i + 2], drive.edges[: i + 1], drive.ends[: i + 1]
        )
        self._until = drive.t0 + self._drive.duration

    def step(self) -> list[Emission]:
        t = self._now = self.next_time
        out: list[Emission] = []
        while self._until <= t:
            self._finish(self._until, out)
        if self.engine_on and self._next_report <= t:
            out.append(self._telemetry(t))
            self._next_report = t + self.cfg.report_interval_s
        return out

    # -- state machine ------------------------------------------------------------------

    def _finish(self, t: float, out: list[Emission]) -> None:
        """The current activity ends at `t`: complete it and choose the next one."""
        if self._activity == "drive" and self._drive is not None:
            self.node = self._drive.nodes[-1]
            self._drive = None
            if self._goal == "service" and self._target is not None:
                self._start_service(t, self._target)
                self._target = None
                return
            if self._goal == "unload":
                self._activity, self._until = "unload", t + self.cfg.unload_s
                return
        elif self._activity == "service" and self._service_bin is not None:
            volume = self._service_bin.empty(t)
            self.load_l += volume
            bin_id = self._service_bin.spec.bin_id
            self._service_bin = None
            self._served.add(bin_id)
            if self._planner is not None:
                self._planner.release(bin_id)
            out.append(self._event(t, "stop_done", bin_id=bin_id, volume_l=round(volume, 1)))
        elif self._activity == "unload":
            out.append(self._event(t, "unloaded", volume_l=round(self.load_l, 1)))
            self.load_l = 0.0
        self._decide(t, out)

    def _decide(self, t: float, out: list[Emission]) -> None:
        local = datetime.fromtimestamp(t, self._clock.zone)
        shift = self.cfg.shift
        if not in_shift(local, shift):
            if self.engine_on and self.load_l > 0 and self._goal != "unload":
                self._release_stops()
                self._drive_to(t, self._nearest_disposal(), "unload")
            elif self.engine_on and self.node != self._depot.node:
                self._release_stops()
                self._drive_to(t, self._depot.node, "depot")
            else:
                if self.engine_on:
                    out.append(self._event(t, "shift_end"))
                    self.engine_on = False
                    self._served.clear()
                    self._next_report = math.inf
                self._release_stops()
                self._activity = "parked"
                self._until = next_shift_start(local, shift).timestamp()
            return
        if not self.engine_on:
            self.engine_on = True
            self._next_report = t
            out.append(self._event(t, "shift_start"))
        capacity = float(self.spec.capacity_l)
        if self.load_l >= capacity * self.cfg.unload_at_pct / 100:
            self._drive_to(t, self._nearest_disposal(), "unload")
            return
        if not self.stops and self._planner is not None:
            self.stops = deque(self._planner.plan(self.spec, self.node, t, capacity - self.load_l))
            self.route_version = None
        if self.stops:
            expected = self._bins[self.stops[0].bin_id].fill_l
            if self.load_l > 0 and self.load_l + expected > capacity:
                self._drive_to(t, self._nearest_disposal(), "unload")
            else:
                self._target = self.stops.popleft()
                self._drive_to(t, self._target.node, "service")
            return
        if self.load_l >= capacity / 2:
            self._drive_to(t, self._nearest_disposal(), "unload")
        elif self.node != self._depot.node:
            self._drive_to(t, self._depot.node, "depot")
        else:
            # Waiting at the depot for work: ignition off, so the tracker is silent.
            self._activity, self._until = "idle", t + self.cfg.replan_min * 60
            self._next_report = math.inf

    def _start_service(self, t: float, stop: Stop) -> None:
        bin_sim = self._bins[stop.bin_id]
        small = bin_sim.spec.capacity_l <= _SMALL_BIN_L
        base = self.cfg.service_s if small else self.cfg.service_large_s
        self._service_bin = bin_sim
        self._activity = "service"
        self._until = t + base * float(self._rng.uniform(0.8, 1.25)) + _WAIT_AT_STOP_S

    def _drive_to(self, t: float, node: int, goal: Literal["service", "unload", "depot"]) -> None:
        path = self._network.shortest_path(self.node, node)
        if path is None:  # cannot happen on a strongly connected network
            raise RuntimeError(f"truck {self.device_id}: no path from node {self.node} to {node}")
        times = self._network.travel_time_s[path.edges] / self.cfg.speed_factor
        self._drive = _Drive(t, path.nodes, path.edges, np.cumsum(times).tolist())
        self._activity, self._goal = "drive", goal
        self._until = t + self._drive.duration
        if self.engine_on and self._next_report == math.inf:
            self._next_report = t

    def _release_stops(self) -> None:
        if self._planner is not None:
            for stop in self.stops:
                self._planner.release(stop.bin_id)
        self.stops.clear()

    def _nearest_disposal(self) -> int:
        if len(self._disposal) == 1:
            return self._disposal[0].node
        nodes = [s.node for s in self._disposal]
        cost = self._network.matrix([self.node], nodes)[0]
        return nodes[int(np.argmin(cost))]

    # -- messages -----------------------------------------------------------------------

    def position(self, t: float) -> tuple[float, float, float, float | None]:
        """(lat, lon, speed km/h, heading degrees or None) at `t`."""
        net = self._network
        drive = self._drive
        if self._activity == "drive" and drive is not None and drive.edges:
            i = min(bisect.bisect_right(drive.ends, t - drive.t0), len(drive.edges) - 1)
            edge = drive.edges[i]
            begin = drive.ends[i - 1] if i else 0.0
            span = drive.ends[i] - begin
            frac = min(1.0, max(0.0, (t - drive.t0 - begin) / span)) if span > 0 else 1.0
            u, v = int(net.src[edge]), int(net.dst[edge])
            lat = float(net.lat[u] + frac * (net.lat[v] - net.lat[u]))
            lon = float(net.lon[u] + frac * (net.lon[v] - net.lon[u]))
            speed = float(net.speed_kmh[edge]) * self.cfg.speed_factor
            return lat, lon, speed, _bearing(net.lat[u], net.lon[u], net.lat[v], net.lon[v])
        if self._activity == "service" and self._service_bin is not None:
            return self._service_bin.spec.lat, self._service_bin.spec.lon, 0.0, None
        return float(net.lat[self.node]), float(net.lon[self.node]), 0.0, None

    def _telemetry(self, t: float) -> Emission:
        lat, lon, speed, heading = self.position(t)
        payload = TruckTelemetry(
            ts=to_datetime(t),
            lat=round(lat, 6),
            lon=round(lon, 6),
            speed_kmh=round(speed, 1),
            heading_deg=None if heading is None else round(heading, 1) % 360.0,
            load_l=round(self.load_l, 1),
            route_version=self.route_version,
        )
        return Emission(DeviceKind.TRUCK, self.device_id, Channel.TELEMETRY, payload)

    def _event(
        self, t: float, kind: EventKind, bin_id: str | None = None, volume_l: float | None = None
    ) -> Emission:
        payload = TruckEvent(
            ts=to_datetime(t),
            kind=kind,
            bin_id=bin_id,
            volume_l=volume_l,
            route_version=self.route_version,
        )
        return Emission(DeviceKind.TRUCK, self.device_id, Channel.EVENTS, payload)


def _bearing(lat1: float, lon1: float, lat2: float, lon2: float) -> float | None:
    """Initial compass bearing from point 1 to point 2, None when they coincide."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    x = math.sin(dl) * math.cos(p2)
    y = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    if x == 0.0 and y == 0.0:
        return None
    return math.degrees(math.atan2(x, y)) % 360.0
