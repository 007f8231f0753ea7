"""The roadworks API against the real PostgreSQL: public search, details, feeds, the daily
overview and the map page over the demo data; the editing API over an empty registry.

The demo data is seeded once for this module (for SEED_DAY, a Monday) and only read; the
editing tests share a second database whose registry is emptied before each test. The
app's clock is fixed at SEED_DAY 08:00 in Berlin, like the seed's.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from cityops.api.app import create_app
from cityops.api.auth import OPERATOR, Principal, current_principal
from cityops.api.roadworks.context import MapSettings, RoadworksApi, roadworks_api
from cityops.api.schemas import encode_cursor
from cityops.ingest.config import Settings
from cityops.ingest.db import connect
from cityops.roadworks.config import load_roadworks_settings
from cityops.roadworks.feeds.common import FeedContext
from cityops.roadworks.model import PUBLIC_STATUSES, Measure, Sector
from cityops.roadworks.overview import publish_daily
from cityops.roadworks.schemas import spec_to_payload
from cityops.roadworks.seed import DEMO_WORKS, SeedReport, seed_demo
from cityops.routing.network import load_network
from tests.api.authn import with_auth
from tests.api.testclient import TestClient
from tests.conftest import MQTT_URL
from tests.roadworks.conftest import SEED_DAY
from tests.roadworks.factories import NOW, Clock, make_spec, service
from tests.roadworks.schemas import errors, feature_collection_validator, wzdx_feed_validator

ADMIN_URL = os.environ.get("CITYOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
API = "/api/v1/roadworks"
MANAGE = "/api/v1/roadworks/manage"
BASE_URL = "https://baustellen.example.org"
_TABLES = ("roadwork_findings", "roadwork_audit", "roadwork_streets", "roadworks",
           "resurfaced_segments", "roadwork_overviews")

EDITOR = Principal("anna", frozenset({"roadworks_editor"}), organisation="Stadtwerke")
OTHER_EDITOR = Principal("lukas", frozenset({"roadworks_editor"}),
                         organisation="Glasfaser Plus")


# -- fixtures -----------------------------------------------------------------------------


@contextmanager
def clone(template_db: str) -> Iterator[str]:
    """A database cloned from the migrated template, dropped afterwards."""
    name = f"cityops_rwapi_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(ADMIN_URL)
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    try:
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def api_settings(url: str) -> Settings:
    return with_auth(Settings(
        database_url=url, mqtt_url=MQTT_URL, topic_prefix=f"test-{uuid.uuid4().hex[:10]}",
        ingest_client_id=f"ingest-{uuid.uuid4().hex[:8]}", ingest_metrics_port=0,
        ingest_flush_ms=50, ingest_session_expiry_s=120,
    ))


def roadworks_context(**settings: Any) -> RoadworksApi:
    """The app's roadworks context with the clock at SEED_DAY 08:00 (Berlin)."""
    rw = load_roadworks_settings(public_base_url=BASE_URL, **settings)
    return RoadworksApi(rw, MapSettings(), service(Clock(NOW)))


def app_client(url: str, ctx: RoadworksApi) -> TestClient:
    app = create_app(api_settings(url), db_timeout_s=5.0)
    app.dependency_overrides[roadworks_api] = lambda: ctx
    return TestClient(app)


@pytest.fixture(scope="module")
def seeded(template_db: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, SeedReport]]:
    """The demo data for SEED_DAY plus that day's published overview."""
    with clone(template_db) as url:
        with connect(url, autocommit=True) as conn:
            report = seed_demo(conn, service(), load_network(), SEED_DAY)
            ctx = FeedContext(generated_at=NOW, base_url=BASE_URL)
            publish_daily(conn, SEED_DAY, tmp_path_factory.mktemp("overview"), ctx)
        yield url, report


@pytest.fixture(scope="module")
def public(seeded: tuple[str, SeedReport]) -> Iterator[TestClient]:
    with app_client(seeded[0], roadworks_context()) as client:
        yield client


@pytest.fixture(scope="module")
def refs(seeded: tuple[str, SeedReport]) -> dict[str, str]:
    """Demo key -> reference."""
    return seeded[1].references


@pytest.fixture(scope="module")
def edit_db(template_db: str) -> Iterator[str]:
    with clone(template_db) as url:
        yield url


@pytest.fixture(scope="module")
def edit_app(edit_db: str) -> Iterator[TestClient]:
    with app_client(edit_db, roadworks_context()) as client:
        yield client


