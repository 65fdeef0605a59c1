//! Browsers attach cookies on their own, so a request authenticated by the cookie alone proves
//! nothing about *which page* sent it. Every state-changing request authenticated that way must
//! also carry the session's CSRF token in `x-csrf-token` (a synchronizer token derived from the
//! session secret, handed out by `GET /auth/me`, which other origins cannot read), and must not
//! come from another origin. A bearer key needs no such token: browsers never attach
//! `Authorization` headers by themselves.

use axum::http::{header, HeaderMap, Method};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Header carrying the CSRF token on cookie-authenticated state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// GET, HEAD and OPTIONS change nothing, so they need no CSRF token.
pub fn is_safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The CSRF token of a session: derived from its secret, so it needs no storage, yet cannot be
/// computed without the `HttpOnly` cookie.
pub fn token_for(secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"hubkeeper csrf v1\0");
    hasher.update(secret.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hasher.finalize())
}

/// `POST /auth/login` has no session yet, hence no CSRF token: it refuses any `Origin` but its
/// own host, including the opaque `null` of sandboxed frames and malformed values, so no other
/// page can log a browser in (login CSRF: the victim working in the attacker's session).
/// Clients that send no `Origin` (scripts, curl) are not browsers posting from elsewhere.
pub fn check_login_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    if origin_host.is_none() || host.is_none() || origin_host != host {
        return Err(ApiError::forbidden(
            "cross-origin login refused: log in from the dashboard's own page",
        ));
    }
    Ok(())
}

/// Refuses a cross-origin request, or one without the session's token.
pub fn check(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin_host = origin.split_once("://").map(|(_, rest)| rest);
        if origin != "null" && origin_host.is_some() && origin_host != host {
            return Err(ApiError::forbidden(
                "cross-origin request refused: the dashboard only accepts requests from its own pages",
            ));
        }
    }
    let presented = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let matches: bool = presented.as_bytes().ct_eq(expected.as_bytes()).into();
    if presented.is_empty() || !matches {
        return Err(ApiError::forbidden(format!(
            "missing or wrong CSRF token: send the token from GET /auth/me in the {CSRF_HEADER} header"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::sessions::tests::headers;
    use axum::http::StatusCode;

    #[test]
    fn csrf_tokens_are_checked_exactly_and_cross_origin_is_refused() {
        let token = token_for(&"c".repeat(43));
        assert_ne!(token, token_for(&"d".repeat(43)));
        let ok = headers(&[("x-csrf-token", &token), ("host", "h:1")]);
        assert!(check(&ok, &token).is_ok());
        let same_origin = headers(&[
            ("x-csrf-token", &token),
            ("host", "h:1"),
            ("origin", "http://h:1"),
        ]);
        assert!(check(&same_origin, &token).is_ok());
        let forbidden = |h: &HeaderMap| check(h, &token).err().map(|e| e.status());
        let wrong = headers(&[("x-csrf-token", "nope"), ("host", "h:1")]);
        assert_eq!(forbidden(&wrong), Some(StatusCode::FORBIDDEN));
        assert_eq!(
            forbidden(&headers(&[("host", "h:1")])),
            Some(StatusCode::FORBIDDEN)
        );
        let cross = headers(&[
            ("x-csrf-token", &token),
            ("host", "h:1"),
            ("origin", "https://evil.example"),
        ]);
        assert_eq!(forbidden(&cross), Some(StatusCode::FORBIDDEN));
    }

    #[test]
    fn login_accepts_only_its_own_origin_or_none() {
        let status = |h: &HeaderMap| check_login_origin(h).err().map(|e| e.status());
        assert_eq!(
            status(&headers(&[("host", "h:1")])),
            None,
            "no Origin: a script"
        );
        assert_eq!(
            status(&headers(&[("host", "h:1"), ("origin", "http://h:1")])),
            None
        );
        for origin in [
            "https://evil.example",
            "null",
            "h:1",
            "http://h:2",
            "http://h:1.evil",
        ] {
            assert_eq!(
                status(&headers(&[("host", "h:1"), ("origin", origin)])),
                Some(StatusCode::FORBIDDEN),
                "{origin}"
            );
        }
        assert_eq!(
            status(&headers(&[("origin", "http://h:1")])),
            Some(StatusCode::FORBIDDEN),
            "no Host to compare with"
        );
    }
}
