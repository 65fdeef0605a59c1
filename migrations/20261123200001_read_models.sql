-- Read models (projections of the event store) for the dashboard, the scheduler and the query API.
-- Written only by the projector (crates/hubkeeper-projections) and rebuilt by `hubkeeper replay`,
-- except the "side columns" marked below, which other components own.
--
-- Replay builds `<table>_new` with `CREATE TABLE ... (LIKE <table> INCLUDING ALL)` and swaps it in,
-- so: indexes here are left unnamed (Postgres's default names are what a rebuilt copy gets too),
-- there are no views or foreign keys pointing at these tables (they would follow the old table),
-- and a column added by a later migration must either be derived from events by the projector or
-- be listed as a side column in `hubkeeper_projections::tables` (replay copies those over).

-- One row per installation. `status` is the recorded status; "expired" is derived when reading:
-- status = 'connected' AND access_expires_at <= now().
CREATE TABLE rm_installations
(
    installation_id      uuid PRIMARY KEY,
    app_id               uuid        NOT NULL,
    hub_id               bigint      NOT NULL,
    user_id              bigint,
    hub_domain           text        NOT NULL,
    installer_user_id    bigint,
    installer_email      text,
    scopes               text[]      NOT NULL DEFAULT '{}',
    app_version          text,
    status               text        NOT NULL CHECK (status IN ('connected', 'needs_reauthorization',
                                                                'disconnected', 'revoked', 'forgotten')),
    -- operator | uninstalled, while status = 'disconnected'.
    disconnect_cause     text,
    -- Operator's justification of the latest revoke / disconnect / forget.
    status_reason        text,
    status_changed_at    timestamptz NOT NULL,
    -- Set while tokens are held (connected, needs_reauthorization); NULL once removed.
    access_expires_at    timestamptz,
    first_connected_at   timestamptz NOT NULL,
    last_connected_at    timestamptz NOT NULL,
    last_refreshed_at    timestamptz,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    last_failure_class   text,
    last_failure_message text,
    last_failure_at      timestamptz,
    generation           bigint      NOT NULL DEFAULT 0,
    forgotten_at         timestamptz,
    -- Side columns: not derived from events. plan_code belongs to pricing (issue 7), last_used_at to
    -- the token API (issue 4), webhook_events / last_webhook_at to the webhook workers.
    plan_code            text,
    last_used_at         timestamptz,
    webhook_events       bigint      NOT NULL DEFAULT 0,
    last_webhook_at      timestamptz,
    -- Projection bookkeeping: the last event of this aggregate applied (order and idempotency).
    last_sequence        bigint      NOT NULL,
    last_position        bigint      NOT NULL,
    -- recorded_at of that event (not now(): a replay must produce the same row).
    updated_at           timestamptz NOT NULL
);
-- The scheduler: connected installations whose access token expires before X.
CREATE INDEX ON rm_installations (status, access_expires_at);
-- Webhook routing by portal, and filters.
CREATE INDEX ON rm_installations (hub_id, app_id);
CREATE INDEX ON rm_installations (app_id, status);
CREATE INDEX ON rm_installations (first_connected_at);

-- Status history of every installation as periods, for "active users a week ago" and similar.
CREATE TABLE rm_installation_status_periods
(
    installation_id uuid        NOT NULL,
    -- Sequence of the event that started the period.
    sequence        bigint      NOT NULL,
    app_id          uuid        NOT NULL,
    status          text        NOT NULL,
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    PRIMARY KEY (installation_id, sequence)
);
CREATE INDEX ON rm_installation_status_periods (status, started_at, ended_at);

-- One row per app. Installation counts are recounted from rm_installations by the projector after
-- every change that can affect them (see hubkeeper_projections::apps).
CREATE TABLE rm_apps
(
    app_id                    uuid PRIMARY KEY,
    label                     text        NOT NULL,
    client_id                 text        NOT NULL,
    environment               text        NOT NULL,
    description               text        NOT NULL DEFAULT '',
    redirect_uri              text        NOT NULL,
    scopes                    text[]      NOT NULL DEFAULT '{}',
    optional_scopes           text[]      NOT NULL DEFAULT '{}',
    oauth_generation          text        NOT NULL,
    signature_versions        text[]      NOT NULL DEFAULT '{}',
    created_at                timestamptz NOT NULL,
    updated_at                timestamptz NOT NULL,
    deleted_at                timestamptz,
    installation_count        bigint      NOT NULL DEFAULT 0,
    -- Installations with status 'connected' (including expired-but-refreshable ones).
    active_installation_count bigint      NOT NULL DEFAULT 0,
    last_sequence             bigint      NOT NULL,
    last_position             bigint      NOT NULL
);
CREATE INDEX ON rm_apps (client_id);

-- One human-readable row per event (the activity log).
CREATE TABLE rm_activity
(
    global_position bigint PRIMARY KEY,
    occurred_at     timestamptz NOT NULL,
    level           text        NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    actor           text        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    event_type      text        NOT NULL,
    installation_id uuid,
    app_id          uuid,
    hub_id          bigint,
    message         text        NOT NULL
);
CREATE INDEX ON rm_activity (occurred_at);
CREATE INDEX ON rm_activity (installation_id, global_position);
CREATE INDEX ON rm_activity (app_id, global_position);
CREATE INDEX ON rm_activity (level, global_position);

-- Identity of installations as the activity projection knows it (installation events after the
-- first one do not repeat app and hub). Part of the activity projection, rebuilt with it.
CREATE TABLE rm_activity_subjects
(
    installation_id uuid PRIMARY KEY,
    app_id          uuid   NOT NULL,
    hub_id          bigint NOT NULL
);

-- What each replay did: the global cursor its tables were built up to, so operators (and the
-- projector's lag reasoning) can tell how a live table came to be.
CREATE TABLE projection_rebuilds
(
    projection      text PRIMARY KEY,
    rebuilt_at      timestamptz NOT NULL,
    through_tx      xid8        NOT NULL,
    through_position bigint     NOT NULL,
    events          bigint      NOT NULL,
    seconds         float8      NOT NULL
);
