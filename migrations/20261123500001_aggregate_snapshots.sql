-- Aggregate snapshots (postgres-es's table): a command loads the latest snapshot plus the events
-- after it instead of the aggregate's whole history. A cache, not a source of truth: every row
-- can be deleted at any time (the next command replays the events and writes a new one), and a
-- snapshot that no longer deserializes after an aggregate's state changed shape is ignored and
-- rebuilt by cqrs-es. When a state field keeps its shape but changes meaning, delete the
-- aggregate type's rows in that release's migration.
CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);
CREATE UNIQUE INDEX snapshots_aggregate ON snapshots (aggregate_type, aggregate_id);
