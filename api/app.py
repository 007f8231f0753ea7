"""The data-plane HTTP API: health, bins with their latest state, readings, devices, stats.

`create_app(settings)` builds the FastAPI application; the connection pool is opened in its
lifespan, so building the app touches no database. Endpoints are thin: parsing lives in
`cityops.api.schemas`, SQL in `cityops.api.repository`, and every error becomes a JSON
body `{"error", "message", "details"}` in `_install_error_handlers`, the only place that
knows HTTP status codes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from cityops.api import registry, roadworks, routes, traffic, trucks
from cityops.api.auth import current_principal, require_roles
from cityops.api.credentials import Authenticator
from cityops.api.docs import install_docs
from cityops.api.errors import (
    ApiError,
    BrokerUnavailableError,
    DatabaseUnavailableError,
    ForbiddenError,
    InvalidParameterError,
    NotFoundError,
    PreconditionFailedError,
    PreconditionRequiredError,
    RecordInvalidError,
)
from cityops.api.limits import (
    BodySizeLimit,
    TokenBucketLimiter,
    parse_networks,
    public_rate_limit,
)
from cityops.api.mqtt import ApiPublisher
from cityops.api.repository import BinFilter, Repository, open_pool
from cityops.api.schemas import (
    BinOut,
    BinPage,
    BucketName,
    DeviceKind,
    DeviceOut,
    DevicePage,
    DeviceState,
    ErrorBody,
    FillBucketOut,
    Fraction,
    HealthOut,
    ReadingOut,
    ReadingsOut,
    StatsOut,
    Text,
    choose_bucket,
    cursor_time,
    decode_cursor,
    encode_cursor,
    parse_bbox,
    resolve_range,
)
from cityops.api.security import (
    AuthConfig,
    AuthProviderUnavailableError,
    RateLimitedError,
    TokenVerifier,
    UnauthenticatedError,
)
from cityops.api.traffic_control import router as traffic_control_router
from cityops.ingest.city import load_city
from cityops.ingest.config import Settings
from cityops.roadworks.errors import (
    DuplicateReference,
    InvalidPayload,
    InvalidState,
    NotPermitted,
    PayloadTooLarge,
    RoadworksError,
)
from cityops.roadworks.errors import NotFound as RoadworksNotFound
from cityops.traffic.errors import TrafficError, UnknownController

__all__ = ["DEFAULT_DEVICE_STALE_AFTER", "create_app"]

logger = logging.getLogger(__name__)

DEFAULT_DEVICE_STALE_AFTER = timedelta(minutes=15)

# The one mapping from error classes to HTTP status codes (most specific first): the API's
# own errors and the roadworks registry's (which carry the same code/message/details).
_STATUS: tuple[tuple[type[ApiError] | type[RoadworksError] | type[TrafficError], int], ...] = (
    (NotFoundError, 404),
    (UnauthenticatedError, 401),
    (ForbiddenError, 403),
    (RateLimitedError, 429),
    (AuthProviderUnavailableError, 503),
    (InvalidParameterError, 422),
    (RecordInvalidError, 422),
    (PreconditionFailedError, 412),
    (PreconditionRequiredError, 428),
    (DatabaseUnavailableError, 503),
    (BrokerUnavailableError, 503),
    (RoadworksNotFound, 404),
    (PayloadTooLarge, 413),
    (InvalidPayload, 422),  # also InvalidGeometry, InvalidPeriod
    (NotPermitted, 403),
    (InvalidState, 409),  # IllegalTransition, NotEditable, StaleVersion, obsolete finding
    (DuplicateReference, 409),
    (UnknownController, 404),
)

# Added to the endpoints that need a login.
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorBody,
        "description": "no, invalid, expired or revoked credentials (with WWW-Authenticate)",
    },
    403: {"model": ErrorBody, "description": "the caller's role may not do this"},
}
_PUBLIC_RESPONSES: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorBody, "description": "rate limit of the client address (Retry-After)"},
}

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown id"},
    413: {"model": ErrorBody, "description": "request body over the limit"},
    422: {"model": ErrorBody, "description": "invalid parameters, with one detail per field"},
    503: {"model": ErrorBody, "description": "database unreachable"},
}


def create_app(
    settings: Settings,
    *,
    device_stale_after: timedelta = DEFAULT_DEVICE_STALE_AFTER,
    db_timeout_s: float = 5.0,
) -> FastAPI:
    """The API over the database in `settings`.

    `device_stale_after`: silence after which a device counts as offline.
    `db_timeout_s`: how long a request waits for a database connection before a 503.
    """
    if device_stale_after <= timedelta(0):
        raise ValueError("device_stale_after must be positive")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = open_pool(settings.database_url, timeout_s=db_timeout_s)
        app.state.repository = Repository(pool)
        app.state.pool = pool
        app.state.publisher = ApiPublisher(settings)
        app.state.publisher.start()
        logger.info("API using database %s", settings.redacted_database_url())
        try:
            yield
        finally:
            app.state.publisher.stop()
            pool.close()

    app = FastAPI(
        title="cityops API",
        version="0.1.0",
        summary="The cityops city platform: bins and devices, truck routes, roadworks "
        "(public search, map and open-data feeds, editing), traffic signal measures and "
        "adaptive control.",
        description="Times are UTC (ISO 8601 with `Z`); fields ending in `_local` give "
        "Europe/Berlin wall-clock time for display. Lists are paginated with an opaque "
        "`cursor`: pass the `next_cursor` of one page to get the next.",
        lifespan=lifespan,
        responses=_ERROR_RESPONSES,
        # no CDN: /docs with its assets from the app itself, no ReDoc (api/docs.py)
        docs_url=None,
        redoc_url=None,
    )
    app.state.device_stale_after = device_stale_after
    app.state.topic_prefix = settings.topic_prefix
    _install_security(app, settings)
    _install_error_handlers(app)
    _add_routes(app)
    # Who may call what (docs/operations.md, "Authentication and roles"; every route is in
    # tests/api/test_authz_matrix.py). Per-resource rules (a truck's own route, an editor's
    # own organisation) are checked inside the endpoints with the helpers of api/auth.py.
    login = [Depends(current_principal)]
    dispatch = [Depends(require_roles("dispatcher", "admin"))]
    public = [Depends(public_rate_limit)]
    app.include_router(trucks.router, dependencies=login, responses=_AUTH_RESPONSES)
    app.include_router(routes.router, dependencies=dispatch, responses=_AUTH_RESPONSES)
    app.state.city = load_city(settings)
    admins = [Depends(require_roles("admin"))]
    app.include_router(registry.router, dependencies=admins, responses=_AUTH_RESPONSES)
    roadworks.install(
        app,
        app.state.city,
        public=public,
        login=login,
        public_responses=_PUBLIC_RESPONSES,
        auth_responses=_AUTH_RESPONSES,
    )
    # reading control modes: traffic readers; switching: checked in the route (engineer, admin)
    traffic_readers = [Depends(require_roles("traffic_engineer", "dispatcher", "admin"))]
    app.include_router(
        traffic_control_router, dependencies=traffic_readers, responses=_AUTH_RESPONSES
    )
    # roles checked by traffic.require_traffic_reader
    app.include_router(traffic.router, dependencies=login, responses=_AUTH_RESPONSES)
    roadworks.mount_static(app)
    install_docs(app)
    return app


def _install_security(app: FastAPI, settings: Settings) -> None:
    """Authentication, the public rate limit, the body size limit and CORS.

    Raises ValueError (refusing to start) for an unusable auth configuration; weak JWT
    secrets are already refused when the settings are read.
    """
    config = AuthConfig.from_settings(settings)
    app.state.authenticator = Authenticator(TokenVerifier(config))
    app.state.stream_recheck_s = settings.api_stream_recheck_s
    if not config.accepts_tokens:
        logger.warning(
            "no CITYOPS_AUTH_JWT_SECRET, CITYOPS_AUTH_JWKS_URL or CITYOPS_AUTH_PUBLIC_KEY: "
            "bearer tokens are refused, only API keys authenticate"
        )
    app.state.rate_limiter = TokenBucketLimiter(
        settings.api_rate_limit_per_s,
        settings.api_rate_limit_burst,
        parse_networks(settings.api_rate_limit_exempt),
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    origins = [o.strip() for o in settings.api_cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=False,  # credentials travel in headers, never cookies
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "If-Match",
                "If-None-Match",
                "Last-Event-ID",
            ],
            expose_headers=["ETag", "Location", "Retry-After", "WWW-Authenticate"],
            max_age=600,
        )


def _repository(request: Request) -> Repository:
    repo: Repository = request.app.state.repository
    return repo


Repo = Annotated[Repository, Depends(_repository)]
Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page")]


def _add_routes(app: FastAPI) -> None:
    # Bins and their readings: the dispatchers who plan collections (and admins). Devices
    # and counts: also traffic engineers, whose signal controllers are devices too.
    bins = [Depends(require_roles("dispatcher", "admin"))]
    fleet = [Depends(require_roles("dispatcher", "traffic_engineer", "admin"))]
    auth = _AUTH_RESPONSES

    @app.get(
        "/health",
        tags=["health"],
        dependencies=[Depends(public_rate_limit)],
        responses=_PUBLIC_RESPONSES,
    )
    def health(repo: Repo) -> HealthOut:
        """Liveness and database reachability; 503 when the database cannot be used."""
        mode = repo.storage_mode()
        return HealthOut(storage_mode=mode.value)

    @app.get("/api/v1/bins", tags=["bins"], dependencies=bins, responses=auth)
    def list_bins(
        repo: Repo,
        min_fill: Annotated[
            float | None, Query(ge=0, le=100, description="only bins at least this full (%)")
        ] = None,
        fraction: Annotated[Fraction | None, Query(description="waste fraction")] = None,
        district: Annotated[Text | None, Query(max_length=200)] = None,
        bbox: Annotated[
            str | None,
            Query(
                description="min_lon,min_lat,max_lon,max_lat (WGS84)",
                examples=["13.30,52.45,13.50,52.55"],
            ),
        ] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> BinPage:
        """Bins with their latest state, in bin_id order."""
        filt = BinFilter(
            min_fill=min_fill,
            fraction=fraction,
            district=district,
            bbox=parse_bbox(bbox) if bbox is not None else None,
        )
        after = decode_cursor("bins", cursor, 1)[0] if cursor else None
        rows = repo.list_bins(filt, after=after, limit=limit + 1)
        page = rows[:limit]
        more = len(rows) > limit
        return BinPage(
            items=[BinOut.from_row(r) for r in page],
            next_cursor=encode_cursor("bins", [page[-1].bin_id]) if more else None,
        )

    @app.get("/api/v1/bins/{bin_id}", tags=["bins"], dependencies=bins, responses=auth)
    def get_bin(repo: Repo, bin_id: Annotated[Text, Path(max_length=200)]) -> BinOut:
        """One bin with its latest state."""
        return BinOut.from_row(repo.get_bin(bin_id))

    @app.get("/api/v1/bins/{bin_id}/readings", tags=["bins"], dependencies=bins, responses=auth)
    def bin_readings(
        repo: Repo,
        bin_id: Annotated[Text, Path(max_length=200)],
        from_: Annotated[
            datetime | None,
            Query(
                alias="from",
                description="start (inclusive), ISO 8601 with offset; default: 24 h before `to`",
            ),
        ] = None,
        to: Annotated[
            datetime | None,
            Query(description="end (exclusive), ISO 8601 with offset; default: now"),
        ] = None,
        bucket: Annotated[
            BucketName | None,
            Query(
                description="raw, 15m, 1h or 1d (Berlin days); default: raw up to 2 days, else 1h"
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=10_000, description="raw readings per page")] = 1000,
        cursor: Cursor = None,
    ) -> ReadingsOut:
        """Fill readings of one bin over a time range, raw or as avg/min/max per bucket."""
        span = resolve_range(from_, to, datetime.now(UTC))
        chosen = choose_bucket(bucket, span)
        if chosen == "raw":
            after = _reading_cursor(cursor) if cursor else None
            rows = repo.raw_readings(bin_id, span.start, span.end, after=after, limit=limit + 1)
            page = rows[:limit]
            more = len(rows) > limit
            return ReadingsOut(
                bin_id=bin_id,
                from_=span.start,
                to=span.end,
                bucket="raw",
                readings=[ReadingOut.from_row(r) for r in page],
                next_cursor=encode_cursor("readings", [page[-1].ts.isoformat()]) if more else None,
            )
        if cursor:
            raise InvalidParameterError("cursor", "only raw readings are paginated")
        buckets = repo.bucketed_readings(bin_id, span.start, span.end, chosen)
        return ReadingsOut(
            bin_id=bin_id,
            from_=span.start,
            to=span.end,
            bucket=chosen,
            buckets=[FillBucketOut.from_row(b) for b in buckets],
        )

    @app.get("/api/v1/devices", tags=["devices"], dependencies=fleet, responses=auth)
    def list_devices(
        request: Request,
        repo: Repo,
        kind: Annotated[DeviceKind | None, Query()] = None,
        state: Annotated[
            DeviceState | None,
            Query(description="online, offline (reported or silent too long) or unknown"),
        ] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> DevicePage:
        """Registered devices with their online/offline state."""
        stale: timedelta = request.app.state.device_stale_after
        key = decode_cursor("devices", cursor, 2) if cursor else None
        rows = repo.list_devices(
            kind=kind,
            state=state,
            stale_after=stale,
            after=(key[0], key[1]) if key else None,
            limit=limit + 1,
        )
        page = rows[:limit]
        more = len(rows) > limit
        return DevicePage(
            items=[DeviceOut.from_row(r) for r in page],
            next_cursor=encode_cursor("devices", [page[-1].kind, page[-1].device_id])
            if more
            else None,
            stale_after_s=int(stale.total_seconds()),
        )

    @app.get("/api/v1/stats", tags=["stats"], dependencies=fleet, responses=auth)
    def stats(repo: Repo) -> StatsOut:
        """Counts for the demo: bins, devices, time-series rows, dead letters by reason."""
        return StatsOut.from_stats(repo.stats())


def _reading_cursor(cursor: str) -> datetime:
    (text,) = decode_cursor("readings", cursor, 1)
    return cursor_time(text)


# -- errors ---------------------------------------------------------------------------


def _error(
    status: int, code: str, message: str, details: list[Mapping[str, object]] | None = None
) -> JSONResponse:
    body = {"error": code, "message": message, "details": list(details or [])}
    return JSONResponse(status_code=status, content=body)


def _status_of(exc: ApiError | RoadworksError | TrafficError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def _error_details(exc: ApiError | RoadworksError | TrafficError) -> list[Mapping[str, object]]:
    """`exc.details` in the documented `ErrorDetail` shape: each has a location, a field and
    a message (further keys, such as a refused transition's allowed targets, are kept).

    The roadworks registry knows no HTTP: its field problems are in the request body, its
    other details (a refused transition) concern the request as a whole; a detail without
    a message of its own carries the error's.
    """
    location = "body" if isinstance(exc, InvalidPayload) else "request"
    out: list[Mapping[str, object]] = []
    for detail in exc.details:
        item = dict(detail)
        item.setdefault("location", location)
        item.setdefault("field", item["location"])
        item.setdefault("message", exc.message)
        out.append(item)
    return out


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError | RoadworksError | TrafficError)
        status = _status_of(exc)
        if status >= 500:
            logger.warning("%s %s: %s", request.method, request.url.path, exc.message)
        elif status in (401, 403):
            logger.info(
                "%s %s refused (%d): %s", request.method, request.url.path, status, exc.message
            )
        response = _error(status, exc.code, exc.message, _error_details(exc))
        response.headers.update(getattr(exc, "headers", None) or {})
        return response

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details: list[Mapping[str, object]] = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ())]
            location = loc[0] if loc else "request"
            field = ".".join(loc[1:]) or location
            message = str(err.get("msg", "")).removeprefix("Value error, ")
            kind = str(err.get("type", ""))
            raw = err.get("input")
            if kind.startswith("datetime") and isinstance(raw, str) and " " in raw:
                message += " (a '+' in a URL must be written as %2B)"
            details.append({"location": location, "field": field, "message": message, "type": kind})
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        return _error(422, "validation_error", f"invalid request: {summary}", details)

    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return _error(
            503, DatabaseUnavailableError.code, "the database is unreachable or too slow; try again"
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        code = codes.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.url.path}"
        response = _error(exc.status_code, code, message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "internal error; the cause is in the server log")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RoadworksError, api_error)
    app.add_exception_handler(TrafficError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(PoolTimeout, database_error)
    app.add_exception_handler(psycopg.OperationalError, database_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
