"""The pure re-planning core on a hand-written street: triggers, progress, the problem,
the starting solution, what changed, the reason text."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pytest

from cityops.ingest.contract import BinTelemetry, RouteCommand, TruckEvent
from cityops.routing.check import check_plan
from cityops.routing.model import Plan, UnservedCode, VisitKind
from cityops.routing.network import CachingNetwork, RoadNetwork
from cityops.routing.planning import BERLIN, DayAxis
from cityops.routing.replan.day import DayState, day_state, triggers_by_fraction
from cityops.routing.replan.documents import idle_route
from cityops.routing.replan.options import ReplanOptions
from cityops.routing.replan.problem import Replan, build_replan, relax_urgent
from cityops.routing.replan.stability import changed_trucks
from cityops.routing.replan.triggers import (
    Emptying,
    Trigger,
    TriggerKind,
    bin_trigger,
    describe,
    event_trigger,
    late_trigger,
)
from cityops.routing.rows import BinRow, SiteRow, TruckEventRow, TruckRow, TruckStateRow
from cityops.routing.solver import OrToolsEngine

DAY = date(2026, 11, 23)  # a Monday
AXIS = DayAxis(DAY)
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=BERLIN).astimezone(UTC)
N = 21  # nodes along the street, 100 m apart
LAT, LON0, DLON = 60.17, 24.90, 0.0018
OPTIONS = ReplanOptions()
ENGINE = OrToolsEngine(solution_limit=30)


def street() -> RoadNetwork:
    """One two-way street of N nodes, 100 m and 10 s per block."""
    src = np.array([*range(N - 1), *range(1, N)], dtype=np.int64)
    dst = np.array([*range(1, N), *range(N - 1)], dtype=np.int64)
    m = len(src)
    return RoadNetwork(
        lat=np.full(N, LAT),
        lon=LON0 + DLON * np.arange(N),
        osm_id=np.arange(N, dtype=np.int64),
        src=src,
        dst=dst,
        length_m=np.full(m, 100.0),
        speed_kmh=np.full(m, 36.0),
        travel_time_s=np.full(m, 10.0),
        name=np.array(["Testikatu"] * m, dtype=object),
        highway=np.array(["residential"] * m, dtype=object),
        way_id=np.ones(m, dtype=np.int64),
        tunnel=np.zeros(m, dtype=bool),
    )


NET = street()
SITES = [
    SiteRow("DEPOT-1", "depot", LAT, LON0),
    SiteRow("DISPOSAL-1", "disposal", LAT, LON0 + DLON * 20),
]
BINS = {
    f"B{i:02d}": BinRow(
        f"B{i:02d}", LAT, LON0 + DLON * (2 * i - 1), "Testikatu", "residual", 240, None, None, 60.0
    )
    for i in range(1, 10)
}
TRUCKS = [
    TruckRow("T01", 3000, None, "DEPOT-1", ("residual",), time(6, 0), time(14, 30)),
    TruckRow("T02", 3000, None, "DEPOT-1", ("residual",), time(6, 0), time(14, 30)),
]


def route(
    truck: str, bins: list[str], *, version: int = 1, created: datetime | None = None
) -> RouteCommand:
    """A version like the daily plan's: depot, the bins in order, an unload, the depot."""
    t = AXIS.at(AXIS.seconds(time(6, 0)))
    stops: list[dict[str, object]] = [
        {
            "seq": 0,
            "kind": "start",
            "site_id": "DEPOT-1",
            "lat": LAT,
            "lon": LON0,
            "eta": t,
            "etd": t,
            "load_after_l": 0.0,
        }
    ]
    load = 0.0
    for b in bins:
        t += timedelta(minutes=10)
        load += 200.0
        row = BINS[b]
        stops.append(
            {
                "seq": len(stops),
                "kind": "stop",
                "bin_id": b,
                "lat": row.lat,
                "lon": row.lon,
                "eta": t,
                "etd": t + timedelta(minutes=1),
                "load_after_l": load,
            }
        )
    for kind, site, lon in (("unload", "DISPOSAL-1", LON0 + DLON * 20), ("end", "DEPOT-1", LON0)):
        t += timedelta(minutes=15)
        stops.append(
            {
                "seq": len(stops),
                "kind": kind,
                "site_id": site,
                "lat": LAT,
                "lon": lon,
                "eta": t,
                "etd": t,
                "load_after_l": 0.0,
            }
        )
    return RouteCommand.model_validate(
        {
            "truck_id": truck,
            "plan_date": DAY,
            "version": version,
            "created_at": created or AXIS.at(0),
            "reason": "daily plan",
            "engine": "ortools",
            "distance_m": 1000.0,
            "duration_s": 3600.0,
            "stops": stops,
            "geometry": {"type": "LineString", "coordinates": []},
        }
    )


