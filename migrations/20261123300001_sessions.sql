-- Dashboard sessions. A browser logs in once with an API key and then carries only a random
-- session id in an HttpOnly cookie; like API keys, the id is stored as its SHA-256 (it is 256-bit
-- random, so a fast hash suffices) so a leaked table cannot be replayed as cookies.
-- Deleting a key's sessions is how revoking a key ends them.
CREATE TABLE sessions
(
    id_hash      text PRIMARY KEY,
    key_id       text        NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    user_agent   text
);

CREATE INDEX sessions_key ON sessions (key_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);
