"""A signal controller emulator logging Indiana high-resolution events.

The phases are driven by `controller.SignalController`, the same state machine the SUMO
simulator uses: the controller's own fixed-time plan (single ring, phases one after the
other, the offset placing the cycle) until timing commands arrive, which it obeys only
when safe (min and max green, clearance never shortened, stale or out-of-sequence commands
dropped, back to its own plan after `valid_for_s` of silence; see that module). Phase
events: 1 begin green, 7 green termination (5 max-out / 6 force-off before it under
adaptive control), 8 begin yellow, 9 end yellow, 10 begin red clearance, 11 end red
clearance (the next phase's 1 follows at the same tenth); 131 reports every change of
the control mode (parameter 1 own plan, 2 commanded plan, 3 adaptive). The log begins
mid-cycle, as from a controller that has been running on its own plan before `start`, so
its first 131 comes with the first change. Event parameter: the phase number (131: the
mode).

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

What happens at the stop line is resolved lazily against the greens the controller has
really given: a vehicle is decided once the controller's time has passed its arrival at
the line, a queued one once the green that serves it has begun (and, while it lasts,
only up to the controller's time). A command can therefore change the greens without
any vehicle having been moved on a green that never came. Everything up to the
controller's time is known, so events are released without delay.

Queues spilling back over the advance detectors are not modelled. Occupancies of
successive vehicles that touch are merged, so every detector strictly alternates
82, 81, 82, 81... Timestamps are integral tenths of a second. Without commands the log
is a function of the seed alone (not of how the time is cut into batches).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from cityops.ingest.contract import Channel, DeviceKind, SignalEvent, SignalEvents, TimingCommand
from cityops.simulators.city import Controller, Detector, Phase
from cityops.simulators.controller import (
    BEGIN_GREEN,
    END_GREEN,
    Outcome,
    PhaseTiming,
    RawEvent,
    SignalController,
)
from cityops.simulators.emission import Emission, LocalClock, to_datetime

__all__ = ["SignalControllerSim"]

DETECTOR_OFF, DETECTOR_ON = 81, 82

_MIN_HEADWAY_S = 1.2
_FOLLOW_S = 1.0  # minimum time between two vehicles at the stop line in free flow
_SAT_HEADWAY_S = 2.0
_LOST_TIME_S = 2.0
_YELLOW_DISCHARGE_S = 1.0
_DISCHARGE_SPEED_MS = 5.0
_HEAVY_SHARE = 0.06
_MAX_EVENTS = 5000
_OPEN = 2**62  # end of an occupancy whose vehicle has not left yet


@dataclass
class _Merger:
    """Merges the occupancies of one detector so its events strictly alternate."""

    channel: int
    on: int = -1
    off: int = -1  # -1: no open occupancy; _OPEN: a vehicle stands on it, end unknown
    _before: int = -1  # end of the merged occupancy before the standing vehicle came

    def add(self, on: int, off: int, push: _Push) -> None:
        if self.off >= 0 and on <= self.off:
            self.off = max(self.off, off)
            return
        if self.off >= 0:
            push(self.off, DETECTOR_OFF, self.channel)
        push(on, DETECTOR_ON, self.channel)
        self.on, self.off = on, off

    def stand(self, on: int, push: _Push) -> None:
        """A vehicle stops on the loop at `on`; `leave` gives the end once it is known."""
        before = self.off
        self.add(on, _OPEN, push)
        self._before = before if before >= on else -1

    def leave(self, off: int) -> None:
        self.off = max(self._before, off)

    def flush(self, horizon: int, push: _Push) -> None:
        """Close the open occupancy when no later vehicle can touch it any more."""
        if self.off >= 0 and self.off < horizon:
            push(self.off, DETECTOR_OFF, self.channel)
            self.on = self.off = -1


_Queued = tuple[int, int, int, int, int, int]  # ts, then the order within the tenth, code, param


class _Push:
    """Queues events in a canonical order: by time; within a tenth the controller's events
    in the order it logged them, then detector events by channel. Vehicles are resolved in
    different calls depending on how time is cut into batches; the log must not."""

    def __init__(self, heap: list[_Queued]) -> None:
        self._heap = heap
        self._seq = 0

    def __call__(self, ts: int, code: int, param: int) -> None:
        if code in (DETECTOR_OFF, DETECTOR_ON):
            heapq.heappush(self._heap, (ts, 1, param, code, code, param))
        else:
            self._seq += 1
            heapq.heappush(self._heap, (ts, 0, self._seq, 0, code, param))


@dataclass
class _Green:
    """A green the controller has given: `end` is None while it lasts (seconds)."""

    begin: float
    end: float | None = None


@dataclass
class _Vehicle:
    at_line: float  # arrival at the stop line (seconds)
    length_m: float
    speed_ms: float
    stopped: bool = False  # decided: it stops (and waits for its green)
    head: bool = False  # it stopped at the front of the queue, standing on the loop


@dataclass
class _Lane:
    phase: Phase
    rng: np.random.Generator
    advance: list[tuple[Detector, _Merger]]
    stop_bar: tuple[Detector, _Merger] | None
    reach_m: float  # distance of the farthest detector from the stop line
    next_arrival: float
    waiting: deque[_Vehicle] = field(default_factory=deque)  # not yet over the line
    green_index: int = 0  # first of the phase's greens that may still serve this lane
    last_at_line: float = -math.inf
    last_departure: float = -math.inf
    vehicles: int = field(default=0)


class SignalControllerSim:
    """Event log of one controller, released in batches of `batch_s` simulated seconds."""

    kind = DeviceKind.SIGNAL

    def __init__(
        self,
        spec: Controller,
        clock: LocalClock,
        seed: int,
        index: int,
        start: float,
        batch_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self._clock = clock
        self._batch_s = batch_s
        self._heap: list[_Queued] = []
        self._push = _Push(self._heap)
        start_ds = math.floor(start * 10)
        self._released_ds = start_ds  # events at or before this are never emitted
        # The controller starts at the cycle start before `start` that the offset places,
        # so the log begins mid-cycle, coordinated; events before `start` are not emitted.
        cycle_ds = round(spec.cycle_s * 10)
        offset_ds = round(spec.offset_s * 10)
        timings = [
            PhaseTiming(
                p.phase,
                green_s=p.green_s,
                min_green_s=p.min_green_s,
                max_green_s=p.max_green_s,
                yellow_s=p.yellow_s,
                red_clearance_s=p.red_clearance_s,
            )
            for p in spec.phases
        ]
        cycle_start = start_ds - (start_ds - offset_ds) % cycle_ds
        self.controller = SignalController(spec.controller_id, timings, cycle_start / 10)
        self._greens: dict[int, list[_Green]] = {p.phase: [] for p in spec.phases}
        self._take(self.controller.step(cycle_start / 10))
        self._next = start + batch_s
        self._lanes: list[_Lane] = []
        for k, phase in enumerate(spec.phases):
            for lane in range(1, phase.lanes + 1):
                dets = [d for d in spec.detectors if d.phase == phase.phase and d.lane == lane]
                rng = np.random.default_rng([seed, 20, index, k, lane])
                new = _Lane(
                    phase=phase,
                    rng=rng,
                    advance=[(d, _Merger(d.channel)) for d in dets if d.kind == "advance"],
                    stop_bar=next(
                        ((d, _Merger(d.channel)) for d in dets if d.kind == "stop_bar"), None
                    ),
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
                DeviceKind.SIGNAL,
                self.device_id,
                Channel.EVENTS,
                SignalEvents(events=events[i : i + _MAX_EVENTS]),
            )
            for i in range(0, len(events), _MAX_EVENTS)
        ]

    def receive(self, command: TimingCommand, now: float) -> Outcome:
        """Hand `command` to the controller at simulated time `now` (not before its own
        time); it decides, logs and counts (`controller.counts`) what becomes of it."""
        self._take(self.controller.step(now))
        outcome = self.controller.receive(command)
        self._take(self.controller.step(now))
        return outcome

    def events_until(self, t: float) -> list[SignalEvent]:
        """Every event after the previous call up to `t`, in time order."""
        return [
            SignalEvent(ts=to_datetime(ts / 10, 100), code=code, param=param)
            for ts, code, param in self.raw_events_until(t)
        ]

    def raw_events_until(self, t: float) -> list[tuple[int, int, int]]:
        """Like `events_until`, as (tenths of a second since the epoch, code, param).

        Events at the controller's current tenth are held back one batch: a command
        received within that tenth may still end the green there.
        """
        until_ds = math.floor(t * 10)
        self._take(self.controller.step(t))
        known_ds = self.controller.now_ds
        limit = min(until_ds, known_ds - 1)
        for lane in self._lanes:
            while lane.next_arrival <= t:
                self._vehicle(lane)
            self._resolve(lane, known_ds)
            horizon = round(lane.next_arrival * 10)
            for _, merger in lane.advance:
                merger.flush(horizon, self._push)
            if lane.waiting:
                front = lane.waiting[0]
                horizon = min(horizon, known_ds if front.stopped else round(front.at_line * 10))
            if lane.stop_bar is not None:
                lane.stop_bar[1].flush(horizon, self._push)
            limit = min(limit, horizon - 1)
        self._trim_greens()
        out = []
        while self._heap and self._heap[0][0] <= limit:
            ts, _, _, _, code, param = heapq.heappop(self._heap)
            if ts > self._released_ds:
                out.append((ts, code, param))
        self._released_ds = max(self._released_ds, limit)
        return out

    # -- the controller's greens --------------------------------------------------------

    def _take(self, events: list[RawEvent]) -> None:
        """Queue the controller's events and note the greens they begin and end."""
        for ts, code, param in events:
            self._push(ts, code, param)
            if code == BEGIN_GREEN:
                self._greens[param].append(_Green(ts / 10))
            elif code == END_GREEN:
                self._greens[param][-1].end = ts / 10

    def _trim_greens(self) -> None:
        """Forget greens no lane can be served in any more (a long run stays small)."""
        for phase, greens in self._greens.items():
            lanes = [lane for lane in self._lanes if lane.phase.phase == phase]
            drop = min((lane.green_index for lane in lanes), default=len(greens) - 1)
            drop = min(drop, len(greens) - 1)
            if drop > 0:
                del greens[:drop]
                for lane in lanes:
                    lane.green_index -= drop

    def _may_pass(self, lane: _Lane, t: float) -> bool:
        """Green, or the first half of yellow, at `t` (at or before the controller's time)."""
        half_yellow = lane.phase.yellow_s / 2
        for g in self._greens[lane.phase.phase][lane.green_index :]:
            if g.begin > t:
                return False
            if g.end is None or t < g.end + half_yellow:
                return True
        return False

    def _discharge_at(self, lane: _Lane, t: float, known: float) -> float | None:
        """Earliest time at or after `t` when a stopped vehicle may leave the line, or None
        while that depends on greens the controller has not given yet (`known`: its time)."""
        for g in self._greens[lane.phase.phase][lane.green_index :]:
            at = max(t, g.begin + _LOST_TIME_S)
            if g.end is None:
                return at if at <= known else None
            if at < g.end + _YELLOW_DISCHARGE_S:
                return at
        return None

    # -- vehicles -----------------------------------------------------------------------

    def _headway(self, lane: _Lane, t: float) -> float:
        rate = lane.phase.arrival_vph / lane.phase.lanes * self._clock.traffic_factor(t) / 3600
        mean = 1.0 / rate - _MIN_HEADWAY_S if rate > 0 else 3600.0
        return _MIN_HEADWAY_S + float(lane.rng.exponential(min(max(mean, 0.1), 3600.0)))

    def _vehicle(self, lane: _Lane) -> None:
        """A vehicle reaches the farthest detector: its advance occupancies are known now,
        the stop line waits for `_resolve`."""
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
        lane.waiting.append(_Vehicle(at_line, length, speed))

    def _resolve(self, lane: _Lane, known_ds: int) -> None:
        """Move the lane's vehicles over the stop line as far as the controller's greens up
        to `known_ds` decide it, in their order."""
        known = known_ds / 10
        greens = self._greens[lane.phase.phase]
        while lane.waiting:
            v = lane.waiting[0]
            # greens that ended before this vehicle came can serve no later one either
            while lane.green_index < len(greens) - 1:
                end = greens[lane.green_index].end
                if end is None or end + lane.phase.yellow_s / 2 > v.at_line:
                    break
                lane.green_index += 1
            if not v.stopped:
                if v.at_line > known:
                    return
                if self._may_pass(lane, v.at_line) and v.at_line >= lane.last_departure + _FOLLOW_S:
                    lane.last_departure = v.at_line
                    lane.waiting.popleft()
                    if lane.stop_bar is not None:
                        det, merger = lane.stop_bar
                        self._occupy(
                            merger, v.at_line, v.at_line + (v.length_m + det.length_m) / v.speed_ms
                        )
                    continue
                v.stopped = True
                v.head = v.at_line >= lane.last_departure
                if v.head and lane.stop_bar is not None:
                    lane.stop_bar[1].stand(round(v.at_line * 10), self._push)
            departure = self._discharge_at(
                lane, max(v.at_line, lane.last_departure + _SAT_HEADWAY_S), known
            )
            if departure is None:
                return
            lane.last_departure = departure
            lane.waiting.popleft()
            if lane.stop_bar is None:
                continue
            det, merger = lane.stop_bar
            rolling = (v.length_m + det.length_m) / _DISCHARGE_SPEED_MS
            if v.head:
                on_ds = round(v.at_line * 10)
                merger.leave(max(on_ds + 1, round((departure + rolling) * 10)))
            else:
                self._occupy(merger, departure, departure + rolling)

    def _occupy(self, merger: _Merger, on: float, off: float) -> None:
        on_ds = round(on * 10)
        merger.add(on_ds, max(on_ds + 1, round(off * 10)), self._push)
