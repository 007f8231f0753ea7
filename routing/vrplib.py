"""VRPLIB files: read CVRP instances and CVRPLIB solutions, write CVRPLIB solutions.

The only module that parses routing files. Instances follow the CVRPLIB format
(``KEY : value`` header, ``NODE_COORD_SECTION``, ``DEMAND_SECTION``, ``DEPOT_SECTION``
terminated by ``-1``, ``EOF``). Distances:

* ``EUC_2D``: Euclidean distance rounded to the nearest integer, as CVRPLIB's best-known
  costs assume (``round(sqrt(dx² + dy²))``, halves rounded up);
* ``EXPLICIT`` with ``EDGE_WEIGHT_FORMAT`` ``FULL_MATRIX``, ``LOWER_ROW``, ``UPPER_ROW``,
  ``LOWER_DIAG_ROW`` or ``UPPER_DIAG_ROW``.

Node ids must be ``1..DIMENSION``; node ``i`` is matrix location ``i - 1`` and a customer
becomes the :class:`Stop` with id ``"i"``. Travel time equals distance and shifts are
unbounded. CVRPLIB fleets are unlimited; we give ``k + max(2, k // 4)`` trucks where
``k`` is ``VEHICLES``, the ``-kN`` suffix of the name or ``ceil(demand / capacity)``.

Solutions number customers from 1 in file order, skipping the depot (so node ``i`` is
customer ``i - 1`` when the depot is node 1), one ``Route #r: c1 c2 ...`` line per
non-empty route and a final ``Cost N`` line.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .errors import VrplibError
from .model import (
    UNREACHABLE,
    IntMatrix,
    Plan,
    Problem,
    Route,
    Site,
    Stop,
    TimeWindow,
    VehicleType,
    Visit,
    VisitKind,
    fleet,
    make_route,
)

logger = logging.getLogger(__name__)

__all__ = [
    "VrplibMeta",
    "format_solution",
    "read_solution",
    "read_vrplib",
    "solution_plan",
]

FloatArray = npt.NDArray[np.float64]

DEPOT_ID = "depot"
_SHIFT = TimeWindow(0, UNREACHABLE - 1)
_SECTIONS = frozenset(
    {
        "NODE_COORD_SECTION",
        "DEMAND_SECTION",
        "DEPOT_SECTION",
        "EDGE_WEIGHT_SECTION",
        "SERVICE_TIME_SECTION",
    }
)
_EXPLICIT_FORMATS = frozenset(
    {"FULL_MATRIX", "LOWER_ROW", "UPPER_ROW", "LOWER_DIAG_ROW", "UPPER_DIAG_ROW"}
)


@dataclass(frozen=True)
class VrplibMeta:
    """What the instance file says beyond the :class:`Problem`."""

    name: str
    comment: str
    dimension: int
    capacity: int
    depot_node: int
    edge_weight_type: str
    #: stop id -> customer number in CVRPLIB solutions
    customer_number: Mapping[str, int]

    @property
    def stop_of_customer(self) -> dict[int, str]:
        return {n: sid for sid, n in self.customer_number.items()}


def read_vrplib(path: Path | str, *, vehicles: int | None = None) -> tuple[Problem, VrplibMeta]:
    """Parse a CVRP instance; ``vehicles`` overrides the fleet size."""
    header, sections = _parse(_read_text(path), str(path))
    kind = header.get("TYPE", "CVRP").split()[0] if header.get("TYPE") else "CVRP"
    if kind not in ("CVRP", "ACVRP"):
        raise VrplibError(f"{path}: TYPE {kind} is not supported (CVRP only)")
    dimension = _header_int(header, "DIMENSION", path)
    capacity = _header_int(header, "CAPACITY", path)
    if dimension < 2:
        raise VrplibError(f"{path}: DIMENSION must be at least 2")

    demand = _node_table(sections, "DEMAND_SECTION", dimension, 1, path)[:, 0]
    depots = [int(x) for x in sections.get("DEPOT_SECTION", [])]
    depots = depots[: depots.index(-1)] if -1 in depots else depots
    if len(depots) != 1:
        raise VrplibError(f"{path}: expected exactly one depot in DEPOT_SECTION, got {depots}")
    depot = int(depots[0])
    if not 1 <= depot <= dimension:
        raise VrplibError(f"{path}: depot {depot} outside 1..{dimension}")
    service = (
        _node_table(sections, "SERVICE_TIME_SECTION", dimension, 1, path)[:, 0]
        if "SERVICE_TIME_SECTION" in sections
        else np.zeros(dimension)
    )

    weight_type = header.get("EDGE_WEIGHT_TYPE", "").upper()
    if weight_type == "EUC_2D":
        coords = _node_table(sections, "NODE_COORD_SECTION", dimension, 2, path)
        distance = _euclidean_rounded(coords)
    elif weight_type == "EXPLICIT":
        fmt = header.get("EDGE_WEIGHT_FORMAT", "").upper()
        distance = _explicit(sections.get("EDGE_WEIGHT_SECTION", []), fmt, dimension, path)
    else:
        raise VrplibError(f"{path}: EDGE_WEIGHT_TYPE {weight_type or '(missing)'} not supported")

    stops: list[Stop] = []
    numbers: dict[str, int] = {}
    for node in range(1, dimension + 1):
        if node == depot:
            continue
        d, s = demand[node - 1], service[node - 1]
        if d < 0 or d != int(d) or s < 0 or s != int(s):
            raise VrplibError(f"{path}: node {node}: demand and service must be integers >= 0")
        stops.append(Stop(str(node), node - 1, int(d), service_s=int(s)))
        numbers[str(node)] = len(numbers) + 1
    name = header.get("NAME", Path(path).stem)
    count = vehicles if vehicles is not None else _fleet_size(header, name, demand, capacity)
    if count < 1:
        raise VrplibError(f"{path}: at least one vehicle is needed")
    vtype = VehicleType("truck", capacity)
    problem = Problem(
        tuple(stops),
        (Site(DEPOT_ID, depot - 1),),
        fleet(vtype, count, depot=DEPOT_ID, shift=_SHIFT),
        distance,
        distance,
        name=name,
    )
    meta = VrplibMeta(
        name=name,
        comment=header.get("COMMENT", "").strip().strip('"'),
        dimension=dimension,
        capacity=capacity,
        depot_node=depot,
        edge_weight_type=weight_type,
        customer_number=numbers,
    )
    logger.info("read %s: %d customers, capacity %d, %d trucks", name, len(stops), capacity, count)
    return problem, meta


def format_solution(plan: Plan, meta: VrplibMeta, *, cost: int | None = None) -> str:
    """The plan as a CVRPLIB ``.sol`` text; ``cost`` defaults to the plan's distance."""
    lines: list[str] = []
    for route in plan.routes:
        numbers = [meta.customer_number[sid] for sid in route.stop_ids]
        if numbers:
            lines.append(f"Route #{len(lines) + 1}: {' '.join(map(str, numbers))}")
    lines.append(f"Cost {plan.distance_m if cost is None else cost}")
    return "\n".join(lines) + "\n"


