//! Applying events to the read models: the only code that writes them from events, shared by the
//! live projector and replay.
//!
//! Split in two: [`changes`] is what an event does to a read-model row, in memory and without a
//! database (tested as plain functions); [`sql`] loads and locks the rows a batch touches and
//! writes back what changed. A batch is applied in four steps, inside the caller's transaction:
//! 1. the rows of every aggregate in the batch are loaded and locked (`FOR UPDATE`, apps before
//!    installations, each by id, so concurrent batches queue instead of deadlocking);
//! 2. each event is judged against its aggregate's row, which remembers the sequence of the last
//!    event applied:
//!    - `sequence <= last_sequence`: already applied (redelivery, or a replay got there first):
//!      [`Outcome::Duplicate`];
//!    - `sequence == last_sequence + 1`: applied to the in-memory row by the pure functions
//!      [`InstallationRow::apply`] and [`AppRow::apply`];
//!    - `sequence > last_sequence + 1`: an earlier event is still in flight elsewhere:
//!      [`Outcome::Gap`], nothing written; the caller retries it a moment later;
//! 3. the activity line and status-history period of every applied event are derived;
//! 4. everything changed is written back with a handful of set-based statements.
//!
//! An aggregate's row is created by its first *creating* event (`InstallationConnected`,
//! `AppRegistered`). Events before it that cannot create a row (types this version does not
//! know, or known ones that make no sense before a create) are skipped, and a creating event
//! creates the row whatever its sequence. Without a row, a non-creating event is a gap only
//! when the store holds the creating event before it (in flight elsewhere); otherwise nothing
//! could ever fill the gap, so it is skipped instead of being retried forever. Unknown event
//! types are counted (`hk_projector_unknown_events_total`) and logged once per type.
//!
//! A replay's fill applies batches through `write_back` instead: the same loading, judging and
//! writing, but with the rows kept in memory across batches and written once.
//!
//! Rows that do not exist yet cannot be locked; two batches may both create one. Their upserts
//! only overwrite a row with a higher `last_sequence`, period ends only ever go from open to
//! closed, and activity lines are keyed by global position, so whichever commits last cannot
//! move a read model backwards.

mod changes;
mod sql;
mod write_back;

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, PoisonError};

use sqlx::PgConnection;
use uuid::Uuid;

pub use changes::{AppRow, InstallationRow};
pub(crate) use write_back::WriteBack;

use crate::event::{DomainEvent, ProjectedEvent};
use crate::tables::Tables;

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already applied earlier; acknowledge and move on.
    Duplicate,
    /// An earlier event of the same aggregate has not been applied yet.
    Gap {
        last_sequence: i64,
    },
    /// Nothing to project (an event this version does not understand, or for no projection
    /// enabled); acknowledged.
    Skipped,
}

/// [`Outcome`] plus what the caller must do after committing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    pub outcome: Outcome,
    /// An app whose installation counts may have changed (see [`crate::counts`]).
    pub recount_app: Option<Uuid>,
}

impl ApplyReport {
    fn of(outcome: Outcome) -> Self {
        Self {
            outcome,
            recount_app: None,
        }
    }
}

/// Counts an event of a type this version does not project, and says so once per type and
/// process (a newer release may write many of them during a rolling deploy).
fn note_unknown(event: &ProjectedEvent) {
    static SEEN: OnceLock<Mutex<HashSet<(String, String)>>> = OnceLock::new();
    metrics::counter!(
        "hk_projector_unknown_events_total",
        "aggregate_type" => event.aggregate_type.clone(),
        "event_type" => event.event_type.clone()
    )
    .increment(1);
    let first = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((event.aggregate_type.clone(), event.event_type.clone()));
    if first {
        tracing::warn!(
            aggregate_type = %event.aggregate_type,
            event_type = %event.event_type,
            "event type unknown to this version: skipped by the read models (logged once per type)"
        );
    }
}

/// Applies one event (a batch of one).
pub async fn apply_event(
    conn: &mut PgConnection,
    tables: &Tables,
    event: &ProjectedEvent,
) -> Result<ApplyReport, sqlx::Error> {
    let reports = apply_events(conn, tables, std::slice::from_ref(event)).await?;
    Ok(reports
        .into_iter()
        .next()
        .unwrap_or(ApplyReport::of(Outcome::Skipped)))
}

/// Applies `events` (in the order given, which must keep each aggregate's events in sequence
/// order) to the read models in `tables`, inside the caller's transaction. Returns one report
/// per event, in the same order.
pub async fn apply_events(
    conn: &mut PgConnection,
    tables: &Tables,
    events: &[ProjectedEvent],
) -> Result<Vec<ApplyReport>, sqlx::Error> {
    let decoded = decode_all(events);
    apply_decoded(conn, tables, events, &decoded).await
}

/// The payloads of `events` in the domain's terms, one per event; undecodable and unknown ones
/// are counted and logged here. Pure CPU work, so a reader can do it ahead of the writer
/// ([`crate::replay`] does).
pub fn decode_all(events: &[ProjectedEvent]) -> Vec<DomainEvent> {
    let decoded: Vec<DomainEvent> = events.iter().map(ProjectedEvent::decode).collect();
    for (event, d) in events.iter().zip(&decoded) {
        match d {
            DomainEvent::Undecodable(reason) => {
                metrics::counter!("hk_projector_undecodable_total").increment(1);
                tracing::error!(
                    event_type = %event.event_type,
                    aggregate_id = %event.aggregate_id,
                    sequence = event.sequence,
                    %reason,
                    "event payload does not decode; projected as unknown"
                );
            }
            DomainEvent::Unknown => note_unknown(event),
            _ => {}
        }
    }
    decoded
}

/// [`apply_events`] for events already decoded by [`decode_all`] (`decoded[i]` is `events[i]`'s).
pub async fn apply_decoded(
    conn: &mut PgConnection,
    tables: &Tables,
    events: &[ProjectedEvent],
    decoded: &[DomainEvent],
) -> Result<Vec<ApplyReport>, sqlx::Error> {
    let mut changes = sql::load(&mut *conn, tables, events, decoded).await?;
    let reports = changes.apply_all(tables, events, decoded);
    sql::write(&mut *conn, tables, &changes).await?;
    sql::seed_last_used(conn, tables, &changes.created_installations).await?;
    Ok(reports)
}
