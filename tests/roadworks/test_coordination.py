"""The coordination rules on hand-made metric geometries: found when they should be,
and only then (no false findings)."""

from __future__ import annotations

from datetime import date

import pytest

from cityops.roadworks.coordination import (
    CoordinationRules,
    check_pair,
    check_protection,
    coordinate,
    coordinate_all,
    find_clash,
    find_dig_once,
    find_parallel_closure,
)
from cityops.roadworks.model import FindingKind, Severity
from tests.roadworks.factories import D0, period, segment, subject

RULES = CoordinationRules()


# -- clashes ---------------------------------------------------------------------------------


def test_clash_in_space_and_time() -> None:
    a = subject(1, promoter="Stadtwerke", start_day=0, days=10)
    b = subject(2, x=30, promoter="Glasfaser Plus", start_day=5, days=10)
    found = find_clash(a, b, RULES)
    assert found is not None
    assert (found.kind, found.severity, found.work_a, found.work_b) == (
        FindingKind.CLASH, Severity.CONFLICT, 1, 2)
    assert found.details["distance_m"] == 0.0
    assert found.details["overlap_start"] == "2025-03-15T07:00:00Z"
    assert found.street == "Hauptstraße"
    assert found.message.startswith("Konflikt in der Hauptstraße: RW-1 (Stadtwerke, Gas) und "
                                    "RW-2 (Glasfaser Plus, Gas) überschneiden sich räumlich")
    assert "15.03.2025 bis 20.03.2025" in found.message
    assert found.location is not None
    assert a.footprint.intersection(b.footprint).contains(found.location)
    # symmetric: the same finding whichever side asks
    assert find_clash(b, a, RULES) == found


def test_space_only_is_no_clash() -> None:
    a = subject(1, start_day=0, days=10)
    b = subject(2, start_day=20, days=5)
    assert find_clash(a, b, RULES) is None
    # touching periods (one ends when the other starts) do not overlap either
    c = subject(3, start_day=10, days=5)
    assert find_clash(a, c, RULES) is None


def test_time_only_is_no_clash() -> None:
    a = subject(1, start_day=0, days=10)
    b = subject(2, y=50, start_day=0, days=10)  # 42 m apart
    assert find_clash(a, b, RULES) is None


@pytest.mark.parametrize(("gap_m", "buffer_m", "clash"), [
    (9.0, 10.0, True), (10.0, 10.0, True), (11.0, 10.0, False), (9.0, 0.0, False),
    (25.0, 30.0, True),
])
def test_the_buffer_is_respected(gap_m: float, buffer_m: float, clash: bool) -> None:
    a = subject(1, length=60)
    b = subject(2, x=60 + gap_m, length=40)
    found = find_clash(a, b, CoordinationRules(buffer_m=buffer_m))
    assert (found is not None) == clash
    if found is not None:
        assert found.details["distance_m"] == pytest.approx(gap_m)
        assert f"liegen nur {gap_m:.0f} m auseinander (Puffer {buffer_m:.0f} m)" in found.message


# -- dig once ----------------------------------------------------------------------------------


def test_dig_once_on_the_same_street() -> None:
    a = subject(1, street="Frankfurter Straße", promoter="Stadtwerke", start_day=0, days=10)
    b = subject(2, x=75, street="Frankfurter Str.", promoter="Glasfaser Plus",
                start_day=40, days=5)
    found = find_dig_once(a, b, RULES)
    assert found is not None
    assert (found.kind, found.severity) == (FindingKind.DIG_ONCE, Severity.OPPORTUNITY)
    assert found.details == {"distance_m": 15.0, "gap_days": 30, "window_days": 180}
    assert "graben beide in der Frankfurter Straße, höchstens 15 m voneinander" in found.message
    assert "im Abstand von 30 Tagen (RW-1 bis 20.03.2025, RW-2 ab 19.04.2025)" in found.message
    assert check_pair(a, b, RULES) == [found]


@pytest.mark.parametrize("change", [
    "same promoter", "beyond the window", "no digging", "other street", "too far along",
])
def test_dig_once_not_found(change: str) -> None:
    b_kw: dict[str, object] = {"x": 75, "promoter": "Glasfaser Plus", "start_day": 40,
                               "days": 5}
    a_kw: dict[str, object] = {"promoter": "Stadtwerke"}
    if change == "same promoter":
        b_kw["promoter"] = "stadtwerke "
    elif change == "beyond the window":
        b_kw["start_day"] = 10 + 181
    elif change == "no digging":
        b_kw["excavation"] = False
    elif change == "other street":
        b_kw["street"] = "Bahnhofstraße"
    elif change == "too far along":
        b_kw["x"] = 60 + 26
    a = subject(1, **a_kw)  # type: ignore[arg-type]
    b = subject(2, **b_kw)  # type: ignore[arg-type]
    assert find_dig_once(a, b, RULES) is None
    assert check_pair(a, b, RULES) == []


def test_a_clash_supersedes_dig_once() -> None:
    a = subject(1, promoter="Stadtwerke")
    b = subject(2, x=20, promoter="Glasfaser Plus")
    assert find_dig_once(a, b, RULES) is not None
    assert [f.kind for f in check_pair(a, b, RULES)] == [FindingKind.CLASH]


# -- protection period -----------------------------------------------------------------------


def test_protection_period_warning() -> None:
    work = subject(1, x=20, promoter="Stadtwerke")  # 10 Mar 2025
    seg = segment(7, resurfaced_on=date(2023, 5, 12))
    found = check_protection(work, seg, RULES)
    assert found is not None
    assert (found.kind, found.severity, found.work_a, found.work_b, found.segment_id) == (
        FindingKind.PROTECTION_PERIOD, Severity.WARNING, 1, None, 7)
    assert found.details["protected_until"] == "2028-05-12"
    assert found.message == (
        "Aufbruchsperre: RW-1 (Stadtwerke, Gas) gräbt in der Hauptstraße, die am 12.05.2023 "
        "neu asphaltiert wurde; die Schutzfrist von 5 Jahren läuft bis 11.05.2028."
    )


