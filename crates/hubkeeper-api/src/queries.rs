//! Read-model queries for the dashboard and operators: installations, apps, the activity log and
//! the overview. Lists are keyset-paginated (`limit`, `cursor` from the previous page's
//! `next_cursor`), filterable and sortable; every bad parameter is a 400 naming it.
//!
//! Shapes (stable; fields are only ever added):
//! - lists: `{"items": [...], "next_cursor": string|null, "total": n}`
//! - installation, app, activity items: see `hubkeeper_projections::queries::{InstallationView,
//!   AppView, ActivityView}` and docs/read-models.md.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use hubkeeper_projections::activity::Level;
use hubkeeper_projections::queries::{
    self as q, ActivityQuery, AppQuery, InstallationQuery, InvalidParameter, QueryError,
};
use hubkeeper_webhooks::WebhookIngest;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::state::AppState;

/// What the read side of the API needs (issue 5's section of the state).
#[derive(Clone)]
pub struct ReadSide {
    /// Dead letters and webhook batches live in JetStream.
    pub jetstream: async_nats::jetstream::Context,
    /// `None` on processes without app credentials (no master keys): webhooks answer 503.
    pub webhooks: Option<Arc<WebhookIngest>>,
    /// "Expiring soon" on the overview: active tokens expiring within this window.
    pub expiring_window: chrono::Duration,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/installations", get(installations))
        .route("/v1/apps", get(apps))
        .route("/v1/activity", get(activity))
        .route("/v1/stats/overview", get(overview))
}

/// Errors of the read side: a bad parameter (named), or anything the shared error covers.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Parameter(#[from] InvalidParameter),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<QueryError> for ReadError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Invalid(p) => ReadError::Parameter(p),
            QueryError::Database(e) => ReadError::Api(e.into()),
        }
    }
}

impl From<sqlx::Error> for ReadError {
    fn from(e: sqlx::Error) -> Self {
        ReadError::Api(e.into())
    }
}

impl IntoResponse for ReadError {
    fn into_response(self) -> Response {
        match self {
            ReadError::Parameter(p) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {
                    "code": "invalid_parameter",
                    "parameter": p.parameter,
                    "message": p.to_string(),
                }})),
            )
                .into_response(),
            ReadError::Api(e) => e.into_response(),
        }
    }
}

pub(crate) fn bad(parameter: &'static str, message: impl Into<String>) -> ReadError {
    ReadError::Parameter(InvalidParameter {
        parameter,
        message: message.into(),
    })
}

fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

pub(crate) fn parse_uuid(
    parameter: &'static str,
    value: &Option<String>,
) -> Result<Option<Uuid>, ReadError> {
    present(value)
        .map(|v| Uuid::parse_str(v).map_err(|_| bad(parameter, "expected a UUID")))
        .transpose()
}

pub(crate) fn parse_time(
    parameter: &'static str,
    value: &Option<String>,
) -> Result<Option<DateTime<Utc>>, ReadError> {
    present(value)
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    bad(
                        parameter,
                        "expected an RFC 3339 time, e.g. 2026-01-31T12:00:00Z",
                    )
                })
        })
        .transpose()
}

pub(crate) fn parse_int(
    parameter: &'static str,
    value: &Option<String>,
) -> Result<Option<i64>, ReadError> {
    present(value)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| bad(parameter, "expected an integer"))
        })
        .transpose()
}

