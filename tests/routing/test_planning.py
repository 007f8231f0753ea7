"""Pure planning helpers: the day axis across DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from cityops.routing.planning import DayAxis


def test_day_axis_is_exact_on_dst_days() -> None:
    spring = DayAxis(date(2026, 3, 29))  # clocks go from 02:00 to 03:00 in Berlin
    assert spring.midnight == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert spring.seconds(time(6, 0)) == 5 * 3600  # only five hours have passed by 06:00
    assert spring.at(spring.seconds(time(6, 0))) == datetime(2026, 3, 29, 4, 0, tzinfo=UTC)
    autumn = DayAxis(date(2026, 10, 25))
    assert autumn.seconds(time(6, 0)) == 7 * 3600
    normal = DayAxis(date(2026, 11, 23))
    assert normal.seconds(time(6, 0)) == 6 * 3600
