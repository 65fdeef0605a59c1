//! Waking the followers of the global order (the relay, the billing projection) after a commit
//! that wrote events.
//!
//! Why not a trigger on the events table: a `NOTIFY` inside a transaction makes its commit take
//! a database-wide lock (Postgres serializes the notification queue in commit order) and hold it
//! through the commit's WAL flush, so every event-writing transaction waited for the fsync of the
//! one before it: 16 clients committed about 300 inserts/s instead of about 5,000
//! (docs/performance.md). The wake-up is sent after the commit instead, from a transaction of its
//! own that writes nothing and so flushes nothing, by one task per [`EventsWaker`]: wake-ups that
//! arrive while one is being sent are folded into the next, which is sent after each of their
//! commits, so under load a process sends far fewer than one per commit.
//!
//! A wake-up is only a hint: followers also read again after a short idle wait (see
//! [`crate::follow`]), so a lost one (a process dying between its commit and the NOTIFY, a
//! writer that does not wake) costs latency, never an event.

use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::log::EVENTS_CHANNEL;

/// Sends `NOTIFY hk_events` after commits that wrote events. Cheap to clone; clones share one
/// sending task, started at the first wake-up (so it runs on the caller's runtime) and ended
/// when the last clone is dropped.
#[derive(Clone)]
pub struct EventsWaker {
    pool: PgPool,
    sender: Arc<OnceLock<mpsc::Sender<()>>>,
}

impl std::fmt::Debug for EventsWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsWaker").finish_non_exhaustive()
    }
}

impl EventsWaker {
    pub fn new(pool: &PgPool) -> Self {
        Self {
            pool: pool.clone(),
            sender: Arc::default(),
        }
    }

    /// Asks for a wake-up of every follower; call after a commit that wrote events. Never
    /// waits: the NOTIFY goes out from the waker's own task, once for all the wake-ups asked
    /// while the previous one was being sent.
    pub fn wake(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            // No runtime to send from (never the case for a commit); the idle wait covers it.
            return;
        }
        let sender = self.sender.get_or_init(|| {
            // One pending wake-up is all it takes: it is sent after every commit that asked.
            let (sender, receiver) = mpsc::channel(1);
            tokio::spawn(send_wake_ups(self.pool.clone(), receiver));
            sender
        });
        // Full: a wake-up not yet sent already covers this commit.
        let _ = sender.try_send(());
    }
}

async fn send_wake_ups(pool: PgPool, mut receiver: mpsc::Receiver<()>) {
    while receiver.recv().await.is_some() {
        metrics::counter!("hk_events_wake_ups_total").increment(1);
        if sqlx::query("SELECT pg_notify($1, '')")
            .bind(EVENTS_CHANNEL)
            .execute(&pool)
            .await
            .is_err()
        {
            // The followers' idle wait covers it; Postgres being down shows everywhere else.
            metrics::counter!("hk_events_wake_up_errors_total").increment(1);
        }
    }
}
