//! The one error type of the HubSpot layer, and the mapping from HubSpot's two error body shapes.
//!
//! HubSpot's token endpoints answer in a legacy shape
//! (`{"status":"BAD_REFRESH_TOKEN","message":…,"correlationId":…}`) and, since the RFC 6749
//! alignment, may add `error`/`error_description`. Both are parsed; a recognised legacy status
//! wins because it is more specific than the RFC code (`invalid_grant` covers codes, refresh
//! tokens and redirect URIs alike).
//!
//! Messages never carry HubSpot's free-text `message`/`error_description`: they are not
//! guaranteed to be free of tokens, and they are not needed to act on the error. Only short
//! machine codes (charset-checked) and the correlation id for HubSpot support are kept.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// HubSpot's machine-readable error fields, filtered so they are safe to log and display.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorDetails {
    /// Legacy `status`, e.g. `BAD_REFRESH_TOKEN`.
    pub status: Option<String>,
    /// RFC 6749 `error`, e.g. `invalid_grant`.
    pub error: Option<String>,
    /// `category` or `errorType`, e.g. `RATE_LIMIT`.
    pub category: Option<String>,
    /// Quote this to HubSpot support.
    pub correlation_id: Option<String>,
}

impl ErrorDetails {
    fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.error.is_none()
            && self.category.is_none()
            && self.correlation_id.is_none()
    }
}

impl fmt::Display for ErrorDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no error details");
        }
        let mut sep = "";
        for (key, value) in [
            ("status", &self.status),
            ("error", &self.error),
            ("category", &self.category),
            ("correlation_id", &self.correlation_id),
        ] {
            if let Some(v) = value {
                write!(f, "{sep}{key}={v}")?;
                sep = " ";
            }
        }
        Ok(())
    }
}

/// Why a call failed without a usable HTTP answer, or with one that says "try again".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransientCause {
    Timeout,
    Connect,
    /// The connection broke while sending or reading.
    Network,
    /// 5xx or 408.
    Status(u16),
}

impl fmt::Display for TransientCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransientCause::Timeout => f.write_str("timed out"),
            TransientCause::Connect => f.write_str("could not connect"),
            TransientCause::Network => f.write_str("connection failed mid-request"),
            TransientCause::Status(s) => write!(f, "HTTP {s}"),
        }
    }
}

/// Everything that can go wrong talking to HubSpot. Display and Debug never contain tokens or
/// client secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubSpotError {
    /// The refresh token (or, during revoke/introspect, the token) is revoked, unknown or the
    /// app was uninstalled. Retrying cannot help; the tenant must install the app again.
    #[error(
        "HubSpot rejected the refresh token; the installation must be re-authorised ({details})"
    )]
    InvalidGrant { details: ErrorDetails },
    /// Client id/secret wrong: an app configuration problem, not a tenant one.
    #[error("HubSpot rejected the app's client credentials ({details})")]
    InvalidClient { details: ErrorDetails },
    #[error("redirect URI does not match the one registered for the app ({details})")]
    RedirectUriMismatch { details: ErrorDetails },
    /// The authorization code is unknown, expired (~1 minute) or already used.
    #[error("authorization code is invalid, expired or already used ({details})")]
    BadAuthCode { details: ErrorDetails },
    /// HubSpot answered 429 and the retry budget or server-requested wait was exhausted.
    #[error("rate limited by HubSpot{} ({details})", fmt_retry_after(.retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        details: ErrorDetails,
    },
    /// Worth retrying later: 5xx, timeout, connection failure.
    #[error("transient failure talking to HubSpot: {cause}{} ({details})", fmt_retry_after(.retry_after))]
    Transient {
        cause: TransientCause,
        /// The wait a 5xx answer asked for (`Retry-After`, e.g. a 503 during maintenance).
        retry_after: Option<Duration>,
        details: ErrorDetails,
    },
    /// An API call's access token was rejected (401) or lacks a scope (403).
    #[error("HubSpot API refused the access token: HTTP {status} ({details})")]
    Unauthorized { status: u16, details: ErrorDetails },
    #[error("unexpected HubSpot response: HTTP {status} ({details})")]
    Unexpected { status: u16, details: ErrorDetails },
    /// A 2xx whose body did not have the documented shape.
    #[error("unreadable response from HubSpot {endpoint}: {reason}")]
    InvalidResponse {
        endpoint: &'static str,
        reason: String,
    },
    /// The caller asked for something this client refuses to send (e.g. a path that would leave
    /// the configured API host), or the HTTP client could not be built.
    #[error("invalid HubSpot request: {reason}")]
    InvalidInput { reason: String },
}

