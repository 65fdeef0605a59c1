//! The event store's SQL: postgres-es's repository with a command's write in one statement and
//! the read of the events after a snapshot as one prepared statement.
//!
//! postgres-es 0.5 commits a command in four round trips (BEGIN, one INSERT per event, the
//! snapshot's INSERT or UPDATE, COMMIT) and formats the sequence into the text of the query that
//! reads the events after a snapshot, so every load of an aggregate that had grown since its
//! last load was a new statement for Postgres to parse and plan (and for sqlx to prepare, cache
//! and evict); and a snapshotted aggregate's load read its snapshot and the events after it in two
//! round trips ([`EventRepository::snapshot_and_later_events`] is one). Here a commit is one
//! statement, atomic on its own: the snapshot write and every
//! event insert succeed together or not at all, and is committed (and flushed) like any other.
//!
//! Optimistic concurrency is unchanged: the events' primary key (type, id, sequence) refuses a
//! second writer of the same sequence, and a snapshot update only applies to the snapshot
//! version that was loaded; either way the statement writes nothing and the command is retried
//! against the state that won ([`crate::commands::AggregateBus`]). Reads, streams and the table
//! layout are postgres-es's own.

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use futures::TryStreamExt;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

/// The events after a snapshot, the sequence bound as a parameter.
const SELECT_EVENTS_AFTER: &str =
    "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata
       FROM events
      WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
      ORDER BY sequence";

/// A command's events, in the order given (`global_position` follows it).
const INSERT_EVENTS: &str =
    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                         payload, metadata)
     SELECT $1, $2, s, t, v, p::json, m::json
       FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
            WITH ORDINALITY AS u(s, t, v, p, m, n)
      ORDER BY n";

/// The first snapshot of an aggregate and its command's events. A snapshot row left by an
/// earlier state that no longer deserializes is replaced: the events' primary key still refuses
/// a concurrent writer of the same sequences, which undoes the whole statement.
const INSERT_SNAPSHOT_AND_EVENTS: &str = "WITH snapshot AS (
         INSERT INTO snapshots (aggregate_type, aggregate_id, last_sequence, current_snapshot,
                                payload)
         VALUES ($1, $2, $8, $9, $10::json)
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
            SET last_sequence = EXCLUDED.last_sequence,
                current_snapshot = EXCLUDED.current_snapshot,
                payload = EXCLUDED.payload
         RETURNING 1
     )
     INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                         payload, metadata)
     SELECT $1, $2, s, t, v, p::json, m::json
       FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
            WITH ORDINALITY AS u(s, t, v, p, m, n)
      WHERE EXISTS (SELECT 1 FROM snapshot)
      ORDER BY n";

/// The next snapshot and the command's events, only if the snapshot is still the version the
/// command loaded (otherwise nothing is written and the command is retried).
const UPDATE_SNAPSHOT_AND_EVENTS: &str = "WITH snapshot AS (
         UPDATE snapshots
            SET last_sequence = $8, current_snapshot = $9, payload = $10::json
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND current_snapshot = $11
         RETURNING 1
     )
     INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                         payload, metadata)
     SELECT $1, $2, s, t, v, p::json, m::json
       FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
            WITH ORDINALITY AS u(s, t, v, p, m, n)
      WHERE EXISTS (SELECT 1 FROM snapshot)
      ORDER BY n";

/// An aggregate's snapshot and the events after it, in one statement (the snapshot's columns
/// repeat on every event row; one row of NULL events when there are none).
const SELECT_SNAPSHOT_AND_LATER_EVENTS: &str =
    "SELECT s.last_sequence, s.current_snapshot, s.payload AS snapshot,
            e.sequence, e.event_type, e.event_version, e.payload, e.metadata
       FROM (SELECT 1) AS one
       LEFT JOIN snapshots s ON s.aggregate_type = $1 AND s.aggregate_id = $2
       LEFT JOIN LATERAL (
            SELECT sequence, event_type, event_version, payload, metadata
              FROM events
             WHERE aggregate_type = $1 AND aggregate_id = $2
               AND sequence > COALESCE(s.last_sequence, 0)
       ) e ON true
      ORDER BY e.sequence";

/// The repository behind every aggregate's event store.
pub struct EventRepository {
    pool: PgPool,
    postgres_es: PostgresEventRepository,
}

impl EventRepository {
    pub fn new(pool: &PgPool) -> Self {
        Self {
            pool: pool.clone(),
            postgres_es: PostgresEventRepository::new(pool.clone()),
        }
    }

    /// The aggregate's snapshot (if any) and every event after it, in one round trip: what a
    /// snapshotted aggregate's load needs (postgres-es asks for them one after the other).
    pub async fn snapshot_and_later_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<(Option<SerializedSnapshot>, Vec<SerializedEvent>), PersistenceError> {
        let rows = sqlx::query(SELECT_SNAPSHOT_AND_LATER_EVENTS)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .fetch_all(&self.pool)
            .await
            .map_err(persistence_error)?;
        let mut snapshot = None;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            if snapshot.is_none() {
                let last: Option<i64> = row.try_get("last_sequence").map_err(persistence_error)?;
                let current: Option<i64> =
                    row.try_get("current_snapshot").map_err(persistence_error)?;
                let payload: Option<Value> = row.try_get("snapshot").map_err(persistence_error)?;
                if let (Some(last), Some(current), Some(payload)) = (last, current, payload) {
                    snapshot = Some(SerializedSnapshot {
                        aggregate_id: aggregate_id.to_owned(),
                        aggregate: payload,
                        current_sequence: unsigned(last)?,
                        current_snapshot: unsigned(current)?,
                    });
                }
            }
            let sequence: Option<i64> = row.try_get("sequence").map_err(persistence_error)?;
            let Some(sequence) = sequence else {
                continue;
            };
            events.push(SerializedEvent::new(
                aggregate_id.to_owned(),
                unsigned(sequence)?,
                A::TYPE.to_owned(),
                row.try_get("event_type").map_err(persistence_error)?,
                row.try_get("event_version").map_err(persistence_error)?,
                row.try_get("payload").map_err(persistence_error)?,
                row.try_get("metadata").map_err(persistence_error)?,
            ));
        }
        Ok((snapshot, events))
    }
}