ROUTES = {"T01": route("T01", ["B01", "B02", "B03"]), "T02": route("T02", ["B05", "B06"])}


def at(hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 11, 23, hh, mm, tzinfo=BERLIN).astimezone(UTC)


def state(
    *,
    events: list[TruckEventRow] | None = None,
    states: dict[str, TruckStateRow] | None = None,
    routes: dict[str, RouteCommand] | None = None,
    bins: dict[str, BinRow] | None = None,
    breaks: dict[str, datetime] | None = None,
) -> DayState:
    return day_state(
        now=NOW,
        bins=(bins or BINS).values(),
        sites=SITES,
        trucks=TRUCKS,
        routes=ROUTES if routes is None else routes,
        events=events or [],
        states=states or {},
        break_ends=breaks or {},
        options=OPTIONS,
    )


def overflow(bin_id: str, fill: float = 98.0) -> Trigger:
    return Trigger(TriggerKind.OVERFLOW, NOW, bin_id=bin_id, fill_pct=fill)


def solve(s: DayState, triggers: list[Trigger]) -> tuple[Plan, Replan]:
    replan = build_replan(s, "residual", triggers, network=NET, options=OPTIONS)
    assert check_plan(replan.problem, replan.initial) == [], "the starting solution is feasible"
    plan = ENGINE.solve(replan.problem, time_limit_s=5, initial=replan.initial)
    assert check_plan(replan.problem, plan) == []
    return plan, replan


# -- triggers ---------------------------------------------------------------------------


def test_readings_raise_overflow_and_fire_but_not_from_a_faulty_sensor() -> None:
    def reading(**kw: object) -> BinTelemetry:
        return BinTelemetry.model_validate({"ts": NOW, "fill_pct": 40.0, **kw})

    assert bin_trigger("B01", reading(), OPTIONS) is None
    hit = bin_trigger("B01", reading(fill_pct=95.0), OPTIONS)
    assert hit is not None and hit.kind is TriggerKind.OVERFLOW and hit.fill_pct == 95.0
    fire = bin_trigger("B01", reading(fill_pct=96.0, temperature_c=71.0), OPTIONS)
    assert fire is not None and fire.kind is TriggerKind.FIRE
    assert bin_trigger("B01", reading(fill_pct=99.0, fault="stuck"), OPTIONS) is None


def test_only_skips_and_breakdowns_are_event_triggers() -> None:
    def event(kind: str, **kw: object) -> TruckEvent:
        return TruckEvent.model_validate({"ts": NOW, "kind": kind, **kw})

    assert event_trigger("T01", event("stop_done", bin_id="B01")) is None
    skip = event_trigger("T01", event("stop_skipped", bin_id="B02", reason="blocked access"))
    assert skip is not None and str(skip) == "truck T01 skipped B02: blocked access"
    broken = event_trigger("T02", event("breakdown"))
    assert broken is not None and str(broken) == "truck T02 breakdown"


def test_a_truck_is_late_only_beyond_15_minutes_after_its_next_stop() -> None:
    # T01's stops are due at 06:10, 06:20, 06:30; B01 is done, so B02 (06:20) is next.
    r = ROUTES["T01"]
    done = {"B01": Emptying(at(6, 11), at(6, 11))}
    assert late_trigger("T01", at(6, 34), r, done, OPTIONS) is None
    late = late_trigger("T01", at(6, 40), r, done, OPTIONS)
    assert late is not None and str(late) == "truck T01 20 min behind"
    all_done = {b: Emptying(at(6, m), at(6, m)) for b, m in (("B01", 11), ("B02", 41), ("B03", 50))}
    assert late_trigger("T01", at(12), r, all_done, OPTIONS) is None


def test_reason_lists_each_trigger_once_oldest_first_and_fits_a_route() -> None:
    skip = Trigger(
        TriggerKind.SKIPPED,
        NOW + timedelta(seconds=1),
        bin_id="B0017",
        truck_id="T02",
        detail="blocked access",
    )
    assert describe([skip, overflow("B0042"), overflow("B0042")]) == (
        "bin B0042 overflow; truck T02 skipped B0017: blocked access"
    )
    many = [overflow(f"B{i:04d}") for i in range(100)]
    text = describe(many)
    assert len(text) <= 500 and text.endswith("more") and text.startswith("bin B0000 overflow")


