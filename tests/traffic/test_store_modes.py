"""Event 131 (coordination pattern change): accepted by cleaning, read as a control mode,
and ignored by every measure."""

from __future__ import annotations

from cityops.traffic.events import (
    COORD_PATTERN_CHANGE,
    KNOWN_CODES,
    Event,
    ModeChange,
    clean,
    mode_changes,
)
from cityops.traffic.measures import detector_health, phase_measures
from tests.traffic.factories import config, ev, phase2_log


def _with_modes() -> list[Event]:
    # 131 with parameters 1..3 and 7; params 2 and 4 are also phase numbers of the config,
    # which must not make them phase events.
    extra = [ev(0, 131, 1), ev(30, 131, 3), ev(61, 131, 2), ev(90, 131, 7), ev(100, 131, 4)]
    return sorted(phase2_log() + extra, key=lambda e: e.ts)


def test_131_is_a_known_code_and_passes_cleaning() -> None:
    assert COORD_PATTERN_CHANGE == 131 and 131 in KNOWN_CODES
    cleaned = clean(_with_modes(), config())
    assert cleaned.flags == ()
    assert sum(1 for e in cleaned.events if e.code == 131) == 5


def test_measures_ignore_131() -> None:
    plain = clean(phase2_log(), config()).events
    mixed = clean(_with_modes(), config()).events
    assert phase_measures(mixed, config(), 0, 900) == phase_measures(plain, config(), 0, 900)
    assert detector_health(mixed, config(), 0, 900) == detector_health(plain, config(), 0, 900)


def test_mode_changes_map_patterns_to_modes() -> None:
    assert mode_changes(_with_modes()) == (
        ModeChange(0, 1, "fixed"),
        ModeChange(30, 3, "adaptive"),
        ModeChange(61, 2, "plan"),
        ModeChange(90, 7, "unknown"),
        ModeChange(100, 4, "unknown"),
    )
