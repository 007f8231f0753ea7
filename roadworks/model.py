"""The roadworks registry's domain: plain dataclasses and enumerations, no I/O.

Geometries are shapely objects in WGS84 longitude/latitude (EPSG:4326, GeoJSON order)
unless a name says otherwise; lengths and areas are computed in the city's metric CRS
(`geometry.Projector`). Times are timezone-aware and compared in UTC; Europe/Berlin is
only for display.

A `RoadworkSpec` is what a promoter describes and may edit; a `Roadwork` is a registered
work: the spec plus what the registry keeps (reference, status, reported start and end,
version, district). `effective_period` is the period coordination reasons about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from cityops.roadworks.errors import InvalidPeriodError

__all__ = [
    "COORDINATED_STATUSES",
    "PUBLIC_STATUSES",
    "TERMINAL_STATUSES",
    "Actor",
    "AuditEntry",
    "Category",
    "Decision",
    "Finding",
    "FindingDraft",
    "FindingKind",
    "FindingStatus",
    "Measure",
    "Period",
    "ResurfacedSegment",
    "Roadwork",
    "RoadworkSpec",
    "Role",
    "Sector",
    "Severity",
    "Status",
    "Street",
    "same_organisation",
]

Geometry = Any  # shapely geometries (shapely ships no type information)


def same_organisation(a: str, b: str) -> bool:
    """Whether two names denote one organisation: the comparison the store's SQL
    makes too (`lower(trim(promoter))`), so that what an editor may see and what it may
    change never disagree (Python's casefold would match "STRASSE" to "Straße", SQL's
    lower does not)."""
    return a.strip().lower() == b.strip().lower()


class Sector(StrEnum):
    """The promoter's sector (Sparte)."""

    ELECTRICITY = "electricity"
    GAS = "gas"
    DISTRICT_HEATING = "district_heating"
    WATER = "water"
    TELECOM = "telecom"
    SEWER = "sewer"
    ROAD = "road"
    OTHER = "other"


class Category(StrEnum):
    MINOR = "minor"
    STANDARD = "standard"
    MAJOR = "major"
    EMERGENCY = "emergency"


