-- TimescaleDB storage: hypertables, compression segmented by device, retention policies and
-- continuous aggregates behind the same views and functions as the plain mode.
SELECT create_hypertable('bin_readings', by_range('ts', INTERVAL '7 days'));
SELECT create_hypertable('signal_events', by_range('ts', INTERVAL '1 day'));
SELECT create_hypertable('truck_positions', by_range('ts', INTERVAL '7 days'));
SELECT create_hypertable('truck_events', by_range('ts', INTERVAL '30 days'));
SELECT create_hypertable('ingest_metrics', by_range('ts', INTERVAL '7 days'));

ALTER TABLE bin_readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'bin_id',
                              timescaledb.compress_orderby = 'ts DESC');
ALTER TABLE signal_events SET (timescaledb.compress,
                               timescaledb.compress_segmentby = 'controller_id',
                               timescaledb.compress_orderby = 'ts DESC, code, param');
ALTER TABLE truck_positions SET (timescaledb.compress,
                                 timescaledb.compress_segmentby = 'truck_id',
                                 timescaledb.compress_orderby = 'ts DESC');
SELECT add_compression_policy('bin_readings', INTERVAL '14 days');
SELECT add_compression_policy('signal_events', INTERVAL '3 days');
SELECT add_compression_policy('truck_positions', INTERVAL '14 days');

SELECT add_retention_policy('bin_readings', INTERVAL '400 days');
SELECT add_retention_policy('signal_events', INTERVAL '400 days');
SELECT add_retention_policy('truck_positions', INTERVAL '400 days');
SELECT add_retention_policy('ingest_metrics', INTERVAL '400 days');

CREATE MATERIALIZED VIEW bin_fill_hourly_cagg WITH (timescaledb.continuous) AS
    SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, bin_id,
           avg(fill_pct)::real AS avg_fill_pct, min(fill_pct) AS min_fill_pct,
           max(fill_pct) AS max_fill_pct, max(temperature_c) AS max_temperature_c,
           count(*) AS readings
    FROM bin_readings
    GROUP BY 1, 2
WITH NO DATA;
ALTER MATERIALIZED VIEW bin_fill_hourly_cagg SET (timescaledb.materialized_only = false);
SELECT add_continuous_aggregate_policy('bin_fill_hourly_cagg',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '15 minutes');

CREATE MATERIALIZED VIEW detector_counts_15m_cagg WITH (timescaledb.continuous) AS
    SELECT time_bucket(INTERVAL '15 minutes', ts) AS bucket, controller_id,
           param AS detector, count(*) AS actuations
    FROM signal_events
    WHERE code = 82
    GROUP BY 1, 2, 3
WITH NO DATA;
ALTER MATERIALIZED VIEW detector_counts_15m_cagg SET (timescaledb.materialized_only = false);
SELECT add_continuous_aggregate_policy('detector_counts_15m_cagg',
    start_offset => INTERVAL '1 day', end_offset => INTERVAL '15 minutes',
    schedule_interval => INTERVAL '5 minutes');

CREATE VIEW bin_fill_hourly AS
    SELECT bucket, bin_id, avg_fill_pct, min_fill_pct, max_fill_pct, max_temperature_c, readings
    FROM bin_fill_hourly_cagg;

CREATE VIEW detector_counts_15m AS
    SELECT bucket, controller_id, detector, actuations FROM detector_counts_15m_cagg;

-- Continuous aggregates are refreshed by their policies and are real-time (materialized_only
-- = false); retention runs as a policy. These exist so callers need not know the mode.
CREATE FUNCTION cityops_refresh_rollups(since timestamptz) RETURNS bigint
LANGUAGE sql AS $$ SELECT 0::bigint $$;

CREATE FUNCTION cityops_apply_retention(keep interval) RETURNS bigint
LANGUAGE sql AS $$ SELECT 0::bigint $$;
