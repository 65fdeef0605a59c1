//! The control API under `/_sim`: what tests and developers use to shape the simulated HubSpot.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::config::{AccountSpec, AppSpec};
use crate::model::{
    AppView, ApproveRequest, ControlErrorBody, DeliverRequest, ExpireTokens, ExpireTokensResult,
    FaultMode, FaultRule, InstallationRef, RotateSecret, RotateSecretResult, SettingsPatch,
};
use crate::oauth::scripted_approve;
use crate::state::{validate_settings, InstallKey, SimState};
use crate::webhooks::{self, DeliverError};

pub(crate) fn routes() -> Router<SimState> {
    Router::new()
        .route("/health", get(health))
        .route("/apps", post(register_app).get(list_apps))
        .route("/apps/rotate-secret", post(rotate_secret))
        .route("/accounts", post(register_account).get(list_accounts))
        .route("/settings", get(get_settings).post(patch_settings))
        .route(
            "/faults",
            post(add_fault).get(list_faults).delete(clear_faults),
        )
        .route("/faults/{id}", delete(remove_fault))
        .route("/uninstall", post(uninstall))
        .route("/tokens/expire", post(expire_tokens))
        .route("/counters", get(counters))
        .route("/requests", get(requests))
        .route("/approve", post(approve))
        .route("/webhooks/deliver", post(deliver))
        .route("/webhooks/status", get(webhook_status))
        .route("/reset", post(reset))
}

fn reject(status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ControlErrorBody {
            error: error.to_string(),
            message: message.into(),
        }),
    )
        .into_response()
}

/// JSON bodies are parsed by hand so a malformed request gets the control API's error shape.
/// serde's own messages can quote the offending value (possibly a client secret), so only a
/// missing/unknown field name, or the position, is reported.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        let field_problem =
            text.starts_with("missing field") || text.starts_with("unknown variant");
        if field_problem {
            text
        } else {
            format!(
                "invalid JSON body ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        }
    })
}

fn invalid_body(message: String) -> Response {
    reject(StatusCode::BAD_REQUEST, "invalid_body", message)
}

async fn health() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

fn app_view(app: &AppSpec) -> AppView {
    AppView {
        app_id: app.app_id,
        client_id: app.client_id.clone(),
        name: app.name.clone(),
        redirect_uris: app.redirect_uris.clone(),
        scopes: app.scopes.clone(),
    }
}

async fn register_app(State(state): State<SimState>, body: Bytes) -> Response {
    let app: AppSpec = match parse(&body) {
        Ok(a) => a,
        Err(e) => return invalid_body(e),
    };
    let view = app_view(&app);
    match state.lock().register_app(app) {
        Ok(created) => (status_for(created), Json(view)).into_response(),
        Err(message) => reject(StatusCode::BAD_REQUEST, "invalid_app", message),
    }
}

/// Rotates an app's client secret as HubSpot's developer settings do: the new secret works at
/// once, the previous one until the overlap ends, then answers `invalid_client`.
async fn rotate_secret(State(state): State<SimState>, body: Bytes) -> Response {
    let req: RotateSecret = match parse(&body) {
        Ok(r) => r,
        Err(e) => return invalid_body(e),
    };
    if req.client_secret.expose().is_empty() {
        return reject(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "client_secret must not be empty",
        );
    }
    let overlap = Duration::from_secs(req.overlap_secs);
    let rotated =
        state
            .lock()
            .rotate_secret(&req.client_id, req.client_secret, overlap, Instant::now());
    match rotated {
        Ok(()) => Json(RotateSecretResult {
            client_id: req.client_id,
            previous_valid_for_secs: req.overlap_secs,
        })
        .into_response(),
        Err(message) => reject(StatusCode::NOT_FOUND, "unknown_app", message),
    }
}

