"""Pure planning helpers: the day axis across DST and the fraction each truck takes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from cityops.routing.planning import DayAxis, assign_fractions
from cityops.routing.repository import TruckRow


def _truck(tid: str, fractions: tuple[str, ...], capacity: int = 10_000) -> TruckRow:
    return TruckRow(tid, capacity, None, "D1", fractions)


def test_day_axis_is_exact_on_dst_days() -> None:
    spring = DayAxis(date(2026, 3, 29))  # clocks go from 02:00 to 03:00 in Berlin
    assert spring.midnight == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert spring.seconds(time(6, 0)) == 5 * 3600  # only five hours have passed by 06:00
    assert spring.at(spring.seconds(time(6, 0))) == datetime(2026, 3, 29, 4, 0, tzinfo=UTC)
    autumn = DayAxis(date(2026, 10, 25))
    assert autumn.seconds(time(6, 0)) == 7 * 3600
    normal = DayAxis(date(2026, 11, 23))
    assert normal.seconds(time(6, 0)) == 6 * 3600


def test_each_truck_takes_the_fraction_with_the_most_uncovered_demand() -> None:
    trucks = [
        _truck("T01", ("residual", "glass")),
        _truck("T02", ("residual", "paper")),
        _truck("T03", ("paper", "glass")),
    ]
    demand = {"residual": (15_000.0, 0.0), "paper": (2_000.0, 500.0), "glass": (0.0, 300.0)}
    got = assign_fractions(trucks, demand)
    # residual needs two trucks' worth; paper is taken by the one truck that cannot carry it
    assert got == {"T01": "residual", "T02": "residual", "T03": "paper"}


def test_optional_demand_breaks_ties_and_idle_trucks_keep_their_first_fraction() -> None:
    trucks = [_truck("T01", ("glass", "paper")), _truck("T02", ("organic",))]
    got = assign_fractions(trucks, {"paper": (0.0, 800.0), "glass": (0.0, 100.0)})
    assert got == {"T01": "paper", "T02": "organic"}
