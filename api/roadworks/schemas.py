"""The roadworks API's boundary: response and request models, traffic impact levels.

Public models are an allow-list: they carry the texts a work's promoter wrote for the
public (public text, detour, contact, working hours) and never the internal description,
who entered the work, audit notes or coordination findings. The editing API's models
(`WorkOut`, `FindingOut`, `AuditOut`) show everything to those allowed to edit.

Times are UTC (`...Z`); fields ending in `_local` are Europe/Berlin wall-clock time with
its offset, `*_de` fields German display text. The search renders `PublicWork` in the
database too, with the SQL of `public_sql.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from cityops.api.schemas import STORABLE, local_iso
from cityops.roadworks.feeds.common import FeedContext, rfc3339
from cityops.roadworks.feeds.geojson import work_properties
from cityops.roadworks.feeds.wzdx import vehicle_impact
from cityops.roadworks.geometry import to_geojson
from cityops.roadworks.labels import STATUS_DE, fmt_datetime
from cityops.roadworks.lifecycle import Transition
from cityops.roadworks.model import (
    AuditEntry,
    Decision,
    Finding,
    FindingDraft,
    Measure,
    Roadwork,
    Status,
)
from cityops.roadworks.schemas import spec_to_payload
from cityops.roadworks.validation import LIMITS

__all__ = [
    "GEOMETRY_PRECISION",
    "IMPACT_DE",
    "AuditOut",
    "DecisionIn",
    "FindingOut",
    "Impact",
    "OverviewDay",
    "PreviewFindingOut",
    "PublicPage",
    "PublicWork",
    "TransitionIn",
    "TransitionOut",
    "WorkOut",
    "WorkPage",
    "impact_of",
]

#: Decimal places of the coordinates in public GeoJSON (about 0.1 m).
GEOMETRY_PRECISION: Final = 6


class Impact(StrEnum):
    """How much a work hinders traffic, for citizens: the map's colours and a filter."""

    CLOSURE = "closure"  # the road is closed
    RESTRICTION = "restriction"  # lanes closed, alternating one-way, temporary signals
    MINOR = "minor"  # sidewalk, cycle lane or parking only, or nothing on the road


IMPACT_DE: dict[Impact, str] = {
    Impact.CLOSURE: "Vollsperrung",
    Impact.RESTRICTION: "Einschränkung",
    Impact.MINOR: "geringe Beeinträchtigung",
}

_RESTRICTING = frozenset(
    {Measure.LANE_CLOSURE, Measure.ALTERNATING_ONE_WAY, Measure.TEMPORARY_SIGNALS}
)


def impact_of(measures: Iterable[Measure]) -> Impact:
    present = set(measures)
    if Measure.ROAD_CLOSURE in present:
        return Impact.CLOSURE
    if present & _RESTRICTING:
        return Impact.RESTRICTION
    return Impact.MINOR


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# -- public -----------------------------------------------------------------------------


class PublicWork(_Out):
    """A public work as citizens see it."""

    reference: str
    title: str
    description: str = Field(description="the public text (never the internal description)")
    status: Status
    status_de: str
    category: str
    category_de: str
    promoter: str
    sector: str
    sector_de: str
    contractor: str | None
    public_contact: str | None
    streets: list[str]
    district: str
    start: str = Field(description="effective start, UTC")
    end: str = Field(description="effective end, UTC")
    start_local: str
    end_local: str
    start_de: str
    end_de: str
    period_de: str
    start_verified: bool
    end_verified: bool
    overdue: bool = Field(description="in progress past its planned end, end not reported")
    working_hours: str | None
    night_works: bool
    measures: list[Measure]
    lanes_affected: int
    obstructions_de: list[str]
    impact: Impact
    impact_de: str
    vehicle_impact: str = Field(description="WZDx 4.2 vehicle_impact")
    detour_description: str | None
    bus_lines: list[str]
    waste_collection_affected: bool
    url: str = Field(description="the work's public page")
    updated_at: str
    geometry: dict[str, Any] = Field(description="footprint, GeoJSON (WGS84)")
    detour_geometry: dict[str, Any] | None = Field(description="detour, GeoJSON (WGS84)")

    @classmethod
    def of(cls, work: Roadwork, ctx: FeedContext, now: datetime) -> PublicWork:
        spec = work.spec
        period = work.effective_period
        impact = impact_of(spec.measures)
        overdue = (
            work.status is Status.IN_PROGRESS and work.actual_end is None and period.end <= now
        )
        detour = to_geojson(spec.detour, GEOMETRY_PRECISION) if spec.detour is not None else None
        return cls.model_validate(
            {
                **work_properties(work, ctx),
                "start_local": local_iso(period.start),
                "end_local": local_iso(period.end),
                "start_de": fmt_datetime(period.start),
                "end_de": fmt_datetime(period.end),
                "overdue": overdue,
                "impact": impact,
                "impact_de": IMPACT_DE[impact],
                "vehicle_impact": vehicle_impact(spec.measures),
                "geometry": to_geojson(spec.footprint, GEOMETRY_PRECISION),
                "detour_geometry": detour,
            }
        )


