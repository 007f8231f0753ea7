"""SignalController: hand-made command sequences against the safety rules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cityops.ingest.contract import TimingCommand
from cityops.simulators.controller import (
    BEGIN_GREEN,
    BEGIN_YELLOW,
    END_RED_CLEARANCE,
    FORCE_OFF,
    MAX_OUT,
    PATTERN_CHANGE,
    Interval,
    Mode,
    PhaseTiming,
    RawEvent,
    SignalController,
)

T0 = 1_763_622_000.0


def make(**kw: Any) -> SignalController:
    timings = [
        PhaseTiming(
            2, green_s=20.0, min_green_s=5.0, max_green_s=40.0, yellow_s=3.0, red_clearance_s=2.0
        ),
        PhaseTiming(
            4, green_s=15.0, min_green_s=5.0, max_green_s=40.0, yellow_s=3.0, red_clearance_s=2.0
        ),
    ]
    return SignalController("C1", timings, T0, **kw)


_SEQ = [0]


def cmd(
    at: float,
    mode: str = "adaptive",
    *,
    seq: int | None = None,
    valid: float = 6.0,
    issuer: str = "svc",
    controller: str = "C1",
    **kw: Any,
) -> TimingCommand:
    if seq is None:
        _SEQ[0] += 1
        seq = _SEQ[0]
    return TimingCommand(
        controller_id=controller,
        issuer=issuer,
        seq=seq,
        issued_at=datetime.fromtimestamp(T0 + at, UTC),
        valid_for_s=valid,
        mode=mode,
        **kw,
    )


def rel(events: list[RawEvent]) -> list[tuple[float, int, int]]:
    return [(round(e.ts_ds / 10 - T0, 1), e.code, e.param) for e in events]


def greens(events: list[RawEvent]) -> list[tuple[int, float]]:
    """(phase, green seconds) of each complete green in the log."""
    out = []
    begin: dict[int, int] = {}
    for e in events:
        if e.code == BEGIN_GREEN:
            begin[e.param] = e.ts_ds
        elif e.code == BEGIN_YELLOW and e.param in begin:
            out.append((e.param, (e.ts_ds - begin.pop(e.param)) / 10))
    return out


def test_fixed_time_cycle_and_clearance_events() -> None:
    c = make()
    ev = rel(c.step(T0 + 50.0))
    assert ev[:2] == [(0.0, PATTERN_CHANGE, 1), (0.0, BEGIN_GREEN, 2)]
    assert ev[2:8] == [
        (20.0, 7, 2),
        (20.0, 8, 2),
        (23.0, 9, 2),
        (23.0, 10, 2),
        (25.0, END_RED_CLEARANCE, 2),
        (25.0, BEGIN_GREEN, 4),
    ]
    assert ev[8:] == [
        (40.0, 7, 4),
        (40.0, 8, 4),
        (43.0, 9, 4),
        (43.0, 10, 4),
        (45.0, 11, 4),
        (45.0, 1, 2),
    ]
    assert c.phase == 2 and c.interval is Interval.GREEN and c.mode is Mode.OWN_PLAN


def test_steps_of_any_size_give_the_same_log() -> None:
    a, b = make(), make()
    coarse = a.step(T0 + 300.0)
    fine: list[RawEvent] = []
    t = T0
    while t < T0 + 300.0:
        t += 0.1
        fine += b.step(t)
    assert coarse == fine


def test_adaptive_advance_before_min_green_is_refused_and_green_goes_on() -> None:
    c = make()
    c.step(T0 + 2.0)
    out = c.receive(cmd(2.0, phase=2, action="advance"))
    assert out.status == "refused" and out.key == "refused:min_green"
    assert "min green" in out.reason
    assert c.mode is Mode.ADAPTIVE  # the service is alive; only this decision was unsafe
    assert c.interval is Interval.GREEN
    c.step(T0 + 4.9)
    assert c.interval is Interval.GREEN
    # the controller does not act on the refused advance later on its own
    c.step(T0 + 6.0)
    assert c.interval is Interval.GREEN
    out = c.receive(cmd(6.0, phase=2, action="advance"))
    assert out.status == "accepted"
    ev = rel(c.step(T0 + 6.0))
    assert (6.0, FORCE_OFF, 2) in ev and (6.0, BEGIN_YELLOW, 2) in ev
    assert c.counts["refused:min_green"] == 1 and c.counts["accepted:advance"] == 1


def test_clearance_is_never_shortened() -> None:
    c = make()
    c.step(T0 + 6.0)
    c.receive(cmd(6.0, phase=2, action="advance"))
    c.step(T0 + 7.0)
    assert c.interval is Interval.YELLOW
    # an advance of the next phase (not yet green) or a hold of the ending one: refused
    assert c.receive(cmd(7.0, phase=4, action="advance")).key == "refused:clearance"
    assert c.receive(cmd(7.0, phase=2, action="hold")).key == "refused:clearance"
    # an advance repeated for the phase in clearance changes nothing
    assert c.receive(cmd(7.0, phase=2, action="advance")).status == "accepted"
    ev = rel(c.step(T0 + 11.5))
    assert ev == [(9.0, 9, 2), (9.0, 10, 2), (11.0, 11, 2), (11.0, 1, 4)]


def test_hold_ends_at_max_green() -> None:
    c = make()
    log: list[RawEvent] = c.step(T0)
    t = 0.0
    while t < 50.0:  # the service says hold every 2 s
        t += 2.0
        log += c.step(T0 + t)
        if c.interval is Interval.GREEN:
            c.receive(cmd(t, phase=c.phase, action="hold"))
    assert greens(log)[0] == (2, 40.0)
    assert (40.0, MAX_OUT, 2) in rel(log)
    assert c.counts["max_out"] == 1


def test_stale_and_duplicate_commands_are_dropped() -> None:
    c = make()
    c.step(T0 + 10.0)
    out = c.receive(cmd(3.0, phase=2, action="advance", valid=6.0))
    assert out.status == "dropped" and out.key == "dropped:stale"
    assert c.interval is Interval.GREEN and c.mode is Mode.OWN_PLAN
    assert c.receive(cmd(10.0, phase=2, action="hold", seq=50)).status == "accepted"
    again = c.receive(cmd(10.0, phase=2, action="advance", seq=50))
    assert again.key == "dropped:seq"
    older = c.receive(cmd(10.0, phase=2, action="advance", seq=49))
    assert older.key == "dropped:seq"
    assert c.interval is Interval.GREEN
    # another issuer has its own sequence
    assert c.receive(cmd(10.0, phase=2, action="advance", seq=1, issuer="b")).status == "accepted"
    assert c.receive(cmd(10.0, phase=2, action="hold", controller="C2")).key == "dropped:wrong_id"


def test_fallback_after_silence() -> None:
    c = make()
    c.step(T0 + 1.0)
    c.receive(cmd(1.0, phase=2, action="hold", valid=6.0))
    ev = rel(c.step(T0 + 30.0))
    # silent from 1 s on: at 7 s the own plan is back and the green ends at its 20 s
    assert ev[:2] == [(1.0, PATTERN_CHANGE, 3), (7.0, PATTERN_CHANGE, 1)]
    assert (20.0, BEGIN_YELLOW, 2) in ev
    assert c.mode is Mode.OWN_PLAN and c.counts["fallback:silence"] == 1


def test_fallback_after_silence_past_own_green_ends_it_at_once() -> None:
    c = make()
    t = 0.0
    while t < 24.0:
        t += 2.0
        c.step(T0 + t)
        c.receive(cmd(t, phase=2, action="hold", valid=4.0))
    ev = rel(c.step(T0 + 40.0))
    assert ev[:2] == [(28.0, PATTERN_CHANGE, 1), (28.0, 7, 2)]


def test_plan_out_of_bounds_is_refused() -> None:
    c = make()
    c.step(T0 + 1.0)
    low = c.receive(cmd(1.0, "plan", greens_s={"2": 4.0, "4": 20.0}))
    high = c.receive(cmd(1.0, "plan", greens_s={"2": 30.0, "4": 41.0}))
    missing = c.receive(cmd(1.0, "plan", greens_s={"2": 30.0}))
    invented = c.receive(cmd(1.0, "plan", greens_s={"2": 30.0, "4": 20.0, "6": 10.0}))
    assert [o.key for o in (low, high, missing, invented)] == [
        "refused:plan_bounds",
        "refused:plan_bounds",
        "refused:plan_phases",
        "refused:plan_phases",
    ]
    assert c.mode is Mode.OWN_PLAN and c.greens() == {2: 20.0, 4: 15.0}


def test_plan_is_followed_then_fallback_command() -> None:
    c = make()
    log = c.step(T0 + 1.0)
    assert (
        c.receive(cmd(1.0, "plan", valid=300.0, greens_s={"2": 10.0, "4": 30.0})).status
        == "accepted"
    )
    log += c.step(T0 + 100.0)
    assert greens(log)[:3] == [(2, 10.0), (4, 30.0), (2, 10.0)]
    assert (1.0, PATTERN_CHANGE, 2) in rel(log)
    assert c.receive(cmd(100.0, "fallback", valid=300.0)).status == "accepted"
    log = c.step(T0 + 200.0)
    assert (100.0, PATTERN_CHANGE, 1) in rel(log)
    assert {g for g in greens(log)} <= {(2, 20.0), (4, 15.0)}


@pytest.mark.parametrize(
    "bad",
    [
        {"green_s": 4.0, "min_green_s": 5.0},
        {"green_s": 10.0, "yellow_s": 2.0},
        {"green_s": 10.0, "max_green_s": 4.0, "min_green_s": 5.0},
    ],
)
def test_phase_timing_validates(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="phase 2"):
        PhaseTiming(2, **bad)


def test_a_command_expiring_in_the_current_tenth_is_stale() -> None:
    c = make()
    c.step(T0 + 10.0)
    # issued 4.0 + valid 6.0 = 10.0, the controller's time: expired, not accepted
    at_now = c.receive(cmd(4.0, phase=2, action="hold", valid=6.0))
    assert at_now.key == "dropped:stale"
    # 4.05 s is floored to the tenth 4.0: the same
    assert c.receive(cmd(4.05, phase=2, action="hold", valid=6.0)).key == "dropped:stale"
    assert c.mode is Mode.OWN_PLAN and c.counts["fallback:silence"] == 0
    # one tenth of validity left: accepted, and the own plan is back a tenth later
    assert c.receive(cmd(4.1, phase=2, action="hold", valid=6.0)).key == "accepted:hold"
    assert c.mode is Mode.ADAPTIVE
    ev = rel(c.step(T0 + 10.1))
    assert ev == [(10.0, PATTERN_CHANGE, 3)]
    assert c.mode is Mode.OWN_PLAN and c.counts["fallback:silence"] == 1
    assert rel(c.step(T0 + 10.2)) == [(10.1, PATTERN_CHANGE, 1)]


def pattern_changes(events: list[RawEvent]) -> list[tuple[float, int, int]]:
    return [e for e in rel(events) if e[1] == PATTERN_CHANGE]


def test_a_mode_change_undone_in_the_same_tenth_logs_no_131() -> None:
    c = make()
    log = c.step(T0 + 1.0)
    c.receive(cmd(1.0, phase=2, action="hold"))
    c.receive(cmd(1.0, "fallback"))
    assert c.mode is Mode.OWN_PLAN
    log += c.step(T0 + 1.0)  # the tenth is not over yet: its mode may still change
    log += c.step(T0 + 30.0)
    assert pattern_changes(log) == [(0.0, PATTERN_CHANGE, 1)]
    assert greens(log)[0] == (2, 20.0)  # the own plan throughout


def test_one_131_per_tenth_with_the_final_mode() -> None:
    # at start: the start's 131 reports the mode the first tenth ends in
    c = make()
    assert rel(c.step(T0)) == [(0.0, BEGIN_GREEN, 2)]  # its 131 waits for the tenth's end
    c.receive(cmd(0.0, "plan", greens_s={"2": 10.0, "4": 30.0}))
    c.receive(cmd(0.0, phase=2, action="hold"))
    assert rel(c.step(T0 + 1.0)) == [(0.0, PATTERN_CHANGE, 3)]
    assert pattern_changes(c.step(T0 + 5.0)) == []
    # a command expires and the next one comes in the same tenth: no change at all
    c = make()
    log = c.step(T0 + 1.0)
    c.receive(cmd(1.0, phase=2, action="hold", valid=6.0))
    log += c.step(T0 + 7.0)  # expired at 7.0: own plan, for now
    assert c.mode is Mode.OWN_PLAN and c.counts["fallback:silence"] == 1
    c.receive(cmd(7.0, phase=2, action="hold", valid=6.0))
    log += c.step(T0 + 12.0)
    assert pattern_changes(log) == [(0.0, PATTERN_CHANGE, 1), (1.0, PATTERN_CHANGE, 3)]
    # every 131 has a tenth of its own, and the log stays in time order
    stamps = [e.ts_ds for e in log]
    assert stamps == sorted(stamps)
    log += c.step(T0 + 20.0)
    assert pattern_changes(log)[-1] == (13.0, PATTERN_CHANGE, 1)
