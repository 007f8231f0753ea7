"""Plain factories for roadworks tests: specs, works and subjects from metric offsets.

Geometries are drawn in the demo city's metric CRS (EPSG:25835, metres) around `ORIGIN`
and converted to lon/lat, so a test says "60 m of street, 8 m wide, 20 m north of the
other" and gets valid WGS84 geometry inside the city bounds.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shapely.geometry import LineString, box

from cityops.roadworks import store_works
from cityops.roadworks.config import load_roadworks_settings
from cityops.roadworks.coordination import CoordinationRules, Segment, Subject
from cityops.roadworks.geometry import CityFrame
from cityops.roadworks.labels import BERLIN
from cityops.roadworks.model import (
    Actor,
    Category,
    Measure,
    Period,
    Roadwork,
    RoadworkSpec,
    Role,
    Sector,
    Status,
    Street,
)
from cityops.roadworks.service import RoadworksService
from cityops.roadworks.store_sql import Conn

FRAME: CityFrame = load_roadworks_settings().frame()
ORIGIN = (386000.0, 6671900.0)  # metres in EPSG:25835, central Helsinki (the demo city)
#: "Now" in service tests: Monday 3 March 2025, 08:00 in Berlin.
NOW = datetime(2025, 3, 3, 8, 0, tzinfo=BERLIN)
T0 = datetime(2025, 3, 10, 7, 0, tzinfo=BERLIN)

PROMOTER = Actor("Anna Schmidt", "Stadtwerke", Role.PROMOTER)
OTHER_PROMOTER = Actor("Lukas Becker", "Glasfaser Plus", Role.PROMOTER)
AUTHORITY = Actor("Jonas Weber", "Straßenverkehrsbehörde", Role.AUTHORITY)


class Clock:
    """A settable clock for the service."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def service(clock: Clock | None = None, **rules: Any) -> RoadworksService:
    return RoadworksService(FRAME, CoordinationRules(**rules), clock or Clock())


def to_lonlat(geom: Any) -> Any:
    return FRAME.projector.to_lonlat(geom)


def street_line(x: float = 0.0, y: float = 0.0, length: float = 60.0,
                angle_east: bool = True) -> Any:
    """A metric street centreline starting at ORIGIN + (x, y), east- or northbound."""
    x0, y0 = ORIGIN[0] + x, ORIGIN[1] + y
    end = (x0 + length, y0) if angle_east else (x0, y0 + length)
    return LineString([(x0, y0), end])


def make_spec(
    *, x: float = 0.0, y: float = 0.0, length: float = 60.0, width: float = 8.0,
    street: str = "Teststraße", start: datetime = T0, days: float = 10,
    promoter: str = "Stadtwerke", sector: Sector = Sector.GAS,
    category: Category = Category.STANDARD, measures: tuple[Measure, ...] = (),
    north: bool = False, **kw: Any,
) -> RoadworkSpec:
    """A work on `length` metres of a straight street at ORIGIN + (x, y)."""
    line = street_line(x, y, length, angle_east=not north)
    footprint = line.buffer(width / 2, cap_style="flat")
    fields: dict[str, Any] = {
        "title": f"Arbeiten {street}", "promoter": promoter, "sector": sector,
        "category": category, "footprint": to_lonlat(footprint),
        "streets": (Street(street, to_lonlat(line)),), "planned_start": start,
        "planned_end": start + timedelta(days=days), "measures": frozenset(measures),
        "lanes_affected": 1 if Measure.LANE_CLOSURE in measures else 0,
        "public_text": f"Arbeiten in der {street}.",
    }
    fields.update(kw)
    return RoadworkSpec(**fields)


#: When the store tests write (created, audited, found).
AT = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def insert_work(conn: Conn, reference: str = "RW-2025-00001",
                status: Status = Status.SUBMITTED, **kw: Any) -> int:
    """A work of `make_spec(**kw)` written straight through the store (no service)."""
    return store_works.insert_work(conn, reference=reference, status=status,
                                   spec=make_spec(**kw), area_m2=480.0, district="B3",
                                   actor=PROMOTER, at=AT)


def make_work(spec: RoadworkSpec | None = None, *, id: int = 1, status: Status = Status.SCHEDULED,
              reference: str | None = None, district: str = "B2",
              actual_start: datetime | None = None, actual_end: datetime | None = None,
              version: int = 1) -> Roadwork:
    """A registered work without a database."""
    spec = spec or make_spec()
    return Roadwork(
        id=id, reference=reference or f"RW-2025-{id:05d}", status=status, spec=spec,
        district=district, area_m2=480.0, version=version,
        created_at=datetime(2025, 1, 15, 9, tzinfo=UTC),
        updated_at=datetime(2025, 2, 1, 10, 30, tzinfo=UTC), created_by="Anna Schmidt",
        actual_start=actual_start, actual_end=actual_end,
    )


# -- subjects for the pure coordination rules (plain metres, no CRS) -------------------------

D0 = datetime(2025, 3, 10, 7, 0, tzinfo=UTC)


def period(start_day: float, days: float) -> Period:
    return Period(D0 + timedelta(days=start_day), D0 + timedelta(days=start_day + days))


def subject(
    work_id: int, *, x: float = 0.0, y: float = 0.0, length: float = 60.0, width: float = 8.0,
    street: str = "Hauptstraße", start_day: float = 0, days: float = 10,
    promoter: str | None = None, sector: Sector = Sector.GAS, excavation: bool = True,
    closure: bool = False, north: bool = False,
) -> Subject:
    """A work as the rules see it: a box of `length` x `width` metres along a street line."""
    if north:
        line = LineString([(x, y), (x, y + length)])
        footprint = box(x - width / 2, y, x + width / 2, y + length)
    else:
        line = LineString([(x, y), (x + length, y)])
        footprint = box(x, y - width / 2, x + length, y + width / 2)
    return Subject(
        work_id=work_id, reference=f"RW-{work_id}", promoter=promoter or f"Promoter {work_id}",
        sector=sector, period=period(start_day, days), footprint=footprint,
        streets=(Street(street, line),), excavation=excavation, road_closure=closure,
    )


def segment(segment_id: int, *, x: float = 0.0, y: float = 0.0, length: float = 100.0,
            street: str = "Hauptstraße", resurfaced_on: date = date(2023, 5, 12)) -> Segment:
    return Segment(segment_id, street, LineString([(x, y), (x + length, y)]), resurfaced_on)


def with_(spec: RoadworkSpec, **changes: Any) -> RoadworkSpec:
    return replace(spec, **changes)
