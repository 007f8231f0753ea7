"""Open-data feeds of the public roadworks: pure renderers of a list of works.

* `wzdx.work_zone_feed`: WZDx 4.2 WorkZoneFeed (GeoJSON, one road event per street),
* `geojson.feature_collection`: plain GeoJSON (footprints with German labels),
* `ical.calendar`: iCalendar (RFC 5545), one event per work, for a street or an area,
* `atom.feed`: Atom (RFC 4287) for a street or an area,
* `csv_feed.to_csv`: CSV (RFC 4180) with a fixed header.

Which works are public is decided by the caller (`RoadworksService.public_works`).
"""

from cityops.roadworks.feeds.common import FeedContext, FeedQuery

__all__ = ["FeedContext", "FeedQuery"]
