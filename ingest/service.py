"""The ingest service: MQTT in, PostgreSQL out, nothing lost.

* MQTT v5, QoS 1, a persistent session (clean_start=False plus a session expiry), and a
  shared subscription so several instances split the load.
* Manual acknowledgement: a message is acknowledged only after the transaction
  holding its row (or its dead letter) committed. If the database is down the batch is
  retried with backoff and nothing is acknowledged; the broker stops sending once Receive
  Maximum messages are unacknowledged and keeps the rest queued (backpressure).
* A message the contract accepts but the database refuses for its data (a poison message)
  never blocks the others: the batch is halved until the refused messages are found; they
  are dead-lettered as `unstorable` with the database's reason, the rest are stored, and
  all of them are acknowledged. Only failures of the database itself are retried.
* After a reconnect, acknowledgements for messages of the old connection are dropped: the
  broker redelivers them and the idempotent writer stores them once.

Threads (`cityops.ingest.mqttservice`): the MQTT client's network thread puts messages on a
queue (`cityops.ingest.mqttwire`, built for throughput; paho over TLS); one
writer thread batches (by size or time), decodes, writes, commits and acknowledges; the
main thread waits for a signal.

Liveness: the writer beats its heartbeat (`cityops.ingest.health`) every turn, before every
database write and before every retry pause, so `/healthz` on the metrics port turns 503
only when it is stuck inside a call for longer than `CITYOPS_INGEST_LIVENESS_LIMIT_S`; a
database outage keeps it retrying and beating.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta

import psycopg

from cityops.ingest import lorawan
from cityops.ingest.codecs import FieldMapping
from cityops.ingest.config import Settings
from cityops.ingest.contract import CONTRACT_VERSION, ingest_subscription
from cityops.ingest.decode import Decoded, Limits, Reason, Rejected, decode
from cityops.ingest.lorawan_readings import uplink_reading
from cityops.ingest.metrics import IngestMetrics
from cityops.ingest.mqttservice import (
    Batching,
    Inbound,
    MqttService,
    Session,
    as_is,
    stop_on_signals,
    wait_for_stop,
)
from cityops.ingest.writer import DeadLetter, Writer, WriteResult, is_poison

__all__ = ["IngestService", "run_ingest"]

logger = logging.getLogger(__name__)

_REGISTRY_REFRESH_S = 30.0
_METRICS_EVERY_S = 10.0
_KEEPALIVE_S = 120
_RETENTION_EVERY_S = 6 * 3600.0
#: How much longer than the liveness limit a retention run may take: in plain PostgreSQL it
#: deletes six hours of raw rows in one statement.
_RETENTION_GRACE_S = 900.0

#: A decoded message ready for `Writer.write`: payload, registry id, receive time.
Storable = tuple[Decoded, str, datetime]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _backoff(attempt: int, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: 0.25 s, 0.5 s, 1 s ... up to `cap`."""
    return float(random.uniform(0.5, 1.0) * min(cap, 0.25 * 2**attempt))


