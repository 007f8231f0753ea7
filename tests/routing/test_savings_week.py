"""The savings benchmark's week simulation counts collections, overflows and km right.

Hand-made bins that fill on a straight line and read every hour, and a scripted policy,
so every count below is worked out by hand. The benchmark lives in `bench/` (not a
package); it is loaded from its file.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

import pytest

from cityops.ingest.contract import BinTelemetry, Channel, DeviceKind
from cityops.routing.forecast import Observation
from cityops.routing.rows import TruckRow
from cityops.simulators.city import Bin
from cityops.simulators.emission import Emission

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY = date(2024, 3, 4)
BENCH = Path(__file__).resolve().parents[2] / "bench" / "routing" / "savings.py"


@pytest.fixture(scope="module")
def savings() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_routing_savings", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def at(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=BERLIN)


def spec(bin_id: str, district: str = "A1", fraction: str = "residual") -> Bin:
    return Bin(bin_id, f"S-{bin_id}", 0.0, 0.0, 0, "", district, 100, fraction)  # type: ignore[arg-type]


class LinearBin:
    """A 100 l bin filling `rate` %/h from `fill` %, capped at 100 %, read every hour."""

    def __init__(self, bin_id: str, fill: float, rate: float, start: datetime) -> None:
        self.spec = spec(bin_id)
        self._fill, self._rate = fill, rate
        self._t = self.next_time = start.timestamp()

    @property
    def fill_pct(self) -> float:
        return self._fill

    def _advance(self, t: float) -> None:
        self._fill = min(100.0, self._fill + self._rate * (t - self._t) / 3600.0)
        self._t = t

    def step(self) -> list[Emission]:
        self._advance(self.next_time)
        self.next_time += 3600.0
        payload = BinTelemetry(ts=datetime.fromtimestamp(self._t, BERLIN), fill_pct=self._fill)
        return [Emission(DeviceKind.BIN, self.spec.sensor_id, Channel.TELEMETRY, payload)]

    def empty(self, t: float) -> float:
        self._advance(t)
        litres, self._fill = self._fill, 0.0
        return litres


@dataclass
class Scripted:
    """Empties the given bins at the given times; records what it was shown."""

    day_plan: Callable[[dict[str, datetime], int], object]  # the benchmark's DayPlan
    script: Mapping[date, tuple[dict[str, datetime], int]]
    name: str = "scripted"
    seen: list[tuple[date, datetime, int, dict[str, float]]] = field(default_factory=list)

    def plan(
        self,
        day: date,
        now: datetime,
        readings: Mapping[str, Sequence[Observation]],
        levels: Mapping[str, float],
    ) -> object:
        assert all(o.ts <= now for obs in readings.values() for o in obs)
        self.seen.append((day, now, len(readings["A"]), dict(levels)))
        emptyings, distance = self.script.get(day, ({}, 0))
        return self.day_plan(emptyings, distance)


def test_week_counts_collections_overflows_and_km(savings: ModuleType) -> None:
    tue, wed = MONDAY + timedelta(days=1), MONDAY + timedelta(days=2)
    start = at(MONDAY, 0)
    bins = [
        # 90 % + 1 %/h: emptied Monday 09:00 at 99 %, then 0 -> 100 % takes 100 h
        LinearBin("A", 90.0, 1.0, start),
        # 80 % + 2 %/h: full Monday 10:00 until emptied Tuesday 08:00 -> Mon, Tue
        LinearBin("B", 80.0, 2.0, start),
        # 0 % + 2 %/h, never emptied: full Wednesday 02:00 -> Wed
        LinearBin("C", 0.0, 2.0, start),
    ]
    policy = Scripted(
        savings.DayPlan,
        {MONDAY: ({"A": at(MONDAY, 9)}, 12_345), tue: ({"B": at(tue, 8)}, 7_000)},
    )
    results = savings.simulate(
        bins,
        policy,
        [MONDAY, tue, wed],
        zone=BERLIN,
        plan_at=time(6),
        workdays=frozenset({0, 1}),  # no plan on Wednesday
    )
    got = [(r.day, r.planned, r.distance_m, r.collections, r.overflows) for r in results]
    assert got == [
        (MONDAY, True, 12_345, 1, 1),
        (tue, True, 7_000, 1, 1),
        (wed, False, 0, 0, 1),
    ]
    # plans at 06:00 from the readings up to then (00:00..06:00 on Monday: 7)
    assert [(d, now) for d, now, _, _ in policy.seen] == [
        (MONDAY, at(MONDAY, 6)),
        (tue, at(tue, 6)),
    ]
    assert policy.seen[0][2] == 7
    assert policy.seen[0][3] == pytest.approx({"A": 96.0, "B": 92.0, "C": 12.0})
    # after its emptying B refills from 0 at 2 %/h: 39 h to the last reading (Wed 23:00)
    assert bins[1].fill_pct == pytest.approx(2.0 * 39)


def test_a_bin_full_at_its_emptying_counts_as_an_overflow(savings: ModuleType) -> None:
    """Full at 00:30, emptied at 00:45, before any reading showed it (first at 10:00)."""
    start = at(MONDAY, 0)
    late = LinearBin("A", 99.5, 1.0, start)
    late.next_time = start.timestamp() + 10 * 3600
    policy = Scripted(savings.DayPlan, {MONDAY: ({"A": start + timedelta(minutes=45)}, 0)})
    (result,) = savings.simulate(
        [late], policy, [MONDAY], zone=BERLIN, plan_at=time(0), workdays=frozenset({0})
    )
    assert (result.collections, result.overflows) == (1, 1)
    assert late.fill_pct == pytest.approx(22.25)  # refilled from 0 until the 23:00 reading


def test_fixed_schedule_days_by_truck_fraction_and_district(savings: ModuleType) -> None:
    bins = [
        spec("R1", "A1"),
        spec("R2", "A1"),
        spec("R3", "B1"),
        spec("R4", "C2"),
        spec("R5", "AA1"),
        spec("G1", "A1", "glass"),
        spec("P1", "B1", "paper"),
    ]
    trucks = [
        TruckRow("T1", 8000, None, "D", ("residual", "glass")),
        TruckRow("T2", 8000, None, "D", ("paper", "residual")),
    ]
    weekday, truck_of = savings.fixed_schedule(bins, trucks, [0, 1, 2, 3, 4, 5])
    assert set(weekday) == {b.bin_id for b in bins}
    assert {f: t.truck_id for f, t in truck_of.items()} == {
        "residual": "T1",
        "glass": "T1",
        "paper": "T2",
    }
    # T1 gives residual 5 days and glass 1: the glass bin has a day of its own
    assert weekday["G1"] not in {weekday[f"R{i}"] for i in range(1, 6)}
    assert weekday["R1"] == weekday["R2"]  # one district, one day
    # districts west to east (A, B, C, ..., AA) on non-decreasing days
    assert weekday["R1"] <= weekday["R3"] <= weekday["R4"] <= weekday["R5"]
    assert weekday["R1"] < weekday["R5"]


def test_design_frequencies_follow_the_fill_rates(savings: ModuleType) -> None:
    from cityops.simulators.scenario import BinsConfig

    workdays = [0, 1, 2, 3, 4, 5]
    # longest gaps on Monday..Saturday: fortnightly 14 d, weekly 7, twice 4 (Thu -> Mon),
    # three times 3 (Fri -> Mon)
    assert [savings.longest_gap_days(k, workdays) for k in (0.5, 1.0, 2.0, 3.0)] == [14, 7, 4, 3]
    cfg = BinsConfig(
        fractions={"residual": 1.0, "paper": 1.0, "glass": 1.0, "organic": 1.0},
        fill_rate_l_per_day={"residual": 35.0, "paper": 20.0, "glass": 8.0, "organic": 60.0},
        weekday_factors=[1.0] * 7,
    )
    # design rate = l/day / 240 l x 1.566 (90th percentile of lognormal(0, 0.35)), in %/day:
    # residual 22.8 -> 4 d 91 %; paper 13.0 -> 7 d 91 %; glass 5.2 -> 14 d 73 %;
    # organic 39.2 -> 3 d 117 %: even three times a week is not enough, the most is taken
    assert savings.design_frequencies(cfg, workdays) == {
        "residual": 2.0,
        "paper": 1.0,
        "glass": 0.5,
        "organic": 3.0,
    }


def test_frequency_schedule_fills_each_truck_day_once(savings: ModuleType) -> None:
    bins = [spec(f"R{i}", f"A{i}") for i in range(1, 7)]
    bins += [spec(f"G{i}", f"A{i}", "glass") for i in range(1, 5)]
    bins += [spec(f"P{i}", f"B{i}", "paper") for i in range(1, 4)]
    trucks = [
        TruckRow("T1", 8000, None, "D", ("residual", "glass")),
        TruckRow("T2", 8000, None, "D", ("paper",)),
    ]
    workdays = [0, 1, 2, 3, 4, 5]
    per_week = {"residual": 2.0, "glass": 0.5, "paper": 1.0}
    slots, truck_of = savings.frequency_schedule(bins, trucks, workdays, per_week)
    assert {f: t.truck_id for f, t in truck_of.items()} == {
        "residual": "T1",
        "glass": "T1",
        "paper": "T2",
    }
    # residual twice a week on both weeks of the cycle, three days apart
    for i in range(1, 7):
        days = sorted(slots[f"R{i}"])
        assert len(days) == 4 and {d for _, d in days} in ({0, 3}, {1, 4}, {2, 5})
    assert all(len(slots[f"G{i}"]) == 1 for i in range(1, 5))  # fortnightly
    assert all(len(slots[f"P{i}"]) == 2 for i in (1, 2, 3))  # weekly
    # a truck collects one fraction a slot, and with fill_days every slot of T1 is used
    t1 = [s for b in bins if b.fraction != "paper" for s in slots[b.bin_id]]
    by_slot: dict[tuple[int, int], set[str]] = {}
    for b in bins:
        if b.fraction != "paper":
            for s in slots[b.bin_id]:
                by_slot.setdefault(s, set()).add(b.fraction)
    assert all(len(fs) == 1 for fs in by_slot.values())
    assert set(t1) == {(w, d) for w in (0, 1) for d in workdays}
    # fewest rounds: one area per fraction
    fewest, _ = savings.frequency_schedule(bins, trucks, workdays, per_week, fill_days=False)
    assert len({fewest[f"R{i}"] for i in range(1, 7)}) == 1
    assert len({fewest[f"P{i}"] for i in range(1, 4)}) == 1
