//! The public install flow: `GET /oauth/{app_id}/install` (or a connect session's
//! `GET /connect/{session_id}`, see [`crate::connect`]) sends the browser to HubSpot's consent
//! page, `GET /oauth/callback` finishes the install and sends the browser to the session's
//! return URL (`installation_id`, `external_ref`, `status=connected`, or `error=<code>`), or,
//! without one, to the public result page `/connect-result` (never the dashboard's login).
//!
//! Both routes are public (a customer's browser calls them) and therefore rate limited per
//! client (address, or IPv6 /64), each in its own bucket shared by every API process, so nobody
//! can burn HubSpot code exchanges or fill the state table from one host.

use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, Extensions};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use hubkeeper_bus::limiter::SharedRateLimiter;
use hubkeeper_core::connect::outcome_url;
use hubkeeper_core::selftest::RateLimitProbe;
use hubkeeper_core::settings::{SettingsApplier, SettingsSnapshot};
use hubkeeper_core::CallbackParams;
use hubkeeper_domain::AppId;

use crate::client_addr::{self, ClientAddr, ClientBucket};
use crate::error::ApiError;
use crate::extract::Query;
use crate::params;
use crate::request::RequestId;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth/{app_id}/install", get(install))
        .route("/oauth/callback", get(callback))
}

/// The install flow's per-client limits: separate buckets for install and callback requests,
/// counted in the shared limiter (every API process draws from one budget per client; see
/// [`crate::client_addr`]). Its limits can change at run time (the settings page applies them
/// through [`OAuthRateLimiter::reconfigure`]).
pub struct OAuthRateLimiter {
    limits: Mutex<Limits>,
    shared: SharedRateLimiter,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    enabled: bool,
    max: u32,
    window: Duration,
}

impl OAuthRateLimiter {
    pub fn new(shared: SharedRateLimiter, max: u32, window: Duration) -> Self {
        Self {
            limits: Mutex::new(Limits {
                enabled: true,
                max: max.max(1),
                window: window.max(Duration::from_secs(1)),
            }),
            shared,
        }
    }

    /// Whether limiting is on, requests allowed per window, the window.
    pub fn limits(&self) -> (bool, u32, Duration) {
        let l = *self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        (l.enabled, l.max, l.window)
    }

    /// New limits, effective for the next request (counters are kept).
    pub fn reconfigure(&self, enabled: bool, max: u32, window: Duration) {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner) = Limits {
            enabled,
            max: max.max(1),
            window: window.max(Duration::from_secs(1)),
        };
    }

    /// Forgets every per-client counter (install, callback and log-in), in every process.
    pub async fn clear(&self) {
        client_addr::clear_all(&self.shared).await;
    }

    /// Forgets one client's install counter.
    pub async fn forget(&self, client: ClientAddr) {
        let key = format!(
            "{}{}",
            ClientBucket::OAuthInstall.prefix(),
            client.limit_key()
        );
        if let Err(e) = self.shared.forget(&key).await {
            tracing::warn!(error = %e, "rate-limit counter not forgotten");
        }
    }

    /// Counts one request of `client` in `bucket`: `Err(wait)` when its budget for the window is
    /// used up.
    pub async fn check(&self, bucket: ClientBucket, client: ClientAddr) -> Result<(), Duration> {
        let (enabled, max, window) = self.limits();
        if !enabled {
            return Ok(());
        }
        client_addr::reserve_client(&self.shared, bucket, client, max, window).await
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
        // The counters are shared: one delete clears them for every process.
        let shared = self.shared.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { client_addr::clear_all(&shared).await });
        }
    }
}

/// The self-test drives the live limiter with a documentation address.
#[async_trait::async_trait]
impl RateLimitProbe for OAuthRateLimiter {
    fn limits(&self) -> (bool, u32, Duration) {
        OAuthRateLimiter::limits(self)
    }

    async fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        OAuthRateLimiter::check(self, ClientBucket::OAuthInstall, ClientAddr(ip)).await
    }

    async fn forget(&self, ip: IpAddr) {
        OAuthRateLimiter::forget(self, ClientAddr(ip)).await
    }
}

