# ruff: noqa: E501
"""SQL of every Grafana panel and alert rule, in one place so that build.py and the tests
share it. Grafana macros ($__timeFilter, $__timeGroupAlias, $__interval) and template
variables ($district, $truck, $intersection, ...) are expanded by Grafana at query time.

Long ranges read the rollup views (bin_fill_hourly, detector_counts_15m) and the stored
traffic measures (signal_measures, signal_detector_health, signal_mode_history, written by
`cityops traffic measures-service`); raw tables are only read for "now" panels through
their primary key or a short, BRIN-indexed time window, and by the Purdue diagram, which
reads at most PURDUE_MAX the end of the range.
"""

from __future__ import annotations

TZ = "Europe/Berlin"
TODAY_START = f"(date_trunc('day', now() AT TIME ZONE '{TZ}') AT TIME ZONE '{TZ}')"
TODAY = f"(now() AT TIME ZONE '{TZ}')::date"
TONIGHT = f"((date_trunc('day', now() AT TIME ZONE '{TZ}') + interval '22 hours') AT TIME ZONE '{TZ}')"
DISTRICT = "coalesce(b.district, '-') IN ($district)"

OVERFLOW_PCT = 100
FIRE_C = 60
BATTERY_LOW_PCT = 20
STUCK_ON_MIN = 15

# --- template variables -------------------------------------------------------------------
VAR_BIN_DISTRICT = "SELECT DISTINCT coalesce(district, '-') FROM bins ORDER BY 1"
VAR_TRUCK = "SELECT truck_id FROM trucks ORDER BY 1"
VAR_INTERSECTION = (
    "SELECT controller_id AS __value, name AS __text FROM signal_controllers ORDER BY name"
)
VAR_RW_DISTRICT = "SELECT DISTINCT district FROM roadworks ORDER BY 1"
VAR_PHASE = (
    "SELECT DISTINCT phase FROM signal_phases WHERE controller_id IN ($intersection) ORDER BY 1"
)

# --- waste -------------------------------------------------------------------------------
BIN_MAP = f"""
SELECT b.bin_id, ST_Y(b.geom) AS latitude, ST_X(b.geom) AS longitude,
       s.fill_pct, s.temperature_c, s.battery_pct, s.ts AS last_reading
FROM bins b LEFT JOIN bin_state s USING (bin_id)
WHERE {DISTRICT}
"""

BINS_OVER_THRESHOLD = f"""
SELECT count(*) AS bins_over_threshold
FROM bin_state s JOIN bins b USING (bin_id)
WHERE s.fill_pct >= $fill_threshold AND {DISTRICT}
"""

PREDICTED_FULL = f"""
WITH trend AS (
    SELECT bin_id, regr_slope(avg_fill_pct, extract(epoch FROM bucket) / 3600) AS rate
    FROM bin_fill_hourly
    WHERE bucket >= now() - interval '24 hours'
    GROUP BY bin_id
), p AS (
    SELECT b.bin_id, b.district, b.street, s.fill_pct,
           greatest(coalesce(t.rate, 0), 0) AS rate_pct_per_h,
           s.fill_pct + greatest(coalesce(t.rate, 0), 0)
               * greatest(extract(epoch FROM {TONIGHT} - now()) / 3600, 0) AS predicted_pct
    FROM bins b JOIN bin_state s USING (bin_id) LEFT JOIN trend t USING (bin_id)
    WHERE {DISTRICT}
)
SELECT bin_id, district, street, fill_pct, rate_pct_per_h,
       least(predicted_pct, 100) AS predicted_pct_tonight
FROM p
WHERE predicted_pct >= 100
ORDER BY predicted_pct DESC, bin_id
"""

COLLECTIONS_TODAY = f"""
SELECT truck_id,
       count(*) FILTER (WHERE kind = 'stop_done') AS collected,
       count(*) FILTER (WHERE kind = 'stop_skipped') AS skipped
FROM truck_events
WHERE ts >= {TODAY_START} AND truck_id IN ($truck)
GROUP BY truck_id
ORDER BY truck_id
"""

