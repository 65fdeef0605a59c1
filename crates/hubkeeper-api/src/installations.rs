//! One installation: details, the token hand-out, and operator commands (refresh, revoke,
//! disconnect, forget), revokes and disconnects scheduled with notice to the app (and their
//! cancel), and which of the app's endpoints hear of them. Lists and filters live with the read
//! models.
//!
//! `GET /v1/installations/{id}/token` is the only response of the whole API that contains a
//! token; it is marked `Cache-Control: no-store`.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hubkeeper_core::tokens::expose_for_response;
use hubkeeper_core::{RefreshOutcome, RefreshTrigger};
use hubkeeper_domain::installation::{RemovalAction, ScheduledRemoval};
use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::notification::NotificationType;
use hubkeeper_domain::InstallationId;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{AppAccess, Caller, Permission};
use crate::error::ApiError;
use crate::extract::Query;
use crate::params::target;
use crate::request::RequestId;
use crate::state::AppState;

/// Largest validity margin a caller may ask for (HubSpot tokens live 30 minutes).
const MAX_MIN_VALIDITY_SECS: u64 = 3600;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/installations/{id}", get(show))
        .route("/v1/installations/{id}/token", get(token))
        .route("/v1/installations/{id}/refresh", post(refresh))
        .route("/v1/installations/{id}/revoke", post(revoke))
        .route("/v1/installations/{id}/disconnect", post(disconnect))
        .route("/v1/installations/{id}/forget", post(forget))
        .route(
            "/v1/installations/{id}/scheduled-removal/cancel",
            post(cancel_scheduled_removal),
        )
        .route(
            "/v1/installations/{id}/notification-targets",
            get(notification_targets),
        )
}

/// The types an app hears of around a revoke or disconnect, in the order they go out.
const REMOVAL_NOTIFICATIONS: [NotificationType; 3] = [
    NotificationType::InstallationRemovalScheduled,
    NotificationType::InstallationRevoked,
    NotificationType::InstallationDisconnected,
];

/// The body of revoke and disconnect: the reason, and optionally the notice to give the app.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovalBody {
    reason: Option<String>,
    /// Seconds from now until the removal is carried out; the app is notified at once
    /// (`installation.removal_scheduled`). Absent: the removal is immediate.
    #[serde(default)]
    notice_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct TokenParams {
    /// Seconds the token must stay valid; the configured default when absent.
    #[serde(default)]
    min_validity_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: Option<String>,
}

/// An operator command on one installation (revoke, disconnect, forget): permitted, aimed and
/// justified, with the metadata its events will carry.
struct Justified {
    id: InstallationId,
    reason: String,
    metadata: EventMetadata,
}

impl Justified {
    fn new(
        caller: &Caller,
        permission: Permission,
        request: &RequestId,
        raw_id: &str,
        body: Result<Json<ReasonBody>, JsonRejection>,
    ) -> Result<Self, ApiError> {
        let id = target(caller, permission, raw_id)?;
        Ok(Self {
            id,
            reason: reason(body)?,
            metadata: request.metadata(caller.actor()),
        })
    }
}

/// The mandatory reason of a state-changing command.
fn reason(body: Result<Json<ReasonBody>, JsonRejection>) -> Result<String, ApiError> {
    let Json(body) = match body {
        // No body at all: the reason is what is missing.
        Err(JsonRejection::MissingJsonContentType(_)) => {
            return Err(ApiError::bad_request(
                "a reason is required: send {\"reason\": \"…\"} as JSON",
            ))
        }
        other => other?,
    };
    match body.reason.map(|r| r.trim().to_owned()) {
        Some(r) if !r.is_empty() => Ok(r),
        _ => Err(ApiError::bad_request(
            "a reason is required: send {\"reason\": \"…\"}",
        )),
    }
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id: InstallationId = target(&caller, Permission::Read, &id)?;
    Ok(Json(state.tokens()?.tokens.details(&id).await?))
}

