"""Indiana high-resolution controller events, the controller's registry, and input cleaning.

Everything here is pure. Times are seconds since the Unix epoch (UTC) as floats: the
controllers log to a tenth of a second and the measures only add, subtract and compare.

Cleaning never drops an event silently: every event it keeps out of the measures comes
back as a `Flag` with a `Problem` and a human reason, so the caller can count, log or
store them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

__all__ = [
    "BEGIN_GREEN",
    "BEGIN_RED_CLEARANCE",
    "BEGIN_WALK",
    "BEGIN_YELLOW",
    "CONTROL_MODES",
    "COORD_PATTERN_CHANGE",
    "DETECTOR_OFF",
    "DETECTOR_ON",
    "END_GREEN",
    "END_RED_CLEARANCE",
    "END_YELLOW",
    "FORCE_OFF",
    "GAP_OUT",
    "KNOWN_CODES",
    "MAX_OUT",
    "PED_CALL",
    "PED_DETECTOR_OFF",
    "PED_DETECTOR_ON",
    "Cleaned",
    "ControllerConfig",
    "DetectorConfig",
    "DetectorKind",
    "Event",
    "Flag",
    "ModeChange",
    "PhaseConfig",
    "Problem",
    "clean",
    "mode_changes",
]

# Phase events (parameter: phase number).
PHASE_ON = 0
BEGIN_GREEN = 1
PHASE_CHECK = 2
MIN_COMPLETE = 3
GAP_OUT = 4
MAX_OUT = 5
FORCE_OFF = 6
END_GREEN = 7  # "phase green termination"
BEGIN_YELLOW = 8
END_YELLOW = 9
BEGIN_RED_CLEARANCE = 10
END_RED_CLEARANCE = 11
PHASE_INACTIVE = 12
# Pedestrian phase events (parameter: phase number).
BEGIN_WALK = 21
BEGIN_PED_CLEARANCE = 22
BEGIN_DONT_WALK = 23
# Calls (parameter: phase number).
PHASE_CALL = 43
PHASE_CALL_DROPPED = 44
PED_CALL = 45
PED_CALL_DROPPED = 46
# Detector events (parameter: detector channel).
DETECTOR_OFF = 81
DETECTOR_ON = 82
PED_DETECTOR_OFF = 89
PED_DETECTOR_ON = 90
# Coordination (parameter: pattern number). Our controllers report their control mode
# with it: 1 own fixed-time plan (fallback), 2 plan received by command, 3 adaptive.
COORD_PATTERN_CHANGE = 131

_PHASE_PARAM_CODES = frozenset(
    {
        PHASE_ON, BEGIN_GREEN, PHASE_CHECK, MIN_COMPLETE, GAP_OUT, MAX_OUT, FORCE_OFF,
        END_GREEN, BEGIN_YELLOW, END_YELLOW, BEGIN_RED_CLEARANCE, END_RED_CLEARANCE,
        PHASE_INACTIVE, BEGIN_WALK, BEGIN_PED_CLEARANCE, BEGIN_DONT_WALK, PHASE_CALL,
        PHASE_CALL_DROPPED, PED_CALL, PED_CALL_DROPPED,
    }
)
_DETECTOR_PARAM_CODES = frozenset({DETECTOR_OFF, DETECTOR_ON, PED_DETECTOR_OFF, PED_DETECTOR_ON})

#: The Indiana codes this platform accepts; any other code is flagged `IMPOSSIBLE_CODE`.
#: Preemption, alarm and the other coordination codes are valid Indiana codes but no
#: controller of ours emits them; add them here together with a measure that reads them.
#: 131 (coordination pattern change) carries the control mode; the measures ignore it.
KNOWN_CODES = _PHASE_PARAM_CODES | _DETECTOR_PARAM_CODES | {COORD_PATTERN_CHANGE}

#: Control mode by the pattern number of event 131 (other patterns read as "unknown").
CONTROL_MODES: Mapping[int, str] = {1: "fixed", 2: "plan", 3: "adaptive"}

DetectorKind = Literal["stop_bar", "advance", "count", "pedestrian"]


@dataclass(frozen=True, slots=True)
class Event:
    """One controller event: `ts` in seconds since the epoch (UTC), Indiana `code`, `param`."""

    ts: float
    code: int
    param: int


@dataclass(frozen=True, slots=True)
class PhaseConfig:
    """A row of `signal_phases` (times in seconds)."""

    phase: int
    seq: int
    movement: str = ""
    min_green_s: float = 5.0
    max_green_s: float = 60.0
    fixed_green_s: float = 20.0
    yellow_s: float = 3.0
    red_clearance_s: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.phase <= 16:
            raise ValueError(f"phase {self.phase} outside 1..16")
        if self.min_green_s <= 0 or self.max_green_s < self.min_green_s:
            raise ValueError(f"phase {self.phase}: need 0 < min_green_s <= max_green_s")


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """A row of `signal_detectors`: `distance_m` is measured upstream of the stop line."""

    channel: int
    phase: int
    kind: DetectorKind
    lane: int | None = None
    distance_m: float = 0.0

    def __post_init__(self) -> None:
        if self.distance_m < 0:
            raise ValueError(f"detector {self.channel}: negative distance_m")


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """A controller's phases and detectors, keyed by phase number and detector channel."""

    controller_id: str
    phases: Mapping[int, PhaseConfig]
    detectors: Mapping[int, DetectorConfig]

    @classmethod
    def of(
        cls, controller_id: str, phases: Iterable[PhaseConfig],
        detectors: Iterable[DetectorConfig],
    ) -> ControllerConfig:
        ph = {p.phase: p for p in phases}
        det = {d.channel: d for d in detectors}
        for d in det.values():
            if d.phase not in ph:
                raise ValueError(f"detector {d.channel} serves unknown phase {d.phase}")
        return cls(controller_id, ph, det)

    def detectors_of(self, phase: int, kind: DetectorKind) -> tuple[DetectorConfig, ...]:
        return tuple(
            d for _, d in sorted(self.detectors.items())
            if d.phase == phase and d.kind == kind
        )


