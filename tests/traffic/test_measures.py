"""Every measure on the hand-built log of `factories.phase2_log`, answers worked by hand."""

from __future__ import annotations

import pytest

from cityops.traffic.events import ControllerConfig, DetectorConfig, PhaseConfig
from cityops.traffic.measures import (
    arrival_detectors,
    arrivals,
    cycles,
    detector_health,
    occupancy_intervals,
    pedestrian_waits,
    phase_measures,
    split_failures,
)
from tests.traffic.factories import ADVANCE, STOP_BAR, config, ev, phase2_log

SPEED = 36.0  # km/h = 10 m/s: the advance detector's 50 m take 5 s


def test_cycles_green_yellow_red_and_termination() -> None:
    cs = cycles(phase2_log(), 2)
    assert [(c.green_start, c.green_end, c.red_start, c.end, c.termination) for c in cs] == [
        (0, 20, 23, 60, 4),
        (60, 80, 83, 120, 5),
    ]  # the cycle begun at 120 s is incomplete
    assert cs[0].red_clearance == (23, 25)
    assert cs[0].green_s == 20


def test_a_cycle_missing_its_yellow_is_not_used() -> None:
    log = [ev(0, 1, 2), ev(20, 8, 2), ev(60, 1, 2), ev(80, 8, 2), ev(83, 9, 2), ev(120, 1, 2)]
    assert [c.green_start for c in cycles(log, 2)] == [60]


def test_arrivals_are_moved_to_the_stop_line() -> None:
    assert arrival_detectors(config(), 2)[0].channel == ADVANCE
    assert arrivals(phase2_log(), config(), 2, SPEED) == [7, 15, 21, 35, 55, 75, 123]


def test_split_failure_needs_both_occupancies_above_079() -> None:
    occ = split_failures(phase2_log(), config(), 2)
    assert occ is not None
    first, second = occ
    # cycle 1: green 0-20 occupied 0-17 and 18-20 = 19 s; red 23-28 occupied 23.5-28
    assert first.gor == pytest.approx(0.95) and first.ror5 == pytest.approx(0.9)
    assert first.failed
    # cycle 2: green 60-80 occupied 60-62; red 83-88 free
    assert second.gor == pytest.approx(0.1) and second.ror5 == 0
    assert not second.failed
    assert split_failures(phase2_log(), config(), 4) is None  # no stop bar


def test_pedestrian_delay_from_first_call_to_walk() -> None:
    waits = pedestrian_waits(phase2_log(), config())
    assert [(w.phase, w.call_ts, w.walk_ts, w.delay_s) for w in waits] == [
        (2, 30, 60, 30),  # the push at 40 s joins the call from 30 s
        (2, None, 120, None),  # a walk on recall
    ]


def test_phase_measures_per_bin() -> None:
    bins = phase_measures(phase2_log(), config(), 0, 130, speed_kmh=SPEED)
    assert [(b.phase, b.bin_start) for b in bins] == [(2, 0), (4, 0)]
    b = bins[0]
    assert b.volume == 7  # 123 s is outside any complete cycle, still counted
    assert b.arrivals_in_cycles == 6
    assert b.arrivals_on_green == 3  # 7, 15, 75 (21 is in yellow)
    assert b.pct_aog == pytest.approx(0.5)
    assert b.green_share == pytest.approx(40 / 120)
    assert b.platoon_ratio == pytest.approx(1.5)
    assert b.arrivals_on_red == 2  # 35 waits 25 s, 55 waits 5 s
    assert b.delay_total_s == pytest.approx(30)
    assert b.delay_per_vehicle_s == pytest.approx(5)
    assert (b.cycles, b.split_failures) == (2, 1)
    assert (b.gap_outs, b.max_outs, b.force_offs, b.other_terminations) == (1, 1, 0, 0)
    assert b.mean_green_s == 20
    # stop bar on at 21 (yellow), 23.5 (red clearance and red), 100 (red)
    assert (b.yellow_actuations, b.red_clearance_actuations, b.red_actuations) == (1, 1, 2)
    assert (b.ped_walks, b.ped_calls_served) == (2, 1)
    assert b.ped_delay_mean_s == 30 and b.ped_delay_max_s == 30
    empty = bins[1]
    assert (empty.volume, empty.cycles, empty.split_failures) == (0, 0, None)
    assert empty.pct_aog is None and empty.platoon_ratio is None and empty.mean_green_s is None


def test_bins_split_cycles_and_arrivals_at_their_boundary() -> None:
    bins = phase_measures(phase2_log(), config(), 0, 120, speed_kmh=SPEED, bin_s=60)
    first, second = bins[0], bins[1]
    assert (first.bin_start, second.bin_start) == (0, 60)
    assert (first.volume, second.volume) == (5, 1)  # 123 s is after the period
    assert (first.arrivals_on_green, second.arrivals_on_green) == (2, 1)
    assert first.green_share == pytest.approx(20 / 60)
    assert (first.split_failures, second.split_failures) == (1, 0)
    # the walk at 60 s belongs to the second bin
    assert (first.ped_walks, second.ped_walks) == (0, 1)


def test_without_advance_detectors_the_stop_bar_counts() -> None:
    cfg = ControllerConfig.of(
        "c", [PhaseConfig(2, 1)], [DetectorConfig(STOP_BAR, 2, "stop_bar", 1)]
    )
    assert arrivals(phase2_log(), cfg, 2) == [0, 18, 21, 23.5, 100]


def test_detector_health() -> None:
    cfg = ControllerConfig.of(
        "c", [PhaseConfig(2, 1)],
        [DetectorConfig(c, 2, "stop_bar", c) for c in (1, 2, 3, 4)],
    )
    log = [ev(0, 82, 1), ev(5, 81, 4), ev(10, 82, 3), ev(11, 81, 3)]
    health = {h.channel: h for h in detector_health(log, cfg, 0, 3600)}
    assert health[1].status == "stuck_on" and health[1].longest_on_s == 3600
    assert health[2].status == "no_activity" and health[2].actuations == 0
    assert health[3].status == "ok" and health[3].actuations == 1
    assert health[4].status == "ok" and health[4].longest_on_s == 5  # on at the start
    short = {h.channel: h.status for h in detector_health(log, cfg, 0, 900)}
    assert short[2] == "ok"  # 15 quiet minutes are no evidence of a fault
    assert short[1] == "stuck_on"


def test_occupancy_ignores_repeated_edges() -> None:
    log = [ev(1, 82, 1), ev(2, 82, 1), ev(3, 81, 1), ev(4, 81, 1)]
    assert occupancy_intervals(log, [1], 0, 10) == {1: [(1, 3)]}


def test_bad_period_and_speed() -> None:
    with pytest.raises(ValueError, match="end"):
        phase_measures([], config(), 10, 10)
    with pytest.raises(ValueError, match="speed"):
        arrivals([], config(), 2, 0)
