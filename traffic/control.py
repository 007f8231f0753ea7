"""The adaptive signal control service (`cityops traffic control`): events in, decisions out.

* Subscribes (QoS 1) to every controller's events, `{prefix}/v1/signal/+/events`, and
  with `clock="mqtt"` to the simulator's lockstep clock `{prefix}/v1/sim/clock`.
* Keeps a `maxpressure.ControllerState` per registered controller (also the ones it does
  not control: their queues are the downstream queues of their neighbours).
* Decides with `maxpressure.decide` and publishes one `TimingCommand` per controlled
  controller and step on `.../signal/{id}/cmd/timing`, QoS 1, not retained, with this
  instance's `issuer` and a `seq` that grows with every command.

Clocks. `wall`: every `decision_interval_s` of wall time, at the controller's estimated
time (`ControllerClock`: its newest event plus the wall time since that event was
received; that is also `issued_at`), so a controller that logs nothing for a while (an
empty junction resting in green) still gets fresh commands. The estimate stops growing
`params.stale_after_s` after the last event heard: by then every detector of the
controller counts as stale, so it is degraded to `fallback` (once) and gets nothing more
until it reports again. `mqtt`: on every tick `{"ts", "step"}`, for every controlled
controller at tick time, `issued_at` = tick, so that a simulator in lockstep can step on.

Safety. A controller whose detectors leave a phase unmeasurable (see `maxpressure`) gets
`mode="fallback"` once when it degrades and is logged; it is controlled again when a
detector of every phase works. A controller switched to `fixed` in `signal_control_modes`
(re-read every `modes_refresh_s`) gets `fallback` once. With the mqtt clock every tick is
answered, so degraded and fixed controllers get `fallback` on every tick. On a graceful
stop every controller under adaptive control gets `fallback`; if the service dies, the
controllers revert on their own once `valid_for_s` passes without a valid command.

Threads (`cityops.ingest.mqttservice`): paho's network loop puts messages on a queue; one
worker thread owns all state, reads the database and publishes; the main thread waits for
a signal. The worker beats a
heartbeat every iteration: on CITYOPS_TRAFFIC_CONTROL_METRICS_PORT, `/healthz` turns 503
when it stays silent longer than CITYOPS_TRAFFIC_CONTROL_LIVENESS_LIMIT_S, and `/metrics`
serves `service_metrics.ControlMetrics`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any, Literal, cast

import paho.mqtt.client as mqtt
import psycopg
from pydantic import ValidationError

from cityops.ingest.config import Settings
from cityops.ingest.contract import (
    DeviceKind,
    SignalEvents,
    TimingCommand,
    TopicError,
    command_topic,
    parse_topic,
)
from cityops.ingest.db import connect
from cityops.ingest.mqttservice import (
    Batching,
    Inbound,
    MqttService,
    Session,
    as_is,
    stop_on_signals,
    wait_for_stop,
)

from .control_state import (
    Controlled,
    ControllerClock,
    ControlOptions,
    Tick,
    clock_topic,
    events_subscription,
)
from .control_store import ControlMode, controller_ids, list_modes, load_links
from .events import Event
from .maxpressure import ControllerState, Decision, LaneKey, LaneQueue, Link, decide
from .repository import load_config
from .service_metrics import ControlMetrics

__all__ = ["ControlService", "run_control"]

logger = logging.getLogger(__name__)

_KEEPALIVE_S = 60


class ControlService:
    """One control instance. `start()` returns at once; `stop()` hands back and disconnects."""

    def __init__(self, settings: Settings, options: ControlOptions | None = None) -> None:
        self.settings = settings
        self.options = options or ControlOptions()
        self.issuer = self.options.issuer
        self.stats: Counter[str] = Counter()
        self._states: dict[str, ControllerState] = {}
        self._controlled: dict[str, Controlled] = {}
        self._modes: dict[str, ControlMode] = {}
        self._links: dict[str, list[Link]] = {}
        self._clocks: dict[str, ControllerClock] = {}
        self._seq = 0
        self._decisions: Counter[str] = Counter()
        self._due: dict[str, float] | None = None  # when each periodic task is next due
        self._conn: psycopg.Connection[Any] | None = None
        self.metrics = ControlMetrics(settings.traffic_control_liveness_limit_s)
        self._heartbeat = self.metrics.liveness.loop("worker")
        prefix = settings.topic_prefix
        topics: tuple[str, ...] = (events_subscription(prefix),)
        if self.options.clock == "mqtt":
            topics += (clock_topic(prefix),)
        self._mqtt = MqttService(
            settings,
            Session(self.issuer, topics, clean_start=True, keepalive_s=_KEEPALIVE_S),
            name="traffic-control",
            accept=as_is,
            handle=self._handle_batch,
            heartbeat=self._heartbeat,
            periodic=self._periodic,
            batching=Batching(max_size=1),
            on_ready=lambda up: self.metrics.connected.set(1 if up else 0),
            on_disconnect=self._disconnected,
            backlog=self.metrics.backlog.set,
        )

    # ------------------------------------------------------------------ MQTT side
    def _disconnected(self) -> None:
        self.stats["disconnects"] += 1
        self.metrics.disconnects.inc()

    def _publish(
        self, cid: str, issued_at: datetime, mode: str, decision: Decision | None
    ) -> mqtt.MQTTMessageInfo:
        self._seq += 1
        cmd = TimingCommand(
            controller_id=cid,
            issuer=self.issuer,
            seq=self._seq,
            issued_at=issued_at,
            valid_for_s=self.options.valid_for_s,
            mode=cast(Literal["adaptive", "plan", "fallback"], mode),
            phase=decision.phase if decision is not None and mode == "adaptive" else None,
            action=cast(Literal["hold", "advance"], decision.action)
            if decision is not None and mode == "adaptive"
            else None,
        )
        topic = command_topic(self.settings.topic_prefix, DeviceKind.SIGNAL, cid, "timing")
        info = self._mqtt.client.publish(
            topic, cmd.model_dump_json(exclude_none=True), qos=1, retain=False
        )
        self.stats["commands"] += 1
        kind = mode if mode != "adaptive" or decision is None else decision.action
        self._decisions[kind] += 1
        self.metrics.commands.labels(kind).inc()
        return info

    # ------------------------------------------------------------------ database side
    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(
                self.settings.database_url,
                autocommit=True,
                application_name=f"cityops-{self.issuer}"[:63],
            )
        return self._conn

    def _load_registry(self) -> None:
        """(Re)load configs and links; a changed config starts its state afresh."""
        conn = self._db()
        registered = controller_ids(conn)
        wanted = self.options.controllers
        if wanted is not None:
            missing = sorted(set(wanted) - set(registered))
            if missing:
                logger.error("controllers not registered (ignored): %s", ", ".join(missing))
        for gone in set(self._states) - set(registered):  # retired (or deleted) controllers
            logger.info("%s: no longer in the registry, no longer controlled", gone)
            self._states.pop(gone, None)
            self._controlled.pop(gone, None)
        for cid in registered:
            config = load_config(conn, cid)
            old = self._states.get(cid)
            if old is None or old.config != config:
                if old is not None:
                    logger.info("%s: registry changed, queue estimate restarts", cid)
                self._states[cid] = ControllerState(config, self.options.params)
            if (wanted is None or cid in wanted) and cid not in self._controlled:
                self._controlled[cid] = Controlled()
        links: dict[str, list[Link]] = {}
        for link in load_links(conn):
            links.setdefault(link.controller_id, []).append(link)
        self._links = links

    def _load_modes(self) -> None:
        modes = {r.controller_id: r.mode for r in list_modes(self._db())}
        for cid, mode in modes.items():
            before = self._modes.get(cid)
            if before is not None and before != mode and cid in self._controlled:
                logger.info("%s: control mode switched %s -> %s", cid, before, mode)
        self._modes = modes

    def _refresh(self, what: str) -> None:
        try:
            if what == "registry":
                self._load_registry()
            else:
                self._load_modes()
        except psycopg.Error as exc:
            if self._conn is not None:
                self._conn.close()
            self.stats["db_errors"] += 1
            self.metrics.db_errors.inc()
            logger.warning("%s refresh failed, keeping the last one: %s", what, exc)

    # ------------------------------------------------------------------ messages
    def _handle_batch(self, batch: list[Inbound]) -> None:
        for m in batch:
            self._heartbeat.beat(f"handling a message on {m.topic}")
            self._handle(m)

    def _handle(self, m: Inbound) -> None:
        prefix = self.settings.topic_prefix
        if m.topic == clock_topic(prefix):
            try:
                tick = Tick.model_validate_json(m.payload)
            except ValidationError as exc:
                self.stats["bad_ticks"] += 1
                self.metrics.ignored.labels("bad_tick").inc()
                logger.warning("bad clock tick %r: %s", m.payload[:200], exc.errors()[:1])
                return
            self.stats["ticks"] += 1
            self._decide_all(tick.ts)
            return
        try:
            info = parse_topic(prefix, m.topic)
            batch = SignalEvents.model_validate_json(m.payload, strict=True)
        except (TopicError, ValidationError) as exc:
            self.stats["bad_messages"] += 1
            self.metrics.ignored.labels("bad_message").inc()
            logger.warning("ignored message on %s: %s", m.topic, str(exc).splitlines()[0])
            return
        state = self._states.get(info.device_id)
        if state is None:
            self.stats["unknown_controller"] += 1
            self.metrics.ignored.labels("unknown_controller").inc()
            if self.stats["unknown_controller"] == 1:
                logger.warning("events of unregistered controller %s ignored", info.device_id)
            return
        events = sorted(
            (Event(e.ts.timestamp(), e.code, e.param) for e in batch.events), key=lambda e: e.ts
        )
        before = state.ignored
        state.observe(events)
        self.stats["events"] += len(events)
        self.metrics.events.inc(len(events))
        self.stats["events_ignored"] += state.ignored - before
        newest, mono = max(e.ts for e in batch.events), time.monotonic()
        clock = self._clocks.get(info.device_id)
        if clock is None:
            self._clocks[info.device_id] = ControllerClock(newest, mono)
        else:
            clock.heard_event(newest, mono)
        ctl = self._controlled.get(info.device_id)
        if ctl is not None:
            if ctl.silent:
                ctl.silent = False
                logger.info("%s: reporting again", info.device_id)
            if state.controller_mode != ctl.reported_mode:
                logger.info(
                    "%s: controller reports mode %s",
                    info.device_id,
                    {1: "fixed (own plan)", 2: "plan", 3: "adaptive"}.get(
                        state.controller_mode or 0, state.controller_mode
                    ),
                )
                ctl.reported_mode = state.controller_mode

    # ------------------------------------------------------------------ decisions
    def _wall_now(self, cid: str, mono: float) -> datetime | None:
        """The controller's estimated time (wall clock), None before its first event."""
        clock = self._clocks.get(cid)
        return None if clock is None else clock.now(mono, self.options.params.stale_after_s)

    def _decide_all(self, tick: datetime | None) -> None:
        """One decision step: for every controlled controller (tick None: wall clock)."""
        mono = time.monotonic()
        now_of: dict[str, datetime] = {}
        for cid in self._controlled:
            at = tick if tick is not None else self._wall_now(cid, mono)
            if at is not None:
                now_of[cid] = at
        downstream: dict[str, dict[LaneKey, LaneQueue]] = {}
        keys: dict[tuple[str, int], LaneKey] = {}
        targets = {lk.to_controller_id for ls in self._links.values() for lk in ls}
        for did in targets:
            st = self._states.get(did)
            at_dt = tick if tick is not None else self._wall_now(did, mono)
            if st is None or st.latest is None or at_dt is None:
                continue
            downstream[did] = st.lane_queues(max(at_dt.timestamp(), st.latest))
            for lk in (
                lk for ls in self._links.values() for lk in ls if lk.to_controller_id == did
            ):
                key = st.lane_key(lk.to_channel)
                if key is not None:
                    keys[(did, lk.to_channel)] = key
        for cid, ctl in self._controlled.items():
            self._decide_one(cid, ctl, tick, now_of.get(cid), mono, downstream, keys)
        self._observe_step(mono)

    def _observe_step(self, started: float) -> None:
        m = self.metrics
        m.decision_steps.inc()
        m.decision_seconds.observe(time.monotonic() - started)
        m.last_decision.set(time.time())
        ctl = self._controlled.values()
        m.controllers.labels("controlled").set(len(self._controlled))
        m.controllers.labels("degraded").set(sum(1 for c in ctl if c.degraded))
        m.controllers.labels("fixed").set(sum(1 for c in ctl if c.switched_off))
        m.controllers.labels("silent").set(sum(1 for c in ctl if c.silent))

    def _decide_one(
        self,
        cid: str,
        ctl: Controlled,
        tick: datetime | None,
        issued_at: datetime | None,
        mono: float,
        downstream: dict[str, dict[LaneKey, LaneQueue]],
        keys: dict[tuple[str, int], LaneKey],
    ) -> None:
        lockstep = tick is not None
        if issued_at is None:
            return  # wall clock and nothing heard yet
        now = issued_at.timestamp()
        clock = self._clocks.get(cid)
        if not lockstep and clock is not None:
            limit = self.options.params.stale_after_s
            if clock.silent_s(mono) > limit and not ctl.silent:
                ctl.silent = True
                logger.warning(
                    "%s: no events for %.0f s: its detectors count as stale until it reports",
                    cid,
                    limit,
                )
        if self._modes.get(cid, "adaptive") == "fixed":
            if not ctl.switched_off or lockstep:
                if not ctl.switched_off:
                    logger.warning("%s: switched to fixed in the database: fallback sent", cid)
                ctl.switched_off = True
                self._publish(cid, issued_at, "fallback", None)
            return
        if ctl.switched_off:
            ctl.switched_off = False
            logger.info("%s: switched back to adaptive", cid)
        d = decide(self._states[cid], now, self._links.get(cid, ()), downstream, keys)
        if d is None:
            return  # no phase event yet
        if d.action == "fallback":
            if ctl.degraded is None:
                logger.warning("%s degraded to fallback: %s", cid, d.reason)
                self.stats["degradations"] += 1
                self.metrics.degradations.inc()
            if ctl.degraded is None or lockstep:
                self._publish(cid, issued_at, "fallback", None)
            ctl.degraded = d.reason
            return
        if ctl.degraded is not None:
            logger.info("%s: detectors usable again, adaptive control resumes", cid)
            ctl.degraded = None
        logger.debug("%s %s phase %s: %s", cid, d.action, d.phase, d.reason)
        self._publish(cid, issued_at, "adaptive", d)

    # ------------------------------------------------------------------ worker
    def _summary(self) -> str:
        deg = sorted(c for c, s in self._controlled.items() if s.degraded)
        off = sorted(c for c, s in self._controlled.items() if s.switched_off)
        d = self._decisions
        text = (
            f"control {self.issuer}: {len(self._controlled)} controllers, since last summary "
            f"{d['hold']} hold, {d['advance']} advance, {d['fallback']} fallback; "
            f"events {self.stats['events']}, ticks {self.stats['ticks']}, seq {self._seq}; "
            f"degraded: {', '.join(deg) or 'none'}; fixed: {', '.join(off) or 'none'}"
        )
        self._decisions = Counter()
        return text

    def _periodic(self) -> float:
        """Between messages: refresh modes and registry, decide (wall clock), summarize,
        each when due. Returns the seconds until the next is due."""
        o = self.options
        now = time.monotonic()
        if self._due is None:
            self._due = {
                "modes": now + o.modes_refresh_s,
                "registry": now + o.registry_refresh_s,
                "decide": now + o.decision_interval_s,
                "summary": now + o.summary_every_s,
            }
        due, beat = self._due, self._heartbeat.beat
        if now >= due["modes"]:
            due["modes"] = now + o.modes_refresh_s
            beat("reading the control modes")
            self._refresh("modes")
        if now >= due["registry"]:
            due["registry"] = now + o.registry_refresh_s
            beat("reading the signal registry")
            self._refresh("registry")
        if now >= due["decide"]:
            due["decide"] = now + o.decision_interval_s
            if o.clock == "wall":
                beat("deciding")
                self._decide_all(None)
        if now >= due["summary"]:
            due["summary"] = now + o.summary_every_s
            logger.info("%s", self._summary())
        return max(0.0, min(due.values()) - time.monotonic())

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Load the registry and modes, connect, start deciding. Raises on a database error."""
        o = self.options
        if self.settings.traffic_control_metrics_port:
            self.metrics.endpoint.serve(self.settings.traffic_control_metrics_port)
        self._heartbeat.beat("reading the signal registry")
        try:
            self._load_registry()
            self._load_modes()
        except psycopg.Error:
            self.metrics.endpoint.shutdown()
            raise
        logger.info(
            "control %s starting: %d controllers (%s), clock %s, interval %g s, valid %g s, "
            "%d links, broker %s:%s, prefix %r",
            self.issuer,
            len(self._controlled),
            ", ".join(sorted(self._controlled)) or "none",
            o.clock,
            o.decision_interval_s,
            o.valid_for_s,
            sum(len(v) for v in self._links.values()),
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            self.settings.topic_prefix,
        )
        if not any(self._links.values()):
            logger.info("no signal_links: downstream queues count as 0")
        self._mqtt.start()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._mqtt.wait_connected(timeout)

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self._mqtt.wait_ready(timeout)

    @property
    def running(self) -> bool:
        return self._mqtt.running

    @property
    def controlled(self) -> tuple[str, ...]:
        return tuple(sorted(self._controlled))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop deciding, send `fallback` to the controllers under adaptive control, leave."""
        self._mqtt.halt(timeout)
        handed_back = []
        if self._mqtt.connected:
            sent = []
            mono = time.monotonic()
            for cid, ctl in sorted(self._controlled.items()):
                at = self._wall_now(cid, mono) if self.options.clock == "wall" else None
                if at is None:
                    clock = self._clocks.get(cid)
                    at = None if clock is None else clock.newest
                if at is None or ctl.degraded or ctl.switched_off:
                    continue
                sent.append(self._publish(cid, at, "fallback", None))
                handed_back.append(cid)
            for info in sent:
                try:
                    info.wait_for_publish(2.0)
                except (RuntimeError, ValueError):
                    break
        logger.info("%s", self._summary())
        logger.info(
            "control %s stopping; fallback sent to %s",
            self.issuer,
            ", ".join(handed_back) or "none",
        )
        self._mqtt.close()
        if self._conn is not None:
            self._conn.close()
        self.metrics.endpoint.shutdown()


def run_control(settings: Settings, options: ControlOptions) -> int:
    """Entry point of `cityops traffic control`: run until SIGINT or SIGTERM."""
    service = ControlService(settings, options)
    with stop_on_signals(threading.Event()) as stop:
        try:
            service.start()
        except psycopg.Error as exc:
            logger.error("cannot read the signal registry: %s", exc)
            return 2
        if not service.controlled:
            logger.error("no controller to control (none registered, or --controllers unknown)")
            service.stop()
            return 2
        requested = wait_for_stop(service, stop)
        service.stop()
        return 0 if requested else 1
