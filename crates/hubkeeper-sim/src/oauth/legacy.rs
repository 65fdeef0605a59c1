//! The legacy `v1` endpoints: access and refresh token information, refresh token deletion.

use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::model::RefreshTokenState;
use crate::respond::{api_error, oauth_error, with_meta, LogMeta};
use crate::state::{AccessCheck, InstallKey, SimState, Store};
use crate::tokens::TokenHash;

fn not_found(message: &str) -> Response {
    api_error(StatusCode::NOT_FOUND, message, "OBJECT_NOT_FOUND")
}

/// `GET /oauth/v1/access-tokens/{token}`.
pub(crate) async fn legacy_access_token_info(
    State(state): State<SimState>,
    Path(token): Path<String>,
) -> Response {
    let now = Instant::now();
    let hash = TokenHash::of(&token);
    let mut store = state.lock();
    let mut meta = LogMeta {
        token_hash: Some(hash.short()),
        ..LogMeta::default()
    };
    let response = match store.check_access_token(&hash, now) {
        AccessCheck::Live(rec) => {
            meta.hub_id = Some(rec.key.hub_id);
            meta.client_id = Some(rec.key.client_id.clone());
            Json(json!({
                "token": token,
                "user": rec.user.email,
                "hub_domain": store.account_domain(rec.key.hub_id),
                "scopes": rec.scopes,
                "hub_id": rec.key.hub_id,
                "app_id": rec.app_id,
                "expires_in": rec.expires_at.saturating_duration_since(now).as_secs(),
                "user_id": rec.user.user_id,
                "token_type": "access",
                "is_private_distribution": false,
            }))
            .into_response()
        }
        AccessCheck::Expired { rec, ago } => {
            meta.hub_id = Some(rec.key.hub_id);
            meta.client_id = Some(rec.key.client_id.clone());
            expired_error(ago)
        }
        AccessCheck::Dead(rec) => {
            meta.hub_id = Some(rec.key.hub_id);
            meta.client_id = Some(rec.key.client_id.clone());
            not_found("missing or unknown access token")
        }
        AccessCheck::Unknown => not_found("missing or unknown access token"),
    };
    store
        .counters
        .bump(meta.hub_id, meta.client_id.as_deref(), |c| {
            c.introspections += 1
        });
    with_meta(response, meta)
}

pub(crate) fn expired_error(ago: std::time::Duration) -> Response {
    api_error(
        StatusCode::UNAUTHORIZED,
        &format!(
            "The OAuth token used to make this call expired {} minute(s) ago.",
            ago.as_secs() / 60
        ),
        "EXPIRED_AUTHENTICATION",
    )
}

fn refresh_not_found() -> Response {
    oauth_error(
        StatusCode::NOT_FOUND,
        "BAD_REFRESH_TOKEN",
        "missing or unknown refresh token",
        "invalid_grant",
    )
}

/// The refresh token of a legacy call: notes its account and app in `meta` when it is known,
/// and answers its installation when HubSpot would still accept it (active, or superseded
/// within its grace).
fn usable_refresh_token(
    store: &Store,
    hash: &TokenHash,
    now: Instant,
    meta: &mut LogMeta,
) -> Option<InstallKey> {
    let rec = store.refresh_tokens.get(hash)?;
    meta.hub_id = Some(rec.key.hub_id);
    meta.client_id = Some(rec.key.client_id.clone());
    matches!(
        store.refresh_state(rec, now),
        RefreshTokenState::Active | RefreshTokenState::Superseded
    )
    .then(|| rec.key.clone())
}

/// `GET /oauth/v1/refresh-tokens/{token}`.
pub(crate) async fn legacy_refresh_token_info(
    State(state): State<SimState>,
    Path(token): Path<String>,
) -> Response {
    let now = Instant::now();
    let hash = TokenHash::of(&token);
    let mut store = state.lock();
    let mut meta = LogMeta {
        token_hash: Some(hash.short()),
        ..LogMeta::default()
    };
    let key = usable_refresh_token(&store, &hash, now, &mut meta);
    let response = match key
        .as_ref()
        .and_then(|key| Some((key, store.installation(key)?)))
    {
        Some((key, inst)) => Json(json!({
            "token": token,
            "user": inst.user.email,
            "hub_domain": store.account_domain(key.hub_id),
            "scopes": inst.scopes,
            "hub_id": key.hub_id,
            "client_id": key.client_id,
            "user_id": inst.user.user_id,
            "token_type": "refresh",
        }))
        .into_response(),
        None => refresh_not_found(),
    };
    store
        .counters
        .bump(meta.hub_id, meta.client_id.as_deref(), |c| {
            c.introspections += 1
        });
    with_meta(response, meta)
}

/// `DELETE /oauth/v1/refresh-tokens/{token}`: kills the refresh token only; access tokens already
/// issued keep working until they expire, and the app stays installed (HubSpot's documented
/// behaviour).
pub(crate) async fn legacy_revoke(
    State(state): State<SimState>,
    Path(token): Path<String>,
) -> Response {
    let now = Instant::now();
    let hash = TokenHash::of(&token);
    let mut store = state.lock();
    let mut meta = LogMeta {
        token_hash: Some(hash.short()),
        ..LogMeta::default()
    };
    let usable = usable_refresh_token(&store, &hash, now, &mut meta).is_some();
    let response = if usable {
        if let Some(rec) = store.refresh_tokens.get_mut(&hash) {
            rec.revoked = true;
        }
        StatusCode::NO_CONTENT.into_response()
    } else {
        refresh_not_found()
    };
    store
        .counters
        .bump(meta.hub_id, meta.client_id.as_deref(), |c| c.revokes += 1);
    with_meta(response, meta)
}
