-- Roadworks registry: works with their footprint and affected streets, the audit history,
-- coordination findings with decisions, resurfaced street segments (protection period)
-- and daily overview snapshots. Geometry is WGS84 (EPSG:4326); areas and distances are
-- computed in the city's metric CRS by the application (cityops.roadworks.geometry).
-- Times are timestamptz (UTC in storage).
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE roadworks (
    id                         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reference                  text NOT NULL UNIQUE CHECK (reference ~ '^[A-Z0-9][A-Z0-9-]{2,39}$'),
    title                      text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description                text NOT NULL DEFAULT '',
    promoter                   text NOT NULL CHECK (length(promoter) BETWEEN 1 AND 200),
    sector                     text NOT NULL CHECK (sector IN ('electricity', 'gas',
                                   'district_heating', 'water', 'telecom', 'sewer', 'road',
                                   'other')),
    contractor                 text,
    public_contact             text,
    category                   text NOT NULL CHECK (category IN ('minor', 'standard', 'major',
                                   'emergency')),
    status                     text NOT NULL CHECK (status IN ('draft', 'submitted',
                                   'in_consultation', 'modification_requested', 'approved',
                                   'refused', 'scheduled', 'in_progress', 'completed',
                                   'cancelled', 'revoked')),
    footprint                  geometry(Geometry, 4326) NOT NULL
                               CHECK (GeometryType(footprint) IN ('POLYGON', 'MULTIPOLYGON')
                                      AND ST_IsValid(footprint) AND NOT ST_IsEmpty(footprint)),
    area_m2                    double precision NOT NULL CHECK (area_m2 >= 0),
    district                   text NOT NULL,
    planned_start              timestamptz NOT NULL,
    planned_end                timestamptz NOT NULL,
    actual_start               timestamptz,
    actual_end                 timestamptz,
    working_hours              text,
    night_works                boolean NOT NULL DEFAULT false,
    excavation                 boolean NOT NULL DEFAULT true,
    measures                   text[] NOT NULL DEFAULT '{}'
                               CHECK (measures <@ ARRAY['road_closure', 'lane_closure',
                                   'alternating_one_way', 'temporary_signals',
                                   'sidewalk_closure', 'cycle_lane_closure',
                                   'parking_suspended']),
    lanes_affected             smallint NOT NULL DEFAULT 0 CHECK (lanes_affected BETWEEN 0 AND 12),
    detour_description         text,
    detour                     geometry(Geometry, 4326)
                               CHECK (detour IS NULL
                                      OR GeometryType(detour) IN ('LINESTRING', 'MULTILINESTRING')),
    bus_lines                  text[] NOT NULL DEFAULT '{}',
    waste_collection_affected  boolean NOT NULL DEFAULT false,
    is_public                  boolean NOT NULL DEFAULT true,
    public_text                text,
    version                    integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at                 timestamptz NOT NULL,
    created_by                 text NOT NULL,
    updated_at                 timestamptz NOT NULL,
    CHECK (planned_end > planned_start),
    CHECK (actual_end IS NULL OR (actual_start IS NOT NULL AND actual_end >= actual_start)),
    CHECK (status <> 'in_progress' OR actual_start IS NOT NULL),
    CHECK (status <> 'completed' OR actual_end IS NOT NULL)
);
CREATE INDEX roadworks_footprint_idx ON roadworks USING gist (footprint);
CREATE INDEX roadworks_status_idx ON roadworks (status);
CREATE INDEX roadworks_period_idx ON roadworks (planned_start, planned_end);
CREATE INDEX roadworks_promoter_idx ON roadworks (lower(promoter));

-- Reference numbers RW-<year>-<nnnnn>, the number counting across years.
CREATE SEQUENCE roadwork_reference_seq;

-- Affected street centrelines with their road names, in the order given.
CREATE TABLE roadwork_streets (
    work_id     bigint NOT NULL REFERENCES roadworks ON DELETE CASCADE,
    seq         smallint NOT NULL CHECK (seq >= 0),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    street_key  text NOT NULL,  -- folded name (labels.street_key) for "my street" lookups
    geom        geometry(LineString, 4326) NOT NULL,
    PRIMARY KEY (work_id, seq)
);
CREATE INDEX roadwork_streets_key_idx ON roadwork_streets (street_key);
CREATE INDEX roadwork_streets_geom_idx ON roadwork_streets USING gist (geom);

-- Every change to a work, with who made it. Append-only.
CREATE TABLE roadwork_audit (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    work_id       bigint NOT NULL REFERENCES roadworks ON DELETE CASCADE,
    at            timestamptz NOT NULL,
    actor         text NOT NULL,
    organisation  text NOT NULL,
    role          text NOT NULL CHECK (role IN ('promoter', 'authority', 'system')),
    action        text NOT NULL,
    from_status   text,
    to_status     text,
    changes       jsonb NOT NULL DEFAULT '{}',
    note          text
);
CREATE INDEX roadwork_audit_work_idx ON roadwork_audit (work_id, id);

-- Street segments resurfaced on a date: digging there within the protection period
-- (Aufbruchsperre) is warned about.
CREATE TABLE resurfaced_segments (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    street         text NOT NULL CHECK (length(street) BETWEEN 1 AND 200),
    geom           geometry(LineString, 4326) NOT NULL,
    resurfaced_on  date NOT NULL,
    note           text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL
);
CREATE INDEX resurfaced_segments_geom_idx ON resurfaced_segments USING gist (geom);

-- Coordination findings. A pair of works has one row per kind (work_a < work_b); a
-- protection-period finding names the segment instead. Rows are never deleted when a
-- finding disappears after a change: they become obsolete (obsolete_since), and a decision
-- stays attached should the finding come back. Status: obsolete, else the decision, else open.
CREATE TABLE roadwork_findings (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('clash', 'dig_once', 'protection_period',
                        'parallel_closure')),
    severity        text NOT NULL CHECK (severity IN ('conflict', 'warning', 'opportunity')),
    work_a          bigint NOT NULL REFERENCES roadworks ON DELETE CASCADE,
    work_b          bigint REFERENCES roadworks ON DELETE CASCADE,
    segment_id      bigint REFERENCES resurfaced_segments ON DELETE CASCADE,
    street          text,
    message         text NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}',
    location        geometry(Geometry, 4326),
    decision        text CHECK (decision IN ('accepted', 'resolved')),
    decision_note   text,
    decided_by      text,
    decided_at      timestamptz,
    obsolete_since  timestamptz,  -- no longer found after a change (decision kept)
    first_found_at  timestamptz NOT NULL,
    last_found_at   timestamptz NOT NULL,
    CHECK (work_b IS NULL OR work_a < work_b),
    CHECK ((work_b IS NULL) <> (segment_id IS NULL)),
    CHECK ((decision IS NULL) = (decided_at IS NULL)),
    UNIQUE NULLS NOT DISTINCT (kind, work_a, work_b, segment_id)
);
CREATE INDEX roadwork_findings_b_idx ON roadwork_findings (work_b);
CREATE INDEX roadwork_findings_open_idx ON roadwork_findings (work_a)
    WHERE decision IS NULL AND obsolete_since IS NULL;

-- Published daily overviews: every publication is kept, the newest per day is current.
CREATE TABLE roadwork_overviews (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    day           date NOT NULL,
    generated_at  timestamptz NOT NULL,
    active        integer NOT NULL,
    upcoming      integer NOT NULL,
    html          text NOT NULL,
    geojson       jsonb NOT NULL
);
CREATE INDEX roadwork_overviews_day_idx ON roadwork_overviews (day, generated_at DESC);
