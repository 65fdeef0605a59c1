//! The integration self-test (`hubkeeper selftest`, `POST /v1/selftest`, the Settings page's
//! button): checks, step by step, that this deployment can do its job against the HubSpot it is
//! configured for, and reports each step as passed, failed (with the reason) or skipped, with
//! its duration.
//!
//! Steps, in order:
//! 1. `database_schema`: every migration applied, the expected tables present;
//! 2. `oauth_initiation`: an install link is built for the app and HubSpot's consent page
//!    answers it (the simulator validates client id, redirect URI and scopes here);
//! 3. `oauth_callback`: the callback refuses a forged state and consumes a real one (sent back
//!    as "declined", so nothing is installed);
//! 4. `token_exchange_and_refresh`: against the simulator, a scripted consent, a code exchange
//!    and a refresh; against real HubSpot (no user to consent), a probe code that HubSpot must
//!    refuse as a bad code rather than as a bad client, which proves the app's credentials;
//! 5. `hubspot_api`: a CRM call with the token from step 4 (simulator) or of a connected
//!    installation of the app (real HubSpot); the simulator's refresh token is revoked after;
//! 6. `rate_limit_enforcement`: the live OAuth rate limiter refuses request `max + 1` from one
//!    address (a documentation address, 192.0.2.1, whose counter is forgotten afterwards).
//!
//! Nothing here changes tenant data: no installation is created and no token of a real tenant
//! is revoked.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hubkeeper_domain::app::event_types as app_events;
use hubkeeper_domain::AppId;
use hubkeeper_hubspot::{AccessToken, HubSpotClient, HubSpotError};
use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::PgPool;

use crate::{AppService, CallbackError, CallbackParams, OAuthService, TokenService};

/// Tables every current Hubkeeper schema has.
pub const EXPECTED_TABLES: &[&str] = &[
    "events",
    "stream_cursors",
    "api_keys",
    "data_keys",
    "oauth_states",
    "token_usage",
    "rm_installations",
    "rm_apps",
    "rm_activity",
    "plan_codes",
    "usage_daily",
    "rm_plans",
    "rm_subscriptions",
    "backup_runs",
    "selftest_runs",
];

/// The documentation address (RFC 5737) whose counter the rate-limit step uses.
const PROBE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// It worked.
    Passed,
    /// It did not; `detail` says why.
    Failed,
    /// It could not run here; `detail` says why.
    Skipped,
}

/// One step's result.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The step.
    pub name: &'static str,
    /// How it ended.
    pub status: StepStatus,
    /// What was checked, or why it failed.
    pub detail: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct SelfTestReport {
    /// No step failed.
    pub passed: bool,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// The HubSpot API base URL tested against.
    pub hubspot_api_url: String,
    /// Whether that is the Hubkeeper simulator.
    pub simulator: bool,
    /// The app used.
    pub app_id: Option<String>,
    /// Every step, in order.
    pub steps: Vec<StepReport>,
}

impl SelfTestReport {
    /// What the audit log records about this run (an `Operation`'s `SelfTestRun`).
    pub fn as_operation(&self) -> hubkeeper_domain::operations::OperationCommand {
        hubkeeper_domain::operations::OperationCommand::RecordSelfTest {
            passed: self.passed,
            app_id: self.app_id.as_deref().and_then(|a| a.parse().ok()),
            steps: u32::try_from(self.steps.len()).unwrap_or(u32::MAX),
            failed_steps: self
                .steps
                .iter()
                .filter(|s| s.status == StepStatus::Failed)
                .map(|s| s.name.to_owned())
                .collect(),
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }

    /// The first failed step.
    pub fn first_failure(&self) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.status == StepStatus::Failed)
    }
}

/// The limiter the OAuth routes use, as the self-test sees it.
#[async_trait::async_trait]
pub trait RateLimitProbe: Send + Sync {
    /// Whether limiting is on, requests allowed per window, the window.
    fn limits(&self) -> (bool, u32, Duration);
    /// Counts one request from `ip`: `Err(wait)` when it is over the limit.
    async fn check(&self, ip: IpAddr) -> Result<(), Duration>;
    /// Forgets `ip`'s counter.
    async fn forget(&self, ip: IpAddr);
}

