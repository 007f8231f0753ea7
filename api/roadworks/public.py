"""The public side of the roadworks registry for citizens: search, details and the map
page. No login: only public works (approved, scheduled or in progress, public flag set)
and their public texts are ever shown.

* `GET /api/v1/roadworks`: search by bbox, days (`from`/`to`, Europe/Berlin), street or
  free text, sector, impact; paginated with an opaque cursor;
* `GET /api/v1/roadworks/{reference}`: one public work;
* `GET /roadworks`, `GET /roadworks/{reference}`: the map page (the feeds link a work's
  public page as `{public_base_url}/roadworks/{reference}`).

What every roadworks route depends on (`RoadworksApi`) is in `context.py`; feeds and
daily overviews are in `feeds.py`, the editing API in `manage.py`.
"""

from __future__ import annotations

import html
import json
import logging
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

import psycopg
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout
from pydantic import StringConstraints

from cityops.api.errors import InvalidParameterError
from cityops.api.roadworks.cache import Fragment, Rendered, etag_of
from cityops.api.roadworks.context import (
    BBoxParam,
    Ctx,
    Pool,
    Reference,
    RoadworksApi,
    StreetParam,
    parse_area,
    parse_street,
    respond,
)
from cityops.api.roadworks.public_sql import PUBLIC_WORK_SQL, public_work_json
from cityops.api.roadworks.schemas import Impact, PublicPage, PublicWork
from cityops.api.schemas import (
    STORABLE,
    ErrorBody,
    cursor_int,
    cursor_time,
    decode_cursor,
    encode_cursor,
)
from cityops.roadworks import store_public as repo
from cityops.roadworks.errors import RoadworkNotFoundError
from cityops.roadworks.geometry import BBox
from cityops.roadworks.labels import street_key
from cityops.roadworks.model import Period, Roadwork, Sector
from cityops.roadworks.overview import day_window
from cityops.roadworks.search_index import PublicIndex
from cityops.roadworks.store_sql import Conn
from cityops.roadworks.validation import LIMITS

__all__ = ["DEFAULT_PAGE", "router"]

logger = logging.getLogger(__name__)

_PAGE: Final = Path(__file__).resolve().parent / "templates" / "karte.html"

_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no public work with that reference"},
    422: {"model": ErrorBody, "description": "invalid parameters, one detail per field"},
}
router = APIRouter(tags=["roadworks (public)"], responses=_RESPONSES)


# -- search -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Search:
    window: Period
    bbox: BBox | None
    street: str | None
    sectors: frozenset[Sector]
    impacts: frozenset[Impact]
    text: str | None


def _matches_text(row: repo.PublicText, text: str) -> bool:
    """The free-text filter: a street name (folded, see street_key), or the title, the
    reference or the public text (case-insensitive)."""
    key, folded = street_key(text), text.casefold()
    texts = (row.title, row.reference, (row.public_text or row.title).strip())
    return any(key in street_key(n) for n in row.road_names) or any(
        folded in t.casefold() for t in texts
    )


def _search_text(
    conn: Conn,
    s: _Search,
    text: str,
    *,
    limit: int,
    after: tuple[datetime, int] | None,
    now: datetime,
) -> repo.PublicKeys:
    """A page of the search with a free text `q`: the database filters; the text is
    matched here (Python's case folding) on the texts of the matching works; then the
    database orders, counts and cuts the page of the works that matched."""
    query = repo.PublicSearch(
        window=s.window,
        now=now,
        bbox=s.bbox,
        street=s.street,
        sectors=s.sectors,
        impacts=frozenset(i.value for i in s.impacts),
    )
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        found = [r.id for r in repo.search_public_texts(conn, query) if _matches_text(r, text)]
        return repo.search_public_keys(conn, found, limit=limit, after=after)


