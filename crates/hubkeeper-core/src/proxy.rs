//! The HubSpot API proxy: the app's backend sends `/v1/proxy/{installation}/{path}` and Hubkeeper
//! forwards it to HubSpot's API with the installation's access token, so the app never holds a
//! token and every process shares one per-portal budget.
//!
//! * **What is forwarded**: the method, the query, the body and an allow-list of headers
//!   ([`FORWARDED_REQUEST_HEADERS`]); never the caller's `Authorization`, cookies, hop-by-hop
//!   or forwarding headers. The answer comes back with its status, body and an allow-list of
//!   HubSpot's headers (content type, HubSpot's rate-limit headers, `Retry-After`, …).
//! * **Where**: only under HubSpot's API base ([`target_url`]): an absolute or scheme-relative
//!   path, a `.` or `..` segment (also percent-encoded), an encoded `/` or `\`, or control
//!   characters are refused before anything is sent.
//! * **How fast**: HubSpot allows 110 requests per rolling 10 s per portal. Each call takes a slot
//!   in the portal's shared window ([`hubkeeper_bus::limiter`]), waiting up to a deadline, so N API
//!   processes together never exceed it; past the deadline the caller gets 429 with
//!   `Retry-After`. A 429 from HubSpot blocks the portal's window for as long as HubSpot asked.
//! * **When the token is refused**: a HubSpot 401 triggers one single-flight refresh (any
//!   refresh since the token was issued counts) and one retry.
//! * **Retries**: idempotent methods are retried once on a 502/503/504 or a connection failure;
//!   `POST` and `PATCH` never are (HubSpot may have done the work).
//! * **Counting**: each call is a token hand-out (usage, "last used"); metrics by HubSpot status
//!   class (`hk_proxy_requests_total`), upstream latency and limiter waits.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hubkeeper_bus::limiter::{Limit, Reservation, SharedRateLimiter};
use hubkeeper_domain::InstallationId;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::error::CoreError;
use crate::tokens::{HandedOutToken, TokenService};

/// Request headers passed on to HubSpot; everything else (credentials, cookies, hop-by-hop and
/// forwarding headers, `Host`) stays here.
pub const FORWARDED_REQUEST_HEADERS: [&str; 9] = [
    "accept",
    "accept-language",
    "content-type",
    "content-language",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "idempotency-key",
];

/// Response headers passed back to the caller (HubSpot's rate-limit headers by prefix).
const RETURNED_RESPONSE_HEADERS: [&str; 9] = [
    "content-type",
    "content-language",
    "etag",
    "last-modified",
    "retry-after",
    "location",
    "cache-control",
    "vary",
    "x-hubspot-correlation-id",
];

/// Largest HubSpot answer relayed (HubSpot's pages are far smaller).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// A slot wait at least this long re-reads the token before the call is sent ...
const RECHECK_AFTER_WAIT: Duration = Duration::from_millis(50);
/// ... this long before the slot (a cache hit takes microseconds, a load from Postgres a few ms).
const RECHECK_LEAD: Duration = Duration::from_millis(20);

/// Validity the forwarded token must still have: long enough for the call and its retry.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// Bucket-name prefix of the per-portal windows.
pub const PORTAL_BUCKET_PREFIX: &str = "hubspot-portal:";

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// HubSpot's API base (the simulator in tests); calls never leave it.
    pub api_base: Url,
    /// Requests per window per portal, across every process (HubSpot: 110 per 10 s).
    pub portal_max: u32,
    pub portal_window: Duration,
    /// Added to the window when reserving, so the spread of network latency between two calls
    /// cannot squeeze `portal_max + 1` arrivals into one window at HubSpot.
    pub guard: Duration,
    /// Longest a call waits for a slot before it is answered 429.
    pub max_wait: Duration,
    /// Timeout of one HubSpot call.
    pub request_timeout: Duration,
}

impl ProxyConfig {
    fn portal_limit(&self) -> Limit {
        Limit {
            max: self.portal_max.max(1),
            window: self.portal_window + self.guard,
            max_wait: self.max_wait,
        }
    }
}

/// One call to forward.
#[derive(Debug)]
pub struct ProxyRequest {
    pub installation: InstallationId,
    pub method: Method,
    /// The path below the API base as the caller sent it (still percent-encoded), e.g.
    /// `crm/v3/objects/contacts`.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub request_id: Option<String>,
}

