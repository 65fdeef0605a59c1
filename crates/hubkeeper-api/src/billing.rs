//! Subscriptions, usage and quotas: `GET|PUT /v1/installations/{id}/plan`,
//! `GET /v1/installations/{id}/quota`, `POST /v1/usage`, `GET /v1/billing/overview`.
//!
//! The app's backend (a `service` key) reports usage, checks quotas and records self-serve
//! plan changes; admins change plans for tenants; every role reads the overview.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use hubkeeper_core::billing::{
    AssignPlan, BillingOverview, OverviewQuery, PlanAssignment, Quota, SubscriptionView,
    UsageAccepted, UsageReport,
};
use hubkeeper_domain::subscription::ChangeTrigger;
use hubkeeper_domain::InstallationId;

use crate::auth::{AppAccess, Caller, Permission, Role};
use crate::error::ApiError;
use crate::extract::{JsonBody, Query};
use crate::params;
use crate::request::RequestId;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/installations/{id}/plan",
            get(show_subscription).put(assign),
        )
        .route("/v1/installations/{id}/quota", get(quota))
        .route("/v1/usage", post(report_usage))
        .route("/v1/billing/overview", get(overview))
}

fn installation(id: &str) -> Result<InstallationId, ApiError> {
    params::path("id", id)
}

async fn show_subscription(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    caller.require(Permission::Read)?;
    let id = installation(&id)?;
    caller
        .require_installation(&state, &id, AppAccess::Act)
        .await?;
    state
        .billing()?
        .subscription(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("installation {id} is on no plan")))
}

async fn assign(
    caller: Caller,
    State(state): State<AppState>,
    request_id: RequestId,
    Path(id): Path<String>,
    // Read after the checks: a key of another app learns nothing from the body's validation.
    body: Result<JsonBody<AssignPlan>, ApiError>,
) -> Result<Json<PlanAssignment>, ApiError> {
    caller.require(Permission::UseTokens)?;
    let id = installation(&id)?;
    caller
        .require_installation(&state, &id, AppAccess::Act)
        .await?;
    let JsonBody(request) = body?;
    // The app's backend records what its tenants chose; only operators speak for "admin".
    let default_trigger = if caller.role == Role::Service {
        if request.trigger == Some(ChangeTrigger::Admin) {
            return Err(ApiError::forbidden(
                "a service key records self_serve or limit_reached plan changes, not admin ones",
            ));
        }
        ChangeTrigger::SelfServe
    } else {
        ChangeTrigger::Admin
    };
    let assignment = state
        .billing()?
        .assign_plan(
            id,
            request,
            default_trigger,
            &request_id.metadata(caller.actor()),
        )
        .await?;
    Ok(Json(assignment))
}

async fn quota(
    caller: Caller,
    State(state): State<AppState>,
    request: RequestId,
    Path(id): Path<String>,
) -> Result<Json<Quota>, ApiError> {
    caller.require(Permission::UseTokens)?;
    let id = installation(&id)?;
    caller
        .require_installation(&state, &id, AppAccess::Act)
        .await?;
    let quota = state
        .billing()?
        .quota(id, &request.metadata(caller.actor()))
        .await?;
    Ok(Json(quota))
}

async fn report_usage(
    caller: Caller,
    State(state): State<AppState>,
    request: RequestId,
    headers: HeaderMap,
    JsonBody(mut report): JsonBody<UsageReport>,
) -> Result<Json<UsageAccepted>, ApiError> {
    caller.require(Permission::UseTokens)?;
    if let Some(header) = headers.get("idempotency-key") {
        let header = header
            .to_str()
            .map_err(|_| ApiError::bad_request("the Idempotency-Key header is not text"))?;
        match &report.idempotency_key {
            Some(body_key) if body_key != header => {
                return Err(ApiError::bad_request(
                    "the Idempotency-Key header and idempotency_key differ",
                ))
            }
            _ => report.idempotency_key = Some(header.to_owned()),
        }
    }
    caller
        .require_installation(&state, &report.installation_id, AppAccess::Act)
        .await?;
    let accepted = state
        .billing()?
        .report_usage(report, &request.metadata(caller.actor()))
        .await?;
    Ok(Json(accepted))
}

async fn overview(
    caller: Caller,
    State(state): State<AppState>,
    Query(query): Query<OverviewQuery>,
) -> Result<Json<BillingOverview>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(state.billing()?.overview(&query).await?))
}
