"""Ingest benchmark: sustained rate, burst absorption and a naive baseline, in one run.

Publisher processes, a private Mosquitto (with the shipped deploy/mosquitto/conf.d),
`cityops ingest` and PostgreSQL each run as their own processes, as in production.
Phases:

  sustained  --rate msgs/s for --seconds (issue target: 10,000/s, no loss, p99 <= 500 ms)
  burst      --burst-rate msgs/s for --burst-seconds (target: 20,000/s for 60 s, no loss)
  baseline   a paho subscriber doing one INSERT + commit per message, at the highest rate
             it sustains (probed first) for --baseline-seconds

Every message is QoS 1 bin telemetry whose `ts` is its publish time; publishers wait for
all PUBACKs. Figures per phase: offered rate; sustained end-to-end rate (rows / time from
the first publish to the last row's merge); lost (acknowledged by the broker but no row,
after the ingest drained); duplicate deliveries (messages the ingest received more than
once, from its own counters); publish-to-row latency p50/p99 over all rows
(percentile_cont of ingested_at - ts). The last line of output is one JSON object.

A fresh database and broker are created for the run and removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

# Sibling modules: this file runs as a script, so its folder is on sys.path.
from figures import (
    CpuSnapshot,
    RowStats,
    all_processes,
    backend_pid,
    committed_by,
    descendants,
    inserted,
    machine_busy,
    others,
    row_stats,
    time_rollup_refresh,
    wait_drained,
    worst_seconds,
)
from fleet import LORA_EMPTY_MM, LORA_FULL_MM, Fleet, FleetResult
from stack import Broker, Database, IngestProcess, IngestSummary, NaiveProcess

from cityops.ingest.config import Settings

ISSUE_RATE = 10_000
ISSUE_P99_MS = 500.0
ISSUE_BURST_RATE = 20_000
ISSUE_BURST_S = 60.0
ISSUE_LORAWAN_RATE = 2_000
_PROGRESS_S = 2.0

_QUICK = {
    "rate": 2_000,
    "seconds": 5.0,
    "burst_rate": 4_000,
    "burst_seconds": 5.0,
    "baseline_seconds": 5.0,
    "sensors": 200,
}
_FULL = {
    "rate": ISSUE_RATE,
    "seconds": 30.0,
    "burst_rate": ISSUE_BURST_RATE,
    "burst_seconds": ISSUE_BURST_S,
    "baseline_seconds": 10.0,
    "sensors": 1_000,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/ingest/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Defaults in brackets are for a full run; --quick uses smaller ones. "
        "See docs/performance.md for measured figures.",
    )
    full, quick = _FULL, _QUICK
    parser.add_argument("--rate", type=int, help=f"sustained phase, msgs/s [{full['rate']}]")
    parser.add_argument("--seconds", type=float, help=f"sustained phase length [{full['seconds']}]")
    parser.add_argument(
        "--burst-rate", type=int, help=f"burst phase, msgs/s [{full['burst_rate']}]"
    )
    parser.add_argument(
        "--burst-seconds", type=float, help=f"burst phase length [{full['burst_seconds']}]"
    )
    parser.add_argument(
        "--baseline-seconds",
        type=float,
        help=f"naive baseline measured phase length [{full['baseline_seconds']}]",
    )
    parser.add_argument(
        "--sensors",
        type=int,
        help=f"bins (sensors) registered and published for [{full['sensors']}]",
    )
    parser.add_argument(
        "--publishers",
        type=int,
        help="publisher processes (default: one per 10,000 msgs/s with raw, per 5,000 with "
        "paho, at least 2)",
    )
    parser.add_argument(
        "--publisher",
        choices=["raw", "paho"],
        default="raw",
        help="publisher client: raw = minimal MQTT 3.1.1 encoder (about 1/10 of paho's CPU per "
        "message, so the load generator leaves the CPUs to the system under test), paho = "
        "paho-mqtt [raw]",
    )
    parser.add_argument(
        "--ingest-instances",
        type=int,
        default=1,
        help="ingest processes; more than 1 share the load through an MQTT v5 shared "
        "subscription (CITYOPS_INGEST_SHARE_GROUP) [1]",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in quick.items()),
    )
    parser.add_argument("--skip-baseline", action="store_true", help="no naive baseline phase")
    parser.add_argument(
        "--skip-lorawan", action="store_true",
        help="no LoRaWAN phases (ChirpStack/The Things Stack uplinks at the sustained rate "
        "and at --lorawan-rate)",
    )
    parser.add_argument(
        "--lorawan-rate", type=int, default=ISSUE_LORAWAN_RATE,
        help=f"uplinks/s of the second LoRaWAN phase [{ISSUE_LORAWAN_RATE}]",
    )
    parser.add_argument(
        "--batch-size", type=int, help="CITYOPS_INGEST_BATCH_SIZE for the ingest [its default]"
    )
    parser.add_argument(
        "--flush-ms", type=int, help="CITYOPS_INGEST_FLUSH_MS for the ingest [its default]"
    )
    parser.add_argument(
        "--receive-maximum",
        type=int,
        help="CITYOPS_INGEST_RECEIVE_MAXIMUM for the ingest [its default]",
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=30.0,
        help="after publishing, stop waiting for rows once none arrived for this long [30]",
    )
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("CITYOPS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL URL allowed to CREATE DATABASE "
        "[$CITYOPS_BENCH_PG or postgresql://postgres@127.0.0.1:5432/postgres]",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with logs")
    args = parser.parse_args(argv)
    base = quick if args.quick else full
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


@dataclass
class Phase:
    name: str
    target_rate: float
    seconds: float
    fleet: FleetResult
    stats: RowStats
    window_s: float
    cpu: dict[str, float]
    summary: IngestSummary | None = None
    worst: list[tuple[float, float, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: rows the ingest writes per message: a LoRaWAN uplink is a reading and a frame
    rows_per_message: int = 1

    @property
    def rows(self) -> int:
        return self.stats.rows

    @property
    def lost(self) -> int:
        return max(0, self.fleet.acked - self.stats.rows)

    @property
    def duplicates(self) -> int | None:
        """Deliveries the ingest received beyond one per stored row or dead letter."""
        if self.summary is None:
            return None
        stored = self.summary.rows // self.rows_per_message
        return self.summary.received - stored - self.summary.dead_letters

    @property
    def rate(self) -> float:
        span = self.stats.last_ingested - self.fleet.first_publish
        return self.stats.rows / span if span > 0 and self.stats.rows else 0.0

    @property
    def drain_s(self) -> float:
        return max(0.0, self.stats.last_ingested - self.fleet.last_publish)

    @property
    def complete_offer(self) -> bool:
        """The publishers sent (nearly) all the schedule asked for."""
        return self.fleet.published >= 0.99 * self.target_rate * self.seconds


def say(text: str) -> None:
    print(text, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, stack: ExitStack) -> None:
        self.args = args
        self.stack = stack
        self.tag = secrets.token_hex(3)
        self.workdir = Path(tempfile.mkdtemp(prefix="cityops-bench-"))
        if not args.keep_logs:
            stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)
        self.db = Database(args.admin_url)
        self.broker = Broker(self.workdir / "broker")
        self.conn: psycopg.Connection[tuple[object, ...]] | None = None
        self.sensors: list[str] = []
        self.lora: list[str] = []
        self._f_cnt_base = 0
        self.mode = ""
        self.ours: set[int] = {os.getpid()}

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        a = self.args
        say(f"database {self.db.name}: creating and migrating")
        self.stack.callback(self._drop_db)
        self.mode = self.db.create()
        self.sensors = self.db.register_bins(a.sensors)
        self.lora = self.db.register_lora_bins(a.sensors, LORA_EMPTY_MM, LORA_FULL_MM)
        say(f"database {self.db.name}: storage mode {self.mode}, {len(self.sensors)} bins, "
            f"{len(self.lora)} with LoRaWAN sensors")
        self.stack.callback(self.broker.stop)
        self.broker.start()
        self.ours.add(self.broker.pid)
        say(
            f"broker: private mosquitto pid {self.broker.pid} on port {self.broker.port} "
            "with deploy/mosquitto/conf.d"
        )
        self.conn = psycopg.connect(self.db.url, autocommit=True, application_name="bench-runner")
        self.stack.callback(self.conn.close)

    def _drop_db(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.db.drop()
        print(f"database {self.db.name} dropped", file=sys.stderr)

    def tuning(self) -> dict[str, str]:
        env = {}
        a = self.args
        for opt, var in (
            ("batch_size", "CITYOPS_INGEST_BATCH_SIZE"),
            ("flush_ms", "CITYOPS_INGEST_FLUSH_MS"),
            ("receive_maximum", "CITYOPS_INGEST_RECEIVE_MAXIMUM"),
        ):
            if getattr(a, opt) is not None:
                env[var] = str(getattr(a, opt))
        return env

    def tuning_effective(self) -> dict[str, int]:
        defaults = Settings.model_fields
        return {
            "batch_size": self.args.batch_size or int(defaults["ingest_batch_size"].default),
            "flush_ms": self.args.flush_ms or int(defaults["ingest_flush_ms"].default),
            "receive_maximum": self.args.receive_maximum
            or int(defaults["ingest_receive_maximum"].default),
        }

    def publishers_for(self, rate: float) -> int:
        per_process = 10_000 if self.args.publisher == "raw" else 5_000
        return self.args.publishers or max(2, math.ceil(rate / per_process))

    # ----------------------------------------------------------------- phases
    def publish(
        self,
        name: str,
        *,
        prefix: str,
        rate: float,
        seconds: float,
        pids: Callable[[], dict[str, list[int | None]]],
        lorawan: bool = False,
    ) -> tuple[FleetResult, CpuSnapshot, int]:
        """Run the publishers with progress lines; returns their result, CPU before, rows before."""
        assert self.conn is not None
        n = self.publishers_for(rate)
        fleet = Fleet(
            host="127.0.0.1",
            port=self.broker.port,
            prefix=prefix,
            sensors=self.lora if lorawan else self.sensors,
            rate=rate,
            seconds=seconds,
            processes=n,
            tag=f"bench-{self.tag}-{name}",
            client=self.args.publisher,
            lorawan=lorawan,
            # the devices of an earlier LoRaWAN phase go on counting, as real ones would
            f_cnt_base=self._f_cnt_base,
        )
        if lorawan:
            self._f_cnt_base += int(rate * seconds) + 1
        self.stack.callback(fleet.terminate)
        say(
            f"[{name}] {n} {self.args.publisher} publisher processes, {rate:,.0f} msgs/s "
            f"for {seconds:g} s"
        )
        fleet.start()
        ins0 = inserted(self.conn)
        cpu0 = CpuSnapshot.take(pids())
        t0 = fleet.go()
        next_report = t0 + _PROGRESS_S
        while fleet.running():
            time.sleep(0.1)
            if time.time() >= next_report:
                next_report += _PROGRESS_S
                say(
                    f"[{name}] {time.time() - t0:6.1f} s  published {fleet.published:>10,}  "
                    f"acked {fleet.acked:>10,}  rows {inserted(self.conn) - ins0:>10,}"
                )
        result = fleet.join()
        fleet.terminate()
        for err in result.errors:
            say(f"[{name}] WARNING {err}")
        say(
            f"[{name}] published {result.published:,} in {result.last_publish - t0:.1f} s "
            f"(offered {result.offered_rate:,.0f} msgs/s), acked {result.acked:,}"
        )
        return result, cpu0, ins0

    def settle(
        self,
        name: str,
        *,
        rate: float,
        seconds: float,
        fleet: FleetResult,
        cpu0: CpuSnapshot,
        ins0: int,
        pids: Callable[[], dict[str, list[int | None]]],
    ) -> Phase:
        """Wait for the consumer to drain, then measure the phase."""
        assert self.conn is not None
        t_pub = time.time()

        def report(n: int) -> None:
            say(
                f"[{name}] draining {time.time() - t_pub:6.1f} s after publishing: rows {n:>10,}"
                f" of {fleet.acked:,}"
            )

        wait_drained(
            self.conn,
            expected=fleet.acked,
            min_ms=fleet.min_ts_ms,
            max_ms=fleet.max_ts_ms,
            inserted_before=ins0,
            stall_s=self.args.stall_seconds,
            report=report,
        )
        cpu1 = CpuSnapshot.take(pids())
        stats = row_stats(self.conn, fleet.min_ts_ms, fleet.max_ts_ms)
        cpu = cpu1.since(cpu0)
        cpu["publishers"] = fleet.cpu_s
        phase = Phase(name, rate, seconds, fleet, stats, cpu1.at - cpu0.at, cpu)
        phase.worst = worst_seconds(self.conn, fleet.min_ts_ms, fleet.max_ts_ms)
        return phase

    def run_ingest_phase(
        self, name: str, rate: float, seconds: float, *, lorawan: bool = False
    ) -> Phase:
        """One phase through `cityops ingest`: the MQTT contract, or (`lorawan`) uplinks of
        ChirpStack and The Things Stack through its LoRaWAN sources, decoded and calibrated."""
        assert self.conn is not None
        n = self.args.ingest_instances
        tuning = self.tuning()
        if lorawan:
            tuning["CITYOPS_INGEST_SOURCES"] = "chirpstack,tts"
            tuning["CITYOPS_INGEST_LORAWAN_ROOT"] = f"bench{self.tag}"
        if n > 1:
            tuning["CITYOPS_INGEST_SHARE_GROUP"] = "bench"
        ingests = [
            IngestProcess(
                workdir=self.workdir,
                database_url=self.db.url,
                mqtt_url=self.broker.url,
                prefix=f"bench{self.tag}",
                client_id=f"bench-ingest-{self.tag}" + (f"-{k}" if n > 1 else ""),
                tuning=tuning,
                label=f"ingest-{name}" + (f"-{k}" if n > 1 else ""),
            )
            for k in range(1, n + 1)
        ]
        for ingest in ingests:
            self.stack.callback(ingest.kill)
            ingest.start()
            self.ours.add(ingest.pid)
        conn = self.conn
        backends: dict[str, int] = {}

        def pids() -> dict[str, list[int | None]]:
            for ingest in ingests:
                if ingest.application_name not in backends:
                    pid = backend_pid(conn, ingest.application_name)
                    if pid is not None:
                        backends[ingest.application_name] = pid
            return {
                "broker": [self.broker.pid],
                "ingest": [i.pid for i in ingests],
                "db backend": list(backends.values()),
            }

        say(f"[{name}] cityops ingest pid {', '.join(str(i.pid) for i in ingests)} subscribed")
        fleet, cpu0, ins0 = self.publish(
            name, prefix=f"bench{self.tag}", rate=rate, seconds=seconds, pids=pids,
            lorawan=lorawan,
        )
        phase = self.settle(
            name, rate=rate, seconds=seconds, fleet=fleet, cpu0=cpu0, ins0=ins0, pids=pids
        )
        if not all(i.alive() for i in ingests):
            phase.notes.append("an ingest process exited during the phase")
        phase.summary = IngestSummary.total([i.stop() for i in ingests])
        phase.rows_per_message = 2 if lorawan else 1
        if self.mode == "plain":  # TimescaleDB: real-time continuous aggregates, no repair
            took, rows = time_rollup_refresh(conn, fleet.min_ts_ms)
            phase.notes.append(
                f"a full rollup repair (cityops_refresh_rollups, not on the write path: "
                f"triggers keep the rollups current) took {took:.2f} s for {rows:,} readings"
            )
        if phase.summary.rows != phase.rows * phase.rows_per_message:
            phase.notes.append(
                f"ingest counted {phase.summary.rows:,} new rows, the table has {phase.rows:,}"
            )
        return phase

    def run_baseline(self) -> tuple[Phase | None, list[str]]:
        """Probe the naive subscriber's capacity, then measure it just below that."""
        assert self.conn is not None
        a = self.args
        conn = self.conn
        prefix = f"bench{self.tag}naive"
        log: list[str] = []

        def start(label: str) -> tuple[NaiveProcess, Callable[[], dict[str, list[int | None]]]]:
            naive = NaiveProcess(
                workdir=self.workdir,
                database_url=self.db.url,
                host="127.0.0.1",
                port=self.broker.port,
                prefix=prefix,
                client_id=f"bench-naive-{self.tag}-{label}",
            )
            self.stack.callback(naive.kill)
            naive.start()
            self.ours.add(naive.pid)

            def pids() -> dict[str, list[int | None]]:
                return {
                    "broker": [self.broker.pid],
                    "naive subscriber": [naive.pid],
                    "db backend": [backend_pid(conn, naive.application_name)],
                }

            return naive, pids

        probe_s = min(4.0, a.baseline_seconds)
        naive, pids = start("probe")
        fleet, _cpu0, _ins0 = self.publish(
            "probe", prefix=prefix, rate=a.rate, seconds=probe_s, pids=pids
        )
        done = committed_by(conn, fleet.min_ts_ms, fleet.max_ts_ms, fleet.last_publish)
        naive.kill()  # clean session: the broker drops the probe's backlog
        capacity = done / max(1e-3, fleet.last_publish - fleet.first_publish)
        log.append(
            f"probe: offered {fleet.offered_rate:,.0f} msgs/s for {probe_s:g} s, the naive "
            f"subscriber committed {capacity:,.0f} rows/s meanwhile"
        )
        say(f"[probe] naive subscriber capacity about {capacity:,.0f} msgs/s")
        rate = max(50.0, math.floor(0.9 * min(capacity, a.rate) / 50) * 50)
        for attempt in range(1, 4):
            naive, pids = start(f"run{attempt}")
            fleet, cpu0, ins0 = self.publish(
                "baseline", prefix=prefix, rate=rate, seconds=a.baseline_seconds, pids=pids
            )
            done = committed_by(conn, fleet.min_ts_ms, fleet.max_ts_ms, fleet.last_publish)
            behind = fleet.acked - done
            kept_up = behind <= max(rate * 0.5, 100)  # at most half a second behind
            if kept_up or attempt == 3:
                phase = self.settle(
                    "baseline",
                    rate=rate,
                    seconds=a.baseline_seconds,
                    fleet=fleet,
                    cpu0=cpu0,
                    ins0=ins0,
                    pids=pids,
                )
                naive.stop()
                verdict = "kept up" if kept_up else "did not keep up either; last attempt"
                log.append(
                    f"attempt {attempt}: {rate:,.0f} msgs/s, {behind:,} messages behind when "
                    f"publishing ended ({verdict})"
                )
                return phase, log
            log.append(
                f"attempt {attempt}: {rate:,.0f} msgs/s, {behind:,} messages behind when "
                "publishing ended: not sustained, retrying 25% lower"
            )
            say(f"[baseline] {behind:,} messages behind at {rate:,.0f} msgs/s; retrying lower")
            naive.kill()
            rate = max(50.0, math.floor(0.75 * rate / 50) * 50)
        return None, log


