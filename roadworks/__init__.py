"""cityops.roadworks: the roadworks registry (Baustellenregister).

A pure core (`model`, `lifecycle`, `coordination`, `validation`, `geometry`, `labels`,
`overview.build_overview`, `feeds`), SQL in the `store_*` modules, use cases in `service`, and the
edges: `schemas` (JSON payloads), `cli`, `seed`. Errors in `errors`, for the API to map to
HTTP in one place. Start with `RoadworksService`.
"""

from cityops.roadworks.config import RoadworksSettings, load_roadworks_settings
from cityops.roadworks.coordination import CoordinationRules
from cityops.roadworks.geometry import BBox, CityFrame
from cityops.roadworks.model import (
    Actor,
    AuditEntry,
    Category,
    Decision,
    Finding,
    FindingKind,
    FindingStatus,
    Measure,
    Period,
    ResurfacedSegment,
    Roadwork,
    RoadworkSpec,
    Role,
    Sector,
    Status,
    Street,
)
from cityops.roadworks.service import RoadworksService
from cityops.roadworks.store_works import WorkFilter

__all__ = [
    "Actor",
    "AuditEntry",
    "BBox",
    "Category",
    "CityFrame",
    "CoordinationRules",
    "Decision",
    "Finding",
    "FindingKind",
    "FindingStatus",
    "Measure",
    "Period",
    "ResurfacedSegment",
    "Roadwork",
    "RoadworkSpec",
    "RoadworksService",
    "RoadworksSettings",
    "Role",
    "Sector",
    "Status",
    "Street",
    "WorkFilter",
    "load_roadworks_settings",
]
