"""The same controller events, once imported from an ATSPM CSV file and once sent over MQTT
through the real ingest, give the same stored events and the same measures.

Two fresh databases (both copies of the migrated template): CSV into one with `cityops
traffic import-events`, MQTT into the other through `IngestService` and the machine's
Mosquitto, then `traffic.store.refresh` there; the tables are compared row by row. The
events are a whole day of the lightweight simulator's controller (about 90,000 events),
midnight to midnight Europe/Berlin, on the latest day at least two days before the suite's
NOW (the ingest refuses events older than 30 days) that has no clock change.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cityops.api.cli import main
from cityops.ingest.config import Settings
from cityops.ingest.contract import (
    Channel,
    DeviceKind,
    SignalEvent,
    SignalEvents,
    device_topic,
)
from cityops.ingest.db import connect
from cityops.traffic.store import StoreOptions, refresh
from tests.conftest import ADMIN_URL, url_with
from tests.support.clock import NOW
from tests.support.ingest import Publisher, count, running_ingest, wait_for
from tests.traffic.eventlog_support import BERLIN, sim_events, stored_events, table, write_csv
from tests.traffic.store_support import CID, seed_controller

SECONDS = 86400.0  # a day without a clock change
BATCH_S = 30.0  # seconds of events per MQTT message


@pytest.fixture
def second_db_url(template_db: str) -> Iterator[str]:
    """Another fresh, migrated database, as the `db_url` fixture makes one."""
    name = f"cityops_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    try:
        yield url_with(ADMIN_URL, dbname=name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def _day_start() -> datetime:
    """Midnight (Berlin) of the latest day two or more days back that has 24 hours."""
    day = (NOW.astimezone(BERLIN) - timedelta(days=2)).date()
    while True:
        start = datetime.combine(day, time(0, 0), tzinfo=BERLIN)
        end = datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=BERLIN)
        if (end - start).total_seconds() == SECONDS and start.utcoffset() == end.utcoffset():
            return start.astimezone(UTC)
        day -= timedelta(days=1)


def test_csv_and_mqtt_give_the_same_events_and_measures(
    db_url: str, second_db_url: str, settings: Settings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start = _day_start()
    events = sim_events(start, SECONDS)
    assert len(events) > 50_000  # a weekend day has fewer vehicles, never this few
    for url in (db_url, second_db_url):
        with connect(url, autocommit=True) as conn:
            seed_controller(conn)

    # 1. the controller's log file, in its local time, imported
    monkeypatch.setenv("CITYOPS_DATABASE_URL", db_url)
    path = write_csv(tmp_path / f"{CID}_{start:%Y_%m_%d}.csv", events)
    assert main(["traffic", "import-events", str(path)]) == 0

    # 2. the same events over MQTT, in batches as a controller sends them, through the ingest
    topic = device_topic(settings.topic_prefix, DeviceKind.SIGNAL, CID, Channel.EVENTS)
    batches: dict[int, list[SignalEvent]] = {}
    for ts, code, param in events:
        key = int((ts - start).total_seconds() // BATCH_S)
        batches.setdefault(key, []).append(SignalEvent(ts=ts, code=code, param=param))
    mqtt_settings = settings.model_copy(update={"database_url": second_db_url})
    pub = Publisher(settings.mqtt_host, settings.mqtt_port)
    try:
        with running_ingest(mqtt_settings):
            for _, batch in sorted(batches.items()):
                pub.publish(topic, SignalEvents(events=batch).model_dump_json().encode())
            pub.wait_all()
            wait_for(lambda: count(second_db_url, "SELECT count(*) FROM signal_events")
                     == len(events), timeout=120, what="every event through the ingest")
    finally:
        pub.close()
    with connect(second_db_url, autocommit=True) as conn:
        (run,) = refresh(conn, StoreOptions(), until_caught_up=True)
        # every 15-minute bin of the day but the last (complete 300 s before the last event)
        assert run.new_bins == 95

    # 3. row by row
    with connect(db_url) as a, connect(second_db_url) as b:
        assert stored_events(a) == stored_events(b) == events
        for name in ("signal_measures", "signal_detector_health", "signal_mode_history"):
            rows = table(a, name)
            assert rows, name
            assert rows == table(b, name), name
        assert len(table(a, "signal_measures")) == 95 * 2
        assert [r[3] for r in table(a, "signal_mode_history")] == ["fixed", "adaptive", "fixed"]
        progress = "SELECT computed_until FROM signal_measures_progress"
        assert a.execute(progress).fetchall() == b.execute(progress).fetchall()
        assert b.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
