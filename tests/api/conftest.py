"""Fixtures for API tests: a connection to insert rows and a client over the same database."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from cityops.api.app import create_app
from cityops.ingest.config import Settings
from cityops.ingest.db import connect
from tests.api.authn import operator_headers, with_auth
from tests.api.testclient import TestClient


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to this test's database, for inserting fixtures."""
    with connect(db_url, autocommit=True, application_name="cityops-test") as c:
        yield c


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    """This test's settings with the tests' JWT secret (see tests/api/authn.py)."""
    return with_auth(settings)


@pytest.fixture
def client(auth_settings: Settings) -> Iterator[TestClient]:
    """A client of the API over this test's database (lifespan run, pool open), signed in
    as city staff (dispatcher and admin)."""
    app = create_app(auth_settings, db_timeout_s=5.0)
    with TestClient(app, headers=operator_headers(auth_settings)) as c:
        yield c
