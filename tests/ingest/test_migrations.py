"""The migration runner on a real PostgreSQL, and the TimescaleDB variant's SQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest
from pglast import parse_sql

from cityops.ingest.db import Migration, MigrationError, StorageMode, load_migrations, migrate


def _other(mode: StorageMode) -> StorageMode:
    return StorageMode.PLAIN if mode is StorageMode.TIMESCALE else StorageMode.TIMESCALE


def test_migrations_apply_on_an_empty_database_and_are_idempotent(
    empty_db_url: str, db_mode: StorageMode
) -> None:
    first = migrate(empty_db_url, mode=db_mode)
    assert first.mode is db_mode
    assert first.applied and first.already == 0
    second = migrate(empty_db_url)
    assert second.mode is db_mode  # recorded on the first migration, kept by "auto"
    assert second.applied == [] and second.already == len(first.applied)
    with psycopg.connect(empty_db_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM cityops_migrations ORDER BY 1")]
        assert versions == sorted({m.version for m in load_migrations()})
        applied = {r[0] for r in conn.execute("SELECT name FROM cityops_migrations")}
        assert "storage" in applied
        # the views the rest of the code reads exist in this mode too
        for view in ("bin_fill_hourly", "detector_counts_15m", "devices"):
            assert conn.execute("SELECT to_regclass(%s)", (view,)).fetchone() != (None,)


def _server_runs_timescaledb(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT current_setting('shared_preload_libraries') LIKE '%timescaledb%' "
            "AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
        ).fetchone()
    return bool(row and row[0])


def test_timescale_is_refused_where_the_server_cannot(empty_db_url: str) -> None:
    if _server_runs_timescaledb(empty_db_url):
        pytest.skip("this server has TimescaleDB preloaded: nothing to refuse")
    with pytest.raises(MigrationError, match=r"not installed|not preloaded|not usable"):
        migrate(empty_db_url, mode="timescale")
    # nothing was half-applied: the database still migrates in plain mode
    assert migrate(empty_db_url, mode="plain").mode is StorageMode.PLAIN


def test_mode_cannot_change_after_the_first_migration(
    db_url: str, db_mode: StorageMode
) -> None:
    with pytest.raises(MigrationError, match=f"database is in {db_mode} mode"):
        migrate(db_url, mode=_other(db_mode))
    assert migrate(db_url, mode=db_mode).applied == []


def test_the_plain_mode_stays_plain_on_a_server_with_timescaledb(
    empty_db_url: str, db_mode: StorageMode
) -> None:
    assert migrate(empty_db_url, mode="plain").mode is StorageMode.PLAIN
    with psycopg.connect(empty_db_url) as conn:
        ext = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        assert ext is None
        # the plain rollups are tables kept by triggers, not continuous aggregates
        kind = conn.execute(
            "SELECT relkind FROM pg_class WHERE relname = 'bin_fill_hourly'"
        ).fetchone()
        assert kind == ("v",)
        assert conn.execute("SELECT to_regclass('bin_fill_hourly_cagg')").fetchone() == (None,)


def _timescale_only(db_mode: StorageMode) -> None:
    if db_mode is not StorageMode.TIMESCALE:
        pytest.skip("this run's databases are in plain mode (CITYOPS_TEST_DB_MODE)")


def test_timescale_mode_has_hypertables_policies_and_continuous_aggregates(
    db_url: str, db_mode: StorageMode
) -> None:
    _timescale_only(db_mode)
    with psycopg.connect(db_url) as conn:
        hypertables = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT hypertable_name, compression_enabled "
                "FROM timescaledb_information.hypertables"
            )
        }
        assert hypertables == {
            "bin_readings": True,
            "signal_events": True,
            "truck_positions": True,
            "truck_events": False,
            "ingest_metrics": False,
        }
        segmentby = {
            (r[0], r[1])
            for r in conn.execute(
                "SELECT hypertable_name, attname FROM timescaledb_information.compression_settings "
                "WHERE segmentby_column_index IS NOT NULL"
            )
        }
        assert segmentby == {
            ("bin_readings", "bin_id"),
            ("signal_events", "controller_id"),
            ("truck_positions", "truck_id"),
        }
        jobs = {
            (r[0], r[1], r[2])
            for r in conn.execute(
                "SELECT proc_name, hypertable_name, config->>coalesce("
                "  CASE proc_name WHEN 'policy_compression' THEN 'compress_after' "
                "  WHEN 'policy_retention' THEN 'drop_after' END, 'end_offset') "
                "FROM timescaledb_information.jobs WHERE proc_name LIKE 'policy_%'"
            )
        }
        caggs = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT view_name, materialized_only "
                "FROM timescaledb_information.continuous_aggregates"
            )
        }
        # real-time: the newest hour is read from the raw rows until it is materialised
        assert caggs == {"bin_fill_hourly_cagg": False, "detector_counts_15m_cagg": False}
        assert jobs >= {
            ("policy_compression", "bin_readings", "14 days"),
            ("policy_compression", "signal_events", "3 days"),
            ("policy_compression", "truck_positions", "14 days"),
            ("policy_retention", "bin_readings", "400 days"),
            ("policy_retention", "signal_events", "400 days"),
            ("policy_retention", "truck_positions", "400 days"),
            ("policy_retention", "ingest_metrics", "400 days"),
        }
        refreshed = {h for p, h, _ in jobs if p == "policy_refresh_continuous_aggregate"}
        assert refreshed == set(caggs)
        # the views the code reads are thin views over the continuous aggregates
        for view, cagg in (
            ("bin_fill_hourly", "bin_fill_hourly_cagg"),
            ("detector_counts_15m", "detector_counts_15m_cagg"),
        ):
            deps = conn.execute(
                "SELECT DISTINCT c.relname FROM pg_depend d "
                "JOIN pg_rewrite r ON r.oid = d.objid "
                "JOIN pg_class c ON c.oid = d.refobjid "
                "WHERE r.ev_class = %s::regclass AND c.relname <> %s",
                (view, view),
            ).fetchall()
            assert (cagg,) in deps


def test_duplicates_into_a_compressed_chunk_are_skipped(
    db_url: str, db_mode: StorageMode, now: datetime
) -> None:
    """A late, redelivered reading lands in a chunk that the compression policy has already
    compressed: the ingest's ON CONFLICT DO NOTHING must skip it there too."""
    _timescale_only(db_mode)
    old = now - timedelta(days=30)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO bin_readings (bin_id, ts, sensor_id, fill_pct) VALUES "
            "('B1', %s, 'S', 10), ('B1', %s, 'S', 20)",
            (old, old + timedelta(minutes=30)),
        )
        compressed = conn.execute(
            "SELECT count(compress_chunk(c)) FROM show_chunks('bin_readings', "
            "older_than => %s::timestamptz) c",
            (now - timedelta(days=14),),
        ).fetchone()
        assert compressed == (1,)
        status = conn.execute(
            "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'bin_readings' AND range_end < %s",
            (now - timedelta(days=14),),
        ).fetchone()
        assert status == (True,)
        inserted = conn.execute(
            "INSERT INTO bin_readings (bin_id, ts, sensor_id, fill_pct) VALUES "
            "('B1', %s, 'S', 99), ('B1', %s, 'S', 40) ON CONFLICT DO NOTHING",
            (old, old + timedelta(minutes=45)),
        )
        assert inserted.rowcount == 1  # the duplicate skipped, the new late one stored
        rows = conn.execute(
            "SELECT fill_pct FROM bin_readings WHERE bin_id = 'B1' ORDER BY ts"
        ).fetchall()
        assert rows == [(10.0,), (20.0,), (40.0,)]


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
    """Both variants parse and define the same names (whichever mode this server runs)."""
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


