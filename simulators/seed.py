"""Write the simulated city into the device registry, so the ingest accepts its devices.

The simulated city goes in exactly as a real city's registry files do: its sites, bins,
signal controllers and trucks become registry rows (`cityops.ingest.registry_files`),
validated by the same models and imported by the same all-or-nothing, idempotent upsert
(`cityops.ingest.registry_store.import_records`). Seeding twice changes nothing; devices
of other scenarios or real devices are never touched. `write_registry_files` writes the
same rows as files, which `cityops demo` imports like a city would with
`cityops registry import`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from cityops.ingest.city import City as CityProfile
from cityops.ingest.city import bundled_profile, read_profile
from cityops.ingest.db import connect
from cityops.ingest.registry_files import (
    ParsedFile,
    parse_rows,
    write_csv,
    write_yaml,
)
from cityops.ingest.registry_model import ControllerRecord, format_days
from cityops.ingest.registry_store import ImportReport, import_records
from cityops.simulators.city import City

__all__ = ["SeedError", "SeedReport", "registry_rows", "seed_registry", "write_registry_files"]

logger = logging.getLogger(__name__)
_ACTOR = "simulators"


class SeedError(RuntimeError):
    """The simulated city does not pass the registry's checks (a scenario bug)."""


@dataclass(frozen=True, slots=True)
class SeedReport:
    sites: int
    bins: int
    controllers: int
    phases: int
    detectors: int
    trucks: int


def registry_rows(city: City) -> dict[str, list[dict[str, Any]]]:
    """The simulated city as registry rows, per kind, as a city's files would hold them."""
    return {
        "site": [
            {"site_id": s.site_id, "name": s.name, "kind": s.kind, "lon": s.lon, "lat": s.lat}
            for s in city.sites
        ],
        "truck": [
            {"truck_id": t.truck_id, "name": t.name, "capacity_l": t.capacity_l,
             "capacity_kg": t.capacity_kg, "depot_id": t.depot_id,
             "fractions": list(t.fractions), "shift_start": t.shift_start,
             "shift_end": t.shift_end}
            for t in city.trucks
        ],
        "bin": [
            {"bin_id": b.bin_id, "lon": b.lon, "lat": b.lat,
             "street": b.street, "house_number": b.house_number, "district": b.district,
             "fraction": b.fraction, "capacity_l": b.capacity_l,
             "collection_days": format_days(
                 () if b.collection_weekday is None else (b.collection_weekday,)),
             **({"sensor_id": b.sensor_id} if b.lora is None else {
                 "dev_eui": b.lora.dev_eui, "sensor_model": b.lora.model,
                 "empty_distance_mm": b.lora.empty_distance_mm,
                 "full_distance_mm": b.lora.full_distance_mm})}
            for b in city.bins
        ],
        "signal_controller": [
            {"controller_id": c.controller_id, "name": c.name, "lon": c.lon, "lat": c.lat,
             "cycle_s": c.cycle_s,
             "phases": [
                 {"phase": p.phase, "movement": p.movement, "min_green_s": p.min_green_s,
                  "max_green_s": p.max_green_s, "fixed_green_s": p.green_s,
                  "yellow_s": p.yellow_s, "red_clearance_s": p.red_clearance_s}
                 for p in sorted(c.phases, key=lambda p: p.seq)
             ],
             "detectors": [
                 {"channel": d.channel, "phase": d.phase, "kind": d.kind, "lane": d.lane,
                  "distance_m": d.distance_m}
                 for d in c.detectors
             ]}
            for c in city.controllers
        ],
    }


def _parsed(city: City) -> list[ParsedFile]:
    return [parse_rows(kind, rows, f"scenario {city.name}: {kind}s")
            for kind, rows in registry_rows(city).items()]


def write_registry_files(city: City, folder: Path) -> list[Path]:
    """sites.csv, trucks.csv, bins.csv and controllers.yaml of the simulated city."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for parsed in _parsed(city):
        _raise_problems(parsed.problems)
        records = [rec for _, rec in parsed.records]
        if parsed.kind == "signal_controller":
            path = folder / "controllers.yaml"
            path.write_text(write_yaml([r for r in records if isinstance(r, ControllerRecord)]),
                            encoding="utf-8")
        else:
            path = folder / f"{parsed.kind}s.csv"
            path.write_text(write_csv(str(parsed.kind), records), encoding="utf-8")
        paths.append(path)
    return paths


def _raise_problems(problems: list[Any]) -> None:
    if problems:
        shown = "; ".join(p.render() for p in problems[:5])
        raise SeedError(f"the simulated city does not pass the registry checks: {shown}")


def _demo_profile() -> CityProfile:
    path = bundled_profile("demo")
    assert path is not None, "the demo city profile is part of the package"
    return read_profile(path)


def seed_registry(
    database_url: str, city: City, profile: CityProfile | None = None
) -> SeedReport:
    """Import every site, bin, controller (with phases and detectors) and truck of `city`,
    checked against `profile` (default: the demo city's)."""
    with connect(database_url, application_name="cityops-simulate") as conn:
        report = seed_connection(conn, city, profile)
    logger.info(
        "registry seeded: %d sites, %d bins, %d signal controllers (%d phases, %d detectors), "
        "%d trucks", report.sites, report.bins, report.controllers, report.phases,
        report.detectors, report.trucks,
    )
    return report


def seed_connection(
    conn: psycopg.Connection[tuple[object, ...]], city: City,
    profile: CityProfile | None = None,
) -> SeedReport:
    """`seed_registry` on an open connection, in one transaction."""
    result: ImportReport = import_records(
        conn, _parsed(city), profile or _demo_profile(), actor=_ACTOR
    )
    _raise_problems(result.problems)
    return SeedReport(
        sites=len(city.sites), bins=len(city.bins), controllers=len(city.controllers),
        phases=sum(len(c.phases) for c in city.controllers),
        detectors=sum(len(c.detectors) for c in city.controllers), trucks=len(city.trucks),
    )
