//! Single active roles: leader election on a Postgres session advisory lock, and the one loop
//! every leader-elected role runs ([`run_as_leader`]).
//!
//! The lock is taken on a dedicated, detached connection (never returned to the pool with the
//! lock still held). Chosen over a NATS KV lease: Postgres releases the lock the instant the
//! holder's session ends (process killed, machine gone, connection cut), so there is no lease to
//! outlive a dead leader and no clock to trust; a standby notices within one poll. A leader
//! learns that its session died at its next statement on it ([`Leadership::confirm`], or work
//! done on [`Leadership::connection`]) and steps down before doing more work.

use std::future::Future;
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::registry::LockKey;

/// A held leadership. Dropping it closes the session, which releases the lock.
pub struct Leadership {
    conn: PgConnection,
    lock: LockKey,
}

impl Leadership {
    /// Waits until this process holds `lock`, polling every `poll`; `None` on shutdown. A
    /// standby keeps one session for its polls and opens a new one after a database error.
    pub async fn acquire(
        pool: &PgPool,
        lock: LockKey,
        poll: Duration,
        shutdown: &CancellationToken,
    ) -> Option<Leadership> {
        let mut standby: Option<PgConnection> = None;
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            match try_acquire(pool, lock, &mut standby).await {
                Ok(Some(leadership)) => return Some(leadership),
                Ok(None) => {}
                Err(error) => {
                    standby = None;
                    tracing::warn!(role = lock.name, %error, "leader election: database unavailable");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Confirms the session is still alive: a session-level advisory lock lives exactly as long
    /// as its session, and nothing else releases it.
    pub async fn confirm(&mut self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&mut self.conn).await?;
        Ok(())
    }

    /// The session holding the lock. Work done on it confirms the leadership as a side effect:
    /// if the session died, the statement fails.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// The lock held.
    pub fn lock(&self) -> LockKey {
        self.lock
    }

    /// Gives the lock up explicitly (graceful shutdown), so a standby takes over at once.
    pub async fn release(mut self) {
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.lock.key)
            .execute(&mut self.conn)
            .await;
        if let Err(error) = unlocked {
            // Closing the session below releases it anyway.
            tracing::debug!(role = self.lock.name, %error, "advisory unlock failed");
        }
        let _ = self.conn.close().await;
    }
}

async fn try_acquire(
    pool: &PgPool,
    lock: LockKey,
    standby: &mut Option<PgConnection>,
) -> Result<Option<Leadership>, sqlx::Error> {
    let mut conn = match standby.take() {
        Some(conn) => conn,
        // Detached: closed when dropped, never handed to another task with the lock held.
        None => pool.acquire().await?.detach(),
    };
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(lock.key)
        .fetch_one(&mut conn)
        .await?;
    if got {
        return Ok(Some(Leadership { conn, lock }));
    }
    *standby = Some(conn);
    Ok(None)
}

/// How a leader-elected role stands by and recovers.
#[derive(Debug, Clone)]
pub struct LeaderRole {
    /// The lock that makes it single-active, with its metrics.
    pub lock: LockKey,
    /// How often a standby tries to take over.
    pub standby_poll: Duration,
    /// Pause after the leader's work failed, before standing by again.
    pub retry_after: Duration,
}

impl LeaderRole {
    pub fn new(lock: LockKey, standby_poll: Duration, retry_after: Duration) -> Self {
        Self {
            lock,
            standby_poll,
            retry_after,
        }
    }
}

/// What a leader-elected role does while it leads.
pub trait LeaderWork: Send + Sync {
    type Error: std::fmt::Display + Send;

    /// Works until `shutdown` (then returns `Ok`) or until something fails (then returns the
    /// error, and [`run_as_leader`] steps down). Must confirm the session regularly, by
    /// [`Leadership::confirm`] or by doing its work on [`Leadership::connection`], so that a
    /// leader whose session died stops.
    fn lead(
        &self,
        leadership: &mut Leadership,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// The loop of every single-active role: stand by until this process holds the role's lock (or
/// shutdown), lead, step down when the work fails (closing the session, which releases the lock),
/// and stand by again. On shutdown the lock is released explicitly, so a standby elsewhere takes
/// over at its next poll.
pub async fn run_as_leader<W: LeaderWork>(
    pool: &PgPool,
    role: &LeaderRole,
    work: &W,
    shutdown: &CancellationToken,
) {
    let name = role.lock.name;
    while !shutdown.is_cancelled() {
        let Some(mut leadership) =
            Leadership::acquire(pool, role.lock, role.standby_poll, shutdown).await
        else {
            break;
        };
        metrics::gauge!(role.lock.leader_gauge).set(1.0);
        tracing::info!("{name} took the lead");
        let result = work.lead(&mut leadership, shutdown).await;
        metrics::gauge!(role.lock.leader_gauge).set(0.0);
        match result {
            Ok(()) => {
                leadership.release().await;
                if shutdown.is_cancelled() {
                    break;
                }
                tracing::info!("{name} stepped down");
            }
            Err(error) => {
                // The session may be dead or stuck: dropping it is the release that cannot hang.
                drop(leadership);
                metrics::counter!(role.lock.errors_counter).increment(1);
                tracing::warn!(%error, "{name} interrupted; standing by again");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(role.retry_after) => {}
        }
    }
    metrics::gauge!(role.lock.leader_gauge).set(0.0);
    tracing::info!("{name} stopped");
}
