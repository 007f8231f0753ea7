-- Time series, latest state, dead letters and ingest metrics. Storage details that differ
-- between TimescaleDB and plain PostgreSQL are in 0003_storage.{timescale,plain}.sql.
-- Natural keys make every write idempotent: a redelivered message never adds a row.

CREATE TABLE bin_readings (
    bin_id         text NOT NULL,
    ts             timestamptz NOT NULL,
    sensor_id      text NOT NULL,
    fill_pct       real NOT NULL,
    temperature_c  real,
    battery_pct    real,
    tilt           boolean NOT NULL DEFAULT false,
    fault          text,
    ingested_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bin_id, ts)
);

-- Indiana high-resolution controller events (1 begin green, 8 begin yellow, 10 begin red
-- clearance, 81 detector off, 82 detector on, ...).
CREATE TABLE signal_events (
    controller_id  text NOT NULL,
    ts             timestamptz NOT NULL,
    code           smallint NOT NULL,
    param          smallint NOT NULL,
    ingested_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (controller_id, ts, code, param)
);

CREATE TABLE truck_positions (
    truck_id       text NOT NULL,
    ts             timestamptz NOT NULL,
    lat            double precision NOT NULL,
    lon            double precision NOT NULL,
    speed_kmh      real NOT NULL DEFAULT 0,
    heading_deg    real,
    load_l         real,
    route_version  integer,
    ingested_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (truck_id, ts)
);

CREATE TABLE truck_events (
    truck_id       text NOT NULL,
    ts             timestamptz NOT NULL,
    kind           text NOT NULL,
    bin_id         text NOT NULL DEFAULT '',
    route_version  integer,
    reason         text,
    volume_l       real,
    ingested_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (truck_id, ts, kind, bin_id)
);

-- Latest state, upserted by the ingest; an older reading never overwrites a newer one.
CREATE TABLE bin_state (
    bin_id         text PRIMARY KEY REFERENCES bins ON DELETE CASCADE,
    ts             timestamptz NOT NULL,
    fill_pct       real NOT NULL,
    temperature_c  real,
    battery_pct    real,
    tilt           boolean NOT NULL DEFAULT false,
    fault          text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE truck_state (
    truck_id       text PRIMARY KEY REFERENCES trucks ON DELETE CASCADE,
    ts             timestamptz NOT NULL,
    lat            double precision NOT NULL,
    lon            double precision NOT NULL,
    speed_kmh      real NOT NULL DEFAULT 0,
    load_l         real,
    route_version  integer,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Online/offline from the retained status topic (last will) and the last message seen.
CREATE TABLE device_status (
    kind          text NOT NULL,
    device_id     text NOT NULL,
    state         text CHECK (state IN ('online', 'offline')),
    state_ts      timestamptz,
    last_seen     timestamptz,
    PRIMARY KEY (kind, device_id)
);

-- Messages the ingest could not store, kept with the reason. The same message delivered
-- again (same topic and bytes) is kept once.
CREATE TABLE dead_letters (
    id              bigserial PRIMARY KEY,
    received_at     timestamptz NOT NULL DEFAULT now(),
    topic           text NOT NULL,
    payload         bytea NOT NULL,
    payload_sha256  bytea NOT NULL,
    reason          text NOT NULL,
    detail          text NOT NULL,
    replayed_at     timestamptz,
    UNIQUE (topic, payload_sha256)
);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, received_at);

-- Ingest's own metrics, written every few seconds by each ingest instance (for Grafana).
CREATE TABLE ingest_metrics (
    ts                timestamptz NOT NULL,
    instance          text NOT NULL,
    received          bigint NOT NULL,
    rows_written      bigint NOT NULL,
    dead_letters      bigint NOT NULL,
    batches           bigint NOT NULL,
    batch_latency_ms  real,
    backlog           integer NOT NULL,
    PRIMARY KEY (instance, ts)
);
