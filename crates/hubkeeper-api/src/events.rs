//! The event history for auditors: pages in global order, an NDJSON export streamed without
//! holding the history in memory, and the state of an installation or app as of a moment.
//!
//! Shapes:
//! - `GET /v1/events`: `{"items": [AuditEvent...], "next_cursor": "<tx>-<position>"|null}`;
//!   pass `after=<next_cursor>` for the next page. An event's `position` is the same
//!   `<tx>-<position>` cursor (what a client resumes from), `global_position` the integer.
//! - `GET /v1/events/export`: one `AuditEvent` JSON object per line (`application/x-ndjson`).
//! - `GET /v1/installations/{id}/as-of?at=<RFC 3339>`, `GET /v1/apps/{id}/as-of?at=`: the folded
//!   state (`hubkeeper_projections::history::{InstallationAsOf, AppAsOf}`), 404 if it did not
//!   exist yet.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::stream;
use hubkeeper_projections::history::{
    app_as_of, installation_as_of, list_events, AuditEvent, EventFilter, PositionCursor,
};
use hubkeeper_projections::ProjectedEvent;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::extract::Query;
use crate::params::{int_within, text, time, uuid};
use crate::state::AppState;

/// Rows per database round trip of the export.
const EXPORT_CHUNK: i64 = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(events))
        .route("/v1/events/export", get(export))
        .route("/v1/installations/{id}/as-of", get(installation_at))
        .route("/v1/apps/{id}/as-of", get(app_at))
}

#[derive(Debug, Default, Deserialize)]
pub struct EventParams {
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    event_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// Every filter parameter, checked: nothing reaches the database that it could refuse.
fn filter(p: &EventParams) -> Result<EventFilter, ApiError> {
    let from = time("from", &p.from)?;
    let to = time("to", &p.to)?;
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(ApiError::invalid_parameter("from", "must be before `to`"));
        }
    }
    let after = match text("after", &p.after)? {
        None => PositionCursor::default(),
        Some(raw) => raw
            .parse::<PositionCursor>()
            .map_err(|e| ApiError::invalid_parameter("after", e))?,
    };
    Ok(EventFilter {
        aggregate_type: text("aggregate_type", &p.aggregate_type)?,
        aggregate_id: text("aggregate_id", &p.aggregate_id)?,
        event_type: text("event_type", &p.event_type)?,
        from,
        to,
        after: after.0,
    })
}

/// `GET /v1/events?aggregate_type=&aggregate_id=&event_type=&from=&to=&after=&limit=`
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<EventParams>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadAudit)?;
    let filter = filter(&p)?;
    let limit = int_within("limit", &p.limit, 1..=1000, 100)?;
    let events = list_events(state.pool(), &filter, limit).await?;
    let next_cursor = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.position_cursor().to_string()))
        .flatten();
    let items: Vec<AuditEvent> = events.into_iter().map(AuditEvent::from).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })).into_response())
}

/// One chunk of the export as NDJSON, and the filter for the next one (`None`: that was all).
fn ndjson(
    events: Vec<ProjectedEvent>,
    mut filter: EventFilter,
) -> (bytes::Bytes, Option<EventFilter>) {
    let more = events.len() as i64 == EXPORT_CHUNK;
    if let Some(last) = events.last() {
        filter.after = last.position_cursor().0;
    }
    let mut out = Vec::with_capacity(events.len() * 512);
    for event in events {
        if serde_json::to_writer(&mut out, &AuditEvent::from(event)).is_ok() {
            out.push(b'\n');
        }
    }
    (bytes::Bytes::from(out), more.then_some(filter))
}

/// `GET /v1/events/export` with the filters of `/v1/events` (no limit): NDJSON, streamed in
/// chunks, in global order. The parameters are checked and the first chunk read before the
/// status line goes out, so a request that cannot be served gets a JSON error, not a broken
/// stream.
async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<EventParams>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadAudit)?;
    if p.limit.is_some() {
        return Err(ApiError::invalid_parameter(
            "limit",
            "the export has no limit; page with /v1/events instead",
        ));
    }
    let filter = filter(&p)?;
    let pool = state.pool().clone();
    let first = list_events(&pool, &filter, EXPORT_CHUNK).await?;
    let (first, next) = ndjson(first, filter);
    let rest = stream::unfold(next, move |next| {
        let pool = pool.clone();
        async move {
            let filter = next?;
            match list_events(&pool, &filter, EXPORT_CHUNK).await {
                Ok(events) => {
                    let (chunk, next) = ndjson(events, filter);
                    Some((Ok::<_, std::io::Error>(chunk), next))
                }
                Err(e) => {
                    // The status line is gone; ending the body early is all that is left, and
                    // the client sees an incomplete last line.
                    tracing::error!(error = %e, "event export failed midway");
                    Some((Err(std::io::Error::other("export failed")), None))
                }
            }
        }
    });
    let chunks = futures::StreamExt::chain(stream::once(async move { Ok(first) }), rest);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(chunks),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct AsOfParams {
    at: Option<String>,
}

fn at(p: &AsOfParams) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    time("at", &p.at)?.ok_or_else(|| ApiError::invalid_parameter("at", "required (RFC 3339 time)"))
}

/// `GET /v1/installations/{id}/as-of?at=`
async fn installation_at(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<AsOfParams>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadAudit)?;
    let id = uuid("id", &Some(id))?.unwrap_or_default();
    let at = at(&p)?;
    match installation_as_of(state.pool(), &id.to_string(), at).await? {
        Some(view) => Ok(Json(view).into_response()),
        None => Err(ApiError::not_found(format!(
            "installation {id} did not exist at {at}"
        ))),
    }
}

/// `GET /v1/apps/{id}/as-of?at=`
async fn app_at(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<AsOfParams>,
) -> Result<Response, ApiError> {
    caller.require(Permission::ReadAudit)?;
    let id = uuid("id", &Some(id))?.unwrap_or_default();
    let at = at(&p)?;
    match app_as_of(state.pool(), &id.to_string(), at).await? {
        Some(view) => Ok(Json(view).into_response()),
        None => Err(ApiError::not_found(format!(
            "app {id} did not exist at {at}"
        ))),
    }
}
