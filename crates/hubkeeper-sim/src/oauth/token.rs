//! The token endpoint of both generations: authorization-code exchange and refresh.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::{authenticate_client, form_map};
use crate::config::{AppSpec, RotationMode};
use crate::model::RefreshTokenState;
use crate::respond::{oauth_error, with_meta, LogMeta};
use crate::state::{deadline, InstallKey, SimState, Store};
use crate::tokens::TokenHash;

/// Success body of both token endpoint generations.
#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
    token_type: &'static str,
    token_use: &'static str,
    hub_id: u64,
    user_id: u64,
    scopes: Vec<String>,
}

fn token_ok(body: TokenResponse, meta: LogMeta) -> Response {
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    with_meta(response, meta)
}

/// `POST /oauth/v1/token`, `/oauth/2026-03/token` and `/oauth/v3/token`.
pub(crate) async fn token(State(state): State<SimState>, body: Bytes) -> Response {
    let Some(form) = form_map(&body) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "the request body must be application/x-www-form-urlencoded",
            "invalid_request",
        );
    };
    let grant_type = form.get("grant_type").map(String::as_str).unwrap_or("");
    match grant_type {
        "authorization_code" | "refresh_token" => {}
        "" => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "BAD_GRANT_TYPE",
                "missing grant_type",
                "invalid_request",
            )
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "BAD_GRANT_TYPE",
                "unsupported grant_type",
                "unsupported_grant_type",
            )
        }
    }
    let mut store = state.lock();
    let app = match authenticate_client(&store, &form) {
        Ok(app) => app,
        Err(e) => {
            let response = e.response();
            let client_id = form
                .get("client_id")
                .filter(|c| store.apps.contains_key(*c))
                .cloned();
            store.counters.bump(None, client_id.as_deref(), |c| {
                if grant_type == "refresh_token" {
                    c.refresh_calls += 1;
                    c.refresh_failures += 1;
                } else {
                    c.code_exchanges += 1;
                    c.code_exchange_failures += 1;
                }
            });
            return with_meta(
                response,
                LogMeta {
                    client_id,
                    ..LogMeta::default()
                },
            );
        }
    };
    if grant_type == "authorization_code" {
        exchange_code(&mut store, &app, &form)
    } else {
        refresh(&mut store, &app, &form)
    }
}

fn exchange_code(store: &mut Store, app: &AppSpec, form: &HashMap<String, String>) -> Response {
    let now = Instant::now();
    let code = form.get("code").map(String::as_str).unwrap_or("");
    let hash = TokenHash::of(code);
    let mut meta = LogMeta {
        client_id: Some(app.client_id.clone()),
        token_hash: (!code.is_empty()).then(|| hash.short()),
        ..LogMeta::default()
    };
    let checked = match store.codes.get_mut(&hash) {
        _ if code.is_empty() => Err(("BAD_AUTH_CODE", "missing or unknown auth code")),
        None => Err(("BAD_AUTH_CODE", "missing or unknown auth code")),
        Some(c) if c.client_id != app.client_id => Err((
            "BAD_AUTH_CODE",
            "auth code was issued to a different client",
        )),
        Some(c) => {
            meta.hub_id = Some(c.hub_id);
            if c.used {
                Err(("BAD_AUTH_CODE", "auth code has already been used"))
            } else if c.expires_at <= now {
                Err(("BAD_AUTH_CODE", "auth code has expired"))
            } else if form.get("redirect_uri") != Some(&c.redirect_uri) {
                Err((
                    "BAD_REDIRECT_URI",
                    "redirect_uri does not match the one used for the authorization request",
                ))
            } else {
                c.used = true;
                Ok((
                    InstallKey {
                        client_id: c.client_id.clone(),
                        hub_id: c.hub_id,
                    },
                    c.user.clone(),
                    c.scopes.clone(),
                ))
            }
        }
    };
    let fail = |store: &mut Store, meta: LogMeta, status: &str, message: &str| {
        store.counters.bump(meta.hub_id, Some(&app.client_id), |c| {
            c.code_exchanges += 1;
            c.code_exchange_failures += 1;
        });
        with_meta(
            oauth_error(StatusCode::BAD_REQUEST, status, message, "invalid_grant"),
            meta,
        )
    };
    let key = match checked {
        Ok((key, user, scopes)) => {
            // The tokens carry what this consent granted, even if a later consent changed the
            // installation in between.
            if let Some(inst) = store.installations.get_mut(&key) {
                inst.user = user;
                inst.scopes = scopes;
            }
            key
        }
        Err((status, message)) => return fail(store, meta, status, message),
    };
    let Some((access_token, expires_in)) = store.issue_access_token(&key, now) else {
        return fail(
            store,
            meta,
            "BAD_AUTH_CODE",
            "the installation no longer exists",
        );
    };
    let Some(refresh_token) = store.issue_refresh_token(&key) else {
        return fail(
            store,
            meta,
            "BAD_AUTH_CODE",
            "the installation no longer exists",
        );
    };
    store
        .counters
        .bump(Some(key.hub_id), Some(&app.client_id), |c| {
            c.code_exchanges += 1
        });
    let (user_id, scopes) = match store.installation(&key) {
        Some(i) => (i.user.user_id, i.scopes.clone()),
        None => (0, Vec::new()),
    };
    token_ok(
        TokenResponse {
            access_token,
            refresh_token,
            expires_in,
            token_type: "bearer",
            token_use: "access_token",
            hub_id: key.hub_id,
            user_id,
            scopes,
        },
        meta,
    )
}