fn status_for(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

async fn list_apps(State(state): State<SimState>) -> Response {
    let apps: Vec<AppView> = state.lock().apps.values().map(app_view).collect();
    Json(apps).into_response()
}

async fn register_account(State(state): State<SimState>, body: Bytes) -> Response {
    let account: AccountSpec = match parse(&body) {
        Ok(a) => a,
        Err(e) => return invalid_body(e),
    };
    let hub_id = account.hub_id;
    let mut store = state.lock();
    match store.register_account(account) {
        Ok(created) => match store.accounts.get(&hub_id) {
            Some(stored) => (status_for(created), Json(stored.clone())).into_response(),
            None => reject(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "account vanished",
            ),
        },
        Err(message) => reject(StatusCode::BAD_REQUEST, "invalid_account", message),
    }
}

async fn list_accounts(State(state): State<SimState>) -> Response {
    let accounts: Vec<AccountSpec> = state.lock().accounts.values().cloned().collect();
    Json(accounts).into_response()
}

async fn get_settings(State(state): State<SimState>) -> Response {
    Json(state.lock().settings.clone()).into_response()
}

async fn patch_settings(State(state): State<SimState>, body: Bytes) -> Response {
    let patch: SettingsPatch = match parse(&body) {
        Ok(p) => p,
        Err(e) => return invalid_body(e),
    };
    let mut store = state.lock();
    let mut s = store.settings.clone();
    if let Some(v) = patch.rotation {
        s.rotation = v;
    }
    if let Some(v) = patch.token_lifetime_ms {
        s.token_lifetime = Duration::from_millis(v);
    }
    if let Some(v) = patch.code_lifetime_ms {
        s.code_lifetime = Duration::from_millis(v);
    }
    if let Some(v) = patch.rate_limit_max {
        s.rate_limit_max = v;
    }
    if let Some(v) = patch.rate_limit_window_ms {
        s.rate_limit_window = Duration::from_millis(v);
    }
    if let Some(v) = patch.rate_limit_retry_after {
        s.rate_limit_retry_after = v;
    }
    if let Some(v) = patch.v3_revoke_status {
        s.v3_revoke_status = v;
    }
    if let Some(v) = patch.v3_inactive_introspection {
        s.v3_inactive_introspection = v;
    }
    if let Some(v) = patch.webhook_retry_schedule_ms {
        s.webhook_retry_schedule = v.into_iter().map(Duration::from_millis).collect();
    }
    if let Err(message) = validate_settings(&s) {
        return reject(StatusCode::BAD_REQUEST, "invalid_settings", message);
    }
    store.settings = s.clone();
    Json(s).into_response()
}

fn validate_fault(rule: &FaultRule) -> Result<(), String> {
    let status_ok = |s: u16| (400..=599).contains(&s);
    match rule.mode {
        FaultMode::ErrorRate { status, rate } => {
            if !status_ok(status) {
                return Err("status must be a 4xx or 5xx code".into());
            }
            if !(0.0..=1.0).contains(&rate) {
                return Err("rate must be between 0 and 1".into());
            }
        }
        FaultMode::Burst { status, count } => {
            if !status_ok(status) {
                return Err("status must be a 4xx or 5xx code".into());
            }
            if count == 0 {
                return Err("a burst needs a positive count".into());
            }
        }
        FaultMode::Latency { .. } | FaultMode::Timeout { .. } | FaultMode::Down => {}
    }
    Ok(())
}

async fn add_fault(State(state): State<SimState>, body: Bytes) -> Response {
    let rule: FaultRule = match parse(&body) {
        Ok(r) => r,
        Err(e) => return invalid_body(e),
    };
    if let Err(message) = validate_fault(&rule) {
        return reject(StatusCode::BAD_REQUEST, "invalid_fault", message);
    }
    let mut store = state.lock();
    let id = store.add_fault(rule);
    match store.faults_view().into_iter().find(|f| f.id == id) {
        Some(view) => (StatusCode::CREATED, Json(view)).into_response(),
        None => reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "fault vanished",
        ),
    }
}

async fn list_faults(State(state): State<SimState>) -> Response {
    Json(state.lock().faults_view()).into_response()
}

