"""ATSPM-style performance measures: pure functions over a clean, time-ordered event log.

Pass events through `cityops.traffic.events.clean` first. Times are seconds since the
epoch; a bin is `[k * bin_s, (k + 1) * bin_s)` (15 minutes by default).

Definitions (per phase):

* **Cycle**: from a begin green (code 1) to the next begin green of the same phase. Its
  green lasts until green termination (7) or begin yellow (8), whichever comes first;
  its yellow until end of yellow (9); from there to the next begin green it is red
  (the red clearance 10..11 is part of that red). Only *complete* cycles (1, 7/8, 9 and
  the next 1, in that order) are used; a cycle belongs to the bin of its begin green.
* **Termination**: gap-out (4), max-out (5) or force-off (6) logged for the phase during
  its green (or at its end); none for a fixed-time controller.
* **Arrival**: a detector-on (82) on the phase's *arrival detectors*, moved to the stop
  line: `ts + distance_m / speed`. Arrival detectors are, by the first kind the phase
  has: per lane the farthest advance detector, else count detectors, else stop-bar
  detectors (distance 0). An arrival belongs to the bin of its stop-line time.
* **Volume**: the number of arrivals in the bin.
* **Arrival on green (AoG)**: an arrival inside the green of a complete cycle.
  `pct_aog` = AoG / arrivals inside complete cycles (arrivals outside any complete cycle
  count in the volume only).
* **Platoon ratio**: `pct_aog / green_share`, green_share = green seconds / seconds of
  complete cycles, both cut to the bin. 1 is random arrival; above 1 platoons on green.
* **Approach delay** (the simple ATSPM one): an arrival in the red of a cycle waits
  until the next begin green; arrivals in green or yellow wait 0. `delay_per_vehicle_s`
  = total delay / arrivals inside complete cycles.
* **Split failure**: a cycle whose green occupancy ratio (GOR, share of the green during
  which any stop-bar detector of the phase is occupied) and red occupancy ratio of the
  first 5 s of red (ROR5, likewise) are both above 0.79.
* **Split monitor**: per cycle the green duration and termination type; per bin the
  counts of gap-outs, max-outs, force-offs, others, and the mean green.
* **Yellow / red-clearance / red actuations**: detector-on events of the phase's stop-bar
  detectors during its yellow, its red clearance (10..11) and its whole red.
* **Pedestrian delay**: from the first pedestrian call (45 for the phase, or 90 on one of
  its pedestrian detectors) after the previous walk to the next begin walk (21); the walk
  time decides the bin. Walks without a call (recall) count as walks only.
* **Detector health** (over the analysed period): `stuck_on` when an occupancy (an open
  one lasts until the period's end) is at least `stuck_on_s`; `no_activity` when a
  detector logs no event at all (neither on nor off) in a period at least `quiet_s` long.

Everything is counted at the time it happens at the stop line and only inside the
period `[start, end)`: an arrival shifted past `end` is left to the next period.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .events import (
    BEGIN_GREEN,
    BEGIN_RED_CLEARANCE,
    BEGIN_WALK,
    BEGIN_YELLOW,
    DETECTOR_OFF,
    DETECTOR_ON,
    END_GREEN,
    END_RED_CLEARANCE,
    END_YELLOW,
    FORCE_OFF,
    GAP_OUT,
    MAX_OUT,
    PED_CALL,
    PED_DETECTOR_OFF,
    PED_DETECTOR_ON,
    ControllerConfig,
    DetectorConfig,
    Event,
)

__all__ = [
    "BIN_S",
    "SPLIT_FAILURE_THRESHOLD",
    "Cycle",
    "CycleOccupancy",
    "DetectorHealth",
    "PedestrianWait",
    "PhaseBin",
    "PhaseMeasures",
    "arrival_detectors",
    "arrivals",
    "cycles",
    "detector_health",
    "occupancy_intervals",
    "pedestrian_waits",
    "phase_measures",
    "split_failures",
]

BIN_S = 900.0
SPLIT_FAILURE_THRESHOLD = 0.79
ROR_WINDOW_S = 5.0
DEFAULT_SPEED_KMH = 50.0

Interval = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Cycle:
    """A complete cycle of one phase (see the module docstring)."""

    phase: int
    green_start: float
    green_end: float
    red_start: float
    end: float
    termination: int | None = None  # GAP_OUT, MAX_OUT, FORCE_OFF or None
    red_clearance: Interval | None = None

    @property
    def green_s(self) -> float:
        return self.green_end - self.green_start


@dataclass(frozen=True, slots=True)
class CycleOccupancy:
    cycle: Cycle
    gor: float
    ror5: float

    @property
    def failed(self) -> bool:
        return self.gor > SPLIT_FAILURE_THRESHOLD and self.ror5 > SPLIT_FAILURE_THRESHOLD


@dataclass(frozen=True, slots=True)
class PedestrianWait:
    phase: int
    walk_ts: float
    call_ts: float | None  # None: a walk without a call (recall)

    @property
    def delay_s(self) -> float | None:
        return None if self.call_ts is None else self.walk_ts - self.call_ts


@dataclass(frozen=True, slots=True)
class DetectorHealth:
    channel: int
    phase: int
    kind: str
    actuations: int
    longest_on_s: float
    status: Literal["ok", "stuck_on", "no_activity"]


@dataclass(frozen=True, slots=True)
class PhaseMeasures:
    """The measures of one phase in one bin, without the bin's time: the one list of them,
    shared by the pure value (`PhaseBin`) and the stored row (`repository.MeasureRow`),
    whose columns are these fields; ratios are None when undefined (0 / 0)."""

    phase: int
    volume: int
    arrivals_in_cycles: int
    arrivals_on_green: int
    pct_aog: float | None
    green_share: float | None
    platoon_ratio: float | None
    arrivals_on_red: int
    delay_total_s: float
    delay_per_vehicle_s: float | None
    cycles: int
    split_failures: int | None  # None: the phase has no stop-bar detector
    gap_outs: int
    max_outs: int
    force_offs: int
    other_terminations: int
    mean_green_s: float | None
    yellow_actuations: int
    red_clearance_actuations: int
    red_actuations: int
    ped_walks: int
    ped_calls_served: int
    ped_delay_mean_s: float | None
    ped_delay_max_s: float | None


@dataclass(frozen=True, slots=True)
class PhaseBin(PhaseMeasures):
    """The measures of one phase in one bin starting at `bin_start` (epoch seconds)."""

    bin_start: float


# -- building blocks ----------------------------------------------------------------------


@dataclass(slots=True)
class _Open:
    green_start: float
    green_end: float | None = None
    red_start: float | None = None
    termination: int | None = None
    rc_start: float | None = None
    rc_end: float | None = None


def cycles(events: Iterable[Event], phase: int) -> tuple[Cycle, ...]:
    """The complete cycles of `phase`, in order."""
    out: list[Cycle] = []
    cur: _Open | None = None
    for ev in events:
        if ev.param != phase:
            continue
        if ev.code == BEGIN_GREEN:
            if cur is not None and cur.green_end is not None and cur.red_start is not None:
                rc = None
                if cur.rc_start is not None and cur.rc_end is not None:
                    rc = (cur.rc_start, cur.rc_end)
                out.append(Cycle(phase, cur.green_start, cur.green_end, cur.red_start, ev.ts,
                                 cur.termination, rc))
            cur = _Open(ev.ts)
        elif cur is None:
            continue
        elif ev.code in (END_GREEN, BEGIN_YELLOW):
            if cur.green_end is None:
                cur.green_end = ev.ts
        elif ev.code in (GAP_OUT, MAX_OUT, FORCE_OFF):
            if cur.green_end is None or cur.green_end == ev.ts:
                cur.termination = ev.code
        elif ev.code == END_YELLOW:
            if cur.green_end is not None and cur.red_start is None:
                cur.red_start = ev.ts
        elif ev.code == BEGIN_RED_CLEARANCE:
            cur.rc_start = ev.ts
        elif ev.code == END_RED_CLEARANCE:
            cur.rc_end = ev.ts
    return tuple(out)


def occupancy_intervals(
    events: Iterable[Event], channels: Iterable[int], start: float, end: float,
    *, on: int = DETECTOR_ON, off: int = DETECTOR_OFF,
) -> dict[int, list[Interval]]:
    """Per channel, the occupied intervals within `[start, end]`.

    A leading off means the detector was on at `start`; a trailing on stays open until
    `end`. A repeated on (or off) is ignored: the first on opens, the first off closes.
    """
    wanted = set(channels)
    opened: dict[int, float | None] = dict.fromkeys(wanted)
    seen: set[int] = set()
    out: dict[int, list[Interval]] = {c: [] for c in wanted}
    for ev in events:
        if ev.param not in wanted or ev.code not in (on, off):
            continue
        ch = ev.param
        t0 = opened[ch]
        if ev.code == on:
            if t0 is None:
                opened[ch] = ev.ts
        elif t0 is not None:
            out[ch].append((t0, ev.ts))
            opened[ch] = None
        elif ch not in seen:
            out[ch].append((start, ev.ts))
        seen.add(ch)
    for ch, t in opened.items():
        if t is not None:
            out[ch].append((t, max(t, end)))
    return out


def _union(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _covered(intervals: Sequence[Interval], a: float, b: float) -> float:
    return sum(max(0.0, min(y, b) - max(x, a)) for x, y in intervals)


def arrival_detectors(config: ControllerConfig, phase: int) -> tuple[DetectorConfig, ...]:
    """The detectors whose detector-on events count as the phase's arrivals."""
    advance = config.detectors_of(phase, "advance")
    if advance:
        by_lane: dict[int | None, DetectorConfig] = {}
        for d in advance:
            key = d.lane if d.lane is not None else -d.channel
            if key not in by_lane or d.distance_m > by_lane[key].distance_m:
                by_lane[key] = d
        return tuple(sorted(by_lane.values(), key=lambda d: d.channel))
    return config.detectors_of(phase, "count") or config.detectors_of(phase, "stop_bar")