def test_rollups_aggregate_readings_in_either_mode(db_url: str, now: datetime) -> None:
    """The same figures from the plain mode's trigger-kept tables and from TimescaleDB's
    real-time continuous aggregates, for an hour two days ago."""
    hour = now.replace(minute=0, second=0) - timedelta(days=2)

    def at(minutes: int) -> datetime:
        return hour + timedelta(minutes=minutes)

    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO bin_readings (bin_id, ts, sensor_id, fill_pct) VALUES "
            "('B1', %s, 'S', 10), ('B1', %s, 'S', 30), ('B1', %s, 'S', 50)",
            (at(5), at(35), at(65)),
        )
        conn.execute(
            "INSERT INTO signal_events (controller_id, ts, code, param) VALUES "
            "('K1', %s, 82, 5), ('K1', %s, 81, 5), ('K1', %s, 82, 5), ('K1', %s, 82, 5)",
            (at(1), at(2), at(3), at(20)),
        )
        conn.commit()
        # no refresh: plain mode folds rows in as they are inserted, TimescaleDB's
        # aggregates are real-time (materialized_only = false)
        rows = conn.execute(
            "SELECT bucket, avg_fill_pct, readings FROM bin_fill_hourly "
            "WHERE bin_id = 'B1' ORDER BY bucket"
        ).fetchall()
        assert rows == [(hour, 20.0, 2), (at(60), 50.0, 1)]
        counts = conn.execute(
            "SELECT bucket, actuations FROM detector_counts_15m "
            "WHERE controller_id = 'K1' ORDER BY bucket"
        ).fetchall()
        assert counts == [(hour, 2), (at(15), 1)]
        # a late reading counts in its hour; a duplicate skipped by ON CONFLICT does not
        for _ in range(2):
            conn.execute(
                "INSERT INTO bin_readings (bin_id, ts, sensor_id, fill_pct) VALUES "
                "('B1', %s, 'S', 80) ON CONFLICT DO NOTHING",
                (at(50),),
            )
        conn.commit()
        late = (
            "SELECT readings, avg_fill_pct, max_fill_pct FROM bin_fill_hourly "
            "WHERE bin_id = 'B1' AND bucket = %s"
        )
        assert conn.execute(late, (hour,)).fetchone() == (3, 40.0, 80.0)
        # the repair function (a no-op in TimescaleDB mode) leaves the same figures
        conn.execute("SELECT cityops_refresh_rollups(%s)", (hour - timedelta(days=1),))
        assert conn.execute(late, (hour,)).fetchone() == (3, 40.0, 80.0)


def test_migration_dataclass_checksum_is_stable() -> None:
    m = Migration(1, "x", "SELECT 1", None)
    assert m.checksum == Migration(1, "x", "SELECT 1", None).checksum
    assert m.checksum != Migration(1, "x", "SELECT 2", None).checksum
