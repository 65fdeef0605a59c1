//! The one loop of a reader that follows the global order as it grows (the relay, the billing
//! projection): read a batch after the cursor, report lag now and then, and when caught up wait
//! for a NOTIFY from a commit or a short idle timeout (a transaction that ends without writing an
//! event can still move the read horizon, and NOTIFY is only a wake-up, never the source of truth).

use std::future::Future;
use std::time::{Duration, Instant};

use futures::FutureExt;

use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::cursor::load_cursor;
use crate::log::{reader_lag, GlobalCursor, EVENTS_CHANNEL};

/// How a follower waits and reports.
#[derive(Debug, Clone, Copy)]
pub struct FollowConfig {
    /// Longest sleep between reads when no NOTIFY arrives.
    pub idle_wait: Duration,
    /// How often the lag gauges (and the reader's own housekeeping) run.
    pub housekeeping_interval: Duration,
    /// Gauges set to the events and seconds the reader is behind.
    pub lag_events_gauge: &'static str,
    pub lag_seconds_gauge: &'static str,
}

/// What one step of a follower did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Handled a full batch: more may be waiting; read again at once.
    Progressed,
    /// Read everything below the read horizon (an empty or a partial batch): wait for a commit.
    /// A partial batch counts: the read that would follow at once finds, most of the time,
    /// nothing, and what was committed meanwhile has sent its wake-up already.
    CaughtUp,
}

impl Step {
    /// The step after a read of `read` events with a limit of `batch_size`: only a full batch
    /// is read again at once.
    pub fn after_read(read: usize, batch_size: i64) -> Step {
        if i64::try_from(read).unwrap_or(i64::MAX) >= batch_size {
            Step::Progressed
        } else {
            Step::CaughtUp
        }
    }
}

/// A reader of the global order, driven by [`follow`].
pub trait Follower: Send + Sync {
    type Error: From<sqlx::Error> + Send;

    /// Reads and handles one batch after `cursor`, and advances it.
    fn read_next(
        &self,
        conn: &mut PgConnection,
        cursor: &mut GlobalCursor,
    ) -> impl Future<Output = Result<Step, Self::Error>> + Send;

    /// The reader's own periodic work, run after the lag gauges.
    fn housekeeping(
        &self,
        _conn: &mut PgConnection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// Called once when the loop ends on `shutdown`, with the cursor it reached (a reader that
    /// saves its cursor lazily saves it here).
    fn stopped(
        &self,
        _conn: &mut PgConnection,
        _cursor: GlobalCursor,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }
}

/// Follows the global order from the cursor `cursor_name` on `conn` until `shutdown`. Every read
/// and the housekeeping run on `conn`, so a reader that holds its leadership on that session
/// stops at the first statement after the session died.
pub async fn follow<F: Follower>(
    follower: &F,
    pool: &PgPool,
    conn: &mut PgConnection,
    cursor_name: &str,
    config: FollowConfig,
    shutdown: &CancellationToken,
) -> Result<(), F::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(EVENTS_CHANNEL).await?;
    let mut cursor = load_cursor(&mut *conn, cursor_name).await?;
    let mut housekeeping_due = Instant::now();
    while !shutdown.is_cancelled() {
        let outcome = follower.read_next(&mut *conn, &mut cursor).await?;
        if Instant::now() >= housekeeping_due {
            let lag = reader_lag(&mut *conn, cursor).await?;
            metrics::gauge!(config.lag_events_gauge).set(lag.events as f64);
            metrics::gauge!(config.lag_seconds_gauge).set(lag.seconds);
            follower.housekeeping(&mut *conn).await?;
            housekeeping_due = Instant::now() + config.housekeeping_interval;
        }
        if outcome == Step::CaughtUp {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                notified = listener.recv() => { notified?; }
                _ = tokio::time::sleep(config.idle_wait) => {}
            }
            // Wake-ups already received are covered by the read that follows: one read for
            // all of them, not one each (under load several arrive during a batch).
            while let Some(notified) = listener.recv().now_or_never() {
                notified?;
            }
        }
    }
    follower.stopped(&mut *conn, cursor).await
}
