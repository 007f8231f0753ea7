"""Open data of the roadworks registry, no login: the feeds of the public works and the
published daily overviews.

* `GET /api/v1/roadworks/feeds/{wzdx,geojson,csv,ical,atom}`: the public works not yet
  over, for the city, an area (`bbox`) or a street;
* `GET /api/v1/roadworks/overview`, `GET /api/v1/roadworks/overview/{day}`: the daily
  overviews as published (`cityops roadworks overview`), HTML or GeoJSON.

Responses carry an ETag of what they were made from (the works' versions, the snapshot),
so polling clients get `304 Not Modified` while nothing changed. Include this router
before `cityops.api.roadworks.public.router`, whose `/api/v1/roadworks/{reference}` would
otherwise take `/api/v1/roadworks/overview`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from psycopg_pool import ConnectionPool

from cityops.api.errors import NotFoundError
from cityops.api.roadworks.cache import Rendered
from cityops.api.roadworks.context import (
    BBoxParam,
    Ctx,
    Pool,
    RoadworksApi,
    StreetParam,
    parse_area,
    parse_street,
    respond,
)
from cityops.api.roadworks.schemas import OverviewDay
from cityops.api.schemas import ErrorBody
from cityops.roadworks import store_overview
from cityops.roadworks import store_public as repo
from cityops.roadworks.feeds import atom, csv_feed, geojson, ical, wzdx
from cityops.roadworks.feeds.common import FeedQuery
from cityops.roadworks.model import Roadwork, Status
from cityops.roadworks.overview import OVERVIEW_CSP
from cityops.roadworks.validation import LIMITS

__all__ = ["ATOM_PATH", "FeedFormat", "OverviewFormat", "router"]

logger = logging.getLogger(__name__)

_FEED_CACHE = "public, max-age=300"
_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no overview published for that day"},
    422: {"model": ErrorBody, "description": "invalid parameters, one detail per field"},
}
router = APIRouter(tags=["roadworks (open data)"], responses=_RESPONSES)


# -- feeds ------------------------------------------------------------------------------


class FeedFormat(StrEnum):
    WZDX = "wzdx"
    GEOJSON = "geojson"
    CSV = "csv"
    ICAL = "ical"
    ATOM = "atom"


_MEDIA: dict[FeedFormat, tuple[str, str]] = {
    FeedFormat.WZDX: ("application/geo+json", "baustellen-wzdx.geojson"),
    FeedFormat.GEOJSON: ("application/geo+json", "baustellen.geojson"),
    FeedFormat.CSV: ("text/csv; charset=utf-8; header=present", "baustellen.csv"),
    FeedFormat.ICAL: ("text/calendar; charset=utf-8", "baustellen.ics"),
    FeedFormat.ATOM: ("application/atom+xml; charset=utf-8", "baustellen.atom"),
}
ATOM_PATH: Final = "/api/v1/roadworks/feeds/atom"


@router.get(
    "/api/v1/roadworks/feeds/{kind}",
    summary="Open-data feeds of the public roadworks",
    response_class=Response,
    responses={
        200: {"content": {m: {} for m, _ in _MEDIA.values()}},
        304: {"description": "unchanged since the given ETag"},
    },
)
def feed(
    kind: FeedFormat,
    request: Request,
    ctx: Ctx,
    pool: Pool,
    bbox: BBoxParam = None,
    street: StreetParam = None,
) -> Response:
    """The public works not yet over (of an area or a street): `wzdx` (WZDx 4.2
    WorkZoneFeed), `geojson`, `csv` (RFC 4180), `ical` (RFC 5545, to subscribe in a
    calendar) or `atom` (RFC 4287, for feed readers).

    A feed is rendered once per state of the registry and kept: while no work changes
    (and none starts or ends being shown as time passes) it is sent as rendered, and a
    client that names its ETag in `If-None-Match` gets `304 Not Modified`."""
    area, road = parse_area(bbox), parse_street(street)
    query = FeedQuery(bbox=area, street=road)
    key = ("feed", kind.value, query.query_string)
    kept = _kept(ctx, pool, key)
    if kept is not None:
        return respond(request, kept)
    with ctx.cache.lock(key):  # one thread renders, the others wait and take it
        kept = _kept(ctx, pool, key)
        if kept is None:
            kept = _render_feed(kind, ctx, pool, query)
            ctx.cache.keep_response(key, kept)
    return respond(request, kept)


def _kept(ctx: RoadworksApi, pool: ConnectionPool, key: tuple[str, ...]) -> Rendered | None:
    kept = ctx.cache.response(key)
    if kept is None:
        return None
    with pool.connection() as conn:
        version = repo.data_version(conn)
    return kept if kept.fresh(version, ctx.now()) else None


def _render_feed(
    kind: FeedFormat, ctx: RoadworksApi, pool: ConnectionPool, query: FeedQuery
) -> Rendered:
    fctx = ctx.feed_context()
    now = fctx.generated_at
    horizon = now + timedelta(days=LIMITS.max_duration.days + 366)  # as public_works
    with pool.connection() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        version = repo.data_version(conn)
        works = ctx.service.public_works(conn, bbox=query.bbox, street=query.street, now=now)
        later = repo.next_public_start(conn, horizon)
    body: str
    if kind is FeedFormat.WZDX:
        body = json.dumps(wzdx.work_zone_feed(works, fctx), ensure_ascii=False)
    elif kind is FeedFormat.GEOJSON:
        body = json.dumps(geojson.feature_collection(works, fctx), ensure_ascii=False)
    elif kind is FeedFormat.CSV:
        body = csv_feed.to_csv(works, fctx)
    elif kind is FeedFormat.ICAL:
        body = ical.calendar(works, fctx, query)
    else:
        body = atom.feed(works, fctx, query, self_path=ATOM_PATH)
    media, filename = _MEDIA[kind]
    # The feed shows other works once a work shown ends or, far ahead, one more starts.
    changes = [
        w.effective_period.end
        for w in works
        if not (w.status is Status.IN_PROGRESS and w.actual_end is None)
        and w.effective_period.end > now
    ]
    if later is not None:
        changes.append(later - (horizon - now))
    tag = f"{kind}?{query.query_string}|{_versions(works)}"
    return Rendered(
        body.encode("utf-8"),
        media,
        _etag(tag),
        version,
        min(changes, default=None),
        _headers(filename),
    )


def _versions(works: Iterable[Roadwork]) -> str:
    return ",".join(f"{w.id}.{w.version}.{w.updated_at.timestamp()}" for w in works)


def _etag(tag: str) -> str:
    """An ETag made of `tag`: what the content depends on, without the generation time."""
    return f'"{hashlib.sha256(tag.encode()).hexdigest()[:32]}"'


# Feeds are data: a browser that opens one loads nothing and runs nothing from it, and never
# guesses another type (an HTML-looking title in a CSV file stays CSV).
_FEED_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"


def _headers(
    filename: str | None, csp: str = _FEED_CSP
) -> tuple[tuple[str, str], ...]:
    headers = [
        ("Cache-Control", _FEED_CACHE),
        ("Content-Security-Policy", csp),
        ("X-Content-Type-Options", "nosniff"),
    ]
    if filename:
        headers.append(("Content-Disposition", f'inline; filename="{filename}"'))
    return tuple(headers)


def _cached(
    request: Request,
    data: bytes,
    media: str,
    filename: str | None,
    *,
    tag: str,
    csp: str = _FEED_CSP,
) -> Response:
    """A response with an ETag made of `tag`, or `304 Not Modified` when the client has
    that version already."""
    return respond(
        request, Rendered(data, media, _etag(tag), "", None, _headers(filename, csp))
    )


# -- daily overview ---------------------------------------------------------------------


class OverviewFormat(StrEnum):
    HTML = "html"
    GEOJSON = "geojson"


@router.get("/api/v1/roadworks/overview", summary="Published daily overviews")
def list_overviews(pool: Pool) -> list[OverviewDay]:
    """The days with a published overview (newest first), with links to them."""
    with pool.connection() as conn, conn.transaction():
        days = store_overview.list_overviews(conn)
    base = "/api/v1/roadworks/overview"
    return [
        OverviewDay(
            day=d,
            generated_at=at,
            active=active,
            upcoming=upcoming,
            html=f"{base}/{d.isoformat()}",
            geojson=f"{base}/{d.isoformat()}?format=geojson",
        )
        for d, at, active, upcoming in days
    ]


@router.get(
    "/api/v1/roadworks/overview/{day}",
    summary="The daily overview of a day",
    response_class=Response,
    responses={200: {"content": {"text/html": {}, "application/geo+json": {}}}},
)
def get_overview(
    day: date,
    request: Request,
    pool: Pool,
    format: Annotated[OverviewFormat, Query(description="html or geojson")] = (OverviewFormat.HTML),
) -> Response:
    """The newest overview published for the day (`cityops roadworks overview`), exactly
    as it was published."""
    with pool.connection() as conn, conn.transaction():
        snapshot = store_overview.get_overview(conn, day)
    if snapshot is None:
        raise NotFoundError(
            f"no daily overview was published for {day.isoformat()}; see "
            "/api/v1/roadworks/overview for the published days"
        )
    name = f"baustellen-{day.isoformat()}"
    if format is OverviewFormat.GEOJSON:
        data = json.dumps(snapshot.geojson, ensure_ascii=False).encode("utf-8")
        return _cached(
            request,
            data,
            "application/geo+json",
            f"{name}.geojson",
            tag=f"overview-{snapshot.id}.geojson",
        )
    return _cached(
        request,
        snapshot.html.encode("utf-8"),
        "text/html; charset=utf-8",
        None,
        tag=f"overview-{snapshot.id}.html",
        csp=OVERVIEW_CSP,
    )