async fn token(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    Query(params): Query<TokenParams>,
) -> Result<impl IntoResponse, ApiError> {
    let id: InstallationId = target(&caller, Permission::UseTokens, &id)?;
    caller
        .require_installation(&state, &id, AppAccess::ReceiveTokens)
        .await?;
    let tokens = &state.tokens()?.tokens;
    let min_validity = match params.min_validity_secs {
        Some(secs) if secs > MAX_MIN_VALIDITY_SECS => {
            return Err(ApiError::bad_request(format!(
                "min_validity_secs must be at most {MAX_MIN_VALIDITY_SECS}"
            )))
        }
        Some(secs) => Duration::from_secs(secs),
        None => tokens.config().default_min_validity,
    };
    let handed = tokens
        .get_token(&id, min_validity, Some(request.as_str()))
        .await?;
    let body = json!({
        "access_token": expose_for_response(&handed),
        "expires_at": handed.expires_at,
        "hub_id": handed.hub_id,
        "scopes": handed.scopes,
    });
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    ))
}

async fn refresh(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id: InstallationId = target(&caller, Permission::OperateInstallations, &id)?;
    let trigger = RefreshTrigger::manual(caller.actor(), Some(request.as_str().to_owned()));
    let outcome = state.tokens()?.tokens.refresh_now(&id, trigger).await;
    match outcome {
        RefreshOutcome::Refreshed {
            expires_at,
            generation,
        } => Ok(Json(json!({
            "installation_id": id,
            "refreshed": true,
            "expires_at": expires_at,
            "generation": generation,
        }))),
        RefreshOutcome::StillFresh { expires_at } => Ok(Json(json!({
            "installation_id": id,
            "refreshed": false,
            "expires_at": expires_at,
        }))),
        RefreshOutcome::NotRefreshable(reason) => {
            Err(ApiError::not_refreshable(&id.to_string(), &reason))
        }
        RefreshOutcome::ReauthRequired => Err(ApiError::for_status(
            &id.to_string(),
            hubkeeper_domain::installation::InstallationStatus::NeedsReauthorization,
        )),
        RefreshOutcome::Failed(failure) => Err(ApiError::refresh_failed(&failure)),
    }
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    body: Result<Json<RemovalBody>, JsonRejection>,
) -> Result<axum::response::Response, ApiError> {
    let (command, notice) = removal(&caller, &request, &id, body)?;
    let tokens = &state.tokens()?.tokens;
    if let Some(notice) = notice {
        return schedule(&state, command, RemovalAction::Revoke, notice).await;
    }
    tokens
        .revoke(&command.id, &command.reason, command.metadata)
        .await?;
    Ok(Json(json!({ "installation_id": command.id, "status": "revoked" })).into_response())
}

async fn disconnect(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    body: Result<Json<RemovalBody>, JsonRejection>,
) -> Result<axum::response::Response, ApiError> {
    let (command, notice) = removal(&caller, &request, &id, body)?;
    let tokens = &state.tokens()?.tokens;
    if let Some(notice) = notice {
        return schedule(&state, command, RemovalAction::Disconnect, notice).await;
    }
    tokens
        .disconnect(&command.id, &command.reason, command.metadata)
        .await?;
    let status = tokens.details(&command.id).await?.status;
    Ok(Json(json!({ "installation_id": command.id, "status": status })).into_response())
}

/// A revoke or disconnect request: permitted, aimed and justified, and its notice if any.
fn removal(
    caller: &Caller,
    request: &RequestId,
    raw_id: &str,
    body: Result<Json<RemovalBody>, JsonRejection>,
) -> Result<(Justified, Option<Duration>), ApiError> {
    let id = target(caller, Permission::OperateInstallations, raw_id)?;
    let (reason_body, notice_secs) = match body {
        Ok(Json(RemovalBody {
            reason,
            notice_secs,
        })) => (Ok(Json(ReasonBody { reason })), notice_secs),
        Err(e) => (Err(e), None),
    };
    let notice = match notice_secs {
        None => None,
        Some(0) => {
            return Err(ApiError::invalid_parameter(
                "notice_secs",
                "must be positive; leave it out to act now",
            ))
        }
        Some(secs) => Some(Duration::from_secs(secs)),
    };
    Ok((
        Justified {
            id,
            reason: reason(reason_body)?,
            metadata: request.metadata(caller.actor()),
        },
        notice,
    ))
}

