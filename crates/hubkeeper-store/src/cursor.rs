//! Durable reader positions. A reader saves its cursor only after the work for every event up to
//! it is done (for the relay: acknowledged by JetStream), so a crash replays, never skips.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgExecutor, Row};

use crate::log::GlobalCursor;

pub async fn load_cursor<'e, E: PgExecutor<'e>>(
    executor: E,
    name: &str,
) -> Result<GlobalCursor, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO stream_cursors (name) VALUES ($1)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
         RETURNING last_tx::text AS last_tx, last_position",
    )
    .bind(name)
    .fetch_one(executor)
    .await?;
    let tx: String = row.try_get("last_tx")?;
    Ok(GlobalCursor {
        tx: tx.parse().map_err(|e| sqlx::Error::ColumnDecode {
            index: "last_tx".into(),
            source: Box::new(e),
        })?,
        position: row.try_get("last_position")?,
    })
}

pub async fn save_cursor<'e, E: PgExecutor<'e>>(
    executor: E,
    name: &str,
    cursor: GlobalCursor,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO stream_cursors (name, last_tx, last_position, updated_at)
         VALUES ($1, $2::text::xid8, $3, now())
         ON CONFLICT (name) DO UPDATE
            SET last_tx = EXCLUDED.last_tx, last_position = EXCLUDED.last_position,
                updated_at = now()",
    )
    .bind(name)
    .bind(cursor.tx.to_string())
    .bind(cursor.position)
    .execute(executor)
    .await?;
    Ok(())
}

/// A cursor saved at most once per interval while its reader keeps moving, and at the reader's
/// next read once the interval has passed: for readers whose work since the last save is
/// harmless to repeat after a crash (the relay republishes into JetStream's duplicate window; the
/// billing projection re-reads events it had nothing to apply for). A durable commit per batch
/// sat in their path between two reads, and each held the read horizon back while it ran.
#[derive(Debug)]
pub struct LazyCursor {
    name: String,
    interval: Duration,
    /// The cursor last saved by this process and when (`None` until it saved one).
    saved: Mutex<Option<(GlobalCursor, Instant)>>,
}

impl LazyCursor {
    pub fn new(name: impl Into<String>, interval: Duration) -> Self {
        Self {
            name: name.into(),
            interval,
            saved: Mutex::new(None),
        }
    }

    /// The cursor's row in `stream_cursors`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Saves `cursor` unless it is saved already or the last save is more recent than the
    /// interval (`force` saves anyway, e.g. on the way out).
    pub async fn save_when_due(
        &self,
        conn: &mut PgConnection,
        cursor: GlobalCursor,
        force: bool,
    ) -> Result<(), sqlx::Error> {
        let due = match *self.last_saved() {
            Some((saved, _)) if saved == cursor => false,
            Some((_, at)) => force || at.elapsed() >= self.interval,
            None => true,
        };
        if due {
            save_cursor(&mut *conn, &self.name, cursor).await?;
            self.saved_elsewhere(cursor);
        }
        Ok(())
    }

    /// Records a save the reader made itself (e.g. in the transaction that applied its batch).
    pub fn saved_elsewhere(&self, cursor: GlobalCursor) {
        *self.last_saved() = Some((cursor, Instant::now()));
    }

    fn last_saved(&self) -> std::sync::MutexGuard<'_, Option<(GlobalCursor, Instant)>> {
        // Plain assignments under the lock: a panic elsewhere cannot leave it half-written.
        self.saved.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
