"""Operational `cityops routing` commands: `plan` (the day's routes from the database) and
`import-network` (a city's OpenStreetMap extract becomes the active road network).

The network used by planning is `cityops.routing.extract.network_for`'s.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cityops.ingest.config import load_settings
from cityops.routing.dispatch_params import DEFAULT_DISPATCH
from cityops.routing.engines import daily_engine
from cityops.routing.extract import network_for

__all__ = ["SUBCOMMANDS"]

logger = logging.getLogger(__name__)

Subparsers = Any


def _add_plan(sub: Subparsers) -> None:
    p = sub.add_parser(
        "plan",
        help="plan a day's collection routes for the whole fleet from the database",
        description="Forecasts every bin from its readings and decides which fractions' "
        "rounds go out today (the dispatch policy, docs/routing.md): a round goes when a bin "
        "would pass --mandatory-pct before the fraction's next chance, or when its optional "
        "bins fill most of a truck; optional bins (from --optional-pct) and bins that would "
        "send the next round out join rounds that go. Solves one problem per round, checks "
        "every route independently, stores a new route version per truck and pushes it to "
        "the truck over MQTT. Trucks with nothing due get no new version.",
    )
    p.add_argument(
        "--date",
        type=date.fromisoformat,
        default=None,
        help="plan day YYYY-MM-DD (default: today in Europe/Berlin)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=10.0,
        metavar="S",
        help="solver time per round in seconds (default 10)",
    )
    p.add_argument("--seed", type=int, default=0, help="solver seed (default 0)")
    p.add_argument("--engine", default="ortools", help="ortools (default) or pyvrp")
    p.add_argument("--no-push", action="store_true", help="store the routes, do not publish")
    d = DEFAULT_DISPATCH
    p.add_argument(
        "--mandatory-pct",
        type=float,
        default=d.mandatory_pct,
        metavar="PCT",
        help="a bin predicted this full at its next chance is due today "
        f"(default {d.mandatory_pct:g})",
    )
    p.add_argument(
        "--optional-pct",
        type=float,
        default=d.optional_pct,
        metavar="PCT",
        help=f"bins predicted this full join rounds that go anyway (default {d.optional_pct:g})",
    )
    p.add_argument(
        "--reach-within",
        type=float,
        default=d.reach_within_h,
        metavar="HOURS",
        help="hours into the next chance's shift by which its round reaches a bin, for "
        "every fraction (24: the shift's end, the worst case); default: per fraction, the "
        "latest its rounds of the last 14 days reached a bin, else the shift's end",
    )
    p.add_argument(
        "--ahead-reward",
        type=int,
        default=d.ahead_reward,
        metavar="M",
        help="metres of route a bin is worth, when it joins today's round, that would "
        "send a round out before the one that today's bins, filling again, send out "
        f"anyway; about what a round costs (default {d.ahead_reward}; 0: off)",
    )
    p.add_argument(
        "--ahead-days",
        type=float,
        default=d.ahead_days,
        metavar="DAYS",
        help=f"how many days the look-ahead looks at most (default {d.ahead_days:g})",
    )
    p.set_defaults(func=_cmd_plan)


def _cmd_plan(args: argparse.Namespace) -> int:
    from cityops.routing.daily import plan_day
    from cityops.routing.errors import NetworkError
    from cityops.routing.network import load_network
    from cityops.routing.planning import BERLIN

    if args.time_limit <= 0:
        print("cityops routing plan: --time-limit must be positive", file=sys.stderr)
        return 2
    from cityops.ingest.city import announce_city

    settings = load_settings()
    announce_city(settings, "route planning")
    day = args.date or datetime.now(BERLIN).date()
    try:
        dispatch = replace(
            DEFAULT_DISPATCH,
            mandatory_pct=args.mandatory_pct,
            optional_pct=args.optional_pct,
            reach_within_h=args.reach_within,
            ahead_reward=args.ahead_reward,
            ahead_days=args.ahead_days,
        )
        engine = daily_engine(args.engine)
        network = load_network(network_for(settings))
    except (ValueError, NetworkError) as exc:
        print(f"cityops routing plan: {exc}", file=sys.stderr)
        return 2
    report = plan_day(
        settings,
        day,
        time_limit_s=args.time_limit,
        engine=engine,
        seed=args.seed,
        network=network,
        push=not args.no_push,
        dispatch=dispatch,
    )
    print("\n".join(report.lines()))
    return 1 if report.violations else 0


def _add_replan(sub: Subparsers) -> None:
    p = sub.add_parser(
        "replan",
        help="run the real-time re-planning service",
        description="Listens on MQTT to bins (overflow, fire temperature), trucks (stop "
        "skipped, breakdown, running late) and to new street closures; re-plans the remaining "
        "work of the affected trucks from their current position and load, warm-started from "
        "their current routes; every change is a new route version with its reason, checked "
        "independently, stored and pushed to the trucks. Bursts of events are coalesced.",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=1.0,
        metavar="S",
        help="solver time per re-plan in seconds (default 1)",
    )
    p.add_argument(
        "--coalesce",
        type=float,
        default=2.0,
        metavar="S",
        help="collect events for this long before re-planning (default 2)",
    )
    p.set_defaults(func=_cmd_replan)


def _cmd_replan(args: argparse.Namespace) -> int:
    from cityops.ingest.city import announce_city
    from cityops.routing.replan.service import run_replanner

    if args.time_limit <= 0 or args.coalesce < 0:
        print(
            "cityops routing replan: --time-limit must be > 0 and --coalesce >= 0", file=sys.stderr
        )
        return 2
    settings = load_settings()
    announce_city(settings, "re-planner")
    return run_replanner(settings, time_limit_s=args.time_limit, coalesce_s=args.coalesce)


def _add_import_network(sub: Subparsers) -> None:
    p = sub.add_parser(
        "import-network",
        help="import a city's OpenStreetMap extract (.osm.pbf) as the road network",
        description="Reads the extract, builds the directed drivable network (one-ways, "
        "speeds by road class), prints what it found and records it as the active network "
        "for planning. Example: a Geofabrik Hessen extract cut to the city with "
        "'osmium extract -b 8.70,50.06,8.82,50.14 hessen-latest.osm.pbf -o offenbach.osm.pbf'.",
    )
    p.add_argument("file", type=Path, help=".osm.pbf extract")
    p.add_argument("--dry-run", action="store_true", help="check and report, record nothing")
    p.set_defaults(func=_cmd_import_network)


def _cmd_import_network(args: argparse.Namespace) -> int:
    from cityops.ingest.db import connect
    from cityops.routing.errors import NetworkError
    from cityops.routing.network import load_network
    from cityops.routing.repository import record_network

    path: Path = args.file.resolve()
    try:
        network = load_network(path)
    except NetworkError as exc:
        print(f"cityops routing import-network: {exc}", file=sys.stderr)
        return 2
    km = float(network.length_m.sum()) / 1000
    oneway = sum(
        1
        for u, v in zip(network.src.tolist(), network.dst.tolist(), strict=True)
        if network.edge_between(v, u) is None
    )
    min_lat, min_lon, max_lat, max_lon = network.bbox
    print(
        f"{path}: {network.n_nodes:,} nodes, {network.n_edges:,} directed edges, "
        f"{km:,.1f} km of lanes, {oneway:,} one-way edges\n"
        f"bbox lat {min_lat:.5f}..{max_lat:.5f}, lon {min_lon:.5f}..{max_lon:.5f}"
    )
    if args.dry_run:
        return 0
    settings = load_settings()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with connect(settings.database_url) as conn, conn.transaction():
        network_id = record_network(
            conn,
            source=str(path),
            sha256=digest,
            nodes=network.n_nodes,
            edges=network.n_edges,
            km=km,
            bbox=network.bbox,
        )
    print(
        f"recorded as network #{network_id}, active for planning "
        f"(imported {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)"
    )
    if settings.osm_file is not None:
        print(f"note: CITYOPS_OSM_FILE={settings.osm_file} still takes precedence")
    return 0


SUBCOMMANDS = (_add_plan, _add_replan, _add_import_network)
