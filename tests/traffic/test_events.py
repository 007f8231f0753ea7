"""Cleaning flags every bad event with a reason and keeps the rest in order."""

from __future__ import annotations

import pytest

from cityops.traffic.events import DetectorConfig, PhaseConfig, Problem, clean
from tests.traffic.factories import ADVANCE, config, ev, phase2_log


def test_a_clean_log_passes_unchanged() -> None:
    log = phase2_log()
    cleaned = clean(log, config())
    assert cleaned.events == tuple(log)
    assert cleaned.flags == ()


def test_every_kind_of_bad_event_is_flagged_not_counted() -> None:
    log = [
        ev(10, 1, 2),
        ev(11, 82, ADVANCE),
        ev(11, 82, ADVANCE),  # duplicate
        ev(12, 82, 77),  # unknown detector
        ev(12, 1, 6),  # phase 6 is not registered
        ev(12, 250, 1),  # not an accepted Indiana code
        ev(9, 81, ADVANCE),  # earlier than 12: out of order
        ev(12, 81, ADVANCE),  # same tenth as the latest: in order
    ]
    cleaned = clean(log, config())
    assert cleaned.events == (log[0], log[1], log[7])
    assert [(f.index, f.problem) for f in cleaned.flags] == [
        (2, Problem.DUPLICATE),
        (3, Problem.UNKNOWN_DETECTOR),
        (4, Problem.UNKNOWN_PHASE),
        (5, Problem.IMPOSSIBLE_CODE),
        (6, Problem.OUT_OF_ORDER),
    ]
    assert all(f.reason for f in cleaned.flags)
    assert "77" in cleaned.flags[1].reason
    assert cleaned.count(Problem.DUPLICATE) == 1


def test_registry_rows_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown phase"):
        type(config()).of("x", [PhaseConfig(2, 1)], [DetectorConfig(1, 3, "stop_bar")])
    with pytest.raises(ValueError, match="outside"):
        PhaseConfig(17, 1)
    with pytest.raises(ValueError, match="negative"):
        DetectorConfig(1, 2, "advance", 1, -1.0)
