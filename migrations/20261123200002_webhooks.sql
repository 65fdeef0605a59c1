-- Webhook processing state (crates/hubkeeper-webhooks). Not a projection: replay never touches it.

-- Every webhook event processed, by its identity. HubSpot redelivers and `eventId` alone is not
-- unique, so the key is a SHA-256 over eventId, portalId, subscriptionType, occurredAt, objectId,
-- propertyName and propertyValue (see hubkeeper_webhooks::batch::dedupe_key).
CREATE TABLE webhook_events_seen
(
    dedupe_key        bytea PRIMARY KEY,
    app_id            uuid        NOT NULL,
    portal_id         bigint      NOT NULL,
    event_id          bigint      NOT NULL,
    subscription_type text        NOT NULL,
    occurred_at       timestamptz NOT NULL,
    -- HK_WEBHOOKS stream sequence of the batch that carried it first.
    batch_sequence    bigint      NOT NULL,
    -- NULL when the portal had no installation of the app (see webhook_unrouted).
    installation_id   uuid,
    processed_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON webhook_events_seen (processed_at);
CREATE INDEX ON webhook_events_seen (app_id, portal_id);

-- Events for portals without an installation of the app: kept for review, never dropped.
CREATE TABLE webhook_unrouted
(
    dedupe_key        bytea PRIMARY KEY,
    app_id            uuid        NOT NULL,
    portal_id         bigint      NOT NULL,
    subscription_type text        NOT NULL,
    event             jsonb       NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    reviewed_at       timestamptz
);
CREATE INDEX ON webhook_unrouted (app_id, portal_id);

-- Webhook events per installation and day (usage statistics for the dashboard and billing).
CREATE TABLE webhook_usage_daily
(
    installation_id uuid   NOT NULL,
    day             date   NOT NULL,
    events          bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (installation_id, day)
);
