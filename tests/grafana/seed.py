# ruff: noqa: E501
"""A small, complete city in the database: a few rows in every table the dashboards read,
placed relative to now() so that "today", "tonight" and "the last hour" panels have data.
The stored traffic measures are computed from the seeded events by the real store
(`cityops.traffic.store.refresh`), as the measures service does."""

from __future__ import annotations

import psycopg

from cityops.traffic.store import StoreOptions, refresh

SEED = r"""
INSERT INTO sites VALUES ('depot', 'Depot', 'depot', ST_SetSRID(ST_MakePoint(13.40, 52.50), 4326));
INSERT INTO bins (bin_id, sensor_id, geom, street, district, capacity_l, fraction) VALUES
  ('b1', 's1', ST_SetSRID(ST_MakePoint(13.41, 52.51), 4326), 'Hauptstr.', 'Mitte', 1100, 'residual'),
  ('b2', 's2', ST_SetSRID(ST_MakePoint(13.42, 52.52), 4326), 'Nebenweg', 'Nord', 240, 'paper'),
  ('b3', 's3', ST_SetSRID(ST_MakePoint(13.43, 52.53), 4326), 'Ring', NULL, 240, 'glass');
-- b1 fills steadily (predicted full tonight), b2 overflows and runs hot, b3 is quiet.
INSERT INTO bin_readings (bin_id, ts, sensor_id, fill_pct, temperature_c, battery_pct, ingested_at)
SELECT 'b1', t, 's1', 40 + 2 * g, 20, 80, t + interval '2 seconds'
  FROM generate_series(0, 24) g, LATERAL (SELECT now() - (24 - g) * interval '1 hour') x(t)
UNION ALL
SELECT 'b2', t, 's2', least(100, 60 + 5 * g), CASE WHEN g = 24 THEN 75 ELSE 25 END, 15,
       t + interval '1 second'
  FROM generate_series(0, 24) g, LATERAL (SELECT now() - (24 - g) * interval '1 hour') x(t)
UNION ALL
SELECT 'b3', now() - interval '3 minutes', 's3', 10, 12, 90, now();
SELECT cityops_refresh_rollups(now() - interval '2 days');
INSERT INTO bin_state (bin_id, ts, fill_pct, temperature_c, battery_pct)
SELECT DISTINCT ON (bin_id) bin_id, ts, fill_pct, temperature_c, battery_pct
FROM bin_readings ORDER BY bin_id, ts DESC;

INSERT INTO trucks (truck_id, name, capacity_l, depot_id) VALUES
  ('t1', 'Truck 1', 20000, 'depot'), ('t2', 'Truck 2', 20000, 'depot');
INSERT INTO truck_positions (truck_id, ts, lat, lon, ingested_at)
SELECT 't1', now() - g * interval '1 minute', 52.5, 13.4, now() - g * interval '1 minute' + interval '3 seconds'
FROM generate_series(0, 30) g;
INSERT INTO route_versions (truck_id, plan_date, version, reason, engine, distance_m, duration_s,
                            stops, geometry)
VALUES ('t1', (now() AT TIME ZONE 'Europe/Berlin')::date, 1, 'plan', 'pyvrp', 1000, 3600, '[]', '{}'),
       ('t1', (now() AT TIME ZONE 'Europe/Berlin')::date, 2, 'closure', 'pyvrp', 12500, 7200, '[]', '{}');
INSERT INTO route_stops VALUES
  ('t1', (now() AT TIME ZONE 'Europe/Berlin')::date, 2, 0, 'start', NULL, 'depot', now(), now(), 0),
  ('t1', (now() AT TIME ZONE 'Europe/Berlin')::date, 2, 1, 'stop', 'b1', NULL, now(), now(), 100),
  ('t1', (now() AT TIME ZONE 'Europe/Berlin')::date, 2, 2, 'stop', 'b2', NULL, now(), now(), 200),
  ('t1', (now() AT TIME ZONE 'Europe/Berlin')::date, 2, 3, 'end', NULL, 'depot', now(), now(), 200);
INSERT INTO truck_events (truck_id, ts, kind, bin_id) VALUES
  ('t1', now() - interval '1 minute', 'stop_done', 'b1');

INSERT INTO device_status VALUES
  ('bin', 's1', 'online', now(), now()),
  ('bin', 's2', 'offline', now() - interval '20 minutes', now() - interval '20 minutes'),
  ('truck', 't1', 'online', now(), now());

INSERT INTO signal_controllers (controller_id, name, geom, cycle_s) VALUES
  ('c1', 'Main x First', ST_SetSRID(ST_MakePoint(13.41, 52.50), 4326), 90);
INSERT INTO signal_phases VALUES ('c1', 2, 1, 'NB through', 10, 40, 30, 4, 2),
                                 ('c1', 4, 2, 'EB through', 10, 40, 30, 4, 2);
INSERT INTO signal_detectors VALUES ('c1', 1, 2, 'advance', 1, 60), ('c1', 2, 2, 'stop_bar', 1, 0),
                                    ('c1', 3, 4, 'advance', 1, 60);
-- detector 1 pulses every minute; detector 3 goes on 40 minutes ago and stays on (stuck);
-- detector 2 is silent.
INSERT INTO signal_events (controller_id, ts, code, param)
SELECT 'c1', now() - g * interval '1 minute', 82, 1 FROM generate_series(1, 120) g
UNION ALL
SELECT 'c1', now() - g * interval '1 minute' + interval '1 second', 81, 1 FROM generate_series(1, 120) g
UNION ALL
SELECT 'c1', now() - interval '40 minutes', 82, 3
UNION ALL
SELECT 'c1', now() - g * interval '90 seconds', 1, 2 FROM generate_series(1, 60) g
UNION ALL  -- phase 2: green 40 s, yellow 4 s, then red until the next green at 90 s
SELECT 'c1', now() - g * interval '90 seconds' + interval '40 seconds', 8, 2
FROM generate_series(1, 60) g
UNION ALL
SELECT 'c1', now() - g * interval '90 seconds' + interval '44 seconds', 9, 2
FROM generate_series(1, 60) g
UNION ALL  -- control mode (event 131): fixed-time plan 3 hours ago, adaptive 50 minutes ago
SELECT 'c1', now() - interval '3 hours', 131, 1
UNION ALL
SELECT 'c1', now() - interval '50 minutes', 131, 3;
SELECT cityops_refresh_rollups(now() - interval '1 day');

INSERT INTO roadworks (reference, title, promoter, sector, category, status, footprint, area_m2,
                       district, planned_start, planned_end, actual_start, created_at,
                       created_by, updated_at)
VALUES
  ('RW-1', 'Water main', 'Water Co', 'water', 'standard', 'in_progress',
   ST_GeomFromText('POLYGON((13.40 52.50, 13.401 52.50, 13.401 52.501, 13.40 52.501, 13.40 52.50))', 4326),
   100, 'Mitte', now() - interval '2 days', now() + interval '5 days', now() - interval '2 days',
   now(), 'test', now()),
  ('RW-2', 'Fibre', 'Telecom', 'telecom', 'minor', 'approved',
   ST_GeomFromText('POLYGON((13.40 52.50, 13.401 52.50, 13.401 52.501, 13.40 52.501, 13.40 52.50))', 4326),
   100, 'Mitte', now() + interval '3 days', now() + interval '6 days', NULL, now(), 'test', now());
INSERT INTO roadwork_findings (kind, severity, work_a, work_b, street, message, first_found_at,
                               last_found_at)
SELECT 'clash', 'conflict', min(id), max(id), 'Hauptstr.', 'Overlapping closures', now(), now()
FROM roadworks;

INSERT INTO ingest_metrics VALUES
  (now() - interval '20 seconds', 'ingest-1', 1000, 990, 10, 50, 12.5, 3),
  (now() - interval '10 seconds', 'ingest-1', 1500, 1480, 12, 70, 8.0, 0);
INSERT INTO dead_letters (topic, payload, payload_sha256, reason, detail) VALUES
  ('city/v1/bin/s9/reading', '\x7b7d', '\x01', 'unknown_device', 'not registered'),
  ('city/v1/bin/s1/reading', '\x7b', '\x02', 'invalid_payload', 'bad json');
"""


def seed(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(SEED)
        refresh(conn, StoreOptions(context_s=60.0))
