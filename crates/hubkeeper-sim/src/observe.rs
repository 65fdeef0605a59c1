//! The layer in front of every HubSpot endpoint: applies injected faults and writes the request
//! log. Control-API requests pass straight through, so tests never fault themselves.

use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use crate::crm::bearer;
use crate::model::{FaultEndpoint, RequestLogEntry};
use crate::oauth::form_map;
use crate::respond::{dropped_connection, injected_error, LogMeta};
use crate::state::{SimState, Store, TerminalFault};
use crate::tokens::TokenHash;

const MAX_BODY: usize = 1 << 20;

pub(crate) fn classify(method: &Method, path: &str) -> FaultEndpoint {
    let p = path.trim_end_matches('/');
    let token_path = matches!(
        p,
        "/oauth/v1/token" | "/oauth/2026-03/token" | "/oauth/v3/token"
    );
    if token_path {
        FaultEndpoint::Token
    } else if p.ends_with("/token/introspect")
        || (method == Method::GET
            && (p.starts_with("/oauth/v1/access-tokens/")
                || p.starts_with("/oauth/v1/refresh-tokens/")))
    {
        FaultEndpoint::Introspect
    } else if p.ends_with("/token/revoke")
        || (method == Method::DELETE && p.starts_with("/oauth/v1/refresh-tokens/"))
    {
        FaultEndpoint::Revoke
    } else if p.starts_with("/crm/") {
        FaultEndpoint::Crm
    } else if p.starts_with("/oauth/") && (p.ends_with("/authorize") || p.ends_with("/decision")) {
        FaultEndpoint::Authorize
    } else {
        FaultEndpoint::Any
    }
}

/// The token carried in a legacy token path (`/oauth/v1/{access,refresh}-tokens/{token}`).
fn path_token(path: &str) -> Option<&str> {
    path.strip_prefix("/oauth/v1/access-tokens/")
        .or_else(|| path.strip_prefix("/oauth/v1/refresh-tokens/"))
        .filter(|t| !t.is_empty())
}

/// Replaces a token in the path with its hash prefix, so the log is safe to print.
fn redact_path(path: &str) -> String {
    match path_token(path) {
        Some(token) => {
            let prefix = &path[..path.len() - token.len()];
            format!("{prefix}[sha256:{}]", TokenHash::of(token).short())
        }
        None => path.to_string(),
    }
}

/// Works out which account a request concerns before its handler runs, so account-scoped fault
/// rules can match it.
fn resolve_account(store: &Store, endpoint: FaultEndpoint, req: &Request, body: &[u8]) -> LogMeta {
    let mut meta = LogMeta::default();
    let token_owner = |token: &str, meta: &mut LogMeta| {
        let hash = TokenHash::of(token);
        meta.token_hash = Some(hash.short());
        if let Some(rec) = store.access_tokens.get(&hash) {
            meta.hub_id = Some(rec.key.hub_id);
            meta.client_id = Some(rec.key.client_id.clone());
        } else if let Some(rec) = store.refresh_tokens.get(&hash) {
            meta.hub_id = Some(rec.key.hub_id);
            meta.client_id = Some(rec.key.client_id.clone());
        } else if let Some(code) = store.codes.get(&hash) {
            meta.hub_id = Some(code.hub_id);
            meta.client_id = Some(code.client_id.clone());
        }
    };
    let path = req.uri().path();
    match endpoint {
        FaultEndpoint::Token | FaultEndpoint::Introspect | FaultEndpoint::Revoke => {
            if let Some(token) = path_token(path) {
                token_owner(token, &mut meta);
            } else if let Some(form) = form_map(body) {
                let credential = form
                    .get("refresh_token")
                    .or_else(|| form.get("code"))
                    .or_else(|| form.get("token"));
                if let Some(token) = credential {
                    token_owner(token, &mut meta);
                }
                if meta.client_id.is_none() {
                    meta.client_id = form.get("client_id").cloned();
                }
            }
        }
        FaultEndpoint::Crm => {
            if let Some(token) = bearer(req.headers()) {
                token_owner(token, &mut meta);
            }
        }
        FaultEndpoint::Authorize => {
            let mut segments = path.trim_start_matches('/').split('/');
            if let (Some("oauth"), Some(id)) = (segments.next(), segments.next()) {
                meta.hub_id = id.parse().ok();
            }
            let query = req.uri().query().unwrap_or_default();
            meta.client_id = form_map(query.as_bytes()).and_then(|q| q.get("client_id").cloned());
        }
        FaultEndpoint::Any => {}
    }
    meta
}

