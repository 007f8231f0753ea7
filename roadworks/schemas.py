"""The JSON payload of a roadwork at the boundary (editing API, imports), as pydantic.

`parse_spec_json(body, frame)` turns request bytes into a `RoadworkSpec` or raises
`PayloadTooLargeError` / `InvalidPayloadError` / `InvalidGeometryError` with every field
problem listed;
`spec_to_payload` is the inverse, so a PATCH is `parse_spec({**spec_to_payload(old),
**patch})`. The domain rules (`validation.validate_spec`) run again in the service.

Example::

    {"title": "Erneuerung Gasleitung", "promoter": "Stadtwerke", "sector": "gas",
     "category": "standard",
     "footprint": {"type": "Polygon", "coordinates": [[[8.76, 50.10], ...]]},
     "streets": [{"name": "Frankfurter Straße",
                  "geometry": {"type": "LineString", "coordinates": [[8.76, 50.10], ...]}}],
     "planned_start": "2025-03-03T07:00:00+01:00", "planned_end": "2025-03-15T17:00:00+01:00",
     "measures": ["lane_closure", "parking_suspended"], "lanes_affected": 1}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from pydantic import ValidationError as PydanticValidationError

from cityops.ingest.contract import STORABLE
from cityops.roadworks.errors import InvalidPayloadError, PayloadTooLargeError
from cityops.roadworks.geometry import CityFrame, parse_geometry, to_geojson
from cityops.roadworks.model import Category, Measure, RoadworkSpec, Sector, Street
from cityops.roadworks.validation import LIMITS

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "RoadworkIn",
    "StreetIn",
    "load_json",
    "parse_spec",
    "parse_spec_json",
    "spec_to_payload",
]

MAX_PAYLOAD_BYTES = 256 * 1024
_SIZE_ERRORS = frozenset({"string_too_long", "too_long"})



# STORABLE: the platform's one text rule (no NUL nor control characters), after the
# constraints of each type.
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=LIMITS.short_text),
                 STORABLE]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                        max_length=LIMITS.short_text), STORABLE]
BusLine = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10),
                    STORABLE]


class StreetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    geometry: dict[str, Any] = Field(description="GeoJSON LineString of the centreline")


class RoadworkIn(BaseModel):
    """A roadwork as a promoter submits it (create or full replacement)."""

    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                            max_length=LIMITS.title), STORABLE]
    description: Annotated[str, StringConstraints(max_length=LIMITS.text), STORABLE] = ""
    promoter: Name
    sector: Sector
    contractor: Text | None = None
    public_contact: Text | None = None
    category: Category = Category.STANDARD
    footprint: dict[str, Any] = Field(description="GeoJSON Polygon or MultiPolygon")
    streets: list[StreetIn] = Field(min_length=1, max_length=LIMITS.streets)
    planned_start: AwareDatetime
    planned_end: AwareDatetime
    working_hours: Text | None = None
    night_works: bool = False
    excavation: bool = True
    measures: list[Measure] = Field(default_factory=list, max_length=len(Measure))
    lanes_affected: int = Field(default=0, ge=0, le=LIMITS.lanes)
    detour_description: Annotated[
        str, StringConstraints(max_length=LIMITS.public_text), STORABLE
    ] | None = None
    detour: dict[str, Any] | None = Field(default=None, description="GeoJSON LineString")
    bus_lines: list[BusLine] = Field(default_factory=list, max_length=LIMITS.bus_lines)
    waste_collection_affected: bool = False
    is_public: bool = True
    public_text: Annotated[
        str, StringConstraints(max_length=LIMITS.public_text), STORABLE
    ] | None = None

    def to_spec(self, frame: CityFrame) -> RoadworkSpec:
        """The domain spec, with every geometry parsed and checked against the city."""
        polygons = ("Polygon", "MultiPolygon")
        footprint = parse_geometry(self.footprint, field="footprint", kinds=polygons,
                                   frame=frame)
        streets = tuple(
            Street(s.name, parse_geometry(s.geometry, field=f"streets[{i}].geometry",
                                          kinds=("LineString",), frame=frame))
            for i, s in enumerate(self.streets)
        )
        detour = None
        if self.detour is not None:
            detour = parse_geometry(self.detour, field="detour",
                                    kinds=("LineString", "MultiLineString"), frame=frame)
        return RoadworkSpec(
            title=self.title, promoter=self.promoter, sector=self.sector,
            category=self.category, footprint=footprint, streets=streets,
            planned_start=self.planned_start, planned_end=self.planned_end,
            description=self.description, contractor=self.contractor or None,
            public_contact=self.public_contact or None,
            working_hours=self.working_hours or None, night_works=self.night_works,
            excavation=self.excavation, measures=frozenset(self.measures),
            lanes_affected=self.lanes_affected,
            detour_description=self.detour_description or None, detour=detour,
            bus_lines=tuple(dict.fromkeys(self.bus_lines)),
            waste_collection_affected=self.waste_collection_affected,
            is_public=self.is_public, public_text=self.public_text or None,
        )


def parse_spec_json(
    body: bytes | str, frame: CityFrame, *, max_bytes: int = MAX_PAYLOAD_BYTES
) -> RoadworkSpec:
    """Request bytes to a spec: size limit, JSON, fields, geometries."""
    size = len(body.encode() if isinstance(body, str) else body)
    if size > max_bytes:
        raise PayloadTooLargeError(
            "body", f"is {size} bytes, more than the limit of {max_bytes} bytes"
        )
    return parse_spec(load_json(body), frame)


def load_json(body: bytes | str) -> object:
    """A request body as JSON, or `InvalidPayloadError` saying why (also for nesting so deep that
    the parser gives up: a roadwork is a few levels deep)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidPayloadError("body", f"is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidPayloadError("body", "is nested too deeply to be a roadwork") from None


def parse_spec(data: object, frame: CityFrame) -> RoadworkSpec:
    """A decoded JSON object to a spec; every field problem is listed in the error."""
    if not isinstance(data, Mapping):
        raise InvalidPayloadError("body", f"must be a JSON object, got {type(data).__name__}")
    try:
        model = RoadworkIn.model_validate(data)
    except PydanticValidationError as exc:
        problems = _problems(exc)
        too_large = {e["type"] for e in exc.errors()} <= _SIZE_ERRORS
        raise (PayloadTooLargeError if too_large else InvalidPayloadError).many(problems) from None
    return model.to_spec(frame)


def spec_to_payload(spec: RoadworkSpec) -> dict[str, Any]:
    """A spec as the JSON payload `parse_spec` accepts (times in UTC)."""
    return {
        "title": spec.title,
        "description": spec.description,
        "promoter": spec.promoter,
        "sector": spec.sector.value,
        "contractor": spec.contractor,
        "public_contact": spec.public_contact,
        "category": spec.category.value,
        "footprint": to_geojson(spec.footprint),
        "streets": [{"name": s.name, "geometry": to_geojson(s.line)} for s in spec.streets],
        "planned_start": spec.planned_start.isoformat(),
        "planned_end": spec.planned_end.isoformat(),
        "working_hours": spec.working_hours,
        "night_works": spec.night_works,
        "excavation": spec.excavation,
        "measures": [m.value for m in spec.sorted_measures],
        "lanes_affected": spec.lanes_affected,
        "detour_description": spec.detour_description,
        "detour": to_geojson(spec.detour) if spec.detour is not None else None,
        "bus_lines": list(spec.bus_lines),
        "waste_collection_affected": spec.waste_collection_affected,
        "is_public": spec.is_public,
        "public_text": spec.public_text,
    }


def _problems(exc: PydanticValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = err["loc"]
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        field = field or "body"
        kind = err["type"]
        given = err.get("input")
        name = str(loc[-2] if loc and isinstance(loc[-1], int) and len(loc) > 1 else
                   (loc[-1] if loc else "value"))
        if kind == "enum":
            expected = (err.get("ctx") or {}).get("expected", "")
            msg = f"unknown {name.rstrip('s')} {given!r}; expected one of: {expected}"
        elif kind == "timezone_aware":
            msg = f"{given!r} has no time zone; give an offset such as +01:00 or Z"
        elif kind == "extra_forbidden":
            msg = "is not a field of a roadwork"
        elif kind == "missing":
            msg = "is required"
        elif kind in ("string_too_long", "too_long"):
            out.append((field, str(err["msg"])))
            continue
        else:
            msg = str(err["msg"])
        out.append((field, msg))
    return out
