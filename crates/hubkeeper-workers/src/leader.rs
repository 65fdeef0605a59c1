//! Leader election on a Postgres advisory lock held by a dedicated session.
//!
//! Chosen over a NATS KV lease: Postgres releases the lock the instant the holder's session ends
//! (process killed, machine gone, connection cut), so there is no lease to outlive a dead leader
//! and no clock to trust; a standby notices within one poll. A leader that loses its connection
//! learns it at its next heartbeat and steps down before doing more work.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// A held leadership. Dropping it closes the session, which releases the lock.
pub struct Leadership {
    conn: PgConnection,
    key: i64,
}

impl Leadership {
    /// Waits until this process holds `key` (or shutdown). Errors only on shutdown.
    pub async fn acquire(
        pool: &PgPool,
        key: i64,
        poll: Duration,
        shutdown: &CancellationToken,
    ) -> Option<Leadership> {
        loop {
            match try_acquire(pool, key).await {
                Ok(Some(leadership)) => return Some(leadership),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "leader election: database unavailable"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Confirms the session is still alive: a session-level advisory lock lives exactly as long
    /// as its session, and nothing else releases it.
    pub async fn heartbeat(&mut self) -> bool {
        sqlx::query("SELECT 1")
            .execute(&mut self.conn)
            .await
            .is_ok()
    }

    /// Gives the lock up explicitly (graceful shutdown), so a standby takes over at once.
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut self.conn)
            .await;
    }
}

async fn try_acquire(pool: &PgPool, key: i64) -> Result<Option<Leadership>, sqlx::Error> {
    // Detached: never returned to the pool with the lock still held.
    let mut conn = pool.acquire().await?.detach();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut conn)
        .await?;
    Ok(got.then_some(Leadership { conn, key }))
}
