"""The I/O edge of the simulators: the accelerated clock and one MQTT client per device.

Simulated time starts at the scenario's start (in the past) and runs `speed` times
faster than the wall clock until it has caught up, then at real time: no message is
ever stamped in the future (the ingest dead-letters those).

Every simulated device talks to the broker as a real one would: its own MQTT v5 client
(client id = device id, optionally prefixed), QoS 1, a retained `status` message
{"state": "online"} on each connect and a retained last will {"state": "offline"}. All
clients are driven from the calling thread with one selector (paho's external-loop API:
`loop_read`, `loop_write`, `loop_misc`), not a thread per client, so hundreds of devices
cost a few percent of a core. A client that loses its connection reconnects with
randomized exponential backoff; paho keeps its QoS 1 messages meanwhile.

Devices also listen as real ones do: trucks to `cmd/route`, signal controllers to
`cmd/timing`. A timing command that is not valid JSON or not a `TimingCommand` is logged
and counted (`RunStats.commands["refused:invalid"]`); a valid one goes to its controller
at the current simulated time, which obeys it only when safe (`controller.py`) and counts
what became of it.
"""

from __future__ import annotations

import logging
import math
import random
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ValidationError

from cityops.ingest.config import Settings
from cityops.ingest.contract import (
    Channel,
    DeviceKind,
    DeviceStatus,
    RouteCommand,
    TimingCommand,
    command_topic,
    device_topic,
)
from cityops.ingest.mqttclient import make_client
from cityops.ingest.mqttservice import stop_on_signals
from cityops.simulators.emission import to_datetime
from cityops.simulators.models import CitySim

__all__ = ["FIRMWARE", "RunStats", "SimClock", "run"]

logger = logging.getLogger(__name__)

