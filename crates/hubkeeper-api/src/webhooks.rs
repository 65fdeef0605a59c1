//! `POST /webhooks/hubspot/{app_id}`: HubSpot calls it; authenticated by its signature, not by an
//! API key.
//!
//! Webhook answers: 200 `{"accepted": n, "duplicate": bool}` once the raw batch is stored in
//! JetStream; 401 `invalid_signature` for a missing, forged, tampered or stale signature *and* for
//! an unknown or deleted app, with one and the same body (so app ids cannot be enumerated; the
//! precise class is in the log and in `hk_webhook_requests_total{outcome}`); 429 `rate_limited`
//! with `Retry-After` once a client (address, IPv6 /64) has had too many of those 401s in the
//! window, counted in the shared limiter so every API process allows the limit once; 413 for an
//! oversized body; 400 `malformed_batch` for anything but a JSON array of 1-100 events with
//! `eventId`, `portalId`, `subscriptionType` and `occurredAt`; 503 when the batch could not be
//! stored (HubSpot retries).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Extensions, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hubkeeper_webhooks::{IngestError, SignatureHeaders};
use serde_json::json;
use uuid::Uuid;

use crate::client_addr::{self, ClientAddr, ClientBucket};
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/webhooks/hubspot/{app_id}", post(receive))
}

/// The one answer to a request that is not signed by a known app's secret, whatever the
/// reason (unknown app, no signature, wrong secret, stale timestamp, refused version).
pub const UNVERIFIED_MESSAGE: &str =
    "the request is not signed with the client secret of an app registered here, with a \
     signature version it accepts and a current timestamp";

/// Whether a refusal counts against the client's failure budget.
fn is_verification_failure(e: &IngestError) -> bool {
    matches!(e, IngestError::UnknownApp(_) | IngestError::Signature(_))
}

/// How a refused batch is answered; HubSpot retries on 5xx and on nothing else.
fn refusal(e: &IngestError, app_id: &str, client: ClientAddr) -> ApiError {
    let message = e.to_string();
    match e {
        IngestError::UnknownApp(_) | IngestError::Signature(_) => {
            tracing::info!(reason = e.reason(), %app_id, %client, "webhook request not verified");
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                UNVERIFIED_MESSAGE,
            )
        }
        IngestError::TooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
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
    extensions: Extensions,
    body: Body,
) -> Response {
    let started = Instant::now();
    let client = client_addr::client_addr(&extensions);
    let failures = &state.clients().webhook_failures;
    // A client that used up its failure budget is refused before any lookup or signature check.
    if let Some(wait) = failures.blocked(client) {
        metrics::counter!("hk_webhook_requests_total", "outcome" => "rate_limited").increment(1);
        return client_addr::limited(ClientBucket::WebhookFailures, wait).into_response();
    }
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
        Err(e) => {
            if is_verification_failure(&e) {
                if let Err(wait) = failures.count(&state.clients().limiter, client).await {
                    tracing::info!(reason = e.reason(), %app_id, %client, "webhook request not verified; client over its failure limit");
                    return client_addr::limited(ClientBucket::WebhookFailures, wait)
                        .into_response();
                }
            }
            refusal(&e, &app_id, client).into_response()
        }
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
