-- Durable state shared by every mode. Applied inside the target schema (search_path is set by the
-- runner), so the same file serves the default `ingest` schema and per-test-run schemas.

-- Requests that completed, by fingerprint: never re-send, recognise pages already loaded.
CREATE TABLE idempotency_keys (
    fingerprint     text PRIMARY KEY,              -- SHA-256 hex of method, canonical URL, body, headers
    idempotency_key text NOT NULL,
    source          text,
    method          text NOT NULL,
    url             text NOT NULL,
    state           text NOT NULL DEFAULT 'started' CHECK (state IN ('started', 'completed', 'failed')),
    status_code     integer,
    response_digest text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    expires_at      timestamptz NOT NULL
);
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);

-- Incremental cursors; advanced in the same transaction as the rows they cover.
CREATE TABLE watermarks (
    source     text NOT NULL,
    stream     text NOT NULL DEFAULT '',
    value      jsonb NOT NULL,
    run_id     text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, stream)
);

-- Everything we could not accept, with the original bytes, replayable.
CREATE TABLE dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source       text NOT NULL,
    kind         text NOT NULL,                     -- request | webhook | s3_row | s3_file | record
    reason       text NOT NULL,
    error_class  text,
    payload      bytea,                             -- the original bytes, untouched
    context      jsonb NOT NULL DEFAULT '{}'::jsonb, -- request summary, file/line, status, ...
    attempts     integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at  timestamptz,
    resolved_at  timestamptz
);
CREATE INDEX dead_letters_unresolved ON dead_letters (source, created_at) WHERE resolved_at IS NULL;

-- Webhook inbox: unique on (source, event id) is the durable half of dedup.
CREATE TABLE webhook_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      text NOT NULL,
    event_id    text NOT NULL,
    event_type  text,
    received_at timestamptz NOT NULL DEFAULT now(),
    headers     jsonb NOT NULL DEFAULT '{}'::jsonb,
    payload     jsonb NOT NULL,
    UNIQUE (source, event_id)
);

-- Transactional outbox: written with the inbox row, relayed at least once, applied idempotently.
CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source       text NOT NULL,
    event_id     text NOT NULL,
    topic        text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    delivered_at timestamptz,
    UNIQUE (source, event_id, topic)
);
CREATE INDEX outbox_pending ON outbox (available_at, id) WHERE delivered_at IS NULL;

-- S3 object manifest: each object version loads exactly once.
CREATE TABLE s3_objects (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source           text NOT NULL,
    bucket           text NOT NULL,
    key              text NOT NULL,
    version          text NOT NULL,                 -- VersionId when versioned, else the ETag
    etag             text NOT NULL,
    size             bigint NOT NULL,
    drop_id          text,
    state            text NOT NULL DEFAULT 'discovered'
                     CHECK (state IN ('discovered', 'loading', 'loaded', 'failed', 'quarantined')),
    rows             bigint,
    bad_rows         bigint,
    error            text,
    attempts         integer NOT NULL DEFAULT 0,
    lease_owner      text,
    lease_expires_at timestamptz,
    discovered_at    timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    loaded_at        timestamptz,
    UNIQUE (bucket, key, version)
);
CREATE INDEX s3_objects_claimable ON s3_objects (source, state, lease_expires_at);

-- One row per run of a source: what was asked, what landed, how it ended.
CREATE TABLE load_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      text NOT NULL,
    source      text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
    rows_loaded bigint NOT NULL DEFAULT 0,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX load_log_source ON load_log (source, started_at DESC);

-- Schema versions per subject, the registry's storage and the gate's memory.
CREATE TABLE schema_versions (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject     text NOT NULL,
    version     integer NOT NULL,
    schema_type text NOT NULL DEFAULT 'JSON',
    schema      jsonb NOT NULL,
    fingerprint text NOT NULL,
    deleted     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subject, version)
);
CREATE INDEX schema_versions_fingerprint ON schema_versions (fingerprint);