/// A two-way parameter: absent or one of `off` is `false`, one of `on` is `true`, anything else
/// is refused with `expected`.
fn parse_switch(
    parameter: &'static str,
    value: &Option<String>,
    off: &[&str],
    on: &[&str],
    expected: &str,
) -> Result<bool, ReadError> {
    match present(value) {
        None => Ok(false),
        Some(v) if off.contains(&v) => Ok(false),
        Some(v) if on.contains(&v) => Ok(true),
        Some(_) => Err(bad(parameter, expected)),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct InstallationParams {
    status: Option<String>,
    app_id: Option<String>,
    hub_id: Option<String>,
    q: Option<String>,
    sort: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/installations?status=&app_id=&hub_id=&q=&sort=&limit=&cursor=`
async fn installations(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<InstallationParams>,
) -> Result<Response, ReadError> {
    caller.require(Permission::Read)?;
    let query = InstallationQuery {
        statuses: present(&p.status)
            .map(InstallationQuery::parse_statuses)
            .transpose()?
            .unwrap_or_default(),
        app_id: parse_uuid("app_id", &p.app_id)?,
        hub_id: parse_int("hub_id", &p.hub_id)?,
        q: present(&p.q).map(str::to_owned),
        sort: present(&p.sort).map(str::to_owned),
        limit: parse_int("limit", &p.limit)?,
        cursor: present(&p.cursor).map(str::to_owned),
    };
    let page = q::list_installations(state.pool(), &query).await?;
    Ok(Json(page).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct AppParams {
    environment: Option<String>,
    include_deleted: Option<String>,
    q: Option<String>,
    sort: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/apps?environment=&include_deleted=&q=&sort=&limit=&cursor=` (with installation
/// counts).
async fn apps(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<AppParams>,
) -> Result<Response, ReadError> {
    caller.require(Permission::Read)?;
    let environment = present(&p.environment)
        .map(|e| {
            e.parse::<hubkeeper_domain::app::Environment>()
                .map(|e| e.as_str().to_owned())
                .map_err(|e| bad("environment", e.to_string()))
        })
        .transpose()?;
    let include_deleted = parse_switch(
        "include_deleted",
        &p.include_deleted,
        &["false", "0"],
        &["true", "1"],
        "expected true or false",
    )?;
    let query = AppQuery {
        environment,
        include_deleted,
        q: present(&p.q).map(str::to_owned),
        sort: present(&p.sort).map(str::to_owned),
        limit: parse_int("limit", &p.limit)?,
        cursor: present(&p.cursor).map(str::to_owned),
    };
    Ok(Json(q::list_apps(state.pool(), &query).await?).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct ActivityParams {
    level: Option<String>,
    from: Option<String>,
    to: Option<String>,
    installation_id: Option<String>,
    app_id: Option<String>,
    order: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/activity?level=&from=&to=&installation_id=&app_id=&order=&limit=&cursor=`
async fn activity(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ActivityParams>,
) -> Result<Response, ReadError> {
    caller.require(Permission::Read)?;
    let levels = match present(&p.level) {
        None => Vec::new(),
        Some(raw) => raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<Level>().map_err(|e| bad("level", e)))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let ascending = parse_switch(
        "order",
        &p.order,
        &["desc"],
        &["asc"],
        "expected asc or desc",
    )?;
    let query = ActivityQuery {
        levels,
        from: parse_time("from", &p.from)?,
        to: parse_time("to", &p.to)?,
        installation_id: parse_uuid("installation_id", &p.installation_id)?,
        app_id: parse_uuid("app_id", &p.app_id)?,
        ascending,
        limit: parse_int("limit", &p.limit)?,
        cursor: present(&p.cursor).map(str::to_owned),
    };
    Ok(Json(q::list_activity(state.pool(), &query).await?).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct OverviewParams {
    expiring_within: Option<String>,
    recent: Option<String>,
}

/// `GET /v1/stats/overview?expiring_within=<seconds>&recent=<n>`
async fn overview(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<OverviewParams>,
) -> Result<Response, ReadError> {
    caller.require(Permission::Read)?;
    let window = match parse_int("expiring_within", &p.expiring_within)? {
        None => state.services().read_side.expiring_window,
        Some(s) if (1..=30 * 24 * 3600).contains(&s) => chrono::Duration::seconds(s),
        Some(_) => return Err(bad("expiring_within", "seconds between 1 and 2592000")),
    };
    let recent = match parse_int("recent", &p.recent)? {
        None => 10,
        Some(n) if (1..=100).contains(&n) => n,
        Some(_) => return Err(bad("recent", "between 1 and 100")),
    };
    Ok(Json(q::overview(state.pool(), window, recent).await?).into_response())
}
