//! Shared pieces of the issue-7 routes (plans, billing, settings, maintenance, backups,
//! self-test): the services behind them, error mapping and request metadata.

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::HeaderMap;
use hubkeeper_core::backup::BackupService;
use hubkeeper_core::billing::BillingService;
use hubkeeper_core::selftest::{RateLimitProbe, SelfTestDeps};
use hubkeeper_core::settings::{LiveSettings, SettingsApplier, SettingsService, SettingsSnapshot};
use hubkeeper_core::CoreError;
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_domain::plan::PlanError;
use hubkeeper_domain::subscription::SubscriptionError;

use crate::error::ApiError;
use crate::oauth::OAuthRateLimiter;
use crate::state::AppState;

/// The services behind the issue-7 routes, built by the binary's role wiring.
#[derive(Clone)]
pub struct OperationsServices {
    /// Plans, subscriptions, usage, quotas, the billing overview.
    pub billing: BillingService,
    /// Runtime settings and the control channel.
    pub settings: SettingsService,
    /// The settings this process applied last.
    pub live: LiveSettings,
    /// Backups; `None` when this process cannot make them.
    pub backups: Option<BackupService>,
    /// What the self-test uses.
    pub selftest: SelfTestDeps,
}

/// The issue-7 services, or 503 on a process without them.
pub(crate) fn operations(state: &AppState) -> Result<&OperationsServices, ApiError> {
    state.services().operations.as_ref().ok_or_else(|| {
        ApiError::Unavailable("pricing, billing and settings are not served by this process".into())
    })
}

/// Event metadata for a command issued by `actor` in this request.
pub(crate) fn metadata(actor: Actor, headers: &HeaderMap, reason: Option<&str>) -> EventMetadata {
    let mut meta = EventMetadata::new(actor, chrono::Utc::now());
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        meta = meta.request_id(id);
    }
    if let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) {
        meta = meta.reason(reason.chars().take(500).collect::<String>());
    }
    meta
}

pub(crate) fn bad_json(e: JsonRejection) -> ApiError {
    ApiError::BadRequest(format!("invalid request body: {}", e.body_text()))
}

pub(crate) fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::BadRequest(format!("invalid query: {}", e.body_text()))
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let message = e.to_string();
        match e {
            CoreError::NotFound { .. } | CoreError::Plan(PlanError::NotFound) => {
                ApiError::NotFound(message)
            }
            CoreError::InvalidInput(_)
            | CoreError::TokenLifetimeTooShort { .. }
            | CoreError::Settings(_)
            | CoreError::Subscription(SubscriptionError::InvalidPeriod(_)) => {
                ApiError::BadRequest(message)
            }
            CoreError::Plan(
                PlanError::AlreadyExists(_)
                | PlanError::Deleted
                | PlanError::Archived
                | PlanError::HasSubscribers { .. },
            ) => ApiError::Conflict(message),
            CoreError::Plan(_) => ApiError::BadRequest(message),
            CoreError::Conflict(_)
            | CoreError::Subscription(_)
            | CoreError::App(_)
            | CoreError::Installation(_)
            | CoreError::ReauthorizationRequired { .. }
            | CoreError::Disconnected { .. }
            | CoreError::Revoked { .. }
            | CoreError::AppDeleted { .. }
            | CoreError::Shredded { .. } => ApiError::Conflict(message),
            CoreError::Contention(_)
            | CoreError::Unavailable(_)
            | CoreError::Busy { .. }
            | CoreError::HubSpot(_) => ApiError::Unavailable(message),
            CoreError::Store(_) | CoreError::Database(_) | CoreError::Crypto(_) => {
                ApiError::Internal(message)
            }
        }
    }
}

/// The OAuth limiter follows the rate-limiting settings (once they were set; before, the
/// process's `HK_OAUTH_RATE_LIMIT_*` stand) and the "clear" action.
impl SettingsApplier for OAuthRateLimiter {
    fn apply(&self, settings: &SettingsSnapshot) {
        if !settings.customized.oauth_rate_limit {
            return;
        }
        let r = settings.values.oauth_rate_limit;
        self.reconfigure(
            r.enabled,
            r.max_per_ip,
            Duration::from_secs(u64::from(r.window_secs)),
        );
    }

    fn clear_rate_limits(&self) {
        self.clear();
    }
}

/// The self-test drives the live limiter with a documentation address.
impl RateLimitProbe for OAuthRateLimiter {
    fn limits(&self) -> (bool, u32, Duration) {
        OAuthRateLimiter::limits(self)
    }

    fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        OAuthRateLimiter::check(self, ip)
    }

    fn forget(&self, ip: IpAddr) {
        OAuthRateLimiter::forget(self, ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubkeeper_domain::settings::{Customized, OAuthRateLimit, SettingsValues};

    fn snapshot(values: SettingsValues, customized: bool) -> SettingsSnapshot {
        SettingsSnapshot {
            values,
            version: 1,
            changed_at: None,
            customized: Customized {
                oauth_rate_limit: customized,
                ..Customized::default()
            },
        }
    }

    #[test]
    fn the_limiter_follows_settings_at_once() {
        let limiter = OAuthRateLimiter::new(10, Duration::from_secs(60));
        let ip = IpAddr::from([203, 0, 113, 7]);
        let mut values = SettingsValues {
            oauth_rate_limit: OAuthRateLimit {
                enabled: true,
                window_secs: 60,
                max_per_ip: 2,
            },
            ..SettingsValues::default()
        };
        SettingsApplier::apply(&limiter, &snapshot(values, false));
        assert_eq!(
            RateLimitProbe::limits(&limiter),
            (true, 10, Duration::from_secs(60)),
            "never customized: the process configuration stands"
        );
        SettingsApplier::apply(&limiter, &snapshot(values, true));
        assert!(limiter.check(ip).is_ok());
        assert!(limiter.check(ip).is_ok());
        assert!(
            limiter.check(ip).is_err(),
            "third request over a limit of 2"
        );
        limiter.clear_rate_limits();
        assert!(limiter.check(ip).is_ok(), "cleared counters start over");
        values.oauth_rate_limit.enabled = false;
        SettingsApplier::apply(&limiter, &snapshot(values, true));
        for _ in 0..10 {
            assert!(limiter.check(ip).is_ok(), "disabled: nothing is refused");
        }
        assert_eq!(
            RateLimitProbe::limits(&limiter),
            (false, 2, Duration::from_secs(60))
        );
    }

    #[test]
    fn domain_refusals_map_to_client_errors() {
        let conflict: ApiError = CoreError::Plan(PlanError::HasSubscribers {
            count: 3,
            action: "delete",
        })
        .into();
        assert!(
            matches!(&conflict, ApiError::Conflict(m) if m.contains("3 subscriber(s)")),
            "{conflict:?}"
        );
        let bad: ApiError = CoreError::Plan(PlanError::UnknownCurrency("XXX".into())).into();
        assert!(matches!(bad, ApiError::BadRequest(_)));
        let missing: ApiError = CoreError::NotFound {
            what: "plan",
            id: "x".into(),
        }
        .into();
        assert!(matches!(missing, ApiError::NotFound(_)));
    }
}