def read_solution(path: Path | str) -> tuple[list[list[int]], int | None]:
    """Routes (customer numbers) and the ``Cost`` of a CVRPLIB ``.sol`` file."""
    routes: list[list[int]] = []
    cost: int | None = None
    for raw in _read_text(path).splitlines():
        line = raw.strip()
        if not line:
            continue
        route = re.match(r"Route\s*#\s*\d+\s*:(.*)$", line, re.IGNORECASE)
        if route:
            try:
                routes.append([int(x) for x in route.group(1).split()])
            except ValueError:
                raise VrplibError(f"{path}: bad route line {line!r}") from None
        elif line.lower().startswith("cost"):
            try:
                cost = round(float(line.split()[1]))
            except (IndexError, ValueError):
                raise VrplibError(f"{path}: bad cost line {line!r}") from None
    if not routes:
        raise VrplibError(f"{path}: no 'Route #' lines")
    return routes, cost


def solution_plan(
    problem: Problem, meta: VrplibMeta, routes: Sequence[Sequence[int]], *, engine: str = ""
) -> Plan:
    """A CVRPLIB solution as a :class:`Plan` (one truck per route, times = driving)."""
    if len(routes) > len(problem.vehicles):
        raise VrplibError(f"{len(routes)} routes but only {len(problem.vehicles)} trucks")
    stop_of = meta.stop_of_customer
    depot = problem.site_by_id[DEPOT_ID]
    out: list[Route] = []
    for r, vehicle in enumerate(problem.vehicles):
        if r >= len(routes):
            out.append(Route(vehicle.id))
            continue
        clock, here = vehicle.shift.start, depot.location
        visits = [Visit(VisitKind.DEPOT, DEPOT_ID, here, clock, clock)]
        for number in routes[r]:
            sid = stop_of.get(number)
            if sid is None:
                raise VrplibError(f"customer {number} is not in {meta.name}")
            stop = problem.stop_by_id[sid]
            clock += int(problem.time_s[here, stop.location])
            visits.append(Visit(VisitKind.STOP, sid, stop.location, clock, clock + stop.service_s))
            clock, here = clock + stop.service_s, stop.location
        clock += int(problem.time_s[here, depot.location])
        visits.append(Visit(VisitKind.DEPOT, DEPOT_ID, depot.location, clock, clock))
        out.append(make_route(problem, vehicle, visits))
    return Plan(tuple(out), (), engine)


