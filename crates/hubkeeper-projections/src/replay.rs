//! Rebuilding read models from the full history, while the live ones keep serving.
//!
//! 1. For each table of the chosen projections, `<table>_new` is created like the live one
//!    (same columns, indexes, constraints) and filled by reading the events table in global
//!    order ([`hubkeeper_store::read_after`]) and applying every event with the same judging and
//!    row functions the live projector uses (a reader task reads and decodes the next batches
//!    while the current one is written). The API and the projector keep using the live tables
//!    meanwhile. The `_new` tables are the replay's alone, so the fill keeps the rows it has
//!    built in memory across batches (`apply::WriteBack`): an aggregate's row is loaded
//!    at most once and written once at the end instead of once per event, nothing is locked, and
//!    activity lines go in with `COPY`. At most [`ReplayOptions::cache_aggregates`] aggregates are
//!    held; beyond that their rows are written, dropped and loaded again when needed.
//! 2. The swap, in one transaction: the live tables are locked against writes (reads continue),
//!    the events committed since the fill are applied to the new tables (the live projector,
//!    blocked on the lock, cannot apply anything the rebuild misses: everything it applied
//!    before the lock was committed to the store earlier and is below the read horizon),
//!    the side columns other components own are copied over, installation counts recounted,
//!    and the tables renamed: the live one is dropped, `_new` takes its name. Readers see the old
//!    table or the new one, never a mix.
//! 3. After the swap the live projector resumes on the new tables. Events it receives that the
//!    rebuild already applied are recognised by the rows' `last_sequence` and skipped; newer ones
//!    are applied. No consumer reset is needed, and the global cursor the rebuild reached is
//!    recorded in `projection_rebuilds`.

use std::time::Instant;

use hubkeeper_store::{read_after, GlobalCursor};
use sqlx::{PgConnection, PgPool};

use crate::apply::{apply_events, decode_all, ApplyReport, Outcome, WriteBack};
use crate::counts::recount_all;
use crate::event::{DomainEvent, ProjectedEvent};
use crate::tables::{
    Projection, Tables, APPS, INSTALLATIONS, INSTALLATION_SIDE_COLUMNS, REBUILD_SUFFIX,
};
use crate::ProjectionError;

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub projections: Vec<Projection>,
    /// Events read and applied per transaction.
    pub batch_size: i64,
    /// Attempts at the swap (it gives up waiting for locks after a few seconds each time).
    pub swap_attempts: u32,
    /// Aggregates the fill holds in memory before it writes their rows and drops them
    /// ([`CACHE_AGGREGATES`]).
    pub cache_aggregates: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            projections: Projection::ALL.to_vec(),
            batch_size: 5000,
            swap_attempts: 5,
            cache_aggregates: CACHE_AGGREGATES,
        }
    }
}

/// Aggregates (installations, apps) whose rows the fill holds between batches by default. An
/// installation held costs roughly 1 KB (its row, open status period, activity subject and set
/// entries; an estimate), so this bounds the fill's memory to a few hundred MB, while a fleet of
/// up to this many installations is loaded once and written once. Beyond it, rows are written and dropped
/// and reloaded when their aggregates come up again: one more read and write each time.
pub const CACHE_AGGREGATES: usize = 200_000;

/// Progress reported after every batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayProgress {
    pub events: u64,
    /// Events in the store when the replay started (an estimate of the end).
    pub total: u64,
    pub elapsed_secs: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplayReport {
    pub projections: Vec<Projection>,
    pub events: u64,
    /// Of them, applied during the swap (committed while the fill ran).
    pub caught_up: u64,
    pub through: GlobalCursor,
    pub seconds: f64,
}

impl ReplayReport {
    pub fn events_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.events as f64 / self.seconds
        } else {
            self.events as f64
        }
    }
}

