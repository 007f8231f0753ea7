"""Start and stop real Mosquitto processes on free loopback ports for tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on port {port} within {timeout}s")


@dataclass
class MosquittoProcess:
    workdir: Path
    port: int
    conf: Path
    proc: subprocess.Popen[bytes] | None = field(default=None)
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files (and most settings)."""
        assert self.proc is not None and self.proc.poll() is None, "broker not running"
        self.proc.send_signal(signal.SIGHUP)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM): Mosquitto writes its persistence file on the way out."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None

    def restart(self, downtime_s: float = 0.0) -> None:
        self.stop()
        time.sleep(downtime_s)
        self.start()


def start_mosquitto(
    workdir: Path,
    *,
    include_dir: Path | None,
    port: int | None = None,
    listener_options: Sequence[str] = (),
    options: Sequence[str] = (),
    tls: bool = False,
) -> MosquittoProcess:
    """Write a config (our listener, our persistence dir, optionally the shipped conf.d).

    `listener_options` follow the listener line (e.g. `cafile`/`certfile`/`keyfile` for
    TLS, then pass `tls=True`); `options` come after the defaults and override them (e.g.
    `allow_anonymous false`, `password_file ...`, `acl_file ...`).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    lines = [
        "persistence true",
        f"persistence_location {workdir}/",
        f"log_dest file {workdir}/broker.log",
        f"listener {port} 127.0.0.1",
        *listener_options,
        "allow_anonymous true",
        *options,
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # keep root so the broker can write into the test's tmp dir
    if include_dir is not None:
        lines.append(f"include_dir {include_dir}")
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    broker = MosquittoProcess(workdir=workdir, port=port, conf=conf, tls=tls)
    broker.start()
    return broker
