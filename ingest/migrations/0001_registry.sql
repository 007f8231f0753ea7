-- Device registry: depots and disposal sites, bins, signal controllers with phases and
-- detectors, trucks. Geometry is WGS84 (EPSG:4326).
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE sites (
    site_id     text PRIMARY KEY,
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('depot', 'disposal')),
    geom        geometry(Point, 4326) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bins (
    bin_id              text PRIMARY KEY,
    sensor_id           text UNIQUE,
    geom                geometry(Point, 4326) NOT NULL,
    street              text NOT NULL,
    house_number        text,
    district            text,
    capacity_l          integer NOT NULL CHECK (capacity_l > 0),
    fraction            text NOT NULL
                        CHECK (fraction IN ('residual', 'paper', 'packaging', 'organic', 'glass')),
    collection_weekday  smallint CHECK (collection_weekday BETWEEN 0 AND 6),
    access_from         time,
    access_to           time,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bins_geom_idx ON bins USING gist (geom);

CREATE TABLE signal_controllers (
    controller_id  text PRIMARY KEY,
    name           text NOT NULL,
    geom           geometry(Point, 4326) NOT NULL,
    cycle_s        real CHECK (cycle_s > 0),
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Signal groups / phases in their fixed order; clearance times are never shortened.
CREATE TABLE signal_phases (
    controller_id    text NOT NULL REFERENCES signal_controllers ON DELETE CASCADE,
    phase            smallint NOT NULL CHECK (phase BETWEEN 1 AND 16),
    seq              smallint NOT NULL,
    movement         text NOT NULL,
    min_green_s      real NOT NULL CHECK (min_green_s > 0),
    max_green_s      real NOT NULL,
    fixed_green_s    real NOT NULL,
    yellow_s         real NOT NULL CHECK (yellow_s >= 3),
    red_clearance_s  real NOT NULL CHECK (red_clearance_s >= 0),
    PRIMARY KEY (controller_id, phase),
    CHECK (max_green_s >= min_green_s),
    CHECK (fixed_green_s BETWEEN min_green_s AND max_green_s)
);

CREATE TABLE signal_detectors (
    controller_id  text NOT NULL REFERENCES signal_controllers ON DELETE CASCADE,
    channel        smallint NOT NULL CHECK (channel BETWEEN 1 AND 255),
    phase          smallint NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('stop_bar', 'advance', 'count', 'pedestrian')),
    lane           smallint,
    distance_m     real NOT NULL DEFAULT 0 CHECK (distance_m >= 0),
    PRIMARY KEY (controller_id, channel),
    FOREIGN KEY (controller_id, phase) REFERENCES signal_phases (controller_id, phase)
);

CREATE TABLE trucks (
    truck_id     text PRIMARY KEY,
    name         text NOT NULL,
    capacity_l   integer NOT NULL CHECK (capacity_l > 0),
    capacity_kg  integer CHECK (capacity_kg > 0),
    depot_id     text NOT NULL REFERENCES sites,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Every device that may publish, keyed as in the topic: bins publish under their sensor id.
CREATE VIEW devices AS
    SELECT 'bin'::text AS kind, sensor_id AS device_id, bin_id AS entity_id FROM bins
        WHERE sensor_id IS NOT NULL
    UNION ALL
    SELECT 'signal', controller_id, controller_id FROM signal_controllers
    UNION ALL
    SELECT 'truck', truck_id, truck_id FROM trucks;
