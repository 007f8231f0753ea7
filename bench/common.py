"""What the benchmark scripts share: progress lines, percentiles, process CPU, a throwaway
database, the API as a uvicorn process and the load driver as a child process.

The scripts run as files (`.venv/bin/python bench/<area>/<script>.py`), not as a package,
so each puts this folder on `sys.path` and imports `common`; a script reusing another
script's setup loads it with `sibling`. Standard library only at import time (psycopg
when a database is made), so that the load drivers, which import this too, start as
quickly as before.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from threading import Thread
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH = Path(__file__).resolve().parent
PY = sys.executable


def say(text: str) -> None:
    """A progress line on stderr with the wall-clock time (stdout is for the figures)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms_stats(values_s: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max of durations in seconds, as milliseconds."""
    v = [x * 1000 for x in values_s]
    return {
        "p50_ms": round(pct(v, 50), 2),
        "p95_ms": round(pct(v, 95), 2),
        "p99_ms": round(pct(v, 99), 2),
        "max_ms": round(max(v), 2) if v else float("nan"),
    }


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process and its waited-for children, in seconds (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in parts[11:15]) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sibling(path: Path, name: str) -> ModuleType:
    """Another benchmark script as a module, to reuse its data setup."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def database_url(admin_url: str, name: str) -> str:
    """The URL of database `name` on the server of `admin_url` (same user, host, options)."""
    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@contextmanager
def throwaway_database(admin_url: str, name: str) -> Iterator[str]:
    """Create database `name` beside `admin_url`'s, yield its URL and drop it on the way
    out, also after an error or Ctrl-C (WITH (FORCE): connections still open are ended)."""
    import psycopg  # here, not at the top: the load drivers import this module too
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def migrate_database(url: str) -> str:
    """Migrate a benchmark's database in the storage mode CITYOPS_DB_MODE asks for (auto,
    the default: TimescaleDB where the server has it preloaded), say which mode it got,
    and return it ("plain" or "timescale") for the figures."""
    from cityops.ingest.config import load_settings
    from cityops.ingest.db import migrate

    requested = load_settings().db_mode
    mode = str(migrate(url, mode=requested).mode)
    say(f"storage mode {mode} (CITYOPS_DB_MODE={requested})")
    return mode


class ApiProcess:
    """The API as `cityops api` serves it (`bench/server.py`, one uvicorn process) on a
    free 127.0.0.1 port, with `env` added to this process's environment; no broker (the
    publisher idles). Ready once `ready_path` answers; `wrap` runs it under a tool
    (a profiler)."""

    def __init__(
        self,
        env: Mapping[str, str],
        log: Path,
        *,
        ready_path: str = "/health",
        wrap: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [
                *wrap,
                PY,
                "-m",
                "uvicorn",
                "--factory",
                "server:app",
                "--app-dir",
                str(BENCH),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env={**os.environ, "CITYOPS_MQTT_URL": "mqtt://127.0.0.1:9", **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                self.log.close()
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the API exited with {self.proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(self.url(ready_path), timeout=5) as r:
                    r.read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not come up in 60 s; see {log}") from None
                time.sleep(0.3)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def run_driver(script: Path, job: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """Run a load driver script as its own process (so its threads do not share this
    interpreter with anything): the job as JSON on stdin, its JSON answer from stdout."""
    proc = subprocess.Popen(
        [PY, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(json.dumps(job), timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    res: dict[str, Any] = json.loads(out)
    return res


def run_workers(worker: Callable[[], None], threads: int, hard_stop: float) -> None:
    """A load driver's client threads: start `threads` of `worker` and wait for them, at
    most until 15 s after `hard_stop` (a `time.perf_counter()` value)."""
    pool = [Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=max(1.0, hard_stop + 15.0 - time.perf_counter()))
