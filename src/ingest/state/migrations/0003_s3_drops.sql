-- S3 batch drops, one row per drop a scan has seen. Readiness is checked afresh on every scan; this
-- keeps what must outlive a scan: since when a drop has been waiting (so "waiting too long" is
-- measured across runs and restarts), when it became ready, whether it was reported overdue, and
-- the producer's manifest, which the loader reads for the row counts it promised.
CREATE TABLE s3_drops (
    source        text NOT NULL,
    bucket        text NOT NULL,
    drop_id       text NOT NULL,
    prefix        text NOT NULL,
    marker        text,                                -- _manifest.json | _SUCCESS | NULL: none yet
    manifest      jsonb,                               -- the producer manifest as last read
    problems      jsonb NOT NULL DEFAULT '{}'::jsonb,  -- the last check: missing, wrong_size, ...
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    waiting_since timestamptz,                         -- not ready since then; NULL while ready
    ready_at      timestamptz,                         -- when it last became ready
    overdue_at    timestamptz,                         -- when its wait was first reported too long
    PRIMARY KEY (source, bucket, drop_id)
);
CREATE INDEX s3_drops_waiting ON s3_drops (source, waiting_since) WHERE waiting_since IS NOT NULL;
