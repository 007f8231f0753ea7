-- API keys for machines (e.g. a truck's tablet, a utility's system): only a SHA-256 hash
-- of each key's secret part is stored, looked up by the key id that prefixes the key.
-- The clear key is shown once, when it is created (`cityops auth create-key`).
CREATE TABLE api_keys (
    key_id        text PRIMARY KEY CHECK (key_id ~ '^[a-z0-9]{12}$'),
    key_hash      bytea NOT NULL CHECK (length(key_hash) = 32),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    roles         text[] NOT NULL CHECK (
                      cardinality(roles) >= 1
                      AND roles <@ ARRAY['truck', 'dispatcher', 'roadworks_editor',
                                         'traffic_engineer', 'admin']::text[]),
    organisation  text CHECK (organisation IS NULL OR length(organisation) BETWEEN 1 AND 200),
    truck_id      text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    CONSTRAINT api_keys_truck_bound CHECK (NOT ('truck' = ANY (roles)) OR truck_id IS NOT NULL),
    CONSTRAINT api_keys_editor_bound CHECK (
        NOT ('roadworks_editor' = ANY (roles)) OR organisation IS NOT NULL)
);

COMMENT ON COLUMN api_keys.key_hash IS 'SHA-256 of the secret part; the clear key is never stored';