pub(crate) async fn limited(
    state: &AppState,
    extensions: &Extensions,
    bucket: ClientBucket,
) -> Result<(), ApiError> {
    let limiter = &state.tokens()?.oauth_limiter;
    let client = client_addr::client_addr(extensions);
    limiter.check(bucket, client).await.map_err(|wait| {
        metrics::counter!("hk_oauth_rate_limited_total").increment(1);
        client_addr::limited(bucket, wait)
    })
}

async fn install(
    State(state): State<AppState>,
    extensions: Extensions,
    Path(app_id): Path<String>,
) -> Result<Response, ApiError> {
    limited(&state, &extensions, ClientBucket::OAuthInstall).await?;
    let app_id: AppId = params::path("app_id", &app_id)?;
    let url = state.tokens()?.oauth.install_url(app_id).await?;
    metrics::counter!("hk_oauth_installs_started_total").increment(1);
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Redirect::to(url.as_str()),
    )
        .into_response())
}

async fn callback(
    State(state): State<AppState>,
    extensions: Extensions,
    request: RequestId,
    params: Result<Query<CallbackParams>, ApiError>,
) -> Result<Response, ApiError> {
    limited(&state, &extensions, ClientBucket::OAuthCallback).await?;
    let services = state.tokens()?;
    let base = services
        .public_url
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    let target = match params {
        Err(_) => format!("{base}/connect-result?error=invalid_state"),
        Ok(Query(params)) => {
            let done = services
                .oauth
                .complete(params, Some(request.as_str()))
                .await;
            let outcome = match &done.result {
                Ok(id) => {
                    metrics::counter!("hk_oauth_callbacks_total", "outcome" => "connected")
                        .increment(1);
                    Ok(*id)
                }
                Err(e) => {
                    metrics::counter!("hk_oauth_callbacks_total", "outcome" => e.code())
                        .increment(1);
                    tracing::info!(code = e.code(), "install not completed: {e}");
                    Err(e.code())
                }
            };
            match &done.session {
                Some(session) => match session.return_url.as_deref() {
                    Some(url) => {
                        let url = if url.starts_with('/') {
                            format!("{base}{url}")
                        } else {
                            url.to_owned()
                        };
                        outcome_url(&url, &session.customer.external_ref, outcome)
                    }
                    None => outcome_url(
                        &format!("{base}/connect-result"),
                        &session.customer.external_ref,
                        outcome,
                    ),
                },
                None => match outcome {
                    Ok(id) => {
                        format!("{base}/connect-result?status=connected&installation_id={id}")
                    }
                    Err(code) => format!("{base}/connect-result?error={code}"),
                },
            }
        }
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Redirect::to(&target)).into_response())
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

    fn limiter(max: u32, window: Duration) -> OAuthRateLimiter {
        // Never connects: these tests only touch the configuration.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        OAuthRateLimiter::new(SharedRateLimiter::new(pool), max, window)
    }

    #[tokio::test]
    async fn the_limiter_follows_settings_at_once() {
        let limiter = limiter(10, Duration::from_secs(60));
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
        assert_eq!(
            RateLimitProbe::limits(&limiter),
            (true, 2, Duration::from_secs(60))
        );
        values.oauth_rate_limit.enabled = false;
        SettingsApplier::apply(&limiter, &snapshot(values, true));
        let ip = ClientAddr(IpAddr::from([203, 0, 113, 7]));
        for _ in 0..10 {
            assert!(
                limiter.check(ClientBucket::OAuthInstall, ip).await.is_ok(),
                "disabled: nothing is refused (and nothing is counted)"
            );
        }
        assert_eq!(
            RateLimitProbe::limits(&limiter),
            (false, 2, Duration::from_secs(60))
        );
    }

    #[tokio::test]
    async fn limits_are_clamped() {
        let limiter = limiter(0, Duration::ZERO);
        assert_eq!(limiter.limits(), (true, 1, Duration::from_secs(1)));
        limiter.reconfigure(true, 0, Duration::from_millis(10));
        assert_eq!(limiter.limits(), (true, 1, Duration::from_secs(1)));
    }
}
