"""The system under test, each part its own process: a private Mosquitto with the shipped
settings, a throw-away database, and `cityops ingest` (or a baseline subscriber).

Child processes start in their own session (a Ctrl-C in the terminal reaches only the
benchmark, which then stops them in order) and get SIGTERM if the benchmark dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from cityops.ingest.config import load_settings
from cityops.ingest.db import ensure_database, migrate

__all__ = [
    "REPO",
    "BaselineProcess",
    "Broker",
    "Database",
    "IngestProcess",
    "IngestSummary",
    "broker_max_inflight",
    "free_port",
]

REPO = Path(__file__).resolve().parents[2]
_BIN = Path(sys.executable).parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_max_inflight() -> int:
    """`max_inflight_messages` of the shipped conf.d (Mosquitto's default 20 without it; 0,
    unlimited, as 65,535): QoS 1 messages the broker sends an MQTT 3.1.1 client unacknowledged."""
    value = 20
    for conf in sorted((REPO / "deploy" / "mosquitto" / "conf.d").glob("*.conf")):
        for line in conf.read_text().splitlines():
            words = line.split()
            if len(words) == 2 and words[0] == "max_inflight_messages":
                value = int(words[1])
    return value or 65_535


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark process goes away."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # no threads run at this point
        )


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class Broker:
    """A private Mosquitto on a free port with `deploy/mosquitto/conf.d` included."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        lines = [
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.workdir}/broker.log",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # keep root so the broker can write into our temp dir
        lines.append(f"include_dir {REPO / 'deploy' / 'mosquitto' / 'conf.d'}")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.proc = _spawn([MOSQUITTO, "-c", str(conf)], self.workdir / "broker.out")
        try:
            _wait_port(self.port)
        except RuntimeError:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        _stop(self.proc, 30)


