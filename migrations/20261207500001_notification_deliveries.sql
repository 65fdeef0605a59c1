-- One row per notification delivery (one notification to one endpoint), written by the notifier's
-- fan-out before the delivery is queued and updated by every attempt. `webhook_id` is derived
-- from the source event and the endpoint, so a repeated fan-out finds its row. `body` holds the
-- exact bytes sent (each attempt signs them with that attempt's timestamp).
CREATE TABLE notification_deliveries
(
    webhook_id        text PRIMARY KEY,
    app_id            uuid        NOT NULL,
    endpoint_id       uuid        NOT NULL,
    notification_type text        NOT NULL,
    -- `aggregate_type:aggregate_id:sequence` of the event it reports.
    source_event      text        NOT NULL,
    installation_id   uuid,
    body              text        NOT NULL,
    -- pending | retrying | delivered | failed | gone
    status            text        NOT NULL DEFAULT 'pending',
    attempts          integer     NOT NULL DEFAULT 0,
    last_status_code  integer,
    last_error        text,
    last_latency_ms   integer,
    event_recorded_at timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_attempt_at   timestamptz,
    next_attempt_at   timestamptz,
    delivered_at      timestamptz
);
CREATE INDEX notification_deliveries_by_endpoint
    ON notification_deliveries (endpoint_id, created_at DESC, webhook_id);
