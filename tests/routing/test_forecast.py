"""Fill-level forecasts and bin selection on hand-made reading series with known answers."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from cityops.routing.forecast import (
    FillForecast,
    ForecastParams,
    Observation,
    Selection,
    estimate,
    rates_by_group,
    select_bins,
)

T0 = datetime(2024, 3, 4, 0, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)
H = timedelta(hours=1)


def series(
    start_pct: float, rate_pct_per_h: float, hours: float, *, t0: datetime = T0
) -> list[Observation]:
    """A noiseless reading every 15 minutes for `hours` hours (both ends included)."""
    n = round(hours * 4) + 1
    return [
        Observation(t0 + i * STEP, start_pct + rate_pct_per_h * i * 0.25) for i in range(n)
    ]


def forecast(
    bin_id: str, pct: float, rate: float = 1.0, at: datetime = T0, reliable: bool = True
) -> FillForecast:
    return FillForecast(bin_id, at, pct, rate, reliable, "hand-made")


def by_id(selections: Iterable[Selection]) -> dict[str, Selection]:
    return {s.bin_id: s for s in selections}


# -- estimate -----------------------------------------------------------------------------


def test_linear_fill_gives_the_exact_rate_and_time_to_threshold() -> None:
    obs = series(10.0, 0.5, 24.0)
    now = T0 + 24 * H
    f = estimate("B1", obs, now=now)
    assert f.reliable, f.note
    assert f.at == now
    assert f.rate_pct_per_h == pytest.approx(0.5, abs=1e-9)
    assert f.fill_pct == pytest.approx(22.0, abs=1e-9)
    assert f.predict(now + 10 * H) == pytest.approx(27.0)
    assert f.time_to(80.0) == now + 116 * H
    assert f.time_to(100.0) == now + 156 * H


def test_noisy_fill_with_outliers_gives_the_rate_within_tolerance() -> None:
    rng = np.random.default_rng(42)
    obs = []
    for i in range(4 * 48 + 1):
        true = 5.0 + 0.4 * i * 0.25
        value = true + float(rng.normal(0.0, 1.5))
        if i % 17 == 5:
            value = 0.0 if i % 2 else 100.0  # ultrasonic echo from a bag or the lid
        obs.append(Observation(T0 + i * STEP, round(min(100.0, max(0.0, value)), 1)))
    now = T0 + 48 * H
    f = estimate("B1", obs, now=now)
    assert f.reliable, f.note
    assert "since the emptying" not in f.note  # a lone low outlier is no emptying
    assert f.rate_pct_per_h == pytest.approx(0.4, abs=0.03)
    assert f.fill_pct == pytest.approx(5.0 + 0.4 * 48, abs=1.5)


def test_only_the_readings_since_the_emptying_are_used() -> None:
    before = series(20.0, 1.0, 60.0)  # 20 -> 80 %, then the truck comes
    after = series(2.0, 0.5, 12.0, t0=T0 + 60 * H + STEP)
    now = after[-1].ts
    f = estimate("B1", [*after, *before], now=now)  # any order
    assert f.reliable, f.note
    assert "since the emptying" in f.note
    assert f.rate_pct_per_h == pytest.approx(0.5, abs=1e-9)
    assert f.fill_pct == pytest.approx(8.0, abs=1e-9)


def test_an_emptying_of_a_nearly_empty_bin_is_seen_by_the_low_level() -> None:
    before = series(5.0, 0.5, 26.0)  # ends at 18 %: a drop to 1 % is less than 25 points
    after = series(1.0, 0.25, 12.0, t0=T0 + 26 * H + STEP)
    f = estimate("B1", [*before, *after], now=after[-1].ts)
    assert "since the emptying" in f.note
    assert f.rate_pct_per_h == pytest.approx(0.25, abs=1e-9)


def test_an_emptying_just_seen_leaves_too_few_readings() -> None:
    obs = [*series(40.0, 1.0, 30.0), Observation(T0 + 30 * H + STEP, 1.5)]
    f = estimate("B1", obs, now=obs[-1].ts, fallback_rate_pct_per_h=0.3)
    assert not f.reliable
    assert f.fill_pct == pytest.approx(1.5)
    assert f.rate_pct_per_h == pytest.approx(0.3)


def test_stuck_sensor_is_unreliable_and_uses_the_fallback_rate() -> None:
    good = series(30.0, 1.0, 2.0)  # too short a history for an own rate
    stuck = [
        Observation(good[-1].ts + i * STEP, 32.0, "stuck" if i > 8 else None)
        for i in range(1, 21)
    ]
    now = stuck[-1].ts
    f = estimate("B1", [*good, *stuck], now=now, fallback_rate_pct_per_h=0.7)
    assert not f.reliable
    assert "stuck" in f.note
    assert f.at == good[-1].ts  # the last genuine reading, not the repeats
    assert f.fill_pct == pytest.approx(32.0, abs=0.5)
    assert f.rate_pct_per_h == pytest.approx(0.7)
    assert f.predict(now) == pytest.approx(f.fill_pct + 0.7 * 5.0)


def test_stuck_sensor_with_a_long_history_keeps_its_own_rate_but_is_unreliable() -> None:
    good = series(10.0, 0.5, 36.0)
    last = good[-1]
    stuck = [Observation(last.ts + i * STEP, last.fill_pct) for i in range(1, 12)]
    f = estimate("B1", [*good, *stuck], now=stuck[-1].ts, fallback_rate_pct_per_h=2.0)
    assert not f.reliable
    assert "stuck" in f.note
    assert f.at == last.ts
    assert f.rate_pct_per_h == pytest.approx(0.5, abs=1e-9)


def test_a_stuck_spell_that_ended_is_dropped_and_the_forecast_is_reliable() -> None:
    obs = series(10.0, 0.5, 30.0)
    frozen = obs[40].fill_pct
    obs[41:53] = [Observation(o.ts, frozen) for o in obs[41:53]]  # 3 h stuck, then recovers
    f = estimate("B1", obs, now=obs[-1].ts)
    assert f.reliable, f.note
    assert f.rate_pct_per_h == pytest.approx(0.5, abs=1e-9)


def test_a_full_bin_repeating_100_is_not_stuck() -> None:
    obs = [*series(70.0, 1.5, 20.0), *[Observation(T0 + 20 * H + i * STEP, 100.0)
                                       for i in range(1, 13)]]
    f = estimate("B1", obs, now=obs[-1].ts)
    assert f.reliable, f.note
    assert f.predict(obs[-1].ts) == 100.0
    assert f.time_to(100.0) == f.at


def test_sensor_errors_are_ignored_and_low_battery_readings_used() -> None:
    obs = series(10.0, 0.5, 24.0)
    obs = [Observation(o.ts, o.fill_pct, "low_battery") for o in obs]
    obs[-1] = Observation(obs[-1].ts, 0.0, "sensor_error")  # not an emptying
    f = estimate("B1", obs, now=obs[-1].ts)
    assert f.reliable, f.note
    assert f.at == obs[-2].ts
    assert f.rate_pct_per_h == pytest.approx(0.5, abs=1e-9)


def test_single_reading_gives_the_fallback_rate() -> None:
    obs = [Observation(T0, 42.0)]
    f = estimate("B1", obs, now=T0 + H, fallback_rate_pct_per_h=0.25)
    assert not f.reliable
    assert "only 1 readings" in f.note
    assert (f.at, f.fill_pct, f.rate_pct_per_h) == (T0, 42.0, 0.25)
    without = estimate("B1", obs, now=T0 + H)
    assert without.rate_pct_per_h == 0.0
    assert without.time_to(50.0) is None


def test_a_short_history_is_steadied_by_the_fallback() -> None:
    obs = series(10.0, 1.0, 6.0)  # 6 h of a morning peak
    f = estimate("B1", obs, now=obs[-1].ts, fallback_rate_pct_per_h=0.2)
    assert f.reliable, f.note
    assert f.rate_pct_per_h == pytest.approx(0.25 * 1.0 + 0.75 * 0.2)


def test_a_silent_sensor_is_unreliable() -> None:
    obs = series(10.0, 0.5, 24.0)
    f = estimate("B1", obs, now=obs[-1].ts + 7 * H)
    assert not f.reliable
    assert "no reading since" in f.note
    assert f.rate_pct_per_h == pytest.approx(0.5)


def test_readings_after_now_are_ignored_and_none_at_all_is_an_error() -> None:
    obs = series(10.0, 0.5, 24.0)
    f = estimate("B1", obs, now=T0 + 12 * H)
    assert f.at == T0 + 12 * H
    assert f.fill_pct == pytest.approx(16.0)
    with pytest.raises(ValueError, match="no valid reading"):
        estimate("B1", obs, now=T0 - H)
    with pytest.raises(ValueError, match="fallback"):
        estimate("B1", obs, now=T0 + H, fallback_rate_pct_per_h=-1.0)


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="noise_drop_pct"):
        ForecastParams(noise_drop_pct=30.0)
    with pytest.raises(ValueError, match="full_span"):
        ForecastParams(min_span=timedelta(hours=30))


# -- forecasts ----------------------------------------------------------------------------


def test_predict_is_clamped_and_time_to_handles_edges() -> None:
    f = forecast("B1", 90.0, rate=2.0)
    assert f.predict(T0 + 10 * H) == 100.0
    assert f.predict(T0 - 100 * H) == 0.0
    assert f.time_to(50.0) == T0
    assert f.time_to(100.0) == T0 + 5 * H
    assert forecast("B2", 30.0, rate=0.0).time_to(40.0) is None
    with pytest.raises(ValueError, match=r"0\.\.100"):
        f.time_to(120.0)
    with pytest.raises(ValueError, match="rate"):
        forecast("B3", 30.0, rate=-0.1)
    with pytest.raises(ValueError, match="fill_pct"):
        forecast("B4", 100.5)


def test_times_must_be_timezone_aware() -> None:
    naive = datetime(2024, 3, 4, 12, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        Observation(naive, 10.0)
    obs = series(10.0, 0.5, 4.0)
    with pytest.raises(ValueError, match="timezone-aware"):
        estimate("B1", obs, now=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        FillForecast("B1", naive, 10.0, 0.5, True)
    with pytest.raises(ValueError, match="timezone-aware"):
        forecast("B1", 10.0).predict(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        select_bins([], now=naive, next_collection=T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        select_bins([], now=T0, next_collection=naive)


def test_other_zones_are_normalised_to_utc() -> None:
    berlin = timezone(timedelta(hours=1))
    obs = Observation(datetime(2024, 3, 4, 1, 0, tzinfo=berlin), 10.0)
    assert obs.ts == T0
    assert obs.ts.tzinfo is UTC


def test_rates_by_group_is_the_median_of_reliable_forecasts() -> None:
    forecasts = [
        forecast("B1", 10.0, rate=0.1),
        forecast("B2", 10.0, rate=0.3),
        forecast("B3", 10.0, rate=0.2),
        forecast("B4", 10.0, rate=5.0, reliable=False),
        forecast("B5", 10.0, rate=1.0),
        forecast("B6", 10.0, rate=9.0),  # in no group
    ]
    groups = {"B1": "paper", "B2": "paper", "B3": "paper", "B4": "paper", "B5": "glass"}
    assert rates_by_group(forecasts, groups) == {"glass": 1.0, "paper": 0.2}


# -- select_bins --------------------------------------------------------------------------


def test_select_bins_required_optional_and_skipped() -> None:
    now, nxt = T0, T0 + 10 * H  # every bin below gains 10 points by the next collection
    forecasts = [
        forecast("SKIP", 30.0),  # 40 % at the next collection
        forecast("OPT-LOW", 45.0),  # 55 %
        forecast("OPT-HIGH", 60.0),  # 70 %
        forecast("REQ", 75.0),  # 85 %
        forecast("FULL", 95.0),  # 100 % (clamped)
    ]
    chosen = select_bins(forecasts, now=now, next_collection=nxt)
    assert [s.bin_id for s in chosen] == ["FULL", "REQ", "OPT-HIGH", "OPT-LOW"]
    sel = by_id(chosen)
    assert sel["REQ"].required and sel["FULL"].required
    assert not sel["OPT-LOW"].required and not sel["OPT-HIGH"].required
    assert sel["OPT-LOW"].reward == round(1000 * 5 / 30)
    assert sel["OPT-HIGH"].reward == round(1000 * 20 / 30)
    assert sel["REQ"].reward == round(1000 * 35 / 30)
    assert sel["FULL"].reward == round(1000 * 50 / 30)
    assert sel["REQ"].predicted_fill_pct == pytest.approx(85.0)
    assert sel["FULL"].predicted_fill_pct == 100.0
    assert "required" in sel["REQ"].reason and "optional" in sel["OPT-LOW"].reason


def test_optional_rewards_grow_with_the_predicted_fill() -> None:
    levels = [50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 79.0]
    forecasts = [forecast(f"B{p:g}", p, rate=0.0) for p in levels]
    chosen = select_bins(forecasts, now=T0, next_collection=T0 + 24 * H)
    assert all(not s.required for s in chosen)
    rewards = [by_id(chosen)[f"B{p:g}"].reward for p in levels]
    assert rewards == sorted(rewards) and len(set(rewards)) == len(rewards)
    assert rewards[0] >= 1 and rewards[-1] < 1000


def test_select_bins_boundaries() -> None:
    nxt = T0 + 10 * H
    forecasts = [
        forecast("AT-MANDATORY", 70.0),  # exactly 80 % -> required, reward = scale
        forecast("JUST-BELOW", 69.999),  # 79.999 % -> optional, reward capped below scale
        forecast("AT-OPTIONAL", 40.0),  # exactly 50 % -> optional, reward at least 1
        forecast("JUST-SKIPPED", 39.999),
    ]
    sel = by_id(select_bins(forecasts, now=T0, next_collection=nxt))
    assert set(sel) == {"AT-MANDATORY", "JUST-BELOW", "AT-OPTIONAL"}
    assert sel["AT-MANDATORY"].required and sel["AT-MANDATORY"].reward == 1000
    assert not sel["JUST-BELOW"].required and sel["JUST-BELOW"].reward == 999
    assert sel["AT-OPTIONAL"].reward == 1


def test_select_bins_uses_the_level_at_the_next_collection() -> None:
    # Same level now, different rates: only the fast one reaches 80 % in time.
    forecasts = [forecast("FAST", 60.0, rate=2.5), forecast("SLOW", 60.0, rate=0.5)]
    sel = by_id(select_bins(forecasts, now=T0, next_collection=T0 + 8 * H))
    assert sel["FAST"].required
    assert not sel["SLOW"].required
    assert "reached at" in sel["FAST"].reason


def test_select_bins_mentions_unreliable_forecasts() -> None:
    f = FillForecast("B1", T0, 85.0, 0.0, False, "sensor stuck since ...")
    (s,) = select_bins([f], now=T0, next_collection=T0 + H)
    assert s.required
    assert "unreliable: sensor stuck" in s.reason
    assert "reached already" in s.reason


def test_select_bins_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="optional_pct"):
        select_bins([], now=T0, next_collection=T0 + H, optional_pct=80.0)
    with pytest.raises(ValueError, match="before now"):
        select_bins([], now=T0, next_collection=T0 - H)
    with pytest.raises(ValueError, match="duplicate"):
        select_bins([forecast("B1", 1.0), forecast("B1", 2.0)], now=T0, next_collection=T0)
    with pytest.raises(ValueError, match="reward_scale"):
        select_bins([], now=T0, next_collection=T0, reward_scale=1)
