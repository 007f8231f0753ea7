-- Waste-collection routing: the active road network, street closures that feed the matrices,
-- and versioned routes per truck and day. A new version is written for every change, with
-- the reason; the newest version of a truck's day is its current route.

CREATE TABLE road_networks (
    network_id   bigserial PRIMARY KEY,
    source       text NOT NULL,
    sha256       text NOT NULL,
    nodes        integer NOT NULL,
    edges        integer NOT NULL,
    km           real NOT NULL,
    bbox         geometry(Polygon, 4326) NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now(),
    active       boolean NOT NULL DEFAULT true
);
CREATE UNIQUE INDEX road_networks_one_active ON road_networks (active) WHERE active;

-- A closure removes (factor NULL) or slows (factor > 1) the network edges within
-- `buffer_m` of its geometry while it is valid. Roadworks write here once they exist.
CREATE TABLE street_closures (
    closure_id   text PRIMARY KEY,
    geom         geometry(Geometry, 4326) NOT NULL,
    buffer_m     real NOT NULL DEFAULT 5 CHECK (buffer_m >= 0),
    slowdown     real CHECK (slowdown IS NULL OR slowdown >= 1),
    valid_from   timestamptz NOT NULL,
    valid_to     timestamptz NOT NULL CHECK (valid_to > valid_from),
    source       text NOT NULL,
    reason       text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX street_closures_geom_idx ON street_closures USING gist (geom);

CREATE TABLE route_versions (
    truck_id     text NOT NULL REFERENCES trucks ON DELETE CASCADE,
    plan_date    date NOT NULL,
    version      integer NOT NULL CHECK (version >= 1),
    created_at   timestamptz NOT NULL DEFAULT now(),
    reason       text NOT NULL,
    engine       text NOT NULL,
    fraction     text,
    distance_m   real NOT NULL,
    duration_s   real NOT NULL,
    stops        jsonb NOT NULL,
    geometry     jsonb NOT NULL,
    unserved     jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (truck_id, plan_date, version)
);

-- One row per planned stop of every version, for dashboards and progress.
CREATE TABLE route_stops (
    truck_id       text NOT NULL,
    plan_date      date NOT NULL,
    version        integer NOT NULL,
    seq            integer NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('start', 'stop', 'unload', 'break', 'end')),
    bin_id         text,
    site_id        text,
    eta            timestamptz NOT NULL,
    etd            timestamptz NOT NULL,
    load_after_l   real NOT NULL,
    PRIMARY KEY (truck_id, plan_date, version, seq),
    FOREIGN KEY (truck_id, plan_date, version) REFERENCES route_versions ON DELETE CASCADE
);

CREATE VIEW current_routes AS
    SELECT DISTINCT ON (truck_id, plan_date) *
    FROM route_versions
    ORDER BY truck_id, plan_date, version DESC;

-- What planning needs from the fleet registry: the fractions a truck collects (one per day,
-- rotating by weekday) and its shift in local time (Europe/Berlin).
ALTER TABLE trucks
    ADD COLUMN fractions    text[] NOT NULL DEFAULT '{residual}',
    ADD COLUMN shift_start  time NOT NULL DEFAULT '06:00',
    ADD COLUMN shift_end    time NOT NULL DEFAULT '14:30',
    ADD CONSTRAINT trucks_shift_order CHECK (shift_end > shift_start),
    ADD CONSTRAINT trucks_fractions_known CHECK (
        fractions <@ ARRAY['residual', 'paper', 'packaging', 'organic', 'glass']::text[]
        AND cardinality(fractions) >= 1);
