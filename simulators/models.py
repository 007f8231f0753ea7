"""The device models of the simulated city, stepped together in time order.

Everything here is pure (no clock, no network, no broker): `CitySim.advance(until)`
returns the messages every device sends up to `until`, and the same scenario, seed and
start give the same messages. The runner owns the clock and the MQTT clients.

The models themselves live in one module each: `BinSim` (bin_sim.py),
`SignalControllerSim` (signal_sim.py), `TruckSim`, `Stop`, `StopPlanner` and the
stand-in `ThresholdPlanner` (truck_sim.py).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence

from cityops.routing.network import RoadNetwork
from cityops.simulators.bin_sim import BinSim
from cityops.simulators.city import City
from cityops.simulators.emission import DeviceSim, Emission, LocalClock
from cityops.simulators.scenario import Scenario
from cityops.simulators.signal_sim import SignalControllerSim
from cityops.simulators.truck_sim import Stop, StopPlanner, ThresholdPlanner, TruckSim

__all__ = [
    "BinSim",
    "CitySim",
    "DeviceSim",
    "Emission",
    "SignalControllerSim",
    "Stop",
    "StopPlanner",
    "ThresholdPlanner",
    "TruckSim",
]

logger = logging.getLogger(__name__)


class CitySim:
    """All devices of a city from `start` (UNIX seconds) on.

    Devices are stepped in global time order (ties by device order), so a truck empties
    a bin exactly at the time of its `stop_done`, between that bin's readings.
    `planner` defaults to the stand-in `ThresholdPlanner`.
    """

    def __init__(
        self,
        city: City,
        scenario: Scenario,
        network: RoadNetwork,
        start: float,
        planner: StopPlanner | None = None,
    ) -> None:
        self.city = city
        self.start = start
        self.time = start
        seed = scenario.seed
        clock = LocalClock(scenario.zone)
        self.bins: dict[str, BinSim] = {
            b.bin_id: BinSim(b, scenario.bins, clock, seed, i, start)
            for i, b in enumerate(city.bins)
        }
        self.controllers: dict[str, SignalControllerSim] = {
            c.controller_id: SignalControllerSim(c, clock, seed, i, start, scenario.signals.batch_s)
            for i, c in enumerate(city.controllers)
        }
        if planner is None:
            planner = ThresholdPlanner(network, self.bins, scenario.trucks.fill_threshold_pct)
        self.trucks: dict[str, TruckSim] = {
            t.truck_id: TruckSim(
                t, scenario.trucks, city, network, self.bins, clock, seed, i, start, planner
            )
            for i, t in enumerate(city.trucks)
        }
        self.devices: list[DeviceSim] = [
            *self.bins.values(), *self.controllers.values(), *self.trucks.values()
        ]
        self._scheduled = [d.next_time for d in self.devices]
        self._heap = [(t, i) for i, t in enumerate(self._scheduled)]
        heapq.heapify(self._heap)

    def advance(self, until: float) -> list[Emission]:
        """Step every device up to `until`; the messages in the order they were sent."""
        out: list[Emission] = []
        heap, scheduled, devices = self._heap, self._scheduled, self.devices
        while heap and heap[0][0] <= until:
            t, i = heapq.heappop(heap)
            if t != scheduled[i]:
                continue  # superseded by a reschedule
            out.extend(devices[i].step())
            nxt = devices[i].next_time
            scheduled[i] = nxt
            heapq.heappush(heap, (nxt, i))
        self.time = max(self.time, until)
        return out

    def follow_route(self, truck_id: str, bin_ids: Sequence[str], route_version: int) -> int:
        """A route version from the dispatcher replaces the truck's stops (and the stand-in
        planner, for good); unknown bins are skipped. Returns the number of stops taken."""
        truck = self.trucks[truck_id]
        truck.follow_dispatcher()
        nodes = {b.bin_id: b.node for b in self.city.bins}
        stops = [Stop(b, nodes[b]) for b in bin_ids if b in nodes]
        self.assign_route(truck_id, stops, route_version)
        return len(stops)

    def assign_route(
        self, truck_id: str, stops: Sequence[Stop], route_version: int | None = None
    ) -> None:
        """Hand a truck a route (e.g. from `cmd/route`); it starts on it at its next step."""
        truck = self.trucks[truck_id]
        truck.assign(stops, route_version, at=self.time)
        i = self.devices.index(truck)
        if truck.next_time != self._scheduled[i]:
            self._scheduled[i] = truck.next_time
            heapq.heappush(self._heap, (truck.next_time, i))
