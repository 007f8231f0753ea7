"""The pure helpers of the ingest soak (bench/ingest/soakload.py, soakcheck.py): the mix of
messages, the recovery and catch-up times after a fault, and the publisher's resend of
unacknowledged messages after its broker went away (against a fake broker on a socket)."""

from __future__ import annotations

import itertools
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

# bench/ingest is scripts, not a package; appended so that it shadows nothing
sys.path.append(str(Path(__file__).resolve().parents[1] / "bench" / "ingest"))

import soakcheck
from soakload import KINDS, Link, Mix, kind_sequence


def test_mix_is_normalised_and_refuses_unknown_kinds() -> None:
    mix = Mix.parse("bin=1,signal=3")
    assert mix.shares == (0.25, 0.75, 0.0, 0.0)
    with pytest.raises(ValueError, match="unknown kind"):
        Mix.parse("bus=1")
    with pytest.raises(ValueError, match="positive sum"):
        Mix.parse("bin=0")


def test_kind_sequence_follows_the_shares_evenly() -> None:
    mix = Mix.parse("bin=0.1,signal=0.6,truck=0.25,truck_event=0.05")
    seq = kind_sequence(mix, 1000)
    counts = [seq.count(k) for k in range(len(KINDS))]
    assert counts == [100, 600, 250, 50]
    # evenly spread: a kind with share s never waits twice as long as 1/s messages
    for k, share in enumerate(mix.shares):
        where = [i for i, x in enumerate(seq) if x == k]
        assert max(b - a for a, b in itertools.pairwise(where)) < 2 / share


def test_recovery_counts_from_the_fault_to_three_full_seconds() -> None:
    fault = soakcheck.Fault("broker restart", started=100.4, ended=101.0)
    per_second = {s: 1000 for s in range(90, 100)} | {100: 400, 101: 0, 102: 950, 103: 300}
    per_second |= {s: 1000 for s in range(104, 120)}
    assert soakcheck.recovery_s(per_second, fault, full_rows_s=1000) == pytest.approx(3.6)
    assert soakcheck.recovery_s({s: 10 for s in range(90, 120)}, fault, 1000) is None


def test_caught_up_is_the_first_of_three_seconds_on_time() -> None:
    fault = soakcheck.Fault("ingest kill", started=100.2, ended=100.2)
    p99 = {s: 50.0 for s in range(90, 100)} | {100: 4000.0, 101: 3000.0, 102: 400.0,
                                               103: 600.0} | {s: 80.0 for s in range(104, 110)}
    assert soakcheck.caught_up(p99, fault, limit_ms=500.0) == 104.0


def _fake_broker(server: socket.socket, seen: list[list[tuple[int, bool]]]) -> None:
    """First connection: takes 3 PUBLISHes without acknowledging them, then hangs up.
    Second connection: acknowledges everything. Records (packet id, DUP) per connection."""
    for conn_no in range(2):
        conn, _ = server.accept()
        got: list[tuple[int, bool]] = []
        seen.append(got)
        buf = b""
        conn.recv(1024)  # CONNECT
        conn.sendall(b"\x20\x02\x00\x00")
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + buf[1]:  # short packets: 1-byte length
                head, n = buf[0], buf[1]
                packet, buf = buf[: 2 + n], buf[2 + n :]
                if head & 0xF0 != 0x30:
                    continue
                topic_len = int.from_bytes(packet[2:4])
                pid = int.from_bytes(packet[4 + topic_len : 6 + topic_len])
                got.append((pid, bool(head & 0x08)))
                if conn_no == 1:
                    conn.sendall(b"\x40\x02" + pid.to_bytes(2))
            if conn_no == 0 and len(got) >= 3:
                break
        conn.close()


def test_link_sends_unacknowledged_messages_again_after_a_reconnect() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[list[tuple[int, bool]]] = []
    broker = threading.Thread(target=_fake_broker, args=(server, seen), daemon=True)
    broker.start()
    link = Link("127.0.0.1", server.getsockname()[1], "test")
    assert link.connect()
    link.publish([(seq, b"t", b"x") for seq in range(3)])
    deadline = time.monotonic() + 5
    while link.up and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not link.up and link.take_acked() == []
    assert link.connect()
    link.publish([(3, b"t", b"x")])
    acked: list[int] = []
    while len(acked) < 4 and time.monotonic() < deadline:
        acked += link.take_acked()
        time.sleep(0.01)
    link.close()
    server.close()
    assert sorted(acked) == [0, 1, 2, 3]
    assert [dup for _, dup in seen[0]] == [False] * 3
    assert seen[1] == [(1, True), (2, True), (3, True), (4, False)]
