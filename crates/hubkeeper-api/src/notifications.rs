//! Notification endpoints of an app and their deliveries: `/v1/apps/{id}/endpoints...`.
//!
//! The signing secret is in exactly two answers, creation and rotation (`secret`), and in no
//! other response, log or event in clear.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hubkeeper_core::notifications::{
    DeliveryFilter, EndpointChanges, EndpointWithSecret, NewEndpoint, NotificationService,
    DELIVERY_STATUSES,
};
use hubkeeper_domain::notification::NotificationType;
use hubkeeper_domain::{AppId, EndpointId, InstallationId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::extract::{JsonBody, Query};
use crate::params::{int_within, path, target, value};
use crate::request::RequestId;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/apps/{id}/endpoints", get(list).post(create))
        .route(
            "/v1/apps/{id}/endpoints/{endpoint_id}",
            get(show).patch(update).delete(remove),
        )
        .route(
            "/v1/apps/{id}/endpoints/{endpoint_id}/rotate-secret",
            post(rotate_secret),
        )
        .route(
            "/v1/apps/{id}/endpoints/{endpoint_id}/deliveries",
            get(deliveries),
        )
        .route(
            "/v1/apps/{id}/endpoints/{endpoint_id}/deliveries/{webhook_id}/resend",
            post(resend),
        )
        .route("/v1/apps/{id}/receivers", get(receivers))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateEndpoint {
    url: String,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchEndpoint {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
struct DeliveryParams {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    installation_id: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

#[derive(Deserialize)]
struct ReceiverParams {
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

fn service(state: &AppState) -> Result<&NotificationService, ApiError> {
    Ok(&state.tokens()?.notifications)
}

fn ids(
    caller: &Caller,
    permission: Permission,
    app: &str,
    endpoint: &str,
) -> Result<(AppId, EndpointId), ApiError> {
    let app: AppId = target(caller, permission, app)?;
    let endpoint: EndpointId = path("endpoint_id", endpoint)?;
    Ok((app, endpoint))
}

fn with_secret(created: EndpointWithSecret) -> Result<Value, ApiError> {
    let mut body = serde_json::to_value(&created.endpoint).map_err(ApiError::internal)?;
    if let Some(object) = body.as_object_mut() {
        object.insert("secret".into(), json!(created.secret_text()));
    }
    Ok(body)
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let app: AppId = target(&caller, Permission::Administer, &id)?;
    let endpoints = service(&state)?.list(app).await?;
    Ok(Json(json!({ "items": endpoints })))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CreateEndpoint>,
) -> Result<impl IntoResponse, ApiError> {
    let app: AppId = target(&caller, Permission::Administer, &id)?;
    let created = service(&state)?
        .create(
            app,
            NewEndpoint {
                url: body.url,
                event_types: body.event_types,
                description: body.description,
            },
            &request.metadata(caller.actor()),
        )
        .await?;
    let location = format!("/v1/apps/{app}/endpoints/{}", created.endpoint.endpoint_id);
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Json(with_secret(created)?),
    ))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, endpoint_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let (app, endpoint) = ids(&caller, Permission::Administer, &id, &endpoint_id)?;
    Ok(Json(service(&state)?.get(app, endpoint).await?))
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path((id, endpoint_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<PatchEndpoint>,
) -> Result<impl IntoResponse, ApiError> {
    let (app, endpoint) = ids(&caller, Permission::Administer, &id, &endpoint_id)?;
    let view = service(&state)?
        .change(
            app,
            endpoint,
            EndpointChanges {
                url: body.url,
                event_types: body.event_types,
                description: body.description,
                enabled: body.enabled,
            },
            &request.metadata(caller.actor()),
        )
        .await?;
    Ok(Json(view))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path((id, endpoint_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let (app, endpoint) = ids(&caller, Permission::Administer, &id, &endpoint_id)?;
    service(&state)?
        .remove(app, endpoint, &request.metadata(caller.actor()))
        .await?;
    Ok(Json(json!({ "endpoint_id": endpoint, "removed": true })))
}

async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path((id, endpoint_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let (app, endpoint) = ids(&caller, Permission::Administer, &id, &endpoint_id)?;
    let rotated = service(&state)?
        .rotate_secret(app, endpoint, &request.metadata(caller.actor()))
        .await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(with_secret(rotated)?),
    ))
}

async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, endpoint_id)): Path<(String, String)>,
    Query(params): Query<DeliveryParams>,
) -> Result<impl IntoResponse, ApiError> {
    let (app, endpoint) = ids(&caller, Permission::Read, &id, &endpoint_id)?;
    let status = params.status.map(|s| s.trim().to_owned());
    if let Some(status) = &status {
        if !DELIVERY_STATUSES.contains(&status.as_str()) {
            return Err(ApiError::invalid_parameter(
                "status",
                format!("expected one of {}", DELIVERY_STATUSES.join(", ")),
            ));
        }
    }
    let installation_id = params
        .installation_id
        .as_deref()
        .map(|raw| path::<InstallationId>("installation_id", raw))
        .transpose()?;
    let filter = DeliveryFilter {
        status,
        installation_id,
        limit: int_within("limit", &params.limit, 1..=500, 50)?,
    };
    let items = service(&state)?.deliveries(app, endpoint, &filter).await?;
    Ok(Json(json!({ "items": items })))
}

async fn resend(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path((id, endpoint_id, webhook_id)): Path<(String, String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let (app, endpoint) = ids(&caller, Permission::Administer, &id, &endpoint_id)?;
    let webhook_id = webhook_id.trim();
    if webhook_id.is_empty()
        || webhook_id.len() > 64
        || !webhook_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(ApiError::invalid_parameter(
            "webhook_id",
            "expected a delivery id (msg_...)",
        ));
    }
    let delivery = service(&state)?
        .resend(app, endpoint, webhook_id, &request.metadata(caller.actor()))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}

/// The enabled endpoints a notification type would reach now (the dashboard's revoke and
/// disconnect dialogs say whether the app hears of it).
async fn receivers(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<ReceiverParams>,
) -> Result<impl IntoResponse, ApiError> {
    let app: AppId = target(&caller, Permission::Read, &id)?;
    let Some(kind) = params.kind.as_deref() else {
        return Err(ApiError::invalid_parameter("type", "required"));
    };
    let kind: NotificationType = value(kind.trim())
        .map_err(|_| ApiError::invalid_parameter("type", "not a known notification type"))?;
    let endpoints = service(&state)?.receivers(app, kind).await?;
    let urls: Vec<&str> = endpoints.iter().map(|e| e.url.as_str()).collect();
    Ok(Json(json!({
        "type": kind.as_str(),
        "notified": !endpoints.is_empty(),
        "urls": urls,
    })))
}
