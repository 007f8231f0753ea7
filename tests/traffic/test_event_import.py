"""`cityops traffic import-events`: ATSPM CSV files into signal_events and the measures, in
a real database. Times are the simulator's fixed Thursday (tests/simulators/factories.py)
and the clock changes of 2024; none depends on today's date."""

from __future__ import annotations

import gzip
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cityops.api.cli import main
from cityops.ingest.db import connect
from cityops.traffic import repository as repo
from cityops.traffic.event_import import (
    EventLogError,
    FileReport,
    ImportOptions,
    Progress,
    import_file,
)
from cityops.traffic.event_watch import WatchState, poll_once, watch
from cityops.traffic.eventlog import file_sha256
from cityops.traffic.events import clean
from cityops.traffic.measures import phase_measures
from cityops.traffic.store import StoreOptions
from tests.support.ingest import wait_for
from tests.traffic.eventlog_support import (
    csv_lines,
    sim_events,
    stored_events,
    write_csv,
)
from tests.traffic.store_support import CID, Conn, at, seed_controller

SIM_S = 5760.0  # 96 minutes: bins up to START + 90 min are complete (300 s of context)


@pytest.fixture
def conn(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Conn]:
    monkeypatch.setenv("CITYOPS_DATABASE_URL", db_url)
    with connect(db_url, autocommit=True, application_name="cityops-test") as c:
        seed_controller(c)
        yield c


@pytest.fixture(scope="module")
def events() -> list[tuple[datetime, int, int]]:
    return sim_events(at(0), SIM_S)


