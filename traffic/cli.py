"""``cityops traffic ...``: measures, Webster plans, the measures service, adaptive control
and the SUMO simulator.

``cityops traffic measures --controller ID --from T --to T`` prints, per phase and
15-minute bin, the measures of `cityops.traffic.measures`, then detector health and the
events cleaning kept out. ``cityops traffic webster ...`` derives a fixed-time plan from
the peak 15-minute volume of each phase in the period. Times are ISO 8601; without an
offset they are UTC. Exit 0 on success, 2 for an unknown controller or a bad period.
``refresh`` and ``measures-service`` store the measures (`cityops.traffic.store`),
``control`` runs the max-pressure service (`cityops.traffic.control`) and ``sumo`` the
SUMO simulator (`cityops.simulators.sumo.cli`); ``import-events`` and ``follow-log`` bring
controller event log files in (`cityops.traffic.eventlog_cli`).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import UnknownControllerError
from .eventlog_cli import register as register_event_logs
from .events import Cleaned, ControllerConfig, clean
from .measures import (
    BIN_S,
    DEFAULT_SPEED_KMH,
    PhaseBin,
    arrival_detectors,
    detector_health,
    phase_measures,
)
from .webster import PhaseDemand, Plan, webster

__all__ = ["register", "webster_demands"]

logger = logging.getLogger(__name__)

Subparsers = Any  # argparse's _SubParsersAction, private in typeshed's eyes


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def register(sub: Subparsers) -> None:
    """Add ``cityops traffic`` and its subcommands."""
    parser = sub.add_parser(
        "traffic",
        help="traffic signals: SUMO simulator, adaptive control, measures (print, store "
        "once or continuously), Webster plans, controller event log files",
        description="Traffic signals: the SUMO simulator whose lights are cityops "
        "controllers (sumo), the adaptive max-pressure control service (control), "
        "ATSPM-style performance measures from the stored high-resolution events, printed "
        "(measures) or stored once (refresh) or continuously (measures-service), "
        "Webster fixed-time plans from measured flows (webster), and controllers' event "
        "log files imported (import-events) or followed over MQTT (follow-log).",
    )
    traffic_sub = parser.add_subparsers(
        dest="traffic_command", metavar="TRAFFIC_COMMAND", required=True
    )
    for name, func, text in (
        ("measures", _measures, "print per-phase 15-minute performance measures"),
        ("webster", _webster, "print a Webster fixed-time plan from measured flows"),
    ):
        p = traffic_sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("--controller", required=True, metavar="ID", help="controller id")
        p.add_argument("--from", dest="start", type=_when, required=True, metavar="T",
                       help="period start, ISO 8601 (UTC without offset)")
        p.add_argument("--to", dest="end", type=_when, required=True, metavar="T",
                       help="period end (exclusive), ISO 8601")
        p.add_argument("--speed-kmh", type=float, default=DEFAULT_SPEED_KMH,
                       help="approach speed moving advance-detector arrivals to the stop "
                       f"line (default {DEFAULT_SPEED_KMH:g})")
        if name == "webster":
            p.add_argument("--min-cycle", type=float, default=40.0, help="default 40 s")
            p.add_argument("--max-cycle", type=float, default=120.0, help="default 120 s")
        if name == "measures":
            p.add_argument("--store", action="store_true",
                           help="also (re)compute and store the bins of the period "
                           "(see `cityops traffic refresh`)")
        p.set_defaults(func=func)
    _register_store(traffic_sub)
    _register_control(traffic_sub)
    register_event_logs(traffic_sub)
    from cityops.simulators.sumo.cli import add_parser as add_sumo_parser

    add_sumo_parser(traffic_sub)


def _register_store(traffic_sub: Subparsers) -> None:
    """``cityops traffic refresh`` and ``cityops traffic measures-service``."""
    p = traffic_sub.add_parser(
        "refresh", help="compute and store the measures of complete bins once",
        description="Compute and store the measures of every complete 15-minute bin since "
        "the last computed one (and recompute bins with late events), per controller.",
    )
    p.add_argument("--controller", action="append", metavar="ID",
                   help="only this controller (repeatable; default: all)")
    p.add_argument("--from", dest="start", type=_when, metavar="T",
                   help="also recompute the stored bins from T on")
    p.add_argument("--speed-kmh", type=float, default=DEFAULT_SPEED_KMH)
    p.set_defaults(func=_refresh)
    p = traffic_sub.add_parser(
        "measures-service", help="compute and store measures continuously",
        description="Every --interval seconds, compute and store the measures of the "
        "complete 15-minute bins of every controller (see docs/traffic.md).",
    )
    p.add_argument("--interval", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--speed-kmh", type=float, default=DEFAULT_SPEED_KMH)
    p.set_defaults(func=_service)


def _refresh(args: argparse.Namespace) -> int:
    from cityops.ingest.config import load_settings
    from cityops.ingest.db import connect

    from .store import StoreOptions, refresh

    options = StoreOptions(speed_kmh=args.speed_kmh)
    try:
        with connect(load_settings().database_url, autocommit=True) as conn:
            runs = refresh(conn, options, controllers=args.controller,
                           recompute_from=args.start, until_caught_up=True)
    except UnknownControllerError as exc:
        print(f"cityops traffic refresh: {exc}", file=sys.stderr)
        return 2
    for r in runs:
        until = r.computed_until.isoformat() if r.computed_until else "-"
        print(f"{r.controller_id}\tnew bins {r.new_bins}\trecomputed {r.late_bins}"
              f"\trows {r.rows}\tcomputed until {until}")
    return 0


def _service(args: argparse.Namespace) -> int:
    from cityops.ingest.config import load_settings

    from .service_metrics import MeasuresMetrics
    from .store import StoreOptions, run_service

    if args.interval <= 0:
        print("cityops traffic measures-service: --interval must be positive", file=sys.stderr)
        return 2
    settings = load_settings()
    run_service(settings.database_url, args.interval, StoreOptions(speed_kmh=args.speed_kmh),
                metrics=MeasuresMetrics(settings.traffic_measures_liveness_limit_s),
                metrics_port=settings.traffic_measures_metrics_port)
    return 0


@dataclass(frozen=True, slots=True)
class _Loaded:
    config: ControllerConfig
    cleaned: Cleaned
    bins: tuple[PhaseBin, ...]


def _load(args: argparse.Namespace, command: str) -> _Loaded | None:
    from cityops.ingest.config import load_settings
    from cityops.ingest.db import connect

    from .repository import load_config, load_events

    if args.end <= args.start:
        print(f"cityops traffic {command}: --to must be after --from", file=sys.stderr)
        return None
    settings = load_settings()
    try:
        with connect(settings.database_url) as conn:
            config = load_config(conn, args.controller)
            events = load_events(conn, args.controller, args.start, args.end)
    except UnknownControllerError as exc:
        print(f"cityops traffic {command}: {exc}", file=sys.stderr)
        return None
    if getattr(args, "store", False):
        _store_period(settings.database_url, args)
    cleaned = clean(events, config)
    for problem, n in sorted(Counter(f.problem.value for f in cleaned.flags).items()):
        logger.warning("%s: %d events flagged %s", args.controller, n, problem)
    bins = phase_measures(cleaned.events, config, args.start.timestamp(),
                          args.end.timestamp(), speed_kmh=args.speed_kmh)
    return _Loaded(config, cleaned, bins)


def _store_period(database_url: str, args: argparse.Namespace) -> None:
    """Compute and store the bins overlapping the period (replacing stored ones)."""
    from cityops.ingest.db import connect

    from .repository import event_span, load_config
    from .store import StoreOptions, compute_range

    start = math.floor(args.start.timestamp() / BIN_S) * BIN_S
    end = math.ceil(args.end.timestamp() / BIN_S) * BIN_S
    with connect(database_url) as conn, conn.transaction():
        config = load_config(conn, args.controller)
        span = event_span(conn, args.controller)
        first = span[0].timestamp() if span else start
        rows, _ = compute_range(conn, config, start, end, first,
                                StoreOptions(speed_kmh=args.speed_kmh))
    logger.info("%s: stored %d rows for the bins of %s..%s", args.controller, rows,
                datetime.fromtimestamp(start, UTC).isoformat(),
                datetime.fromtimestamp(end, UTC).isoformat())


def _fmt(value: float | int | None, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else format(value, spec)


_COLUMNS = (
    "phase", "bin_start", "volume", "pct_aog", "platoon_ratio", "delay_per_vehicle_s",
    "cycles", "split_failures", "gap_outs", "max_outs", "force_offs", "mean_green_s",
    "yellow_actuations", "red_actuations", "ped_walks", "ped_delay_mean_s",
)


def _measures(args: argparse.Namespace) -> int:
    loaded = _load(args, "measures")
    if loaded is None:
        return 2
    print("\t".join(_COLUMNS))
    for b in loaded.bins:
        row = []
        for col in _COLUMNS:
            if col == "bin_start":
                row.append(datetime.fromtimestamp(b.bin_start, UTC).isoformat())
            else:
                row.append(_fmt(getattr(b, col)))
        print("\t".join(row))
    print()
    print("detector health (channel phase kind actuations longest_on_s status):")
    for h in detector_health(loaded.cleaned.events, loaded.config, args.start.timestamp(),
                             args.end.timestamp()):
        print(f"  {h.channel}\t{h.phase}\t{h.kind}\t{h.actuations}\t{h.longest_on_s:.1f}"
              f"\t{h.status}")
    print(f"flagged events: {len(loaded.cleaned.flags)}")
    for f in loaded.cleaned.flags[:20]:
        print(f"  #{f.index} {f.problem.value}: {f.reason}")
    return 0


def webster_demands(config: ControllerConfig, bins: tuple[PhaseBin, ...]) -> list[PhaseDemand]:
    """Per phase in sequence: the peak 15-minute volume as an hourly flow, and its lanes."""
    demands = []
    for p in sorted(config.phases.values(), key=lambda p: (p.seq, p.phase)):
        peak = max((b.volume for b in bins if b.phase == p.phase), default=0)
        lanes = {d.lane if d.lane is not None else -d.channel
                 for d in arrival_detectors(config, p.phase)}
        demands.append(PhaseDemand(
            p.phase, peak * 3600.0 / BIN_S, max(1, len(lanes)), p.yellow_s,
            p.red_clearance_s, p.min_green_s, p.max_green_s,
        ))
    return demands


def format_plan(plan: Plan) -> str:
    lines = [
        f"Y = {plan.critical_flow_ratio:.3f}, L = {plan.lost_time_s:g} s, "
        f"C0 = {plan.optimum_cycle_s:.1f} s, cycle = {plan.cycle_s:g} s"
        + (" (OVERSATURATED: Y >= 1, maximum cycle)" if plan.oversaturated else ""),
        "phase\ty\tgreen_s\tyellow_s\tred_clearance_s",
    ]
    lines += [
        f"{t.phase}\t{t.flow_ratio:.3f}\t{t.green_s}\t{t.yellow_s:g}\t{t.red_clearance_s:g}"
        for t in plan.phases
    ]
    return "\n".join(lines)


def _webster(args: argparse.Namespace) -> int:
    loaded = _load(args, "webster")
    if loaded is None:
        return 2
    if not loaded.config.phases:
        print(f"cityops traffic webster: {args.controller} has no phases", file=sys.stderr)
        return 2
    try:
        plan = webster(webster_demands(loaded.config, loaded.bins),
                       min_cycle_s=args.min_cycle, max_cycle_s=args.max_cycle)
    except ValueError as exc:
        print(f"cityops traffic webster: {exc}", file=sys.stderr)
        return 2
    print(format_plan(plan))
    return 0


# -- cityops traffic control (the adaptive control service, cityops.traffic.control) --------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _register_control(traffic_sub: Subparsers) -> None:
    """``cityops traffic control``: run the max-pressure control service."""
    from .maxpressure import ControlParams

    d = ControlParams()
    p = traffic_sub.add_parser(
        "control", help="run the adaptive (max-pressure) signal control service",
        description="Max-pressure control over MQTT: reads controller events, sends a "
        "TimingCommand (hold/advance, or fallback) per controller and decision step. "
        "Control on/off per controller comes from signal_control_modes (see docs/traffic.md).",
    )
    p.add_argument("--clock", choices=("wall", "mqtt"), default="wall",
                   help="wall: decide every --decision-interval s; mqtt: on every tick of "
                   "{prefix}/v1/sim/clock (lockstep simulation). Default wall")
    p.add_argument("--decision-interval", type=_positive, default=2.0, metavar="S",
                   help="seconds between decisions with --clock wall (default 2)")
    p.add_argument("--controllers", action="append", metavar="ID[,ID...]",
                   help="control only these (repeatable, comma-separated; default: all "
                   "registered)")
    p.add_argument("--valid-for", type=_positive, default=10.0, metavar="S",
                   help="valid_for_s of every command, at most 300 (default 10)")
    p.add_argument("--threshold", type=float, default=d.threshold, metavar="VEH",
                   help=f"pressure difference that ends a green (default {d.threshold:g})")
    p.add_argument("--stale-after", type=_positive, default=d.stale_after_s, metavar="S",
                   help=f"a detector silent this long is unusable (default {d.stale_after_s:g})")
    p.add_argument("--stuck-on", type=_positive, default=d.stuck_on_s, metavar="S",
                   help=f"a detector on this long is unusable (default {d.stuck_on_s:g})")
    p.add_argument("--speed-kmh", type=_positive, default=d.speed_kmh,
                   help=f"approach speed (default {d.speed_kmh:g})")
    p.add_argument("--modes-refresh", type=_positive, default=5.0, metavar="S",
                   help="seconds between reads of signal_control_modes (default 5)")
    p.add_argument("--summary-every", type=_positive, default=60.0, metavar="S",
                   help="seconds between decision summaries in the log (default 60)")
    p.add_argument("--issuer", default=None, metavar="NAME",
                   help="issuer of the commands (default: control-<host>-<pid>-<random>)")
    p.set_defaults(func=_control)


def _control(args: argparse.Namespace) -> int:
    from cityops.ingest.config import load_settings

    from .control import run_control
    from .control_state import ControlOptions
    from .maxpressure import ControlParams

    controllers = None
    if args.controllers:
        controllers = tuple(c.strip() for arg in args.controllers for c in arg.split(",")
                            if c.strip())
    try:
        params = ControlParams(threshold=args.threshold, speed_kmh=args.speed_kmh,
                               stale_after_s=args.stale_after, stuck_on_s=args.stuck_on)
        extra = {"issuer": args.issuer} if args.issuer else {}
        options = ControlOptions(
            decision_interval_s=args.decision_interval, clock=args.clock,
            controllers=controllers or None, valid_for_s=args.valid_for,
            modes_refresh_s=args.modes_refresh, summary_every_s=args.summary_every,
            params=params, **extra,
        )
    except ValueError as exc:
        print(f"cityops traffic control: {exc}", file=sys.stderr)
        return 2
    return run_control(load_settings(), options)
