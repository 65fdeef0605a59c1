//! `POST /webhooks/hubspot/{app_id}`: HubSpot calls it; authenticated by its signature, not by an
//! API key.
//!
//! Webhook answers: 200 `{"accepted": n, "duplicate": bool}` once the raw batch is stored in
//! JetStream; 401 `{"error": {"code": "invalid_signature", "reason": "<class>", ...}}` for a
//! missing, forged, tampered or stale signature; 404 for an unknown or deleted app; 413 for an
//! oversized body; 400 `malformed_batch` for anything but a JSON array of 1-100 events with
//! `eventId`, `portalId`, `subscriptionType` and `occurredAt`; 503 when the batch could not be
//! stored (HubSpot retries).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hubkeeper_webhooks::{IngestError, SignatureHeaders};
use serde_json::json;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/webhooks/hubspot/{app_id}", post(receive))
}

/// How a refused batch is answered; HubSpot retries on 5xx and on nothing else.
fn refusal(e: &IngestError, app_id: &str) -> ApiError {
    let message = e.to_string();
    match e {
        IngestError::UnknownApp(_) => ApiError::new(StatusCode::NOT_FOUND, "unknown_app", message),
        IngestError::TooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
        }
        IngestError::Signature(s) => {
            tracing::info!(reason = s.class(), %app_id, "webhook signature rejected");
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", message)
                .with_reason(s.class())
        }
        IngestError::Malformed(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_batch", message)
        }
        IngestError::Unavailable(cause) => {
            tracing::warn!(%cause, %app_id, "webhook batch not stored; answering 503");
            ApiError::unavailable("the batch could not be stored durably; retry later")
        }
    }
}

async fn receive(
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let response = receive_inner(&state, &app_id, &uri, &headers, body).await;
    let outcome = match &response {
        Ok(_) => "accepted",
        Err(e) => e.reason(),
    };
    metrics::histogram!("hk_webhook_accept_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("hk_webhook_requests_total", "outcome" => outcome).increment(1);
    match response {
        Ok(accepted) => (
            StatusCode::OK,
            Json(json!({ "accepted": accepted.events, "duplicate": accepted.duplicate })),
        )
            .into_response(),
        Err(e) => refusal(&e, &app_id).into_response(),
    }
}

async fn receive_inner(
    state: &AppState,
    app_id: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<hubkeeper_webhooks::Accepted, IngestError> {
    let Some(ingest) = state.webhooks().cloned() else {
        return Err(IngestError::Unavailable(
            "webhook ingestion is not configured on this process (HK_MASTER_KEYS missing)".into(),
        ));
    };
    let app = Uuid::parse_str(app_id).map_err(|_| IngestError::UnknownApp(Uuid::nil()))?;
    let limit = ingest.config().max_body_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(IngestError::TooLarge { limit });
    }
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| IngestError::TooLarge { limit })?;
    let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    let signature = SignatureHeaders {
        signature: get(hubkeeper_hubspot::signature::HEADER_SIGNATURE),
        signature_version: get(hubkeeper_hubspot::signature::HEADER_SIGNATURE_VERSION),
        signature_v3: get(hubkeeper_hubspot::signature::HEADER_SIGNATURE_V3),
        timestamp: get(hubkeeper_hubspot::signature::HEADER_REQUEST_TIMESTAMP),
    };
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    ingest
        .accept(
            app,
            &path_and_query,
            signature,
            body,
            chrono::Utc::now().timestamp_millis(),
        )
        .await
}
