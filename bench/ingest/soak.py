"""Soak with faults: a million messages of a mixed city load through one `cityops ingest`,
while the broker restarts, PostgreSQL restarts and the ingest is killed mid-batch.

A private Mosquitto (deploy/mosquitto/conf.d included, persistence on), a throw-away
database on the local cluster and one `cityops ingest` process (persistent session) run as
in production; publisher processes (soakload.py) send --messages QoS 1 messages at --rate
msgs/s, interleaved by --mix. The default mix is the traffic of a mid-size city: 8,000 bin
sensors every 15 min (9/s), 300 signal controllers each a batch of events every second
(300/s), 120 trucks on shift each a position every 10 s (12/s) and a stop event about every
90 s (1.3/s): signal batches dominate, as in a real city. Publishers reconnect and send
unacknowledged messages again, as devices do.

Faults, at times counted from the first publish (defaults: 20 %, 45 % and 70 % of the
planned publishing time; a negative time leaves the fault out):

  broker restart  the private Mosquitto gets SIGTERM (it saves its store) and starts again
                  on the same port (--broker-restart-at)
  pg restart      `pg_ctlcluster 15 main restart` (--pg-cluster): RESTARTS THE MACHINE'S
                  LOCAL POSTGRESQL CLUSTER, dropping every connection of every database on
                  it, not only the soak's (--pg-restart-at). On by default; --no-pg-restart
                  leaves it out. Refused unless the soak's database (--admin-url) and
                  CITYOPS_DATABASE_URL (when set) are on 127.0.0.1 / localhost and
                  --pg-cluster is the cluster on --admin-url's port.
  ingest kill     SIGKILL while its database connection is inside a batch's transaction,
                  then a new `cityops ingest` with the same client id (--kill-at)

Reported: messages published and acknowledged by the broker (PUBACKs the publishers got),
per kind; rows per table; lost (an acknowledged message without its row, per kind, by
natural key); duplicate rows (rows minus distinct natural keys, must be 0); dead letters;
the longest stall (longest time between two commits); per fault the time from the fault
to full rate again (rows committed at >= 90 % of the offered rate for 3 s in a row) and
until messages were on time again (p99 of a publish second <= 500 ms for 3 s); p50/p99
publish-to-row outside the fault windows (from 1 s before a fault until on time again).
Progress every --progress-seconds; the last line of output is one JSON object. The
database and broker are removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import psycopg
import soakcheck as check
from figures import machine_busy
from soakload import KINDS, LoadConfig, LoadFleet, LoadResult, Mix
from stack import Broker, Database, IngestProcess, IngestSummary

CITY_MIX = "bin=8.89,signal=300,truck=12,truck_event=1.33"
TARGET_RECOVERY_S = 10.0
TARGET_P99_MS = 500.0
Conn = psycopg.Connection[tuple[object, ...]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/ingest/soak.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=1_000_000, help="messages to publish [1e6]")
    p.add_argument("--rate", type=float, default=5_000, help="msgs/s offered [5000]")
    p.add_argument("--mix", default=CITY_MIX, help=f"shares per kind [{CITY_MIX}]")
    p.add_argument("--bins", type=int, default=8_000, help="bin sensors [8000]")
    p.add_argument("--controllers", type=int, default=300, help="signal controllers [300]")
    p.add_argument("--trucks", type=int, default=120, help="trucks [120]")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes [2]")
    p.add_argument("--broker-restart-at", type=float, help="seconds after the first publish")
    p.add_argument("--pg-restart-at", type=float, help="seconds after the first publish")
    p.add_argument("--kill-at", type=float, help="seconds after the first publish")
    p.add_argument("--pg-restart", action=argparse.BooleanOptionalAction, default=True,
                   help="restart the local PostgreSQL cluster during the run [on]")
    p.add_argument("--pg-cluster", default="15/main", help="version/name for pg_ctlcluster")
    p.add_argument("--stall-seconds", type=float, default=60.0,
                   help="after publishing, stop waiting once no row came for this long [60]")
    p.add_argument("--progress-seconds", type=float, default=5.0, help="progress every [5]")
    p.add_argument(
        "--admin-url",
        default=os.environ.get("CITYOPS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL URL allowed to CREATE DATABASE [$CITYOPS_BENCH_PG or local postgres]",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with logs")
    args = p.parse_args(argv)
    args.mix = Mix.parse(args.mix)
    planned = args.messages / args.rate
    for name, share in (("broker_restart_at", 0.2), ("pg_restart_at", 0.45), ("kill_at", 0.7)):
        if getattr(args, name) is None:
            setattr(args, name, round(share * planned, 1))
    if not args.pg_restart:
        args.pg_restart_at = -1.0
    return args


def pg_restart_refusal(args: argparse.Namespace) -> str | None:
    """Why the PostgreSQL restart may not run here, or None."""
    if not args.pg_restart:
        return None
    for name, url in (("--admin-url", args.admin_url),
                      ("CITYOPS_DATABASE_URL", os.environ.get("CITYOPS_DATABASE_URL"))):
        if url and urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
            return f"{name} points at {urlsplit(url).hostname}, not at the local cluster"
    if shutil.which("pg_ctlcluster") is None:
        return "pg_ctlcluster is not installed"
    version, _, name = args.pg_cluster.partition("/")
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    ports = {(w[0], w[1]): w[2] for w in (line.split() for line in listing.splitlines())
             if len(w) > 2}
    url_port = str(urlsplit(args.admin_url).port or 5432)
    if ports.get((version, name)) != url_port:
        return (f"cluster {args.pg_cluster} is not the one on port {url_port} of --admin-url "
                f"(clusters: {', '.join(f'{v}/{n} on {p}' for (v, n), p in ports.items())})")
    return None


def say(text: str) -> None:
    print(text, flush=True)


class Soak:
    def __init__(self, args: argparse.Namespace, stack: ExitStack) -> None:
        self.args = args
        self.stack = stack
        self.tag = secrets.token_hex(3)
        self.prefix = f"soak{self.tag}"
        self.workdir = Path(tempfile.mkdtemp(prefix="cityops-soak-"))
        if not args.keep_logs:
            stack.callback(shutil.rmtree, self.workdir, ignore_errors=True)
        self.db = Database(args.admin_url)
        self.broker = Broker(self.workdir / "broker")
        self._conn: Conn | None = None
        self.ingests: list[IngestProcess] = []
        self.faults: list[check.Fault] = []
        self.skipped: list[str] = []
        self.mode = ""
        self.exited = False
        self.bins: list[tuple[str, str]] = []
        self.controllers = [f"SOAK-LSA-{i:03d}" for i in range(1, args.controllers + 1)]
        self.trucks = [f"SOAK-T{i:03d}" for i in range(1, args.trucks + 1)]

    # ------------------------------------------------------------------ database
    def conn(self) -> Conn:
        """The runner's connection, made again after the cluster restarted."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            deadline = time.monotonic() + 120
            while True:
                try:
                    self._conn = psycopg.connect(self.db.url, autocommit=True,
                                                 application_name="soak-runner")
                    break
                except psycopg.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        return self._conn

    def sql(self, fn: Any) -> Any:
        try:
            return fn(self.conn())
        except psycopg.OperationalError:
            self._conn = None
            return fn(self.conn())

    def _drop_db(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        for _ in range(60):  # the cluster may be restarting
            try:
                self.db.drop()
                break
            except psycopg.OperationalError:
                time.sleep(1)
        print(f"database {self.db.name} dropped", file=sys.stderr)

    def setup(self) -> None:
        a = self.args
        say(f"database {self.db.name}: creating and migrating")
        self.stack.callback(self._drop_db)
        self.mode = self.db.create()
        sensors = self.db.register_bins(a.bins)
        self.bins = [(s, f"BENCH-B{i:04d}") for i, s in enumerate(sensors, start=1)]
        with psycopg.connect(self.db.url) as conn:
            conn.execute("INSERT INTO sites (site_id, name, kind, geom) VALUES "
                         "('SOAK-DEPOT', 'Soak depot', 'depot', 'SRID=4326;POINT(8.6 50.1)')")
            conn.execute(
                "INSERT INTO signal_controller_registry (controller_id, name, geom) "
                "SELECT c, c, 'SRID=4326;POINT(8.6 50.1)' FROM unnest(%s::text[]) c",
                (self.controllers,))
            conn.execute(
                "INSERT INTO truck_registry (truck_id, name, capacity_l, depot_id) "
                "SELECT t, t, 8000, 'SOAK-DEPOT' FROM unnest(%s::text[]) t", (self.trucks,))
        say(f"database {self.db.name}: storage mode {self.mode}, {len(self.bins):,} bins, "
            f"{len(self.controllers)} signal controllers, {len(self.trucks)} trucks")
        self.stack.callback(self.broker.stop)
        self.broker.start()
        say(f"broker: private mosquitto pid {self.broker.pid} on port {self.broker.port}")
        self.start_ingest()

    def start_ingest(self) -> IngestProcess:
        ingest = IngestProcess(
            workdir=self.workdir, database_url=self.db.url, mqtt_url=self.broker.url,
            prefix=self.prefix, client_id=f"soak-ingest-{self.tag}", tuning={},
            label=f"ingest-{len(self.ingests) + 1}",
        )
        self.stack.callback(ingest.kill)
        ingest.start()
        self.ingests.append(ingest)
        say(f"cityops ingest pid {ingest.pid} subscribed (log {ingest.log.name})")
        return ingest

    # -------------------------------------------------------------------- faults
    def restart_broker(self, fault: check.Fault) -> None:
        self.broker.stop()
        down = time.time()
        self.broker.start()
        fault.note = f"broker down {time.time() - down:.1f} s, new pid {self.broker.pid}"

    def restart_pg(self, fault: check.Fault) -> None:
        others = self.sql(lambda c: c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname IS NOT NULL "
            "AND datname <> current_database()").fetchone()[0])
        version, name = self.args.pg_cluster.split("/")
        # its own session: a Ctrl-C must not stop the cluster half way; it is waited for
        proc = subprocess.Popen(["pg_ctlcluster", version, name, "restart"],
                                start_new_session=True)
        try:
            proc.wait(180)
        except KeyboardInterrupt:
            print("waiting for the cluster restart to finish before cleaning up", file=sys.stderr)
            proc.wait(180)
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctlcluster {version} {name} restart exited {proc.returncode}")
        took = time.time() - fault.started
        fault.note = (f"pg_ctlcluster {version} {name} restart took {took:.1f} s; {others} "
                      "connections to other databases were dropped too")

    def kill_ingest(self, fault: check.Fault) -> None:
        ingest = self.ingests[-1]
        app = ingest.application_name
        state, deadline = "", time.monotonic() + 3.0
        while time.monotonic() < deadline:  # wait for its connection to be inside a batch
            row = self.sql(lambda c: c.execute(
                "SELECT state FROM pg_stat_activity WHERE application_name = %s "
                "AND datname = current_database()", (app,)).fetchone())
            state = str(row[0]) if row else "no connection"
            if state in ("active", "idle in transaction"):
                break
            time.sleep(0.002)
        assert ingest.proc is not None
        ingest.proc.kill()
        ingest.proc.wait(10)
        fault.started = time.time()
        fault.ended = fault.started
        fault.note = f"SIGKILL with its connection {state!r}"
        self.start_ingest()
        fault.note += f"; the new ingest subscribed {time.time() - fault.started:.1f} s later"

    # ----------------------------------------------------------------------- run
    def run(self) -> tuple[list[LoadResult], float]:
        a = self.args
        n = max(1, a.publishers)
        configs = [
            LoadConfig(
                index=k, host="127.0.0.1", port=self.broker.port, prefix=self.prefix,
                mix=a.mix, messages=a.messages // n + (1 if k < a.messages % n else 0),
                rate=a.rate / n, client_id=f"soak-{self.tag}-pub{k}",
                bins=tuple(self.bins[k::n]), controllers=tuple(self.controllers[k::n]),
                trucks=tuple(self.trucks[k::n]), acked_file=self.workdir / f"acked-{k}.tsv",
            )
            for k in range(n)
        ]
        fleet = LoadFleet(configs)
        self.stack.callback(fleet.terminate)
        say(f"{n} publisher processes: {a.messages:,} messages at {a.rate:,.0f} msgs/s "
            f"({a.mix.describe()})")
        fleet.start()
        t0 = fleet.go()
        plan = sorted((
            (t0 + at, name, fn)
            for at, name, fn in ((a.broker_restart_at, "broker restart", self.restart_broker),
                                 (a.pg_restart_at, "pg restart", self.restart_pg),
                                 (a.kill_at, "ingest kill", self.kill_ingest))
            if at >= 0
        ), key=lambda item: item[0])
        next_report = t0 + a.progress_seconds
        rows0, last_rows, last_t = self.sql(check.rows_inserted), 0, t0
        while fleet.running():
            now = time.time()
            if plan and now >= plan[0][0]:
                _, name, fn = plan.pop(0)
                say(f"[{now - t0:7.1f} s] FAULT {name}")
                fault = check.Fault(name, now)
                fn(fault)
                fault.ended = fault.ended or time.time()
                self.faults.append(fault)
                say(f"[{time.time() - t0:7.1f} s] {name}: {fault.note}")
            elif now >= next_report:
                next_report += a.progress_seconds
                rows = self.sql(check.rows_inserted) - rows0
                speed = (rows - last_rows) / max(1e-3, now - last_t)
                say(f"[{now - t0:7.1f} s] published {fleet.published:>10,}  acked "
                    f"{fleet.acked:>10,}  rows {rows:>10,}  ({speed:,.0f} rows/s)  ingest "
                    f"{'up' if self.ingests[-1].alive() else 'DOWN'}")
                last_rows, last_t = rows, now
            time.sleep(0.05)
        self.skipped = [f"{name} at {at - t0:.0f} s: publishing had ended" for at, name, _ in plan]
        results = fleet.join()
        for r in results:
            if r.error:
                say(f"WARNING publisher {r.index}: {r.error}")
        return results, t0

    def drain(self, expected: int) -> int:
        """Wait until the tables hold `expected` rows or stop growing for --stall-seconds."""
        best, changed, started = -1, time.monotonic(), time.monotonic()
        while True:
            n = int(sum(self.sql(check.row_counts).values()))
            if n >= expected:
                return n
            if n > best:
                best, changed = n, time.monotonic()
            elif time.monotonic() - changed > self.args.stall_seconds:
                return n
            say(f"draining {time.monotonic() - started:6.1f} s: rows {n:,} of {expected:,}")
            time.sleep(2.0)

    def summaries(self) -> IngestSummary | None:
        self.exited = not self.ingests[-1].alive()
        parts = []
        for ingest in self.ingests:
            with contextlib.suppress(RuntimeError):  # killed before its first progress line
                parts.append(ingest.stop())
        return IngestSummary.total(parts) if parts else None


