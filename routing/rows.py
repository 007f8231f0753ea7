"""The rows routing reads from the database, as plain frozen dataclasses.

Pure: the planner and the re-planning core take these; only ``repository.py`` (the SQL)
makes them, so the pure modules never import the SQL module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

__all__ = ["BinRow", "SiteRow", "TruckEventRow", "TruckRow", "TruckStateRow"]


@dataclass(frozen=True)
class BinRow:
    bin_id: str
    lat: float
    lon: float
    street: str
    fraction: str
    capacity_l: int
    access_from_s: int | None
    access_to_s: int | None
    fill_pct: float | None


@dataclass(frozen=True)
class SiteRow:
    site_id: str
    kind: str
    lat: float
    lon: float


@dataclass(frozen=True)
class TruckRow:
    truck_id: str
    capacity_l: int
    capacity_kg: int | None
    depot_id: str
    fractions: tuple[str, ...] = ("residual",)
    shift_start: time = time(6, 0)
    shift_end: time = time(14, 30)


@dataclass(frozen=True)
class TruckEventRow:
    truck_id: str
    ts: datetime  # the truck's clock
    kind: str
    bin_id: str | None
    reason: str | None
    known_at: datetime | None = None  # the server's: stored by the ingest, or heard


@dataclass(frozen=True)
class TruckStateRow:
    truck_id: str
    ts: datetime
    lat: float
    lon: float
    load_l: float | None
