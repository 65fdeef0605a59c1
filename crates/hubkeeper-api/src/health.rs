//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

/// The process is up and serving HTTP; says nothing about its dependencies.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready to serve: Postgres reachable with every migration applied, NATS connected.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let postgres = match hubkeeper_store::migrations_pending(state.pool()).await {
        Ok(0) => json!({ "ok": true }),
        Ok(n) => json!({ "ok": false, "reason": format!("{n} migration(s) not applied") }),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: postgres check failed");
            json!({ "ok": false, "reason": "postgres unreachable" })
        }
    };
    let nats_ok = state.nats().connection_state() == async_nats::connection::State::Connected;
    let nats = if nats_ok {
        json!({ "ok": true })
    } else {
        json!({ "ok": false, "reason": "nats not connected" })
    };
    let ready = postgres["ok"] == true && nats_ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": ready, "checks": { "postgres": postgres, "nats": nats } })),
    )
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(),
    )
}
