"""``cityops routing ...`` commands: a thin argparse layer over the routing package.

``register(sub)`` adds the ``routing`` command with its own subcommands; each subcommand
is a function in ``_SUBCOMMANDS`` that adds its parser to the routing subparsers, so a
new one is one function and one line.

``cityops routing solve FILE.vrp`` reads a CVRPLIB instance, solves it and prints the
CVRPLIB ``.sol`` to stdout; progress and a summary go to stderr. Exit 0 when every
customer is served and the plan passes the independent check, 1 otherwise, 2 for a
missing or malformed file.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .check import check_plan, plan_cost
from .engines import ENGINES, make_engine, solve_with_fallback
from .errors import VrplibError
from .ops_cli import SUBCOMMANDS as OPERATIONAL
from .vrplib import format_solution, read_vrplib

logger = logging.getLogger(__name__)

__all__ = ["register"]

Subparsers = Any  # argparse's _SubParsersAction, private in typeshed's eyes


def register(sub: Subparsers) -> None:
    """Add ``cityops routing`` and its subcommands."""
    parser = sub.add_parser(
        "routing",
        help="waste-collection routes: plan the day, re-plan service, import a road "
        "network, solve CVRPLIB",
        description="Waste-collection route planning: the day's plan for the whole fleet, "
        "the re-planning service that follows the trucks during the day, the import of the "
        "road network that planning uses, and a solver for CVRPLIB instances.",
    )
    routing_sub = parser.add_subparsers(
        dest="routing_command", metavar="ROUTING_COMMAND", required=True
    )
    for add in _SUBCOMMANDS:
        add(routing_sub)


def _add_solve(sub: Subparsers) -> None:
    p = sub.add_parser(
        "solve",
        help="solve a CVRPLIB instance and print the .sol",
        description=(
            "Solve a CVRP instance in CVRPLIB format; print the solution in CVRPLIB .sol "
            "format to stdout, progress and a summary to stderr."
        ),
    )
    p.add_argument("file", type=Path, metavar="FILE.vrp", help="CVRPLIB instance")
    p.add_argument(
        "--time-limit",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="search time in seconds (default: 10)",
    )
    p.add_argument("--engine", choices=ENGINES, default="ortools", help="default: ortools")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--vehicles",
        type=int,
        default=None,
        metavar="N",
        help="fleet size (default: the instance's k plus a margin)",
    )
    p.set_defaults(func=_solve)


_SUBCOMMANDS: tuple[Callable[[Subparsers], None], ...] = (_add_solve, *OPERATIONAL)


def _solve(args: argparse.Namespace) -> int:
    try:
        problem, meta = read_vrplib(args.file, vehicles=args.vehicles)
    except VrplibError as exc:
        print(f"cityops routing solve: {exc}", file=sys.stderr)
        return 2
    engine = make_engine(args.engine)
    print(
        f"{meta.name}: {len(problem.stops)} customers, {len(problem.vehicles)} trucks, "
        f"engine {engine.name}, {args.time_limit:g} s",
        file=sys.stderr,
    )
    started = time.monotonic()
    plan = solve_with_fallback(engine, problem, time_limit_s=args.time_limit, seed=args.seed)
    elapsed = time.monotonic() - started
    violations = check_plan(problem, plan)
    cost = plan_cost(problem, plan)
    sys.stdout.write(format_solution(plan, meta, cost=cost.distance_m))
    used = sum(1 for r in plan.routes if not r.is_empty)
    print(
        f"cost {cost.distance_m}, {used} routes, {len(plan.unserved)} unserved, "
        f"{len(violations)} violations, {elapsed:.1f} s",
        file=sys.stderr,
    )
    for u in plan.unserved:
        print(f"unserved {u.stop_id}: {u.reason}", file=sys.stderr)
    for v in violations:
        print(f"violation {v}", file=sys.stderr)
    return 0 if not plan.unserved and not violations else 1


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value
