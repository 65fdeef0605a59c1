//! One installation: details, the token hand-out, and operator commands (refresh, revoke,
//! disconnect, forget). Lists and filters live with the read models.
//!
//! `GET /v1/installations/{id}/token` is the only response of the whole API that contains a
//! token; it is marked `Cache-Control: no-store`.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hubkeeper_core::tokens::expose_for_response;
use hubkeeper_core::{RefreshOutcome, RefreshTrigger};
use hubkeeper_domain::metadata::EventMetadata;
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
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let command = Justified::new(
        &caller,
        Permission::OperateInstallations,
        &request,
        &id,
        body,
    )?;
    let tokens = &state.tokens()?.tokens;
    tokens
        .revoke(&command.id, &command.reason, command.metadata)
        .await?;
    Ok(Json(
        json!({ "installation_id": command.id, "status": "revoked" }),
    ))
}

async fn disconnect(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let command = Justified::new(
        &caller,
        Permission::OperateInstallations,
        &request,
        &id,
        body,
    )?;
    let tokens = &state.tokens()?.tokens;
    tokens
        .disconnect(&command.id, &command.reason, command.metadata)
        .await?;
    let status = tokens.details(&command.id).await?.status;
    Ok(Json(
        json!({ "installation_id": command.id, "status": status }),
    ))
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