/// HubSpot's answer, to relay.
#[derive(Debug)]
pub struct ProxyResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The path would leave HubSpot's API base or is malformed (400).
    #[error("{0}")]
    InvalidPath(String),
    /// No slot in the portal's window within the deadline (429).
    #[error("HubSpot's rate limit for this portal is used up; try again in {} s", retry_after_secs(*.retry_after))]
    RateLimited { retry_after: Duration },
    /// The installation has no usable token, or the refresh failed.
    #[error(transparent)]
    Token(#[from] CoreError),
    /// HubSpot could not be reached or answered too much (502).
    #[error("HubSpot could not be reached: {0}")]
    Upstream(String),
    /// The shared limiter's store failed (503).
    #[error("rate-limit store unavailable")]
    LimiterUnavailable,
}

/// Seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0 || d.is_zero())
}

/// Forwards calls; cheap to clone.
#[derive(Clone)]
pub struct ProxyService {
    tokens: TokenService,
    limiter: SharedRateLimiter,
    http: reqwest::Client,
    config: ProxyConfig,
}

impl ProxyService {
    pub fn new(
        tokens: TokenService,
        limiter: SharedRateLimiter,
        config: ProxyConfig,
    ) -> Result<Self, CoreError> {
        if !matches!(config.api_base.scheme(), "http" | "https") || config.api_base.host().is_none()
        {
            return Err(CoreError::InvalidInput(
                "the HubSpot API base must be an http(s) URL".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            // A redirect would carry the token wherever HubSpot (or anyone) points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CoreError::InvalidInput(format!("HTTP client: {e}")))?;
        Ok(Self {
            tokens,
            limiter,
            http,
            config,
        })
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// Forwards one call (see the module docs for what is sent, retried and refused).
    pub async fn forward(&self, request: ProxyRequest) -> Result<ProxyResponse, ProxyError> {
        let url = target_url(
            &self.config.api_base,
            &request.path,
            request.query.as_deref(),
        )
        .map_err(ProxyError::InvalidPath)?;
        let headers = forwarded_headers(&request.headers);
        let rid = request.request_id.as_deref();
        let mut token = self
            .tokens
            .get_token(&request.installation, TOKEN_MARGIN, rid)
            .await?;
        let bucket = format!("{PORTAL_BUCKET_PREFIX}{}", token.hub_id.0);
        let idempotent = matches!(
            request.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        let mut refreshed = false;
        let mut retried = false;
        loop {
            let wait = self.reserve_slot(&bucket).await?;
            if wait >= RECHECK_AFTER_WAIT {
                // The token was taken before the wait (it names the portal whose budget the call
                // spends); a refresh or revocation may have replaced it meanwhile, and sending
                // the old one would spend the slot on a certain 401. Re-read it just before the
                // slot, but never send late for it: a late send could put one call too many
                // into one of HubSpot's windows. A read not done by then keeps the old token.
                let slot = tokio::time::Instant::now() + wait;
                tokio::time::sleep(wait - RECHECK_LEAD).await;
                let reread = self
                    .tokens
                    .get_token_inner(&request.installation, TOKEN_MARGIN, rid);
                match tokio::time::timeout_at(slot, reread).await {
                    Ok(Ok(current)) => token = current,
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => {}
                }
                tokio::time::sleep_until(slot).await;
            } else if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let sent = self
                .send(&request.method, &url, &headers, &token, &request.body)
                .await;
            match sent {
                Ok(answer) if answer.status == StatusCode::UNAUTHORIZED && !refreshed => {
                    metrics::counter!("hk_proxy_token_rejected_total").increment(1);
                    refreshed = true;
                    token = self
                        .tokens
                        .replace_rejected(&request.installation, &token, rid)
                        .await?;
                }
                Ok(answer) if answer.status == StatusCode::TOO_MANY_REQUESTS => {
                    let wait = hubspot_wait(&answer.headers);
                    metrics::counter!("hk_proxy_hubspot_rate_limited_total").increment(1);
                    tracing::warn!(
                        bucket = %bucket,
                        wait_ms = wait.as_millis() as u64,
                        "HubSpot answered 429: the portal's window is blocked"
                    );
                    if let Err(e) = self.limiter.block(&bucket, wait).await {
                        tracing::warn!(error = %e, "could not record HubSpot's 429 in the shared window");
                    }
                    return Ok(self.relay(answer));
                }
                Ok(answer)
                    if idempotent && !retried && matches!(answer.status.as_u16(), 502..=504) =>
                {
                    retried = true;
                    metrics::counter!("hk_proxy_retries_total", "cause" => "5xx").increment(1);
                }
                Ok(answer) => return Ok(self.relay(answer)),
                Err(Upstream::Connect(message)) if idempotent && !retried => {
                    retried = true;
                    metrics::counter!("hk_proxy_retries_total", "cause" => "connect").increment(1);
                    tracing::info!(%message, "HubSpot unreachable; retrying an idempotent call once");
                }
                Err(Upstream::Connect(message) | Upstream::Other(message)) => {
                    metrics::counter!("hk_proxy_requests_total", "class" => "error").increment(1);
                    return Err(ProxyError::Upstream(message));
                }
            }
        }
    }

    /// Reserves a slot in the portal's shared window; answers how long until it may be used.
    async fn reserve_slot(&self, bucket: &str) -> Result<Duration, ProxyError> {
        let started = Instant::now();
        match self
            .limiter
            .reserve(bucket, self.config.portal_limit())
            .await
        {
            Ok(Reservation::Granted(wait)) => {
                metrics::histogram!("hk_proxy_wait_seconds")
                    .record((started.elapsed() + wait).as_secs_f64());
                Ok(wait)
            }
            Ok(Reservation::RetryAfter(retry_after)) => {
                metrics::counter!("hk_proxy_requests_total", "class" => "limited").increment(1);
                Err(ProxyError::RateLimited { retry_after })
            }
            Err(e) => {
                tracing::warn!(error = %e, "shared rate limiter unavailable");
                Err(ProxyError::LimiterUnavailable)
            }
        }
    }

    async fn send(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        token: &HandedOutToken,
        body: &Bytes,
    ) -> Result<Answer, Upstream> {
        let started = Instant::now();
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .headers(headers.clone())
            .bearer_auth(crate::tokens::expose_for_proxy(token));
        if !body.is_empty() {
            request = request.body(body.clone());
        }
        let mut response = request.send().await.map_err(|e| {
            if e.is_connect() {
                Upstream::Connect(without_url(e))
            } else {
                Upstream::Other(without_url(e))
            }
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Upstream::Other(without_url(e)))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Upstream::Other(format!(
                    "HubSpot's answer is larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        metrics::histogram!("hk_proxy_upstream_seconds").record(started.elapsed().as_secs_f64());
        Ok(Answer {
            status,
            headers,
            body: Bytes::from(body),
        })
    }

    fn relay(&self, answer: Answer) -> ProxyResponse {
        let class = match answer.status.as_u16() {
            200..=299 => "2xx",
            300..=399 => "3xx",
            429 => "429",
            400..=499 => "4xx",
            _ => "5xx",
        };
        metrics::counter!("hk_proxy_requests_total", "class" => class).increment(1);
        let mut headers = HeaderMap::new();
        for (name, value) in &answer.headers {
            let n = name.as_str();
            if RETURNED_RESPONSE_HEADERS.contains(&n) || n.starts_with("x-hubspot-ratelimit-") {
                headers.append(name.clone(), value.clone());
            }
        }
        ProxyResponse {
            status: answer.status,
            headers,
            body: answer.body,
        }
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

enum Upstream {
    /// Nothing reached HubSpot: safe to retry any method.
    Connect(String),
    Other(String),
}

/// reqwest's messages name the URL; ours never do (it may carry the caller's query).
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

/// How long HubSpot asked us to wait: `Retry-After` (seconds), else its window's length, else
/// one second.
fn hubspot_wait(headers: &HeaderMap) -> Duration {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(secs) = header("retry-after") {
        return Duration::from_secs(secs.min(3600));
    }
    if let Some(ms) = header("x-hubspot-ratelimit-interval-milliseconds") {
        return Duration::from_millis(ms.min(3_600_000));
    }
    Duration::from_secs(1)
}

/// The caller's headers that may travel to HubSpot.
fn forwarded_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARDED_REQUEST_HEADERS {
        let name = HeaderName::from_static(name);
        for value in incoming.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    if !out.contains_key("accept") {
        out.insert("accept", HeaderValue::from_static("application/json"));
    }
    out
}

/// The URL under `base` for a caller's `path` (percent-encoded, relative, no leading `/`) and
/// `query`, or why it is refused. The result is checked to still be under `base`.
pub fn target_url(base: &Url, path: &str, query: Option<&str>) -> Result<Url, String> {
    if path.is_empty() {
        return Err("the proxied path is empty".into());
    }
    if path.starts_with('/') {
        return Err("the proxied path must be relative to HubSpot's API (no leading `/`)".into());
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return Err("the proxied path has an empty segment (`//`)".into());
        }
        let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
        if decoded == b"." || decoded == b".." {
            return Err("the proxied path must not contain `.` or `..` segments".into());
        }
        if decoded
            .iter()
            .any(|b| *b == b'/' || *b == b'\\' || *b == b'%' || b.is_ascii_control())
        {
            return Err(
                "the proxied path must not contain encoded `/`, `\\`, `%` or control characters"
                    .into(),
            );
        }
        if segment.contains(['\\', '#', '?']) || segment.bytes().any(|b| b.is_ascii_control()) {
            return Err("the proxied path contains a character that is not allowed".into());
        }
    }
    if path
        .split('/')
        .next()
        .is_some_and(|first| first.contains(':'))
    {
        return Err("the proxied path must be a path, not an absolute URL".into());
    }
    if query.is_some_and(|q| q.contains('#') || q.bytes().any(|b| b.is_ascii_control())) {
        return Err("the query contains a character that is not allowed".into());
    }
    let prefix = format!("{}/", base.path().trim_end_matches('/'));
    let mut url = base.clone();
    url.set_path(&format!("{prefix}{path}"));
    url.set_query(query.filter(|q| !q.is_empty()));
    url.set_fragment(None);
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default();
    if !same_origin || !url.path().starts_with(&prefix) || url.path() != format!("{prefix}{path}") {
        return Err("the proxied path leaves HubSpot's API".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://api.hubapi.com").unwrap()
    }

    #[test]
    fn ordinary_paths_and_queries_stay_under_the_base() {
        let url = target_url(&base(), "crm/v3/objects/contacts", Some("limit=5&after=10")).unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.hubapi.com/crm/v3/objects/contacts?limit=5&after=10"
        );
        let url = target_url(&base(), "files/v3/files/a%20b", None).unwrap();
        assert_eq!(url.as_str(), "https://api.hubapi.com/files/v3/files/a%20b");
        let nested = Url::parse("http://127.0.0.1:9000/hubspot/").unwrap();
        let url = target_url(&nested, "crm/v3/x", None).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:9000/hubspot/crm/v3/x");
    }

    #[test]
    fn escapes_are_refused() {
        for bad in [
            "",
            "/crm/v3",
            "//evil.example/x",
            "https://evil.example/x",
            "https:",
            "crm/../oauth/v1/token",
            "..",
            "crm/./v3",
            "crm/%2e%2e/oauth",
            "crm/%2E%2E/oauth",
            "crm/.%2e/oauth",
            "%2e%2e",
            "crm/%2F..%2Foauth",
            "crm/a%5c..%5cb",
            "crm//v3",
            "crm/v3%00",
            "crm/%252e%252e/x",
            "crm/a\\b",
        ] {
            assert!(target_url(&base(), bad, None).is_err(), "{bad:?} accepted");
        }
        assert!(target_url(&base(), "crm/v3", Some("a=1#frag")).is_err());
    }

    #[test]
    fn only_safe_headers_are_forwarded() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("authorization", "Bearer caller-key"),
            ("cookie", "hk_session=x"),
            ("connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("x-forwarded-for", "1.2.3.4"),
            ("host", "hubkeeper.example"),
            ("content-type", "application/json"),
            ("if-match", "\"v1\""),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let out = forwarded_headers(&h);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.contains(&"content-type") && names.contains(&"if-match"));
        assert_eq!(out["accept"], "application/json");
    }

    #[test]
    fn hubspot_waits_come_from_its_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(hubspot_wait(&h), Duration::from_secs(1));
        h.insert(
            "x-hubspot-ratelimit-interval-milliseconds",
            HeaderValue::from_static("10000"),
        );
        assert_eq!(hubspot_wait(&h), Duration::from_secs(10));
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(hubspot_wait(&h), Duration::from_secs(3));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
    }
}
