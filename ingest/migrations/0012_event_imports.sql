-- Controller event log files imported by `cityops traffic import-events`
-- (cityops.traffic.event_import, docs/traffic.md "Controller event logs"): one row per
-- file, keyed by the sha256 of its content (after gunzip), so the same file given again
-- is recognised and stores nothing. Written in the transaction that stores the file's
-- events and dead letters, so a row means the whole file is in.
CREATE TABLE signal_event_imports (
    sha256       bytea PRIMARY KEY CHECK (octet_length(sha256) = 32),
    file_name    text NOT NULL,
    time_zone    text NOT NULL,                   -- how its local times were read
    rows         bigint NOT NULL DEFAULT 0 CHECK (rows >= 0),       -- good rows in the file
    new_rows     bigint NOT NULL DEFAULT 0 CHECK (new_rows >= 0),   -- of them not stored before
    dead_rows    bigint NOT NULL DEFAULT 0 CHECK (dead_rows >= 0),  -- lines dead-lettered
    first_event  timestamptz,
    last_event   timestamptz,
    controllers  text[] NOT NULL DEFAULT '{}',
    imported_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (new_rows <= rows),
    CHECK (first_event <= last_event)
);
CREATE INDEX signal_event_imports_imported_at_idx ON signal_event_imports (imported_at);
