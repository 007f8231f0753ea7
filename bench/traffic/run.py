"""Traffic control benchmark: SUMO 3x3 grid, Webster vs SUMO actuated vs adaptive (max-pressure).

For each demand (veh/h) and seed:

1. warm-up: our controllers on a 25 s / 25 s fixed-time plan, run `--warmup-discard`
   seconds (default one 15-minute bin) longer than the benchmark and ending where it ends;
   the first, filling-up part is discarded, then per controller and phase the peak
   15-minute volume of the loaded network from our own measures ->
   `cityops.traffic.webster` plan (all periods aligned to the 15-minute bins, so no bin is
   a partial one);
2. `webster`: that plan as every controller's fixed-time plan;
3. `actuated`: SUMO's own actuated programs (same yellow, red clearance, min/max green);
4. `adaptive`: `cityops traffic control --clock mqtt` as a subprocess over the real broker,
   the simulator in lockstep (tick every 2 s); the controllers' own plan is the Webster one;
5. `adaptive_10pct_failed`: the same with 10 % of the detectors silent.

Prints per run SUMO's figures (mean time loss, stops, throughput) and, for the Webster and
adaptive runs, the ATSPM measures from `cityops.traffic.measures` (AoG, split failures,
approach delay); ends with one JSON line of the means per control mode.

    .venv/bin/python bench/traffic/run.py                     # 3600 and 4800 veh/h, seeds 1-3, 1 h
    .venv/bin/python bench/traffic/run.py --quick             # 4800 veh/h, seed 1, 15 min
    .venv/bin/python bench/traffic/run.py --quick --no-links  # without signal_links

The registry is seeded with the links between the grid's junctions (`signal_links`, for
max-pressure's downstream queues) unless `--no-links` (then the service runs
longest-queue-first). Their shares: `--turn-shares equal` (default: each movement of a
lane alike; on this symmetric grid that decides exactly as without links) or `demand`
(in proportion to the movements of the run's own trips, routed on the shortest path: the
turning counts a traffic survey would give).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import psycopg
import sumolib

from cityops.ingest.config import Settings, load_settings
from cityops.ingest.db import ensure_database
from cityops.simulators.sumo.mqtt import MqttBus
from cityops.simulators.sumo.network import GridSpec, write_demand
from cityops.simulators.sumo.registry import seed_grid
from cityops.simulators.sumo.sim import RunConfig, RunResult, prepare, run
from cityops.traffic.cli import webster_demands
from cityops.traffic.events import Event, clean
from cityops.traffic.measures import BIN_S, phase_measures
from cityops.traffic.repository import load_config
from cityops.traffic.webster import webster

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: common.py
from common import migrate_database

REPO = Path(__file__).resolve().parents[2]
WORK = Path(tempfile.gettempdir()) / f"cityops-sumo-{os.getuid()}"


def _db_url(base: str, name: str) -> str:
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}"


def _atspm(
    result: RunResult, conn: psycopg.Connection[tuple[object, ...]], start: float, end: float
) -> dict[str, float | None]:
    aog = arrivals = 0
    split_failures = cycles = 0
    delay = 0.0
    for cid, raw in result.events.items():
        config = load_config(conn, cid)
        events = clean([Event(e.ts_ds / 10, e.code, e.param) for e in raw], config).events
        for b in phase_measures(events, config, start, end):
            aog += b.arrivals_on_green
            arrivals += b.arrivals_in_cycles
            delay += b.delay_total_s
            split_failures += b.split_failures or 0
            cycles += b.cycles
    return {
        "pct_aog": round(100.0 * aog / arrivals, 1) if arrivals else None,
        "split_failures": split_failures,
        "split_failure_pct": round(100.0 * split_failures / cycles, 1) if cycles else None,
        "approach_delay_s_per_veh": round(delay / arrivals, 2) if arrivals else None,
    }


def _webster_greens(
    result: RunResult,
    conn: psycopg.Connection[tuple[object, ...]],
    start: float,
    end: float,
    flow_ratios: list[float] | None = None,
) -> dict[str, dict[int, float]]:
    """Each controller's Webster greens; appends each plan's Y to `flow_ratios`."""
    greens = {}
    for cid, raw in result.events.items():
        config = load_config(conn, cid)
        events = clean(
            [Event(e.ts_ds / 10, e.code, e.param) for e in raw if start <= e.ts_ds / 10 < end],
            config,
        ).events
        plan = webster(
            webster_demands(config, phase_measures(events, config, start, end)),
            min_cycle_s=40.0,
            max_cycle_s=120.0,
        )
        greens[cid] = {t.phase: float(t.green_s) for t in plan.phases}
        if flow_ratios is not None:
            flow_ratios.append(plan.critical_flow_ratio)
    return greens


def _demand_turn_counts(
    net_file: Path, vph: float, duration_s: float, seed: int
) -> Counter[tuple[str, str]]:
    """Vehicles per movement (incoming edge, outgoing edge) of the trips `run` will drive
    (same generator and seed), each routed on its shortest path."""
    trips = WORK / f"trips_turns_{vph:g}_{seed}_{duration_s:g}.xml"
    write_demand(trips, net_file, vph, duration_s, seed)
    net = sumolib.net.readNet(str(net_file))
    paths: dict[tuple[str, str], list[str]] = {}
    counts: Counter[tuple[str, str]] = Counter()
    for trip in sumolib.xml.parse_fast(str(trips), "trip", ["id", "from", "to"]):
        od = (trip.attr_from, trip.to)
        if od not in paths:
            path, _cost = net.getShortestPath(net.getEdge(od[0]), net.getEdge(od[1]))
            paths[od] = [e.getID() for e in path or ()]
        counts.update(itertools.pairwise(paths[od]))
    return counts


def _start_control(settings: Settings, db_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CITYOPS_DATABASE_URL": db_url,
        "CITYOPS_TOPIC_PREFIX": settings.topic_prefix,
    }
    proc = subprocess.Popen(
        [
            str(REPO / ".venv/bin/cityops"),
            "traffic",
            "control",
            "--clock",
            "mqtt",
            "--summary-every",
            "3600",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(WORK / "control.log", "ab"),  # noqa: SIM115
    )
    time.sleep(3.0)  # connect and read the registry before the first tick
    if proc.poll() is not None:
        raise RuntimeError(f"cityops traffic control exited: see {WORK / 'control.log'}")
    return proc


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--vph", type=float, nargs="+", default=[3600.0, 4800.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument(
        "--warmup-discard",
        type=float,
        default=BIN_S,
        help="seconds of the Webster warm-up run (empty network filling up) not measured; "
        "a multiple of 900",
    )
    ap.add_argument("--quick", action="store_true", help="4800 veh/h, seed 1, 900 s")
    ap.add_argument("--no-adaptive", action="store_true")
    ap.add_argument(
        "--no-links",
        action="store_true",
        help="seed no signal_links (downstream queues count as 0: longest-queue-first)",
    )
    ap.add_argument(
        "--database",
        default="cityops_bench_traffic",
        help="database (created and migrated if missing; its registry is overwritten); "
        "set TMPDIR too to run two benchmarks at once",
    )
    ap.add_argument(
        "--turn-shares",
        choices=["equal", "demand"],
        default="equal",
        help="shares of the links: each movement of a lane alike, or by the trips' routes",
    )
    args = ap.parse_args()
    if args.quick:
        args.vph, args.seeds, args.duration = [4800.0], [1], 900.0
    if args.warmup_discard < 0 or args.warmup_discard % BIN_S or args.duration % BIN_S:
        ap.error("--warmup-discard and --duration must be multiples of 900 s")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    base = load_settings()
    db_url = _db_url(base.database_url, args.database)
    ensure_database(db_url)
    migrate_database(db_url)
    grid = GridSpec()
    WORK.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    t_all = time.monotonic()
    for vph in args.vph:
        for seed in args.seeds:
            # bin-aligned, in the past (warm-up included)
            start = math.floor((time.time() - args.duration - 60.0) / BIN_S) * BIN_S
            end = start + args.duration
            warm_start = start - args.warmup_discard
            common = {
                "start": start,
                "work_dir": WORK,
                "grid": grid,
                "vph": vph,
                "seed": seed,
                "duration_s": args.duration,
            }
            net_file, junctions = prepare(RunConfig(**common))  # type: ignore[arg-type]
            turns = (
                _demand_turn_counts(net_file, vph, args.duration, seed)
                if args.turn_shares == "demand"
                else None
            )
            with psycopg.connect(db_url) as conn:
                seed_grid(conn, grid, junctions, links=not args.no_links, turn_counts=turns)
                warm = run(
                    RunConfig(
                        **{
                            **common,
                            "start": warm_start,
                            "duration_s": args.duration + args.warmup_discard,
                        },
                        keep_events=True,
                    )  # type: ignore[arg-type]
                )
                # measured over the loaded part only (the warm-up's last `duration` seconds)
                ys: list[float] = []
                greens = _webster_greens(warm, conn, start, end, ys)
                cycle = {round(sum(g.values()) + 10.0) for g in greens.values()}
                print(
                    f"\n== {vph:g} veh/h, seed {seed}: Webster cycles {sorted(cycle)} s "
                    f"(critical flow ratio Y {min(ys):.2f}-{max(ys):.2f}; C0 = (1.5 L + 5) / "
                    "(1 - Y), L = 10 s, at least 40 s)"
                )
                runs: list[tuple[str, RunResult]] = []
                runs.append(("webster", run(RunConfig(**common, greens=greens, keep_events=True))))  # type: ignore[arg-type]
                runs.append(("actuated", run(RunConfig(**common, control="actuated"))))  # type: ignore[arg-type]
                if not args.no_adaptive:
                    for name, failed in (("adaptive", 0.0), ("adaptive_10pct_failed", 0.1)):
                        settings = base.model_copy(
                            update={
                                "database_url": db_url,
                                "topic_prefix": f"bench-{uuid.uuid4().hex[:8]}",
                            }
                        )
                        proc = _start_control(settings, db_url)
                        bus = MqttBus(
                            settings,
                            [j.controller_id for j in junctions],
                            f"bench-sumo-{uuid.uuid4().hex[:6]}",
                        )
                        try:
                            runs.append(
                                (
                                    name,
                                    run(
                                        RunConfig(
                                            **common,
                                            greens=greens,
                                            control="commands",  # type: ignore[arg-type]
                                            failed_share=failed,
                                            keep_events=True,
                                        ),
                                        bus,
                                    ),
                                )
                            )
                        finally:
                            bus.close(end)
                            proc.send_signal(signal.SIGTERM)
                            proc.wait(30)
                for name, r in runs:
                    row: dict[str, object] = {"mode": name, **r.summary()}
                    if r.events and name != "actuated":
                        row.update(_atspm(r, conn, start, end))
                    rows.append(row)
                    print(
                        f"{name:22s} time loss {row['mean_time_loss_s']:6} s/veh, stops "
                        f"{row['mean_stops']:5}, throughput {row['throughput_vph']:7} veh/h, "
                        f"arrived {row['arrived']}, in network {row['in_network']}, "
                        f"AoG {row.get('pct_aog', '-')}%, split failures "
                        f"{row.get('split_failures', '-')}, approach delay "
                        f"{row.get('approach_delay_s_per_veh', '-')} s/veh, "
                        f"commands {row['commands']}, wall {row['wall_s']} s",
                        flush=True,
                    )
    by_mode: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for key in (
            "mean_time_loss_s",
            "mean_stops",
            "throughput_vph",
            "pct_aog",
            "split_failures",
            "approach_delay_s_per_veh",
        ):
            v = row.get(key)
            if isinstance(v, int | float) and not math.isnan(v):
                by_mode[f"{row['mode']}@{row['vph']:g}"][key].append(float(v))
    out = {
        mode: {k: round(statistics.fmean(v), 2) for k, v in figs.items()}
        for mode, figs in by_mode.items()
    }
    for vph in args.vph:
        w = out.get(f"webster@{vph:g}", {}).get("mean_time_loss_s")
        a = out.get(f"adaptive@{vph:g}", {}).get("mean_time_loss_s")
        if w and a:
            out[f"adaptive@{vph:g}"]["delay_change_vs_webster_pct"] = round(100 * (a - w) / w, 1)
    print(
        json.dumps(
            {
                "bench": "traffic",
                "duration_s": args.duration,
                "seeds": args.seeds,
                "links": "none" if args.no_links else args.turn_shares,
                "wall_s": round(time.monotonic() - t_all, 1),
                "modes": out,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
