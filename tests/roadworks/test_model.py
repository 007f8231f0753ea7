"""Periods, the effective period of a work, German labels and street keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cityops.roadworks.errors import InvalidPeriodError
from cityops.roadworks.labels import BERLIN, fmt_date, fmt_datetime, fmt_period, street_key
from cityops.roadworks.model import Period, Status
from tests.roadworks.factories import T0, make_spec, make_work


def test_periods() -> None:
    a = Period(T0, T0 + timedelta(days=2))
    b = Period(T0 + timedelta(days=1), T0 + timedelta(days=5))
    c = Period(T0 + timedelta(days=2), T0 + timedelta(days=3))
    assert a.overlaps(b)
    assert not a.overlaps(c)  # touching
    assert a.intersection(b) == Period(T0 + timedelta(days=1), T0 + timedelta(days=2))
    assert a.intersection(c) is None
    assert a.gap(c) == timedelta(0)
    assert a.gap(Period(T0 + timedelta(days=9), T0 + timedelta(days=10))) == timedelta(days=7)
    with pytest.raises(InvalidPeriodError, match=r"end: .* is not after start"):
        Period(T0, T0)
    with pytest.raises(InvalidPeriodError, match="start: 2025-03-10T07:00:00 has no time zone"):
        Period(datetime(2025, 3, 10, 7), T0)


def test_effective_period() -> None:
    spec = make_spec(days=10)
    planned = make_work(spec)
    assert planned.effective_period == spec.planned
    late = make_work(spec, status=Status.IN_PROGRESS, actual_start=T0 + timedelta(days=2))
    assert late.effective_period == Period(T0 + timedelta(days=2), spec.planned_end)
    very_late = make_work(spec, status=Status.IN_PROGRESS, actual_start=T0 + timedelta(days=12))
    assert very_late.effective_period.end == T0 + timedelta(days=22)  # planned duration kept
    done = make_work(spec, status=Status.COMPLETED, actual_start=T0,
                     actual_end=T0 + timedelta(days=4))
    assert done.effective_period == Period(T0, T0 + timedelta(days=4))
    assert make_work(spec, status=Status.APPROVED).is_public
    assert not make_work(spec, status=Status.SUBMITTED).is_public


def test_german_dates() -> None:
    summer = datetime(2025, 7, 1, 22, 30, tzinfo=UTC)  # 00:30 the next day in Berlin
    assert fmt_date(summer) == "02.07.2025"
    assert fmt_date(summer, weekday=True) == "Mi, 02.07.2025"
    assert fmt_datetime(summer) == "02.07.2025, 00:30 Uhr"
    whole_days = Period(datetime(2025, 3, 10, tzinfo=BERLIN), datetime(2025, 3, 15, tzinfo=BERLIN))
    assert fmt_period(whole_days) == "10.03.2025 bis 14.03.2025"  # ends at midnight
    one_day = Period(datetime(2025, 3, 10, 7, tzinfo=BERLIN), datetime(2025, 3, 10, 17,
                                                                         tzinfo=BERLIN))
    assert fmt_period(one_day) == "10.03.2025"


@pytest.mark.parametrize("name", [
    "Frankfurter Straße", "Frankfurter Str.", "frankfurter strasse", " Frankfurter  Straße ",
    "FRANKFURTER STRASSE",
])
def test_street_keys_fold_spellings(name: str) -> None:
    assert street_key(name) == "frankfurter strasse"


def test_street_keys_keep_different_streets_apart() -> None:
    assert street_key("Bieberer Straße") != street_key("Bieberer Weg")
    assert street_key("Straßburger Platz") == "strassburger platz"
    assert street_key("Kaiser-Friedrich-Str.") == "kaiser friedrich strasse"
