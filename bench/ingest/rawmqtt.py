"""A minimal MQTT 3.1.1 QoS 1 publisher on a plain socket, for load generation only.

paho spends about 100 µs of CPU per QoS 1 publish (packet objects, one send per packet and
three receives per PUBACK); on a 2-core machine that shares its CPUs with the broker, the
ingest and PostgreSQL, the load generator would take the CPU the system under test needs.
This client encodes PUBLISH packets itself, sends each time slice's messages with one
`sendall` and counts PUBACKs in a reader thread by packet id. It speaks only what the
benchmark needs: CONNECT (clean session, no keep-alive), PUBLISH QoS 1, PUBACK, DISCONNECT.
"""

from __future__ import annotations

import socket
import struct
import threading

from cityops.ingest.mqttwire import encode_utf8, encode_varint

__all__ = ["RawPublisher"]

_PUBLISH_QOS1 = 0x32
_PUBACK = 0x40
_CONNACK = 0x20


class RawPublisher:
    """QoS 1 publisher: `publish_many()` sends, `acked` counts PUBACKs for our packet ids."""

    def __init__(self, host: str, port: int, client_id: str, timeout: float = 10.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = (encode_utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0)
                + encode_utf8(client_id))
        self._sock.sendall(bytes([0x10]) + encode_varint(len(body)) + body)
        connack = self._recv_exact(4)
        if connack[0] != _CONNACK or connack[3] != 0:
            raise ConnectionError(f"broker refused the connection: CONNACK {connack.hex()}")
        self._sock.settimeout(None)
        self._outstanding = bytearray(65536)  # 1 = sent, not yet acknowledged
        self._next_id = 1
        self._cond = threading.Condition()
        self.acked = 0
        self.unexpected_acks = 0
        self.error = ""
        self._reader = threading.Thread(target=self._read_acks, name="puback-reader", daemon=True)
        self._reader.start()

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return buf

    def _read_acks(self) -> None:
        pending = b""
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    break
                pending += chunk
                n_full = len(pending) // 4 * 4
                # PUBACK is always 4 bytes: 0x40, 0x02, packet id; nothing else is expected.
                acked = unexpected = 0
                with self._cond:
                    for off in range(0, n_full, 4):
                        if pending[off] != _PUBACK or pending[off + 1] != 2:
                            raise ConnectionError(f"unexpected packet 0x{pending[off]:02x}")
                        pid = (pending[off + 2] << 8) | pending[off + 3]
                        if self._outstanding[pid]:
                            self._outstanding[pid] = 0
                            acked += 1
                        else:
                            unexpected += 1
                    self.acked += acked
                    self.unexpected_acks += unexpected
                    self._cond.notify_all()
                pending = pending[n_full:]
        except (OSError, ConnectionError) as exc:
            self.error = str(exc)
        with self._cond:
            self._cond.notify_all()

    def _packet_id(self) -> int:
        """The next free packet id; waits while all 65,535 are in flight."""
        while True:
            for _ in range(65535):
                pid = self._next_id
                self._next_id = pid % 65535 + 1
                if not self._outstanding[pid]:
                    self._outstanding[pid] = 1
                    return pid
            with self._cond:
                self._cond.wait(0.05)

    def publish_many(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Send QoS 1 PUBLISH packets for (topic, payload) pairs with one write."""
        out = bytearray()
        with self._cond:
            for topic, payload in messages:
                pid = self._packet_id()
                n = 2 + len(topic) + 2 + len(payload)
                out.append(_PUBLISH_QOS1)
                out += encode_varint(n)
                out += struct.pack("!H", len(topic))
                out += topic
                out += struct.pack("!H", pid)
                out += payload
        self._sock.sendall(out)

    def wait_acked(self, total: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.acked >= total or bool(self.error), timeout)

    def close(self) -> None:
        try:
            self._sock.sendall(b"\xe0\x00")  # DISCONNECT
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._reader.join(2)
