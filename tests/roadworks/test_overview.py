"""The daily construction overview: content for a date, German printable HTML, GeoJSON,
snapshots kept in the database and as files."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from cityops.roadworks import store_overview
from cityops.roadworks.feeds.common import FeedContext
from cityops.roadworks.labels import BERLIN
from cityops.roadworks.model import Measure, Status
from cityops.roadworks.overview import (
    build_overview,
    day_window,
    overview_geojson,
    publish_daily,
    render_html,
)
from tests.roadworks.conftest import Conn
from tests.roadworks.factories import (
    AUTHORITY,
    PROMOTER,
    Clock,
    make_spec,
    make_work,
    service,
)
from tests.roadworks.schemas import errors, feature_collection_validator

DAY = date(2025, 3, 10)  # a Monday
CTX = FeedContext(generated_at=datetime(2025, 3, 10, 5, 30, tzinfo=UTC),
                  publisher="Stadt Test")


def _at(day_offset: int, hour: int = 7) -> datetime:
    return datetime(2025, 3, 10, hour, tzinfo=BERLIN) + timedelta(days=day_offset)


def _work(id: int, start: int, days: int, *, status: Status = Status.SCHEDULED,
          district: str = "B2", **kw: object) -> object:
    spec = make_spec(start=_at(start), days=days, street=f"Straße {id}", y=100 * id, **kw)  # type: ignore[arg-type]
    return make_work(spec, id=id, status=status, district=district)


def test_what_is_active_and_what_comes() -> None:
    works = [
        _work(1, -3, 5),  # active
        _work(2, 0, 1, district="A10"),  # starts today: active
        _work(3, 1, 3, district="A2"),  # tomorrow: upcoming
        _work(4, 14, 3),  # in 14 days: upcoming
        _work(5, 15, 3),  # beyond the horizon
        _work(6, -10, 5),  # over
        _work(7, -1, 3, status=Status.SUBMITTED),  # not approved: not public
        _work(8, -1, 3, is_public=False),  # not public
        _work(9, -1, 3, status=Status.DRAFT),
    ]
    late = make_work(make_spec(start=_at(-20), days=5, y=1000), id=10,
                     status=Status.IN_PROGRESS, actual_start=_at(-20), district="C1")
    done = make_work(make_spec(start=_at(-5), days=10, y=1100), id=11, status=Status.COMPLETED,
                     actual_start=_at(-5), actual_end=_at(-1, 16))
    done_today = replace(done, id=12, reference="RW-2025-00012", actual_end=_at(0, 12))
    ov = build_overview([*works, late, done, done_today], DAY, generated_at=CTX.generated_at)  # type: ignore[list-item]
    assert [w.id for w in ov.active] == [2, 12, 1, 10]  # by district (A10, B2, C1), start
    assert [g.district for g in ov.districts] == ["A2", "A10", "B2", "C1"]
    assert [w.id for w in ov.upcoming] == [3, 4]
    assert ov.overdue == {10}
    assert day_window(DAY).start == datetime(2025, 3, 10, tzinfo=BERLIN)


def test_the_html_is_german_and_printable() -> None:
    work = make_work(make_spec(
        start=_at(-1), days=5, title="Kanal <Abschnitt 2>",
        measures=(Measure.LANE_CLOSURE, Measure.PARKING_SUSPENDED), lanes_affected=1,
        detour_description="Umleitung über die Ringstraße", bus_lines=("103",),
        working_hours="Mo–Fr 07:00–17:00"))
    soon = make_work(make_spec(start=_at(3), days=2, y=300), id=2, district="A1")
    ov = build_overview([work, soon], DAY, generated_at=CTX.generated_at)
    page = render_html(ov, CTX)
    assert page.startswith("<!DOCTYPE html>\n<html lang=\"de\">")
    assert "<title>Baustellenübersicht 10.03.2025</title>" in page
    assert "Stand: Mo, 10.03.2025 · erstellt am 10.03.2025, 06:30 Uhr · Stadt Test" in page
    assert "<h2>Heute aktiv (1)</h2>" in page
    assert "<h2>Beginn in den nächsten 14 Tagen (1)</h2>" in page
    assert "<h3>Bezirk B2</h3>" in page
    assert "Kanal &lt;Abschnitt 2&gt;" in page  # escaped
    assert "<Abschnitt" not in page
    assert "Fahrstreifensperrung (1 Fahrstreifen)" in page
    assert "Buslinie 103 betroffen" in page
    assert "Umleitung über die Ringstraße" in page
    assert "09.03.2025 bis 14.03.2025" in page
    assert "@media print" in page
    assert "Europe/Berlin" in page
    empty = render_html(build_overview([], DAY, generated_at=CTX.generated_at), CTX)
    assert "Keine Baustellen aktiv." in empty


def test_the_geojson_validates() -> None:
    works = [make_work(make_spec(start=_at(-1), days=5)),
             make_work(make_spec(start=_at(3), days=2, y=300), id=2)]
    data = overview_geojson(build_overview(works, DAY, generated_at=CTX.generated_at), CTX)
    assert errors(feature_collection_validator(), data) == []
    assert [f["properties"]["section"] for f in data["features"]] == ["active", "upcoming"]
    assert data["day"] == "2025-03-10"


def test_publish_keeps_snapshots(conn: Conn, tmp_path: Path) -> None:
    clock = Clock(_at(-30))
    svc = service(clock)
    for i, (start, title) in enumerate([(-2, "Gas"), (5, "Wasser"), (40, "Später")]):
        work = svc.create(conn, make_spec(start=_at(start), days=6, y=200 * i, title=title),
                          PROMOTER)
        svc.submit(conn, work.id, PROMOTER)
        svc.transition(conn, work.id, Status.APPROVED, AUTHORITY)
    out = tmp_path / "overviews"
    first = publish_daily(conn, DAY, out, CTX)
    assert [w.spec.title for w in first.overview.active] == ["Gas"]
    assert [w.spec.title for w in first.overview.upcoming] == ["Wasser"]
    assert first.html_path == out / "2025-03-10" / "baustellen-2025-03-10.html"
    page = first.html_path.read_text(encoding="utf-8")
    assert "Gas" in page
    data = json.loads(first.geojson_path.read_text(encoding="utf-8"))
    assert errors(feature_collection_validator(), data) == []
    assert "2025-03-10/baustellen-2025-03-10.html" in (out / "index.html").read_text()
    # the works change; the published overview of that day stays readable as it was
    gas = svc.list_works(conn)[0]
    svc.transition(conn, gas.id, Status.REVOKED, AUTHORITY)
    snap = store_overview.get_overview(conn, DAY)
    assert snap is not None
    assert (snap.id, snap.html, snap.geojson) == (first.snapshot_id, page, data)
    # publishing again keeps both; the newest is the day's overview
    later = replace(CTX, generated_at=CTX.generated_at + timedelta(hours=2))
    second = publish_daily(conn, DAY, out, later)
    assert second.overview.active == []
    newest = store_overview.get_overview(conn, DAY)
    assert newest is not None
    assert newest.id == second.snapshot_id
    assert conn.execute("SELECT count(*) FROM roadwork_overviews").fetchone() == (2,)
    other = publish_daily(conn, DAY + timedelta(days=1), out, later)
    assert other.html_path.exists()
    assert first.html_path.exists()
    assert [d for d, *_ in store_overview.list_overviews(conn)] == [DAY + timedelta(days=1), DAY]