/// What the self-test uses.
#[derive(Clone)]
pub struct SelfTestDeps {
    /// The database.
    pub pool: PgPool,
    /// Apps (credentials); `None` without master keys.
    pub apps: Option<AppService>,
    /// The install flow; `None` without master keys.
    pub oauth: Option<OAuthService>,
    /// Tokens of connected installations; `None` without master keys.
    pub tokens: Option<TokenService>,
    /// The configured HubSpot.
    pub hubspot: HubSpotClient,
    /// The OAuth rate limiter in effect.
    pub rate_limiter: Option<Arc<dyn RateLimitProbe>>,
}

struct Step {
    name: &'static str,
    started: Instant,
}

impl Step {
    fn start(name: &'static str) -> Self {
        Step {
            name,
            started: Instant::now(),
        }
    }

    fn end(self, status: StepStatus, detail: impl Into<String>) -> StepReport {
        let report = StepReport {
            name: self.name,
            status,
            detail: detail.into(),
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        metrics::counter!(
            "hk_selftest_steps_total",
            "step" => self.name,
            "status" => match status {
                StepStatus::Passed => "passed",
                StepStatus::Failed => "failed",
                StepStatus::Skipped => "skipped",
            }
        )
        .increment(1);
        report
    }
}

/// Runs the self-test for `app_id` (default: the oldest app not deleted) and records it in
/// `selftest_runs`.
pub async fn run(deps: &SelfTestDeps, app_id: Option<AppId>) -> SelfTestReport {
    let started_at = Utc::now();
    let base = deps.hubspot.config().api_base_url.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let simulator = is_simulator(&http, &base).await;
    let mut steps = Vec::new();
    steps.push(database_schema(&deps.pool).await);

    let app = match app_id {
        Some(id) => Some(id),
        None => default_app(&deps.pool).await,
    };
    let credentials = match (&deps.apps, app) {
        (Some(apps), Some(id)) => Some(apps.credentials(id).await.map_err(|e| e.to_string())),
        _ => None,
    };
    let missing = match (&deps.apps, app) {
        (None, _) => Some("token services are not configured here (HK_MASTER_KEYS is missing)"),
        (_, None) => Some("no app is registered; add one on the Apps page first"),
        _ => None,
    };

    // 2 + 3: the install flow.
    let mut state = None;
    let step = Step::start("oauth_initiation");
    let report = match (&deps.oauth, app, missing) {
        (_, _, Some(why)) => step.end(StepStatus::Failed, why),
        (Some(oauth), Some(app_id), None) => match oauth.install_url(app_id).await {
            Err(e) => step.end(
                StepStatus::Failed,
                format!("cannot build the install link: {e}"),
            ),
            Ok(url) => {
                state = url
                    .query_pairs()
                    .find(|(k, _)| k == "state")
                    .map(|(_, v)| v.into_owned());
                match http.get(url.clone()).send().await {
                    Err(e) => step.end(
                        StepStatus::Failed,
                        format!(
                            "HubSpot's consent page at {} is unreachable: {}",
                            origin(&url),
                            reason(e)
                        ),
                    ),
                    Ok(answer)
                        if answer.status().is_success() || answer.status().is_redirection() =>
                    {
                        step.end(
                            StepStatus::Passed,
                            format!(
                                "install link built; HubSpot's consent page answered {}",
                                answer.status().as_u16()
                            ),
                        )
                    }
                    Ok(answer) => {
                        let status = answer.status().as_u16();
                        let text = answer.text().await.unwrap_or_default();
                        step.end(
                            StepStatus::Failed,
                            format!(
                                "HubSpot refused the install link ({status}): {}",
                                page_text(&text)
                            ),
                        )
                    }
                }
            }
        },
        _ => step.end(StepStatus::Failed, "token services are not configured here"),
    };
    steps.push(report);

    let step = Step::start("oauth_callback");
    let report = match (&deps.oauth, &state) {
        (Some(oauth), Some(state)) => {
            let forged = oauth
                .complete(
                    CallbackParams {
                        code: Some("selftest".into()),
                        state: Some(format!("{state}x")),
                        ..CallbackParams::default()
                    },
                    Some("selftest"),
                )
                .await
                .result;
            let declined = oauth
                .complete(
                    CallbackParams {
                        state: Some(state.clone()),
                        error: Some("access_denied".into()),
                        error_description: Some("Hubkeeper self-test".into()),
                        ..CallbackParams::default()
                    },
                    Some("selftest"),
                )
                .await
                .result;
            match (forged, declined) {
                (Err(CallbackError::InvalidState), Err(CallbackError::AccessDenied)) => step.end(
                    StepStatus::Passed,
                    "a forged state was refused; a valid state was accepted once (sent back as declined)",
                ),
                (forged, declined) => step.end(
                    StepStatus::Failed,
                    format!(
                        "unexpected callback handling: forged state -> {}, declined install -> {}",
                        outcome(&forged),
                        outcome(&declined)
                    ),
                ),
            }
        }
        _ => step.end(
            StepStatus::Skipped,
            "no install link was built (see oauth_initiation)",
        ),
    };
    steps.push(report);

    // 4 + 5: tokens and the API.
    let mut sim_tokens = None;
    let step = Step::start("token_exchange_and_refresh");
    let report = match &credentials {
        None => step.end(StepStatus::Failed, missing.unwrap_or("no app credentials")),
        Some(Err(e)) => step.end(
            StepStatus::Failed,
            format!("cannot open the app's credentials: {e}"),
        ),
        Some(Ok(creds)) if simulator => {
            match sim_exchange(&http, &base, &deps.hubspot, creds).await {
                Ok((set, detail)) => {
                    sim_tokens = Some(set);
                    step.end(StepStatus::Passed, detail)
                }
                Err(e) => step.end(StepStatus::Failed, e.to_string()),
            }
        }
        Some(Ok(creds)) => match deps
            .hubspot
            .exchange_code(creds, "hubkeeper-selftest-probe")
            .await
        {
            Err(HubSpotError::InvalidClient { .. }) => step.end(
                StepStatus::Failed,
                "HubSpot rejected the app's client id or secret",
            ),
            Err(e) if e.http_status() == Some(400) => step.end(
                StepStatus::Passed,
                "HubSpot accepted the client credentials (it refused the probe code as a bad \
                 code); a full exchange needs a user's consent and runs only against the simulator",
            ),
            Err(e) => step.end(StepStatus::Failed, format!("token endpoint: {e}")),
            Ok(_) => step.end(
                StepStatus::Failed,
                "HubSpot accepted a made-up authorization code",
            ),
        },
    };
    steps.push(report);

    let step = Step::start("hubspot_api");
    let report = match (&sim_tokens, &credentials) {
        (Some(set), Some(Ok(creds))) => {
            let result = crm_call(&deps.hubspot, &set.access_token, set.hub_id).await;
            let revoked = deps
                .hubspot
                .revoke_refresh_token(creds, &set.refresh_token)
                .await;
            match (result, revoked) {
                (Ok(n), Ok(())) => step.end(
                    StepStatus::Passed,
                    format!("CRM contacts call answered ({n} contact(s) on the first page); the test token was revoked"),
                ),
                (Ok(_), Err(e)) => step.end(StepStatus::Failed, format!("CRM call worked, but revoking the test token failed: {e}")),
                (Err(e), _) => step.end(StepStatus::Failed, format!("CRM call failed: {e}")),
            }
        }
        (None, Some(Ok(_))) if !simulator => match (&deps.tokens, app) {
            (Some(tokens), Some(app_id)) => {
                match connected_installation(&deps.pool, app_id).await {
                    None => step.end(
                        StepStatus::Skipped,
                        "no connected installation of the app to call HubSpot's API with",
                    ),
                    Some(id) => match tokens
                        .get_token(&id, Duration::from_secs(60), Some("selftest"))
                        .await
                    {
                        Err(e) => step.end(
                            StepStatus::Failed,
                            format!("no token for installation {id}: {e}"),
                        ),
                        Ok(token) => {
                            let access =
                                AccessToken::new(token.access_token.expose_secret().to_owned());
                            match crm_call(&deps.hubspot, &access, Some(token.hub_id.get())).await {
                            Ok(n) => step.end(StepStatus::Passed, format!("CRM contacts call for installation {id} answered ({n} contact(s))")),
                            Err(e) => step.end(StepStatus::Failed, format!("CRM call failed: {e}")),
                        }
                        }
                    },
                }
            }
            _ => step.end(
                StepStatus::Skipped,
                "token services are not configured here",
            ),
        },
        _ => step.end(
            StepStatus::Skipped,
            "no access token (see token_exchange_and_refresh)",
        ),
    };
    steps.push(report);

    steps.push(rate_limit(deps.rate_limiter.as_deref()).await);

    let finished_at = Utc::now();
    let report = SelfTestReport {
        passed: steps.iter().all(|s| s.status != StepStatus::Failed),
        started_at,
        finished_at,
        hubspot_api_url: base.to_string(),
        simulator,
        app_id: app.map(|a| a.to_string()),
        steps,
    };
    metrics::counter!("hk_selftest_runs_total", "passed" => report.passed.to_string()).increment(1);
    if let Err(e) = record(&deps.pool, &report).await {
        tracing::warn!(error = %e, "self-test report not recorded");
    }
    report
}

/// The latest recorded report.
pub async fn last_report(pool: &PgPool) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT report FROM selftest_runs ORDER BY started_at DESC, id DESC LIMIT 1")
        .fetch_optional(pool)
        .await
}