def _search(
    ctx: RoadworksApi,
    pool: ConnectionPool,
    conn: Conn,
    version: str,
    s: _Search,
    *,
    limit: int,
    after: tuple[datetime, int] | None,
    now: datetime,
) -> repo.PublicKeys:
    """A page of public works on site during the window, by effective start and id: from
    the public works in memory (`PublicIndex`, loaded again when the data version has
    changed), or with a free text from the database."""
    if s.text:
        return _search_text(conn, s, s.text, limit=limit, after=after, now=now)
    index = _public_index(ctx, pool, conn, version)
    b = s.bbox
    page = index.search(
        window_start=s.window.start,
        window_end=s.window.end,
        now=now,
        bbox=(b.min_lon, b.min_lat, b.max_lon, b.max_lat) if b is not None else None,
        street=s.street,
        sectors=frozenset(x.value for x in s.sectors),
        impacts=frozenset(i.value for i in s.impacts),
        limit=limit,
        after=after,
    )
    return repo.PublicKeys(
        [repo.PublicKey(w.id, w.key, w.start, w.overdue_from) for w in page.works],
        page.more,
        page.total,
        index.version,
    )


def _public_index(
    ctx: RoadworksApi, pool: ConnectionPool, conn: Conn, version: str
) -> PublicIndex:
    """The public works in memory at `version` or later; one thread loads, the others
    wait for it. Once loaded, the works not rendered yet are rendered in the background
    (`_prerender`), so that searches find them ready."""
    index = ctx.cache.index
    if index is not None and index.version == version:
        return index
    with ctx.cache.lock("public-index"):
        index = ctx.cache.index
        if index is not None and index.version == version:
            return index
        loaded, rows = repo.public_index_rows(conn)
        index = PublicIndex(loaded, rows)
        ctx.cache.index = index
        logger.info("public roadworks index loaded: %d works at version %s", len(index), loaded)
    todo = [(r.id, r.key) for r in rows]
    if ctx.cache.prerender and todo:
        threading.Thread(
            target=_prerender, args=(ctx, pool, todo), daemon=True, name="roadworks-prerender"
        ).start()
    return index


def _prerender(ctx: RoadworksApi, pool: ConnectionPool, todo: list[tuple[int, str]]) -> None:
    """Render the works of `todo` (id, key) that are not kept yet, a batch at a time; one
    such thread at a time. Stops quietly when the database goes away (shutdown)."""
    lock = ctx.cache.lock("prerender")
    if not lock.acquire(blocking=False):
        return
    try:
        kept = ctx.cache.fragments(todo)
        missing = [i for i, _ in todo if i not in kept]
        head, tail = PUBLIC_WORK_SQL
        for k in range(0, len(missing), _PRERENDER_BATCH):
            with pool.connection() as conn:
                rendered = repo.render_public(
                    conn,
                    missing[k : k + _PRERENDER_BATCH],
                    head=head,
                    tail=tail,
                    params={"base_url": ctx.settings.public_base_url},
                )
            for work_id, (key, h, t) in rendered.items():
                ctx.cache.keep_fragment(work_id, Fragment(key, h, t))
        logger.info("public roadworks: %d works rendered ahead", len(missing))
    except (psycopg.Error, PoolClosed, PoolTimeout) as exc:
        logger.info("public roadworks: rendering ahead stopped (%s)", exc)
    finally:
        lock.release()


_PRERENDER_BATCH = 250


