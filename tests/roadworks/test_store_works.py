"""The SQL of works, their streets and audit (store_works) against the real PostgreSQL
with PostGIS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cityops.roadworks import store_works as store
from cityops.roadworks.errors import DuplicateReferenceError, RoadworkNotFoundError
from cityops.roadworks.geometry import BBox
from cityops.roadworks.model import Measure, Period, Sector, Status, Street
from tests.roadworks.conftest import Conn
from tests.roadworks.factories import (
    AT,
    FRAME,
    PROMOTER,
    T0,
    insert_work,
    make_spec,
    street_line,
    to_lonlat,
)


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
    work_id = store.insert_work(conn, reference="RW-2025-00042", status=Status.DRAFT, spec=spec,
                                area_m2=480.0, district="B3", actor=PROMOTER, at=AT)
    work = store.get_work(conn, work_id)
    assert work.spec == spec  # geometries come back exactly (WKB both ways)
    assert (work.reference, work.status, work.version, work.district) == (
        "RW-2025-00042", Status.DRAFT, 1, "B3")
    assert (work.created_at, work.updated_at, work.created_by) == (AT, AT, "Anna Schmidt")
    assert work.actual_start is None
    assert store.get_work_by_reference(conn, "RW-2025-00042") == work
    with pytest.raises(RoadworkNotFoundError, match="no roadwork with id 999"):
        store.get_work(conn, 999)
    with pytest.raises(RoadworkNotFoundError, match="no roadwork with reference 'RW-X'"):
        store.get_work_by_reference(conn, "RW-X")


def test_update_bumps_the_version_and_replaces_streets(conn: Conn) -> None:
    work_id = insert_work(conn)
    later = AT + timedelta(hours=1)
    new = make_spec(street="Neue Straße", sector=Sector.WATER)
    assert store.update_work(conn, work_id, spec=new, area_m2=1.0, district="C1", at=later) == 2
    assert store.update_work(conn, work_id, status=Status.IN_PROGRESS, actual_start=later,
                             at=later) == 3
    work = store.get_work(conn, work_id)
    assert work.spec == new
    assert (work.status, work.actual_start, work.district, work.updated_at) == (
        Status.IN_PROGRESS, later, "C1", later)
    with pytest.raises(RoadworkNotFoundError):
        store.update_work(conn, 999, status=Status.APPROVED, at=later)


def test_references_are_unique(conn: Conn) -> None:
    insert_work(conn)
    with pytest.raises(DuplicateReferenceError, match="reference 'RW-2025-00001' is already taken"):
        insert_work(conn)
    assert store.next_reference(conn, datetime(2025, 12, 31, 23, 30, tzinfo=UTC)) == \
        "RW-2026-00001"  # Berlin's new year


def test_filters(conn: Conn) -> None:
    a = insert_work(conn, "RW-A", street="Frankfurter Straße", status=Status.SCHEDULED)
    b = insert_work(conn, "RW-B", y=300, start=T0 + timedelta(days=30), status=Status.APPROVED,
                sector=Sector.WATER, promoter="Glasfaser Plus")
    c = insert_work(conn, "RW-C", y=600, status=Status.DRAFT)
    insert_work(conn, "RW-D", y=900, status=Status.SCHEDULED, is_public=False)

    def ids(**kw: object) -> list[int]:
        return [w.id for w in store.list_works(conn, store.WorkFilter(**kw))]  # type: ignore[arg-type]

    assert ids() == [a, c, 4, b]  # by effective start, then id
    assert ids(public_only=True) == [a, b]
    assert ids(street="frankfurter str.") == [a]
    assert ids(statuses=frozenset({Status.DRAFT})) == [c]
    assert ids(active=Period(T0 + timedelta(days=20), T0 + timedelta(days=40))) == [b]
    assert ids(starts_in=Period(T0, T0 + timedelta(hours=1))) == [a, c, 4]
    assert ids(promoter="GLASFASER PLUS") == [b]
    assert ids(sector=Sector.WATER) == [b]
    work_a = store.get_work(conn, a)
    x0, y0, x1, y1 = work_a.spec.footprint.bounds
    assert ids(bbox=BBox(x0, y0, x1, y1)) == [a]
    assert ids(limit=2, offset=1) == [c, 4]
    assert ids(reference_prefix="RW-") == [a, c, 4, b]
    assert store.count_works(conn, store.WorkFilter(public_only=True)) == 2


def test_candidates_are_near_in_space_and_time(conn: Conn) -> None:
    a = insert_work(conn, "RW-A")
    near = insert_work(conn, "RW-B", y=100, start=T0 + timedelta(days=100))
    insert_work(conn, "RW-C", y=700)  # too far
    insert_work(conn, "RW-D", y=50, start=T0 + timedelta(days=400))  # too late
    insert_work(conn, "RW-E", y=20, status=Status.DRAFT)  # not coordinated
    work = store.get_work(conn, a)
    window = Period(T0 - timedelta(days=180), T0 + timedelta(days=190))
    assert [w.id for w in store.candidates(conn, work, 450.0, window)] == [near]


def test_audit(conn: Conn) -> None:
    work_id = insert_work(conn)
    store.insert_audit(conn, work_id, actor=PROMOTER, at=AT, action="created",
                       to_status=Status.DRAFT, changes={"title": "x"})
    store.insert_audit(conn, work_id, actor=PROMOTER, at=AT, action="transition:submit",
                       from_status=Status.DRAFT, to_status=Status.SUBMITTED, note="bitte")
    history = store.audit_history(conn, work_id)
    assert [(h.action, h.from_status, h.to_status, h.note) for h in history] == [
        ("created", None, Status.DRAFT, None),
        ("transition:submit", Status.DRAFT, Status.SUBMITTED, "bitte"),
    ]
    assert history[0].changes == {"title": "x"}
    assert (history[0].actor, history[0].organisation, history[0].role.value) == (
        "Anna Schmidt", "Stadtwerke", "promoter")


def test_frame_is_the_demo_city() -> None:
    assert FRAME.bounds.contains(make_spec().footprint)