# ----------------------------------------------------------------------- report
def _pct(cpu_s: float, window_s: float) -> str:
    return f"{100.0 * cpu_s / window_s:5.0f} %" if window_s > 0 else "-"


def render(
    bench: Bench,
    phases: list[Phase],
    baseline_log: list[str],
    other_procs: list[tuple[float, str]],
    total_s: float,
    busy_before: float,
) -> str:
    a = bench.args
    lines = [
        "",
        "cityops ingest benchmark",
        f"  machine: {os.cpu_count()} CPUs; storage mode {bench.mode}; {len(bench.sensors):,} "
        f"sensors; {a.publisher} publishers; {a.ingest_instances} ingest process(es), tuning "
        f"{bench.tuning_effective()}; run took {total_s:.0f} s",
        f"  machine busy before the run: {100 * busy_before:.0f} % of its CPUs (3 s sample)",
        "",
    ]
    head = f"  {'':30}" + "".join(f"{p.name:>14}" for p in phases)
    lines.append(head)

    def row(label: str, fn: Callable[[Phase], str]) -> None:
        lines.append(f"  {label:30}" + "".join(f"{fn(p):>14}" for p in phases))

    row("target rate (msgs/s)", lambda p: f"{p.target_rate:,.0f}")
    row("publisher processes", lambda p: f"{bench.publishers_for(p.target_rate)}")
    row("published", lambda p: f"{p.fleet.published:,}")
    row("acked by broker", lambda p: f"{p.fleet.acked:,}")
    row("offered rate (msgs/s)", lambda p: f"{p.fleet.offered_rate:,.0f}")
    row("rows", lambda p: f"{p.rows:,}")
    row("sustained e2e rate (msgs/s)", lambda p: f"{p.rate:,.0f}")
    row("lost (acked, no row)", lambda p: f"{p.lost:,}")
    row("duplicate deliveries", lambda p: "n/a" if p.duplicates is None else f"{p.duplicates:,}")
    row("latency p50 (ms)", lambda p: f"{p.stats.p50_ms:,.1f}")
    row("latency p99 (ms)", lambda p: f"{p.stats.p99_ms:,.1f}")
    row("latency max (ms)", lambda p: f"{p.stats.max_ms:,.1f}")
    row("last row after last publish", lambda p: f"{p.drain_s:.2f} s")
    row(
        "ingest batches (avg rows)",
        lambda p: (
            "n/a"
            if p.summary is None
            else f"{p.summary.batches:,} ({p.summary.rows / max(1, p.summary.batches):,.0f})"
        ),
    )
    row(
        "ingest max backlog (10 s log)",
        lambda p: "n/a" if p.summary is None else f"{p.summary.max_backlog:,}",
    )
    lines.append("")
    lines.append(
        "  CPU, % of one core over publish + drain (the machine has "
        f"{os.cpu_count()} cores = {100 * (os.cpu_count() or 1)} %)"
    )
    lines.append(f"  {'window (s)':30}" + "".join(f"{p.window_s:>14.1f}" for p in phases))
    names = ["publishers", "broker", "ingest", "naive subscriber", "db backend"]
    for name in names:
        if any(name in p.cpu for p in phases):
            row(name, lambda p, n=name: _pct(p.cpu[n], p.window_s) if n in p.cpu else "-")
    row(
        "postgres, other processes",
        lambda p: _pct(
            p.cpu["postgres (all processes)"] - p.cpu.get("db backend", 0.0), p.window_s
        ),
    )
    row("benchmark runner", lambda p: _pct(p.cpu.get("benchmark runner", 0.0), p.window_s))

    def rest(p: Phase) -> str:
        ours = (
            sum(p.cpu.get(n, 0.0) for n in (*names, "benchmark runner"))
            - p.cpu.get("db backend", 0.0)
            + p.cpu["postgres (all processes)"]
        )
        return _pct(max(0.0, p.cpu["machine busy"] - ours), p.window_s)

    row("everything else on the machine", rest)
    row("machine busy", lambda p: _pct(p.cpu["machine busy"], p.window_s))
    row("steal (hypervisor)", lambda p: _pct(p.cpu["steal"], p.window_s))
    if baseline_log:
        lines.append("")
        lines.append("  naive baseline: " + "; ".join(baseline_log))
    if other_procs:
        lines.append("")
        lines.append("  other processes using CPU during the run (% of one core, whole run):")
        lines.extend(f"    {pct:5.0f} %  {cmd}" for pct, cmd in other_procs)
    lines.append("")
    lines.append(
        "  slowest seconds (by publish time; offset from the phase start, max latency, rows):"
    )
    for p in phases:
        worst = ", ".join(f"{max(0.0, t):.0f} s: {ms:,.0f} ms ({n:,})" for t, ms, n in p.worst)
        lines.append(f"    {p.name:10} {worst}")
    for p in phases:
        for note in p.notes:
            lines.append(f"  NOTE {p.name}: {note}")
        for err in p.fleet.errors:
            lines.append(f"  WARNING {p.name}: {err}")
    lines.append("")
    lines.extend(verdicts(phases, a))
    return "\n".join(lines)


