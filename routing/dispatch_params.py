"""The dispatch policy's tuning (`routing/dispatch.py`), in a module of its own so that
command lines can show the defaults without importing the planner."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

from cityops.routing.rows import TruckRow

__all__ = ["DEFAULT_DISPATCH", "DispatchParams"]


@dataclass(frozen=True)
class DispatchParams:
    """Tuning of `decide`; the defaults are the daily plan's (see `docs/routing.md`).

    The thresholds were set with the savings benchmark (`bench/routing/savings.py`,
    `docs/performance.md`): 95 % / 70 % drove 13-18 % fewer km than 80 % / 60 % on two
    seeds, with no overflow in either.
    """

    workdays: frozenset[int] = frozenset({0, 1, 2, 3, 4, 5})  # Monday..Saturday
    truck_workdays: Mapping[str, frozenset[int]] = field(default_factory=dict)
    mandatory_pct: float = 95.0  # predicted fill at the next chance's deadline
    optional_pct: float = 70.0
    reward_scale: int = 1000  # metres of route an optional bin at mandatory_pct is worth
    min_optional_load: float = 0.75  # of a truck's capacity: an optional-only round
    max_loads_per_truck: float = 4.0  # selected litres per truck before a second goes
    # Hours into the next chance's shift by which its round is counted on to reach a bin
    # (the deadline the mandatory test looks to), for every fraction. None: learned per
    # fraction from its recent rounds (`dispatch.reach_from_history`), else the end of
    # the latest shift (the worst case, a bin last on a round that takes the shift).
    reach_within_h: float | None = None
    # Metres of route a bin is worth, when it joins a round going today, that would pass
    # mandatory_pct before the deadline of the round that today's bins, filling again,
    # send out anyway (it would send a round out before that one): of the order of what
    # a round costs (`make bench-savings` fits 2.6-3.2 km a round plus 0.22-0.25 km an
    # emptied bin on the demo city, docs/performance.md). 0: such bins join only as
    # ordinary optional bins.
    ahead_reward: int = 2000
    # How far the look-ahead looks at most, in days from the plan's time (a forecast is
    # a line through up to a week of readings; further out it is a guess).
    ahead_days: float = 7.0

    def __post_init__(self) -> None:
        days = [self.workdays, *self.truck_workdays.values()]
        if not self.workdays or any(not d <= frozenset(range(7)) for d in days):
            raise ValueError("workdays must be a non-empty set of weekdays 0 (Monday)..6")
        if not 0.0 <= self.optional_pct < self.mandatory_pct <= 100.0:
            raise ValueError("need 0 <= optional_pct < mandatory_pct <= 100")
        if (
            self.reward_scale < 2
            or self.min_optional_load <= 0
            or self.max_loads_per_truck <= 0
            or self.ahead_reward < 0
            or self.ahead_days <= 0
            or (self.reach_within_h is not None and self.reach_within_h <= 0)
        ):
            raise ValueError(
                "need reward_scale >= 2, min_optional_load > 0, max_loads_per_truck > 0, "
                "ahead_reward >= 0, ahead_days > 0, reach_within_h > 0"
            )

    def works(self, truck: TruckRow, day: date) -> bool:
        return day.weekday() in self.truck_workdays.get(truck.truck_id, self.workdays)


DEFAULT_DISPATCH = DispatchParams()
