"""Benchmark of the fill-level forecast against the simulator's true fill, 24 hours ahead.

    .venv/bin/python bench/routing/forecast.py [--bins 200] [--days 14] [--seed 1]

Each bin is a `BinSim` (the simulator's pure bin model: fraction rates scaled by size, a
per-bin factor, weekday and hour-of-day pattern, sensor noise, stuck sensors, failing
batteries), driven here without MQTT. A stand-in crew empties, on shift days, the bins
that are at least `fill_threshold_pct` full at 06:00 local time, at a random time before
14:00, so the series contain emptyings. Then, every `--every` hours after a warm-up, each
bin's forecast from its readings up to t (at most `--history-days` back, as the caller
would query) predicts the level at its first reading 24 h later; the error is taken against
the simulator's true level at that reading. Windows with an emptying in between are left
out (no forecast can know of the truck). Baselines in the same run: "last value" (the fill
stays as the last reading) and "fraction rate" (the last reading plus the median rate of
the bin's fraction). The fallback rate of `estimate` is that same fraction median, from a
first pass over all bins at t.

Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from cityops.ingest.contract import BinTelemetry
from cityops.routing.forecast import FillForecast, Observation, estimate, rates_by_group
from cityops.simulators.bin_sim import BinSim
from cityops.simulators.city import Bin
from cityops.simulators.emission import LocalClock
from cityops.simulators.scenario import Scenario, load_scenario

START = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday
HORIZON = timedelta(hours=24)
MANDATORY_PCT = 80.0
METHODS = ("forecast", "last value", "fraction rate")


@dataclass
class Trace:
    """What one bin sent, and the simulator's true level at each reading."""

    spec: Bin
    ts: list[float] = field(default_factory=list)
    obs: list[Observation] = field(default_factory=list)
    true_pct: list[float] = field(default_factory=list)
    emptied: list[float] = field(default_factory=list)


def make_bins(scenario: Scenario, count: int, seed: int) -> list[Bin]:
    """Bins with the scenario's mix of fractions and sizes (positions do not matter here)."""
    rng = np.random.default_rng([seed, 99])
    cfg = scenario.bins
    fractions = list(cfg.fractions)
    f_weights = np.array([cfg.fractions[f] for f in fractions])
    sizes = list(cfg.capacities)
    s_weights = np.array([cfg.capacities[s] for s in sizes])
    out = []
    for i in range(count):
        fraction = fractions[int(rng.choice(len(fractions), p=f_weights / f_weights.sum()))]
        size = sizes[int(rng.choice(len(sizes), p=s_weights / s_weights.sum()))]
        bin_id = f"B{i + 1:04d}"
        out.append(Bin(bin_id, f"S-{bin_id}", 0.0, 0.0, 0, "", "A1", int(size), fraction))
    return out


def simulate(scenario: Scenario, spec: Bin, index: int, seed: int, days: int) -> Trace:
    """Step one bin for `days` days, with the stand-in crew emptying full bins."""
    clock = LocalClock(scenario.zone)
    start = START.timestamp()
    end = start + days * 86400.0
    sim = BinSim(spec, scenario.bins, clock, seed, index, start)
    rng = np.random.default_rng([seed, 98, index])
    shift = scenario.trucks.shift
    local_start = START.astimezone(scenario.zone).replace(hour=0, minute=0, second=0)
    decisions = [
        (local_start + timedelta(days=d)).replace(hour=6).timestamp()
        for d in range(days + 1)
        if (local_start + timedelta(days=d)).weekday() in shift.weekdays
    ]
    threshold = scenario.trucks.fill_threshold_pct
    trace = Trace(spec)
    d, pending = 0, None
    while sim.next_time <= end:
        t_next = sim.next_time
        while d < len(decisions) and decisions[d] <= t_next:
            if pending is None and sim.fill_pct >= threshold:
                pending = decisions[d] + float(rng.uniform(0.0, 8 * 3600.0))
            d += 1
        if pending is not None and pending <= t_next:
            sim.empty(pending)
            trace.emptied.append(pending)
            pending = None
        for emission in sim.step():
            payload = emission.payload
            if isinstance(payload, BinTelemetry):
                trace.ts.append(payload.ts.timestamp())
                trace.obs.append(Observation(payload.ts, payload.fill_pct, payload.fault))
                trace.true_pct.append(sim.fill_pct)
    return trace


@dataclass
class Errors:
    by_method: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, method: str, error: float) -> None:
        self.by_method[method].append(error)


