"""`cityops routing replan`: re-plan today's routes while the trucks drive them.

The service listens on MQTT (``listen.py``) to bin telemetry and truck telemetry and
events, and polls the street closures. Events that call for a re-plan (``triggers.py``)
start a coalescing window; when it closes, every trigger heard in it is handled in one
re-plan per affected fraction: the day's state is read from the database (merged with
what the service heard itself, ``heard.py``, so an event the ingest has not stored yet
still counts), ``pipeline.replan_fraction`` decides everything from the problem to the
trucks that need a new version, and those versions are stored, then pushed on
``{prefix}/v1/truck/{id}/cmd/route`` (``routing/publish.py``).

It runs on the MQTT service skeleton (``cityops.ingest.mqttservice``): paho's network
thread turns messages into triggers (:meth:`Replanner._accept`) and queues them; one worker
thread takes each coalescing window as a batch and re-plans, stores and publishes, and
polls closures and current routes between batches; the caller's thread waits for
SIGINT/SIGTERM or the `stop` event. The service supplies only those. The worker beats
a heartbeat as it goes: on CITYOPS_REPLANNER_METRICS_PORT, `/healthz` turns 503 when it
stays silent longer than CITYOPS_REPLANNER_LIVENESS_LIMIT_S (plus the solve's time
limit while it solves), and `/metrics` serves `metrics.py`'s series.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import paho.mqtt.client as mqtt
import psycopg

from cityops.ingest.config import Settings
from cityops.ingest.contract import BinTelemetry, RouteCommand, TruckEvent
from cityops.ingest.db import connect
from cityops.ingest.mqttservice import (
    Batching,
    Inbound,
    MqttService,
    Session,
    stop_on_signals,
    wait_for_stop,
)
from cityops.routing import repository as repo
from cityops.routing.extract import network_for
from cityops.routing.model import Engine
from cityops.routing.network import RoadNetwork, load_network
from cityops.routing.planning import BERLIN, DayAxis
from cityops.routing.publish import push_routes
from cityops.routing.replan.day import DayState, triggers_by_fraction
from cityops.routing.replan.heard import Heard
from cityops.routing.replan.listen import SESSION_EXPIRY_S, Listen
from cityops.routing.replan.loading import ClosureWatch, Streets, load_day
from cityops.routing.replan.metrics import ReplannerMetrics
from cityops.routing.replan.options import ReplanOptions
from cityops.routing.replan.pipeline import (
    Outcome,
    ReplanReport,
    Solving,
    replan_fraction,
    route_versions,
)
from cityops.routing.replan.startup import ColdPool, start_cold_pool, warm_network
from cityops.routing.replan.triggers import Trigger, describe
from cityops.routing.solver import OrToolsEngine

__all__ = ["CLIENT_ID", "Replanner", "run_replanner"]

logger = logging.getLogger(__name__)

CLIENT_ID: Final = "cityops-replanner"
CLOSURE_POLL_S: Final = 5.0
ROUTES_REFRESH_S: Final = 30.0
_PUBLISH_TIMEOUT_S: Final = 5.0
_POOL_START_S: Final = 60.0


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
        self._streets = Streets(network)
        self._closure_watch = ClosureWatch()
        self.heard = Heard(self._clock().astimezone(BERLIN).date())
        self._conn: psycopg.Connection[Any] | None = None
        # Prometheus metrics and the worker's heartbeat (served by start() on the port of
        # CITYOPS_REPLANNER_METRICS_PORT): a worker stuck in a call turns /healthz 503.
        self.metrics = ReplannerMetrics(settings.replanner_liveness_limit_s)
        self._heartbeat = self.metrics.liveness.loop("worker")
        self._pool: ColdPool | None = None  # the cold solve's process, made in start()
        self.listen = Listen(settings, lambda: self.heard.lora)
        self._mqtt: MqttService[_Queued] | None = None  # made in start(), with coalesce_s
        self._next_poll = self._next_refresh = 0.0

    # ------------------------------------------------------------------ MQTT side
    def _accept(self, msg: Inbound) -> _Queued | None:
        """On paho's thread: the trigger a message raises, if any, to queue."""
        decoded = self.listen.decode(msg)
        if decoded is None:
            return None
        device_id, payload = decoded
        if isinstance(payload, BinTelemetry):
            trigger = self.heard.bin_reading(device_id, payload, self._clock(), self.options)
        elif isinstance(payload, TruckEvent):
            trigger = self.heard.truck_event(device_id, payload, self._clock())
        else:
            trigger = self.heard.truck_position(device_id, payload, self.options)
        if trigger is None:
            return None
        logger.info("trigger: %s (from %s)", trigger, msg.topic)
        self.metrics.triggers.labels(trigger.kind.value).inc()
        return _Queued(trigger, msg.t_mono)

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
        axis = DayAxis(self._clock().astimezone(BERLIN).date())
        conn = self._connection()
        self.heard.reload(
            axis.day,
            axis.midnight,
            sensors=repo.load_bin_sensors(conn),
            lora=repo.load_lora_sensors(conn) if self.listen.lora_root is not None else {},
            routes=repo.current_routes_on(conn, axis.day, geometry=False),
            events=repo.load_truck_events(conn, axis.midnight),
        )

    def _poll_closures(self) -> None:
        """Queue a trigger for each change of the street closures."""
        for t in self._closure_watch.poll(self._connection(), self._clock()):
            logger.info("trigger: %s", t)
            self.metrics.triggers.labels(t.kind.value).inc()
            if self._mqtt is not None:
                self._mqtt.put(_Queued(t, time.monotonic()))

    def _periodic(self) -> float:
        """Between batches: poll the closures and reload the routes when due; returns the
        seconds until the next is due."""
        now, beat = time.monotonic(), self._heartbeat.beat
        try:
            if now >= self._next_poll:
                self._next_poll = now + self._closure_poll_s
                beat("polling street closures")
                self._poll_closures()
                self.metrics.last_poll.set(time.time())
            if now >= self._next_refresh:
                self._next_refresh = now + ROUTES_REFRESH_S
                beat("reloading sensors, routes and emptyings")
                self._refresh()
        except psycopg.Error as exc:
            self._drop_connection()
            self.metrics.errors.labels("poll").inc()
            logger.warning("replanner: database unavailable (%s); retrying", exc)
        return min(self._next_poll, self._next_refresh) - time.monotonic()

    def _batch(self, batch: list[_Queued]) -> None:
        beat = self._heartbeat.beat
        beat(f"re-planning for {_shorten(describe([q.trigger for q in batch]))}")
        self._handle(batch)

    def _handle(self, batch: Sequence[_Queued]) -> list[ReplanReport]:
        """One coalesced window: one re-plan per affected fraction."""
        triggers = [q.trigger for q in batch]
        first = min(q.received for q in batch)
        now = self._clock()
        reports: list[ReplanReport] = []
        try:
            started = time.monotonic()
            state, closures = load_day(self._connection(), now, self.heard, self.options)
            groups = triggers_by_fraction(triggers, state)
            if not groups:
                logger.info("no re-plan needed for: %s", describe(triggers))
                return reports
            network = self._streets.at(closures, now)
            closed = self._streets.drives_closed(self._connection(), state, triggers)
            load_ms = (time.monotonic() - started) * 1000
            for fraction, group in groups.items():
                reports.append(
                    self._replan(state, fraction, group, network, closed, first, load_ms)
                )
        except (psycopg.Error, OSError) as exc:
            self._drop_connection()
            self.metrics.errors.labels("replan").inc()
            logger.error("re-plan of %s failed: %s", describe(triggers), exc)
            self.heard.unflag(triggers)
        except Exception:
            self.metrics.errors.labels("replan").inc()
            logger.exception("re-plan of %s failed", describe(triggers))
            self.heard.unflag(triggers)
        return reports

    def _replan(
        self,
        state: DayState,
        fraction: str,
        triggers: Sequence[Trigger],
        network: RoadNetwork,
        closed: Sequence[str],
        first: float,
        load_ms: float,
    ) -> ReplanReport:
        """Run the pipeline, then store and push what it decided (nothing when rejected)."""
        outcome = replan_fraction(
            state,
            fraction,
            triggers,
            network=network,
            solving=Solving(self.engine, self.time_limit_s, self.seed, self._pool),
            options=self.options,
            drives_closed=closed,
            progress=lambda doing, grace_s: self._heartbeat.beat(doing, grace_s=grace_s),
        )
        phases = {"load": load_ms, **outcome.phases_ms}
        routes: tuple[RouteCommand, ...] = ()
        pushed = 0
        if outcome.violations:
            self.heard.unflag(triggers)
        else:
            clock = time.monotonic()
            routes = self._store(outcome, network)
            self._heartbeat.beat(f"re-plan of {fraction}: pushing")
            phases["store"] = (time.monotonic() - clock) * 1000
            clock = time.monotonic()
            pushed = push_routes(
                self._client(),
                self.settings.topic_prefix,
                routes,
                timeout_s=_PUBLISH_TIMEOUT_S,
                before_wait=lambda r: self._heartbeat.beat(
                    f"pushing {r.truck_id} v{r.version}", grace_s=_PUBLISH_TIMEOUT_S
                ),
            )
            phases["push"] = (time.monotonic() - clock) * 1000
            self._heartbeat.beat(f"re-plan of {fraction}: done")
            self.heard.sent(routes)
        report = ReplanReport.of(outcome, triggers, routes, pushed, phases, first)
        self.metrics.observe_replan(
            sent=len(routes),
            pushed=pushed,
            rejected=bool(outcome.violations),
            phases_ms=phases,
            event_to_push_s=report.published_mono - first,
        )
        if self._on_replan is not None:
            self._on_replan(report)
        if not outcome.violations:
            report.log_sent()
        return report

    def _store(self, outcome: Outcome, network: RoadNetwork) -> tuple[RouteCommand, ...]:
        """The new versions of the pipeline's receivers, stored in one transaction."""
        now = self._clock()
        conn = self._connection()
        day = outcome.replan.axis.day
        with conn.transaction():
            versions = {t: repo.next_version(conn, t, day) for t in outcome.receivers}
            out = route_versions(outcome, versions, network=network, now=now)
            for r in out:
                repo.store_route(conn, r)
        return tuple(out)

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
        self._mqtt = MqttService(
            s,
            Session(
                self.client_id,
                self.listen.topics,
                clean_start=False,
                session_expiry_s=SESSION_EXPIRY_S,
                keepalive_s=30,
            ),
            name="replanner",
            accept=self._accept,
            handle=self._batch,
            heartbeat=self._heartbeat,
            periodic=self._periodic,
            batching=Batching(
                max_size=0,
                window_s=self.coalesce_s,
                wait_s=0.5,
                min_wait_s=0.05,
                fill_from_backlog=False,
                waiting="waiting for triggers",
            ),
            on_ready=lambda up: self.metrics.connected.set(1 if up else 0),
            backlog=self.metrics.queued.set,
        )
        beat = self._heartbeat.beat
        if s.replanner_metrics_port:
            self.metrics.endpoint.serve(s.replanner_metrics_port)
        if self._streets.base is None:
            beat("loading the road network")
            # The same network the daily plan uses (cityops.routing.extract).
            self._streets.base = load_network(network_for(s))
        beat("loading today's routes")
        self._refresh()
        beat("starting the cold-solve process", grace_s=_POOL_START_S)
        self._pool = start_cold_pool(_POOL_START_S)
        beat("reading street closures")
        self._closure_watch.start(self._connection(), self._clock())
        beat("warming up the network")
        now, conn = self._clock(), self._connection()
        network = self._streets.at(repo.load_closures(conn, valid_at_or_after=now), now)
        sites = [(p.lat, p.lon) for p in repo.load_sites(conn)]
        warm_network(network, self.heard.current_routes(), sites)
        beat("starting the worker")
        self._mqtt.start()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Whether the subscriptions are in place (events are heard from then on)."""
        return self._mqtt is not None and self._mqtt.wait_ready(timeout)

    @property
    def running(self) -> bool:
        return self._mqtt is not None and self._mqtt.running

    def _client(self) -> mqtt.Client:
        assert self._mqtt is not None  # made in start()
        return self._mqtt.client

    def stop(self, timeout: float = 30.0) -> None:
        if self._mqtt is not None:
            self._mqtt.stop(timeout)
        self._drop_connection()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.metrics.endpoint.shutdown()
        logger.info("replanner %s stopped", self.client_id)


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    with stop_on_signals(stop):
        try:
            service.start()
        except (psycopg.Error, OSError) as exc:
            logger.error("replanner cannot start: %s", exc)
            service.metrics.endpoint.shutdown()
            return 1
        requested = wait_for_stop(service, stop, ready)
        service.stop()
        return 0 if requested else 1
