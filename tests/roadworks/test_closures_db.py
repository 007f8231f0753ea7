"""The registry keeps `street_closures` in step: rows added, changed and removed by the
service's writes in their own transaction, rebuilt by `cityops roadworks sync-closures`,
and produced by the demo seed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from shapely import from_wkb
from shapely.geometry import MultiLineString

from cityops.api.cli import main
from cityops.ingest.db import connect
from cityops.roadworks.closures import CLOSING_STATUSES, SOURCE, closure_for, rebuild_closures
from cityops.roadworks.model import Measure, Status
from cityops.roadworks.seed import DEMO_WORKS
from cityops.roadworks.service import RoadworksService
from cityops.routing.repository import closures_stamp, load_closures
from tests.roadworks.conftest import Conn, Seeded
from tests.roadworks.factories import (
    AUTHORITY,
    PROMOTER,
    T0,
    Clock,
    make_spec,
    service,
    with_,
)

M = Measure


@dataclass(frozen=True)
class Row:
    closure_id: str
    geom: Any
    buffer_m: float
    slowdown: float | None
    valid_from: datetime
    valid_to: datetime
    source: str
    reason: str
    updated_at: datetime


def _rows(conn: Conn) -> dict[str, Row]:
    rows = conn.execute(
        "SELECT closure_id, ST_AsBinary(geom), buffer_m, slowdown, valid_from, valid_to, "
        "source, reason, updated_at FROM street_closures ORDER BY closure_id"
    ).fetchall()
    out = {}
    for cid, wkb, buf, slow, vf, vt, src, reason, upd in rows:
        assert isinstance(wkb, bytes) and isinstance(cid, str)
        out[cid] = Row(
            cid,
            from_wkb(wkb),
            float(str(buf)),
            None if slow is None else float(str(slow)),
            vf,
            vt,
            str(src),
            str(reason),
            upd,
        )  # type: ignore[arg-type]
    return out


@pytest.fixture
def db(conn: Conn) -> Conn:
    """The emptied registry of this test, with no street closures either."""
    conn.execute("TRUNCATE street_closures")
    return conn


def _approved(svc: RoadworksService, conn: Conn, *measures: Measure, **kw: Any) -> int:
    before = _rows(conn)
    kw.setdefault("street", "Hauptstraße")
    work = svc.create(conn, make_spec(measures=measures, **kw), PROMOTER)
    assert _rows(conn) == before, "a draft closes nothing"
    svc.submit(conn, work.id, PROMOTER)
    svc.transition(conn, work.id, Status.IN_CONSULTATION, AUTHORITY)
    assert _rows(conn) == before, "a work under review closes nothing"
    svc.transition(conn, work.id, Status.APPROVED, AUTHORITY)
    return work.id


def test_the_lifecycle_adds_updates_and_removes_the_row(db: Conn) -> None:
    clock = Clock()
    svc = service(clock)
    work_id = _approved(svc, db, M.ROAD_CLOSURE, M.PARKING_SUSPENDED)
    work = svc.get(db, work_id)
    [row] = _rows(db).values()
    assert row.closure_id == f"roadwork:{work.reference}" and row.source == SOURCE
    assert row.slowdown is None
    assert (row.valid_from, row.valid_to) == (T0, work.spec.planned_end)
    assert row.geom.equals(MultiLineString([s.line for s in work.spec.streets]))
    assert work.reference in row.reason and "Hauptstraße" in row.reason
    # what routing reads is exactly what the pure rule says
    assert load_closures(db, valid_at_or_after=T0) == [closure_for(work)]

    svc.transition(db, work_id, Status.SCHEDULED, PROMOTER)
    assert _rows(db)[row.closure_id] == row, "same closure: not touched (no re-plan)"

    clock.now = T0 + timedelta(days=1, hours=2)
    svc.report_start(db, work_id, PROMOTER, at=T0 + timedelta(days=1))
    started = _rows(db)[row.closure_id]
    assert started.valid_from == T0 + timedelta(days=1)
    assert started.updated_at > row.updated_at

    clock.now = T0 + timedelta(days=3)
    svc.report_end(db, work_id, PROMOTER)
    assert _rows(db) == {}, "a completed work reopens the street"


def test_an_edit_changes_the_row_only_when_the_closure_changes(db: Conn) -> None:
    # Corrections by the coordinating office: they keep the permit (a promoter's change of
    # what the permit covers sends the work back to review, tests/roadworks/test_service.py).
    svc = service()
    work_id = _approved(svc, db, M.ROAD_CLOSURE)
    before = next(iter(_rows(db).values()))
    stamp = closures_stamp(db)
    work = svc.get(db, work_id)
    svc.update(db, work_id, with_(work.spec, description="neu beschrieben"), AUTHORITY)
    assert _rows(db) == {before.closure_id: before}
    assert closures_stamp(db) == stamp

    work = svc.get(db, work_id)
    svc.update(
        db,
        work_id,
        with_(work.spec, measures=frozenset({M.LANE_CLOSURE}), lanes_affected=1),
        AUTHORITY,
    )
    slowed = _rows(db)[before.closure_id]
    assert slowed.slowdown == 1.5 and slowed.updated_at > before.updated_at
    assert closures_stamp(db) != stamp

    work = svc.get(db, work_id)
    longer = with_(work.spec, planned_end=work.spec.planned_end + timedelta(days=7))
    svc.update(db, work_id, longer, AUTHORITY)
    assert _rows(db)[before.closure_id].valid_to == longer.planned_end

    work = svc.get(db, work_id)
    svc.update(
        db,
        work_id,
        with_(work.spec, measures=frozenset({M.SIDEWALK_CLOSURE}), lanes_affected=0),
        AUTHORITY,
    )
    assert _rows(db) == {}, "a sidewalk closure does not affect trucks"


@pytest.mark.parametrize(
    ("target", "actor"), [(Status.CANCELLED, PROMOTER), (Status.REVOKED, AUTHORITY)]
)
def test_cancel_and_revoke_remove_the_row(db: Conn, target: Status, actor: Any) -> None:
    svc = service()
    work_id = _approved(svc, db, M.ALTERNATING_ONE_WAY)
    assert [r.slowdown for r in _rows(db).values()] == [2.0]
    svc.transition(db, work_id, target, actor)
    assert _rows(db) == {}


def test_a_refused_work_never_closes(db: Conn) -> None:
    svc = service()
    work = svc.create(db, make_spec(measures=(M.ROAD_CLOSURE,)), PROMOTER)
    svc.submit(db, work.id, PROMOTER)
    svc.transition(db, work.id, Status.REFUSED, AUTHORITY)
    assert _rows(db) == {}


def test_the_row_is_written_in_the_registry_transaction(db: Conn) -> None:
    svc = service()
    work = svc.create(db, make_spec(measures=(M.ROAD_CLOSURE,)), PROMOTER)
    svc.submit(db, work.id, PROMOTER)
    seen: list[int] = []

    def approve_then_fail() -> None:
        with db.transaction():
            svc.transition(db, work.id, Status.APPROVED, AUTHORITY)
            seen.append(len(_rows(db)))
            raise RuntimeError("the caller's outer transaction fails")

    with pytest.raises(RuntimeError):
        approve_then_fail()
    assert seen == [1]
    assert _rows(db) == {}
    assert svc.get(db, work.id).status is Status.SUBMITTED


def test_rebuild_repairs_and_is_idempotent(db: Conn) -> None:
    svc = service()
    keep = _approved(svc, db, M.ROAD_CLOSURE)
    other = _approved(svc, db, M.TEMPORARY_SIGNALS, x=400.0, street="Nebenstraße")
    good = _rows(db)
    assert len(good) == 2
    first, second = sorted(good)
    db.execute("DELETE FROM street_closures WHERE closure_id = %s", (first,))
    db.execute(
        "UPDATE street_closures SET slowdown = 3, reason = 'edited by hand' WHERE closure_id = %s",
        (second,),
    )
    db.execute(
        "INSERT INTO street_closures (closure_id, geom, valid_from, valid_to, source, reason) "
        "VALUES ('roadwork:RW-1999-00001', ST_SetSRID(ST_MakePoint(24.94, 60.17), 4326), "
        "now(), now() + interval '1 day', 'roadworks', 'gone'), "
        "('police:1', ST_SetSRID(ST_MakePoint(24.94, 60.17), 4326), now(), "
        "now() + interval '1 day', 'police', 'demonstration')"
    )
    done = rebuild_closures(db)
    assert (done.added, done.updated, done.removed, done.unchanged) == (1, 1, 1, 0)
    after = _rows(db)
    assert set(after) == {first, second, "police:1"}, "other sources are left alone"
    for cid in (first, second):
        assert (
            after[cid].geom.wkb,
            after[cid].slowdown,
            after[cid].valid_from,
            after[cid].valid_to,
            after[cid].reason,
        ) == (
            good[cid].geom.wkb,
            good[cid].slowdown,
            good[cid].valid_from,
            good[cid].valid_to,
            good[cid].reason,
        )
    again = rebuild_closures(db)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 2)
    assert _rows(db) == after
    assert {keep, other} == {w.id for w in svc.list_works(db)}


def test_cli_sync_closures(
    db: Conn, rw_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _approved(service(), db, M.LANE_CLOSURE)
    db.execute("TRUNCATE street_closures")
    monkeypatch.setenv("CITYOPS_DATABASE_URL", rw_url)
    assert main(["roadworks", "sync-closures"]) == 0
    assert "1 row(s); 1 added, 0 updated, 0 removed, 0 unchanged" in capsys.readouterr().out
    assert [r.slowdown for r in _rows(db).values()] == [1.5]
    assert main(["roadworks", "sync-closures"]) == 0
    assert "0 added, 0 updated, 0 removed, 1 unchanged" in capsys.readouterr().out


def test_the_demo_seed_produces_closures(seeded: Seeded) -> None:
    with connect(seeded.url, autocommit=True) as conn:
        rows = _rows(conn)
        sync = rebuild_closures(conn)
    refs = seeded.report.references
    expected = {
        f"roadwork:{refs[w.key]}"
        for w in DEMO_WORKS
        if w.status in CLOSING_STATUSES
        and w.measures
        & {M.ROAD_CLOSURE, M.LANE_CLOSURE, M.ALTERNATING_ONE_WAY, M.TEMPORARY_SIGNALS}
    }
    assert set(rows) == expected
    closed = {cid for cid, r in rows.items() if r.slowdown is None}
    assert f"roadwork:{refs['closure-kaleva']}" in closed  # in progress on the seed day
    assert f"roadwork:{refs['resurface-pohjois']}" in closed
    assert f"roadwork:{refs['sewer-korkea']}" in rows  # alternating one-way
    assert rows[f"roadwork:{refs['sewer-korkea']}"].slowdown == 2.0
    # the seed went through the service: a rebuild finds nothing to change
    assert (sync.added, sync.updated, sync.removed, sync.unchanged) == (0, 0, 0, len(rows))


def test_a_closure_row_is_what_routing_can_load(db: Conn) -> None:
    svc = service()
    _approved(svc, db, M.ROAD_CLOSURE)
    with psycopg.connect(db.info.dsn) as other:  # another session sees the committed row
        [closure] = load_closures(other, valid_at_or_after=T0)
    assert closure.slowdown is None and closure.active_at(T0 + timedelta(hours=1))
