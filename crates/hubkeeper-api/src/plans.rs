//! Pricing plans: `GET|POST /v1/plans`, `GET|PATCH|DELETE /v1/plans/{id}`,
//! `PUT /v1/plans/{id}/status`. `{id}` is the plan's id or its code.
//!
//! Reads are open to every role; changes need the `administer` permission. Prices are integer
//! minor units with an ISO 4217 currency: a JSON number with a fraction is refused.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use hubkeeper_core::billing::{NewPlan, PlanChanges, PlanList, PlanQuery, PlanView};
use hubkeeper_domain::plan::{PlanId, PlanStatus};
use serde::Deserialize;

use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::extract::{JsonBody, Query};
use crate::request::RequestId;
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
        Err(_) => Ok(state.billing()?.plan_id_by_code(id).await?),
    }
}

async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<PlanQuery>,
) -> Result<Json<PlanList>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(state.billing()?.list_plans(&query).await?))
}

async fn create(
    caller: Caller,
    State(state): State<AppState>,
    request: RequestId,
    JsonBody(body): JsonBody<NewPlan>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::Administer)?;
    let plan = state
        .billing()?
        .create_plan(body, &request.metadata(caller.actor()))
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
    Ok(Json(state.billing()?.get_plan(plan_id).await?))
}

async fn update(
    caller: Caller,
    State(state): State<AppState>,
    request: RequestId,
    Path(id): Path<String>,
    JsonBody(changes): JsonBody<PlanChanges>,
) -> Result<Json<PlanView>, ApiError> {
    caller.require(Permission::Administer)?;
    let plan_id = resolve(&state, &id).await?;
    let plan = state
        .billing()?
        .update_plan(plan_id, changes, &request.metadata(caller.actor()))
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
    request: RequestId,
    Path(id): Path<String>,
    Query(reason): Query<Reason>,
) -> Result<StatusCode, ApiError> {
    caller.require(Permission::Administer)?;
    let plan_id = resolve(&state, &id).await?;
    state
        .billing()?
        .delete_plan(
            plan_id,
            &request.metadata_with_reason(caller.actor(), reason.reason.as_deref()),
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
    request: RequestId,
    Path(id): Path<String>,
    JsonBody(change): JsonBody<StatusChange>,
) -> Result<Json<PlanView>, ApiError> {
    caller.require(Permission::Administer)?;
    let plan_id = resolve(&state, &id).await?;
    let plan = state
        .billing()?
        .set_plan_status(
            plan_id,
            change.status,
            &request.metadata_with_reason(caller.actor(), change.reason.as_deref()),
        )
        .await?;
    Ok(Json(plan))
}
