-- Admin API keys. The secret part is never stored: only its SHA-256 (keys are 256-bit random, so
-- a fast hash is enough; there is nothing to brute-force).
CREATE TABLE api_keys
(
    id           text PRIMARY KEY,
    name         text        NOT NULL,
    role         text        NOT NULL CHECK (role IN ('admin', 'operator', 'auditor', 'service')),
    secret_hash  text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text        NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

CREATE INDEX api_keys_active ON api_keys (id) WHERE revoked_at IS NULL;
