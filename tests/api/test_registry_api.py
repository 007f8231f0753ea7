"""The registry API: admins create, read, change and retire devices with ETags and an audit;
a retired bin leaves the dispatcher's view and the next plan's input."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from cityops.ingest.config import Settings
from cityops.routing.repository import load_bins
from tests.api.authn import bearer
from tests.api.testclient import TestClient

BIN: dict[str, Any] = {
    "sensor_id": "S-API-1", "lon": 24.945, "lat": 60.17, "street": "Mühlgasse",
    "house_number": "3a", "fraction": "paper", "capacity_l": 240,
    "collection_days": "Mo,Do", "access_from": "07:00", "access_to": "18:00",
}
URL = "/api/v1/registry/bins/B-API-1"


def test_an_admin_creates_reads_changes_and_retires_a_bin(
    client: TestClient, db_url: str
) -> None:
    created = client.put(URL, json=BIN, headers={"If-None-Match": "*"})
    assert created.status_code == 201, created.text
    assert created.headers["ETag"] == '"v1"'
    assert created.headers["Location"] == URL
    body = created.json()
    assert body["record"]["street"] == "Mühlgasse"
    assert body["record"]["district"] == "B3"  # from the city profile's districts
    assert body["record"]["collection_days"] == [0, 3]

    got = client.get(URL)
    assert got.status_code == 200 and got.headers["ETag"] == '"v1"'
    assert client.put(URL, json=BIN, headers={"If-None-Match": "*"}).status_code == 412

    # a change needs the ETag; a stale one is refused
    missing = client.put(URL, json={**BIN, "capacity_l": 660})
    assert missing.status_code == 428 and "If-Match" in missing.json()["message"]
    changed = client.put(URL, json={**BIN, "capacity_l": 660}, headers={"If-Match": '"v1"'})
    assert changed.status_code == 200 and changed.headers["ETag"] == '"v2"'
    stale = client.put(URL, json={**BIN, "capacity_l": 1100}, headers={"If-Match": '"v1"'})
    assert stale.status_code == 412 and "version 2, not 1" in stale.json()["message"]

    assert client.delete(URL, headers={"If-Match": '"v1"'}).status_code == 412
    assert client.delete(URL, headers={"If-Match": '"v2"'}).status_code == 204
    gone = client.delete(URL)
    assert gone.status_code == 404
    assert gone.json() == {"error": "not_found", "details": [],
                           "message": "no active bin 'B-API-1' in the registry"}
    retired = client.get(URL).json()
    assert retired["retired"] is True and retired["version"] == 3
    listed = client.get("/api/v1/registry/bins?limit=1000").json()["items"]
    assert URL.rsplit("/", 1)[1] not in {i["id"] for i in listed}
    assert "B-API-1" in {i["id"] for i in client.get(
        "/api/v1/registry/bins?include_retired=true&limit=1000").json()["items"]}

    with psycopg.connect(db_url) as conn:
        audit = conn.execute(
            "SELECT actor, source, action FROM registry_audit WHERE entity_id = 'B-API-1' "
            "ORDER BY audit_id").fetchall()
    assert audit == [("api:operator", "api", "create"), ("api:operator", "api", "update"),
                     ("api:operator", "api", "retire")]


def test_a_retired_bin_leaves_the_dispatchers_view_and_the_plans(
    client: TestClient, auth_settings: Settings, db_url: str
) -> None:
    assert client.put(URL, json=BIN).status_code == 201
    dispatcher = bearer(auth_settings, "dispatcher", sub="disponentin")
    assert client.get("/api/v1/bins/B-API-1", headers=dispatcher).status_code == 200
    with psycopg.connect(db_url) as conn:
        assert "B-API-1" in {b.bin_id for b in load_bins(conn)}
    assert client.delete(URL).status_code == 204
    assert client.get("/api/v1/bins/B-API-1", headers=dispatcher).status_code == 404
    with psycopg.connect(db_url) as conn:
        assert "B-API-1" not in {b.bin_id for b in load_bins(conn)}
    # and only admins may do it
    assert client.delete("/api/v1/registry/bins/B-API-1", headers=dispatcher).status_code == 403


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({**BIN, "fraction": "glas"}, "fraction", "Input should be"),
        ({**BIN, "street": "Haupt\x00straße"}, "street", "control characters"),
        ({**BIN, "lon": 8.76, "lat": 50.10}, "lon/lat", "outside"),
        ({**BIN, "bin_id": "B-OTHER"}, "bin_id", "must be 'B-API-1'"),
        ({**BIN, "access_to": None}, "body", "give both access_from and access_to"),
        ({**BIN, "colour": "blau"}, "colour", "unknown field"),
        ({**BIN, "dev_eui": "70b3d57ed005a1b2"}, "body", "needs its sensor_model"),
        ({**BIN, "dev_eui": "70b3d57ed005a1b2", "sensor_model": "dragino-ldds75",
          "empty_distance_mm": 900, "full_distance_mm": 900}, "body",
         "full_distance_mm must be less"),
        ({**BIN, "dev_eui": "70b3d57ed005zzzz", "sensor_model": "dragino-ldds75"}, "dev_eui",
         "should match pattern"),
        ({**BIN, "dev_eui": "70b3d57ed005a1b3", "sensor_model": "acme-9000",
          "empty_distance_mm": 900, "full_distance_mm": 100}, "sensor_model",
         "unknown sensor model 'acme-9000'"),
    ],
)
def test_bad_records_get_a_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str, message: str
) -> None:
    resp = client.put(URL, json=body)
    assert resp.status_code == 422, resp.text
    details = resp.json()["details"]
    assert any(d["field"] == field and message in d["message"] for d in details), details


def test_hostile_bodies_get_a_4xx(client: TestClient) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for content in (b"not json", b"[1, 2]", deep.encode(), b"\xff\xfe"):
        resp = client.put(URL, content=content, headers={"Content-Type": "application/json"})
        assert resp.status_code == 422, (content[:20], resp.text)
    assert client.get("/api/v1/registry/bins/%3Cscript%3E").status_code == 422
    assert client.get("/api/v1/registry/lamps").status_code == 422


def test_controllers_and_trucks_through_the_api(client: TestClient) -> None:
    controller = {
        "name": "Kaiserstraße / Löwenstraße", "lon": 24.946, "lat": 60.171,
        "phases": [{"phase": 2, "movement": "geradeaus", "min_green_s": 5, "max_green_s": 40,
                    "fixed_green_s": 20, "yellow_s": 3, "red_clearance_s": 2}],
        "detectors": [{"channel": 1, "phase": 2, "kind": "stop_bar", "lane": 1}],
    }
    resp = client.put("/api/v1/registry/signal-controllers/LSA-API", json=controller)
    assert resp.status_code == 201, resp.text
    assert resp.json()["record"]["detectors"][0]["kind"] == "stop_bar"
    truck = {"name": "Müllwagen", "capacity_l": 16000, "depot_id": "NO-DEPOT",
             "fractions": ["paper"]}
    bad = client.put("/api/v1/registry/trucks/T-API", json=truck)
    assert bad.status_code == 422 and "not a depot" in bad.text
    assert client.put("/api/v1/registry/sites/D-API", json={
        "name": "Betriebshof", "kind": "depot", "lon": 24.944, "lat": 60.17}).status_code == 201
    ok = client.put("/api/v1/registry/trucks/T-API", json={**truck, "depot_id": "D-API"})
    assert ok.status_code == 201, ok.text
    assert client.delete("/api/v1/registry/sites/D-API").status_code == 422  # not a kind


def test_a_lorawan_bin_is_registered_by_its_dev_eui(client: TestClient) -> None:
    lora = {**BIN, "sensor_id": None, "dev_eui": "70-B3-D5-7E-D0-05-A1-B2",
            "sensor_model": "dragino-ldds75", "empty_distance_mm": 1150, "full_distance_mm": 200}
    resp = client.put(URL, json=lora)
    assert resp.status_code == 201, resp.text
    assert resp.json()["record"]["dev_eui"] == "70b3d57ed005a1b2"
    other = client.put("/api/v1/registry/bins/B-API-2", json=lora)
    assert other.status_code == 422
    assert "DevEUI 70b3d57ed005a1b2 is on bin B-API-1" in other.text


def test_the_registry_pages_through_every_record_once(client: TestClient) -> None:
    ids = ["b-z", "B-a", "B-A", "B-10", "B-9"]
    for i, bin_id in enumerate(ids):
        body = {**BIN, "sensor_id": f"S-P{i}", "lon": 24.945 + i * 1e-4}
        assert client.put(f"/api/v1/registry/bins/{bin_id}", json=body).status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        page = client.get("/api/v1/registry/bins", params={
            "limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    mine = [s for s in seen if s in ids]
    assert sorted(mine) == sorted(ids) and len(mine) == len(set(mine))


def test_if_match_on_a_record_that_does_not_exist_is_refused(client: TestClient) -> None:
    resp = client.put("/api/v1/registry/bins/B-NEU", json=BIN, headers={"If-Match": '"v1"'})
    assert resp.status_code == 412 and "does not exist" in resp.json()["message"]
    assert client.get("/api/v1/registry/bins/B-NEU").status_code == 404
