//! Applying a replay's fill with its rows kept in memory across batches.
//!
//! The rebuild tables belong to the replay alone, so nothing can change a row behind its back:
//! the rows a batch changes need not be loaded again by the next batch, nor locked, nor written
//! after every batch. Applied per batch, an installation with ten events in ten batches was
//! loaded, locked and rewritten ten times; here it is loaded at most once per eviction (see
//! below) and written once at the next flush.
//!
//! What a batch adds (status periods and their closes, activity subjects and lines, webhook
//! counts) is written with the batch, as the live path does, so memory holds rows only: activity
//! lines with `COPY`, the rest with the live path's statements. Two orderings matter:
//! - the webhook counts update installation rows in SQL (their count columns are not among the
//!   upserted ones), so the dirty rows a batch's webhook events count for are written first;
//! - a status period opened by an earlier batch and still open is closed by an update: it was
//!   written with its batch ([`Changes::outputs_written`]).
//!
//! Memory is bounded: once more than `limit` aggregates are held, every dirty row is written and
//! the rows are dropped. Later events of those aggregates load them again from the rebuild
//! tables, with the live path's queries (without `FOR UPDATE`). The caller ends the fill with
//! [`WriteBack::flush`].

use std::collections::HashSet;

use sqlx::PgConnection;
use uuid::Uuid;

use super::changes::Changes;
use super::sql::{self, BatchIds, Lock};
use super::ApplyReport;
use crate::event::{DomainEvent, ProjectedEvent};
use crate::tables::Tables;

/// Rows per statement when flushing. A flush may write every row held, and the statement's JSON
/// text is about 700 bytes an installation: in one piece, 200,000 rows would be some 140 MB
/// in this process and again in Postgres.
const FLUSH_ROWS: usize = 10_000;

/// A replay's write-back state for one set of rebuild tables (see the module docs).
pub(crate) struct WriteBack {
    state: Changes,
    /// Ids whose stored rows are in `state` (or known not to exist) since the last eviction:
    /// installations (with their open periods and activity subjects) and apps.
    held_installations: HashSet<Uuid>,
    held_apps: HashSet<Uuid>,
    /// Until the first eviction every row the rebuild tables hold is also held here, so ids not
    /// held have no stored row and there is nothing to load.
    evicted: bool,
    limit: usize,
}

impl WriteBack {
    /// For empty rebuild tables; `limit`: aggregates held before they are written and dropped.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            state: Changes::default(),
            held_installations: HashSet::new(),
            held_apps: HashSet::new(),
            evicted: false,
            limit,
        }
    }

    /// Applies the next batch of the history to `tables` (rebuild tables only the caller
    /// writes), as [`super::apply_decoded`] would; one report per event, in the same order.
    pub(crate) async fn apply(
        &mut self,
        conn: &mut PgConnection,
        tables: &Tables,
        events: &[ProjectedEvent],
        decoded: &[DomainEvent],
    ) -> Result<Vec<ApplyReport>, sqlx::Error> {
        self.load_missing(&mut *conn, tables, events, decoded)
            .await?;
        sql::load_facts(&mut *conn, tables, &mut self.state, events, decoded).await?;
        let reports = self.state.apply_all(tables, events, decoded);
        self.write_outputs(&mut *conn, tables).await?;
        if self.held_installations.len() + self.held_apps.len() > self.limit {
            self.flush(&mut *conn, tables).await?;
            self.state = Changes::default();
            self.held_installations.clear();
            self.held_apps.clear();
            self.evicted = true;
        }
        Ok(reports)
    }

    /// Writes every row changed since the last flush. The fill must end with it.
    pub(crate) async fn flush(
        &mut self,
        conn: &mut PgConnection,
        tables: &Tables,
    ) -> Result<(), sqlx::Error> {
        let state = &self.state;
        let apps = sql::rows_of(&state.apps, &state.dirty_apps);
        for chunk in apps.chunks(FLUSH_ROWS) {
            sql::write_rows(&mut *conn, tables, chunk, &[]).await?;
        }
        let installations = sql::rows_of(&state.installations, &state.dirty_installations);
        for chunk in installations.chunks(FLUSH_ROWS) {
            sql::write_rows(&mut *conn, tables, &[], chunk).await?;
        }
        self.state.dirty_apps.clear();
        self.state.dirty_installations.clear();
        Ok(())
    }

    /// Loads the stored rows of the batch's aggregates that are not held yet.
    async fn load_missing(
        &mut self,
        conn: &mut PgConnection,
        tables: &Tables,
        events: &[ProjectedEvent],
        decoded: &[DomainEvent],
    ) -> Result<(), sqlx::Error> {
        let ids = BatchIds::of(events, decoded);
        // Installations, their open periods and subjects are held together, so a subscription's
        // id loads the installation's row too (the live path loads only its subject).
        let installations: Vec<Uuid> = ids
            .subjects
            .into_iter()
            .filter(|id| !self.held_installations.contains(id))
            .collect();
        let apps: Vec<Uuid> = ids
            .apps
            .into_iter()
            .filter(|id| !self.held_apps.contains(id))
            .collect();
        let missing = BatchIds {
            apps,
            installations: installations.clone(),
            subjects: installations,
        };
        if self.evicted {
            sql::load_rows(conn, tables, &missing, Lock::None, &mut self.state).await?;
        }
        self.held_installations.extend(missing.subjects);
        self.held_apps.extend(missing.apps);
        Ok(())
    }

    /// Writes what the batch added, then forgets it (see the module docs for the order).
    async fn write_outputs(
        &mut self,
        conn: &mut PgConnection,
        tables: &Tables,
    ) -> Result<(), sqlx::Error> {
        let state = &mut self.state;
        let mut counted: Vec<Uuid> = state
            .webhooks
            .iter()
            .filter_map(|w| w.installation_id)
            .filter(|id| state.dirty_installations.contains(id))
            .collect();
        if !counted.is_empty() {
            counted.sort();
            counted.dedup();
            let rows = sql::rows_of(&state.installations, &counted);
            sql::write_rows(&mut *conn, tables, &[], &rows).await?;
            for id in &counted {
                state.dirty_installations.remove(id);
            }
        }
        sql::write_outputs(&mut *conn, tables, state).await?;
        sql::copy_activity(conn, tables, &state.activity).await?;
        state.outputs_written();
        Ok(())
    }
}
