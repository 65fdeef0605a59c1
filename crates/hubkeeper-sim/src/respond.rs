//! HubSpot's response shapes (errors in particular) and the markers handlers leave on responses
//! for the request log and the connection layer.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::tokens::correlation_id;

/// Who a response concerned, attached by handlers so the request log can say so without ever
/// seeing a token.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogMeta {
    pub(crate) hub_id: Option<u64>,
    pub(crate) client_id: Option<String>,
    pub(crate) token_hash: Option<String>,
}

/// Tells the connection layer to drop the connection instead of writing this response: how the
/// simulator plays an unreachable HubSpot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CloseConnection;

pub(crate) fn with_meta(mut response: Response, meta: LogMeta) -> Response {
    response.extensions_mut().insert(meta);
    response
}

/// A token-endpoint error in both shapes HubSpot announced: the legacy `status`/`message` pair and
/// the RFC 6749 `error`/`error_description` pair.
pub(crate) fn oauth_error(http: StatusCode, status: &str, message: &str, error: &str) -> Response {
    let mut response = (
        http,
        Json(json!({
            "status": status,
            "message": message,
            "correlationId": correlation_id(),
            "error": error,
            "error_description": message,
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// HubSpot's generic API error body.
pub(crate) fn api_error(http: StatusCode, message: &str, category: &str) -> Response {
    (
        http,
        Json(json!({
            "status": "error",
            "message": message,
            "correlationId": correlation_id(),
            "category": category,
        })),
    )
        .into_response()
}

/// The exact 429 body HubSpot sends when the ten-secondly limit is hit.
pub(crate) fn rate_limit_error() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "status": "error",
            "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": correlation_id(),
            "policyName": "TEN_SECONDLY_ROLLING",
        })),
    )
        .into_response()
}

/// The answer to an injected error status: the body HubSpot would plausibly send with it.
pub(crate) fn injected_error(status: u16) -> Response {
    let http = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match http {
        StatusCode::TOO_MANY_REQUESTS => rate_limit_error(),
        StatusCode::UNAUTHORIZED => api_error(
            http,
            "Authentication credentials not found.",
            "INVALID_AUTHENTICATION",
        ),
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
            api_error(
                http,
                "The service is temporarily unavailable, please retry.",
                "SERVICE_UNAVAILABLE",
            )
        }
        _ if http.is_server_error() => api_error(http, "internal error", "INTERNAL_ERROR"),
        _ => api_error(http, "simulated error", "VALIDATION_ERROR"),
    }
}

/// A response that never reaches the client (see [`CloseConnection`]). When the router is served
/// by something other than [`crate::spawn`], the 503 is what goes out instead.
pub(crate) fn dropped_connection() -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        "connection dropped by simulator",
    )
        .into_response();
    response.extensions_mut().insert(CloseConnection);
    response
}
