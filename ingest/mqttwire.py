"""An MQTT 5 subscriber built for throughput: the ingest's connection to the broker.

paho spends most of the ingest's CPU on receiving (docs/performance.md): one `select` and
three `recv` calls per packet (a byte of header, the length byte by byte, then the rest),
a `Properties` object and an `MQTTMessage` per PUBLISH, a topic-filter match per message,
and one `send` per PUBACK. This client reads whatever the socket holds with one `recv`,
cuts every whole packet out of it, hands all the PUBLISHes of that read to its owner in one
call, and writes the PUBACKs of a batch with one `sendall`.

It speaks only what a subscriber needs: CONNECT (clean start or a persistent session with
its expiry interval, Receive Maximum, credentials), SUBSCRIBE at QoS 1, PUBLISH at QoS 0
and 1 (a subscription at QoS 1 never brings QoS 2), PUBACK, PINGREQ, DISCONNECT. Plain TCP
only: `MqttService` uses paho for TLS. It reconnects on its own with jittered backoff
(1 s, doubling, up to 30 s). The connection counts as alive while any byte arrives; a
PINGREQ goes out when nothing was sent for half the keep-alive, and a connection silent for
one and a half keep-alives after a PINGREQ is dropped, so a backlog queued in front of the
PINGRESP never costs the connection.
"""

from __future__ import annotations

import contextlib
import logging
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Received", "WireClient", "WireOptions", "encode_utf8", "encode_varint"]

logger = logging.getLogger(__name__)

#: One PUBLISH as read: topic, payload, packet id (0 at QoS 0), QoS.
Received = tuple[str, bytes, int, int]

_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 1, 2, 3, 4
_SUBSCRIBE, _SUBACK, _PINGREQ, _PINGRESP, _DISCONNECT = 8, 9, 12, 13, 14
_PINGREQ_PACKET = b"\xc0\x00"
_DISCONNECT_PACKET = b"\xe0\x00"  # normal disconnection: a persistent session stays
_PUBACKS = [b"\x40\x02" + struct.pack("!H", mid) for mid in range(65536)]
_READ_SIZE = 1 << 18
#: After a read that did not fill half the buffer, wait this long before the next: at
#: 10,000 msgs/s a read then holds about 20 messages instead of one or two, so the thread
#: wakes (and takes the GIL from the writer) a tenth as often. Far below the batch window.
_COALESCE_S = 0.002


class ProtocolError(Exception):
    """The broker sent something this client cannot take: the connection is dropped."""


@dataclass(frozen=True, slots=True)
class WireOptions:
    host: str
    port: int
    client_id: str
    topics: tuple[str, ...]
    clean_start: bool = True
    session_expiry_s: int | None = None
    receive_maximum: int | None = None
    keepalive_s: int = 60
    username: str | None = None
    password: str | None = None
    min_delay_s: float = 1.0
    max_delay_s: float = 30.0


