"""Every panel's, variable's and alert rule's SQL, with Grafana's macros expanded, runs on a
seeded database as the read-only Grafana role and returns the columns the panel reads.

Plain PostgreSQL storage mode only: TimescaleDB is not installable on the test machines.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from tests.grafana.macros import expand
from tests.grafana.seed import seed
from tests.grafana.support import GRAFANA, dashboards
from tests.support.clock import now_utc

ADMIN_URL = os.environ.get("CITYOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

VARIABLES: dict[str, list[str] | str] = {
    "district": ["Mitte", "Nord", "-"],
    "truck": ["t1", "t2"],
    "fill_threshold": "80",
    "intersection": ["c1"],
    "phase": "2",
    "sector": ["water", "telecom", "road"],
}

# Columns each panel reads (dashboard file, panel title) -> exact column names in order.
EXPECTED: dict[tuple[str, str], list[str]] = {
    ("waste.json", "Bins by fill level"): [
        "bin_id", "latitude", "longitude", "fill_pct", "temperature_c", "battery_pct",
        "last_reading"],
    ("waste.json", "Bins over threshold now"): ["bins_over_threshold"],
    ("waste.json", "Predicted full by tonight"): ["bins"],
    ("waste.json", "Predicted full by tonight (22:00)"): [
        "bin_id", "district", "street", "fill_pct", "rate_pct_per_h", "predicted_pct_tonight"],
    ("waste.json", "Collections today per truck"): ["truck_id", "collected", "skipped"],
    ("waste.json", "Route km and progress today"): [
        "truck_id", "version", "route_km", "stops_planned", "stops_done", "progress_pct"],
    ("waste.json", "Overflows and fire-temperature alerts"): [
        "time", "bin_id", "district", "max_fill_pct", "max_temperature_c", "alert"],
    ("waste.json", "Low battery and offline sensors"): [
        "bin_id", "sensor_id", "district", "battery_pct", "state", "last_seen", "problem"],
    ("waste.json", "Average fill by district"): ["time", "metric", "avg_fill_pct"],
    ("traffic.json", "Volume per intersection"): ["time", "metric", "vehicles"],
    ("traffic.json", "Detectors flagged"): ["detectors_flagged"],
    ("traffic.json", "Detector health"): [
        "controller_id", "detector", "phase", "kind", "actuations_1h", "last_change", "health"],
    ("traffic.json", "Volume per detector"): [
        "controller_id", "detector", "phase", "kind", "actuations", "per_hour"],
    ("traffic.json", "Control mode now"): [
        "controller_id", "name", "mode", "since", "measures_until"],
    ("traffic.json", "Arrivals on green"): ["time", "metric", "pct_aog"],
    ("traffic.json", "Approach delay per vehicle"): ["time", "metric", "delay_per_vehicle_s"],
    ("traffic.json", "Split failures"): ["time", "metric", "split_failures"],
    ("traffic.json", "Volume per phase"): ["time", "metric", "vehicles"],
    ("traffic.json", "Adaptive control on/off"): ["time", "metric", "mode"],
    ("traffic.json", "Purdue coordination diagram"): [
        "cycle_start", "arrival_s", "green_end_s", "yellow_end_s"],
    ("traffic.json", "Split monitor and measures"): [
        "controller_id", "phase", "volume", "pct_aog", "delay_per_vehicle_s", "cycles",
        "split_failures", "gap_outs", "max_outs", "force_offs", "mean_green_s",
        "yellow_actuations", "red_actuations", "ped_delay_mean_s"],
    ("traffic.json", "Detector health over the range"): [
        "controller_id", "detector", "phase", "kind", "actuations", "longest_on_s",
        "bins_stuck_on", "bins_no_activity", "latest_status"],
    ("roadworks.json", "Active today"): ["active_today"],
    ("roadworks.json", "Upcoming (14 days)"): ["upcoming_14d"],
    ("roadworks.json", "Clashes awaiting a decision"): ["clashes_open"],
    ("roadworks.json", "By sector"): ["sector", "active_today", "upcoming_14d"],
    ("roadworks.json", "By district"): ["district", "active_today", "upcoming_14d"],
    ("roadworks.json", "Active today and upcoming"): [
        "reference", "title", "sector", "district", "status", "period", "starts", "ends",
        "promoter"],
    ("platform.json", "Messages per second by kind"): ["time", "metric", "messages_per_s"],
    ("platform.json", "Ingest received per second"): ["time", "metric", "received_per_s"],
    ("platform.json", "Ingest lag (p95, reading to stored)"): ["time", "metric", "lag_s"],
    ("platform.json", "Backlog and batch latency"): ["time", "backlog", "batch_latency_ms"],
    ("platform.json", "Dead letters by reason"): [
        "reason", "dead_letters", "not_replayed", "last_received"],
    ("platform.json", "Devices online"): ["kind", "online", "offline", "never_seen"],
    ("platform.json", "Database size"): ["database_bytes"],
    ("platform.json", "Largest tables"): ["relation", "bytes"],
}
# The roadworks dashboard has a stat and a table titled alike; the table's columns:
CLASH_TABLE = [
    "finding", "severity", "work_a", "work_b", "street", "district", "message", "first_found_at"]


class Db:
    def __init__(self, url: str, role: str) -> None:
        self.url = url
        self.role = role

    def run(self, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with psycopg.connect(self.url) as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(self.role)))
            conn.execute("SET default_transaction_read_only = on")
            conn.execute("SET statement_timeout = '5s'")
            cur = conn.execute(query)
            assert cur.description is not None
            return [c.name for c in cur.description], cur.fetchall()


@pytest.fixture(scope="module")
def db(template_db: str) -> Iterator[Db]:
    """One seeded database for the module, with the read-only role of readonly-role.sql
    (under a unique name: roles are cluster-wide)."""
    name = f"cityops_g_{uuid.uuid4().hex[:10]}"
    role = f"cityops_grafana_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        role_sql = (GRAFANA / "readonly-role.sql").read_text().replace("cityops_grafana", role)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(role_sql.encode())
        seed(url)
        yield Db(url, role)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _expand(query: str, interval: str = "15m") -> str:
    now = now_utc()
    return expand(query, time_from=now - timedelta(days=2), time_to=now + timedelta(minutes=1),
                  interval=interval, variables=VARIABLES)


def _sql_panels() -> list[tuple[str, dict[str, Any]]]:
    return [(f, p) for f, d in dashboards().items() for p in d["panels"] if p.get("targets")]


def _ids() -> list[str]:
    return [f"{f}:{p['title']}" for f, p in _sql_panels()]


@pytest.mark.parametrize(("file", "panel"), _sql_panels(), ids=_ids())
def test_panel_sql_returns_expected_columns(db: Db, file: str, panel: dict[str, Any]) -> None:
    expected = EXPECTED.get((file, panel["title"]))
    if panel["type"] == "table" and panel["title"] == "Clashes awaiting a decision":
        expected = CLASH_TABLE
    assert expected is not None, f"no expected columns for {file}: {panel['title']}"
    interval = panel.get("interval", "15m")
    for t in panel["targets"]:
        cols, _rows = db.run(_expand(t["rawSql"], interval))
        assert cols == expected
        if t["format"] == "time_series":
            assert cols[0] == "time"


def test_panels_return_the_seeded_situation(db: Db) -> None:
    panels = {(f, p["title"], p["type"]): p for f, p in _sql_panels()}

    def rows(file: str, title: str, kind: str) -> list[tuple[Any, ...]]:
        p = panels[(file, title, kind)]
        return db.run(_expand(p["targets"][0]["rawSql"], p.get("interval", "15m")))[1]

    assert len(rows("waste.json", "Bins by fill level", "geomap")) == 3
    assert rows("waste.json", "Bins over threshold now", "stat") == [(2,)]
    alerts = rows("waste.json", "Overflows and fire-temperature alerts", "table")
    assert {(r[1], r[5]) for r in alerts} >= {("b2", "overflow"), ("b2", "fire temperature")}
    problems = {r[0]: r[6] for r in rows("waste.json", "Low battery and offline sensors", "table")}
    assert problems == {"b2": "offline", "b3": "silent 6h"}
    route = rows("waste.json", "Route km and progress today", "table")
    assert [(r[0], r[1], float(r[2]), r[3], r[4], float(r[5])) for r in route] == [
        ("t1", 2, 12.5, 2, 1, 50.0)]
    health = {r[1]: r[6] for r in rows("traffic.json", "Detector health", "table")}
    assert health == {1: "ok", 2: "no events 24h", 3: "stuck on"}
    assert rows("traffic.json", "Detectors flagged", "stat") == [(2,)]
    # stored measures, computed from the seeded events by the store
    assert rows("traffic.json", "Control mode now", "table")[0][2] == "adaptive"
    timeline = rows("traffic.json", "Adaptive control on/off", "state-timeline")
    assert [r[2] for r in timeline] == [1, 3]  # fixed-time 3 h ago, then adaptive
    aog = rows("traffic.json", "Arrivals on green", "timeseries")
    values = [float(r[2]) for r in aog if r[1] == "c1 phase 2" and r[2] is not None]
    assert values and all(0 <= v <= 100 for v in values)
    assert all(r[2] is None for r in aog if r[1] == "c1 phase 4")  # no cycles, no detector
    monitor = {r[1]: r for r in rows("traffic.json", "Split monitor and measures", "table")}
    assert monitor[2][5] >= 40 and float(monitor[2][10]) == 40.0  # cycles, mean green 40 s
    stored = {r[1]: r for r in rows("traffic.json", "Detector health over the range", "table")}
    assert stored[3][6] > 0 and stored[3][8] == "stuck_on"  # detector 3: on for 40 min
    assert stored[2][7] > 0 and stored[2][8] == "no_activity"  # never reports
    purdue = rows("traffic.json", "Purdue coordination diagram", "xychart")
    assert purdue and {(float(r[2]), float(r[3])) for r in purdue} == {(40.0, 44.0)}
    assert all(0 <= float(r[1]) < 90 for r in purdue)
    newest = max(r[0] for r in purdue)
    assert min(r[0] for r in purdue) >= newest - timedelta(hours=2)  # short range enforced
    assert rows("roadworks.json", "Active today", "stat") == [(1,)]
    assert rows("roadworks.json", "Upcoming (14 days)", "stat") == [(1,)]
    assert len(rows("roadworks.json", "Clashes awaiting a decision", "table")) == 1
    kinds = {r[1] for r in rows("platform.json", "Messages per second by kind", "timeseries")}
    assert kinds == {"bin", "signal", "truck position", "truck event"}


def test_variable_queries_run(db: Db) -> None:
    for file, d in dashboards().items():
        for var in d["templating"]["list"]:
            if var["type"] == "query":
                cols, rows = db.run(_expand(var["query"]))  # may use other variables
                assert rows, f"{file}: variable {var['name']} has no values"
                assert cols[0] in ("__value", cols[0])


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((GRAFANA / "provisioning/alerting/cityops-rules.yaml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_alert_rule_sql_returns_labels_and_one_value(db: Db) -> None:
    firing = {}
    for rule in _rules():
        query = next(d for d in rule["data"] if d["refId"] == "A")["model"]["rawSql"]
        cols, rows = db.run(_expand(query))
        assert cols[-1] == "value", rule["uid"]
        for row in rows:
            assert all(isinstance(v, str) for v in row[:-1])
            assert row[-1] is not None
        threshold = next(d for d in rule["data"] if d["refId"] == "B")["model"]
        limit = threshold["conditions"][0]["evaluator"]["params"][0]
        firing[rule["uid"]] = [r[:-1] for r in rows if float(r[-1]) > limit]
    assert firing == {
        "cityops-bin-overflow": [("b2", "Nord")],
        "cityops-fire-temperature": [("b2", "Nord")],
        "cityops-device-offline": [("bin", "s2")],
        "cityops-ingest-lag": [()],  # b3 was stored 3 minutes after its reading
        "cityops-detector-stuck": [("c1", "3")],
    }
