"""Dashboard JSON structure. No Grafana dashboard JSON Schema ships in a registry package,
so the dashboards are decoded with grafana-foundation-sdk's typed models (Grafana's own
generated types: a field of the wrong shape fails to decode) and the rest of what Grafana
needs is checked here by hand. The committed files must equal build.py's output."""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.models import dashboard as sdk
from grafana_foundation_sdk.models import statetimeline, units, xychart

from tests.grafana.support import GRAFANA, dashboards

DS_UID = "cityops-pg"
KNOWN_UNITS = {v for k, v in vars(units).items() if k[:1].isupper() and isinstance(v, str)}
PANEL_TYPES = {"timeseries", "table", "stat", "barchart", "geomap", "text", "gauge",
               "state-timeline", "xychart"}
BUILTIN = {"__timeFilter", "__timeGroupAlias", "__timeGroup", "__timeFrom", "__timeTo",
           "__interval", "__interval_ms"}


def _units(panel: dict[str, Any]) -> list[str]:
    fc = panel.get("fieldConfig", {})
    found = [fc.get("defaults", {}).get("unit")]
    for o in fc.get("overrides", []):
        found += [p["value"] for p in o["properties"] if p["id"] == "unit"]
    return [u for u in found if u]


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_structure(name: str) -> None:
    d = dashboards()[name]
    decoded = sdk.Dashboard.from_json(d)
    assert decoded.uid == d["uid"] and decoded.title
    assert len(decoded.panels or []) == len(d["panels"])
    assert re.fullmatch(r"[a-z0-9-]{8,40}", d["uid"])
    assert d["schemaVersion"] >= 39  # Grafana 11
    assert d["time"]["from"].startswith("now-") and d["refresh"]
    variables = {v["name"] for v in d["templating"]["list"]}
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert p["type"] in PANEL_TYPES, p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        for unit in _units(p):
            assert unit in KNOWN_UNITS, f"{p['title']}: unknown unit {unit}"
        for t in p.get("targets", []):
            assert p["datasource"]["uid"] == t["datasource"]["uid"] == DS_UID
            assert t["refId"] and t["rawQuery"] and t["format"] in ("table", "time_series")
            used = set(re.findall(r"\$\{?(\w+)", t["rawSql"]))
            assert used <= variables | BUILTIN, f"{p['title']}: {used - variables - BUILTIN}"
            if t["format"] == "time_series":
                assert "$__timeFilter" in t["rawSql"]
        if p["type"] == "xychart":
            opts = xychart.Options.from_json(p["options"])
            fields = {s.y for s in opts.series} | {s.x for s in opts.series}
            assert opts.dims.x and fields, p["title"]
        if p["type"] == "state-timeline":
            statetimeline.Options.from_json(p["options"])
        if p["type"] == "geomap":
            layer = p["options"]["layers"][0]
            assert layer["location"] == {
                "mode": "coords", "latitude": "latitude", "longitude": "longitude"}
    for v in d["templating"]["list"]:
        assert v["type"] in ("query", "custom")
        if v["type"] == "query":
            assert v["datasource"]["uid"] == DS_UID


def test_no_overlapping_panels() -> None:
    for name, d in dashboards().items():
        cells: set[tuple[int, int]] = set()
        for p in d["panels"]:
            g = p["gridPos"]
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                    for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & mine, f"{name}: {p['title']} overlaps"
            cells |= mine


def test_committed_files_match_build() -> None:
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    assert spec and spec.loader
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for rel, content in build.render().items():
        assert (GRAFANA / rel).read_text(encoding="utf-8") == content, (
            f"{rel} is out of date: run python deploy/grafana/build.py")


def test_provisioning_files() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/cityops.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["uid"] == DS_UID and source["type"] == "grafana-postgresql-datasource"
    assert "password" in source["secureJsonData"] and "${" in source["secureJsonData"]["password"]
    dash = yaml.safe_load((GRAFANA / "provisioning/dashboards/cityops.yaml").read_text())
    assert dash["providers"][0]["type"] == "file"
    rules = yaml.safe_load((GRAFANA / "provisioning/alerting/cityops-rules.yaml").read_text())
    uids = [r["uid"] for g in rules["groups"] for r in g["rules"]]
    assert len(uids) == len(set(uids)) == 5
    for g in rules["groups"]:
        for r in g["rules"]:
            refs = {d["refId"] for d in r["data"]}
            assert r["condition"] in refs
            assert all(d["datasourceUid"] in (DS_UID, "__expr__") for d in r["data"])