/// Rebuilds `options.projections` and swaps them in. `progress` is called after every batch.
pub async fn replay(
    pool: &PgPool,
    options: &ReplayOptions,
    mut progress: impl FnMut(ReplayProgress),
) -> Result<ReplayReport, ProjectionError> {
    let mut projections = options.projections.clone();
    projections.sort();
    projections.dedup();
    if projections.is_empty() {
        return Err(ProjectionError::Invalid("no projection to replay".into()));
    }
    let started = Instant::now();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    let total = u64::try_from(total).unwrap_or(0);
    let tables = Tables::rebuild(&projections);
    let deferred = create_copies(pool, &projections).await?;

    // The fill: a reader task reads and decodes the next batches while this task writes the
    // current one, so reading, decoding and Postgres's writing overlap instead of taking turns
    // (each was about half of a replay's time when they ran one after the other).
    let (sender, mut batches) = tokio::sync::mpsc::channel(READ_AHEAD);
    let reader = tokio::spawn(read_ahead(pool.clone(), options.batch_size, sender));
    let mut fill = WriteBack::new(options.cache_aggregates);
    let mut cursor = GlobalCursor::default();
    let mut events = 0u64;
    while let Some(batch) = batches.recv().await {
        let batch = batch?;
        let mut tx = pool.begin().await?;
        let reports = fill
            .apply(&mut tx, &tables, &batch.events, &batch.decoded)
            .await?;
        tx.commit().await?;
        report_gaps(&batch.events, &reports);
        cursor = batch.last;
        events += batch.events.len() as u64;
        progress(ReplayProgress {
            events,
            total: total.max(events),
            elapsed_secs: started.elapsed().as_secs_f64(),
        });
    }
    // The reader ends by closing the channel: after the last batch, or after sending its error
    // (returned above). A panic in it must not pass for the end of the history.
    reader
        .await
        .map_err(|e| ProjectionError::Invalid(format!("replay reader failed: {e}")))?;
    // Rows changed since the last flush are only in memory until here.
    fill.flush(&mut *pool.acquire().await?, &tables).await?;
    drop(fill);

    finish_copies(pool, &projections, &deferred).await?;

    let mut attempt = 0;
    let caught_up = loop {
        attempt += 1;
        let mut swap_cursor = cursor;
        match swap(
            pool,
            &projections,
            &tables,
            &mut swap_cursor,
            options.batch_size,
            events,
            started,
        )
        .await
        {
            Ok(caught_up) => {
                cursor = swap_cursor;
                break caught_up;
            }
            Err(ProjectionError::Database(e))
                if attempt < options.swap_attempts && retryable(&e) =>
            {
                tracing::warn!(error = %e, attempt, "swap did not get its locks; retrying");
            }
            Err(e) => return Err(e),
        }
    };
    events += caught_up;
    let report = ReplayReport {
        projections,
        events,
        caught_up,
        through: cursor,
        seconds: started.elapsed().as_secs_f64(),
    };
    metrics::counter!("hk_replay_events_total").increment(report.events);
    progress(ReplayProgress {
        events,
        total: total.max(events),
        elapsed_secs: report.seconds,
    });
    Ok(report)
}

/// Lock timeouts, deadlocks and serialization failures: the swap is worth another try.
fn retryable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| matches!(code.as_ref(), "55P03" | "40P01" | "40001"))
}