def analyse(soak: Soak, results: list[LoadResult], t0: float) -> dict[str, Any]:
    conn = soak.conn()
    acked_by_kind = {k: sum(r.by_kind.get(k, 0) for r in results) for k in KINDS}
    rows_expected = {k: sum(r.rows_expected.get(k, 0) for r in results) for k in KINDS}
    check.load_acked(conn, [soak.workdir / f"acked-{r.index}.tsv" for r in results])
    lost = check.lost(conn)
    first = min(r.first_publish for r in results if r.published)
    last = max(r.last_publish for r in results if r.published)
    full_rows_s = sum(rows_expected.values()) / max(1e-3, last - first)
    per_second = check.commits_per_second(conn)
    by_second = check.latency_by_second(conn)
    windows = []
    for f in soak.faults:
        f.recovered_s = check.recovery_s(per_second, f, full_rows_s)
        f.caught_up = check.caught_up(by_second, f, TARGET_P99_MS)
        windows.append((f.started - 1.0, f.caught_up if f.caught_up else last + 3600))
    p50, p99, n_outside = check.p99_outside(conn, windows)
    stall, stall_end = check.longest_stall(conn)
    dups, dead = check.duplicate_rows(conn), check.dead_letters(conn)
    return {
        "messages": sum(r.published for r in results),
        "acked": sum(r.acked for r in results),
        "acked_by_kind": acked_by_kind,
        "rows": check.row_counts(conn),
        "rows_expected": rows_expected,
        "lost": sum(m for m, _ in lost.values()),
        "lost_by_kind": {k: {"messages": m, "rows": r} for k, (m, r) in lost.items()},
        "duplicate_rows": sum(dups.values()),
        "duplicate_rows_by_kind": dups,
        "dead_letters": sum(dead.values()),
        "dead_letters_by_reason": dead,
        "longest_stall_s": round(stall, 2),
        "longest_stall_at_s": round(stall_end - t0, 1) if stall_end else None,
        "offered_rate": round(sum(r.published for r in results) / max(1e-3, last - first)),
        "offered_rows_s": round(full_rows_s),
        "publishing_s": round(last - first, 1),
        "p50_ms_outside_faults": round(p50, 1),
        "p99_ms_outside_faults": round(p99, 1),
        "rows_outside_faults": n_outside,
        "faults": [
            {"fault": f.name, "at_s": round(f.started - t0, 1),
             "full_rate_after_s": None if f.recovered_s is None else round(f.recovered_s, 1),
             "on_time_after_s": None if f.caught_up is None else round(f.caught_up - f.started, 1),
             "note": f.note}
            for f in soak.faults
        ],
        "faults_skipped": soak.skipped,
        "publisher_reconnects": sum(r.reconnects for r in results),
        "storage_mode": soak.mode,
        "ingest_exited": soak.exited,
    }


