//! Dashboard login, logout and "who am I": the only place an API key is traded for a session
//! cookie. See [`super::sessions`] and [`super::csrf`] for why they look the way they do.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::sessions::{clear_cookie, cookie_is_secure, session_cookie, set_cookie};
use super::{authenticate, AuthMethod, Authenticated, Permission, Role};
use crate::error::ApiError;
use crate::request::RequestId;
use crate::state::AppState;
use hubkeeper_domain::metadata::Actor;
use hubkeeper_domain::operations::LogInRefusal;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
        .route("/auth/session", get(session_state))
}

#[derive(Deserialize)]
struct LoginRequest {
    api_key: String,
}

/// What the dashboard learns about its user: enough to adapt the UI, never the key itself.
#[derive(Debug, Serialize)]
pub struct Me {
    pub key_id: String,
    pub key_name: String,
    pub role: Role,
    pub permissions: Vec<Permission>,
    /// `session` or `api_key`.
    pub auth: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_expires_at: Option<DateTime<Utc>>,
}

/// Trades an API key for a session cookie. A JSON body is what the dashboard sends; a form post
/// (`api_key=…`) works too and is answered with a redirect to the dashboard.
async fn login(
    State(state): State<AppState>,
    request_id: RequestId,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    super::csrf::check_login_origin(&headers)?;
    // Every attempt counts, per client and shared by every API process: guessing keys from
    // one address (or one IPv6 /64) stops at the limit however many replicas run.
    let client = crate::client_addr::client_addr(&extensions);
    state.clients().check_login(client).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let is_form = content_type.starts_with("application/x-www-form-urlencoded");
    let request: LoginRequest = if is_form {
        serde_urlencoded::from_bytes(&body).map_err(|_| {
            ApiError::bad_request("expected a form field `api_key` with your API key")
        })?
    } else if content_type.starts_with("application/json") {
        crate::extract::parse_json_object(&body)
            .map_err(|_| ApiError::bad_request("expected JSON `{\"api_key\": \"hk_…\"}`"))?
    } else {
        return Err(ApiError::bad_request(
            "send the API key as JSON `{\"api_key\": …}` or as a form field `api_key`",
        ));
    };
    let auth = state.auth();
    let Some(caller) = auth.verify(&request.api_key).await? else {
        tracing::info!("dashboard login refused: unknown, malformed or revoked key");
        record_refusal(
            &state,
            LogInRefusal::UnknownKey,
            &request.api_key,
            client.0,
            &request_id.metadata(Actor::Anonymous),
        )
        .await;
        return Err(ApiError::unauthorized(
            "this API key is unknown or revoked: check it, or ask an admin for a new one",
        ));
    };
    if !caller.role.allows(Permission::Read) {
        record_refusal(
            &state,
            LogInRefusal::RoleNotAllowed,
            &request.api_key,
            client.0,
            &request_id.metadata(caller.actor()),
        )
        .await;
        return Err(ApiError::forbidden(format!(
            "{} keys are for the app's backend and cannot open the dashboard; use an admin, operator or auditor key",
            caller.role.as_str()
        )));
    }
    // Recorded before the session exists: no log-in without its event.
    state
        .audit()
        .logged_in(
            &caller.key_id,
            Some(client.0),
            &request_id.metadata(caller.actor()),
        )
        .await?;
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let (session, csrf_token) = auth.start_session(&caller, user_agent).await?;
    let secure = cookie_is_secure(auth.session_settings(), &headers);
    let cookie = set_cookie(&session.secret, auth.session_settings().ttl, secure);
    let cookie = HeaderValue::from_str(&cookie)
        .map_err(|_| ApiError::internal("session cookie is not a valid header"))?;
    tracing::info!(key_id = %caller.key_id, role = caller.role.as_str(), "dashboard login");
    let mut response = if is_form {
        Redirect::to("/dashboard").into_response()
    } else {
        Json(Me {
            permissions: caller.role.permissions(),
            key_id: caller.key_id,
            key_name: caller.key_name,
            role: caller.role,
            auth: "session",
            csrf_token: Some(csrf_token),
            session_expires_at: Some(session.expires_at),
        })
        .into_response()
    };
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// Records a refused log-in. The refusal is answered whatever happens here: a store that cannot
/// record it is logged, never turned into a different answer for the client.
async fn record_refusal(
    state: &AppState,
    refusal: LogInRefusal,
    presented: &str,
    client: std::net::IpAddr,
    metadata: &hubkeeper_domain::metadata::EventMetadata,
) {
    if let Err(e) = state
        .audit()
        .log_in_failed(refusal, presented, Some(client), metadata)
        .await
    {
        tracing::warn!(error = %e, "refused log-in not recorded");
    }
}

/// Ends the session and removes the cookie. A session that has already ended just loses its
/// cookie; a live one must prove the request came from the dashboard (CSRF token).
async fn logout(
    State(state): State<AppState>,
    request_id: RequestId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = state.auth();
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(ApiError::bad_request(
            "logout ends a dashboard session; an API key is ended with `DELETE /v1/keys/{id}` or `hubkeeper admin revoke-key`",
        ));
    }
    if let Some(secret) = session_cookie(&headers, auth.session_settings()) {
        match authenticate(auth, &axum::http::Method::POST, &headers).await {
            Ok(who) => {
                state
                    .audit()
                    .logged_out(&who.caller.key_id, &request_id.metadata(who.caller.actor()))
                    .await?;
                auth.end_session(secret).await?;
                tracing::info!(key_id = %who.caller.key_id, "dashboard logout");
            }
            Err(e) if e.status() == StatusCode::UNAUTHORIZED => {}
            Err(other) => return Err(other),
        }
    }
    let secure = cookie_is_secure(auth.session_settings(), &headers);
    let cookie = HeaderValue::from_str(&clear_cookie(secure))
        .map_err(|_| ApiError::internal("session cookie is not a valid header"))?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// Whether this browser has a session, without an error when it has none: the dashboard asks on
/// every page load, and "not logged in" is an expected answer there, not a failure.
async fn session_state(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    if session_cookie(&headers, state.auth().session_settings()).is_none() {
        return Ok(Json(serde_json::json!({ "authenticated": false })));
    }
    match authenticate(state.auth(), &axum::http::Method::GET, &headers).await {
        Ok(who) if matches!(who.method, AuthMethod::Session { .. }) => {
            let mut value = serde_json::to_value(me_of(who))
                .map_err(|e| ApiError::internal(format!("session view: {e}")))?;
            value["authenticated"] = serde_json::Value::Bool(true);
            Ok(Json(value))
        }
        Ok(_) => Ok(Json(serde_json::json!({ "authenticated": false }))),
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => {
            Ok(Json(serde_json::json!({ "authenticated": false })))
        }
        Err(other) => Err(other),
    }
}

async fn me(who: Authenticated) -> Json<Me> {
    Json(me_of(who))
}

fn me_of(who: Authenticated) -> Me {
    let (auth, csrf_token, session_expires_at) = match who.method {
        AuthMethod::ApiKey => ("api_key", None, None),
        AuthMethod::Session {
            expires_at,
            csrf_token,
        } => ("session", Some(csrf_token), Some(expires_at)),
    };
    Me {
        permissions: who.caller.role.permissions(),
        key_id: who.caller.key_id,
        key_name: who.caller.key_name,
        role: who.caller.role,
        auth,
        csrf_token,
        session_expires_at,
    }
}
