"""The soak's load: publisher processes sending a mixed city load that outlives a broker
restart, each remembering which of its messages the broker acknowledged.

Every message is QoS 1 on the MQTT contract's topics (`cityops.ingest.contract`): bin
telemetry, signal controller event batches, truck positions and truck events, interleaved
in the proportions of `Mix`. Times (`ts`) are the publish time in milliseconds, strictly
increasing per device, so every row has its own natural key; a signal batch's events are
1 ms apart and end at the publish time.

The MQTT client (`Link`) is a minimal MQTT 3.1.1 encoder on a socket, like `rawmqtt.py`,
that behaves as a device should when its broker goes away: it keeps every unacknowledged
PUBLISH, reconnects every 100 ms, and sends them again (DUP set) on the new connection. A
message counts as acknowledged only when its PUBACK arrived. While the broker is away,
messages keep falling due and wait (a device's buffer, up to 65,535 per process).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet import PublisherProcesses

from cityops.ingest.mqttwire import encode_varint

__all__ = [
    "KINDS",
    "Link",
    "LoadConfig",
    "LoadFleet",
    "LoadResult",
    "Mix",
    "kind_sequence",
    "run_worker",
]

KINDS = ("bin", "signal", "truck", "truck_event")
_SLICE_S = 0.01
_MAX_CATCH_UP_S = 0.05


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares of the four kinds of message, adding up to 1."""

    shares: tuple[float, float, float, float]

    @classmethod
    def parse(cls, text: str) -> Mix:
        """`bin=0.03,signal=0.93,truck=0.037,truck_event=0.004` (missing kinds: 0;
        normalised to add up to 1)."""
        raw = dict.fromkeys(KINDS, 0.0)
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name not in raw:
                raise ValueError(f"unknown kind {name!r} in --mix (kinds: {', '.join(KINDS)})")
            raw[name] = float(value)
        total = sum(raw.values())
        if total <= 0 or min(raw.values()) < 0:
            raise ValueError(f"--mix needs non-negative shares with a positive sum: {text!r}")
        return cls(tuple(raw[k] / total for k in KINDS))  # type: ignore[arg-type]

    def describe(self) -> str:
        return ", ".join(f"{k} {100 * s:.1f} %" for k, s in zip(KINDS, self.shares, strict=True))


def kind_sequence(mix: Mix, n: int) -> bytes:
    """The kinds of `n` messages, spread evenly: each message goes to the kind furthest
    behind its share (deterministic, no clumps)."""
    credit = [0.0] * len(KINDS)
    out = bytearray(n)
    for i in range(n):
        for k, share in enumerate(mix.shares):
            credit[k] += share
        k = max(range(len(KINDS)), key=credit.__getitem__)
        credit[k] -= 1.0
        out[i] = k
    return bytes(out)