def mae(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bins", type=int, default=200)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenario", default="demo", help="bins settings from this scenario")
    parser.add_argument("--every", type=float, default=6.0, help="hours between start times")
    parser.add_argument("--warmup", type=float, default=2.0, help="days before the first one")
    parser.add_argument("--history-days", type=float, default=7.0)
    args = parser.parse_args(argv)
    if args.days * 24 < args.warmup * 24 + HORIZON / timedelta(hours=1) + args.every:
        parser.error("--days too short for --warmup and a 24 h horizon")

    scenario = load_scenario(args.scenario)
    began = time.perf_counter()
    specs = make_bins(scenario, args.bins, args.seed)
    traces = {s.bin_id: simulate(scenario, s, i, args.seed, args.days) for i, s in enumerate(specs)}
    sim_s = time.perf_counter() - began
    groups = {s.bin_id: s.fraction for s in specs}
    n_readings = sum(len(t.ts) for t in traces.values())
    n_empty = sum(len(t.emptied) for t in traces.values())
    n_stuck = sum(1 for t in traces.values() for o in t.obs if o.fault == "stuck")

    overall = Errors()
    by_fraction: dict[str, Errors] = defaultdict(Errors)
    by_reliability = Errors()
    flagged: dict[str, list[tuple[bool, bool]]] = defaultdict(list)  # (predicted, true)
    n_estimates = 0
    est_s = 0.0
    first = START.timestamp() + args.warmup * 86400.0
    last = START.timestamp() + args.days * 86400.0 - HORIZON.total_seconds()
    horizon_s = HORIZON.total_seconds()
    for t in np.arange(first, last + 1e-6, args.every * 3600.0).tolist():
        now = datetime.fromtimestamp(t, UTC)
        windows: dict[str, list[Observation]] = {}
        for bin_id, tr in traces.items():
            lo = bisect.bisect_left(tr.ts, t - args.history_days * 86400.0)
            hi = bisect.bisect_right(tr.ts, t)
            if hi > lo:
                windows[bin_id] = tr.obs[lo:hi]
        tick = time.perf_counter()
        plain = [estimate(b, obs, now=now) for b, obs in windows.items()]
        group_rates = rates_by_group(plain, groups)
        forecasts: dict[str, FillForecast] = {
            b: estimate(b, obs, now=now, fallback_rate_pct_per_h=group_rates.get(groups[b]))
            for b, obs in windows.items()
        }
        est_s += time.perf_counter() - tick
        n_estimates += len(plain) + len(forecasts)
        for bin_id, f in forecasts.items():
            tr = traces[bin_id]
            j = bisect.bisect_left(tr.ts, t + horizon_s)
            if j >= len(tr.ts) or tr.ts[j] > t + horizon_s + 3600.0:
                continue  # the sensor fell silent
            target_ts = tr.ts[j]
            if any(t < e <= target_ts for e in tr.emptied):
                continue
            true = tr.true_pct[j]
            when = tr.obs[j].ts
            seen = windows[bin_id][-1]
            hours = (when - seen.ts) / timedelta(hours=1)
            rate = group_rates.get(groups[bin_id], 0.0)
            predictions = {
                "forecast": f.predict(when),
                "last value": seen.fill_pct,
                "fraction rate": min(100.0, max(0.0, seen.fill_pct + rate * hours)),
            }
            for method, value in predictions.items():
                overall.add(method, abs(value - true))
                by_fraction[groups[bin_id]].add(method, abs(value - true))
                flagged[method].append((value >= MANDATORY_PCT, true >= MANDATORY_PCT))
            by_reliability.add(
                "reliable" if f.reliable else "unreliable", abs(predictions["forecast"] - true)
            )

    def row(name: str, errs: Errors) -> str:
        n = len(errs.by_method["forecast"])
        cells = "".join(f"{mae(errs.by_method[m]):>15.2f}" for m in METHODS)
        return f"{name:<12}{n:>8}{cells}"

    print(
        f"{args.bins} bins, {args.days} days, seed {args.seed}, scenario {args.scenario}: "
        f"{n_readings} readings, {n_empty} emptyings, {n_stuck} readings flagged stuck "
        f"(simulated in {sim_s:.1f} s)"
    )
    print(f"MAE in percentage points of the level {HORIZON / timedelta(hours=1):g} h ahead")
    print(f"{'fraction':<12}{'n':>8}" + "".join(f"{m:>15}" for m in METHODS))
    for fraction in sorted(by_fraction):
        print(row(fraction, by_fraction[fraction]))
    print(row("all", overall))
    rel = {k: mae(v) for k, v in sorted(by_reliability.by_method.items())}
    counts = {k: len(v) for k, v in sorted(by_reliability.by_method.items())}
    print("forecast by reliability: " + ", ".join(
        f"{k} {rel[k]:.2f} (n={counts[k]})" for k in rel))
    scores: dict[str, dict[str, float]] = {}
    for method in METHODS:
        pairs = flagged[method]
        tp = sum(1 for p, y in pairs if p and y)
        fp = sum(1 for p, y in pairs if p and not y)
        fn = sum(1 for p, y in pairs if y and not p)
        scores[method] = {
            "recall": tp / (tp + fn) if tp + fn else float("nan"),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
        }
        print(
            f"required at >= {MANDATORY_PCT:g}% ({method}): recall {scores[method]['recall']:.3f}, "
            f"precision {scores[method]['precision']:.3f}"
        )
    per_estimate_ms = 1000.0 * est_s / max(1, n_estimates)
    print(f"{n_estimates} estimates in {est_s:.1f} s ({per_estimate_ms:.2f} ms each)")
    result = {
        "bench": "routing.forecast",
        "bins": args.bins,
        "days": args.days,
        "seed": args.seed,
        "scenario": args.scenario,
        "horizon_h": HORIZON / timedelta(hours=1),
        "n": len(overall.by_method["forecast"]),
        "mae": {m: round(mae(overall.by_method[m]), 3) for m in METHODS},
        "mae_by_fraction": {
            fr: {m: round(mae(e.by_method[m]), 3) for m in METHODS}
            for fr, e in sorted(by_fraction.items())
        },
        "mae_forecast_by_reliability": {k: round(v, 3) for k, v in rel.items()},
        "n_by_reliability": counts,
        "required_at_80": {
            m: {k: round(v, 3) for k, v in s.items()} for m, s in scores.items()
        },
        "ms_per_estimate": round(per_estimate_ms, 3),
    }
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