/// Creates the empty rebuild tables. They start unlogged and with only the unique indexes the
/// upserts need: a bulk fill that maintains secondary indexes and writes WAL for every row
/// version (an installation's row is rewritten once per event) was most of a replay's cost.
/// [`finish_copies`] builds the rest once the tables are full. Returns the deferred index
/// definitions.
async fn create_copies(
    pool: &PgPool,
    projections: &[Projection],
) -> Result<Vec<String>, ProjectionError> {
    let mut tx = pool.begin().await?;
    let mut deferred = Vec::new();
    for projection in projections {
        for table in projection.tables() {
            let copy = format!("{table}{REBUILD_SUFFIX}");
            sqlx::query(&format!("DROP TABLE IF EXISTS {copy}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "CREATE UNLOGGED TABLE {copy} (LIKE {table} INCLUDING ALL)"
            ))
            .execute(&mut *tx)
            .await?;
            let secondary: Vec<(String, String)> = sqlx::query_as(
                "SELECT c.relname::text, pg_get_indexdef(i.indexrelid)
                   FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                  WHERE i.indrelid = $1::regclass AND NOT i.indisunique",
            )
            .bind(&copy)
            .fetch_all(&mut *tx)
            .await?;
            for (name, definition) in secondary {
                sqlx::query(&format!("DROP INDEX {name}"))
                    .execute(&mut *tx)
                    .await?;
                deferred.push(definition);
            }
        }
    }
    tx.commit().await?;
    Ok(deferred)
}

/// Makes the filled copies durable and builds their deferred indexes, before the swap takes
/// any lock on the live tables.
async fn finish_copies(
    pool: &PgPool,
    projections: &[Projection],
    deferred: &[String],
) -> Result<(), ProjectionError> {
    for projection in projections {
        for table in projection.tables() {
            sqlx::query(&format!("ALTER TABLE {table}{REBUILD_SUFFIX} SET LOGGED"))
                .execute(pool)
                .await?;
        }
    }
    for definition in deferred {
        sqlx::query(definition).execute(pool).await?;
    }
    Ok(())
}

/// Batches the reader may be ahead of the writer: enough to keep both busy, few enough that
/// memory stays a few batches' worth.
const READ_AHEAD: usize = 2;

/// A batch of the history, read and decoded.
struct DecodedBatch {
    events: Vec<ProjectedEvent>,
    decoded: Vec<DomainEvent>,
    /// The cursor of its last event.
    last: GlobalCursor,
}

/// Reads the whole history in order from the start, `batch_size` events at a time, decodes each
/// batch and sends it; stops at the end of the history, at the first error (sent on), or when
/// the writer has gone.
async fn read_ahead(
    pool: PgPool,
    batch_size: i64,
    batches: tokio::sync::mpsc::Sender<Result<DecodedBatch, ProjectionError>>,
) {
    let mut cursor = GlobalCursor::default();
    loop {
        let batch = match read_after(&pool, cursor, batch_size).await {
            Ok(batch) => batch,
            Err(e) => {
                let _ = batches.send(Err(e.into())).await;
                return;
            }
        };
        let Some(last) = batch.last().map(|e| e.cursor()) else {
            return;
        };
        cursor = last;
        let events: Vec<ProjectedEvent> =
            batch.into_iter().map(ProjectedEvent::from_stored).collect();
        let decoded = decode_all(&events);
        let batch = DecodedBatch {
            events,
            decoded,
            last,
        };
        if batches.send(Ok(batch)).await.is_err() {
            return;
        }
    }
}

/// Logs the events of a batch that met a hole in their aggregate's history.
fn report_gaps(events: &[ProjectedEvent], reports: &[ApplyReport]) {
    for (event, report) in events.iter().zip(reports) {
        if let Outcome::Gap { last_sequence } = report.outcome {
            // The history itself has a hole: nothing a replay can fix; say so.
            tracing::error!(
                aggregate_type = %event.aggregate_type,
                aggregate_id = %event.aggregate_id,
                sequence = event.sequence,
                last_sequence,
                "event history has a gap; the event is not projected"
            );
        }
    }
}

/// Applies the next batch after `cursor`; returns how many events it read.
async fn apply_batch(
    conn: &mut PgConnection,
    tables: &Tables,
    cursor: &mut GlobalCursor,
    batch_size: i64,
) -> Result<u64, ProjectionError> {
    let batch = read_after(&mut *conn, *cursor, batch_size).await?;
    let Some(last) = batch.last().map(|e| e.cursor()) else {
        return Ok(0);
    };
    let count = batch.len() as u64;
    let events: Vec<ProjectedEvent> = batch.into_iter().map(ProjectedEvent::from_stored).collect();
    let reports = apply_events(&mut *conn, tables, &events).await?;
    report_gaps(&events, &reports);
    *cursor = last;
    Ok(count)
}

