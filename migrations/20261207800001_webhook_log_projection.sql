-- HubSpot webhook events are recorded in the event store (`hubspot_webhook_log` aggregates, one
-- `HubSpotWebhookReceived` per accepted, de-duplicated event) and every webhook count is folded
-- from them by the installations projection (crates/hubkeeper-projections/src/apply).

-- One row per webhook log event projected: the projector's record of what it has counted (its
-- primary key makes a redelivered event count once) and the source of the `/v1/stats/webhooks`
-- series. Rebuilt by a replay of the installations projection, like `webhook_usage_daily`.
CREATE TABLE rm_webhook_events
(
    log_id            text        NOT NULL,
    sequence          bigint      NOT NULL,
    -- NULL for events of portals without an installation of the app (the app's log).
    installation_id   uuid,
    app_id            uuid        NOT NULL,
    portal_id         bigint      NOT NULL,
    subscription_type text        NOT NULL,
    -- When it happened in HubSpot (`occurredAt`).
    occurred_at       timestamptz NOT NULL,
    -- When a webhook worker recorded it (the event's metadata).
    received_at       timestamptz NOT NULL,
    PRIMARY KEY (log_id, sequence)
);
CREATE INDEX rm_webhook_events_received_at ON rm_webhook_events (received_at);
CREATE INDEX rm_webhook_events_installation ON rm_webhook_events (installation_id, received_at);