def verdicts(phases: list[Phase], args: argparse.Namespace) -> list[str]:
    by = {p.name: p for p in phases}
    out = ["  issue targets:"]
    s = by.get("sustained")
    if s is not None:
        ok = (
            s.target_rate >= ISSUE_RATE
            and s.complete_offer
            and s.lost == 0
            and s.stats.p99_ms <= ISSUE_P99_MS
            and s.drain_s <= 1.0
        )
        out.append(
            f"    sustained {ISSUE_RATE:,}/s, no loss, p99 <= {ISSUE_P99_MS:.0f} ms: "
            f"{'MET' if ok else 'MISSED'} (offered {s.fleet.offered_rate:,.0f}/s, e2e "
            f"{s.rate:,.0f}/s, lost {s.lost:,}, p99 {s.stats.p99_ms:,.0f} ms, last row "
            f"{s.drain_s:.2f} s after the last publish)"
        )
    b = by.get("burst")
    if b is not None:
        ok = (
            b.target_rate >= ISSUE_BURST_RATE
            and b.seconds >= ISSUE_BURST_S
            and b.complete_offer
            and b.lost == 0
        )
        out.append(
            f"    absorb {ISSUE_BURST_RATE:,}/s for {ISSUE_BURST_S:.0f} s without loss: "
            f"{'MET' if ok else 'MISSED'} (offered {b.fleet.offered_rate:,.0f}/s for "
            f"{b.fleet.last_publish - b.fleet.first_publish:.0f} s, lost {b.lost:,}, "
            f"drained {b.drain_s:.1f} s after the last publish)"
        )
    lo, lo2 = by.get("lorawan"), by.get("lorawan-2k")
    if lo is not None and lo2 is not None and s is not None:
        ratio = lo.rate / s.rate if s.rate else 0.0
        ok = (
            lo2.target_rate >= ISSUE_LORAWAN_RATE
            and lo2.complete_offer
            and lo2.lost == 0
            and lo2.stats.p99_ms <= ISSUE_P99_MS
            and lo.complete_offer
            and lo.lost == 0
            and ratio >= 0.5
        )
        out.append(
            f"    LoRaWAN: no loss, p99 <= {ISSUE_P99_MS:.0f} ms at {ISSUE_LORAWAN_RATE:,} "
            f"uplinks/s, at least half the direct path's rate: {'MET' if ok else 'MISSED'} "
            f"(at {lo2.fleet.offered_rate:,.0f}/s: p99 {lo2.stats.p99_ms:,.0f} ms, lost "
            f"{lo2.lost:,}; at {lo.fleet.offered_rate:,.0f}/s: e2e {lo.rate:,.0f}/s = "
            f"{ratio:.2f} of the direct path's {s.rate:,.0f}/s, lost {lo.lost:,}, p99 "
            f"{lo.stats.p99_ms:,.0f} ms)"
        )
    if args.quick:
        out.append("    (a --quick run does not offer the issue's rates: targets cannot be met)")
    return out


