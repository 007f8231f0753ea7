"""Fill-level forecasts of waste bins and the choice of bins for the next collection run.

Pure functions over frozen dataclasses: no clock, no database, no broker. The caller reads
`bin_readings` (or `bin_state`), builds `Observation`s and passes `now` explicitly.

How a forecast is made (`estimate`):

* Readings after `now` and readings flagged `fault="sensor_error"` (no valid level) are
  ignored; readings flagged `fault="stuck"` and the repeats of a
  run of `stuck_run` or more identical values are dropped, keeping the first value of the
  run, which is the last genuine one (a stuck sensor repeats its last reading). Runs at
  exactly 0 % or 100 % are a saturated ultrasonic reading of an empty or full bin, not a
  stuck sensor, unless the firmware flags them.
* Only the readings since the last emptying are used. An emptying is a drop, from the
  median of the previous readings, of more than `empty_drop_pct` points, or of more than
  `noise_drop_pct` points to below `empty_level_pct`; the reading itself and the upper
  median of the next few readings must both show it, so one low outlier is not taken for
  an emptying (one at the very end is, until more readings tell).
* The rate is the Theil–Sen slope (median of pairwise slopes, over pairs at least half the
  time span apart) of the readings within `window` of the last one: robust to outliers and
  to the sensor's noise, no fitting library needed. A negative slope (noise on a flat
  series) counts as 0. When the readings span less than `full_span`, the own slope is
  shrunk toward the caller's fallback in proportion to the missing span, because a few
  hours of readings mostly measure the daily rhythm of throwing waste away.
* The level at the last good reading is the median of the last few readings carried
  forward along that slope, which damps the noise of the last reading.
* Unreliable, with the note saying why:
  - a sensor stuck at the end of the series: the forecast starts from the last genuine
    reading; its rate is the bin's own if the readings before the fault suffice (they
    describe this bin better than its fraction does), else the fallback;
  - fewer than `min_readings`, or less than `min_span`, of readings since the emptying:
    the rate is the fallback (without one, the slope of the few readings, or 0);
  - no reading for `max_age` (a silent sensor; a truck may have come meanwhile).

`FillForecast.predict` is the physical level, clamped to 0..100: a bin cannot hold more than
its volume, and the waste beyond it is on the pavement. Overflow is asked with
`time_to(100.0)`, which returns when the projected line reaches 100 %.

Not this module's concern: fire (temperature) and tilt alarms, and low batteries. The caller
raises those alarms from the same readings and decides whether such a bin goes on a route;
a tilted bin's fill reading is meaningless and the caller should not forecast it. Readings
with other faults (`low_battery`) still carry a valid fill level and are used.

Which bins to collect (`select_bins`): the level predicted at `next_collection`, the next
chance to collect after the run being planned, decides. At or above `mandatory_pct` the bin
is required; at or above `optional_pct` it is optional with a reward that grows linearly
with the predicted level; below it is left out. The same instant is used for both tests so
that a fast-filling bin ranks above a slow one at the same level now.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from statistics import median

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_PARAMS",
    "FillForecast",
    "ForecastParams",
    "Observation",
    "Selection",
    "estimate",
    "rates_by_group",
    "select_bins",
]

logger = logging.getLogger(__name__)

_HOUR = timedelta(hours=1)
_Floats = npt.NDArray[np.float64]
_Bools = npt.NDArray[np.bool_]
_EMPTY, _FULL = 0.0, 100.0


def _require_aware(value: datetime, what: str) -> datetime:
    """`value` in UTC; a naive datetime is refused (its zone would be a guess)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _hours(delta: timedelta) -> float:
    return delta / _HOUR


@dataclass(frozen=True, slots=True)
class Observation:
    """One fill reading of a bin (a row of `bin_readings`); `ts` is normalised to UTC."""

    ts: datetime
    fill_pct: float
    fault: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", _require_aware(self.ts, "Observation.ts"))
        if not math.isfinite(self.fill_pct):
            raise ValueError(f"fill_pct must be finite, got {self.fill_pct}")


