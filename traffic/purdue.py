"""Purdue coordination diagram of one phase: pure, over a clean event log.

Each complete cycle of the phase (begin green to the next begin green, as in `measures`)
is a column at its start time; each stop-line arrival (`measures.arrivals`) is a point at
(cycle start, seconds since the cycle's begin green). The cycle's green runs from 0 to
`green_s`, yellow to `yellow_end_s`, red to `length_s`. Arrivals outside any complete
cycle are left out (they have no position in a cycle).

A good progression shows the points in the green band: platoons released upstream arrive
while the phase is green.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from .events import ControllerConfig, Event
from .measures import DEFAULT_SPEED_KMH, arrivals, cycles

__all__ = ["PurdueArrival", "PurdueCycle", "PurdueDiagram", "purdue"]


@dataclass(frozen=True, slots=True)
class PurdueCycle:
    start: float  # begin green, epoch seconds
    green_s: float
    yellow_end_s: float
    length_s: float


@dataclass(frozen=True, slots=True)
class PurdueArrival:
    ts: float  # at the stop line, epoch seconds
    cycle_start: float
    offset_s: float  # seconds since the cycle's begin green
    on_green: bool


@dataclass(frozen=True, slots=True)
class PurdueDiagram:
    phase: int
    cycles: tuple[PurdueCycle, ...]
    arrivals: tuple[PurdueArrival, ...]

    @property
    def pct_on_green(self) -> float | None:
        if not self.arrivals:
            return None
        return sum(1 for a in self.arrivals if a.on_green) / len(self.arrivals)


def purdue(
    events: Sequence[Event], config: ControllerConfig, phase: int, start: float, end: float,
    *, speed_kmh: float = DEFAULT_SPEED_KMH,
) -> PurdueDiagram:
    """The diagram of the cycles beginning green in `[start, end)` and their arrivals."""
    if phase not in config.phases:
        raise ValueError(f"{config.controller_id} has no phase {phase}")
    cs = [c for c in cycles(events, phase) if start <= c.green_start < end]
    out_cycles = tuple(
        PurdueCycle(c.green_start, c.green_s, c.red_start - c.green_start,
                    c.end - c.green_start)
        for c in cs
    )
    starts = [c.green_start for c in cs]
    points = []
    for t in arrivals(events, config, phase, speed_kmh):
        i = bisect.bisect_right(starts, t) - 1
        if i < 0 or t >= cs[i].end:
            continue
        c = cs[i]
        points.append(PurdueArrival(t, c.green_start, t - c.green_start, t < c.green_end))
    return PurdueDiagram(phase, out_cycles, tuple(points))
