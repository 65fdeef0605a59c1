-- Issue 7: pricing plans, subscriptions and usage; settings; backups and self-test runs.
--
-- Two kinds of tables:
-- - edge-owned (written by the API in the request that needs them, never derived from events):
--   plan_codes, usage_reports, usage_daily, usage_levels, backup_runs, selftest_runs;
-- - read models (rm_*), written only by the billing projector from plan and subscription events
--   (hubkeeper_core::billing_projection) and rebuildable from the event store.

-- Plan codes are unique across Plan aggregates. An aggregate cannot see the others, so the API
-- reserves the code here before it creates the plan; a deleted plan keeps its code (its history
-- still names it), so a new plan needs a new code ("pro_v2").
CREATE TABLE plan_codes
(
    code        text PRIMARY KEY,
    plan_id     uuid        NOT NULL UNIQUE,
    reserved_at timestamptz NOT NULL DEFAULT now()
);

-- Every usage report accepted, keyed by the reporter's idempotency key: a retried report finds its
-- row and is not counted twice. Pruned after the logging retention period.
CREATE TABLE usage_reports
(
    installation_id uuid        NOT NULL,
    idempotency_key text        NOT NULL,
    metric          text        NOT NULL,
    quantity        bigint      NOT NULL CHECK (quantity >= 0),
    reported_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (installation_id, idempotency_key)
);
CREATE INDEX ON usage_reports (reported_at);

-- Counters (requests) per installation, metric and UTC day; a month is the sum of its days.
CREATE TABLE usage_daily
(
    installation_id uuid   NOT NULL,
    metric          text   NOT NULL,
    day             date   NOT NULL,
    quantity        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (installation_id, metric, day)
);
CREATE INDEX ON usage_daily (day);

-- Levels (contacts, users, storage, concurrent connections): the latest value reported.
CREATE TABLE usage_levels
(
    installation_id uuid        NOT NULL,
    metric          text        NOT NULL,
    value           bigint      NOT NULL CHECK (value >= 0),
    reported_at     timestamptz NOT NULL,
    PRIMARY KEY (installation_id, metric)
);

-- Read model: one row per plan (current version).
CREATE TABLE rm_plans
(
    plan_id          uuid PRIMARY KEY,
    code             text        NOT NULL,
    name             text        NOT NULL,
    description      text        NOT NULL DEFAULT '',
    app_id           uuid,
    plan_type        text        NOT NULL,
    billing_interval text,
    price_minor      bigint      NOT NULL,
    currency         text        NOT NULL,
    unit_price_minor bigint,
    unit_per_units   bigint,
    unit_metric      text,
    features         jsonb       NOT NULL DEFAULT '[]',
    limits           jsonb       NOT NULL DEFAULT '{}',
    status           text        NOT NULL,
    version          integer     NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    deleted_at       timestamptz,
    last_sequence    bigint      NOT NULL
);
CREATE INDEX ON rm_plans (status);

-- Read model: which plan each tenant is on.
CREATE TABLE rm_subscriptions
(
    installation_id       uuid PRIMARY KEY,
    app_id                uuid        NOT NULL,
    plan_id               uuid        NOT NULL,
    plan_code             text        NOT NULL,
    plan_version          integer     NOT NULL,
    price_minor           bigint      NOT NULL,
    currency              text        NOT NULL,
    started_at            timestamptz NOT NULL,
    started_paid          boolean     NOT NULL,
    -- Whether the current plan costs anything (free -> paid is a conversion).
    current_paid          boolean     NOT NULL,
    joined_at             timestamptz NOT NULL,
    renews_at             timestamptz,
    last_limit_reached_at timestamptz,
    last_sequence         bigint      NOT NULL
);
CREATE INDEX ON rm_subscriptions (plan_id);

-- Read model: every plan change (the Recent Upgrades table), by global position.
CREATE TABLE rm_plan_changes
(
    global_position bigint PRIMARY KEY,
    installation_id uuid        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    from_plan_code  text,
    to_plan_code    text        NOT NULL,
    direction       text        NOT NULL,
    amount_minor    bigint      NOT NULL,
    currency        text        NOT NULL,
    trigger         text        NOT NULL,
    actor           text        NOT NULL
);
CREATE INDEX ON rm_plan_changes (occurred_at);

-- Read model: limits reached (upgrade offers), by global position.
CREATE TABLE rm_limits_reached
(
    global_position bigint PRIMARY KEY,
    installation_id uuid        NOT NULL,
    plan_code       text        NOT NULL,
    limit_kind      text        NOT NULL,
    limit_value     bigint      NOT NULL,
    used            bigint      NOT NULL,
    period          text        NOT NULL,
    offer_plan_code text,
    occurred_at     timestamptz NOT NULL
);
CREATE INDEX ON rm_limits_reached (occurred_at);

-- Backups made by `hubkeeper backup`, the API or the schedule (what the Settings page shows).
CREATE TABLE backup_runs
(
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    trigger     text        NOT NULL,
    file        text,
    bytes       bigint,
    ok          boolean,
    error       text
);

-- Self-test reports (the Settings page shows the latest).
CREATE TABLE selftest_runs
(
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    passed      boolean     NOT NULL,
    report      jsonb       NOT NULL
);