@pytest.mark.parametrize(("resurfaced", "years", "excavation", "y", "expected"), [
    (date(2023, 5, 12), 5, True, 0.0, True),
    (date(2019, 5, 12), 5, True, 0.0, False),  # expired
    (date(2020, 3, 11), 5, True, 0.0, True),  # ends the day after the work starts
    (date(2020, 3, 10), 5, True, 0.0, False),  # protected until the day the work starts
    (date(2023, 5, 12), 0, True, 0.0, False),  # no protection configured
    (date(2023, 5, 12), 5, False, 0.0, False),  # no digging
    (date(2023, 5, 12), 5, True, 30.0, False),  # another street, 30 m away
    (date(2025, 6, 1), 5, True, 0.0, False),  # resurfaced after the work
])
def test_protection_period_bounds(resurfaced: date, years: int, excavation: bool, y: float,
                                  expected: bool) -> None:
    work = subject(1, x=20, y=y, excavation=excavation)
    seg = segment(1, resurfaced_on=resurfaced)
    found = check_protection(work, seg, CoordinationRules(protection_years=years))
    assert (found is not None) == expected


def test_protection_period_of_29_february() -> None:
    from cityops.roadworks.coordination import protected_until

    assert protected_until(segment(1, resurfaced_on=date(2024, 2, 29)), 5) == date(2029, 2, 28)


# -- parallel closures -----------------------------------------------------------------------


def test_parallel_closures_at_the_same_time() -> None:
    a = subject(1, street="Kaiserstraße", closure=True, length=200)
    b = subject(2, y=80, x=50, street="Herrnstraße", closure=True, length=150, start_day=3)
    found = find_parallel_closure(a, b, RULES)
    assert found is not None
    assert (found.kind, found.severity) == (FindingKind.PARALLEL_CLOSURE, Severity.WARNING)
    assert found.details["distance_m"] == 80.0
    assert found.details["angle_deg"] == 0.0
    assert found.street == "Kaiserstraße / Herrnstraße"
    assert ("RW-1 sperrt die Kaiserstraße voll und RW-2 zur selben Zeit (13.03.2025 bis "
            "20.03.2025) die parallele Herrnstraße, etwa 80 m entfernt") in found.message
    assert found.location is not None
    assert found.location.geom_type == "LineString"


@pytest.mark.parametrize("change", [
    "different times", "perpendicular", "too far apart", "one is no closure", "same street",
    "end to end", "crossing",
])
def test_parallel_closures_not_found(change: str) -> None:
    a = subject(1, street="Kaiserstraße", closure=True, length=200)
    kw: dict[str, object] = {"y": 80, "x": 50, "street": "Herrnstraße", "closure": True,
                             "length": 150}
    if change == "different times":
        kw["start_day"] = 10
    elif change == "perpendicular":
        kw.update(x=100, y=30, north=True)
    elif change == "too far apart":
        kw["y"] = 300
    elif change == "one is no closure":
        kw["closure"] = False
    elif change == "same street":
        kw["street"] = "Kaiserstr."
    elif change == "end to end":
        kw.update(x=230, y=25)  # continues the line to the east, barely offset
    elif change == "crossing":
        kw.update(x=100, y=-60, north=True)
    b = subject(2, **kw)  # type: ignore[arg-type]
    assert find_parallel_closure(a, b, RULES) is None


def test_a_clash_supersedes_parallel_closures() -> None:
    a = subject(1, street="Kaiserstraße", closure=True, length=200)
    b = subject(2, y=25, street="Kaiserpassage", closure=True, length=200, width=30)
    assert [f.kind for f in check_pair(a, b, RULES)] == [FindingKind.CLASH]


# -- whole sets --------------------------------------------------------------------------------


def test_coordinate_finds_each_relation_once_and_sorted() -> None:
    gas = subject(1, promoter="Stadtwerke")
    fibre = subject(2, x=20, promoter="Glasfaser Plus", start_day=2)  # clash with 1
    later = subject(3, x=75, promoter="Fernwärme", start_day=60)  # dig once with 1 and 2
    far = subject(4, y=500, promoter="Stadtwerke")  # nothing
    seg = segment(9, x=-50, length=40, resurfaced_on=date(2024, 1, 1))  # not under any work
    seg_hit = segment(10, x=100, length=50, resurfaced_on=date(2024, 1, 1))  # under `later`
    every = coordinate_all([gas, fibre, later, far], [seg, seg_hit], RULES)
    keys = [f.key for f in every]
    assert keys == [
        ("clash", 1, 2, None),
        ("dig_once", 1, 3, None),
        ("dig_once", 2, 3, None),
        ("protection_period", 3, None, 10),
    ]
    mine = coordinate(later, [gas, fibre, far], [seg, seg_hit], RULES)
    assert [f.key for f in mine] == keys[1:]
    assert coordinate(far, [gas, fibre, later], [seg, seg_hit], RULES) == []


def test_rules_validate_their_thresholds() -> None:
    with pytest.raises(ValueError, match="buffer_m must not be negative"):
        CoordinationRules(buffer_m=-1)
    with pytest.raises(ValueError, match="parallel_max_angle_deg"):
        CoordinationRules(parallel_max_angle_deg=120)
    assert CoordinationRules().reach_m == 250.0
    assert period(0, 1).start == D0