def arrivals(
    events: Iterable[Event], config: ControllerConfig, phase: int,
    speed_kmh: float = DEFAULT_SPEED_KMH,
) -> list[float]:
    """Stop-line arrival times of the phase's vehicles, sorted."""
    if speed_kmh <= 0:
        raise ValueError("speed_kmh must be positive")
    shift = {d.channel: d.distance_m / (speed_kmh / 3.6) for d in arrival_detectors(config, phase)}
    return sorted(
        ev.ts + shift[ev.param] for ev in events
        if ev.code == DETECTOR_ON and ev.param in shift
    )


def split_failures(
    events: Sequence[Event], config: ControllerConfig, phase: int,
    phase_cycles: Sequence[Cycle] | None = None,
) -> tuple[CycleOccupancy, ...] | None:
    """GOR and ROR5 of every complete cycle, None if the phase has no stop-bar detector."""
    stop_bars = [d.channel for d in config.detectors_of(phase, "stop_bar")]
    if not stop_bars:
        return None
    cs = cycles(events, phase) if phase_cycles is None else phase_cycles
    if not cs or not events:
        return ()
    occ = occupancy_intervals(events, stop_bars, events[0].ts, events[-1].ts)
    merged = _union(iv for ivs in occ.values() for iv in ivs)
    out = []
    for c in cs:
        gor = _covered(merged, c.green_start, c.green_end) / c.green_s if c.green_s > 0 else 0.0
        r_end = min(c.red_start + ROR_WINDOW_S, c.end)
        r_len = r_end - c.red_start
        ror5 = _covered(merged, c.red_start, r_end) / r_len if r_len > 0 else 0.0
        out.append(CycleOccupancy(c, gor, ror5))
    return tuple(out)


