//! Shared pieces of the token-lifecycle routes (apps, installations, OAuth; issue 4): the
//! services they use and the mapping of application errors to HTTP answers.
//!
//! Errors here carry a precise `code` (`reauthorization_required`, `hubspot_unavailable`, …)
//! because clients act on them: a 409 `reauthorization_required` means "send the user through
//! the install flow", a 503 means "try again shortly". The body has the same shape as every
//! other API error: `{"error": {"code", "message"}}`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hubkeeper_core::{
    AppService, CoreError, NotRefreshable, OAuthService, RefreshFailure, TokenService,
};
use hubkeeper_domain::app::AppError;
use hubkeeper_domain::installation::{InstallationError, InstallationStatus};
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_hubspot::HubSpotError;
use serde_json::json;

use crate::error::ApiError;
use crate::oauth::OAuthRateLimiter;
use crate::state::AppState;

/// The services behind the issue-4 routes, built by the binary's role wiring.
#[derive(Clone)]
pub struct LifecycleServices {
    pub apps: AppService,
    pub tokens: TokenService,
    pub oauth: OAuthService,
    pub oauth_limiter: Arc<OAuthRateLimiter>,
    /// Base URL the dashboard is reached at (`HK_PUBLIC_URL`); `None`: relative redirects.
    pub public_url: Option<String>,
}

pub(crate) fn services(state: &AppState) -> Result<&LifecycleServices, Problem> {
    state.services().lifecycle.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "token services are not configured on this process (HK_MASTER_KEYS is missing)",
        )
    })
}

/// Event metadata for a command issued by `actor` in this request.
pub(crate) fn metadata(actor: Actor, headers: &HeaderMap) -> EventMetadata {
    let meta = EventMetadata::new(actor, chrono::Utc::now());
    match request_id(headers) {
        Some(id) => meta.request_id(id),
        None => meta,
    }
}

pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// An HTTP error answer of the lifecycle routes.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_failed", message)
    }

    fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log for this request id",
        )
    }

    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The answer for an installation in a state that forbids the operation.
    pub fn for_status(id: &str, status: InstallationStatus) -> Self {
        match status {
            InstallationStatus::NeedsReauthorization => Self::conflict(
                "reauthorization_required",
                format!(
                    "installation {id} needs re-authorisation: HubSpot rejected its refresh \
                     token; the user must go through the install flow again"
                ),
            ),
            InstallationStatus::Disconnected => Self::conflict(
                "disconnected",
                format!("installation {id} is disconnected; the user must reconnect"),
            ),
            InstallationStatus::Revoked => Self::conflict(
                "revoked",
                format!("installation {id} was revoked; only a new install restores access"),
            ),
            other => Self::conflict("conflict", format!("installation {id} is {other}")),
        }
    }

    pub fn not_refreshable(id: &str, reason: &NotRefreshable) -> Self {
        match reason {
            NotRefreshable::NeverConnected => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("installation {id} not found"),
            ),
            NotRefreshable::Status(status) => Self::for_status(id, *status),
            NotRefreshable::AppDeleted => Self::conflict(
                "app_deleted",
                "app deleted: tokens kept but cannot be refreshed",
            ),
            NotRefreshable::Shredded => Self::new(
                StatusCode::GONE,
                "tenant_forgotten",
                format!("installation {id} was forgotten; its tokens are unreadable"),
            ),
        }
    }

    pub fn refresh_failed(failure: &RefreshFailure) -> Self {
        let problem = match failure.class {
            "rate_limited" => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "hubspot_rate_limited",
                format!(
                    "HubSpot is rate limiting; try again later ({})",
                    failure.message
                ),
            ),
            "transient" => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "hubspot_unavailable",
                format!(
                    "HubSpot is unavailable; try again later ({})",
                    failure.message
                ),
            ),
            "busy" | "contention" | "database" => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the refresh could not complete right now; try again",
            ),
            "invalid_client" => Self::new(
                StatusCode::BAD_GATEWAY,
                "hubspot_invalid_client",
                format!(
                    "HubSpot rejected the app's client credentials; check the app ({})",
                    failure.message
                ),
            ),
            _ => Self::new(
                StatusCode::BAD_GATEWAY,
                "hubspot_error",
                format!("HubSpot refused the refresh ({})", failure.message),
            ),
        };
        match failure.retry_after {
            Some(wait) => problem.retry_after(wait.as_secs()),
            None if problem.status == StatusCode::SERVICE_UNAVAILABLE => problem.retry_after(5),
            None => problem,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({ "error": { "code": self.code, "message": self.message } })),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<ApiError> for Problem {
    fn from(e: ApiError) -> Self {
        let message = e.to_string();
        match e {
            ApiError::BadRequest(_) => Self::bad_request(message),
            ApiError::Unauthorized(_) => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
            }
            ApiError::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            ApiError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            ApiError::Conflict(_) => Self::conflict("conflict", message),
            ApiError::Unavailable(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            ApiError::Internal(cause) => Self::internal(cause),
            #[allow(unreachable_patterns)]
            _ => Self::internal(message),
        }
    }
}

impl From<JsonRejection> for Problem {
    /// Always 400 (axum would answer 415 or 422 for some cases): one status for "fix your
    /// body", with axum's text naming what is wrong.
    fn from(e: JsonRejection) -> Self {
        Self::bad_request(format!("invalid JSON body: {}", e.body_text()))
    }
}

impl From<QueryRejection> for Problem {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(format!("invalid query: {}", e.body_text()))
    }
}