fn fmt_retry_after(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!(", retry after {} ms", d.as_millis()),
        None => String::new(),
    }
}

impl HubSpotError {
    /// The installation is dead until the tenant re-installs the app.
    pub fn is_reauth_required(&self) -> bool {
        matches!(self, HubSpotError::InvalidGrant { .. })
    }

    /// Trying the same call again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            HubSpotError::RateLimited { .. } | HubSpotError::Transient { .. }
        )
    }

    /// The wait HubSpot asked for, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HubSpotError::RateLimited { retry_after, .. }
            | HubSpotError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// HTTP status HubSpot answered with, if it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            HubSpotError::RateLimited { .. } => Some(429),
            HubSpotError::Transient {
                cause: TransientCause::Status(s),
                ..
            }
            | HubSpotError::Unauthorized { status: s, .. }
            | HubSpotError::Unexpected { status: s, .. } => Some(*s),
            _ => None,
        }
    }

    /// HubSpot's error codes, when the failure came with a body.
    pub fn details(&self) -> Option<&ErrorDetails> {
        match self {
            HubSpotError::InvalidGrant { details }
            | HubSpotError::InvalidClient { details }
            | HubSpotError::RedirectUriMismatch { details }
            | HubSpotError::BadAuthCode { details }
            | HubSpotError::RateLimited { details, .. }
            | HubSpotError::Transient { details, .. }
            | HubSpotError::Unauthorized { details, .. }
            | HubSpotError::Unexpected { details, .. } => Some(details),
            HubSpotError::InvalidResponse { .. } | HubSpotError::InvalidInput { .. } => None,
        }
    }

    /// Short stable label for metrics and structured logs.
    pub fn class(&self) -> &'static str {
        match self {
            HubSpotError::InvalidGrant { .. } => "invalid_grant",
            HubSpotError::InvalidClient { .. } => "invalid_client",
            HubSpotError::RedirectUriMismatch { .. } => "redirect_uri_mismatch",
            HubSpotError::BadAuthCode { .. } => "bad_auth_code",
            HubSpotError::RateLimited { .. } => "rate_limited",
            HubSpotError::Transient { .. } => "transient",
            HubSpotError::Unauthorized { .. } => "unauthorized",
            HubSpotError::Unexpected { .. } => "unexpected",
            HubSpotError::InvalidResponse { .. } => "invalid_response",
            HubSpotError::InvalidInput { .. } => "invalid_input",
        }
    }

    /// Maps a transport failure without ever using reqwest's Display, which includes the URL
    /// (and the legacy introspection/revoke URLs contain the token).
    pub(crate) fn from_transport(err: &reqwest::Error) -> Self {
        let cause = if err.is_timeout() {
            TransientCause::Timeout
        } else if err.is_connect() {
            TransientCause::Connect
        } else {
            TransientCause::Network
        };
        HubSpotError::Transient {
            cause,
            retry_after: None,
            details: ErrorDetails::default(),
        }
    }
}

/// Which call produced an error body; `invalid_grant` means different things per grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    ExchangeCode,
    Refresh,
    Introspect,
    Revoke,
    Api,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawErrorBody {
    #[serde(default)]
    status: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default, rename = "error_description")]
    error_description: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    error_type: Option<String>,
}

/// An error body reduced to what is safe to keep, plus a classification hint taken from the
/// free text (which itself is discarded).
#[derive(Debug, Default)]
pub(crate) struct ParsedErrorBody {
    pub details: ErrorDetails,
    mentions_redirect: bool,
}

/// Keeps short machine codes only, so a server echoing user input cannot smuggle a token
/// into our logs.
fn safe_code(value: Option<&str>) -> Option<String> {
    let v = value?.trim();
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    ok.then(|| v.to_owned())
}

