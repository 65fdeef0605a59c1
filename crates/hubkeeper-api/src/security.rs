//! Security headers on every response, API and dashboard alike.
//!
//! The dashboard is built so that a strict policy costs nothing: scripts and styles are files
//! served by this binary (no inline code, no CDN), so an injected `<script>` or `style=""` cannot
//! run, the pages cannot be framed (clickjacking on Revoke/Disconnect), and no URL leaks through
//! `Referer`. Responses also default to `Cache-Control: no-store` because most of them carry
//! tenant data; the dashboard's static files set their own caching.

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const HEADERS: [(HeaderName, &str); 6] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    ),
    (
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=(), payment=()",
    ),
];

/// `Strict-Transport-Security` when the public URL is https: browsers then never try plain HTTP
/// for this host again (for a year), so a network attacker cannot strip TLS on a later visit.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";

/// Adds [`STRICT_TRANSPORT_SECURITY`] when the deployment is served over https (its public URL's
/// scheme, the same setting that makes session cookies `Secure`).
pub async fn strict_transport(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    req: Request,
    next: Next,
) -> Response {
    let mut response = next.run(req).await;
    if state.auth().session_settings().secure_cookies == Some(true) {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(STRICT_TRANSPORT_SECURITY),
        );
    }
    response
}

pub async fn apply(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_no_inline_code_and_no_framing() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-eval"));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'self'"));
    }
}
