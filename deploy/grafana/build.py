"""Write the Grafana dashboards (dashboards/*.json) and alert rules
(provisioning/alerting/cityops-rules.yaml) from the SQL in panels_sql.py.

The JSON and YAML are committed; run `python deploy/grafana/build.py` after changing this
file or panels_sql.py (a test fails while the committed files are out of date).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import panels_sql as q  # noqa: E402

DS = {"type": "grafana-postgresql-datasource", "uid": "cityops-pg"}
SCHEMA_VERSION = 39  # Grafana 11.0
FOLDER = "cityops"

Panel = dict[str, Any]


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


FILL_STEPS = thresholds(("green", None), ("yellow", 60), ("orange", 80), ("red", 95))


def target(sql: str, fmt: str = "table") -> dict[str, Any]:
    return {
        "refId": "A",
        "datasource": DS,
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": sql.strip(),
    }


def panel(
    kind: str,
    title: str,
    sql: str,
    grid: tuple[int, int, int, int],
    *,
    fmt: str = "table",
    unit: str | None = None,
    steps: dict[str, Any] | None = None,
    description: str = "",
    options: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    interval: str | None = None,
) -> Panel:
    x, y, w, h = grid
    defaults: dict[str, Any] = {}
    if unit:
        defaults["unit"] = unit
    if steps:
        defaults["thresholds"] = steps
        defaults["color"] = {"mode": "thresholds"}
    p: Panel = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [target(sql, fmt)],
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if interval:
        p["interval"] = interval
    return p


def by_name(field: str, **props: Any) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": k, "value": v} for k, v in props.items()],
    }


def text(title: str, content: str, grid: tuple[int, int, int, int]) -> Panel:
    x, y, w, h = grid
    return {
        "type": "text",
        "title": title,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "options": {"mode": "markdown", "content": content},
    }


def query_var(name: str, label: str, sql: str, *, multi: bool = True) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "query": sql,
        "definition": sql,
        "refresh": 1,
        "multi": multi,
        "includeAll": multi,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if multi else {},
        "sort": 1,
    }


def custom_var(
    name: str, label: str, values: list[str], current: str, *, multi: bool = False
) -> dict[str, Any]:
    return {
        "type": "custom",
        "name": name,
        "label": label,
        "query": ",".join(values),
        "multi": multi,
        "includeAll": multi,
        "current": (
            {"selected": True, "text": ["All"], "value": ["$__all"]}
            if multi
            else {"selected": True, "text": current, "value": current}
        ),
        "options": [
            {"selected": v == current, "text": v, "value": v} for v in values
        ],
    }


def dashboard(
    uid: str,
    title: str,
    panels: list[Panel],
    variables: list[dict[str, Any]],
    *,
    time_from: str,
    refresh: str,
    description: str,
) -> dict[str, Any]:
    for i, p in enumerate(panels, start=1):
        p["id"] = i
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["cityops"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {"type": "dashboards", "tags": ["cityops"], "asDropdown": True, "title": "cityops"}
        ],
        "annotations": {"list": []},
        "templating": {"list": variables},
        "panels": panels,
    }


def waste() -> dict[str, Any]:
    geomap_options = {
        "view": {"id": "fit", "lat": 0, "lon": 0, "zoom": 12},
        "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True},
        "basemap": {"type": "default", "name": "Basemap"},
        "layers": [
            {
                "type": "markers",
                "name": "Bins",
                "tooltip": True,
                "location": {"mode": "coords", "latitude": "latitude", "longitude": "longitude"},
                "config": {
                    "showLegend": True,
                    "style": {
                        "color": {"field": "fill_pct", "fixed": "green"},
                        "size": {"fixed": 6},
                        "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                        "opacity": 0.8,
                    },
                },
            }
        ],
        "tooltip": {"mode": "details"},
    }
    panels = [
        panel("geomap", "Bins by fill level", q.BIN_MAP, (0, 0, 14, 14), unit="percent",
              steps=FILL_STEPS, options=geomap_options,
              description="Latest reading of every bin; colour is the fill level."),
        panel("stat", "Bins over threshold now", q.BINS_OVER_THRESHOLD, (14, 0, 5, 5),
              unit="none", steps=thresholds(("green", None), ("orange", 1), ("red", 20)),
              description="Bins whose latest fill level is at or above $fill_threshold %."),
        panel("stat", "Predicted full by tonight",
              f"SELECT count(*) AS bins FROM ({q.PREDICTED_FULL}) p", (19, 0, 5, 5),
              unit="none", steps=thresholds(("green", None), ("orange", 1)),
              description="Bins whose 24-hour fill trend reaches 100 % by 22:00 local time."),
        panel("table", "Predicted full by tonight (22:00)", q.PREDICTED_FULL, (14, 5, 10, 9),
              overrides=[
                  by_name("fill_pct", unit="percent"),
                  by_name("predicted_pct_tonight", unit="percent"),
                  by_name("rate_pct_per_h", unit="percent", decimals=2),
              ],
              description="Linear trend of bin_fill_hourly over the last 24 hours."),
        panel("barchart", "Collections today per truck", q.COLLECTIONS_TODAY, (0, 14, 8, 8),
              unit="none", options={"xField": "truck_id", "stacking": "normal",
                                    "orientation": "horizontal"}),
        panel("table", "Route km and progress today", q.ROUTE_PROGRESS, (8, 14, 16, 8),
              overrides=[
                  by_name("route_km", unit="lengthkm", decimals=1),
                  by_name("progress_pct", unit="percent", decimals=0,
                          **{"custom.cellOptions": {"type": "gauge", "mode": "basic"}}),
              ],
              steps=thresholds(("red", None), ("orange", 50), ("green", 90)),
              description="Current route version of each truck for today; progress counts "
                          "stops done or skipped."),
        panel("table", "Overflows and fire-temperature alerts", q.BIN_ALERTS, (0, 22, 12, 9),
              overrides=[by_name("max_fill_pct", unit="percent"),
                         by_name("max_temperature_c", unit="celsius")],
              description=f"Hours in the range with a bin at {q.OVERFLOW_PCT} % or at "
                          f"{q.FIRE_C} °C or more (from bin_fill_hourly)."),
        panel("table", "Low battery and offline sensors", q.SENSOR_PROBLEMS, (12, 22, 12, 9),
              overrides=[by_name("battery_pct", unit="percent")],
              description=f"Battery under {q.BATTERY_LOW_PCT} %, offline (last will) or "
                          "silent for 6 hours."),
        panel("timeseries", "Average fill by district", q.FILL_BY_DISTRICT, (0, 31, 24, 8),
              fmt="time_series", unit="percent", steps=FILL_STEPS, interval="1h"),
    ]
    variables = [
        query_var("district", "District", q.VAR_BIN_DISTRICT),
        query_var("truck", "Truck", q.VAR_TRUCK),
        custom_var("fill_threshold", "Fill threshold %", ["70", "80", "90"], "80"),
    ]
    return dashboard("cityops-waste", "Waste operations", panels, variables,
                     time_from="now-24h", refresh="1m",
                     description="Bins, collections and routes of today.")


def traffic() -> dict[str, Any]:
    health_steps = {"ok": "green", "no actuations 1h": "orange", "stuck on": "red",
                    "no events 24h": "red"}
    stored_health = {"ok": "green", "no_activity": "orange", "stuck_on": "red"}
    modes = {"3": ("adaptive", "green"), "2": ("plan by command", "blue"),
             "1": ("fixed-time (own plan)", "orange"), "0": ("unknown", "text")}
    mode_mappings = [{"type": "value", "options": {
        k: {"text": t, "color": c, "index": i} for i, (k, (t, c)) in enumerate(modes.items())
    }}]

    def colour_text(mapping: dict[str, str]) -> dict[str, Any]:
        return {"mappings": [{"type": "value", "options": {
            k: {"color": c, "index": i} for i, (k, c) in enumerate(mapping.items())}}],
            "custom.cellOptions": {"type": "color-text"}}

    purdue_options = {
        "seriesMapping": "manual",
        "dims": {"frame": 0, "x": "cycle_start"},
        "series": [
            {"x": "cycle_start", "y": "arrival_s", "show": "points", "name": "arrivals",
             "pointColor": {"fixed": "text"}, "pointSize": {"fixed": 3}},
            {"x": "cycle_start", "y": "green_end_s", "show": "lines", "name": "end of green",
             "lineColor": {"fixed": "green"}},
            {"x": "cycle_start", "y": "yellow_end_s", "show": "lines", "name": "end of yellow",
             "lineColor": {"fixed": "yellow"}},
        ],
        "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    by_phase = "Per intersection and phase, from the stored 15-minute measures (signal_measures)."
    panels = [
        panel("timeseries", "Volume per intersection", q.VOLUME_BY_INTERSECTION, (0, 0, 16, 9),
              fmt="time_series", unit="short", interval="15m",
              description="Actuations of advance and count detectors (detector_counts_15m)."),
        panel("stat", "Detectors flagged", q.DETECTORS_FLAGGED, (16, 0, 8, 4), unit="none",
              steps=thresholds(("green", None), ("red", 1))),
        panel("table", "Control mode now", q.CONTROL_MODE_NOW, (16, 4, 8, 5),
              overrides=[by_name("mode", **colour_text(
                  {"adaptive": "green", "plan": "blue", "fixed": "orange", "unknown": "text"})),
                  by_name("since", unit="dateTimeAsLocal"),
                  by_name("measures_until", unit="dateTimeAsLocal")],
              description="Last control mode each controller reported (event 131) and how "
                          "far its measures are computed."),
        panel("timeseries", "Arrivals on green", q.AOG, (0, 9, 12, 8), fmt="time_series",
              unit="percent", interval="15m",
              steps=thresholds(("red", None), ("orange", 40), ("green", 60)),
              description=f"{by_phase} Arrivals in green over arrivals in complete cycles."),
        panel("timeseries", "Approach delay per vehicle", q.APPROACH_DELAY, (12, 9, 12, 8),
              fmt="time_series", unit="s", interval="15m",
              steps=thresholds(("green", None), ("orange", 20), ("red", 40)),
              description=f"{by_phase} Waiting from arrival in red to the next green."),
        panel("timeseries", "Split failures", q.SPLIT_FAILURES, (0, 17, 12, 8),
              fmt="time_series", unit="short", interval="15m",
              steps=thresholds(("green", None), ("red", 1)),
              description=f"{by_phase} Cycles with green occupancy and first-5-s red "
                          "occupancy both above 79 % (phases with a stop-bar detector)."),
        panel("timeseries", "Volume per phase", q.PHASE_VOLUME, (12, 17, 12, 8),
              fmt="time_series", unit="short", interval="15m",
              description=f"{by_phase} Arrivals at the stop line."),
        panel("state-timeline", "Adaptive control on/off", q.CONTROL_MODE, (0, 25, 24, 6),
              fmt="time_series", unit="none",
              overrides=[by_name("mode", mappings=mode_mappings)],
              options={"mergeValues": True, "showValue": "auto", "rowHeight": 0.8,
                       "alignValue": "left",
                       "legend": {"showLegend": False, "displayMode": "list",
                                  "placement": "bottom"},
                       "tooltip": {"mode": "single", "sort": "none"}},
              description="Control mode reported by the controllers (event 131): adaptive "
                          "(on), plan by command, or their own fixed-time plan (off or "
                          "fallback)."),
        panel("xychart", "Purdue coordination diagram", q.PURDUE, (0, 31, 24, 12),
              unit="s", options=purdue_options,
              description=f"Phase $phase of the first selected intersection, the last "
                          f"{q.PURDUE_MAX} of the range at most (raw events): each point is "
                          "a vehicle's arrival at the stop line, in seconds since its "
                          "cycle's begin green; below the green line it arrived on green."),
        panel("table", "Split monitor and measures", q.SPLIT_MONITOR, (0, 43, 24, 8),
              overrides=[by_name("pct_aog", unit="percent", decimals=1),
                         by_name("delay_per_vehicle_s", unit="s", decimals=1),
                         by_name("mean_green_s", unit="s", decimals=1),
                         by_name("ped_delay_mean_s", unit="s", decimals=1)],
              description=f"{by_phase} Totals over the range; terminations by type."),
        panel("table", "Detector health", q.DETECTOR_HEALTH, (0, 51, 12, 10),
              overrides=[by_name("health", **colour_text(health_steps))],
              description=f"Now. Stuck on: last event 'detector on' older than "
                          f"{q.STUCK_ON_MIN} minutes. From signal_events (last day) and "
                          "detector_counts_15m."),
        panel("table", "Volume per detector", q.VOLUME_BY_DETECTOR, (12, 51, 12, 10),
              overrides=[by_name("per_hour", unit="short", decimals=0)]),
        panel("table", "Detector health over the range", q.STORED_DETECTOR_HEALTH,
              (0, 61, 24, 8),
              overrides=[by_name("latest_status", **colour_text(stored_health)),
                         by_name("longest_on_s", unit="s", decimals=0)],
              description="Stored per 15-minute bin (signal_detector_health): bins stuck on "
                          "(an occupancy of 10 min or more) or without activity (no event "
                          "for an hour)."),
    ]
    variables = [
        query_var("intersection", "Intersection", q.VAR_INTERSECTION),
        query_var("phase", "Phase (Purdue)", q.VAR_PHASE, multi=False),
    ]
    return dashboard("cityops-traffic", "Traffic signals", panels, variables,
                     time_from="now-24h", refresh="5m",
                     description="Volumes, ATSPM measures, detector health, control mode and "
                                 "coordination of the signal controllers.")


def roadworks() -> dict[str, Any]:
    sectors = ["electricity", "gas", "district_heating", "water", "telecom", "sewer", "road",
               "other"]
    panels = [
        panel("stat", "Active today", q.RW_ACTIVE_COUNT, (0, 0, 6, 4), unit="none"),
        panel("stat", "Upcoming (14 days)", q.RW_UPCOMING_COUNT, (6, 0, 6, 4), unit="none"),
        panel("stat", "Clashes awaiting a decision", q.RW_OPEN_CLASHES_COUNT, (12, 0, 12, 4),
              unit="none", steps=thresholds(("green", None), ("red", 1))),
        panel("barchart", "By sector", q.RW_BY_SECTOR, (0, 4, 12, 8), unit="none",
              options={"xField": "sector", "stacking": "none", "orientation": "horizontal"}),
        panel("barchart", "By district", q.RW_BY_DISTRICT, (12, 4, 12, 8), unit="none",
              options={"xField": "district", "stacking": "none", "orientation": "horizontal"}),
        panel("table", "Active today and upcoming", q.RW_LIST, (0, 12, 24, 10),
              overrides=[by_name("starts", unit="dateTimeAsLocal"),
                         by_name("ends", unit="dateTimeAsLocal")]),
        panel("table", "Clashes awaiting a decision", q.RW_OPEN_CLASHES, (0, 22, 24, 8)),
    ]
    variables = [
        query_var("district", "District", q.VAR_RW_DISTRICT),
        custom_var("sector", "Sector", sectors, "All", multi=True),
    ]
    return dashboard("cityops-roadworks", "Roadworks", panels, variables,
                     time_from="now-7d", refresh="15m",
                     description="Works active today and in the next 14 days, open clashes.")


def platform() -> dict[str, Any]:
    panels = [
        panel("timeseries", "Messages per second by kind", q.MESSAGES_PER_S, (0, 0, 12, 8),
              fmt="time_series", unit="reqps", interval="1m"),
        panel("timeseries", "Ingest received per second", q.INGEST_RATE, (12, 0, 12, 8),
              fmt="time_series", unit="reqps"),
        panel("timeseries", "Ingest lag (p95, reading to stored)", q.INGEST_LAG, (0, 8, 12, 8),
              fmt="time_series", unit="s", interval="1m",
              steps=thresholds(("green", None), ("orange", 5), ("red", 30))),
        panel("timeseries", "Backlog and batch latency", q.INGEST_BACKLOG, (12, 8, 12, 8),
              fmt="time_series", unit="short", interval="1m",
              overrides=[by_name("batch_latency_ms", unit="ms")]),
        panel("table", "Dead letters by reason", q.DEAD_LETTERS, (0, 16, 12, 8)),
        panel("table", "Devices online", q.DEVICES_ONLINE, (12, 16, 12, 8)),
        panel("stat", "Database size", q.DATABASE_SIZE, (0, 24, 6, 6), unit="bytes"),
        panel("table", "Largest tables", q.LARGEST_TABLES, (6, 24, 18, 6),
              overrides=[by_name("bytes", unit="bytes")]),
    ]
    return dashboard("cityops-platform", "Platform health", panels, [],
                     time_from="now-6h", refresh="30s",
                     description="Ingest throughput, lag, dead letters, devices, database.")


def alert_rule(
    uid: str, title: str, sql: str, op: str, value: float, *, for_: str, summary: str,
    severity: str,
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "condition": "B",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": 600, "to": 0},
                "datasourceUid": DS["uid"],
                "model": {**target(sql), "intervalMs": 60000, "maxDataPoints": 43200},
            },
            {
                "refId": "B",
                "relativeTimeRange": {"from": 0, "to": 0},
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "B",
                    "type": "threshold",
                    "expression": "A",
                    "datasource": {"type": "__expr__", "uid": "__expr__"},
                    "conditions": [{"evaluator": {"type": op, "params": [value]}}],
                },
            },
        ],
        "noDataState": "OK",
        "execErrState": "Error",
        "for": for_,
        "labels": {"team": "cityops", "severity": severity},
        "annotations": {"summary": summary},
        "isPaused": False,
    }


def alert_rules() -> dict[str, Any]:
    rules = [
        alert_rule("cityops-bin-overflow", "Bin overflow", q.ALERT_BIN_OVERFLOW, "gt",
                   q.OVERFLOW_PCT - 0.5, for_="10m", severity="warning",
                   summary="Bin {{ $labels.bin_id }} ({{ $labels.district }}) is full."),
        alert_rule("cityops-fire-temperature", "Bin fire temperature", q.ALERT_FIRE, "gt",
                   q.FIRE_C - 0.5, for_="0s", severity="critical",
                   summary="Bin {{ $labels.bin_id }} reports {{ $values.A }} °C: possible fire."),
        alert_rule("cityops-device-offline", "Device offline", q.ALERT_DEVICE_OFFLINE, "gt",
                   10, for_="5m", severity="warning",
                   summary="{{ $labels.kind }} {{ $labels.device_id }} is offline."),
        alert_rule("cityops-ingest-lag", "Ingest lag", q.ALERT_INGEST_LAG, "gt", 30,
                   for_="5m", severity="critical",
                   summary="p95 ingest lag is {{ $values.A }} s (over 30 s)."),
        alert_rule("cityops-detector-stuck", "Detector stuck on", q.ALERT_DETECTOR_STUCK,
                   "gt", q.STUCK_ON_MIN, for_="5m", severity="warning",
                   summary="Detector {{ $labels.detector }} at {{ $labels.controller_id }} "
                           "has been on for {{ $values.A }} minutes."),
    ]
    return {
        "apiVersion": 1,
        "groups": [
            {"orgId": 1, "name": "cityops", "folder": FOLDER, "interval": "1m", "rules": rules}
        ],
    }


DASHBOARDS = {
    "waste.json": waste,
    "traffic.json": traffic,
    "roadworks.json": roadworks,
    "platform.json": platform,
}
RULES_FILE = "provisioning/alerting/cityops-rules.yaml"


def render() -> dict[str, str]:
    """Relative path -> file content of every generated file."""
    out = {
        f"dashboards/{name}": json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }
    out[RULES_FILE] = (
        "# Generated by deploy/grafana/build.py: edit that file, then run it.\n"
        + yaml.safe_dump(alert_rules(), sort_keys=False, allow_unicode=True, width=100)
    )
    return out


def main() -> int:
    for rel, content in render().items():
        (HERE / rel).write_text(content, encoding="utf-8")
        print(f"wrote deploy/grafana/{rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