pub(crate) fn parse_error_body(body: &[u8]) -> ParsedErrorBody {
    let Ok(raw) = serde_json::from_slice::<RawErrorBody>(body) else {
        return ParsedErrorBody::default();
    };
    let text = |v: &Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => safe_code(Some(s)),
        _ => None,
    };
    let free_text = [raw.error_description.as_deref(), raw.message.as_deref()];
    ParsedErrorBody {
        details: ErrorDetails {
            status: text(&raw.status),
            error: text(&raw.error),
            category: safe_code(raw.category.as_deref().or(raw.error_type.as_deref())),
            correlation_id: safe_code(raw.correlation_id.as_deref()),
        },
        mentions_redirect: free_text
            .iter()
            .flatten()
            .any(|t| t.to_ascii_lowercase().contains("redirect")),
    }
}

/// Turns a non-2xx answer into the error a caller can act on.
pub(crate) fn classify(
    op: Operation,
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> HubSpotError {
    let parsed = parse_error_body(body);
    let details = parsed.details;
    if status == 429 {
        return HubSpotError::RateLimited {
            retry_after,
            details,
        };
    }
    if status >= 500 || status == 408 {
        return HubSpotError::Transient {
            cause: TransientCause::Status(status),
            retry_after,
            details,
        };
    }

    let legacy = details.status.as_deref().map(str::to_ascii_uppercase);
    match legacy.as_deref() {
        Some("BAD_REFRESH_TOKEN") => return HubSpotError::InvalidGrant { details },
        Some("BAD_AUTH_CODE") => return HubSpotError::BadAuthCode { details },
        Some("BAD_CLIENT_ID") | Some("BAD_CLIENT_SECRET") | Some("INVALID_CLIENT") => {
            return HubSpotError::InvalidClient { details }
        }
        Some("BAD_REDIRECT_URI") => return HubSpotError::RedirectUriMismatch { details },
        _ => {}
    }

    let rfc = details.error.as_deref().map(str::to_ascii_lowercase);
    match (rfc.as_deref(), op) {
        (Some("invalid_client") | Some("unauthorized_client"), _) => {
            return HubSpotError::InvalidClient { details }
        }
        // RFC 6749 files a redirect mismatch under invalid_grant; only the text tells them apart.
        (Some("invalid_grant"), _) if parsed.mentions_redirect => {
            return HubSpotError::RedirectUriMismatch { details }
        }
        (Some("invalid_grant"), Operation::ExchangeCode) => {
            return HubSpotError::BadAuthCode { details }
        }
        (Some("invalid_grant"), Operation::Refresh | Operation::Introspect | Operation::Revoke) => {
            return HubSpotError::InvalidGrant { details }
        }
        _ => {}
    }

    match (op, status) {
        (Operation::Api, 401 | 403) => HubSpotError::Unauthorized { status, details },
        _ => HubSpotError::Unexpected { status, details },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(op: Operation, status: u16, body: &str) -> HubSpotError {
        classify(op, status, body.as_bytes(), None)
    }

    #[test]
    fn legacy_shape() {
        let e = c(
            Operation::Refresh,
            400,
            r#"{"status":"BAD_REFRESH_TOKEN","message":"missing or unknown refresh token","correlationId":"9e1c-44"}"#,
        );
        assert!(e.is_reauth_required());
        assert_eq!(e.class(), "invalid_grant");
        assert_eq!(
            e.details().and_then(|d| d.correlation_id.as_deref()),
            Some("9e1c-44")
        );
        assert!(matches!(
            c(
                Operation::ExchangeCode,
                400,
                r#"{"status":"BAD_AUTH_CODE","message":"x"}"#
            ),
            HubSpotError::BadAuthCode { .. }
        ));
        assert!(matches!(
            c(
                Operation::ExchangeCode,
                400,
                r#"{"status":"BAD_CLIENT_ID"}"#
            ),
            HubSpotError::InvalidClient { .. }
        ));
        assert!(matches!(
            c(
                Operation::ExchangeCode,
                400,
                r#"{"status":"BAD_REDIRECT_URI"}"#
            ),
            HubSpotError::RedirectUriMismatch { .. }
        ));
    }

    #[test]
    fn rfc_shape_depends_on_grant() {
        let body = r#"{"error":"invalid_grant","error_description":"code expired"}"#;
        assert!(matches!(
            c(Operation::ExchangeCode, 400, body),
            HubSpotError::BadAuthCode { .. }
        ));
        assert!(c(Operation::Refresh, 400, body).is_reauth_required());
        assert!(matches!(
            c(Operation::Refresh, 401, r#"{"error":"invalid_client"}"#),
            HubSpotError::InvalidClient { .. }
        ));
        assert!(matches!(
            c(
                Operation::ExchangeCode,
                400,
                r#"{"error":"invalid_grant","error_description":"redirect_uri does not match"}"#
            ),
            HubSpotError::RedirectUriMismatch { .. }
        ));
        assert!(matches!(
            c(
                Operation::Refresh,
                400,
                r#"{"error":"unsupported_grant_type"}"#
            ),
            HubSpotError::Unexpected { status: 400, .. }
        ));
    }

    #[test]
    fn both_shapes_prefer_specific_legacy_status() {
        // A refresh-token status wins over the generic RFC code even during a code exchange.
        let e = c(
            Operation::ExchangeCode,
            400,
            r#"{"status":"BAD_REFRESH_TOKEN","error":"invalid_grant","error_description":"d","message":"m","correlationId":"c1"}"#,
        );
        assert!(e.is_reauth_required());
        let d = e.details().cloned().unwrap_or_default();
        assert_eq!(d.status.as_deref(), Some("BAD_REFRESH_TOKEN"));
        assert_eq!(d.error.as_deref(), Some("invalid_grant"));
        // An unrecognised legacy status falls through to the RFC code.
        assert!(matches!(
            c(
                Operation::Refresh,
                400,
                r#"{"status":"error","error":"invalid_client"}"#
            ),
            HubSpotError::InvalidClient { .. }
        ));
    }

    #[test]
    fn status_classes() {
        let e = classify(
            Operation::Refresh,
            429,
            br#"{"status":"error","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}"#,
            Some(Duration::from_secs(2)),
        );
        assert_eq!(e.class(), "rate_limited");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(
            e.details().and_then(|d| d.category.as_deref()),
            Some("RATE_LIMIT")
        );
        assert!(e.is_retryable());
        for s in [500, 502, 503, 504, 408] {
            let e = c(Operation::Refresh, s, "<html>bad gateway</html>");
            assert_eq!(e.class(), "transient");
            assert_eq!(e.http_status(), Some(s));
        }
        assert_eq!(c(Operation::Api, 401, "{}").class(), "unauthorized");
        assert_eq!(c(Operation::Api, 403, "").class(), "unauthorized");
        assert_eq!(c(Operation::Refresh, 401, "").class(), "unexpected");
        assert_eq!(c(Operation::Api, 404, "not json").class(), "unexpected");
    }

    #[test]
    fn messages_never_echo_free_text_or_token_like_codes() {
        let token = "CJSP5qf1KhICAQEYs-gDIIGOBii1hQIyGQAf3xBKmlwHjX7OIpuIFEavB2-qYAGQsF4";
        let body = format!(
            r#"{{"status":"BAD_REFRESH_TOKEN {token}","error":"invalid_grant","error_description":"token {token} unknown","message":"{token}","correlationId":"{token}{token}"}}"#
        );
        let e = classify(Operation::Refresh, 400, body.as_bytes(), None);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(token), "{shown}");
        // The status with a space is dropped, so the RFC code decides.
        assert!(e.is_reauth_required());
        assert_eq!(e.details().and_then(|d| d.status.clone()), None);
    }

    #[test]
    fn display_lists_codes() {
        let e = c(
            Operation::Refresh,
            400,
            r#"{"status":"BAD_REFRESH_TOKEN","error":"invalid_grant","correlationId":"abc"}"#,
        );
        assert_eq!(
            e.to_string(),
            "HubSpot rejected the refresh token; the installation must be re-authorised \
             (status=BAD_REFRESH_TOKEN error=invalid_grant correlation_id=abc)"
        );
    }
}