class IngestService:
    """One ingest instance. `start()` returns at once; `stop()` flushes and disconnects."""

    def __init__(
        self, settings: Settings, lorawan_mappings: Mapping[str, Mapping[str, str]] | None = None
    ) -> None:
        """`lorawan_mappings`: the city profile's sensor models decoded by the network
        server (model -> `FieldMapping` spec)."""
        self.settings = settings
        self._mappings = {
            model: FieldMapping.parse(spec) for model, spec in (lorawan_mappings or {}).items()
        }
        self.instance = settings.ingest_client_id
        self.metrics = IngestMetrics(self.instance, settings.ingest_liveness_limit_s)
        self._heartbeat = self.metrics.liveness.loop("writer")
        self._limits = Limits(
            max_payload_bytes=settings.ingest_max_payload_bytes,
            max_future=timedelta(seconds=settings.ingest_max_future_s),
            max_age=timedelta(days=settings.ingest_max_age_days),
        )
        self._writer = Writer(settings.database_url, application_name=f"cityops-{self.instance}")
        self._registry: dict[tuple[str, str], str] = {}
        # topic root of the network servers' uplinks ("" none), None: no LoRaWAN source
        self._lorawan_root: str | None = (
            (f"{settings.ingest_lorawan_root}/" if settings.ingest_lorawan_root else "")
            if set(settings.sources) - {"cityops"} else None
        )
        self._registry_at = 0.0
        self._clock: dict[str, float] | None = None  # when maintenance last ran
        # A long keep-alive: while a large backlog drains, paho's PINGRESP waits behind it in
        # the socket and a 30 s keep-alive made paho drop a healthy connection
        # (docs/performance.md). The broker still sees traffic: every PUBACK counts.
        session = Session(
            self.instance,
            tuple(self._subscriptions()),
            clean_start=False,
            session_expiry_s=settings.ingest_session_expiry_s,
            receive_maximum=settings.ingest_receive_maximum,
            keepalive_s=_KEEPALIVE_S,
            manual_ack=True,
            max_inflight=100,
            wire=settings.ingest_mqtt_client == "wire",
        )
        self._mqtt = MqttService(
            settings,
            session,
            name="ingest-writer",
            accept=as_is,
            handle=self._process,
            heartbeat=self._heartbeat,
            periodic=self._maintenance,
            batching=Batching(
                max_size=settings.ingest_batch_size,
                # collecting a batch may wait up to the flush time after its first message
                window_s=settings.ingest_flush_ms / 1000.0,
                drain_on_stop=True,
            ),
            backlog=self.metrics.backlog.set,
        )

    def _subscriptions(self) -> list[str]:
        """The filters of this instance's sources (`CITYOPS_INGEST_SOURCES`), shared when
        a share group is set."""
        s = self.settings
        share = s.ingest_share_group or None
        topics = []
        for source in s.sources:
            if source == "cityops":
                topics.append(ingest_subscription(s.topic_prefix, share))
                continue
            root = f"{s.ingest_lorawan_root}/" if s.ingest_lorawan_root else ""
            topic = f"{root}{lorawan.SUBSCRIPTIONS[source]}"
            topics.append(f"$share/{share}/{topic}" if share else topic)
        return topics

    # ------------------------------------------------------------ writer side
    def _refresh_registry(self) -> None:
        if time.monotonic() - self._registry_at > _REGISTRY_REFRESH_S:
            self._registry = self._writer.load_registry()
            self._registry_at = time.monotonic()

    def _classify(
        self, batch: list[Inbound]
    ) -> tuple[list[tuple[Inbound, Storable]], list[DeadLetter]]:
        decoded: list[tuple[Inbound, Decoded]] = []
        dead: list[DeadLetter] = []
        uplinks: list[tuple[Inbound, lorawan.Uplink]] = []
        prefix = self.settings.topic_prefix
        contract = f"{prefix}/{CONTRACT_VERSION}/"
        for m in batch:
            if self._lorawan_root is not None and not m.topic.startswith(contract):
                up = self._parse_uplink(m)
                if isinstance(up, lorawan.UplinkRejected):
                    dead.append(DeadLetter(m.topic, m.payload, up.reason.value, up.detail))
                else:
                    uplinks.append((m, up))
                continue
            result = decode(prefix, m.topic, m.payload, m.received, self._limits)
            if isinstance(result, Rejected):
                dead.append(DeadLetter(m.topic, m.payload, result.reason.value, result.detail))
            else:
                decoded.append((m, result))
        lora_good, lora_dead = self._uplink_readings(uplinks)
        dead.extend(lora_dead)
        # Devices missing from the cached registry are looked up once per batch, so a device
        # registered a moment ago is never dead-lettered as unknown.
        missing = {(d.kind.value, d.device_id) for _m, d in decoded} - self._registry.keys()
        if missing:
            self._registry.update(self._writer.lookup_devices(sorted(missing)))
        good: list[tuple[Inbound, Storable]] = []
        for m, d in decoded:
            entity = self._registry.get((d.kind.value, d.device_id))
            if entity is None:
                dead.append(
                    DeadLetter(
                        m.topic,
                        m.payload,
                        Reason.UNKNOWN_DEVICE.value,
                        f"no {d.kind} with device id {d.device_id!r} in the registry; "
                        "register it, then 'cityops deadletters replay --reason unknown_device'",
                    )
                )
            else:
                good.append((m, (d, entity, m.received)))
        return good + lora_good, dead

    # ------------------------------------------------------------ LoRaWAN uplinks
    def _parse_uplink(self, m: Inbound) -> lorawan.Uplink | lorawan.UplinkRejected:
        root = self._lorawan_root or ""
        topic = m.topic
        if root:
            if not topic.startswith(root):
                return lorawan.UplinkRejected(
                    lorawan.UplinkReason.BAD_TOPIC,
                    f"topic is not under CITYOPS_INGEST_LORAWAN_ROOT {root[:-1]!r}")
            topic = topic[len(root):]
        return lorawan.parse_uplink(
            topic, m.payload, m.received, max_bytes=self._limits.max_payload_bytes
        )

    def _uplink_readings(
        self, uplinks: list[tuple[Inbound, lorawan.Uplink]]
    ) -> tuple[list[tuple[Inbound, Storable]], list[DeadLetter]]:
        """Uplinks to readings: the bin by DevEUI, the sensor model's codec, calibration.
        Copies of one frame in the batch (another gateway's) are stored once; the writer
        drops copies of frames stored before."""
        if not uplinks:
            return [], []
        euis = sorted({u.dev_eui for _m, u in uplinks})
        sensors = self._writer.lookup_lorawan(euis)
        good: list[tuple[Inbound, Storable]] = []
        dead: list[DeadLetter] = []
        seen: dict[tuple[str, int, bytes], datetime] = {}
        for m, up in uplinks:
            def letter(reason: str, detail: str, *, _m: Inbound = m) -> None:
                dead.append(DeadLetter(_m.topic, _m.payload, reason, detail))

            sensor = sensors.get(up.dev_eui)
            if sensor is None:
                letter(Reason.UNKNOWN_DEVICE.value,
                       f"no bin with DevEUI {up.dev_eui} and a sensor model in the registry; "
                       "register it, then 'cityops deadletters replay --reason unknown_device'")
                continue
            digest = hashlib.sha256(up.payload).digest()
            first = seen.setdefault((up.dev_eui, up.f_cnt or 0, digest), up.time)
            if first != up.time and abs((first - up.time).total_seconds()) < 300:
                self.metrics.lorawan_duplicates.inc()
                continue  # the same frame through another path: stored once
            result = uplink_reading(up, sensor, self._mappings, m.received, self._limits)
            if isinstance(result, Rejected):
                letter(result.reason.value, result.detail)
            else:
                good.append((m, (result, sensor.bin_id, m.received)))
        return good, dead

    def _store(
        self, good: list[tuple[Inbound, Storable]], dead: list[DeadLetter]
    ) -> tuple[WriteResult, list[DeadLetter]]:
        """Write in one transaction; if the database refuses the data, halve the good
        messages until the refused ones are found and dead-letter those (`unstorable`, with
        the database's reason). Returns what was written and every dead letter written.
        Failures of the database itself propagate to be retried."""
        self._heartbeat.beat(f"writing to the database: {len(good)} good, {len(dead)} dead")
        try:
            return self._writer.write([g for _m, g in good], dead), dead
        except psycopg.Error as exc:
            if not is_poison(exc) or not good:
                raise
            if len(good) > 1:
                half = len(good) // 2
                first, dead_first = self._store(good[:half], dead)
                second, dead_second = self._store(good[half:], [])
                return first.add(second), dead_first + dead_second
            m = good[0][0]
            why = _first_line(exc)
            logger.warning("database refused the message on %s (%s); dead letter", m.topic, why)
            letter = DeadLetter(
                m.topic, m.payload, Reason.UNSTORABLE.value, f"the database refused it: {why}"
            )
            return self._writer.write([], [*dead, letter]), [*dead, letter]

    def _process(self, batch: list[Inbound]) -> bool:
        """Write and acknowledge one batch, retrying until it is stored. False if stopped."""
        attempt = 0
        while True:
            self._heartbeat.beat(f"storing a batch of {len(batch)}, attempt {attempt + 1}")
            try:
                self._refresh_registry()
                good, dead = self._classify(batch)
                started = time.monotonic()
                result, dead = self._store(good, dead)
                break
            except psycopg.Error as exc:
                self._writer.close()
                self.metrics.db_errors.inc()
                if self._mqtt.stopping and attempt >= 3:
                    logger.error(
                        "database write still failing while stopping (%s); %d messages stay "
                        "unacknowledged and will be redelivered by the broker",
                        _first_line(exc),
                        len(batch),
                    )
                    return False
                delay = _backoff(attempt)
                attempt += 1
                logger.warning(
                    "database write failed (%s); retrying batch of %d in %.1f s (attempt %d)",
                    _first_line(exc),
                    len(batch),
                    delay,
                    attempt,
                )
                self._heartbeat.beat(f"waiting {delay:.1f} s to retry the database", grace_s=delay)
                time.sleep(delay)
        done = time.monotonic()
        # acknowledged only now that the transaction holding the batch committed
        self._mqtt.ack(batch)
        self.metrics.observe_batch(batch, good, dead, result, done - started, done)
        for d in dead:
            logger.info("dead letter on %s: %s (%s)", d.topic, d.reason, d.detail)
        return True

    def _maintenance(self) -> None:
        """Between batches: record the metrics, apply the retention, when due."""
        now = time.monotonic()
        if self._clock is None:
            self._clock = {"metrics": now, "retention": now}
        clock = self._clock
        try:
            if now - clock["metrics"] >= _METRICS_EVERY_S:
                clock["metrics"] = now
                self._heartbeat.beat("recording the ingest metrics")
                self._writer.record_metrics(
                    self.instance, self.metrics.snapshot(self._mqtt.backlog)
                )
                logger.info("%s", self.metrics.summary(self._mqtt.backlog))
            if now - clock["retention"] >= _RETENTION_EVERY_S:
                clock["retention"] = now
                self._heartbeat.beat("applying the retention", grace_s=_RETENTION_GRACE_S)
                self._writer.apply_retention(self.settings.retention_days)
        except psycopg.Error as exc:
            self._writer.close()
            logger.warning("maintenance skipped, database error: %s", exc)

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        s = self.settings
        logger.info(
            "ingest %s starting: database %s, broker %s:%s, prefix %r, batch %d / %d ms",
            self.instance,
            s.redacted_database_url(),
            s.mqtt_host,
            s.mqtt_port,
            s.topic_prefix,
            s.ingest_batch_size,
            s.ingest_flush_ms,
        )
        if s.ingest_metrics_port:
            self.metrics.serve(s.ingest_metrics_port)
        self._mqtt.start()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._mqtt.wait_connected(timeout)

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self._mqtt.wait_ready(timeout)

    @property
    def running(self) -> bool:
        return self._mqtt.running

    def stop(self, timeout: float = 30.0) -> None:
        """Flush what was received, acknowledge it, then disconnect."""
        logger.info(
            "ingest %s stopping: flushing %d queued messages", self.instance, self._mqtt.backlog
        )
        self._mqtt.stop(timeout)
        self._writer.close()
        self.metrics.shutdown()
        logger.info(
            "ingest %s stopped: %s", self.instance, self.metrics.summary(self._mqtt.backlog)
        )


def run_ingest(
    settings: Settings, lorawan_mappings: Mapping[str, Mapping[str, str]] | None = None
) -> int:
    """Entry point of `cityops ingest`: run until SIGINT or SIGTERM."""
    service = IngestService(settings, lorawan_mappings)
    with stop_on_signals(threading.Event()) as stop:
        service.start()
        requested = wait_for_stop(service, stop)
        service.stop()
    return 0 if requested else 1
