"""Fixtures for roadworks tests: autocommit connections, the street network, a database
seeded once per module with the demo data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from cityops.ingest.db import connect
from cityops.roadworks.seed import SeedReport, seed_demo
from cityops.routing.network import RoadNetwork, load_network
from tests.roadworks.factories import service

ADMIN_URL = os.environ.get("CITYOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
#: The day the demo data is seeded for in these tests (a Monday).
SEED_DAY = date(2025, 3, 3)

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class Seeded:
    url: str
    report: SeedReport


def _url(dbname: str) -> str:
    p = urlsplit(ADMIN_URL)
    return urlunsplit((p.scheme, p.netloc, f"/{dbname}", p.query, p.fragment))


_TABLES = ("roadwork_findings", "roadwork_audit", "roadwork_streets", "roadworks",
           "resurfaced_segments", "roadwork_overviews")


@contextmanager
def _clone(template_db: str) -> Iterator[str]:
    """A database cloned from the migrated template, dropped afterwards."""
    name = f"cityops_rw_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    try:
        yield _url(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@pytest.fixture(scope="module")
def module_db(template_db: str) -> Iterator[str]:
    with _clone(template_db) as url:
        yield url


@pytest.fixture
def rw_url(module_db: str) -> str:
    """URL of a migrated database whose roadworks tables are empty for this test.

    Cloning a database per test (`db_url`) costs about a second; the roadworks tests share
    one clone per module and empty the registry's tables (identities and the reference
    sequence restarted) before each test instead, which isolates them just as well.
    """
    with psycopg.connect(module_db, autocommit=True) as c:
        c.execute(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY CASCADE")
        c.execute("ALTER SEQUENCE roadwork_reference_seq RESTART")
    return module_db


@pytest.fixture
def conn(rw_url: str) -> Iterator[Conn]:
    """An autocommit connection to the emptied registry of this test."""
    with connect(rw_url, autocommit=True, application_name="cityops-test") as c:
        yield c


@pytest.fixture(scope="session")
def network() -> RoadNetwork:
    return load_network()


@pytest.fixture(scope="module")
def seeded(template_db: str, network: RoadNetwork) -> Iterator[Seeded]:
    """A database with the demo data for SEED_DAY, shared by the tests of a module
    (which only read it)."""
    with _clone(template_db) as url:
        with connect(url, autocommit=True) as c:
            report = seed_demo(c, service(), network, SEED_DAY)
        yield Seeded(url, report)
