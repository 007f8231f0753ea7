"""The public search as rendered by PostgreSQL and kept per data version: the same JSON
as the `PublicWork` model, a strong ETag with `304 Not Modified`, and every change made
through the editing API (or by time passing) visible in the next answer."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest

from cityops.api.roadworks.context import RoadworksApi, roadworks_api
from cityops.api.roadworks.schemas import PublicPage, PublicWork
from cityops.ingest.db import connect
from cityops.roadworks import store_works as repo
from tests.api import test_roadworks_api as _rw
from tests.api.test_roadworks_api import (
    API,
    EDITOR,
    MANAGE,
    acting_as,
    create,
    day,
    roadworks_context,
)
from tests.api.testclient import TestClient
from tests.roadworks.factories import NOW, T0

# The fixtures of the roadworks API tests (module-scoped: this module gets its own).
seeded, public, edit_db, edit_app, edit = (
    _rw.seeded,
    _rw.public,
    _rw.edit_db,
    _rw.edit_app,
    _rw.edit,
)


def _flat(coords: Any) -> list[float]:
    if isinstance(coords, int | float):
        return [float(coords)]
    return list(itertools.chain.from_iterable(_flat(c) for c in coords))


def _same_work(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert list(got) == list(want)
    for k in want:
        if k in ("geometry", "detour_geometry") and want[k] is not None:
            assert got[k]["type"] == want[k]["type"]
            a, b = _flat(got[k]["coordinates"]), _flat(want[k]["coordinates"])
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 2e-6
        else:
            assert got[k] == want[k], k


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"to": day(0)},
        {"from": day(-30), "to": day(60), "limit": 500},
        {"from": day(-10), "limit": 3},
        {"impact": "closure", "from": day(-20)},
        {"q": "gas", "from": day(-20)},
    ],
)
def test_the_page_is_the_public_work_model(
    public: TestClient,
    seeded: tuple[str, Any],
    params: dict[str, Any],
) -> None:
    r = public.get(API, params=params)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    PublicPage.model_validate(body)  # what the OpenAPI document promises
    assert body["items"] or params.get("impact")
    ctx: RoadworksApi = roadworks_context()
    with connect(seeded[0], autocommit=True) as conn:
        for item in body["items"]:
            work = repo.get_work_by_reference(conn, item["reference"])
            _same_work(
                item, PublicWork.of(work, ctx.feed_context(), ctx.now()).model_dump(mode="json")
            )


def test_strong_etag_and_not_modified(public: TestClient) -> None:
    params = {"from": day(-10), "to": day(20)}
    first = public.get(API, params=params)
    etag = first.headers["etag"]
    assert etag.startswith('"') and first.headers["cache-control"] == "no-cache"
    again = public.get(API, params=params, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    listed = public.get(API, params=params, headers={"If-None-Match": f'"x", {etag}'})
    assert listed.status_code == 304
    other = public.get(API, params=params, headers={"If-None-Match": '"other"'})
    assert other.status_code == 200 and other.content == first.content
    assert public.get(API, params={"from": day(-10)}).headers["etag"] != etag
    # the bytes are sent as rendered; the OpenAPI document still names the model
    op = public.get("/openapi.json").json()["paths"][API]["get"]
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/PublicPage"} and "304" in op["responses"]


def test_changes_through_the_editing_api_show_at_once(edit: TestClient) -> None:
    params = {"from": "2025-03-01", "to": "2025-04-30"}
    empty = edit.get(API, params=params)
    assert empty.json()["total"] == 0
    work = create(edit, street="Cachestraße", start=T0, days=10)
    ref = work["reference"]
    assert edit.get(API, params=params).json()["total"] == 0  # a draft is not public
    assert edit.post(f"{MANAGE}/works/{ref}/submit").status_code == 200
    for target in ("in_consultation", "approved"):
        r = edit.post(f"{MANAGE}/works/{ref}/transitions", json={"to": target})
        assert r.status_code == 200, r.text
    shown = edit.get(API, params=params, headers={"If-None-Match": empty.headers["etag"]})
    assert shown.status_code == 200 and [w["reference"] for w in shown.json()["items"]] == [ref]
    assert shown.json()["items"][0]["title"] == "Arbeiten Cachestraße"
    version = edit.get(f"{MANAGE}/works/{ref}").json()["version"]
    r = edit.patch(
        f"{MANAGE}/works/{ref}",
        json={"title": "Neuer Titel"},
        headers={"If-Match": f'"v{version}"'},
    )
    assert r.status_code == 200, r.text
    changed = edit.get(API, params=params, headers={"If-None-Match": shown.headers["etag"]})
    assert changed.status_code == 200 and changed.json()["items"][0]["title"] == "Neuer Titel"
    assert (
        edit.get(API, params=params, headers={"If-None-Match": changed.headers["etag"]}).status_code
        == 304
    )
    # one work's details and the search agree
    assert edit.get(f"{API}/{ref}").json()["title"] == "Neuer Titel"


def test_time_passing_makes_a_kept_page_overdue(edit: TestClient) -> None:
    app: Any = edit.app
    ctx: RoadworksApi = app.dependency_overrides[roadworks_api]()
    clock: Any = ctx.service.clock
    work = create(edit, street="Uhrstraße", start=NOW - timedelta(days=1), days=2)
    ref = work["reference"]
    edit.post(f"{MANAGE}/works/{ref}/submit")
    for target in ("in_consultation", "approved"):
        edit.post(f"{MANAGE}/works/{ref}/transitions", json={"to": target})
    with acting_as(edit, EDITOR):
        assert (
            edit.post(f"{MANAGE}/works/{ref}/transitions", json={"to": "scheduled"}).status_code
            == 200
        )
        r = edit.post(
            f"{MANAGE}/works/{ref}/transitions",
            json={"to": "in_progress", "at": NOW.isoformat()},  # as it was registered
        )
        assert r.status_code == 200, r.text
    params = {"from": "2025-03-01", "to": "2025-03-31"}
    try:
        before = edit.get(API, params=params).json()
        assert [(w["reference"], w["overdue"]) for w in before["items"]] == [(ref, False)]
        clock.now = NOW + timedelta(days=1, hours=1)  # past the planned end, end not reported
        after = edit.get(API, params=params).json()
        assert [(w["reference"], w["overdue"]) for w in after["items"]] == [(ref, True)]
    finally:
        clock.now = NOW


def test_feeds_are_kept_until_the_data_or_the_time_change(edit: TestClient) -> None:
    app: Any = edit.app
    ctx: RoadworksApi = app.dependency_overrides[roadworks_api]()
    clock: Any = ctx.service.clock
    feed = f"{API}/feeds/wzdx"
    assert edit.get(feed).json()["features"] == []
    work = create(edit, street="Feedstraße", start=NOW + timedelta(days=1), days=2)
    ref = work["reference"]
    edit.post(f"{MANAGE}/works/{ref}/submit")
    for target in ("in_consultation", "approved"):
        edit.post(f"{MANAGE}/works/{ref}/transitions", json={"to": target})
    try:
        shown = edit.get(feed)
        names = [f["properties"]["core_details"]["name"] for f in shown.json()["features"]]
        assert names == [f"{ref}: Arbeiten Feedstraße"]
        etag = shown.headers["etag"]
        assert edit.get(feed, headers={"If-None-Match": etag}).status_code == 304
        for kind in ("geojson", "csv", "ical", "atom"):  # each kept on its own
            r = edit.get(f"{API}/feeds/{kind}")
            assert r.status_code == 200 and ref in r.text
            again = edit.get(f"{API}/feeds/{kind}", headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304
        version = edit.get(f"{MANAGE}/works/{ref}").json()["version"]
        r = edit.patch(
            f"{MANAGE}/works/{ref}",
            json={"title": "Geändert"},
            headers={"If-Match": f'"v{version}"'},
        )
        assert r.status_code == 200, r.text
        changed = edit.get(feed, headers={"If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        assert (
            changed.json()["features"][0]["properties"]["core_details"]["name"]
            == f"{ref}: Geändert"
        )
        clock.now = NOW + timedelta(days=3, hours=1)  # the work is over: out of the feed
        assert (
            edit.get(feed, headers={"If-None-Match": changed.headers["etag"]}).json()["features"]
            == []
        )
    finally:
        clock.now = NOW
