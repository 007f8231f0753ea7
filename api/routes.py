"""The dispatcher's view of the fleet: every truck's current route of a day.

`GET /api/v1/routes` lists the newest route version of each truck for a plan day, in
truck id order and paginated; the street geometry is left out unless asked for, since a
dispatcher's overview does not draw every line at once. Dispatchers and admins only (the
guard is applied where the router is included, in `cityops.api.app`).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from cityops.api.errors import InvalidParameterError
from cityops.api.schemas import decode_cursor, encode_cursor
from cityops.api.trucks import BERLIN, PlanDate, Pool
from cityops.ingest.contract import RouteCommand
from cityops.routing.repository import current_routes_on

__all__ = ["RoutePage", "router"]

router = APIRouter(prefix="/api/v1/routes", tags=["trucks"])


class RoutePage(BaseModel):
    plan_date: date
    items: list[RouteCommand]
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null on the last"
    )


@router.get("", summary="Current routes of every truck")
def list_routes(
    pool: Pool,
    day: PlanDate = None,
    geometry: Annotated[bool, Query(description="include each route's street geometry")] = False,
    limit: Annotated[int, Query(ge=1, le=500, description="page size")] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> RoutePage:
    """The newest route version of each truck for a day (default: today in
    Europe/Berlin), in truck id order."""
    plan_day = day or datetime.now(BERLIN).date()
    after = decode_cursor("routes", cursor, 2) if cursor else None
    if after is not None and after[0] != plan_day.isoformat():
        raise InvalidParameterError(
            "cursor", f"belongs to the routes of {after[0]}, not of {plan_day.isoformat()}"
        )
    with pool.connection() as conn:
        routes = current_routes_on(conn, plan_day, geometry=geometry)
    ids = sorted(t for t in routes if after is None or t > after[1])
    page = ids[:limit]
    more = len(ids) > limit
    return RoutePage(
        plan_date=plan_day,
        items=[routes[t] for t in page],
        next_cursor=encode_cursor("routes", [plan_day.isoformat(), page[-1]]) if more else None,
    )
