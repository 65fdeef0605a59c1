//! Pricing plans: `GET|POST /v1/plans`, `GET|PATCH|DELETE /v1/plans/{id}`,
//! `PUT /v1/plans/{id}/status`. `{id}` is the plan's id or its code.
//!
//! Reads are open to every role; changes need the `administer` permission. Prices are integer
//! minor units with an ISO 4217 currency: a JSON number with a fraction is refused.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use hubkeeper_core::billing::{NewPlan, PlanChanges, PlanList, PlanQuery, PlanView};
use hubkeeper_domain::plan::{PlanId, PlanStatus};
use serde::Deserialize;

use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::operations::{bad_json, bad_query, metadata, operations};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/plans", get(list).post(create))
        .route("/v1/plans/{id}", get(show).patch(update).delete(remove))
        .route("/v1/plans/{id}/status", put(set_status))
}

/// A plan's id, or its code.
async fn resolve(state: &AppState, id: &str) -> Result<PlanId, ApiError> {
    match id.parse::<PlanId>() {
        Ok(plan_id) => Ok(plan_id),
        Err(_) => Ok(operations(state)?.billing.plan_id_by_code(id).await?),
    }
}

async fn list(
    caller: Caller,
    State(state): State<AppState>,
    query: Result<Query<PlanQuery>, QueryRejection>,
) -> Result<Json<PlanList>, ApiError> {
    caller.require(Permission::Read)?;
    let Query(query) = query.map_err(bad_query)?;
    Ok(Json(operations(&state)?.billing.list_plans(&query).await?))
}

async fn create(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<NewPlan>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Administer)?;
    let Json(body) = body.map_err(bad_json)?;
    let plan = operations(&state)?
        .billing
        .create_plan(body, &metadata(caller.actor(), &headers, None))
        .await?;
    Ok((StatusCode::CREATED, Json(plan)))
}

async fn show(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PlanView>, ApiError> {
    caller.require(Permission::Read)?;
    let plan_id = resolve(&state, &id).await?;
    Ok(Json(operations(&state)?.billing.get_plan(plan_id).await?))
}

async fn update(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<PlanChanges>, JsonRejection>,
) -> Result<Json<PlanView>, ApiError> {
    caller.require(Permission::Administer)?;
    let Json(changes) = body.map_err(bad_json)?;
    let plan_id = resolve(&state, &id).await?;
    let plan = operations(&state)?
        .billing
        .update_plan(plan_id, changes, &metadata(caller.actor(), &headers, None))
        .await?;
    Ok(Json(plan))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    #[serde(default)]
    reason: Option<String>,
}

async fn remove(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<Reason>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::Administer)?;
    let Query(reason) = query.map_err(bad_query)?;
    let plan_id = resolve(&state, &id).await?;
    operations(&state)?
        .billing
        .delete_plan(
            plan_id,
            &metadata(caller.actor(), &headers, reason.reason.as_deref()),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    status: PlanStatus,
    #[serde(default)]
    reason: Option<String>,
}

async fn set_status(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<StatusChange>, JsonRejection>,
) -> Result<Json<PlanView>, ApiError> {
    caller.require(Permission::Administer)?;
    let Json(change) = body.map_err(bad_json)?;
    let plan_id = resolve(&state, &id).await?;
    let plan = operations(&state)?
        .billing
        .set_plan_status(
            plan_id,
            change.status,
            &metadata(caller.actor(), &headers, change.reason.as_deref()),
        )
        .await?;
    Ok(Json(plan))
}
