"""Rules every roadwork spec must satisfy, whoever built it (API payload, seed, import).

`validate_spec` returns the spec with cleaned geometries (2D) plus what the registry
derives from it (area, district), or raises the first problem as a specific error:
`InvalidGeometryError`, `InvalidPeriodError`, `PayloadTooLargeError` or
`InvalidPayloadError`, each naming the field.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cityops.roadworks.errors import InvalidPayloadError, InvalidPeriodError, PayloadTooLargeError
from cityops.roadworks.geometry import CityFrame, check_geometry
from cityops.roadworks.model import Category, Measure, RoadworkSpec, Sector, Street

__all__ = [
    "LIMITS",
    "Limits",
    "ValidSpec",
    "validate_spec",
]

_EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)
_BUS_LINE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 \-/]{0,9}$")


@dataclass(frozen=True, slots=True)
class Limits:
    title: int = 200
    text: int = 5000  # description
    short_text: int = 200  # promoter, contractor, contact, working hours, street names
    public_text: int = 2000
    streets: int = 20
    bus_lines: int = 30
    lanes: int = 12
    max_area_m2: float = 500_000.0  # 0.5 km²: more is a district, not a site
    street_distance_m: float = 100.0  # an affected street must pass the footprint
    max_duration: timedelta = timedelta(days=5 * 366)
    earliest: datetime = _EARLIEST
    latest: datetime = _LATEST


LIMITS: Final = Limits()


@dataclass(frozen=True, slots=True)
class ValidSpec:
    spec: RoadworkSpec
    area_m2: float
    district: str


def validate_spec(spec: RoadworkSpec, frame: CityFrame, limits: Limits = LIMITS) -> ValidSpec:
    """Check a spec; the result carries cleaned geometries, the area and the district."""
    _check_enums(spec)
    _check_texts(spec, limits)
    _check_period(spec, limits)
    footprint = check_geometry(spec.footprint, field="footprint",
                               kinds=("Polygon", "MultiPolygon"), frame=frame)
    metric = frame.projector.to_metric(footprint)
    area = float(metric.area)
    if area > limits.max_area_m2:
        raise InvalidPayloadError(
            "footprint", f"covers {area / 1e6:.2f} km², more than the plausible maximum of "
            f"{limits.max_area_m2 / 1e6:.2f} km² for one site; split it into several works"
        )
    if not spec.streets:
        raise InvalidPayloadError(
            "streets", "name at least one affected street with its centreline")
    if len(spec.streets) > limits.streets:
        raise PayloadTooLargeError(
            "streets", f"has {len(spec.streets)} entries, more than the limit of {limits.streets}"
        )
    streets: list[Street] = []
    for i, street in enumerate(spec.streets):
        name = street.name.strip()
        if not name:
            raise InvalidPayloadError(f"streets[{i}].name", "must not be empty")
        if len(name) > limits.short_text:
            raise PayloadTooLargeError(f"streets[{i}].name",
                                  f"is longer than {limits.short_text} characters")
        line = check_geometry(street.line, field=f"streets[{i}].geometry",
                              kinds=("LineString",), frame=frame)
        gap = float(frame.projector.to_metric(line).distance(metric))
        if gap > limits.street_distance_m:
            raise InvalidPayloadError(
                f"streets[{i}].geometry",
                f"the centreline of {name!r} is {gap:.0f} m away from the footprint; an "
                f"affected street must pass within {limits.street_distance_m:.0f} m of it",
            )
        streets.append(Street(name, line))
    detour = None
    if spec.detour is not None:
        detour = check_geometry(spec.detour, field="detour",
                                kinds=("LineString", "MultiLineString"), frame=frame)
    _check_traffic(spec, limits)
    clean = dataclasses.replace(
        spec, footprint=footprint, streets=tuple(streets), detour=detour,
        title=spec.title.strip(), promoter=spec.promoter.strip(),
    )
    return ValidSpec(clean, round(area, 1), frame.district_of(footprint))


def _check_enums(spec: RoadworkSpec) -> None:
    for name, enum in (("sector", Sector), ("category", Category)):
        value = getattr(spec, name)
        if not isinstance(value, enum):
            try:
                enum(value)
            except ValueError:
                raise InvalidPayloadError(
                    name, f"unknown {name} {value!r}; expected one of: "
                    f"{', '.join(m.value for m in enum)}"
                ) from None
            raise InvalidPayloadError(name, f"must be a {enum.__name__}, got {value!r}")
    for m in spec.measures:
        if not isinstance(m, Measure):
            raise InvalidPayloadError(
                "measures", f"unknown measure {m!r}; expected any of: "
                f"{', '.join(x.value for x in Measure)}"
            )


def _check_texts(spec: RoadworkSpec, limits: Limits) -> None:
    for name in ("title", "promoter"):
        if not getattr(spec, name).strip():
            raise InvalidPayloadError(name, "must not be empty")
    sizes = {
        "title": limits.title, "promoter": limits.short_text, "description": limits.text,
        "contractor": limits.short_text, "public_contact": limits.short_text,
        "working_hours": limits.short_text, "detour_description": limits.public_text,
        "public_text": limits.public_text,
    }
    for name, limit in sizes.items():
        value = getattr(spec, name)
        if value is not None and len(value) > limit:
            raise PayloadTooLargeError(name, f"has {len(value)} characters, more than {limit}")


def _check_period(spec: RoadworkSpec, limits: Limits) -> None:
    start, end = spec.planned_start, spec.planned_end
    for name, value in (("planned_start", start), ("planned_end", end)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidPeriodError(name, f"{value.isoformat()} has no time zone; give an offset "
                                "such as +01:00 or Z")
        if not limits.earliest <= value < limits.latest:
            raise InvalidPeriodError(name, f"{value.isoformat()} is not a plausible date for works")
    if end <= start:
        word = "before" if end < start else "the same as"
        raise InvalidPeriodError(
            "planned_end", f"{end.isoformat()} is {word} planned_start {start.isoformat()}; "
            "a work must end after it starts",
        )
    if end - start > limits.max_duration:
        raise InvalidPeriodError(
            "planned_end", f"the work would last {(end - start).days} days, more than the "
            f"{limits.max_duration.days} days one registration may cover",
        )


def _check_traffic(spec: RoadworkSpec, limits: Limits) -> None:
    if not 0 <= spec.lanes_affected <= limits.lanes:
        raise InvalidPayloadError("lanes_affected",
                             f"must be between 0 and {limits.lanes}, got {spec.lanes_affected}")
    if Measure.LANE_CLOSURE in spec.measures and spec.lanes_affected == 0:
        raise InvalidPayloadError("lanes_affected", "a lane closure closes at least one lane")
    if len(spec.bus_lines) > limits.bus_lines:
        raise PayloadTooLargeError("bus_lines", f"has {len(spec.bus_lines)} entries, more than "
                              f"{limits.bus_lines}")
    for i, line in enumerate(spec.bus_lines):
        if not _BUS_LINE_RE.match(line):
            raise InvalidPayloadError(f"bus_lines[{i}]", f"{line!r} is not a bus line name "
                                 "(letters, digits, up to 10 characters)")
    if spec.detour is not None and not spec.detour_description:
        raise InvalidPayloadError("detour_description", "describe the detour drawn in 'detour'")
