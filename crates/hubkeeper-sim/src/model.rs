//! Wire types of the control API (`/_sim/...`), shared by the server and [`crate::SimControl`] so
//! the two can never drift apart.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hubkeeper_hubspot::signature::SignatureVersion;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::RotationMode;

/// Durations travel as integer milliseconds so JSON stays readable and tests can compress time.
pub(crate) mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

pub(crate) mod duration_ms_vec {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<u64>::deserialize(d).map(|v| v.into_iter().map(Duration::from_millis).collect())
    }
}

/// An app's client secret. It has to travel in seed files and registration requests, but must never
/// end up in logs, so it only shows itself through [`ClientSecret::expose`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        ClientSecret(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// What `/oauth/2026-03/token/introspect` answers for an unknown or dead token. HubSpot's answer is
/// unconfirmed: RFC 7662 says `200 {"active":false}`, HubSpot's spec also shows a 400
/// `VALIDATION_ERROR` body, so tests can pick either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InactiveIntrospection {
    #[default]
    ActiveFalse,
    ValidationError,
}

/// The knobs that can change while the simulator runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub rotation: RotationMode,
    #[serde(rename = "token_lifetime_ms", with = "duration_ms")]
    pub token_lifetime: Duration,
    #[serde(rename = "code_lifetime_ms", with = "duration_ms")]
    pub code_lifetime: Duration,
    pub rate_limit_max: u32,
    #[serde(rename = "rate_limit_window_ms", with = "duration_ms")]
    pub rate_limit_window: Duration,
    /// Whether a 429 carries `Retry-After` (unconfirmed for HubSpot; off by default so clients are
    /// proven to cope with the header-less reading).
    pub rate_limit_retry_after: bool,
    /// Success status of `POST /oauth/2026-03/token/revoke` (200 or 204; unconfirmed).
    pub v3_revoke_status: u16,
    pub v3_inactive_introspection: InactiveIntrospection,
    #[serde(rename = "webhook_retry_schedule_ms", with = "duration_ms_vec")]
    pub webhook_retry_schedule: Vec<Duration>,
}

/// A partial update of [`Settings`]; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SettingsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_lifetime_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_lifetime_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_window_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_retry_after: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v3_revoke_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v3_inactive_introspection: Option<InactiveIntrospection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_retry_schedule_ms: Option<Vec<u64>>,
}

/// Which group of endpoints a fault rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultEndpoint {
    /// `POST /oauth/{v1,2026-03,v3}/token`.
    Token,
    /// Legacy `GET` token metadata and `POST .../token/introspect`.
    Introspect,
    /// Legacy `DELETE /oauth/v1/refresh-tokens/..` and `POST .../token/revoke`.
    Revoke,
    /// `/crm/...`.
    Crm,
    /// The consent pages.
    Authorize,
    /// Every HubSpot endpoint (never the control API).
    Any,
}

/// What happens to a request a rule catches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum FaultMode {
    /// Answer `status` with HubSpot's generic error body, for a `rate` fraction of requests.
    ErrorRate {
        status: u16,
        #[serde(default = "one")]
        rate: f64,
    },
    /// Answer `status` to the next `count` requests, then stop.
    Burst { status: u16, count: u32 },
    /// Delay the request by `ms`, then handle it normally.
    Latency { ms: u64 },
    /// Hang for `ms` (longer than any sane client timeout) and then drop the connection.
    Timeout {
        #[serde(default = "default_hang_ms")]
        ms: u64,
    },
    /// Drop the connection without an answer, as when HubSpot is unreachable.
    Down,
}

fn one() -> f64 {
    1.0
}

fn default_hang_ms() -> u64 {
    60_000
}

/// A fault-injection rule, e.g. `{"endpoint":"token","mode":"burst","status":503,"count":2}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    pub endpoint: FaultEndpoint,
    #[serde(flatten)]
    pub mode: FaultMode,
    /// Only requests that belong to this account (resolved from the token, code or path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_id: Option<u64>,
    /// Fire at most this many times (any mode); `burst` carries its own `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

impl FaultRule {
    pub fn new(endpoint: FaultEndpoint, mode: FaultMode) -> Self {
        FaultRule {
            endpoint,
            mode,
            hub_id: None,
            times: None,
        }
    }

    pub fn for_account(mut self, hub_id: u64) -> Self {
        self.hub_id = Some(hub_id);
        self
    }

    pub fn times(mut self, times: u32) -> Self {
        self.times = Some(times);
        self
    }
}

/// A rule as stored, with how often it fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultView {
    pub id: u64,
    #[serde(flatten)]
    pub rule: FaultRule,
    pub fired: u32,
    pub exhausted: bool,
}

