//! Subscriptions, usage and quotas: `GET|PUT /v1/installations/{id}/plan`,
//! `GET /v1/installations/{id}/quota`, `POST /v1/usage`, `GET /v1/billing/overview`.
//!
//! The app's backend (a `service` key) reports usage, checks quotas and records self-serve
//! plan changes; admins change plans for tenants; every role reads the overview.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use hubkeeper_core::billing::{
    AssignPlan, BillingOverview, OverviewQuery, PlanAssignment, Quota, SubscriptionView,
    UsageAccepted, UsageReport,
};
use hubkeeper_domain::subscription::ChangeTrigger;
use hubkeeper_domain::InstallationId;

use crate::auth::{Caller, Permission, Role};
use crate::error::ApiError;
use crate::operations::{bad_json, bad_query, metadata, operations};
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
    id.parse()
        .map_err(|e: hubkeeper_domain::ParseError| ApiError::BadRequest(e.to_string()))
}

async fn show_subscription(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SubscriptionView>, ApiError> {
    caller.require(Permission::Read)?;
    let id = installation(&id)?;
    operations(&state)?
        .billing
        .subscription(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("installation {id} is on no plan")))
}

async fn assign(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<AssignPlan>, JsonRejection>,
) -> Result<Json<PlanAssignment>, ApiError> {
    caller.require(Permission::UseTokens)?;
    let Json(request) = body.map_err(bad_json)?;
    let id = installation(&id)?;
    // The app's backend records what its tenants chose; only operators speak for "admin".
    let default_trigger = if caller.role == Role::Service {
        if request.trigger == Some(ChangeTrigger::Admin) {
            return Err(ApiError::Forbidden(
                "a service key records self_serve or limit_reached plan changes, not admin ones"
                    .into(),
            ));
        }
        ChangeTrigger::SelfServe
    } else {
        ChangeTrigger::Admin
    };
    let assignment = operations(&state)?
        .billing
        .assign_plan(
            id,
            request,
            default_trigger,
            &metadata(caller.actor(), &headers, None),
        )
        .await?;
    Ok(Json(assignment))
}

async fn quota(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Quota>, ApiError> {
    caller.require(Permission::UseTokens)?;
    let id = installation(&id)?;
    let quota = operations(&state)?
        .billing
        .quota(id, &metadata(caller.actor(), &headers, None))
        .await?;
    Ok(Json(quota))
}

async fn report_usage(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<UsageReport>, JsonRejection>,
) -> Result<Json<UsageAccepted>, ApiError> {
    caller.require(Permission::UseTokens)?;
    let Json(mut report) = body.map_err(bad_json)?;
    if let Some(header) = headers.get("idempotency-key") {
        let header = header
            .to_str()
            .map_err(|_| ApiError::BadRequest("the Idempotency-Key header is not text".into()))?;
        match &report.idempotency_key {
            Some(body_key) if body_key != header => {
                return Err(ApiError::BadRequest(
                    "the Idempotency-Key header and idempotency_key differ".into(),
                ))
            }
            _ => report.idempotency_key = Some(header.to_owned()),
        }
    }
    let accepted = operations(&state)?
        .billing
        .report_usage(report, &metadata(caller.actor(), &headers, None))
        .await?;
    Ok(Json(accepted))
}

async fn overview(
    caller: Caller,
    State(state): State<AppState>,
    query: Result<Query<OverviewQuery>, QueryRejection>,
) -> Result<Json<BillingOverview>, ApiError> {
    caller.require(Permission::Read)?;
    let Query(query) = query.map_err(bad_query)?;
    Ok(Json(operations(&state)?.billing.overview(&query).await?))
}
