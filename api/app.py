"""The cityops HTTP API: `create_app(settings)` builds the FastAPI application.

The connection pool is opened in its lifespan, so building the app touches no database.
Here the parts are put together and who may call what is decided; the routes live in
their modules (`data.py`: health, bins, readings, devices, stats; `trucks.py`,
`routes.py`, `registry.py`, the `roadworks/` subpackage, `traffic.py`,
`traffic_control.py`), authentication and limits in `security.py`, and every error
becomes a JSON body `{"error", "message", "details"}` in `errors.py`, the only place that
knows HTTP status codes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import Depends, FastAPI

from cityops.api import data, registry, roadworks, routes, traffic, trucks
from cityops.api.auth import current_principal, require_roles
from cityops.api.docs import install_docs
from cityops.api.errors import install_error_handlers
from cityops.api.limits import public_rate_limit
from cityops.api.mqtt import ApiPublisher
from cityops.api.repository import Repository, open_pool
from cityops.api.schemas import AUTH_RESPONSES, ERROR_RESPONSES, PUBLIC_RESPONSES
from cityops.api.security import install_security
from cityops.api.traffic_control import router as traffic_control_router
from cityops.ingest.city import load_city
from cityops.ingest.config import Settings

__all__ = ["DEFAULT_DEVICE_STALE_AFTER", "create_app"]

logger = logging.getLogger(__name__)

DEFAULT_DEVICE_STALE_AFTER = timedelta(minutes=15)


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
        responses=ERROR_RESPONSES,
        # no CDN: /docs with its assets from the app itself, no ReDoc (api/docs.py)
        docs_url=None,
        redoc_url=None,
    )
    app.state.device_stale_after = device_stale_after
    app.state.topic_prefix = settings.topic_prefix
    install_security(app, settings)
    install_error_handlers(app)
    app.include_router(data.router)
    # Who may call what (docs/operations.md, "Authentication and roles"; every route is in
    # tests/api/test_authz_matrix.py). Per-resource rules (a truck's own route, an editor's
    # own organisation) are checked inside the endpoints with the helpers of api/auth.py.
    login = [Depends(current_principal)]
    dispatch = [Depends(require_roles("dispatcher", "admin"))]
    public = [Depends(public_rate_limit)]
    app.include_router(trucks.router, dependencies=login, responses=AUTH_RESPONSES)
    app.include_router(routes.router, dependencies=dispatch, responses=AUTH_RESPONSES)
    app.state.city = load_city(settings)
    admins = [Depends(require_roles("admin"))]
    app.include_router(registry.router, dependencies=admins, responses=AUTH_RESPONSES)
    roadworks.install(
        app,
        app.state.city,
        public=public,
        login=login,
        public_responses=PUBLIC_RESPONSES,
        auth_responses=AUTH_RESPONSES,
    )
    # reading control modes: traffic readers; switching: checked in the route (engineer, admin)
    traffic_readers = [Depends(require_roles("traffic_engineer", "dispatcher", "admin"))]
    app.include_router(
        traffic_control_router, dependencies=traffic_readers, responses=AUTH_RESPONSES
    )
    # roles checked by traffic.require_traffic_reader
    app.include_router(traffic.router, dependencies=login, responses=AUTH_RESPONSES)
    roadworks.mount_static(app)
    install_docs(app)
    return app