def _render_search(
    ctx: RoadworksApi,
    conn: Conn,
    keys: repo.PublicKeys,
    *,
    now: datetime,
    first: date,
    last: date | None,
    window: Period,
) -> tuple[Rendered, bool]:
    """The page as JSON bytes (`PublicPage`) from the kept fragments of its works, the
    missing ones rendered by PostgreSQL; and whether it may be kept (False when a work
    changed since the page was searched: then its newer content is sent)."""
    frags = ctx.cache.fragments((k.id, k.key) for k in keys.works)
    missing = [k.id for k in keys.works if k.id not in frags]
    consistent = True
    if missing:
        head, tail = PUBLIC_WORK_SQL
        rendered = repo.render_public(
            conn, missing, head=head, tail=tail, params={"base_url": ctx.settings.public_base_url}
        )
        wanted = {k.id: k.key for k in keys.works}
        for work_id, (key, h, t) in rendered.items():
            frags[work_id] = Fragment(key, h, t)
            ctx.cache.keep_fragment(work_id, frags[work_id])
            consistent &= key == wanted[work_id]
        consistent &= len(rendered) == len(missing)
    works = [k for k in keys.works if k.id in frags]  # a work deleted meanwhile: left out
    items = ",".join(
        public_work_json(
            frags[k.id].head, frags[k.id].tail, k.overdue_from is not None and k.overdue_from <= now
        )
        for k in works
    )
    cursor = (
        encode_cursor("roadworks", [works[-1].start.isoformat(), str(works[-1].id)])
        if keys.more and works
        else None
    )
    body = (
        f'{{"items":[{items}],"total":{keys.total},"next_cursor":{json.dumps(cursor)},'
        f'"from_date":"{first.isoformat()}","to_date":'
        f"{json.dumps(last.isoformat()) if last else 'null'}}}"
    ).encode()
    # True until the data change or, with time, a work on the page becomes overdue or
    # `now` enters or leaves the window (works in progress count while it contains now).
    changes = [k.overdue_from for k in works if k.overdue_from is not None and k.overdue_from > now]
    changes += [t for t in (window.start, window.end) if t > now]
    return Rendered(
        body,
        "application/json",
        etag_of(body),
        keys.version,
        min(changes, default=None),
        _SEARCH_HEADERS,
    ), consistent


_SEARCH_HEADERS = (("Cache-Control", "no-cache"),)



def _after(cursor: str) -> tuple[datetime, int]:
    start, work_id = decode_cursor("roadworks", cursor, 2)
    return cursor_time(start), cursor_int(work_id)


#: Works per page unless `limit` says otherwise (the map asks for 500, the maximum).
DEFAULT_PAGE: Final = 100

_SEARCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "a page of public works; `ETag` for conditional requests"},
    304: {"description": "unchanged since the ETag given in `If-None-Match`"},
}


#: How far from today a search may look, either way (a year 9999 is a typo, not a plan).
_SEARCH_YEARS = 10


