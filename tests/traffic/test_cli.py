"""`cityops traffic measures` and `cityops traffic webster` on events stored in PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cityops.api.cli import main
from tests.traffic.factories import phase2_log

T0 = datetime(2024, 5, 6, 7, 0, tzinfo=UTC)


def _seed(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO signal_controllers (controller_id, name, geom, cycle_s)"
            " VALUES ('c1', 'Test', ST_SetSRID(ST_MakePoint(13.4, 52.5), 4326), 60)"
        )
        conn.execute(
            "INSERT INTO signal_phases VALUES"
            " ('c1', 2, 1, 'NS', 5, 60, 20, 3, 2), ('c1', 4, 2, 'EW', 5, 60, 20, 3, 2)"
        )
        conn.execute(
            "INSERT INTO signal_detectors (controller_id, channel, phase, kind, lane,"
            " distance_m) VALUES ('c1', 1, 2, 'stop_bar', 1, 0),"
            " ('c1', 2, 2, 'advance', 1, 50), ('c1', 9, 2, 'pedestrian', NULL, 0)"
        )
        rows = [(T0 + timedelta(seconds=e.ts), e.code, e.param) for e in phase2_log()]
        rows.append((T0 + timedelta(seconds=5), 82, 77))  # unknown detector: flagged
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO signal_events (controller_id, ts, code, param)"
                " VALUES ('c1', %s, %s, %s)", rows
            )


@pytest.fixture
def seeded(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CITYOPS_DATABASE_URL", db_url)
    _seed(db_url)
    return db_url


def test_measures_prints_the_bins(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["traffic", "measures", "--controller", "c1", "--from", "2024-05-06T07:00",
                 "--to", "2024-05-06T07:15", "--speed-kmh", "36"])
    assert code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = lines[0].split("\t")
    row = dict(zip(header, lines[1].split("\t"), strict=True))
    assert row["phase"] == "2" and row["bin_start"] == "2024-05-06T07:00:00+00:00"
    # the period also holds the third cycle's start, so 123 s is a volume, as in the unit test
    assert row["volume"] == "7" and row["pct_aog"] == "0.50" and row["platoon_ratio"] == "1.50"
    assert row["split_failures"] == "1" and row["gap_outs"] == "1" and row["max_outs"] == "1"
    assert row["ped_delay_mean_s"] == "30.00"
    assert "flagged events: 1" in out and "unknown_detector" in out


def test_webster_prints_a_plan(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["traffic", "webster", "--controller", "c1", "--from", "2024-05-06T07:00Z",
                 "--to", "2024-05-06T07:15Z", "--min-cycle", "40"])
    assert code == 0
    out = capsys.readouterr().out
    # phase 2: 7 vehicles in 15 min = 28 veh/h, y = 28/1800; phase 4: no flow
    assert "cycle = 40 s" in out and "L = 10 s" in out
    assert "\n2\t0.016\t" in out


def test_unknown_controller_exits_2(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["traffic", "measures", "--controller", "nope", "--from", "2024-05-06",
                 "--to", "2024-05-07"]) == 2
    assert "no signal controller 'nope'" in capsys.readouterr().err