async fn record(pool: &PgPool, report: &SelfTestReport) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO selftest_runs (started_at, finished_at, passed, report) VALUES ($1, $2, $3, $4)",
    )
    .bind(report.started_at)
    .bind(report.finished_at)
    .bind(report.passed)
    .bind(serde_json::to_value(report).unwrap_or_default())
    .execute(pool)
    .await?;
    Ok(())
}

fn outcome<T>(result: &Result<T, CallbackError>) -> String {
    match result {
        Ok(_) => "accepted".into(),
        Err(e) => e.code().into(),
    }
}

fn origin(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// A transport error without the URL (which may carry a state or code).
fn reason(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or host unreachable".into()
    } else {
        e.without_url().to_string()
    }
}

/// The readable text of an HTML error page, shortened.
fn page_text(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let joined = words.join(" ");
    match joined.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

async fn is_simulator(http: &reqwest::Client, base: &url::Url) -> bool {
    let Ok(url) = base.join("_sim/health") else {
        return false;
    };
    match http.get(url).send().await {
        Ok(answer) if answer.status().is_success() => answer
            .json::<serde_json::Value>()
            .await
            .is_ok_and(|v| v.get("status").and_then(|s| s.as_str()) == Some("ok")),
        _ => false,
    }
}

async fn database_schema(pool: &PgPool) -> StepReport {
    let step = Step::start("database_schema");
    let pending = match hubkeeper_store::migrations_pending(pool).await {
        Ok(n) => n,
        Err(e) => return step.end(StepStatus::Failed, format!("database unreachable: {e}")),
    };
    let mut missing = Vec::new();
    for table in EXPECTED_TABLES {
        match sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
            .bind(*table)
            .fetch_one(pool)
            .await
        {
            Ok(true) => {}
            Ok(false) => missing.push(*table),
            Err(e) => return step.end(StepStatus::Failed, format!("database error: {e}")),
        }
    }
    match (pending, missing.is_empty()) {
        (0, true) => step.end(
            StepStatus::Passed,
            format!(
                "all {} migrations applied; {} expected tables present",
                hubkeeper_store::MIGRATOR.iter().count(),
                EXPECTED_TABLES.len()
            ),
        ),
        (pending, _) => step.end(
            StepStatus::Failed,
            format!(
                "{pending} migration(s) not applied; missing tables: {}",
                if missing.is_empty() {
                    "none".to_owned()
                } else {
                    missing.join(", ")
                }
            ),
        ),
    }
}

/// The oldest registered app that is not deleted, from the event store.
async fn default_app(pool: &PgPool) -> Option<AppId> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT r.aggregate_id FROM events r
          WHERE r.aggregate_type = 'app' AND r.event_type = $1
            AND NOT EXISTS (SELECT 1 FROM events d
                             WHERE d.aggregate_type = 'app' AND d.aggregate_id = r.aggregate_id
                               AND d.event_type = $2)
          ORDER BY r.global_position LIMIT 1",
    )
    .bind(app_events::APP_REGISTERED)
    .bind(app_events::APP_DELETED)
    .fetch_optional(pool)
    .await
    .ok()
    .flatten();
    id.and_then(|id| id.parse().ok())
}

