//! The one error type of the HTTP layer and its one mapping to a status and a JSON body:
//!
//! ```json
//! {"error": {"code": "invalid_parameter", "parameter": "limit", "message": "…"}}
//! ```
//!
//! `code` is stable and clients act on it (a 409 `reauthorization_required` means "send the user
//! through the install flow", a 503 means "try again shortly", with `Retry-After`); `parameter`
//! names the query or path parameter at fault; `reason` refines a few codes (the class of a
//! refused webhook signature). Client errors name the problem; internal errors are logged with
//! their cause and answered with a generic message, so nothing internal (SQL, hostnames,
//! secrets) leaks.
//!
//! Every failure of the services below maps here, once: [`CoreError`], the read models'
//! [`QueryError`], the database, and the framework's own rejections.

use std::fmt;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hubkeeper_core::{CoreError, NotRefreshable, RefreshFailure};
use hubkeeper_domain::access::ApiKeyError;
use hubkeeper_domain::app::AppError;
use hubkeeper_domain::installation::{InstallationError, InstallationStatus};
use hubkeeper_domain::notification::EndpointError;
use hubkeeper_domain::operations::OperationError;
use hubkeeper_domain::plan::PlanError;
use hubkeeper_domain::subscription::SubscriptionError;
use hubkeeper_hubspot::HubSpotError;
use hubkeeper_projections::queries::{InvalidParameter, QueryError};
use serde_json::json;

/// An HTTP error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Rarely set, so boxed: errors travel in every `Result` of the layer.
    details: Option<Box<Details>>,
}

#[derive(Debug, Default)]
struct Details {
    parameter: Option<String>,
    reason: Option<&'static str>,
    retry_after: Option<u64>,
    /// What went wrong inside, for the log only (never in the answer).
    cause: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    fn details(&mut self) -> &mut Details {
        self.details.get_or_insert_with(Box::default)
    }

    fn detail<T>(&self, f: impl FnOnce(&Details) -> Option<T>) -> Option<T> {
        self.details.as_deref().and_then(f)
    }

    /// A malformed request (body, header, query string syntax).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A query or path parameter that is invalid or empty, named in the answer.
    pub fn invalid_parameter(parameter: impl Into<String>, message: impl Into<String>) -> Self {
        let parameter = parameter.into();
        let message = format!("{parameter}: {}", message.into());
        let mut error = Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", message);
        error.details().parameter = Some(parameter);
        error
    }

    /// A well-formed request that breaks a rule of the domain.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_failed", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// A dependency (NATS, the database, pg_dump) failed; retrying may help.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// This process does not serve the route (e.g. no master keys for token routes).
    pub fn not_configured(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_configured", message)
    }

    /// An unexpected failure: `cause` is logged under the request id, never answered.
    pub fn internal(cause: impl fmt::Display) -> Self {
        let mut error = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log for this request id",
        );
        error.details().cause = Some(cause.to_string());
        error
    }

    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.details().retry_after = Some(secs.max(1));
        self
    }

    #[must_use]
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.details().reason = Some(reason);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn parameter(&self) -> Option<&str> {
        self.details.as_deref().and_then(|d| d.parameter.as_deref())
    }

    pub fn retry_after_secs(&self) -> Option<u64> {
        self.detail(|d| d.retry_after)
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

    /// Why an installation cannot be refreshed, as an answer.
    pub fn not_refreshable(id: &str, reason: &NotRefreshable) -> Self {
        match reason {
            NotRefreshable::NeverConnected => {
                Self::not_found(format!("installation {id} not found"))
            }
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
            NotRefreshable::AppCredentialsRejected(_) => Self::new(
                StatusCode::BAD_GATEWAY,
                "app_credentials_rejected",
                reason.to_string(),
            ),
        }
    }

    /// A refresh that did not succeed, as an answer.
    pub fn refresh_failed(failure: &RefreshFailure) -> Self {
        let error = match failure.class {
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
            Some(wait) => error.retry_after(wait.as_secs()),
            None if error.status == StatusCode::SERVICE_UNAVAILABLE => error.retry_after(5),
            None => error,
        }
    }

    /// An answer whose status says all there is to say (used for responses the framework made
    /// without a JSON body).
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => "timeout",
            s if s.is_server_error() => "internal",
            _ => "bad_request",
        };
        Self::new(status, code, message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let details = self.details.map(|d| *d).unwrap_or_default();
        if let Some(cause) = &details.cause {
            tracing::error!(%cause, code = self.code, "request failed");
        }
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(parameter) = details.parameter {
            error["parameter"] = json!(parameter);
        }
        if let Some(reason) = details.reason {
            error["reason"] = json!(reason);
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(secs) = details.retry_after {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::unavailable("the database is unavailable or overloaded; try again")
                    .retry_after(1)
            }
            other => Self::internal(format!("database: {other}")),
        }
    }
}