def pedestrian_waits(events: Iterable[Event], config: ControllerConfig) -> list[PedestrianWait]:
    """Every begin walk with the first pedestrian call it served (see the docstring)."""
    ped_phase = {d.channel: d.phase for d in config.detectors.values() if d.kind == "pedestrian"}
    pending: dict[int, float] = {}
    out = []
    for ev in events:
        if ev.code == PED_CALL:
            pending.setdefault(ev.param, ev.ts)
        elif ev.code == PED_DETECTOR_ON and ev.param in ped_phase:
            pending.setdefault(ped_phase[ev.param], ev.ts)
        elif ev.code == BEGIN_WALK:
            out.append(PedestrianWait(ev.param, ev.ts, pending.pop(ev.param, None)))
    return out


def detector_health(
    events: Sequence[Event], config: ControllerConfig, start: float, end: float,
    *, stuck_on_s: float = 600.0, quiet_s: float = 3600.0,
) -> tuple[DetectorHealth, ...]:
    """The health of every registered detector over `[start, end]`."""
    out = []
    for ch, d in sorted(config.detectors.items()):
        on, off = (
            (PED_DETECTOR_ON, PED_DETECTOR_OFF) if d.kind == "pedestrian"
            else (DETECTOR_ON, DETECTOR_OFF)
        )
        ivs = occupancy_intervals(events, [ch], start, end, on=on, off=off)[ch]
        count = sum(1 for ev in events if ev.code == on and ev.param == ch)
        edges = sum(1 for ev in events if ev.code in (on, off) and ev.param == ch)
        longest = max((b - a for a, b in ivs), default=0.0)
        status: Literal["ok", "stuck_on", "no_activity"] = "ok"
        if longest >= stuck_on_s:
            status = "stuck_on"
        elif edges == 0 and end - start >= quiet_s:
            status = "no_activity"
        out.append(DetectorHealth(ch, d.phase, d.kind, count, longest, status))
    return tuple(out)


