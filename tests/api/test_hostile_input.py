"""Hostile input found by probing a running system (issue 14): each case got a 500 (which
also dropped the next request on the same keep-alive connection) and now gets a 4xx that
says what is wrong."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from typing import Any

import pytest

from cityops.api.auth import Principal, require_roadworks_editor
from cityops.api.errors import ForbiddenError
from cityops.ingest.config import Settings
from cityops.roadworks.feeds import csv_feed
from cityops.roadworks.model import same_organisation
from cityops.roadworks.overview import OVERVIEW_CSP
from tests.api.test_roadworks_api import (  # noqa: F401 (fixtures: pytest finds them here)
    MANAGE,
    acting_as,
    edit,
    edit_app,
    edit_db,
    payload,
    public,
    seeded,
)
from tests.api.testclient import TestClient
from tests.roadworks.factories import make_spec, make_work
from tests.roadworks.test_feeds import CTX


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_a_token_whose_header_holds_non_latin1_text_is_401(
    client: TestClient, auth_settings: Settings
) -> None:
    forged = f"{_b64({'alg': 'HS256ψ', 'typ': 'JWT'})}.{_b64({'sub': 'x'})}.c2ln"
    r = client.get("/api/v1/bins", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401, r.text
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.isascii() and 'error="invalid_token"' in challenge
    assert r.json()["error"] == "unauthenticated"
    # the connection still serves the next request
    assert client.get("/health").status_code in (200, 503)


def test_a_nul_in_a_roadwork_is_refused_with_the_field(edit: TestClient) -> None:  # noqa: F811
    body = payload(street="Teststraße")
    body["title"] = "Gas\x00leitung"
    body["streets"][0]["name"] = "Test\x07straße"
    r = edit.post(f"{MANAGE}/works", json=body)
    assert r.status_code == 422, r.text
    text = json.dumps(r.json())
    assert "title" in text and "streets" in text and "control characters" in text


def test_json_nested_100000_deep_is_refused(edit: TestClient) -> None:  # noqa: F811
    deep = '{"title": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = edit.post(
        f"{MANAGE}/works", content=deep.encode(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code in (400, 413, 422), r.text
    assert "nested too deeply" in r.text or "limit" in r.text
    created = edit.post(f"{MANAGE}/works", json=payload(street="Teststraße"))
    assert created.status_code == 201, created.text
    reference = created.json()["reference"]
    patch = '{"description": ' + "[" * 50_000 + "]" * 50_000 + "}"
    r = edit.patch(
        f"{MANAGE}/works/{reference}",
        content=patch.encode(),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 422, r.text
    assert "nested too deeply" in r.text


def test_a_search_in_the_year_9999_is_refused(public: TestClient) -> None:  # noqa: F811
    for params in ({"from": "9999-12-31"}, {"to": "9999-12-31"}, {"from": "0001-01-01"}):
        r = public.get("/api/v1/roadworks", params=params)
        assert r.status_code == 422, (params, r.text)
        assert "years from today" in r.text


def test_csv_cells_that_a_spreadsheet_would_evaluate_are_neutralised() -> None:
    spec = make_spec(
        title="=HYPERLINK(\"https://evil.example\",\"Info\")",
        contractor="+49 69 123",
        street="@SUM(A1)",
        working_hours="-2+3",
    )
    text = csv_feed.to_csv([make_work(spec)], CTX)
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["title"] == "'=HYPERLINK(\"https://evil.example\",\"Info\")"
    assert row["contractor"] == "'+49 69 123"
    assert row["streets"] == "'@SUM(A1)"
    assert row["working_hours"] == "'-2+3"
    assert float(row["lon"]) == pytest.approx(float(row["lon"]))  # numbers stay numbers
    assert not row["lon"].startswith("'") and not row["area_m2"].startswith("'")
    assert csv_feed.neutralise("Frankfurter Straße") == "Frankfurter Straße"


def test_feeds_and_the_overview_carry_csp_and_nosniff(public: TestClient) -> None:  # noqa: F811
    for path in (
        "/api/v1/roadworks/feeds/wzdx",
        "/api/v1/roadworks/feeds/geojson",
        "/api/v1/roadworks/feeds/csv",
        "/api/v1/roadworks/feeds/ical",
        "/api/v1/roadworks/feeds/atom",
    ):
        r = public.get(path)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["X-Content-Type-Options"] == "nosniff", path
        assert r.headers["Content-Security-Policy"].startswith("default-src 'none'"), path
    days = public.get("/api/v1/roadworks/overview").json()
    assert days, "the seeded registry publishes at least one overview"
    r = public.get(days[0]["html"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp
    assert csp == OVERVIEW_CSP and r.headers["X-Content-Type-Options"] == "nosniff"
    # the hash in the policy is the hash of the page's own style block
    style = r.text.split("<style>", 1)[1].split("</style>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp


def test_organisations_match_the_same_way_in_python_and_in_sql(edit: TestClient) -> None:  # noqa: F811
    """The edit check used casefold ("STRASSE" = "Straße"), the listing SQL lower: an editor
    could change works it could not list (issue 14)."""
    lookalike = Principal("max", frozenset({"roadworks_editor"}), organisation="STRASSENBAU")
    with pytest.raises(ForbiddenError):
        require_roadworks_editor(lookalike, "Straßenbau")
    require_roadworks_editor(lookalike, " strassenbau ")  # case and spaces only
    assert same_organisation("Stadtwerke ", "STADTWERKE")
    ref = edit.post(f"{MANAGE}/works", json=payload(street="Teststraße", promoter="Straßenbau"))
    assert ref.status_code == 201, ref.text
    with acting_as(edit, lookalike):
        assert edit.get(f"{MANAGE}/works").json()["items"] == []
        r = edit.patch(f"{MANAGE}/works/{ref.json()['reference']}", json={"title": "Fremd"})
        assert r.status_code in (403, 404)


def test_a_nul_in_a_transition_note_is_refused_not_stored(edit: TestClient) -> None:  # noqa: F811
    ref = edit.post(f"{MANAGE}/works", json=payload(street="Notizstraße")).json()["reference"]
    for note in ("Abstimmung\x00", "x\ud800"):
        r = edit.post(
            f"{MANAGE}/works/{ref}/transitions",
            content=json.dumps({"to": "submitted", "note": note}).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 422, r.text
    assert edit.get(f"{MANAGE}/works/{ref}").json()["status"] == "draft"