class PublicPage(_Out):
    items: list[PublicWork]
    total: int = Field(description="works matching the search, on all pages")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")
    from_date: date = Field(description="first day searched (Europe/Berlin)")
    to_date: date | None = Field(description="last day searched; null: open-ended")


class OverviewDay(_Out):
    day: date
    generated_at: datetime
    active: int
    upcoming: int
    html: str
    geojson: str


# -- editing ----------------------------------------------------------------------------


class TransitionOut(_Out):
    name: str
    to: Status
    description: str
    roles: list[str]

    @classmethod
    def of(cls, t: Transition) -> TransitionOut:
        return cls(
            name=t.name,
            to=t.target,
            description=t.description,
            roles=sorted(r.value for r in t.roles),
        )


class WorkOut(_Out):
    """A registered work with everything the registry keeps, for its editors."""

    id: int
    reference: str
    status: Status
    status_de: str
    version: int = Field(description="send as If-Match (the ETag) when changing the work")
    district: str
    area_m2: float
    created_at: datetime
    created_at_local: str
    updated_at: datetime
    updated_at_local: str
    created_by: str
    actual_start: datetime | None
    actual_end: datetime | None
    is_public: bool = Field(description="shown to the public now")
    spec: dict[str, Any] = Field(description="the payload as accepted by create/update")
    next_transitions: list[TransitionOut] = Field(description="what the caller may do next")

    @classmethod
    def of(cls, work: Roadwork, transitions: Iterable[Transition]) -> WorkOut:
        return cls(
            id=work.id,
            reference=work.reference,
            status=work.status,
            status_de=STATUS_DE[work.status],
            version=work.version,
            district=work.district,
            area_m2=round(work.area_m2, 1),
            created_at=work.created_at,
            created_at_local=str(local_iso(work.created_at)),
            updated_at=work.updated_at,
            updated_at_local=str(local_iso(work.updated_at)),
            created_by=work.created_by,
            actual_start=work.actual_start,
            actual_end=work.actual_end,
            is_public=work.is_public,
            spec=spec_to_payload(work.spec),
            next_transitions=[TransitionOut.of(t) for t in transitions],
        )


class WorkPage(_Out):
    items: list[WorkOut]
    next_cursor: str | None


class TransitionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: Status = Field(description="the target state")
    note: (
        Annotated[
            str,
            StringConstraints(strip_whitespace=True, max_length=LIMITS.public_text),
            STORABLE,
        ]
        | None
    ) = None
    at: AwareDatetime | None = Field(
        default=None, description="when a start or end happened on site (default: now)"
    )
    expected_version: int | None = Field(
        default=None, ge=1, description="alternative to the If-Match header"
    )


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Decision
    note: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=LIMITS.public_text),
        STORABLE,
    ]


class FindingOut(_Out):
    id: int
    kind: str
    severity: str
    work_a: str = Field(description="reference of the first work")
    work_b: str | None
    segment_id: int | None
    street: str | None
    message: str
    details: dict[str, Any]
    location: dict[str, Any] | None
    status: str
    first_found_at: datetime
    last_found_at: datetime
    decision_note: str | None
    decided_by: str | None
    decided_at: datetime | None

    @classmethod
    def of(cls, f: Finding) -> FindingOut:
        return cls(
            id=f.id,
            kind=f.kind.value,
            severity=f.severity.value,
            work_a=f.reference_a,
            work_b=f.reference_b,
            segment_id=f.segment_id,
            street=f.street,
            message=f.message,
            details=dict(f.details),
            location=to_geojson(f.location, GEOMETRY_PRECISION) if f.location is not None else None,
            status=f.status.value,
            first_found_at=f.first_found_at,
            last_found_at=f.last_found_at,
            decision_note=f.decision_note,
            decided_by=f.decided_by,
            decided_at=f.decided_at,
        )


class PreviewFindingOut(_Out):
    """What coordination would find for a payload; `other` is the other work."""

    kind: str
    severity: str
    other: str | None
    segment_id: int | None
    street: str | None
    message: str
    details: dict[str, Any]
    location: dict[str, Any] | None

    @classmethod
    def of(cls, f: FindingDraft, references: Mapping[int, str]) -> PreviewFindingOut:
        other_id = f.work_b if f.work_a == 0 else f.work_a
        return cls(
            kind=f.kind.value,
            severity=f.severity.value,
            other=references.get(other_id) if other_id else None,
            segment_id=f.segment_id,
            street=f.street,
            message=f.message,
            details=dict(f.details),
            location=to_geojson(f.location, GEOMETRY_PRECISION) if f.location is not None else None,
        )


class AuditOut(_Out):
    at: str
    at_local: str
    actor: str
    organisation: str
    role: str
    action: str
    from_status: Status | None
    to_status: Status | None
    changes: dict[str, Any]
    note: str | None

    @classmethod
    def of(cls, e: AuditEntry) -> AuditOut:
        return cls(
            at=rfc3339(e.at),
            at_local=str(local_iso(e.at)),
            actor=e.actor,
            organisation=e.organisation,
            role=e.role.value,
            action=e.action,
            from_status=e.from_status,
            to_status=e.to_status,
            changes=dict(e.changes),
            note=e.note,
        )
