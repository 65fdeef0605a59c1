//! How long to wait before trying HubSpot again.
//!
//! Backoff uses "full jitter" (a uniform draw below an exponentially growing ceiling) so that many
//! refresh tasks failing together do not retry in lockstep. When HubSpot says how long to wait,
//! that wins over our own guess.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::config::RetryPolicy;

/// Requests left in the current rate-limit window.
pub const HEADER_RATELIMIT_REMAINING: &str = "x-hubspot-ratelimit-remaining";
/// Length of HubSpot's rate-limit window in milliseconds.
pub const HEADER_RATELIMIT_INTERVAL_MS: &str = "x-hubspot-ratelimit-interval-milliseconds";

/// Upper bound of the wait before retry number `retry` (1 = first retry):
/// `min(max_delay, base_delay * 2^(retry-1))`.
pub fn backoff_ceiling(policy: &RetryPolicy, retry: u32) -> Duration {
    let exp = retry.saturating_sub(1).min(31);
    policy
        .base_delay
        .checked_mul(1u32 << exp)
        .unwrap_or(policy.max_delay)
        .min(policy.max_delay)
}

/// A full-jitter wait for retry number `retry`: uniform in `[0, backoff_ceiling]`.
pub fn backoff_delay<R: Rng + ?Sized>(policy: &RetryPolicy, retry: u32, rng: &mut R) -> Duration {
    let ceiling = backoff_ceiling(policy, retry);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.gen_range(0..=nanos))
}

/// The wait HubSpot asked for: `Retry-After` (delta-seconds or HTTP-date), else the rate-limit
/// interval when the response says the window is used up. `None` means "use backoff".
pub fn server_requested_wait(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    if let Some(raw) = header_str(headers, RETRY_AFTER.as_str()) {
        if let Ok(secs) = raw.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = DateTime::parse_from_rfc2822(raw) {
            let delta = at.with_timezone(&Utc) - now;
            return Some(delta.to_std().unwrap_or(Duration::ZERO));
        }
    }
    window_exhausted_wait(headers)
}

/// The full interval when HubSpot reports zero requests remaining. Waiting a whole rolling
/// window is conservative, but HubSpot gives no finer signal.
pub fn window_exhausted_wait(headers: &HeaderMap) -> Option<Duration> {
    let remaining = header_str(headers, HEADER_RATELIMIT_REMAINING)?
        .parse::<u64>()
        .ok()?;
    if remaining > 0 {
        return None;
    }
    let interval = header_str(headers, HEADER_RATELIMIT_INTERVAL_MS)?
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_millis(interval))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use reqwest::header::HeaderValue;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_server_wait: Duration::from_secs(15),
        }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let p = policy();
        let got: Vec<u128> = (1..=6)
            .map(|r| backoff_ceiling(&p, r).as_millis())
            .collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff_ceiling(&p, u32::MAX), Duration::from_secs(1));
        assert_eq!(backoff_ceiling(&p, 0), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_below_ceiling_and_spreads() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(7);
        for retry in 1..=6 {
            let draws: Vec<Duration> = (0..200)
                .map(|_| backoff_delay(&p, retry, &mut rng))
                .collect();
            let ceiling = backoff_ceiling(&p, retry);
            assert!(draws.iter().all(|d| *d <= ceiling));
            let low = draws.iter().filter(|d| **d < ceiling / 2).count();
            assert!(
                (40..=160).contains(&low),
                "full jitter should be roughly uniform: {low}"
            );
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_wins() {
        let now = Utc::now();
        let h = headers(&[
            ("retry-after", "3"),
            (HEADER_RATELIMIT_REMAINING, "0"),
            (HEADER_RATELIMIT_INTERVAL_MS, "10000"),
        ]);
        assert_eq!(server_requested_wait(&h, now), Some(Duration::from_secs(3)));
    }

    #[test]
    fn retry_after_http_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:50Z")
            .unwrap()
            .with_timezone(&Utc);
        let h = headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert_eq!(
            server_requested_wait(&h, now),
            Some(Duration::from_secs(10))
        );
        let later = now + chrono::Duration::seconds(60);
        assert_eq!(server_requested_wait(&h, later), Some(Duration::ZERO));
    }

    #[test]
    fn falls_back_to_ratelimit_headers() {
        let now = Utc::now();
        let exhausted = headers(&[
            (HEADER_RATELIMIT_REMAINING, "0"),
            (HEADER_RATELIMIT_INTERVAL_MS, "10000"),
        ]);
        assert_eq!(
            server_requested_wait(&exhausted, now),
            Some(Duration::from_secs(10))
        );
        let left = headers(&[
            (HEADER_RATELIMIT_REMAINING, "5"),
            (HEADER_RATELIMIT_INTERVAL_MS, "10000"),
        ]);
        assert_eq!(server_requested_wait(&left, now), None);
        let garbage = headers(&[("retry-after", "soon"), (HEADER_RATELIMIT_REMAINING, "0")]);
        assert_eq!(server_requested_wait(&garbage, now), None);
        assert_eq!(server_requested_wait(&HeaderMap::new(), now), None);
    }
}
