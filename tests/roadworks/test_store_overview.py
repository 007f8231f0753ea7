"""The daily overview's snapshots (store_overview) against the real PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta

from cityops.roadworks import store_overview as store
from tests.roadworks.conftest import Conn
from tests.roadworks.factories import AT


def test_overview_snapshots(conn: Conn) -> None:
    day = date(2025, 3, 3)
    assert store.get_overview(conn, day) is None
    first = store.save_overview(conn, day=day, generated_at=AT, active=1, upcoming=2,
                                html="<p>1</p>", geojson={"type": "FeatureCollection"})
    second = store.save_overview(conn, day=day, generated_at=AT + timedelta(hours=1), active=3,
                                 upcoming=4, html="<p>2</p>",
                                 geojson={"type": "FeatureCollection", "features": []})
    snap = store.get_overview(conn, day)
    assert snap is not None
    assert (snap.id, snap.html, snap.active) == (second, "<p>2</p>", 3)
    assert first < second
    assert store.list_overviews(conn) == [(day, AT + timedelta(hours=1), 3, 4)]
