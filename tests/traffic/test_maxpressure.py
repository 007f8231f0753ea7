"""Max-pressure decisions on hand-made event sequences with known answers."""

from __future__ import annotations

import pytest

from cityops.traffic.events import ControllerConfig, DetectorConfig, Event, PhaseConfig
from cityops.traffic.maxpressure import ControllerState, ControlParams, Link, decide, pressures

# Phase 2 (NS) lane 1: stop bar 1, advance 2 at 70 m; phase 4 (EW) lane 1: stop bar 3,
# advance 4 at 70 m. At 50 km/h the advance-to-line time is 5.04 s, so a vehicle that
# passed the advance detector more than 1.5 x 5.04 + 3 = 10.56 s ago is at the line.
SB2, ADV2, SB4, ADV4 = 1, 2, 3, 4


def config(*, extra: tuple[DetectorConfig, ...] = ()) -> ControllerConfig:
    return ControllerConfig.of(
        "c1",
        [
            PhaseConfig(2, 1, "NS", min_green_s=5, max_green_s=60, yellow_s=3, red_clearance_s=2),
            PhaseConfig(4, 2, "EW", min_green_s=5, max_green_s=60, yellow_s=3, red_clearance_s=2),
        ],
        [
            DetectorConfig(SB2, 2, "stop_bar", 1, 0.0),
            DetectorConfig(ADV2, 2, "advance", 1, 70.0),
            DetectorConfig(SB4, 4, "stop_bar", 1, 0.0),
            DetectorConfig(ADV4, 4, "advance", 1, 70.0),
            *extra,
        ],
    )


def ev(ts: float, code: int, param: int) -> Event:
    return Event(ts, code, param)


def car(ts: float, channel: int, dwell: float = 0.5) -> list[Event]:
    return [ev(ts, 82, channel), ev(ts + dwell, 81, channel)]


def state(params: ControlParams | None = None) -> ControllerState:
    s = ControllerState(config(), params)
    s.observe([ev(0.0, 131, 3), ev(0.0, 1, 2)])
    return s


def queue(s: ControllerState, phase: int, now: float) -> float:
    return sum(q.queue for q in s.lane_queues(now).values() if q.phase == phase)


def test_counts_in_minus_out_and_the_standing_queue_keeps_them() -> None:
    s = state()
    # three vehicles pass phase 4's advance detector during phase 2's green; the first
    # one stops on the stop bar at 6 s and stays (red)
    s.observe([*car(1.0, ADV4), *car(2.5, ADV4), *car(4.0, ADV4), ev(6.0, 82, SB4)])
    assert queue(s, 4, 6.0) == 3
    # long after the advance-to-line window the occupied stop bar keeps the count
    assert queue(s, 4, 40.0) == 3
    assert s.controller_mode == 3 and s.green_phase == 2 and s.green_start == 0.0


def test_departures_over_the_stop_bar_empty_the_lane() -> None:
    s = state()
    s.observe([*car(1.0, ADV2), *car(2.0, ADV2), *car(6.0, SB2), *car(7.0, SB2)])
    assert queue(s, 2, 7.5) == 0


def test_drift_is_cut_when_the_stop_bar_stays_free() -> None:
    s = state()
    # four vehicles counted in, none seen leaving (a missed pulse, or they turned off)
    s.observe([*car(1.0, ADV4), *car(2.0, ADV4), *car(3.0, ADV4), *car(12.0, ADV4)])
    # the stop bar has been free since the start: only vehicles of the last 10.56 s may
    # still be on their way (at 13 s those of 3 and 12 s, at 14 s that of 12 s)
    assert queue(s, 4, 13.0) == 2
    assert queue(s, 4, 14.0) == 1
    assert queue(s, 4, 30.0) == 0


def test_queue_never_exceeds_storage_and_spillback_fills_it() -> None:
    s = state()
    cars = [e for i in range(15) for e in car(1.0 + i, ADV4)]
    s.observe([ev(0.5, 82, SB4), *cars])
    assert queue(s, 4, 16.0) == 10  # 70 m / 7 m
    s2 = state()
    s2.observe([ev(0.5, 82, SB4), *car(1.0, ADV4), ev(3.0, 82, ADV4)])
    assert queue(s2, 4, 4.0) == 2
    assert queue(s2, 4, 7.5) == 10  # occupied 4.5 s: the queue reaches the detector


def test_decisions_follow_min_green_pressure_and_max_green() -> None:
    s = state()
    s.observe([ev(0.5, 82, SB4), *car(1.0, ADV4), *car(2.0, ADV4), *car(3.0, ADV4)])
    # phase 2 empty, phase 4 has 3 vehicles: still inside min green
    d = decide(s, 4.0)
    assert d is not None and (d.action, d.phase) == ("hold", 2) and "min green" in d.reason
    d = decide(s, 5.0)
    assert d is not None and (d.action, d.phase) == ("advance", 2)
    assert d.pressures == {2: 0.0, 4: 3.0}


