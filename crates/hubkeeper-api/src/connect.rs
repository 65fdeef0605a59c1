//! Connect sessions over HTTP: `POST /v1/apps/{id}/connect-sessions` (the app's backend asks
//! for a link for one of its customers), `GET /connect/{session_id}` (the customer's browser
//! opens it once and is sent to HubSpot's consent page) and `GET /connect-result` (the plain
//! public "connected / failed" page a callback without a return URL ends on).
//!
//! The browser-facing routes are public and rate limited per client IP like the install path.
//! A refused session link answers the public failure page with its error code (JSON instead
//! when the client asks for `application/json`).

use axum::extract::{Path, State};
use axum::http::{header, Extensions, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hubkeeper_core::{CoreError, NewSession};
use hubkeeper_domain::AppId;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::extract::{JsonBody, Query};
use crate::oauth::limited;
use crate::params::target;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/apps/{id}/connect-sessions", post(create))
        .route("/connect-result", get(result_page))
        .route("/connect/{session_id}", get(open))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    external_ref: String,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    return_url: Option<String>,
    #[serde(default)]
    app_version: Option<String>,
    #[serde(default)]
    expires_in_secs: Option<u64>,
}

/// The public base URL (no trailing slash; empty: relative answers).
fn base(state: &AppState) -> Result<String, ApiError> {
    Ok(state
        .tokens()?
        .public_url
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/')
        .to_owned())
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<JsonBody<CreateSession>, ApiError>,
) -> Result<Response, ApiError> {
    let app_id: AppId = target(&caller, Permission::UseTokens, &id)?;
    // The key's binding first: another app's key learns nothing, not even what its body lacks.
    caller.require_app(app_id)?;
    let JsonBody(body) = body?;
    let services = state.tokens()?;
    let created_by = caller.actor().to_string();
    let created = services
        .oauth
        .create_session(
            app_id,
            NewSession {
                external_ref: body.external_ref,
                metadata: body.metadata,
                return_url: body.return_url,
                app_version: body.app_version,
                expires_in_secs: body.expires_in_secs,
            },
            &created_by,
        )
        .await?;
    // Without a configured public URL, the address the app's backend reached us at.
    let base = match base(&state)? {
        base if !base.is_empty() => base,
        _ => headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
            })
            .map(|h| format!("http://{h}"))
            .unwrap_or_default(),
    };
    let body = json!({
        "session_id": created.session_id,
        "connect_url": format!("{base}{}", created.connect_path),
        "expires_at": created.expires_at,
        "app_id": created.app_id,
        "external_ref": created.external_ref,
        "installation_id": created.installation_id,
    });
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

async fn open(
    State(state): State<AppState>,
    extensions: Extensions,
    headers: HeaderMap,
    Path(session_id): Path<String>,
) -> Result<Response, ApiError> {
    limited(
        &state,
        &extensions,
        crate::client_addr::ClientBucket::OAuthInstall,
    )
    .await?;
    match state.tokens()?.oauth.start_session(&session_id).await {
        Ok(url) => {
            metrics::counter!("hk_oauth_installs_started_total").increment(1);
            Ok((
                [(header::CACHE_CONTROL, "no-store")],
                Redirect::to(url.as_str()),
            )
                .into_response())
        }
        Err(e @ CoreError::ConnectSession(refusal)) => {
            if wants_json(&headers) {
                return Err(e.into());
            }
            let status = ApiError::from(e).status();
            Ok((status, page(Err(refusal.code()), None)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
struct ResultParams {
    status: Option<String>,
    installation_id: Option<String>,
    external_ref: Option<String>,
    error: Option<String>,
}

async fn result_page(Query(p): Query<ResultParams>) -> Response {
    let outcome = match (&p.error, p.status.as_deref()) {
        (Some(code), _) => Err(code.as_str()),
        (None, Some("connected")) => Ok(p.installation_id.as_deref()),
        _ => Err("unknown"),
    };
    page(outcome, p.external_ref.as_deref()).into_response()
}

/// What each failure code tells the person in front of the browser.
fn explain(code: &str) -> &'static str {
    match code {
        "access_denied" => "The connection was cancelled on HubSpot's consent page; nothing was connected.",
        "invalid_state" => "The connection link had expired or was already used. Start again from the app.",
        "missing_code" => "HubSpot did not return an authorisation code. Start again from the app.",
        "redirect_uri_mismatch" => "HubSpot refused the app's redirect URI. The app's operator has to fix its configuration.",
        "invalid_client" => "HubSpot refused the app's credentials. The app's operator has to fix its configuration.",
        "token_exchange_failed" => "HubSpot did not complete the connection. Start again from the app.",
        "account_mismatch" => "This link reconnects another HubSpot account than the one you chose. Start again and pick the account that was connected before.",
        "session_not_found" => "This connection link is not valid. Ask the app for a new one.",
        "session_expired" => "This connection link has expired. Ask the app for a new one.",
        "session_used" => "This connection link was already used. Ask the app for a new one.",
        _ => "The connection did not complete. Start again from the app.",
    }
}

fn escape(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// The plain public outcome page: no dashboard, no login, no script.
fn page(outcome: Result<Option<&str>, &str>, external_ref: Option<&str>) -> Html<String> {
    let (title, body) = match outcome {
        Ok(id) => (
            "Connected",
            format!(
                "<p>Your HubSpot account is connected. You can close this window.</p>{}",
                id.map(|id| format!(
                    "<p class=\"muted\">Reference: <code id=\"installation-id\">{}</code></p>",
                    escape(id)
                ))
                .unwrap_or_default()
            ),
        ),
        Err(code) => (
            "Connection failed",
            format!(
                "<p>{}</p><p class=\"muted\">Error code: <code id=\"error-code\">{}</code></p>",
                explain(code),
                escape(code)
            ),
        ),
    };
    let customer = external_ref
        .map(|r| {
            format!(
                "<p class=\"muted\">Customer: <code id=\"external-ref\">{}</code></p>",
                escape(r)
            )
        })
        .unwrap_or_default();
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/dashboard/css/app.css\"></head>\
         <body class=\"public-page\"><main class=\"public-result\"><h1 id=\"connect-outcome\">{title}</h1>\
         {body}{customer}</main></body></html>"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_page_escapes_what_it_echoes() {
        let Html(html) = page(Err("<script>x</script>"), Some("a\"b"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("a&quot;b"));
        let Html(ok) = page(Ok(Some("0190")), None);
        assert!(ok.contains("Connected") && ok.contains("0190"));
    }

    #[test]
    fn every_callback_code_has_an_explanation() {
        for code in [
            "access_denied",
            "invalid_state",
            "missing_code",
            "redirect_uri_mismatch",
            "invalid_client",
            "token_exchange_failed",
            "account_mismatch",
            "session_not_found",
            "session_expired",
            "session_used",
        ] {
            assert_ne!(explain(code), explain("something else"), "{code}");
        }
    }
}
