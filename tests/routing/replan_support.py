"""What the re-planner's integration tests share: device-like MQTT clients, the seeded
test city with its pushed daily plan, the service as the tests run it, and waiting on a
condition (never on time)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from cityops.ingest.config import Settings
from cityops.ingest.contract import utc_iso
from cityops.routing.daily import plan_day
from cityops.routing.network import RoadNetwork
from cityops.routing.planning import BERLIN
from cityops.routing.replan.pipeline import ReplanReport
from cityops.routing.replan.service import Replanner
from cityops.routing.solver import OrToolsEngine
from cityops.simulators.city import build_city
from cityops.simulators.scenario import load_scenario
from cityops.simulators.seed import seed_registry
from tests.support.clock import NOW

ENGINE = OrToolsEngine(solution_limit=30)
#: How long a test waits for something the service does: generous, because on a loaded
#: machine a re-plan (load, 2 s solve, store, push) can take many times its usual second.
#: Tests wait on conditions, never on time: a pass is as fast as the service.
PATIENCE_S = 60.0


def _morning() -> datetime:
    """10:00 Europe/Berlin of the latest day on which that hour had passed at the suite's
    now (UTC), or the time in CITYOPS_TEST_NOW (ISO 8601 with offset), to pin the hour."""
    pinned = os.environ.get("CITYOPS_TEST_NOW")
    if pinned:
        return datetime.fromisoformat(pinned).astimezone(UTC)
    today = NOW.astimezone(BERLIN)
    ten = today.replace(hour=10, minute=0, second=0, microsecond=0)
    return (ten if ten <= today else ten - timedelta(days=1)).astimezone(UTC)


_MORNING, _STARTED = _morning(), time.monotonic()


def clock() -> datetime:
    """The re-planner tests' "now": 10:00 in Berlin of the latest day that has reached it,
    advancing with real time from when this module was loaded.

    The test city's shifts run 00:00-23:59:59 and its daily plan starts at midnight, so
    at the real time of day the tests would depend on when they run: shortly after
    midnight no truck is late yet, shortly before it no shift has room for a re-plan.
    Every timestamp the tests make (readings, events, positions, closures) and the
    service's clock come from here instead. Never in the future, so no timestamp is
    rejected as such; CI may run at any hour. CITYOPS_TEST_NOW=2026-11-21T23:30:00+01:00
    runs them at 23:30 instead, as they used to run then: the late truck's re-plan finds
    no shift left (docs/routing.md).
    """
    return _MORNING + timedelta(seconds=time.monotonic() - _STARTED)


def wait_for(what: str, cond: Callable[[], object], timeout: float = PATIENCE_S) -> None:
    """Wait until `cond()` is true (polled), or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Devices:
    """A device-like publisher and a tablet-like subscriber to every truck's cmd/route."""

    settings: Settings
    routes: list[dict[str, object]] = field(default_factory=list)
    pub: mqtt.Client | None = None
    sub: mqtt.Client | None = None

    def start(self) -> None:
        s = self.settings
        ready = threading.Event()
        self.sub = _client("tablet")
        self.sub.on_message = lambda _c, _u, m: self.routes.append(json.loads(m.payload))
        self.sub.on_subscribe = lambda *_a: ready.set()
        self.sub.connect(s.mqtt_host, s.mqtt_port)
        self.sub.loop_start()
        self.sub.subscribe(f"{s.topic_prefix}/v1/truck/+/cmd/route", qos=1)
        assert ready.wait(5)
        self.pub = _client("device")
        self.pub.connect(s.mqtt_host, s.mqtt_port)
        self.pub.loop_start()

    def stop(self) -> None:
        for c in (self.pub, self.sub):
            if c is not None:
                c.disconnect()
                c.loop_stop()

    def publish(self, topic: str, payload: dict[str, object]) -> None:
        assert self.pub is not None
        info = self.pub.publish(
            f"{self.settings.topic_prefix}/v1/{topic}", json.dumps(payload), qos=1
        )
        info.wait_for_publish(5)

    def bin_reading(self, bin_id: str, fill_pct: float, **extra: object) -> None:
        now = utc_iso(clock())
        self.publish(f"bin/S-{bin_id}/telemetry", {"ts": now, "fill_pct": fill_pct, **extra})

    def truck_event(self, truck_id: str, kind: str, **extra: object) -> None:
        now = utc_iso(clock())
        self.publish(f"truck/{truck_id}/events", {"ts": now, "kind": kind, **extra})

    def new_versions(self) -> list[dict[str, object]]:
        """What was pushed besides the daily plan."""
        return [r for r in self.routes if r["reason"] != "daily plan"]

    def wait_route(
        self, pred: Callable[[dict[str, object]], bool], timeout: float = PATIENCE_S
    ) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in list(self.routes):
                if pred(r):
                    return r
            time.sleep(0.05)
        raise AssertionError(f"no such route pushed; got {[_brief(r) for r in self.routes]}")