def figures_json(phases: list[Phase]) -> dict[str, Any]:
    by = {p.name: p for p in phases}
    s, b, n = by.get("sustained"), by.get("burst"), by.get("baseline")

    def r(x: float | None, nd: int = 1) -> float | None:
        return None if x is None or math.isnan(x) else round(x, nd)

    out: dict[str, Any] = {
        "rate": r(s.rate, 0) if s else None,
        "lost": s.lost if s else None,
        "duplicates": s.duplicates if s else None,
        "p50_ms": r(s.stats.p50_ms) if s else None,
        "p99_ms": r(s.stats.p99_ms) if s else None,
        "burst_rate": r(b.rate, 0) if b else None,
        "burst_lost": b.lost if b else None,
        "burst_p99_ms": r(b.stats.p99_ms) if b else None,
        "baseline_rate": r(n.rate, 0) if n else None,
        "ratio": r(s.rate / n.rate, 2) if s and n and n.rate else None,
        "offered_rate": r(s.fleet.offered_rate, 0) if s else None,
        "burst_offered_rate": r(b.fleet.offered_rate, 0) if b else None,
        "burst_duplicates": b.duplicates if b else None,
        "baseline_p50_ms": r(n.stats.p50_ms) if n else None,
        "baseline_p99_ms": r(n.stats.p99_ms) if n else None,
    }
    lo, lo2 = by.get("lorawan"), by.get("lorawan-2k")
    out |= {
        "lorawan_2k_p99_ms": r(lo2.stats.p99_ms) if lo2 else None,
        "lorawan_2k_lost": lo2.lost if lo2 else None,
        "lorawan_rate": r(lo.rate, 0) if lo else None,
        "lorawan_lost": lo.lost if lo else None,
        "lorawan_duplicates": lo.duplicates if lo else None,
        "lorawan_p99_ms": r(lo.stats.p99_ms) if lo else None,
        "lorawan_ratio": r(lo.rate / s.rate, 2) if lo and s and s.rate else None,
    }
    return out


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)  # also when started with SIGINT ignored
    busy_before = machine_busy(3.0)
    say(f"machine busy before the run: {100 * busy_before:.0f} % of its CPUs (3 s sample)")
    started = time.monotonic()
    procs_before = all_processes()
    phases: list[Phase] = []
    baseline_log: list[str] = []
    try:
        with ExitStack() as stack:
            bench = Bench(args, stack)
            bench.setup()
            phases.append(bench.run_ingest_phase("sustained", args.rate, args.seconds))
            phases.append(bench.run_ingest_phase("burst", args.burst_rate, args.burst_seconds))
            if not args.skip_lorawan:
                # through the LoRaWAN sources (issue 16): the sustained phase's rate, for the
                # ratio to the direct path, and the issue's uplink rate, for its latency
                phases.append(bench.run_ingest_phase("lorawan", args.rate, args.seconds,
                                                     lorawan=True))
                phases.append(bench.run_ingest_phase(
                    "lorawan-2k", args.lorawan_rate, args.seconds, lorawan=True))
            if not args.skip_baseline:
                base, baseline_log = bench.run_baseline()
                if base is not None:
                    phases.append(base)
            total_s = time.monotonic() - started
            other_procs = others(
                procs_before, all_processes(), bench.ours | descendants(os.getpid()), total_s
            )
            say("cleaning up: ingest, broker, database")
    except KeyboardInterrupt:
        print("interrupted: processes stopped, database dropped", file=sys.stderr)
        return 130
    print(render(bench, phases, baseline_log, other_procs, total_s, busy_before), flush=True)
    print(json.dumps(figures_json(phases)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
