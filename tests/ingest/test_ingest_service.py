"""The ingest against the real Mosquitto and PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid

import psycopg
import pytest

from cityops.ingest.config import Settings
from tests.conftest import url_with
from tests.ingest.test_decode import MALFORMED
from tests.support.brokers import MosquittoProcess
from tests.support.ingest import (
    T0,
    Publisher,
    add_bins,
    add_signal,
    add_truck,
    bin_topic,
    count,
    publish_in_background,
    reading,
    running_ingest,
    wait_for,
)


def _settings(base: Settings, **changes: object) -> Settings:
    return base.model_copy(update=changes)


def test_readings_of_every_kind_are_stored_with_latest_state(
    settings: Settings, db_url: str
) -> None:
    sensors = add_bins(db_url, 3)
    add_signal(db_url, "K1")
    add_truck(db_url, "T1")
    p = settings.topic_prefix
    pub = Publisher(settings.mqtt_host, settings.mqtt_port)
    with running_ingest(settings):
        for i in range(30):
            pub.publish(bin_topic(settings, sensors[i % 3]), reading(i, fill=float(i)))
        events = [
            {"ts": T0.isoformat(), "code": 1, "param": 2},
            {"ts": T0.isoformat(), "code": 82, "param": 5},
        ]
        pub.publish(f"{p}/v1/signal/K1/events", json.dumps({"events": events}).encode())
        pub.publish(
            f"{p}/v1/truck/T1/telemetry",
            json.dumps(
                {"ts": T0.isoformat(), "lat": 50.1, "lon": 8.76, "speed_kmh": 12.5}
            ).encode(),
        )
        pub.publish(
            f"{p}/v1/truck/T1/events",
            json.dumps({"ts": T0.isoformat(), "kind": "stop_done", "bin_id": "B1"}).encode(),
        )
        pub.publish(
            f"{p}/v1/bin/S-B1/status",
            json.dumps({"state": "online", "ts": T0.isoformat()}).encode(),
        )
        pub.wait_all()
        wait_for(
            lambda: count(db_url, "SELECT count(*) FROM bin_readings") == 30, what="30 readings"
        )
        wait_for(
            lambda: count(db_url, "SELECT count(*) FROM truck_events") == 1, what="truck event"
        )
        pub.close()
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM signal_events").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM truck_positions").fetchone() == (1,)
        # bin_state holds the newest reading of each bin: B3 got i = 2, 5, ..., 29.
        assert conn.execute("SELECT fill_pct FROM bin_state WHERE bin_id = 'B3'").fetchone() == (
            29.0,
        )
        assert conn.execute("SELECT lat FROM truck_state WHERE truck_id = 'T1'").fetchone() == (
            50.1,
        )
        assert conn.execute(
            "SELECT state FROM device_status WHERE kind = 'bin' AND device_id = 'S-B1'"
        ).fetchone() == ("online",)
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)


def test_duplicate_and_older_messages(settings: Settings, db_url: str) -> None:
    (sensor,) = add_bins(db_url, 1)
    pub = Publisher(settings.mqtt_host, settings.mqtt_port)
    with running_ingest(settings):
        for _ in range(3):  # the same message delivered three times
            pub.publish(bin_topic(settings, sensor), reading(1000, fill=70.0))
        pub.publish(bin_topic(settings, sensor), reading(10, fill=20.0))  # older, arrives later
        pub.wait_all()
        wait_for(lambda: count(db_url, "SELECT count(*) FROM bin_readings") == 2, what="2 readings")
        time.sleep(0.5)
        pub.close()
    assert count(db_url, "SELECT count(*) FROM bin_readings") == 2
    assert count(db_url, "SELECT fill_pct::int FROM bin_state WHERE bin_id = 'B1'") == 70


def test_every_malformed_message_is_dead_lettered_and_ingest_keeps_going(
    settings: Settings, db_url: str
) -> None:
    (sensor,) = add_bins(db_url, 1)
    add_signal(db_url, "K1")
    add_truck(db_url, "T1")
    p = settings.topic_prefix
    pub = Publisher(settings.mqtt_host, settings.mqtt_port)
    # The corpus is re-homed on this test's prefix and registered sensor. Its timestamps are
    # fixed (2026-11-21), so against the live clock the time checks may call some of them
    # "too old"; every other reason must come out exactly as the pure decoder says.
    clock_reasons = {"timestamp_in_future", "timestamp_too_old"}
    sent: dict[tuple[str, bytes], str] = {}
    with running_ingest(settings) as service:
        for _name, topic, raw, reason, _needle in MALFORMED:
            if not topic.startswith("city/"):
                continue  # outside the prefix: the ingest never subscribes to it
            topic = topic.replace("city/", f"{p}/", 1).replace("/S-1/", f"/{sensor}/")
            if reason.value == "oversized":
                raw = b"{" + b" " * (settings.ingest_max_payload_bytes + 10) + b"}"
            pub.publish(topic, raw)
            sent[(topic, raw)] = reason.value
        unknown = (f"{p}/v1/bin/S-UNKNOWN/telemetry", reading(1))
        pub.publish(*unknown)
        pub.publish(bin_topic(settings, sensor), reading(5))  # a good one after all the bad ones
        pub.wait_all()
        wait_for(lambda: count(db_url, "SELECT count(*) FROM bin_readings") == 1, what="good row")
        wait_for(
            lambda: count(db_url, "SELECT count(*) FROM dead_letters") == len(sent) + 1,
            what="every bad message dead-lettered",
        )
        assert service.running
        pub.close()
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT topic, payload, reason, detail FROM dead_letters").fetchall()
    stored = {(t, bytes(pl)[:1000]): (r, d) for t, pl, r, d in rows}
    for (topic, raw), want in sent.items():
        got, detail = stored[(topic, raw[:1000])]
        assert detail, f"no detail for {topic}"
        if want in clock_reasons or got in clock_reasons:
            assert got in clock_reasons | {want}, (topic, raw, got)
        else:
            assert got == want, (topic, raw, got, detail)
    assert stored[(unknown[0], unknown[1])][0] == "unknown_device"


def test_two_instances_share_the_load_without_duplicates(settings: Settings, db_url: str) -> None:
    sensors = add_bins(db_url, 10)
    group = f"grp-{uuid.uuid4().hex[:6]}"
    a = _settings(settings, ingest_client_id=f"a-{uuid.uuid4().hex[:6]}", ingest_share_group=group)
    b = _settings(settings, ingest_client_id=f"b-{uuid.uuid4().hex[:6]}", ingest_share_group=group)
    pub = Publisher(settings.mqtt_host, settings.mqtt_port)
    n = 2000
    with running_ingest(a) as ia, running_ingest(b) as ib:
        for i in range(n):
            pub.publish(bin_topic(settings, sensors[i % 10]), reading(i))
        pub.wait_all()
        wait_for(lambda: count(db_url, "SELECT count(*) FROM bin_readings") == n, what=f"{n} rows")
        # each instance counts a batch after its commit and acknowledgement, so the last
        # batch's rows can be visible a moment before its count
        wait_for(
            lambda: ia.metrics.totals["received"] + ib.metrics.totals["received"] >= n,
            what="the instances' counts of the last batch",
        )
        pub.close()
        got_a, got_b = ia.metrics.totals["received"], ib.metrics.totals["received"]
    assert got_a + got_b == n, "each message went to exactly one instance"
    assert got_a > 0 and got_b > 0, f"load not shared: {got_a} / {got_b}"


@pytest.mark.slow
def test_broker_restart_mid_stream_loses_nothing(
    settings: Settings, db_url: str, own_broker: MosquittoProcess
) -> None:
    sensors = add_bins(db_url, 5)
    s = _settings(settings, mqtt_url=own_broker.url)
    n = 1500
    items = [(bin_topic(s, sensors[i % 5]), reading(i)) for i in range(n)]
    with running_ingest(s) as service:
        pub = Publisher(s.mqtt_host, s.mqtt_port)
        thread = publish_in_background(pub, items, rate_hz=500)
        wait_for(
            lambda: count(db_url, "SELECT count(*) FROM bin_readings") > 300, what="stream start"
        )
        own_broker.restart(downtime_s=1.0)
        thread.join(60)
        pub.wait_all(timeout=60)
        wait_for(
            lambda: count(db_url, "SELECT count(*) FROM bin_readings") >= n,
            timeout=60,
            what=f"all {n} rows after the restart (ingest: {service.metrics.totals})",
        )
        pub.close()
    assert count(db_url, "SELECT count(*) FROM bin_readings") == n
    assert count(db_url, "SELECT count(*) FROM dead_letters") == 0


@pytest.mark.slow
def test_database_outage_mid_stream_loses_nothing_and_duplicates_nothing(
    settings: Settings, db_url: str
) -> None:
    sensors = add_bins(db_url, 5)
    role = f"ingest_{uuid.uuid4().hex[:8]}"
    admin = url_with(db_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN SUPERUSER')
    s = _settings(settings, database_url=url_with(db_url, user=role))
    n = 1500
    items = [(bin_topic(s, sensors[i % 5]), reading(i)) for i in range(n)]
    try:
        with running_ingest(s) as service:
            pub = Publisher(s.mqtt_host, s.mqtt_port)
            thread = publish_in_background(pub, items, rate_hz=500)
            wait_for(
                lambda: count(db_url, "SELECT count(*) FROM bin_readings") > 300,
                what="stream start",
            )
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'ALTER ROLE "{role}" NOLOGIN')
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    (role,),
                )
            time.sleep(2.5)
            stalled = count(db_url, "SELECT count(*) FROM bin_readings")
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'ALTER ROLE "{role}" LOGIN')
            thread.join(60)
            pub.wait_all(timeout=60)
            wait_for(
                lambda: count(db_url, "SELECT count(*) FROM bin_readings") >= n,
                timeout=60,
                what=f"all {n} rows after the outage",
            )
            assert service.metrics.db_errors._value.get() > 0, "the outage was not noticed"
            pub.close()
        assert stalled < n, "the outage happened while the stream was still running"
        assert count(db_url, "SELECT count(*) FROM bin_readings") == n
        assert count(db_url, "SELECT count(DISTINCT (bin_id, ts)) FROM bin_readings") == n
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
            )
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_ingest_restart_keeps_messages_published_while_it_was_down(
    settings: Settings, db_url: str
) -> None:
    sensors = add_bins(db_url, 2)
    pub = Publisher(settings.mqtt_host, settings.mqtt_port)
    with running_ingest(settings):
        pass  # creates the persistent session and its shared subscription
    for i in range(200):
        pub.publish(bin_topic(settings, sensors[i % 2]), reading(i))
    pub.wait_all()
    with running_ingest(settings):
        wait_for(
            lambda: count(db_url, "SELECT count(*) FROM bin_readings") == 200,
            what="queued messages",
        )
    pub.close()


def test_a_device_registered_after_the_ingest_started_is_stored(
    settings: Settings, db_url: str
) -> None:
    pub = Publisher(settings.mqtt_host, settings.mqtt_port)
    with running_ingest(settings):  # its registry cache is loaded empty here
        (sensor,) = add_bins(db_url, 1)
        pub.publish(bin_topic(settings, sensor), reading(1))
        pub.wait_all()
        wait_for(lambda: count(db_url, "SELECT count(*) FROM bin_readings") == 1, what="row")
        pub.close()
    assert count(db_url, "SELECT count(*) FROM dead_letters") == 0
