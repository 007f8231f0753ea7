"""The roadworks registry over HTTP: the public search, details and map page, the open
data (feeds and daily overviews) and the editing API for promoters and city staff.

* `context.py` - `RoadworksApi`, what every roadworks route depends on, and the
  parameters the public routes share;
* `public.py` - `GET /api/v1/roadworks[/{reference}]` and the map page `/roadworks`;
* `feeds.py` - the open-data feeds and the published daily overviews;
* `manage.py` - the editing API under `/api/v1/roadworks/manage`;
* `schemas.py` - the response and request models; `public_sql.py` - a public work
  rendered as JSON by PostgreSQL for the search;
* `cache.py` - rendered public responses, kept per data version of the registry;
* `static/`, `templates/` - the map page.

`install` adds the routes to the app (who may call what is the app's decision, handed in
as dependencies), `mount_static` the map page's files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.params import Depends
from fastapi.staticfiles import StaticFiles

from cityops.api.roadworks import feeds, manage
from cityops.api.roadworks import public as public_routes
from cityops.api.roadworks.context import LEAFLET_DIR, STATIC_DIR, RoadworksApi
from cityops.ingest.city import City

__all__ = ["install", "mount_static"]


def install(
    app: FastAPI,
    city: City,
    *,
    public: Sequence[Depends],
    login: Sequence[Depends],
    public_responses: dict[int | str, dict[str, Any]],
    auth_responses: dict[int | str, dict[str, Any]],
) -> None:
    """The roadworks routes of `city` on `app`: the public and open-data routes with the
    `public` dependencies, the editing API with `login`.

    Raises ConfigError for a bad `CITYOPS_ROADWORKS_*` configuration."""
    app.state.roadworks = RoadworksApi.for_city(city)
    # first: "overview" is no work's reference
    app.include_router(feeds.router, dependencies=public, responses=public_responses)
    app.include_router(public_routes.router, dependencies=public, responses=public_responses)
    app.include_router(manage.router, dependencies=login, responses=auth_responses)


def mount_static(app: FastAPI) -> None:
    """Leaflet and the map page's own CSS and JavaScript, under /static."""
    app.mount("/static/leaflet", StaticFiles(directory=LEAFLET_DIR), name="leaflet")
    app.mount("/static/roadworks", StaticFiles(directory=STATIC_DIR), name="roadworks-static")
