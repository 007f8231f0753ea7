"""The migration runner on a real PostgreSQL, and the TimescaleDB variant's SQL."""

from __future__ import annotations

import psycopg
import pytest
from pglast import parse_sql

from cityops.ingest.db import Migration, MigrationError, StorageMode, load_migrations, migrate


def test_migrations_apply_on_an_empty_database_and_are_idempotent(empty_db_url: str) -> None:
    first = migrate(empty_db_url)
    assert first.mode is StorageMode.PLAIN  # TimescaleDB is not installed on this machine
    assert first.applied and first.already == 0
    second = migrate(empty_db_url)
    assert second.applied == [] and second.already == len(first.applied)
    with psycopg.connect(empty_db_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM cityops_migrations ORDER BY 1")]
        assert versions == sorted({m.version for m in load_migrations()})
        # the views the rest of the code reads exist in this mode too
        for view in ("bin_fill_hourly", "detector_counts_15m", "devices"):
            assert conn.execute("SELECT to_regclass(%s)", (view,)).fetchone() != (None,)


def test_timescale_is_refused_when_not_installed(empty_db_url: str) -> None:
    with pytest.raises(MigrationError, match="not installed"):
        migrate(empty_db_url, mode="timescale")


def test_mode_cannot_change_after_the_first_migration(db_url: str) -> None:
    with pytest.raises(MigrationError, match="plain mode"):
        migrate(db_url, mode="timescale")


def test_a_changed_migration_is_refused(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE cityops_migrations SET checksum = 'x' WHERE version = 1")
    with pytest.raises(MigrationError, match="forward-only"):
        migrate(db_url)


def test_every_version_has_one_common_file_or_both_variants() -> None:
    migrations = load_migrations()
    by_version: dict[int, set[StorageMode | None]] = {}
    for m in migrations:
        by_version.setdefault(m.version, set()).add(m.mode)
    for modes in by_version.values():
        assert modes in ({None}, {StorageMode.PLAIN, StorageMode.TIMESCALE})


@pytest.mark.parametrize("mode", [StorageMode.PLAIN, StorageMode.TIMESCALE])
def test_both_storage_variants_define_the_same_interface(mode: StorageMode) -> None:
    """The TimescaleDB path cannot run here; its SQL is parsed and its interface compared."""
    variant = [m for m in load_migrations() if m.mode is mode]
    assert variant
    text = "\n".join(m.sql for m in variant)
    statements = parse_sql(text)  # raises on a syntax error
    assert statements
    for name in (
        "bin_fill_hourly",
        "detector_counts_15m",
        "cityops_refresh_rollups",
        "cityops_apply_retention",
    ):
        assert name in text
    if mode is StorageMode.TIMESCALE:
        for call in (
            "create_hypertable",
            "add_compression_policy",
            "add_retention_policy",
            "timescaledb.continuous",
            "compress_segmentby",
        ):
            assert call in text


def test_rollups_in_plain_mode_aggregate_readings(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO bin_readings (bin_id, ts, sensor_id, fill_pct) VALUES "
            "('B1', '2026-11-20 10:05Z', 'S', 10), ('B1', '2026-11-20 10:35Z', 'S', 30), "
            "('B1', '2026-11-20 11:05Z', 'S', 50)"
        )
        conn.execute(
            "INSERT INTO signal_events (controller_id, ts, code, param) VALUES "
            "('K1', '2026-11-20 10:01Z', 82, 5), ('K1', '2026-11-20 10:02Z', 81, 5), "
            "('K1', '2026-11-20 10:03Z', 82, 5), ('K1', '2026-11-20 10:20Z', 82, 5)"
        )
        # no refresh: the triggers fold rows into the rollups as they are inserted
        rows = conn.execute(
            "SELECT to_char(bucket AT TIME ZONE 'UTC', 'HH24:MI'), avg_fill_pct, readings "
            "FROM bin_fill_hourly ORDER BY bucket"
        ).fetchall()
        assert rows == [("10:00", 20.0, 2), ("11:00", 50.0, 1)]
        counts = conn.execute(
            "SELECT to_char(bucket AT TIME ZONE 'UTC', 'HH24:MI'), actuations "
            "FROM detector_counts_15m ORDER BY bucket"
        ).fetchall()
        assert counts == [("10:00", 2), ("10:15", 1)]
        # a late reading counts in its hour; a duplicate skipped by ON CONFLICT does not
        for _ in range(2):
            conn.execute(
                "INSERT INTO bin_readings (bin_id, ts, sensor_id, fill_pct) VALUES "
                "('B1', '2026-11-20 10:50Z', 'S', 80) ON CONFLICT DO NOTHING"
            )
        late = (
            "SELECT readings, avg_fill_pct, max_fill_pct FROM bin_fill_hourly "
            "WHERE bucket = '2026-11-20 10:00Z'"
        )
        assert conn.execute(late).fetchone() == (3, 40.0, 80.0)
        # the repair function recomputes the same figures from the raw rows
        conn.execute("SELECT cityops_refresh_rollups('2026-11-20 00:00Z')")
        assert conn.execute(late).fetchone() == (3, 40.0, 80.0)


def test_migration_dataclass_checksum_is_stable() -> None:
    m = Migration(1, "x", "SELECT 1", None)
    assert m.checksum == Migration(1, "x", "SELECT 1", None).checksum
    assert m.checksum != Migration(1, "x", "SELECT 2", None).checksum
