-- The event store. Columns 1-7 are exactly what postgres-es 0.5 reads and writes; the rest have
-- defaults so postgres-es's INSERT fills them without knowing they exist.
CREATE TABLE events
(
    aggregate_type  text                         NOT NULL,
    aggregate_id    text                         NOT NULL,
    sequence        bigint CHECK (sequence >= 0) NOT NULL,
    event_type      text                         NOT NULL,
    event_version   text                         NOT NULL,
    payload         json                         NOT NULL,
    metadata        json                         NOT NULL,
    -- Taken at INSERT, so NOT commit order on its own: readers pair it with tx_id (see below).
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction. A reader only reads rows whose transaction is below the snapshot's
    -- xmin: every such transaction has ended, so no row can later appear behind its cursor.
    tx_id           xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz                  NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_order ON events (tx_id, global_position);
CREATE INDEX events_recorded_at ON events (recorded_at);
CREATE INDEX events_type ON events (event_type);

-- Durable positions of the readers of the global order (the relay, exporters).
CREATE TABLE stream_cursors
(
    name          text PRIMARY KEY,
    last_tx       xid8        NOT NULL DEFAULT '0',
    last_position bigint      NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Wakes readers at commit time (NOTIFY is delivered on commit, once per transaction and channel).
CREATE FUNCTION hk_notify_events() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('hk_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify
    AFTER INSERT
    ON events
    FOR EACH STATEMENT
EXECUTE FUNCTION hk_notify_events();
