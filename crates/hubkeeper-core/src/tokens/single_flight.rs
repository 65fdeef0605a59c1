//! The locks one installation's refresh, revoke or disconnect runs under: an in-process mutex
//! (tasks of one process queue up without touching Postgres), a flight slot (lock connections
//! never take the whole pool) and a Postgres session advisory lock (processes queue up; it dies
//! with its session). `Inner::exclusive` takes them in that order, in a task of its own.

use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use hubkeeper_bus::registry::TOKEN_REFRESH_LOCK_CLASS;
use hubkeeper_domain::InstallationId;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

use super::Inner;
use crate::error::CoreError;

/// Advisory-lock class of refresh locks (two-int form, which never overlaps the single-bigint
/// keys used for leader election).
const LOCK_CLASS: i32 = TOKEN_REFRESH_LOCK_CLASS.class;

/// Holds the per-installation mutex and removes it from the map once nobody else wants it.
struct LocalGuard<'a> {
    inner: &'a Inner,
    id: InstallationId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    mutex: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl Drop for LocalGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        self.mutex.take();
        let mut locks = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if locks
            .get(&self.id)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            locks.remove(&self.id);
        }
    }
}

/// A Postgres session advisory lock on a dedicated pooled connection.
///
/// Released explicitly; if the holder is dropped without releasing (an error path or a panic),
/// the connection is closed instead of returned to the pool, and closing the session releases
/// the lock. A lock can never leak into the pool.
struct RefreshLock {
    conn: Option<PoolConnection<Postgres>>,
    key: (i32, i32),
    /// The server process of the session that took the lock (see [`RefreshLock::still_held`]).
    backend: i32,
}

impl RefreshLock {
    async fn acquire(
        pool: &PgPool,
        id: &InstallationId,
        timeout: Duration,
    ) -> Result<Self, CoreError> {
        let key = lock_key(id);
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(sqlx::Error::PoolTimedOut) => return Err(CoreError::Busy { id: id.to_string() }),
            Err(e) => return Err(e.into()),
        };
        // lock_timeout bounds the wait on the server, so no client-side cancellation can leave
        // a lock granted on a connection nobody watches. It is set for this one statement (a
        // transaction of its own; the lock's subquery depends on the setting's, so it runs
        // after it), which the session-level advisory lock outlives: one round trip, not four.
        let acquired: Result<i32, sqlx::Error> = sqlx::query_scalar(
            "SELECT pg_backend_pid()
               FROM (SELECT set_config('lock_timeout', $3, true) AS timeout) AS bounded,
                    LATERAL (SELECT pg_advisory_lock($1, $2)
                              WHERE bounded.timeout IS NOT NULL) AS locked",
        )
        .bind(key.0)
        .bind(key.1)
        .bind(format!("{}ms", timeout.as_millis().max(1)))
        .fetch_one(&mut *conn)
        .await;
        match acquired {
            Ok(backend) => Ok(Self {
                conn: Some(conn),
                key,
                backend,
            }),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                Err(CoreError::Busy { id: id.to_string() })
            }
            Err(e) => {
                // Unknown state: do not hand this session to anyone else.
                conn.close_on_drop();
                Err(e.into())
            }
        }
    }

    /// Whether this session still holds the lock. A session that was killed (a restarted or
    /// failed-over database, `pg_terminate_backend`, a network cut) took the lock with it, and
    /// another process may have refreshed since: then nothing learned under the lock may be
    /// recorded. Any error counts as "not held" (and the session is not reused).
    ///
    /// A session-level advisory lock ends only with an unlock on its session (this lock's own
    /// `release`) or with the session, so it is held exactly while the server process that took
    /// it is the one answering on this connection: a dead session answers with an error, and
    /// anything that put another server process behind the connection answers with another pid.
    /// (Asking `pg_locks` instead copies the server's whole lock table on every call: 0.3 ms of
    /// Postgres CPU per refresh during `hubkeeper bench refresh`.)
    async fn still_held(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let backend: Result<i32, sqlx::Error> = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut **conn)
            .await;
        match backend {
            Ok(backend) if backend == self.backend => true,
            Ok(other) => {
                tracing::warn!(
                    taken_by = self.backend,
                    answered_by = other,
                    "the refresh lock's connection is on another session"
                );
                conn.close_on_drop();
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "the refresh lock's session is gone");
                conn.close_on_drop();
                false
            }
        }
    }

    async fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(self.key.0)
            .bind(self.key.1)
            .execute(&mut *conn)
            .await;
        if let Err(e) = unlocked {
            tracing::warn!(error = %e, "advisory unlock failed; closing the session instead");
            conn.close_on_drop();
        }
    }
}

