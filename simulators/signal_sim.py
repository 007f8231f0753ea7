"""A fixed-time traffic signal controller logging Indiana high-resolution events.

Phase events, for each phase in its sequence every cycle: 1 begin green, 7 green
termination, 8 begin yellow clearance, 9 end yellow clearance, 10 begin red clearance,
11 end red clearance (the next phase's 1 follows at the same tenth of a second). The
plan is single-ring: phases are served one after the other, and the controller's
offset shifts the cycle (coordination). Event parameter: the phase number.

Detector events: 82 detector on, 81 detector off, parameter the detector channel.
Vehicles arrive per lane as a Poisson stream (with a minimum headway of 1.2 s) whose rate
follows the hour of the day (`TRAFFIC_PROFILE`, `arrival_vph` being the peak hour). Each
vehicle (a car of ~4.5 m, 6 % heavy vehicles of 12 m) crosses the advance detectors at
its approach speed, occupying each for (vehicle + loop length) / speed. At the stop line:

* on green (or in the first half of yellow) with no queue ahead, it passes at speed;
* otherwise it stops: the first vehicle of a queue stands on the stop-bar loop until
  it leaves, giving the long occupancies of red; queued vehicles leave from 2 s after
  begin green (start-up lost time) at a saturation headway of 2 s, rolling over the loop
  at ~5 m/s, and the last ones may still go in the first second of yellow.

Queues spilling back over the advance detectors are not modelled. Occupancies of
successive vehicles that touch are merged, so every detector strictly alternates
82, 81, 82, 81... Timestamps are integral tenths of a second.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from cityops.ingest.contract import Channel, DeviceKind, SignalEvent, SignalEvents
from cityops.simulators.city import Controller, Detector, Phase
from cityops.simulators.emission import Emission, LocalClock, to_datetime

__all__ = ["SignalControllerSim"]

BEGIN_GREEN, END_GREEN, BEGIN_YELLOW, END_YELLOW = 1, 7, 8, 9
BEGIN_RED_CLEARANCE, END_RED_CLEARANCE = 10, 11
DETECTOR_OFF, DETECTOR_ON = 81, 82

_MIN_HEADWAY_S = 1.2
_FOLLOW_S = 1.0  # minimum time between two vehicles at the stop line in free flow
_SAT_HEADWAY_S = 2.0
_LOST_TIME_S = 2.0
_YELLOW_DISCHARGE_S = 1.0
_DISCHARGE_SPEED_MS = 5.0
_HEAVY_SHARE = 0.06
_MAX_EVENTS = 5000


@dataclass
class _Merger:
    """Merges the occupancies of one detector so its events strictly alternate."""

    channel: int
    on: int = -1
    off: int = -1  # -1: no open occupancy

    def add(self, on: int, off: int, push: _Push) -> None:
        if self.off >= 0 and on <= self.off:
            self.off = max(self.off, off)
            return
        if self.off >= 0:
            push(self.off, DETECTOR_OFF, self.channel)
        push(on, DETECTOR_ON, self.channel)
        self.on, self.off = on, off

    def flush(self, horizon: int, push: _Push) -> None:
        """Close the open occupancy when no later vehicle can touch it any more."""
        if self.off >= 0 and self.off < horizon:
            push(self.off, DETECTOR_OFF, self.channel)
            self.on = self.off = -1


class _Push:
    def __init__(self, heap: list[tuple[int, int, int, int]]) -> None:
        self._heap = heap
        self._seq = 0

    def __call__(self, ts: int, code: int, param: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (ts, self._seq, code, param))


@dataclass
class _Lane:
    phase: Phase
    window: tuple[float, float, float]  # begin green, end green, yellow (cycle seconds)
    rng: np.random.Generator
    advance: list[tuple[Detector, _Merger]]
    stop_bar: tuple[Detector, _Merger] | None
    reach_m: float  # distance of the farthest detector from the stop line
    next_arrival: float
    last_at_line: float = -math.inf
    last_departure: float = -math.inf
    vehicles: int = field(default=0)


class SignalControllerSim:
    """Event log of one controller, released in batches of `batch_s` simulated seconds."""

    kind = DeviceKind.SIGNAL

    def __init__(
        self, spec: Controller, clock: LocalClock, seed: int, index: int, start: float,
        batch_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self._clock = clock
        self._cycle_ds = round(spec.cycle_s * 10)
        self._offset_ds = round(spec.offset_s * 10)
        self._batch_s = batch_s
        self._heap: list[tuple[int, int, int, int]] = []
        self._push = _Push(self._heap)
        start_ds = math.floor(start * 10)
        self._released_ds = start_ds  # events at or before this are never emitted
        self._next_cycle_ds = start_ds - (start_ds - self._offset_ds) % self._cycle_ds
        self._next = start + batch_s
        self._lanes: list[_Lane] = []
        position = 0.0
        for k, phase in enumerate(spec.phases):
            window = (position, position + phase.green_s, phase.yellow_s)
            position += phase.interval_s
            for lane in range(1, phase.lanes + 1):
                dets = [d for d in spec.detectors if d.phase == phase.phase and d.lane == lane]
                rng = np.random.default_rng([seed, 20, index, k, lane])
                new = _Lane(
                    phase=phase, window=window, rng=rng,
                    advance=[(d, _Merger(d.channel)) for d in dets if d.kind == "advance"],
                    stop_bar=next(((d, _Merger(d.channel)) for d in dets if d.kind == "stop_bar"),
                                  None),
                    reach_m=max((d.distance_m for d in dets), default=0.0),
                    next_arrival=start,
                )
                new.next_arrival = start + self._headway(new, start)
                self._lanes.append(new)

    @property
    def device_id(self) -> str:
        return self.spec.controller_id

    @property
    def next_time(self) -> float:
        return self._next

    def step(self) -> list[Emission]:
        """Publish the events of the batch ending at `next_time`."""
        t = self._next
        self._next = t + self._batch_s
        events = self.events_until(t)
        return [
            Emission(
                DeviceKind.SIGNAL, self.device_id, Channel.EVENTS,
                SignalEvents(events=events[i : i + _MAX_EVENTS]),
            )
            for i in range(0, len(events), _MAX_EVENTS)
        ]

    def events_until(self, t: float) -> list[SignalEvent]:
        """Every event after the previous call up to `t`, in time order."""
        return [
            SignalEvent(ts=to_datetime(ts / 10, 100), code=code, param=param)
            for ts, code, param in self.raw_events_until(t)
        ]

    def raw_events_until(self, t: float) -> list[tuple[int, int, int]]:
        """Like `events_until`, as (tenths of a second since the epoch, code, param)."""
        until_ds = math.floor(t * 10)
        while self._next_cycle_ds <= until_ds:
            self._push_cycle(self._next_cycle_ds)
            self._next_cycle_ds += self._cycle_ds
        limit = until_ds
        for lane in self._lanes:
            while lane.next_arrival <= t:
                self._vehicle(lane)
            horizon = round(lane.next_arrival * 10)
            for _, merger in lane.advance:
                merger.flush(horizon, self._push)
            if lane.stop_bar is not None:
                lane.stop_bar[1].flush(horizon, self._push)
            limit = min(limit, horizon - 1)
        out = []
        while self._heap and self._heap[0][0] <= limit:
            ts, _, code, param = heapq.heappop(self._heap)
            if ts > self._released_ds:
                out.append((ts, code, param))
        self._released_ds = max(self._released_ds, limit)
        return out

    # -- the fixed-time plan ------------------------------------------------------------

    def _push_cycle(self, cycle_start: int) -> None:
        at = cycle_start
        for phase in self.spec.phases:
            green_end = at + round(phase.green_s * 10)
            yellow_end = green_end + round(phase.yellow_s * 10)
            red_end = yellow_end + round(phase.red_clearance_s * 10)
            p = phase.phase
            self._push(at, BEGIN_GREEN, p)
            self._push(green_end, END_GREEN, p)
            self._push(green_end, BEGIN_YELLOW, p)
            self._push(yellow_end, END_YELLOW, p)
            self._push(yellow_end, BEGIN_RED_CLEARANCE, p)
            self._push(red_end, END_RED_CLEARANCE, p)
            at = red_end

    def _cycle_pos(self, t: float) -> float:
        return (t - self._offset_ds / 10) % (self._cycle_ds / 10)

    def _may_pass(self, lane: _Lane, t: float) -> bool:
        begin, end, yellow = lane.window
        return begin <= self._cycle_pos(t) < end + yellow / 2

    def _discharge_at(self, lane: _Lane, t: float) -> float:
        """Earliest time at or after `t` when a stopped vehicle may leave the line."""
        begin, end, _ = lane.window
        first, last = begin + _LOST_TIME_S, end + _YELLOW_DISCHARGE_S
        pos = self._cycle_pos(t)
        if first <= pos < last:
            return t
        if pos < first:
            return t + first - pos
        return t + self._cycle_ds / 10 - pos + first

    # -- vehicles -----------------------------------------------------------------------

    def _headway(self, lane: _Lane, t: float) -> float:
        rate = lane.phase.arrival_vph / lane.phase.lanes * self._clock.traffic_factor(t) / 3600
        mean = 1.0 / rate - _MIN_HEADWAY_S if rate > 0 else 3600.0
        return _MIN_HEADWAY_S + float(lane.rng.exponential(min(max(mean, 0.1), 3600.0)))

    def _vehicle(self, lane: _Lane) -> None:
        rng = lane.rng
        t0 = lane.next_arrival
        lane.next_arrival = t0 + self._headway(lane, t0)
        lane.vehicles += 1
        speed = max(3.0, float(rng.normal(lane.phase.speed_kmh / 3.6, 1.5)))
        length = 12.0 if rng.random() < _HEAVY_SHARE else float(rng.uniform(4.0, 5.0))
        for det, merger in lane.advance:
            on = t0 + (lane.reach_m - det.distance_m) / speed
            self._occupy(merger, on, on + (length + det.length_m) / speed)
        at_line = max(t0 + lane.reach_m / speed, lane.last_at_line + _FOLLOW_S)
        lane.last_at_line = at_line
        free = self._may_pass(lane, at_line) and at_line >= lane.last_departure + _FOLLOW_S
        if free:
            departure = at_line
        else:
            departure = self._discharge_at(
                lane, max(at_line, lane.last_departure + _SAT_HEADWAY_S)
            )
        head_of_queue = at_line >= lane.last_departure
        lane.last_departure = departure
        if lane.stop_bar is None:
            return
        det, merger = lane.stop_bar
        if free:
            self._occupy(merger, at_line, at_line + (length + det.length_m) / speed)
            return
        rolling = (length + det.length_m) / _DISCHARGE_SPEED_MS
        self._occupy(merger, at_line if head_of_queue else departure, departure + rolling)

    def _occupy(self, merger: _Merger, on: float, off: float) -> None:
        on_ds = round(on * 10)
        merger.add(on_ds, max(on_ds + 1, round(off * 10)), self._push)
