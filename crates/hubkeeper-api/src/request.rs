//! The request id: every request has one, taken from `x-request-id` when the client sent a
//! well-formed one (`[A-Za-z0-9-]{1,64}`) and generated otherwise, so what reaches logs, event
//! metadata and the response header is always short and plain. One middleware assigns it; the
//! [`RequestId`] extractor hands it to handlers.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use hubkeeper_domain::metadata::{Actor, EventMetadata};

/// The header carrying the request id, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id accepted from a client.
pub const MAX_LEN: usize = 64;

/// This request's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A client's id if it is well-formed.
    pub fn accept(presented: &str) -> Option<Self> {
        let ok = (1..=MAX_LEN).contains(&presented.len())
            && presented
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        ok.then(|| Self(presented.to_owned()))
    }

    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Event metadata for a command issued by `actor` in this request.
    pub fn metadata(&self, actor: Actor) -> EventMetadata {
        EventMetadata::new(actor, chrono::Utc::now()).request_id(self.0.clone())
    }

    /// [`Self::metadata`] with the caller's reason, when one was given (at most 500 characters).
    pub fn metadata_with_reason(&self, actor: Actor, reason: Option<&str>) -> EventMetadata {
        let meta = self.metadata(actor);
        match reason.map(str::trim).filter(|r| !r.is_empty()) {
            Some(reason) => meta.reason(reason.chars().take(500).collect::<String>()),
            None => meta,
        }
    }
}

/// The middleware: keeps a well-formed client id, replaces anything else, and echoes the id in
/// the response.
pub async fn assign(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::accept)
        .unwrap_or_else(RequestId::generate);
    let value = HeaderValue::from_str(id.as_str()).ok();
    if let Some(value) = &value {
        req.headers_mut().insert(REQUEST_ID, value.clone());
    }
    req.extensions_mut().insert(id);
    let mut response = next.run(req).await;
    if let Some(value) = value {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(RequestId::generate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_accepted() {
        assert!(RequestId::accept("abc-123-XYZ").is_some());
        assert!(RequestId::accept(&"a".repeat(64)).is_some());
        assert!(RequestId::accept(&"a".repeat(65)).is_none());
        assert!(RequestId::accept("").is_none());
        for bad in ["a b", "a\"b", "a_b", "id\u{e9}", "x;y", "<script>", "a/b"] {
            assert!(RequestId::accept(bad).is_none(), "{bad}");
        }
        let generated = RequestId::generate();
        assert!(RequestId::accept(generated.as_str()).is_some());
    }
}