def test_hold_while_the_difference_is_below_the_threshold() -> None:
    s = state(ControlParams(threshold=2.0))
    s.observe(
        [ev(0.5, 82, SB2), ev(0.5, 82, SB4), *car(1.0, ADV2), *car(1.5, ADV4), *car(2.0, ADV4)]
    )
    d = decide(s, 6.0)
    assert d is not None and d.action == "hold" and d.pressures == {2: 1.0, 4: 2.0}
    s.observe(car(6.5, ADV4))
    d = decide(s, 7.0)
    assert d is not None and d.action == "advance" and d.pressures == {2: 1.0, 4: 3.0}


def test_max_green_advances_and_an_empty_intersection_rests() -> None:
    s = state()
    d = decide(s, 30.0)
    assert d is not None and d.action == "hold"  # nobody anywhere: rest in green
    s.observe([ev(30.5, 82, SB2), *[e for i in range(8) for e in car(31.0 + i, ADV2)]])
    s.observe([ev(40.0, 82, SB4), *car(41.0, ADV4)])
    d = decide(s, 59.9)
    assert d is not None and d.action == "hold"
    d = decide(s, 60.0)
    assert d is not None and d.action == "advance" and "max green" in d.reason


def test_clearance_keeps_alive_for_the_next_phase_and_order_wraps() -> None:
    s = ControllerState(config())
    assert decide(s, 0.0) is None  # no phase seen yet
    s.observe([ev(0.0, 1, 4), ev(10.0, 7, 4), ev(10.0, 8, 4)])
    d = decide(s, 11.0)
    assert d is not None and (d.action, d.phase) == ("hold", 2)
    s.observe([ev(13.0, 9, 4), ev(13.0, 10, 4), ev(15.0, 11, 4), ev(15.0, 1, 2)])
    assert s.green_phase == 2 and s.green_start == 15.0


def test_downstream_queue_lowers_the_pressure() -> None:
    up, down = (
        state(),
        ControllerState(
            ControllerConfig.of("c2", config().phases.values(), config().detectors.values())
        ),
    )
    down.observe([ev(0.0, 1, 2)])
    # phase 4 of c1 has 3 waiting; they go into c2's phase 4 lane, where 3 already wait
    up.observe([ev(0.5, 82, SB4), *car(1.0, ADV4), *car(2.0, ADV4), *car(3.0, ADV4)])
    down.observe([ev(0.5, 82, SB4), *car(1.0, ADV4), *car(2.0, ADV4), *car(3.0, ADV4)])
    links = [Link("c1", ADV4, "c2", SB4, share=1.0)]
    keys = {("c2", SB4): (4, 1)}
    p = pressures(up, 6.0, links, {"c2": down.lane_queues(6.0)}, keys)
    assert p == {2: 0.0, 4: 0.0}
    d = decide(up, 6.0, links, {"c2": down.lane_queues(6.0)}, keys)
    # the green phase is empty and phase 4 has vehicles: still advance (rule 4)
    assert d is not None and d.action == "advance"
    half = [Link("c1", ADV4, "c2", SB4, share=0.5)]
    assert pressures(up, 6.0, half, {"c2": down.lane_queues(6.0)}, keys)[4] == 1.5
    # without topology the downstream queue counts as 0
    assert pressures(up, 6.0)[4] == 3.0


def _c2() -> ControllerState:
    s = ControllerState(
        ControllerConfig.of("c2", config().phases.values(), config().detectors.values())
    )
    s.observe([ev(0.0, 1, 2)])
    return s


def test_a_congested_downstream_approach_changes_the_decision() -> None:
    # c1: phase 2 green since 0 with 2 waiting, phase 4 with 5 waiting -> by queues alone
    # phase 4 wins by 3 >= threshold 2
    traffic = sorted(
        [
            ev(0.5, 82, SB2),
            ev(0.5, 82, SB4),
            *car(1.0, ADV2),
            *car(2.0, ADV2),
            *[e for i in range(5) for e in car(1.0 + 0.8 * i, ADV4, dwell=0.3)],
        ],
        key=lambda e: e.ts,
    )
    links = [Link("c1", SB4, "c2", SB4, share=1.0)]
    keys = {("c2", SB4): (4, 1)}
    free, jammed = _c2(), _c2()
    # c2's phase-4 lane, where c1's phase-4 vehicles go: one car waiting, or spilled back
    # (its advance detector occupied for over 4 s: the queue reaches it, 10 of 10)
    free.observe([ev(0.5, 82, SB4), *car(1.0, ADV4)])
    jammed.observe([ev(0.5, 82, SB4), ev(1.0, 82, ADV4)])
    for down, action in ((None, "advance"), (free, "advance"), (jammed, "hold")):
        up = state()
        up.observe(traffic)
        queues = {} if down is None else {"c2": down.lane_queues(6.0)}
        d = decide(up, 6.0, links, queues, keys)
        assert d is not None and d.action == action, (down, d)
    assert d.pressures == {2: 2.0, 4: 5.0 - 10.0}
    assert "downstream lanes are full" in d.reason
    # without links the same jam is invisible: longest queue first
    d = decide(up, 6.0)
    assert d is not None and d.action == "advance" and d.pressures == {2: 2.0, 4: 5.0}