ROUTE_PROGRESS = f"""
WITH r AS (
    SELECT cr.truck_id, cr.version, cr.distance_m,
           (SELECT count(*) FROM route_stops st
             WHERE st.truck_id = cr.truck_id AND st.plan_date = cr.plan_date
               AND st.version = cr.version AND st.kind = 'stop') AS stops_planned,
           (SELECT count(DISTINCT e.bin_id) FROM truck_events e
             WHERE e.truck_id = cr.truck_id AND e.ts >= {TODAY_START}
               AND e.kind IN ('stop_done', 'stop_skipped')) AS stops_done
    FROM current_routes cr
    WHERE cr.plan_date = {TODAY} AND cr.truck_id IN ($truck)
)
SELECT truck_id, version, distance_m / 1000.0 AS route_km, stops_planned, stops_done,
       least(100.0, 100.0 * stops_done / nullif(stops_planned, 0)) AS progress_pct
FROM r
ORDER BY truck_id
"""

BIN_ALERTS = f"""
SELECT h.bucket AS time, h.bin_id, b.district, h.max_fill_pct, h.max_temperature_c,
       CASE WHEN h.max_temperature_c >= {FIRE_C} THEN 'fire temperature'
            ELSE 'overflow' END AS alert
FROM bin_fill_hourly h JOIN bins b USING (bin_id)
WHERE $__timeFilter(h.bucket)
  AND (h.max_fill_pct >= {OVERFLOW_PCT} OR h.max_temperature_c >= {FIRE_C})
  AND {DISTRICT}
ORDER BY h.bucket DESC, h.bin_id
LIMIT 500
"""

FILL_BY_DISTRICT = f"""
SELECT $__timeGroupAlias(h.bucket, $__interval), coalesce(b.district, '-') AS metric,
       avg(h.avg_fill_pct) AS avg_fill_pct
FROM bin_fill_hourly h JOIN bins b USING (bin_id)
WHERE $__timeFilter(h.bucket) AND {DISTRICT}
GROUP BY 1, 2
ORDER BY 1
"""

SENSOR_PROBLEMS = f"""
SELECT b.bin_id, b.sensor_id, b.district, s.battery_pct, d.state, d.last_seen,
       CASE WHEN d.state = 'offline' THEN 'offline'
            WHEN d.last_seen IS NULL OR d.last_seen < now() - interval '6 hours' THEN 'silent 6h'
            ELSE 'battery low' END AS problem
FROM bins b
LEFT JOIN bin_state s USING (bin_id)
LEFT JOIN device_status d ON d.kind = 'bin' AND d.device_id = b.sensor_id
WHERE b.sensor_id IS NOT NULL AND {DISTRICT}
  AND (s.battery_pct < {BATTERY_LOW_PCT} OR d.state = 'offline' OR d.last_seen IS NULL
       OR d.last_seen < now() - interval '6 hours')
ORDER BY problem, b.bin_id
"""

# --- traffic -----------------------------------------------------------------------------
# Volume counts advance and count detectors (one per lane upstream of the stop line), so a
# vehicle is not counted twice by its stop-bar detector.
VOLUME_BY_INTERSECTION = """
SELECT $__timeGroupAlias(c.bucket, $__interval), c.controller_id AS metric,
       sum(c.actuations) AS vehicles
FROM detector_counts_15m c
JOIN signal_detectors d ON d.controller_id = c.controller_id AND d.channel = c.detector
WHERE $__timeFilter(c.bucket) AND c.controller_id IN ($intersection)
  AND d.kind IN ('advance', 'count')
GROUP BY 1, 2
ORDER BY 1
"""

VOLUME_BY_DETECTOR = """
SELECT c.controller_id, c.detector, d.phase, d.kind, sum(c.actuations) AS actuations,
       sum(c.actuations) / greatest(extract(epoch FROM $__timeTo() - $__timeFrom()) / 3600, 0.25)
           AS per_hour
FROM detector_counts_15m c
JOIN signal_detectors d ON d.controller_id = c.controller_id AND d.channel = c.detector
WHERE $__timeFilter(c.bucket) AND c.controller_id IN ($intersection)
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2
"""