/// Sleeps unless the simulator shuts down first.
async fn pause(state: &SimState, duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = state.inner.shutdown.cancelled() => {}
    }
}

pub(crate) async fn observe(State(state): State<SimState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path == "/_sim" || path.starts_with("/_sim/") {
        return next.run(req).await;
    }
    let started = Instant::now();
    let method = req.method().clone();
    let endpoint = classify(&method, &path);

    let has_faults = state.lock().has_faults_for(endpoint);
    let (req, resolved) = if has_faults {
        let (parts, body) = req.into_parts();
        let bytes = match to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response()
            }
        };
        let req = Request::from_parts(parts, Body::from(bytes.clone()));
        let resolved = resolve_account(&state.lock(), endpoint, &req, &bytes);
        (req, resolved)
    } else {
        (req, LogMeta::default())
    };
    let action = if has_faults {
        state.lock().decide_faults(endpoint, resolved.hub_id)
    } else {
        Default::default()
    };
    if !action.latency.is_zero() {
        pause(&state, action.latency).await;
    }
    let response = match action.terminal {
        None => next.run(req).await,
        Some(TerminalFault::Error(status)) => injected_error(status),
        Some(TerminalFault::Hang(duration)) => {
            pause(&state, duration).await;
            dropped_connection()
        }
        Some(TerminalFault::Down) => dropped_connection(),
    };

    let meta = response
        .extensions()
        .get::<LogMeta>()
        .cloned()
        .unwrap_or_default();
    let fault = (!action.labels.is_empty()).then(|| action.labels.join(", "));
    let entry = RequestLogEntry {
        seq: 0,
        at: Utc::now(),
        method: method.to_string(),
        path: redact_path(&path),
        status: response.status().as_u16(),
        hub_id: meta.hub_id.or(resolved.hub_id),
        client_id: meta.client_id.or(resolved.client_id),
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        fault,
        token_hash: meta.token_hash.or(resolved.token_hash),
    };
    tracing::debug!(
        method = %entry.method,
        path = %entry.path,
        status = entry.status,
        hub_id = ?entry.hub_id,
        latency_ms = entry.latency_ms,
        fault = ?entry.fault,
        "hubspot sim request"
    );
    state.lock().push_log(entry);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_endpoints() {
        assert_eq!(
            classify(&Method::POST, "/oauth/v1/token"),
            FaultEndpoint::Token
        );
        assert_eq!(
            classify(&Method::POST, "/oauth/v3/token"),
            FaultEndpoint::Token
        );
        assert_eq!(
            classify(&Method::POST, "/oauth/2026-03/token/introspect"),
            FaultEndpoint::Introspect
        );
        assert_eq!(
            classify(&Method::GET, "/oauth/v1/refresh-tokens/abc"),
            FaultEndpoint::Introspect
        );
        assert_eq!(
            classify(&Method::DELETE, "/oauth/v1/refresh-tokens/abc"),
            FaultEndpoint::Revoke
        );
        assert_eq!(
            classify(&Method::POST, "/oauth/v3/token/revoke"),
            FaultEndpoint::Revoke
        );
        assert_eq!(
            classify(&Method::GET, "/crm/v3/objects/contacts"),
            FaultEndpoint::Crm
        );
        assert_eq!(
            classify(&Method::GET, "/oauth/42/authorize"),
            FaultEndpoint::Authorize
        );
        assert_eq!(classify(&Method::GET, "/nope"), FaultEndpoint::Any);
    }

    #[test]
    fn redacts_tokens_in_paths() {
        let p = redact_path("/oauth/v1/refresh-tokens/na1-secret-value");
        assert!(!p.contains("secret"), "{p}");
        assert!(p.starts_with("/oauth/v1/refresh-tokens/[sha256:"));
        assert_eq!(
            redact_path("/crm/v3/objects/contacts"),
            "/crm/v3/objects/contacts"
        );
    }
}
