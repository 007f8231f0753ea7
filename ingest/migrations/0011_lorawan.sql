-- LoRaWAN uplinks (docs/devices.md): one row per frame a bin sensor sent through a network
-- server, for deduplication by (DevEUI, frame counter, payload) across gateways,
-- redeliveries and restarts, and to see how a sensor is heard. The frame counter restarts at
-- 0 when a device rejoins, so a frame is a duplicate only of one with the same counter and
-- the same payload a few minutes apart (`cityops.ingest.writer`); the reading itself goes to
-- bin_readings with the DevEUI as sensor_id. Kept 7 days (the ingest's retention run).
CREATE TABLE lorawan_frames (
    dev_eui      text NOT NULL CHECK (dev_eui ~ '^[0-9a-f]{16}$'),
    f_cnt        bigint NOT NULL CHECK (f_cnt >= 0),
    ts           timestamptz NOT NULL,
    bin_id       text NOT NULL,
    network      text NOT NULL CHECK (network IN ('chirpstack', 'tts')),
    gateways     smallint NOT NULL DEFAULT 0,
    payload_sha256 bytea NOT NULL CHECK (octet_length(payload_sha256) = 32),
    ingested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dev_eui, f_cnt, ts)
);
CREATE INDEX lorawan_frames_ts_idx ON lorawan_frames (ts);