DETECTOR_HEALTH = f"""
WITH last_event AS (
    SELECT DISTINCT ON (controller_id, param) controller_id, param AS detector, code, ts
    FROM signal_events
    WHERE code IN (81, 82) AND ts >= now() - interval '1 day'
      AND controller_id IN ($intersection)
    ORDER BY controller_id, param, ts DESC
), recent AS (
    SELECT controller_id, detector, sum(actuations) AS actuations
    FROM detector_counts_15m
    WHERE bucket >= now() - interval '1 hour' AND controller_id IN ($intersection)
    GROUP BY 1, 2
)
SELECT d.controller_id, d.channel AS detector, d.phase, d.kind,
       coalesce(r.actuations, 0) AS actuations_1h, l.ts AS last_change,
       CASE WHEN l.ts IS NULL THEN 'no events 24h'
            WHEN l.code = 82 AND l.ts < now() - interval '{STUCK_ON_MIN} minutes' THEN 'stuck on'
            WHEN coalesce(r.actuations, 0) = 0 THEN 'no actuations 1h'
            ELSE 'ok' END AS health
FROM signal_detectors d
LEFT JOIN last_event l ON l.controller_id = d.controller_id AND l.detector = d.channel
LEFT JOIN recent r ON r.controller_id = d.controller_id AND r.detector = d.channel
WHERE d.controller_id IN ($intersection)
ORDER BY (CASE WHEN l.ts IS NULL OR l.code = 82 AND l.ts < now() - interval '{STUCK_ON_MIN} minutes'
               OR coalesce(r.actuations, 0) = 0 THEN 0 ELSE 1 END), d.controller_id, d.channel
"""

DETECTORS_FLAGGED = f"""
SELECT count(*) FILTER (WHERE health <> 'ok') AS detectors_flagged
FROM ({DETECTOR_HEALTH}) h
"""

# Stored measures (signal_measures, one row per controller, phase and 15-minute bin): ratios
# are recomputed from the summed counts, so any $__interval weights bins by their vehicles.
MEASURES_FILTER = "$__timeFilter(m.bin_start) AND m.controller_id IN ($intersection)"
PHASE_METRIC = "m.controller_id || ' phase ' || m.phase"

AOG = f"""
SELECT $__timeGroupAlias(m.bin_start, $__interval), {PHASE_METRIC} AS metric,
       100.0 * sum(m.arrivals_on_green) / nullif(sum(m.arrivals_in_cycles), 0) AS pct_aog
FROM signal_measures m
WHERE {MEASURES_FILTER}
GROUP BY 1, 2
ORDER BY 1
"""

SPLIT_FAILURES = f"""
SELECT $__timeGroupAlias(m.bin_start, $__interval), {PHASE_METRIC} AS metric,
       sum(m.split_failures) AS split_failures
FROM signal_measures m
WHERE {MEASURES_FILTER} AND m.split_failures IS NOT NULL
GROUP BY 1, 2
ORDER BY 1
"""

APPROACH_DELAY = f"""
SELECT $__timeGroupAlias(m.bin_start, $__interval), {PHASE_METRIC} AS metric,
       sum(m.delay_total_s) / nullif(sum(m.arrivals_in_cycles), 0) AS delay_per_vehicle_s
FROM signal_measures m
WHERE {MEASURES_FILTER}
GROUP BY 1, 2
ORDER BY 1
"""

PHASE_VOLUME = f"""
SELECT $__timeGroupAlias(m.bin_start, $__interval), {PHASE_METRIC} AS metric,
       sum(m.volume) AS vehicles
FROM signal_measures m
WHERE {MEASURES_FILTER}
GROUP BY 1, 2
ORDER BY 1
"""

SPLIT_MONITOR = f"""
SELECT m.controller_id, m.phase, sum(m.volume) AS volume,
       100.0 * sum(m.arrivals_on_green) / nullif(sum(m.arrivals_in_cycles), 0) AS pct_aog,
       sum(m.delay_total_s) / nullif(sum(m.arrivals_in_cycles), 0) AS delay_per_vehicle_s,
       sum(m.cycles) AS cycles, sum(m.split_failures) AS split_failures,
       sum(m.gap_outs) AS gap_outs, sum(m.max_outs) AS max_outs, sum(m.force_offs) AS force_offs,
       sum(m.mean_green_s * m.cycles) / nullif(sum(m.cycles), 0) AS mean_green_s,
       sum(m.yellow_actuations) AS yellow_actuations, sum(m.red_actuations) AS red_actuations,
       sum(m.ped_delay_mean_s * m.ped_calls_served) / nullif(sum(m.ped_calls_served), 0)
           AS ped_delay_mean_s
FROM signal_measures m
WHERE {MEASURES_FILTER}
GROUP BY 1, 2
ORDER BY 1, 2
"""

