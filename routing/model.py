"""The waste-collection routing problem and its answer, as plain frozen dataclasses.

A :class:`Problem` holds bins to empty (:class:`Stop`), depots and disposal sites
(:class:`Site`), a heterogeneous fleet (:class:`Vehicle` of a :class:`VehicleType`), an
optional working-time :class:`BreakRule` and two square matrices over *locations*
(time in seconds, distance in metres; typically from ``RoadNetwork.matrix``). Every
object refers to a location by its row/column index in those matrices.

A :class:`Plan` is what an :class:`Engine` returns: one :class:`Route` per vehicle (an
ordered list of :class:`Visit` with times and loads) and the stops it leaves out, each
with a reason (:class:`Unserved`). Times are seconds since the plan's day start; the
caller turns them into datetimes.

:func:`~cityops.routing.screening.screen` finds what no engine could plan (a bin larger
than any truck, a location with no road path to or from the depots, a time window no truck
can reach) so that engines report those stops with a clear reason instead of failing.

Nothing here imports a solver, a database or a network client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cached_property
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "GERMAN_BREAK_RULE",
    "UNREACHABLE",
    "BreakRule",
    "Engine",
    "IntMatrix",
    "Plan",
    "Problem",
    "Route",
    "Site",
    "SiteKind",
    "Stop",
    "TimeWindow",
    "Unserved",
    "UnservedCode",
    "Vehicle",
    "VehicleStart",
    "VehicleType",
    "Visit",
    "VisitKind",
    "fleet",
    "format_clock",
    "make_route",
]

IntMatrix = npt.NDArray[np.int64]

#: Matrix entry meaning "no road path". Larger inputs and ``inf`` are stored as this value.
#: 10⁹ s or m is far beyond any city trip and small enough that sums stay exact in int64.
UNREACHABLE: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A closed interval of seconds since the day start, ``start <= end``."""

    start: int
    end: int

    def __post_init__(self) -> None:
        _require_int(self.start, "TimeWindow.start")
        _require_int(self.end, "TimeWindow.end")
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"time window needs 0 <= start <= end, got {self.start}..{self.end}")

    def __str__(self) -> str:
        return f"{format_clock(self.start)}-{format_clock(self.end)}"


@dataclass(frozen=True, slots=True)
class Stop:
    """A bin to empty.

    ``demand_l`` (litres, and ``demand_kg`` when trucks are weight-limited) is what the
    truck picks up. ``window`` bounds when service may *start*. An optional stop
    (``required=False``) may be left out at a cost of ``penalty`` (same unit as distance,
    metres): it is the reward for serving it. Required stops are always attempted; those
    that cannot fit are reported as :class:`Unserved`.
    """

    id: str
    location: int
    demand_l: int
    demand_kg: int | None = None
    service_s: int = 0
    window: TimeWindow | None = None
    required: bool = True
    penalty: int = 0

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("stop id must not be empty")
        for name in ("location", "demand_l", "service_s", "penalty"):
            _require_nonneg_int(getattr(self, name), f"stop {self.id}: {name}")
        if self.demand_kg is not None:
            _require_nonneg_int(self.demand_kg, f"stop {self.id}: demand_kg")
        if self.required and self.penalty:
            raise ValueError(f"stop {self.id}: a penalty applies only to optional stops")


class SiteKind(StrEnum):
    DEPOT = "depot"
    DISPOSAL = "disposal"


@dataclass(frozen=True, slots=True)
class Site:
    """A depot (where trucks start and end) or a disposal site (where a truck unloads).

    ``unload_s`` is the time an unload takes at a disposal site; ``opening`` bounds when
    an unload may start.
    """

    id: str
    location: int
    kind: SiteKind = SiteKind.DEPOT
    unload_s: int = 0
    opening: TimeWindow | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("site id must not be empty")
        _require_nonneg_int(self.location, f"site {self.id}: location")
        _require_nonneg_int(self.unload_s, f"site {self.id}: unload_s")
        object.__setattr__(self, "kind", SiteKind(self.kind))


@dataclass(frozen=True, slots=True)
class VehicleType:
    """A kind of truck: body volume in litres and, when weight-limited, payload in kg."""

    name: str
    capacity_l: int
    capacity_kg: int | None = None

    def __post_init__(self) -> None:
        _require_nonneg_int(self.capacity_l, f"vehicle type {self.name}: capacity_l")
        if self.capacity_kg is not None:
            _require_nonneg_int(self.capacity_kg, f"vehicle type {self.name}: capacity_kg")


@dataclass(frozen=True, slots=True)
class VehicleStart:
    """Where a truck is now, for re-planning during the day.

    It is free at ``location`` from ``time_s`` with ``load_l``/``load_kg`` on board and
    has worked ``worked_s`` seconds since its last break.
    """

    location: int
    time_s: int
    load_l: int = 0
    load_kg: int = 0
    worked_s: int = 0

    def __post_init__(self) -> None:
        for name in ("location", "time_s", "load_l", "load_kg", "worked_s"):
            _require_nonneg_int(getattr(self, name), f"vehicle start: {name}")


