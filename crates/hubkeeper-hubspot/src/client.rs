//! The OAuth and API client.
//!
//! One [`HubSpotClient`] serves every app and tenant: credentials travel with each call, and
//! the per-account limiter is shared so all work for one HubSpot account draws from one budget.

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::Instrument;
use url::Url;

use crate::config::HubSpotConfig;
use crate::error::{classify, HubSpotError, Operation};
use crate::limiter::AccountRateLimiter;
use crate::retry::{backoff_delay, server_requested_wait, window_exhausted_wait};
use crate::token::{
    AccessToken, AppCredentials, OAuthEndpoints, RawTokenInfo, RawTokenResponse, RefreshToken,
    TokenInfo, TokenSet,
};

/// Largest response body read; HubSpot's answers are small and a runaway body should not be
/// buffered without bound.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// RFC 3986 unreserved characters stay as they are; everything else is escaped. Used for query
/// values (so spaces become `%20`, as HubSpot's authorize page expects) and path segments.
const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Cheap to clone; clones share the connection pool and the rate limiter.
#[derive(Clone, Debug)]
pub struct HubSpotClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    config: HubSpotConfig,
    limiter: Option<AccountRateLimiter>,
}

/// One logical call, possibly sent several times.
struct Call<'a> {
    /// Low-cardinality metrics/tracing label.
    endpoint: &'static str,
    op: Operation,
    method: Method,
    url: Url,
    /// Form-encoded body; secret because it carries the client secret or a token.
    form: Option<SecretString>,
    bearer: Option<&'a AccessToken>,
    account: Option<u64>,
    retry: bool,
    /// Non-2xx statuses the caller interprets itself instead of as errors.
    pass_through: &'static [u16],
}

struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl HubSpotClient {
    /// Fails only if a base URL is unusable or the TLS stack cannot initialise.
    pub fn new(config: HubSpotConfig) -> Result<Self, HubSpotError> {
        check_base_url("api_base_url", &config.api_base_url)?;
        check_base_url("app_base_url", &config.app_base_url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(config.user_agent.clone())
            // A redirect would resend credentials to wherever HubSpot (or an attacker) points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| HubSpotError::InvalidInput {
                reason: "HTTP client could not be initialised".to_owned(),
            })?;
        let limiter = config.rate_limit.as_ref().map(AccountRateLimiter::new);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                limiter,
            }),
        })
    }

    pub fn config(&self) -> &HubSpotConfig {
        &self.inner.config
    }

    /// The shared per-account limiter, so other HubSpot traffic can draw from the same budget.
    pub fn rate_limiter(&self) -> Option<&AccountRateLimiter> {
        self.inner.limiter.as_ref()
    }

    /// The consent URL to send a user to. `account_id` pins the install to one HubSpot account
    /// (`/oauth/{accountId}/authorize`). Empty scope lists are omitted.
    pub fn authorize_url(
        &self,
        creds: &AppCredentials,
        scopes: &[String],
        optional_scopes: &[String],
        state: &str,
        account_id: Option<u64>,
    ) -> Url {
        let base = &self.inner.config.app_base_url;
        let mut url = base.clone();
        let prefix = base.path().trim_end_matches('/');
        match account_id {
            Some(id) => url.set_path(&format!("{prefix}/oauth/{id}/authorize")),
            None => url.set_path(&format!("{prefix}/oauth/authorize")),
        }
        let mut params: Vec<(&str, String)> = vec![
            ("client_id", creds.client_id.clone()),
            ("redirect_uri", creds.redirect_uri.clone()),
        ];
        if !scopes.is_empty() {
            params.push(("scope", scopes.join(" ")));
        }
        if !optional_scopes.is_empty() {
            params.push(("optional_scope", optional_scopes.join(" ")));
        }
        params.push(("state", state.to_owned()));
        let query = params
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, ESCAPE)))
            .collect::<Vec<_>>()
            .join("&");
        url.set_query(Some(&query));
        url
    }

    /// Trades an authorization code for tokens. Never retried: the code is single-use, so a
    /// retry after a lost response would fail with `BadAuthCode` and hide the real outcome.
    pub async fn exchange_code(
        &self,
        creds: &AppCredentials,
        code: &str,
    ) -> Result<TokenSet, HubSpotError> {
        let form = encode_form(&[
            ("grant_type", "authorization_code"),
            ("client_id", &creds.client_id),
            ("client_secret", creds.client_secret.expose_secret()),
            ("redirect_uri", &creds.redirect_uri),
            ("code", code),
        ])?;
        let answer = self
            .send(Call {
                endpoint: "oauth.token.exchange",
                op: Operation::ExchangeCode,
                method: Method::POST,
                url: self.token_url(creds.endpoints, ""),
                form: Some(form),
                bearer: None,
                account: None,
                retry: false,
                pass_through: &[],
            })
            .await?;
        parse_json::<RawTokenResponse>("oauth.token.exchange", &answer.body).map(TokenSet::from)
    }

    /// Mints a new access token. Retried on transient failures and 429 only. `account_hint`
    /// (the hub id, when known) puts the call under that account's rate limit.
    ///
    /// Should HubSpot rotate refresh tokens, a retry after a lost response (timeout) could
    /// present an already-superseded token and come back as `InvalidGrant`; callers that see
    /// `is_reauth_required()` right after a transient failure may want to confirm with
    /// [`Self::introspect_refresh_token`] before marking the installation dead.
    pub async fn refresh(
        &self,
        creds: &AppCredentials,
        refresh_token: &RefreshToken,
        account_hint: Option<u64>,
    ) -> Result<TokenSet, HubSpotError> {
        let form = encode_form(&[
            ("grant_type", "refresh_token"),
            ("client_id", &creds.client_id),
            ("client_secret", creds.client_secret.expose_secret()),
            ("refresh_token", refresh_token.expose()),
        ])?;
        let answer = self
            .send(Call {
                endpoint: "oauth.token.refresh",
                op: Operation::Refresh,
                method: Method::POST,
                url: self.token_url(creds.endpoints, ""),
                form: Some(form),
                bearer: None,
                account: account_hint,
                retry: true,
                pass_through: &[],
            })
            .await?;
        parse_json::<RawTokenResponse>("oauth.token.refresh", &answer.body).map(TokenSet::from)
    }

    /// What HubSpot knows about an access token. An unknown or expired token is reported as
    /// `active: false` rather than as an error on both generations.
    pub async fn introspect_access_token(
        &self,
        creds: &AppCredentials,
        token: &AccessToken,
    ) -> Result<TokenInfo, HubSpotError> {
        self.introspect(
            creds,
            token.expose(),
            "access_token",
            "access-tokens",
            "oauth.token.introspect_access",
        )
        .await
    }

    /// What HubSpot knows about a refresh token; `active: false` once revoked or uninstalled.
    pub async fn introspect_refresh_token(
        &self,
        creds: &AppCredentials,
        token: &RefreshToken,
    ) -> Result<TokenInfo, HubSpotError> {
        self.introspect(
            creds,
            token.expose(),
            "refresh_token",
            "refresh-tokens",
            "oauth.token.introspect_refresh",
        )
        .await
    }

    async fn introspect(
        &self,
        creds: &AppCredentials,
        token: &str,
        type_hint: &str,
        legacy_collection: &str,
        endpoint: &'static str,
    ) -> Result<TokenInfo, HubSpotError> {
        let call = match creds.endpoints {
            OAuthEndpoints::V1Legacy => Call {
                endpoint,
                op: Operation::Introspect,
                method: Method::GET,
                url: self.api_url(&format!(
                    "/oauth/v1/{legacy_collection}/{}",
                    utf8_percent_encode(token, ESCAPE)
                )),
                form: None,
                bearer: None,
                account: None,
                retry: true,
                pass_through: &[404],
            },
            OAuthEndpoints::V2026_03 => Call {
                endpoint,
                op: Operation::Introspect,
                method: Method::POST,
                url: self.token_url(creds.endpoints, "/introspect"),
                form: Some(encode_form(&[
                    ("client_id", &creds.client_id),
                    ("client_secret", creds.client_secret.expose_secret()),
                    ("token", token),
                    ("token_type_hint", type_hint),
                ])?),
                bearer: None,
                account: None,
                retry: true,
                pass_through: &[],
            },
        };
        match self.send(call).await {
            Ok(answer) if answer.status == StatusCode::NOT_FOUND => Ok(TokenInfo::inactive()),
            Ok(answer) => parse_json::<RawTokenInfo>(endpoint, &answer.body).map(TokenInfo::from),
            // The legacy endpoints answer an unknown refresh token with BAD_REFRESH_TOKEN.
            Err(e) if e.is_reauth_required() => Ok(TokenInfo::inactive()),
            Err(e) if names_a_dead_token(&e) => Ok(TokenInfo::inactive()),
            Err(e) => Err(e),
        }
    }

    /// Revokes a refresh token (on uninstall or tenant deletion). Access tokens already issued
    /// stay valid until they expire. A token HubSpot no longer knows yields
    /// [`HubSpotError::InvalidGrant`], which callers can treat as "already revoked".
    pub async fn revoke_refresh_token(
        &self,
        creds: &AppCredentials,
        token: &RefreshToken,
    ) -> Result<(), HubSpotError> {
        let call = match creds.endpoints {
            OAuthEndpoints::V1Legacy => Call {
                endpoint: "oauth.token.revoke",
                op: Operation::Revoke,
                method: Method::DELETE,
                url: self.api_url(&format!(
                    "/oauth/v1/refresh-tokens/{}",
                    utf8_percent_encode(token.expose(), ESCAPE)
                )),
                form: None,
                bearer: None,
                account: None,
                retry: true,
                pass_through: &[],
            },
            OAuthEndpoints::V2026_03 => Call {
                endpoint: "oauth.token.revoke",
                op: Operation::Revoke,
                method: Method::POST,
                url: self.token_url(creds.endpoints, "/revoke"),
                form: Some(encode_form(&[
                    ("client_id", &creds.client_id),
                    ("client_secret", creds.client_secret.expose_secret()),
                    ("token", token.expose()),
                    ("token_type_hint", "refresh_token"),
                ])?),
                bearer: None,
                account: None,
                retry: true,
                pass_through: &[],
            },
        };
        self.send(call).await.map(|_| ())
    }

    /// GETs `path_and_query` (e.g. `/crm/v3/objects/contacts?limit=1`) from the API host with
    /// the access token, retrying transient failures and 429s. Only paths are accepted so the
    /// token can never be sent to another host.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        token: &AccessToken,
        path_and_query: &str,
        account: Option<u64>,
    ) -> Result<T, HubSpotError> {
        let url = self.api_path_url(path_and_query)?;
        let answer = self
            .send(Call {
                endpoint: "api.get",
                op: Operation::Api,
                method: Method::GET,
                url,
                form: None,
                bearer: Some(token),
                account,
                retry: true,
                pass_through: &[],
            })
            .await?;
        parse_json::<T>("api.get", &answer.body)
    }

    fn token_url(&self, generation: OAuthEndpoints, suffix: &str) -> Url {
        match generation {
            OAuthEndpoints::V1Legacy => self.api_url(&format!("/oauth/v1/token{suffix}")),
            OAuthEndpoints::V2026_03 => self.api_url(&format!("/oauth/2026-03/token{suffix}")),
        }
    }

    /// `path` must already be escaped.
    fn api_url(&self, path: &str) -> Url {
        let base = &self.inner.config.api_base_url;
        let mut url = base.clone();
        url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
        url.set_query(None);
        url
    }

    fn api_path_url(&self, path_and_query: &str) -> Result<Url, HubSpotError> {
        let invalid = |reason: &str| HubSpotError::InvalidInput {
            reason: reason.to_owned(),
        };
        if !path_and_query.starts_with('/') || path_and_query.starts_with("//") {
            return Err(invalid("API path must start with a single `/`"));
        }
        if path_and_query.contains('#') || path_and_query.contains('\\') {
            return Err(invalid("API path must not contain `#` or `\\`"));
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut url = self.api_url(path);
        url.set_query(query);
        Ok(url)
    }

    async fn send(&self, call: Call<'_>) -> Result<Answer, HubSpotError> {
        let span = tracing::info_span!(
            "hubspot.call",
            endpoint = call.endpoint,
            account = call.account,
            attempts = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        self.send_inner(&call).instrument(span).await
    }

    async fn send_inner(&self, call: &Call<'_>) -> Result<Answer, HubSpotError> {
        let policy = &self.inner.config.retry;
        let max_attempts = if call.retry {
            policy.max_attempts.max(1)
        } else {
            1
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let (Some(limiter), Some(account)) = (&self.inner.limiter, call.account) {
                limiter.acquire(account).await;
            }
            let started = Instant::now();
            let outcome = self.attempt(call).await;
            let elapsed = started.elapsed();
            let label = match &outcome {
                Ok(_) => "ok",
                Err(e) => e.class(),
            };
            metrics::histogram!(
                "hk_hubspot_request_seconds",
                "endpoint" => call.endpoint,
                "outcome" => label,
            )
            .record(elapsed.as_secs_f64());
            let span = tracing::Span::current();
            span.record("attempts", attempt);
            let status = match &outcome {
                Ok(a) => Some(a.status.as_u16()),
                Err(e) => e.http_status(),
            };
            if let Some(s) = status {
                span.record("status", s);
            }
            tracing::debug!(
                endpoint = call.endpoint,
                attempt,
                status,
                outcome = label,
                latency_ms = elapsed.as_millis() as u64,
                "HubSpot request finished"
            );

            let err = match outcome {
                Ok(answer) => return Ok(answer),
                Err(e) => e,
            };
            let server_wait = err.retry_after();
            if let (Some(limiter), Some(account), Some(wait)) =
                (&self.inner.limiter, call.account, server_wait)
            {
                limiter.block(account, wait);
            }
            let wait = if err.is_retryable() && attempt < max_attempts {
                match server_wait {
                    // Too long to hold a task: the caller reschedules from `retry_after`.
                    Some(w) if w > policy.max_server_wait => None,
                    Some(w) => Some(w),
                    None => Some(backoff_delay(policy, attempt, &mut rand::thread_rng())),
                }
            } else {
                None
            };
            match wait {
                Some(wait) => {
                    tracing::info!(
                        endpoint = call.endpoint,
                        attempt,
                        class = err.class(),
                        wait_ms = wait.as_millis() as u64,
                        "retrying HubSpot request"
                    );
                    tokio::time::sleep(wait).await;
                }
                None => {
                    tracing::info!(
                        endpoint = call.endpoint,
                        attempt,
                        class = err.class(),
                        "HubSpot request failed"
                    );
                    return Err(err);
                }
            }
        }
    }

    /// One HTTP round trip, mapped to our error type.
    async fn attempt(&self, call: &Call<'_>) -> Result<Answer, HubSpotError> {
        let mut req = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone())
            .header(ACCEPT, "application/json");
        if let Some(form) = &call.form {
            req = req
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.expose_secret().to_owned());
        }
        if let Some(token) = call.bearer {
            // reqwest marks the header sensitive so it is redacted from its own Debug output.
            req = req.bearer_auth(token.expose());
        }
        let response = req
            .send()
            .await
            .map_err(|e| HubSpotError::from_transport(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        if let (Some(limiter), Some(account), Some(wait)) = (
            &self.inner.limiter,
            call.account,
            window_exhausted_wait(&headers),
        ) {
            // HubSpot counts traffic we cannot see (other Hubkeeper replicas); trust it.
            limiter.block(account, wait);
        }
        let body = read_body(response, call.endpoint).await?;
        if status.is_success() || call.pass_through.contains(&status.as_u16()) {
            return Ok(Answer { status, body });
        }
        let retry_after = retry_after_for(status, &headers);
        Err(classify(call.op, status.as_u16(), &body, retry_after))
    }
}

/// The wait HubSpot asked for with a 429, or with a 5xx that carries `Retry-After` (a 503 during
/// maintenance): both are honoured the same way.
fn retry_after_for(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
        .then(|| server_requested_wait(headers, chrono::Utc::now()))
        .flatten()
}

async fn read_body(
    mut response: reqwest::Response,
    endpoint: &'static str,
) -> Result<Vec<u8>, HubSpotError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HubSpotError::from_transport(&e))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(HubSpotError::InvalidResponse {
                endpoint,
                reason: format!("body larger than {MAX_BODY_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Decodes a 2xx body. serde_json's messages can quote the offending value (which may be a
/// token), so only the error category and position are reported.
fn parse_json<T: DeserializeOwned>(endpoint: &'static str, body: &[u8]) -> Result<T, HubSpotError> {
    serde_json::from_slice(body).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "unexpected JSON shape",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        HubSpotError::InvalidResponse {
            endpoint,
            reason: format!("{kind} at line {} column {}", e.line(), e.column()),
        }
    })
}

fn encode_form(pairs: &[(&str, &str)]) -> Result<SecretString, HubSpotError> {
    serde_urlencoded::to_string(pairs)
        .map(SecretString::from)
        .map_err(|_| HubSpotError::InvalidInput {
            reason: "form body could not be encoded".to_owned(),
        })
}

fn check_base_url(name: &str, url: &Url) -> Result<(), HubSpotError> {
    let ok = matches!(url.scheme(), "http" | "https")
        && url.has_host()
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if ok {
        Ok(())
    } else {
        Err(HubSpotError::InvalidInput {
            reason: format!(
                "{name} must be an http(s) URL with a host and no query, fragment or credentials"
            ),
        })
    }
}

/// Whether an introspection error says "this token is dead" rather than "your request is wrong".
/// HubSpot's answer for a dead token is unconfirmed: the legacy endpoint is seen answering an
/// expired access token with `401 EXPIRED_AUTHENTICATION`, and the date-versioned spec shows a
/// `400 VALIDATION_ERROR`. Both mean inactive; a bad client stays an error.
fn names_a_dead_token(error: &HubSpotError) -> bool {
    if matches!(error, HubSpotError::InvalidClient { .. }) {
        return false;
    }
    if !matches!(error.http_status(), Some(400 | 401)) {
        return false;
    }
    let Some(details) = error.details() else {
        return false;
    };
    let category = details.category.as_deref().unwrap_or("");
    let rfc = details.error.as_deref().unwrap_or("");
    matches!(
        category,
        "EXPIRED_AUTHENTICATION" | "INVALID_AUTHENTICATION" | "VALIDATION_ERROR"
    ) || matches!(rfc, "invalid_token")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HubSpotConfig, RetryPolicy};

    fn client_with(api: &str, app: &str) -> HubSpotClient {
        HubSpotClient::new(HubSpotConfig {
            api_base_url: Url::parse(api).unwrap(),
            app_base_url: Url::parse(app).unwrap(),
            retry: RetryPolicy::none(),
            ..HubSpotConfig::default()
        })
        .unwrap()
    }

    fn creds(endpoints: OAuthEndpoints) -> AppCredentials {
        AppCredentials {
            client_id: "5a1c-client".into(),
            client_secret: SecretString::from("shh"),
            redirect_uri: "https://hk.example.com/oauth/callback".into(),
            endpoints,
        }
    }

    #[test]
    fn authorize_url_encodes_scopes_with_percent_20() {
        let c = HubSpotClient::new(HubSpotConfig::default()).unwrap();
        let url = c.authorize_url(
            &creds(OAuthEndpoints::default()),
            &["crm.objects.contacts.read".into(), "oauth".into()],
            &["crm.objects.deals.read".into(), "e-commerce".into()],
            "st+ate/1",
            None,
        );
        assert_eq!(
            url.as_str(),
            "https://app.hubspot.com/oauth/authorize?client_id=5a1c-client\
             &redirect_uri=https%3A%2F%2Fhk.example.com%2Foauth%2Fcallback\
             &scope=crm.objects.contacts.read%20oauth\
             &optional_scope=crm.objects.deals.read%20e-commerce&state=st%2Bate%2F1"
        );
        // HubSpot and any standard parser read it back unchanged.
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert!(pairs.contains(&("scope".into(), "crm.objects.contacts.read oauth".into())));
        assert!(pairs.contains(&("state".into(), "st+ate/1".into())));
    }

    #[test]
    fn authorize_url_for_one_account_and_base_path() {
        let c = client_with("http://127.0.0.1:9/hubapi/", "http://127.0.0.1:9/app/");
        let url = c.authorize_url(&creds(OAuthEndpoints::V1Legacy), &[], &[], "s", Some(62515));
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/app/oauth/62515/authorize?client_id=5a1c-client\
             &redirect_uri=https%3A%2F%2Fhk.example.com%2Foauth%2Fcallback&state=s"
        );
    }

    #[test]
    fn endpoint_urls_per_generation() {
        let c = client_with("http://sim:8080/prefix", "http://sim:8080");
        assert_eq!(
            c.token_url(OAuthEndpoints::V1Legacy, "").as_str(),
            "http://sim:8080/prefix/oauth/v1/token"
        );
        assert_eq!(
            c.token_url(OAuthEndpoints::V2026_03, "/introspect")
                .as_str(),
            "http://sim:8080/prefix/oauth/2026-03/token/introspect"
        );
    }

    #[test]
    fn api_paths_cannot_leave_the_api_host() {
        let c = client_with("https://api.hubapi.com", "https://app.hubspot.com");
        let ok = c.api_path_url("/crm/v3/objects/contacts?limit=1").unwrap();
        assert_eq!(
            ok.as_str(),
            "https://api.hubapi.com/crm/v3/objects/contacts?limit=1"
        );
        for bad in [
            "https://evil.example/x",
            "//evil.example/x",
            "crm/v3",
            "/x#frag",
            "/\\evil",
        ] {
            assert!(c.api_path_url(bad).is_err(), "{bad}");
        }
        let dots = c.api_path_url("/../../x@evil.example/y").unwrap();
        assert_eq!(dots.host_str(), Some("api.hubapi.com"));
    }

    #[test]
    fn rejects_unusable_base_urls() {
        for bad in ["ftp://x", "https://u:p@x", "https://x/?q=1", "mailto:a@b"] {
            let cfg = HubSpotConfig {
                api_base_url: Url::parse(bad).unwrap(),
                ..HubSpotConfig::default()
            };
            assert!(HubSpotClient::new(cfg).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_errors_do_not_quote_values() {
        let body = br#"{"access_token":12,"refresh_token":"rt-secret-value","expires_in":"x"}"#;
        let err = parse_json::<RawTokenResponse>("t", body)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unexpected JSON shape"), "{err}");
        assert!(
            !err.contains("rt-secret-value") && !err.contains("integer"),
            "{err}"
        );
    }
}
