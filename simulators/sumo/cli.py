"""`cityops traffic sumo`: run a SUMO network (the grid, or the city's OSM extract)
whose traffic lights are our controllers."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cityops.simulators.sumo.osm import OsmNetwork

__all__ = ["add_parser"]

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
Runs a SUMO grid (netgenerate, n x n junctions with traffic lights, two lanes per
direction) whose signals are cityops controllers: each junction logs Indiana events (phase
events of its state machine, detector on/off of its stop-bar and advance loops at 0.1 s)
and publishes them on {prefix}/v1/signal/{id}/events once per simulated second; it obeys
timing commands on {prefix}/v1/signal/{id}/cmd/timing under the controller's safety rules
and falls back to its own fixed-time plan when they stop.

--control fixed     our controllers on their fixed-time plans (commands still obeyed)
--control commands  the same, and with --clock lockstep the simulation waits at every
                    decision step (tick on {prefix}/v1/sim/clock) for a command from each
                    controller (up to --tick-timeout wall seconds)
--control actuated  SUMO's own actuated programs (reference; no phase events)

--network grid     the generated grid (controllers GRID-A0 ..)
--network osm      the city's OpenStreetMap extract (--osm-file, else CITYOPS_OSM_FILE,
                   else the bundled one) converted by netconvert; its signalised
                   junctions with two approach axes are controllers OSM-<node id>, the
                   others keep SUMO's own fixed program (see docs/traffic.md)

Simulated time starts at --start (default: now minus the duration, so no event is stamped
in the future). Prints progress and a summary; the last line is the summary as JSON.
"""