def test_triggers_are_grouped_by_fraction_and_moot_ones_dropped() -> None:
    s = state(events=[TruckEventRow("T01", at(8, 41), "stop_done", "B01", None)])
    groups = triggers_by_fraction(
        [overflow("B02"), overflow("B01"), overflow("B99"), overflow("B08")], s
    )
    # B02 is on T01's route, B01 was emptied 19 minutes before the reading (a late
    # reading, or one taken while it was emptied), B99 is unknown
    assert groups == {"residual": (overflow("B08"),)}
    closure = Trigger(TriggerKind.CLOSURE, NOW, detail="C1")
    assert triggers_by_fraction([closure], s) == {"residual": (closure,)}


def test_a_bin_full_again_hours_after_its_emptying_comes_back() -> None:
    # B01 emptied at 06:11, 98 % again at 09:00: it filled up again (an event, a fire).
    done_b01 = TruckEventRow("T01", at(6, 11), "stop_done", "B01", None)
    s = state(events=[done_b01])
    assert s.refilled("B01", NOW) and not s.refilled("B01", at(6, 40))
    assert triggers_by_fraction([overflow("B01")], s) == {"residual": (overflow("B01"),)}
    plan, replan = solve(s, [overflow("B01")])
    assert replan.problem.stop_by_id["B01"].required and "B01" in plan.served

    # The version that takes it back (08:00) lists it again, to come; the daily plan's
    # had it done.
    assert "B01" in s.emptied_for(ROUTES["T01"])
    again = route("T01", ["B01", "B02", "B03"], created=at(8))
    s2 = state(events=[done_b01], routes={**ROUTES, "T01": again})
    assert s2.on_route("B01") == "T01"
    assert next(x.bin_id for x in s2.remaining("T01") if x.kind == "stop") == "B01"
    # Emptied again at 08:20: done on that version too; a reading of 08:30 is too close.
    s3 = state(
        events=[done_b01, TruckEventRow("T01", at(8, 20), "stop_done", "B01", None)],
        routes={**ROUTES, "T01": again},
    )
    assert s3.on_route("B01") is None
    late = Trigger(TriggerKind.OVERFLOW, at(8, 30), bin_id="B01", fill_pct=98.0)
    assert triggers_by_fraction([late], s3) == {}


def test_done_follows_when_the_platform_learned_of_an_emptying_not_the_trucks_clock() -> None:
    # Emptied at 06:11 by the tablet's clock, stored at 08:55 (it was offline): a version
    # made at 08:45 was planned without knowing it, so the stop is done on it, and a
    # reading at 09:00 does not bring the bin back yet (a version made now would count
    # it done as well).
    late = TruckEventRow("T01", at(6, 11), "stop_done", "B01", None, at(8, 55))
    v2 = route("T01", ["B01", "B02", "B03"], created=at(8, 45))
    s = state(events=[late], routes={**ROUTES, "T01": v2})
    assert "B01" in s.emptied_for(v2) and s.on_route("B01") is None
    assert not s.refilled("B01", NOW)
    assert triggers_by_fraction([overflow("B01")], s) == {}


def test_a_stale_tablet_skipping_a_bin_another_truck_emptied_is_ignored() -> None:
    # T02 emptied B02 at 08:50; T01's version of 06:00 still lists it and T01 skips it.
    s = state(events=[TruckEventRow("T02", at(8, 50), "stop_done", "B02", None)])
    skip = Trigger(TriggerKind.SKIPPED, NOW, bin_id="B02", truck_id="T01", detail="blocked")
    assert triggers_by_fraction([skip], s) == {}
    fresh = Trigger(TriggerKind.SKIPPED, NOW, bin_id="B03", truck_id="T01", detail="blocked")
    assert triggers_by_fraction([fresh], s) == {"residual": (fresh,)}


# -- the problem --------------------------------------------------------------------------


def test_done_stops_stay_done_and_the_overflowing_bin_becomes_required() -> None:
    s = state(events=[TruckEventRow("T01", at(6, 11), "stop_done", "B01", None)])
    plan, replan = solve(s, [overflow("B08")])
    problem = replan.problem
    assert "B01" not in problem.stop_by_id
    assert "B01" not in plan.served
    b08 = problem.stop_by_id["B08"]
    assert b08.required and b08.demand_l == round(240 * 0.98)
    assert {"B02", "B03", "B05", "B06", "B08"} <= plan.served
    # the current routes, in order, are the starting solution
    t01 = replan.initial.route("T01")
    assert t01 is not None and t01.stop_ids[:2] == ("B02", "B03")
    assert replan.reason == "bin B08 overflow"


