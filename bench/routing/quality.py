"""Solution quality of the routing engines on CVRPLIB instances.

For each X instance in ``--instances`` (default: ``../shared/benchmarks/cvrplib`` beside
the repository), every engine solves it with the same time limit; every plan is verified
by ``cityops.routing.check`` and its cost compared with the best-known solution (the
``.sol`` beside the instance). Prints a table, then one JSON line with the mean and max
gap per engine. ``--city-scale`` runs Leuven1 (3000 stops) instead, 60 s per engine.

    .venv/bin/python bench/routing/quality.py [--instances DIR] [--time-limit 5]
    .venv/bin/python bench/routing/quality.py --city-scale

A gap is only computed for a plan that serves every customer and passes the check; the
JSON reports how many plans were feasible.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

from cityops.routing.check import check_plan, plan_cost
from cityops.routing.engines import ENGINES, make_engine
from cityops.routing.vrplib import read_solution, read_vrplib

REPO = Path(__file__).resolve().parents[2]
DEFAULT_INSTANCES = REPO.parent / "shared" / "benchmarks" / "cvrplib"
CITY_INSTANCE = "Leuven1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=Path, default=DEFAULT_INSTANCES, metavar="DIR")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="S",
        help="seconds per engine and instance (default: 5, or 60 with --city-scale)",
    )
    parser.add_argument("--city-scale", action="store_true", help=f"run {CITY_INSTANCE} only")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    limit = args.time_limit or (60.0 if args.city_scale else 5.0)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.city_scale:
        files = [args.instances / f"{CITY_INSTANCE}.vrp"]
    else:
        files = sorted(args.instances.glob("X-*.vrp"))
    files = [f for f in files if f.exists()]
    if not files:
        print(f"no instances in {args.instances}", file=sys.stderr)
        return 2

    gaps: dict[str, list[float]] = {e: [] for e in engines}
    feasible: dict[str, int] = dict.fromkeys(engines, 0)
    times: dict[str, list[float]] = {e: [] for e in engines}
    # CPU seconds the solve got: on a shared machine, well below the wall-clock limit
    cpu: dict[str, list[float]] = {e: [] for e in engines}
    header = f"{'instance':<14}{'n':>6}{'bks':>9}" + "".join(
        f"{e:>18}{'gap%':>8}{'s':>6}" for e in engines
    )
    print(f"time limit {limit:g} s per engine and instance, seed {args.seed}")
    print(header)
    print("-" * len(header))
    for path in files:
        problem, meta = read_vrplib(path)
        _, bks = read_solution(path.with_suffix(".sol"))
        if bks is None:
            print(f"{meta.name}: no Cost in the .sol; skipped", file=sys.stderr)
            continue
        row = f"{meta.name:<14}{len(problem.stops):>6}{bks:>9}"
        for name in engines:
            engine = make_engine(name)
            started, cpu_started = time.monotonic(), time.process_time()
            plan = engine.solve(problem, time_limit_s=limit, seed=args.seed)
            elapsed = time.monotonic() - started
            times[name].append(elapsed)
            cpu[name].append(time.process_time() - cpu_started)
            violations = check_plan(problem, plan)
            cost = plan_cost(problem, plan).total
            if violations or plan.unserved:
                note = f"{len(plan.unserved)} unserved/{len(violations)} violations"
                row += f"{note:>26}{elapsed:>6.1f}"
                for v in violations[:5]:
                    print(f"  {meta.name} {name}: {v}", file=sys.stderr)
                continue
            gap = 100.0 * (cost - bks) / bks
            gaps[name].append(gap)
            feasible[name] += 1
            row += f"{cost:>18}{gap:>8.2f}{elapsed:>6.1f}"
        print(row, flush=True)

    summary = {
        "time_limit_s": limit,
        "instances": len(files),
        "seed": args.seed,
        "engines": {
            name: {
                "mean_gap_pct": round(statistics.fmean(gaps[name]), 3) if gaps[name] else None,
                "max_gap_pct": round(max(gaps[name]), 3) if gaps[name] else None,
                "feasible": feasible[name],
                "mean_time_s": round(statistics.fmean(times[name]), 2) if times[name] else None,
                "mean_cpu_s": round(statistics.fmean(cpu[name]), 2) if cpu[name] else None,
            }
            for name in engines
        },
    }
    print("-" * len(header))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
