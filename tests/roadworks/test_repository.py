"""The SQL of the registry against the real PostgreSQL with PostGIS."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from cityops.roadworks import repository as repo
from cityops.roadworks.errors import DuplicateReference, FindingNotFound, RoadworkNotFound
from cityops.roadworks.geometry import BBox
from cityops.roadworks.model import (
    Decision,
    FindingDraft,
    FindingKind,
    FindingStatus,
    Measure,
    Period,
    Sector,
    Severity,
    Status,
    Street,
)
from tests.roadworks.conftest import Conn
from tests.roadworks.factories import FRAME, PROMOTER, T0, make_spec, street_line, to_lonlat

AT = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def _insert(conn: Conn, reference: str = "RW-2025-00001", status: Status = Status.SUBMITTED,
            **kw: object) -> int:
    spec = make_spec(**kw)  # type: ignore[arg-type]
    return repo.insert_work(conn, reference=reference, status=status, spec=spec,
                            area_m2=480.0, district="B3", actor=PROMOTER, at=AT)


def test_round_trip(conn: Conn) -> None:
    detour = to_lonlat(street_line(0, 60, 200))
    spec = make_spec(
        measures=(Measure.ROAD_CLOSURE, Measure.PARKING_SUSPENDED), bus_lines=("103", "X83"),
        contractor="Tiefbau Müller", public_contact="0800 123", working_hours="Mo–Fr 7–17",
        night_works=True, excavation=False, detour=detour, detour_description="über B",
        waste_collection_affected=True, is_public=False, description="Rohr & Kabel",
        streets=(Street("Teststraße", to_lonlat(street_line())),
                 Street("Querweg", to_lonlat(street_line(30, -20, 40, angle_east=False)))),
    )
    work_id = repo.insert_work(conn, reference="RW-2025-00042", status=Status.DRAFT, spec=spec,
                               area_m2=480.0, district="B3", actor=PROMOTER, at=AT)
    work = repo.get_work(conn, work_id)
    assert work.spec == spec  # geometries come back exactly (WKB both ways)
    assert (work.reference, work.status, work.version, work.district) == (
        "RW-2025-00042", Status.DRAFT, 1, "B3")
    assert (work.created_at, work.updated_at, work.created_by) == (AT, AT, "Anna Schmidt")
    assert work.actual_start is None
    assert repo.get_work_by_reference(conn, "RW-2025-00042") == work
    with pytest.raises(RoadworkNotFound, match="no roadwork with id 999"):
        repo.get_work(conn, 999)
    with pytest.raises(RoadworkNotFound, match="no roadwork with reference 'RW-X'"):
        repo.get_work_by_reference(conn, "RW-X")


def test_update_bumps_the_version_and_replaces_streets(conn: Conn) -> None:
    work_id = _insert(conn)
    later = AT + timedelta(hours=1)
    new = make_spec(street="Neue Straße", sector=Sector.WATER)
    assert repo.update_work(conn, work_id, spec=new, area_m2=1.0, district="C1", at=later) == 2
    assert repo.update_work(conn, work_id, status=Status.IN_PROGRESS, actual_start=later,
                            at=later) == 3
    work = repo.get_work(conn, work_id)
    assert work.spec == new
    assert (work.status, work.actual_start, work.district, work.updated_at) == (
        Status.IN_PROGRESS, later, "C1", later)
    with pytest.raises(RoadworkNotFound):
        repo.update_work(conn, 999, status=Status.APPROVED, at=later)


def test_references_are_unique(conn: Conn) -> None:
    _insert(conn)
    with pytest.raises(DuplicateReference, match="reference 'RW-2025-00001' is already taken"):
        _insert(conn)
    assert repo.next_reference(conn, datetime(2025, 12, 31, 23, 30, tzinfo=UTC)) == \
        "RW-2026-00001"  # Berlin's new year


def test_filters(conn: Conn) -> None:
    a = _insert(conn, "RW-A", street="Frankfurter Straße", status=Status.SCHEDULED)
    b = _insert(conn, "RW-B", y=300, start=T0 + timedelta(days=30), status=Status.APPROVED,
                sector=Sector.WATER, promoter="Glasfaser Plus")
    c = _insert(conn, "RW-C", y=600, status=Status.DRAFT)
    _insert(conn, "RW-D", y=900, status=Status.SCHEDULED, is_public=False)

    def ids(**kw: object) -> list[int]:
        return [w.id for w in repo.list_works(conn, repo.WorkFilter(**kw))]  # type: ignore[arg-type]

    assert ids() == [a, c, 4, b]  # by effective start, then id
    assert ids(public_only=True) == [a, b]
    assert ids(street="frankfurter str.") == [a]
    assert ids(statuses=frozenset({Status.DRAFT})) == [c]
    assert ids(active=Period(T0 + timedelta(days=20), T0 + timedelta(days=40))) == [b]
    assert ids(starts_in=Period(T0, T0 + timedelta(hours=1))) == [a, c, 4]
    assert ids(promoter="GLASFASER PLUS") == [b]
    assert ids(sector=Sector.WATER) == [b]
    work_a = repo.get_work(conn, a)
    x0, y0, x1, y1 = work_a.spec.footprint.bounds
    assert ids(bbox=BBox(x0, y0, x1, y1)) == [a]
    assert ids(limit=2, offset=1) == [c, 4]
    assert ids(reference_prefix="RW-") == [a, c, 4, b]
    assert repo.count_works(conn, repo.WorkFilter(public_only=True)) == 2


def test_candidates_are_near_in_space_and_time(conn: Conn) -> None:
    a = _insert(conn, "RW-A")
    near = _insert(conn, "RW-B", y=100, start=T0 + timedelta(days=100))
    _insert(conn, "RW-C", y=700)  # too far
    _insert(conn, "RW-D", y=50, start=T0 + timedelta(days=400))  # too late
    _insert(conn, "RW-E", y=20, status=Status.DRAFT)  # not coordinated
    work = repo.get_work(conn, a)
    window = Period(T0 - timedelta(days=180), T0 + timedelta(days=190))
    assert [w.id for w in repo.candidates(conn, work, 450.0, window)] == [near]


def test_audit(conn: Conn) -> None:
    work_id = _insert(conn)
    repo.insert_audit(conn, work_id, actor=PROMOTER, at=AT, action="created",
                      to_status=Status.DRAFT, changes={"title": "x"})
    repo.insert_audit(conn, work_id, actor=PROMOTER, at=AT, action="transition:submit",
                      from_status=Status.DRAFT, to_status=Status.SUBMITTED, note="bitte")
    history = repo.audit_history(conn, work_id)
    assert [(h.action, h.from_status, h.to_status, h.note) for h in history] == [
        ("created", None, Status.DRAFT, None),
        ("transition:submit", Status.DRAFT, Status.SUBMITTED, "bitte"),
    ]
    assert history[0].changes == {"title": "x"}
    assert (history[0].actor, history[0].organisation, history[0].role.value) == (
        "Anna Schmidt", "Stadtwerke", "promoter")


def _draft(a: int, b: int | None, kind: FindingKind = FindingKind.CLASH,
           segment: int | None = None, message: str = "m") -> FindingDraft:
    return FindingDraft(kind=kind, severity=Severity.CONFLICT, work_a=a, work_b=b,
                        message=message, segment_id=segment, details={"distance_m": 1.0},
                        location=to_lonlat(street_line()).centroid)


def test_findings_keep_their_decision_across_changes(conn: Conn) -> None:
    a, b, c = (_insert(conn, f"RW-{n}", y=300 * i) for i, n in enumerate("ABC"))
    kept = repo.sync_findings(conn, a, [_draft(a, b), _draft(a, c, FindingKind.DIG_ONCE)], AT)
    clash = repo.get_finding(conn, kept[0])
    assert (clash.status, clash.reference_a, clash.reference_b) == (
        FindingStatus.OPEN, "RW-A", "RW-B")
    assert clash.location is not None
    repo.decide_finding(conn, clash.id, Decision.ACCEPTED, "abgestimmt", PROMOTER, AT)
    # found again after a change: same row, decision kept, message refreshed
    later = AT + timedelta(days=1)
    again = repo.sync_findings(conn, b, [_draft(a, b, message="neu")], later)
    assert again == [clash.id]
    found = repo.get_finding(conn, clash.id)
    assert (found.status, found.message, found.decision_note, found.last_found_at) == (
        FindingStatus.ACCEPTED, "neu", "abgestimmt", later)
    assert found.first_found_at == AT
    # b no longer clashes: obsolete, but the decision is remembered
    repo.sync_findings(conn, b, [], later)
    assert repo.get_finding(conn, clash.id).status is FindingStatus.OBSOLETE
    assert repo.get_finding(conn, kept[1]).status is FindingStatus.OPEN  # a-c untouched
    # a changes: the clash with b is back (decision restored), a-c is gone
    repo.sync_findings(conn, a, [_draft(a, b)], later)
    assert repo.get_finding(conn, clash.id).status is FindingStatus.ACCEPTED
    assert [f.id for f in repo.list_findings(conn, work_id=c)] == [kept[1]]
    assert repo.list_findings(conn, statuses=[FindingStatus.OPEN]) == []
    assert [f.id for f in repo.list_findings(conn, statuses=[FindingStatus.OBSOLETE])] == [
        kept[1]]
    with pytest.raises(FindingNotFound, match="no coordination finding with id 999"):
        repo.get_finding(conn, 999)
    with pytest.raises(ValueError, match="does not involve work"):
        repo.sync_findings(conn, c, [_draft(a, b)], later)


def test_segments_and_protection_findings(conn: Conn) -> None:
    a = _insert(conn)
    line = to_lonlat(street_line(-20, 0, 100))
    seg = repo.insert_segment(conn, street="Teststraße", line=line,
                              resurfaced_on=date(2023, 5, 12), note="Decke", actor=PROMOTER,
                              at=AT)
    assert repo.get_segment(conn, seg).resurfaced_on == date(2023, 5, 12)
    assert [s.id for s in repo.segments_near(conn, repo.get_work(conn, a).spec.footprint, 5)] \
        == [seg]
    assert repo.segments_near(conn, to_lonlat(street_line(0, 500)), 5) == []
    kept = repo.sync_findings(conn, a, [_draft(a, None, FindingKind.PROTECTION_PERIOD, seg)],
                              AT)
    assert repo.get_finding(conn, kept[0]).segment_id == seg
    assert repo.delete_segments(conn, created_by="Anna Schmidt") == 1
    assert repo.list_findings(conn) == []  # cascades
    assert repo.list_segments(conn) == []


def test_overview_snapshots(conn: Conn) -> None:
    day = date(2025, 3, 3)
    assert repo.get_overview(conn, day) is None
    first = repo.save_overview(conn, day=day, generated_at=AT, active=1, upcoming=2,
                               html="<p>1</p>", geojson={"type": "FeatureCollection"})
    second = repo.save_overview(conn, day=day, generated_at=AT + timedelta(hours=1), active=3,
                                upcoming=4, html="<p>2</p>",
                                geojson={"type": "FeatureCollection", "features": []})
    snap = repo.get_overview(conn, day)
    assert snap is not None
    assert (snap.id, snap.html, snap.active) == (second, "<p>2</p>", 3)
    assert first < second
    assert repo.list_overviews(conn) == [(day, AT + timedelta(hours=1), 3, 4)]


def test_frame_is_the_demo_city() -> None:
    assert FRAME.bounds.contains(make_spec().footprint)
