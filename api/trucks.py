"""Routes for the truck's tablet: the current route (ETag), a stream of versions (SSE),
and stop events (emptied, skipped) that travel on as MQTT messages like any device's."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import psycopg
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.concurrency import run_in_threadpool

from cityops.api.auth import Principal, current_principal, require_truck
from cityops.api.errors import (
    ApiError,
    AuthProviderUnavailableError,
    InvalidParameterError,
    NotFoundError,
)
from cityops.api.mqtt import ApiPublisher
from cityops.ingest.contract import (
    DEVICE_ID_PATTERN,
    Channel,
    DeviceKind,
    RouteCommand,
    TruckEvent,
    device_topic,
)
from cityops.routing.repository import current_route, current_version

__all__ = ["router"]

logger = logging.getLogger(__name__)

BERLIN = ZoneInfo("Europe/Berlin")
_POLL_S = 1.0
_KEEPALIVE_S = 15.0

router = APIRouter(prefix="/api/v1/trucks", tags=["trucks"])

TruckId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN, description="truck id, e.g. T01")]
PlanDate = Annotated[
    date | None, Query(alias="date", description="plan day (default: today in Europe/Berlin)")
]
Caller = Annotated[Principal, Depends(current_principal)]


def _pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.pool
    return pool


def _publisher(request: Request) -> ApiPublisher:
    publisher: ApiPublisher = request.app.state.publisher
    return publisher


Pool = Annotated[ConnectionPool, Depends(_pool)]


def _today() -> date:
    return datetime.now(BERLIN).date()


def _etag(route: RouteCommand) -> str:
    return _etag_of(route.truck_id, route.plan_date, route.version)


def _etag_of(truck_id: str, plan_date: date, version: int) -> str:
    return f'"{truck_id}:{plan_date.isoformat()}:v{version}"'


def _event_id(route: RouteCommand) -> str:
    """An SSE event id: the plan day and the version (versions start again each day)."""
    return f"{route.plan_date.isoformat()}:{route.version}"


def _resume_after(last_event_id: str | None) -> tuple[date | None, int]:
    """The (plan day, version) a `Last-Event-ID` names: `2026-11-23:3` as this stream
    sends, or a bare version (of the requested day) as earlier versions of it sent."""
    if not last_event_id:
        return None, 0
    day_text, _, version = last_event_id.strip().rpartition(":")
    try:
        day = date.fromisoformat(day_text) if day_text else None
        return day, int(version)
    except ValueError:
        raise InvalidParameterError(
            "Last-Event-ID", "must be an id this stream sent (plan day:version)", location="header"
        ) from None


def _load(pool: ConnectionPool, truck_id: str, day: date) -> RouteCommand | None:
    with pool.connection() as conn:
        return current_route(conn, truck_id, day)


@router.get(
    "/{truck_id}/route",
    response_model=RouteCommand,
    responses={304: {"description": "the route has not changed since the given ETag"}},
)
def get_route(
    truck_id: TruckId,
    pool: Pool,
    caller: Caller,
    response: Response,
    day: PlanDate = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> RouteCommand | Response:
    """The truck's current route version for a day. Send `If-None-Match` with the last
    ETag to get `304 Not Modified` when nothing changed."""
    require_truck(caller, truck_id)
    plan_day = day or _today()
    if if_none_match is not None:
        # A polling tablet usually has the newest version: answer 304 from the version
        # number alone, without loading and validating the whole route.
        with pool.connection() as conn:
            version = current_version(conn, truck_id, plan_day)
        if version is not None:
            etag = _etag_of(truck_id, plan_day, version)
            if etag in [t.strip() for t in if_none_match.split(",")]:
                return Response(status_code=304, headers={"ETag": etag})
    route = _load(pool, truck_id, plan_day)
    if route is None:
        raise NotFoundError(f"no route for truck {truck_id!r} on {plan_day.isoformat()}")
    etag = _etag(route)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "no-cache"
    return route


@router.get("/{truck_id}/route/stream", response_class=StreamingResponse)
async def stream_route(
    truck_id: TruckId,
    request: Request,
    caller: Caller,
    day: PlanDate = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events: an `event: route` with the full route document whenever a new
    version exists (the current one first, unless `Last-Event-ID` already has it), and a
    comment line every 15 s to keep proxies from closing the connection.

    Event ids are `plan day:version`: a tablet that reconnects (EventSource resends the
    last id) gets only newer versions, and one that kept yesterday's id gets today's route.
    Without `date`, the stream follows the day: after midnight it sends the new day's.

    The credentials are checked again every `CITYOPS_API_STREAM_RECHECK_S` (30 s): once the
    token has expired or the API key was revoked, the stream ends with an
    `event: unauthorized` that says why (the tablet signs in again)."""
    require_truck(caller, truck_id)
    pool = _pool(request)
    resume_day, resume_version = _resume_after(last_event_id)
    recheck_s: float = request.app.state.stream_recheck_s

    def still_allowed() -> str | None:
        """Why the stream's credentials no longer hold (expired, revoked, no longer this
        truck's), or None: checked like a new request, with the same headers. When the
        check itself cannot be made (the identity provider or the database is away), the
        stream goes on and the next check decides: an outage must not sign out every
        truck on the road."""
        try:
            principal = request.app.state.authenticator.authenticate(request.headers, pool)
            require_truck(principal, truck_id)
        except (AuthProviderUnavailableError, psycopg.OperationalError, PoolTimeout) as exc:
            logger.warning("route stream of truck %s: credentials not re-checked (%s)",
                           truck_id, exc)
            return None
        except ApiError as exc:
            return exc.message
        return None

    async def events() -> AsyncIterator[str]:
        plan_day: date | None = None
        seen = 0
        quiet = 0.0
        since_check = 0.0
        yield "retry: 3000\n\n"
        while not await request.is_disconnected():
            if since_check >= recheck_s:
                since_check = 0.0
                why = await run_in_threadpool(still_allowed)
                if why is not None:
                    logger.info("route stream of truck %s closed: %s", truck_id, why)
                    data = json.dumps({"error": "unauthenticated", "message": why})
                    yield f"event: unauthorized\ndata: {data}\n\n"
                    return
            today = day or _today()
            if today != plan_day:  # the first poll, or a new day (a stream without date)
                resumed = plan_day is None and resume_day in (None, today)
                seen = resume_version if resumed else 0
                plan_day = today
            route = await run_in_threadpool(_load, pool, truck_id, plan_day)
            if route is not None and route.version > seen:
                seen = route.version
                quiet = 0.0
                yield f"event: route\nid: {_event_id(route)}\ndata: {route.model_dump_json()}\n\n"
            elif quiet >= _KEEPALIVE_S:
                quiet = 0.0
                yield ": keepalive\n\n"
            await asyncio.sleep(_POLL_S)
            quiet += _POLL_S
            since_check += _POLL_S

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/{truck_id}/events", status_code=202)
def post_event(
    truck_id: TruckId, event: TruckEvent, request: Request, caller: Caller
) -> dict[str, str]:
    """A stop event from the tablet (`stop_done` with the time, `stop_skipped` with a
    reason such as "blocked access"). It is published on the truck's MQTT events topic, so
    it is stored and acted on exactly like one sent by the truck's own telematics."""
    require_truck(caller, truck_id)
    if event.kind == "stop_skipped" and not event.reason:
        raise InvalidParameterError("reason", "a skipped stop needs a reason", location="body")
    if event.kind in ("stop_done", "stop_skipped") and not event.bin_id:
        raise InvalidParameterError("bin_id", f"{event.kind} needs the bin_id", location="body")
    prefix = request.app.state.topic_prefix
    topic = device_topic(prefix, DeviceKind.TRUCK, truck_id, Channel.EVENTS)
    payload = json.dumps(event.model_dump(mode="json", exclude_none=True)).encode()
    _publisher(request).publish(topic, payload)
    logger.info("truck %s reported %s %s", truck_id, event.kind, event.bin_id or "")
    return {"status": "accepted", "topic": topic}