STORED_DETECTOR_HEALTH = """
SELECT h.controller_id, h.channel AS detector, min(h.phase) AS phase, min(h.kind) AS kind,
       sum(h.actuations) AS actuations, max(h.longest_on_s) AS longest_on_s,
       count(*) FILTER (WHERE h.status = 'stuck_on') AS bins_stuck_on,
       count(*) FILTER (WHERE h.status = 'no_activity') AS bins_no_activity,
       (array_agg(h.status ORDER BY h.bin_start DESC))[1] AS latest_status
FROM signal_detector_health h
WHERE $__timeFilter(h.bin_start) AND h.controller_id IN ($intersection)
GROUP BY 1, 2
ORDER BY count(*) FILTER (WHERE h.status <> 'ok') DESC, 1, 2
"""

# Control mode reported by the controllers (event 131), as a number for a state timeline:
# 3 adaptive, 2 plan by command, 1 own fixed-time plan (fallback), 0 unknown. The mode in
# force at the start of the range opens each row.
MODE_CODE = ("CASE h.mode WHEN 'adaptive' THEN 3 WHEN 'plan' THEN 2 WHEN 'fixed' THEN 1 "
             "ELSE 0 END")
CONTROL_MODE = f"""
SELECT time, metric, mode FROM (
    SELECT h.ts AS time, c.name AS metric, {MODE_CODE} AS mode
    FROM signal_mode_history h JOIN signal_controllers c USING (controller_id)
    WHERE $__timeFilter(h.ts) AND h.controller_id IN ($intersection)
    UNION ALL
    SELECT $__timeFrom(), c.name, {MODE_CODE}
    FROM signal_controllers c
    JOIN LATERAL (SELECT mode FROM signal_mode_history x
                  WHERE x.controller_id = c.controller_id AND x.ts < $__timeFrom()
                  ORDER BY x.ts DESC LIMIT 1) h ON true
    WHERE c.controller_id IN ($intersection)
) m
ORDER BY 1, 2
"""

CONTROL_MODE_NOW = """
SELECT c.controller_id, c.name, coalesce(h.mode, 'unknown') AS mode, h.ts AS since,
       p.computed_until AS measures_until
FROM signal_controllers c
LEFT JOIN LATERAL (SELECT mode, ts FROM signal_mode_history x
                   WHERE x.controller_id = c.controller_id ORDER BY x.ts DESC LIMIT 1) h ON true
LEFT JOIN signal_measures_progress p ON p.controller_id = c.controller_id
WHERE c.controller_id IN ($intersection)
ORDER BY c.controller_id
"""

# Purdue coordination diagram of one phase at one intersection (the first selected), from the
# raw events of at most the last PURDUE_MAX of the range (primary key controller, ts): per
# arrival at the stop line (arrival detectors as in traffic.measures, 50 km/h), the start of
# its cycle (begin green) and the seconds since; per cycle the end of green and of yellow.
PURDUE_MAX = "2 hours"
PURDUE_SPEED_MS = 50 / 3.6
PURDUE = f"""
WITH ctl AS (
    SELECT min(controller_id) AS cid FROM signal_controllers WHERE controller_id IN ($intersection)
), win AS (
    SELECT greatest($__timeFrom(), $__timeTo() - interval '{PURDUE_MAX}') AS t0,
           $__timeTo() AS t1
), ev AS (
    SELECT e.ts, e.code, e.param
    FROM signal_events e, ctl, win
    WHERE e.controller_id = ctl.cid
      AND e.ts >= win.t0 - interval '5 minutes' AND e.ts < win.t1 + interval '5 minutes'
), greens AS (
    SELECT ts AS green_start, lead(ts) OVER (ORDER BY ts) AS next_green
    FROM ev WHERE code = 1 AND param = $phase
), cyc AS (
    SELECT g.green_start, g.next_green,
           (SELECT min(ts) FROM ev WHERE code IN (7, 8) AND param = $phase
              AND ts >= g.green_start AND ts < g.next_green) AS green_end,
           (SELECT min(ts) FROM ev WHERE code = 9 AND param = $phase
              AND ts >= g.green_start AND ts < g.next_green) AS yellow_end
    FROM greens g, win
    WHERE g.next_green IS NOT NULL AND g.green_start >= win.t0 AND g.green_start < win.t1
), det AS (
    SELECT d.channel, d.distance_m
    FROM signal_detectors d, ctl
    WHERE d.controller_id = ctl.cid AND d.phase = $phase
      AND d.kind = (SELECT k.kind FROM signal_detectors k
                    WHERE k.controller_id = ctl.cid AND k.phase = $phase
                      AND k.kind IN ('advance', 'count', 'stop_bar')
                    ORDER BY array_position(ARRAY['advance', 'count', 'stop_bar'], k.kind)
                    LIMIT 1)
      AND NOT EXISTS (SELECT 1 FROM signal_detectors f
                      WHERE f.controller_id = d.controller_id AND f.phase = d.phase
                        AND d.kind = 'advance' AND f.kind = 'advance' AND f.lane = d.lane
                        AND f.distance_m > d.distance_m)
), arr AS (
    SELECT ev.ts + make_interval(secs => det.distance_m / {PURDUE_SPEED_MS:.6f}) AS t
    FROM ev JOIN det ON ev.param = det.channel
    WHERE ev.code = 82
)
SELECT c.green_start AS cycle_start,
       extract(epoch FROM a.t - c.green_start) AS arrival_s,
       extract(epoch FROM c.green_end - c.green_start) AS green_end_s,
       extract(epoch FROM c.yellow_end - c.green_start) AS yellow_end_s
FROM cyc c JOIN arr a ON a.t >= c.green_start AND a.t < c.next_green
WHERE c.green_end IS NOT NULL AND c.yellow_end IS NOT NULL
ORDER BY 1, 2
"""