impl From<InvalidParameter> for ApiError {
    fn from(p: InvalidParameter) -> Self {
        Self::invalid_parameter(p.parameter, p.message)
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Invalid(p) => p.into(),
            QueryError::Database(e) => e.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    /// 400 for every body that cannot be read as the expected JSON (axum would answer 415 or
    /// 422 for some): one status for "fix your body", with axum's text naming what is wrong.
    /// A body over the limit stays a 413.
    fn from(e: JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::from_status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            );
        }
        Self::bad_request(format!("invalid JSON body: {}", e.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(format!("invalid query string: {}", e.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request(format!("invalid path: {}", e.body_text()))
    }
}

fn hubspot_error(e: &HubSpotError) -> ApiError {
    match e {
        HubSpotError::RateLimited { retry_after, .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "hubspot_rate_limited",
            format!("HubSpot is rate limiting; try again later ({e})"),
        )
        .retry_after(retry_after.map_or(5, |d| d.as_secs())),
        HubSpotError::Transient { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "hubspot_unavailable",
            format!("HubSpot is unavailable; try again later ({e})"),
        )
        .retry_after(5),
        HubSpotError::InvalidGrant { .. } => {
            ApiError::conflict("reauthorization_required", e.to_string())
        }
        HubSpotError::InvalidClient { .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "hubspot_invalid_client",
            format!("HubSpot rejected the app's client credentials; check the app ({e})"),
        ),
        _ => ApiError::new(StatusCode::BAD_GATEWAY, "hubspot_error", e.to_string()),
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let message = e.to_string();
        match e {
            CoreError::NotFound { .. } | CoreError::Plan(PlanError::NotFound) => {
                Self::not_found(message)
            }
            CoreError::InvalidInput(_)
            | CoreError::Settings(_)
            | CoreError::Subscription(SubscriptionError::InvalidPeriod(_)) => {
                Self::validation(message)
            }
            CoreError::Conflict(_)
            | CoreError::Plan(
                PlanError::AlreadyExists(_)
                | PlanError::Deleted
                | PlanError::Archived
                | PlanError::HasSubscribers { .. },
            )
            | CoreError::Subscription(_) => Self::conflict("conflict", message),
            CoreError::Plan(_) => Self::validation(message),
            CoreError::Unavailable(_) => Self::unavailable(message),
            CoreError::App(app) => match app {
                AppError::NotRegistered => Self::not_found(message),
                AppError::AlreadyRegistered(_) => Self::conflict("conflict", message),
                AppError::Deleted => Self::conflict("app_deleted", message),
                AppError::HasActiveInstallations { .. } => {
                    Self::conflict("has_active_installations", message)
                }
                AppError::RefreshesNotParked => Self::conflict("not_parked", message),
                AppError::LegacySignaturesNotAllowed { .. } => {
                    // Names the field that would have allowed the request.
                    let mut error = Self::validation(message);
                    error.details().parameter = Some("allow_legacy_signatures".into());
                    error
                }
                _ => Self::validation(message),
            },
            CoreError::Installation(inst) => match inst {
                InstallationError::NotConnected => Self::not_found(message),
                InstallationError::Disconnected | InstallationError::NothingToRevoke => {
                    Self::conflict("disconnected", message)
                }
                InstallationError::Revoked => Self::conflict("revoked", message),
                InstallationError::StillConnected => Self::conflict("still_connected", message),
                InstallationError::StaleGeneration { .. } => Self::conflict("conflict", message),
                InstallationError::RemovalAlreadyScheduled { .. } => {
                    Self::conflict("removal_already_scheduled", message)
                }
                InstallationError::NoRemovalScheduled => Self::not_found(message),
                InstallationError::InvalidRemovalTime { .. } => {
                    let mut error = Self::validation(message);
                    error.details().parameter = Some("notice_secs".into());
                    error
                }
                InstallationError::InvalidReason { .. }
                | InstallationError::InvalidActor { .. }
                | InstallationError::InvalidScope { .. }
                | InstallationError::InvalidHubDomain { .. }
                | InstallationError::InvalidInstallerEmail
                | InstallationError::InvalidAppVersion { .. }
                | InstallationError::InvalidCustomer(_) => Self::validation(message),
                other => Self::internal(other),
            },
            CoreError::ApiKey(key) => match key {
                ApiKeyError::AlreadyCreated(_) => Self::conflict("conflict", message),
                ApiKeyError::AlreadyRevoked(_) | ApiKeyError::Revoked(_) => {
                    Self::conflict("revoked", message)
                }
                _ => Self::validation(message),
            },
            CoreError::Operation(operation) => match operation {
                OperationError::AlreadyRecorded => Self::conflict("conflict", message),
                _ => Self::validation(message),
            },
            CoreError::Endpoint(endpoint) => match endpoint {
                EndpointError::UnknownEndpoint(_) => Self::not_found(message),
                EndpointError::AlreadyExists(_) | EndpointError::TooManyEndpoints => {
                    Self::conflict("conflict", message)
                }
                _ => Self::validation(message),
            },
            CoreError::ReauthorizationRequired { .. } => {
                Self::conflict("reauthorization_required", message)
            }
            CoreError::Disconnected { .. } => Self::conflict("disconnected", message),
            CoreError::Revoked { .. } => Self::conflict("revoked", message),
            CoreError::AppDeleted { .. } => Self::conflict("app_deleted", message),
            CoreError::ConnectSession(refusal) => {
                let status = match refusal {
                    hubkeeper_core::SessionRefusal::Unknown => StatusCode::NOT_FOUND,
                    hubkeeper_core::SessionRefusal::Expired => StatusCode::GONE,
                    hubkeeper_core::SessionRefusal::AlreadyUsed => StatusCode::CONFLICT,
                };
                Self::new(status, refusal.code(), message)
            }
            CoreError::Shredded { .. } => Self::new(StatusCode::GONE, "tenant_forgotten", message),
            CoreError::HubSpot(h) => hubspot_error(&h),
            CoreError::AppCredentialsRejected { .. } => {
                Self::new(StatusCode::BAD_GATEWAY, "app_credentials_rejected", message)
            }
            CoreError::RecentRefreshFailure {
                retry_after_secs, ..
            } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "refresh_recently_failed",
                message,
            )
            .retry_after(retry_after_secs),
            CoreError::TokenLifetimeTooShort { .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "min_validity_unsatisfiable",
                message,
            ),
            CoreError::Busy { .. } | CoreError::Contention(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message).retry_after(1)
            }
            CoreError::Database(e) => e.into(),
            CoreError::Crypto(_) | CoreError::Store(_) => Self::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubkeeper_hubspot::ErrorDetails;

    #[test]
    fn client_facing_codes_match_what_clients_act_on() {
        let e = ApiError::from(CoreError::ReauthorizationRequired { id: "x".into() });
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::CONFLICT, "reauthorization_required")
        );
        let e = ApiError::from(CoreError::HubSpot(HubSpotError::Transient {
            cause: hubkeeper_hubspot::TransientCause::Status(503),
            retry_after: None,
            details: ErrorDetails::default(),
        }));
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "hubspot_unavailable")
        );
        assert!(e.retry_after_secs().is_some());
        let e = ApiError::from(CoreError::Disconnected { id: "x".into() });
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::CONFLICT, "disconnected")
        );
        let e = ApiError::from(CoreError::App(AppError::HasActiveInstallations {
            count: 2,
        }));
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::CONFLICT, "has_active_installations")
        );
        let e = ApiError::from(CoreError::App(AppError::InvalidClientId));
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::BAD_REQUEST, "validation_failed")
        );
        let e = ApiError::from(CoreError::Store("db down".into()));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !e.message().contains("db down"),
            "internal causes are not shown"
        );
    }

    #[test]
    fn the_same_failure_gets_the_same_code_from_every_service() {
        // A rule broken in the input: the token services and the billing services agree.
        let tokens = ApiError::from(CoreError::InvalidInput("bad".into()));
        let plans = ApiError::from(CoreError::Plan(PlanError::UnknownCurrency("XXX".into())));
        assert_eq!(
            (tokens.status(), tokens.code()),
            (plans.status(), plans.code())
        );
        // Lost races: 503 busy with Retry-After.
        let busy = ApiError::from(CoreError::Contention("plan"));
        assert_eq!(
            (busy.status(), busy.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "busy")
        );
        assert!(busy.retry_after_secs().is_some());
        // Missing resources.
        let app = ApiError::from(CoreError::NotFound {
            what: "app",
            id: "x".into(),
        });
        let plan = ApiError::from(CoreError::Plan(PlanError::NotFound));
        assert_eq!((app.status(), app.code()), (plan.status(), plan.code()));
        // A database that is away is a 503 with Retry-After wherever it surfaces.
        let direct = ApiError::from(sqlx::Error::PoolTimedOut);
        let core = ApiError::from(CoreError::Database(sqlx::Error::PoolTimedOut));
        let query = ApiError::from(QueryError::Database(sqlx::Error::PoolTimedOut));
        for e in [&direct, &core, &query] {
            assert_eq!(
                (e.status(), e.code()),
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            );
        }
    }

    #[test]
    fn domain_refusals_map_to_client_errors() {
        let conflict = ApiError::from(CoreError::Plan(PlanError::HasSubscribers {
            count: 3,
            action: "delete",
        }));
        assert_eq!(conflict.status(), StatusCode::CONFLICT);
        assert!(
            conflict.message().contains("3 subscriber(s)"),
            "{conflict:?}"
        );
        let bad = ApiError::from(CoreError::Plan(PlanError::UnknownCurrency("XXX".into())));
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn transient_refresh_failures_are_503_with_retry_after() {
        let e = ApiError::refresh_failed(&RefreshFailure {
            class: "transient",
            message: "HTTP 503".into(),
            retry_after: None,
        });
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "hubspot_unavailable")
        );
        assert_eq!(e.retry_after_secs(), Some(5));
    }

    #[tokio::test]
    async fn the_body_is_the_documented_shape() {
        let response = ApiError::invalid_parameter("limit", "expected an integer").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_parameter");
        assert_eq!(body["error"]["parameter"], "limit");
        assert_eq!(body["error"]["message"], "limit: expected an integer");
    }
}
