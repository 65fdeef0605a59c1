//! Client configuration. Base URLs are configurable so the simulator can stand in for HubSpot.

use std::time::Duration;

use url::Url;

/// How [`crate::HubSpotClient`] reaches HubSpot and how hard it tries.
#[derive(Debug, Clone)]
pub struct HubSpotConfig {
    /// Token, introspection and CRM endpoints.
    pub api_base_url: Url,
    /// Where users are sent to consent (`/oauth/authorize`).
    pub app_base_url: Url,
    pub connect_timeout: Duration,
    /// Whole-request deadline per attempt (not across retries).
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// `None` disables the client-side limiter (e.g. for tests that want to provoke 429s).
    pub rate_limit: Option<RateLimitConfig>,
    pub user_agent: String,
}

impl Default for HubSpotConfig {
    fn default() -> Self {
        Self {
            api_base_url: Url::parse("https://api.hubapi.com")
                .unwrap_or_else(|_| unreachable!("literal URL parses")),
            app_base_url: Url::parse("https://app.hubspot.com")
                .unwrap_or_else(|_| unreachable!("literal URL parses")),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            rate_limit: Some(RateLimitConfig::default()),
            user_agent: concat!("hubkeeper/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Retry budget for idempotent-enough calls (refresh, introspection, revoke, GETs) that fail
/// transiently or are rate limited. Code exchange is never retried: codes are single-use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first; 1 disables retries.
    pub max_attempts: u32,
    /// Backoff ceiling for the first retry; doubles per attempt.
    pub base_delay: Duration,
    /// Cap on a computed backoff.
    pub max_delay: Duration,
    /// Longest server-requested wait (`Retry-After`, rate-limit interval) the client sits out
    /// itself; anything longer is returned as [`crate::HubSpotError::RateLimited`] so the caller
    /// can reschedule instead of holding a task.
    pub max_server_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
            max_server_wait: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

/// Client-side budget per HubSpot account, kept just under HubSpot's own limit so Hubkeeper
/// never burns an installation's shared quota into 429s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests allowed per `window`; 0 is treated as 1 so requests can still make progress.
    pub max_requests: u32,
    /// Rolling window length.
    pub window: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            max_requests: 110,
            window: Duration::from_secs(10),
        }
    }
}
