"""The stored measures: what `traffic.store` writes equals the pure functions' output; runs
are idempotent; late events recompute their bins; the watermark follows the events."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from cityops.api.cli import main
from cityops.ingest.db import connect
from cityops.traffic import repository as repo
from cityops.traffic.events import clean, mode_changes
from cityops.traffic.measures import detector_health, phase_measures
from cityops.traffic.store import StoreOptions, refresh, refresh_controller, run_service
from tests.traffic.store_support import (
    CID,
    SILENT,
    Conn,
    at,
    insert_events,
    seed_controller,
    simulate,
)

# margin 0: in a test, events inserted just before a run are not "late" at the next one
OPTIONS = StoreOptions(late_margin_s=0.0)
SIM_S = 5760.0  # 96 minutes: with 300 s of context, bins up to START + 90 min are complete


@pytest.fixture
def conn(db_url: str) -> Iterator[Conn]:
    with connect(db_url, autocommit=True, application_name="cityops-test") as c:
        seed_controller(c)
        insert_events(c, simulate(SIM_S))
        yield c


def _stored(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT * FROM signal_measures m WHERE controller_id = %s ORDER BY bin_start, phase",
        (CID,),
    ).fetchall()


def _pure(conn: Conn, start: float, end: float, opts: StoreOptions = OPTIONS) -> Any:
    config = repo.load_config(conn, CID)
    events = repo.load_events(conn, CID, datetime.fromtimestamp(start - 3600, at(0).tzinfo),
                              datetime.fromtimestamp(end + opts.context_s, at(0).tzinfo))
    return config, clean(events, config).events


def test_refresh_stores_what_the_pure_functions_compute(conn: Conn) -> None:
    (run,) = refresh(conn, OPTIONS)
    assert run.new_bins == 6 and run.late_bins == 0
    assert run.computed_until == at(5400)
    start, end = at(0).timestamp(), at(5400).timestamp()
    config, events = _pure(conn, start, end)
    expected = sorted(phase_measures(events, config, start, end),
                      key=lambda b: (b.bin_start, b.phase))
    rows = repo.load_measures(conn, CID, at(0), at(5400))
    assert [r.phase_bin() for r in rows] == list(expected)
    assert len(rows) == 12 and all(r.flagged_events == 0 for r in rows)
    # a believable fixed-time log: every bin has cycles and traffic, phase 2 green 30 s
    for r in rows:
        assert r.cycles >= 14 and r.volume > 0 and r.other_terminations == r.cycles
        assert r.pct_aog is not None and 0 < r.pct_aog < 1
    assert {r.mean_green_s for r in rows if r.phase == 2} == {30.0}

    health = repo.load_health(conn, CID, at(0), at(5400))
    assert len(health) == 6 * 4
    last = [h for h in health if h.bin_start == at(5400 - 900)]
    window = [e for e in events if end - 3600 <= e.ts < end]
    assert [(h.channel, h.longest_on_s, h.status) for h in last] == [
        (h.channel, h.longest_on_s, h.status)
        for h in detector_health(window, config, end - 3600, end)
    ]
    status = {h.channel: h.status for h in last}
    assert status == {1: "ok", 2: "ok", 3: "ok", SILENT: "no_activity"}
    # the silent detector is not "no activity" before an hour of data
    assert {h.status for h in health if h.channel == SILENT and h.bin_start < at(2700)} == {"ok"}
    in_bin = [e for e in events if end - 900 <= e.ts < end and e.code == 82 and e.param == 2]
    assert next(h.actuations for h in last if h.channel == 2) == len(in_bin)

    modes = repo.load_modes(conn, CID, at(0), at(5400))
    assert [(m.ts, m.mode) for m in modes] == [
        (at(0.05), "fixed"), (at(1200.05), "adaptive"), (at(3000.05), "fixed")]
    assert len(mode_changes(events)) == 3


def test_a_second_run_changes_nothing(conn: Conn) -> None:
    refresh(conn, OPTIONS)
    before = _stored(conn)
    (again,) = refresh(conn, OPTIONS)
    assert not again.changed and again.rows == 0
    assert _stored(conn) == before
    # recomputing stored bins on request writes the same values (computed_at aside)
    (redo,) = refresh(conn, OPTIONS, recompute_from=at(0))
    assert redo.late_bins == 6
    strip = [r[:-1] for r in before]
    assert [r[:-1] for r in _stored(conn)] == strip


def test_incremental_runs_equal_one_run(conn: Conn, db_url: str) -> None:
    """Bins computed a little at a time equal those computed in one go."""
    opts = StoreOptions(late_margin_s=0.0, max_span_s=1800.0)
    runs = 0
    while refresh_controller(conn, CID, opts).new_bins:
        runs += 1
    assert runs == 3
    piecewise = [r[:-1] for r in _stored(conn)]
    conn.execute("DELETE FROM signal_measures; DELETE FROM signal_measures_progress")
    (run,) = refresh(conn, opts, until_caught_up=True)
    assert run.new_bins == 6 and run.caught_up
    assert [r[:-1] for r in _stored(conn)] == piecewise


def test_late_events_recompute_their_bin(conn: Conn) -> None:
    refresh(conn, OPTIONS)
    bin_ = at(1800)
    (old,) = [r for r in repo.load_measures(conn, CID, bin_, at(2700), phase=2)]
    # a controller's late batch: one more vehicle on the advance detector (channel 2, 60 m)
    conn.execute(
        "INSERT INTO signal_events (controller_id, ts, code, param) VALUES"
        " (%s, %s, 82, 2), (%s, %s, 81, 2)",
        (CID, at(2000.01), CID, at(2000.31)),
    )
    (run,) = refresh(conn, OPTIONS)
    assert run.late_bins == 1 and run.new_bins == 0
    (new,) = repo.load_measures(conn, CID, bin_, at(2700), phase=2)
    assert new.volume == old.volume + 1
    start, end = bin_.timestamp(), bin_.timestamp() + 900
    config, events = _pure(conn, start, end)
    assert [new.phase_bin()] == [
        b for b in phase_measures(events, config, start, end) if b.phase == 2]
    (again,) = refresh(conn, OPTIONS)
    assert not again.changed


def test_flagged_events_are_counted_per_bin(conn: Conn) -> None:
    conn.execute(
        "INSERT INTO signal_events (controller_id, ts, code, param) VALUES"
        " (%s, %s, 82, 77), (%s, %s, 250, 1)", (CID, at(100), CID, at(200)),
    )
    (run,) = refresh(conn, OPTIONS)
    assert run.flagged == {"unknown_detector": 1, "impossible_code": 1}
    first = repo.load_measures(conn, CID, at(0), at(900))
    assert {r.flagged_events for r in first} == {2}


def test_no_events_no_bins(db_url: str) -> None:
    with connect(db_url, autocommit=True) as c:
        seed_controller(c)
        (run,) = refresh(c, OPTIONS)
        assert not run.changed and run.computed_until is None


def test_cli_refresh_and_store(
    conn: Conn, db_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CITYOPS_DATABASE_URL", db_url)
    assert main(["traffic", "refresh"]) == 0
    out = capsys.readouterr().out
    assert f"{CID}\tnew bins 6\trecomputed 0" in out
    assert "computed until 2025-11-20T08:30:00+00:00" in out
    conn.execute("DELETE FROM signal_measures")
    assert main(["traffic", "measures", "--controller", CID, "--from",
                 "2025-11-20T07:00Z", "--to", "2025-11-20T07:20Z", "--store"]) == 0
    assert len(repo.load_measures(conn, CID, at(0), at(3600))) == 4  # two bins, two phases
    assert main(["traffic", "refresh", "--controller", "nope"]) == 2
    assert "no signal controller 'nope'" in capsys.readouterr().err


def test_service_runs_until_stopped(conn: Conn, db_url: str) -> None:
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(run_service(db_url, 0.05, OPTIONS, stop=stop)))
    thread.start()
    try:
        for _ in range(200):
            if repo.load_progress(conn, CID) is not None:
                break
            stop.wait(0.05)
        progress = repo.load_progress(conn, CID)
        assert progress is not None and progress.computed_until == at(5400)
    finally:
        stop.set()
        thread.join(10)
    assert result and result[0] >= 1
    with pytest.raises(ValueError, match="positive"):
        run_service(db_url, 0)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="speed_kmh"):
        StoreOptions(speed_kmh=0)
    with pytest.raises(ValueError, match="one bin"):
        StoreOptions(max_span_s=60)
