"""The roadworks API's boundary: response and request models, traffic impact levels.

Public models are an allow-list: they carry the texts a work's promoter wrote for the
public (public text, detour, contact, working hours) and never the internal description,
who entered the work, audit notes or coordination findings. The editing API's models
(`WorkOut`, `FindingOut`, `AuditOut`) show everything to those allowed to edit.

Times are UTC (`...Z`); fields ending in `_local` are Europe/Berlin wall-clock time with
its offset, `*_de` fields German display text.
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
from cityops.roadworks.feeds.wzdx import VEHICLE_IMPACTS, vehicle_impact
from cityops.roadworks.geometry import to_geojson
from cityops.roadworks.labels import CATEGORY_DE, MEASURE_DE, SECTOR_DE, STATUS_DE, fmt_datetime
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
    "IMPACT_DE",
    "PUBLIC_WORK_SQL",
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
    "public_work_json",
]

_PRECISION = 6  # about 0.1 m


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
        detour = to_geojson(spec.detour, _PRECISION) if spec.detour is not None else None
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
                "geometry": to_geojson(spec.footprint, _PRECISION),
                "detour_geometry": detour,
            }
        )


# -- the public work, rendered by PostgreSQL ----------------------------------------------
#
# The search renders its page in the database: one `json_build_object` per work with the
# fields of `PublicWork`, in its order, from the same labels. `PublicWork.of` stays the
# definition (and renders single works); tests check that both give the same JSON.


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_case(column: str, labels: Mapping[str, str]) -> str:
    whens = " ".join(f"WHEN {_sql_text(k)} THEN {_sql_text(v)}" for k, v in labels.items())
    return f"(CASE {column} {whens} END)"


_MEASURE_ORDER = "ARRAY[" + ", ".join(_sql_text(m.value) for m in Measure) + "]"
_IMPACT_SQL = (
    "(CASE WHEN 'road_closure' = ANY(w.measures) THEN 'closure' "
    "WHEN w.measures && ARRAY['lane_closure', 'alternating_one_way', 'temporary_signals'] "
    "THEN 'restriction' ELSE 'minor' END)"
)
_VEHICLE_IMPACT_SQL = (
    "(CASE "
    + " ".join(
        f"WHEN {_sql_text(m.value)} = ANY(w.measures) THEN {_sql_text(impact)}"
        for m, impact in VEHICLE_IMPACTS
    )
    + f" ELSE {_sql_text(vehicle_impact([]))} END)"
)
# Python's str.strip(): every character for which str.isspace() holds.
_WHITESPACE = _sql_text("".join(c for c in map(chr, range(0x3001)) if c.isspace()))


def _rfc3339_sql(ts: str) -> str:
    return f"""to_char({ts} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""


def _local_iso_sql(ts: str) -> str:
    """`local_iso`: Berlin wall-clock time, microseconds when there are any, offset."""
    local = f"({ts} AT TIME ZONE 'Europe/Berlin')"
    offset = f"({local} - ({ts} AT TIME ZONE 'UTC'))"
    return (
        f"""(to_char({local}, 'YYYY-MM-DD"T"HH24:MI:SS')"""
        f" || CASE WHEN mod(date_part('microseconds', {ts})::bigint, 1000000) <> 0"
        f" THEN to_char({local}, '.US') ELSE '' END"
        f" || CASE WHEN {offset} < interval '0' THEN '-' ELSE '+' END"
        f" || to_char(abs(extract(epoch FROM {offset}))::int / 3600, 'FM00') || ':'"
        f" || to_char(mod(abs(extract(epoch FROM {offset}))::int, 3600) / 60, 'FM00'))"
    )


def _de_datetime_sql(ts: str) -> str:
    """`fmt_datetime`: `03.03.2025, 07:00 Uhr` on Berlin time."""
    return f"""to_char({ts} AT TIME ZONE 'Europe/Berlin', 'DD.MM.YYYY, HH24:MI "Uhr"')"""


def _de_period_sql(start: str, end: str) -> str:
    """`fmt_period`: first to last Berlin day; an end at midnight ends the day before."""
    first = f"({start} AT TIME ZONE 'Europe/Berlin')::date"
    end_local = f"({end} AT TIME ZONE 'Europe/Berlin')"
    last = (
        f"(CASE WHEN {end_local}::time = time '00:00' AND {end_local}::date > {first} "
        f"THEN {end_local}::date - 1 ELSE {end_local}::date END)"
    )
    return (
        f"(CASE WHEN {first} = {last} THEN to_char({first}, 'DD.MM.YYYY') "
        f"ELSE to_char({first}, 'DD.MM.YYYY') || ' bis ' || to_char({last}, 'DD.MM.YYYY') "
        "END)"
    )


_OBSTRUCTIONS_SQL = f"""ARRAY(SELECT o.text FROM (
        SELECT array_position({_MEASURE_ORDER}, m) AS k,
               CASE WHEN m = 'lane_closure' AND w.lanes_affected <> 0
                    THEN {_sql_text(MEASURE_DE[Measure.LANE_CLOSURE])} || ' ('
                         || w.lanes_affected || ' Fahrstreifen)'
                    ELSE {_sql_case("m", {x.value: MEASURE_DE[x] for x in Measure})} END AS text
        FROM (SELECT DISTINCT unnest(w.measures) AS m) ms
        UNION ALL
        SELECT 100, CASE WHEN cardinality(w.bus_lines) = 1 THEN 'Buslinie ' ELSE 'Buslinien '
                    END || array_to_string(w.bus_lines, ', ') || ' betroffen'
        WHERE cardinality(w.bus_lines) > 0
        UNION ALL SELECT 101, 'Müllabfuhr betroffen' WHERE w.waste_collection_affected
        UNION ALL SELECT 102, 'Nachtarbeit' WHERE w.night_works
    ) o ORDER BY o.k)"""

# The fields of `PublicWork` in its order, as SQL over a row `w` of `roadworks` with the
# effective period as `w.eff_start`, `w.eff_end`; `%(base_url)s`: the public pages.
# `overdue` depends on the time of the request, so it is set when a page is assembled,
# between the two halves (see `public_work_json`).
_FIELDS_HEAD: tuple[tuple[str, str], ...] = (
    ("reference", "w.reference"),
    ("title", "w.title"),
    ("description", f"btrim(coalesce(nullif(w.public_text, ''), w.title), {_WHITESPACE})"),
    ("status", "w.status"),
    ("status_de", _sql_case("w.status", {k.value: v for k, v in STATUS_DE.items()})),
    ("category", "w.category"),
    ("category_de", _sql_case("w.category", {k.value: v for k, v in CATEGORY_DE.items()})),
    ("promoter", "w.promoter"),
    ("sector", "w.sector"),
    ("sector_de", _sql_case("w.sector", {k.value: v for k, v in SECTOR_DE.items()})),
    ("contractor", "w.contractor"),
    ("public_contact", "w.public_contact"),
    (
        "streets",
        "ARRAY(SELECT s.name FROM roadwork_streets s WHERE s.work_id = w.id "
        "GROUP BY s.name ORDER BY min(s.seq))",
    ),
    ("district", "w.district"),
    ("start", _rfc3339_sql("w.eff_start")),
    ("end", _rfc3339_sql("w.eff_end")),
    ("start_local", _local_iso_sql("w.eff_start")),
    ("end_local", _local_iso_sql("w.eff_end")),
    ("start_de", _de_datetime_sql("w.eff_start")),
    ("end_de", _de_datetime_sql("w.eff_end")),
    ("period_de", _de_period_sql("w.eff_start", "w.eff_end")),
    ("start_verified", "w.actual_start IS NOT NULL"),
    ("end_verified", "w.actual_end IS NOT NULL"),
)
_FIELDS_TAIL: tuple[tuple[str, str], ...] = (
    ("working_hours", "w.working_hours"),
    ("night_works", "w.night_works"),
    (
        "measures",
        "ARRAY(SELECT m FROM (SELECT DISTINCT unnest(w.measures) AS m) ms "
        f"ORDER BY array_position({_MEASURE_ORDER}, m))",
    ),
    ("lanes_affected", "w.lanes_affected"),
    ("obstructions_de", _OBSTRUCTIONS_SQL),
    ("impact", _IMPACT_SQL),
    ("impact_de", _sql_case(_IMPACT_SQL, {k.value: v for k, v in IMPACT_DE.items()})),
    ("vehicle_impact", _VEHICLE_IMPACT_SQL),
    ("detour_description", "w.detour_description"),
    ("bus_lines", "w.bus_lines"),
    ("waste_collection_affected", "w.waste_collection_affected"),
    ("url", "%(base_url)s || '/roadworks/' || w.reference"),
    ("updated_at", _rfc3339_sql("w.updated_at")),
    ("geometry", f"ST_AsGeoJSON(w.footprint, {_PRECISION})::json"),
    ("detour_geometry", f"ST_AsGeoJSON(w.detour, {_PRECISION})::json"),
)


def _json_object_sql(fields: tuple[tuple[str, str], ...]) -> str:
    return "json_build_object(" + ", ".join(f"{_sql_text(k)}, {v}" for k, v in fields) + ")"


#: A `PublicWork` as two JSON objects built by PostgreSQL (`repository.render_public`):
#: the fields before `overdue` and those after it.
PUBLIC_WORK_SQL: Final = (_json_object_sql(_FIELDS_HEAD), _json_object_sql(_FIELDS_TAIL))


def public_work_json(head: str, tail: str, overdue: bool) -> str:
    """One work's JSON from the halves PostgreSQL rendered plus `overdue`: the fields of
    `PublicWork`, in its order."""
    return f'{head[:-1]}, "overdue" : {"true" if overdue else "false"}, {tail[1:]}'


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
            location=to_geojson(f.location, _PRECISION) if f.location is not None else None,
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
            location=to_geojson(f.location, _PRECISION) if f.location is not None else None,
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
