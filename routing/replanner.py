"""`cityops routing replan`: re-plan today's routes while the trucks drive them.

The service listens on MQTT (its own client id, persistent session, QoS 1) to bin
telemetry and truck telemetry and events, and polls the street closures. Events that
call for a re-plan (see ``replan.py``) start a coalescing window; when it closes, every
trigger heard in it is handled in one re-plan per affected fraction: the day's state is
read from the database (merged with what the service heard itself, so an event the
ingest has not stored yet still counts), the remaining work is solved again, from the
current routes and cold side by side (the better wins, ``replan.solve_replan``), the
stability rule keeps drivers' orders where the gain is small, the answer is checked with
``check_plan``, and every truck whose route changed gets a new version (stored, then
pushed on ``{prefix}/v1/truck/{id}/cmd/route``) whose reason lists the triggers.

Threads: paho's network loop parses messages and queues triggers; one worker thread
coalesces, re-plans, stores and publishes, and polls closures and current routes when
idle; the caller's thread waits for SIGINT/SIGTERM or the `stop` event. The worker beats
a heartbeat as it goes: on CITYOPS_REPLANNER_METRICS_PORT, `/healthz` turns 503 when it
stays silent longer than CITYOPS_REPLANNER_LIVENESS_LIMIT_S (plus the solve's time
limit while it solves), and `/metrics` serves `replanner_metrics`.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from types import FrameType
from typing import Any, Final, ParamSpec, TypeVar

import numpy as np
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import ValidationError

from cityops.ingest import lorawan
from cityops.ingest.city import load_city
from cityops.ingest.codecs import FieldMapping
from cityops.ingest.config import Settings
from cityops.ingest.contract import (
    CONTRACT_VERSION,
    BinTelemetry,
    DeviceKind,
    RouteCommand,
    TopicError,
    TruckEvent,
    TruckTelemetry,
    command_topic,
    parse_topic,
    payload_model,
)
from cityops.ingest.db import connect
from cityops.ingest.decode import Decoded, Limits
from cityops.ingest.lorawan_readings import LoraSensor, uplink_reading
from cityops.ingest.mqttclient import close_client, make_client
from cityops.routing.check import check_plan
from cityops.routing.closures import Closure, apply_closures, closure_key
from cityops.routing.extract import network_for
from cityops.routing.model import Engine, Plan
from cityops.routing.network import RoadNetwork, load_network
from cityops.routing.planning import BERLIN, DayAxis, plan_to_routes
from cityops.routing.replan import (
    CachingNetwork,
    DayState,
    Emptying,
    Replan,
    ReplanOptions,
    Solved,
    Trigger,
    TriggerKind,
    bin_trigger,
    build_replan,
    changed_trucks,
    day_state,
    describe,
    emptied_for,
    event_trigger,
    idle_route,
    late_trigger,
    refilled,
    relax_urgent,
    solve_replan,
    stabilize,
    triggers_by_fraction,
    unfold,
    with_fraction,
)
from cityops.routing.replanner_metrics import ReplannerMetrics
from cityops.routing.repository import (
    closures_active_at,
    closures_changed_since,
    closures_stamp,
    current_routes_on,
    load_bin_sensors,
    load_bins,
    load_break_ends,
    load_closures,
    load_lora_sensors,
    load_sites,
    load_truck_events,
    load_truck_states,
    load_trucks,
    next_version,
    store_route,
)
from cityops.routing.rows import TruckEventRow, TruckStateRow
from cityops.routing.solver import OrToolsEngine

__all__ = ["CLIENT_ID", "ColdPool", "ReplanReport", "Replanner", "run_replanner"]

logger = logging.getLogger(__name__)

CLIENT_ID: Final = "cityops-replanner"
#: Events older than this are of little use for re-planning; the database has the rest.
SESSION_EXPIRY_S: Final = 3600
CLOSURE_POLL_S: Final = 5.0
ROUTES_REFRESH_S: Final = 30.0
LATE_COOLDOWN_S: Final = 300.0
_PUBLISH_TIMEOUT_S: Final = 5.0
_POOL_START_S: Final = 60.0
_BEGIN_S: Final = 1.0


@dataclass(frozen=True)
class ReplanReport:
    """One re-plan of one fraction, for logs, tests and the benchmark."""

    fraction: str
    reason: str
    triggers: tuple[Trigger, ...]
    replan: Replan
    plan: Plan  # the answer to replan.problem (the work after the pinned visits)
    routes: tuple[RouteCommand, ...]  # the new versions (empty when nothing changed)
    violations: tuple[str, ...]
    pushed: int
    phases_ms: Mapping[str, float]  # load, build, solve, check, store, push
    first_event_mono: float  # time.monotonic() when the window's first trigger arrived
    published_mono: float  # time.monotonic() when the last version was acknowledged
    whole: Plan | None = None  # the plan as sent: pinned visits first (replan.whole's)
    kept: tuple[str, ...] = ()  # trucks that kept their order (see replan.stabilize)
    solved: Solved | None = None  # the candidates' scores and which one won


@dataclass(frozen=True, slots=True)
class _Queued:
    trigger: Trigger
    received: float  # time.monotonic()


class Replanner:
    """The re-planning service. `start()` returns once the state is loaded and the client
    connects in the background; `stop()` ends the worker and disconnects."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        time_limit_s: float = 1.0,
        coalesce_s: float = 2.0,
        seed: int = 0,
        network: RoadNetwork | None = None,
        options: ReplanOptions | None = None,
        client_id: str = CLIENT_ID,
        clock: Callable[[], datetime] | None = None,
        closure_poll_s: float = CLOSURE_POLL_S,
        on_replan: Callable[[ReplanReport], None] | None = None,
    ) -> None:
        if time_limit_s <= 0 or coalesce_s < 0:
            raise ValueError("time_limit_s must be positive and coalesce_s >= 0")
        self.settings = settings
        self.engine: Engine = engine or OrToolsEngine()
        self.time_limit_s = time_limit_s
        self.coalesce_s = coalesce_s
        self.seed = seed
        self.options = options or ReplanOptions()
        self.client_id = client_id
        self._clock = clock or (lambda: datetime.now(UTC))
        self._closure_poll_s = closure_poll_s
        self._on_replan = on_replan
        self._base_network = network
        self._network: RoadNetwork | None = None
        self._network_key: str | None = None

        self._queue: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # What the listener needs without the database, refreshed by the worker.
        self._sensors: dict[str, str] = {}
        # Bins reporting through LoRaWAN network servers (docs/devices.md): their uplinks
        # are decoded as the ingest decodes them, the city profile's mappings included.
        lorawan_on = bool(set(settings.sources) - {"cityops"})
        root = settings.ingest_lorawan_root
        self._lora_root: str | None = (f"{root}/" if root else "") if lorawan_on else None
        self._lora: dict[str, LoraSensor] = {}
        self._lora_mappings: dict[str, FieldMapping] = {}
        if lorawan_on:
            self._lora_mappings = {
                model: FieldMapping.parse(spec)
                for model, spec in load_city(settings).lorawan_mappings.items()
            }
        self._routes: dict[str, RouteCommand] = {}
        self._done: dict[str, Emptying] = {}  # bin -> its last emptying today
        # Sensors of bins emptied today that have not reported a level below overflow_pct
        # since: a stuck sensor must not send a truck back (read without the lock).
        self._awaiting_low: set[str] = set()
        self._day = self._clock().astimezone(BERLIN).date()
        # What the service heard itself (the ingest may not have stored it yet).
        self._events: list[TruckEventRow] = []
        self._positions: dict[str, TruckStateRow] = {}
        self._flagged: set[tuple[str, str]] = set()  # (bin id, trigger kind), today
        self._late_at: dict[str, float] = {}
        self._closures: tuple[datetime | None, int] | None = None
        self._active_closures: frozenset[str] = frozenset()
        # Edges (src * n_nodes + dst) of the base network the active closures remove, and
        # the node at each coordinate (to read a route's geometry as edges).
        self._closed_edges: np.ndarray[Any, np.dtype[np.int64]] = np.empty(0, np.int64)
        self._node_at: dict[tuple[float, float], int] | None = None

        self._conn: psycopg.Connection[Any] | None = None
        # Prometheus metrics and the worker's heartbeat (served by start() on the port of
        # CITYOPS_REPLANNER_METRICS_PORT): a worker stuck in a call turns /healthz 503.
        self.metrics = ReplannerMetrics(settings.replanner_liveness_limit_s)
        self._heartbeat = self.metrics.liveness.loop("worker")
        # the cold solve's process (see replan.solve_replan), made in start()
        self._pool: ColdPool | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._done_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = self._make_client()

    # ------------------------------------------------------------------ MQTT side
    def _make_client(self) -> mqtt.Client:
        client = make_client(self.settings, self.client_id)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    @property
    def subscriptions(self) -> list[str]:
        head = f"{self.settings.topic_prefix}/{CONTRACT_VERSION}"
        topics = [f"{head}/bin/+/telemetry", f"{head}/truck/+/+"]
        if self._lora_root is not None:
            topics += [f"{self._lora_root}{lorawan.SUBSCRIPTIONS[s]}"
                       for s in self.settings.sources if s != "cityops"]
        return topics

    def _on_connect(
        self, client: mqtt.Client, _ud: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            logger.error("broker refused the connection of %s: %s", self.client_id, reason)
            return
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.subscriptions])
        logger.info(
            "replanner connected to %s:%s as %s (session present: %s), subscribing to %s",
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            self.client_id,
            flags.session_present,
            ", ".join(self.subscriptions),
        )

    def _on_subscribe(self, _c: mqtt.Client, _ud: Any, _mid: int, codes: Any, _p: Any) -> None:
        if any(getattr(c, "is_failure", False) for c in codes):
            logger.error("subscription refused: %s", codes)
            return
        self._ready.set()
        self.metrics.connected.set(1)

    def _on_disconnect(
        self, _client: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._ready.clear()
        self.metrics.connected.set(0)
        if not self._stopping.is_set():
            logger.warning("replanner disconnected from broker (%s); reconnecting", reason)

    def _on_message(self, _client: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        received = time.monotonic()
        if self._lora_root is not None and not msg.topic.startswith(
            f"{self.settings.topic_prefix}/{CONTRACT_VERSION}/"
        ):
            self._on_uplink(msg, received)
            return
        try:
            info = parse_topic(self.settings.topic_prefix, msg.topic)
        except TopicError:
            return
        model = payload_model(info.kind, info.channel)
        if model not in (BinTelemetry, TruckTelemetry, TruckEvent):
            return
        try:
            payload = model.model_validate_json(msg.payload)
        except ValidationError:
            logger.debug("invalid payload on %s ignored (the ingest dead-letters it)", msg.topic)
            return
        trigger: Trigger | None = None
        if isinstance(payload, BinTelemetry):
            trigger = self._bin_reading(info.device_id, payload)
        elif isinstance(payload, TruckEvent):
            trigger = self._truck_event(info.device_id, payload)
        elif isinstance(payload, TruckTelemetry):
            trigger = self._truck_position(info.device_id, payload)
        if trigger is not None:
            logger.info("trigger: %s (from %s)", trigger, msg.topic)
            self.metrics.triggers.labels(trigger.kind.value).inc()
            self._queue.put(_Queued(trigger, received))

    def _on_uplink(self, msg: mqtt.MQTTMessage, received: float) -> None:
        """A LoRaWAN uplink: the same reading the ingest stores, then as any bin reading."""
        root = self._lora_root or ""
        if not msg.topic.startswith(root):
            return
        now = datetime.now(UTC)
        up = lorawan.parse_uplink(msg.topic[len(root):], bytes(msg.payload), now)
        if not isinstance(up, lorawan.Uplink):
            return  # the ingest dead-letters it
        sensor = self._lora.get(up.dev_eui)
        if sensor is None:
            return
        result = uplink_reading(up, sensor, self._lora_mappings, now, Limits())
        if not isinstance(result, Decoded) or not isinstance(result.payload, BinTelemetry):
            return
        trigger = self._bin_reading(up.dev_eui, result.payload)
        if trigger is not None:
            logger.info("trigger: %s (from %s)", trigger, msg.topic)
            self.metrics.triggers.labels(trigger.kind.value).inc()
            self._queue.put(_Queued(trigger, received))

    def _bin_reading(self, sensor_id: str, reading: BinTelemetry) -> Trigger | None:
        if reading.fill_pct < self.options.overflow_pct and (
            reading.temperature_c is None or reading.temperature_c < self.options.fire_c
        ):
            if sensor_id in self._awaiting_low:  # rare: a bin emptied today
                self._seen_low(sensor_id, reading)
            return None  # the common case: no lock, no lookup
        with self._lock:
            bin_id = self._sensors.get(sensor_id)
            if bin_id is None:
                logger.info("alarm from unknown bin sensor %s ignored", sensor_id)
                return None
            trigger = bin_trigger(bin_id, reading, self.options)
            if trigger is None:
                return None
            refill = self.options.refill_after
            emptied = self._done.get(bin_id)
            if emptied is not None and not refilled(
                bin_id, trigger.at, self._clock(), self._done, refill
            ):
                logger.info(
                    "%s: emptied at %s, reading of %s too close to it, ignored",
                    trigger,
                    f"{emptied.at.astimezone(BERLIN):%H:%M}",
                    f"{trigger.at.astimezone(BERLIN):%H:%M}",
                )
                return None
            if trigger.kind is TriggerKind.OVERFLOW and sensor_id in self._awaiting_low:
                logger.info(
                    "%s: no reading below %g%% since its emptying at %s (stuck sensor?), ignored",
                    trigger,
                    self.options.overflow_pct,
                    f"{emptied.at.astimezone(BERLIN):%H:%M}" if emptied else "?",
                )
                return None
            if trigger.kind is TriggerKind.OVERFLOW and any(
                any(s.bin_id == bin_id for s in r.stops)
                and bin_id not in emptied_for(r, self._done, refill)
                for r in self._routes.values()
            ):
                return None  # still to come on a route today: nothing to do
            key = (bin_id, str(trigger.kind))
            if key in self._flagged:
                return None
            self._flagged.add(key)
        return trigger

    def _seen_low(self, sensor_id: str, reading: BinTelemetry) -> None:
        with self._lock:
            bin_id = self._sensors.get(sensor_id)
            emptied = self._done.get(bin_id) if bin_id is not None else None
            if emptied is None or reading.ts > emptied.at:
                self._awaiting_low.discard(sensor_id)

    def _truck_event(self, truck_id: str, event: TruckEvent) -> Trigger | None:
        heard = self._clock()
        row = TruckEventRow(truck_id, event.ts, event.kind, event.bin_id, event.reason, heard)
        with self._lock:
            self._events.append(row)
            if event.kind == "stop_done" and event.bin_id:
                self._emptied(event.bin_id, event.ts, heard)
        if event.kind == "stop_done":
            logger.debug("truck %s emptied %s", truck_id, event.bin_id)
        return event_trigger(truck_id, event)

    def _truck_position(self, truck_id: str, t: TruckTelemetry) -> Trigger | None:
        row = TruckStateRow(truck_id, t.ts, t.lat, t.lon, t.load_l)
        with self._lock:
            old = self._positions.get(truck_id)
            if old is None or old.ts <= t.ts:
                self._positions[truck_id] = row
            trigger = late_trigger(
                truck_id, t.ts, self._routes.get(truck_id), self._done, self.options
            )
            if trigger is None:
                return None
            last = self._late_at.get(truck_id)
            if last is not None and time.monotonic() - last < LATE_COOLDOWN_S:
                return None
            self._late_at[truck_id] = time.monotonic()
        return trigger

    # ---------------------------------------------------------------- worker side
    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(
                self.settings.database_url, autocommit=True, application_name=self.client_id
            )
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def _refresh(self) -> None:
        """Reload what the listener checks against: sensors, today's routes, done bins."""
        now = self._clock()
        axis = DayAxis(now.astimezone(BERLIN).date())
        conn = self._connection()
        sensors = load_bin_sensors(conn)
        lora = load_lora_sensors(conn) if self._lora_root is not None else {}
        routes = current_routes_on(conn, axis.day, geometry=False)
        events = load_truck_events(conn, axis.midnight)
        with self._lock:
            if axis.day != self._day:
                logger.info("new day %s: forgetting yesterday's triggers", axis.day)
                self._day = axis.day
                self._flagged.clear()
                self._late_at.clear()
                self._done.clear()
                self._awaiting_low.clear()
                self._events = [e for e in self._events if e.ts >= axis.midnight]
            self._sensors = sensors
            self._lora = lora
            self._routes = routes
            for e in events:
                if e.kind == "stop_done" and e.bin_id:
                    self._emptied(e.bin_id, e.ts, e.known_at or e.ts)

    def _emptied(self, bin_id: str, ts: datetime, known_at: datetime) -> None:
        """Record an emptying (under the lock): once the bin has reported a lower level, its
        alarms may trigger again (it filled up again)."""
        last = self._done.get(bin_id)
        if last is None or ts > last.at:
            self._done[bin_id] = Emptying(ts, known_at)
            self._flagged = {k for k in self._flagged if k[0] != bin_id}
            self._awaiting_low.update(s for s, b in self._sensors.items() if b == bin_id)
        elif ts == last.at and known_at < last.known_at:
            self._done[bin_id] = Emptying(ts, known_at)  # heard before the ingest stored it

    def _poll_closures(self) -> None:
        """Queue a closure trigger when a row was added, changed or removed, or when a
        closure began or ended since the last poll (its row unchanged)."""
        conn = self._connection()
        now = self._clock()
        stamp = closures_stamp(conn)
        active = closures_active_at(conn, now)
        if self._closures is None:
            self._closures, self._active_closures = stamp, active
            return
        ids = set(active ^ self._active_closures)
        removed = False
        if stamp != self._closures:
            changed = closures_changed_since(conn, self._closures[0])
            ids.update(changed)
            removed = not changed
        self._closures, self._active_closures = stamp, active
        if not ids and not removed:
            return
        triggers = [Trigger(TriggerKind.CLOSURE, now, detail=c) for c in sorted(ids)] or [
            Trigger(TriggerKind.CLOSURE, now)  # one was removed
        ]
        for t in triggers:
            logger.info("trigger: %s", t)
            self.metrics.triggers.labels(t.kind.value).inc()
            self._queue.put(_Queued(t, time.monotonic()))

    def _load(self, now: datetime) -> tuple[DayState, list[Closure]]:
        axis = DayAxis(now.astimezone(BERLIN).date())
        conn = self._connection()
        bins = load_bins(conn)
        sites = load_sites(conn)
        trucks = load_trucks(conn)
        routes = current_routes_on(conn, axis.day, geometry=False)
        events = load_truck_events(conn, axis.midnight)
        states = load_truck_states(conn)
        breaks = load_break_ends(conn, axis.day, now)
        closures = load_closures(conn, valid_at_or_after=now)
        with self._lock:
            heard = list(self._events)
            positions = dict(self._positions)
        seen = {(e.truck_id, e.ts, e.kind, e.bin_id) for e in events}
        events.extend(e for e in heard if (e.truck_id, e.ts, e.kind, e.bin_id) not in seen)
        for truck_id, row in positions.items():
            old = states.get(truck_id)
            if old is None or old.ts < row.ts:
                states[truck_id] = row
        state = day_state(
            now=now,
            bins=bins,
            sites=sites,
            trucks=trucks,
            routes=routes,
            events=events,
            states=states,
            break_ends=breaks,
            options=self.options,
        )
        return state, closures

    def _network_at(self, closures: Sequence[Closure], now: datetime) -> RoadNetwork:
        base = self._base_network
        assert base is not None  # loaded in start()
        active = [c for c in closures if c.active_at(now)]
        key = closure_key(active)
        if key != self._network_key or self._network is None:
            derived, effects = apply_closures(base, active, now)
            self._network = CachingNetwork.of(derived)
            self._network_key = key
            self._closed_edges = np.setdiff1d(_edge_codes(base, base), _edge_codes(base, derived))
            for e in effects:
                logger.info("closure %s affects %s", e.closure_id, ", ".join(e.streets) or "-")
        return self._network

    def _worker(self) -> None:
        next_poll = next_refresh = time.monotonic()
        beat = self._heartbeat.beat
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                self.metrics.queued.set(self._queue.qsize())
                try:
                    if now >= next_poll:
                        next_poll = now + self._closure_poll_s
                        beat("polling street closures")
                        self._poll_closures()
                        self.metrics.last_poll.set(time.time())
                    if now >= next_refresh:
                        next_refresh = now + ROUTES_REFRESH_S
                        beat("reloading sensors, routes and emptyings")
                        self._refresh()
                except psycopg.Error as exc:
                    self._drop_connection()
                    self.metrics.errors.labels("poll").inc()
                    logger.warning("replanner: database unavailable (%s); retrying", exc)
                beat("waiting for triggers", grace_s=self.coalesce_s)
                wait = max(0.05, min(next_poll, next_refresh, now + 0.5) - time.monotonic())
                try:
                    first = self._queue.get(timeout=wait)
                except queue.Empty:
                    continue
                batch = [first]
                deadline = first.received + self.coalesce_s
                while not self._stopping.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(self._queue.get(timeout=remaining))
                    except queue.Empty:
                        break
                if self._stopping.is_set():
                    logger.warning("stopping: %d triggers not handled", len(batch))
                    break
                beat(f"re-planning for {_shorten(describe([q.trigger for q in batch]))}")
                self._handle(batch)
        except Exception:
            logger.exception("replanner worker crashed; stopping so a supervisor restarts it")
        finally:
            self._done_event.set()

    def _handle(self, batch: Sequence[_Queued]) -> list[ReplanReport]:
        """One coalesced window: one re-plan per affected fraction."""
        triggers = [q.trigger for q in batch]
        first = min(q.received for q in batch)
        now = self._clock()
        reports: list[ReplanReport] = []
        try:
            started = time.monotonic()
            state, closures = self._load(now)
            groups = triggers_by_fraction(triggers, state)
            if not groups:
                logger.info("no re-plan needed for: %s", describe(triggers))
                return reports
            network = self._network_at(closures, now)
            load_ms = (time.monotonic() - started) * 1000
            for fraction, group in groups.items():
                reports.append(self._replan(state, fraction, group, network, first, load_ms))
        except (psycopg.Error, OSError) as exc:
            self._drop_connection()
            self.metrics.errors.labels("replan").inc()
            logger.error("re-plan of %s failed: %s", describe(triggers), exc)
            self._unflag(triggers)
        except Exception:
            self.metrics.errors.labels("replan").inc()
            logger.exception("re-plan of %s failed", describe(triggers))
            self._unflag(triggers)
        return reports

    def _unflag(self, triggers: Sequence[Trigger]) -> None:
        """Let a bin raise its alarm again after a failed re-plan."""
        with self._lock:
            for t in triggers:
                self._flagged.discard((t.bin_id or "", str(t.kind)))

    def _replan(
        self,
        state: DayState,
        fraction: str,
        triggers: Sequence[Trigger],
        network: RoadNetwork,
        first: float,
        load_ms: float,
    ) -> ReplanReport:
        phases = {"load": load_ms}
        clock = time.monotonic()

        def lap(name: str, then: str, grace_s: float = 0.0) -> None:
            nonlocal clock
            now = time.monotonic()
            phases[name] = (now - clock) * 1000
            clock = now
            self._heartbeat.beat(f"re-plan of {fraction}: {then}", grace_s=grace_s)

        replan = build_replan(
            state,
            fraction,
            triggers,
            network=network,
            options=self.options,
        )
        # the solve may run twice (see relax_urgent), each up to the time limit
        lap("build", "solving", grace_s=2 * self.time_limit_s)
        solved = solve_replan(
            self.engine, replan, time_limit_s=self.time_limit_s, seed=self.seed, pool=self._pool
        )
        missed = replan.urgent & {u.stop_id for u in solved.plan.unserved}
        if missed:
            logger.warning(
                "%s: no truck can reach %s within %d min; planned as soon as possible",
                fraction,
                ", ".join(sorted(missed)),
                self.options.fire_within_s // 60,
            )
            replan = relax_urgent(replan)
            solved = solve_replan(
                self.engine,
                replan,
                time_limit_s=self.time_limit_s,
                seed=self.seed,
                initial=solved.plan,
                pool=self._pool,
            )
        plan = solved.plan
        closed: list[str] = []
        if any(t.kind is TriggerKind.CLOSURE for t in triggers):
            planned = [r.vehicle_id for r in plan.routes]
            closed = self._on_closed_streets(replan.axis.day, planned)
        stable, kept = stabilize(replan, plan, self.options, forced=closed)
        whole = unfold(replan, stable)
        lap("solve", "checking")
        reason = replan.reason
        violations = tuple(str(v) for v in check_plan(replan.whole, whole))
        if violations and kept:
            logger.warning(
                "%s: keeping the current order of %s fails the check (%s); sending the "
                "engine's routes",
                fraction,
                ", ".join(kept),
                violations[0],
            )
            kept, whole = [], unfold(replan, plan)
            violations = tuple(str(v) for v in check_plan(replan.whole, whole))
        else:
            plan = stable
        lap("check", "storing")
        if violations:
            logger.error(
                "re-plan of %s (%s) fails the feasibility check, not sent: %s",
                fraction,
                reason,
                "; ".join(violations[:10]),
            )
            self._unflag(triggers)
            return self._report(
                replan, plan, (), violations, 0, phases, first, triggers, whole, kept, solved
            )
        changed = changed_trucks(replan, whole, eta_tolerance_s=self.options.eta_tolerance_s)
        changed.extend(t for t in closed if t not in changed)
        routes = self._store(replan, whole, changed, network, reason)
        lap("store", "pushing")
        pushed = self._push(routes)
        lap("push", "done")
        with self._lock:
            self._routes.update({r.truck_id: r for r in routes})
            for r in routes:
                self._late_at[r.truck_id] = time.monotonic()  # its ETAs are fresh now
        report = self._report(
            replan, plan, routes, (), pushed, phases, first, triggers, whole, kept, solved
        )
        logger.info(
            "re-plan %s [%s]: %s; solve %.0f ms, %d unserved, %.0f ms since the first event (%s)",
            fraction,
            reason,
            ", ".join(f"{r.truck_id} v{r.version}" for r in routes) or "no route changed",
            phases["solve"],
            len(plan.unserved),
            (report.published_mono - first) * 1000,
            ", ".join(f"{k} {v:.0f}" for k, v in phases.items()),
        )
        for u in plan.unserved:
            if u.stop_id in {t.bin_id for t in triggers}:
                logger.warning("re-plan %s: %s not served: %s", fraction, u.stop_id, u.reason)
        return report

    def _on_closed_streets(self, day: date, trucks: Sequence[str]) -> list[str]:
        """The trucks whose current route drives a street the active closures remove.

        They need a new version even when their stops and ETAs stay (a short detour):
        the route on their tablet must not lead into the closed street."""
        if not self._closed_edges.size or not trucks:
            return []
        base = self._base_network
        assert base is not None
        if self._node_at is None:
            self._node_at = {
                (float(x), float(y)): i
                for i, (x, y) in enumerate(zip(base.lon, base.lat, strict=True))
            }
        node_at = self._node_at
        routes = current_routes_on(self._connection(), day)
        out: list[str] = []
        for truck in trucks:
            route = routes.get(truck)
            if route is None:
                continue
            nodes = np.asarray(
                [node_at.get((float(c[0]), float(c[1])), -1) for c in route.geometry.coordinates],
                dtype=np.int64,
            )
            if nodes.size < 2:
                continue
            a, b = nodes[:-1], nodes[1:]
            ok = (a >= 0) & (b >= 0)
            driven = a[ok] * base.n_nodes + b[ok]
            if np.isin(driven, self._closed_edges).any():
                logger.info("truck %s: its route drives a closed street", truck)
                out.append(truck)
        return out

    def _report(
        self,
        replan: Replan,
        plan: Plan,
        routes: tuple[RouteCommand, ...],
        violations: tuple[str, ...],
        pushed: int,
        phases: dict[str, float],
        first: float,
        triggers: Sequence[Trigger],
        whole: Plan | None = None,
        kept: Sequence[str] = (),
        solved: Solved | None = None,
    ) -> ReplanReport:
        report = ReplanReport(
            fraction=replan.fraction,
            reason=replan.reason,
            triggers=tuple(triggers),
            replan=replan,
            plan=plan,
            routes=routes,
            violations=violations,
            pushed=pushed,
            phases_ms=phases,
            first_event_mono=first,
            published_mono=time.monotonic(),
            whole=whole,
            kept=tuple(kept),
            solved=solved,
        )
        self.metrics.observe_replan(
            sent=len(routes),
            pushed=pushed,
            rejected=bool(violations),
            phases_ms=phases,
            event_to_push_s=report.published_mono - first,
        )
        if self._on_replan is not None:
            self._on_replan(report)
        return report

    def _store(
        self,
        replan: Replan,
        plan: Plan,
        changed: Sequence[str],
        network: RoadNetwork,
        reason: str,
    ) -> tuple[RouteCommand, ...]:
        """New versions for the changed and the retired trucks, in one transaction."""
        now = self._clock()
        day = replan.axis.day
        conn = self._connection()
        out: list[RouteCommand] = []
        with conn.transaction():
            trucks = [*changed, *sorted(replan.retired - set(changed))]
            versions = {t: next_version(conn, t, day) for t in trucks}
            moving = replace(
                plan, routes=tuple(r for r in plan.routes if r.vehicle_id in changed and r.visits)
            )
            out.extend(
                plan_to_routes(
                    problem=replan.whole,
                    plan=moving,
                    locations=replan.locations,
                    network=network,
                    axis=replan.axis,
                    versions=versions,
                    reason=reason,
                    created_at=now,
                )
            )
            with_route = {r.truck_id for r in out}
            for t in trucks:
                if t in with_route:
                    continue
                out.append(
                    idle_route(
                        truck_id=t,
                        day=day,
                        version=versions[t],
                        at=now,
                        where=replan.positions[t],
                        load_l=replan.loads.get(t, 0),
                        reason="breakdown" if t in replan.retired else reason,
                    )
                )
            out = [with_fraction(r, replan.fraction) for r in out]
            for r in out:
                store_route(conn, r)
        return tuple(out)

    def _push(self, routes: Sequence[RouteCommand]) -> int:
        """Publish each version on its truck's cmd/route topic (QoS 1, not retained)."""
        infos = []
        for r in routes:
            topic = command_topic(self.settings.topic_prefix, DeviceKind.TRUCK, r.truck_id, "route")
            infos.append((r, self._client.publish(topic, r.model_dump_json(), qos=1)))
        acked = 0
        for r, info in infos:
            self._heartbeat.beat(f"pushing {r.truck_id} v{r.version}", grace_s=_PUBLISH_TIMEOUT_S)
            try:
                info.wait_for_publish(timeout=_PUBLISH_TIMEOUT_S)
            except (RuntimeError, ValueError) as exc:
                logger.error("route %s v%d stored but not pushed: %s", r.truck_id, r.version, exc)
                continue
            if info.is_published():
                acked += 1
            else:
                logger.error(
                    "route %s v%d stored but not acknowledged by the broker; the truck gets it "
                    "from the API",
                    r.truck_id,
                    r.version,
                )
        return acked

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Load the network and today's state, then connect and start the worker."""
        s = self.settings
        logger.info(
            "replanner %s starting: database %s, broker %s:%s, prefix %r, time limit %.1f s, "
            "coalescing %.1f s",
            self.client_id,
            s.redacted_database_url(),
            s.mqtt_host,
            s.mqtt_port,
            s.topic_prefix,
            self.time_limit_s,
            self.coalesce_s,
        )
        beat = self._heartbeat.beat
        if s.replanner_metrics_port:
            self.metrics.endpoint.serve(s.replanner_metrics_port)
        if self._base_network is None:
            beat("loading the road network")
            # The same network the daily plan uses (cityops.routing.extract).
            self._base_network = load_network(network_for(s))
        beat("loading today's routes")
        self._refresh()
        beat("starting the cold-solve process", grace_s=_POOL_START_S)
        self._start_pool()
        beat("reading street closures")
        self._closures = closures_stamp(self._connection())
        self._active_closures = closures_active_at(self._connection(), self._clock())
        beat("warming up the network")
        self._warm_up()
        beat("starting the worker")
        self._thread = threading.Thread(target=self._worker, name="replanner", daemon=True)
        self._thread.start()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self._client.connect_async(
            s.mqtt_host, s.mqtt_port, keepalive=30, clean_start=False, properties=props
        )
        self._client.loop_start()

    def _start_pool(self) -> None:
        """One worker process for the cold solves, started (spawned: the service runs
        threads) and its imports done before the first event, so a re-plan pays neither.
        Without it (a worker that cannot start) warm and cold solves run one after the
        other."""
        pool = ColdPool()
        try:
            pool.submit(_load_solver).result(timeout=_POOL_START_S)
        except (BrokenExecutor, OSError, TimeoutError) as exc:
            logger.error("replanner: no process for cold solves (%s); solving in turn", exc)
            pool.shutdown(wait=False, cancel_futures=True)
            return
        self._pool = pool

    def _warm_up(self) -> None:
        """Compute what the first re-plan would: the cost rows of the sites and of every
        place on today's routes, and the streets along them."""
        started = time.monotonic()
        now = self._clock()
        conn = self._connection()
        network = self._network_at(load_closures(conn, valid_at_or_after=now), now)
        with self._lock:
            routes = list(self._routes.values())
        places = [(s.lat, s.lon) for s in load_sites(conn)]
        legs: list[tuple[int, int]] = []
        for r in routes:
            nodes = [network.nearest_node(s.lat, s.lon) for s in r.stops if s.kind != "break"]
            legs.extend(itertools.pairwise(nodes))
            places.extend((s.lat, s.lon) for s in r.stops)
        nodes = sorted({network.nearest_node(lat, lon) for lat, lon in places})
        for weight in ("time", "length"):
            network.matrix(nodes, nodes, weight)
        for a, b in legs:
            network.shortest_path(a, b, "time")
        logger.info(
            "replanner warmed up: %d places, %d legs of %d routes in %.1f s",
            len(nodes),
            len(legs),
            len(routes),
            time.monotonic() - started,
        )

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Whether the subscriptions are in place (events are heard from then on)."""
        return self._ready.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done_event.is_set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        close_client(self._client)
        self._drop_connection()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.metrics.endpoint.shutdown()
        logger.info("replanner %s stopped", self.client_id)


_P = ParamSpec("_P")
_T = TypeVar("_T")
#: In the cold-solve process: set when a call begins (see ColdPool).
_begun: Any = None


def _init_worker(begun: Any) -> None:
    global _begun  # the worker process's one piece of state, set once
    _begun = begun


def _begin(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    if _begun is not None:
        _begun.set()
    return fn(*args, **kwargs)


class ColdPool(Executor):
    """One spawned worker process for the cold solves, whose `submit` returns once the
    process has begun the call.

    Why wait: the caller's next step, the warm solve, holds the GIL for the whole time
    limit (OR-Tools does not release it), and the pool's feeder thread needs the GIL to
    send the call; without the wait the cold solve sometimes began only after the warm
    one, doubling the solve time (2 s instead of 1 s in 2 of 40 benchmark events)."""

    def __init__(self) -> None:
        spawn = multiprocessing.get_context("spawn")
        self._begun = spawn.Event()
        self._pool = ProcessPoolExecutor(
            max_workers=1, mp_context=spawn, initializer=_init_worker, initargs=(self._begun,)
        )

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        self._begun.clear()
        future = self._pool.submit(_begin, fn, *args, **kwargs)
        if not self._begun.wait(_BEGIN_S) and not future.done():
            logger.warning("the cold solve has not begun after %.1f s", _BEGIN_S)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def _load_solver() -> str:
    """Run in the cold-solve process once: import the engine's module (seconds of
    imports) before it is needed."""
    return OrToolsEngine().name


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _edge_codes(base: RoadNetwork, network: RoadNetwork) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The directed edges of `network` (same nodes as `base`) as src * n_nodes + dst."""
    return network.src.astype(np.int64) * base.n_nodes + network.dst.astype(np.int64)


def run_replanner(
    settings: Settings,
    *,
    time_limit_s: float = 1.0,
    coalesce_s: float = 2.0,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
    clock: Callable[[], datetime] | None = None,
) -> int:
    """Entry point of `cityops routing replan`: run until SIGINT/SIGTERM (when called from
    the main thread) or until `stop` is set. `ready` is set once the subscriptions are in
    place; `clock` gives "now" (default: the system clock; tests and simulations pass
    their own). Returns 0 after a requested stop, 1 when the service failed."""
    stop = stop or threading.Event()
    service = Replanner(settings, time_limit_s=time_limit_s, coalesce_s=coalesce_s, clock=clock)
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def _handle(signum: int, _frame: FrameType | None) -> None:
            logger.info("received %s", signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _handle)
    try:
        try:
            service.start()
        except (psycopg.Error, OSError) as exc:
            logger.error("replanner cannot start: %s", exc)
            service.metrics.endpoint.shutdown()
            return 1
        while not stop.is_set() and service.running:
            if ready is not None and not ready.is_set() and service.wait_ready(0):
                ready.set()
            stop.wait(0.1 if ready is not None and not ready.is_set() else 1.0)
        failed = not stop.is_set()
        service.stop()
        return 1 if failed else 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
