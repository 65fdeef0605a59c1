//! App commands and details: `POST /v1/apps`, `GET|PATCH|DELETE /v1/apps/{id}`,
//! `POST /v1/apps/{id}/rotate-secret`, `POST /v1/apps/{id}/resume-refreshes`.
//!
//! The client secret is accepted on creation and rotation only and never returned: it is sealed
//! before the command exists, and no response type has a field for it. (Lists of apps live with
//! the read models.)

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hubkeeper_core::{AppChanges, NewApp};
use hubkeeper_domain::app::{Environment, OAuthGeneration, SignatureVersion};
use hubkeeper_domain::AppId;
use secrecy::SecretString;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::extract::{JsonBody, Query};
use crate::params::{target, value};
use crate::request::RequestId;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/apps", post(create))
        .route("/v1/apps/{id}", get(show).patch(update).delete(remove))
        .route("/v1/apps/{id}/rotate-secret", post(rotate_secret))
        .route("/v1/apps/{id}/resume-refreshes", post(resume_refreshes))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateSecret {
    client_secret: SecretString,
    #[serde(default)]
    overlap_secs: Option<u64>,
}

async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RotateSecret>,
) -> Result<impl IntoResponse, ApiError> {
    let id: AppId = target(&caller, Permission::Administer, &id)?;
    let view = state
        .tokens()?
        .apps
        .rotate_secret(
            id,
            body.client_secret,
            body.overlap_secs,
            &request.metadata(caller.actor()),
        )
        .await?;
    Ok(Json(view))
}

async fn resume_refreshes(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id: AppId = target(&caller, Permission::Administer, &id)?;
    let view = state
        .tokens()?
        .apps
        .resume_refreshes(id, &request.metadata(caller.actor()))
        .await?;
    Ok(Json(view))
}

/// Scopes as one space-separated string or as a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scopes {
    Text(String),
    List(Vec<String>),
}

impl Scopes {
    fn joined(self) -> String {
        match self {
            Scopes::Text(text) => text,
            Scopes::List(list) => list.join(" "),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApp {
    label: String,
    #[serde(default)]
    description: Option<String>,
    environment: String,
    client_id: String,
    client_secret: SecretString,
    redirect_uri: String,
    scopes: Scopes,
    #[serde(default)]
    optional_scopes: Option<Scopes>,
    #[serde(default)]
    oauth_generation: Option<String>,
    #[serde(default)]
    signature_versions: Option<Vec<String>>,
    #[serde(default)]
    allow_legacy_signatures: bool,
    #[serde(default)]
    return_urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchApp {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    scopes: Option<Scopes>,
    #[serde(default)]
    optional_scopes: Option<Scopes>,
    #[serde(default)]
    oauth_generation: Option<String>,
    #[serde(default)]
    signature_versions: Option<Vec<String>>,
    #[serde(default)]
    allow_legacy_signatures: bool,
    #[serde(default)]
    return_urls: Option<Vec<String>>,
    #[serde(default)]
    client_id: Option<String>,
    /// Only its presence matters (always refused); the value is skipped unread.
    #[serde(default)]
    client_secret: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct DeleteParams {
    #[serde(default)]
    force: bool,
}

fn parse_versions(raw: Option<Vec<String>>) -> Result<Option<Vec<SignatureVersion>>, ApiError> {
    raw.map(|list| list.iter().map(|v| value(v)).collect())
        .transpose()
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    JsonBody(body): JsonBody<CreateApp>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Administer)?;
    let services = state.tokens()?;
    let new = NewApp {
        label: body.label,
        description: body.description,
        environment: value::<Environment>(&body.environment)?,
        client_id: body.client_id,
        client_secret: body.client_secret,
        redirect_uri: body.redirect_uri,
        scopes: body.scopes.joined(),
        optional_scopes: body.optional_scopes.map(Scopes::joined).unwrap_or_default(),
        oauth_generation: body
            .oauth_generation
            .as_deref()
            .map(value::<OAuthGeneration>)
            .transpose()?,
        signature_versions: parse_versions(body.signature_versions)?,
        allow_legacy_signatures: body.allow_legacy_signatures,
        return_urls: body.return_urls.unwrap_or_default(),
    };
    let view = services
        .apps
        .register(new, &request.metadata(caller.actor()))
        .await?;
    let location = format!("/v1/apps/{}", view.app_id);
    let warnings: Vec<String> =
        hubkeeper_domain::app::legacy_signature_warning(&view.signature_versions)
            .into_iter()
            .collect();
    let mut answer = serde_json::to_value(&view).map_err(ApiError::internal)?;
    answer["warnings"] = json!(warnings);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(answer),
    ))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id: AppId = target(&caller, Permission::Read, &id)?;
    let view = state.tokens()?.apps.get(id).await?;
    Ok(Json(view))
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PatchApp>,
) -> Result<impl IntoResponse, ApiError> {
    let id: AppId = target(&caller, Permission::Administer, &id)?;
    let changes = AppChanges {
        label: body.label,
        description: body.description,
        environment: body
            .environment
            .as_deref()
            .map(value::<Environment>)
            .transpose()?,
        redirect_uri: body.redirect_uri,
        scopes: body.scopes.map(Scopes::joined),
        optional_scopes: body.optional_scopes.map(Scopes::joined),
        oauth_generation: body
            .oauth_generation
            .as_deref()
            .map(value::<OAuthGeneration>)
            .transpose()?,
        signature_versions: parse_versions(body.signature_versions)?,
        allow_legacy_signatures: body.allow_legacy_signatures,
        return_urls: body.return_urls,
        client_id: body.client_id,
        client_secret_supplied: body.client_secret.is_some(),
    };
    let (app, warnings) = state
        .tokens()?
        .apps
        .update(id, changes, &request.metadata(caller.actor()))
        .await?;
    Ok(Json(json!({ "app": app, "warnings": warnings })))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    Query(params): Query<DeleteParams>,
) -> Result<impl IntoResponse, ApiError> {
    let id: AppId = target(&caller, Permission::Administer, &id)?;
    let deletion = state
        .tokens()?
        .apps
        .delete(id, params.force, &request.metadata(caller.actor()))
        .await?;
    Ok(Json(deletion))
}
