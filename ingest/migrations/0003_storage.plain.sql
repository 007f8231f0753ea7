-- Plain PostgreSQL storage: BRIN indexes on time; rollup tables maintained at write time by
-- statement-level triggers that fold exactly the newly inserted rows (a transition table,
-- so duplicates skipped by ON CONFLICT DO NOTHING are not counted); cityops_refresh_rollups()
-- recomputes buckets from raw rows (repair); retention by cityops_apply_retention().
CREATE INDEX bin_readings_ts_brin ON bin_readings USING brin (ts);
CREATE INDEX signal_events_ts_brin ON signal_events USING brin (ts);
CREATE INDEX truck_positions_ts_brin ON truck_positions USING brin (ts);
CREATE INDEX truck_events_ts_brin ON truck_events USING brin (ts);
CREATE INDEX ingest_metrics_ts_brin ON ingest_metrics USING brin (ts);

CREATE TABLE bin_fill_hourly_rollup (
    bucket             timestamptz NOT NULL,
    bin_id             text NOT NULL,
    sum_fill_pct       double precision NOT NULL,
    min_fill_pct       real NOT NULL,
    max_fill_pct       real NOT NULL,
    max_temperature_c  real,
    readings           bigint NOT NULL,
    PRIMARY KEY (bin_id, bucket)
);
CREATE INDEX bin_fill_hourly_rollup_bucket_idx ON bin_fill_hourly_rollup (bucket);

CREATE TABLE detector_counts_15m_rollup (
    bucket         timestamptz NOT NULL,
    controller_id  text NOT NULL,
    detector       smallint NOT NULL,
    actuations     bigint NOT NULL,
    PRIMARY KEY (controller_id, detector, bucket)
);
CREATE INDEX detector_counts_15m_rollup_bucket_idx ON detector_counts_15m_rollup (bucket);

CREATE VIEW bin_fill_hourly AS
    SELECT bucket, bin_id, (sum_fill_pct / readings)::real AS avg_fill_pct, min_fill_pct,
           max_fill_pct, max_temperature_c, readings
    FROM bin_fill_hourly_rollup;

CREATE FUNCTION cityops_rollup_bin_readings() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bin_fill_hourly_rollup AS r
        SELECT date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00+00'), bin_id,
               sum(fill_pct), min(fill_pct), max(fill_pct), max(temperature_c), count(*)
        FROM new_rows
        GROUP BY 1, 2
    ON CONFLICT (bin_id, bucket) DO UPDATE SET
        sum_fill_pct = r.sum_fill_pct + EXCLUDED.sum_fill_pct,
        min_fill_pct = LEAST(r.min_fill_pct, EXCLUDED.min_fill_pct),
        max_fill_pct = GREATEST(r.max_fill_pct, EXCLUDED.max_fill_pct),
        max_temperature_c = GREATEST(r.max_temperature_c, EXCLUDED.max_temperature_c),
        readings = r.readings + EXCLUDED.readings;
    RETURN NULL;
END;
$$;

CREATE TRIGGER bin_readings_rollup AFTER INSERT ON bin_readings
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cityops_rollup_bin_readings();

CREATE FUNCTION cityops_rollup_signal_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO detector_counts_15m_rollup AS r
        SELECT date_bin('15 minutes', ts, TIMESTAMPTZ '2000-01-01 00:00+00'), controller_id,
               param, count(*)
        FROM new_rows
        WHERE code = 82
        GROUP BY 1, 2, 3
    ON CONFLICT (controller_id, detector, bucket) DO UPDATE SET
        actuations = r.actuations + EXCLUDED.actuations;
    RETURN NULL;
END;
$$;

CREATE TRIGGER signal_events_rollup AFTER INSERT ON signal_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cityops_rollup_signal_events();

CREATE VIEW detector_counts_15m AS
    SELECT bucket, controller_id, detector, actuations FROM detector_counts_15m_rollup;

-- Recompute every bucket that starts at or after date_bin(since) from the raw rows; for
-- repairs (the triggers keep rollups current). Returns the rows touched.
CREATE FUNCTION cityops_refresh_rollups(since timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n1 bigint;
    n2 bigint;
BEGIN
    INSERT INTO bin_fill_hourly_rollup AS r
        SELECT date_bin('1 hour', ts, TIMESTAMPTZ '2000-01-01 00:00+00'), bin_id,
               sum(fill_pct), min(fill_pct), max(fill_pct), max(temperature_c), count(*)
        FROM bin_readings
        WHERE ts >= date_bin('1 hour', since, TIMESTAMPTZ '2000-01-01 00:00+00')
        GROUP BY 1, 2
    ON CONFLICT (bin_id, bucket) DO UPDATE SET
        sum_fill_pct = EXCLUDED.sum_fill_pct, min_fill_pct = EXCLUDED.min_fill_pct,
        max_fill_pct = EXCLUDED.max_fill_pct, max_temperature_c = EXCLUDED.max_temperature_c,
        readings = EXCLUDED.readings;
    GET DIAGNOSTICS n1 = ROW_COUNT;
    INSERT INTO detector_counts_15m_rollup AS r
        SELECT date_bin('15 minutes', ts, TIMESTAMPTZ '2000-01-01 00:00+00'), controller_id,
               param, count(*)
        FROM signal_events
        WHERE code = 82
          AND ts >= date_bin('15 minutes', since, TIMESTAMPTZ '2000-01-01 00:00+00')
        GROUP BY 1, 2, 3
    ON CONFLICT (controller_id, detector, bucket) DO UPDATE SET
        actuations = EXCLUDED.actuations;
    GET DIAGNOSTICS n2 = ROW_COUNT;
    RETURN n1 + n2;
END;
$$;

-- Delete raw rows older than the retention; rollups are kept. Returns rows deleted.
CREATE FUNCTION cityops_apply_retention(keep interval) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    total bigint := 0;
    n bigint;
BEGIN
    DELETE FROM bin_readings WHERE ts < now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    DELETE FROM signal_events WHERE ts < now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    DELETE FROM truck_positions WHERE ts < now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    DELETE FROM ingest_metrics WHERE ts < now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
    RETURN total;
END;
$$;
