//! Rate limits shared by every process: one budget per bucket (a HubSpot portal for the API
//! proxy, a client address for the OAuth install flow and log-in), however many API processes
//! draw from it.
//!
//! **Why Postgres, not NATS KV.** Every process already holds a Postgres pool, and a row lock
//! makes concurrent reservations for one bucket queue up instead of failing: a reservation is one
//! call of `hk_rate_limit_reserve` (one round trip, the row locked for a fraction of a
//! millisecond). With a KV compare-and-set, N processes hammering one hot portal would collide
//! and retry, and the retries are the load exactly when it is highest. The table is unlogged:
//! the state is worth seconds, and skipping WAL keeps a reservation cheap.
//!
//! **The limit is exact.** Each bucket keeps a sliding-window log of send instants: a request may
//! be sent at `t` only if fewer than `max` sends fall in `(t - window, t]`, so no window of that
//! length ever sees more than `max`, wherever it starts. A caller that may wait *reserves* the
//! earliest such instant (possibly in the future) and sleeps until then: waiting is FIFO across
//! processes and needs no polling. A caller whose slot is further away than its deadline
//! reserves nothing and gets the time until the earliest free slot (`Retry-After`).
//!
//! Instants come from the database clock only, so the processes' clocks never disagree about a
//! window. Memory: nothing per bucket in the process; in the table, a bucket holds at most
//! `max * (1 + max_wait / window)` instants, and rows whose window has passed are swept in
//! batches by whichever process reserves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

/// Every this many reservations a process sweeps expired buckets.
const SWEEP_EVERY: u64 = 256;
/// Rows deleted per sweep (keeps one sweep short however many addresses came by).
const SWEEP_BATCH: i64 = 1000;

/// How many requests a bucket allows per window, and how long a caller may wait for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub max: u32,
    pub window: Duration,
    /// Longest wait for a slot; zero: take one now or be refused.
    pub max_wait: Duration,
}

impl Limit {
    /// A limit that refuses at once when the window is full (per-client limits).
    pub fn refuse_when_full(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            max_wait: Duration::ZERO,
        }
    }
}

/// The answer to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// A slot is reserved: send after waiting this long ([`SharedRateLimiter::acquire`] waits).
    Granted(Duration),
    /// No slot within the deadline; nothing was reserved. The earliest slot is this far away.
    RetryAfter(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("rate-limit store unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

/// A handle on the shared limits. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SharedRateLimiter {
    pool: PgPool,
    reservations: Arc<AtomicU64>,
}

impl SharedRateLimiter {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            reservations: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Reserves a slot in `bucket` if one is free within `limit.max_wait`; does not wait.
    pub async fn reserve(&self, bucket: &str, limit: Limit) -> Result<Reservation, LimiterError> {
        let micros: i64 = sqlx::query_scalar("SELECT hk_rate_limit_reserve($1, $2, $3, $4)")
            .bind(bucket)
            .bind(i32::try_from(limit.max.max(1)).unwrap_or(i32::MAX))
            .bind(millis(limit.window.max(Duration::from_millis(1))))
            .bind(millis(limit.max_wait))
            .fetch_one(&self.pool)
            .await?;
        if self.reservations.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                if let Err(e) = sweep(&pool).await {
                    tracing::debug!(error = %e, "rate-limit sweep failed; the next one retries");
                }
            });
        }
        Ok(if micros >= 0 {
            Reservation::Granted(Duration::from_micros(micros.unsigned_abs()))
        } else {
            Reservation::RetryAfter(Duration::from_micros(micros.unsigned_abs()))
        })
    }

    /// Waits for a slot in `bucket` (at most `limit.max_wait`): `Ok(Ok(waited))` once the request
    /// may be sent, `Ok(Err(retry_after))` when no slot is free within the deadline.
    pub async fn acquire(
        &self,
        bucket: &str,
        limit: Limit,
    ) -> Result<Result<Duration, Duration>, LimiterError> {
        match self.reserve(bucket, limit).await? {
            Reservation::Granted(wait) => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                Ok(Ok(wait))
            }
            Reservation::RetryAfter(after) => Ok(Err(after)),
        }
    }

    /// No slot of `bucket` is granted before `wait` has passed (the far side said stop).
    /// Slots reserved before the block keep their instant.
    pub async fn block(&self, bucket: &str, wait: Duration) -> Result<(), LimiterError> {
        sqlx::query(
            "INSERT INTO rate_limit_windows (bucket, blocked_until, expires_at)
             VALUES ($1, clock_timestamp() + $2 * interval '1 millisecond',
                     clock_timestamp() + $2 * interval '1 millisecond')
             ON CONFLICT (bucket) DO UPDATE
                SET blocked_until = greatest(rate_limit_windows.blocked_until,
                                             EXCLUDED.blocked_until),
                    expires_at = greatest(rate_limit_windows.expires_at, EXCLUDED.expires_at)",
        )
        .bind(bucket)
        .bind(millis(wait))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets one bucket.
    pub async fn forget(&self, bucket: &str) -> Result<(), LimiterError> {
        sqlx::query("DELETE FROM rate_limit_windows WHERE bucket = $1")
            .bind(bucket)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets every bucket whose name starts with `prefix` (e.g. every OAuth client address).
    pub async fn clear(&self, prefix: &str) -> Result<u64, LimiterError> {
        let pattern = format!(
            "{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let done = sqlx::query("DELETE FROM rate_limit_windows WHERE bucket LIKE $1")
            .bind(pattern)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Requests counted in `bucket`'s current window, reserved future ones included.
    pub async fn in_window(&self, bucket: &str, window: Duration) -> Result<u32, LimiterError> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT count(*)::bigint FROM rate_limit_windows, unnest(slots) AS s
              WHERE bucket = $1 AND s > clock_timestamp() - $2 * interval '1 millisecond'",
        )
        .bind(bucket)
        .bind(millis(window))
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(n.unwrap_or(0)).unwrap_or(u32::MAX))
    }

    /// Deletes up to a batch of buckets whose window has passed; returns how many.
    pub async fn sweep(&self) -> Result<u64, LimiterError> {
        Ok(sweep(&self.pool).await?)
    }
}

async fn sweep(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM rate_limit_windows WHERE bucket IN (
            SELECT bucket FROM rate_limit_windows WHERE expires_at < clock_timestamp()
             ORDER BY expires_at LIMIT $1)",
    )
    .bind(SWEEP_BATCH)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
