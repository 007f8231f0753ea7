"""Liveness of a service's worker loops, and the one HTTP endpoint every long-running
service serves its Prometheus metrics and liveness on.

A service does its work in a loop. The loop beats its `Heartbeat` as it goes (every
iteration, and between the steps of a long one); the probe (`/healthz`, also `/livez`)
answers 200 while every loop has beaten within the service's limit, and 503 naming the
loop that has not, how long it has been silent and what it was doing then. So a loop
stuck in a call (a socket that never answers, a solver that never returns, a deadlock)
turns the probe 503 and the container is restarted, while a database or broker outage
that the loop rides out by retrying does not: it keeps beating while it retries.

A loop that knows a step may take longer than the limit (a solve with a time limit, a
planned sleep between runs) says so with `beat(grace_s=...)`: its next beat is then
expected within the limit plus that grace.

`/metrics` serves the service's own registry in the Prometheus text format, with
`<namespace>_heartbeat_age_seconds{loop}`, `<namespace>_heartbeat_limit_seconds{loop}`
and `<namespace>_heartbeats_total{loop}` of every loop added.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

__all__ = ["Endpoint", "Heartbeat", "Liveness", "LoopStatus", "Verdict"]

logger = logging.getLogger(__name__)

#: Paths of the liveness probe (both spellings are common in probe configurations).
LIVENESS_PATHS = frozenset({"/healthz", "/livez"})


@dataclass(frozen=True, slots=True)
class LoopStatus:
    """One loop as the probe sees it."""

    loop: str
    age_s: float  # since its last beat
    limit_s: float  # the age at which it counts as hung (the service's limit + its grace)
    doing: str  # what it said it was doing at its last beat
    beats: int

    @property
    def stale(self) -> bool:
        return self.age_s > self.limit_s

    def describe(self) -> str:
        doing = f", last: {self.doing}" if self.doing else ""
        state = "no heartbeat" if self.stale else "last heartbeat"
        return f"{self.loop}: {state} for {self.age_s:.1f} s (limit {self.limit_s:g} s){doing}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The probe's answer: live while no loop is stale."""

    service: str
    loops: tuple[LoopStatus, ...]

    @property
    def live(self) -> bool:
        return not any(s.stale for s in self.loops)

    @property
    def reason(self) -> str:
        stale = [s.describe() for s in self.loops if s.stale]
        if stale:
            return f"{self.service}: " + "; ".join(stale)
        return f"{self.service}: every loop beats"

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.live else "stale",
            "service": self.service,
            "reason": self.reason,
            "loops": [
                {
                    "loop": s.loop,
                    "age_s": round(s.age_s, 3),
                    "limit_s": s.limit_s,
                    "stale": s.stale,
                    "doing": s.doing,
                    "beats": s.beats,
                }
                for s in self.loops
            ],
        }


class Heartbeat:
    """The heartbeat of one loop; only the loop's own thread beats it."""

    __slots__ = ("_beats", "_clock", "_last", "name")

    def __init__(self, name: str, clock: Callable[[], float]) -> None:
        self.name = name
        self._clock = clock
        # (monotonic time, grace, doing): replaced as a whole, so a reader never sees a mix
        self._last: tuple[float, float, str] = (clock(), 0.0, "starting")
        self._beats = 0

    def beat(self, doing: str = "", *, grace_s: float = 0.0) -> None:
        """The loop made progress. `doing`: what it goes on with (shown when it hangs
        there); `grace_s`: how much longer than the limit the next beat may take."""
        self._last = (self._clock(), max(0.0, grace_s), doing)
        self._beats += 1

    def status(self, now: float, limit_s: float) -> LoopStatus:
        at, grace, doing = self._last
        return LoopStatus(self.name, max(0.0, now - at), limit_s + grace, doing, self._beats)


