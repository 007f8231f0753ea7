"""Seeding the registry on the real PostgreSQL: complete and idempotent."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import psycopg

from cityops.simulators.city import build_city
from cityops.simulators.seed import seed_registry
from tests.simulators.factories import network, small_scenario

TABLES = {
    "sites": "site_id",
    "bins": "bin_id",
    "signal_controllers": "controller_id",
    "signal_phases": "controller_id, phase",
    "signal_detectors": "controller_id, channel",
    "trucks": "truck_id",
}


def snapshot(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(db_url) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()
            for table, key in TABLES.items()
        }


def test_seeding_twice_gives_the_same_rows(db_url: str) -> None:
    city = build_city(small_scenario(), network())
    report = seed_registry(db_url, city)
    assert (report.bins, report.controllers, report.trucks, report.sites) == (12, 2, 1, 2)
    first = snapshot(db_url)
    assert len(first["bins"]) == 12
    assert len(first["signal_phases"]) == 4
    assert len(first["signal_detectors"]) == 6
    seed_registry(db_url, city)
    assert snapshot(db_url) == first  # created_at included: rows updated, not replaced

    with psycopg.connect(db_url) as conn:
        devices = conn.execute("SELECT kind, device_id FROM devices ORDER BY 1, 2").fetchall()
        b = city.bins[0]
        lon, lat, street, district = conn.execute(
            "SELECT ST_X(geom), ST_Y(geom), street, district FROM bins WHERE bin_id = %s",
            (b.bin_id,),
        ).fetchone() or (None, None, None, None)
    assert ("bin", "S-B0001") in devices and ("signal", "LSA-001") in devices
    assert ("truck", "T01") in devices
    assert (lat, lon, street, district) == (b.lat, b.lon, b.street, b.district)


def test_reseeding_a_changed_plan_drops_stale_phases(db_url: str) -> None:
    city = build_city(small_scenario(), network())
    seed_registry(db_url, city)
    first = city.controllers[0]
    shrunk = replace(
        first,
        phases=first.phases[:1],
        detectors=tuple(d for d in first.detectors if d.phase == first.phases[0].phase),
    )
    seed_registry(db_url, replace(city, controllers=(shrunk, *city.controllers[1:])))
    rows = snapshot(db_url)
    phases = [r[1] for r in rows["signal_phases"] if r[0] == first.controller_id]
    detectors = [r[1] for r in rows["signal_detectors"] if r[0] == first.controller_id]
    assert phases == [first.phases[0].phase]
    assert detectors == [1, 2]