def _client(role: str) -> mqtt.Client:
    return mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"{role}-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
    )


def _brief(r: dict[str, object]) -> str:
    return f"{r['truck_id']} v{r['version']} ({r['reason']}): {route_bins(r)}"


def route_bins(r: dict[str, object]) -> list[str]:
    stops = r["stops"]
    assert isinstance(stops, list)
    return [s["bin_id"] for s in stops if s["kind"] == "stop"]


def seed_city(settings: Settings, network: RoadNetwork, *, trucks: int = 1) -> list[str]:
    """The test city, all residual, shifts all day, B0001-B0003 nearly full; a daily plan
    for the day of :func:`clock` is stored and pushed (version 1). Returns the bins it
    collects."""
    city = build_city(load_scenario("test"), network)
    seed_registry(settings.database_url, city)
    now = clock().replace(microsecond=0)
    full = {b.bin_id for b in city.bins[:3]}
    with psycopg.connect(settings.database_url) as conn:
        for i in range(2, trucks + 1):
            conn.execute(
                "INSERT INTO trucks (truck_id, name, capacity_l, capacity_kg, depot_id) "
                "SELECT %s, 'Truck ' || %s, capacity_l, capacity_kg, depot_id FROM trucks "
                "WHERE truck_id = 'T01'",
                (f"T{i:02d}", i),
            )
        conn.execute("UPDATE bins SET fraction = 'residual'")
        conn.execute(
            "UPDATE trucks SET fractions = '{residual}', shift_start = '00:00', "
            "shift_end = '23:59:59'"
        )
        for b in city.bins:
            top = 92.0 if b.bin_id in full else 15.0
            for h in range(0, 48, 2):
                conn.execute(
                    "INSERT INTO bin_readings (bin_id, ts, sensor_id, fill_pct) "
                    "VALUES (%s, %s, %s, %s)",
                    (b.bin_id, now - timedelta(hours=48 - h), b.sensor_id, 5 + (top - 5) * h / 46),
                )
    day = now.astimezone(BERLIN).date()
    report = plan_day(settings, day, time_limit_s=5, engine=ENGINE, now=now, network=network)
    assert report.pushed == len(report.routes) >= 1
    planned = [s.bin_id or "" for r in report.routes for s in r.stops if s.kind == "stop"]
    assert full <= set(planned)
    return planned


def make_replanner(
    settings: Settings, network: RoadNetwork, reports: list[ReplanReport]
) -> Replanner:
    """The re-planning service as the tests run it (not started): on the tests' clock, a
    2 s solve, a 0.8 s coalescing window, closures polled every 0.3 s, every report
    appended to `reports`."""
    return Replanner(
        settings,
        clock=clock,
        engine=ENGINE,
        time_limit_s=2.0,
        coalesce_s=0.8,
        network=network,
        client_id=f"replanner-{uuid.uuid4().hex[:8]}",
        closure_poll_s=0.3,
        on_replan=reports.append,
    )
