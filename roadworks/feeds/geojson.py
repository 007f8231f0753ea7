"""Plain GeoJSON (RFC 7946): one Feature per work, its footprint with flat properties
that any GIS or web map can show without knowing WZDx."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cityops.roadworks.feeds.common import (
    FeedContext,
    obstructions_de,
    public_description,
    rfc3339,
)
from cityops.roadworks.geometry import to_geojson
from cityops.roadworks.labels import CATEGORY_DE, SECTOR_DE, STATUS_DE, fmt_period
from cityops.roadworks.model import Roadwork

__all__ = ["feature", "feature_collection", "work_properties"]


def work_properties(work: Roadwork, ctx: FeedContext) -> dict[str, Any]:
    """The public properties of a work (also used by the daily overview)."""
    spec = work.spec
    period = work.effective_period
    return {
        "reference": work.reference,
        "title": spec.title,
        "description": public_description(work),
        "status": work.status.value,
        "status_de": STATUS_DE[work.status],
        "category": spec.category.value,
        "category_de": CATEGORY_DE[spec.category],
        "promoter": spec.promoter,
        "sector": spec.sector.value,
        "sector_de": SECTOR_DE[spec.sector],
        "contractor": spec.contractor,
        "public_contact": spec.public_contact,
        "streets": list(spec.road_names),
        "district": work.district,
        "start": rfc3339(period.start),
        "end": rfc3339(period.end),
        "period_de": fmt_period(period),
        "start_verified": work.actual_start is not None,
        "end_verified": work.actual_end is not None,
        "working_hours": spec.working_hours,
        "night_works": spec.night_works,
        "measures": [m.value for m in spec.sorted_measures],
        "lanes_affected": spec.lanes_affected,
        "obstructions_de": obstructions_de(work),
        "detour_description": spec.detour_description,
        "bus_lines": list(spec.bus_lines),
        "waste_collection_affected": spec.waste_collection_affected,
        "area_m2": work.area_m2,
        "url": ctx.work_url(work),
        "updated_at": rfc3339(work.updated_at),
    }


def feature(work: Roadwork, ctx: FeedContext, **extra: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": work.reference,
        "geometry": to_geojson(work.spec.footprint, 7),
        "properties": {**work_properties(work, ctx), **extra},
    }


def feature_collection(works: Iterable[Roadwork], ctx: FeedContext) -> dict[str, Any]:
    """A FeatureCollection of the works' footprints (lon/lat, WGS84)."""
    return {
        "type": "FeatureCollection",
        "name": "roadworks",
        "generated_at": rfc3339(ctx.generated_at),
        "publisher": ctx.publisher,
        "features": [feature(w, ctx) for w in works],
    }