@router.get(
    "/api/v1/roadworks",
    summary="Search public roadworks",
    response_model=PublicPage,
    responses=_SEARCH_RESPONSES,
)
def search_works(
    request: Request,
    ctx: Ctx,
    pool: Pool,
    bbox: BBoxParam = None,
    from_: Annotated[
        date | None, Query(alias="from", description="first day (Europe/Berlin), default today")
    ] = None,
    to: Annotated[
        date | None, Query(description="last day (Europe/Berlin, inclusive); default: open-ended")
    ] = None,
    street: StreetParam = None,
    q: Annotated[
        Annotated[str, StringConstraints(min_length=2, max_length=100), STORABLE] | None,
        Query(description="text in a street name, the title, the reference or the public text"),
    ] = None,
    sector: Annotated[list[Sector] | None, Query(description="one or more sectors")] = None,
    impact: Annotated[
        list[Impact] | None,
        Query(
            description="closure (road closed), restriction (lanes, alternating one-way, "
            "signals) or minor"
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=500, description="page size (the map asks for 500)")
    ] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> Response:
    """Public works on site on at least one of the days searched, by start. A work in
    progress counts until its end is reported, even past its planned end.

    The page is rendered once per state of the registry: repeated searches are answered
    from memory, and with `304 Not Modified` to an `If-None-Match` with its ETag."""
    today = ctx.today()
    for name, day in (("from", from_), ("to", to)):
        if day is not None and abs((day - today).days) > _SEARCH_YEARS * 366:
            raise InvalidParameterError(
                name, f"{day.isoformat()} is more than {_SEARCH_YEARS} years from today"
            )
    first = from_ or today
    if to is not None and to < first:
        raise InvalidParameterError(
            "to", f"the last day {to.isoformat()} is before the first day {first.isoformat()}"
        )
    if to is not None and (to - first).days > 2 * 366:
        raise InvalidParameterError("to", "search at most two years at once")
    start = day_window(first).start
    end = (
        day_window(to).end if to is not None else start + LIMITS.max_duration + timedelta(days=366)
    )
    search = _Search(
        Period(start, end),
        parse_area(bbox),
        parse_street(street),
        frozenset(sector or ()),
        frozenset(impact or ()),
        q,
    )
    after = _after(cursor) if cursor else None
    key = (
        "search",
        first,
        to,
        search.bbox,
        street_key(street) if street else None,
        tuple(sorted(search.sectors)),
        tuple(sorted(search.impacts)),
        q,
        limit,
        after,
    )
    now = ctx.now()
    with pool.connection() as conn:
        version = repo.data_version(conn)
        kept = ctx.cache.response(key)
        if kept is not None and kept.fresh(version, now):
            return respond(request, kept)
        keys = _search(ctx, pool, conn, version, search, limit=limit, after=after, now=now)
        rendered, consistent = _render_search(
            ctx, conn, keys, now=now, first=first, last=to, window=search.window
        )
    if consistent:
        ctx.cache.keep_response(key, rendered)
    return respond(request, rendered)


# -- one work ---------------------------------------------------------------------------


def _public_work(ctx: RoadworksApi, pool: ConnectionPool, reference: str) -> Roadwork:
    with pool.connection() as conn:
        work = ctx.service.get_by_reference(conn, reference)
    if not work.is_public:  # drafts, refused, finished or private works: not for citizens
        raise RoadworkNotFoundError(reference)
    return work


@router.get("/api/v1/roadworks/{reference}", summary="One public roadwork")
def get_work(reference: Reference, ctx: Ctx, pool: Pool) -> PublicWork:
    """What, who, where, until when, detour and contact of a public work."""
    work = _public_work(ctx, pool, reference)
    return PublicWork.of(work, ctx.feed_context(), ctx.now())


# -- map page ---------------------------------------------------------------------------


def _page(ctx: RoadworksApi, selected: str | None) -> HTMLResponse:
    b = ctx.settings.bounds
    config = {
        "api": "/api/v1/roadworks",
        "today": ctx.today().isoformat(),
        "bounds": [[b[1], b[0]], [b[3], b[2]]],
        "tiles": {
            "url": ctx.map.tile_url,
            "attribution": ctx.map.tile_attribution,
            "maxZoom": ctx.map.tile_max_zoom,
        },
        "publisher": ctx.settings.publisher,
        "selected": selected,
    }
    example = ctx.map.search_example
    placeholder = f"z. B. {example}" if example else "Straßenname oder Aktenzeichen"
    text = _template().replace(
        "{{config}}", html.escape(json.dumps(config, ensure_ascii=False), quote=True)
    ).replace("{{search_placeholder}}", html.escape(placeholder, quote=True))
    return HTMLResponse(
        text,
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": _csp(ctx.map.tile_url),
            "X-Content-Type-Options": "nosniff",
        },
    )


@cache
def _template() -> str:
    return _PAGE.read_text(encoding="utf-8")


def _csp(tile_url: str) -> str:
    images = "'self' data:"
    if tile_url.startswith(("https://", "http://")):  # {s}.tile.example.org: any subdomain
        parts = urlsplit(tile_url)
        images += f" {parts.scheme}://{parts.netloc.replace('{s}', '*')}"
    return (
        f"default-src 'self'; img-src {images}; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'self'"
    )


_PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "the map page (German)"},
}


@router.get(
    "/roadworks",
    response_class=HTMLResponse,
    responses=_PAGE_RESPONSES,
    summary="Map of the roadworks (HTML)",
    tags=["roadworks map"],
)
def map_page(ctx: Ctx) -> HTMLResponse:
    """The public map: works by impact colour, a date filter, a street search and a
    detail panel, usable with the keyboard; German."""
    return _page(ctx, None)


@router.get(
    "/roadworks/{reference}",
    response_class=HTMLResponse,
    responses=_PAGE_RESPONSES,
    summary="A roadwork's public page (the map with its details open)",
    tags=["roadworks map"],
)
def work_page(reference: Reference, ctx: Ctx, pool: Pool) -> HTMLResponse:
    """The page the feeds link to: the map with the work's details opened."""
    _public_work(ctx, pool, reference)
    return _page(ctx, reference)