@dataclass(frozen=True, slots=True)
class FillForecast:
    """A bin's fill level as a line: `fill_pct` at `at`, growing by `rate_pct_per_h`.

    `at` is the time of the last good reading (before a stuck run, the run's first reading).
    `reliable` is False when the rate or the level is a guess; `note` says why, or how a
    reliable forecast was made.
    """

    bin_id: str
    at: datetime
    fill_pct: float
    rate_pct_per_h: float
    reliable: bool
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _require_aware(self.at, "FillForecast.at"))
        if not _EMPTY <= self.fill_pct <= _FULL:
            raise ValueError(f"fill_pct must be within 0..100, got {self.fill_pct}")
        if not (math.isfinite(self.rate_pct_per_h) and self.rate_pct_per_h >= 0.0):
            raise ValueError(f"rate_pct_per_h must be finite and >= 0, got {self.rate_pct_per_h}")

    def predict(self, t: datetime) -> float:
        """The level at `t` in percent, clamped to 0..100 (100 = full or overflowing).

        The same line serves times before `at`, e.g. to compare with older readings.
        """
        t = _require_aware(t, "t")
        level = self.fill_pct + self.rate_pct_per_h * _hours(t - self.at)
        return min(_FULL, max(_EMPTY, level))

    def time_to(self, pct: float) -> datetime | None:
        """When the level reaches `pct` (0..100): `at` if it already had, None if never."""
        if not _EMPTY <= pct <= _FULL:
            raise ValueError(f"pct must be within 0..100, got {pct}")
        if self.fill_pct >= pct:
            return self.at
        if self.rate_pct_per_h <= 0.0:
            return None
        return self.at + (pct - self.fill_pct) / self.rate_pct_per_h * _HOUR


@dataclass(frozen=True, slots=True)
class ForecastParams:
    """Tuning of `estimate`; the defaults suit 15-minute readings with ~1.5 points of noise."""

    empty_drop_pct: float = 25.0
    empty_level_pct: float = 10.0
    noise_drop_pct: float = 5.0
    confirm_readings: int = 3
    stuck_run: int = 4
    min_readings: int = 4
    min_span: timedelta = field(default=timedelta(hours=3))
    full_span: timedelta = field(default=timedelta(hours=24))
    max_age: timedelta = field(default=timedelta(hours=6))
    window: timedelta = field(default=timedelta(days=7))
    level_readings: int = 9
    max_points: int = 400

    def __post_init__(self) -> None:
        if not 0.0 < self.noise_drop_pct <= self.empty_drop_pct:
            raise ValueError("need 0 < noise_drop_pct <= empty_drop_pct")
        if not 0.0 <= self.empty_level_pct <= _FULL:
            raise ValueError("empty_level_pct must be within 0..100")
        small = (self.confirm_readings, self.level_readings, self.min_readings)
        if min(small) < 1 or self.stuck_run < 2 or self.max_points < 10:
            raise ValueError(
                "need confirm_readings, level_readings, min_readings >= 1, stuck_run >= 2 "
                "and max_points >= 10"
            )
        spans = (self.min_span, self.full_span, self.max_age, self.window)
        if min(spans) <= timedelta(0) or self.full_span < self.min_span:
            raise ValueError("spans must be positive and full_span >= min_span")


DEFAULT_PARAMS = ForecastParams()


def _stuck_mask(y: _Floats, flagged: _Bools, run: int) -> tuple[_Bools, int]:
    """Which readings to keep, and how many readings at the end were dropped as stuck.

    A run of identical values is stuck if it is `run` or more long (and not a saturated
    0 % or 100 %) or if any reading of it is flagged `stuck`; it keeps only its first
    reading, unless that one is flagged too.
    """
    n = len(y)
    first = np.concatenate([[True], y[1:] != y[:-1]])
    starts = np.flatnonzero(first)
    lengths = np.diff(np.append(starts, n))
    run_id = np.repeat(np.arange(len(starts)), lengths)
    run_flagged = np.bincount(run_id, weights=flagged, minlength=len(starts)) > 0
    saturated = (y[starts] == _EMPTY) | (y[starts] == _FULL)
    stuck = run_flagged | ((lengths >= run) & ~saturated)
    keep = ~stuck[run_id] | (first & ~flagged)
    trailing = int(lengths[-1]) - int(not flagged[starts[-1]]) if stuck[-1] else 0
    return keep, trailing


