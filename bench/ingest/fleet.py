"""Publisher processes: QoS 1 bin telemetry at a controlled rate, paced in time slices.

Each worker is its own process with one MQTT 3.1.1 connection (as many devices speak) and a
disjoint share of the sensors. Every message carries its publish time as `ts` (millisecond
resolution, strictly increasing per sensor, so (bin, ts) is unique). A worker stops
publishing when the phase's time is up, even if it fell behind its schedule, so the offered
rate it reports is what it really sent; then it waits for every PUBACK.

Two clients: `raw` (default, `rawmqtt.RawPublisher`, light on CPU, one write per 10 ms
slice) and `paho`. With paho the in-flight window is switched off
(`max_inflight_messages_set(0)`): with a window, paho rescans its whole outgoing queue on
every PUBACK, which is quadratic once a backlog forms.
"""

from __future__ import annotations

import base64
import contextlib
import multiprocessing as mp
import os
import resource
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rawmqtt import RawPublisher

__all__ = ["Fleet", "FleetResult", "WorkerResult"]

_SLICE_S = 0.01  # pacing granularity
_MAX_CATCH_UP_S = 0.05  # a late worker sends at most this much of its schedule at once
_ACK_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    index: int
    host: str
    port: int
    prefix: str
    sensors: tuple[str, ...]
    rate: float
    seconds: float
    client_id: str
    client: str  # "raw" or "paho"
    lorawan: bool = False  # sensors are DevEUIs; uplinks as ChirpStack / The Things Stack
    f_cnt_base: int = 0  # frame counters go on from here (a later phase, the same devices)


@dataclass(frozen=True, slots=True)
class WorkerResult:
    index: int
    published: int
    acked: int
    first_publish: float  # epoch seconds
    last_publish: float
    all_acked: float
    min_ts_ms: int
    max_ts_ms: int
    max_outstanding: int
    cpu_s: float
    error: str = ""


@dataclass(frozen=True, slots=True)
class FleetResult:
    workers: tuple[WorkerResult, ...]

    @property
    def published(self) -> int:
        return sum(w.published for w in self.workers)

    @property
    def acked(self) -> int:
        return sum(w.acked for w in self.workers)

    @property
    def first_publish(self) -> float:
        return min(w.first_publish for w in self.workers if w.published)

    @property
    def last_publish(self) -> float:
        return max(w.last_publish for w in self.workers if w.published)

    @property
    def all_acked(self) -> float:
        return max(w.all_acked for w in self.workers if w.published)

    @property
    def min_ts_ms(self) -> int:
        return min(w.min_ts_ms for w in self.workers if w.published)

    @property
    def max_ts_ms(self) -> int:
        return max(w.max_ts_ms for w in self.workers if w.published)

    @property
    def offered_rate(self) -> float:
        span = self.last_publish - self.first_publish
        return self.published / span if span > 0 else 0.0

    @property
    def cpu_s(self) -> float:
        return sum(w.cpu_s for w in self.workers)

    @property
    def errors(self) -> list[str]:
        return [f"publisher {w.index}: {w.error}" for w in self.workers if w.error]


class _PahoSender:
    """paho with its in-flight window off; one `publish()` per message."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self._lock = threading.Lock()
        self._acked = 0
        connected = threading.Event()

        def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not reason.is_failure:
                connected.set()

        def on_publish(_c: Any, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
            with self._lock:
                self._acked += 1

        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = on_connect
        self.client.on_publish = on_publish
        self.client.connect(cfg.host, cfg.port, keepalive=60)
        self.client.loop_start()
        if not connected.wait(10):
            raise RuntimeError("no CONNACK within 10 s")

    @property
    def acked(self) -> int:
        with self._lock:
            return self._acked

    def send(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish failed: {mqtt.error_string(info.rc)}")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class _RawSender:
    """`RawPublisher`: the slice's messages are collected and written at once."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.pub = RawPublisher(cfg.host, cfg.port, cfg.client_id)
        self._batch: list[tuple[bytes, bytes]] = []
        self._topics: dict[str, bytes] = {}

    @property
    def acked(self) -> int:
        if self.pub.error:
            raise RuntimeError(f"connection lost: {self.pub.error}")
        return self.pub.acked

    def send(self, topic: str, payload: bytes) -> None:
        raw = self._topics.get(topic)
        if raw is None:
            raw = self._topics[topic] = topic.encode()
        self._batch.append((raw, payload))

    def flush(self) -> None:
        if self._batch:
            self.pub.publish_many(self._batch)
            self._batch = []

    def close(self) -> None:
        self.pub.close()