# -- per phase and bin ----------------------------------------------------------------------


@dataclass(slots=True)
class _Acc:
    volume: int = 0
    in_cycles: int = 0
    aog: int = 0
    aor: int = 0
    delay: float = 0.0
    green: float = 0.0
    covered: float = 0.0
    cycles: int = 0
    green_sum: float = 0.0
    failures: int = 0
    terms: dict[int | None, int] = field(default_factory=lambda: defaultdict(int))
    yellow_act: int = 0
    rc_act: int = 0
    red_act: int = 0
    walks: int = 0
    ped_delays: list[float] = field(default_factory=list)


def _bin(ts: float, bin_s: float) -> float:
    return math.floor(ts / bin_s) * bin_s


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _cycle_of(starts: Sequence[float], cs: Sequence[Cycle], t: float) -> Cycle | None:
    i = bisect.bisect_right(starts, t) - 1
    if i >= 0 and t < cs[i].end:
        return cs[i]
    return None


def phase_measures(
    events: Sequence[Event], config: ControllerConfig, start: float, end: float,
    *, speed_kmh: float = DEFAULT_SPEED_KMH, bin_s: float = BIN_S,
) -> tuple[PhaseBin, ...]:
    """Every measure for every phase and every bin overlapping `[start, end)`.

    `events` must be clean (see `events.clean`) and lie within the period; the result is
    ordered by phase, then bin. A cycle counts in the bin of its begin green (if that is
    in the period); green share and coverage are cut to each bin.
    """
    if end <= start:
        raise ValueError("end must be after start")
    first_bin = _bin(start, bin_s)
    bins = [first_bin + k * bin_s for k in range(math.ceil((end - first_bin) / bin_s))]
    waits = pedestrian_waits(events, config)
    out: list[PhaseBin] = []
    for phase in sorted(config.phases):
        acc = {b: _Acc() for b in bins}

        def at(t: float, acc: dict[float, _Acc] = acc) -> _Acc | None:
            return acc.get(_bin(t, bin_s)) if start <= t < end else None

        cs = cycles(events, phase)
        starts = [c.green_start for c in cs]
        for c in cs:
            for b, a in acc.items():
                a.green += _covered([(c.green_start, c.green_end)], b, b + bin_s)
                a.covered += _covered([(c.green_start, c.end)], b, b + bin_s)
            if (a_ := at(c.green_start)) is not None:
                a_.cycles += 1
                a_.green_sum += c.green_s
                a_.terms[c.termination] += 1
        for t in arrivals(events, config, phase, speed_kmh):
            if (a_ := at(t)) is None:
                continue
            a_.volume += 1
            hit = _cycle_of(starts, cs, t)
            if hit is None:
                continue
            a_.in_cycles += 1
            if t < hit.green_end:
                a_.aog += 1
            elif t >= hit.red_start:
                a_.aor += 1
                a_.delay += hit.end - t
        occ = split_failures(events, config, phase, cs)
        for co in occ or ():
            if co.failed and (a_ := at(co.cycle.green_start)) is not None:
                a_.failures += 1
        stop_bars = {d.channel for d in config.detectors_of(phase, "stop_bar")}
        for ev in events:
            if ev.code != DETECTOR_ON or ev.param not in stop_bars:
                continue
            hit = _cycle_of(starts, cs, ev.ts)
            if hit is None or (a_ := at(ev.ts)) is None or ev.ts < hit.green_end:
                continue
            if ev.ts < hit.red_start:
                a_.yellow_act += 1
            else:
                a_.red_act += 1
                rc = hit.red_clearance
                if rc is not None and rc[0] <= ev.ts < rc[1]:
                    a_.rc_act += 1
        for w in waits:
            if w.phase == phase and (a_ := at(w.walk_ts)) is not None:
                a_.walks += 1
                if w.delay_s is not None:
                    a_.ped_delays.append(w.delay_s)
        out.extend(_finish(phase, b, a, has_stop_bar=occ is not None) for b, a in acc.items())
    return tuple(out)


