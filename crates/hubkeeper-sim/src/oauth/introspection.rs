//! The dated endpoints (`2026-03`, alias `v3`): token introspection and revocation.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{authenticate_client, form_map};
use crate::model::{InactiveIntrospection, RefreshTokenState};
use crate::respond::{oauth_error, with_meta, LogMeta};
use crate::state::{AccessCheck, SimState};
use crate::tokens::{correlation_id, TokenHash};

fn bad_form() -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
        "the request body must be application/x-www-form-urlencoded",
        "invalid_request",
    )
}

fn missing_token() -> Response {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
        "missing token",
        "invalid_request",
    )
}

/// `POST /oauth/2026-03/token/introspect` (and the `/oauth/v3/` alias).
pub(crate) async fn introspect(State(state): State<SimState>, body: Bytes) -> Response {
    let Some(form) = form_map(&body) else {
        return bad_form();
    };
    let now = Instant::now();
    let mut store = state.lock();
    let app = match authenticate_client(&store, &form) {
        Ok(app) => app,
        Err(e) => return e.response(),
    };
    let token = form.get("token").map(String::as_str).unwrap_or("");
    if token.is_empty() {
        return missing_token();
    }
    let hash = TokenHash::of(token);
    let mut meta = LogMeta {
        client_id: Some(app.client_id.clone()),
        token_hash: Some(hash.short()),
        ..LogMeta::default()
    };
    let hint_refresh = form.get("token_type_hint").map(String::as_str) == Some("refresh_token");
    let access = || match store.check_access_token(&hash, now) {
        AccessCheck::Live(rec) if rec.key.client_id == app.client_id => Some(json!({
            "active": true,
            "token_use": "access_token",
            "token_type": "bearer",
            "client_id": rec.key.client_id,
            "app_id": rec.app_id,
            "hub_id": rec.key.hub_id,
            "hub_domain": store.account_domain(rec.key.hub_id),
            "user_id": rec.user.user_id,
            "user": rec.user.email,
            "scopes": rec.scopes,
            "expires_in": rec.expires_at.saturating_duration_since(now).as_secs(),
        })),
        _ => None,
    };
    let refresh = || {
        let rec = store.refresh_tokens.get(&hash)?;
        if rec.key.client_id != app.client_id
            || !matches!(
                store.refresh_state(rec, now),
                RefreshTokenState::Active | RefreshTokenState::Superseded
            )
        {
            return None;
        }
        let inst = store.installation(&rec.key)?;
        Some(json!({
            "active": true,
            "token_use": "refresh_token",
            "client_id": rec.key.client_id,
            "app_id": inst.app_id,
            "hub_id": rec.key.hub_id,
            "hub_domain": store.account_domain(rec.key.hub_id),
            "user_id": inst.user.user_id,
            "user": inst.user.email,
            "scopes": inst.scopes,
        }))
    };
    let found = if hint_refresh {
        refresh().or_else(access)
    } else {
        access().or_else(refresh)
    };
    if let Some(hub) = found.as_ref().and_then(|v| v["hub_id"].as_u64()) {
        meta.hub_id = Some(hub);
    }
    let response = match found {
        Some(body) => Json(body).into_response(),
        None => match store.settings.v3_inactive_introspection {
            InactiveIntrospection::ActiveFalse => Json(json!({ "active": false })).into_response(),
            InactiveIntrospection::ValidationError => (
                StatusCode::BAD_REQUEST,
                Json(json!({
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": "Token is invalid",
                    "correlationId": correlation_id(),
                    "context": { "token": ["Token is invalid"] },
                    "errors": [{
                        "code": "400",
                        "in": "token",
                        "message": "Token is invalid",
                        "subCategory": "OAUTH",
                        "context": { "token": ["Token is invalid"] },
                    }],
                })),
            )
                .into_response(),
        },
    };
    store
        .counters
        .bump(meta.hub_id, Some(&app.client_id), |c| c.introspections += 1);
    with_meta(response, meta)
}

/// `POST /oauth/2026-03/token/revoke` (and the `/oauth/v3/` alias). Like RFC 7009, an unknown
/// token is not an error; the success status is configurable because HubSpot's is unconfirmed.
pub(crate) async fn revoke(State(state): State<SimState>, body: Bytes) -> Response {
    let Some(form) = form_map(&body) else {
        return bad_form();
    };
    let mut store = state.lock();
    let app = match authenticate_client(&store, &form) {
        Ok(app) => app,
        Err(e) => return e.response(),
    };
    let token = form.get("token").map(String::as_str).unwrap_or("");
    if token.is_empty() {
        return missing_token();
    }
    let hash = TokenHash::of(token);
    let mut meta = LogMeta {
        client_id: Some(app.client_id.clone()),
        token_hash: Some(hash.short()),
        ..LogMeta::default()
    };
    if let Some(rec) = store.refresh_tokens.get_mut(&hash) {
        if rec.key.client_id == app.client_id {
            rec.revoked = true;
            meta.hub_id = Some(rec.key.hub_id);
        }
    } else if let Some(rec) = store.access_tokens.get_mut(&hash) {
        if rec.key.client_id == app.client_id {
            rec.revoked = true;
            meta.hub_id = Some(rec.key.hub_id);
        }
    }
    store
        .counters
        .bump(meta.hub_id, Some(&app.client_id), |c| c.revokes += 1);
    let status = StatusCode::from_u16(store.settings.v3_revoke_status).unwrap_or(StatusCode::OK);
    with_meta(status.into_response(), meta)
}
