"""A roadwork approved during the day closes a street a truck drives: the registry writes
the closure, the re-planner (real database and broker) notices it and pushes a new route
version that names the closure and no longer uses the closed street; and the daily plan
avoids closures that hold during its shifts."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import numpy as np
import psycopg
import pytest
from shapely.geometry import LineString

from cityops.ingest.config import Settings
from cityops.ingest.contract import RouteCommand
from cityops.ingest.db import connect
from cityops.roadworks.config import load_roadworks_settings
from cityops.roadworks.model import (
    Actor,
    Category,
    Measure,
    RoadworkSpec,
    Role,
    Sector,
    Status,
    Street,
)
from cityops.roadworks.service import RoadworksService
from cityops.routing.closures import Closure, apply_closures
from cityops.routing.daily import closures_during, plan_day
from cityops.routing.network import RoadNetwork
from cityops.routing.planning import BERLIN
from cityops.routing.replan.pipeline import ReplanReport
from cityops.routing.repository import current_route, load_closures
from tests.routing.replan_support import (
    ENGINE,
    PATIENCE_S,
    Devices,
    clock,
    make_replanner,
    seed_city,
    wait_for,
)

PROMOTER = Actor("Anna Schmidt", "Stadtwerke", Role.PROMOTER)
AUTHORITY = Actor("Jonas Weber", "Straßenverkehrsbehörde", Role.AUTHORITY)

Pair = tuple[int, int]


@pytest.fixture
def replanner(settings: Settings, network: RoadNetwork) -> Iterator[list[ReplanReport]]:
    """The re-planning service as in `test_replanner.py`, polling closures every 0.3 s."""
    reports: list[ReplanReport] = []
    rp = make_replanner(settings, network, reports)
    rp.start()
    assert rp.wait_ready(PATIENCE_S)
    try:
        yield reports
    finally:
        rp.stop()


def _node_at(network: RoadNetwork) -> dict[tuple[float, float], int]:
    return {
        (float(x), float(y)): i
        for i, (x, y) in enumerate(zip(network.lon, network.lat, strict=True))
    }


def _pairs(coords: Sequence[Sequence[float]], node_at: dict[tuple[float, float], int]) -> set[Pair]:
    """The directed edges a route geometry drives (its points are network nodes)."""
    nodes = [node_at[(float(c[0]), float(c[1]))] for c in coords]
    return {(a, b) for a, b in itertools.pairwise(nodes) if a != b}


def _edge_pairs(network: RoadNetwork) -> set[Pair]:
    return {(int(s), int(d)) for s, d in zip(network.src, network.dst, strict=True)}


def _street_to_close(network: RoadNetwork, route: RouteCommand) -> tuple[str, LineString]:
    """A named edge in the middle of the route, at least 30 m long and away from its
    stops (so every bin stays reachable), as a street centreline."""
    node_at = _node_at(network)
    driven = list(_pairs(route.geometry.coordinates, node_at))
    stops = {network.nearest_node(s.lat, s.lon) for s in route.stops}
    index = {
        (int(s), int(d)): e for e, (s, d) in enumerate(zip(network.src, network.dst, strict=True))
    }
    candidates = sorted(
        (index[p] for p in driven if p in index),
        key=lambda e: -float(network.length_m[e]),
    )
    for e in candidates:
        u, v = int(network.src[e]), int(network.dst[e])
        if network.name[e] and network.length_m[e] >= 30 and not {u, v} & stops:
            line = LineString([(network.lon[u], network.lat[u]), (network.lon[v], network.lat[v])])
            return str(network.name[e]), line
    raise AssertionError("the route drives no named street away from its stops")


def _close_today(
    settings: Settings,
    street: str,
    line: LineString,
    start: datetime | None = None,
    end: datetime | None = None,
) -> str:
    """Register a road closure on `line` and approve it (by default from an hour ago to
    tomorrow), through the registry."""
    rw = load_roadworks_settings()
    svc = RoadworksService.from_settings(rw)
    projector = rw.frame().projector
    now = clock()
    spec = RoadworkSpec(
        title="Rohrbruch Wasserleitung",
        promoter="Stadtwerke",
        sector=Sector.WATER,
        category=Category.STANDARD,
        footprint=projector.to_lonlat(projector.to_metric(line).buffer(4, cap_style="flat")),
        streets=(Street(street, line),),
        planned_start=start or now - timedelta(hours=1),
        planned_end=end or now + timedelta(days=1),
        measures=frozenset({Measure.ROAD_CLOSURE}),
        public_text="Vollsperrung wegen Rohrbruch.",
    )
    with connect(settings.database_url, autocommit=True) as conn:
        work = svc.create(conn, spec, PROMOTER)
        svc.submit(conn, work.id, PROMOTER)
        svc.transition(conn, work.id, Status.APPROVED, AUTHORITY, note="Sofortmaßnahme")
    return work.reference


def _plan_from_now(settings: Settings, network: RoadNetwork) -> RouteCommand:
    """The test city with today's plan for T01 made again with its shift starting now, so
    that a re-plan without the closure would keep its stops and ETAs: only the closure
    makes the new version."""
    seed_city(settings, network)
    now = clock().replace(microsecond=0)
    local = now.astimezone(BERLIN)
    start = max(local - timedelta(minutes=2), local.replace(hour=0, minute=0, second=0))
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("UPDATE trucks SET shift_start = %s", (start.time(),))
    report = plan_day(
        settings, local.date(), time_limit_s=5, engine=ENGINE, now=now, network=network
    )
    [route] = report.routes
    assert route.truck_id == "T01" and route.version == 2
    assert abs((route.stops[0].etd - now).total_seconds()) < 600
    return route


def test_a_roadwork_approved_today_re_plans_around_the_closed_street(
    settings: Settings,
    network: RoadNetwork,
    devices: Devices,
    replanner: list[ReplanReport],
) -> None:
    v1 = _plan_from_now(settings, network)
    street, line = _street_to_close(network, v1)

    reference = _close_today(settings, street, line)

    cid = f"roadwork:{reference}"
    route = devices.wait_route(lambda r: cid in str(r["reason"]))
    assert route["truck_id"] == "T01" and route["reason"] == f"street closure {cid} changed"
    assert route["version"] == 3

    with psycopg.connect(settings.database_url) as conn:
        closures = load_closures(conn, valid_at_or_after=clock())
    assert [c.closure_id for c in closures] == [cid]
    derived, [effect] = apply_closures(network, closures, clock())
    assert street in effect.streets and effect.closed_edges >= 2  # both directions
    closed = _edge_pairs(network) - _edge_pairs(derived)
    node_at = _node_at(network)
    assert _pairs(v1.geometry.coordinates, node_at) & closed, "the daily plan drove there"
    geometry = route["geometry"]
    assert isinstance(geometry, dict)
    new = _pairs(geometry["coordinates"], node_at)
    assert new and not new & closed, "the new version avoids the closed street"
    wait_for("the re-plan's report", lambda: replanner)  # made after the push
    assert all(r.violations == () for r in replanner)
    assert np.isfinite(float(str(route["distance_m"])))


def test_the_daily_plan_avoids_a_closure_that_begins_during_the_shift(
    settings: Settings, network: RoadNetwork
) -> None:
    seed_city(settings, network)  # shifts 00:00-24:00; the plan (v1) drives a street ...
    now = clock().replace(microsecond=0)
    day = now.astimezone(BERLIN).date()
    with psycopg.connect(settings.database_url) as conn:
        v1 = current_route(conn, "T01", day)
    assert v1 is not None
    street, line = _street_to_close(network, v1)
    # ... that a roadwork closes from 10:00 to 12:00, long after the shift starts
    midnight = datetime.combine(day, datetime.min.time(), BERLIN)
    start, end = midnight + timedelta(hours=10), midnight + timedelta(hours=12)
    reference = _close_today(settings, street, line, start, end)

    report = plan_day(
        settings, day, time_limit_s=5, engine=ENGINE, now=now, network=network, push=False
    )
    [v2] = report.routes
    with psycopg.connect(settings.database_url) as conn:
        closures = load_closures(conn, valid_at_or_after=midnight)
    assert [c.closure_id for c in closures] == [f"roadwork:{reference}"]
    derived, _ = apply_closures(network, closures, start)
    closed = _edge_pairs(network) - _edge_pairs(derived)
    node_at = _node_at(network)
    assert _pairs(v1.geometry.coordinates, node_at) & closed
    assert not _pairs(v2.geometry.coordinates, node_at) & closed
    assert {s.bin_id for s in v2.stops if s.kind == "stop"} == {
        s.bin_id for s in v1.stops if s.kind == "stop"
    }


def test_closures_during_the_shifts() -> None:
    t = datetime(2025, 3, 3, 6, tzinfo=BERLIN)
    point = LineString([(24.94, 60.17), (24.941, 60.17)])

    def closure(cid: str, start_h: float, end_h: float) -> Closure:
        return Closure(cid, point, t + timedelta(hours=start_h), t + timedelta(hours=end_h), "test")

    shift_end = t + timedelta(hours=8)
    kept = closures_during(
        [
            closure("before", -10, -1),
            closure("morning", -1, 1),
            closure("noon", 4, 5),
            closure("after", 8, 12),
            closure("all", -24, 48),
        ],
        t,
        shift_end,
    )
    assert [c.closure_id for c in kept] == ["morning", "noon", "all"]
    assert all((c.valid_from, c.valid_to) == (t, shift_end) for c in kept)


def test_a_closure_that_begins_later_re_plans_when_it_begins(
    settings: Settings,
    network: RoadNetwork,
    devices: Devices,
    replanner: list[ReplanReport],
) -> None:
    v1 = _plan_from_now(settings, network)
    street, line = _street_to_close(network, v1)
    begins = clock() + timedelta(seconds=6)
    reference = _close_today(settings, street, line, begins, begins + timedelta(hours=2))
    approved = clock()
    cid = f"roadwork:{reference}"
    route = devices.wait_route(lambda r: cid in str(r["reason"]))
    assert clock() >= begins, "nothing changes before the closure begins"
    assert route["version"] == 3
    if approved < begins - timedelta(seconds=2):  # not so on a very slow machine
        # the approval itself re-planned, with nothing to change (reports follow the push)
        wait_for("two re-plans", lambda: len(replanner) >= 2)
        assert replanner[0].routes == ()
    with psycopg.connect(settings.database_url) as conn:
        closures = load_closures(conn, valid_at_or_after=begins)
    derived, _ = apply_closures(network, closures, begins)
    closed = _edge_pairs(network) - _edge_pairs(derived)
    geometry = route["geometry"]
    assert isinstance(geometry, dict)
    assert closed and not _pairs(geometry["coordinates"], _node_at(network)) & closed