def test_trucks_start_where_they_are_with_their_load_and_work_since_the_break() -> None:
    node3 = (LAT, LON0 + DLON * 3)
    s = state(
        events=[TruckEventRow("T01", at(6, 2), "shift_start", None, None)],
        states={"T01": TruckStateRow("T01", NOW - timedelta(seconds=20), *node3, 1234.0)},
        breaks={"T01": at(8, 30)},
    )
    _plan, replan = solve(s, [overflow("B08")])
    problem = replan.problem
    t01 = next(v for v in problem.vehicles if v.id == "T01")
    assert t01.start is not None
    assert replan.locations[t01.start.location].node == 3
    assert t01.start.time_s == AXIS.since(NOW)
    assert t01.start.load_l == 1234
    assert t01.start.worked_s == 30 * 60  # since the break that ended at 08:30
    # T02 reported nothing today: at its depot, with the load its plan expected (none)
    t02 = next(v for v in problem.vehicles if v.id == "T02")
    assert t02.start is not None and t02.start.load_l == 0 and t02.start.worked_s == 0
    assert problem.start_location(t02) != problem.site_by_id["DEPOT-1"].location
    assert replan.locations[problem.start_location(t02)].node == 0


def test_breakdown_redistributes_the_remaining_stops() -> None:
    s = state(
        events=[
            TruckEventRow("T02", at(6, 11), "stop_done", "B05", None),
            TruckEventRow("T02", at(8, 50), "breakdown", None, None),
        ]
    )
    broken = Trigger(TriggerKind.BREAKDOWN, at(8, 50), truck_id="T02")
    plan, replan = solve(s, [broken])
    problem = replan.problem
    assert [v.id for v in problem.vehicles] == ["T01"]
    assert replan.retired == {"T02"}
    assert problem.stop_by_id["B06"].required and "B05" not in problem.stop_by_id
    t01 = plan.route("T01")
    assert t01 is not None and {"B01", "B02", "B03", "B06"} == set(t01.stop_ids)
    assert changed_trucks(replan, plan, eta_tolerance_s=600) == ["T01"]
    final = idle_route(
        truck_id="T02",
        day=DAY,
        version=2,
        at=NOW,
        where=replan.positions["T02"],
        load_l=200,
        reason="breakdown",
    )
    assert [st.kind for st in final.stops] == ["start"] and final.reason == "breakdown"


def test_a_skipped_bin_goes_back_to_the_pool_not_before_the_retry_delay() -> None:
    skipped_at = NOW - timedelta(minutes=1)
    skip = Trigger(
        TriggerKind.SKIPPED, skipped_at, bin_id="B02", truck_id="T01", detail="blocked access"
    )
    events = [TruckEventRow("T01", skipped_at, "stop_skipped", "B02", "blocked access")]
    full = {
        **BINS,
        "B02": BinRow("B02", LAT, LON0 + DLON * 3, "Testikatu", "residual", 240, None, None, 90.0),
    }
    replan = build_replan(state(events=events, bins=full), "residual", [skip], network=NET)
    stop = replan.problem.stop_by_id["B02"]
    assert stop.required and stop.window is not None
    assert stop.window.start == AXIS.since(NOW) + OPTIONS.skip_retry_s
    assert ("stop", "B02") not in replan.before["T01"] and "T01" in replan.named
    # a bin that is not full enough to be required becomes optional, with a reward
    replan = build_replan(state(events=events), "residual", [skip], network=NET)
    stop = replan.problem.stop_by_id["B02"]
    assert not stop.required and 0 < stop.penalty < 1000


def test_a_fire_is_due_at_once_unless_no_truck_can_make_it() -> None:
    fire = Trigger(TriggerKind.FIRE, NOW, bin_id="B06", fill_pct=50.0)
    replan = build_replan(state(), "residual", [fire], network=NET)
    stop = replan.problem.stop_by_id["B06"]
    t = AXIS.since(NOW)
    assert stop.required and stop.window is not None
    assert (stop.window.start, stop.window.end) == (t, t + OPTIONS.fire_within_s)
    assert "B06" not in replan.before["T02"][0]
    # it is moved to right after a truck's current position in the starting solution
    firsts = [r.stop_ids[0] for r in replan.initial.routes if r.stop_ids]
    assert "B06" in firsts
    relaxed = relax_urgent(replan)
    assert relaxed.problem.stop_by_id["B06"].window is None


