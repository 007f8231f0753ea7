"""Use cases against the real database: lifecycle with audit, coordination on every change,
decisions, and nothing half-written when something fails."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from shapely.geometry import Polygon

from cityops.roadworks import store_coordination
from cityops.roadworks.errors import (
    IllegalTransitionError,
    InvalidGeometryError,
    InvalidPayloadError,
    InvalidPeriodError,
    InvalidStateError,
    NotEditableError,
    NotPermittedError,
    RoadworkNotFoundError,
    StaleVersionError,
)
from cityops.roadworks.model import (
    Actor,
    Category,
    Decision,
    FindingKind,
    FindingStatus,
    Measure,
    Role,
    Sector,
    Status,
)
from tests.roadworks.conftest import Conn
from tests.roadworks.factories import (
    AUTHORITY,
    FRAME,
    NOW,
    OTHER_PROMOTER,
    PROMOTER,
    T0,
    Clock,
    make_spec,
    service,
    street_line,
    to_lonlat,
    with_,
)


def _counts(conn: Conn) -> dict[str, int]:
    out = {}
    for table in ("roadworks", "roadwork_streets", "roadwork_audit", "roadwork_findings",
                  "resurfaced_segments"):
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        out[table] = int(str(row[0])) if row else 0
    return out


def _approve(svc: Any, conn: Conn, work_id: int) -> None:
    svc.submit(conn, work_id, PROMOTER)
    svc.transition(conn, work_id, Status.IN_CONSULTATION, AUTHORITY)
    svc.transition(conn, work_id, Status.APPROVED, AUTHORITY, note="mit Auflagen")


def test_create_records_a_draft_with_its_history(conn: Conn) -> None:
    svc = service()
    work = svc.create(conn, make_spec(), PROMOTER, note="erste Fassung")
    assert (work.reference, work.status, work.version) == ("RW-2025-00001", Status.DRAFT, 1)
    assert work.area_m2 == pytest.approx(480.0, abs=0.5)
    assert work.created_at == NOW
    [entry] = svc.history(conn, work.id)
    assert (entry.action, entry.to_status, entry.actor, entry.organisation, entry.note) == (
        "created", Status.DRAFT, "Anna Schmidt", "Stadtwerke", "erste Fassung")
    assert entry.changes["sector"] == "gas"
    footprint = entry.changes["footprint"]
    assert isinstance(footprint, dict)
    assert footprint["type"] == "Polygon"
    assert svc.get(conn, work.id) == work
    assert svc.get_by_reference(conn, "RW-2025-00001") == work
    with pytest.raises(RoadworkNotFoundError):
        svc.history(conn, 999)


def test_the_whole_lifecycle_with_reported_times(conn: Conn) -> None:
    clock = Clock()
    svc = service(clock)
    work = svc.create(conn, make_spec(), PROMOTER)
    _approve(svc, conn, work.id)
    svc.transition(conn, work.id, Status.SCHEDULED, PROMOTER)
    clock.now = T0 + timedelta(hours=3)
    started = svc.report_start(conn, work.id, PROMOTER, at=T0 + timedelta(minutes=20))
    assert (started.status, started.actual_start) == (Status.IN_PROGRESS,
                                                      T0 + timedelta(minutes=20))
    clock.now = T0 + timedelta(days=9)
    with pytest.raises(InvalidPeriodError, match=r"at: .* is in the future"):
        svc.report_end(conn, work.id, PROMOTER, at=T0 + timedelta(days=10))
    with pytest.raises(InvalidPeriodError, match="is before the reported start"):
        svc.report_end(conn, work.id, PROMOTER, at=T0)
    done = svc.report_end(conn, work.id, PROMOTER)
    assert (done.status, done.actual_end, done.version) == (Status.COMPLETED, clock.now, 7)
    assert done.effective_period.end == clock.now
    history = svc.history(conn, work.id)
    assert [(h.action, h.actor) for h in history] == [
        ("created", "Anna Schmidt"),
        ("transition:submit", "Anna Schmidt"),
        ("transition:start_consultation", "Jonas Weber"),
        ("transition:approve", "Jonas Weber"),
        ("transition:schedule", "Anna Schmidt"),
        ("transition:start", "Anna Schmidt"),
        ("transition:complete", "Anna Schmidt"),
    ]
    assert history[3].note == "mit Auflagen"
    assert history[5].changes == {"actual_start": (T0 + timedelta(minutes=20)).isoformat()}
    with pytest.raises(NotEditableError, match="completed, a final state"):
        svc.update(conn, work.id, make_spec(), PROMOTER)


def test_emergency_works_start_at_once(conn: Conn) -> None:
    svc = service()
    work = svc.create(conn, make_spec(category=Category.EMERGENCY, start=NOW - timedelta(hours=5)),
                      PROMOTER)
    started = svc.report_start(conn, work.id, PROMOTER, at=NOW - timedelta(hours=5))
    assert started.status is Status.IN_PROGRESS
    standard = svc.create(conn, make_spec(y=300), PROMOTER)
    with pytest.raises(IllegalTransitionError, match="only emergency works may start"):
        svc.report_start(conn, standard.id, PROMOTER)


def test_illegal_and_forbidden_transitions_change_nothing(conn: Conn) -> None:
    svc = service()
    work = svc.create(conn, make_spec(), PROMOTER)
    before = _counts(conn)
    with pytest.raises(IllegalTransitionError, match="cannot go from draft to approved"):
        svc.transition(conn, work.id, Status.APPROVED, AUTHORITY)
    svc.submit(conn, work.id, PROMOTER)
    with pytest.raises(NotPermittedError, match="only the road authority may approve"):
        svc.transition(conn, work.id, Status.APPROVED, PROMOTER)
    with pytest.raises(ValueError, match="'finished' is not a valid Status"):
        svc.transition(conn, work.id, "finished", AUTHORITY)  # type: ignore[arg-type]
    after = _counts(conn)
    assert after["roadwork_audit"] == before["roadwork_audit"] + 1  # only the submit
    assert svc.get(conn, work.id).status is Status.SUBMITTED


def test_update_records_what_changed(conn: Conn) -> None:
    svc = service()
    work = svc.create(conn, make_spec(), PROMOTER)
    spec = with_(work.spec, planned_end=work.spec.planned_end + timedelta(days=7),
                 measures=frozenset({Measure.PARKING_SUSPENDED}))
    updated = svc.update(conn, work.id, spec, PROMOTER, expected_version=1, note="länger")
    assert updated.version == 2
    last = svc.history(conn, work.id)[-1]
    assert last.action == "updated"
    assert set(last.changes) == {"planned_end", "measures"}
    assert last.changes["measures"] == {"from": [], "to": ["parking_suspended"]}
    # the same content again: no new version, no audit entry
    assert svc.update(conn, work.id, spec, PROMOTER).version == 2
    assert len(svc.history(conn, work.id)) == 2
    with pytest.raises(StaleVersionError, match="you edited version 1, the current version is 2"):
        svc.update(conn, work.id, make_spec(days=3), PROMOTER, expected_version=1)


def test_coordination_runs_on_submit_and_on_every_change(conn: Conn) -> None:
    svc = service()
    gas = svc.create(conn, make_spec(), PROMOTER)
    fibre = svc.create(conn, make_spec(x=30, promoter="Glasfaser Plus", sector=Sector.TELECOM),
                       OTHER_PROMOTER)
    svc.submit(conn, gas.id, PROMOTER)
    assert svc.findings(conn) == []  # the other one is a draft: private to its promoter
    svc.submit(conn, fibre.id, OTHER_PROMOTER)
    [clash] = svc.findings(conn)
    assert (clash.kind, clash.status, clash.reference_a, clash.reference_b) == (
        FindingKind.CLASH, FindingStatus.OPEN, gas.reference, fibre.reference)
    assert "überschneiden sich räumlich" in clash.message
    # moved 60 days later: no clash any more, but a chance to dig once
    later = with_(svc.get(conn, fibre.id).spec, planned_start=T0 + timedelta(days=60),
                  planned_end=T0 + timedelta(days=65))
    svc.update(conn, fibre.id, later, OTHER_PROMOTER)
    current = svc.findings(conn, statuses=[FindingStatus.OPEN])
    assert [f.kind for f in current] == [FindingKind.DIG_ONCE]
    assert svc.findings(conn, statuses=[FindingStatus.OBSOLETE])[0].id == clash.id
    # cancelled: nothing left to coordinate
    svc.transition(conn, fibre.id, Status.CANCELLED, OTHER_PROMOTER)
    assert svc.findings(conn, statuses=[FindingStatus.OPEN]) == []


def test_decide_a_finding(conn: Conn) -> None:
    svc = service()
    a = svc.create(conn, make_spec(), PROMOTER)
    b = svc.create(conn, make_spec(x=30, promoter="Glasfaser Plus"), OTHER_PROMOTER)
    svc.submit(conn, a.id, PROMOTER)
    svc.submit(conn, b.id, OTHER_PROMOTER)
    [finding] = svc.findings(conn)
    with pytest.raises(InvalidPayloadError, match="note: explain the decision"):
        svc.decide_finding(conn, finding.id, Decision.ACCEPTED, "  ", AUTHORITY)
    decided = svc.decide_finding(conn, finding.id, Decision.RESOLVED,
                                 "Gemeinsamer Graben vereinbart", AUTHORITY)
    assert (decided.status, decided.decision_note, decided.decided_by, decided.decided_at) == (
        FindingStatus.RESOLVED, "Gemeinsamer Graben vereinbart",
        "Jonas Weber (Straßenverkehrsbehörde)", NOW)
    for work in (a, b):
        last = svc.history(conn, work.id)[-1]
        assert (last.action, last.note) == ("finding:resolved", "Gemeinsamer Graben vereinbart")
    svc.transition(conn, b.id, Status.CANCELLED, OTHER_PROMOTER)
    with pytest.raises(InvalidStateError, match=f"finding {finding.id} is obsolete"):
        svc.decide_finding(conn, finding.id, Decision.ACCEPTED, "doch", AUTHORITY)


def test_preview_stores_nothing(conn: Conn) -> None:
    svc = service()
    a = svc.create(conn, make_spec(), PROMOTER)
    svc.submit(conn, a.id, PROMOTER)
    before = _counts(conn)
    [found] = svc.preview(conn, make_spec(x=20, promoter="Glasfaser Plus"))
    assert (found.kind, found.work_a, found.work_b) == (FindingKind.CLASH, 0, a.id)
    assert found.location is not None
    assert FRAME.bounds.contains(found.location)  # lon/lat, not metres
    assert _counts(conn) == before


def test_resurfacing_rechecks_the_works_there(conn: Conn) -> None:
    svc = service()
    work = svc.create(conn, make_spec(), PROMOTER)
    svc.submit(conn, work.id, PROMOTER)
    segment = svc.add_resurfaced_segment(conn, "Teststraße", to_lonlat(street_line(-10, 0, 90)),
                                         date(2024, 6, 1), AUTHORITY, note="Deckschicht")
    [warning] = svc.findings(conn)
    assert (warning.kind, warning.segment_id, warning.work_b) == (
        FindingKind.PROTECTION_PERIOD, segment.id, None)
    assert "neu asphaltiert" in warning.message
    with pytest.raises(InvalidGeometryError, match="geometry: expected LineString, got Polygon"):
        svc.add_resurfaced_segment(conn, "X", work.spec.footprint, date(2024, 1, 1), AUTHORITY)


def test_public_works(conn: Conn) -> None:
    svc = service()
    shown = svc.create(conn, make_spec(street="Frankfurter Straße"), PROMOTER)
    hidden = svc.create(conn, make_spec(y=200, is_public=False), PROMOTER)
    draft = svc.create(conn, make_spec(y=400), PROMOTER)
    for w in (shown, hidden):
        _approve(svc, conn, w.id)
    assert [w.id for w in svc.public_works(conn)] == [shown.id]
    assert [w.id for w in svc.public_works(conn, street="Frankfurter Str.")] == [shown.id]
    assert svc.public_works(conn, street="Bahnhofstraße") == []
    assert svc.public_works(conn, now=T0 + timedelta(days=30)) == []  # over
    assert draft.id not in [w.id for w in svc.public_works(conn)]


# -- nothing half-written ----------------------------------------------------------------


@pytest.mark.parametrize(("bad", "error"), [
    ({"footprint": Polygon([(24.94, 60.17), (24.942, 60.172), (24.942, 60.17),
                            (24.94, 60.172), (24.94, 60.17)])}, InvalidGeometryError),
    ({"footprint": Polygon()}, InvalidGeometryError),
    ({"planned_end": T0 - timedelta(days=1)}, InvalidPeriodError),
    ({"sector": "telekom"}, InvalidPayloadError),
])
def test_invalid_input_writes_nothing(conn: Conn, bad: dict[str, Any],
                                      error: type[Exception]) -> None:
    svc = service()
    work = svc.create(conn, make_spec(), PROMOTER)
    before = _counts(conn)
    with pytest.raises(error):
        svc.create(conn, with_(make_spec(y=100), **bad), PROMOTER)
    with pytest.raises(error):
        svc.update(conn, work.id, with_(work.spec, **bad), PROMOTER)
    assert _counts(conn) == before
    assert svc.get(conn, work.id) == work


def test_a_failure_midway_rolls_everything_back(conn: Conn,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    svc = service()
    a = svc.create(conn, make_spec(), PROMOTER)
    b = svc.create(conn, make_spec(x=30, promoter="Glasfaser Plus"), OTHER_PROMOTER)
    svc.submit(conn, a.id, PROMOTER)
    before = _counts(conn)

    def broken(*args: object, **kwargs: object) -> list[int]:
        raise RuntimeError("disk full")

    # the status change and the audit row are written before coordination fails
    monkeypatch.setattr(store_coordination, "sync_findings", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        svc.submit(conn, b.id, OTHER_PROMOTER)
    with pytest.raises(RuntimeError, match="disk full"):
        svc.update(conn, a.id, make_spec(days=20), PROMOTER)
    assert _counts(conn) == before
    assert svc.get(conn, b.id).status is Status.DRAFT
    assert svc.get(conn, a.id).version == a.version + 1  # only the earlier submit
    monkeypatch.undo()
    svc.submit(conn, b.id, OTHER_PROMOTER)
    assert len(svc.findings(conn)) == 1


def test_actor_is_required(conn: Conn) -> None:
    with pytest.raises(InvalidPayloadError, match="actor: name and organisation"):
        service().create(conn, make_spec(), Actor("", "Stadtwerke", Role.PROMOTER))


# -- permits: edits after approval and plausible dates on site (issue 14) ----------------------


def _permitted(svc: Any, conn: Conn) -> Any:
    work = svc.create(conn, make_spec(street="Permitstraße"), PROMOTER)
    svc.submit(conn, work.id, PROMOTER)
    return svc.transition(conn, work.id, Status.APPROVED, AUTHORITY)


def test_a_promoter_editing_an_approved_work_sends_it_back_to_review(conn: Conn) -> None:
    svc = service()
    work = _permitted(svc, conn)
    assert work.is_public
    renamed = svc.update(conn, work.id, with_(work.spec, title="Ganz andere Arbeiten"),
                         PROMOTER)
    assert renamed.status is Status.SUBMITTED and not renamed.is_public
    last = svc.history(conn, work.id)[-1]
    assert (last.action, last.from_status, last.to_status) == (
        "updated", Status.APPROVED, Status.SUBMITTED
    )
    assert last.actor == PROMOTER.name and "title" in last.changes
    # approved again, the promoter's own contacts keep the permit
    work = svc.transition(conn, work.id, Status.APPROVED, AUTHORITY)
    contact = svc.update(conn, work.id, with_(work.spec, public_contact="0800 123"), PROMOTER)
    assert contact.status is Status.APPROVED


def test_on_site_only_the_office_changes_what_the_permit_covers(conn: Conn) -> None:
    svc = service(Clock(T0 + timedelta(hours=1)))
    work = _permitted(svc, conn)
    work = svc.transition(conn, work.id, Status.SCHEDULED, PROMOTER)
    work = svc.report_start(conn, work.id, PROMOTER)
    with pytest.raises(NotEditableError, match="coordinating office"):
        svc.update(conn, work.id, with_(work.spec, title="Heimlich geändert"), PROMOTER)
    assert svc.get(conn, work.id).spec.title == work.spec.title
    longer = with_(work.spec, planned_end=work.spec.planned_end + timedelta(days=5))
    corrected = svc.update(conn, work.id, longer, AUTHORITY, note="Verlängerung genehmigt")
    assert corrected.status is Status.IN_PROGRESS and corrected.is_public
    last = svc.history(conn, work.id)[-1]
    assert last.actor == AUTHORITY.name and "planned_end" in last.changes


def test_a_start_before_the_work_was_registered_is_refused(conn: Conn) -> None:
    """An actual start of 1900-01-01 was accepted and shown publicly (issue 14)."""
    clock = Clock(T0 + timedelta(hours=1))
    svc = service(clock)
    work = _permitted(svc, conn)
    work = svc.transition(conn, work.id, Status.SCHEDULED, PROMOTER)
    for at in (datetime(1900, 1, 1, tzinfo=UTC), work.created_at - timedelta(minutes=1)):
        with pytest.raises(InvalidPeriodError, match="before the work was registered"):
            svc.report_start(conn, work.id, PROMOTER, at=at)
    assert svc.get(conn, work.id).status is Status.SCHEDULED
    # an emergency repair is registered after it began: up to a week back
    spec = make_spec(street="Notstraße", x=300.0, category=Category.EMERGENCY,
                     start=clock.now - timedelta(days=2))
    emergency = svc.create(conn, spec, PROMOTER)
    started = svc.report_start(conn, emergency.id, PROMOTER, at=clock.now - timedelta(days=2))
    assert started.status is Status.IN_PROGRESS
    other = svc.create(conn, with_(spec, title="Zweite Notmaßnahme"), PROMOTER)
    with pytest.raises(InvalidPeriodError, match="before the work was registered"):
        svc.report_start(conn, other.id, PROMOTER, at=clock.now - timedelta(days=8))
