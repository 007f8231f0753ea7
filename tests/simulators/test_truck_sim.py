"""A simulated truck follows the newest route version it receives (issue 3, item 8)."""

from __future__ import annotations

from cityops.ingest.contract import TruckEvent, TruckTelemetry
from cityops.routing.network import haversine_m
from cityops.simulators.city import Bin, City, build_city
from cityops.simulators.models import CitySim, Emission, Stop
from cityops.simulators.truck_sim import TruckSim
from tests.simulators.factories import START, network, small_scenario


class NoPlanner:
    """Only the dispatcher gives stops."""

    def plan(self, truck: object, node: int, t: float, space_l: float) -> list[Stop]:
        return []

    def release(self, bin_id: str) -> None:
        pass


def _setup() -> tuple[CitySim, City, str, list[Bin]]:
    """A city whose first truck idles at its depot, and three residual bins: `far` (the
    farthest from the depot, a long drive) and two near ones."""
    scenario = small_scenario()
    city = build_city(scenario, network())
    sim = CitySim(city, scenario, network(), START, planner=NoPlanner())
    sim.advance(START + 600)
    truck = city.trucks[0]
    assert sim.trucks[truck.truck_id].activity == "idle"
    depot = city.site(truck.depot_id).node
    mine = [b for b in city.bins if b.fraction in truck.fractions]
    cost = network().matrix([depot], [b.node for b in mine])[0]
    order = sorted(range(len(mine)), key=lambda i: float(cost[i]))
    far = mine[order[-1]]
    assert float(cost[order[-1]]) > 120  # minutes of driving: time to change its mind
    return sim, city, truck.truck_id, [far, mine[order[1]], mine[order[2]]]


def _done(out: list[Emission], truck_id: str) -> list[TruckEvent]:
    return [
        e.payload
        for e in out
        if e.device_id == truck_id
        and isinstance(e.payload, TruckEvent)
        and e.payload.kind == "stop_done"
    ]


def _driving_to(sim: CitySim, truck_id: str, first: Bin, second: Bin) -> None:
    """Version 1 (first, second); seconds later the truck is on its way to `first`."""
    sim.assign_route(
        truck_id, [Stop(first.bin_id, first.node), Stop(second.bin_id, second.node)], 1
    )
    sim.advance(START + 605)
    truck: TruckSim = sim.trucks[truck_id]
    assert truck.activity == "drive"


def test_turns_when_the_new_version_gives_its_target_to_another_truck() -> None:
    sim, _city, truck_id, (far, b, c) = _setup()
    _driving_to(sim, truck_id, far, b)
    sim.assign_route(truck_id, [Stop(b.bin_id, b.node), Stop(c.bin_id, c.node)], 2)
    out = sim.advance(START + 3 * 3600)
    done = _done(out, truck_id)
    assert [e.bin_id for e in done] == [b.bin_id, c.bin_id]
    assert all(e.route_version == 2 for e in done)
    # it turned on the street it was on: never near the bin it was driving to
    positions = [
        e.payload for e in out if e.device_id == truck_id and isinstance(e.payload, TruckTelemetry)
    ]
    assert positions
    assert min(float(haversine_m(p.lat, p.lon, far.lat, far.lon)) for p in positions) > 100


def test_keeps_driving_when_its_target_is_still_the_next_stop() -> None:
    sim, _city, truck_id, (far, b, c) = _setup()
    _driving_to(sim, truck_id, far, b)
    sim.assign_route(truck_id, [Stop(far.bin_id, far.node), Stop(c.bin_id, c.node)], 2)
    out = sim.advance(START + 3 * 3600)
    assert [e.bin_id for e in _done(out, truck_id)] == [far.bin_id, c.bin_id]


def _until_done(sim: CitySim, truck_id: str, t: float) -> tuple[float, TruckEvent]:
    """Advance in 10 s steps until the truck empties a bin: the time and its event."""
    while t < START + 3 * 3600:
        t += 10
        done = _done(sim.advance(t), truck_id)
        if done:
            return t, done[0]
    raise AssertionError("the truck emptied nothing within 3 h")


def test_a_stale_version_does_not_empty_a_bin_twice() -> None:
    sim, _city, truck_id, (_far, b, c) = _setup()
    sim.assign_route(truck_id, [Stop(b.bin_id, b.node)], 1)
    t, first = _until_done(sim, truck_id, START + 600)
    assert first.bin_id == b.bin_id
    # planned before the stop_done reached the re-planner: still lists b
    sim.assign_route(truck_id, [Stop(b.bin_id, b.node), Stop(c.bin_id, c.node)], 2)
    out = sim.advance(t + 2 * 3600)
    assert [e.bin_id for e in _done(out, truck_id)] == [c.bin_id]


def test_a_truck_driving_home_turns_to_a_new_stop() -> None:
    sim, city, truck_id, (far, _b, _c) = _setup()
    truck = sim.trucks[truck_id]
    sim.assign_route(truck_id, [Stop(far.bin_id, far.node)], 1)
    t = START + 600
    while not (_done(sim.advance(t), truck_id) or t > START + 3 * 3600):
        t += 10
    t += 60
    sim.advance(t)
    assert truck.activity == "drive" and not truck.stops  # on its way back, nothing to do
    near = min(
        (b for b in city.bins if b.fraction == far.fraction and b.bin_id != far.bin_id),
        key=lambda b: float(haversine_m(b.lat, b.lon, far.lat, far.lon)),
    )
    sim.assign_route(truck_id, [Stop(near.bin_id, near.node)], 2)
    out = sim.advance(START + 4 * 3600)
    done = _done(out, truck_id)
    assert [e.bin_id for e in done] == [near.bin_id]
    depot = city.site(city.trucks[0].depot_id)
    before = [
        e.payload
        for e in out
        if e.device_id == truck_id
        and isinstance(e.payload, TruckTelemetry)
        and e.payload.ts <= done[0].ts
    ]
    assert before
    assert min(float(haversine_m(p.lat, p.lon, depot.lat, depot.lon)) for p in before) > 200
