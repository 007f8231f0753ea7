"""Event logs of the lightweight simulator's controller, written as ATSPM CSV files."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from cityops.simulators.emission import LocalClock
from cityops.simulators.signal_sim import SignalControllerSim
from tests.simulators.factories import make_controller
from tests.traffic.store_support import CID

BERLIN = ZoneInfo("Europe/Berlin")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Event = tuple[datetime, int, int]  # ts (UTC), code, param


def sim_events(start: datetime, seconds: float, seed: int = 3) -> list[Event]:
    """The simulator's events of `seconds` from `start` (its own fixed-time plan), with
    mode changes (event 131) on whole tenths: fixed at start, adaptive after 20 minutes,
    fixed again after 50."""
    t0 = start.timestamp()
    sim = SignalControllerSim(make_controller(), LocalClock(BERLIN), seed=seed, index=0,
                              start=t0)
    rows = [(EPOCH + timedelta(microseconds=ts * 100_000), code, param)
            for ts, code, param in sim.raw_events_until(t0 + seconds)]
    rows += [(start + timedelta(seconds=s), 131, p)
             for s, p in ((0.1, 1), (1200.1, 3), (3000.1, 1)) if s < seconds]
    return sorted(set(rows))


def stamp(ts: datetime, zone: ZoneInfo | None = BERLIN, style: str = "iso") -> str:
    """`ts` as a controller writes it: local time without offset, tenths of a second
    (`iso`: 2024-03-04 06:00:00.1; `us`: 03/04/2024 06:00:00.100)."""
    local = ts.astimezone(zone).replace(tzinfo=None) if zone else ts.replace(tzinfo=None)
    if style == "us":
        return f"{local:%m/%d/%Y %H:%M:%S}.{local.microsecond // 1000:03d}"
    assert local.microsecond % 100_000 == 0, "the ATSPM format has tenths"
    return f"{local:%Y-%m-%d %H:%M:%S}.{local.microsecond // 100_000}"


def csv_lines(rows: Sequence[Event], *, cid: str = CID, zone: ZoneInfo | None = BERLIN,
              style: str = "iso") -> list[str]:
    return [f"{cid},{stamp(ts, zone, style)},{code},{param}" for ts, code, param in rows]


def write_csv(path: Path, rows: Sequence[Event], *, header: bool = True,
              zone: ZoneInfo | None = BERLIN, style: str = "iso",
              extra: Sequence[str] = ()) -> Path:
    """A CSV file of `rows` (and `extra` lines after them); gzipped when the name ends in
    .gz."""
    lines = (["SignalID,Timestamp,EventCode,EventParam"] if header else [])
    lines += csv_lines(rows, zone=zone, style=style) + list(extra)
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def stored_events(conn: psycopg.Connection[Any]) -> list[Event]:
    return [(r[0], r[1], r[2]) for r in conn.execute(
        "SELECT ts, code, param FROM signal_events WHERE controller_id = %s ORDER BY 1, 2, 3",
        (CID,))]


def table(conn: psycopg.Connection[Any], name: str) -> list[tuple[Any, ...]]:
    """Every row of a measures table without its `computed_at`, in key order."""
    cols = [str(r[0]) for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
        "AND column_name <> 'computed_at' ORDER BY ordinal_position", (name,))]
    keys = {"signal_mode_history": "controller_id, ts"}.get(
        name, "controller_id, bin_start, " + ("channel" if "channel" in cols else "phase"))
    return conn.execute(f"SELECT {', '.join(cols)} FROM {name} ORDER BY {keys}").fetchall()