/// Scripted consent: what a user clicking through the consent page would submit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApproveRequest {
    pub client_id: String,
    pub redirect_uri: String,
    /// Required scopes (the install URL's `scope`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The install URL's `optional_scope`; those the app may hold are granted.
    #[serde(default)]
    pub optional_scopes: Vec<String>,
    #[serde(default)]
    pub state: Option<String>,
    pub hub_id: u64,
    /// User id or email of the approving user; the account's first user when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Click "Cancel" instead of "Connect".
    #[serde(default)]
    pub deny: bool,
}

impl ApproveRequest {
    pub fn new(client_id: &str, redirect_uri: &str, scopes: &[&str], hub_id: u64) -> Self {
        ApproveRequest {
            client_id: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            optional_scopes: Vec::new(),
            state: None,
            hub_id,
            user: None,
            deny: false,
        }
    }

    /// The consent a user gives to an install URL as HubSpot's authorize page receives it
    /// (`client_id`, `redirect_uri`, `scope`, `optional_scope`, `state` from its query), for
    /// `hub_id`: how tests and benches click "Connect" on an install their app started.
    pub fn for_authorize_url(authorize_url: &str, hub_id: u64) -> Result<Self, url::ParseError> {
        let url = url::Url::parse(authorize_url)?;
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let list = |name: &str| -> Vec<String> {
            param(name)
                .unwrap_or_default()
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        Ok(ApproveRequest {
            client_id: param("client_id").unwrap_or_default(),
            redirect_uri: param("redirect_uri").unwrap_or_default(),
            scopes: list("scope"),
            optional_scopes: list("optional_scope"),
            state: param("state"),
            hub_id,
            user: None,
            deny: false,
        })
    }
}

/// The redirect the browser would follow after consent. The location carries the code, so both
/// are kept secret.
#[derive(Debug, Deserialize)]
pub struct Approval {
    pub location: SecretString,
    pub code: Option<SecretString>,
    pub state: Option<String>,
    pub error: Option<String>,
    #[serde(default)]
    pub granted_scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationRef {
    pub client_id: String,
    pub hub_id: u64,
}

/// `POST /_sim/apps/rotate-secret`: the app's new client secret, and how long the previous one
/// keeps authenticating token calls (HubSpot keeps it until the developer expires it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    pub client_id: String,
    pub client_secret: ClientSecret,
    /// Seconds the previous secret stays valid; 0 (the default) ends it at once, after which
    /// it answers `invalid_client`.
    #[serde(default)]
    pub overlap_secs: u64,
}

/// Answer of `POST /_sim/apps/rotate-secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateSecretResult {
    pub client_id: String,
    /// Seconds the previous secret stays valid.
    pub previous_valid_for_secs: u64,
}

/// Which access tokens `POST /_sim/tokens/expire` ages; absent fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireTokens {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireTokensResult {
    pub expired: u64,
}

/// Call counts for one account, one app, or everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSet {
    pub code_exchanges: u64,
    pub code_exchange_failures: u64,
    pub refresh_calls: u64,
    pub refresh_failures: u64,
    pub introspections: u64,
    pub revokes: u64,
    /// Every CRM call that could be attributed, including those with an expired token.
    pub crm_calls: u64,
    pub crm_calls_expired_token: u64,
    /// CRM calls with an unknown, revoked or uninstalled token.
    pub crm_calls_invalid_token: u64,
    pub rate_limited: u64,
    pub rotated_tokens: u64,
    pub tokens_issued: u64,
    pub faults_injected: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshTokenState {
    Active,
    /// Replaced by rotation; still usable until the grace period ends.
    Superseded,
    Revoked,
    /// Killed by uninstall or by the end of the rotation grace period.
    Dead,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshTokenCounters {
    /// First 12 hex digits of the token's SHA-256: enough to correlate, useless to an attacker.
    pub token_hash: String,
    pub issued_at: DateTime<Utc>,
    pub refresh_calls: u64,
    pub state: RefreshTokenState,
}

/// Per-installation history, enough to assert "at most one refresh per token lifetime".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationCounters {
    pub client_id: String,
    pub app_id: u64,
    pub hub_id: u64,
    pub installed: bool,
    pub scopes: Vec<String>,
    pub access_tokens_issued: u64,
    pub refresh_calls: u64,
    /// Unix milliseconds of every refresh grant call made with one of this installation's tokens.
    pub refresh_times_ms: Vec<i64>,
    /// The most refresh calls made during the lifetime of any one access token of this
    /// installation (the call that minted it excluded). Above 1 means the client refreshed twice
    /// while a token was still valid.
    pub max_refreshes_per_token_lifetime: u32,
    /// Every access token of this installation during whose lifetime more than one refresh call
    /// was made (the call that minted it excluded). Lets a test ask what caused each repeated
    /// refresh, not only how many there were.
    #[serde(default)]
    pub repeated_refreshes: Vec<RepeatedRefreshes>,
    pub refresh_tokens: Vec<RefreshTokenCounters>,
}