@dataclass(frozen=True, slots=True)
class Vehicle:
    """One truck: its type, home depot (start and end), shift and, optionally, state now."""

    id: str
    type: VehicleType
    depot: str
    shift: TimeWindow
    start: VehicleStart | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("vehicle id must not be empty")
        if self.start is not None and not (self.shift.start <= self.start.time_s <= self.shift.end):
            raise ValueError(f"vehicle {self.id}: start time outside its shift {self.shift}")

    @property
    def start_time(self) -> int:
        return self.shift.start if self.start is None else self.start.time_s


def fleet(
    vehicle_type: VehicleType, count: int, *, depot: str, shift: TimeWindow, prefix: str = ""
) -> tuple[Vehicle, ...]:
    """``count`` identical trucks named ``{prefix}{type name}-{i}``."""
    return tuple(
        Vehicle(f"{prefix}{vehicle_type.name}-{i}", vehicle_type, depot, shift)
        for i in range(1, count + 1)
    )


@dataclass(frozen=True, slots=True)
class BreakRule:
    """A break of ``duration_s`` must start before ``max_work_s`` of work have elapsed.

    The default is the German Arbeitszeitgesetz (§4) as we apply it: no stretch of more
    than 6 h of work without a 30-minute break. Waiting counts as work.
    """

    max_work_s: int = 6 * 3600
    duration_s: int = 30 * 60

    def __post_init__(self) -> None:
        if self.max_work_s <= 0 or self.duration_s <= 0:
            raise ValueError("break rule needs a positive max_work_s and duration_s")


GERMAN_BREAK_RULE: Final = BreakRule()


@dataclass(frozen=True, eq=False)
class Problem:
    """Everything an engine needs; validated on construction.

    ``time_s`` and ``distance_m`` are square matrices over locations (row = from). Float
    input is rounded; ``inf`` and values ``>= UNREACHABLE`` mean no road path and are
    stored as :data:`UNREACHABLE`; NaN is rejected. Both are read-only int64 arrays.
    ``unload_before_return`` makes every truck come back empty (its last stop before the
    depot is then a disposal site whenever it collected anything).
    """

    stops: tuple[Stop, ...]
    sites: tuple[Site, ...]
    vehicles: tuple[Vehicle, ...]
    time_s: IntMatrix
    distance_m: IntMatrix
    break_rule: BreakRule | None = None
    unload_before_return: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        for name in ("stops", "sites", "vehicles"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        time_s = _as_matrix(self.time_s, "time_s")
        distance_m = _as_matrix(self.distance_m, "distance_m")
        if time_s.shape != distance_m.shape:
            raise ValueError(f"time {time_s.shape} and distance {distance_m.shape} differ")
        object.__setattr__(self, "time_s", time_s)
        object.__setattr__(self, "distance_m", distance_m)
        n = time_s.shape[0]
        _unique((s.id for s in self.stops), "stop")
        _unique((s.id for s in self.sites), "site")
        _unique((v.id for v in self.vehicles), "vehicle")
        items: tuple[Stop | Site, ...] = (*self.stops, *self.sites)
        for item in items:
            if item.location >= n:
                msg = f"{item.id}: location {item.location} outside the matrix (n={n})"
                raise ValueError(msg)
        sites = {s.id: s for s in self.sites}
        for v in self.vehicles:
            depot = sites.get(v.depot)
            if depot is None or depot.kind is not SiteKind.DEPOT:
                raise ValueError(f"vehicle {v.id}: depot {v.depot!r} is not a depot site")
            if v.start is not None and v.start.location >= n:
                raise ValueError(f"vehicle {v.id}: start location outside the matrix")
        if self.unload_before_return and not any(s.kind is SiteKind.DISPOSAL for s in self.sites):
            raise ValueError("unload_before_return needs at least one disposal site")

    @cached_property
    def stop_by_id(self) -> Mapping[str, Stop]:
        return {s.id: s for s in self.stops}

    @cached_property
    def site_by_id(self) -> Mapping[str, Site]:
        return {s.id: s for s in self.sites}

    @cached_property
    def disposal_sites(self) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if s.kind is SiteKind.DISPOSAL)

    @property
    def uses_kg(self) -> bool:
        """Whether weight is limited: some truck has a payload and some bin a weight."""
        return any(v.type.capacity_kg is not None for v in self.vehicles) and any(
            s.demand_kg for s in self.stops
        )

    def start_location(self, vehicle: Vehicle) -> int:
        if vehicle.start is not None:
            return vehicle.start.location
        return self.site_by_id[vehicle.depot].location

    def end_location(self, vehicle: Vehicle) -> int:
        return self.site_by_id[vehicle.depot].location

    def needs_breaks(self, vehicle: Vehicle) -> bool:
        """Whether the break rule can bind for this vehicle (its remaining shift is long)."""
        rule = self.break_rule
        if rule is None:
            return False
        worked = vehicle.start.worked_s if vehicle.start is not None else 0
        return vehicle.shift.end - vehicle.start_time + worked > rule.max_work_s


class VisitKind(StrEnum):
    DEPOT = "depot"
    START = "start"  # a re-planned truck's current position
    STOP = "stop"
    UNLOAD = "unload"
    BREAK = "break"


