"""The dispatch policy on small hand-made cases: which rounds go out, with which trucks."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from cityops.routing.dispatch import (
    Dispatch,
    DispatchParams,
    assign_trucks,
    decide,
    next_chance,
    reach_from_history,
)
from cityops.routing.forecast import FillForecast
from cityops.routing.model import UnservedCode
from cityops.routing.planning import BERLIN
from cityops.routing.rows import TruckRow

WEDNESDAY = date(2024, 3, 6)
SATURDAY = date(2024, 3, 9)
MONDAY = date(2024, 3, 11)


def before_shift(day: date) -> datetime:
    return datetime.combine(day, time(5, 0), tzinfo=BERLIN).astimezone(UTC)


def truck(truck_id: str, *fractions: str, capacity_l: int = 8000) -> TruckRow:
    return TruckRow(truck_id, capacity_l, None, "DEPOT", fractions, time(6), time(14, 30))


def bin_at(bin_id: str, now: datetime, fill: float, rate_per_h: float) -> FillForecast:
    return FillForecast(bin_id, now, fill, rate_per_h, reliable=True)


def run(
    forecasts: list[FillForecast],
    fractions: dict[str, str],
    trucks: list[TruckRow],
    day: date,
    params: DispatchParams | None = None,
    capacity_l: int = 1000,
) -> Dispatch:
    return decide(
        forecasts,
        fraction_of=fractions,
        capacity_l=dict.fromkeys(fractions, capacity_l),
        trucks=trucks,
        day=day,
        now=before_shift(day),
        params=params or DispatchParams(),
    )


def test_no_mandatory_bin_no_round() -> None:
    now = before_shift(WEDNESDAY)
    # 70 % now, flat: optional (>= 70 %) but not due; 2 x 700 l is far from 6,000 l
    forecasts = [bin_at("P1", now, 70.0, 0.0), bin_at("P2", now, 70.0, 0.0)]
    got = run(forecasts, {"P1": "paper", "P2": "paper"}, [truck("T1", "paper")], WEDNESDAY)
    assert got.rounds == ()
    assert "paper" in got.held and "no bin passes 95%" in got.held["paper"]
    assert (got.selected, got.required, got.unserved) == (0, 0, ())


def test_optional_bins_fill_a_round_of_their_own() -> None:
    now = before_shift(WEDNESDAY)
    forecasts = [bin_at(f"P{i}", now, 75.0, 0.0) for i in range(8)]  # 8 x 750 l = 6,000 l
    fractions = {f.bin_id: "paper" for f in forecasts}
    (rnd,) = run(forecasts, fractions, [truck("T1", "paper")], WEDNESDAY).rounds
    assert rnd.required == 0 and len(rnd.selections) == 8
    assert "optional bins hold 6000 l" in rnd.reason
    fewer = run(forecasts[:7], fractions, [truck("T1", "paper")], WEDNESDAY)
    assert fewer.rounds == () and "paper" in fewer.held


def test_optional_bins_join_a_round_that_goes_out_with_a_reward_by_fill() -> None:
    now = before_shift(WEDNESDAY)
    forecasts = [
        bin_at("DUE", now, 98.0, 0.0),
        bin_at("NEARLY", now, 93.0, 0.0),
        bin_at("HALF", now, 75.0, 0.0),
        bin_at("LOW", now, 60.0, 0.0),
    ]
    fractions = dict.fromkeys(["DUE", "NEARLY", "HALF", "LOW"], "residual")
    (rnd,) = run(forecasts, fractions, [truck("T1", "residual")], WEDNESDAY).rounds
    by_id = {s.bin_id: s for s in rnd.selections}
    assert set(by_id) == {"DUE", "NEARLY", "HALF"}
    assert by_id["DUE"].required and not by_id["NEARLY"].required
    # reward 1000 m at 95 %, falling to 1 at 70 %: a nearly full bin is worth a detour
    assert by_id["NEARLY"].reward == 920
    assert by_id["HALF"].reward == 200


def test_saturday_looks_ahead_over_sunday_to_monday() -> None:
    trucks = [truck("T1", "residual")]
    params = DispatchParams()
    assert next_chance("residual", SATURDAY, trucks, params) == (MONDAY, trucks)
    assert next_chance("residual", WEDNESDAY, trucks, params) == (WEDNESDAY + timedelta(1), trucks)
    # 50 % + 0.8 %/h: by Monday 14:30 (57.5 h) 96 %, by Thursday 14:30 (33.5 h) 77 %
    for day, due in ((SATURDAY, True), (WEDNESDAY, False)):
        forecasts = [bin_at("R1", before_shift(day), 50.0, 0.8)]
        got = run(forecasts, {"R1": "residual"}, trucks, day)
        assert (got.required == 1) is due, day
        assert bool(got.rounds) is due, day
    (rnd,) = run(
        [bin_at("R1", before_shift(SATURDAY), 50.0, 0.8)], {"R1": "residual"}, trucks, SATURDAY
    ).rounds
    assert rnd.deadline == datetime(2024, 3, 11, 13, 30, tzinfo=UTC)  # Monday 14:30 CET


def test_next_chance_follows_the_trucks_that_carry_the_fraction() -> None:
    trucks = [truck("T1", "residual"), truck("T2", "glass")]
    params = DispatchParams(truck_workdays={"T2": frozenset({0, 2})})  # glass: Mon, Wed
    assert next_chance("glass", MONDAY, trucks, params) == (MONDAY + timedelta(2), [trucks[1]])
    assert next_chance("residual", MONDAY, trucks, params) == (MONDAY + timedelta(1), [trucks[0]])
    assert next_chance("organic", MONDAY, trucks, params) is None
    # a bin at 67 % + 0.5 %/h: 95.75 % by Wednesday 14:30 (57.5 h), the next chance for
    # glass: due; 83.75 % by Tuesday 14:30 (33.5 h), the next chance for residual: not due
    now = before_shift(MONDAY)
    got = run(
        [bin_at("G", now, 67.0, 0.5), bin_at("R", now, 67.0, 0.5)],
        {"G": "glass", "R": "residual"},
        trucks,
        MONDAY,
        params,
    )
    assert [(r.fraction, r.required) for r in got.rounds] == [("glass", 1)]
    assert "residual" in got.held


def test_a_shared_truck_goes_to_the_most_urgent_fraction() -> None:
    now = before_shift(WEDNESDAY)
    trucks = [truck("T1", "residual", "glass")]
    fractions = {"R1": "residual", "R2": "residual", "R3": "residual", "G1": "glass"}
    # residual: more litres, due (98.75 % by Thursday 14:30), but 82 % + 0.5 %/h overflows
    # in 36 h; glass at 97 % in 6 h
    forecasts = [bin_at(b, now, 82.0, 0.5) for b in ("R1", "R2", "R3")]
    forecasts.append(bin_at("G1", now, 97.0, 0.5))
    got = run(forecasts, fractions, trucks, WEDNESDAY)
    by_fraction = {r.fraction: r for r in got.rounds}
    assert [t.truck_id for t in by_fraction["glass"].trucks] == ["T1"]
    assert by_fraction["residual"].trucks == ()
    assert [r.fraction for r in got.rounds] == ["glass", "residual"], "most urgent first"
    assert {u.stop_id for u in got.unserved} == {"R1", "R2", "R3"}
    assert all(u.code is UnservedCode.NOT_PLANNED for u in got.unserved)
    assert "no truck collects residual" in got.unserved[0].reason
    assert "T1 collects glass, more urgent" in got.unserved[0].reason


def test_trucks_go_where_collection_is_needed_and_idle_trucks_stay_home() -> None:
    now = before_shift(WEDNESDAY)
    # T1 can do paper or residual; T2 only residual. Both due: T2 takes residual (it can
    # do nothing else), T1 paper; the old rotation would have left paper without a truck.
    trucks = [truck("T1", "paper", "residual"), truck("T2", "residual"), truck("T3", "organic")]
    fractions = {"R1": "residual", "P1": "paper", "O1": "organic"}
    forecasts = [
        bin_at("R1", now, 90.0, 0.2),
        bin_at("P1", now, 92.0, 0.2),
        bin_at("O1", now, 10.0, 0.1),  # nothing due: T3 stays at the depot
    ]
    got = run(forecasts, fractions, trucks, WEDNESDAY)
    assert {r.fraction: [t.truck_id for t in r.trucks] for r in got.rounds} == {
        "residual": ["T2"],
        "paper": ["T1"],
    }
    assert "organic" in got.held and got.unserved == ()


def test_a_big_round_gets_a_second_free_truck() -> None:
    rounds = run(
        [bin_at(f"R{i}", before_shift(WEDNESDAY), 98.0, 0.0) for i in range(10)],
        {f"R{i}": "residual" for i in range(10)},
        [truck("T1", "residual")],
        WEDNESDAY,
    ).rounds
    trucks = [truck("T1", "residual", capacity_l=1000), truck("T2", "residual", capacity_l=2000)]
    params = DispatchParams(max_loads_per_truck=2.0)
    # 4,500 l: more than two loads of the 2,000 l truck -> the second truck joins
    got = assign_trucks(rounds, trucks, params, WEDNESDAY, {"residual": 4500.0})
    assert sorted(t.truck_id for t in got["residual"]) == ["T1", "T2"]
    got = assign_trucks(rounds, trucks, params, WEDNESDAY, {"residual": 1500.0})
    assert [t.truck_id for t in got["residual"]] == ["T2"], "the largest truck first"


def test_no_truck_carries_the_fraction() -> None:
    now = before_shift(WEDNESDAY)
    got = run([bin_at("G1", now, 99.0, 0.1)], {"G1": "glass"}, [truck("T1", "paper")], WEDNESDAY)
    (u,) = got.unserved
    assert u.stop_id == "G1" and u.reason == f"no truck collects glass on {WEDNESDAY}"


def test_defaults_are_the_documented_ones() -> None:
    p = DispatchParams()
    assert (p.mandatory_pct, p.optional_pct, p.reward_scale) == (95.0, 70.0, 1000)
    assert p.workdays == frozenset(range(6))  # Monday..Saturday


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="workdays"):
        DispatchParams(workdays=frozenset())
    with pytest.raises(ValueError, match="workdays"):
        DispatchParams(truck_workdays={"T1": frozenset({7})})
    with pytest.raises(ValueError, match="optional_pct"):
        DispatchParams(optional_pct=95.0)
    with pytest.raises(ValueError, match="min_optional_load"):
        DispatchParams(min_optional_load=0.0)


def test_a_day_no_truck_works_is_planned_with_the_whole_fleet() -> None:
    sunday = SATURDAY + timedelta(days=1)
    got = run(
        [bin_at("R1", before_shift(sunday), 95.0, 0.5)],
        {"R1": "residual"},
        [truck("T1", "residual")],
        sunday,
    )
    (rnd,) = got.rounds
    assert [t.truck_id for t in rnd.trucks] == ["T1"]
    assert rnd.deadline.astimezone(BERLIN).date() == MONDAY


def test_bins_that_would_send_the_next_round_out_join_todays_with_the_ahead_reward() -> None:
    # Wednesday 05:00: the next chance ends Thursday 14:30 (33.5 h), the one after it
    # Friday 14:30 (57.5 h). At 1 %/h: 62 % now reaches 95.5 % on Thursday (due today);
    # 50 % now: 83.5 % Thursday (optional) and 107.5 % Friday (it would send Thursday's
    # round out); 20 % now: 77.5 % Friday (not ahead); 15 % now at 1.5 %/h: 65.25 %
    # Thursday (not even optional) and 101.25 % Friday (ahead).
    now = before_shift(WEDNESDAY)
    forecasts = [
        bin_at("DUE", now, 62.0, 1.0),
        bin_at("OPTIONAL", now, 50.0, 1.0),
        bin_at("SLOW", now, 20.0, 1.0),
        bin_at("LATER", now, 15.0, 1.5),
    ]
    fractions = {f.bin_id: "residual" for f in forecasts}
    trucks = [truck("T1", "residual")]
    plain = run(forecasts, fractions, trucks, WEDNESDAY, DispatchParams(ahead_reward=0))
    (rnd,) = plain.rounds
    assert {s.bin_id: s.required for s in rnd.selections} == {"DUE": True, "OPTIONAL": False}
    base = {s.bin_id: s.reward for s in rnd.selections}["OPTIONAL"]
    assert base < 1000

    ahead = run(forecasts, fractions, trucks, WEDNESDAY, DispatchParams(ahead_reward=3000))
    (rnd,) = ahead.rounds
    got = {s.bin_id: (s.required, s.reward) for s in rnd.selections}
    # OPTIONAL raised, LATER added; SLOW stays out. Emptied today, DUE alone would not
    # be back at 95 % before Saturday's round (95 h); LATER (1.5 %/h, 63 h) would send
    # Friday's out, so the look-ahead stops at Friday's deadline.
    assert got == {"DUE": (True, 1020), "OPTIONAL": (False, 3000), "LATER": (False, 3000)}
    assert "2 bins that would send a round out before Fri 14:30 are worth more" in rnd.reason


def test_ahead_looks_as_far_as_the_round_that_todays_bins_send_out_anyway() -> None:
    # Wednesday 05:00; deadlines Thu 14:30 (33.5 h), Fri (57.5 h), Sat (81.5 h),
    # Mon (129.5 h), Tue (153.5 h); Wednesday's (177.5 h) is past 7 days.
    now = before_shift(WEDNESDAY)
    forecasts = [
        bin_at("DUE", now, 76.0, 0.6),  # 96.1 % Thursday; emptied, back at 95 % in 158 h
        bin_at("SUNDAY", now, 30.0, 0.6),  # 95 % at 108 h: would send Saturday's round out
        bin_at("WEEK", now, 5.0, 0.5),  # 81.75 % by Tuesday's deadline: can wait
    ]
    fractions = {f.bin_id: "glass" for f in forecasts}
    trucks = [truck("T1", "glass")]
    got = run(forecasts, fractions, trucks, WEDNESDAY, DispatchParams(ahead_reward=2000))
    (rnd,) = got.rounds
    assert {s.bin_id: s.reward for s in rnd.selections if not s.required} == {"SUNDAY": 2000}
    assert "1 bins that would send a round out before Tue 14:30" in rnd.reason

    # Looking two days at most, nothing joins: the chance after next is past the limit.
    short = run(forecasts, fractions, trucks, WEDNESDAY,
                DispatchParams(ahead_reward=2000, ahead_days=2))
    (rnd,) = short.rounds
    assert [s.bin_id for s in rnd.selections] == ["DUE"]

    # A fast bin due today brings the next round close: Thursday, so no bin is ahead.
    fast = [*forecasts, bin_at("FAST", now, 70.0, 2.0)]  # empty, back at 95 % in 47.5 h
    fractions["FAST"] = "glass"
    got = run(fast, fractions, trucks, WEDNESDAY, DispatchParams(ahead_reward=2000))
    (rnd,) = got.rounds
    assert {s.bin_id for s in rnd.selections} == {"DUE", "FAST"}
    assert "ahead" not in rnd.reason and "worth more" not in rnd.reason


def test_ahead_bins_never_send_a_round_out_on_their_own() -> None:
    now = before_shift(WEDNESDAY)
    forecasts = [bin_at(f"B{i}", now, 50.0, 1.0) for i in range(3)]  # 83.5 % Thursday
    fractions = {f.bin_id: "paper" for f in forecasts}
    got = run(forecasts, fractions, [truck("T1", "paper")], WEDNESDAY,
              DispatchParams(ahead_reward=3000))
    assert got.rounds == () and "paper" in got.held


def test_ahead_looks_to_the_chance_after_next_over_the_weekend() -> None:
    # Saturday: next chance Monday, the one after Tuesday (shift end 14:30 Berlin, CET).
    now = before_shift(SATURDAY)
    forecasts = [
        # emptied today, back at 95 % in 95 h: after Tuesday's deadline, before
        # Wednesday's (105.5 h), so Tuesday's round goes anyway and the look-ahead ends there
        bin_at("DUE", now, 95.0, 1.0),
        # Monday 14:30 is 57.5 h on, Tuesday 14:30 81.5 h.
        # 10 % + 0.85 %/h: 79.3 % by Tuesday's end: not ahead (it would be, at 99.7 %, if
        # the look-ahead went on to Wednesday)
        bin_at("NOT", now, 10.0, 0.85),
        # 30 % + 0.8 %/h: 76 % Monday (optional), 95.2 % by Tuesday's end: ahead
        bin_at("TUE", now, 30.0, 0.8),
    ]
    fractions = {f.bin_id: "glass" for f in forecasts}
    got = run(forecasts, fractions, [truck("T1", "glass")], SATURDAY,
              DispatchParams(ahead_reward=2500))
    (rnd,) = got.rounds
    assert {s.bin_id: s.reward for s in rnd.selections if not s.required} == {"TUE": 2500}


def test_ahead_reward_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="ahead_reward"):
        DispatchParams(ahead_reward=-1)


def test_reach_within_moves_the_deadline_from_the_shift_end_into_the_shift() -> None:
    # Wednesday 05:00; Thursday's shift 06:00-14:30 Berlin. At 1 %/h, 64 % now is 95 % by
    # Thursday 12:00 (31 h on): due when the round may reach it as late as 14:30, not when
    # it is counted on to be reached 2 h into the shift (Thursday 08:00: 91 %).
    now = before_shift(WEDNESDAY)
    forecasts = [bin_at("B1", now, 64.0, 1.0)]
    fractions = {"B1": "paper"}
    trucks = [truck("T1", "paper")]
    (rnd,) = run(forecasts, fractions, trucks, WEDNESDAY).rounds
    assert rnd.required == 1
    thursday = WEDNESDAY + timedelta(days=1)
    assert rnd.deadline == datetime.combine(thursday, time(14, 30), tzinfo=BERLIN)
    early = run(forecasts, fractions, trucks, WEDNESDAY, DispatchParams(reach_within_h=2.0))
    assert early.rounds == () and "before Thu" in early.held["paper"]
    # beyond the shift's length the shift end is kept
    late = run(forecasts, fractions, trucks, WEDNESDAY, DispatchParams(reach_within_h=12.0))
    assert late.rounds[0].deadline == rnd.deadline
    with pytest.raises(ValueError, match="reach_within_h"):
        DispatchParams(reach_within_h=0.0)


def test_reach_from_history_takes_each_fractions_latest_stop_in_the_window() -> None:
    history = [
        ("paper", MONDAY - timedelta(days=15), 9.0),  # outside the 14 days
        ("paper", MONDAY - timedelta(days=3), 2.5),
        ("paper", MONDAY - timedelta(days=1), 3.25),
        ("glass", MONDAY - timedelta(days=14), 1.5),  # first day of the window
        ("organic", MONDAY, 7.0),  # the plan day itself is not history
        ("residual", MONDAY - timedelta(days=2), 0.0),  # a route without stops
    ]
    assert reach_from_history(history, MONDAY) == {"paper": 3.25, "glass": 1.5}
    assert reach_from_history(history, MONDAY, window_days=2) == {"paper": 3.25}


def test_learned_reach_sets_the_deadline_and_reach_within_overrides_it() -> None:
    now = before_shift(WEDNESDAY)
    forecasts = [bin_at("B1", now, 64.0, 1.0)]  # 95 % by Thursday 12:00 Berlin
    fractions = {"B1": "paper"}
    trucks = [truck("T1", "paper")]
    thursday = WEDNESDAY + timedelta(days=1)

    def deadline_or_held(params: DispatchParams, reach: dict[str, float] | None) -> object:
        got = decide(
            forecasts,
            fraction_of=fractions,
            capacity_l={"B1": 1000},
            trucks=trucks,
            day=WEDNESDAY,
            now=now,
            params=params,
            reach_h=reach,
        )
        return got.rounds[0].deadline if got.rounds else "held"

    plain = DispatchParams()
    assert deadline_or_held(plain, {"paper": 2.0}) == "held"  # Thursday 08:00: 91 %
    assert deadline_or_held(plain, {"glass": 2.0}) == datetime.combine(
        thursday, time(14, 30), tzinfo=BERLIN
    )  # nothing learned for paper: the shift's end
    assert deadline_or_held(plain, {"paper": 7.0}) == datetime.combine(
        thursday, time(13, 0), tzinfo=BERLIN
    )
    assert deadline_or_held(DispatchParams(reach_within_h=2.0), {"paper": 7.0}) == "held"


def test_a_shared_truck_goes_where_waiting_would_let_more_bins_overflow() -> None:
    # Thursday 14:30 Berlin is 33.5 h on. Residual: three bins at 90 % + 0.5 %/h, 106.75 %
    # by then, overflowing in 20 h. Glass: one bin at 97 %, overflowing in 6 h. Waiting
    # would let three residual bins overflow against one glass bin.
    now = before_shift(WEDNESDAY)
    trucks = [truck("T1", "residual", "glass")]
    fractions = {"R1": "residual", "R2": "residual", "R3": "residual", "G1": "glass"}
    forecasts = [bin_at(b, now, 90.0, 0.5) for b in ("R1", "R2", "R3")]
    forecasts.append(bin_at("G1", now, 97.0, 0.5))
    got = run(forecasts, fractions, trucks, WEDNESDAY)
    assert [r.fraction for r in got.rounds] == ["residual", "glass"]
    assert [t.truck_id for t in got.rounds[0].trucks] == ["T1"]
    assert {u.stop_id for u in got.unserved} == {"G1"}
    assert "T1 collects residual, more urgent" in got.unserved[0].reason