async fn swap(
    pool: &PgPool,
    projections: &[Projection],
    tables: &Tables,
    cursor: &mut GlobalCursor,
    batch_size: i64,
    filled: u64,
    started: Instant,
) -> Result<u64, ProjectionError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .execute(&mut *tx)
        .await?;
    let mut live: Vec<&str> = projections
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    if projections.contains(&Projection::Installations) && !projections.contains(&Projection::Apps)
    {
        // Its counts are recounted from the new installations below.
        live.push(APPS);
    }
    sqlx::query(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", live.join(", ")))
        .execute(&mut *tx)
        .await?;

    let mut caught_up = 0;
    loop {
        let n = apply_batch(&mut tx, tables, cursor, batch_size).await?;
        if n == 0 {
            break;
        }
        caught_up += n;
    }

    if projections.contains(&Projection::Installations) {
        let sets: Vec<String> = INSTALLATION_SIDE_COLUMNS
            .iter()
            .map(|c| format!("{c} = o.{c}"))
            .collect();
        sqlx::query(&format!(
            "UPDATE {new} n SET {sets} FROM {INSTALLATIONS} o
              WHERE n.installation_id = o.installation_id",
            new = tables.installations,
            sets = sets.join(", ")
        ))
        .execute(&mut *tx)
        .await?;
    }
    if projections.contains(&Projection::Apps) || projections.contains(&Projection::Installations) {
        recount_all(&mut tx, &tables.apps, &tables.installations).await?;
    }

    for projection in projections {
        for table in projection.tables() {
            let names = index_names(&mut tx, table).await?;
            sqlx::query(&format!("DROP TABLE {table}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "ALTER TABLE {table}{REBUILD_SUFFIX} RENAME TO {table}"
            ))
            .execute(&mut *tx)
            .await?;
            restore_index_names(&mut tx, table, &names).await?;
        }
        sqlx::query(
            "INSERT INTO projection_rebuilds
                (projection, rebuilt_at, through_tx, through_position, events, seconds)
             VALUES ($1, now(), $2::text::xid8, $3, $4, $5)
             ON CONFLICT (projection) DO UPDATE SET rebuilt_at = EXCLUDED.rebuilt_at,
                through_tx = EXCLUDED.through_tx, through_position = EXCLUDED.through_position,
                events = EXCLUDED.events, seconds = EXCLUDED.seconds",
        )
        .bind(projection.as_str())
        .bind(cursor.tx.to_string())
        .bind(cursor.position)
        .bind(i64::try_from(filled + caught_up).unwrap_or(i64::MAX))
        .bind(started.elapsed().as_secs_f64())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(caught_up)
}

/// Index names of `table` by what they index (`btree (status, started_at)`, unique or not).
async fn index_names(
    conn: &mut PgConnection,
    table: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.relname::text,
                i.indisunique::text || ' ' || substring(pg_get_indexdef(i.indexrelid) from ' USING .*$')
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
          WHERE i.indrelid = $1::regclass",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
}

/// Gives the swapped-in table's indexes the names the live table's had (Postgres named the
/// copies after `<table>_new`, truncated to 63 bytes), so names stay stable across rebuilds.
async fn restore_index_names(
    conn: &mut PgConnection,
    table: &str,
    old: &[(String, String)],
) -> Result<(), sqlx::Error> {
    for (name, shape) in index_names(conn, table).await? {
        let Some((wanted, _)) = old.iter().find(|(_, s)| *s == shape) else {
            continue;
        };
        if *wanted != name {
            sqlx::query(&format!("ALTER INDEX \"{name}\" RENAME TO \"{wanted}\""))
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}