def test_unchanged_routes_get_no_new_version() -> None:
    # T02 has no route and waits at the far end of the street: T01 keeps its order.
    far = TruckStateRow("T02", NOW, LAT, LON0 + DLON * 20, 0.0)
    s = state(routes={"T01": ROUTES["T01"]}, states={"T02": far})
    plan, replan = solve(s, [Trigger(TriggerKind.CLOSURE, NOW, detail="C1")])
    t01 = plan.route("T01")
    assert t01 is not None and t01.stop_ids == ("B01", "B02", "B03")
    # T01 is 2.5 h behind the daily plan's ETAs: beyond the tolerance
    assert changed_trucks(replan, plan, eta_tolerance_s=600) == ["T01"]
    assert changed_trucks(replan, plan, eta_tolerance_s=86_400) == []


def test_the_caching_network_answers_like_the_network() -> None:
    cached = CachingNetwork.of(NET)
    nodes = [0, 5, 20, 5]
    for weight in ("time", "length"):
        np.testing.assert_array_equal(
            cached.matrix(nodes, nodes, weight), NET.matrix(nodes, nodes, weight)
        )
    np.testing.assert_array_equal(
        cached.matrix([3, 0], [7, 3], "length"), NET.matrix([3, 0], [7, 3], "length")
    )
    for a, b in [(2, 9), (2, 0), (9, 2), (4, 4)]:
        assert cached.shortest_path(a, b) == NET.shortest_path(a, b)
        assert cached.shortest_path(a, b, "length") == NET.shortest_path(a, b, "length")
    assert CachingNetwork.of(cached) is cached


@pytest.mark.parametrize("kind", ["shift_end", "breakdown"])
def test_finished_or_broken_trucks_leave_the_problem(kind: str) -> None:
    s = state(events=[TruckEventRow("T02", at(8), kind, None, None)])
    replan = build_replan(s, "residual", [overflow("B08")], network=NET)
    assert [v.id for v in replan.problem.vehicles] == ["T01"]
    assert {"B05", "B06", "B08"} <= set(replan.problem.stop_by_id)
    assert replan.retired == (frozenset({"T02"}) if kind == "breakdown" else frozenset())
    # a new shift start makes the truck available again
    s = state(
        events=[
            TruckEventRow("T02", at(8), kind, None, None),
            TruckEventRow("T02", at(8, 30), "shift_start", None, None),
        ]
    )
    assert len(build_replan(s, "residual", [], network=NET).problem.vehicles) == 2
    assert VisitKind.START in {v.kind for r in replan.initial.routes for v in r.visits}


def test_required_bins_left_out_earlier_are_tried_again() -> None:
    unserved = [
        {"bin_id": "B09", "code": "not_planned", "reason": "no room"},
        {"bin_id": "B08", "code": "optional_dropped", "reason": "not worth it"},
    ]
    t01 = ROUTES["T01"].model_copy(update={"unserved": unserved})
    s = state(routes={"T01": t01, "T02": ROUTES["T02"]})
    plan, replan = solve(s, [Trigger(TriggerKind.CLOSURE, NOW, detail="C1")])
    assert replan.problem.stop_by_id["B09"].required and "B09" in plan.served
    assert "B08" not in replan.problem.stop_by_id


def test_an_overflowing_bin_no_truck_can_reach_says_so_in_the_starting_solution() -> None:
    # The street plus a two-node island 1 km north: a bin there has no road path.
    base = street()
    island = RoadNetwork(
        lat=np.append(base.lat, [LAT + 0.009, LAT + 0.009]),
        lon=np.append(base.lon, [LON0, LON0 + DLON]),
        osm_id=np.arange(N + 2, dtype=np.int64),
        src=np.append(base.src, [N, N + 1]),
        dst=np.append(base.dst, [N + 1, N]),
        length_m=np.append(base.length_m, [100.0, 100.0]),
        speed_kmh=np.append(base.speed_kmh, [36.0, 36.0]),
        travel_time_s=np.append(base.travel_time_s, [10.0, 10.0]),
        name=np.append(base.name, ["Saari", "Saari"]),
        highway=np.append(base.highway, ["residential", "residential"]),
        way_id=np.append(base.way_id, [2, 2]),
        tunnel=np.append(base.tunnel, [False, False]),
    )
    far = BinRow("B99", LAT + 0.009, LON0, "Saari", "residual", 240, None, None, 98.0)
    replan = build_replan(
        state(bins={**BINS, "B99": far}), "residual", [overflow("B99")], network=island
    )
    (u,) = [u for u in replan.initial.unserved if u.stop_id == "B99"]
    assert u.code is UnservedCode.UNREACHABLE and "no road path" in u.reason
    # a stop that is merely not on the current routes keeps the old wording
    assert all(
        u.reason == "no room in the current routes"
        for u in replan.initial.unserved
        if u.stop_id != "B99" and u.code is UnservedCode.NOT_PLANNED
    )