async fn clear_faults(State(state): State<SimState>) -> Response {
    state.lock().clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

async fn remove_fault(State(state): State<SimState>, Path(id): Path<u64>) -> Response {
    if state.lock().remove_fault(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        reject(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no fault rule {id}"),
        )
    }
}

async fn uninstall(State(state): State<SimState>, body: Bytes) -> Response {
    let target: InstallationRef = match parse(&body) {
        Ok(t) => t,
        Err(e) => return invalid_body(e),
    };
    let key = InstallKey {
        client_id: target.client_id,
        hub_id: target.hub_id,
    };
    if state.lock().uninstall(&key) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        reject(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "{} is not installed in account {}",
                key.client_id, key.hub_id
            ),
        )
    }
}

async fn expire_tokens(State(state): State<SimState>, body: Bytes) -> Response {
    let filter: ExpireTokens = if body.is_empty() {
        ExpireTokens::default()
    } else {
        match parse(&body) {
            Ok(f) => f,
            Err(e) => return invalid_body(e),
        }
    };
    let now = Instant::now();
    let mut store = state.lock();
    let mut expired = 0;
    for rec in store.access_tokens.values_mut() {
        let matches = filter
            .client_id
            .as_ref()
            .is_none_or(|c| *c == rec.key.client_id)
            && filter.hub_id.is_none_or(|h| h == rec.key.hub_id);
        if matches && rec.expires_at > now {
            rec.expires_at = now;
            expired += 1;
        }
    }
    Json(ExpireTokensResult { expired }).into_response()
}

async fn counters(State(state): State<SimState>) -> Response {
    Json(state.lock().counters(Instant::now())).into_response()
}

async fn requests(
    State(state): State<SimState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let since = match q.get("since").map(|s| s.parse::<u64>()) {
        None => 0,
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            return reject(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "since must be a sequence number",
            )
        }
    };
    Json(state.lock().log_since(since)).into_response()
}

async fn approve(State(state): State<SimState>, body: Bytes) -> Response {
    let req: ApproveRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return invalid_body(e),
    };
    match scripted_approve(&state, req) {
        Ok(response) => response,
        Err(e) => reject(
            StatusCode::BAD_REQUEST,
            "authorization_failed",
            e.to_string(),
        ),
    }
}

async fn deliver(State(state): State<SimState>, body: Bytes) -> Response {
    let req: DeliverRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return invalid_body(e),
    };
    let wait = req.wait;
    let (id, handle) = match webhooks::start(&state, req) {
        Ok(started) => started,
        Err(e @ DeliverError::UnknownApp(_)) => {
            return reject(StatusCode::NOT_FOUND, "unknown_app", e.to_string())
        }
        Err(e @ DeliverError::Invalid(_)) => {
            return reject(StatusCode::BAD_REQUEST, "invalid_delivery", e.to_string())
        }
    };
    let status = if wait {
        if let Err(e) = handle.await {
            return reject(
                StatusCode::INTERNAL_SERVER_ERROR,
                "delivery_failed",
                e.to_string(),
            );
        }
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    match state.lock().deliveries.get(&id) {
        Some(report) => (status, Json(report.clone())).into_response(),
        None => reject(
            StatusCode::GONE,
            "reset",
            "the simulator was reset during the delivery",
        ),
    }
}

async fn webhook_status(
    State(state): State<SimState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.lock();
    match q.get("id") {
        Some(id) => match id.parse::<Uuid>() {
            Ok(id) => match store.deliveries.get(&id) {
                Some(report) => Json(vec![report.clone()]).into_response(),
                None => reject(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no delivery {id}"),
                ),
            },
            Err(_) => reject(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "id must be a UUID",
            ),
        },
        None => {
            let mut all: Vec<_> = store.deliveries.values().cloned().collect();
            all.sort_by_key(|d| d.started_at);
            Json(all).into_response()
        }
    }
}

async fn reset(State(state): State<SimState>) -> Response {
    match state.reset() {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reset_failed",
            e.to_string(),
        ),
    }
}
