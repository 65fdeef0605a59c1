//! Read-model queries for the dashboard and operators: installations, apps, the activity log and
//! the overview. Lists are keyset-paginated (`limit`, `cursor` from the previous page's
//! `next_cursor`), filterable and sortable; every bad parameter is a 400 naming it.
//!
//! Shapes (stable; fields are only ever added):
//! - lists: `{"items": [...], "next_cursor": string|null, "total": n}`
//! - installation, app, activity items: see `hubkeeper_projections::queries::{InstallationView,
//!   AppView, ActivityView}` and docs/read-models.md.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hubkeeper_projections::activity::Level;
use hubkeeper_projections::queries::{self as q, ActivityQuery, AppQuery, InstallationQuery};
use serde::Deserialize;

use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::extract::Query;
use crate::params::{self, int, int_within, switch, text, time, uuid};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/installations", get(installations))
        .route("/v1/apps", get(apps))
        .route("/v1/activity", get(activity))
        .route("/v1/stats/overview", get(overview))
}

#[derive(Debug, Default, Deserialize)]
pub struct InstallationParams {
    status: Option<String>,
    app_id: Option<String>,
    hub_id: Option<String>,
    external_ref: Option<String>,
    q: Option<String>,
    sort: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/installations?status=&app_id=&hub_id=&external_ref=&q=&sort=&limit=&cursor=`
async fn installations(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<InstallationParams>,
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    let query = InstallationQuery {
        statuses: p
            .status
            .as_deref()
            .map(InstallationQuery::parse_statuses)
            .transpose()?
            .unwrap_or_default(),
        app_id: uuid("app_id", &p.app_id)?,
        hub_id: int("hub_id", &p.hub_id)?,
        external_ref: p
            .external_ref
            .as_deref()
            .map(|r| {
                hubkeeper_domain::installation::validate_external_ref(r)
                    .map_err(|e| ApiError::invalid_parameter("external_ref", e.to_string()))
            })
            .transpose()?,
        q: text("q", &p.q)?,
        sort: text("sort", &p.sort)?,
        limit: int("limit", &p.limit)?,
        cursor: text("cursor", &p.cursor)?,
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
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    let environment = p
        .environment
        .as_deref()
        .map(|e| {
            params::path::<hubkeeper_domain::app::Environment>("environment", e.trim())
                .map(|e| e.as_str().to_owned())
        })
        .transpose()?;
    let include_deleted = switch(
        "include_deleted",
        &p.include_deleted,
        &["false", "0"],
        &["true", "1"],
        "expected true or false",
    )?;
    let query = AppQuery {
        environment,
        include_deleted,
        q: text("q", &p.q)?,
        sort: text("sort", &p.sort)?,
        limit: int("limit", &p.limit)?,
        cursor: text("cursor", &p.cursor)?,
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
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    let levels = match p.level.as_deref() {
        None => Vec::new(),
        Some(raw) => raw
            .split(',')
            .map(str::trim)
            .map(|s| {
                s.parse::<Level>()
                    .map_err(|e| ApiError::invalid_parameter("level", e))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let ascending = switch(
        "order",
        &p.order,
        &["desc"],
        &["asc"],
        "expected asc or desc",
    )?;
    let query = ActivityQuery {
        levels,
        from: time("from", &p.from)?,
        to: time("to", &p.to)?,
        installation_id: uuid("installation_id", &p.installation_id)?,
        app_id: uuid("app_id", &p.app_id)?,
        ascending,
        limit: int("limit", &p.limit)?,
        cursor: text("cursor", &p.cursor)?,
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
) -> Result<Response, ApiError> {
    caller.require(Permission::Read)?;
    let window = match p.expiring_within {
        None => state.expiring_window(),
        Some(_) => chrono::Duration::seconds(int_within(
            "expiring_within",
            &p.expiring_within,
            1..=30 * 24 * 3600,
            0,
        )?),
    };
    let recent = int_within("recent", &p.recent, 1..=100, 10)?;
    Ok(Json(q::overview(state.pool(), window, recent).await?).into_response())
}