fn hubspot_problem(e: &HubSpotError) -> Problem {
    match e {
        HubSpotError::RateLimited { retry_after, .. } => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "hubspot_rate_limited",
            format!("HubSpot is rate limiting; try again later ({e})"),
        )
        .retry_after(retry_after.map_or(5, |d| d.as_secs())),
        HubSpotError::Transient { .. } => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "hubspot_unavailable",
            format!("HubSpot is unavailable; try again later ({e})"),
        )
        .retry_after(5),
        HubSpotError::InvalidGrant { .. } => {
            Problem::conflict("reauthorization_required", e.to_string())
        }
        HubSpotError::InvalidClient { .. } => Problem::new(
            StatusCode::BAD_GATEWAY,
            "hubspot_invalid_client",
            format!("HubSpot rejected the app's client credentials; check the app ({e})"),
        ),
        _ => Problem::new(StatusCode::BAD_GATEWAY, "hubspot_error", e.to_string()),
    }
}

impl From<CoreError> for Problem {
    fn from(e: CoreError) -> Self {
        let message = e.to_string();
        match e {
            CoreError::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            CoreError::InvalidInput(_) => Self::validation(message),
            CoreError::App(app) => match app {
                AppError::NotRegistered => Self::new(StatusCode::NOT_FOUND, "not_found", message),
                AppError::AlreadyRegistered(_) => Self::conflict("conflict", message),
                AppError::Deleted => Self::conflict("app_deleted", message),
                AppError::HasActiveInstallations { .. } => {
                    Self::conflict("has_active_installations", message)
                }
                _ => Self::validation(message),
            },
            CoreError::Installation(inst) => match inst {
                InstallationError::NotConnected => {
                    Self::new(StatusCode::NOT_FOUND, "not_found", message)
                }
                InstallationError::Disconnected | InstallationError::NothingToRevoke => {
                    Self::conflict("disconnected", message)
                }
                InstallationError::Revoked => Self::conflict("revoked", message),
                InstallationError::StillConnected => Self::conflict("still_connected", message),
                InstallationError::StaleGeneration { .. } => Self::conflict("conflict", message),
                InstallationError::InvalidReason { .. }
                | InstallationError::InvalidScope { .. }
                | InstallationError::InvalidHubDomain { .. }
                | InstallationError::InvalidInstallerEmail
                | InstallationError::InvalidAppVersion { .. } => Self::validation(message),
                other => Self::internal(other),
            },
            CoreError::ReauthorizationRequired { .. } => {
                Self::conflict("reauthorization_required", message)
            }
            CoreError::Disconnected { .. } => Self::conflict("disconnected", message),
            CoreError::Revoked { .. } => Self::conflict("revoked", message),
            CoreError::AppDeleted { .. } => Self::conflict("app_deleted", message),
            CoreError::Shredded { .. } => Self::new(StatusCode::GONE, "tenant_forgotten", message),
            CoreError::HubSpot(h) => hubspot_problem(&h),
            CoreError::TokenLifetimeTooShort { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "min_validity_unsatisfiable",
                message,
            ),
            CoreError::Busy { .. } | CoreError::Contention(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message).retry_after(1)
            }
            CoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
                tracing::warn!(error = %message, "database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable or overloaded; try again",
                )
                .retry_after(1)
            }
            CoreError::Crypto(_) | CoreError::Store(_) | CoreError::Database(_) => {
                Self::internal(message)
            }
            // The billing, settings and maintenance failures answer as on their own routes.
            e @ (CoreError::Conflict(_)
            | CoreError::Plan(_)
            | CoreError::Subscription(_)
            | CoreError::Settings(_)
            | CoreError::Unavailable(_)) => Problem::from(ApiError::from(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubkeeper_hubspot::ErrorDetails;

    #[test]
    fn client_facing_codes_match_what_clients_act_on() {
        let p = Problem::from(CoreError::ReauthorizationRequired { id: "x".into() });
        assert_eq!(
            (p.status, p.code),
            (StatusCode::CONFLICT, "reauthorization_required")
        );
        let p = Problem::from(CoreError::HubSpot(HubSpotError::Transient {
            cause: hubkeeper_hubspot::TransientCause::Status(503),
            details: ErrorDetails::default(),
        }));
        assert_eq!(
            (p.status, p.code),
            (StatusCode::SERVICE_UNAVAILABLE, "hubspot_unavailable")
        );
        assert!(p.retry_after.is_some());
        let p = Problem::from(CoreError::Disconnected { id: "x".into() });
        assert_eq!((p.status, p.code), (StatusCode::CONFLICT, "disconnected"));
        let p = Problem::from(CoreError::App(AppError::HasActiveInstallations {
            count: 2,
        }));
        assert_eq!(
            (p.status, p.code),
            (StatusCode::CONFLICT, "has_active_installations")
        );
        let p = Problem::from(CoreError::App(AppError::InvalidClientId));
        assert_eq!(
            (p.status, p.code),
            (StatusCode::BAD_REQUEST, "validation_failed")
        );
        let p = Problem::from(CoreError::Store("db down".into()));
        assert_eq!(p.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !p.message.contains("db down"),
            "internal causes are not shown"
        );
    }

    #[test]
    fn transient_refresh_failures_are_503_with_retry_after() {
        let p = Problem::refresh_failed(&RefreshFailure {
            class: "transient",
            message: "HTTP 503".into(),
            retry_after: None,
        });
        assert_eq!(
            (p.status, p.code),
            (StatusCode::SERVICE_UNAVAILABLE, "hubspot_unavailable")
        );
        assert_eq!(p.retry_after, Some(5));
    }
}