def render(fig: dict[str, Any], summary: IngestSummary | None, busy: float) -> str:
    lines = ["", "cityops ingest soak", f"  machine: {os.cpu_count()} CPUs, busy {100 * busy:.0f} "
             f"% before the run; storage mode {fig['storage_mode']}; offered "
             f"{fig['offered_rate']:,} msgs/s ({fig['offered_rows_s']:,} rows/s) for "
             f"{fig['publishing_s']} s", ""]
    lines.append(f"  {'':14}{'acked msgs':>12}{'rows exp.':>12}{'rows':>12}{'lost msgs':>11}"
                 f"{'lost rows':>11}{'dup rows':>10}")
    for k in KINDS:
        lines.append(
            f"  {k:14}{fig['acked_by_kind'][k]:>12,}{fig['rows_expected'][k]:>12,}"
            f"{fig['rows'][k]:>12,}{fig['lost_by_kind'][k]['messages']:>11,}"
            f"{fig['lost_by_kind'][k]['rows']:>11,}{fig['duplicate_rows_by_kind'][k]:>10,}")
    lines.append(f"  published {fig['messages']:,}, acknowledged by the broker {fig['acked']:,}; "
                 f"publisher reconnects {fig['publisher_reconnects']}")
    lines.append(f"  dead letters: {fig['dead_letters']:,} {fig['dead_letters_by_reason']}")
    if fig["ingest_exited"]:
        lines.append("  WARNING: the ingest was not running when publishing ended (see its log)")
    if summary is not None:
        lines.append(f"  ingest processes: received {summary.received:,}, wrote {summary.rows:,} "
                     f"rows in {summary.batches:,} batches (last log lines)")
    lines.append(f"  longest stall: {fig['longest_stall_s']} s (ended at "
                 f"{fig['longest_stall_at_s']} s)")
    lines.append(f"  publish-to-row outside the fault windows: p50 {fig['p50_ms_outside_faults']}"
                 f" ms, p99 {fig['p99_ms_outside_faults']} ms over {fig['rows_outside_faults']:,}"
                 " rows")
    lines.append("")
    for f in fig["faults"]:
        lines.append(f"  {f['fault']:15} at {f['at_s']:7.1f} s: full rate after "
                     f"{f['full_rate_after_s']} s, on time after {f['on_time_after_s']} s; "
                     f"{f['note']}")
    for s in fig["faults_skipped"]:
        lines.append(f"  NOT INJECTED: {s}")
    lost, dups = fig["lost"], fig["duplicate_rows"]
    slow = [f["fault"] for f in fig["faults"]
            if f["full_rate_after_s"] is None or f["full_rate_after_s"] > TARGET_RECOVERY_S]
    ok = lost == 0 and dups == 0 and not slow and len(fig["faults"]) == 3
    lines += ["", "  issue target: 0 lost, 0 duplicate rows, full rate within "
              f"{TARGET_RECOVERY_S:.0f} s of each of the three faults: {'MET' if ok else 'MISSED'}"
              f" (lost {lost:,}, duplicate rows {dups:,}, slow: {', '.join(slow) or 'none'}, "
              f"faults injected {len(fig['faults'])})"]
    return "\n".join(lines)


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    refusal = pg_restart_refusal(args)
    if refusal:
        print(f"soak: refusing the PostgreSQL restart: {refusal} (--no-pg-restart leaves it "
              "out)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    busy = machine_busy(3.0)
    say(f"machine busy before the run: {100 * busy:.0f} % of its CPUs (3 s sample)")
    try:
        with ExitStack() as stack:
            soak = Soak(args, stack)
            soak.setup()
            results, t0 = soak.run()
            expected = sum(sum(r.rows_expected.values()) for r in results)
            soak.drain(expected)
            summary = soak.summaries()
            say("checking: lost, duplicates, stalls, recovery, latency")
            fig = analyse(soak, results, t0)
            say("cleaning up: ingest, broker, database")
    except KeyboardInterrupt:
        print("interrupted: processes stopped, database dropped", file=sys.stderr)
        return 130
    print(render(fig, summary, busy), flush=True)
    print(json.dumps(fig), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
