"""Bin sensors through LoRaWAN network servers, into the same ingest (real Mosquitto and
PostgreSQL): ChirpStack v4 and The Things Stack v3 uplinks become readings with the bin's
calibration, copies of a frame are stored once, bad uplinks are dead-lettered with their
reason, and nothing is lost when the ingest is killed mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from cityops.ingest.city import bundled_profile, read_profile
from cityops.ingest.config import Settings
from cityops.ingest.registry_files import parse_rows
from cityops.ingest.registry_store import import_records
from tests.support.clock import NOW
from tests.support.ingest import Publisher, count, running_ingest, wait_for
from tests.support.lorawan import chirpstack_uplink, em310_udl, ldds75, tts_uplink

EM310 = "24e124713b241111"  # Milesight's OUI
LDDS75 = "a84041000181aaaa"  # Dragino's OUI
T0 = NOW - timedelta(hours=2)


def _register(db_url: str) -> None:
    base = {"street": "Mühlgasse", "fraction": "residual", "capacity_l": 1100,
            "lon": 24.945, "lat": 60.17}
    rows = [
        {**base, "bin_id": "L1", "dev_eui": EM310, "sensor_model": "milesight-em310-udl",
         "empty_distance_mm": 1200, "full_distance_mm": 200},
        {**base, "bin_id": "L2", "dev_eui": LDDS75, "sensor_model": "dragino-ldds75",
         "empty_distance_mm": 1000, "full_distance_mm": 300},
    ]
    path = bundled_profile("demo")
    assert path is not None
    with psycopg.connect(db_url) as conn:
        report = import_records(conn, [parse_rows("bin", rows, "test")], read_profile(path),
                                actor="test")
    assert not report.problems, report.problems


@pytest.fixture
def lora_settings(settings: Settings, db_url: str) -> Settings:
    _register(db_url)
    # the test's prefix as the root of the servers' topics keeps tests apart on one broker
    return settings.model_copy(update={"ingest_sources": "cityops,chirpstack,tts",
                                       "ingest_lorawan_root": settings.topic_prefix})


@pytest.fixture
def pub(settings: Settings) -> Iterator[Publisher]:
    p = Publisher(settings.mqtt_host, settings.mqtt_port)
    yield p
    p.close()


def _send(pub: Publisher, settings: Settings, message: tuple[str, bytes]) -> None:
    topic, body = message
    pub.publish(f"{settings.topic_prefix}/{topic}", body)


def _readings(db_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT bin_id, ts, sensor_id, fill_pct, battery_pct, temperature_c, tilt "
            "FROM bin_readings ORDER BY bin_id, ts").fetchall()


def test_uplinks_of_both_servers_become_calibrated_readings(
    lora_settings: Settings, db_url: str, pub: Publisher
) -> None:
    with running_ingest(lora_settings):
        _send(pub, lora_settings, chirpstack_uplink(EM310, em310_udl(700, 87), 41, T0))
        _send(pub, lora_settings, tts_uplink(LDDS75, ldds75(650, 3350, 11.5), 7, T0))
        # tilted, and above the fill line: 100 %, not more
        _send(pub, lora_settings, chirpstack_uplink(
            EM310, em310_udl(120, 86, tilted=True), 42, T0 + timedelta(minutes=10)))
        pub.wait_all()
        wait_for(lambda: count(db_url, "SELECT count(*) FROM bin_readings") == 3,
                 what="three LoRaWAN readings")
    rows = _readings(db_url)
    assert rows[0] == ("L1", T0, EM310, 50.0, 87.0, None, False)
    assert rows[1][2:] == (EM310, 100.0, 86.0, None, True)
    assert rows[2] == ("L2", T0, LDDS75, 50.0, 58.0, 11.5, False)  # 3.35 V of 3.0..3.6 V
    with psycopg.connect(db_url) as conn:
        frames = conn.execute("SELECT dev_eui, f_cnt, network, gateways, bin_id "
                              "FROM lorawan_frames ORDER BY ts, f_cnt").fetchall()
        state = conn.execute("SELECT fill_pct FROM bin_state WHERE bin_id = 'L1'").fetchone()
    assert sorted(frames) == sorted([(EM310, 41, "chirpstack", 2, "L1"),
                                     (LDDS75, 7, "tts", 1, "L2"),
                                     (EM310, 42, "chirpstack", 2, "L1")])
    assert state == (100.0,)  # the newest reading is the bin's state: API, forecast, plan
    from cityops.api.app import create_app
    from tests.api.authn import operator_headers, with_auth
    from tests.api.testclient import TestClient

    api = with_auth(lora_settings)
    with TestClient(create_app(api, db_timeout_s=5.0), headers=operator_headers(api)) as client:
        shown = client.get("/api/v1/bins/L1").json()
    assert shown["fill_pct"] == 100.0 and shown["tilt"] is True, shown


def test_copies_of_a_frame_are_stored_once_and_a_counter_reset_is_new(
    lora_settings: Settings, db_url: str, pub: Publisher
) -> None:
    first = chirpstack_uplink(EM310, em310_udl(700), 5, T0)
    with running_ingest(lora_settings) as service:
        _send(pub, lora_settings, first)
        _send(pub, lora_settings, first)  # a redelivery
        pub.wait_all()
        wait_for(lambda: count(db_url, "SELECT count(*) FROM lorawan_frames") == 1,
                 what="the first frame")
        # another path's copy of the frame, seconds later, and via the other server
        _send(pub, lora_settings, chirpstack_uplink(EM310, em310_udl(700), 5,
                                                     T0 + timedelta(seconds=2)))
        _send(pub, lora_settings, tts_uplink(EM310, em310_udl(700), 5,
                                             T0 + timedelta(seconds=3)))
        # the device rejoined: its counter starts again, minutes and an hour later
        _send(pub, lora_settings, chirpstack_uplink(EM310, em310_udl(600), 5,
                                                     T0 + timedelta(minutes=3)))
        _send(pub, lora_settings, chirpstack_uplink(EM310, em310_udl(500), 5,
                                                     T0 + timedelta(hours=1)))
        pub.wait_all()
        wait_for(lambda: count(db_url, "SELECT count(*) FROM lorawan_frames") == 3,
                 what="the frames after the resets")
        wait_for(lambda: service.metrics.lorawan_duplicates._value.get() >= 2,
                 what="two duplicates counted")
    assert [r[3] for r in _readings(db_url)] == [50.0, 60.0, 70.0]
    assert count(db_url, "SELECT count(*) FROM dead_letters") == 0


def test_bad_uplinks_are_dead_lettered_with_their_reason_and_the_good_stored(
    lora_settings: Settings, db_url: str, pub: Publisher
) -> None:
    bad = {
        "unknown_device": chirpstack_uplink("0011223344556677", em310_udl(700), 1, T0),
        "undecodable_payload": chirpstack_uplink(EM310, b"\x07\x07\x07", 2, T0),
        "implausible_reading": tts_uplink(LDDS75, ldds75(4000), 3, T0),  # beyond the floor
        "not_json": ("application/bins/device/" + EM310 + "/event/up", b"{nope"),
        "deep_json": ("application/bins/device/" + EM310 + "/event/up",
                      b'{"a":' * 100 + b"1" + b"}" * 100),
        "topic_mismatch": (f"application/bins/device/{LDDS75}/event/up",
                           chirpstack_uplink(EM310, em310_udl(700), 4, T0)[1]),
    }
    with running_ingest(lora_settings):
        for message in bad.values():
            _send(pub, lora_settings, message)
        _send(pub, lora_settings, tts_uplink(LDDS75, ldds75(650), 9, T0))
        _send(pub, lora_settings, tts_uplink(LDDS75, ldds75(500, sensor=False), 10, T0))
        pub.wait_all()
        wait_for(lambda: count(db_url, "SELECT count(*) FROM dead_letters") == len(bad) + 1,
                 what="every bad uplink dead-lettered")
        wait_for(lambda: count(db_url, "SELECT count(*) FROM bin_readings") == 1,
                 what="the good uplink stored")
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT reason, detail FROM dead_letters ORDER BY detail").fetchall()
    letters = dict(rows)
    assert set(bad) <= set(letters)
    assert "no bin with DevEUI 0011223344556677" in letters["unknown_device"]
    implausible = sorted(detail for reason, detail in rows if reason == "implausible_reading")
    assert len(implausible) == 2
    assert "distance 4000 mm is outside 0..1150 mm for bin L2" in implausible[0]
    assert "no ultrasonic sensor detected" in implausible[1]


def test_nothing_is_lost_when_the_ingest_is_killed_mid_stream(
    lora_settings: Settings, db_url: str, pub: Publisher
) -> None:
    env = {**os.environ, "CITYOPS_DATABASE_URL": db_url,
           "CITYOPS_MQTT_URL": lora_settings.mqtt_url,
           "CITYOPS_TOPIC_PREFIX": lora_settings.topic_prefix,
           "CITYOPS_INGEST_SOURCES": "chirpstack,tts",
           "CITYOPS_INGEST_LORAWAN_ROOT": lora_settings.topic_prefix,
           "CITYOPS_INGEST_CLIENT_ID": lora_settings.ingest_client_id,
           "CITYOPS_INGEST_METRICS_PORT": "0", "CITYOPS_INGEST_FLUSH_MS": "50"}

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "cityops.api.cli", "ingest"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # this test's database only: other tests' connections would end the wait at once
        wait_for(lambda: count(db_url, "SELECT count(*) FROM pg_stat_activity WHERE "
                               "datname = current_database() AND "
                               "application_name LIKE 'cityops-%%'") > 0 or proc.poll() is not None,
                 what="the ingest connected")
        return proc

    n = 300
    proc = start()
    try:
        for i in range(n):
            message = (chirpstack_uplink(EM310, em310_udl(200 + i), i, T0 + timedelta(seconds=i))
                       if i % 2 else
                       tts_uplink(LDDS75, ldds75(300 + i), i, T0 + timedelta(seconds=i)))
            _send(pub, lora_settings, message)
            if i == n // 2:
                wait_for(lambda: count(db_url, "SELECT count(*) FROM bin_readings") > 0,
                         what="some readings before the kill")
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        pub.wait_all()
        proc = start()
        wait_for(lambda: count(db_url, "SELECT count(*) FROM bin_readings") == n, timeout=60,
                 what="every uplink stored after the restart")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert count(db_url, "SELECT count(*) FROM lorawan_frames") == n
    assert count(db_url, "SELECT count(*) FROM dead_letters") == 0


def test_a_sensor_decoded_by_the_network_server_goes_through_the_profiles_mapping(
    settings: Settings, db_url: str, pub: Publisher
) -> None:
    from dataclasses import replace

    from cityops.ingest.service import IngestService

    mappings = {"acme-level": {"distance_mm": "level.cm*10", "battery_pct": "bat"}}
    path = bundled_profile("demo")
    assert path is not None
    city = replace(read_profile(path), lorawan_mappings=mappings)
    row = {"bin_id": "L9", "street": "Mühlgasse", "fraction": "paper", "capacity_l": 660,
           "lon": 24.945, "lat": 60.17, "dev_eui": "00aa00aa00aa00aa",
           "sensor_model": "acme-level", "empty_distance_mm": 1000, "full_distance_mm": 200}
    with psycopg.connect(db_url) as conn:
        assert not import_records(conn, [parse_rows("bin", [row], "t")], city,
                                  actor="t").problems
    lora = settings.model_copy(update={"ingest_sources": "tts",
                                       "ingest_lorawan_root": settings.topic_prefix})
    service = IngestService(lora, mappings)
    service.start()
    assert service.wait_connected(10)
    try:
        import time

        time.sleep(0.3)
        _send(pub, lora, tts_uplink("00aa00aa00aa00aa", b"\x00", 3, T0,
                                    decoded={"level": {"cm": 60}, "bat": 71}))
        _send(pub, lora, tts_uplink("00aa00aa00aa00aa", b"\x00", 4, T0 + timedelta(minutes=5),
                                    decoded=None))  # the server's codec failed
        pub.wait_all()
        wait_for(lambda: count(db_url, "SELECT count(*) FROM bin_readings") == 1
                 and count(db_url, "SELECT count(*) FROM dead_letters") == 1,
                 what="the mapped reading and the dead letter")
    finally:
        service.stop()
    assert _readings(db_url)[0][3:5] == (50.0, 71.0)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT reason FROM dead_letters").fetchone() == (
            "undecodable_payload",)
