"""The traffic closed loop of `cityops demo` (`cityops.simulators.sumo.loop`): the same
children the demo starts, on a 2x2 SUMO grid in real time, against the real broker and a
fresh database with the ingest running: commands flow, the controllers report adaptive
control (event 131 param 3, as stored), and switching one off in the database brings it
back to its own plan."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from cityops.ingest.config import Settings
from cityops.simulators.sumo import loop as sumo_loop
from cityops.simulators.sumo.loop import CommandWatch, TrafficLoop, controller_modes, history_window
from cityops.traffic.control_store import set_mode
from tests.support.ingest import add_signal, running_ingest, wait_for


def _event(db_url: str, controller_id: str, ts: float, code: int = 1, param: int = 2) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO signal_events (controller_id, ts, code, param) VALUES (%s, %s, %s, %s)",
            (controller_id, datetime.fromtimestamp(ts, UTC), code, param),
        )


def test_history_window_replays_only_what_the_database_lacks(db_url: str) -> None:
    add_signal(db_url, "GRID-X")
    now = 1_800_000_000.5
    assert history_window(db_url, ("GRID-X",), now, 45) == (now - 0.5 - 2700, 2700)
    assert history_window(db_url, ("GRID-X",), now, 0) is None
    _event(db_url, "GRID-X", now - 600.3)  # an earlier demo ran until 10 minutes ago
    assert history_window(db_url, ("GRID-X",), now, 45) == (now - 0.5 - 599, 599)
    _event(db_url, "GRID-X", now - 30)  # less than a minute to fill: nothing to replay
    assert history_window(db_url, ("GRID-X",), now, 45) is None


def test_controller_modes_read_the_latest_event_131(db_url: str) -> None:
    for cid in ("GRID-X", "GRID-Y", "GRID-Z"):
        add_signal(db_url, cid)
    t = 1_800_000_000.0
    _event(db_url, "GRID-X", t, 131, 1)
    _event(db_url, "GRID-X", t + 2, 131, 3)
    _event(db_url, "GRID-X", t + 5, 1, 2)  # other events do not count
    _event(db_url, "GRID-Y", t, 131, 3)
    _event(db_url, "GRID-Y", t + 9, 131, 1)
    _event(db_url, "GRID-Y", t + 9, 131, 3)  # same tenth, order unknown: not overstated
    with psycopg.connect(db_url) as conn:
        modes = controller_modes(conn, ["GRID-X", "GRID-Y", "GRID-Z"])
    assert modes == {"GRID-X": "adaptive", "GRID-Y": "own plan", "GRID-Z": "none"}


@contextmanager
def _children(args: list[list[str]], env: dict[str, str], logs: Path) -> Iterator[None]:
    procs = []
    try:
        for i, a in enumerate(args):
            with (logs / f"child{i}.log").open("ab") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "cityops.api.cli", *a],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield
    finally:
        for p in procs:  # control first: it hands the controllers back
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.slow
def test_demo_loop_commands_controllers_and_switch_off(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    why = sumo_loop.unavailable()
    if why is not None:
        pytest.skip(why)
    loop = TrafficLoop(grid=2, vph=3600, history_min=0, work_dir=tmp_path / "sumo")
    ids = sumo_loop.seed_grid_registry(db_url, loop)
    assert len(ids) == 4
    assert sumo_loop.seed_grid_registry(db_url, loop) == ids  # idempotent
    loop = TrafficLoop(grid=2, vph=3600, history_min=0, work_dir=tmp_path / "sumo", controllers=ids)
    env = {
        **os.environ,
        "CITYOPS_DATABASE_URL": db_url,
        "CITYOPS_MQTT_URL": settings.mqtt_url,
        "CITYOPS_TOPIC_PREFIX": settings.topic_prefix,
    }
    seen: Counter[str] = Counter()
    watch = CommandWatch(settings, f"{settings.topic_prefix}-watch")

    def modes() -> dict[str, str]:
        with psycopg.connect(db_url) as conn:
            return controller_modes(conn, list(ids))

    try:
        with (
            running_ingest(settings),
            _children([loop.control_args(), loop.sim_args(120)], env, tmp_path),
        ):
            wait_for(
                lambda: all(m == "adaptive" for m in modes().values()),
                timeout=60,
                what="every controller reporting adaptive control (131 param 3)",
            )
            seen += watch.take()
            assert seen["hold"] + seen["advance"] > 0, seen

            off = ids[0]
            with psycopg.connect(db_url) as conn:
                set_mode(conn, off, "fixed", "test", "switched off by the test")
            wait_for(
                lambda: modes()[off] == "own plan",
                timeout=30,
                what=f"{off} back on its own plan (131 param 1)",
            )
            seen += watch.take()
            assert seen["fallback"] >= 1, seen
            time.sleep(4)  # two decision rounds: it is left alone, the others are not
            after = modes()
            assert after[off] == "own plan"
            assert all(after[c] == "adaptive" for c in ids[1:]), after
            status = sumo_loop.loop_status(db_url, ids, watch.take())
            assert "controllers 3 adaptive, 1 own plan" in status, status
    finally:
        watch.close()