class Status(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    IN_CONSULTATION = "in_consultation"
    MODIFICATION_REQUESTED = "modification_requested"
    APPROVED = "approved"
    REFUSED = "refused"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REVOKED = "revoked"


#: States from which nothing follows.
TERMINAL_STATUSES = frozenset(
    {Status.REFUSED, Status.COMPLETED, Status.CANCELLED, Status.REVOKED}
)
#: States in which a work takes part in coordination (drafts are private to the promoter).
COORDINATED_STATUSES = frozenset(
    {
        Status.SUBMITTED,
        Status.IN_CONSULTATION,
        Status.MODIFICATION_REQUESTED,
        Status.APPROVED,
        Status.SCHEDULED,
        Status.IN_PROGRESS,
    }
)
#: States shown to the public (with the work's public flag set).
PUBLIC_STATUSES = frozenset({Status.APPROVED, Status.SCHEDULED, Status.IN_PROGRESS})


class Measure(StrEnum):
    """Traffic management measures (verkehrsrechtliche Anordnung)."""

    ROAD_CLOSURE = "road_closure"
    LANE_CLOSURE = "lane_closure"
    ALTERNATING_ONE_WAY = "alternating_one_way"
    TEMPORARY_SIGNALS = "temporary_signals"
    SIDEWALK_CLOSURE = "sidewalk_closure"
    CYCLE_LANE_CLOSURE = "cycle_lane_closure"
    PARKING_SUSPENDED = "parking_suspended"


class Role(StrEnum):
    """What an actor acts as: a promoter (utility, contractor) or the road authority."""

    PROMOTER = "promoter"
    AUTHORITY = "authority"
    SYSTEM = "system"


class FindingKind(StrEnum):
    CLASH = "clash"
    DIG_ONCE = "dig_once"
    PROTECTION_PERIOD = "protection_period"
    PARALLEL_CLOSURE = "parallel_closure"


class Severity(StrEnum):
    CONFLICT = "conflict"
    WARNING = "warning"
    OPPORTUNITY = "opportunity"


class FindingStatus(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    RESOLVED = "resolved"
    OBSOLETE = "obsolete"  # no longer found after a change; kept for the record


class Decision(StrEnum):
    """What a coordinator can attach to a finding."""

    ACCEPTED = "accepted"  # known and tolerated (e.g. agreed between the promoters)
    RESOLVED = "resolved"  # acted upon (e.g. works merged, dates moved)


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open time range [start, end) of timezone-aware datetimes."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value: datetime = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() is None:
                raise InvalidPeriodError(name, f"{value.isoformat()} has no time zone")
        if self.end <= self.start:
            raise InvalidPeriodError(
                "end", f"{self.end.isoformat()} is not after start {self.start.isoformat()}"
            )

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def overlaps(self, other: Period) -> bool:
        """True when the two ranges share a moment (touching ends do not)."""
        return self.start < other.end and other.start < self.end

    def intersection(self, other: Period) -> Period | None:
        if not self.overlaps(other):
            return None
        return Period(max(self.start, other.start), min(self.end, other.end))

    def gap(self, other: Period) -> timedelta:
        """Time between the two ranges; zero when they overlap or touch."""
        return max(other.start - self.end, self.start - other.end, timedelta(0))


@dataclass(frozen=True, slots=True)
class Street:
    """An affected street centreline with its road name."""

    name: str
    line: Geometry  # shapely LineString, lon/lat


@dataclass(frozen=True, slots=True)
class Actor:
    """Who does something: a person (or process) acting for an organisation in a role."""

    name: str
    organisation: str
    role: Role


@dataclass(frozen=True, slots=True)
class RoadworkSpec:
    """What a promoter describes: everything about a work it may edit."""

    title: str
    promoter: str
    sector: Sector
    category: Category
    footprint: Geometry  # shapely Polygon or MultiPolygon, lon/lat
    streets: tuple[Street, ...]
    planned_start: datetime
    planned_end: datetime
    description: str = ""
    contractor: str | None = None
    public_contact: str | None = None
    working_hours: str | None = None  # e.g. "Mo-Fr 07:00-18:00"
    night_works: bool = False
    excavation: bool = True  # digs into the road (Aufgrabung)
    measures: frozenset[Measure] = frozenset()
    lanes_affected: int = 0
    detour_description: str | None = None
    detour: Geometry | None = None  # shapely LineString, lon/lat
    bus_lines: tuple[str, ...] = ()
    waste_collection_affected: bool = False
    is_public: bool = True
    public_text: str | None = None

    @property
    def planned(self) -> Period:
        return Period(self.planned_start, self.planned_end)

    @property
    def road_names(self) -> tuple[str, ...]:
        """Distinct street names in the order given."""
        return tuple(dict.fromkeys(s.name for s in self.streets))

    @property
    def sorted_measures(self) -> tuple[Measure, ...]:
        """Measures in their declaration order (most severe first)."""
        return tuple(m for m in Measure if m in self.measures)


@dataclass(frozen=True, slots=True)
class Roadwork:
    """A registered work."""

    id: int
    reference: str
    status: Status
    spec: RoadworkSpec
    district: str
    area_m2: float
    version: int
    created_at: datetime
    updated_at: datetime
    created_by: str
    actual_start: datetime | None = None
    actual_end: datetime | None = None

    @property
    def effective_period(self) -> Period:
        """Reported times where known, planned ones otherwise.

        A work that started later than planned keeps its planned end, or its planned
        duration when the planned end has already passed at the reported start.
        """
        spec = self.spec
        start = self.actual_start or spec.planned_start
        if self.actual_end is not None:
            end = max(self.actual_end, start + timedelta(minutes=1))
        elif spec.planned_end > start:
            end = spec.planned_end
        else:
            end = start + (spec.planned_end - spec.planned_start)
        return Period(start, end)

    @property
    def is_public(self) -> bool:
        """Shown in public feeds: public flag set and in a public state."""
        return self.spec.is_public and self.status in PUBLIC_STATUSES


@dataclass(frozen=True, slots=True)
class ResurfacedSegment:
    """A street segment resurfaced on a date: digging there within the protection period
    (Aufbruchsperre) is warned about."""

    id: int
    street: str
    line: Geometry  # shapely LineString, lon/lat
    resurfaced_on: date
    note: str | None = None


@dataclass(frozen=True, slots=True)
class FindingDraft:
    """A coordination finding as the pure rules produce it, before it is stored.

    `work_a` < `work_b` for pairs, so a pair has one finding whichever side changed;
    `location` is in the frame of the geometries the rules were given.
    """

    kind: FindingKind
    severity: Severity
    work_a: int
    work_b: int | None
    message: str
    segment_id: int | None = None
    street: str | None = None
    details: Mapping[str, object] = field(default_factory=dict)
    location: Geometry | None = None

    @property
    def key(self) -> tuple[str, int, int | None, int | None]:
        return (self.kind.value, self.work_a, self.work_b, self.segment_id)


@dataclass(frozen=True, slots=True)
class Finding:
    """A stored finding with its decision."""

    id: int
    kind: FindingKind
    severity: Severity
    work_a: int
    work_b: int | None
    reference_a: str
    reference_b: str | None
    segment_id: int | None
    street: str | None
    message: str
    details: Mapping[str, object]
    location: Geometry | None  # lon/lat
    status: FindingStatus
    first_found_at: datetime
    last_found_at: datetime
    decision_note: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status is FindingStatus.OPEN


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded change to a work, with who made it."""

    id: int
    work_id: int
    at: datetime
    actor: str
    organisation: str
    role: Role
    action: str  # created, updated, transition:<name>, finding:<decision>
    from_status: Status | None
    to_status: Status | None
    changes: Mapping[str, object]
    note: str | None
