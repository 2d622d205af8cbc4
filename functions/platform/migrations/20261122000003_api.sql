-- The API's additions.
--
-- * Grad-CAM heatmaps are stored in S3; a run records the key of its
--   heatmap (content-addressed by image SHA-256 and model, so identical
--   images share one).
-- * `Idempotency-Key` on POSTs: the first response to a key is kept and
--   replayed to retries of the same request; a key reused for a different
--   request is refused. Rows are operational state, not data: they expire
--   (`expires_at`) and are not backed up.
-- * Uploads awaiting inference are found without scanning every study (the
--   local S3-event relay, and a sweeper in AWS if one is ever needed).

ALTER TABLE inference_runs ADD COLUMN heatmap_key text CHECK (length(heatmap_key) BETWEEN 1 AND 1024);

CREATE TABLE idempotency_keys (
    owner         text        NOT NULL CHECK (length(owner) BETWEEN 1 AND 128),
    key           text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- SHA-256 of method, path and body: a key belongs to one request.
    request_hash  text        NOT NULL CHECK (request_hash ~ '^[0-9a-f]{64}$'),
    -- NULL while the first request is still being answered.
    status_code   smallint    CHECK (status_code BETWEEN 100 AND 599),
    content_type  text,
    body          bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL DEFAULT now() + interval '24 hours',
    PRIMARY KEY (owner, key)
);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

CREATE INDEX studies_awaiting_inference_idx ON studies (updated_at DESC)
    WHERE status IN ('created', 'uploaded', 'processing');
