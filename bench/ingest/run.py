"""Ingest benchmark: sustained rate, burst absorption and two baselines, in one run.

Publisher processes, a private Mosquitto (with the shipped deploy/mosquitto/conf.d),
`cityops ingest` (or a baseline subscriber) and PostgreSQL each run as their own
processes, as in production. Phases, in this order:

  sustained   `cityops ingest` at --rate msgs/s for --seconds
              (issue target: 10,000/s, no loss, p99 <= 500 ms)
  burst       `cityops ingest` at --burst-rate msgs/s for --burst-seconds
              (target: 20,000/s for 60 s, no loss)
  lorawan     `cityops ingest` with ChirpStack / The Things Stack uplinks at --rate, then
  lorawan-2k  at --lorawan-rate (--skip-lorawan leaves both out)
  plain       the plain zero-loss subscriber (plain.py: paho, MQTT 3.1.1, persistent
              session, QoS 1, manual acks after COPY + INSERT ... ON CONFLICT + COMMIT of
              batches of up to 2,000 rows or 100 ms): a 4 s probe at --probe-rate finds
              the rate it keeps up with, then it is held at 90 % of that for
              --baseline-seconds (retried 25 % lower if it falls behind). Reported: the
              ratio ingest/plain, sustained e2e rate of `sustained` over that of `plain`
              (issue 18 target: >= 1.0). The ingest is offered only --rate: when it keeps
              up with all of it, the ratio is a lower bound. --skip-plain leaves it out.
  ingest-probe `cityops ingest` probed like the baselines (4 s at --probe-rate, after the
              plain phase): the capacity ratio, rows/s the ingest committed during its probe
              over those the plain subscriber committed during its own, compares the two
              at the same offered load.
  naive       a paho subscriber doing one INSERT + commit per message (naive.py), probed
              and held the same way. --skip-naive leaves it out; --skip-baseline both.

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
from pathlib import Path
from types import FrameType

import psycopg

# Sibling modules: this file runs as a script, so its folder is on sys.path.
from figures import (
    CpuSnapshot,
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
from options import parse_args
from report import Phase, figures_json, render
from stack import BaselineProcess, Broker, Database, IngestProcess, IngestSummary

from cityops.ingest.config import Settings

_PROGRESS_S = 2.0
Pids = Callable[[], dict[str, list[int | None]]]

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
        #: rows/s committed during the 4 s probe at --probe-rate, per consumer
        self.capacity: dict[str, float] = {}

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
        pids: Pids,
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
        pids: Pids,
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
        phase = Phase(name, rate, seconds, fleet, stats, cpu1.at - cpu0.at, cpu,
                      publishers=self.publishers_for(rate))
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

    def run_baseline(self, kind: str) -> tuple[Phase | None, list[str]]:
        """Probe a baseline subscriber's capacity (`kind`: "naive" or "plain"), then measure
        it just below that."""
        assert self.conn is not None
        a = self.args
        conn = self.conn
        log: list[str] = []
        label = f"{kind} subscriber"

        def start(run: str) -> tuple[BaselineProcess, str, Pids]:
            # a topic prefix per run: a killed plain subscriber's persistent session stays
            prefix = f"bench{self.tag}{kind}{run}"
            sub = BaselineProcess(
                workdir=self.workdir,
                database_url=self.db.url,
                host="127.0.0.1",
                port=self.broker.port,
                prefix=prefix,
                client_id=f"bench-{kind}-{self.tag}-{run}",
                script=f"{kind}.py",
            )
            self.stack.callback(sub.kill)
            sub.start()
            self.ours.add(sub.pid)

            def pids() -> dict[str, list[int | None]]:
                return {
                    "broker": [self.broker.pid],
                    label: [sub.pid],
                    "db backend": [backend_pid(conn, sub.application_name)],
                }

            return sub, prefix, pids

        probe_s = min(4.0, a.baseline_seconds)
        probe_rate = a.probe_rate or 1.5 * a.rate
        sub, prefix, pids = start("probe")
        fleet, _cpu0, _ins0 = self.publish(
            f"{kind}-probe", prefix=prefix, rate=probe_rate, seconds=probe_s, pids=pids
        )
        done = committed_by(conn, fleet.min_ts_ms, fleet.max_ts_ms, fleet.last_publish)
        sub.kill()
        capacity = done / max(1e-3, fleet.last_publish - fleet.first_publish)
        self.capacity[kind] = capacity
        log.append(
            f"probe: offered {fleet.offered_rate:,.0f} msgs/s for {probe_s:g} s, the {label} "
            f"committed {capacity:,.0f} rows/s meanwhile"
        )
        say(f"[{kind}-probe] {label} capacity about {capacity:,.0f} msgs/s")
        rate = max(50.0, math.floor(0.9 * min(capacity, probe_rate) / 50) * 50)
        for attempt in range(1, 4):
            sub, prefix, pids = start(f"run{attempt}")
            fleet, cpu0, ins0 = self.publish(
                kind, prefix=prefix, rate=rate, seconds=a.baseline_seconds, pids=pids
            )
            done = committed_by(conn, fleet.min_ts_ms, fleet.max_ts_ms, fleet.last_publish)
            behind = fleet.acked - done
            kept_up = behind <= max(rate * 0.5, 100)  # at most half a second behind
            if kept_up or attempt == 3:
                phase = self.settle(
                    kind,
                    rate=rate,
                    seconds=a.baseline_seconds,
                    fleet=fleet,
                    cpu0=cpu0,
                    ins0=ins0,
                    pids=pids,
                )
                sub.stop()
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
            say(f"[{kind}] {behind:,} messages behind at {rate:,.0f} msgs/s; retrying lower")
            sub.kill()
            rate = max(50.0, math.floor(0.75 * rate / 50) * 50)
        return None, log

    def probe_ingest(self) -> Phase:
        """The ingest probed like the baselines (4 s at --probe-rate), so that the capacity
        ratio compares like with like when the ingest keeps up with all of --rate."""
        a = self.args
        probe_rate = a.probe_rate or 1.5 * a.rate
        phase = self.run_ingest_phase("ingest-probe", probe_rate, min(4.0, a.baseline_seconds))
        assert self.conn is not None
        f = phase.fleet
        done = committed_by(self.conn, f.min_ts_ms, f.max_ts_ms, f.last_publish)
        self.capacity["ingest"] = done / max(1e-3, f.last_publish - f.first_publish)
        say(f"[ingest-probe] cityops ingest capacity about {self.capacity['ingest']:,.0f} msgs/s")
        return phase

    def header(self, total_s: float, busy_before: float) -> list[str]:
        a = self.args
        return [
            f"  machine: {os.cpu_count()} CPUs; storage mode {self.mode}; "
            f"{len(self.sensors):,} sensors; {a.publisher} publishers; {a.ingest_instances} "
            f"ingest process(es), tuning {self.tuning_effective()}; run took {total_s:.0f} s",
            f"  machine busy before the run: {100 * busy_before:.0f} % of its CPUs (3 s sample)",
        ]


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)  # also when started with SIGINT ignored
    busy_before = machine_busy(3.0)
    say(f"machine busy before the run: {100 * busy_before:.0f} % of its CPUs (3 s sample)")
    started = time.monotonic()
    procs_before = all_processes()
    phases: list[Phase] = []
    baseline_log: dict[str, list[str]] = {}
    try:
        with ExitStack() as stack:
            bench = Bench(args, stack)
            bench.setup()
            phases.append(bench.run_ingest_phase("sustained", args.rate, args.seconds))
            phases.append(bench.run_ingest_phase("burst", args.burst_rate, args.burst_seconds))
            if not args.skip_lorawan:
                # through the LoRaWAN sources (issue 16): the sustained phase's rate, for the
                # ratio to the direct path, and the uplink rate, for its latency
                phases.append(bench.run_ingest_phase("lorawan", args.rate, args.seconds,
                                                     lorawan=True))
                phases.append(bench.run_ingest_phase(
                    "lorawan-2k", args.lorawan_rate, args.seconds, lorawan=True))
            for kind in ("plain", "naive"):
                if args.skip_baseline or getattr(args, f"skip_{kind}"):
                    continue
                base, baseline_log[kind] = bench.run_baseline(kind)
                if base is not None:
                    phases.append(base)
                if kind == "plain":
                    phases.append(bench.probe_ingest())
            total_s = time.monotonic() - started
            other_procs = others(
                procs_before, all_processes(), bench.ours | descendants(os.getpid()), total_s
            )
            say("cleaning up: ingest, broker, database")
    except KeyboardInterrupt:
        print("interrupted: processes stopped, database dropped", file=sys.stderr)
        return 130
    header = bench.header(total_s, busy_before)
    print(render(header, phases, baseline_log, other_procs, args, bench.capacity), flush=True)
    print(json.dumps(figures_json(phases, bench.capacity)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