def _count(conn: Conn, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def _expected_measures(conn: Conn, start: datetime, end: datetime) -> list[object]:
    """The pure functions over the stored events: what the store must have written."""
    config = repo.load_config(conn, CID)
    events = repo.load_events(conn, CID, start - timedelta(hours=1),
                              end + timedelta(seconds=300))
    bins = phase_measures(clean(events, config).events, config, start.timestamp(),
                          end.timestamp())
    return sorted(bins, key=lambda b: (b.bin_start, b.phase))


def test_import_stores_the_rows_and_their_measures(
    conn: Conn, tmp_path: Path, events: list[tuple[datetime, int, int]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_csv(tmp_path / "LSA-001_2025_11_20.csv", events)
    assert main(["traffic", "import-events", str(path)]) == 0
    out = capsys.readouterr().out
    n = len(events)
    assert f"LSA-001_2025_11_20.csv: imported {n:,} rows ({n:,} new, 0 already stored), " \
           "events 2025-11-20T07:00:00.1Z..2025-11-20T08:35:" in out
    assert "measures LSA-001: 6 new and 0 recomputed bins, computed until " \
           "2025-11-20T08:30:00.0Z" in out
    assert stored_events(conn) == events
    stored = repo.load_measures(conn, CID, at(0), at(5400))
    assert [r.phase_bin() for r in stored] == _expected_measures(conn, at(0), at(5400))
    assert [m.mode for m in repo.load_modes(conn, CID, at(0), at(5400))] == [
        "fixed", "adaptive", "fixed"]
    row = conn.execute(
        "SELECT file_name, time_zone, rows, new_rows, dead_rows, first_event, last_event, "
        "controllers FROM signal_event_imports").fetchone()
    assert row == ("LSA-001_2025_11_20.csv", "Europe/Berlin", n, n, 0, events[0][0],
                   events[-1][0], [CID])
    # ingested_at is set as by the ingest (the store's late-event detection reads it)
    assert _count(conn, "SELECT count(*) FROM signal_events WHERE ingested_at IS NULL") == 0


def test_the_same_file_twice_stores_nothing_twice(
    conn: Conn, tmp_path: Path, events: list[tuple[datetime, int, int]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = events[:2000]
    path = write_csv(tmp_path / "a.csv", rows, extra=["LSA-001,not a time,1,2"])
    assert main(["traffic", "import-events", str(path)]) == 0
    capsys.readouterr()
    before = _count(conn, "SELECT count(*) FROM signal_events")
    # again, and the same content under another name and gzipped: recognised by its sha256
    gz = tmp_path / "b.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert main(["traffic", "import-events", str(path), str(gz)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("a.csv: already imported at ") and "nothing stored" in out[0]
    assert out[1].startswith("b.csv.gz: already imported at ")
    assert _count(conn, "SELECT count(*) FROM signal_events") == before == len(rows)
    assert _count(conn, "SELECT count(*) FROM dead_letters") == 1
    assert _count(conn, "SELECT count(*) FROM signal_event_imports") == 1


def test_overlapping_and_out_of_order_files(
    conn: Conn, tmp_path: Path, events: list[tuple[datetime, int, int]],
) -> None:
    half = len(events) // 2
    late, early = events[half - 500:], events[: half + 500]  # overlap of 1000 rows
    shuffled = list(late)
    random.Random(7).shuffle(shuffled)
    options = ImportOptions(store=StoreOptions(late_margin_s=0.0))
    first = import_file(conn, write_csv(tmp_path / "late.csv", shuffled), options)
    assert first.status == "imported" and first.new_rows == len(late)
    assert first.first_event == late[0][0] and first.last_event == late[-1][0]
    (run,) = first.runs
    assert run.computed_until == at(5400)  # bins from the file's first complete one
    # the earlier file arrives later: its overlap is not stored twice, its bins are computed
    second = import_file(conn, write_csv(tmp_path / "early.csv", early), options)
    assert (second.rows, second.new_rows) == (len(early), len(early) - 1000)
    (run,) = second.runs
    assert run.late_bins > 0 and run.computed_until == at(5400)
    assert stored_events(conn) == events
    stored = repo.load_measures(conn, CID, at(0), at(5400))
    assert len(stored) == 12
    assert [r.phase_bin() for r in stored] == _expected_measures(conn, at(0), at(5400))


BAD_LINES = {
    3: ("LSA-001,2025-11-20 08:00:01.0,82", "bad_columns"),
    4: ("LSA-001,2025-11-20 08:00:01.0,82,1,7", "bad_columns"),
    5: ("LSA-001,2025-13-20 08:00:01.0,82,1", "bad_timestamp"),
    6: ("LSA-001,yesterday,82,1", "bad_timestamp"),
    7: ("LSA-001,2025-11-20 08:00:01.0,300,1", "out_of_range"),
    8: ("LSA-001,2025-11-20 08:00:01.0,82,256", "out_of_range"),
    9: ("LSA-001,2025-11-20 08:00:01.0,82,-1", "invalid_value"),
    10: ("LSA-001,1970-01-01 01:00:00.0,82,1", "timestamp_too_old"),
    11: ("LSA-001,2999-01-01 00:00:00.0,82,1", "timestamp_in_future"),
    12: ("LSA-\x00001,2025-11-20 08:00:01.0,82,1", "bad_text"),
    13: ("LSA-999,2025-11-20 08:00:01.0,82,1", "unknown_device"),
}


def test_bad_rows_are_dead_lettered_with_their_line_and_the_rest_imported(
    conn: Conn, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    good = [(at(60.0), 82, 1), (at(60.5), 81, 1), (at(61.0), 82, 2)]
    lines = ["SignalID,Timestamp,EventCode,EventParam", *csv_lines(good[:1])]
    lines += [text for _, (text, _) in sorted(BAD_LINES.items())]
    lines += [*csv_lines(good[1:]), ""]
    data = "\n".join(lines).encode() + b"LSA-001,\xff\xfe,82,1\n" + b"\n".join(
        [csv_lines([good[1]])[0].encode()]) + b"\n"  # a line twice: stored once
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    assert main(["traffic", "import-events", str(path)]) == 0
    out = capsys.readouterr().out
    assert "bad.csv: imported 4 rows (3 new, 1 already stored), 12 dead-lettered " \
           "(bad_columns 2, bad_text 2, bad_timestamp 2, invalid_value 1, out_of_range 2, " \
           "timestamp_in_future 1, timestamp_too_old 1, unknown_device 1)" in out
    assert stored_events(conn) == good
    dead = conn.execute(
        "SELECT topic, payload, reason, detail FROM dead_letters ORDER BY id").fetchall()
    assert {d[0] for d in dead} == {"import/atspm/bad.csv"}
    by_line = {int(d[3].split(":")[0].removeprefix("line ")): d for d in dead}
    for number, (text, reason) in BAD_LINES.items():
        assert by_line[number][1] == text.encode() and by_line[number][2] == reason
    assert by_line[13][3] == ("line 13: no signal controller 'LSA-999' in the registry "
                              "(signal_controllers)")
    assert by_line[12][3] == "line 12: NUL byte at position 4"
    (utf8,) = [d for d in dead if d[2] == "bad_text" and d[1] != BAD_LINES[12][0].encode()]
    assert utf8[1] == b"LSA-001,\xff\xfe,82,1" and utf8[3].startswith("line 16: not UTF-8")
    row = conn.execute("SELECT rows, new_rows, dead_rows FROM signal_event_imports").fetchone()
    assert row == (4, 3, 12)


def test_identical_bad_lines_are_one_dead_letter_naming_their_lines(
    conn: Conn, tmp_path: Path,
) -> None:
    path = tmp_path / "same.csv"
    path.write_text("\n".join(["LSA-999,2025-11-20 08:00:01.0,82,1"] * 3) + "\n")
    report = import_file(conn, path)
    assert (report.rows, report.dead_rows, report.dead_letters) == (0, 3, 1)
    (detail,) = conn.execute("SELECT detail FROM dead_letters").fetchone() or ()
    assert detail.startswith("line 1: no signal controller 'LSA-999'")
    assert detail.endswith("(the same line 3 times: also line 2, 3)")


def _dst_rows(day: datetime, hours: float, step_s: float) -> list[tuple[datetime, int, int]]:
    """A detector switching every `step_s` seconds for `hours` from `day` (UTC)."""
    n = int(hours * 3600 / step_s)
    return [(day + timedelta(seconds=i * step_s), 82 if i % 2 else 81, 1) for i in range(n)]


def test_the_night_the_clocks_go_back(conn: Conn, tmp_path: Path) -> None:
    # 2024-10-27 in Europe/Berlin: 02:00-03:00 local twice (00:00-01:00 UTC in summer
    # time, 01:00-02:00 UTC in winter time); the file says only the local time
    rows = _dst_rows(datetime(2024, 10, 26, 22, 0, tzinfo=UTC), 5, 30.1)
    path = write_csv(tmp_path / "fallback.csv", rows)
    text = path.read_text()
    assert text.count("2024-10-27 02:00:") == 4  # twice as many as in any other hour
    report = import_file(conn, path, ImportOptions(measure=False))
    assert report.new_rows == len(rows) and report.dead_rows == 0
    repeated = [r for r in rows if r[0].hour in (0, 1)]  # 00:00-02:00 UTC
    assert report.ambiguous == len(repeated) and report.nonexistent == 0
    assert stored_events(conn) == rows  # both passes back in UTC, none an hour off


def test_the_night_the_clocks_go_forward(conn: Conn, tmp_path: Path) -> None:
    # 2024-03-31 in Europe/Berlin: 02:00-03:00 local does not exist
    rows = _dst_rows(datetime(2024, 3, 30, 23, 0, tzinfo=UTC), 3, 60.0)
    skipped = "LSA-001,2024-03-31 02:30:00.0,82,2"  # a controller whose clock changed late
    path = write_csv(tmp_path / "spring.csv", rows, extra=[skipped])
    report = import_file(conn, path, ImportOptions(measure=False))
    assert report.dead_rows == 0 and report.nonexistent == 1 and report.ambiguous == 0
    late = (datetime(2024, 3, 31, 1, 30, tzinfo=UTC), 82, 2)  # read before the change
    assert stored_events(conn) == sorted([*rows, late])


def test_variants_gzip_no_header_us_times_and_other_zones(
    conn: Conn, tmp_path: Path, events: list[tuple[datetime, int, int]],
) -> None:
    part = events[:300]
    a = import_file(conn, write_csv(tmp_path / "a.csv.gz", part[:100], header=False),
                    ImportOptions(measure=False))
    b = import_file(conn, write_csv(tmp_path / "b.csv", part[100:200], style="us"),
                    ImportOptions(measure=False))
    c = import_file(conn, write_csv(tmp_path / "c.csv", part[200:], zone=None),
                    ImportOptions(time_zone="UTC", measure=False))
    assert [r.new_rows for r in (a, b, c)] == [100, 100, 100]
    assert [r.dead_rows for r in (a, b, c)] == [0, 0, 0]
    assert stored_events(conn) == part


def test_dry_run_stores_nothing(
    conn: Conn, tmp_path: Path, events: list[tuple[datetime, int, int]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_csv(tmp_path / "d.csv", events[:50], extra=["LSA-999,2025-11-20 08:00:01.0,82,1"])
    assert main(["traffic", "import-events", "--dry-run", str(path)]) == 0
    assert "d.csv: would import 50 rows (50 new, 0 already stored), 1 dead-lettered " \
           "(unknown_device 1)" in capsys.readouterr().out
    for name in ("signal_events", "dead_letters", "signal_event_imports", "signal_measures"):
        assert _count(conn, f"SELECT count(*) FROM {name}") == 0
    assert main(["traffic", "import-events", str(path)]) == 0  # for real afterwards
    assert _count(conn, "SELECT count(*) FROM signal_events") == 50


def test_batches_and_progress(
    conn: Conn, tmp_path: Path, events: list[tuple[datetime, int, int]],
) -> None:
    seen: list[Progress] = []
    path = write_csv(tmp_path / "big.csv", events[:2500])
    report = import_file(conn, path, ImportOptions(batch_rows=1000, progress_s=0.0,
                                                   measure=False), on_progress=seen.append)
    assert report.new_rows == 2500
    assert [p.rows for p in seen] == [1000, 2000, 2500]
    assert seen[-1].lines == 2501 and seen[-1].bytes_read == seen[-1].bytes_total


def test_an_unreadable_file_stores_nothing(
    conn: Conn, tmp_path: Path, events: list[tuple[datetime, int, int]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_csv(tmp_path / "cut.csv.gz", events[:5000])
    path.write_bytes(path.read_bytes()[:-200])  # a broken upload
    with pytest.raises(EventLogError, match=r"cut\.csv\.gz"):
        import_file(conn, path)
    assert main(["traffic", "import-events", str(path)]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert main(["traffic", "import-events", str(tmp_path / "nope.csv")]) == 2
    assert main(["traffic", "import-events", "--timezone", "Mars/Olympus", str(path)]) == 2
    assert _count(conn, "SELECT count(*) FROM signal_events") == 0
    assert _count(conn, "SELECT count(*) FROM signal_event_imports") == 0


def test_watch_imports_each_file_once_it_stopped_growing(
    conn: Conn, tmp_path: Path, events: list[tuple[datetime, int, int]],
) -> None:
    folder = tmp_path / "upload"
    folder.mkdir()
    reports: list[str] = []
    state = WatchState()
    options = ImportOptions(measure=False)

    def poll() -> int:
        return poll_once(conn, [folder], state, options,
                         on_report=lambda r: reports.append(f"{r.path.name} {r.status}"))

    write_csv(folder / "one.csv", events[:100])
    (folder / ".two.csv.part").write_text("uploading")
    (folder / "notes.txt").write_text("not a log")
    assert poll() == 0  # seen once: maybe still growing
    assert poll() == 1 and reports == ["one.csv imported"]
    assert poll() == 0  # nothing new
    growing = folder / "two.csv"
    write_csv(growing, events[100:150])
    assert poll() == 0
    write_csv(growing, events[100:200])  # it grew since the last poll
    assert poll() == 0
    assert poll() == 1 and reports[-1] == "two.csv imported"
    (folder / "copy.csv").write_bytes((folder / "one.csv").read_bytes())
    poll()
    poll()
    assert reports[-1] == "copy.csv already_imported"
    assert stored_events(conn) == events[:200]


def test_watch_runs_until_stopped(
    conn: Conn, db_url: str, tmp_path: Path, events: list[tuple[datetime, int, int]],
) -> None:
    write_csv(tmp_path / "x.csv", events[:10])
    stop = threading.Event()
    reports: list[str] = []
    thread = threading.Thread(target=watch, args=(db_url, [tmp_path], ImportOptions(), 0.05),
                              kwargs={"stop": stop, "on_report": lambda r: reports.append(
                                  r.status)})
    thread.start()
    try:
        for _ in range(200):
            if reports:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert reports == ["imported"] and not thread.is_alive()
    again: list[str] = []
    assert watch(db_url, [tmp_path], ImportOptions(), 0.01, stop=threading.Event(),
                 on_report=lambda r: again.append(r.status), max_polls=2).failed == 0
    assert again == ["already_imported"]
    with pytest.raises(ValueError, match="positive"):
        watch(db_url, [tmp_path], ImportOptions(), 0, stop=stop, on_report=print)


def test_a_concurrent_import_of_the_same_file_waits_and_stores_nothing(
    conn: Conn, db_url: str, tmp_path: Path, events: list[tuple[datetime, int, int]],
) -> None:
    path = write_csv(tmp_path / "twice.csv", events[:20])
    result: list[FileReport] = []
    with connect(db_url) as other, connect(db_url, autocommit=True) as watcher:
        # another import of the same file, its transaction still open
        other.execute("INSERT INTO signal_event_imports (sha256, file_name, time_zone) "
                      "VALUES (%s, 'twice.csv', 'UTC')", (file_sha256(path),))
        thread = threading.Thread(target=lambda: result.append(import_file(conn, path)))
        thread.start()
        pid = conn.info.backend_pid
        wait_for(lambda: watcher.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone() == ("Lock",), what="the import to wait for the other one")
        other.commit()
        thread.join(10)
    assert [r.status for r in result] == ["already_imported"]
    assert _count(conn, "SELECT count(*) FROM signal_events") == 0


def test_only_registered_controllers_after_retiring(
    conn: Conn, tmp_path: Path, events: list[tuple[datetime, int, int]],
) -> None:
    conn.execute("UPDATE signal_controller_registry SET retired_at = now() WHERE "
                 "controller_id = %s", (CID,))
    report = import_file(conn, write_csv(tmp_path / "r.csv", events[:5]))
    assert report.rows == 0 and report.reasons == {"unknown_device": 5}


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        ImportOptions(time_zone="Nowhere/Town")
    with pytest.raises(ValueError, match="batch_rows"):
        ImportOptions(batch_rows=0)