async fn connected_installation(
    pool: &PgPool,
    app_id: AppId,
) -> Option<hubkeeper_domain::InstallationId> {
    let id: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT installation_id FROM rm_installations
          WHERE app_id = $1 AND status = 'connected' ORDER BY last_connected_at DESC LIMIT 1",
    )
    .bind(app_id.as_uuid())
    .fetch_optional(pool)
    .await
    .ok()
    .flatten();
    id.map(hubkeeper_domain::InstallationId::from_uuid)
}

/// Why the self-test's install flow against the simulator failed; the text is the step's detail.
#[derive(Debug, thiserror::Error)]
enum SimExchangeError {
    #[error("the simulator's control URL cannot be built: {0}")]
    Url(#[from] url::ParseError),
    #[error("simulator control API: {0}")]
    ControlApi(String),
    #[error("the simulator has no account to install into")]
    NoAccount,
    #[error("the simulator does not know the app's client id")]
    UnknownApp,
    #[error("simulator consent: {0}")]
    Consent(String),
    #[error("the simulator refused the consent ({status}): {message}")]
    ConsentRefused { status: u16, message: String },
    #[error("code exchange failed: {0}")]
    Exchange(HubSpotError),
    #[error("code exchange worked, refresh failed: {0}")]
    Refresh(HubSpotError),
}

/// A JSON answer of the simulator's control API.
async fn control_get(
    http: &reqwest::Client,
    base: &url::Url,
    path: &str,
) -> Result<serde_json::Value, SimExchangeError> {
    http.get(base.join(path)?)
        .send()
        .await
        .map_err(|e| SimExchangeError::ControlApi(reason(e)))?
        .json()
        .await
        .map_err(|e| SimExchangeError::ControlApi(e.to_string()))
}

async fn sim_exchange(
    http: &reqwest::Client,
    base: &url::Url,
    hubspot: &HubSpotClient,
    creds: &hubkeeper_hubspot::AppCredentials,
) -> Result<(hubkeeper_hubspot::TokenSet, String), SimExchangeError> {
    let accounts = control_get(http, base, "_sim/accounts").await?;
    let hub_id = accounts
        .as_array()
        .and_then(|a| a.first())
        .and_then(|a| a.get("hub_id"))
        .and_then(|h| h.as_u64())
        .ok_or(SimExchangeError::NoAccount)?;
    let apps = control_get(http, base, "_sim/apps").await?;
    let scopes: Vec<serde_json::Value> = apps
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a.get("client_id").and_then(|c| c.as_str()) == Some(creds.client_id.as_str()))
        .and_then(|a| a.get("scopes"))
        .and_then(|s| s.as_array())
        .cloned()
        .ok_or(SimExchangeError::UnknownApp)?;
    let approval = http
        .post(base.join("_sim/approve")?)
        .json(&serde_json::json!({
            "client_id": creds.client_id,
            "redirect_uri": creds.redirect_uri,
            "scopes": scopes,
            "state": "hubkeeper-selftest",
            "hub_id": hub_id,
        }))
        .send()
        .await
        .map_err(|e| SimExchangeError::Consent(reason(e)))?;
    let status = approval.status();
    let body: serde_json::Value = approval
        .json()
        .await
        .map_err(|e| SimExchangeError::Consent(e.to_string()))?;
    let code = body
        .get("code")
        .and_then(|c| c.as_str())
        .filter(|_| status.is_success())
        .ok_or_else(|| SimExchangeError::ConsentRefused {
            status: status.as_u16(),
            message: body
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("no reason given")
                .to_owned(),
        })?;
    let started = Instant::now();
    let first = hubspot
        .exchange_code(creds, code)
        .await
        .map_err(SimExchangeError::Exchange)?;
    let exchange_ms = started.elapsed().as_millis();
    let started = Instant::now();
    let refreshed = hubspot
        .refresh(creds, &first.refresh_token, first.hub_id)
        .await
        .map_err(SimExchangeError::Refresh)?;
    Ok((
        refreshed,
        format!(
            "code exchanged in {exchange_ms} ms and refreshed in {} ms (simulated hub {hub_id})",
            started.elapsed().as_millis()
        ),
    ))
}