FIRMWARE = "cityops-sim/1"
_TICK_S = 0.2
_MISC_S = 1.0
_PROGRESS_S = 10.0
_CONNECT_WAIT_S = 10.0
_DRAIN_WAIT_S = 5.0
_KEEPALIVE_S = 60
_MAX_BACKOFF_S = 30.0
_Command = TypeVar("_Command", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class SimClock:
    """Simulated time (UNIX seconds) as a function of the wall clock.

    `start + speed * (wall - wall0)` until that reaches the wall clock, the wall clock
    from then on.
    """

    start: float
    speed: float
    wall0: float

    def now(self, wall: float) -> float:
        return min(self.start + self.speed * (wall - self.wall0), wall)

    def caught_up_at(self) -> float:
        """Wall time at which simulated time reaches real time."""
        if self.speed <= 1.0:
            return math.inf if self.start < self.wall0 else self.wall0
        return self.wall0 + (self.wall0 - self.start) / (self.speed - 1.0)


@dataclass
class RunStats:
    """What a run did: messages published by kind and channel, simulated time covered,
    timing commands received by outcome (`accepted:hold`, `refused:min_green`, ...)."""

    sim_start: float
    sim_end: float = 0.0
    wall_s: float = 0.0
    published: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)

    def by_kind(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for key, n in self.published.items():
            out[key.split("/")[0]] += n
        return dict(out)


class _Link:
    """One device's MQTT client and its connection state."""

    def __init__(
        self,
        settings: Settings,
        kind: DeviceKind,
        device_id: str,
        client_id: str,
        sim_now: Callable[[], float],
        *,
        status: bool = True,
    ) -> None:
        """`status`: publish online/offline on the contract's status topic (not for a
        LoRaWAN sensor, whose network server speaks for it)."""
        self.kind = kind
        self.status = status
        self.device_id = device_id
        self.status_topic = device_topic(settings.topic_prefix, kind, device_id, Channel.STATUS)
        self._settings = settings
        self._sim_now = sim_now
        self.connected = False
        self.stopping = False
        self.retry_at: float | None = None
        self.attempts = 0
        self.sock: socket.socket | None = None
        self.wants_write = False
        client = make_client(settings, client_id)
        if status:
            will = DeviceStatus(state="offline").model_dump_json(exclude_none=True)
            client.will_set(self.status_topic, will, qos=1, retain=True)
        client.max_inflight_messages_set(20)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self.command_topic = (
            command_topic(settings.topic_prefix, kind, device_id, "route")
            if kind is DeviceKind.TRUCK
            else command_topic(settings.topic_prefix, kind, device_id, "timing")
            if kind is DeviceKind.SIGNAL
            else None
        )
        self.inbox: list[bytes] = []
        client.on_message = self._on_message
        self.client = client

    def connect(self) -> None:
        try:
            self.client.connect(
                self._settings.mqtt_host, self._settings.mqtt_port, keepalive=_KEEPALIVE_S
            )
        except OSError as exc:
            self._schedule_retry(f"connect failed: {exc}")

    def reconnect(self) -> None:
        self.retry_at = None
        try:
            self.client.reconnect()
        except OSError as exc:
            self._schedule_retry(f"reconnect failed: {exc}")

    def publish_status(self, state: Literal["online", "offline"]) -> mqtt.MQTTMessageInfo:
        payload = DeviceStatus(
            state=state,
            ts=to_datetime(self._sim_now()),
            firmware=FIRMWARE,
        ).model_dump_json(exclude_none=True)
        return self.client.publish(self.status_topic, payload, qos=1, retain=True)

    def _schedule_retry(self, why: str) -> None:
        self.attempts += 1
        delay = min(_MAX_BACKOFF_S, 2.0 ** min(self.attempts, 6)) * random.uniform(0.5, 1.0)
        self.retry_at = time.monotonic() + delay
        log = logger.warning if self.attempts <= 3 else logger.debug
        log("%s %s: %s; retrying in %.1f s", self.kind.value, self.device_id, why, delay)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._schedule_retry(f"broker refused the connection: {reason_code}")
            return
        self.connected = True
        self.attempts = 0
        if self.status:
            self.publish_status("online")
        if self.command_topic is not None:
            client.subscribe(self.command_topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.inbox.append(bytes(msg.payload))

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected, self.connected = self.connected, False
        if not self.stopping and self.retry_at is None:
            if was_connected:
                logger.warning(
                    "%s %s lost its connection: %s", self.kind.value, self.device_id, reason_code
                )
            self._schedule_retry("disconnected")


class _Loop:
    """Drives every link's socket from one thread."""

    def __init__(self, links: list[_Link], tls: bool = False) -> None:
        self.links = links
        self._tls = tls
        self._selector = selectors.DefaultSelector()

    def sync(self) -> None:
        """(Re)register sockets that changed and the write interest of each."""
        for link in self.links:
            sock = link.client.socket()
            wants = bool(sock is not None and link.client.want_write())
            if sock is link.sock and wants == link.wants_write:
                continue
            if link.sock is not None:
                with suppress(KeyError, ValueError):
                    self._selector.unregister(link.sock)
            link.sock, link.wants_write = sock, wants  # type: ignore[assignment]
            if sock is not None and sock.fileno() >= 0:
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wants else 0)
                self._selector.register(sock, events, link)

    def poll(self, timeout: float) -> None:
        self.sync()
        for key, mask in self._selector.select(max(0.0, timeout)):
            link: _Link = key.data
            if mask & selectors.EVENT_READ:
                link.client.loop_read()
            if mask & selectors.EVENT_WRITE and link.client.socket() is not None:
                link.client.loop_write()
        if self._tls:
            # TLS may hold decrypted bytes the socket no longer signals as readable.
            for link in self.links:
                sock = link.client.socket()
                if isinstance(sock, ssl.SSLSocket) and sock.pending():
                    link.client.loop_read()

    def misc(self) -> None:
        now = time.monotonic()
        for link in self.links:
            if link.retry_at is not None:
                if link.retry_at <= now:
                    link.reconnect()
            elif link.client.socket() is not None:
                link.client.loop_misc()

    def close(self) -> None:
        self._selector.close()


def run(
    sim: CitySim,
    settings: Settings,
    *,
    speed: float,
    duration_s: float | None = None,
    stop: threading.Event | None = None,
    client_id_prefix: str = "",
) -> RunStats:
    """Publish what `sim` produces, on the accelerated clock, until stopped.

    Stops on SIGINT/SIGTERM (when called from the main thread), when `stop` is set, or
    after `duration_s` wall seconds; then publishes a retained offline status for each
    device and disconnects cleanly.
    """
    stop = stop or threading.Event()
    wall0 = time.time()
    clock = SimClock(start=sim.time, speed=speed, wall0=wall0)
    stats = RunStats(sim_start=sim.time, sim_end=sim.time)
    prefix = settings.topic_prefix

    started = False

    def sim_now() -> float:
        # The clock starts once the devices are connected; until then it stands at start.
        return clock.now(time.time()) if started else sim.time

    links = {
        d.device_id: _Link(settings, d.kind, d.device_id, client_id_prefix + d.device_id, sim_now,
                           status=not getattr(d, "lorawan", False))
        for d in sim.devices
    }
    loop = _Loop(list(links.values()), tls=settings.mqtt_tls)
    logger.info(
        "connecting %d devices to %s:%d (topic prefix %s)",
        len(links),
        settings.mqtt_host,
        settings.mqtt_port,
        prefix,
    )
    with stop_on_signals(stop):
        for link in links.values():
            link.connect()
            loop.poll(0.0)
        deadline = time.monotonic() + _CONNECT_WAIT_S
        while not stop.is_set() and time.monotonic() < deadline:
            if all(link.connected for link in links.values()):
                break
            loop.poll(0.05)
            loop.misc()
        connected = sum(link.connected for link in links.values())
        if connected < len(links):
            logger.warning(
                "%d of %d devices connected; the rest keep retrying", connected, len(links)
            )
        wall0 = time.time()
        clock = SimClock(start=sim.time, speed=speed, wall0=wall0)
        started = True
        if math.isfinite(clock.caught_up_at()):
            logger.info(
                "simulating from %s at x%g; real time reached in %s",
                _iso(sim.time),
                speed,
                _span(clock.caught_up_at() - wall0),
            )
        try:
            _publish_loop(sim, loop, links, clock, stats, prefix, stop, duration_s,
                          settings.ingest_lorawan_root)
        finally:
            _shutdown(loop, links, clock)
            loop.close()
    stats.wall_s = time.time() - wall0
    logger.info(
        "simulation stopped at %s after %.0f s: published %s",
        _iso(stats.sim_end),
        stats.wall_s,
        _fmt(stats.by_kind()),
    )
    return stats


def _publish_loop(
    sim: CitySim,
    loop: _Loop,
    links: dict[str, _Link],
    clock: SimClock,
    stats: RunStats,
    prefix: str,
    stop: threading.Event,
    duration_s: float | None,
    lorawan: str = "",
) -> None:
    wall0 = clock.wall0
    end = wall0 + duration_s if duration_s is not None else math.inf
    lorawan_root = f"{lorawan}/" if lorawan else ""
    next_tick = next_misc = wall0
    next_progress = wall0 + _PROGRESS_S
    last_progress = wall0
    last_counts: dict[str, int] = {}
    while not stop.is_set():
        wall = time.time()
        if wall >= end:
            break
        if wall >= next_tick:
            now = clock.now(wall)
            _take_routes(sim, links)
            _take_timings(sim, links, now, stats)
            for emission in sim.advance(now):
                if emission.uplink is not None:  # through a LoRaWAN network server
                    topic, body = emission.uplink
                    links[emission.device_id].client.publish(
                        f"{lorawan_root}{topic}", body, qos=1)
                    stats.published["bin/lorawan"] += 1
                    continue
                topic = device_topic(prefix, emission.kind, emission.device_id, emission.channel)
                links[emission.device_id].client.publish(topic, emission.to_json(), qos=1)
                stats.published[f"{emission.kind.value}/{emission.channel.value}"] += 1
            stats.sim_end = now
            next_tick = max(next_tick + _TICK_S, wall)
        if wall >= next_misc:
            loop.misc()
            next_misc = wall + _MISC_S
        if wall >= next_progress:
            counts = stats.by_kind()
            delta = {k: n - last_counts.get(k, 0) for k, n in counts.items()}
            last_counts = counts
            lag = wall - stats.sim_end
            logger.info(
                "sim time %s (%s), published %s in the last %.0f s, %s in all",
                _iso(stats.sim_end),
                f"x{clock.speed:g}, {_span(lag)} behind" if lag > 1 else "real time",
                _fmt(delta),
                wall - last_progress,
                _fmt(counts),
            )
            last_progress = wall
            next_progress = wall + _PROGRESS_S
        loop.poll(min(next_tick, next_misc, end) - time.time())


def _commands(
    links: dict[str, _Link], kind: DeviceKind, model: type[_Command], invalid: str
) -> Iterator[tuple[_Link, _Command | None]]:
    """The commands received by the devices of `kind`, oldest first, each parsed as
    `model`; one that does not parse is logged (`invalid`: what to say) and comes as None."""
    for link in links.values():
        while link.kind is kind and link.inbox:
            raw = link.inbox.pop(0)
            command: _Command | None = None
            try:
                command = model.model_validate_json(raw)
            except ValidationError as exc:
                logger.warning(
                    "%s %s: %s: %s", kind.value, link.device_id, invalid, exc.errors()[0]["msg"]
                )
            yield link, command


def _take_routes(sim: CitySim, links: dict[str, _Link]) -> None:
    """Hand route versions received on `cmd/route` to the simulated trucks."""
    invalid = "ignoring an invalid route command"
    for link, route in _commands(links, DeviceKind.TRUCK, RouteCommand, invalid):
        if route is None:
            continue
        if route.truck_id != link.device_id:
            logger.warning("truck %s: ignoring a route for %s", link.device_id, route.truck_id)
            continue
        bins = [s.bin_id for s in route.stops if s.kind == "stop" and s.bin_id]
        taken = sim.follow_route(link.device_id, bins, route.version)
        logger.info(
            "truck %s follows route v%d (%s): %d stops",
            link.device_id,
            route.version,
            route.reason,
            taken,
        )


def _take_timings(sim: CitySim, links: dict[str, _Link], now: float, stats: RunStats) -> None:
    """Hand timing commands received on `cmd/timing` to the simulated controllers at `now`."""
    invalid = "invalid timing command refused"
    for link, command in _commands(links, DeviceKind.SIGNAL, TimingCommand, invalid):
        if command is None:
            stats.commands["refused:invalid"] += 1
            continue
        outcome = sim.controllers[link.device_id].receive(command, now)
        stats.commands[outcome.key] += 1


def _shutdown(loop: _Loop, links: dict[str, _Link], clock: SimClock) -> None:
    """Retained offline status for every device, then a clean disconnect."""
    pending: list[mqtt.MQTTMessageInfo] = []
    for link in links.values():
        link.stopping = True
        if link.connected and link.status:
            pending.append(link.publish_status("offline"))
    deadline = time.monotonic() + _DRAIN_WAIT_S
    while time.monotonic() < deadline and not all(p.is_published() for p in pending):
        loop.poll(0.05)
    unsent = sum(not p.is_published() for p in pending)
    if unsent:
        logger.warning("%d offline status messages unconfirmed at shutdown", unsent)
    for link in links.values():
        if link.client.socket() is not None:
            link.client.disconnect()
    loop.sync()
    logger.info("published offline status for %d devices, disconnected", len(pending) - unsent)


def _iso(t: float) -> str:
    return to_datetime(t, 1000).isoformat().replace("+00:00", "Z")


def _span(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes >= 60:
        return f"{minutes // 60} h {minutes % 60:02d} min"
    return f"{minutes} min" if minutes else f"{seconds:.0f} s"


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "nothing"
