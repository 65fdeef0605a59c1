//! Cross-cutting layers: every request gets an id ([`crate::request`]) and a client address
//! ([`crate::client_addr`]) that are on its tracing span (the id also echoed in the response); every error answer is the JSON error shape, whoever made it;
//! latency and status class are recorded; security headers are set.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::request::RequestId;
use crate::state::AppState;

/// Largest request body accepted (HubSpot's webhook batches are far below this).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Longest a handler may take to produce its answer. Streaming answers (the activity stream,
/// the event export) produce their headers at once and stream their body afterwards, which this
/// does not limit; every other route is cut off with 503 instead of holding a connection and its
/// resources without end.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of a framework-made error body is kept as the message.
const MAX_MESSAGE: usize = 500;

pub fn layer(
    router: Router<AppState>,
    trusted: std::sync::Arc<crate::client_addr::TrustedProxies>,
) -> Router<AppState> {
    router
        .layer(axum::middleware::from_fn(request_timeout))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(record_metrics))
        .layer(axum::middleware::from_fn(crate::security::apply))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let request_id = req
                        .extensions()
                        .get::<RequestId>()
                        .map_or("-", RequestId::as_str)
                        .to_owned();
                    let client = crate::client_addr::client_addr(req.extensions());
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %loggable_path(req.uri().path()),
                        request_id = %request_id,
                        client = %client,
                    )
                })
                .on_response(|res: &Response, latency: Duration, _span: &tracing::Span| {
                    tracing::debug!(status = res.status().as_u16(), ?latency, "response");
                }),
        )
        .layer(axum::middleware::from_fn_with_state(
            trusted,
            crate::client_addr::resolve,
        ))
        .layer(axum::middleware::from_fn(crate::request::assign))
}

/// The path as logs may show it: a connect session's link is a bearer capability, so its id is
/// replaced.
fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.strip_prefix("/connect/") {
        Some(rest) if rest.starts_with(hubkeeper_core::connect::SESSION_PREFIX) => {
            "/connect/[session]".into()
        }
        _ => path.into(),
    }
}

fn is_json(response: &Response) -> bool {
    crate::extract::is_json(response.headers().get(header::CONTENT_TYPE))
}

/// A page rendered on purpose for a person's browser (the public connect outcome page); the
/// framework's own rejections are plain text, never HTML.
fn is_html_page(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
}

/// Turns any error answer that is not JSON (the framework's rejections, a method not allowed,
/// a body over the limit) into the JSON error shape, keeping its status and headers. HTML pages
/// a handler chose to answer with stay as they are.
async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || is_json(&response)
        || is_html_page(&response)
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if status == axum::http::StatusCode::METHOD_NOT_ALLOWED {
        let allowed = parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        format!("{method} is not allowed on {path}; allowed: {allowed}")
    } else if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text.chars().take(MAX_MESSAGE).collect()
    };
    let json = ApiError::from_status(status, message).into_response();
    let (json_parts, json_body) = json.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(content_type) = json_parts.headers.get(header::CONTENT_TYPE) {
        parts
            .headers
            .insert(header::CONTENT_TYPE, content_type.clone());
    } else {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Response::from_parts(parts, Body::new(json_body))
}

/// Operations that run long by design and show their own outcome: an operator starting the
/// self-test or a backup waits for its report rather than a timeout.
const LONG_OPERATIONS: [&str; 2] = ["/v1/selftest", "/v1/backups"];

/// Answers 503 when the handler has not produced a response within [`REQUEST_TIMEOUT`]
/// (except the [`LONG_OPERATIONS`] started with POST).
async fn request_timeout(req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::POST && LONG_OPERATIONS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    answer_within(REQUEST_TIMEOUT, req, next).await
}

async fn answer_within(limit: Duration, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("hk_api_request_timeouts_total").increment(1);
            tracing::warn!(%path, ?limit, "request timed out");
            ApiError::unavailable(format!(
                "the server did not answer within {}s; try again",
                limit.as_secs()
            ))
            .retry_after(1)
            .into_response()
        }
    }
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let class = match response.status().as_u16() {
        100..=399 => "ok",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::histogram!("hk_api_request_seconds", "route" => route.clone(), "method" => method)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("hk_api_responses_total", "route" => route, "class" => class).increment(1);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::REQUEST_ID;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    #[test]
    fn connect_links_are_not_logged() {
        assert_eq!(loggable_path("/connect/cs_abcdef"), "/connect/[session]");
        assert_eq!(loggable_path("/connect-result"), "/connect-result");
        assert_eq!(loggable_path("/v1/apps"), "/v1/apps");
    }

    /// The framework's own answers, through the same layer the server uses.
    fn app() -> Router {
        Router::new()
            .route(
                "/q",
                get(
                    |axum::extract::Query(q): axum::extract::Query<
                        std::collections::HashMap<String, u32>,
                    >| async move { format!("{q:?}") },
                ),
            )
            .route(
                "/plain",
                get(|| async { (StatusCode::BAD_REQUEST, "plain words") }),
            )
            .layer(axum::middleware::from_fn(json_errors))
            .layer(axum::middleware::from_fn(crate::request::assign))
    }

    async fn call(
        method: &str,
        uri: &str,
        request_id: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(id) = request_id {
            req = req.header("x-request-id", id);
        }
        let response = app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn framework_errors_become_the_json_error_shape() {
        let (status, headers, body) = call("GET", "/q?a=x", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("invalid digit"),
            "{body}"
        );

        let (status, headers, body) = call("DELETE", "/q", None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(headers.contains_key("allow"), "the Allow header is kept");
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");

        let (_, _, body) = call("GET", "/plain", None).await;
        assert_eq!(body["error"]["message"], "plain words");
    }

    #[tokio::test]
    async fn request_ids_are_kept_only_when_short_and_plain() {
        let (_, headers, _) = call("GET", "/plain", Some("abc-123")).await;
        assert_eq!(headers["x-request-id"], "abc-123");
        for bad in ["a b", &"x".repeat(65), "a_b", "a;b"] {
            let (_, headers, _) = call("GET", "/plain", Some(bad)).await;
            let echoed = headers["x-request-id"].to_str().unwrap();
            assert_ne!(echoed, bad);
            assert!(
                RequestId::accept(echoed).is_some(),
                "replaced by a generated id"
            );
        }
        let (_, headers, _) = call("GET", "/plain", None).await;
        assert!(RequestId::accept(headers[&REQUEST_ID].to_str().unwrap()).is_some());
    }
}
