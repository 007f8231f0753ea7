"""WZDx 4.2 WorkZoneFeed: the US DOT's Work Zone Data Exchange, used by navigation apps.

One work-zone road event per affected street (WZDx events follow one road, geometry a
LineString of the centreline); the events of one work point at each other as
`related-work-zone`. A drawn detour becomes a `detour` road event linked both ways.
Our measures map to WZDx's `vehicle_impact`:

=====================  ===========================
road_closure           all-lanes-closed
alternating_one_way    alternating-one-way
temporary_signals      temporary-traffic-signal
lane_closure           some-lanes-closed
(none of these)        all-lanes-open
=====================  ===========================

parking_suspended becomes a `no-parking` restriction; the kind of work a `types_of_work`
entry (below-road-work for excavations). Sidewalk and cycle lane closures have no lane
model here and are named in the description. Licence: CC0, as WZDx requires.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cityops.roadworks.feeds.common import (
    FeedContext,
    obstructions_de,
    public_description,
    rfc3339,
    work_uuid,
)
from cityops.roadworks.geometry import to_geojson
from cityops.roadworks.model import Measure, Roadwork, Sector

__all__ = ["VEHICLE_IMPACTS", "WZDX_LICENSE", "WZDX_VERSION", "vehicle_impact", "work_zone_feed"]

WZDX_VERSION = "4.2"
WZDX_LICENSE = "https://creativecommons.org/publicdomain/zero/1.0/"
_PRECISION = 6  # about 0.1 m

#: Measures that set `vehicle_impact`, the first present wins; none: all-lanes-open.
VEHICLE_IMPACTS: tuple[tuple[Measure, str], ...] = (
    (Measure.ROAD_CLOSURE, "all-lanes-closed"),
    (Measure.ALTERNATING_ONE_WAY, "alternating-one-way"),
    (Measure.TEMPORARY_SIGNALS, "temporary-traffic-signal"),
    (Measure.LANE_CLOSURE, "some-lanes-closed"),
)


def vehicle_impact(measures: Iterable[Measure]) -> str:
    present = set(measures)
    for measure, impact in VEHICLE_IMPACTS:
        if measure in present:
            return impact
    return "all-lanes-open"


def work_zone_feed(works: Iterable[Roadwork], ctx: FeedContext) -> dict[str, Any]:
    """A WZDx 4.2 WorkZoneFeed of the given works."""
    features: list[dict[str, Any]] = []
    for work in works:
        features += _events(work, ctx)
    feed: dict[str, Any] = {
        "feed_info": {
            "publisher": ctx.publisher,
            "contact_name": ctx.contact_name,
            "contact_email": ctx.contact_email,
            "update_frequency": 3600,
            "update_date": rfc3339(ctx.generated_at),
            "version": WZDX_VERSION,
            "license": WZDX_LICENSE,
            "data_sources": [
                {
                    "data_source_id": ctx.data_source_id,
                    "organization_name": ctx.publisher,
                    "contact_name": ctx.contact_name,
                    "contact_email": ctx.contact_email,
                    "update_date": rfc3339(ctx.generated_at),
                }
            ],
        },
        "type": "FeatureCollection",
        "features": features,
    }
    if features:
        feed["bbox"] = _bbox(features)
    return feed


def _events(work: Roadwork, ctx: FeedContext) -> list[dict[str, Any]]:
    spec = work.spec
    period = work.effective_period
    ids = [str(work_uuid(ctx, work, f"street-{i}")) for i in range(len(spec.streets))]
    detour_id = str(work_uuid(ctx, work, "detour")) if spec.detour is not None else None
    description = _description(work)
    out: list[dict[str, Any]] = []
    for i, street in enumerate(spec.streets):
        related = [
            {"type": "related-work-zone", "id": other} for j, other in enumerate(ids) if j != i
        ]
        if detour_id is not None:
            related.append({"type": "related-detour", "id": detour_id})
        core: dict[str, Any] = {
            "data_source_id": ctx.data_source_id,
            "event_type": "work-zone",
            "road_names": [street.name],
            "direction": "undefined",
            "name": f"{work.reference}: {spec.title}",
            "description": description,
            "creation_date": rfc3339(work.created_at),
            "update_date": rfc3339(work.updated_at),
        }
        if related:
            core["related_road_events"] = related
        props: dict[str, Any] = {
            "core_details": core,
            "start_date": rfc3339(period.start),
            "end_date": rfc3339(period.end),
            "is_start_date_verified": work.actual_start is not None,
            "is_end_date_verified": work.actual_end is not None,
            "is_start_position_verified": False,
            "is_end_position_verified": False,
            "location_method": "other",
            "vehicle_impact": vehicle_impact(spec.measures),
            "types_of_work": [_type_of_work(work)],
        }
        if Measure.PARKING_SUSPENDED in spec.measures:
            props["restrictions"] = [{"type": "no-parking"}]
        out.append(_feature(ids[i], props, street.line))
    if spec.detour is not None and detour_id is not None:
        out += _detours(work, ctx, detour_id, ids)
    return out


def _detours(
    work: Roadwork, ctx: FeedContext, detour_id: str, zone_ids: list[str]
) -> list[dict[str, Any]]:
    spec = work.spec
    period = work.effective_period
    lines = list(getattr(spec.detour, "geoms", [spec.detour]))
    out = []
    for k, line in enumerate(lines):
        fid = detour_id if k == 0 else str(work_uuid(ctx, work, f"detour-{k}"))
        core = {
            "data_source_id": ctx.data_source_id,
            "event_type": "detour",
            "road_names": list(spec.road_names),
            "direction": "undefined",
            "name": f"{work.reference}: Umleitung",
            "description": spec.detour_description or "Umleitung",
            "related_road_events": [{"type": "related-work-zone", "id": z} for z in zone_ids],
            "creation_date": rfc3339(work.created_at),
            "update_date": rfc3339(work.updated_at),
        }
        props = {
            "core_details": core,
            "start_date": rfc3339(period.start),
            "end_date": rfc3339(period.end),
            "is_start_date_verified": work.actual_start is not None,
            "is_end_date_verified": work.actual_end is not None,
        }
        out.append(_feature(fid, props, line))
    return out


def _feature(fid: str, props: dict[str, Any], line: Any) -> dict[str, Any]:
    geometry = to_geojson(line, _PRECISION)
    return {
        "id": fid,
        "type": "Feature",
        "properties": props,
        "geometry": geometry,
        "bbox": [round(v, _PRECISION) for v in line.bounds],
    }


def _type_of_work(work: Roadwork) -> dict[str, Any]:
    if work.spec.excavation:
        name = "below-road-work"
    elif work.spec.sector is Sector.ROAD:
        name = "surface-work"
    else:
        name = "roadside-work"
    return {"type_name": name, "is_architectural_change": False}


def _description(work: Roadwork) -> str:
    parts = [public_description(work)]
    impacts = obstructions_de(work)
    if impacts:
        parts.append("Verkehr: " + ", ".join(impacts) + ".")
    if work.spec.working_hours:
        parts.append(f"Arbeitszeiten: {work.spec.working_hours}.")
    parts.append(f"Vorhabenträger: {work.spec.promoter}.")
    return " ".join(parts)


def _bbox(features: list[dict[str, Any]]) -> list[float]:
    """The bounds of all features: of their own (rounded) bounds, which is the same as
    the bounds of their rounded coordinates, since rounding keeps the order."""
    boxes = [f["bbox"] for f in features]
    return [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]
