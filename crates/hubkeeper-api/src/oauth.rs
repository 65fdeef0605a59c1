//! The public install flow: `GET /oauth/{app_id}/install` (or a connect session's
//! `GET /connect/{session_id}`, see [`crate::connect`]) sends the browser to HubSpot's consent
//! page, `GET /oauth/callback` finishes the install and sends the browser to the session's
//! return URL (`installation_id`, `external_ref`, `status=connected`, or `error=<code>`), or,
//! without one, to the public result page `/connect-result` (never the dashboard's login).
//!
//! Both routes are public (a customer's browser calls them) and therefore rate limited per
//! client IP, so nobody can burn HubSpot code exchanges or fill the state table from one host.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, Extensions, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use hubkeeper_core::connect::outcome_url;
use hubkeeper_core::selftest::RateLimitProbe;
use hubkeeper_core::settings::{SettingsApplier, SettingsSnapshot};
use hubkeeper_core::CallbackParams;
use hubkeeper_domain::AppId;

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

/// Fixed-window request counter per client IP. Its limits can change at run time (the
/// settings page applies them through [`OAuthRateLimiter::reconfigure`]).
pub struct OAuthRateLimiter {
    limits: Mutex<Limits>,
    hits: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    enabled: bool,
    max: u32,
    window: Duration,
}

impl OAuthRateLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            limits: Mutex::new(Limits {
                enabled: true,
                max: max.max(1),
                window: window.max(Duration::from_secs(1)),
            }),
            hits: Mutex::new(HashMap::new()),
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

    /// Forgets every counter.
    pub fn clear(&self) {
        self.hits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Forgets one address's counter.
    pub fn forget(&self, ip: IpAddr) {
        self.hits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&ip);
    }

    /// `Err(wait)` when `ip` has used up its budget for the current window.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    /// [`OAuthRateLimiter::check`] at a given instant (tests move time instead of sleeping).
    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let (enabled, max, window) = self.limits();
        if !enabled {
            return Ok(());
        }
        let mut hits = self.hits.lock().unwrap_or_else(PoisonError::into_inner);
        if hits.len() > 100_000 {
            hits.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = hits.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        if entry.1 >= max {
            return Err(window.saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
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

fn client_ip(extensions: &Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

pub(crate) fn limited(state: &AppState, extensions: &Extensions) -> Result<(), ApiError> {
    let limiter = &state.tokens()?.oauth_limiter;
    let ip = client_ip(extensions);
    limiter.check(ip).map_err(|wait| {
        metrics::counter!("hk_oauth_rate_limited_total").increment(1);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many install requests from this address; try again in {} s",
                wait.as_secs().max(1)
            ),
        )
        .retry_after(wait.as_secs())
    })
}

async fn install(
    State(state): State<AppState>,
    extensions: Extensions,
    Path(app_id): Path<String>,
) -> Result<Response, ApiError> {
    limited(&state, &extensions)?;
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
    limited(&state, &extensions)?;
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
    fn the_limiter_allows_max_per_window_per_ip() {
        let limiter = OAuthRateLimiter::new(3, Duration::from_secs(60));
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
        }
        let wait = limiter.check(a).unwrap_err();
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(55));
        assert!(limiter.check(b).is_ok(), "other addresses are not affected");
    }

    #[test]
    fn the_limiter_can_be_reconfigured_disabled_and_cleared() {
        let limiter = OAuthRateLimiter::new(1, Duration::from_secs(60));
        let a = IpAddr::from([10, 0, 0, 1]);
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(a).is_err());
        limiter.reconfigure(false, 1, Duration::from_secs(60));
        assert!(limiter.check(a).is_ok(), "disabled");
        limiter.reconfigure(true, 1, Duration::from_secs(60));
        assert!(limiter.check(a).is_err());
        limiter.forget(a);
        assert!(limiter.check(a).is_ok());
        limiter.clear();
        assert!(limiter.check(a).is_ok());
        assert_eq!(limiter.limits(), (true, 1, Duration::from_secs(60)));
    }

    #[test]
    fn the_limiter_recovers_after_the_window() {
        let limiter = OAuthRateLimiter::new(1, Duration::from_secs(1));
        let a = IpAddr::from([10, 0, 0, 1]);
        let start = Instant::now();
        assert!(limiter.check_at(a, start).is_ok());
        let refused = limiter.check_at(a, start + Duration::from_millis(999));
        assert_eq!(
            refused,
            Err(Duration::from_millis(1)),
            "1 ms left in the window"
        );
        assert!(limiter.check_at(a, start + Duration::from_secs(1)).is_ok());
        assert!(limiter.check_at(a, start + Duration::from_secs(1)).is_err());
    }
}
