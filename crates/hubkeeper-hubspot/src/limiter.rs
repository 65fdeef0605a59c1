//! Per-account client-side rate limiter.
//!
//! HubSpot allows 110 requests per rolling 10 s per installed account and shares that budget
//! between everything the app does for the account. Waiting here is cheaper than collecting
//! 429s, which also count against the account.
//!
//! Design: a sliding-window log per account in which each caller *reserves* the earliest
//! instant at which it may send (possibly in the future) and then sleeps until then. Reserving
//! under the lock makes waiting FIFO and wakes each waiter exactly once, with no polling.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimitConfig;

/// How often (in reservations) idle accounts are swept out of the map.
const SWEEP_EVERY: u64 = 512;

/// Keyed limiter: one rolling window per HubSpot account (hub id).
#[derive(Debug)]
pub struct AccountRateLimiter {
    max_requests: usize,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    accounts: HashMap<u64, Bucket>,
    reservations: u64,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Send instants (past or reserved future), non-decreasing.
    slots: VecDeque<Instant>,
    /// Set when HubSpot itself said stop (429 or zero remaining).
    blocked_until: Option<Instant>,
}

impl Bucket {
    fn prune(&mut self, now: Instant, window: Duration) {
        while let Some(front) = self.slots.front() {
            if *front + window <= now {
                self.slots.pop_front();
            } else {
                break;
            }
        }
        if self.blocked_until.is_some_and(|b| b <= now) {
            self.blocked_until = None;
        }
    }

    fn is_idle(&self) -> bool {
        self.slots.is_empty() && self.blocked_until.is_none()
    }
}

