-- The device registry becomes the city's to manage (registry import/export, the registry
-- API): devices carry a version (the API's ETag) and can be retired. Retired rows stay in
-- the *_registry tables (their history and time series keep their keys); the views named
-- as the tables were (bins, trucks, signal_controllers) show the active ones only, so the
-- planner, the ingest's device list, the API and the dashboards leave a retired device
-- out without a special case of their own. Every change is audited.

DROP VIEW devices;

ALTER TABLE bins RENAME TO bin_registry;
ALTER TABLE bin_registry
    ADD COLUMN collection_days   smallint[] NOT NULL DEFAULT '{}',
    -- LoRaWAN distance sensors (docs/devices.md): the DevEUI the network server names,
    -- the sensor model (its codec) and the calibration: distance from the sensor to the
    -- bin's floor when empty, and to the fill line when full.
    ADD COLUMN dev_eui           text CHECK (dev_eui ~ '^[0-9a-f]{16}$'),
    ADD COLUMN sensor_model      text,
    ADD COLUMN empty_distance_mm integer CHECK (empty_distance_mm BETWEEN 100 AND 5000),
    ADD COLUMN full_distance_mm  integer CHECK (full_distance_mm BETWEEN 0 AND 5000),
    ADD CONSTRAINT bin_registry_calibration CHECK (full_distance_mm < empty_distance_mm),
    ADD COLUMN version           integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    ADD COLUMN updated_at        timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN retired_at        timestamptz,
    ADD CONSTRAINT bin_registry_days_known CHECK (collection_days <@ '{0,1,2,3,4,5,6}'::smallint[]);
UPDATE bin_registry SET collection_days = ARRAY[collection_weekday]
    WHERE collection_weekday IS NOT NULL;
ALTER TABLE bin_registry DROP COLUMN collection_weekday;
-- A retired bin gives its sensor free for the bin that replaces it.
ALTER TABLE bin_registry DROP CONSTRAINT bins_sensor_id_key;
CREATE UNIQUE INDEX bin_registry_active_sensor ON bin_registry (sensor_id)
    WHERE retired_at IS NULL;
CREATE UNIQUE INDEX bin_registry_active_dev_eui ON bin_registry (dev_eui)
    WHERE retired_at IS NULL;
CREATE VIEW bins AS
    SELECT bin_id, sensor_id, geom, street, house_number, district, capacity_l, fraction,
           collection_days, access_from, access_to, dev_eui, sensor_model,
           empty_distance_mm, full_distance_mm, created_at, version, updated_at
    FROM bin_registry WHERE retired_at IS NULL;

ALTER TABLE trucks RENAME TO truck_registry;
ALTER TABLE truck_registry
    ADD COLUMN version     integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN retired_at  timestamptz;
CREATE VIEW trucks AS
    SELECT truck_id, name, capacity_l, capacity_kg, depot_id, created_at, fractions,
           shift_start, shift_end, version, updated_at
    FROM truck_registry WHERE retired_at IS NULL;

ALTER TABLE signal_controllers RENAME TO signal_controller_registry;
ALTER TABLE signal_controller_registry
    ADD COLUMN version     integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN retired_at  timestamptz;
CREATE VIEW signal_controllers AS
    SELECT controller_id, name, geom, cycle_s, created_at, version, updated_at
    FROM signal_controller_registry WHERE retired_at IS NULL;

ALTER TABLE sites
    ADD COLUMN version     integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now();

CREATE VIEW devices AS
    SELECT 'bin'::text AS kind, sensor_id AS device_id, bin_id AS entity_id FROM bins
        WHERE sensor_id IS NOT NULL
    UNION ALL
    SELECT 'signal', controller_id, controller_id FROM signal_controllers
    UNION ALL
    SELECT 'truck', truck_id, truck_id FROM trucks;

-- Who changed which device when, from what (an import file, the API), before and after.
CREATE TABLE registry_audit (
    audit_id   bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    source     text NOT NULL,
    action     text NOT NULL CHECK (action IN ('create', 'update', 'retire', 'revive')),
    kind       text NOT NULL CHECK (kind IN ('bin', 'truck', 'site', 'signal_controller')),
    entity_id  text NOT NULL,
    before     jsonb,
    after      jsonb
);
CREATE INDEX registry_audit_entity_idx ON registry_audit (kind, entity_id, at);
