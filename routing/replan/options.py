"""The re-planning rules' tuning: thresholds of the triggers, the stability rule, the
planning options of the problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from cityops.routing.planning import PlanningOptions

__all__ = ["ReplanOptions"]


@dataclass(frozen=True)
class ReplanOptions:
    overflow_pct: float = 95.0
    fire_c: float = 70.0
    late_s: int = 15 * 60
    fire_within_s: int = 30 * 60
    skip_retry_s: int = 30 * 60
    # A skipped bin's level *now* decides: this full, it is required on the retry, else
    # optional with the daily plan's reward. Lower than the daily plan's 95 % / 70 %
    # (routing/dispatch.py), which are *predicted* levels at the end of the next chance's
    # shift: a bin 80 % full now is at or past 95 % by then at the rates seen here.
    mandatory_pct: float = 80.0
    optional_pct: float = 50.0
    reward_scale: int = 1000
    eta_tolerance_s: int = 10 * 60  # a route whose ETAs move more than this is re-sent
    done_margin: timedelta = timedelta(hours=2)
    # A bin emptied today re-plans again only on a reading taken this long after the
    # emptying (readings every 15 minutes, so an earlier one can be late or taken during
    # it), and once the emptying has been known this long; a route version made less than
    # this after an emptying became known counts the bin's stop as done (emptied_for).
    refill_after: timedelta = timedelta(minutes=30)
    at_stop_m: float = 30.0  # a truck this close to its next stop is serving it
    full_pct: float = 90.0  # a truck this full keeps the unload it drives to
    stable_pct: float = 1.0  # a new order must save this much of the remaining duration ...
    stable_s: int = 3 * 60  # ... and at least this many seconds (see stabilize)
    planning: PlanningOptions = field(default_factory=PlanningOptions)

    def __post_init__(self) -> None:
        if not 0 < self.optional_pct < self.mandatory_pct <= 100:
            raise ValueError("need 0 < optional_pct < mandatory_pct <= 100")
        for name in ("late_s", "fire_within_s", "skip_retry_s", "eta_tolerance_s", "stable_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.refill_after <= timedelta(0) or self.done_margin < timedelta(0):
            raise ValueError("need refill_after > 0 and done_margin >= 0")
        if self.at_stop_m < 0 or self.stable_pct < 0 or not 0 < self.full_pct <= 100:
            raise ValueError("need at_stop_m >= 0, stable_pct >= 0 and 0 < full_pct <= 100")