impl AccountRateLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            max_requests: usize::try_from(config.max_requests.max(1)).unwrap_or(usize::MAX),
            window: config.window,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every mutation is a single push
        // or pop, so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a request for `account` fits in its window, and counts it.
    ///
    /// Cancel-safe in the sense that dropping the future only wastes the reserved slot.
    pub async fn acquire(&self, account: u64) {
        let slot = self.reserve(account, Instant::now());
        tokio::time::sleep_until(slot).await;
        // HubSpot may have blocked the account while we slept; honour that without taking a
        // second slot.
        loop {
            let blocked = {
                let mut state = self.lock();
                let now = Instant::now();
                state
                    .accounts
                    .get_mut(&account)
                    .and_then(|b| b.blocked_until)
                    .filter(|b| *b > now)
            };
            match blocked {
                Some(until) => tokio::time::sleep_until(until).await,
                None => return,
            }
        }
    }

    /// Takes a slot only if one is free right now; otherwise returns how long until one is.
    pub fn try_acquire(&self, account: u64) -> Result<(), Duration> {
        let now = Instant::now();
        let mut state = self.lock();
        let bucket = state.accounts.entry(account).or_default();
        bucket.prune(now, self.window);
        let earliest = self.earliest_slot(bucket, now);
        if earliest > now {
            return Err(earliest - now);
        }
        bucket.slots.push_back(now);
        Ok(())
    }

    /// Stops all requests for `account` for `wait`, because HubSpot said so.
    pub fn block(&self, account: u64, wait: Duration) {
        let until = Instant::now() + wait;
        let mut state = self.lock();
        let bucket = state.accounts.entry(account).or_default();
        bucket.blocked_until = Some(bucket.blocked_until.map_or(until, |b| b.max(until)));
    }

    /// Requests counted in `account`'s current window, including reserved future ones.
    pub fn in_flight_window(&self, account: u64) -> usize {
        let now = Instant::now();
        let mut state = self.lock();
        match state.accounts.get_mut(&account) {
            Some(bucket) => {
                bucket.prune(now, self.window);
                bucket.slots.len()
            }
            None => 0,
        }
    }

    /// Number of accounts currently tracked; idle ones are swept periodically.
    pub fn tracked_accounts(&self) -> usize {
        self.lock().accounts.len()
    }

    fn earliest_slot(&self, bucket: &Bucket, now: Instant) -> Instant {
        let mut t = now;
        let len = bucket.slots.len();
        if len >= self.max_requests {
            // The request max places back must have left the window before we may send.
            if let Some(old) = bucket.slots.get(len - self.max_requests) {
                t = t.max(*old + self.window);
            }
        }
        if let Some(b) = bucket.blocked_until {
            t = t.max(b);
        }
        if let Some(last) = bucket.slots.back() {
            // Keep the log ordered so pruning from the front stays correct.
            t = t.max(*last);
        }
        t
    }

    fn reserve(&self, account: u64, now: Instant) -> Instant {
        let mut state = self.lock();
        state.reservations = state.reservations.wrapping_add(1);
        if state.reservations.is_multiple_of(SWEEP_EVERY) {
            let window = self.window;
            state.accounts.retain(|_, b| {
                b.prune(now, window);
                !b.is_idle()
            });
        }
        let bucket = state.accounts.entry(account).or_default();
        bucket.prune(now, self.window);
        let slot = self.earliest_slot(bucket, now);
        bucket.slots.push_back(slot);
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limiter(max: u32, window_secs: u64) -> AccountRateLimiter {
        AccountRateLimiter::new(&RateLimitConfig {
            max_requests: max,
            window: Duration::from_secs(window_secs),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn burst_up_to_limit_is_immediate_then_waits_for_window() {
        let l = limiter(110, 10);
        let start = Instant::now();
        for _ in 0..110 {
            l.acquire(1).await;
        }
        assert_eq!(Instant::now(), start, "the first 110 must not wait");
        l.acquire(1).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(10));
        assert_eq!(
            l.in_flight_window(1),
            1,
            "the first burst has left the window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rolling_window_frees_capacity_gradually() {
        let l = limiter(3, 10);
        let start = Instant::now();
        l.acquire(1).await; // t=0
        tokio::time::advance(Duration::from_secs(4)).await;
        l.acquire(1).await; // t=4
        l.acquire(1).await; // t=4
        l.acquire(1).await; // must wait for the t=0 request to leave: t=10
        assert_eq!(Instant::now() - start, Duration::from_secs(10));
        l.acquire(1).await; // t=4 + 10
        assert_eq!(Instant::now() - start, Duration::from_secs(14));
    }

    #[tokio::test(start_paused = true)]
    async fn accounts_are_independent() {
        let l = limiter(2, 10);
        let start = Instant::now();
        l.acquire(1).await;
        l.acquire(1).await;
        assert_eq!(l.try_acquire(1), Err(Duration::from_secs(10)));
        l.acquire(2).await;
        l.acquire(2).await;
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_waiters_are_spread_not_bunched() {
        let l = Arc::new(limiter(5, 10));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..15 {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                l.acquire(9).await;
                Instant::now() - start
            }));
        }
        let mut waits = Vec::new();
        for t in tasks {
            waits.push(t.await.unwrap());
        }
        waits.sort();
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(
            secs,
            vec![0, 0, 0, 0, 0, 10, 10, 10, 10, 10, 20, 20, 20, 20, 20]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn block_delays_even_already_reserved_requests() {
        let l = Arc::new(limiter(100, 10));
        let start = Instant::now();
        l.block(3, Duration::from_secs(7));
        l.acquire(3).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(7));

        // A waiter that reserved before the block still honours it.
        let l2 = limiter(1, 10);
        l2.acquire(4).await; // t=7
        let l2 = Arc::new(l2);
        let waiter = {
            let l2 = l2.clone();
            tokio::spawn(async move {
                l2.acquire(4).await; // reserved for t=17
                Instant::now()
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(
            l2.in_flight_window(4),
            2,
            "the waiter has reserved its slot"
        );
        l2.block(4, Duration::from_secs(20)); // until t=27
        let woke = waiter.await.unwrap();
        assert_eq!(woke - start, Duration::from_secs(27));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_accounts_are_swept() {
        let l = limiter(10, 1);
        for account in 0..SWEEP_EVERY - 1 {
            l.acquire(account).await;
        }
        assert_eq!(l.tracked_accounts(), (SWEEP_EVERY - 1) as usize);
        tokio::time::advance(Duration::from_secs(2)).await;
        l.acquire(u64::MAX).await; // the sweeping reservation
        assert_eq!(l.tracked_accounts(), 1);
    }
}
