-- Connect sessions: an app's backend asks for a short-lived link that takes one of its own
-- customers (external_ref) through HubSpot's consent. The session id is a bearer capability
-- (it is the last part of the connect URL), so only its SHA-256 is stored.
CREATE TABLE connect_sessions
(
    session_hash    text PRIMARY KEY,
    app_id          uuid        NOT NULL,
    external_ref    text        NOT NULL,
    metadata        jsonb,
    app_version     text,
    return_url      text,
    -- The installation this session reconnects, when the app's customer already had one.
    installation_id uuid,
    -- Who created it (actor text of the event metadata vocabulary).
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    -- Set when the connect URL was opened (it can be opened once).
    started_at      timestamptz,
    -- Set when HubSpot's callback for it was handled, with its outcome.
    completed_at    timestamptz,
    outcome         text,
    result_installation_id uuid
);

CREATE INDEX connect_sessions_expiry ON connect_sessions (expires_at);

-- The OAuth state of a session's consent is bound to it.
ALTER TABLE oauth_states ADD COLUMN session_hash text;

-- The app's customer of each installation, for `GET /v1/installations?external_ref=`.
ALTER TABLE rm_installations ADD COLUMN external_ref text;
CREATE INDEX rm_installations_external_ref ON rm_installations (external_ref, app_id);
