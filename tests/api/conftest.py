"""Fixtures for API tests: a connection to insert rows and a client over the same database."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from cityops.api.app import create_app
from cityops.ingest.config import Settings
from cityops.ingest.db import connect
from tests.api.testclient import TestClient


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to this test's database, for inserting fixtures."""
    with connect(db_url, autocommit=True, application_name="cityops-test") as c:
        yield c


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A client of the API over this test's database (lifespan run, pool open)."""
    with TestClient(create_app(settings, db_timeout_s=5.0)) as c:
        yield c
