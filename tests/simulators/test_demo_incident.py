"""The demo's scripted overflow picks a bin the re-planner will act on, against the real
database and broker: not behind a street closure (it would only be reported unserved),
not emptied recently (the re-planner takes one back only once its sensor has reported a
lower level and 30 minutes have passed, which a single scripted reading does not show)."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from cityops.ingest.config import Settings
from cityops.routing.daily import plan_day
from cityops.routing.network import load_network
from cityops.routing.planning import BERLIN
from cityops.routing.solver import OrToolsEngine
from cityops.simulators.demo_show import scripted_overflow
from tests.routing.test_daily import _seed
from tests.support.clock import now_utc


def test_the_scripted_overflow_skips_bins_behind_a_closure_or_emptied_today(
    settings: Settings, db_url: str
) -> None:
    now = now_utc()
    full = _seed(db_url, now=now)
    day = now.astimezone(BERLIN).date()
    report = plan_day(
        settings, day, time_limit_s=2, engine=OrToolsEngine(solution_limit=20), now=now, push=False
    )
    on_routes = {s.bin_id for r in report.routes for s in r.stops if s.kind == "stop"}
    assert set(full) <= on_routes
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT bin_id, sensor_id, ST_Y(geom), ST_X(geom) FROM bins ORDER BY bin_id"
        ).fetchall()
    off_routes = [r for r in rows if r[0] not in on_routes]
    first, second, third = off_routes[0], off_routes[1], off_routes[2]

    got: list[tuple[str, bytes]] = []
    ready = threading.Event()
    sub = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"incident-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
    )
    sub.on_message = lambda _c, _u, m: got.append((m.topic, bytes(m.payload)))
    sub.on_subscribe = lambda *_a: ready.set()
    sub.connect(settings.mqtt_host, settings.mqtt_port)
    sub.loop_start()
    sub.subscribe(f"{settings.topic_prefix}/v1/bin/+/telemetry", qos=1)
    assert ready.wait(5)
    network = load_network()
    try:
        # open streets: the first bin outside today's routes
        assert scripted_overflow(settings, network).startswith(f"bin {first[0]} ")
        # a full closure of every street at the first bin's node cuts it off: the next
        # bin is picked
        node = network.nearest_node(first[2], first[3])
        ends = (network.src == node) | (network.dst == node)
        lines = ", ".join(
            f"({network.lon[u]} {network.lat[u]}, {network.lon[v]} {network.lat[v]})"
            for u, v in zip(network.src[ends], network.dst[ends], strict=True)
        )
        assert lines
        with psycopg.connect(db_url) as conn:
            conn.execute(
                "INSERT INTO street_closures (closure_id, geom, valid_from, valid_to, source, "
                "reason, buffer_m) VALUES ('C-demo', ST_GeomFromText(%s, 4326), "
                "%s, %s, 'test', 'water main', 1)",
                (f"MULTILINESTRING({lines})", now - timedelta(hours=1), now + timedelta(days=1)),
            )
        assert scripted_overflow(settings, network).startswith(f"bin {second[0]} ")
        # a bin a truck emptied today is left alone by the re-planner: the next is picked
        with psycopg.connect(db_url) as conn:
            conn.execute(
                "INSERT INTO truck_events (truck_id, ts, kind, bin_id) "
                "VALUES ('T01', %s, 'stop_done', %s)",
                (now - timedelta(hours=2), second[0]),
            )
        assert scripted_overflow(settings, network).startswith(f"bin {third[0]} ")
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            threading.Event().wait(0.05)
    finally:
        sub.disconnect()
        sub.loop_stop()
    topics = [t for t, _ in got]
    assert topics == [
        f"{settings.topic_prefix}/v1/bin/{first[1]}/telemetry",
        f"{settings.topic_prefix}/v1/bin/{second[1]}/telemetry",
        f"{settings.topic_prefix}/v1/bin/{third[1]}/telemetry",
    ]
    assert all(b'"fill_pct":98.0' in payload for _, payload in got)