def _finish(phase: int, b: float, a: _Acc, *, has_stop_bar: bool) -> PhaseBin:
    terms = a.terms
    delays = a.ped_delays
    pct_aog = _ratio(a.aog, a.in_cycles)
    green_share = _ratio(a.green, a.covered)
    platoon = None if pct_aog is None or not green_share else pct_aog / green_share
    return PhaseBin(
        phase=phase,
        bin_start=b,
        volume=a.volume,
        arrivals_in_cycles=a.in_cycles,
        arrivals_on_green=a.aog,
        pct_aog=pct_aog,
        green_share=green_share,
        platoon_ratio=platoon,
        arrivals_on_red=a.aor,
        delay_total_s=a.delay,
        delay_per_vehicle_s=_ratio(a.delay, a.in_cycles),
        cycles=a.cycles,
        split_failures=a.failures if has_stop_bar else None,
        gap_outs=terms.get(GAP_OUT, 0),
        max_outs=terms.get(MAX_OUT, 0),
        force_offs=terms.get(FORCE_OFF, 0),
        other_terminations=terms.get(None, 0),
        mean_green_s=_ratio(a.green_sum, a.cycles),
        yellow_actuations=a.yellow_act,
        red_clearance_actuations=a.rc_act,
        red_actuations=a.red_act,
        ped_walks=a.walks,
        ped_calls_served=len(delays),
        ped_delay_mean_s=_ratio(sum(delays), len(delays)),
        ped_delay_max_s=max(delays) if delays else None,
    )
