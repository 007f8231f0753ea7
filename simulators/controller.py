"""A signal controller's phase state machine that obeys timing commands only when safe.

Pure and event-driven: `step(now)` jumps from one interval change to the next (no work per
tenth of a second) and returns the Indiana events logged on the way; `receive(command)`
applies a `TimingCommand` at the controller's current time. Times are integral tenths of
a second (`ds`) inside, so every event lands on the 0.1 s grid. No clock, no MQTT: the
lightweight emulator (`signal_sim.py`) and the SUMO simulator (`sumo/`) drive it.

Phases are served one after the other in their fixed order, each as green, yellow
(clearance) and red clearance. The safety rules, whatever the commands say:

* yellow and red clearance are never shortened (a command never touches them);
* a green never ends before its min green nor lasts past its max green;
* `advance` before min green is refused (the green goes on; the controller waits for the
  next decision); in adaptive mode a green with no `advance` ends at max green (max-out);
* a plan whose greens are outside [min, max] (or that misses or invents phases) is refused;
* a command that is stale (`issued_at + valid_for_s` at or before the controller's time,
  both in whole tenths: `issued_at` floored, `valid_for_s` rounded), whose `seq` is not
  above the last one of its issuer, or that names another controller is dropped; so a
  command is never accepted only to expire in the same tenth;
* after `valid_for_s` without a fresh command the controller returns to its own plan.

A fresh, in-sequence command keeps the link alive even when its action is refused: the
service is there, only that decision was unsafe. Every refusal and drop is logged with its
reason and counted in `counts`.

Events (parameter = phase, except 131): 1 begin green; at the end of green 4 gap-out is
never logged (there is no local actuation), 5 max-out when an adaptive green reaches max
green, 6 force-off when an adaptive `advance` ends it, then 7 green termination and 8
begin yellow; 9 end yellow with 10 begin red clearance; 11 end red clearance, followed in
the same tenth by the next phase's 1. Fixed-time greens log 7 without a termination
code (as the measures expect). 131 (coordination pattern change) with parameter 1 = own
fixed-time plan, 2 = plan received by command, 3 = adaptive, at start and on every change.

At most one 131 per tenth, carrying the mode in force at the end of that tenth: the mode
may change several times within a tenth (a command expires and the next one arrives, or
two commands of different issuers meet), and `signal_events` keys events by (controller,
ts, code, param), which keeps neither their order nor a repeat. So the 131 of a tenth is
logged once the controller's time has moved past it (in the events of the `step` that
moves on, ahead of that tenth's other events still unread), and a change undone within
its tenth logs nothing. The start's 131 follows the same rule.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Literal, NamedTuple

from cityops.ingest.contract import TimingCommand

__all__ = [
    "BEGIN_GREEN",
    "BEGIN_RED_CLEARANCE",
    "BEGIN_YELLOW",
    "END_GREEN",
    "END_RED_CLEARANCE",
    "END_YELLOW",
    "FORCE_OFF",
    "MAX_OUT",
    "PATTERN_CHANGE",
    "Interval",
    "Mode",
    "Outcome",
    "PhaseTiming",
    "RawEvent",
    "SignalController",
]

logger = logging.getLogger(__name__)

BEGIN_GREEN, MAX_OUT, FORCE_OFF, END_GREEN = 1, 5, 6, 7
BEGIN_YELLOW, END_YELLOW, BEGIN_RED_CLEARANCE, END_RED_CLEARANCE = 8, 9, 10, 11
PATTERN_CHANGE = 131


class Interval(StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED_CLEARANCE = "red_clearance"


class Mode(IntEnum):
    """What the controller follows; the value is event 131's parameter."""

    OWN_PLAN = 1
    COMMANDED_PLAN = 2
    ADAPTIVE = 3


class RawEvent(NamedTuple):
    """An Indiana event: time in tenths of a second since the epoch, code, parameter."""

    ts_ds: int
    code: int
    param: int