class Problem(StrEnum):
    """Why an event was kept out of the measures."""

    IMPOSSIBLE_CODE = "impossible_code"
    UNKNOWN_PHASE = "unknown_phase"
    UNKNOWN_DETECTOR = "unknown_detector"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"


@dataclass(frozen=True, slots=True)
class Flag:
    """A rejected event, its position in the input and the reason."""

    index: int
    event: Event
    problem: Problem
    reason: str


@dataclass(frozen=True, slots=True)
class Cleaned:
    """The events fit for the measures, in time order, and the flagged rest."""

    events: tuple[Event, ...]
    flags: tuple[Flag, ...]

    def count(self, problem: Problem) -> int:
        return sum(1 for f in self.flags if f.problem is problem)


def clean(events: Iterable[Event], config: ControllerConfig) -> Cleaned:
    """Split events, in the order received, into clean ones and flagged ones.

    Checks, first failing one wins:

    * `IMPOSSIBLE_CODE`: the code is not in `KNOWN_CODES`;
    * `UNKNOWN_PHASE`: a phase, pedestrian or call event for a phase not in the registry;
    * `UNKNOWN_DETECTOR`: a detector event (81/82, 89/90) for a channel not in the registry;
    * `DUPLICATE`: the same (ts, code, param) as an event already accepted;
    * `OUT_OF_ORDER`: earlier than an event already accepted (equal times are in order:
      the controller logs several events in the same tenth of a second).

    Out-of-order events are not re-sorted in: a late phase or detector event would change
    intervals already measured, so it is reported instead.
    """
    kept: list[Event] = []
    flags: list[Flag] = []
    seen: set[tuple[float, int, int]] = set()
    latest = float("-inf")
    for i, ev in enumerate(events):
        problem, reason = _check(ev, config, seen, latest)
        if problem is not None:
            flags.append(Flag(i, ev, problem, reason))
            continue
        kept.append(ev)
        seen.add((ev.ts, ev.code, ev.param))
        latest = ev.ts
    return Cleaned(tuple(kept), tuple(flags))


def _check(
    ev: Event, config: ControllerConfig, seen: set[tuple[float, int, int]], latest: float
) -> tuple[Problem | None, str]:
    if ev.code not in KNOWN_CODES:
        return Problem.IMPOSSIBLE_CODE, f"code {ev.code} is not an accepted Indiana event code"
    if ev.code in _PHASE_PARAM_CODES and ev.param not in config.phases:
        return Problem.UNKNOWN_PHASE, (
            f"code {ev.code} for phase {ev.param}, which {config.controller_id} does not have"
        )
    if ev.code in _DETECTOR_PARAM_CODES and ev.param not in config.detectors:
        return Problem.UNKNOWN_DETECTOR, (
            f"code {ev.code} for detector channel {ev.param}, not registered for "
            f"{config.controller_id}"
        )
    if (ev.ts, ev.code, ev.param) in seen:
        return Problem.DUPLICATE, f"code {ev.code} param {ev.param} at {ev.ts} already received"
    if ev.ts < latest:
        return Problem.OUT_OF_ORDER, f"at {ev.ts}, after an event at {latest} was received"
    return None, ""


@dataclass(frozen=True, slots=True)
class ModeChange:
    """The controller entered `mode` (see `CONTROL_MODES`) at `ts`, by event 131 `pattern`."""

    ts: float
    pattern: int
    mode: str


def mode_changes(events: Iterable[Event]) -> tuple[ModeChange, ...]:
    """Every coordination pattern change (131) as a control mode, in the order given.

    Repeats of the same pattern are kept: the controller emits 131 at start as well as on
    every change, and a restart in the same mode is worth seeing in the history.
    """
    return tuple(
        ModeChange(ev.ts, ev.param, CONTROL_MODES.get(ev.param, "unknown"))
        for ev in events
        if ev.code == COORD_PATTERN_CHANGE
    )