def test_a_full_downstream_lane_holds_back_even_an_empty_green() -> None:
    # phase 2 green and empty; phase 4's one lane has 3 vehicles, all bound for c2's
    # phase-4 lane (halves over two links to the same lane count as the whole lane)
    links = [Link("c1", SB4, "c2", SB4, share=0.5), Link("c1", ADV4, "c2", SB4, share=0.5)]
    keys = {("c2", SB4): (4, 1)}
    jammed = _c2()
    jammed.observe([ev(0.5, 82, SB4), ev(1.0, 82, ADV4)])
    up = state()
    up.observe([ev(0.5, 82, SB4), *car(1.0, ADV4), *car(2.0, ADV4), *car(3.0, ADV4)])
    d = decide(up, 6.0, links, {"c2": jammed.lane_queues(6.0)}, keys)
    assert d is not None and d.action == "hold"
    # the jam clears (the advance detector frees, queue cut by the free stop bar):
    # the advance goes ahead
    jammed.observe([ev(6.5, 81, ADV4), ev(7.0, 81, SB4)])
    d = decide(up, 20.0, links, {"c2": jammed.lane_queues(20.0)}, keys)
    assert d is not None and d.action == "advance"
    # a lane only half bound for the full lane is not blocked
    half = links[:1]
    d = decide(up, 6.0, half, {"c2": _jam().lane_queues(6.0)}, keys)
    assert d is not None and d.action == "advance"


def _jam() -> ControllerState:
    s = _c2()
    s.observe([ev(0.5, 82, SB4), ev(1.0, 82, ADV4)])
    return s


def test_stuck_stop_bar_degrades_the_lane_to_inflow_with_saturation_discharge() -> None:
    p = ControlParams(stuck_on_s=20.0, stale_after_s=1000.0)
    s = state(p)
    s.observe([ev(1.0, 82, SB2), *car(2.0, ADV2), *car(3.0, ADV2), *car(4.0, ADV2)])
    lanes = s.lane_queues(25.0)
    assert lanes[(2, 1)].method == "inflow_only"
    assert s.unusable_detectors(25.0) == {SB2: "stuck_on"}
    # phase 2 green since 0: discharge of one vehicle per 2 s after 2 s lost time
    assert lanes[(2, 1)].queue == 0
    d = decide(s, 25.0)
    assert d is not None and d.action == "hold"  # degraded, not fallback: lane still usable


def test_a_phase_without_usable_detectors_sends_the_controller_to_fallback() -> None:
    p = ControlParams(stale_after_s=30.0)
    s = state(p)
    # phase 2's detectors report, phase 4's never do
    s.observe([e for i in range(5) for e in car(2.0 + 5 * i, ADV2) + car(4.0 + 5 * i, SB2)])
    d = decide(s, 29.0)
    assert d is not None and d.action != "fallback"
    d = decide(s, 30.0)
    assert d is not None and d.action == "fallback"
    assert "phase(s) [4]" in d.reason and "3 stale" in d.reason and "4 stale" in d.reason
    # one detector of phase 4 reports again: the phase is usable (presence) and control resumes
    s.observe(car(31.0, SB4, dwell=0.4))
    d = decide(s, 32.0)
    assert d is not None and d.action != "fallback"
    assert s.lane_queues(32.0)[(4, 1)].method == "presence"


def test_phase_without_any_detector_means_fallback() -> None:
    cfg = ControllerConfig.of(
        "c3", [PhaseConfig(2, 1), PhaseConfig(4, 2)], [DetectorConfig(1, 2, "stop_bar", 1)]
    )
    s = ControllerState(cfg)
    s.observe([ev(0.0, 1, 2)])
    d = decide(s, 10.0)
    assert d is not None and d.action == "fallback" and "no detectors" in d.reason


def test_presence_only_lanes_count_an_occupied_stop_bar_as_one() -> None:
    cfg = ControllerConfig.of(
        "c4",
        [PhaseConfig(2, 1), PhaseConfig(4, 2)],
        [DetectorConfig(1, 2, "stop_bar", 1), DetectorConfig(3, 4, "stop_bar", 1)],
    )
    s = ControllerState(cfg, ControlParams(threshold=1.0))
    s.observe([ev(0.0, 1, 2), ev(2.0, 82, 3)])
    assert queue(s, 4, 6.0) == 1 and queue(s, 2, 6.0) == 0
    d = decide(s, 6.0)
    assert d is not None and d.action == "advance"


def test_bad_events_are_ignored_and_counted() -> None:
    s = state()
    s.observe([*car(5.0, ADV4), ev(3.0, 82, ADV4), ev(6.0, 82, 99), ev(6.0, 1, 9)])
    assert s.ignored == 3
    assert s.lane_queues(6.0)[(4, 1)].queue == 1


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="stale_after_s must be positive"):
        ControlParams(stale_after_s=0)
    with pytest.raises(ValueError, match="share"):
        Link("a", 1, "b", 2, share=1.5)
