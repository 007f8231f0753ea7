"""The re-planning service against the real database and broker: a daily plan is pushed,
then devices publish like real ones and the service answers with new route versions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import psycopg
import pytest

from cityops.ingest.config import Settings
from cityops.ingest.contract import utc_iso
from cityops.routing.network import RoadNetwork
from cityops.routing.replan.pipeline import ReplanReport
from cityops.routing.replan.service import Replanner, run_replanner
from tests.routing.replan_support import (
    PATIENCE_S,
    Devices,
    clock,
    make_replanner,
    route_bins,
    seed_city,
    wait_for,
)


def _versions(settings: Settings) -> list[tuple[str, int, str]]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT truck_id, version, reason FROM route_versions ORDER BY truck_id, version"
        ).fetchall()
    return [(str(t), int(v), str(r)) for t, v, r in rows]


@pytest.fixture
def service(
    settings: Settings, network: RoadNetwork
) -> Iterator[tuple[Replanner, list[ReplanReport]]]:
    reports: list[ReplanReport] = []
    rp = make_replanner(settings, network, reports)
    yield rp, reports
    rp.stop()


def test_an_overflowing_bin_is_added_to_the_truck_of_its_fraction(
    settings: Settings, network: RoadNetwork, devices: Devices
) -> None:
    planned = seed_city(settings, network)
    stop, ready = threading.Event(), threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_replanner(
                settings, time_limit_s=1.0, coalesce_s=0.5, stop=stop, ready=ready, clock=clock
            )
        )
    )
    thread.start()
    try:
        assert ready.wait(PATIENCE_S), "the replanner subscribed"
        extra = next(f"B{i:04d}" for i in range(1, 13) if f"B{i:04d}" not in planned)
        devices.bin_reading(extra, 98.0)
        route = devices.wait_route(lambda r: extra in route_bins(r))
        assert route["truck_id"] == "T01" and route["version"] == 2
        assert route["reason"] == f"bin {extra} overflow"
        assert set(planned) <= set(route_bins(route)), "the planned stops are kept"
        stops = route["stops"]
        assert (
            isinstance(stops, list) and stops[0]["kind"] == "start" and stops[-1]["kind"] == "end"
        )
        assert ("T01", 2, f"bin {extra} overflow") in _versions(settings)
    finally:
        stop.set()
        thread.join(30)
    assert result == [0]


def test_a_done_stop_is_not_in_the_new_version(
    settings: Settings,
    network: RoadNetwork,
    devices: Devices,
    service: tuple[Replanner, list[ReplanReport]],
) -> None:
    planned = seed_city(settings, network)
    first, second = planned[0], planned[1]
    # one emptying the ingest stored before the service started, one it hears itself
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO truck_events (truck_id, ts, kind, bin_id) "
            "VALUES ('T01', %s, 'stop_done', %s)",
            (clock(), first),
        )
    rp, _reports = service
    rp.start()
    assert rp.wait_ready(PATIENCE_S)
    devices.truck_event("T01", "stop_done", bin_id=second, volume_l=200.0)
    time.sleep(0.3)
    assert devices.new_versions() == [], "a stop done alone is no reason to re-plan"
    extra = next(f"B{i:04d}" for i in range(1, 13) if f"B{i:04d}" not in planned)
    devices.bin_reading(extra, 97.5)
    route = devices.wait_route(lambda r: extra in route_bins(r))
    assert first not in route_bins(route) and second not in route_bins(route)
    assert set(planned[2:]) <= set(route_bins(route))


def test_a_bin_full_again_long_after_its_emptying_is_collected_again(
    settings: Settings,
    network: RoadNetwork,
    devices: Devices,
    service: tuple[Replanner, list[ReplanReport]],
) -> None:
    planned = seed_city(settings, network)
    refilled, just_emptied = planned[0], planned[1]
    rp, reports = service
    # Hours in a real city; seconds here, on the tests' clock (readings and events carry
    # the time the test publishes them).
    rp.options = replace(rp.options, refill_after=timedelta(seconds=3))
    rp.start()
    assert rp.wait_ready(PATIENCE_S)
    devices.truck_event("T01", "stop_done", bin_id=refilled, volume_l=200.0)
    devices.truck_event("T01", "stop_done", bin_id=just_emptied, volume_l=200.0)
    # at once: a late reading, or one taken during the emptying
    devices.bin_reading(just_emptied, 99.0)
    # The low reading must come after the emptying, as the sensor takes it: published in
    # the same millisecond, or handled before the truck's event, it would not count (that
    # raced about one run in five).
    wait_for("the emptyings heard", lambda: {refilled, just_emptied} <= rp.heard.done.keys())
    time.sleep(0.01)
    devices.bin_reading(refilled, 4.0)  # the sensor saw it emptied
    # The 3 s count from when the service learnt of the emptying, which on a loaded machine
    # can be a second or two after it was published: wait well past them.
    time.sleep(6.0)
    # still 99 %, never lower since the emptying: a stuck sensor, not a full bin
    devices.bin_reading(just_emptied, 99.0)
    devices.bin_reading(refilled, 98.0)  # full again, 6 s "later"
    route = devices.wait_route(lambda r: refilled in route_bins(r) and r["version"] == 2)
    assert route["reason"] == f"bin {refilled} overflow"
    assert just_emptied not in route_bins(route)
    wait_for("the re-plan's report", lambda: reports)
    time.sleep(1.5)  # nothing else was queued: no second version
    assert [r["version"] for r in devices.new_versions()] == [2]


def test_a_burst_of_overflows_makes_one_version(
    settings: Settings,
    network: RoadNetwork,
    devices: Devices,
    service: tuple[Replanner, list[ReplanReport]],
) -> None:
    planned = seed_city(settings, network)
    rp, reports = service
    # A window far longer than the four messages take to arrive, even on a loaded machine:
    # the burst must not depend on the scheduler (it once did with 0.8 s and 0.1 s gaps).
    rp.coalesce_s = 10.0
    rp.start()
    assert rp.wait_ready(PATIENCE_S)
    extra = [f"B{i:04d}" for i in range(1, 13) if f"B{i:04d}" not in planned][:3]
    for b in extra:
        devices.bin_reading(b, 99.0)
    devices.bin_reading(extra[0], 99.5)  # the same alarm again: ignored
    route = devices.wait_route(lambda r: r["version"] == 2)
    assert set(extra) <= set(route_bins(route))
    assert route["reason"] == "; ".join(f"bin {b} overflow" for b in extra)
    wait_for("the re-plan's report", lambda: reports)
    time.sleep(1.0)  # nothing else was queued: no second window, no second version
    assert [r["version"] for r in devices.new_versions()] == [2]
    assert [v for _t, v, _r in _versions(settings)] == [1, 2]
    assert len(reports) == 1 and reports[0].violations == ()


def test_a_breakdown_moves_the_stops_to_the_other_truck(
    settings: Settings,
    network: RoadNetwork,
    devices: Devices,
    service: tuple[Replanner, list[ReplanReport]],
) -> None:
    planned = seed_city(settings, network, trucks=2)
    rp, _reports = service
    rp.start()
    assert rp.wait_ready(PATIENCE_S)
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT truck_id FROM current_routes WHERE jsonb_path_exists(stops, "
            "'$[*] ? (@.kind == \"stop\")') ORDER BY truck_id LIMIT 1"
        ).fetchone()
    assert row is not None
    broken = str(row[0])
    other = "T02" if broken == "T01" else "T01"
    devices.truck_event(broken, "breakdown")
    final = devices.wait_route(lambda r: r["truck_id"] == broken and r["version"] == 2)
    assert final["reason"] == "breakdown" and route_bins(final) == []
    moved = devices.wait_route(lambda r: r["truck_id"] == other and r["reason"] != "daily plan")
    assert set(planned) <= set(route_bins(moved))
    assert moved["reason"] == f"truck {broken} breakdown"


def test_a_new_street_closure_re_plans_today(
    settings: Settings,
    network: RoadNetwork,
    devices: Devices,
    service: tuple[Replanner, list[ReplanReport]],
) -> None:
    planned = seed_city(settings, network)
    rp, reports = service
    rp.start()
    assert rp.wait_ready(PATIENCE_S)
    lat, lon = float(network.lat[0]), float(network.lon[0])
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO street_closures (closure_id, geom, valid_from, valid_to, source, reason) "
            "VALUES ('C-1', ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s, %s, 'test', "
            "'water main')",
            (lon, lat, clock() - timedelta(hours=1), clock() + timedelta(days=1)),
        )
    route = devices.wait_route(lambda r: r["reason"] == "street closure C-1 changed")
    assert set(planned) == set(route_bins(route))
    # The report is made after the versions are pushed: the tablet may have the route
    # before the service has recorded the re-plan (this raced once).
    wait_for("the re-plan's report", lambda: reports)
    assert all(r.violations == () for r in reports)


def test_a_late_truck_is_re_planned_from_where_it_is(
    settings: Settings,
    network: RoadNetwork,
    devices: Devices,
    service: tuple[Replanner, list[ReplanReport]],
) -> None:
    planned = seed_city(settings, network)  # planned from midnight: T01 is hours behind
    rp, _reports = service
    rp.start()
    assert rp.wait_ready(PATIENCE_S)
    node = network.nearest_node(float(network.lat[100]), float(network.lon[100]))
    lat, lon = float(network.lat[node]), float(network.lon[node])
    now = utc_iso(clock())
    devices.publish("truck/T01/telemetry", {"ts": now, "lat": lat, "lon": lon, "load_l": 120.0})
    route = devices.wait_route(lambda r: str(r["reason"]).startswith("truck T01 "))
    assert str(route["reason"]).endswith(" min behind")
    stops = route["stops"]
    assert isinstance(stops, list)
    assert (stops[0]["kind"], stops[0]["lat"], stops[0]["lon"]) == ("start", lat, lon)
    assert stops[0]["load_after_l"] == 120.0
    assert set(route_bins(route)) == set(planned)
    # the new ETAs are current: the same position again is no longer late
    devices.publish("truck/T01/telemetry", {"ts": now, "lat": lat, "lon": lon, "load_l": 120.0})
    time.sleep(1.5)
    assert len(devices.new_versions()) == 1


def test_an_overflow_reported_through_a_lorawan_server_re_plans_as_any_other(
    settings: Settings, network: RoadNetwork, devices: Devices
) -> None:
    from cityops.simulators.lorawan import chirpstack_uplink, em310_udl

    planned = seed_city(settings, network)
    extra = next(f"B{i:04d}" for i in range(1, 13) if f"B{i:04d}" not in planned)
    eui = "24e1247100000042"
    with psycopg.connect(settings.database_url) as conn:  # its sensor is a LoRaWAN one now
        conn.execute(
            "UPDATE bins SET sensor_id = NULL, dev_eui = %s, sensor_model = "
            "'milesight-em310-udl', empty_distance_mm = 1200, full_distance_mm = 200 "
            "WHERE bin_id = %s", (eui, extra))
    lora = settings.model_copy(update={"ingest_sources": "cityops,chirpstack",
                                       "ingest_lorawan_root": settings.topic_prefix})
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=lambda: run_replanner(
        lora, time_limit_s=1.0, coalesce_s=0.5, stop=stop, ready=ready, clock=clock))
    thread.start()
    try:
        assert ready.wait(PATIENCE_S), "the replanner subscribed"
        topic, body = chirpstack_uplink(eui, em310_udl(220), 77, clock())  # 98 % full
        assert devices.pub is not None
        devices.pub.publish(f"{settings.topic_prefix}/{topic}", body, qos=1).wait_for_publish(5)
        route = devices.wait_route(lambda r: extra in route_bins(r))
        assert route["reason"] == f"bin {extra} overflow"
    finally:
        stop.set()
        thread.join(30)