def _last_emptying(y: _Floats, p: ForecastParams) -> int:
    """Index of the first reading after the last emptying (0 if none is seen)."""
    k = p.confirm_readings
    if len(y) < 2:
        return 0
    # A drop needs y[i] well below the highest of the k readings before it.
    padded = np.concatenate([np.full(k - 1, -np.inf), y[:-1]])
    prev_max = np.lib.stride_tricks.sliding_window_view(padded, k).max(axis=1)
    candidates = np.flatnonzero(y[1:] < prev_max - p.noise_drop_pct) + 1
    for i in candidates[::-1].tolist():
        before = float(np.median(y[max(0, i - k) : i]))
        after_window = np.sort(y[i : i + k])
        after = float(after_window[len(after_window) // 2])  # upper median: cautious
        low = max(float(y[i]), after)
        drop = before - low
        if drop > p.empty_drop_pct or (drop > p.noise_drop_pct and low < p.empty_level_pct):
            return int(i)
    return 0


def _theil_sen(t_h: _Floats, y: _Floats) -> float:
    """Median slope over the pairs at least half the time span apart (`t_h` ascending).

    Pairs close in time mostly measure noise; leaving them out sharpens the estimate and
    keeps the work near n^2/8 pairs.
    """
    n = len(t_h)
    half = float(t_h[-1] - t_h[0]) / 2
    if half <= 0.0:
        return 0.0
    first_j = np.searchsorted(t_h, t_h + half, side="left")
    counts = n - first_j
    total = int(counts.sum())
    i = np.repeat(np.arange(n), counts)
    offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    j = np.repeat(first_j, counts) + offset
    return float(np.median((y[j] - y[i]) / (t_h[j] - t_h[i])))


def _thin(t_h: _Floats, y: _Floats, most: int) -> tuple[_Floats, _Floats]:
    """At most `most` readings, evenly spread by index (deterministic)."""
    if len(t_h) <= most:
        return t_h, y
    idx = np.unique(np.linspace(0, len(t_h) - 1, most).round().astype(np.intp))
    return t_h[idx], y[idx]


def estimate(
    bin_id: str,
    observations: Sequence[Observation],
    *,
    now: datetime,
    fallback_rate_pct_per_h: float | None = None,
    params: ForecastParams = DEFAULT_PARAMS,
) -> FillForecast:
    """The forecast of one bin from its readings up to `now` (in any order).

    `fallback_rate_pct_per_h` (e.g. `rates_by_group` of the bin's fraction) replaces the
    rate when the bin's own readings cannot give one, and steadies a rate from under a
    day of readings. Raises ValueError on a naive `now`, a negative fallback, or no
    reading at all before `now`.
    """
    now = _require_aware(now, "now")
    fallback = fallback_rate_pct_per_h
    if fallback is not None and not (math.isfinite(fallback) and fallback >= 0.0):
        raise ValueError(f"fallback_rate_pct_per_h must be finite and >= 0, got {fallback}")
    obs = sorted(
        (o for o in observations if o.ts <= now and o.fault != "sensor_error"),
        key=lambda o: o.ts,
    )
    if not obs:
        raise ValueError(f"bin {bin_id}: no valid reading at or before {now.isoformat()}")
    y_all = np.fromiter((o.fill_pct for o in obs), float, len(obs))
    flagged = np.fromiter((o.fault == "stuck" for o in obs), bool, len(obs))
    keep, stuck_tail = _stuck_mask(y_all, flagged, params.stuck_run)
    good = np.flatnonzero(keep)
    if not len(good):  # every reading flagged stuck: the first value is the best there is
        good = np.array([0])
    at = obs[int(good[-1])].ts
    t_all = np.fromiter((o.ts.timestamp() for o in obs), float, len(obs))
    t_h = (t_all[good] - t_all[good[-1]]) / 3600.0
    y = y_all[good]
    start = _last_emptying(y, params)
    in_window = t_h[start:] >= -_hours(params.window)
    t_h, y = t_h[start:][in_window], y[start:][in_window]
    span = timedelta(hours=float(t_h[-1] - t_h[0]))

    problems: list[str] = []
    if stuck_tail:
        problems.append(f"sensor stuck since {at.isoformat()} ({stuck_tail} repeated readings)")
    if now - obs[-1].ts > params.max_age:
        problems.append(f"no reading since {obs[-1].ts.isoformat()}")
    few = len(y) < params.min_readings or span < params.min_span
    if few:
        since = " since the emptying" if start else ""
        problems.append(f"only {len(y)} readings over {_hours(span):.1f} h{since}")

    own: float | None = None
    if len(y) >= 2 and span > timedelta(0):
        own = max(0.0, _theil_sen(*_thin(t_h, y, params.max_points)))
    if few or own is None:
        rate, how = (
            (fallback, "fallback rate")
            if fallback is not None
            else (own, "own rate from few readings")
            if own is not None
            else (0.0, "no rate known")
        )
    elif fallback is not None and span < params.full_span:
        w = span / params.full_span
        rate, how = w * own + (1 - w) * fallback, f"own rate weighted {w:.2f} with fallback"
    else:
        rate, how = own, "own rate"
    last = min(params.level_readings, len(y))
    level = float(np.median(y[-last:] - rate * t_h[-last:]))
    level = min(_FULL, max(_EMPTY, level))

    reliable = not problems
    note = (
        "; ".join([*problems, how])
        if problems
        else (
            f"{how}: Theil-Sen over {len(y)} readings, {_hours(span):.1f} h"
            + (" since the emptying" if start else "")
        )
    )
    if not reliable:
        logger.debug("bin %s: unreliable forecast: %s", bin_id, note)
    return FillForecast(bin_id, at, level, rate, reliable, note)


def rates_by_group(
    forecasts: Sequence[FillForecast], groups: Mapping[str, str]
) -> dict[str, float]:
    """Median rate of the reliable forecasts per group (e.g. fraction), by `groups[bin_id]`.

    Bins missing from `groups` are ignored; a group without a reliable forecast is absent.
    """
    rates: dict[str, list[float]] = defaultdict(list)
    for f in forecasts:
        group = groups.get(f.bin_id)
        if f.reliable and group is not None:
            rates[group].append(f.rate_pct_per_h)
    return {g: float(median(r)) for g, r in sorted(rates.items())}


@dataclass(frozen=True, slots=True)
class Selection:
    """A bin chosen for the run: required (must be visited) or optional (worth `reward`)."""

    bin_id: str
    required: bool
    predicted_fill_pct: float
    reward: int
    reason: str


def select_bins(
    forecasts: Sequence[FillForecast],
    *,
    now: datetime,
    next_collection: datetime,
    mandatory_pct: float = 80.0,
    optional_pct: float = 50.0,
    reward_scale: int = 1000,
) -> list[Selection]:
    """The bins worth collecting before `next_collection`; the rest are left out.

    The predicted level p at `next_collection` decides: required if p >= mandatory_pct,
    optional if p >= optional_pct. The reward is
    round(reward_scale * (p - optional_pct) / (mandatory_pct - optional_pct)): at least 1
    and below `reward_scale` for an optional bin, at least `reward_scale` for a required one
    (the price of dropping it when a route cannot take every required bin). Ordered by
    required first, then reward, then bin id. Unreliable forecasts are used as they are;
    the reason says so.
    """
    now = _require_aware(now, "now")
    next_collection = _require_aware(next_collection, "next_collection")
    if next_collection < now:
        raise ValueError("next_collection must not be before now")
    if not 0.0 <= optional_pct < mandatory_pct <= _FULL:
        raise ValueError(
            f"need 0 <= optional_pct < mandatory_pct <= 100, got {optional_pct}, {mandatory_pct}"
        )
    if reward_scale < 2:
        raise ValueError(f"reward_scale must be at least 2, got {reward_scale}")
    ids = [f.bin_id for f in forecasts]
    if len(set(ids)) != len(ids):
        raise ValueError("one forecast per bin: duplicate bin ids")
    band = mandatory_pct - optional_pct
    chosen: list[Selection] = []
    for f in forecasts:
        p = f.predict(next_collection)
        if p < optional_pct:
            continue
        required = p >= mandatory_pct
        scaled = round(reward_scale * (p - optional_pct) / band)
        reward = max(reward_scale, scaled) if required else min(reward_scale - 1, max(1, scaled))
        level_now = f.predict(now)
        if required:
            reached = f.time_to(mandatory_pct)  # never None: p >= mandatory_pct
            when = (
                "already"
                if reached is None or reached <= now
                else (f"at {reached:%Y-%m-%d %H:%M} UTC")
            )
            reason = (
                f"required: {level_now:.0f}% now, {p:.0f}% at next collection "
                f"({mandatory_pct:g}% reached {when})"
            )
        else:
            reason = f"optional: {level_now:.0f}% now, {p:.0f}% at next collection"
        if not f.reliable:
            reason += f"; unreliable: {f.note}"
        chosen.append(Selection(f.bin_id, required, p, reward, reason))
    chosen.sort(key=lambda s: (not s.required, -s.reward, s.bin_id))
    return chosen
