"""Max-pressure signal control (Varaiya 2013) under a fixed phase order: the pure core.

`ControllerState` follows one controller from its live Indiana events (`observe`): the
phase now green and when its green began (codes 1 and 8), the control mode it reports
(code 131: 1 own fixed-time plan, 2 plan by command, 3 adaptive), the health of its
detectors and an estimate of the vehicles queued on each approach lane. `decide` turns
that, at a given controller time, into a `Decision` for the phase now green: `hold`,
`advance` or `fallback`. Nothing here does I/O; the service (`cityops.traffic.control`)
feeds events in and publishes the decisions.

**Lanes.** A phase's detectors (pedestrian ones aside) are grouped by lane (`lane`
column; a detector without a lane is a lane of its own). Per lane the *inflow* detector
is the farthest advance (else count) detector and the *stop bars* are its stop-bar
detectors.

**Queue estimate per lane** (vehicles between the inflow detector and the stop line),
by the detectors of the lane that are usable now:

* inflow and stop bar: vehicles in (82 on the inflow detector) minus vehicles out (81 on
  a stop bar: a vehicle leaves the loop when it crosses the line), never below 0 and
  never above the lane's storage (`distance_m / 7 m`, at least 1; `default_storage`
  for a count detector without a distance). Drift from merged occupancies or missed
  pulses is bounded: whenever every stop bar of the lane has been free for `clear_gap_s`
  no vehicle stands at the line, so the estimate is cut to the vehicles that passed the
  inflow detector within the last `1.5 x distance / speed` (still rolling towards it).
* inflow only (no usable stop bar): vehicles in minus an assumed discharge of one
  vehicle per `sat_headway_s` while the lane's phase is green, after a start-up lost
  time of `lost_time_s`.
* stop bar only (presence): 1 while a stop bar is occupied, else 0.
* spill-back: while the inflow detector has been occupied for `spillback_s` the queue
  reaches it, and the estimate is the lane's storage.

**Pressure** of a phase: the sum over its usable lanes of the lane's queue minus, for
each link of that lane to a downstream approach lane (`Link`, the optional
`signal_links` table), `share x` the downstream lane's queue. Without links, or when the
downstream lane is unknown or unusable, the downstream queue is 0 (then max-pressure is
longest-queue-first).

**Blocked lanes.** A downstream lane is *full* when its estimate has reached its storage
(spill-back, or as many vehicles counted in as fit). A lane whose links lead, by at least
its whole `share` (their shares summing to 1), into full lanes is *blocked*: its vehicles
have nowhere to go. While the vehicles waiting at the other
phases all stand in blocked lanes there is no advance (rule 4: a full downstream approach
holds back an advance into it); without links no lane is blocked.

**Decision** for the phase now green, `t` seconds into its green, first rule that
applies:

1. a phase has no usable detector (or no detector at all) -> `fallback`;
2. `t < min_green` -> `hold` (the controller would refuse an early advance anyway);
3. `t >= max_green` -> `advance`;
4. the other phases have vehicles, but only in blocked lanes -> `hold`;
5. the green phase's queue is empty and another phase has a queue -> `advance`;
6. the highest pressure among the other phases exceeds the green phase's by at least
   `threshold` -> `advance` (the controller moves to the *next* phase of its fixed
   order; for the usual two-phase intersection that is the phase compared);
7. otherwise `hold`.

During yellow and red clearance no phase is green; the decision is `hold` of the phase
that comes next (a keep-alive: clearance is never shortened). Before the first phase
event nothing is decided.

**Detector health.** A detector is unusable while it is *stuck on* (one occupancy of
`stuck_on_s` or more, as in `measures.detector_health`) or *stale* (no event for
`stale_after_s` although the controller logged events meanwhile; counted from the first
event seen from the controller, so a detector that never reports goes stale too). An
unusable detector is left out of its lane's estimate as above; a lane with no usable
detector left is left out of its phase's pressure; a phase with no usable lane sends
the whole controller to `fallback` until a detector of it is usable again.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .events import (
    BEGIN_GREEN,
    BEGIN_YELLOW,
    DETECTOR_OFF,
    DETECTOR_ON,
    END_GREEN,
    ControllerConfig,
    DetectorConfig,
    Event,
)

__all__ = [
    "COORDINATION_PATTERN_CHANGE",
    "ControlParams",
    "ControllerState",
    "Decision",
    "LaneQueue",
    "Link",
    "decide",
    "pressures",
]

#: Indiana 131, coordination pattern change; param 1 own fixed-time plan, 2 plan received
#: by command, 3 adaptive (following `mode="adaptive"` commands).
COORDINATION_PATTERN_CHANGE = 131
CONTROLLER_MODES = {1: "fixed", 2: "plan", 3: "adaptive"}

JAM_SPACING_M = 7.0

Action = Literal["hold", "advance", "fallback"]
LaneKey = tuple[int, int]  # (phase, lane) or (phase, -channel) for a detector without a lane


@dataclass(frozen=True, slots=True)
class ControlParams:
    """Tuning of the estimate, the health checks and the decision (seconds, vehicles)."""

    threshold: float = 2.0
    speed_kmh: float = 50.0
    clear_gap_s: float = 3.0
    sat_headway_s: float = 2.0
    lost_time_s: float = 2.0
    spillback_s: float = 4.0
    default_storage: float = 30.0
    stuck_on_s: float = 300.0
    stale_after_s: float = 300.0

    def __post_init__(self) -> None:
        for name in (
            "speed_kmh",
            "clear_gap_s",
            "sat_headway_s",
            "spillback_s",
            "default_storage",
            "stuck_on_s",
            "stale_after_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.threshold < 0 or self.lost_time_s < 0:
            raise ValueError("threshold and lost_time_s must not be negative")


@dataclass(frozen=True, slots=True)
class Link:
    """Vehicles of an approach lane (`channel`: one of its detectors) of one controller
    enter an approach lane (`to_channel`) of another with `share` of their number."""

    controller_id: str
    channel: int
    to_controller_id: str
    to_channel: int
    share: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError("share must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class LaneQueue:
    """The queue estimate of one lane and how it was made."""

    phase: int
    key: LaneKey
    queue: float
    method: Literal["counts", "inflow_only", "presence", "unusable"]
    storage: float = math.inf

    @property
    def full(self) -> bool:
        """Usable and as many vehicles as the lane holds (see Blocked lanes)."""
        return self.method != "unusable" and self.queue >= self.storage


@dataclass(frozen=True, slots=True)
class Decision:
    """What to tell the controller at controller time `at`."""

    controller_id: str
    at: float
    action: Action
    phase: int | None
    reason: str
    pressures: Mapping[int, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Detector:
    config: DetectorConfig
    last_event: float | None = None
    on_since: float | None = None


@dataclass(slots=True)
class _Lane:
    key: LaneKey
    phase: int
    inflow: int | None
    stop_bars: tuple[int, ...]
    storage: float
    window_s: float
    count: float = 0.0
    entries: deque[float] = field(default_factory=deque)
    settled_at: float | None = None


class ControllerState:
    """One controller as seen from its events; see the module docstring."""

    def __init__(self, config: ControllerConfig, params: ControlParams | None = None) -> None:
        self.config = config
        self.params = params or ControlParams()
        self.order: tuple[int, ...] = tuple(
            p.phase for p in sorted(config.phases.values(), key=lambda p: (p.seq, p.phase))
        )
        self.green_phase: int | None = None
        self.green_start: float | None = None
        self.last_phase: int | None = None
        self.controller_mode: int | None = None
        self.first_event: float | None = None
        self.latest: float | None = None
        self.ignored = 0
        self._detectors = {
            ch: _Detector(d) for ch, d in config.detectors.items() if d.kind != "pedestrian"
        }
        self._lanes = _build_lanes(config, self.params)
        self._lane_of: dict[int, _Lane] = {}
        for lane in self._lanes:
            for ch in (lane.inflow, *lane.stop_bars):
                if ch is not None:
                    self._lane_of[ch] = lane

    @property
    def controller_id(self) -> str:
        return self.config.controller_id

    # -- events --------------------------------------------------------------------------
    def observe(self, events: Iterable[Event]) -> None:
        """Take events in time order. Earlier-than-seen events and unknown phases or
        detectors are ignored (counted in `ignored`): they cannot be undone."""
        for ev in events:
            if self.latest is not None and ev.ts < self.latest:
                self.ignored += 1
                continue
            self._settle(ev.ts)
            if not self._apply(ev):
                self.ignored += 1
                continue
            if self.first_event is None:
                self.first_event = ev.ts
            self.latest = ev.ts

    def _apply(self, ev: Event) -> bool:
        if ev.code == COORDINATION_PATTERN_CHANGE:
            self.controller_mode = ev.param
            return True
        if ev.code in (DETECTOR_ON, DETECTOR_OFF):
            if ev.param not in self.config.detectors:
                return False
            det = self._detectors.get(ev.param)
            if det is not None:
                self._detector_event(det, ev)
            return True
        if ev.code in (BEGIN_GREEN, BEGIN_YELLOW, END_GREEN) and ev.param not in self.config.phases:
            return False
        if ev.code == BEGIN_GREEN:
            self.green_phase, self.green_start, self.last_phase = ev.param, ev.ts, ev.param
        elif ev.code in (BEGIN_YELLOW, END_GREEN) and ev.param == self.green_phase:
            self.green_phase = self.green_start = None
        return True

    def _detector_event(self, det: _Detector, ev: Event) -> None:
        det.last_event = ev.ts
        ch = ev.param
        lane = self._lane_of.get(ch)
        if ev.code == DETECTOR_ON:
            if det.on_since is not None:
                return  # a repeated on: the occupancy is already open
            det.on_since = ev.ts
            if lane is not None and ch == lane.inflow:
                lane.count = min(lane.storage, lane.count + 1.0)
                lane.entries.append(ev.ts)
            return
        if det.on_since is None:
            return  # a repeated off
        det.on_since = None
        if lane is not None and ch in lane.stop_bars:
            lane.count = max(0.0, lane.count - 1.0)

    def _settle(self, now: float) -> None:
        """Apply the time-driven parts of the estimate up to `now`."""
        p = self.params
        for lane in self._lanes:
            while lane.entries and lane.entries[0] < now - lane.window_s:
                lane.entries.popleft()
            inflow_ok = lane.inflow is not None and self._usable(lane.inflow, now)
            bars = [c for c in lane.stop_bars if self._usable(c, now)]
            if inflow_ok and bars:
                free = [self._free_since(c, now) for c in bars]
                if all(f is not None and now - f >= p.clear_gap_s for f in free):
                    lane.count = min(lane.count, float(len(lane.entries)))
            elif inflow_ok and lane.phase == self.green_phase and self.green_start is not None:
                begin = self.green_start + p.lost_time_s
                since = max(begin, lane.settled_at if lane.settled_at is not None else begin)
                if now > since:
                    lane.count = max(0.0, lane.count - (now - since) / p.sat_headway_s)
            # Monotonic: a decision at an estimated time may precede a later-delivered
            # event's time; discharge must never be counted twice.
            lane.settled_at = now if lane.settled_at is None else max(lane.settled_at, now)

    def _free_since(self, channel: int, now: float) -> float | None:
        det = self._detectors[channel]
        if det.on_since is not None:
            return None
        if det.last_event is not None:
            return det.last_event
        return self.first_event if self.first_event is not None else now

    # -- health --------------------------------------------------------------------------
    def detector_problem(self, channel: int, now: float) -> str | None:
        """`stuck_on`, `stale` or None for a usable detector."""
        det = self._detectors[channel]
        p = self.params
        if det.on_since is not None and now - det.on_since >= p.stuck_on_s:
            return "stuck_on"
        heard = det.last_event if det.last_event is not None else self.first_event
        if heard is not None and now - heard >= p.stale_after_s:
            return "stale"
        return None

    def _usable(self, channel: int, now: float) -> bool:
        return self.detector_problem(channel, now) is None

    def unusable_detectors(self, now: float) -> dict[int, str]:
        """Every registered (non-pedestrian) detector that is unusable now, with why."""
        out = {}
        for ch in sorted(self._detectors):
            problem = self.detector_problem(ch, now)
            if problem is not None:
                out[ch] = problem
        return out

    # -- queues --------------------------------------------------------------------------
    def lane_queues(self, now: float) -> dict[LaneKey, LaneQueue]:
        """The queue estimate of every lane at `now` (after the events observed so far)."""
        self._settle(now)
        p = self.params
        out = {}
        for lane in self._lanes:
            inflow_ok = lane.inflow is not None and self._usable(lane.inflow, now)
            bars = [c for c in lane.stop_bars if self._usable(c, now)]
            if inflow_ok:
                q = lane.count
                assert lane.inflow is not None
                on = self._detectors[lane.inflow].on_since
                if on is not None and now - on >= p.spillback_s:
                    q = lane.storage
                method: Literal["counts", "inflow_only", "presence", "unusable"] = (
                    "counts" if bars else "inflow_only"
                )
            elif bars:
                q = 1.0 if any(self._detectors[c].on_since is not None for c in bars) else 0.0
                method = "presence"
            else:
                q, method = 0.0, "unusable"
            out[lane.key] = LaneQueue(lane.phase, lane.key, q, method, lane.storage)
        return out

    def lane_key(self, channel: int) -> LaneKey | None:
        lane = self._lane_of.get(channel)
        return None if lane is None else lane.key

    def next_phase(self, phase: int) -> int:
        i = self.order.index(phase)
        return self.order[(i + 1) % len(self.order)]


def _build_lanes(config: ControllerConfig, params: ControlParams) -> list[_Lane]:
    groups: dict[LaneKey, list[DetectorConfig]] = {}
    for _ch, d in sorted(config.detectors.items()):
        if d.kind == "pedestrian":
            continue
        key = (d.phase, d.lane if d.lane is not None else -d.channel)
        groups.setdefault(key, []).append(d)
    speed = params.speed_kmh / 3.6
    lanes = []
    for key, dets in sorted(groups.items()):
        upstream = [d for d in dets if d.kind == "advance"] or [
            d for d in dets if d.kind == "count"
        ]
        inflow = max(upstream, key=lambda d: (d.distance_m, -d.channel)) if upstream else None
        bars = tuple(d.channel for d in dets if d.kind == "stop_bar")
        distance = inflow.distance_m if inflow is not None else 0.0
        storage = (
            max(1.0, math.floor(distance / JAM_SPACING_M))
            if distance > 0
            else params.default_storage
        )
        window = 1.5 * distance / speed + params.clear_gap_s
        lanes.append(
            _Lane(key, key[0], None if inflow is None else inflow.channel, bars, storage, window)
        )
    return lanes


def pressures(
    state: ControllerState,
    now: float,
    links: Sequence[Link] = (),
    downstream: Mapping[str, Mapping[LaneKey, LaneQueue]] | None = None,
    downstream_keys: Mapping[tuple[str, int], LaneKey] | None = None,
) -> dict[int, float]:
    """Max-pressure of each phase at `now` (see the module docstring).

    `links`: this controller's links; `downstream`: lane queues of other controllers by
    controller id; `downstream_keys`: (controller id, channel) -> lane key there.
    """
    return _pressures(state, now, links, downstream, downstream_keys)[0]


def _pressures(
    state: ControllerState,
    now: float,
    links: Sequence[Link],
    downstream: Mapping[str, Mapping[LaneKey, LaneQueue]] | None,
    downstream_keys: Mapping[tuple[str, int], LaneKey] | None,
) -> tuple[dict[int, float], set[LaneKey]]:
    """Pressures by phase, and the blocked lanes."""
    queues = state.lane_queues(now)
    by_lane: dict[LaneKey, list[Link]] = {}
    for link in links:
        key = state.lane_key(link.channel)
        if link.controller_id == state.controller_id and key is not None:
            by_lane.setdefault(key, []).append(link)
    out = dict.fromkeys(state.order, 0.0)
    blocked: set[LaneKey] = set()
    for key, lq in queues.items():
        if lq.method == "unusable":
            continue
        down = full = 0.0
        for link in by_lane.get(key, ()):
            dkey = (downstream_keys or {}).get((link.to_controller_id, link.to_channel))
            dq = (downstream or {}).get(link.to_controller_id, {}).get(dkey) if dkey else None
            if dq is not None and dq.method != "unusable":
                down += link.share * dq.queue
                if dq.full:
                    full += link.share
        if full >= 1.0 - 1e-9:
            blocked.add(key)
        out[lq.phase] = out.get(lq.phase, 0.0) + lq.queue - down
    return out, blocked


def decide(
    state: ControllerState,
    now: float,
    links: Sequence[Link] = (),
    downstream: Mapping[str, Mapping[LaneKey, LaneQueue]] | None = None,
    downstream_keys: Mapping[tuple[str, int], LaneKey] | None = None,
) -> Decision | None:
    """The decision at controller time `now`, or None before the first phase event."""
    cid = state.controller_id
    queues = state.lane_queues(now)
    dead_phases = [
        ph
        for ph in state.order
        if all(q.method == "unusable" for q in queues.values() if q.phase == ph)
    ]
    if dead_phases:
        bad = state.unusable_detectors(now)
        detail = ", ".join(f"{ch} {why}" for ch, why in bad.items()) or "no detectors"
        return Decision(
            cid,
            now,
            "fallback",
            state.green_phase,
            f"no usable detector for phase(s) {dead_phases}: {detail}",
        )
    press, blocked = _pressures(state, now, links, downstream, downstream_keys)
    green = state.green_phase
    if green is None or state.green_start is None:
        if state.last_phase is None:
            return None
        nxt = state.next_phase(state.last_phase)
        return Decision(cid, now, "hold", nxt, "clearance: keep-alive for the next phase", press)
    params = state.params
    phase_cfg = state.config.phases[green]
    elapsed = now - state.green_start
    if elapsed < phase_cfg.min_green_s:
        return Decision(cid, now, "hold", green, f"min green ({elapsed:.1f} s)", press)
    if elapsed >= phase_cfg.max_green_s:
        return Decision(cid, now, "advance", green, f"max green ({elapsed:.1f} s)", press)
    own = sum(q.queue for q in queues.values() if q.phase == green and q.method != "unusable")
    others = {ph: press[ph] for ph in state.order if ph != green}
    if not others:
        return Decision(cid, now, "hold", green, "single phase", press)
    waiting = [
        key
        for key, q in queues.items()
        if q.phase != green and q.method != "unusable" and q.queue > 0
    ]
    if waiting and all(key in blocked for key in waiting):
        return Decision(
            cid, now, "hold", green, "others waiting, but their downstream lanes are full", press
        )
    if own <= 0 and waiting:
        return Decision(cid, now, "advance", green, "green phase empty, others waiting", press)
    best = max(others.values())
    if best - press[green] >= params.threshold:
        return Decision(
            cid,
            now,
            "advance",
            green,
            f"pressure {best:.1f} elsewhere vs {press[green]:.1f}",
            press,
        )
    return Decision(cid, now, "hold", green, f"pressure {press[green]:.1f} highest", press)