@dataclass
class Database:
    """A uniquely named database, migrated, with `bins` sensors registered; dropped at the end."""

    admin_url: str
    name: str = field(default_factory=lambda: f"cityops_bench_{secrets.token_hex(4)}")
    created: bool = False

    @property
    def url(self) -> str:
        return urlsplit(self.admin_url)._replace(path=f"/{self.name}").geturl()

    def create(self) -> str:
        """Create and migrate in the mode CITYOPS_DB_MODE asks for; returns the mode got."""
        self.created = ensure_database(self.url)
        return str(migrate(self.url, mode=load_settings().db_mode).mode)

    def register_bins(self, n: int) -> list[str]:
        """Bins BENCH-B0001.. with sensors BENCH-S0001..; returns the sensor ids."""
        sensors = [f"BENCH-S{i:04d}" for i in range(1, n + 1)]
        with (
            psycopg.connect(self.url) as conn,
            conn.cursor() as cur,
            cur.copy(  # bins is a view of the active rows (migration 0010)
                "COPY bin_registry (bin_id, sensor_id, geom, street, capacity_l, fraction) "
                "FROM STDIN"
            ) as copy,
        ):
            for i, sensor in enumerate(sensors, start=1):
                lon, lat = 8.60 + (i % 100) * 1e-3, 50.05 + (i // 100) * 1e-3
                copy.write_row(
                    (
                        f"BENCH-B{i:04d}",
                        sensor,
                        f"SRID=4326;POINT({lon} {lat})",
                        "Benchmarkstraße",
                        240,
                        "residual",
                    )
                )
        return sensors

    def register_lora_bins(self, n: int, empty_mm: int, full_mm: int) -> list[str]:
        """Bins BENCH-L0001.. with Milesight EM310-UDL sensors; returns their DevEUIs."""
        euis = [f"be0c{i:012x}" for i in range(1, n + 1)]
        with (
            psycopg.connect(self.url) as conn,
            conn.cursor() as cur,
            cur.copy(
                "COPY bin_registry (bin_id, dev_eui, sensor_model, empty_distance_mm, "
                "full_distance_mm, geom, street, capacity_l, fraction) FROM STDIN"
            ) as copy,
        ):
            for i, eui in enumerate(euis, start=1):
                lon, lat = 8.60 + (i % 100) * 1e-3, 50.15 + (i // 100) * 1e-3
                copy.write_row((f"BENCH-L{i:04d}", eui, "milesight-em310-udl", empty_mm,
                                full_mm, f"SRID=4326;POINT({lon} {lat})", "Funkweg", 1100,
                                "residual"))
        return euis

    def drop(self) -> None:
        if not self.created:
            return
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )
        self.created = False


_SUMMARY_RE = re.compile(
    r"received ([\d,]+) messages, wrote ([\d,]+) rows in ([\d,]+) batches, ([\d,]+) dead "
    r"letters, backlog ([\d,]+), last batch ([\d.]+ ms|-)"
)


def _num(text: str) -> int:
    return int(text.replace(",", ""))


@dataclass(frozen=True, slots=True)
class IngestSummary:
    """From the ingest's own log: its final totals and its 10-second progress lines."""

    received: int
    rows: int
    batches: int
    dead_letters: int
    max_backlog: int
    last_batch_ms: tuple[float, ...]

    @classmethod
    def total(cls, parts: list[IngestSummary]) -> IngestSummary:
        """Several instances sharing a subscription, added up."""
        return cls(
            received=sum(p.received for p in parts),
            rows=sum(p.rows for p in parts),
            batches=sum(p.batches for p in parts),
            dead_letters=sum(p.dead_letters for p in parts),
            max_backlog=max(p.max_backlog for p in parts),
            last_batch_ms=tuple(ms for p in parts for ms in p.last_batch_ms),
        )


@dataclass
class IngestProcess:
    """`cityops ingest` as its own process, configured only through CITYOPS_* variables."""

    workdir: Path
    database_url: str
    mqtt_url: str
    prefix: str
    client_id: str
    tuning: dict[str, str]
    label: str = "ingest"
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / f"{self.label}.log"

    @property
    def application_name(self) -> str:
        """The name its database connection carries (see `cityops.ingest.writer`)."""
        return f"cityops-{self.client_id}"

    def start(self, timeout: float = 60.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
        env.update(
            CITYOPS_DATABASE_URL=self.database_url,
            CITYOPS_MQTT_URL=self.mqtt_url,
            CITYOPS_TOPIC_PREFIX=self.prefix,
            CITYOPS_INGEST_CLIENT_ID=self.client_id,
            CITYOPS_INGEST_METRICS_PORT="0",
            # the benchmark's bins stand in no real city: the demo city's profile, on purpose
            CITYOPS_CITY_PROFILE="demo",
            CITYOPS_ALLOW_DEMO_CITY="1",
            **self.tuning,
        )
        self.log.write_text("")
        self.proc = _spawn([str(_BIN / "cityops"), "ingest"], self.log, env)
        deadline = time.monotonic() + timeout
        while "subscribed to" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"cityops ingest exited at start; see {self.log}:\n"
                    + self.log.read_text(errors="replace")[-2000:]
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"cityops ingest did not subscribe within {timeout:.0f} s")
            time.sleep(0.1)
        time.sleep(0.5)  # the SUBACK

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> IngestSummary:
        """SIGTERM (the ingest flushes and acknowledges), then read its totals from the log."""
        _stop(self.proc, 60)
        text = self.log.read_text(errors="replace")
        lines = [m for m in _SUMMARY_RE.finditer(text)]
        if not lines:
            raise RuntimeError(f"no summary line in {self.log}")
        last = lines[-1]
        batch_ms = tuple(float(m[6].split()[0]) for m in lines if m[6] != "-")
        return IngestSummary(
            received=_num(last[1]),
            rows=_num(last[2]),
            batches=_num(last[3]),
            dead_letters=_num(last[4]),
            max_backlog=max(_num(m[5]) for m in lines),
            last_batch_ms=batch_ms,
        )

    def kill(self) -> None:
        _stop(self.proc, 30)


@dataclass
class BaselineProcess:
    """A baseline subscriber (`naive.py` or `plain.py`, named by `script`) as its own process."""

    workdir: Path
    database_url: str
    host: str
    port: int
    prefix: str
    client_id: str
    script: str = "naive.py"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def application_name(self) -> str:
        return self.client_id

    def start(self, timeout: float = 30.0) -> None:
        log = self.workdir / f"{self.client_id}.log"
        log.write_text("")
        self.proc = _spawn(
            [
                sys.executable,
                str(Path(__file__).with_name(self.script)),
                "--database-url",
                self.database_url,
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--prefix",
                self.prefix,
                "--client-id",
                self.client_id,
                *(["--max-inflight", str(broker_max_inflight())] if self.script == "plain.py"
                  else []),
            ],
            log,
        )
        deadline = time.monotonic() + timeout
        while "ready" not in log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.script} did not start; see {log}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL. The naive subscriber's clean session ends with it (the broker discards
        what is queued); the plain one's persistent session stays, so each of its runs
        subscribes under a topic prefix of its own."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        _stop(self.proc, 10)