# --- roadworks ---------------------------------------------------------------------------
RW_FILTER = "district IN ($district) AND sector IN ($sector)"
RW_ACTIVE = (
    "status IN ('approved', 'scheduled', 'in_progress') "
    f"AND coalesce(actual_start, planned_start) < {TODAY_START} + interval '1 day' "
    f"AND coalesce(actual_end, planned_end) > {TODAY_START}"
)
RW_UPCOMING = (
    "status IN ('approved', 'scheduled') "
    f"AND planned_start >= {TODAY_START} + interval '1 day' "
    f"AND planned_start < {TODAY_START} + interval '15 days'"
)

RW_ACTIVE_COUNT = f"SELECT count(*) AS active_today FROM roadworks WHERE {RW_ACTIVE} AND {RW_FILTER}"
RW_UPCOMING_COUNT = (
    f"SELECT count(*) AS upcoming_14d FROM roadworks WHERE {RW_UPCOMING} AND {RW_FILTER}"
)
RW_BY_SECTOR = f"""
SELECT sector, count(*) FILTER (WHERE {RW_ACTIVE}) AS active_today,
       count(*) FILTER (WHERE {RW_UPCOMING}) AS upcoming_14d
FROM roadworks WHERE {RW_FILTER} AND status IN ('approved', 'scheduled', 'in_progress')
GROUP BY sector ORDER BY sector
"""
RW_BY_DISTRICT = RW_BY_SECTOR.replace("SELECT sector,", "SELECT district,").replace(
    "GROUP BY sector ORDER BY sector", "GROUP BY district ORDER BY district"
)
RW_LIST = f"""
SELECT reference, title, sector, district, status,
       CASE WHEN {RW_ACTIVE} THEN 'active' ELSE 'upcoming' END AS period,
       coalesce(actual_start, planned_start) AS starts, coalesce(actual_end, planned_end) AS ends,
       promoter
FROM roadworks
WHERE (({RW_ACTIVE}) OR ({RW_UPCOMING})) AND {RW_FILTER}
ORDER BY starts, reference
"""
RW_OPEN_CLASHES_COUNT = """
SELECT count(*) AS clashes_open
FROM roadwork_findings f JOIN roadworks a ON a.id = f.work_a
WHERE f.kind = 'clash' AND f.decision IS NULL AND f.obsolete_since IS NULL
  AND a.district IN ($district)
"""
RW_OPEN_CLASHES = """
SELECT f.id AS finding, f.severity, a.reference AS work_a, b.reference AS work_b,
       f.street, a.district, f.message, f.first_found_at
FROM roadwork_findings f
JOIN roadworks a ON a.id = f.work_a
LEFT JOIN roadworks b ON b.id = f.work_b
WHERE f.kind = 'clash' AND f.decision IS NULL AND f.obsolete_since IS NULL
  AND a.district IN ($district)
ORDER BY f.first_found_at, f.id
"""

# --- platform ----------------------------------------------------------------------------
# Raw tables over a short window (the dashboard defaults to 6 hours; BRIN on ts).
MESSAGES_PER_S = """
SELECT time, metric, n / ($__interval_ms / 1000.0) AS messages_per_s FROM (
    SELECT $__timeGroupAlias(ts, $__interval), 'bin' AS metric, count(*) AS n
    FROM bin_readings WHERE $__timeFilter(ts) GROUP BY 1
    UNION ALL
    SELECT $__timeGroupAlias(ts, $__interval), 'signal', count(*)
    FROM signal_events WHERE $__timeFilter(ts) GROUP BY 1
    UNION ALL
    SELECT $__timeGroupAlias(ts, $__interval), 'truck position', count(*)
    FROM truck_positions WHERE $__timeFilter(ts) GROUP BY 1
    UNION ALL
    SELECT $__timeGroupAlias(ts, $__interval), 'truck event', count(*)
    FROM truck_events WHERE $__timeFilter(ts) GROUP BY 1
) m
ORDER BY 1, 2
"""

