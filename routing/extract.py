"""Which street network a city plans on: one policy for the daily plan, the re-planner and
the registry's snapping of bins.

In order: `CITYOPS_OSM_FILE` (a trial override), the network last imported
(`cityops city apply`, `cityops routing import-network`), the city profile's extract
(None: the bundled one, the demo city's).
"""

from __future__ import annotations

from pathlib import Path

from cityops.ingest.city import load_city
from cityops.ingest.config import Settings
from cityops.ingest.db import connect
from cityops.routing.repository import active_network_source

__all__ = ["network_for"]


def network_for(settings: Settings) -> Path | None:
    """The extract planning should use (None: the bundled one)."""
    if settings.osm_file is not None:
        return settings.osm_file
    with connect(settings.database_url) as conn:
        source = active_network_source(conn)
    if source:
        return Path(source)
    return load_city(settings).osm_extract