/// The refresh calls made during one access token's lifetime, when there were several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepeatedRefreshes {
    /// When the token was issued (Unix milliseconds): by the call that minted it.
    pub token_issued_ms: i64,
    /// The refresh calls during its lifetime (Unix milliseconds).
    pub calls_ms: Vec<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub total: CounterSet,
    pub by_account: BTreeMap<u64, CounterSet>,
    pub by_app: BTreeMap<String, CounterSet>,
    pub installations: Vec<InstallationCounters>,
}

impl Counters {
    pub fn account(&self, hub_id: u64) -> CounterSet {
        self.by_account.get(&hub_id).cloned().unwrap_or_default()
    }

    pub fn app(&self, client_id: &str) -> CounterSet {
        self.by_app.get(client_id).cloned().unwrap_or_default()
    }

    pub fn installation(&self, client_id: &str, hub_id: u64) -> Option<&InstallationCounters> {
        self.installations
            .iter()
            .find(|i| i.client_id == client_id && i.hub_id == hub_id)
    }
}

/// One HubSpot-side request as the simulator saw it. Token values are never logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLogEntry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub method: String,
    /// The path with token segments replaced by a hash prefix; no query string.
    pub path: String,
    pub status: u16,
    pub hub_id: Option<u64>,
    pub client_id: Option<String>,
    pub latency_ms: u64,
    /// The fault that shaped the answer, if any (e.g. `burst 503`, `down`).
    pub fault: Option<String>,
    /// Hash prefix of the token the request carried, if any.
    pub token_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateEvents {
    pub count: usize,
    pub portal_id: u64,
    /// Defaults to `contact.propertyChange`.
    #[serde(default)]
    pub subscription_type: Option<String>,
}

/// A webhook delivery job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliverRequest {
    pub target_url: String,
    /// The app whose secret signs the requests and whose `appId` the events carry.
    pub client_id: String,
    /// Events in HubSpot's format; missing `eventId`, `subscriptionId`, `appId` and `occurredAt`
    /// are filled in, `attemptNumber` is always set by the simulator. `portalId` is required.
    #[serde(default)]
    pub events: Vec<serde_json::Value>,
    #[serde(default)]
    pub generate: Option<GenerateEvents>,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// v1 and v2 share `X-HubSpot-Signature`, so at most one of them; empty sends unsigned requests.
    #[serde(default = "default_signature_versions")]
    pub signature_versions: Vec<SignatureVersion>,
    /// Fraction (0..=1) of events deliberately sent again in a later batch.
    #[serde(default)]
    pub duplicate_rate: f64,
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
    /// Answer only when every batch was delivered or gave up.
    #[serde(default)]
    pub wait: bool,
}

fn default_batch_size() -> usize {
    100
}

fn default_signature_versions() -> Vec<SignatureVersion> {
    vec![SignatureVersion::V1, SignatureVersion::V3]
}

fn default_webhook_timeout_ms() -> u64 {
    5_000
}

impl DeliverRequest {
    pub fn new(target_url: &str, client_id: &str) -> Self {
        DeliverRequest {
            target_url: target_url.to_string(),
            client_id: client_id.to_string(),
            events: Vec::new(),
            generate: None,
            batch_size: default_batch_size(),
            signature_versions: default_signature_versions(),
            duplicate_rate: 0.0,
            timeout_ms: default_webhook_timeout_ms(),
            wait: false,
        }
    }

    pub fn generate(mut self, count: usize, portal_id: u64) -> Self {
        self.generate = Some(GenerateEvents {
            count,
            portal_id,
            subscription_type: None,
        });
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Running,
    Completed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Pending,
    InFlight,
    WaitingRetry,
    Delivered,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttemptOutcome {
    Http { status: u16 },
    Timeout,
    Transport { message: String },
}

impl AttemptOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, AttemptOutcome::Http { status } if (200..300).contains(status))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptReport {
    pub attempt_number: u32,
    pub at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    pub latency_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchReport {
    pub index: usize,
    pub portal_id: u64,
    pub event_ids: Vec<serde_json::Value>,
    /// The batch re-sends events already sent in an earlier batch (`duplicate_rate`).
    pub duplicate: bool,
    pub status: BatchStatus,
    pub attempts: Vec<AttemptReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryReport {
    pub id: Uuid,
    pub client_id: String,
    pub target_url: String,
    pub state: DeliveryState,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub delivered_batches: usize,
    pub failed_batches: usize,
    pub total_attempts: usize,
    pub batches: Vec<BatchReport>,
}

/// Registered app as listed by `GET /_sim/apps` (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppView {
    pub app_id: u64,
    pub client_id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
}

/// Body of every control API error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlErrorBody {
    pub error: String,
    pub message: String,
}
