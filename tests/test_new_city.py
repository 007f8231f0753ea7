"""docs/city.md walked as a new city's IT would: a made-up second city set up from files
alone, through the same commands, with no code and no SQL by hand.

Musterstadt am Main (tests/support/musterstadt.py) differs from the demo city in every
respect: bounds near Offenbach, EPSG:25832, districts as polygons, German addresses with
umlauts. Steps: check the profile, apply it, import the registry, make the broker
accounts, plan the first routes, register a roadwork, publish the first daily overview
and read the feeds; a bad import file changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cityops.api.app import create_app
from cityops.api.cli import main
from cityops.ingest.config import Settings, load_settings
from cityops.roadworks.schemas import spec_to_payload
from cityops.routing.daily import plan_day
from cityops.routing.planning import BERLIN
from cityops.routing.solver import OrToolsEngine
from tests.api.authn import bearer, with_auth
from tests.api.testclient import TestClient
from tests.roadworks.factories import make_spec
from tests.support import musterstadt
from tests.support.clock import NOW

MANAGE = "/api/v1/roadworks/manage"
# A fixed Tuesday evening for the plan (the dispatch policy's next chance differs at the
# weekend), as in tests/routing/test_daily.py.
PLAN_NOW = datetime(2026, 3, 3, 18, 0, tzinfo=UTC)


def _roadwork() -> dict[str, Any]:
    """Cable works on the Bürgerstraße, in the district Bürgerviertel, from tomorrow."""
    payload = spec_to_payload(make_spec(street="Bürgerstraße"))
    line = [[8.7625, 50.1], [8.7665, 50.1]]
    start = (NOW + timedelta(days=1)).astimezone(BERLIN).replace(hour=7, minute=0, second=0)
    payload.update({
        "title": "Stromkabel Bürgerstraße",
        "footprint": {"type": "Polygon", "coordinates": [[
            [8.7625, 50.09996], [8.7665, 50.09996], [8.7665, 50.10004], [8.7625, 50.10004],
            [8.7625, 50.09996]]]},
        "streets": [{"name": "Bürgerstraße", "geometry": {"type": "LineString",
                                                         "coordinates": line}}],
        "planned_start": start.isoformat(),
        "planned_end": (start + timedelta(days=12)).isoformat(),
        "public_text": "Vollsperrung der Bürgerstraße zwischen Löwenstraße und Ährenweg.",
    })
    return payload


@pytest.mark.slow
def test_a_new_city_is_set_up_from_files_alone(
    tmp_path: Path, db_url: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = musterstadt.write_city(tmp_path / "musterstadt")
    monkeypatch.setenv("CITYOPS_DATABASE_URL", db_url)
    monkeypatch.setenv("CITYOPS_TOPIC_PREFIX", topic_prefix)
    monkeypatch.setenv("CITYOPS_CITY_PROFILE", str(files["profile"]))
    monkeypatch.setenv("CITYOPS_ALLOW_DEMO_CITY", "0")  # a real city needs no demo switch

    # 1-2. the profile is valid; 3. its sites and street network go in
    assert main(["city", "check", str(files["profile"])]) == 0
    assert main(["city", "apply"]) == 0
    # 4. the registry, from the city's own files
    assert main(["registry", "import", str(files["trucks"]), str(files["bins"]),
                 str(files["controllers"])]) == 0
    out = capsys.readouterr().out
    assert "bins: 12 new" in out and "trucks: 2 new" in out

    # a bad file: row-level errors, nothing changes
    bad = files["bins"].parent / "nachtrag.csv"
    bad.write_text("bin_id;lon;lat;street;fraction;capacity_l\n"
                   "MS-B050;8,7700;50,1000;Löwenstraße;paper;240\n"
                   "MS-B051;8,7700;50,1000;Löwenstraße;Papier;240\n", encoding="utf-8")
    assert main(["registry", "import", str(bad)]) == 1
    assert f"{bad}:3: fraction (column 5): Input should be" in capsys.readouterr().out
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM bins").fetchone() == (12,)

    # 5. broker accounts for every device
    auth = tmp_path / "mosquitto"
    assert main(["mqtt", "credentials", "--out", str(auth)]) == 0
    acl = (auth / "cityops.acl").read_text(encoding="utf-8")
    assert "user MS-S001" in acl and "user MS-LSA-01" in acl and "user MS-EB-101" in acl

    # 6. the first plan, on the city's own streets
    settings = load_settings()
    with psycopg.connect(db_url) as conn:
        for (bin_id, sensor) in conn.execute("SELECT bin_id, sensor_id FROM bins").fetchall():
            for h in range(0, 48, 4):
                fill = 10 + 80 * h / 44
                conn.execute("INSERT INTO bin_readings (bin_id, ts, sensor_id, fill_pct) "
                             "VALUES (%s, %s, %s, %s)",
                             (bin_id, PLAN_NOW - timedelta(hours=48 - h), sensor, fill))
    day = (PLAN_NOW.astimezone(BERLIN) + timedelta(days=1)).date()
    report = plan_day(settings, day, time_limit_s=3, engine=OrToolsEngine(solution_limit=50),
                      now=PLAN_NOW, push=False)
    assert report.violations == []
    served = {s.bin_id for r in report.routes for s in r.stops if s.kind == "stop"}
    assert served and all(b.startswith("MS-B") for b in served)
    first = report.routes[0]
    assert first.stops[0].site_id == "BH-SUED" and first.stops[-1].site_id == "BH-SUED"
    lons = [c[0] for r in report.routes for c in r.geometry.coordinates]
    assert lons and all(8.74 <= lon <= 8.80 for lon in lons)  # Musterstadt's streets

    # 7. a roadwork is accepted in its real district and published with the city's name
    api_settings = with_auth(Settings(**{**settings.model_dump(), "api_rate_limit_per_s": 0}))
    with TestClient(create_app(api_settings, db_timeout_s=5.0),
                    headers=bearer(api_settings, "admin", sub="tiefbau")) as client:
        created = client.post(f"{MANAGE}/works", json=_roadwork())
        assert created.status_code == 201, created.text
        work = created.json()
        assert work["district"] == "Bürgerviertel"
        ref = work["reference"]
        for step in ("submitted", "in_consultation", "approved"):
            path = f"{MANAGE}/works/{ref}/" + ("submit" if step == "submitted" else "transitions")
            resp = client.post(path, json=None if step == "submitted" else {"to": step})
            assert resp.status_code == 200, resp.text
        wzdx = client.get("/api/v1/roadworks/feeds/wzdx").json()
        assert wzdx["feed_info"]["publisher"] == musterstadt.PUBLISHER
        assert [f["id"] for f in wzdx["features"]] != []
        page = client.get("/roadworks")
        assert "z. B. Mühlgasse" in page.text and "Unioninkatu" not in page.text
        outside = {**_roadwork(), "title": "Helsinki"}
        outside["footprint"] = spec_to_payload(make_spec())["footprint"]  # the demo city
        refused = client.post(f"{MANAGE}/works", json=outside)
        assert refused.status_code == 422 and "outside" in refused.text

    # 8. the first daily overview
    overview = tmp_path / "overview"
    assert main(["roadworks", "publish-daily", "--out", str(overview),
                 "--date", NOW.astimezone(BERLIN).date().isoformat()]) == 0
    html_files = list(overview.rglob("*.html"))
    assert html_files
    text = "\n".join(p.read_text(encoding="utf-8") for p in html_files)
    assert "Stromkabel Bürgerstraße" in text and musterstadt.PUBLISHER in text
    assert "Bürgerviertel" in text
