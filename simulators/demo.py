"""`cityops demo`: the whole city on one machine.

Applies migrations, then runs the simulators, the ingest and the API as child processes
(so they use both cores and each can be stopped on its own), prints where to look and what
is flowing, and stops everything cleanly on Ctrl-C, SIGTERM or after `--duration` seconds.
Child logs go to `var/log/<name>.log`. With SUMO installed it also runs the traffic closed
loop on a SUMO grid (`sumo/loop.py`): controllers -> MQTT -> ingest -> measures, and
detector events -> adaptive control -> timing commands -> controllers. What it prints for
a newcomer, and the scripted incident, are in `demo_show.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from cityops.ingest.config import Settings, load_settings
from cityops.ingest.db import MigrationError, ensure_database, migrate
from cityops.simulators.demo_show import (
    demo_token,
    engineer_token,
    scripted_overflow,
    status_line,
    traffic_banner,
)
from cityops.simulators.sumo import loop as sumo_loop

__all__ = ["register", "run_demo"]

_STATUS_EVERY_S = 10.0
_PLAN_AFTER_S = 30.0  # the first route plan, once the simulated bins have reported
_INCIDENT_AFTER_S = 75.0  # a scripted overflow, to show a re-plan reach a truck


@dataclass
class _Child:
    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the demo city: simulators, ingest, API, route planning and re-planning, "
        "roadworks, traffic loop",
        description="Brings up the whole platform against the configured PostgreSQL and "
        "broker: applies migrations, registers the devices, starts the device simulators, "
        "the ingest, the API and the route re-planner, seeds the demo roadworks and "
        "publishes their daily overview, plans the day's routes once the bins have "
        "reported, scripts a bin overflow to show a re-plan, and (with SUMO) runs the "
        "traffic closed loop on a SUMO grid. Prints URLs, tokens and counts every 10 s. "
        "Stops on Ctrl-C or after --duration seconds.",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many seconds (default 0: run until Ctrl-C)",
    )
    demo.add_argument("--scenario", help="scenario name or YAML path (default: CITYOPS_SCENARIO)")
    demo.add_argument(
        "--speed", type=float, help="simulated clock acceleration until it reaches now"
    )
    demo.add_argument("--start", help="simulated start, e.g. 'now - 1 day' (default: scenario's)")
    demo.add_argument("--log-dir", default="var/log", help="child logs (default var/log)")
    demo.add_argument(
        "--no-traffic",
        action="store_true",
        help="leave out the traffic closed loop (SUMO grid, adaptive control, measures)",
    )
    demo.add_argument(
        "--traffic-vph",
        type=float,
        default=sumo_loop.DEFAULT_VPH,
        help="vehicles per hour entering the SUMO grid (default %(default)g)",
    )
    demo.add_argument(
        "--traffic-history",
        type=float,
        default=sumo_loop.DEFAULT_HISTORY_MIN,
        metavar="MIN",
        help="minutes of fixed-time grid traffic replayed in fast-forward before the live "
        "loop, so the measures have complete bins at once (default %(default)g, 0: none)",
    )
    demo.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(load_settings(), args)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _setup_traffic(
    settings: Settings, args: argparse.Namespace
) -> tuple[sumo_loop.TrafficLoop | None, tuple[float, float] | None]:
    """The traffic loop with its grid seeded, and the history window to replay first;
    (None, None) when it is left out or cannot run (said why; the demo goes on)."""
    if args.no_traffic:
        print("traffic loop: left out (--no-traffic)")
        return None, None
    why = sumo_loop.unavailable()
    if why is not None:
        print(f"traffic loop: SKIPPED, {why}; the rest of the demo runs without it")
        return None, None
    try:
        loop = sumo_loop.TrafficLoop(vph=args.traffic_vph, history_min=args.traffic_history)
        ids = sumo_loop.seed_grid_registry(settings.database_url, loop)
        loop = replace(loop, controllers=ids)
        window = sumo_loop.history_window(
            settings.database_url, ids, time.time(), loop.history_min
        )
    except Exception as exc:  # an optional part: say why and go on
        print(f"traffic loop: SKIPPED, cannot set up the SUMO grid: {exc}")
        return None, None
    print(
        f"traffic loop: SUMO {loop.grid}x{loop.grid} grid registered, {len(ids)} controllers "
        f"{ids[0]} .. {ids[-1]}"
    )
    return loop, window


def _spawn(child: _Child, env: dict[str, str]) -> None:
    with child.log.open("ab") as log:
        child.proc = subprocess.Popen(
            child.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _finished(child: _Child) -> bool:
    return child.proc is not None and child.proc.poll() is not None


def _start_traffic(
    traffic_children: list[_Child],
    children: list[_Child],
    env: dict[str, str],
    settings: Settings,
) -> sumo_loop.CommandWatch:
    """Start the loop's children under the demo's supervision, and watch the commands."""
    watch = sumo_loop.CommandWatch(settings, f"cityops-demo-watch-{os.getpid()}")
    for child in traffic_children:
        _spawn(child, env)
        children.append(child)
    return watch


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    try:
        created = ensure_database(settings.database_url)
        report = migrate(settings.database_url, mode=settings.db_mode)
    except MigrationError as exc:
        print(f"cityops demo: {exc}", file=sys.stderr)
        return 1
    print(
        f"database {settings.redacted_database_url()}{' (created)' if created else ''}: "
        f"storage mode {report.mode}, {len(report.applied)} migrations applied"
    )
    # Register the devices before the ingest subscribes: retained status messages (from an
    # earlier run on the same broker) then belong to known devices instead of dead letters.
    # The demo city is set up as any city is (docs/city.md): its profile applied (sites,
    # street network), its registry written as files and imported from them.
    from cityops.ingest.city import load_city
    from cityops.ingest.registry_cli import apply_profile, import_files
    from cityops.routing.network import load_network
    from cityops.simulators.city import build_city
    from cityops.simulators.scenario import load_scenario
    from cityops.simulators.seed import write_registry_files

    settings = settings.model_copy(
        update={"city_profile": settings.city_profile or "demo", "allow_demo_city": True}
    )
    profile = load_city(settings)
    scenario = load_scenario(args.scenario or settings.scenario)
    network = load_network(settings.osm_file or scenario.osm_file)
    city = build_city(scenario, network)
    registry_dir = Path(args.log_dir).parent / "registry"
    files = write_registry_files(city, registry_dir)
    print(f"city profile {profile.source}: {profile.name}")
    if apply_profile(settings.database_url, profile, actor="cityops demo") != 0 or import_files(
        settings, profile, files, actor="cityops demo", snap=False
    ) != 0:
        print("cityops demo: the demo city could not be set up (see above)", file=sys.stderr)
        return 1
    traffic, history = _setup_traffic(settings, args)
    if not _port_free(settings.api_host, settings.api_port):
        print(
            f"cityops demo: port {settings.api_port} on {settings.api_host} is in use; "
            "stop the other server or set CITYOPS_API_PORT",
            file=sys.stderr,
        )
        return 1
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "cityops.api.cli"]
    sim = [*exe, "simulate"]
    if args.scenario:
        sim += ["--scenario", args.scenario]
    if args.speed:
        sim += ["--speed", str(args.speed)]
    if args.start:
        sim += ["--start", args.start]
    # Start order: ingest first (it must be subscribed before devices publish), then the
    # simulators, then the API. Stop order is the reverse of what produces data.
    children = [
        _Child("ingest", [*exe, "ingest"], log_dir / "ingest.log"),
        _Child("simulate", sim, log_dir / "simulate.log"),
        _Child("api", [*exe, "api"], log_dir / "api.log"),
        _Child("replan", [*exe, "routing", "replan"], log_dir / "replan.log"),
    ]
    # One-shot jobs: (seconds after start, name, command). Their output goes to their log.
    overview_dir = log_dir.parent / "overview"
    jobs: list[tuple[float, _Child]] = [
        (
            0.0,
            # --replace: the demo works are dated relative to today, so a demo run on a
            # later day (or a second run) re-creates them instead of failing.
            _Child(
                "roadworks-seed",
                [*exe, "roadworks", "seed-demo", "--replace"],
                log_dir / "roadworks.log",
            ),
        ),
        (
            5.0,
            _Child(
                "roadworks-overview",
                [*exe, "roadworks", "publish-daily", "--out", str(overview_dir)],
                log_dir / "roadworks.log",
            ),
        ),
        (
            _PLAN_AFTER_S,
            _Child(
                "routing-plan",
                [*exe, "routing", "plan", "--time-limit", "5"],
                log_dir / "routing.log",
            ),
        ),
    ]
    # The traffic loop: three children, started after the history replay (if any) is done,
    # so that the control service only sees live events.
    traffic_children: list[_Child] = []
    history_job: _Child | None = None
    if traffic is not None:
        live_s = args.duration + 600.0 if args.duration else 86400.0
        traffic_children = [
            _Child("traffic-sim", [*exe, *traffic.sim_args(live_s)], log_dir / "traffic-sim.log"),
            _Child(
                "traffic-control",
                [*exe, *traffic.control_args()],
                log_dir / "traffic-control.log",
            ),
            _Child(
                "traffic-measures",
                [*exe, *traffic.measures_args()],
                log_dir / "traffic-measures.log",
            ),
        ]
        if history is not None:
            history_job = _Child(
                "traffic-history",
                [*exe, *traffic.sim_args(history[1], start=history[0])],
                log_dir / "traffic-sim.log",
            )
            jobs.insert(0, (0.0, history_job))
    watch: sumo_loop.CommandWatch | None = None
    grid = traffic.controllers if traffic is not None else ()
    stop = threading.Event()

    def _handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)
    env = dict(os.environ)
    # The children run the demo city on purpose: they may start with its profile.
    env["CITYOPS_CITY_PROFILE"] = str(settings.city_profile)
    env["CITYOPS_ALLOW_DEMO_CITY"] = "1"
    # A quarter of the bins report through LoRaWAN network servers (docs/devices.md): the
    # simulators publish their uplinks under this root, the ingest takes them from there.
    env["CITYOPS_INGEST_SOURCES"] = "cityops,chirpstack,tts"
    env["CITYOPS_INGEST_LORAWAN_ROOT"] = f"{settings.topic_prefix}/lorawan"
    token, secret_note = demo_token(settings, env)
    engineer = engineer_token(settings, env)
    try:
        for child in children:
            _spawn(child, env)
            if child.name == "ingest":
                time.sleep(1.5)
        base = f"http://{settings.api_host}:{settings.api_port}"
        until = f" (or after {args.duration:.0f} s)" if args.duration else ""
        traffic_text, switch = traffic_banner(traffic, history, base, engineer)
        print(
            "\ncityops demo is running\n"
            f"  API docs         {base}/docs\n"
            f"  bins (fill >=80) {base}/api/v1/bins?min_fill=80\n"
            f"  devices          {base}/api/v1/devices\n"
            f"  health           {base}/health\n"
            f"  truck route      {base}/api/v1/trucks/T01/route\n"
            f"  roadworks map    {base}/roadworks\n"
            f"{traffic_text}"
            f"  daily overview   {overview_dir}/<date>/\n"
            f"  MQTT             {settings.mqtt_host}:{settings.mqtt_port}, topics "
            f"{settings.topic_prefix}/v1/#\n"
            f"  logs             {log_dir}/ingest.log, simulate.log, api.log, replan.log,"
            " routing.log, roadworks.log"
            f"{', traffic-sim.log, traffic-control.log, traffic-measures.log' if traffic else ''}\n"
            f"  stop             Ctrl-C{until}\n"
            "\n  The API needs a login except for health, the roadworks map and feeds.\n"
            f"  {secret_note}\n"
            f"  A dispatcher token (valid 12 h) and a call with it:\n"
            f"    export TOKEN={token}\n"
            f'    curl -H "Authorization: Bearer $TOKEN" {base}/api/v1/bins?min_fill=80\n'
            f"  (or 'Authorize' in {base}/docs; more: cityops auth --help)\n"
            f"{switch}",
            flush=True,
        )
        started = time.monotonic()
        next_status = started + 3.0
        incident_done = False
        while not stop.is_set():
            if args.duration and time.monotonic() - started >= args.duration:
                break
            for child in children:
                if child.proc is not None and child.proc.poll() is not None:
                    print(
                        f"cityops demo: {child.name} exited with code {child.proc.returncode}; "
                        f"see {child.log}",
                        file=sys.stderr,
                    )
                    stop.set()
            for delay, job in jobs:
                if job.proc is None and time.monotonic() - started >= delay:
                    _spawn(job, env)
                    print(
                        f"[{time.monotonic() - started:5.0f}s] started {job.name} (log: {job.log})",
                        flush=True,
                    )
                elif (
                    job.proc is not None
                    and job.proc.returncode is None
                    and job.proc.poll() is not None
                ):
                    code = job.proc.returncode
                    outcome = "done" if code == 0 else f"FAILED with code {code}"
                    print(
                        f"[{time.monotonic() - started:5.0f}s] {job.name} {outcome}"
                        f" (log: {job.log})",
                        flush=True,
                    )
            if (
                traffic is not None
                and watch is None
                and (history_job is None or _finished(history_job))
            ):
                watch = _start_traffic(traffic_children, children, env, settings)
                print(
                    f"[{time.monotonic() - started:5.0f}s] traffic loop live: SUMO grid in real "
                    f"time, adaptive control, measures (logs: {log_dir}/traffic-*.log)",
                    flush=True,
                )
            if not incident_done and time.monotonic() - started >= _INCIDENT_AFTER_S:
                incident_done = True
                try:
                    what = scripted_overflow(settings, network)
                except Exception as exc:  # a demo aid must not stop the demo
                    what = f"failed: {exc}"
                print(
                    f"[{time.monotonic() - started:5.0f}s] scripted incident: {what} "
                    f"(watch {log_dir}/replan.log and the route versions)",
                    flush=True,
                )
            if time.monotonic() >= next_status:
                status = status_line(settings, grid)
                print(f"[{time.monotonic() - started:5.0f}s] {status}", flush=True)
                if traffic is not None and watch is not None:
                    line = sumo_loop.loop_status(
                        settings.database_url, traffic.controllers, watch.take()
                    )
                    print(f"        {line}", flush=True)
                next_status += _STATUS_EVERY_S
            stop.wait(0.5)
    finally:
        print(
            "stopping: traffic control, simulators, re-planner, ingest (flushes), API", flush=True
        )
        if watch is not None:
            watch.close()
        failed = False
        for _delay, job in jobs:
            if job.proc is not None and job.proc.poll() is None:
                job.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    job.proc.wait(timeout=30)
        # control first: it hands its controllers back to their own plans (fallback)
        order = ("traffic-control", "traffic-sim", "simulate", "replan", "ingest")
        for name in (*order, "traffic-measures", "api"):
            proc = next((c.proc for c in children if c.name == name), None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                failed = True
        print(f"stopped. {status_line(settings, grid)}", flush=True)
    return 1 if failed else 0
