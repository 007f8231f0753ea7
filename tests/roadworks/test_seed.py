"""`cityops roadworks seed-demo` and the other commands on the demo data: the planted
findings are found and nothing else, deterministically."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from cityops.api.cli import main
from cityops.ingest.db import connect
from cityops.roadworks import store_coordination, store_works
from cityops.roadworks.errors import InvalidStateError
from cityops.roadworks.model import Category, FindingStatus, Sector, Status
from cityops.roadworks.seed import DEMO_WORKS, PLANTED, seed_demo
from cityops.routing.network import RoadNetwork
from tests.roadworks.conftest import SEED_DAY, Conn, Seeded
from tests.roadworks.factories import FRAME, service
from tests.roadworks.schemas import errors, feature_collection_validator, wzdx_feed_validator

CURRENT = (FindingStatus.OPEN, FindingStatus.ACCEPTED, FindingStatus.RESOLVED)


def _found(conn: Conn, references: dict[str, str],
           segments: dict[str, int]) -> set[tuple[Any, ...]]:
    by_ref = {v: k for k, v in references.items()}
    by_seg = {v: k for k, v in segments.items()}
    return {
        (f.kind, by_ref[f.reference_a],
         by_ref[f.reference_b] if f.reference_b else by_seg[f.segment_id or 0])
        for f in store_coordination.list_findings(conn, statuses=CURRENT)
    }


def test_the_planted_findings_and_no_false_ones(seeded: Seeded) -> None:
    with connect(seeded.url, autocommit=True) as conn:
        found = _found(conn, seeded.report.references, seeded.report.segment_ids)
        assert found == set(PLANTED)
        decided = store_coordination.list_findings(conn, statuses=[FindingStatus.ACCEPTED])
    assert len(decided) == 1
    assert decided[0].decision_note is not None
    assert seeded.report.findings == len(PLANTED)


def test_a_realistic_mix(seeded: Seeded) -> None:
    with connect(seeded.url, autocommit=True) as conn:
        works = store_works.list_works(conn)
        segments = store_coordination.list_segments(conn)
    assert 30 <= len(works) <= 60
    assert {w.status for w in works} == set(Status)
    assert {w.spec.category for w in works} == set(Category)
    assert len({w.spec.sector for w in works}) >= 7
    assert len({w.spec.promoter for w in works}) >= 6
    assert sum(w.spec.detour is not None for w in works) >= 2
    assert any(w.spec.bus_lines for w in works)
    assert any(not w.spec.is_public for w in works)
    assert len(segments) == 4
    assert all(FRAME.bounds.contains(w.spec.footprint) for w in works)


def test_on_real_streets(seeded: Seeded, network: RoadNetwork) -> None:
    with connect(seeded.url, autocommit=True) as conn:
        works = store_works.list_works(conn)
    for work in works:
        for street in work.spec.streets:
            for lon, lat in list(street.line.coords)[:: max(1, len(street.line.coords) // 4)]:
                snapped = network.snap(lat, lon)
                assert snapped.street_distance_m < 1.0, (work.reference, street.name)
            assert street.name in set(network.name.tolist())


def test_histories_tell_what_happened(seeded: Seeded) -> None:
    refs = seeded.report.references
    with connect(seeded.url, autocommit=True) as conn:
        svc = service()
        emergency = svc.get_by_reference(conn, refs["water-emergency-mannerheim"])
        actions = [h.action for h in svc.history(conn, emergency.id)]
        assert actions[:2] == ["created", "transition:emergency_start"]
        assert "finding:accepted" in actions
        heat = svc.get_by_reference(conn, refs["heat-kaivokatu"])
        assert "updated" in [h.action for h in svc.history(conn, heat.id)]
        done = svc.get_by_reference(conn, refs["power-snellman"])
        history = svc.history(conn, done.id)
        assert [h.to_status for h in history][-1] is Status.COMPLETED
        assert {h.role.value for h in history} == {"promoter", "authority"}
        assert done.actual_end is not None
        late = svc.get_by_reference(conn, refs["gas-yrjon"])
        assert late.actual_start is not None
        assert late.actual_start > late.spec.planned_start


def test_deterministic_and_replaceable(conn: Conn, seeded: Seeded, network: RoadNetwork) -> None:
    report = seed_demo(conn, service(), network, SEED_DAY)
    first = _dump(conn)
    with pytest.raises(InvalidStateError, match="40 demo works exist already; use --replace"):
        seed_demo(conn, service(), network, SEED_DAY)
    again = seed_demo(conn, service(), network, SEED_DAY, replace=True)
    assert _dump(conn) == first
    assert again.references == report.references
    with connect(seeded.url, autocommit=True) as other:
        assert _dump(other) == first
    assert len(report.references) == len(DEMO_WORKS)


def _dump(conn: Conn) -> list[tuple[Any, ...]]:
    works = [
        (w.reference, w.status.value, w.spec.footprint.wkt, w.spec.planned_start,
         w.spec.planned_end, w.actual_start, w.actual_end, w.version, w.created_at,
         w.updated_at, w.district, w.spec.sector.value)
        for w in store_works.list_works(conn)
    ]
    findings = [
        (f.kind.value, f.reference_a, f.reference_b, f.status.value, f.message, f.decided_at)
        for f in store_coordination.list_findings(conn)
    ]
    audit = conn.execute(
        "SELECT w.reference, a.at, a.actor, a.action, a.from_status, a.to_status "
        "FROM roadwork_audit a JOIN roadworks w ON w.id = a.work_id ORDER BY w.reference, a.id"
    ).fetchall()
    return [*works, *findings, *audit]


# -- the command line on the demo data --------------------------------------------------------


@pytest.fixture
def env(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> Seeded:
    monkeypatch.setenv("CITYOPS_DATABASE_URL", seeded.url)
    return seeded


AT = "2025-03-03T10:00:00+01:00"


def test_cli_feed_wzdx_validates(env: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["roadworks", "feed", "wzdx", "--at", AT]) == 0
    feed = json.loads(capsys.readouterr().out)
    assert errors(wzdx_feed_validator(), feed) == []
    names = {tuple(f["properties"]["core_details"]["road_names"]) for f in feed["features"]}
    assert ("Mannerheimintie",) in names
    refs = {f["properties"]["core_details"]["name"].split(":")[0] for f in feed["features"]}
    public = {w.key for w in DEMO_WORKS if w.is_public and w.status in (
        Status.APPROVED, Status.SCHEDULED, Status.IN_PROGRESS)}
    assert refs == {env.report.references[k] for k in public}


def test_cli_other_feeds(env: Seeded, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["roadworks", "feed", "geojson", "--at", AT]) == 0
    assert errors(feature_collection_validator(), json.loads(capsys.readouterr().out)) == []
    assert main(["roadworks", "feed", "atom", "--street", "Unioninkatu", "--at", AT]) == 0
    root = ET.fromstring(capsys.readouterr().out.encode())
    titles = [e.findtext("{http://www.w3.org/2005/Atom}title") or ""
              for e in root.findall("{http://www.w3.org/2005/Atom}entry")]
    assert len(titles) == 2
    assert all(t.startswith("Unioninkatu: ") for t in titles)
    out = tmp_path / "baustellen.ics"
    assert main(["roadworks", "feed", "ical", "--bbox", "24.93,60.16,24.96,60.18", "--at", AT,
                 "--out", str(out)]) == 0
    text = out.read_bytes().decode()
    assert text.startswith("BEGIN:VCALENDAR\r\n")
    assert text.count("BEGIN:VEVENT") > 5
    assert main(["roadworks", "feed", "csv", "--at", AT]) == 0
    assert capsys.readouterr().out.startswith("reference,title,")


def test_cli_publish_daily(env: Seeded, capsys: pytest.CaptureFixture[str],
                           tmp_path: Path) -> None:
    assert main(["roadworks", "publish-daily", "--date", "2025-03-03", "--out",
                 str(tmp_path)]) == 0
    assert "overview of 2025-03-03" in capsys.readouterr().out
    page = (tmp_path / "2025-03-03" / "baustellen-2025-03-03.html").read_text(encoding="utf-8")
    refs = env.report.references
    assert refs["water-emergency-mannerheim"] in page  # in progress
    assert refs["gas-unionin"] in page  # starts in three days
    assert refs["tele-vilhon"] not in page  # not public
    assert refs["sewer-kasarmi"] not in page  # still in consultation
    assert "Rohrbruch Wasserleitung" in page


def test_cli_findings(env: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["roadworks", "findings"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("4 finding(s)")  # open ones; the fifth is accepted
    assert main(["roadworks", "findings", "--all", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(f["kind"] for f in lines) == sorted(k.value for k, _, _ in PLANTED)


def test_cli_errors(env: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["roadworks", "seed-demo", "--today", "2025-03-03"]) == 1
    assert "demo works exist already; use --replace" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["roadworks", "feed", "wzdx", "--bbox", "1,2,3"])
    assert "expected MINLON,MINLAT,MAXLON,MAXLAT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["roadworks", "feed", "wzdx", "--at", "2025-03-03T10:00"])
    assert "give a time zone" in capsys.readouterr().err


def test_sectors_used(seeded: Seeded) -> None:
    assert {w.sector for w in DEMO_WORKS} >= {Sector.GAS, Sector.WATER, Sector.ELECTRICITY,
                                              Sector.DISTRICT_HEATING, Sector.TELECOM,
                                              Sector.SEWER, Sector.ROAD}