def add_parser(sub: Any) -> None:
    """Register `sumo` under `cityops traffic`."""
    p = sub.add_parser(
        "sumo",
        help="run SUMO (the grid or the city's OSM extract) with cityops controllers over MQTT",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--network",
        choices=("grid", "osm"),
        default="grid",
        help="the generated grid (default) or the city's OSM extract",
    )
    p.add_argument("--grid", type=int, default=3, help="junctions per side (default 3)")
    p.add_argument(
        "--osm-file",
        type=Path,
        help="with --network osm: the .osm.pbf extract (default CITYOPS_OSM_FILE or bundled)",
    )
    p.add_argument(
        "--vph",
        type=float,
        default=3600.0,
        help="vehicles per hour entering the grid (default 3600)",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (demand and SUMO)")
    p.add_argument(
        "--duration", type=float, default=3600.0, help="simulated seconds (default 3600)"
    )
    p.add_argument("--control", choices=("fixed", "actuated", "commands"), default="fixed")
    p.add_argument("--clock", choices=("lockstep", "realtime"), default="lockstep")
    p.add_argument("--step", type=float, default=0.1, help="SUMO step in seconds (default 0.1)")
    p.add_argument(
        "--decision-interval",
        type=float,
        default=2.0,
        help="lockstep tick every S simulated seconds (default 2)",
    )
    p.add_argument(
        "--tick-timeout",
        type=float,
        default=2.0,
        help="wall seconds to wait for the commands of a tick (default 2)",
    )
    p.add_argument(
        "--green",
        type=float,
        default=25.0,
        help="own fixed-time green of each phase in seconds (default 25)",
    )
    p.add_argument(
        "--fail-detectors",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of detectors that never report (default 0)",
    )
    p.add_argument("--start", metavar="ISO", help="simulated start time (default: now - duration)")
    p.add_argument(
        "--seed-registry",
        action="store_true",
        help="write the network's controllers, phases and detectors into the database "
        "registry first (CITYOPS_DATABASE_URL)",
    )
    p.add_argument(
        "--registry-only",
        action="store_true",
        help="with --seed-registry: only write the registry, do not simulate",
    )
    p.add_argument("--no-mqtt", action="store_true", help="simulate without the broker")
    p.add_argument(
        "--work-dir",
        type=Path,
        help="where generated networks go (default: a cache under the temp dir)",
    )
    p.set_defaults(func=_cmd)


def _fail(message: str) -> int:
    print(f"cityops traffic sumo: {message}", file=sys.stderr)
    return 2


def _reason(exc: Exception) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        lines = [ln for ln in str(exc.stderr or "").splitlines() if ln.startswith("Error")]
        return "; ".join(lines[:3]) or f"netconvert exited with {exc.returncode}"
    return str(exc)


def _osm_network(args: argparse.Namespace, configured: Path | None, work: Path) -> OsmNetwork:
    from cityops.routing.network import default_extract
    from cityops.simulators.sumo.osm import OsmSpec, build_osm_network

    path = args.osm_file or configured or default_extract()
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    tls_type = "actuated" if args.control == "actuated" else "static"
    return build_osm_network(path, work, OsmSpec(tls_type=tls_type))


def _cmd(args: argparse.Namespace) -> int:
    from datetime import datetime

    from cityops.ingest.config import load_settings
    from cityops.simulators.sumo.mqtt import MqttBus
    from cityops.simulators.sumo.network import GridSpec
    from cityops.simulators.sumo.sim import RunConfig, RunResult, prepare, run

    try:
        grid = GridSpec(size=args.grid, green_s=args.green)
        if args.start:
            start = datetime.fromisoformat(args.start).timestamp()
        elif args.clock == "realtime":
            start = math.floor(time.time())
        else:
            start = math.floor(time.time() - args.duration - 5.0)
        work = args.work_dir or Path(tempfile.gettempdir()) / f"cityops-sumo-{os.getuid()}"
        cfg = RunConfig(
            start=start,
            work_dir=work,
            grid=grid,
            vph=args.vph,
            seed=args.seed,
            duration_s=args.duration,
            step_s=args.step,
            control=args.control,
            clock=args.clock,
            decision_s=args.decision_interval,
            tick_timeout_s=args.tick_timeout,
            failed_share=args.fail_detectors,
        )
    except ValueError as exc:
        return _fail(str(exc))
    settings = load_settings()
    osm_net = None
    if args.network == "osm":
        try:
            osm_net = _osm_network(args, settings.osm_file, work)
        except (OSError, RuntimeError, ValueError, subprocess.CalledProcessError) as exc:
            return _fail(f"cannot convert the OSM extract: {_reason(exc)}")
        cfg = dataclasses.replace(cfg, network=osm_net)
        print(
            f"OSM network: {osm_net.edges} edges, {len(osm_net.junctions)} controllers, "
            f"{len(osm_net.left_to_sumo)} traffic lights left to SUMO, "
            f"{len(osm_net.sources)} fringe sources, {len(osm_net.sinks)} sinks",
            flush=True,
        )
        if not osm_net.sources or not osm_net.sinks:
            return _fail("the OSM network has no fringe edges for demand")
    _, junctions = prepare(cfg)
    if args.seed_registry:
        import psycopg

        from cityops.simulators.sumo.registry import seed_grid, seed_osm

        try:
            with psycopg.connect(settings.database_url) as conn:
                if osm_net is not None:
                    n = seed_osm(conn, grid, osm_net)
                else:
                    n = seed_grid(conn, grid, junctions)
        except psycopg.Error as exc:
            return _fail(f"cannot write the registry: {str(exc).strip()}")
        print(f"registry: {len(junctions)} controllers, {2 * len(junctions)} phases, {n} detectors")
        if args.registry_only:
            return 0
    bus = None
    if not args.no_mqtt:
        try:
            bus = MqttBus(
                settings,
                [j.controller_id for j in junctions],
                f"cityops-sumo-{uuid.uuid4().hex[:8]}",
            )
        except (OSError, ConnectionError) as exc:
            return _fail(f"cannot connect to the broker: {exc}")
        bus.online(start)

    def progress(sim_s: float, r: RunResult) -> None:
        print(
            f"[{sim_s:6.0f} s simulated] events {r.events_published:,}, ticks {r.ticks}, "
            f"tick timeouts {r.tick_timeouts}",
            flush=True,
        )

    where = "OSM extract" if osm_net is not None else f"grid {args.grid}x{args.grid}"
    print(
        f"SUMO {where}, {args.vph:g} veh/h, seed {args.seed}, "
        f"{args.duration:g} s, control {args.control}, clock {args.clock}",
        flush=True,
    )
    try:
        result = run(cfg, bus, progress)
    finally:
        if bus is not None:
            bus.close(start + args.duration)
    s = result.summary()
    print(
        f"vehicles: {s['departed']} departed, {s['arrived']} arrived, "
        f"{s['in_network']} still in the network, {s['waiting_to_enter']} waiting to enter"
    )
    print(
        f"mean time loss {s['mean_time_loss_s']} s/veh, mean stops {s['mean_stops']}, "
        f"throughput {s['throughput_vph']} veh/h, teleports {s['teleports']}"
    )
    print(
        f"events published {s['events_published']:,}; commands {s['commands']}; "
        f"wall {s['wall_s']} s"
    )
    print(json.dumps(s))
    return 0
