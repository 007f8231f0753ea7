"""A controller of the lightweight simulator in a test database, with its event log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg

from cityops.simulators.city import City
from cityops.simulators.emission import LocalClock
from cityops.simulators.seed import seed_connection
from cityops.simulators.signal_sim import SignalControllerSim
from tests.simulators.factories import START, make_controller

CID = "LSA-001"
SILENT = 9  # a registered stop-bar detector of phase 4 that never reports

Conn = psycopg.Connection[tuple[object, ...]]


def at(seconds: float) -> datetime:
    """START (Thursday 07:00 UTC, a bin edge) plus `seconds`."""
    return datetime.fromtimestamp(START, UTC) + timedelta(seconds=seconds)


def seed_controller(conn: Conn) -> None:
    """Register the simulator's two-phase controller plus the silent detector."""
    city = City("test", 1, (), (), (make_controller(),), ())
    seed_connection(conn, city)
    conn.execute(
        "INSERT INTO signal_detectors (controller_id, channel, phase, kind, lane, distance_m)"
        " VALUES (%s, %s, 4, 'stop_bar', 2, 0)", (CID, SILENT),
    )


def simulate(seconds: float) -> list[tuple[datetime, int, int]]:
    """The simulator's events of `seconds` from START, with mode changes (event 131):
    fixed-time at start, adaptive after 20 minutes, back to fixed after 50."""
    sim = SignalControllerSim(make_controller(), LocalClock(ZoneInfo("Europe/Berlin")),
                              seed=3, index=0, start=START)
    raw = sim.raw_events_until(START + seconds)
    rows = [(datetime.fromtimestamp(0, UTC) + timedelta(seconds=ts / 10), code, param)
            for ts, code, param in raw]
    rows += [(at(0.05), 131, 1), (at(1200.05), 131, 3), (at(3000.05), 131, 1)]
    return sorted(rows)


def insert_events(conn: Conn, rows: list[tuple[datetime, int, int]]) -> None:
    with conn.cursor() as cur, cur.copy(
        "COPY signal_events (controller_id, ts, code, param) FROM STDIN"
    ) as copy:
        for ts, code, param in rows:
            copy.write_row((CID, ts, code, param))