# -- parsing --------------------------------------------------------------------------


def _read_text(path: Path | str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VrplibError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VrplibError(f"{path}: cannot read: {exc}") from None


def _parse(text: str, where: str) -> tuple[dict[str, str], dict[str, list[float]]]:
    header: dict[str, str] = {}
    sections: dict[str, list[float]] = {}
    current: list[float] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        word = line.split()[0].rstrip(":").upper()
        if word == "EOF":
            break
        if word in _SECTIONS:
            current = sections.setdefault(word, [])
            continue
        if ":" in line and not _is_number(line.split()[0]):
            key, _, value = line.partition(":")
            header[key.strip().upper()] = value.strip()
            current = None
            continue
        if current is None:
            raise VrplibError(f"{where}:{number}: unexpected line {line!r}")
        try:
            current.extend(float(x) for x in line.split())
        except ValueError:
            raise VrplibError(f"{where}:{number}: not a number in {line!r}") from None
    if not header and not sections:
        raise VrplibError(f"{where}: empty or not a VRPLIB file")
    return header, sections


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _header_int(header: Mapping[str, str], key: str, path: Path | str) -> int:
    if key not in header:
        raise VrplibError(f"{path}: {key} missing")
    try:
        return int(header[key].split()[0])
    except (ValueError, IndexError):
        raise VrplibError(f"{path}: {key} is not an integer: {header[key]!r}") from None


def _node_table(
    sections: Mapping[str, list[float]], name: str, dimension: int, width: int, path: Path | str
) -> FloatArray:
    """Rows ``id v1 .. vwidth`` for ids 1..dimension, returned in id order."""
    values = sections.get(name)
    if values is None:
        raise VrplibError(f"{path}: {name} missing")
    if len(values) != dimension * (width + 1):
        raise VrplibError(
            f"{path}: {name} has {len(values)} numbers, expected {dimension} rows of {width + 1}"
        )
    table = np.array(values).reshape(dimension, width + 1)
    ids = table[:, 0]
    if sorted(ids.tolist()) != list(range(1, dimension + 1)):
        raise VrplibError(f"{path}: {name} node ids must be 1..{dimension}")
    order = np.argsort(ids)
    return table[order, 1:]


def _euclidean_rounded(coords: FloatArray) -> IntMatrix:
    diff = coords[:, None, :] - coords[None, :, :]
    exact = np.sqrt((diff**2).sum(axis=2))
    out: IntMatrix = np.floor(exact + 0.5).astype(np.int64)  # half up, like CVRPLIB's nint
    return out


def _explicit(values: list[float], fmt: str, n: int, path: Path | str) -> IntMatrix:
    if fmt not in _EXPLICIT_FORMATS:
        raise VrplibError(f"{path}: EDGE_WEIGHT_FORMAT {fmt or '(missing)'} not supported")
    expected = {
        "FULL_MATRIX": n * n,
        "LOWER_ROW": n * (n - 1) // 2,
        "UPPER_ROW": n * (n - 1) // 2,
        "LOWER_DIAG_ROW": n * (n + 1) // 2,
        "UPPER_DIAG_ROW": n * (n + 1) // 2,
    }[fmt]
    if len(values) != expected:
        msg = f"{path}: EDGE_WEIGHT_SECTION has {len(values)} values, expected {expected}"
        raise VrplibError(msg)
    if fmt == "FULL_MATRIX":
        full: IntMatrix = np.rint(np.array(values).reshape(n, n)).astype(np.int64)
        return full
    out = np.zeros((n, n))
    diag = fmt.endswith("DIAG_ROW")
    if fmt.startswith("LOWER"):
        rows, cols = np.tril_indices(n, 0 if diag else -1)
    else:
        rows, cols = np.triu_indices(n, 0 if diag else 1)
    out[rows, cols] = values
    out[cols, rows] = values
    result: IntMatrix = np.rint(out).astype(np.int64)
    return result


def _fleet_size(header: Mapping[str, str], name: str, demand: FloatArray, capacity: int) -> int:
    if "VEHICLES" in header:
        k = int(header["VEHICLES"].split()[0])
    elif match := re.search(r"-k(\d+)", name):
        k = int(match.group(1))
    else:
        k = math.ceil(float(demand.sum()) / max(capacity, 1))
    return max(1, k + max(2, k // 4))