class Liveness:
    """The loops of one service and the limit on their silence."""

    def __init__(
        self, service: str, limit_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not limit_s > 0:
            raise ValueError(f"the liveness limit must be positive, got {limit_s!r}")
        self.service = service
        self.limit_s = limit_s
        self._clock = clock
        self._loops: dict[str, Heartbeat] = {}
        self._lock = threading.Lock()

    def loop(self, name: str) -> Heartbeat:
        """The heartbeat of loop `name`, made (and counting from now) on the first call."""
        with self._lock:
            heartbeat = self._loops.get(name)
            if heartbeat is None:
                heartbeat = self._loops[name] = Heartbeat(name, self._clock)
            return heartbeat

    def verdict(self) -> Verdict:
        now = self._clock()
        with self._lock:
            loops = list(self._loops.values())
        return Verdict(self.service, tuple(h.status(now, self.limit_s) for h in loops))

    def register(self, registry: CollectorRegistry, namespace: str) -> None:
        """Add the heartbeat series of every loop, as `namespace`_..., to `registry`."""
        registry.register(_HeartbeatCollector(self, namespace))


class _HeartbeatCollector:
    """Heartbeat series, read at scrape time."""

    def __init__(self, liveness: Liveness, namespace: str) -> None:
        self._liveness = liveness
        self._namespace = namespace

    def collect(self) -> Iterator[Metric]:
        ns = self._namespace
        age = GaugeMetricFamily(
            f"{ns}_heartbeat_age_seconds", "seconds since the loop last beat", labels=["loop"]
        )
        limit = GaugeMetricFamily(
            f"{ns}_heartbeat_limit_seconds",
            "age at which the loop counts as hung (liveness 503)",
            labels=["loop"],
        )
        beats = CounterMetricFamily(
            f"{ns}_heartbeats", "heartbeats of the loop (its progress)", labels=["loop"]
        )
        for s in self._liveness.verdict().loops:
            age.add_metric([s.loop], s.age_s)
            limit.add_metric([s.loop], s.limit_s)
            beats.add_metric([s.loop], s.beats)
        yield age
        yield limit
        yield beats


class _QuietHandler(WSGIRequestHandler):
    """No access log: probes and scrapes would drown the service's own lines."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Endpoint:
    """`/metrics` (the registry, Prometheus text format) and, with a `Liveness`,
    `/healthz` and `/livez` (200 or 503, JSON) on one port, served by a daemon thread."""

    def __init__(self, registry: CollectorRegistry, liveness: Liveness | None = None) -> None:
        self.registry = registry
        self.liveness = liveness
        self._metrics_app = make_wsgi_app(registry)
        self._server: ThreadingWSGIServer | None = None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if method not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", b"use GET\n")
        if path in LIVENESS_PATHS and self.liveness is not None:
            verdict = self.liveness.verdict()
            if not verdict.live:
                logger.warning("liveness probe answered 503: %s", verdict.reason)
            body = json.dumps(verdict.as_json()).encode() + b"\n"
            status = "200 OK" if verdict.live else "503 Service Unavailable"
            return _answer(start_response, status, body, "application/json")
        return _answer(start_response, "404 Not Found", b"not found: see /metrics\n")

    def serve(self, port: int, addr: str = "0.0.0.0") -> bool:
        """Start serving on `port` (0: any free port, see `port`). A port that cannot be
        bound is logged and the service runs on without the endpoint."""
        try:
            server = make_server(addr, port, self, ThreadingWSGIServer, handler_class=_QuietHandler)
        except OSError as exc:
            logger.error("metrics endpoint not started on port %d: %s", port, exc)
            return False
        self._server = server
        threading.Thread(
            target=server.serve_forever, name=f"metrics-{server.server_port}", daemon=True
        ).start()
        logger.info(
            "Prometheus metrics at http://%s:%d/metrics%s",
            addr,
            server.server_port,
            ", liveness at /healthz" if self.liveness is not None else "",
        )
        return True

    @property
    def port(self) -> int | None:
        """The port being served, None when not serving."""
        return None if self._server is None else int(self._server.server_port)

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _answer(
    start_response: StartResponse, status: str, body: bytes, content_type: str = "text/plain"
) -> list[bytes]:
    start_response(
        status,
        [("Content-Type", f"{content_type}; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]