def _worker(
    cfg: WorkerConfig,
    ready: Any,
    go: Any,
    start_at: Synchronized[float],
    published_out: Any,
    acked_out: Any,
    results: Any,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; no tracebacks on Ctrl-C
    error = ""
    cpu_at_go = 0.0
    published = acked = 0
    first = last = all_acked = 0.0
    min_ms = max_ms = 0
    max_outstanding = 0
    sender: _PahoSender | _RawSender | None = None
    try:
        sender = _RawSender(cfg) if cfg.client == "raw" else _PahoSender(cfg)
        ready.set()
        go.wait()
        before = resource.getrusage(resource.RUSAGE_SELF)
        cpu_at_go = before.ru_utime + before.ru_stime
        t0 = start_at.value
        while time.time() < t0:
            time.sleep(min(0.005, max(0.0, t0 - time.time())))

        if cfg.lorawan:
            topics = [_uplink_topic(cfg.prefix, eui, k) for k, eui in enumerate(cfg.sensors)]
        else:
            topics = [f"{cfg.prefix}/v1/bin/{s}/telemetry" for s in cfg.sensors]
        n_sensors = len(topics)
        f_cnt = [cfg.f_cnt_base] * n_sensors
        last_ms = [0] * n_sensors
        total = int(cfg.rate * cfg.seconds)
        catch_up = max(1, int(cfg.rate * _MAX_CATCH_UP_S))
        end = t0 + cfg.seconds
        cached_s = -1
        cached_head = ""
        while published < total:
            now = time.time()
            if now >= end:
                break
            due = min(total, int(cfg.rate * (now - t0)) + 1)
            todo = min(due - published, catch_up)
            for _ in range(todo):
                k = published % n_sensors
                # ts is the publish time, strictly increasing per sensor: (bin, ts) is unique.
                now_ms = int(time.time() * 1000)
                ms = now_ms if now_ms > last_ms[k] else last_ms[k] + 1
                last_ms[k] = ms
                sec = ms // 1000
                if sec != cached_s:
                    cached_s = sec
                    cached_head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
                fill = (published * 7919) % 1000 / 10.0
                if cfg.lorawan:
                    f_cnt[k] += 1
                    payload = _uplink(cfg.sensors[k], k, f_cnt[k],
                                      f"{cached_head}.{ms % 1000:03d}Z", fill)
                else:
                    payload = (
                        f'{{"ts":"{cached_head}.{ms % 1000:03d}Z","fill_pct":{fill},'
                        f'"temperature_c":{12.0 + k % 20},"battery_pct":{90.0 - k % 50}}}'
                    )
                sender.send(topics[k], payload.encode())
                if published == 0:
                    first = time.time()
                    min_ms = ms
                published += 1
                max_ms = max(max_ms, ms)
            sender.flush()
            last = time.time()
            acked = sender.acked
            published_out[cfg.index] = published
            acked_out[cfg.index] = acked
            max_outstanding = max(max_outstanding, published - acked)
            if published < due:
                continue  # behind schedule: no sleep
            # Sleep to the next slice boundary; what fell due meanwhile goes out at once.
            time.sleep(_SLICE_S - ((time.time() - t0) % _SLICE_S))

        deadline = time.time() + _ACK_TIMEOUT_S
        while time.time() < deadline:
            acked = sender.acked
            acked_out[cfg.index] = acked
            if acked >= published:
                break
            time.sleep(0.005)
        all_acked = time.time()
        if acked < published:
            error = f"{published - acked} publishes not acknowledged within {_ACK_TIMEOUT_S:.0f} s"
    except Exception as exc:  # reported to the parent, which shows it
        error = f"{type(exc).__name__}: {exc}"
    finally:
        if sender is not None:
            with contextlib.suppress(Exception):
                acked = sender.acked
            sender.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results.put(
        WorkerResult(
            index=cfg.index,
            published=published,
            acked=acked,
            first_publish=first,
            last_publish=last,
            all_acked=all_acked,
            min_ts_ms=min_ms,
            max_ts_ms=max_ms,
            max_outstanding=max_outstanding,
            cpu_s=usage.ru_utime + usage.ru_stime - cpu_at_go,
            error=error,
        )
    )


#: The bench's LoRaWAN sensors: Milesight EM310-UDL, empty at 1200 mm, full at 200 mm
#: (bench/ingest/stack.py registers them so); even ones through ChirpStack, odd through TTS.
LORA_EMPTY_MM, LORA_FULL_MM = 1200, 200


def _uplink_topic(prefix: str, dev_eui: str, k: int) -> str:
    if k % 2 == 0:
        return f"{prefix}/application/bench/device/{dev_eui}/event/up"
    return f"{prefix}/v3/bench@city/devices/s-{dev_eui}/up"


def _uplink(dev_eui: str, k: int, f_cnt: int, ts: str, fill: float) -> str:
    """A network server's uplink of an EM310-UDL measuring `fill` percent at `ts`."""
    distance = round(LORA_EMPTY_MM - fill / 100 * (LORA_EMPTY_MM - LORA_FULL_MM))
    frame = bytes([0x01, 0x75, 90, 0x03, 0x82, distance & 0xFF, distance >> 8, 0x04, 0x00, 0])
    data = base64.b64encode(frame).decode()
    if k % 2 == 0:
        return (f'{{"time":"{ts}","deviceInfo":{{"applicationId":"bench","devEui":"{dev_eui}",'
                f'"deviceName":"s"}},"fCnt":{f_cnt},"fPort":85,"data":"{data}",'
                f'"rxInfo":[{{"gatewayId":"0080000000000001","rssi":-90}}]}}')
    return (f'{{"end_device_ids":{{"device_id":"s-{dev_eui}","application_ids":'
            f'{{"application_id":"bench"}},"dev_eui":"{dev_eui.upper()}"}},'
            f'"received_at":"{ts}","uplink_message":{{"f_port":85,"f_cnt":{f_cnt},'
            f'"frm_payload":"{data}","rx_metadata":[{{"gateway_ids":{{"gateway_id":"g"}}}}]}}}}')


class PublisherProcesses:
    """Publisher processes, one per config, that connect, wait for `go()` and publish on one
    clock; each counts what it published and what the broker acknowledged in shared arrays
    and puts one result on a queue at the end. `target(config, ready, go, start_at,
    published, acked, results)` is the worker."""

    def __init__(self, target: Any, configs: list[Any], name: str) -> None:
        ctx = mp.get_context("spawn")
        n = len(configs)
        self._name = name
        self._ready = [ctx.Event() for _ in range(n)]
        self._go = ctx.Event()
        self._start_at: Synchronized[float] = ctx.Value("d", 0.0)
        self._published: Any = ctx.Array("q", n, lock=False)
        self._acked: Any = ctx.Array("q", n, lock=False)
        self._results: Any = ctx.Queue()
        self.start_at = 0.0
        self._procs = [
            ctx.Process(
                target=target,
                args=(cfg, self._ready[k], self._go, self._start_at, self._published,
                      self._acked, self._results),
                name=f"{name}-{k}",
                daemon=True,
            )
            for k, cfg in enumerate(configs)
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Start the processes and wait until every client is connected."""
        for p in self._procs:
            p.start()
        deadline = time.monotonic() + timeout
        for ev, p in zip(self._ready, self._procs, strict=True):
            while not ev.wait(0.2):
                if not p.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"{p.name} did not connect to the broker")

    def go(self, delay: float = 0.3) -> float:
        """Start publishing `delay` seconds from now (all workers on the same clock)."""
        self.start_at = time.time() + delay
        self._start_at.value = self.start_at
        self._go.set()
        return self.start_at

    @property
    def published(self) -> int:
        return int(sum(self._published))

    @property
    def acked(self) -> int:
        return int(sum(self._acked))

    def running(self) -> bool:
        return any(p.is_alive() for p in self._procs)

    def collect(self, timeout: float) -> list[Any]:
        """Every worker's result (in the order they came), then the processes joined."""
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(got) < len(self._procs):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{self._name} processes did not report in time")
            try:
                got.append(self._results.get(timeout=min(remaining, 1.0)))
            except Exception:  # queue.Empty: check the processes are alive
                if not self.running() and self._results.empty():
                    raise RuntimeError(f"a {self._name} process died without a result") from None
        for p in self._procs:
            p.join(5)
        return got

    def terminate(self) -> None:
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join(5)
            if p.is_alive():
                p.kill()


class Fleet(PublisherProcesses):
    """`processes` publishers sharing `rate` and the sensors; start(), go(), progress, join()."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        prefix: str,
        sensors: list[str],
        rate: float,
        seconds: float,
        processes: int,
        tag: str,
        client: str = "raw",
        lorawan: bool = False,
        f_cnt_base: int = 0,
    ) -> None:
        processes = max(1, min(processes, len(sensors)))
        configs = [
            WorkerConfig(
                index=k,
                host=host,
                port=port,
                prefix=prefix,
                sensors=tuple(sensors[k::processes]),
                rate=rate / processes,
                seconds=seconds,
                client_id=f"{tag}-pub{k}-{os.getpid()}",
                client=client,
                lorawan=lorawan,
                f_cnt_base=f_cnt_base,
            )
            for k in range(processes)
        ]
        super().__init__(_worker, configs, "publisher")

    def join(self, timeout: float = _ACK_TIMEOUT_S + 60) -> FleetResult:
        got: list[WorkerResult] = self.collect(timeout)
        return FleetResult(tuple(sorted(got, key=lambda w: w.index)))
