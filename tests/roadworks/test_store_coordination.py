"""The SQL of coordination: findings and resurfaced segments (store_coordination)
against the real PostgreSQL with PostGIS."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from cityops.roadworks import store_coordination as store
from cityops.roadworks import store_works
from cityops.roadworks.errors import FindingNotFoundError
from cityops.roadworks.model import (
    Decision,
    FindingDraft,
    FindingKind,
    FindingStatus,
    Severity,
)
from tests.roadworks.conftest import Conn
from tests.roadworks.factories import AT, PROMOTER, insert_work, street_line, to_lonlat


def _draft(a: int, b: int | None, kind: FindingKind = FindingKind.CLASH,
           segment: int | None = None, message: str = "m") -> FindingDraft:
    return FindingDraft(kind=kind, severity=Severity.CONFLICT, work_a=a, work_b=b,
                        message=message, segment_id=segment, details={"distance_m": 1.0},
                        location=to_lonlat(street_line()).centroid)


def test_findings_keep_their_decision_across_changes(conn: Conn) -> None:
    a, b, c = (insert_work(conn, f"RW-{n}", y=300 * i) for i, n in enumerate("ABC"))
    kept = store.sync_findings(conn, a, [_draft(a, b), _draft(a, c, FindingKind.DIG_ONCE)], AT)
    clash = store.get_finding(conn, kept[0])
    assert (clash.status, clash.reference_a, clash.reference_b) == (
        FindingStatus.OPEN, "RW-A", "RW-B")
    assert clash.location is not None
    store.decide_finding(conn, clash.id, Decision.ACCEPTED, "abgestimmt", PROMOTER, AT)
    # found again after a change: same row, decision kept, message refreshed
    later = AT + timedelta(days=1)
    again = store.sync_findings(conn, b, [_draft(a, b, message="neu")], later)
    assert again == [clash.id]
    found = store.get_finding(conn, clash.id)
    assert (found.status, found.message, found.decision_note, found.last_found_at) == (
        FindingStatus.ACCEPTED, "neu", "abgestimmt", later)
    assert found.first_found_at == AT
    # b no longer clashes: obsolete, but the decision is remembered
    store.sync_findings(conn, b, [], later)
    assert store.get_finding(conn, clash.id).status is FindingStatus.OBSOLETE
    assert store.get_finding(conn, kept[1]).status is FindingStatus.OPEN  # a-c untouched
    # a changes: the clash with b is back (decision restored), a-c is gone
    store.sync_findings(conn, a, [_draft(a, b)], later)
    assert store.get_finding(conn, clash.id).status is FindingStatus.ACCEPTED
    assert [f.id for f in store.list_findings(conn, work_id=c)] == [kept[1]]
    assert store.list_findings(conn, statuses=[FindingStatus.OPEN]) == []
    assert [f.id for f in store.list_findings(conn, statuses=[FindingStatus.OBSOLETE])] == [
        kept[1]]
    with pytest.raises(FindingNotFoundError, match="no coordination finding with id 999"):
        store.get_finding(conn, 999)
    with pytest.raises(ValueError, match="does not involve work"):
        store.sync_findings(conn, c, [_draft(a, b)], later)


def test_segments_and_protection_findings(conn: Conn) -> None:
    a = insert_work(conn)
    line = to_lonlat(street_line(-20, 0, 100))
    seg = store.insert_segment(conn, street="Teststraße", line=line,
                               resurfaced_on=date(2023, 5, 12), note="Decke", actor=PROMOTER,
                               at=AT)
    assert store.get_segment(conn, seg).resurfaced_on == date(2023, 5, 12)
    footprint = store_works.get_work(conn, a).spec.footprint
    assert [s.id for s in store.segments_near(conn, footprint, 5)] == [seg]
    assert store.segments_near(conn, to_lonlat(street_line(0, 500)), 5) == []
    kept = store.sync_findings(conn, a, [_draft(a, None, FindingKind.PROTECTION_PERIOD, seg)],
                               AT)
    assert store.get_finding(conn, kept[0]).segment_id == seg
    assert store.delete_segments(conn, created_by="Anna Schmidt") == 1
    assert store.list_findings(conn) == []  # cascades
    assert store.list_segments(conn) == []
