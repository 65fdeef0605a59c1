//! The global order of all events: `(tx_id, global_position)`, read only below the snapshot's
//! xmin.
//!
//! `global_position` is taken at INSERT but becomes visible at COMMIT, so a reader that simply
//! follows it can pass a smaller position still in flight and skip it forever. Reading only rows
//! whose transaction id is below `pg_snapshot_xmin(pg_current_snapshot())` means reading only rows
//! of transactions that have ended: nothing can appear behind the cursor later. The price: one
//! long-open writing transaction anywhere in the cluster holds every reader back (see
//! docs/architecture.md), which is why the reader lag is a metric.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, Row};

/// NOTIFY channel that wakes the followers of the global order after commits that wrote events
/// (sent by [`crate::EventsWaker`], after the commit: see there why not by a trigger).
pub const EVENTS_CHANNEL: &str = "hk_events";

/// A position in the global order. `Default` is before the first event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GlobalCursor {
    pub tx: u64,
    pub position: i64,
}

/// One row of the events table with its place in the global order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub global_position: i64,
    pub tx_id: u64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    pub fn cursor(&self) -> GlobalCursor {
        GlobalCursor {
            tx: self.tx_id,
            position: self.global_position,
        }
    }
}

const READ_AFTER: &str = "
SELECT global_position, tx_id::text AS tx_id, aggregate_type, aggregate_id, sequence,
       event_type, event_version, payload, metadata, recorded_at
  FROM events
 WHERE (tx_id, global_position) > ($1::text::xid8, $2)
   AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
 -- Qualified on purpose: a bare `tx_id` would sort by the text alias above ('10' < '9'), and a
 -- batch cut by LIMIT could then skip events whose id has fewer digits.
 ORDER BY events.tx_id, events.global_position
 LIMIT $3";

/// Reads up to `limit` events after `after`, in global order, never skipping one that a
/// concurrent transaction is still writing.
pub async fn read_after<'e, E: PgExecutor<'e>>(
    executor: E,
    after: GlobalCursor,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query(READ_AFTER)
        .bind(after.tx.to_string())
        .bind(after.position)
        .bind(limit)
        .fetch_all(executor)
        .await?;
    rows.into_iter().map(|row| row_to_event(&row)).collect()
}

fn row_to_event(row: &sqlx::postgres::PgRow) -> Result<StoredEvent, sqlx::Error> {
    let tx_text: String = row.try_get("tx_id")?;
    let tx_id = tx_text
        .parse::<u64>()
        .map_err(|e| sqlx::Error::ColumnDecode {
            index: "tx_id".into(),
            source: Box::new(e),
        })?;
    Ok(StoredEvent {
        global_position: row.try_get("global_position")?,
        tx_id,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

/// How far a reader at `cursor` is behind the committed history.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReaderLag {
    /// Committed events after the cursor (including those still held back by an open transaction).
    pub events: i64,
    /// Age of the oldest of them, in seconds (0 when caught up).
    pub seconds: f64,
}

pub async fn reader_lag<'e, E: PgExecutor<'e>>(
    executor: E,
    cursor: GlobalCursor,
) -> Result<ReaderLag, sqlx::Error> {
    let row = sqlx::query(
        "SELECT count(*) AS n,
                COALESCE(EXTRACT(EPOCH FROM (clock_timestamp() - min(recorded_at)))::float8, 0) AS age
           FROM events
          WHERE (tx_id, global_position) > ($1::text::xid8, $2)",
    )
    .bind(cursor.tx.to_string())
    .bind(cursor.position)
    .fetch_one(executor)
    .await?;
    Ok(ReaderLag {
        events: row.try_get("n")?,
        seconds: row.try_get::<f64, _>("age")?.max(0.0),
    })
}