@dataclass(frozen=True, slots=True)
class PhaseTiming:
    """One phase's times in seconds; `green_s` is its green in the controller's own plan."""

    phase: int
    green_s: float
    min_green_s: float = 5.0
    max_green_s: float = 60.0
    yellow_s: float = 3.0
    red_clearance_s: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.phase <= 16:
            raise ValueError(f"phase {self.phase} outside 1..16")
        if not 0 < self.min_green_s <= self.max_green_s:
            raise ValueError(f"phase {self.phase}: need 0 < min_green_s <= max_green_s")
        if not self.min_green_s <= self.green_s <= self.max_green_s:
            raise ValueError(f"phase {self.phase}: green_s outside [min_green_s, max_green_s]")
        if self.yellow_s < 3.0 or self.red_clearance_s < 0:
            raise ValueError(f"phase {self.phase}: yellow >= 3 s and red clearance >= 0 s")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a command: `accepted`, `refused` (fresh but unsafe) or `dropped`."""

    status: Literal["accepted", "refused", "dropped"]
    reason: str
    key: str  # short counter key, e.g. "refused:min_green"


def _ds(seconds: float) -> int:
    return round(seconds * 10)


@dataclass
class _Phase:
    phase: int
    min_ds: int
    max_ds: int
    yellow_ds: int
    red_ds: int


@dataclass
class SignalController:
    """One controller's state from `start` (UNIX seconds) on; see the module docstring."""

    controller_id: str
    timings: Sequence[PhaseTiming]
    start: float
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if not self.timings:
            raise ValueError("a controller needs at least one phase")
        numbers = [t.phase for t in self.timings]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"{self.controller_id}: duplicate phase numbers {numbers}")
        self._phases = [
            _Phase(
                t.phase,
                _ds(t.min_green_s),
                _ds(t.max_green_s),
                _ds(t.yellow_s),
                _ds(t.red_clearance_s),
            )
            for t in self.timings
        ]
        self._own = {t.phase: _ds(t.green_s) for t in self.timings}
        self._greens = dict(self._own)
        self.mode = Mode.OWN_PLAN
        self.now_ds = math.floor(self.start * 10)
        self._index = 0
        self.interval = Interval.GREEN
        self._interval_start = self.now_ds
        self._green_end = self.now_ds + self._greens[self._phases[0].phase]
        self._alive_until: int | None = None  # end of the command link's validity
        self._last_seq: dict[str, int] = {}
        self._holding = False
        self._out: list[RawEvent] = [RawEvent(self.now_ds, BEGIN_GREEN, self._phases[0].phase)]
        self._reported: Mode | None = None  # the mode of the last 131 logged
        self._mode_ds: int | None = self.now_ds  # a tenth whose 131 is still to be logged
        self.cycles = 0

    # -- what the caller reads ----------------------------------------------------------

    @property
    def phase(self) -> int:
        """The phase now green, or in yellow/red clearance."""
        return self._phases[self._index].phase

    @property
    def next_phase(self) -> int:
        return self._phases[(self._index + 1) % len(self._phases)].phase

    @property
    def now(self) -> float:
        return self.now_ds / 10

    @property
    def interval_elapsed_s(self) -> float:
        return (self.now_ds - self._interval_start) / 10

    def greens(self) -> dict[int, float]:
        """Green seconds per phase of the plan now in force (own or commanded)."""
        return {p: g / 10 for p, g in self._greens.items()}

    # -- time ---------------------------------------------------------------------------

    def step(self, now: float) -> list[RawEvent]:
        """Advance to `now` (floored to the tenth); the events since the previous call."""
        target = math.floor(round(now * 10, 6))
        while True:
            nxt = self._next_change()
            if nxt > target:
                break
            if nxt > self.now_ds:
                self._log_mode()
            self.now_ds = nxt
            self._change()
        if target > self.now_ds:
            self._log_mode()
        self.now_ds = max(self.now_ds, target)
        out, self._out = self._out, []
        return out

    def _log_mode(self) -> None:
        """Log the 131 of the tenth that is ending, if its mode differs from the last one
        logged; it goes before that tenth's events not yet handed out (none is later)."""
        ds, self._mode_ds = self._mode_ds, None
        if ds is None or self.mode is self._reported:
            return
        self._reported = self.mode
        at = next((i for i, e in enumerate(self._out) if e.ts_ds >= ds), len(self._out))
        self._out.insert(at, RawEvent(ds, PATTERN_CHANGE, int(self.mode)))

    def _next_change(self) -> int:
        p = self._phases[self._index]
        if self.interval is Interval.GREEN:
            end = self._green_end
        elif self.interval is Interval.YELLOW:
            end = self._interval_start + p.yellow_ds
        else:
            end = self._interval_start + p.red_ds
        if self._alive_until is not None:
            end = min(end, max(self._alive_until, self.now_ds))
        return end

    def _change(self) -> None:
        t = self.now_ds
        if self._alive_until is not None and t >= self._alive_until:
            logger.warning(
                "%s: the last valid timing command expired at %s: back to its own fixed-time plan",
                self.controller_id,
                t / 10,
            )
            self.counts["fallback:silence"] += 1
            self._set_mode(Mode.OWN_PLAN, dict(self._own))
            return
        p = self._phases[self._index]
        if self.interval is Interval.GREEN:
            if self.mode is Mode.ADAPTIVE and t - self._interval_start >= p.max_ds:
                if self._holding:
                    logger.info(
                        "%s: phase %d held past max green: ended at %.1f s",
                        self.controller_id,
                        p.phase,
                        p.max_ds / 10,
                    )
                self.counts["max_out"] += 1
                self._out.append(RawEvent(t, MAX_OUT, p.phase))
            self._end_green()
        elif self.interval is Interval.YELLOW:
            self._out.append(RawEvent(t, END_YELLOW, p.phase))
            self._out.append(RawEvent(t, BEGIN_RED_CLEARANCE, p.phase))
            self.interval, self._interval_start = Interval.RED_CLEARANCE, t
        else:
            self._out.append(RawEvent(t, END_RED_CLEARANCE, p.phase))
            self._index = (self._index + 1) % len(self._phases)
            if self._index == 0:
                self.cycles += 1
            self._begin_green()

    def _begin_green(self) -> None:
        t = self.now_ds
        p = self._phases[self._index]
        self.interval, self._interval_start = Interval.GREEN, t
        self._holding = False
        self._out.append(RawEvent(t, BEGIN_GREEN, p.phase))
        self._schedule_green()

    def _end_green(self) -> None:
        t = self.now_ds
        p = self._phases[self._index]
        self._out.append(RawEvent(t, END_GREEN, p.phase))
        self._out.append(RawEvent(t, BEGIN_YELLOW, p.phase))
        self.interval, self._interval_start = Interval.YELLOW, t

    def _schedule_green(self) -> None:
        """When the green now running ends under the current mode, never before min green
        nor after max green, and never in the past."""
        p = self._phases[self._index]
        begin = self._interval_start
        wanted = p.max_ds if self.mode is Mode.ADAPTIVE else self._greens[p.phase]
        self._green_end = max(begin + min(max(wanted, p.min_ds), p.max_ds), self.now_ds)

    def _set_mode(self, mode: Mode, greens: dict[int, int]) -> None:
        self._greens = greens
        if mode is not self.mode:
            self.mode = mode
            if self._mode_ds is None:
                self._mode_ds = self.now_ds  # its 131 is logged when the tenth ends
        if mode is Mode.OWN_PLAN:
            self._alive_until = None
        if self.interval is Interval.GREEN:
            self._schedule_green()

    # -- commands -----------------------------------------------------------------------

    def receive(self, cmd: TimingCommand) -> Outcome:
        """Apply `cmd` at the controller's current time (call `step` up to it first)."""
        outcome = self._receive(cmd)
        self.counts[outcome.key] += 1
        if outcome.status != "accepted":
            logger.warning(
                "%s: timing command seq %d from %s %s: %s",
                self.controller_id,
                cmd.seq,
                cmd.issuer,
                outcome.status,
                outcome.reason,
            )
        return outcome

    def _receive(self, cmd: TimingCommand) -> Outcome:
        if cmd.controller_id != self.controller_id:
            return Outcome("dropped", f"addressed to {cmd.controller_id}", "dropped:wrong_id")
        issued_ds = math.floor(round(cmd.issued_at.timestamp() * 10, 6))
        valid_ds = _ds(cmd.valid_for_s)
        if issued_ds + valid_ds <= self.now_ds:
            return Outcome(
                "dropped",
                f"stale: issued {(self.now_ds - issued_ds) / 10:.1f} s "
                f"ago, valid for {cmd.valid_for_s:g} s",
                "dropped:stale",
            )
        last = self._last_seq.get(cmd.issuer)
        if last is not None and cmd.seq <= last:
            return Outcome("dropped", f"seq {cmd.seq} not above {last}", "dropped:seq")
        self._last_seq[cmd.issuer] = cmd.seq
        # Fresh and in sequence: the link is alive, whatever becomes of the action.
        if cmd.mode == "fallback":
            self._set_mode(Mode.OWN_PLAN, dict(self._own))
            return Outcome("accepted", "own fixed-time plan", "accepted:fallback")
        outcome = self._plan(cmd) if cmd.mode == "plan" else self._adaptive(cmd)
        if self.mode is not Mode.OWN_PLAN:
            self._alive_until = issued_ds + valid_ds
        return outcome

    def _plan(self, cmd: TimingCommand) -> Outcome:
        greens = cmd.greens_s or {}
        known = {str(p.phase): p for p in self._phases}
        if set(greens) != set(known):
            return Outcome(
                "refused",
                f"plan phases {sorted(greens)} are not the controller's {sorted(known)}",
                "refused:plan_phases",
            )
        new: dict[int, int] = {}
        for key, green in greens.items():
            p = known[key]
            # compared in seconds first: a huge green (1e308 s) has no whole tenths
            g = _ds(green) if p.min_ds / 10 - 1 <= green <= p.max_ds / 10 + 1 else -1
            if not p.min_ds <= g <= p.max_ds:
                return Outcome(
                    "refused",
                    f"plan green {green:g} s for phase {p.phase} outside "
                    f"[{p.min_ds / 10:g}, {p.max_ds / 10:g}] s",
                    "refused:plan_bounds",
                )
            new[p.phase] = g
        self._set_mode(Mode.COMMANDED_PLAN, new)
        return Outcome("accepted", "plan", "accepted:plan")

    def _adaptive(self, cmd: TimingCommand) -> Outcome:
        if cmd.phase is None or cmd.action is None:
            return Outcome(
                "refused", "adaptive command without phase and action", "refused:incomplete"
            )
        p = self._phases[self._index]
        if self.mode is not Mode.ADAPTIVE:
            self._set_mode(Mode.ADAPTIVE, self._greens)
        if self.interval is not Interval.GREEN:
            if cmd.phase == p.phase and cmd.action == "advance":
                return Outcome("accepted", "phase already in clearance", "accepted:clearing")
            if cmd.phase == self.next_phase and cmd.action == "hold":
                return Outcome("accepted", "next phase begins after clearance", "accepted:next")
            return Outcome(
                "refused",
                f"{cmd.action} phase {cmd.phase} during the "
                f"{self.interval.value} of phase {p.phase}: clearance is never "
                "shortened",
                "refused:clearance",
            )
        if cmd.phase != p.phase:
            return Outcome(
                "refused",
                f"{cmd.action} phase {cmd.phase} while phase {p.phase} is green",
                "refused:wrong_phase",
            )
        elapsed = self.now_ds - self._interval_start
        if cmd.action == "hold":
            self._holding = True
            return Outcome("accepted", "hold", "accepted:hold")
        if elapsed < p.min_ds:
            return Outcome(
                "refused",
                f"advance after {elapsed / 10:.1f} s of green, before "
                f"min green {p.min_ds / 10:g} s",
                "refused:min_green",
            )
        self._out.append(RawEvent(self.now_ds, FORCE_OFF, p.phase))
        self._end_green()
        return Outcome("accepted", "advance", "accepted:advance")
