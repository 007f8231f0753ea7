"""The one shape of a cityops MQTT service: the ingest, the re-planner and traffic control.

paho's network thread turns each message into an item and queues it, tagged with the
connection it arrived on; one worker thread takes the items in batches and hands each
batch to the service, running the service's periodic work between batches; the caller
starts the service, waits for SIGINT or SIGTERM (`stop_on_signals`, `wait_for_stop`) and
stops it. The client is built by `make_client` (credentials, TLS) and released by
`close_client`. A service supplies only its session (client id, topic filters, clean
start or a persistent session) and what it does with a batch. A session that asks for
`wire` is read by `cityops.ingest.mqttwire` instead of paho (plain TCP only: over TLS it
stays on paho), the ingest's receive path built for throughput.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Generic, Protocol, TypeVar, cast

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from cityops.ingest.config import Settings
from cityops.ingest.health import Heartbeat
from cityops.ingest.mqttclient import close_client, make_client
from cityops.ingest.mqttwire import Received, WireClient, WireOptions

__all__ = [
    "Batching",
    "Inbound",
    "MqttService",
    "Session",
    "as_is",
    "stop_on_signals",
    "wait_for_stop",
]

logger = logging.getLogger(__name__)

#: What `MqttService` puts on its queue: the item `accept` made of an inbound message.
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message as paho delivered it, stamped on the network thread: the connection
    `generation` it arrived on (an acknowledgement is only valid on that connection), the
    wall time and the monotonic time of its arrival."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received: datetime
    t_mono: float


def as_is(message: Inbound) -> Inbound:
    """The `accept` of a service whose worker takes the messages themselves."""
    return message


@dataclass(frozen=True, slots=True)
class Session:
    """How a service meets the broker: its client id, the topic filters it subscribes to
    (QoS 1) on every connect, and the MQTT 5 session it asks for."""

    client_id: str
    topics: tuple[str, ...]
    clean_start: bool = True
    session_expiry_s: int | None = None  # with clean_start=False: a persistent session
    receive_maximum: int | None = None  # unacknowledged messages the broker may send
    keepalive_s: int = 60
    manual_ack: bool = False  # acknowledge with `MqttService.ack`, after the work is done
    max_inflight: int | None = None
    #: read with `cityops.ingest.mqttwire` (a subscriber built for throughput) instead of
    #: paho; over TLS paho is used all the same. The service then cannot publish.
    wire: bool = False


@dataclass(frozen=True, slots=True)
class Batching:
    """How the worker takes what is queued.

    The worker waits up to `wait_s` for a first item (less when the periodic work is due
    sooner, never less than `min_wait_s`), then until `window_s` after that item arrived
    for more, up to `max_size` (0: no limit). `fill_from_backlog`: items already queued
    when the window has passed still join the batch (a backlog drains in full batches).
    `drain_on_stop`: on stop, the worker handles what is queued before it ends; without
    it, a batch taken while stopping is dropped (and logged). `waiting`: what the
    heartbeat says while the worker waits."""

    max_size: int = 1
    window_s: float = 0.0
    wait_s: float = 0.25
    min_wait_s: float = 0.0
    fill_from_backlog: bool = True
    drain_on_stop: bool = False
    waiting: str = "waiting for messages"

    def __post_init__(self) -> None:
        if self.max_size < 0 or self.window_s < 0 or self.wait_s <= 0 or self.min_wait_s < 0:
            raise ValueError("batching: sizes and times must not be negative, wait_s positive")


class MqttService(Generic[T]):
    """The shape every cityops MQTT service shares: paho's network thread turns each
    message into an item (`accept`, None: drop it) and queues it; one worker thread takes
    the items in batches and hands each batch to `handle`, running `periodic` between
    batches; the caller starts, waits and stops. A service supplies only `accept`,
    `handle` and `periodic`.

    * `handle(batch)` returns False to end the worker (anything else goes on).
    * `periodic()` runs what is due and returns the seconds until it is due again (None:
      no bound); it runs first in every turn of the worker.
    * The worker beats `heartbeat` while it waits (with the window as grace); `handle`
      and `periodic` beat it for their own steps. An exception out of them ends the
      worker (logged), and `running` turns False so the service's supervisor restarts it.
    * `on_ready(True)` once the broker granted the subscriptions, `on_ready(False)` when
      the connection is lost (a gauge of the broker connection).
    """

    def __init__(
        self,
        settings: Settings,
        session: Session,
        *,
        name: str,
        accept: Callable[[Inbound], T | None],
        handle: Callable[[list[T]], bool | None],
        heartbeat: Heartbeat,
        periodic: Callable[[], float | None] | None = None,
        batching: Batching | None = None,
        on_ready: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        backlog: Callable[[int], None] | None = None,
    ) -> None:
        """`on_disconnect`: called when the connection is lost while not stopping;
        `backlog(n)`: the number of items still queued, after every take. Raises
        `ConfigError` as `make_client` does."""
        self.settings = settings
        self.session = session
        self.name = name
        self._accept = accept
        self._handle = handle
        self._heartbeat = heartbeat
        self._periodic = periodic
        self._batching = batching or Batching()
        self._on_ready = on_ready
        self._on_disconnect_hook = on_disconnect
        self._backlog = backlog
        self._queue: queue.SimpleQueue[tuple[float, T]] = queue.SimpleQueue()
        self._ack_lock = threading.Lock()
        self._generation = 0
        self._connected_event = threading.Event()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._paho: mqtt.Client | None = None
        self._wire: WireClient | None = None
        if session.wire and not settings.mqtt_tls:
            self._wire = self._wire_client()
            return
        client = make_client(settings, session.client_id, manual_ack=session.manual_ack)
        if session.max_inflight is not None:
            client.max_inflight_messages_set(session.max_inflight)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._paho = client

    @property
    def client(self) -> mqtt.Client:
        """The paho client, to publish with (not for a `wire` session)."""
        if self._paho is None:
            raise RuntimeError(f"{self.name} reads with mqttwire and has no paho client")
        return self._paho

    def _wire_client(self) -> WireClient:
        s, session = self.settings, self.session
        options = WireOptions(
            s.mqtt_host,
            s.mqtt_port,
            session.client_id,
            session.topics,
            clean_start=session.clean_start,
            session_expiry_s=session.session_expiry_s,
            receive_maximum=session.receive_maximum,
            keepalive_s=session.keepalive_s,
            username=s.mqtt_username,
            password=s.mqtt_password,
        )
        return WireClient(
            options,
            on_connect=self._connected,
            on_subscribed=self._subscribed,
            on_lost=self._lost,
            on_messages=self._received,
        )

    # ------------------------------------------------------------ network thread
    def _on_connect(
        self, client: mqtt.Client, _ud: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            logger.error("%s: broker refused the connection: %s", self.name, reason)
            return
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.session.topics])
        self._connected(flags.session_present)

    def _connected(self, session_present: bool) -> None:
        """A connection is up and its subscriptions are on their way: a new generation."""
        with self._ack_lock:
            self._generation += 1
        self._connected_event.set()
        logger.info(
            "%s connected to %s:%s as %s (session present: %s), subscribed to %s",
            self.name,
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            self.session.client_id,
            session_present,
            ", ".join(self.session.topics),
        )

    def _on_subscribe(self, _c: mqtt.Client, _ud: Any, _mid: int, codes: Any, _p: Any) -> None:
        self._subscribed([c for c in codes if getattr(c, "is_failure", False)])

    def _subscribed(self, refused: list[Any]) -> None:
        if refused:
            logger.error("%s: subscription refused: %s", self.name, refused)
            return
        self._ready.set()
        if self._on_ready is not None:
            self._on_ready(True)

    def _on_disconnect(
        self, _client: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._lost(reason)

    def _lost(self, reason: object) -> None:
        with self._ack_lock:
            self._generation += 1
        self._connected_event.clear()
        self._ready.clear()
        if self._on_ready is not None:
            self._on_ready(False)
        if not self._stopping.is_set():
            if self._on_disconnect_hook is not None:
                self._on_disconnect_hook()
            logger.warning(
                "%s disconnected from broker (%s); reconnecting with backoff", self.name, reason
            )

    def _on_message(self, _client: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        mono = time.monotonic()
        message = Inbound(
            msg.topic,
            cast(bytes, msg.payload),
            msg.mid,
            msg.qos,
            self._generation,
            datetime.now(UTC),
            mono,
        )
        item = self._accept(message)
        if item is not None:
            self._queue.put((mono, item))

    def _received(self, messages: list[Received]) -> None:
        """The PUBLISHes of one read of the wire client, stamped with one arrival time."""
        mono = time.monotonic()
        now = datetime.now(UTC)
        generation = self._generation
        accept, put = self._accept, self._queue.put
        for topic, payload, mid, qos in messages:
            item = accept(Inbound(topic, payload, mid, qos, generation, now, mono))
            if item is not None:
                put((mono, item))

    def ack(self, batch: Iterable[Inbound]) -> int:
        """Acknowledge (manual acks) the messages that arrived on the current connection;
        the broker redelivers the others. Returns how many were acknowledged."""
        with self._ack_lock:
            generation = self._generation
            due = [m for m in batch if m.qos > 0 and m.generation == generation]
            if self._wire is not None:
                self._wire.ack([m.mid for m in due])
            else:
                for m in due:
                    self.client.ack(m.mid, m.qos)
        return len(due)

    # ------------------------------------------------------------------ worker
    def put(self, item: T) -> None:
        """Queue an item from the service's own side (as if a message had brought it)."""
        self._queue.put((time.monotonic(), item))

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def _take(self, wait: float) -> list[T]:
        b = self._batching
        try:
            arrived, first = self._queue.get(timeout=wait)
        except queue.Empty:
            return []
        batch = [first]
        deadline = arrived + b.window_s
        while not b.max_size or len(batch) < b.max_size:
            if not b.drain_on_stop and self._stopping.is_set():
                break
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:
                    batch.append(self._queue.get(timeout=remaining)[1])
                elif b.fill_from_backlog:
                    batch.append(self._queue.get_nowait()[1])
                else:
                    break
            except queue.Empty:
                break
        return batch

    def _work(self) -> None:
        b = self._batching
        try:
            while b.drain_on_stop or not self._stopping.is_set():
                due_in = self._periodic() if self._periodic is not None else None
                wait = b.wait_s if due_in is None else max(b.min_wait_s, min(b.wait_s, due_in))
                self._heartbeat.beat(b.waiting, grace_s=b.window_s)
                batch = self._take(wait)
                if self._backlog is not None:
                    self._backlog(self._queue.qsize())
                if not batch:
                    if self._stopping.is_set():
                        break
                    continue
                if self._stopping.is_set() and not b.drain_on_stop:
                    logger.warning("%s stopping: %d items not handled", self.name, len(batch))
                    break
                if self._handle(batch) is False:
                    break
        except Exception:
            logger.exception("%s worker crashed; stopping so a supervisor restarts it", self.name)
            self._stopping.set()
        finally:
            self._done.set()

    # --------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the worker, then connect in the background (paho reconnects on its own)."""
        s, session = self.settings, self.session
        self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
        self._thread.start()
        if self._wire is not None:
            self._wire.start()
            return
        props: Properties | None = None
        if session.session_expiry_s is not None or session.receive_maximum is not None:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if session.session_expiry_s is not None:
                props.SessionExpiryInterval = session.session_expiry_s
            if session.receive_maximum is not None:
                props.ReceiveMaximum = session.receive_maximum
        self.client.connect_async(
            s.mqtt_host,
            s.mqtt_port,
            keepalive=session.keepalive_s,
            clean_start=session.clean_start,
            properties=props,
        )
        self.client.loop_start()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """Whether the connection is up (the subscriptions are on their way)."""
        return self._connected_event.wait(timeout)

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Whether the broker granted the subscriptions (messages are heard from then on)."""
        return self._ready.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected_event.is_set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def running(self) -> bool:
        """Started and its worker still working."""
        return self._thread is not None and not self._done.is_set()

    def halt(self, timeout: float = 30.0) -> None:
        """End the worker (with `drain_on_stop` once it handled what is queued); the
        connection stays up, for a last word before `close`."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        """Disconnect and release the client (`close_client`)."""
        self._stopping.set()
        if self._wire is not None:
            self._wire.close()
        else:
            close_client(self.client)

    def stop(self, timeout: float = 30.0) -> None:
        self.halt(timeout)
        self.close()


class Stoppable(Protocol):
    @property
    def running(self) -> bool: ...

    def wait_ready(self, timeout: float = ...) -> bool: ...


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set `stop` while inside, when called from the main thread (a
    signal handler can only be set there); the previous handlers are restored after."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def _handle(signum: int, _frame: FrameType | None) -> None:
            logger.info("received %s", signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _handle)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def wait_for_stop(
    service: Stoppable, stop: threading.Event, ready: threading.Event | None = None
) -> bool:
    """Wait until `stop` is set or the service's worker ended; `ready` is set once the
    service's subscriptions are in place. True: stopped on request; False: it failed."""
    while not stop.is_set() and service.running:
        if ready is not None and not ready.is_set() and service.wait_ready(0):
            ready.set()
        stop.wait(0.1 if ready is not None and not ready.is_set() else 1.0)
    return stop.is_set()