@pytest.fixture
def edit(edit_db: str, edit_app: TestClient) -> Iterator[TestClient]:
    """A client of an empty registry, acting as city staff unless a test says otherwise."""
    with psycopg.connect(edit_db, autocommit=True) as c:
        c.execute(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY CASCADE")
        c.execute("ALTER SEQUENCE roadwork_reference_seq RESTART")
    app: Any = edit_app.app
    app.dependency_overrides[current_principal] = lambda: OPERATOR
    try:
        yield edit_app
    finally:
        app.dependency_overrides.pop(current_principal, None)


@contextmanager
def acting_as(client: TestClient, principal: Principal) -> Iterator[None]:
    app: Any = client.app
    app.dependency_overrides[current_principal] = lambda: principal
    try:
        yield
    finally:
        app.dependency_overrides[current_principal] = lambda: OPERATOR


# -- expectations from the demo definitions ------------------------------------------------


def expected(refs: dict[str, str], first: int, last: int | None = None) -> set[str]:
    """Public demo works on site on one of the days `first`..`last` after SEED_DAY."""
    out = set()
    for demo in DEMO_WORKS:
        if demo.status not in PUBLIC_STATUSES or not demo.is_public:
            continue
        start = demo.start_day + demo.late_days
        end = demo.start_day + demo.days - 1
        if end >= first and (last is None or start <= last):
            out.add(refs[demo.key])
    return out


def references(page: dict[str, Any]) -> set[str]:
    return {w["reference"] for w in page["items"]}


def day(offset: int) -> str:
    return (SEED_DAY + timedelta(days=offset)).isoformat()


# -- public search ---------------------------------------------------------------------------


def test_search_defaults_to_today_and_counts_works_on_site(
    public: TestClient, refs: dict[str, str]
) -> None:
    r = public.get(API, params={"to": day(0)})
    assert r.status_code == 200
    body = r.json()
    assert body["from_date"] == SEED_DAY.isoformat() and body["to_date"] == day(0)
    today = expected(refs, 0, 0)
    assert references(body) == today and body["total"] == len(today) >= 5
    assert all(w["status"] in ("approved", "scheduled", "in_progress") for w in body["items"])
    # open-ended: everything public not yet over, by start
    every = public.get(API).json()
    assert references(every) == expected(refs, 0)
    starts = [w["start"] for w in every["items"]]
    assert starts == sorted(starts)


@pytest.mark.parametrize(("first", "last"), [(0, 13), (5, 5), (30, 120), (-20, -15)])
def test_search_by_days(public: TestClient, refs: dict[str, str], first: int, last: int) -> None:
    body = public.get(API, params={"from": day(first), "to": day(last), "limit": 500}).json()
    want = expected(refs, first, last)
    if first < 0:  # past days: only the works still in progress (never reported ended)
        want = {r for r in want if public.get(f"{API}/{r}").json()["status"] == "in_progress"}
    assert references(body) == want


def test_search_rejects_an_inverted_range(public: TestClient) -> None:
    r = public.get(API, params={"from": day(5), "to": day(1)})
    assert r.status_code == 422
    assert r.json()["message"] == (
        f"invalid to: the last day {day(1)} is before the first day {day(5)}")
    r = public.get(API, params={"from": "03.03.2025"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "from"


def test_search_by_street_bbox_sector_and_impact(public: TestClient, refs: dict[str, str]
                                                  ) -> None:
    unionin = {refs["gas-unionin"], refs["fibre-unionin"]}
    assert references(public.get(API, params={"street": "Unioninkatu"}).json()) == unionin
    assert references(public.get(API, params={"street": " UNIONINKATU "}).json()) == unionin
    assert references(public.get(API, params={"q": "nionin"}).json()) == unionin
    assert public.get(API, params={"street": "Nirgendwostraße"}).json()["items"] == []

    work = public.get(f"{API}/{refs['gas-unionin']}").json()
    lons = [p[0] for p in work["geometry"]["coordinates"][0]]
    lats = [p[1] for p in work["geometry"]["coordinates"][0]]
    bbox = f"{min(lons)},{min(lats)},{max(lons)},{max(lats)}"
    found = references(public.get(API, params={"bbox": bbox}).json())
    assert refs["gas-unionin"] in found and refs["gas-pitkansillan"] not in found

    closures = public.get(API, params={"impact": "closure", "limit": 500}).json()["items"]
    assert closures and all(Measure.ROAD_CLOSURE in w["measures"] for w in closures)
    assert {w["impact_de"] for w in closures} == {"Vollsperrung"}
    roads = public.get(API, params=[("sector", "road"), ("impact", "closure")]).json()
    assert references(roads) == {refs["resurface-pohjois"]}
    several = public.get(API, params=[("sector", "gas"), ("sector", "water")]).json()["items"]
    assert several and {w["sector"] for w in several} == {"gas", "water"}


@pytest.mark.parametrize(("params", "field", "text"), [
    ({"sector": "plumbing"}, "sector", "Input should be 'electricity', 'gas'"),
    ({"impact": "huge"}, "impact", "Input should be 'closure', 'restriction' or 'minor'"),
    ({"bbox": "24.96,60.16,24.93,60.18"}, "bbox",
     "min_lon (24.96) must be less than max_lon (24.93)"),
    ({"bbox": "24.9,60.1"}, "bbox", "expected 4 comma-separated numbers"),
    ({"street": "   "}, "street", "must name a street"),
    ({"q": "x"}, "q", "at least 2 characters"),
    ({"limit": 0}, "limit", "greater than or equal to 1"),
    ({"cursor": "bm9wZQ"}, "cursor", "not a cursor returned by this endpoint"),
])
def test_search_refuses_bad_parameters_precisely(
    public: TestClient, params: dict[str, Any], field: str, text: str
) -> None:
    r = public.get(API, params=params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["details"][0]["field"].split(".")[0] == field  # sector.0: the first value
    assert text in body["message"]


def test_search_pages_with_a_cursor(public: TestClient) -> None:
    whole = public.get(API, params={"limit": 500}).json()
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 4}
    pages = 0
    while True:
        page = public.get(API, params=params).json()
        assert len(page["items"]) <= 4 and page["total"] == whole["total"]
        seen += [w["reference"] for w in page["items"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [w["reference"] for w in whole["items"]]
    assert pages == -(-whole["total"] // 4)


# -- one work -------------------------------------------------------------------------------


def test_details_of_a_public_work(public: TestClient, refs: dict[str, str]) -> None:
    r = public.get(f"{API}/{refs['resurface-pohjois']}")
    assert r.status_code == 200
    w = r.json()
    assert w["title"] == "Fahrbahndeckenerneuerung"
    assert w["description"] == "Die Fahrbahn erhält eine neue Asphaltdecke. Vollsperrung."
    assert w["promoter"] == "Tiefbauamt – Straßenbau" and w["sector_de"] == "Straßenbau"
    assert w["public_contact"] == "strassenbau@stadt.example"
    assert w["detour_description"] == "Umleitung über Aleksanterinkatu und Unioninkatu"
    assert w["detour_geometry"]["type"] == "LineString"
    assert w["impact"] == "closure" and w["vehicle_impact"] == "all-lanes-closed"
    # starts in 7 days at 07:00 Berlin, ends 16 days from now at 17:00: UTC and local time
    assert w["start"] == f"{day(7)}T06:00:00Z"
    assert w["start_local"] == f"{day(7)}T07:00:00+01:00"
    assert w["end_de"] == "19.03.2025, 17:00 Uhr"
    assert w["period_de"] == "10.03.2025 bis 19.03.2025"
    assert w["url"] == f"{BASE_URL}/roadworks/{refs['resurface-pohjois']}"
    assert w["geometry"]["type"] == "Polygon" and w["overdue"] is False


@pytest.mark.parametrize("key", ["road-erottajan", "water-siltasaaren", "power-simon",
                                 "tele-vilhon", "emergency-simon", "sewer-kasarmi"])
def test_works_not_public_are_not_found(public: TestClient, refs: dict[str, str], key: str
                                        ) -> None:
    """Drafts, submitted, refused, in consultation, completed and private works."""
    r = public.get(f"{API}/{refs[key]}")
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "message": f"no roadwork with reference "
                        f"{refs[key]!r}", "details": []}
    assert public.get(f"/roadworks/{refs[key]}").status_code == 404


def test_unknown_and_malformed_references(public: TestClient) -> None:
    assert public.get(f"{API}/RW-1999-99999").status_code == 404
    r = public.get(f"{API}/..%20x")
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "reference"


def test_public_outputs_hold_no_internal_text(public: TestClient, refs: dict[str, str]) -> None:
    """The internal description names a contact person; notes and findings stay inside."""
    outputs = [public.get(API, params={"limit": 500}).text,
               public.get(f"{API}/{refs['water-emergency-mannerheim']}").text]
    outputs += [public.get(f"{API}/feeds/{k}").text
                for k in ("wzdx", "geojson", "csv", "ical", "atom")]
    for text in outputs:
        assert "Ansprechpartner" not in text
        assert "Abgestimmt" not in text  # the decision note on the emergency clash
        assert "Genehmigt mit Auflagen" not in text  # an audit note
        assert "clash" not in text.lower()
    item = public.get(f"{API}/{refs['gas-unionin']}").json()
    assert "findings" not in item and "created_by" not in item and "version" not in item


# -- feeds ---------------------------------------------------------------------------------


def test_wzdx_and_geojson_feeds_validate(public: TestClient, refs: dict[str, str]) -> None:
    r = public.get(f"{API}/feeds/wzdx")
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    feed = r.json()
    assert errors(wzdx_feed_validator(), feed) == []
    names = {f["properties"]["core_details"]["name"].split(":")[0] for f in feed["features"]}
    assert names == expected(refs, 0)

    r = public.get(f"{API}/feeds/geojson", params={"street": "Mannerheimintie"})
    assert r.headers["content-type"] == "application/geo+json"
    collection = r.json()
    assert errors(feature_collection_validator(), collection) == []
    assert {f["id"] for f in collection["features"]} == {
        refs["water-emergency-mannerheim"], refs["power-mannerheim"]}


def test_csv_ical_and_atom_feeds(public: TestClient, refs: dict[str, str]) -> None:
    r = public.get(f"{API}/feeds/csv")
    assert r.headers["content-type"] == "text/csv; charset=utf-8; header=present"
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["reference"] for row in rows} == expected(refs, 0)
    assert "\r\n" in r.text

    r = public.get(f"{API}/feeds/ical", params={"street": "Unioninkatu"})
    assert r.headers["content-type"] == "text/calendar; charset=utf-8"
    lines = r.text.split("\r\n")
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-2] == "END:VCALENDAR"
    assert sum(line == "BEGIN:VEVENT" for line in lines) == 2
    assert all(len(line.encode()) <= 75 for line in lines)

    bbox = "24.93,60.16,24.96,60.18"
    r = public.get(f"{API}/feeds/atom", params={"bbox": bbox})
    assert r.headers["content-type"] == "application/atom+xml; charset=utf-8"
    root = ET.fromstring(r.content)
    ns = {"a": "http://www.w3.org/2005/Atom"}
    self_link = root.find("a:link[@rel='self']", ns)
    assert self_link is not None
    assert self_link.get("href") == f"{BASE_URL}{API}/feeds/atom?bbox={bbox}"
    entries = root.findall("a:entry", ns)
    assert entries
    # the feeds' links point at pages this API serves
    link = entries[0].find("a:link[@rel='alternate']", ns)
    assert link is not None
    href = str(link.get("href"))
    assert href.startswith(f"{BASE_URL}/roadworks/")
    page = public.get(href.removeprefix(BASE_URL))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    alternate = root.find("a:link[@rel='alternate']", ns)
    assert alternate is not None and alternate.get("href") == f"{BASE_URL}/roadworks"


def test_feeds_answer_304_while_nothing_changed(public: TestClient) -> None:
    first = public.get(f"{API}/feeds/wzdx")
    etag = first.headers["etag"]
    again = public.get(f"{API}/feeds/wzdx", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    other = public.get(f"{API}/feeds/wzdx", params={"street": "Unioninkatu"})
    assert other.headers["etag"] != etag
    assert public.get(f"{API}/feeds/rss").status_code == 422


# -- daily overview and map page ---------------------------------------------------------------


def test_daily_overview_snapshots(public: TestClient) -> None:
    days = public.get(f"{API}/overview").json()
    assert [d["day"] for d in days] == [SEED_DAY.isoformat()]
    r = public.get(days[0]["html"])
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Baustellenübersicht 03.03.2025</title>" in r.text
    geo = public.get(days[0]["geojson"])
    assert geo.headers["content-type"] == "application/geo+json"
    data = geo.json()
    assert data["day"] == SEED_DAY.isoformat() and data["features"]
    assert days[0]["active"] == sum(f["properties"]["section"] == "active"
                                    for f in data["features"])
    r = public.get(f"{API}/overview/2024-12-24")
    assert r.status_code == 404
    assert r.json()["message"].startswith("no daily overview was published for 2024-12-24")
    assert public.get(f"{API}/overview/gestern").status_code == 422


def test_map_page_and_its_assets(public: TestClient, refs: dict[str, str]) -> None:
    r = public.get("/roadworks")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<html lang="de">' in r.text and "<title>Baustellenkarte" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "&quot;today&quot;: &quot;2025-03-03&quot;" in r.text
    assert "&quot;url&quot;: &quot;&quot;" in r.text  # no tiles configured
    page = public.get(f"/roadworks/{refs['gas-unionin']}")
    assert f"&quot;selected&quot;: &quot;{refs['gas-unionin']}&quot;" in page.text
    for asset in ("/static/leaflet/leaflet.js", "/static/leaflet/leaflet.css",
                  "/static/roadworks/karte.js", "/static/roadworks/karte.css"):
        assert public.get(asset).status_code == 200, asset


def test_map_settings_check_the_tile_url() -> None:
    assert MapSettings(tile_url="https://{s}.tile.example.org/{z}/{x}/{y}.png").tile_url
    with pytest.raises(ValueError, match="must contain"):
        MapSettings(tile_url="https://tile.example.org/tiles.png")
    with pytest.raises(ValueError, match="http"):
        MapSettings(tile_url="ftp://tile.example.org/{z}/{x}/{y}.png")


# -- editing ---------------------------------------------------------------------------------


def payload(**kw: Any) -> dict[str, Any]:
    return spec_to_payload(make_spec(**kw))


def create(client: TestClient, **kw: Any) -> dict[str, Any]:
    r = client.post(f"{MANAGE}/works", json=payload(**kw))
    assert r.status_code == 201, r.text
    return dict(r.json())


def state(client: TestClient, reference: str) -> tuple[int, str, int]:
    """(version, status, history length): to show that a refused request left nothing."""
    work = client.get(f"{MANAGE}/works/{reference}").json()
    history = client.get(f"{MANAGE}/works/{reference}/history").json()
    return work["version"], work["status"], len(history)


def count(client: TestClient) -> int:
    return len(client.get(f"{MANAGE}/works", params={"limit": 200}).json()["items"])


def test_editing_flow_with_coordination_and_a_decision(edit: TestClient) -> None:
    r = edit.post(f"{MANAGE}/works", json=payload(street="Teststraße"))
    assert r.status_code == 201
    gas = r.json()
    assert gas["status"] == "draft" and gas["version"] == 1 and gas["reference"]
    assert r.headers["location"] == f"{MANAGE}/works/{gas['reference']}"
    assert r.headers["etag"] == '"v1"'
    assert {t["to"] for t in gas["next_transitions"]} == {"submitted", "cancelled"}
    fibre_payload = payload(street="Teststraße", y=3, promoter="Glasfaser Plus",
                            sector=Sector.TELECOM)
    # drafts are private to their promoter: nothing to coordinate with yet
    assert edit.post(f"{MANAGE}/preview", json=fibre_payload).json() == []
    r = edit.post(f"{MANAGE}/works/{gas['reference']}/submit")
    assert r.status_code == 200 and r.json()["status"] == "submitted", r.text
    # once the gas work is submitted, a preview of the fibre work shows the clash
    preview = edit.post(f"{MANAGE}/preview", json=fibre_payload).json()
    assert [(p["kind"], p["other"]) for p in preview] == [("clash", gas["reference"])]
    assert count(edit) == 1  # a preview stores nothing

    fibre = edit.post(f"{MANAGE}/works", json=fibre_payload).json()
    r = edit.post(f"{MANAGE}/works/{fibre['reference']}/submit")
    assert r.status_code == 200 and r.json()["status"] == "submitted", r.text
    findings = edit.get(f"{MANAGE}/works/{gas['reference']}/findings").json()
    assert [f["kind"] for f in findings] == ["clash"]
    clash = findings[0]
    assert {clash["work_a"], clash["work_b"]} == {gas["reference"], fibre["reference"]}
    assert clash["status"] == "open" and clash["message"]

    # the authority consults, approves; city staff decide the clash
    for target in ("in_consultation", "approved"):
        r = edit.post(f"{MANAGE}/works/{gas['reference']}/transitions",
                      json={"to": target, "note": f"-> {target}"})
        assert r.status_code == 200 and r.json()["status"] == target, r.text
    r = edit.put(f"{MANAGE}/findings/{clash['id']}/decision",
                 json={"decision": "accepted", "note": "Abgestimmt: erst Gas, dann Glasfaser"})
    assert r.status_code == 200, r.text
    decided = r.json()
    assert decided["status"] == "accepted"
    assert decided["decided_by"] == "operator (Baustellenkoordination)"
    assert edit.get(f"{MANAGE}/findings", params={"status": "open"}).json() == []

    # the approved work is public now; the promoter schedules and reports the start
    assert edit.get(f"{API}/{gas['reference']}").status_code == 200
    with acting_as(edit, EDITOR):
        r = edit.post(f"{MANAGE}/works/{gas['reference']}/transitions", json={"to": "scheduled"})
        assert r.status_code == 200, r.text
        version = r.json()["version"]
        r = edit.post(f"{MANAGE}/works/{gas['reference']}/transitions",
                      json={"to": "in_progress", "at": "2025-03-03T08:00:00+01:00"},
                      headers={"If-Match": f'"v{version}"'})
        assert r.status_code == 200, r.text
        assert r.json()["actual_start"] == "2025-03-03T07:00:00Z"

    history = edit.get(f"{MANAGE}/works/{gas['reference']}/history").json()
    assert [h["action"] for h in history] == [
        "created", "transition:submit", "transition:start_consultation",
        "transition:approve", "finding:accepted", "transition:schedule", "transition:start"]
    submit, approve = history[1], history[3]
    assert (submit["actor"], submit["role"]) == ("operator", "promoter")
    assert (approve["role"], approve["note"]) == ("authority", "-> approved")
    assert history[4]["note"] == "Abgestimmt: erst Gas, dann Glasfaser"
    assert history[-1]["actor"] == "anna" and history[-1]["organisation"] == "Stadtwerke"
    assert history[0]["at_local"].endswith("+01:00")

    # the fibre work moves away: the clash no longer applies and cannot be decided again
    away = payload(street="Teststraße", y=300, promoter="Glasfaser Plus",
                   sector=Sector.TELECOM)
    r = edit.patch(f"{MANAGE}/works/{fibre['reference']}",
                   json={"footprint": away["footprint"], "streets": away["streets"]},
                   headers={"If-Match": f'"v{fibre["version"] + 1}"'})
    assert r.status_code == 200, r.text
    assert edit.get(f"{MANAGE}/works/{gas['reference']}/findings").json() == []
    old = edit.get(f"{MANAGE}/works/{gas['reference']}/findings",
                   params={"include_obsolete": True}).json()
    assert [(f["id"], f["status"]) for f in old] == [(clash["id"], "obsolete")]
    r = edit.put(f"{MANAGE}/findings/{clash['id']}/decision",
                 json={"decision": "resolved", "note": "verlegt"})
    assert r.status_code == 409 and r.json()["message"].startswith(
        f"finding {clash['id']} is obsolete")


def test_update_with_versions(edit: TestClient) -> None:
    work = create(edit)
    ref = work["reference"]
    r = edit.patch(f"{MANAGE}/works/{ref}", json={"planned_end": "2025-03-25T17:00:00+01:00"},
                   headers={"If-Match": '"v1"'})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.headers["etag"] == '"v2"'
    assert r.json()["spec"]["planned_end"] == "2025-03-25T16:00:00+00:00"

    before = state(edit, ref)
    r = edit.patch(f"{MANAGE}/works/{ref}", json={"title": "Neu"}, headers={"If-Match": '"v1"'})
    assert r.status_code == 409
    assert r.json()["error"] == "stale_version"
    assert r.json()["message"] == (
        f"roadwork {ref} was changed meanwhile: you edited version 1, the current version "
        "is 2; reload and apply your change again")
    assert state(edit, ref) == before

    full = payload(street="Neue Straße")
    r = edit.put(f"{MANAGE}/works/{ref}", json=full, headers={"If-Match": '"v2"'})
    assert r.status_code == 200 and r.json()["spec"]["streets"][0]["name"] == "Neue Straße"
    r = edit.patch(f"{MANAGE}/works/{ref}", json={"title": "x"}, headers={"If-Match": "v-zwei"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "If-Match"


@pytest.mark.parametrize(("change", "status", "code", "field", "text"), [
    ({"footprint": {"type": "Polygon", "coordinates": [[[24.94, 60.17], [24.941, 60.171],
                                                         [24.941, 60.17], [24.94, 60.171],
                                                         [24.94, 60.17]]]}},
     422, "invalid_geometry", "footprint", "self-intersect"),
    ({"footprint": {"type": "Point", "coordinates": [24.94, 60.17]}},
     422, "invalid_geometry", "footprint", "Polygon"),
    ({"planned_end": "2025-03-01T07:00:00+01:00"}, 422, "invalid_period", "planned_end",
     "before"),
    ({"sector": "plumbing"}, 422, "invalid_payload", "sector", "unknown sector 'plumbing'"),
    ({"colour": "red"}, 422, "invalid_payload", "colour", "is not a field of a roadwork"),
    ({"planned_start": "2025-03-10T07:00:00"}, 422, "invalid_payload", "planned_start",
     "has no time zone"),
    ({"description": "x" * 6000}, 413, "payload_too_large", "description", "at most 5000"),
])
def test_create_refuses_bad_payloads_and_writes_nothing(
    edit: TestClient, change: dict[str, Any], status: int, code: str, field: str, text: str
) -> None:
    r = edit.post(f"{MANAGE}/works", json={**payload(), **change})
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code
    assert body["details"][0]["field"] == field
    assert text in body["message"], body["message"]
    assert count(edit) == 0


def test_oversized_and_malformed_bodies(edit: TestClient) -> None:
    big = json.dumps({**payload(), "public_text": "x" * 300_000})
    r = edit.post(f"{MANAGE}/works", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["message"].startswith(f"body: is {len(big)} bytes, more than the limit")
    r = edit.post(f"{MANAGE}/works", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["message"].startswith("body: is not valid JSON")
    r = edit.post(f"{MANAGE}/works", json=[1, 2])
    assert r.status_code == 422 and "must be a JSON object" in r.json()["message"]
    assert count(edit) == 0


def test_illegal_transitions_and_unknown_things(edit: TestClient) -> None:
    ref = create(edit)["reference"]
    before = state(edit, ref)
    r = edit.post(f"{MANAGE}/works/{ref}/transitions", json={"to": "in_progress"})
    assert r.status_code == 409
    body = r.json()
    assert body["error"] == "illegal_transition"
    assert body["message"] == (
        f"roadwork {ref} is a standard work: only emergency works may start before they are "
        "scheduled (draft -> in_progress); from draft it can become: submitted (submit), "
        "cancelled (cancel)")
    r = edit.post(f"{MANAGE}/works/{ref}/transitions", json={"to": "completed"})
    assert r.status_code == 409 and "cannot go from draft to completed" in r.json()["message"]
    r = edit.post(f"{MANAGE}/works/{ref}/transitions", json={"to": "finished"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "to"
    assert state(edit, ref) == before

    assert edit.post(f"{MANAGE}/works/{ref}/transitions", json={"to": "cancelled"}).status_code \
        == 200
    r = edit.patch(f"{MANAGE}/works/{ref}", json={"title": "Neu"})
    assert r.status_code == 409 and r.json()["error"] == "not_editable"

    r = edit.get(f"{MANAGE}/works/RW-2025-99999")
    assert r.status_code == 404
    assert r.json()["message"] == "no roadwork with reference 'RW-2025-99999'"
    r = edit.put(f"{MANAGE}/findings/4711/decision", json={"decision": "resolved", "note": "x"})
    assert r.status_code == 404 and r.json()["message"] == "no coordination finding with id 4711"
    r = edit.put(f"{MANAGE}/findings/1/decision", json={"decision": "resolved", "note": " "})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "note"


def test_editors_edit_only_their_own_works(edit: TestClient) -> None:
    with acting_as(edit, EDITOR):
        r = edit.post(f"{MANAGE}/works", json=payload(promoter="Glasfaser Plus"))
        assert r.status_code == 403
        assert r.json()["message"] == ("anna edits the roadworks of 'Stadtwerke' only; this one "
                                       "is of 'Glasfaser Plus'")
        own = create(edit, promoter="Stadtwerke")["reference"]
        assert edit.post(f"{MANAGE}/works/{own}/submit").status_code == 200
        r = edit.post(f"{MANAGE}/works/{own}/transitions", json={"to": "approved"})
        assert r.status_code == 403 and r.json()["error"] == "not_permitted"
        assert "only the road authority may approve" in r.json()["message"]
        # the promoter cannot give the work away either
        r = edit.patch(f"{MANAGE}/works/{own}", json={"promoter": "Glasfaser Plus"})
        assert r.status_code == 403
    with acting_as(edit, OTHER_EDITOR):
        other = create(edit, promoter="Glasfaser Plus", y=200)["reference"]
        before = state(edit, other)
        assert edit.get(f"{MANAGE}/works/{own}").status_code == 403
        r = edit.patch(f"{MANAGE}/works/{own}", json={"title": "Übernommen"})
        assert r.status_code == 403
        assert [w["reference"] for w in edit.get(f"{MANAGE}/works").json()["items"]] == [other]
        r = edit.put(f"{MANAGE}/findings/1/decision", json={"decision": "accepted", "note": "ok"})
        assert r.status_code == 403
        assert "only city staff (dispatcher, traffic_engineer, admin) may" in r.json()["message"]
    assert state(edit, other) == before
    assert edit.get(f"{MANAGE}/works/{own}").json()["spec"]["title"] == "Arbeiten Teststraße"
    with acting_as(edit, Principal("gast", frozenset())):
        r = edit.get(f"{MANAGE}/works")
        assert r.status_code == 403 and "needs the role roadworks_editor" in r.json()["message"]
    with acting_as(edit, Principal("x", frozenset({"roadworks_editor"}))):
        assert edit.post(f"{MANAGE}/works", json=payload()).status_code == 403
    assert count(edit) == 2


def test_manage_list_pages_and_filters(edit: TestClient) -> None:
    refs = [create(edit, y=100.0 * i, start=NOW + timedelta(days=7 + i))["reference"]
            for i in range(5)]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = edit.get(f"{MANAGE}/works", params=params).json()
        seen += [w["reference"] for w in page["items"]]
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == refs
    edit.post(f"{MANAGE}/works/{refs[0]}/submit")
    r = edit.get(f"{MANAGE}/works", params={"status": "submitted"})
    assert [w["reference"] for w in r.json()["items"]] == [refs[0]]
    assert date.fromisoformat(r.json()["items"][0]["spec"]["planned_start"][:10]) >= SEED_DAY
    # a forged cursor whose offset is a digit int() cannot read is a 422, not a 500
    forged = encode_cursor("roadworks-manage", ["\u00b2"])
    r = edit.get(f"{MANAGE}/works", params={"cursor": forged})
    assert r.status_code == 422 and "not a cursor" in r.json()["message"]


def test_openapi_documents_the_roadworks_routes(public: TestClient) -> None:
    spec = public.get("/openapi.json").json()
    body = spec["paths"][f"{MANAGE}/works"]["post"]["requestBody"]["content"]
    schema = body["application/json"]["schema"]
    assert "$defs" not in json.dumps(schema) and "footprint" in schema["properties"]
    assert "413" in spec["paths"][f"{MANAGE}/works"]["post"]["responses"]



def test_an_editor_cannot_change_a_permitted_work_unreviewed(edit: TestClient) -> None:
    """An editor PATCHed the title of a work in progress and it stayed public (issue 14)."""
    ref = create(edit, street="Teststraße")["reference"]
    for target in ("submitted", "approved"):
        r = edit.post(f"{MANAGE}/works/{ref}/transitions", json={"to": target})
        assert r.status_code == 200, r.text
    # approved: the editor's new title goes back to review and off the public map
    with acting_as(edit, EDITOR):
        r = edit.patch(f"{MANAGE}/works/{ref}", json={"title": "Ganz andere Arbeiten"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "submitted"
    assert edit.get(f"{API}/{ref}").status_code == 404
    r = edit.post(f"{MANAGE}/works/{ref}/transitions", json={"to": "approved"})
    assert r.status_code == 200, r.text
    with acting_as(edit, EDITOR):
        for target in ("scheduled", "in_progress"):
            r = edit.post(f"{MANAGE}/works/{ref}/transitions", json={"to": target})
            assert r.status_code == 200, r.text
        # on site: refused, nothing changed
        before = state(edit, ref)
        r = edit.patch(f"{MANAGE}/works/{ref}", json={"title": "<b>Heimlich</b>"})
        assert r.status_code == 409 and "coordinating office" in r.json()["message"]
        assert state(edit, ref) == before
        # a start before the work was registered is implausible
        r = edit.post(f"{MANAGE}/works/{ref}/transitions",
                      json={"to": "completed", "at": "1900-01-01T00:00:00Z"})
        assert r.status_code == 422
    # the coordinating office corrects it, audited
    r = edit.patch(f"{MANAGE}/works/{ref}", json={"title": "Berichtigter Titel"})
    assert r.status_code == 200 and r.json()["status"] == "in_progress"
    assert edit.get(f"{API}/{ref}").json()["title"] == "Berichtigter Titel"
    last = edit.get(f"{MANAGE}/works/{ref}/history").json()[-1]
    assert (last["actor"], last["role"]) == ("operator", "authority")