def encode_varint(n: int) -> bytes:
    """MQTT's variable byte integer (the remaining length, property lengths)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_utf8(text: str) -> bytes:
    """An MQTT UTF-8 string: its length in two bytes, then the bytes."""
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + encode_varint(len(body)) + body


def connect_packet(o: WireOptions) -> bytes:
    props = b""
    if o.session_expiry_s is not None:
        props += b"\x11" + struct.pack("!I", o.session_expiry_s)
    if o.receive_maximum is not None:
        props += b"\x21" + struct.pack("!H", o.receive_maximum)
    flags = 0x02 if o.clean_start else 0
    tail = encode_utf8(o.client_id)
    if o.username is not None:
        flags |= 0x80
        tail += encode_utf8(o.username)
        if o.password is not None:
            flags |= 0x40
            tail += encode_utf8(o.password)
    body = (
        encode_utf8("MQTT") + bytes([5, flags]) + struct.pack("!H", o.keepalive_s)
        + encode_varint(len(props)) + props + tail
    )
    return _packet(_CONNECT, 0, body)


def subscribe_packet(mid: int, topics: Sequence[str]) -> bytes:
    body = struct.pack("!H", mid) + b"\x00" + b"".join(encode_utf8(t) + b"\x01" for t in topics)
    return _packet(_SUBSCRIBE, 2, body)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    """(value, index after it), or (-1, i) when the buffer ends inside it."""
    value, shift = 0, 0
    for j in range(i, min(i + 4, len(buf))):
        byte = buf[j]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, j + 1
        shift += 7
    if len(buf) - i >= 4:
        raise ProtocolError("malformed remaining length")
    return -1, i


def parse(buf: bytes, out: list[Received]) -> tuple[int, list[tuple[int, bytes]]]:
    """Cut the whole packets out of `buf`: PUBLISHes are appended to `out`, the others are
    returned as (type, body). Returns also how many bytes were used."""
    pos, n = 0, len(buf)
    other: list[tuple[int, bytes]] = []
    append = out.append
    while n - pos >= 2:
        head = buf[pos]
        length = buf[pos + 1]
        start = pos + 2
        if length & 0x80:
            length, start = _read_varint(buf, pos + 1)
            if length < 0:
                break
        end = start + length
        if end > n:
            break
        if head >> 4 == _PUBLISH:
            qos = (head >> 1) & 3
            tlen = buf[start] << 8 | buf[start + 1]
            j = start + 2 + tlen
            topic = buf[start + 2 : j].decode("utf-8", "replace")
            mid = 0
            if qos:
                if qos > 1:
                    raise ProtocolError("a QoS 2 PUBLISH on a QoS 1 subscription")
                mid = buf[j] << 8 | buf[j + 1]
                j += 2
            plen = buf[j]
            if plen & 0x80:
                plen, j = _read_varint(buf, j)
            else:
                j += 1
            append((topic, buf[j + plen : end], mid, qos))
        else:
            other.append((head >> 4, buf[start:end]))
        pos = end
    return pos, other


class WireClient:
    """Connects, subscribes and reads in its own thread (`start`), reconnecting on its own;
    `ack` may be called from any thread.

    Callbacks, all on the client's thread: `on_connect(session_present)` after CONNACK,
    `on_subscribed(failed_codes)` after SUBACK (empty: all granted), `on_lost(reason)` once
    per connection that ends (not on `close`), `on_messages(batch)` with the PUBLISHes of one
    read, in order."""

    def __init__(
        self,
        options: WireOptions,
        *,
        on_connect: Callable[[bool], None],
        on_subscribed: Callable[[list[int]], None],
        on_lost: Callable[[str], None],
        on_messages: Callable[[list[Received]], None],
    ) -> None:
        self.options = options
        self._on_connect = on_connect
        self._on_subscribed = on_subscribed
        self._on_lost = on_lost
        self._on_messages = on_messages
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sent = 0.0
        self._accepted = False  # the current connection's CONNACK accepted it

    # ------------------------------------------------------------------ sending
    def _send(self, data: bytes) -> bool:
        """Write on the current connection; False (and the connection dropped) on failure."""
        with self._send_lock:
            sock = self._sock
            if sock is None:
                return False
            try:
                sock.sendall(data)
            except OSError as exc:
                logger.debug("send failed: %s", exc)
                self._shutdown(sock)
                return False
            self._last_sent = time.monotonic()
            return True

    def ack(self, mids: Iterable[int]) -> bool:
        """PUBACK these packet ids in one write. False when the connection is gone (the
        broker then redelivers them to the next connection)."""
        data = b"".join([_PUBACKS[m] for m in mids])
        return bool(data) and self._send(data)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-wire", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Send DISCONNECT (a persistent session stays on the broker) and end the thread."""
        self._closing.set()
        self._send(_DISCONNECT_PACKET)
        with self._send_lock:
            if self._sock is not None:
                self._shutdown(self._sock)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        o = self.options
        delay = o.min_delay_s
        while not self._closing.is_set():
            reason = "connection refused"
            try:
                sock = socket.create_connection((o.host, o.port), timeout=10)
            except OSError as exc:
                logger.debug("connect to %s:%s failed: %s", o.host, o.port, exc)
            else:
                connected, reason = self._session(sock)
                if connected:
                    delay = o.min_delay_s
                    if not self._closing.is_set():
                        self._on_lost(reason)
                elif not self._closing.is_set():
                    logger.warning("%s:%s: %s", o.host, o.port, reason)
            if self._closing.is_set():
                break
            pause = random.uniform(0.5, 1.0) * delay
            logger.debug("reconnecting in %.1f s (%s)", pause, reason)
            self._closing.wait(pause)
            delay = min(o.max_delay_s, delay * 2)

    def _session(self, sock: socket.socket) -> tuple[bool, str]:
        """One connection from CONNECT to its end: (whether the broker accepted it, why it
        ended)."""
        self._accepted = False
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.sendall(connect_packet(self.options))
            sock.settimeout(None)
            with self._send_lock:
                self._sock = sock
                self._last_sent = time.monotonic()
            reason = self._read(sock)
        except (OSError, ProtocolError) as exc:
            reason = str(exc) or type(exc).__name__
        except IndexError:  # a packet shorter than its own fields say
            reason = "malformed packet"
        except Exception:
            # a callback failed: drop the connection (its messages are redelivered) rather
            # than end the thread and with it every later connection
            logger.exception("reading from the broker failed; reconnecting")
            reason = "error while handling a packet"
        finally:
            self._shutdown(sock)  # first: it ends a send blocked on this connection
            with self._send_lock:
                self._sock = None
            sock.close()
        return self._accepted, reason

    def _read(self, sock: socket.socket) -> str:
        """Read and dispatch until the connection ends; returns why it ended."""
        keepalive = float(self.options.keepalive_s)
        last_received = time.monotonic()
        ping_sent: float | None = None
        recv = sock.recv
        pending = b""
        while not self._closing.is_set():
            ready, _w, _x = select.select([sock], [], [], 1.0)
            now = time.monotonic()
            if ready:
                chunk = recv(_READ_SIZE)
                if not chunk:
                    return "connection closed by the broker"
                pending = pending + chunk if pending else chunk
                last_received, ping_sent = now, None
            if not self._accepted:
                if now - last_received > 10:
                    return "no CONNACK within 10 s"
            elif keepalive:
                if ping_sent is None and now - self._last_sent >= keepalive / 2:
                    ping_sent = now
                    if not self._send(_PINGREQ_PACKET):
                        return "PINGREQ could not be sent"
                elif ping_sent is not None and now - last_received > keepalive * 1.5:
                    return f"nothing received for {now - last_received:.0f} s (keep-alive)"
            if not ready:
                continue
            messages: list[Received] = []
            used, other = parse(pending, messages)
            pending = pending[used:]
            # control packets first: a CONNACK (new connection generation) comes before the
            # PUBLISHes of a persistent session that follow it in the same read
            for kind, body in other:
                why = self._control(kind, body)
                if why:
                    return why
            if messages:
                if not self._accepted:
                    raise ProtocolError("PUBLISH before CONNACK")
                self._on_messages(messages)
                if len(chunk) < _READ_SIZE // 2:
                    time.sleep(_COALESCE_S)
        return "closing"

    def _control(self, kind: int, body: bytes) -> str:
        """Handle a packet other than PUBLISH; a reason to drop the connection, or ''."""
        if kind == _CONNACK and not self._accepted:
            if len(body) < 2:
                raise ProtocolError("short CONNACK")
            if body[1] != 0:
                raise ProtocolError(
                    f"broker refused the connection: reason code 0x{body[1]:02x}")
            self._accepted = True
            self._on_connect(bool(body[0] & 1))
            if not self._send(subscribe_packet(1, self.options.topics)):
                return "SUBSCRIBE could not be sent"
        elif kind == _SUBACK:
            props, j = _read_varint(body, 2)
            self._on_subscribed([c for c in body[j + props :] if c >= 0x80])
        elif kind == _DISCONNECT:
            code = body[0] if body else 0
            return f"broker disconnected: reason code 0x{code:02x}"
        elif kind not in (_PINGRESP, _PUBACK):
            return f"unexpected packet type {kind}"
        return ""
