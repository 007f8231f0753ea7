"""The ingest's own metrics: Prometheus (own registry per instance), a summary line and
the liveness of its writer loop.

Served by `cityops.ingest.health.Endpoint` on `CITYOPS_INGEST_METRICS_PORT`: `/metrics`
and `/healthz` (503 once the writer has not beaten for `CITYOPS_INGEST_LIVENESS_LIMIT_S`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cityops.ingest.health import Endpoint, Liveness

__all__ = ["NAMESPACE", "IngestMetrics"]

logger = logging.getLogger(__name__)

NAMESPACE = "cityops_ingest"


class _HasTimes(Protocol):
    @property
    def t_mono(self) -> float: ...


class IngestMetrics:
    """Counters, histograms and the writer's heartbeat of one ingest instance."""

    def __init__(self, instance: str, liveness_limit_s: float) -> None:
        self.instance = instance
        self.registry = CollectorRegistry()
        r = self.registry
        self.liveness = Liveness("ingest", liveness_limit_s)
        self.liveness.register(r, NAMESPACE)
        self.received = Counter(
            "cityops_ingest_messages_received", "MQTT messages received", registry=r
        )
        self.rows = Counter(
            "cityops_ingest_rows_written", "rows newly written, by table", ["table"], registry=r
        )
        self.dead = Counter(
            "cityops_ingest_dead_letters",
            "messages dead-lettered, by reason",
            ["reason"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "cityops_ingest_batch_write_seconds",
            "time to write and commit one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.receive_to_commit = Histogram(
            "cityops_ingest_receive_to_commit_seconds",
            "from receipt of a message to the commit of its row",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.backlog = Gauge(
            "cityops_ingest_backlog", "messages received but not yet written", registry=r
        )
        self.db_errors = Counter(
            "cityops_ingest_db_errors", "failed database writes (retried)", registry=r
        )
        self.lorawan_duplicates = Counter(
            "cityops_ingest_lorawan_duplicates",
            "LoRaWAN frames received again (another gateway, a redelivery) and stored once",
            registry=r,
        )
        self._lock = threading.Lock()
        self.totals = {"received": 0, "rows": 0, "dead": 0, "batches": 0}
        self._last_batch_ms: float | None = None
        self.endpoint = Endpoint(self.registry, self.liveness)

    def observe_batch(
        self,
        batch: Sequence[_HasTimes],
        good: Sequence[object],
        dead: Sequence[Any],
        result: Any,
        write_s: float,
        done_mono: float,
    ) -> None:
        self.received.inc(len(batch))
        for table, n in result.rows.items():
            self.rows.labels(table).inc(n)
        for d in dead:
            self.dead.labels(d.reason).inc()
        self.lorawan_duplicates.inc(result.duplicates)
        self.batch_seconds.observe(write_s)
        self.receive_to_commit.observe(done_mono - batch[0].t_mono)
        with self._lock:
            self.totals["received"] += len(batch)
            self.totals["rows"] += result.total_rows
            self.totals["dead"] += len(dead)
            self.totals["batches"] += 1
            self._last_batch_ms = write_s * 1000.0

    def snapshot(self, backlog: int) -> tuple[int, int, int, int, float | None, int]:
        with self._lock:
            t = dict(self.totals)
            return (t["received"], t["rows"], t["dead"], t["batches"], self._last_batch_ms, backlog)

    def summary(self, backlog: int) -> str:
        received, rows, dead, batches, last_ms, _ = self.snapshot(backlog)
        last = f"{last_ms:.1f} ms" if last_ms is not None else "-"
        return (
            f"received {received:,} messages, wrote {rows:,} rows in {batches:,} batches, "
            f"{dead:,} dead letters, backlog {backlog:,}, last batch {last}"
        )

    def serve(self, port: int) -> None:
        self.endpoint.serve(port)

    def shutdown(self) -> None:
        self.endpoint.shutdown()
