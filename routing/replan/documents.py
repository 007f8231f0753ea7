"""The route documents a re-plan sends: new versions of the changed trucks, idle versions of
the retired ones."""

from __future__ import annotations

from datetime import date, datetime

from cityops.ingest.contract import RouteCommand
from cityops.routing.planning import Location

__all__ = ["idle_route", "with_fraction"]


def with_fraction(route: RouteCommand, fraction: str) -> RouteCommand:
    """The route document with the fraction it collects, where the contract records it."""
    if "fraction" in RouteCommand.model_fields:
        return route.model_copy(update={"fraction": fraction})
    return route


def idle_route(
    *,
    truck_id: str,
    day: date,
    version: int,
    at: datetime,
    where: Location,
    load_l: float,
    reason: str,
    engine: str = "replanner",
) -> RouteCommand:
    """A version without stops, only where the truck stands: a broken-down truck's last
    one (reason "breakdown"), or a truck whose remaining stops all went to others."""
    return RouteCommand.model_validate(
        {
            "truck_id": truck_id,
            "plan_date": day,
            "version": version,
            "created_at": at,
            "reason": reason,
            "engine": engine,
            "distance_m": 0.0,
            "duration_s": 0.0,
            "stops": [
                {
                    "seq": 0,
                    "kind": "start",
                    "lat": where.lat,
                    "lon": where.lon,
                    "eta": at,
                    "etd": at,
                    "load_after_l": max(0.0, load_l),
                }
            ],
            "geometry": {"type": "LineString", "coordinates": []},
            "unserved": [],
        }
    )
