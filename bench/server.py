"""The API as `cityops api` serves it, for `uvicorn --factory server:app` (bench only).

Database and JWT secret come from the environment (`CITYOPS_DATABASE_URL`,
`CITYOPS_AUTH_JWT_SECRET`), set by `common.ApiProcess` for a benchmark's throwaway
database.
"""

from __future__ import annotations

from fastapi import FastAPI

from cityops.api.app import create_app
from cityops.ingest.config import load_settings


def app() -> FastAPI:
    return create_app(load_settings())