@dataclass(frozen=True, slots=True)
class Visit:
    """One step of a route.

    ``ref`` is the stop id, the site id, the vehicle id (for ``START``) or ``""`` for a
    break. ``arrival_s`` is when service starts (any waiting for a time window happens
    before it); ``departure_s`` when the truck leaves. A break is taken on the way from the
    previous visit to the next one; its ``location`` is the previous visit's. ``load_l``
    and ``load_kg`` are on board after the visit.
    """

    kind: VisitKind
    ref: str
    location: int
    arrival_s: int
    departure_s: int
    load_l: int = 0
    load_kg: int = 0

    def __post_init__(self) -> None:
        if self.departure_s < self.arrival_s:
            raise ValueError(f"visit {self.ref}: departure before arrival")


@dataclass(frozen=True, slots=True)
class Route:
    """A vehicle's day; ``visits`` is empty for an unused vehicle, else starts at its depot
    (or current position) and ends at its depot."""

    vehicle_id: str
    visits: tuple[Visit, ...] = ()
    distance_m: int = 0
    duration_s: int = 0

    @property
    def stop_ids(self) -> tuple[str, ...]:
        return tuple(v.ref for v in self.visits if v.kind is VisitKind.STOP)

    @property
    def is_empty(self) -> bool:
        return not self.stop_ids


def make_route(problem: Problem, vehicle: Vehicle, visits: Sequence[Visit]) -> Route:
    """A route from visits with times set: fills in loads, distance and duration.

    The load starts at the vehicle's current load, grows at each stop and drops to zero
    at each unload; distance sums the matrix along consecutive non-break visits.
    """
    if not visits:
        return Route(vehicle.id)
    load_l = vehicle.start.load_l if vehicle.start is not None else 0
    load_kg = vehicle.start.load_kg if vehicle.start is not None else 0
    stops = problem.stop_by_id
    out: list[Visit] = []
    distance = 0
    previous: int | None = None
    for visit in visits:
        if visit.kind is VisitKind.STOP:
            stop = stops[visit.ref]
            load_l += stop.demand_l
            load_kg += stop.demand_kg or 0
        elif visit.kind is VisitKind.UNLOAD:
            load_l = load_kg = 0
        if visit.kind is not VisitKind.BREAK:
            if previous is not None:
                distance += int(problem.distance_m[previous, visit.location])
            previous = visit.location
        out.append(replace(visit, load_l=load_l, load_kg=load_kg))
    duration = out[-1].arrival_s - out[0].departure_s
    return Route(vehicle.id, tuple(out), distance, duration)


class UnservedCode(StrEnum):
    CAPACITY = "capacity"
    UNREACHABLE = "unreachable"
    TIME_WINDOW = "time_window"
    SHIFT = "shift"
    NOT_PLANNED = "not_planned"
    OPTIONAL_DROPPED = "optional_dropped"


@dataclass(frozen=True, slots=True)
class Unserved:
    stop_id: str
    code: UnservedCode
    reason: str


@dataclass(frozen=True)
class Plan:
    """An engine's answer: one route per vehicle and every stop it leaves out, with why."""

    routes: tuple[Route, ...]
    unserved: tuple[Unserved, ...] = ()
    engine: str = ""

    @property
    def distance_m(self) -> int:
        return sum(r.distance_m for r in self.routes)

    @property
    def served(self) -> frozenset[str]:
        return frozenset(sid for r in self.routes for sid in r.stop_ids)

    def route(self, vehicle_id: str) -> Route | None:
        return next((r for r in self.routes if r.vehicle_id == vehicle_id), None)

    def penalty(self, problem: Problem) -> int:
        """Sum of penalties of the optional stops left out (the objective's other term)."""
        stops = problem.stop_by_id
        return sum(stops[u.stop_id].penalty for u in self.unserved if u.stop_id in stops)


class Engine(Protocol):
    """A routing engine. Deterministic for a seed except where it documents otherwise."""

    @property
    def name(self) -> str: ...

    def solve(
        self,
        problem: Problem,
        *,
        time_limit_s: float,
        seed: int = 0,
        initial: Plan | None = None,
    ) -> Plan: ...


# -- helpers --------------------------------------------------------------------------


def format_clock(seconds: int) -> str:
    """``HH:MM`` (``+1d`` past midnight) for seconds since the day start."""
    days, rest = divmod(int(seconds), 86_400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}"
    return f"{text}+{days}d" if days else text


def _as_matrix(values: object, name: str) -> IntMatrix:
    arr = np.asarray(values)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if np.isnan(arr).any():
            raise ValueError(f"{name} contains NaN")
        arr = np.rint(np.minimum(arr, UNREACHABLE))
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if (arr < 0).any():
        raise ValueError(f"{name} contains negative values")
    out: IntMatrix = np.minimum(arr, UNREACHABLE).astype(np.int64)
    out.setflags(write=False)
    return out


def _unique(ids: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"duplicate {what} id {i!r}")
        seen.add(i)


def _require_int(value: object, what: str) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _require_nonneg_int(value: object, what: str) -> None:
    if _require_int(value, what) < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