class Link:
    """QoS 1 publishing that survives the broker: unacknowledged PUBLISHes are kept by packet
    id and sent again after a reconnect. `acked` collects the sequence numbers of messages
    whose PUBACK arrived."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self._addr = (host, port)
        self._client_id = client_id.encode()
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[int, bytes]] = {}  # packet id -> (seq, packet)
        self._next_id = 1
        self._sock: socket.socket | None = None
        self.acked: list[int] = []
        self.connects = 0
        self.last_error = ""

    @property
    def up(self) -> bool:
        return self._sock is not None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def connect(self) -> bool:
        """Connect (clean session; nothing is owed to a publisher) and send what is pending."""
        try:
            sock = socket.create_connection(self._addr, timeout=2.0)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            body = b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack("!H", len(self._client_id))
            sock.sendall(b"\x10" + encode_varint(len(body) + len(self._client_id)) + body
                         + self._client_id)
            connack = b""
            while len(connack) < 4:
                chunk = sock.recv(4 - len(connack))
                if not chunk:
                    raise ConnectionError("closed before CONNACK")
                connack += chunk
            if connack[0] != 0x20 or connack[3] != 0:
                raise ConnectionError(f"CONNACK {connack.hex()}")
            sock.settimeout(None)
        except (OSError, ConnectionError) as exc:
            self.last_error = str(exc)
            return False
        with self._lock:
            again = b"".join(bytes([pkt[0] | 0x08]) + pkt[1:] for _, pkt in self._pending.values())
            self._sock = sock
            self.connects += 1
        threading.Thread(target=self._read, args=(sock,), daemon=True).start()
        if again:
            self._write(sock, again)
        return True

    def _read(self, sock: socket.socket) -> None:
        pending = b""
        try:
            while chunk := sock.recv(65536):
                pending += chunk
                n_full = len(pending) // 4 * 4
                with self._lock:
                    for off in range(0, n_full, 4):  # PUBACK: 0x40 0x02 id id
                        if pending[off] != 0x40:
                            raise ConnectionError(f"unexpected packet 0x{pending[off]:02x}")
                        item = self._pending.pop((pending[off + 2] << 8) | pending[off + 3], None)
                        if item is not None:
                            self.acked.append(item[0])
                pending = pending[n_full:]
        except (OSError, ConnectionError) as exc:
            self.last_error = str(exc)
        self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            if self._sock is sock:
                self._sock = None
        with contextlib.suppress(OSError):
            sock.close()

    def _write(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.sendall(data)
        except OSError as exc:
            self.last_error = str(exc)
            self._drop(sock)

    def take_acked(self) -> list[int]:
        """Sequence numbers acknowledged since the last call."""
        with self._lock:
            got, self.acked = self.acked, []
        return got

    def free_ids(self) -> int:
        return 65535 - len(self._pending)

    def publish(self, messages: list[tuple[int, bytes, bytes]]) -> None:
        """Queue (seq, topic, payload) as QoS 1 PUBLISHes and send them if connected."""
        out = bytearray()
        with self._lock:
            for seq, topic, payload in messages:
                while True:
                    pid = self._next_id
                    self._next_id = pid % 65535 + 1
                    if pid not in self._pending:
                        break
                pkt = (b"\x32" + encode_varint(4 + len(topic) + len(payload))
                       + struct.pack("!H", len(topic)) + topic + struct.pack("!H", pid) + payload)
                self._pending[pid] = (seq, pkt)
                out += pkt
            sock = self._sock
        if sock is not None:
            self._write(sock, bytes(out))

    def close(self) -> None:
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")
            self._drop(sock)


@dataclass(frozen=True, slots=True)
class LoadConfig:
    index: int
    host: str
    port: int
    prefix: str
    mix: Mix
    messages: int
    rate: float
    client_id: str
    bins: tuple[tuple[str, str], ...]  # (sensor id, bin id)
    controllers: tuple[str, ...]
    trucks: tuple[str, ...]
    acked_file: Path  # acknowledged messages: kind, registry id, ts (epoch ms), rows
    ack_timeout_s: float = 300.0


@dataclass(slots=True)
class LoadResult:
    index: int
    published: int = 0
    acked: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)  # acknowledged messages per kind
    rows_expected: dict[str, int] = field(default_factory=dict)  # their rows per kind
    first_publish: float = 0.0
    last_publish: float = 0.0
    reconnects: int = 0
    error: str = ""


def _payload(kind: int, i: int, ms: int, n: int, cfg: LoadConfig) -> bytes:
    t = time.gmtime(ms // 1000)
    iso = f"{time.strftime('%Y-%m-%dT%H:%M:%S', t)}.{ms % 1000:03d}Z"
    if kind == 0:
        return (f'{{"ts":"{iso}","fill_pct":{(i * 7919) % 1000 / 10.0},'
                f'"temperature_c":{12.0 + i % 20},"battery_pct":{90.0 - i % 50}}}').encode()
    if kind == 1:
        events = []
        for j in range(n):
            e = ms - (n - 1 - j)
            t = time.gmtime(e // 1000)
            code, param = ((82, 1 + i % 8), (81, 1 + i % 8), (1, 2), (8, 2), (10, 2))[(i + j) % 5]
            events.append(f'{{"ts":"{time.strftime("%Y-%m-%dT%H:%M:%S", t)}.{e % 1000:03d}Z",'
                          f'"code":{code},"param":{param}}}')
        return f'{{"events":[{",".join(events)}]}}'.encode()
    if kind == 2:
        return (f'{{"ts":"{iso}","lat":{50.1 + (i % 997) * 1e-5:.5f},'
                f'"lon":{8.6 + (i % 991) * 1e-5:.5f},"speed_kmh":{i % 50}.0,'
                f'"heading_deg":{i % 360}.0,"load_l":{(i * 13) % 8000}.0,"route_version":1}}'
                ).encode()
    bin_id = cfg.bins[i % len(cfg.bins)][1] if cfg.bins else "BENCH-B0001"
    return (f'{{"ts":"{iso}","kind":"stop_done","bin_id":"{bin_id}","route_version":1,'
            f'"volume_l":{120 + i % 1000}.0}}').encode()


def run_worker(cfg: LoadConfig, ready: Any, go: Any, start_at: Any, published_out: Any,
               acked_out: Any, results: Any) -> None:
    """One publisher process: connect, wait for `go`, publish `cfg.messages` at `cfg.rate`,
    wait for the PUBACKs, write the acknowledged messages to `cfg.acked_file`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    res = LoadResult(cfg.index)
    link = Link(cfg.host, cfg.port, cfg.client_id)
    n = cfg.messages
    kinds = kind_sequence(cfg.mix, n)
    entity = array("i", bytes(4 * n))
    stamp = array("q", bytes(8 * n))
    rows = bytearray(n)
    acked = bytearray(n)
    pools: tuple[list[str], ...] = ([b for _, b in cfg.bins], list(cfg.controllers),
                                    list(cfg.trucks), list(cfg.trucks))
    topics = (
        [f"{cfg.prefix}/v1/bin/{s}/telemetry".encode() for s, _ in cfg.bins],
        [f"{cfg.prefix}/v1/signal/{c}/events".encode() for c in cfg.controllers],
        [f"{cfg.prefix}/v1/truck/{t}/telemetry".encode() for t in cfg.trucks],
        [f"{cfg.prefix}/v1/truck/{t}/events".encode() for t in cfg.trucks],
    )
    last_ms: tuple[list[int], ...] = tuple([0] * max(1, len(p)) for p in pools)
    turn = [0] * len(KINDS)
    try:
        while not link.connect():
            time.sleep(0.1)
        ready.set()
        go.wait()
        t0 = start_at.value
        while time.time() < t0:
            time.sleep(0.002)
        catch_up = max(1, int(cfg.rate * _MAX_CATCH_UP_S))
        seq = 0
        while seq < n:
            if not link.up and not link.connect():
                time.sleep(0.1)
            due = min(n, int(cfg.rate * (time.time() - t0)) + 1)
            todo = min(due - seq, catch_up, link.free_ids())
            batch = []
            for _ in range(todo):
                k = kinds[seq]
                e = turn[k] % len(pools[k])
                turn[k] += 1
                now_ms = int(time.time() * 1000)
                size = 1 + (seq * 7) % 4 if k == 1 else 1
                ms = max(now_ms, last_ms[k][e] + size)
                last_ms[k][e] = ms
                entity[seq], stamp[seq], rows[seq] = e, ms - (size - 1), size
                batch.append((seq, topics[k][e], _payload(k, seq, ms, size, cfg)))
                seq += 1
            if batch:
                link.publish(batch)
                res.first_publish = res.first_publish or time.time()
                res.last_publish = time.time()
            for s in link.take_acked():
                acked[s] = 1
                res.acked += 1
            published_out[cfg.index], acked_out[cfg.index] = seq, res.acked
            res.published = seq
            if seq >= due or not batch:
                time.sleep(_SLICE_S - ((time.time() - t0) % _SLICE_S))
        deadline = time.time() + cfg.ack_timeout_s
        while res.acked < res.published and time.time() < deadline:
            if not link.up and not link.connect():
                time.sleep(0.1)
            for s in link.take_acked():
                acked[s] = 1
                res.acked += 1
            acked_out[cfg.index] = res.acked
            time.sleep(0.01)
        if res.acked < res.published:
            res.error = (f"{res.published - res.acked:,} publishes not acknowledged within "
                         f"{cfg.ack_timeout_s:.0f} s ({link.last_error})")
    except Exception as exc:  # reported to the parent, which shows it
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        link.close()
    res.reconnects = max(0, link.connects - 1)
    with cfg.acked_file.open("w") as out:
        for s in range(res.published):
            if acked[s]:
                k = kinds[s]
                name = KINDS[k]
                res.by_kind[name] = res.by_kind.get(name, 0) + 1
                res.rows_expected[name] = res.rows_expected.get(name, 0) + rows[s]
                out.write(f"{name}\t{pools[k][entity[s]]}\t{stamp[s]}\t{rows[s]}\n")
    results.put(res)


class LoadFleet(PublisherProcesses):
    """The publisher processes of the soak: start(), go(), progress, join()."""

    def __init__(self, configs: list[LoadConfig]) -> None:
        super().__init__(run_worker, configs, "soak-publisher")

    def start(self, timeout: float = 60.0) -> None:
        """Start the processes; wait until each is connected (and has planned its messages)."""
        super().start(timeout)

    def join(self, timeout: float = 120.0) -> list[LoadResult]:
        got: list[LoadResult] = self.collect(timeout)
        return sorted(got, key=lambda r: r.index)
