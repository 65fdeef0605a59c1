-- Issue 4: envelope-encryption keys, OAuth install states and token hand-out counters.

-- One data key per tenant ("owner": an installation id, or "app:<id>" for an app's client
-- secret, or "system:<name>"). `wrapped` is the data key encrypted under a master key from
-- configuration (never stored here). Crypto-shredding sets it to NULL: every sealed value of that
-- owner in the immutable event history becomes unreadable, while the history itself remains.
CREATE TABLE data_keys
(
    owner       text PRIMARY KEY,
    wrapped     text,
    -- Master key id that wraps `wrapped`; `hubkeeper keys rotate` re-wraps rows whose id is not
    -- the active one.
    master_kid  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz,
    shredded_at timestamptz,
    CHECK ((wrapped IS NULL) = (master_kid IS NULL)),
    CHECK (wrapped IS NOT NULL OR shredded_at IS NOT NULL)
);

CREATE INDEX data_keys_by_master ON data_keys (master_kid) WHERE wrapped IS NOT NULL;

-- Small secrets Hubkeeper generates for itself (e.g. the OAuth state signing key when
-- HK_STATE_SECRET is not configured), sealed with the data key of owner "system:<name>".
CREATE TABLE vault_secrets
(
    name       text PRIMARY KEY,
    sealed     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- OAuth `state` values handed out by GET /oauth/{app_id}/install. The state itself is signed;
-- this row makes it single-use (used_at is set atomically by the callback) and bounds its life.
CREATE TABLE oauth_states
(
    nonce      text PRIMARY KEY,
    app_id     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);

CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);

-- Token hand-outs are not events (see the Installation aggregate docs): counted in memory and
-- flushed here in batches, one row per installation and UTC day.
CREATE TABLE token_usage
(
    installation_id    text        NOT NULL,
    day                date        NOT NULL,
    handouts           bigint      NOT NULL DEFAULT 0,
    last_handed_out_at timestamptz NOT NULL,
    PRIMARY KEY (installation_id, day)
);
