"""The benchmark's phases as measured, the table printed at the end, the issue's verdicts and
the final JSON line."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from figures import RowStats
from fleet import FleetResult
from stack import IngestSummary

__all__ = [
    "ISSUE_BURST_RATE",
    "ISSUE_BURST_S",
    "ISSUE_LORAWAN_RATE",
    "ISSUE_P99_MS",
    "ISSUE_RATE",
    "ISSUE_RATIO",
    "Phase",
    "figures_json",
    "render",
    "verdicts",
]

ISSUE_RATE = 10_000
ISSUE_P99_MS = 500.0
ISSUE_BURST_RATE = 20_000
ISSUE_BURST_S = 60.0
ISSUE_LORAWAN_RATE = 2_000
ISSUE_RATIO = 1.0  # ingest / plain zero-loss subscriber (issue 18)

#: the processes whose CPU is shown by name, in this order
_CPU_ROWS = ["publishers", "broker", "ingest", "naive subscriber", "plain subscriber",
             "db backend"]


@dataclass
class Phase:
    name: str
    target_rate: float
    seconds: float
    fleet: FleetResult
    stats: RowStats
    window_s: float
    cpu: dict[str, float]
    publishers: int = 0
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




def _pct(cpu_s: float, window_s: float) -> str:
    return f"{100.0 * cpu_s / window_s:5.0f} %" if window_s > 0 else "-"


def render(
    header: list[str],
    phases: list[Phase],
    baseline_log: dict[str, list[str]],
    other_procs: list[tuple[float, str]],
    args: argparse.Namespace,
    capacity: dict[str, float],
) -> str:
    """The table: `header` lines (machine, mode, tuning), one column per phase, then CPU,
    notes and the verdicts."""
    lines = ["", "cityops ingest benchmark", *header, ""]
    head = f"  {'':30}" + "".join(f"{p.name:>14}" for p in phases)
    lines.append(head)

    def row(label: str, fn: Callable[[Phase], str]) -> None:
        lines.append(f"  {label:30}" + "".join(f"{fn(p):>14}" for p in phases))

    row("target rate (msgs/s)", lambda p: f"{p.target_rate:,.0f}")
    row("publisher processes", lambda p: f"{p.publishers}")
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
    for name in _CPU_ROWS:
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
            sum(p.cpu.get(n, 0.0) for n in (*_CPU_ROWS, "benchmark runner"))
            - p.cpu.get("db backend", 0.0)
            + p.cpu["postgres (all processes)"]
        )
        return _pct(max(0.0, p.cpu["machine busy"] - ours), p.window_s)

    row("everything else on the machine", rest)
    row("machine busy", lambda p: _pct(p.cpu["machine busy"], p.window_s))
    row("steal (hypervisor)", lambda p: _pct(p.cpu["steal"], p.window_s))
    by = {p.name: p for p in phases}
    s = by.get("sustained")
    for base in ("plain", "naive"):
        b = by.get(base)
        if s is not None and b is not None:
            lines.append(f"  {'ratio ingest / ' + base:30}{s.rate / b.rate if b.rate else 0:>14.2f}"
                         "   (sustained e2e rates)")
    if capacity.get("ingest") and capacity.get("plain"):
        lines.append(
            f"  {'capacity ratio ingest / plain':30}{capacity['ingest'] / capacity['plain']:>14.2f}"
            f"   (rows/s committed in the 4 s probes at the same offered rate: "
            f"{capacity['ingest']:,.0f} / {capacity['plain']:,.0f})"
        )
        probe = by.get("ingest-probe")
        if probe is not None and min(capacity["ingest"], capacity["plain"]) >= 0.97 * (
            probe.fleet.offered_rate
        ):
            lines.append("  (both kept up with the probe's offered rate: raise --probe-rate "
                         "for a capacity ratio that says more than 'at least as fast')")
    for name, log in baseline_log.items():
        if log:
            lines.append("")
            lines.append(f"  {name} baseline: " + "; ".join(log))
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
    lines.extend(verdicts(phases, args))
    if s is not None and s.complete_offer and s.drain_s <= 1.0 and by.get("plain"):
        lines.append(
            "    (the ingest kept up with all of --rate, so the ratio is a lower bound: see the "
            "capacity ratio)"
        )
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
    pl = by.get("plain")
    if s is not None and pl is not None:
        ratio = s.rate / pl.rate if pl.rate else 0.0
        ok = ratio >= ISSUE_RATIO and s.lost == 0 and pl.lost == 0
        out.append(
            f"    ratio ingest / plain zero-loss subscriber >= {ISSUE_RATIO:.1f}: "
            f"{'MET' if ok else 'MISSED'} ({ratio:.2f}: ingest {s.rate:,.0f}/s sustained e2e, "
            f"plain subscriber {pl.rate:,.0f}/s at p99 {pl.stats.p99_ms:,.0f} ms; lost "
            f"{s.lost:,} and {pl.lost:,})"
        )
    if args.quick:
        out.append("    (a --quick run does not offer the issue's rates: targets cannot be met)")
    return out


def figures_json(phases: list[Phase], capacity: dict[str, float]) -> dict[str, Any]:
    by = {p.name: p for p in phases}
    s, b = by.get("sustained"), by.get("burst")
    n, pl = by.get("naive"), by.get("plain")

    def r(x: float | None, nd: int = 1) -> float | None:
        return None if x is None or math.isnan(x) else round(x, nd)

    out: dict[str, Any] = {
        "rate": r(s.rate, 0) if s else None,
        "lost": s.lost if s else None,
        "duplicates": s.duplicates if s else None,
        "p50_ms": r(s.stats.p50_ms) if s else None,
        "p99_ms": r(s.stats.p99_ms) if s else None,
        # issue 18: the ingest's sustained rate over the plain zero-loss subscriber's
        "ratio": r(s.rate / pl.rate, 2) if s and pl and pl.rate else None,
        "plain_rate": r(pl.rate, 0) if pl else None,
        "plain_lost": pl.lost if pl else None,
        "plain_p50_ms": r(pl.stats.p50_ms) if pl else None,
        "plain_p99_ms": r(pl.stats.p99_ms) if pl else None,
        "burst_rate": r(b.rate, 0) if b else None,
        "burst_lost": b.lost if b else None,
        "burst_p99_ms": r(b.stats.p99_ms) if b else None,
        "offered_rate": r(s.fleet.offered_rate, 0) if s else None,
        "burst_offered_rate": r(b.fleet.offered_rate, 0) if b else None,
        "burst_duplicates": b.duplicates if b else None,
        "plain_capacity": r(capacity.get("plain"), 0),
        "ingest_capacity": r(capacity.get("ingest"), 0),
        "capacity_ratio": (
            r(capacity["ingest"] / capacity["plain"], 2)
            if capacity.get("ingest") and capacity.get("plain") else None
        ),
        "naive_rate": r(n.rate, 0) if n else None,
        "naive_ratio": r(s.rate / n.rate, 2) if s and n and n.rate else None,
        "naive_p50_ms": r(n.stats.p50_ms) if n else None,
        "naive_p99_ms": r(n.stats.p99_ms) if n else None,
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


