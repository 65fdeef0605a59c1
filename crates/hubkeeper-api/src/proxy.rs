//! `/v1/proxy/{installation_id}/{path}`: HubSpot API calls on an installation's behalf, for a
//! service key bound to the installation's app (see
//! [`hubkeeper_core::proxy`] for what is forwarded, limited, refreshed and retried). The path
//! below the installation id is taken from the raw request URI, still percent-encoded, so an
//! encoded `..` is seen and refused rather than decoded into a traversal.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hubkeeper_core::proxy::{retry_after_secs, ProxyError, ProxyRequest};
use hubkeeper_domain::InstallationId;

use crate::auth::{AppAccess, Caller, Permission};
use crate::error::ApiError;
use crate::params;
use crate::request::RequestId;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/proxy/{installation_id}/{*path}",
        get(forward)
            .post(forward)
            .put(forward)
            .patch(forward)
            .delete(forward),
    )
}

// Each piece of the request is its own extractor: the handler forwards all of them.
#[allow(clippy::too_many_arguments)]
async fn forward(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path((raw_id, _decoded)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Permission::UseTokens)?;
    let installation: InstallationId = params::path("installation_id", &raw_id)?;
    // The call carries the installation's token: only the app's own backend may make it.
    caller
        .require_installation(&state, &installation, AppAccess::ReceiveTokens)
        .await?;
    let proxy = state.proxy()?;
    let path = raw_path_below(uri.path(), &raw_id).ok_or_else(|| {
        ApiError::invalid_parameter("path", "the proxied path is missing or malformed")
    })?;
    let forwarded = proxy
        .forward(ProxyRequest {
            installation,
            method,
            path: path.to_owned(),
            query: uri.query().map(str::to_owned),
            headers,
            body,
            request_id: Some(request.as_str().to_owned()),
        })
        .await;
    match forwarded {
        Ok(answer) => {
            let mut response = Response::new(Body::from(answer.body));
            *response.status_mut() = answer.status;
            *response.headers_mut() = answer.headers;
            Ok(response)
        }
        Err(e) => Err(proxy_error(e)),
    }
}

/// The still-encoded path after `/v1/proxy/{id}/`.
fn raw_path_below<'a>(full: &'a str, raw_id: &str) -> Option<&'a str> {
    let rest = full.strip_prefix("/v1/proxy/")?;
    // The id segment as sent: it parsed as an installation id, so it has no escapes that
    // change its length; find the first `/` after it.
    let (id_segment, below) = rest.split_once('/')?;
    let decoded_id = percent_decode(id_segment);
    (decoded_id == raw_id).then_some(below)
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn proxy_error(e: ProxyError) -> ApiError {
    match e {
        ProxyError::InvalidPath(message) => ApiError::invalid_parameter("path", message),
        ProxyError::RateLimited { retry_after } => {
            let secs = retry_after_secs(retry_after);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "HubSpot's per-portal rate limit is used up across all processes; try again in {secs} s"
                ),
            )
            .retry_after(secs)
        }
        ProxyError::Token(core) => core.into(),
        ProxyError::Upstream(message) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "hubspot_unreachable",
            format!("HubSpot could not be reached: {message}"),
        ),
        ProxyError::LimiterUnavailable => {
            ApiError::unavailable("the shared rate limiter is unavailable; try again shortly")
                .retry_after(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_path_keeps_its_escapes() {
        assert_eq!(
            raw_path_below("/v1/proxy/inst_1/crm/v3/objects/contacts", "inst_1"),
            Some("crm/v3/objects/contacts")
        );
        assert_eq!(
            raw_path_below("/v1/proxy/inst_1/crm/%2e%2e/oauth", "inst_1"),
            Some("crm/%2e%2e/oauth")
        );
        assert_eq!(raw_path_below("/v1/proxy/inst_1", "inst_1"), None);
        assert_eq!(raw_path_below("/v1/other/inst_1/x", "inst_1"), None);
    }
}
