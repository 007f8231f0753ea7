-- Stored signal performance measures, computed from signal_events by
-- `cityops traffic measures-service` (cityops.traffic.store) with the pure functions of
-- cityops.traffic.measures. Plain tables in both storage modes: a few rows per controller
-- and 15-minute bin, read by the API and Grafana by (controller, time range).
-- Every write is an upsert on the natural key, so recomputing a bin replaces it.

-- Per controller, phase and 15-minute bin (see docs/traffic.md for the definitions).
CREATE TABLE signal_measures (
    controller_id             text NOT NULL,
    bin_start                 timestamptz NOT NULL,
    phase                     smallint NOT NULL,
    volume                    integer NOT NULL,
    arrivals_in_cycles        integer NOT NULL,
    arrivals_on_green         integer NOT NULL,
    pct_aog                   double precision,
    green_share               double precision,
    platoon_ratio             double precision,
    arrivals_on_red           integer NOT NULL,
    delay_total_s             double precision NOT NULL,
    delay_per_vehicle_s       double precision,
    cycles                    integer NOT NULL,
    split_failures            integer,  -- NULL: the phase has no stop-bar detector
    gap_outs                  integer NOT NULL,
    max_outs                  integer NOT NULL,
    force_offs                integer NOT NULL,
    other_terminations        integer NOT NULL,
    mean_green_s              double precision,
    yellow_actuations         integer NOT NULL,
    red_clearance_actuations  integer NOT NULL,
    red_actuations            integer NOT NULL,
    ped_walks                 integer NOT NULL,
    ped_calls_served          integer NOT NULL,
    ped_delay_mean_s          double precision,
    ped_delay_max_s           double precision,
    flagged_events            integer NOT NULL DEFAULT 0,  -- of the controller, in the bin
    computed_at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (controller_id, bin_start, phase)
);
CREATE INDEX signal_measures_bin_idx ON signal_measures (bin_start);

-- Per detector and 15-minute bin: actuations in the bin; status and longest occupancy
-- over the hour ending at the bin's end (so "no activity for an hour" can be seen).
CREATE TABLE signal_detector_health (
    controller_id  text NOT NULL,
    bin_start      timestamptz NOT NULL,
    channel        smallint NOT NULL,
    phase          smallint NOT NULL,
    kind           text NOT NULL,
    actuations     integer NOT NULL,
    longest_on_s   double precision NOT NULL,
    status         text NOT NULL CHECK (status IN ('ok', 'stuck_on', 'no_activity')),
    computed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (controller_id, bin_start, channel)
);
CREATE INDEX signal_detector_health_bin_idx ON signal_detector_health (bin_start);

-- Per detector and Europe/Berlin day: actuations, longest occupancy, bins per status.
CREATE VIEW signal_detector_health_daily AS
    SELECT controller_id, (bin_start AT TIME ZONE 'Europe/Berlin')::date AS day, channel,
           min(phase) AS phase, min(kind) AS kind, sum(actuations)::bigint AS actuations,
           max(longest_on_s) AS longest_on_s, count(*) AS bins,
           count(*) FILTER (WHERE status = 'stuck_on') AS bins_stuck_on,
           count(*) FILTER (WHERE status = 'no_activity') AS bins_no_activity
    FROM signal_detector_health
    GROUP BY 1, 2, 3;

-- The control mode each controller reported over time, from event 131 (coordination
-- pattern change; what the controller did, not what signal_control_modes of 0007 asks):
-- pattern 1 own fixed-time plan (fallback), 2 plan received by command, 3 adaptive.
CREATE TABLE signal_mode_history (
    controller_id  text NOT NULL,
    ts             timestamptz NOT NULL,
    pattern        smallint NOT NULL,
    mode           text NOT NULL CHECK (mode IN ('fixed', 'plan', 'adaptive', 'unknown')),
    PRIMARY KEY (controller_id, ts)
);

-- How far the measures of each controller are computed: every bin before computed_until
-- is stored; events ingested after checked_at with ts before computed_until are late and
-- make the store recompute their bins.
CREATE TABLE signal_measures_progress (
    controller_id   text PRIMARY KEY,
    computed_until  timestamptz NOT NULL,
    checked_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
