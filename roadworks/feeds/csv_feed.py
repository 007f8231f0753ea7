"""CSV (RFC 4180): one row per work, a fixed header, UTF-8, CRLF line ends, comma-separated.

Times are ISO 8601 in UTC; lists (streets, measures, bus lines) are joined with `; `.
`lon`/`lat` is a point inside the footprint, for tools that cannot read geometries.

Text that editors write never starts a cell with `=`, `+`, `-`, `@`, a tab or a carriage
return: a spreadsheet would read such a cell as a formula (`=HYPERLINK(...)`), so it gets a
leading apostrophe, which spreadsheets show as text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Final

from cityops.roadworks.feeds.common import FeedContext, public_description, rfc3339
from cityops.roadworks.model import Roadwork

__all__ = ["CSV_COLUMNS", "neutralise", "to_csv"]

CSV_COLUMNS: Final = (
    "reference", "title", "description", "status", "category", "promoter", "sector",
    "contractor", "public_contact", "streets", "district", "start", "end", "planned_start",
    "planned_end", "actual_start", "actual_end", "working_hours", "night_works", "measures",
    "lanes_affected", "detour_description", "bus_lines", "waste_collection_affected",
    "area_m2", "lon", "lat", "url", "updated_at",
)


# the columns an editor's text reaches (the others are codes, numbers, times and URLs)
_TEXT_COLUMNS: Final = frozenset({
    "title", "description", "promoter", "contractor", "public_contact", "streets", "district",
    "working_hours", "detour_description", "bus_lines",
})
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """A cell that a spreadsheet will not evaluate."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(works: Iterable[Roadwork], ctx: FeedContext) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for work in works:
        writer.writerow(_row(work, ctx))
    return out.getvalue()


def _row(work: Roadwork, ctx: FeedContext) -> list[object]:
    spec = work.spec
    period = work.effective_period
    point = spec.footprint.representative_point()
    row = {
        "reference": work.reference, "title": spec.title,
        "description": public_description(work), "status": work.status.value,
        "category": spec.category.value, "promoter": spec.promoter,
        "sector": spec.sector.value, "contractor": spec.contractor or "",
        "public_contact": spec.public_contact or "", "streets": "; ".join(spec.road_names),
        "district": work.district, "start": rfc3339(period.start),
        "end": rfc3339(period.end), "planned_start": rfc3339(spec.planned_start),
        "planned_end": rfc3339(spec.planned_end),
        "actual_start": rfc3339(work.actual_start) if work.actual_start else "",
        "actual_end": rfc3339(work.actual_end) if work.actual_end else "",
        "working_hours": spec.working_hours or "", "night_works": _bool(spec.night_works),
        "measures": "; ".join(m.value for m in spec.sorted_measures),
        "lanes_affected": spec.lanes_affected,
        "detour_description": spec.detour_description or "",
        "bus_lines": "; ".join(spec.bus_lines),
        "waste_collection_affected": _bool(spec.waste_collection_affected),
        "area_m2": f"{work.area_m2:.1f}", "lon": f"{point.x:.6f}", "lat": f"{point.y:.6f}",
        "url": ctx.work_url(work), "updated_at": rfc3339(work.updated_at),
    }
    return [
        neutralise(str(row[c])) if c in _TEXT_COLUMNS else row[c] for c in CSV_COLUMNS
    ]


def _bool(value: bool) -> str:
    return "true" if value else "false"
