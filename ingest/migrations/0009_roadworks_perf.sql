-- Roadworks: what the public search and the feeds need to stay cheap at city scale.
--
-- 1. The public search pages by effective start (coalesce(actual_start, planned_start))
--    and id among the public works; this index gives that order without sorting every
--    match, and lets a page after a keyset cursor start where the previous one ended.
CREATE INDEX roadworks_public_start_idx
    ON roadworks ((coalesce(actual_start, planned_start)), id)
    WHERE is_public AND status IN ('approved', 'scheduled', 'in_progress');

-- 2. A data version of the registry's public content: the id of the last transaction that
--    changed a work or its streets (cluster-wide unique, so databases cloned from one
--    template do not share versions once they change). The API keeps rendered search
--    pages and feeds per version and checks it with one cheap read.
CREATE TABLE roadworks_data_version (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version     xid8 NOT NULL,
    changed_at  timestamptz NOT NULL
);
INSERT INTO roadworks_data_version (version, changed_at)
    VALUES (pg_current_xact_id(), clock_timestamp());

CREATE FUNCTION roadworks_bump_data_version() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE roadworks_data_version
       SET version = pg_current_xact_id(), changed_at = clock_timestamp();
    RETURN NULL;
END
$$;

-- Statement-level: one update per statement (a COPY of 10,000 works bumps it once).
CREATE TRIGGER roadworks_data_version_trg
    AFTER INSERT OR UPDATE OR DELETE ON roadworks
    FOR EACH STATEMENT EXECUTE FUNCTION roadworks_bump_data_version();
CREATE TRIGGER roadworks_data_version_truncate_trg
    AFTER TRUNCATE ON roadworks
    FOR EACH STATEMENT EXECUTE FUNCTION roadworks_bump_data_version();
CREATE TRIGGER roadwork_streets_data_version_trg
    AFTER INSERT OR UPDATE OR DELETE ON roadwork_streets
    FOR EACH STATEMENT EXECUTE FUNCTION roadworks_bump_data_version();
CREATE TRIGGER roadwork_streets_data_version_truncate_trg
    AFTER TRUNCATE ON roadwork_streets
    FOR EACH STATEMENT EXECUTE FUNCTION roadworks_bump_data_version();
