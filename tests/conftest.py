"""Shared fixtures: a fresh database per test (cloned from a migrated template), the real
Mosquitto of the machine, and private Mosquitto brokers started from deploy/ settings.

Environment: CITYOPS_TEST_PG (admin URL, default postgresql://postgres@127.0.0.1:5432/postgres),
CITYOPS_TEST_MQTT (default mqtt://127.0.0.1:1883) and CITYOPS_TEST_DB_MODE (plain, timescale or
auto, the default: TimescaleDB where the server has it preloaded, plain PostgreSQL otherwise).
The time the suite runs at is `tests.support.clock.NOW` (the `now` fixture).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from cityops.ingest.config import Settings
from cityops.ingest.db import MigrationError, StorageMode, migrate
from tests.support.brokers import MosquittoProcess, start_mosquitto
from tests.support.clock import NOW

# Every service reads a city profile (docs/city.md); the suite runs the demo city's, which
# services refuse unless allowed. A test of another city or of the refusal sets its own.
os.environ.setdefault("CITYOPS_CITY_PROFILE", "demo")
os.environ.setdefault("CITYOPS_ALLOW_DEMO_CITY", "1")

ADMIN_URL = os.environ.get("CITYOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MQTT_URL = os.environ.get("CITYOPS_TEST_MQTT", "mqtt://127.0.0.1:1883")
DB_MODE = os.environ.get("CITYOPS_TEST_DB_MODE", "auto")
REPO = Path(__file__).resolve().parents[1]


def url_with(url: str, *, dbname: str | None = None, user: str | None = None) -> str:
    """The same postgresql:// URL with another database and/or user."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}@{netloc.rsplit('@', 1)[-1]}"
    path = f"/{dbname}" if dbname is not None else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


def _db_url(name: str) -> str:
    return url_with(ADMIN_URL, dbname=name)


def _drop(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def now() -> datetime:
    """The suite's "now" (UTC, whole seconds): build every time a test needs from it."""
    return NOW


def _close_to_connections(name: str) -> None:
    """Keep everyone out of a template, so that CREATE DATABASE ... TEMPLATE can copy it:
    TimescaleDB's job scheduler connects to every database that has the extension."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """A database migrated once per test run in the run's storage mode; tests get copies."""
    if DB_MODE not in ("auto", "plain", "timescale"):
        raise pytest.UsageError(
            f"CITYOPS_TEST_DB_MODE must be plain, timescale or auto, not {DB_MODE!r}"
        )
    name = f"cityops_tmpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        try:
            migrate(_db_url(name), mode=DB_MODE)
        except MigrationError as exc:
            if DB_MODE != "timescale":
                raise
            pytest.skip(f"CITYOPS_TEST_DB_MODE=timescale, but this server cannot: {exc}")
        _close_to_connections(name)
        yield name
    finally:
        _drop(name)


@pytest.fixture(scope="session")
def db_mode(template_db: str) -> StorageMode:
    """The storage mode of this run's databases (what the server actually gave)."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                sql.Identifier(template_db)
            )
        )
    try:
        with psycopg.connect(_db_url(template_db)) as conn:
            row = conn.execute("SELECT storage_mode FROM cityops_schema_info").fetchone()
    finally:
        _close_to_connections(template_db)
    assert row is not None
    return StorageMode(str(row[0]))


@pytest.fixture
def db_url(template_db: str) -> Iterator[str]:
    """URL of a fresh, migrated database for this test only."""
    name = f"cityops_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    try:
        yield _db_url(name)
    finally:
        _drop(name)


@pytest.fixture
def empty_db_url() -> Iterator[str]:
    """URL of a new, empty database (no migrations applied)."""
    name = f"cityops_e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _db_url(name)
    finally:
        _drop(name)


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(db_url: str, topic_prefix: str) -> Settings:
    """Settings pointing at this test's database, the machine's broker and a unique prefix."""
    return Settings(
        database_url=db_url,
        mqtt_url=MQTT_URL,
        topic_prefix=topic_prefix,
        ingest_client_id=f"ingest-{uuid.uuid4().hex[:8]}",
        ingest_metrics_port=0,
        replanner_metrics_port=0,
        traffic_control_metrics_port=0,
        ingest_flush_ms=50,
        ingest_session_expiry_s=120,
    )


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A private Mosquitto with the shipped queueing settings, on a free loopback port."""
    broker = start_mosquitto(tmp_path / "mosquitto", include_dir=REPO / "deploy/mosquitto/conf.d")
    try:
        yield broker
    finally:
        broker.stop()
