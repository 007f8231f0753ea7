"""BinSim: filling, emptying, sensor faults."""

from __future__ import annotations

import itertools
from zoneinfo import ZoneInfo

from cityops.ingest.contract import BinTelemetry
from cityops.simulators.bin_sim import BinSim
from cityops.simulators.emission import LocalClock
from cityops.simulators.scenario import BinFaults, BinsConfig
from tests.simulators.factories import START, make_bin

CLOCK = LocalClock(ZoneInfo("Europe/Berlin"))
NO_FAULTS = BinFaults(stuck_sensor=0, battery_drain=0, fire=0, tilt=0)


def readings(sim: BinSim, until: float) -> list[BinTelemetry]:
    out = []
    while sim.next_time <= until:
        for e in sim.step():
            assert isinstance(e.payload, BinTelemetry)
            out.append(e.payload)
    return out


def config(**kw: object) -> BinsConfig:
    base: dict[str, object] = {
        "reading_interval_min": 15, "noise_pct": 0.0, "initial_fill_pct": (10.0, 10.0),
        "faults": NO_FAULTS,
    }
    return BinsConfig.model_validate(base | kw)


def test_fill_grows_by_day_and_empties() -> None:
    sim = BinSim(make_bin(capacity_l=240), config(), CLOCK, seed=1, index=0, start=START)
    day = readings(sim, START + 86400)
    assert len(day) == 96  # every 15 minutes
    fills = [r.fill_pct for r in day]
    assert fills == sorted(fills)  # no noise: never shrinks
    assert fills[0] >= 10.0
    assert 3.0 < fills[-1] - fills[0] < 25.0  # ~20 l/day into 240 l, times the bin's factor
    # households throw more away in the evening than at night
    hourly = [day[i + 4].fill_pct - day[i].fill_pct for i in range(0, 92, 4)]
    night, evening = hourly[18], hourly[10]  # 02:00-03:00 and 18:00-19:00 local
    assert evening > 3 * night
    # November in Europe/Berlin without fire: ambient temperatures
    assert all(-5.0 < (r.temperature_c or 0.0) < 25.0 for r in day)
    assert all(r.fault is None and not r.tilt for r in day)

    before = sim.fill_l
    taken = sim.empty(START + 86400 + 60)
    assert taken >= before
    assert sim.fill_pct < 2.0
    after = readings(sim, START + 86400 + 3600)
    assert after[0].fill_pct < 3.0
    assert sim.emptied == 1


def test_bigger_bins_take_proportionally_more() -> None:
    small = BinSim(make_bin(capacity_l=240), config(), CLOCK, seed=1, index=0, start=START)
    big = BinSim(make_bin(capacity_l=1100), config(), CLOCK, seed=1, index=0, start=START)
    small.empty(START + 86400)
    big.empty(START + 86400)
    # same per-bin factor (same seed and index): same percentage per day
    assert abs(small.fill_pct - big.fill_pct) < 0.01


def test_stuck_sensor_repeats_and_is_reported() -> None:
    cfg = config(faults=NO_FAULTS.model_copy(update={"stuck_sensor": 1.0, "stuck_hours": 48}))
    sim = BinSim(make_bin(), cfg, CLOCK, seed=2, index=0, start=START)
    got = readings(sim, START + 2 * 86400)
    stuck = [r for r in got if r.fault == "stuck"]
    assert stuck, "no stuck fault reported"
    first = got.index(stuck[0])
    assert len({r.fill_pct for r in got[first - 8 : first + 20]}) == 1


def test_failing_battery_warns_then_falls_silent() -> None:
    cfg = config(reading_interval_min=60,
                 faults=NO_FAULTS.model_copy(update={"battery_drain": 1.0}))
    sim = BinSim(make_bin(), cfg, CLOCK, seed=3, index=0, start=START)
    got = readings(sim, START + 60 * 86400)
    assert any(r.fault == "low_battery" for r in got)
    assert got[-1].battery_pct is not None and got[-1].battery_pct < 10.0
    assert sim.dead and sim.next_time == float("inf")


def test_fire_spikes_the_temperature_and_speeds_up_readings() -> None:
    cfg = config(faults=NO_FAULTS.model_copy(update={"fire": 1.0}))
    sim = BinSim(make_bin(), cfg, CLOCK, seed=4, index=0, start=START)
    got = readings(sim, START + 2 * 86400)
    hot = [r for r in got if r.temperature_c is not None and r.temperature_c > 50.0]
    assert hot
    assert max(r.temperature_c or 0.0 for r in got) >= 60.0
    gaps = {(b.ts - a.ts).total_seconds() for a, b in itertools.pairwise(hot)}
    assert 60.0 in gaps


def test_tilt_until_emptied() -> None:
    cfg = config(faults=NO_FAULTS.model_copy(update={"tilt": 1.0}))
    sim = BinSim(make_bin(), cfg, CLOCK, seed=5, index=0, start=START)
    got = readings(sim, START + 86400)
    assert got[-1].tilt
    sim.empty(START + 86400 + 10)
    assert not sim.tilt
