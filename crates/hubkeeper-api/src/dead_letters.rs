//! Dead letters, for operators: messages a worker gave up on (webhook batches, refreshes,
//! projected events), listed newest first, shown with their payload, re-driven to their source.
//!
//! `GET /v1/dlq?kind=&limit=&before=`, `GET /v1/dlq/{seq}`, `POST /v1/dlq/{seq}/redrive`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hubkeeper_bus::dead_letter::{self, DeadLetterError};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::extract::Query;
use crate::params::{int, int_within, text};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/dlq", get(list_dead_letters))
        .route("/v1/dlq/{seq}", get(show_dead_letter))
        .route("/v1/dlq/{seq}/redrive", post(redrive_dead_letter))
}

#[derive(Debug, Default, Deserialize)]
pub struct DlqParams {
    kind: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

fn dlq_error(e: DeadLetterError) -> ApiError {
    match e {
        DeadLetterError::NotFound(seq) => ApiError::not_found(format!("no dead letter {seq}")),
        DeadLetterError::NoSource(seq) => ApiError::conflict(
            "conflict",
            format!("dead letter {seq} names no source subject to re-drive to"),
        ),
        DeadLetterError::Bus(cause) => ApiError::unavailable(format!("NATS: {cause}")),
    }
}

fn parse_seq(raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>()
        .ok()
        .filter(|s| (1..=i64::MAX as u64).contains(s))
        .ok_or_else(|| {
            ApiError::invalid_parameter("seq", "expected a positive dead-letter sequence")
        })
}

/// `GET /v1/dlq?kind=&limit=&before=`: newest first.
async fn list_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<DlqParams>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadAudit)?;
    let limit = int_within("limit", &p.limit, 1..=500, 50)? as usize;
    let before = int("before", &p.before)?
        .map(|b| {
            u64::try_from(b)
                .ok()
                .filter(|b| *b > 0)
                .ok_or_else(|| ApiError::invalid_parameter("before", "must be positive"))
        })
        .transpose()?;
    let kind = text("kind", &p.kind)?;
    let items = dead_letter::list(state.jetstream(), kind.as_deref(), limit, before)
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
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadAudit)?;
    let seq = parse_seq(&seq)?;
    let letter = dead_letter::show(state.jetstream(), seq)
        .await
        .map_err(dlq_error)?;
    Ok(Json(letter).into_response())
}

/// `POST /v1/dlq/{seq}/redrive`: back to its source subject, then removed from the DLQ.
async fn redrive_dead_letter(
    State(state): State<AppState>,
    caller: Caller,
    Path(seq): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Permission::Administer)?;
    let seq = parse_seq(&seq)?;
    let subject = dead_letter::redrive(state.jetstream(), seq)
        .await
        .map_err(dlq_error)?;
    tracing::info!(seq, %subject, key = %caller.key_id, "dead letter re-driven by an operator");
    Ok(Json(json!({ "redriven": seq, "subject": subject })).into_response())
}
