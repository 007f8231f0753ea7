"""The public works in memory (`PublicIndex`) answer the public search exactly as the SQL
search does (`repository.search_public_keys`): the same works, order, pages, totals,
row keys and overdue times, over the demo data and over works placed to sit on the
edges (window boundaries, works in progress past their planned end, equal starts)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from cityops.ingest.db import connect
from cityops.roadworks import store_public
from cityops.roadworks.geometry import BBox
from cityops.roadworks.labels import BERLIN
from cityops.roadworks.model import Measure, Period, Sector, Status
from cityops.roadworks.search_index import PublicIndex
from tests.roadworks.conftest import SEED_DAY, Conn, Seeded
from tests.roadworks.factories import FRAME, NOW, PROMOTER, make_spec, service

IMPACTS = ("closure", "restriction", "minor")


@pytest.fixture(scope="module")
def demo(seeded: Seeded) -> Iterator[Conn]:
    with connect(seeded.url, autocommit=True) as c:
        yield c


def _search_both(conn: Conn, index: PublicIndex, s: store_public.PublicSearch, limit: int) -> int:
    """Page through `s` with both implementations; returns the number of works found."""
    after: tuple[datetime, int] | None = None
    seen = 0
    while True:
        sql_page = store_public.search_public_keys(conn, s, limit=limit, after=after)
        b = s.bbox
        mem = index.search(
            window_start=s.window.start,
            window_end=s.window.end,
            now=s.now,
            bbox=(b.min_lon, b.min_lat, b.max_lon, b.max_lat) if b else None,
            street=s.street,
            sectors=frozenset(x.value for x in s.sectors),
            impacts=s.impacts,
            limit=limit,
            after=after,
        )
        got = [(w.id, w.key, w.start, w.overdue_from) for w in mem.works]
        want = [(w.id, w.key, w.start, w.overdue_from) for w in sql_page.works]
        assert got == want, s
        assert (mem.more, mem.total) == (sql_page.more, sql_page.total), s
        seen += len(got)
        if not mem.more:
            assert seen == mem.total
            return seen
        after = (mem.works[-1].start, mem.works[-1].id)


def _random_search(rng: random.Random, streets: list[str]) -> store_public.PublicSearch:
    day0 = datetime.combine(SEED_DAY, datetime.min.time(), BERLIN)
    start = day0 + timedelta(days=rng.randint(-40, 60), hours=rng.choice([0, 0, 7, 13]))
    end = start + timedelta(days=rng.choice([0.5, 1, 3, 14, 90, 2000]))
    now = day0 + timedelta(days=rng.uniform(-30, 60))
    bbox = None
    if rng.random() < 0.6:
        b = FRAME.bounds
        w, h = (b.max_lon - b.min_lon), (b.max_lat - b.min_lat)
        f = rng.uniform(0.05, 1.0)
        x0 = rng.uniform(b.min_lon, b.max_lon - w * f)
        y0 = rng.uniform(b.min_lat, b.max_lat - h * f)
        bbox = BBox(x0, y0, x0 + w * f, y0 + h * f)
    return store_public.PublicSearch(
        window=Period(start, end),
        now=now,
        bbox=bbox,
        street=rng.choice(streets).upper() if rng.random() < 0.2 else None,
        sectors=frozenset(rng.sample(list(Sector), rng.randint(1, 3)))
        if rng.random() < 0.2
        else frozenset(),
        impacts=frozenset(rng.sample(IMPACTS, rng.randint(1, 2)))
        if rng.random() < 0.2
        else frozenset(),
    )


def test_the_index_answers_random_searches_over_the_demo_data_like_sql(demo: Conn) -> None:
    version, rows = store_public.public_index_rows(demo)
    index = PublicIndex(version, rows)
    assert len(index) >= 20 and version == store_public.data_version(demo)
    streets = sorted(
        {
            n
            for r in store_public.search_public_texts(
                demo,
                store_public.PublicSearch(
                    window=Period(NOW - timedelta(days=400), NOW + timedelta(days=400)), now=NOW
                ),
            )
            for n in r.road_names
        }
    )
    rng = random.Random(7)
    found = [
        _search_both(demo, index, _random_search(rng, streets), rng.choice([1, 3, 100]))
        for _ in range(150)
    ]
    assert sum(1 for n in found if n == 0) < 100 and max(found) >= 10  # not all empty


def test_edges_of_the_window_and_works_in_progress(conn: Conn) -> None:
    svc = service()
    t0 = NOW + timedelta(days=2)
    works = []
    # equal starts (order by id), an end at a window edge, an overdue work in progress
    for i, (start, days) in enumerate([(t0, 1), (t0, 1), (t0, 3), (t0 + timedelta(days=1), 1)]):
        spec = make_spec(
            x=i * 80.0, start=start, days=days, measures=(Measure.ROAD_CLOSURE,) if i == 1 else ()
        )
        works.append(svc.create(conn, spec, PROMOTER))
    late = svc.create(conn, make_spec(x=400.0, start=NOW - timedelta(days=5), days=2), PROMOTER)
    with conn.transaction():
        conn.execute(
            "UPDATE roadworks SET status = %s WHERE id = ANY(%s)",
            (Status.SCHEDULED.value, [w.id for w in works]),
        )
        conn.execute(
            "UPDATE roadworks SET status = 'in_progress', actual_start = %s WHERE id = %s",
            (NOW - timedelta(days=5), late.id),
        )
    version, rows = store_public.public_index_rows(conn)
    index = PublicIndex(version, rows)
    assert len(index) == 5
    edges = [t0, t0 + timedelta(days=1), NOW - timedelta(days=3), NOW, NOW + timedelta(hours=1)]
    for a in edges:
        for b in edges:
            if b <= a:
                continue
            for now in (NOW - timedelta(days=4), NOW, t0 + timedelta(days=1), a, b):
                for limit in (1, 2, 10):
                    search = store_public.PublicSearch(Period(a, b), now=now)
                    _search_both(conn, index, search, limit)
    # the overdue work in progress: on site whenever the window contains now
    page = index.search(
        window_start=NOW - timedelta(hours=1),
        window_end=NOW + timedelta(hours=1),
        now=NOW,
        limit=10,
    )
    assert [w.id for w in page.works] == [late.id]
    assert page.works[0].overdue_from == NOW - timedelta(days=3)
    # a data change gives another version and another row key
    conn.execute("UPDATE roadworks SET title = 'x' WHERE id = %s", (late.id,))
    version2, rows2 = store_public.public_index_rows(conn)
    assert version2 != version
    assert {r.id: r.key for r in rows2}[late.id] != {r.id: r.key for r in rows}[late.id]
