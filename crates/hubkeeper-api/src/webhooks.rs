//! `POST /webhooks/hubspot/{app_id}` (HubSpot calls it; authenticated by its signature, not by an
//! API key) and the dead-letter endpoints for operators.
//!
//! Webhook answers: 200 `{"accepted": n, "duplicate": bool}` once the raw batch is stored in
//! JetStream; 401 `{"error": {"code": "invalid_signature", "reason": "<class>", ...}}` for a
//! missing, forged, tampered or stale signature; 404 for an unknown or deleted app; 413 for an
//! oversized body; 400 `malformed_batch` for anything but a JSON array of 1-100 events with
//! `eventId`, `portalId`, `subscriptionType` and `occurredAt`; 503 when the batch could not be
//! stored (HubSpot retries).
//!
//! Dead letters: `GET /v1/dlq?kind=&limit=&before=`, `GET /v1/dlq/{seq}`,
//! `POST /v1/dlq/{seq}/redrive`.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hubkeeper_webhooks::dlq::{self, DlqError};
use hubkeeper_webhooks::{IngestError, SignatureHeaders};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::queries::{bad, parse_int, ReadError};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks/hubspot/{app_id}", post(receive))
        .route("/v1/dlq", get(list_dead_letters))
        .route("/v1/dlq/{seq}", get(show_dead_letter))
        .route("/v1/dlq/{seq}/redrive", post(redrive_dead_letter))
}

fn problem(status: StatusCode, code: &str, message: String, reason: Option<&str>) -> Response {
    let mut error = json!({ "code": code, "message": message });
    if let Some(reason) = reason {
        error["reason"] = json!(reason);
    }
    (status, Json(json!({ "error": error }))).into_response()
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
        Err(e) => {
            let message = e.to_string();
            match &e {
                IngestError::UnknownApp(_) => {
                    problem(StatusCode::NOT_FOUND, "unknown_app", message, None)
                }
                IngestError::TooLarge { .. } => problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    message,
                    None,
                ),
                IngestError::Signature(s) => {
                    tracing::info!(reason = s.class(), %app_id, "webhook signature rejected");
                    problem(
                        StatusCode::UNAUTHORIZED,
                        "invalid_signature",
                        message,
                        Some(s.class()),
                    )
                }
                IngestError::Malformed(_) => {
                    problem(StatusCode::BAD_REQUEST, "malformed_batch", message, None)
                }
                IngestError::Unavailable(cause) => {
                    tracing::warn!(%cause, %app_id, "webhook batch not stored; answering 503");
                    problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the batch could not be stored durably; retry later".into(),
                        None,
                    )
                }
            }
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
    let Some(ingest) = state.services().read_side.webhooks.clone() else {
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

#[derive(Debug, Default, Deserialize)]
pub struct DlqParams {
    kind: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

fn dlq_error(e: DlqError) -> ReadError {
    match e {
        DlqError::NotFound(seq) => ApiError::NotFound(format!("no dead letter {seq}")).into(),
        DlqError::NoSource(seq) => ApiError::Conflict(format!(
            "dead letter {seq} names no source subject to re-drive to"
        ))
        .into(),
        DlqError::Bus(cause) => ApiError::Unavailable(format!("NATS: {cause}")).into(),
    }
}

fn parse_seq(raw: &str) -> Result<u64, ReadError> {
    raw.parse::<u64>()
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| bad("seq", "expected a positive dead-letter sequence"))
}

/// `GET /v1/dlq?kind=&limit=&before=`: newest first.
async fn list_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<DlqParams>,
) -> Result<Response, ReadError> {
    caller.require(Permission::ReadAudit)?;
    let limit = match parse_int("limit", &p.limit)? {
        None => 50,
        Some(n) if (1..=500).contains(&n) => n as usize,
        Some(_) => return Err(bad("limit", "must be between 1 and 500")),
    };
    let before = parse_int("before", &p.before)?
        .map(|b| u64::try_from(b).map_err(|_| bad("before", "must be positive")))
        .transpose()?;
    let kind = p.kind.as_deref().map(str::trim).filter(|k| !k.is_empty());
    let items = dlq::list(&state.services().read_side.jetstream, kind, limit, before)
        .await
        .map_err(dlq_error)?;
    let next_before = (items.len() == limit)
        .then(|| items.last().map(|l| l.seq))
        .flatten();
    Ok(Json(json!({ "items": items, "next_before": next_before })).into_response())
}

/// `GET /v1/dlq/{seq}`: one dead letter with its payload.
async fn show_dead_letter(
    State(state): State<AppState>,
    caller: Caller,
    Path(seq): Path<String>,
) -> Result<Response, ReadError> {
    caller.require(Permission::ReadAudit)?;
    let seq = parse_seq(&seq)?;
    let letter = dlq::show(&state.services().read_side.jetstream, seq)
        .await
        .map_err(dlq_error)?;
    Ok(Json(letter).into_response())
}

/// `POST /v1/dlq/{seq}/redrive`: back to its source subject, then removed from the DLQ.
async fn redrive_dead_letter(
    State(state): State<AppState>,
    caller: Caller,
    Path(seq): Path<String>,
) -> Result<Response, ReadError> {
    caller.require(Permission::Administer)?;
    let seq = parse_seq(&seq)?;
    let subject = dlq::redrive(&state.services().read_side.jetstream, seq)
        .await
        .map_err(dlq_error)?;
    tracing::info!(seq, %subject, key = %caller.key_id, "dead letter re-driven by an operator");
    Ok(Json(json!({ "redriven": seq, "subject": subject })).into_response())
}