INGEST_RATE = """
SELECT ts AS time, instance AS metric,
       greatest(received - lag(received) OVER w, 0)
           / nullif(extract(epoch FROM ts - lag(ts) OVER w), 0) AS received_per_s
FROM ingest_metrics
WHERE $__timeFilter(ts)
WINDOW w AS (PARTITION BY instance ORDER BY ts)
ORDER BY 1, 2
"""

INGEST_LAG = """
SELECT time, metric, lag_s FROM (
    SELECT $__timeGroupAlias(ts, $__interval), 'bin' AS metric,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM ingested_at - ts))
               AS lag_s
    FROM bin_readings WHERE $__timeFilter(ts) GROUP BY 1
    UNION ALL
    SELECT $__timeGroupAlias(ts, $__interval), 'truck position',
           percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM ingested_at - ts))
    FROM truck_positions WHERE $__timeFilter(ts) GROUP BY 1
) l
ORDER BY 1, 2
"""

INGEST_BACKLOG = """
SELECT $__timeGroupAlias(ts, $__interval), max(backlog) AS backlog,
       avg(batch_latency_ms) AS batch_latency_ms
FROM ingest_metrics
WHERE $__timeFilter(ts)
GROUP BY 1
ORDER BY 1
"""

DEAD_LETTERS = """
SELECT reason, count(*) AS dead_letters,
       count(*) FILTER (WHERE replayed_at IS NULL) AS not_replayed,
       max(received_at) AS last_received
FROM dead_letters
WHERE $__timeFilter(received_at)
GROUP BY reason
ORDER BY dead_letters DESC
"""

DEVICES_ONLINE = """
SELECT v.kind,
       count(*) FILTER (WHERE s.state = 'online') AS online,
       count(*) FILTER (WHERE s.state = 'offline') AS offline,
       count(*) FILTER (WHERE s.state IS NULL) AS never_seen
FROM devices v
LEFT JOIN device_status s ON s.kind = v.kind AND s.device_id = v.device_id
GROUP BY v.kind
ORDER BY v.kind
"""

DATABASE_SIZE = "SELECT pg_database_size(current_database()) AS database_bytes"

LARGEST_TABLES = """
SELECT n.nspname || '.' || c.relname AS relation, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
ORDER BY bytes DESC
LIMIT 10
"""

# --- alert rules (one row per offending entity: string columns are labels) ---------------
ALERT_BIN_OVERFLOW = f"""
SELECT s.bin_id, coalesce(b.district, '-') AS district, s.fill_pct AS value
FROM bin_state s JOIN bins b USING (bin_id)
WHERE s.fill_pct >= {OVERFLOW_PCT} AND s.ts >= now() - interval '6 hours'
"""
ALERT_FIRE = f"""
SELECT s.bin_id, coalesce(b.district, '-') AS district, s.temperature_c AS value
FROM bin_state s JOIN bins b USING (bin_id)
WHERE s.temperature_c >= {FIRE_C} AND s.ts >= now() - interval '1 hour'
"""
ALERT_DEVICE_OFFLINE = """
SELECT kind, device_id, extract(epoch FROM now() - coalesce(state_ts, last_seen)) / 60 AS value
FROM device_status
WHERE state = 'offline'
"""
ALERT_INGEST_LAG = """
SELECT coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM ingested_at - ts)),
                0) AS value
FROM bin_readings
WHERE ts >= now() - interval '5 minutes'
"""
ALERT_DETECTOR_STUCK = f"""
SELECT controller_id, param::text AS detector, extract(epoch FROM now() - ts) / 60 AS value
FROM (
    SELECT DISTINCT ON (controller_id, param) controller_id, param, code, ts
    FROM signal_events
    WHERE code IN (81, 82) AND ts >= now() - interval '1 day'
    ORDER BY controller_id, param, ts DESC
) last_event
WHERE code = 82 AND ts < now() - interval '{STUCK_ON_MIN} minutes'
"""