impl Drop for RefreshLock {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

/// The advisory lock a piece of work runs under, for the work to check that it still holds it
/// before recording what it learned. Cheap to clone.
#[derive(Clone)]
pub(super) struct HeldLock(Arc<tokio::sync::Mutex<Option<RefreshLock>>>);

impl HeldLock {
    /// Whether the lock's session is alive and still holds it.
    pub(super) async fn still_held(&self) -> bool {
        match self.0.lock().await.as_mut() {
            Some(lock) => lock.still_held().await,
            None => false,
        }
    }

    async fn release(&self) {
        let lock = self.0.lock().await.take();
        if let Some(lock) = lock {
            lock.release().await;
        }
    }
}

impl Inner {
    /// Runs `work` holding the installation's locks, in a task of its own so that a caller that
    /// stops waiting (a closed HTTP connection) cannot cancel it between HubSpot's answer and
    /// its recording.
    pub(super) async fn exclusive<T, W, F>(
        self: Arc<Self>,
        id: InstallationId,
        work: W,
    ) -> Result<T, CoreError>
    where
        T: Send + 'static,
        W: FnOnce(Arc<Inner>) -> F + Send + 'static,
        F: Future<Output = Result<T, CoreError>> + Send,
    {
        self.exclusive_unless(id, |_| None, move |inner, _lock| work(inner))
            .await
    }

    /// [`Inner::exclusive`], but `settled` is asked once the in-process lock is held, before
    /// any connection is taken: an answer there (another task just did the work) ends the call.
    pub(super) async fn exclusive_unless<T, S, W, F>(
        self: Arc<Self>,
        id: InstallationId,
        settled: S,
        work: W,
    ) -> Result<T, CoreError>
    where
        T: Send + 'static,
        S: FnOnce(&Inner) -> Option<T> + Send + 'static,
        W: FnOnce(Arc<Inner>, HeldLock) -> F + Send + 'static,
        F: Future<Output = Result<T, CoreError>> + Send,
    {
        spawn_uncancellable(async move {
            let _local = self.local_lock(id).await?;
            if let Some(done) = settled(&self) {
                return Ok(done);
            }
            let _slot = self.flight_slot(&id).await?;
            let lock = RefreshLock::acquire(&self.pool, &id, self.config.lock_timeout).await?;
            let held = HeldLock(Arc::new(tokio::sync::Mutex::new(Some(lock))));
            let result = work(self.clone(), held.clone()).await;
            held.release().await;
            result
        })
        .await
    }

    /// The per-installation in-process lock, bounded by the lock timeout.
    async fn local_lock(&self, id: InstallationId) -> Result<LocalGuard<'_>, CoreError> {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            locks.entry(id).or_default().clone()
        };
        let guard = tokio::time::timeout(self.config.lock_timeout, mutex.clone().lock_owned())
            .await
            .map_err(|_| CoreError::Busy { id: id.to_string() })?;
        Ok(LocalGuard {
            inner: self,
            id,
            guard: Some(guard),
            mutex: Some(mutex),
        })
    }

    /// A slot for holding a lock connection (see [`Inner::flights`]).
    async fn flight_slot(
        &self,
        id: &InstallationId,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, CoreError> {
        match tokio::time::timeout(self.config.lock_timeout, self.flights.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(CoreError::Busy { id: id.to_string() }),
        }
    }
}

/// Flights allowed to hold a lock connection at once: half the pool, at least one.
pub(super) fn flight_slots(pool: &PgPool) -> usize {
    usize::try_from(pool.options().get_max_connections() / 2)
        .unwrap_or(1)
        .max(1)
}

/// Two-int advisory key: a fixed class and a 32-bit fold of the installation id. A collision
/// only serialises two installations' refreshes; it never mixes their data.
fn lock_key(id: &InstallationId) -> (i32, i32) {
    let v = id.as_uuid().as_u128();
    let folded = (v ^ (v >> 32) ^ (v >> 64) ^ (v >> 96)) as u32;
    (LOCK_CLASS, folded as i32)
}

/// Runs `work` to completion even if the caller stops waiting.
async fn spawn_uncancellable<T: Send + 'static>(
    work: impl Future<Output = Result<T, CoreError>> + Send + 'static,
) -> Result<T, CoreError> {
    tokio::spawn(work)
        .await
        .map_err(|e| CoreError::Store(format!("token task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_spread() {
        let a = InstallationId::from_uuid(uuid::Uuid::from_u128(1));
        let b = InstallationId::from_uuid(uuid::Uuid::from_u128(2));
        assert_eq!(lock_key(&a), lock_key(&a));
        assert_ne!(lock_key(&a), lock_key(&b));
        assert_eq!(lock_key(&a).0, LOCK_CLASS);
    }
}
