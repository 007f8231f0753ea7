"""Webster's fixed-time plan from measured flows: the baseline the adaptive control must beat.

For phases served one after the other (every phase is critical):

* flow ratio `y_i = q_i / s_i` with `s_i = saturation_vphpl * lanes_i` (1800 veh/h/lane);
* `Y = sum(y_i)`, lost time `L = sum(l_i)`, per phase `l_i = startup_lost_s + yellow_s +
  red_clearance_s - end_gain_s` (2 + Y + AR - 2 = Y + AR by default);
* optimum cycle `C0 = (1.5 L + 5) / (1 - Y)`, rounded up to a whole second and bounded
  to `[min_cycle_s, max_cycle_s]` (`max_cycle_s` when `Y >= 1`, flagged oversaturated);
* effective green `C - L` split in proportion to `y_i` (equally when no flow at all),
  displayed green `G_i = g_i - yellow_i - red_clearance_i + l_i`, then clamped to
  `[min_green_s, max_green_s]` with the remainder given back to the unclamped phases
  in proportion to `y_i`, and rounded to whole seconds by largest remainder. When the
  minimum greens do not fit, the cycle grows to hold them (and shrinks when every phase
  is at its maximum): the plan's `cycle_s` is always the sum of its intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PhaseDemand", "PhaseTiming", "Plan", "webster"]

SATURATION_VPHPL = 1800.0


@dataclass(frozen=True, slots=True)
class PhaseDemand:
    """A phase's design flow (veh/h over all its lanes) and its fixed intervals."""

    phase: int
    flow_vph: float
    lanes: int = 1
    yellow_s: float = 3.0
    red_clearance_s: float = 1.0
    min_green_s: float = 5.0
    max_green_s: float = 120.0

    def __post_init__(self) -> None:
        if self.flow_vph < 0 or self.lanes < 1:
            raise ValueError(f"phase {self.phase}: need flow_vph >= 0 and lanes >= 1")
        if not 0 < self.min_green_s <= self.max_green_s:
            raise ValueError(f"phase {self.phase}: need 0 < min_green_s <= max_green_s")


@dataclass(frozen=True, slots=True)
class PhaseTiming:
    phase: int
    flow_ratio: float
    green_s: int
    yellow_s: float
    red_clearance_s: float

    @property
    def interval_s(self) -> float:
        return self.green_s + self.yellow_s + self.red_clearance_s


@dataclass(frozen=True, slots=True)
class Plan:
    """A fixed-time plan: `cycle_s` is the sum of the phase intervals."""

    optimum_cycle_s: float  # Webster's C0 before rounding and bounds (inf if Y >= 1)
    cycle_s: float
    lost_time_s: float
    critical_flow_ratio: float  # Y
    oversaturated: bool
    phases: tuple[PhaseTiming, ...]


def webster(
    demands: Sequence[PhaseDemand], *, saturation_vphpl: float = SATURATION_VPHPL,
    min_cycle_s: float = 40.0, max_cycle_s: float = 120.0,
    startup_lost_s: float = 2.0, end_gain_s: float = 2.0,
) -> Plan:
    """Webster's plan for phases served in the given order (see the module docstring)."""
    if not demands:
        raise ValueError("need at least one phase")
    if not 0 < min_cycle_s <= max_cycle_s:
        raise ValueError("need 0 < min_cycle_s <= max_cycle_s")
    ys = [d.flow_vph / (saturation_vphpl * d.lanes) for d in demands]
    big_y = sum(ys)
    lost = [startup_lost_s + d.yellow_s + d.red_clearance_s - end_gain_s for d in demands]
    big_l = sum(lost)
    oversaturated = big_y >= 1.0
    c0 = math.inf if oversaturated else (1.5 * big_l + 5.0) / (1.0 - big_y)
    cycle = max_cycle_s if oversaturated else min(max(math.ceil(c0), min_cycle_s), max_cycle_s)
    # displayed green available to all phases
    available = cycle - sum(d.yellow_s + d.red_clearance_s for d in demands)
    weights = ys if big_y > 0 else [1.0] * len(demands)
    greens = _split(available, weights, [d.min_green_s for d in demands],
                    [d.max_green_s for d in demands])
    rounded = _round_keeping_sum(greens)
    timings = tuple(
        PhaseTiming(d.phase, y, g, d.yellow_s, d.red_clearance_s)
        for d, y, g in zip(demands, ys, rounded, strict=True)
    )
    return Plan(
        optimum_cycle_s=c0,
        cycle_s=round(sum(t.interval_s for t in timings), 1),
        lost_time_s=big_l,
        critical_flow_ratio=big_y,
        oversaturated=oversaturated,
        phases=timings,
    )


def _split(
    total: float, weights: Sequence[float], lo: Sequence[float], hi: Sequence[float]
) -> list[float]:
    """`total` in proportion to `weights`, each share clamped to [lo, hi] (water filling)."""
    n = len(weights)
    fixed: dict[int, float] = {}
    while True:
        free = [i for i in range(n) if i not in fixed]
        rest = total - sum(fixed.values())
        wsum = sum(weights[i] for i in free)
        share = {
            i: rest * weights[i] / wsum if wsum > 0 else rest / len(free) for i in free
        }
        # clamp the most violated side first, then recompute the others
        low = [i for i in free if share[i] < lo[i]]
        high = [i for i in free if share[i] > hi[i]]
        if not low and not high:
            return [fixed[i] if i in fixed else share[i] for i in range(n)]
        for i in low or high:
            fixed[i] = lo[i] if low else hi[i]
        if len(fixed) == n:
            return [fixed[i] for i in range(n)]


def _round_keeping_sum(values: Sequence[float]) -> list[int]:
    """Whole seconds whose sum is the rounded sum (largest remainder first)."""
    target = round(sum(values))
    floors = [math.floor(v + 1e-9) for v in values]
    order = sorted(range(len(values)), key=lambda i: (floors[i] - values[i], i))
    for i in order[: max(0, target - sum(floors))]:
        floors[i] += 1
    return floors
