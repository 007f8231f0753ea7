-- Adaptive signal control (cityops traffic control): whether the service may control a
-- controller, the history of those switches, and the optional topology between
-- intersections that max-pressure uses for downstream queues.

-- Control on/off per controller. No row means 'adaptive' (every registered controller is
-- controlled unless a traffic engineer switches it to 'fixed'). The service re-reads this
-- table periodically and sends 'fallback' once when a controller is switched to 'fixed'.
CREATE TABLE signal_control_modes (
    controller_id  text PRIMARY KEY REFERENCES signal_controllers ON DELETE CASCADE,
    mode           text NOT NULL CHECK (mode IN ('adaptive', 'fixed')),
    changed_by     text NOT NULL CHECK (length(changed_by) BETWEEN 1 AND 200),
    changed_at     timestamptz NOT NULL DEFAULT now(),
    reason         text NOT NULL DEFAULT '' CHECK (length(reason) <= 500)
);

-- Every switch, for the audit trail ("who turned adaptive control off at C12, and why").
CREATE TABLE signal_control_mode_log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    controller_id  text NOT NULL REFERENCES signal_controllers ON DELETE CASCADE,
    mode           text NOT NULL CHECK (mode IN ('adaptive', 'fixed')),
    changed_by     text NOT NULL,
    changed_at     timestamptz NOT NULL DEFAULT now(),
    reason         text NOT NULL DEFAULT ''
);
CREATE INDEX signal_control_mode_log_controller ON signal_control_mode_log (controller_id, changed_at);

-- Optional topology: vehicles of the approach lane of `channel` at one controller enter the
-- approach lane of `to_channel` at another (a detector stands for its lane), `share` of
-- them. Without rows the downstream queue counts as 0 (longest-queue-first).
CREATE TABLE signal_links (
    controller_id     text NOT NULL,
    channel           smallint NOT NULL,
    to_controller_id  text NOT NULL,
    to_channel        smallint NOT NULL,
    share             real NOT NULL DEFAULT 1 CHECK (share > 0 AND share <= 1),
    PRIMARY KEY (controller_id, channel, to_controller_id, to_channel),
    FOREIGN KEY (controller_id, channel) REFERENCES signal_detectors ON DELETE CASCADE,
    FOREIGN KEY (to_controller_id, to_channel) REFERENCES signal_detectors ON DELETE CASCADE,
    CHECK (controller_id <> to_controller_id)
);
