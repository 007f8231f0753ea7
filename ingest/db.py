"""Database connections and the forward-only migration runner.

Migrations are the SQL files in `cityops/ingest/migrations`, applied in version order and
recorded in `cityops_migrations` with a checksum. A file named `NNNN_name.sql` applies in
both storage modes; `NNNN_name.timescale.sql` and `NNNN_name.plain.sql` are the two
variants of one version, chosen by the storage mode. The mode is decided once, on the first
migration of a database (TimescaleDB when the extension can be created, plain PostgreSQL
otherwise, or as forced by `CITYOPS_DB_MODE`), and recorded so later migrations agree.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources

import psycopg
from psycopg import sql

__all__ = [
    "Migration",
    "MigrationError",
    "MigrationReport",
    "StorageMode",
    "connect",
    "ensure_database",
    "load_migrations",
    "migrate",
    "storage_mode",
]

logger = logging.getLogger(__name__)

_FILE_RE = re.compile(
    r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)(?:\.(?P<mode>timescale|plain))?\.sql$"
)
_LOCK_KEY = 0x6369_7479_6F70  # "cityop": serialises concurrent `db migrate` runs


class StorageMode(StrEnum):
    TIMESCALE = "timescale"
    PLAIN = "plain"


class MigrationError(Exception):
    """A migration could not be applied, or the recorded history does not match the files."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    mode: StorageMode | None  # None: applies in both modes

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(slots=True)
class MigrationReport:
    mode: StorageMode
    applied: list[str] = field(default_factory=list)
    already: int = 0


def connect(
    url: str, *, autocommit: bool = False, application_name: str = "cityops"
) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection with UTC as the session time zone."""
    conn = psycopg.connect(url, autocommit=autocommit, application_name=application_name)
    conn.execute("SET TIME ZONE 'UTC'")
    if not autocommit:
        conn.commit()
    return conn


def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it does not exist; True when it was created."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    dbname = str(info.get("dbname") or "")
    if not dbname:
        raise MigrationError(f"database URL names no database: {url}")
    admin = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        logger.info("created database %s", dbname)
        return True


def load_migrations() -> list[Migration]:
    """Every migration file shipped with the package, sorted by version and mode."""
    found: list[Migration] = []
    for entry in resources.files("cityops.ingest.migrations").iterdir():
        m = _FILE_RE.match(entry.name)
        if not m:
            continue
        mode = StorageMode(m["mode"]) if m["mode"] else None
        found.append(Migration(int(m["version"]), m["name"], entry.read_text("utf-8"), mode))
    found.sort(key=lambda mig: (mig.version, mig.mode or ""))
    by_version: dict[int, list[Migration]] = {}
    for mig in found:
        by_version.setdefault(mig.version, []).append(mig)
    for version, migs in by_version.items():
        modes = {mig.mode for mig in migs}
        if len(migs) > 1 and modes != {StorageMode.TIMESCALE, StorageMode.PLAIN}:
            raise MigrationError(f"version {version:04d} needs one common file or both variants")
        if len(migs) == 1 and migs[0].mode is not None:
            raise MigrationError(f"version {version:04d} has only a {migs[0].mode} variant")
    return found


def _decide_mode(conn: psycopg.Connection[tuple[object, ...]], requested: str) -> StorageMode:
    if requested == StorageMode.PLAIN:
        return StorageMode.PLAIN
    available = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    preloaded = conn.execute(
        "SELECT 'timescaledb' = ANY(string_to_array("
        "replace(current_setting('shared_preload_libraries'), ' ', ''), ','))"
    ).fetchone()
    if available and not (preloaded and preloaded[0]):
        # CREATE EXTENSION without the preload is FATAL: it ends the session, not just the
        # statement, so it is never tried.
        if requested == StorageMode.TIMESCALE:
            raise MigrationError(
                "TimescaleDB requested (CITYOPS_DB_MODE=timescale) but not preloaded: add "
                "'timescaledb' to shared_preload_libraries and restart PostgreSQL"
            )
        logger.warning(
            "timescaledb is installed but not in shared_preload_libraries; using plain mode"
        )
        return StorageMode.PLAIN
    if available:
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            return StorageMode.TIMESCALE
        except psycopg.Error as exc:
            if requested == StorageMode.TIMESCALE:
                raise MigrationError(f"TimescaleDB requested but not usable: {exc}") from exc
            logger.warning("timescaledb is installed but cannot be created (%s); using plain", exc)
            return StorageMode.PLAIN
    if requested == StorageMode.TIMESCALE:
        raise MigrationError("TimescaleDB requested (CITYOPS_DB_MODE=timescale) but not installed")
    return StorageMode.PLAIN


def storage_mode(conn: psycopg.Connection[tuple[object, ...]]) -> StorageMode | None:
    """The mode recorded for this database, or None before the first migration."""
    row = conn.execute("SELECT to_regclass('cityops_schema_info')").fetchone()
    if not row or row[0] is None:
        return None
    mode = conn.execute("SELECT storage_mode FROM cityops_schema_info").fetchone()
    return StorageMode(str(mode[0])) if mode else None


def migrate(url: str, *, mode: str = "auto") -> MigrationReport:
    """Apply pending migrations; safe to run again and from several processes at once."""
    if mode not in ("auto", "plain", "timescale"):
        raise MigrationError(f"mode must be auto, plain or timescale, not {mode!r}")
    migrations = load_migrations()
    with connect(url, autocommit=True, application_name="cityops-migrate") as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            return _migrate_locked(conn, migrations, mode)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _migrate_locked(
    conn: psycopg.Connection[tuple[object, ...]], migrations: list[Migration], requested: str
) -> MigrationReport:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS cityops_migrations (
            version     integer PRIMARY KEY,
            name        text NOT NULL,
            mode        text,
            checksum    text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS cityops_schema_info (
            singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            storage_mode  text NOT NULL CHECK (storage_mode IN ('timescale', 'plain')),
            decided_at    timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    mode = storage_mode(conn)
    if mode is None:
        mode = _decide_mode(conn, requested)
        conn.execute("INSERT INTO cityops_schema_info (storage_mode) VALUES (%s)", (mode.value,))
    elif requested != "auto" and requested != mode:
        raise MigrationError(f"database is in {mode} mode; cannot switch to {requested}")
    logger.info("storage mode: %s", mode)

    applied = {
        int(str(v)): str(c)
        for v, c in conn.execute("SELECT version, checksum FROM cityops_migrations").fetchall()
    }
    report = MigrationReport(mode=mode)
    for mig in migrations:
        if mig.mode is not None and mig.mode != mode:
            continue
        if mig.version in applied:
            if applied[mig.version] != mig.checksum:
                raise MigrationError(
                    f"migration {mig.version:04d}_{mig.name} was changed after it was applied; "
                    "migrations are forward-only: add a new one instead"
                )
            report.already += 1
            continue
        label = f"{mig.version:04d}_{mig.name}" + (f" ({mig.mode})" if mig.mode else "")
        try:
            with conn.transaction():
                conn.execute(mig.sql.encode())
                conn.execute(
                    "INSERT INTO cityops_migrations (version, name, mode, checksum) "
                    "VALUES (%s, %s, %s, %s)",
                    (mig.version, mig.name, mig.mode.value if mig.mode else None, mig.checksum),
                )
        except psycopg.Error as exc:
            raise MigrationError(f"migration {label} failed: {exc}") from exc
        logger.info("applied migration %s", label)
        report.applied.append(label)
    return report