fn refresh(store: &mut Store, app: &AppSpec, form: &HashMap<String, String>) -> Response {
    let now = Instant::now();
    let presented = form.get("refresh_token").map(String::as_str).unwrap_or("");
    let hash = TokenHash::of(presented);
    let mut meta = LogMeta {
        client_id: Some(app.client_id.clone()),
        token_hash: (!presented.is_empty()).then(|| hash.short()),
        ..LogMeta::default()
    };
    let fail = |store: &mut Store, meta: LogMeta| {
        store.counters.bump(meta.hub_id, Some(&app.client_id), |c| {
            c.refresh_calls += 1;
            c.refresh_failures += 1;
        });
        with_meta(
            oauth_error(
                StatusCode::BAD_REQUEST,
                "BAD_REFRESH_TOKEN",
                "missing or unknown refresh token",
                "invalid_grant",
            ),
            meta,
        )
    };
    let key = match store.refresh_tokens.get_mut(&hash) {
        Some(rec) if !presented.is_empty() && rec.key.client_id == app.client_id => {
            rec.refresh_calls += 1;
            rec.key.clone()
        }
        _ => return fail(store, meta),
    };
    meta.hub_id = Some(key.hub_id);
    store.record_refresh_call(&key, now);
    let usable = store
        .refresh_tokens
        .get(&hash)
        .map(|rec| store.refresh_state(rec, now))
        .is_some_and(|s| matches!(s, RefreshTokenState::Active | RefreshTokenState::Superseded));
    if !usable {
        return fail(store, meta);
    }
    let Some((access_token, expires_in)) = store.issue_access_token(&key, now) else {
        return fail(store, meta);
    };
    let refresh_token = match store.settings.rotation {
        RotationMode::Off => presented.to_string(),
        RotationMode::On { grace } => {
            let Some(new) = store.issue_refresh_token(&key) else {
                return fail(store, meta);
            };
            if let Some(rec) = store.refresh_tokens.get_mut(&hash) {
                let dies = deadline(now, grace);
                rec.dies_at = Some(rec.dies_at.map_or(dies, |d| d.min(dies)));
            }
            store
                .counters
                .bump(Some(key.hub_id), Some(&app.client_id), |c| {
                    c.rotated_tokens += 1
                });
            new
        }
    };
    store
        .counters
        .bump(Some(key.hub_id), Some(&app.client_id), |c| {
            c.refresh_calls += 1
        });
    let (user_id, scopes) = match store.installation(&key) {
        Some(i) => (i.user.user_id, i.scopes.clone()),
        None => (0, Vec::new()),
    };
    token_ok(
        TokenResponse {
            access_token,
            refresh_token,
            expires_in,
            token_type: "bearer",
            token_use: "access_token",
            hub_id: key.hub_id,
            user_id,
            scopes,
        },
        meta,
    )
}