fn unsigned(value: i64) -> Result<usize, PersistenceError> {
    usize::try_from(value)
        .map_err(|_| PersistenceError::UnknownError("negative sequence in the store".into()))
}

/// The columns of a command's events, one array per column.
struct EventColumns {
    aggregate_id: String,
    sequences: Vec<i64>,
    types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<String>,
    metadata: Vec<String>,
    last_sequence: i64,
}

impl EventColumns {
    fn of(events: &[SerializedEvent]) -> Result<Option<Self>, PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(None);
        };
        let mut columns = Self {
            aggregate_id: first.aggregate_id.clone(),
            sequences: Vec::with_capacity(events.len()),
            types: Vec::with_capacity(events.len()),
            versions: Vec::with_capacity(events.len()),
            payloads: Vec::with_capacity(events.len()),
            metadata: Vec::with_capacity(events.len()),
            last_sequence: 0,
        };
        for event in events {
            if event.aggregate_id != columns.aggregate_id {
                return Err(PersistenceError::UnknownError(
                    "one commit wrote events of two aggregates".into(),
                ));
            }
            let sequence = sequence_of(event.sequence)?;
            columns.sequences.push(sequence);
            columns.types.push(event.event_type.clone());
            columns.versions.push(event.event_version.clone());
            columns.payloads.push(json_text(&event.payload)?);
            columns.metadata.push(json_text(&event.metadata)?);
            columns.last_sequence = sequence;
        }
        Ok(Some(columns))
    }
}

fn sequence_of(sequence: usize) -> Result<i64, PersistenceError> {
    i64::try_from(sequence)
        .map_err(|_| PersistenceError::UnknownError("event sequence out of range".into()))
}

fn json_text(value: &Value) -> Result<String, PersistenceError> {
    serde_json::to_string(value).map_err(|e| PersistenceError::UnknownError(Box::new(e)))
}

/// postgres-es's mapping: a unique violation is a lost race, I/O a connection problem.
fn persistence_error(error: sqlx::Error) -> PersistenceError {
    match &error {
        sqlx::Error::Database(e) if e.code().as_deref() == Some("23505") => {
            PersistenceError::OptimisticLockError
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
            PersistenceError::ConnectionError(Box::new(error))
        }
        _ => PersistenceError::UnknownError(Box::new(error)),
    }
}

fn event_of(row: &PgRow) -> Result<SerializedEvent, PersistenceError> {
    let sequence: i64 = row.try_get("sequence").map_err(persistence_error)?;
    Ok(SerializedEvent::new(
        row.try_get("aggregate_id").map_err(persistence_error)?,
        unsigned(sequence)?,
        row.try_get("aggregate_type").map_err(persistence_error)?,
        row.try_get("event_type").map_err(persistence_error)?,
        row.try_get("event_version").map_err(persistence_error)?,
        row.try_get("payload").map_err(persistence_error)?,
        row.try_get("metadata").map_err(persistence_error)?,
    ))
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.get_last_events::<A>(aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let mut rows = sqlx::query(SELECT_EVENTS_AFTER)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .bind(sequence_of(last_sequence)?)
            .fetch(&self.pool);
        let mut events = Vec::new();
        while let Some(row) = rows.try_next().await.map_err(persistence_error)? {
            events.push(event_of(&row)?);
        }
        Ok(events)
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.postgres_es.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let Some(columns) = EventColumns::of(events)? else {
            // cqrs-es snapshots only with the events that lead to them: nothing to write.
            return Ok(());
        };
        let query = match &snapshot_update {
            None => sqlx::query(INSERT_EVENTS),
            Some((_, _, 1)) => sqlx::query(INSERT_SNAPSHOT_AND_EVENTS),
            Some(_) => sqlx::query(UPDATE_SNAPSHOT_AND_EVENTS),
        };
        let mut query = query
            .bind(A::TYPE)
            .bind(&columns.aggregate_id)
            .bind(&columns.sequences)
            .bind(&columns.types)
            .bind(&columns.versions)
            .bind(&columns.payloads)
            .bind(&columns.metadata);
        if let Some((_, state, snapshot)) = &snapshot_update {
            let snapshot = sequence_of(*snapshot)?;
            query = query
                .bind(columns.last_sequence)
                .bind(snapshot)
                .bind(json_text(state)?);
            if snapshot != 1 {
                query = query.bind(snapshot - 1);
            }
        }
        let written = query.execute(&self.pool).await.map_err(persistence_error)?;
        if written.rows_affected() != events.len() as u64 {
            // The snapshot moved on since the load: another command won.
            return Err(PersistenceError::OptimisticLockError);
        }
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.postgres_es.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.postgres_es.stream_all_events::<A>().await
    }
}
