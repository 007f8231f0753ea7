"""Hand-built event logs for the traffic tests."""

from __future__ import annotations

from cityops.traffic.events import ControllerConfig, DetectorConfig, Event, PhaseConfig

STOP_BAR, ADVANCE, PED = 1, 2, 9


def config() -> ControllerConfig:
    """Phase 2 with a stop bar (1), an advance detector 50 m upstream (2) and a push
    button (9); phase 4 without any detector."""
    return ControllerConfig.of(
        "c1",
        [PhaseConfig(2, 1, "NS", yellow_s=3.0, red_clearance_s=2.0),
         PhaseConfig(4, 2, "EW", yellow_s=3.0, red_clearance_s=2.0)],
        [DetectorConfig(STOP_BAR, 2, "stop_bar", 1, 0.0),
         DetectorConfig(ADVANCE, 2, "advance", 1, 50.0),
         DetectorConfig(PED, 2, "pedestrian", None, 0.0)],
    )


def ev(ts: float, code: int, param: int) -> Event:
    return Event(ts, code, param)


def phase2_log() -> list[Event]:
    """Two complete cycles of phase 2 (0-60 and 60-120 s, green 20 s, yellow 20-23,
    red clearance 23-25) and the begin green of a third at 120 s.

    Advance detector (arrival = on + 5 s at 36 km/h): on at 2, 10, 16, 30, 50, 70, 118.
    Stop bar: occupied 0-17, 18-20, 21-21.5 (yellow), 23.5-62 (red clearance), 100-101.
    Pedestrians: call 45 at 30, push button 90 at 40, walk 21 at 60; walk 21 at 120.
    """
    log = [
        # cycle 1: gap-out
        ev(0, 1, 2), ev(20, 4, 2), ev(20, 7, 2), ev(20, 8, 2), ev(23, 9, 2), ev(23, 10, 2),
        ev(25, 11, 2),
        # cycle 2: max-out
        ev(60, 1, 2), ev(80, 5, 2), ev(80, 7, 2), ev(80, 8, 2), ev(83, 9, 2), ev(83, 10, 2),
        ev(85, 11, 2),
        ev(120, 1, 2),
        ev(0, 82, STOP_BAR), ev(17, 81, STOP_BAR), ev(18, 82, STOP_BAR), ev(20, 81, STOP_BAR),
        ev(21, 82, STOP_BAR), ev(21.5, 81, STOP_BAR), ev(23.5, 82, STOP_BAR),
        ev(62, 81, STOP_BAR), ev(100, 82, STOP_BAR), ev(101, 81, STOP_BAR),
        ev(30, 45, 2), ev(40, 90, PED), ev(40.5, 89, PED), ev(60, 21, 2), ev(120, 21, 2),
    ]
    for t in (2, 10, 16, 30, 50, 70, 118):
        log += [ev(t, 82, ADVANCE), ev(t + 0.5, 81, ADVANCE)]
    return sorted(log, key=lambda e: e.ts)