/// Schedules the removal: 202 with what was scheduled (the app is being notified).
async fn schedule(
    state: &AppState,
    command: Justified,
    action: RemovalAction,
    notice: Duration,
) -> Result<axum::response::Response, ApiError> {
    let tokens = &state.tokens()?.tokens;
    let min = tokens.config().removal_min_notice;
    if notice < min {
        return Err(ApiError::invalid_parameter(
            "notice_secs",
            format!(
                "must be at least {} seconds (HK_REMOVAL_MIN_NOTICE_SECS)",
                min.as_secs()
            ),
        ));
    }
    let max = Duration::from_secs(
        hubkeeper_domain::installation::MAX_REMOVAL_NOTICE_DAYS as u64 * 86_400,
    );
    if notice > max {
        return Err(ApiError::invalid_parameter(
            "notice_secs",
            format!("must be at most {} seconds (30 days)", max.as_secs()),
        ));
    }
    let scheduled = tokens
        .schedule_removal(
            &command.id,
            action,
            &command.reason,
            notice,
            command.metadata,
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "installation_id": command.id,
            "status": "removal_scheduled",
            "scheduled_removal": scheduled_view(&scheduled),
        })),
    )
        .into_response())
}

fn scheduled_view(scheduled: &ScheduledRemoval) -> serde_json::Value {
    json!({
        "action": scheduled.action,
        "reason": scheduled.reason,
        "effective_at": scheduled.effective_at,
        "scheduled_by": scheduled.scheduled_by,
        "scheduled_at": scheduled.scheduled_at,
    })
}

async fn cancel_scheduled_removal(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    body: Result<Json<CancelBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id: InstallationId = target(&caller, Permission::OperateInstallations, &id)?;
    let reason = match body {
        Ok(Json(body)) => body.reason,
        // No body: a cancel needs no reason.
        Err(JsonRejection::MissingJsonContentType(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let cancelled = state
        .tokens()?
        .tokens
        .cancel_scheduled_removal(&id, reason, request.metadata(caller.actor()))
        .await?;
    Ok(Json(json!({
        "installation_id": id,
        "cancelled": scheduled_view(&cancelled),
    })))
}

/// Which enabled endpoints of the installation's app receive the notifications of a revoke or
/// disconnect (scheduled or not): what the dashboard's dialogs say before the operator
/// confirms.
async fn notification_targets(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id: InstallationId = target(&caller, Permission::Read, &id)?;
    let services = state.tokens()?;
    let details = services.tokens.details(&id).await?;
    let mut targets = Vec::with_capacity(REMOVAL_NOTIFICATIONS.len());
    for kind in REMOVAL_NOTIFICATIONS {
        let endpoints = services
            .notifications
            .receivers(details.app_id, kind)
            .await?;
        targets.push(json!({
            "type": kind.as_str(),
            "notified": !endpoints.is_empty(),
            "endpoints": endpoints
                .iter()
                .map(|e| json!({ "endpoint_id": e.endpoint_id, "url": e.url }))
                .collect::<Vec<_>>(),
        }));
    }
    Ok(Json(json!({
        "installation_id": id,
        "app_id": details.app_id,
        "targets": targets,
    })))
}

async fn forget(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let command = Justified::new(&caller, Permission::Administer, &request, &id, body)?;
    let outcome = state
        .tokens()?
        .tokens
        .forget_tenant(&command.id, &command.reason, command.metadata)
        .await?;
    Ok(Json(json!({
        "installation_id": command.id,
        "forgotten": true,
        "shredded": outcome.shredded,
    })))
}