async fn crm_call(
    hubspot: &HubSpotClient,
    token: &AccessToken,
    hub_id: Option<u64>,
) -> Result<usize, HubSpotError> {
    let page: serde_json::Value = hubspot
        .get_json(token, "/crm/v3/objects/contacts?limit=1", hub_id)
        .await?;
    Ok(page
        .get("results")
        .and_then(|r| r.as_array())
        .map_or(0, Vec::len))
}

async fn rate_limit(probe: Option<&dyn RateLimitProbe>) -> StepReport {
    let step = Step::start("rate_limit_enforcement");
    let Some(probe) = probe else {
        return step.end(
            StepStatus::Skipped,
            "no OAuth rate limiter runs in this process",
        );
    };
    let (enabled, max, window) = probe.limits();
    if !enabled {
        return step.end(
            StepStatus::Failed,
            "OAuth callback rate limiting is disabled in the settings",
        );
    }
    probe.forget(PROBE_IP).await;
    let started = std::time::Instant::now();
    let mut allowed = 0u32;
    let refused = loop {
        match probe.check(PROBE_IP).await {
            Ok(()) if allowed < max => allowed += 1,
            Ok(()) => break None,
            Err(wait) => break Some(wait),
        }
    };
    probe.forget(PROBE_IP).await;
    match refused {
        Some(wait) if allowed == max => step.end(
            StepStatus::Passed,
            format!(
                "{max} requests per {} s allowed from one address; request {} was refused (retry in {} s)",
                window.as_secs(),
                max + 1,
                wait.as_secs().max(1)
            ),
        ),
        Some(_) => step.end(
            StepStatus::Failed,
            format!("request {} was refused, expected {max} to pass first", allowed + 1),
        ),
        // The first requests left the window before the last was sent: nothing was shown.
        None if started.elapsed() >= window => step.end(
            StepStatus::Failed,
            format!(
                "could not be checked: sending {} requests took longer than the {} s window; \
                 lower the limit or run the self-test on a less loaded machine",
                max + 1,
                window.as_secs()
            ),
        ),
        None => step.end(
            StepStatus::Failed,
            format!("request {} from one address was still allowed (limit {max})", max + 1),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Limiter {
        enabled: bool,
        max: u32,
        enforce: bool,
        count: Mutex<u32>,
    }

    #[async_trait::async_trait]
    impl RateLimitProbe for Limiter {
        fn limits(&self) -> (bool, u32, Duration) {
            (self.enabled, self.max, Duration::from_secs(60))
        }
        async fn check(&self, _ip: IpAddr) -> Result<(), Duration> {
            let mut count = self.count.lock().expect("lock");
            if self.enforce && *count >= self.max {
                return Err(Duration::from_secs(42));
            }
            *count += 1;
            Ok(())
        }
        async fn forget(&self, _ip: IpAddr) {
            *self.count.lock().expect("lock") = 0;
        }
    }

    fn limiter(enabled: bool, enforce: bool) -> Limiter {
        Limiter {
            enabled,
            max: 3,
            enforce,
            count: Mutex::new(0),
        }
    }

    #[tokio::test]
    async fn the_rate_limit_step_needs_request_max_plus_one_refused() {
        let ok = rate_limit(Some(&limiter(true, true))).await;
        assert_eq!(ok.status, StepStatus::Passed, "{}", ok.detail);
        assert!(ok.detail.contains("request 4 was refused"), "{}", ok.detail);
        let leaky = rate_limit(Some(&limiter(true, false))).await;
        assert_eq!(leaky.status, StepStatus::Failed);
        assert!(leaky.detail.contains("still allowed"), "{}", leaky.detail);
        let off = rate_limit(Some(&limiter(false, true))).await;
        assert_eq!(off.status, StepStatus::Failed);
        assert!(off.detail.contains("disabled"), "{}", off.detail);
        assert_eq!(rate_limit(None).await.status, StepStatus::Skipped);
    }

    #[test]
    fn error_pages_are_reduced_to_their_text() {
        let html = "<html><head><title>Error</title></head><body><h1>Bad request</h1><p>redirect_uri does not match</p></body></html>";
        assert_eq!(
            page_text(html),
            "Error Bad request redirect_uri does not match"
        );
        assert!(page_text(&"x".repeat(500)).ends_with('…'));
    }
}
