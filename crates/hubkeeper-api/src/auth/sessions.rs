//! How dashboard session cookies are issued and read.
//!
//! A browser must not keep an API key in JavaScript-readable storage, so the dashboard trades the
//! key once (`POST /auth/login`) for a random session secret in an `HttpOnly`, `SameSite=Strict`
//! cookie. The session rows live in Postgres (`hubkeeper_core::access::sessions`), not cached,
//! because the dashboard is not a hot path.

use std::time::Duration;

use axum::http::{header, HeaderMap};
use secrecy::{ExposeSecret, SecretString};

/// Name of the dashboard's session cookie. The `__Host-` prefix makes browsers accept it only
/// with `Secure`, `Path=/` and no `Domain`, so neither a sibling subdomain nor a plain-HTTP
/// answer can plant or overwrite it (session fixation).
pub const SESSION_COOKIE: &str = "__Host-hk_session";

/// The cookie's name where browsers allow plain HTTP (a loopback host without a configured
/// public URL): `__Host-` needs `Secure`. Never accepted where the cookie is `Secure`.
pub const DEV_SESSION_COOKIE: &str = "hk_session";

/// The session cookie's name for a request whose cookies are (or are not) `Secure`.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        SESSION_COOKIE
    } else {
        DEV_SESSION_COOKIE
    }
}

/// Default session lifetime: a working day.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// How session cookies are issued.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Lifetime of a session from login (no sliding renewal: a stolen cookie dies on schedule).
    pub ttl: Duration,
    /// `Some(secure)` when the public URL is configured (its scheme decides); `None` decides per
    /// request: `Secure` unless the request's host is a loopback name, where browsers allow
    /// plain-HTTP development.
    pub secure_cookies: Option<bool>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_SESSION_TTL,
            secure_cookies: None,
        }
    }
}

/// The session cookie's value, if the request carries one under the name this request's cookies
/// get (see [`cookie_name`]): on a secure host a plain `hk_session` is no session.
pub fn session_cookie<'a>(headers: &'a HeaderMap, settings: &SessionSettings) -> Option<&'a str> {
    let wanted = cookie_name(cookie_is_secure(settings, headers));
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value.trim())
}

/// Whether cookies for this request get `Secure`: per configuration, else by host.
pub fn cookie_is_secure(settings: &SessionSettings, headers: &HeaderMap) -> bool {
    if let Some(secure) = settings.secure_cookies {
        return secure;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    !is_loopback_host(host)
}

fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1") || name.ends_with(".localhost")
}

/// `Set-Cookie` value opening a session.
pub fn set_cookie(secret: &SecretString, max_age: Duration, secure: bool) -> String {
    format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        cookie_name(secure),
        secret.expose_secret(),
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` value removing the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        cookie_name(secure),
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::http::HeaderValue;

    pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let secret = "b".repeat(43);
        let by_host = SessionSettings::default();
        let local = |cookie: &str| headers(&[("cookie", cookie), ("host", "localhost:8080")]);
        let public = |cookie: &str| headers(&[("cookie", cookie), ("host", "hk.example.com")]);
        let plain = format!("theme=dark; hk_session={secret}; x=1");
        let prefixed = format!("theme=dark; __Host-hk_session={secret}; x=1");
        assert_eq!(
            session_cookie(&local(&plain), &by_host),
            Some(secret.as_str())
        );
        assert_eq!(
            session_cookie(&public(&prefixed), &by_host),
            Some(secret.as_str())
        );
        // A planted plain cookie is no session where cookies are Secure, and the reverse.
        assert_eq!(session_cookie(&public(&plain), &by_host), None);
        assert_eq!(session_cookie(&local(&prefixed), &by_host), None);
        assert_eq!(session_cookie(&local("hk_sessionx=1"), &by_host), None);
    }

    #[test]
    fn cookies_are_secure_except_on_loopback_unless_configured() {
        let by_host = SessionSettings::default();
        for host in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost",
        ] {
            assert!(
                !cookie_is_secure(&by_host, &headers(&[("host", host)])),
                "{host}"
            );
        }
        assert!(cookie_is_secure(
            &by_host,
            &headers(&[("host", "hubkeeper.example.com")])
        ));
        assert!(cookie_is_secure(&by_host, &HeaderMap::new()));
        let forced = SessionSettings {
            secure_cookies: Some(true),
            ..SessionSettings::default()
        };
        assert!(cookie_is_secure(
            &forced,
            &headers(&[("host", "localhost:8080")])
        ));
        let cookie = set_cookie(
            &SecretString::from("s".repeat(43)),
            Duration::from_secs(60),
            true,
        );
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(cookie.starts_with("__Host-hk_session=") && cookie.contains("; Path=/;"));
        assert!(cookie.ends_with("; Secure") && !cookie.contains("Domain"));
        assert!(clear_cookie(true).starts_with("__Host-hk_session=;"));
        assert!(clear_cookie(false).starts_with("hk_session=;"));
    }
}
