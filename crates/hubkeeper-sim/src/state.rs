//! The simulator's in-memory world: registry, installations, credentials, counters, request log,
//! fault rules, rate-limit windows and webhook deliveries.
//!
//! Everything lives behind one `std::sync::Mutex`: the simulator serves a handful of clients, every
//! critical section is short and never spans an `.await`, and a single lock makes multi-step
//! transitions (consume a code and mint tokens) trivially atomic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{AccountSpec, AppSpec, RotationMode, SeedFile, SimConfig, UserSpec};
use crate::error::SimError;
use crate::model::{
    ClientSecret, CounterSet, Counters, DeliveryReport, FaultEndpoint, FaultMode, FaultRule,
    FaultView, InstallationCounters, RefreshTokenCounters, RefreshTokenState, RepeatedRefreshes,
    RequestLogEntry, Settings,
};
use crate::tokens::{new_access_token, new_refresh_token, TokenHash};

/// How many request-log entries are kept; older ones are dropped first.
const REQUEST_LOG_CAPACITY: usize = 10_000;
/// Expired access tokens are remembered this long so late callers get "expired", not "unknown".
const EXPIRED_TOKEN_MEMORY: Duration = Duration::from_secs(24 * 3600);
/// Access tokens held before the first purge of long-expired ones.
const ACCESS_TOKENS_PURGE_MIN: usize = 10_000;
/// HubSpot allows at most this many webhook requests in flight per account.
pub(crate) const WEBHOOK_CONCURRENCY_PER_ACCOUNT: usize = 10;

/// Longest duration accepted anywhere (lifetimes, grace, retry delays): keeps `Instant`
/// arithmetic far from overflow whatever a control request asks for.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `now + d`, saturating at [`MAX_DURATION`] so no input can make it panic.
pub(crate) fn deadline(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(MAX_DURATION)).unwrap_or(now)
}

/// Checks the durations of a settings value; shared by start-up and the control API.
pub(crate) fn validate_settings(s: &Settings) -> Result<(), String> {
    let RotationMode::On { grace } = s.rotation else {
        return check_durations(s);
    };
    if grace > MAX_DURATION {
        return Err("rotation grace is too long".into());
    }
    check_durations(s)
}

fn check_durations(s: &Settings) -> Result<(), String> {
    if s.token_lifetime.is_zero() || s.token_lifetime > MAX_DURATION {
        return Err("token lifetime must be between 1 ms and 10 years".into());
    }
    if s.code_lifetime.is_zero() || s.code_lifetime > MAX_DURATION {
        return Err("code lifetime must be between 1 ms and 10 years".into());
    }
    if s.rate_limit_window.is_zero() || s.rate_limit_window > MAX_DURATION {
        return Err("rate-limit window must be between 1 ms and 10 years".into());
    }
    if s.webhook_retry_schedule
        .iter()
        .any(|d| *d > Duration::from_secs(7 * 24 * 3600))
    {
        return Err("webhook retry delays must be at most 7 days".into());
    }
    if s.v3_revoke_status != 200 && s.v3_revoke_status != 204 {
        return Err("v3_revoke_status must be 200 or 204".into());
    }
    Ok(())
}

/// Shared handle on the simulator's state; cheap to clone.
#[derive(Clone)]
pub struct SimState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) base_url: String,
    pub(crate) initial_settings: Settings,
    pub(crate) seed: SeedFile,
    store: Mutex<Store>,
    pub(crate) webhook_http: reqwest::Client,
    /// Cancelled when the server shuts down: ends hanging faults and webhook deliveries.
    pub(crate) shutdown: CancellationToken,
    /// Per-account webhook concurrency, shared across deliveries.
    semaphores: Mutex<HashMap<u64, Arc<Semaphore>>>,
}

impl SimState {
    /// Builds the state for a server reachable at `base_url`, loading the config's seed.
    pub fn new(config: &SimConfig, base_url: impl Into<String>) -> Result<SimState, SimError> {
        let settings = Settings {
            rotation: config.rotation,
            token_lifetime: config.token_lifetime,
            code_lifetime: config.code_lifetime,
            rate_limit_max: config.rate_limit.0,
            rate_limit_window: config.rate_limit.1,
            rate_limit_retry_after: false,
            v3_revoke_status: 200,
            v3_inactive_introspection: Default::default(),
            webhook_retry_schedule: config.webhook_retry_schedule.clone(),
        };
        validate_settings(&settings).map_err(|message| SimError::Config {
            key: "SimConfig",
            message,
        })?;
        let seed = config.seed.clone().unwrap_or_default();
        let shutdown = CancellationToken::new();
        let store = Store::new(settings.clone(), &seed, shutdown.child_token())?;
        let webhook_http = reqwest::Client::builder()
            // HubSpot does not follow redirects from a webhook target; a 3xx is a failure.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("HubSpot Connect 2.0 (http://dev.hubspot.com/) - WebhooksExecutorDaemon")
            .build()
            .map_err(|e| SimError::Io(std::io::Error::other(e.to_string())))?;
        let base_url: String = base_url.into();
        Ok(SimState {
            inner: Arc::new(Inner {
                base_url: base_url.trim_end_matches('/').to_string(),
                initial_settings: settings,
                seed,
                store: Mutex::new(store),
                webhook_http,
                shutdown,
                semaphores: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Poisoning only means another handler panicked mid-update; the simulator keeps serving
    /// rather than turning one bug into a total outage of every test.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.inner
            .store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn account_semaphore(&self, hub_id: u64) -> Arc<Semaphore> {
        let mut map = self
            .inner
            .semaphores
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(hub_id)
            .or_insert_with(|| Arc::new(Semaphore::new(WEBHOOK_CONCURRENCY_PER_ACCOUNT)))
            .clone()
    }

    /// Returns everything to the start-up state (settings and registry from the config).
    pub(crate) fn reset(&self) -> Result<(), SimError> {
        let fresh = Store::new(
            self.inner.initial_settings.clone(),
            &self.inner.seed,
            self.inner.shutdown.child_token(),
        )?;
        let mut store = self.lock();
        store.deliveries_cancel.cancel();
        *store = fresh;
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct InstallKey {
    pub(crate) client_id: String,
    pub(crate) hub_id: u64,
}

pub(crate) struct Installation {
    pub(crate) app_id: u64,
    pub(crate) installed: bool,
    /// Bumped on uninstall: every credential minted under an older generation is dead.
    pub(crate) generation: u64,
    pub(crate) scopes: Vec<String>,
    pub(crate) user: UserSpec,
    /// `(issued, expires)` of every access token, for the refresh-discipline statistic.
    access_tokens: Vec<(Instant, Instant)>,
    refresh_calls: Vec<(Instant, DateTime<Utc>)>,
    refresh_tokens: Vec<TokenHash>,
}

pub(crate) struct AuthCode {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) hub_id: u64,
    pub(crate) user: UserSpec,
    pub(crate) scopes: Vec<String>,
    pub(crate) expires_at: Instant,
    pub(crate) used: bool,
}

pub(crate) struct AccessTokenRec {
    pub(crate) key: InstallKey,
    pub(crate) generation: u64,
    pub(crate) app_id: u64,
    pub(crate) user: UserSpec,
    pub(crate) scopes: Vec<String>,
    pub(crate) expires_at: Instant,
    pub(crate) revoked: bool,
}

pub(crate) struct RefreshTokenRec {
    pub(crate) key: InstallKey,
    pub(crate) generation: u64,
    pub(crate) issued_at: DateTime<Utc>,
    /// Set when rotation replaced the token: it dies at this instant.
    pub(crate) dies_at: Option<Instant>,
    pub(crate) revoked: bool,
    pub(crate) refresh_calls: u64,
}

/// Why an access token cannot be used.
pub(crate) enum AccessCheck<'a> {
    Live(&'a AccessTokenRec),
    Expired {
        rec: &'a AccessTokenRec,
        ago: Duration,
    },
    /// Revoked, or its installation was uninstalled.
    Dead(&'a AccessTokenRec),
    Unknown,
}

pub(crate) struct FaultState {
    pub(crate) id: u64,
    pub(crate) rule: FaultRule,
    pub(crate) fired: u32,
}

impl FaultState {
    fn limit(&self) -> Option<u32> {
        match self.rule.mode {
            FaultMode::Burst { count, .. } => Some(count),
            _ => self.rule.times,
        }
    }

    fn exhausted(&self) -> bool {
        self.limit().is_some_and(|limit| self.fired >= limit)
    }
}

/// What the fault rules decided for one request.
#[derive(Debug, Default)]
pub(crate) struct FaultAction {
    pub(crate) latency: Duration,
    pub(crate) terminal: Option<TerminalFault>,
    pub(crate) labels: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum TerminalFault {
    Error(u16),
    Hang(Duration),
    Down,
}

pub(crate) struct RateDecision {
    pub(crate) allowed: bool,
    pub(crate) max: u32,
    pub(crate) remaining: u32,
    pub(crate) window: Duration,
    pub(crate) retry_after: Duration,
}

#[derive(Default)]
pub(crate) struct CounterStore {
    total: CounterSet,
    by_account: BTreeMap<u64, CounterSet>,
    by_app: BTreeMap<String, CounterSet>,
}

impl CounterStore {
    pub(crate) fn bump(
        &mut self,
        hub_id: Option<u64>,
        client_id: Option<&str>,
        f: impl Fn(&mut CounterSet),
    ) {
        f(&mut self.total);
        if let Some(hub_id) = hub_id {
            f(self.by_account.entry(hub_id).or_default());
        }
        if let Some(client_id) = client_id {
            f(self.by_app.entry(client_id.to_string()).or_default());
        }
    }
}

pub(crate) struct Store {
    pub(crate) settings: Settings,
    pub(crate) apps: BTreeMap<String, AppSpec>,
    /// Per client id, the secret a rotation replaced and until when it still authenticates.
    pub(crate) previous_secrets: HashMap<String, (ClientSecret, Instant)>,
    pub(crate) accounts: BTreeMap<u64, AccountSpec>,
    pub(crate) installations: BTreeMap<InstallKey, Installation>,
    pub(crate) codes: HashMap<TokenHash, AuthCode>,
    pub(crate) access_tokens: HashMap<TokenHash, AccessTokenRec>,
    /// Size of `access_tokens` at which long-expired tokens are next forgotten: twice what the
    /// last purge kept, so the purge's scan costs O(1) per token issued, however many live.
    access_tokens_purge_at: usize,
    pub(crate) refresh_tokens: HashMap<TokenHash, RefreshTokenRec>,
    pub(crate) counters: CounterStore,
    log: VecDeque<RequestLogEntry>,
    next_seq: u64,
    faults: Vec<FaultState>,
    next_fault_id: u64,
    rate_windows: HashMap<u64, VecDeque<Instant>>,
    pub(crate) deliveries: BTreeMap<Uuid, DeliveryReport>,
    /// Child of the shutdown token; replaced on reset so running deliveries stop.
    pub(crate) deliveries_cancel: CancellationToken,
}

impl Store {
    fn new(
        settings: Settings,
        seed: &SeedFile,
        deliveries_cancel: CancellationToken,
    ) -> Result<Store, SimError> {
        let mut store = Store {
            settings,
            apps: BTreeMap::new(),
            previous_secrets: HashMap::new(),
            accounts: BTreeMap::new(),
            installations: BTreeMap::new(),
            codes: HashMap::new(),
            access_tokens: HashMap::new(),
            access_tokens_purge_at: ACCESS_TOKENS_PURGE_MIN,
            refresh_tokens: HashMap::new(),
            counters: CounterStore::default(),
            log: VecDeque::new(),
            next_seq: 1,
            faults: Vec::new(),
            next_fault_id: 1,
            rate_windows: HashMap::new(),
            deliveries: BTreeMap::new(),
            deliveries_cancel,
        };
        for app in &seed.apps {
            if store.apps.contains_key(&app.client_id) {
                return Err(SimError::InvalidSeed(format!(
                    "client_id {} appears twice",
                    app.client_id
                )));
            }
            store
                .register_app(app.clone())
                .map_err(SimError::InvalidSeed)?;
        }
        for account in &seed.accounts {
            if store.accounts.contains_key(&account.hub_id) {
                return Err(SimError::InvalidSeed(format!(
                    "hub_id {} appears twice",
                    account.hub_id
                )));
            }
            store
                .register_account(account.clone())
                .map_err(SimError::InvalidSeed)?;
        }
        Ok(store)
    }

    /// Adds or replaces an app; returns whether it is new.
    pub(crate) fn register_app(&mut self, app: AppSpec) -> Result<bool, String> {
        validate_app(&app)?;
        if let Some(other) = self
            .apps
            .values()
            .find(|a| a.app_id == app.app_id && a.client_id != app.client_id)
        {
            return Err(format!(
                "app_id {} is already used by client_id {}",
                app.app_id, other.client_id
            ));
        }
        Ok(self.apps.insert(app.client_id.clone(), app).is_none())
    }

    /// Replaces an app's client secret; the previous one keeps authenticating for `overlap`.
    pub(crate) fn rotate_secret(
        &mut self,
        client_id: &str,
        secret: ClientSecret,
        overlap: Duration,
        now: Instant,
    ) -> Result<(), String> {
        let app = self
            .apps
            .get_mut(client_id)
            .ok_or_else(|| format!("no app with client_id {client_id}"))?;
        let previous = std::mem::replace(&mut app.client_secret, secret);
        self.previous_secrets
            .insert(client_id.to_owned(), (previous, now + overlap));
        Ok(())
    }

    /// Whether `secret` authenticates the app `client_id` now: its current secret, or the one
    /// a rotation replaced while its overlap lasts.
    pub(crate) fn secret_matches(&self, app: &AppSpec, secret: &str, now: Instant) -> bool {
        secret == app.client_secret.expose()
            || self
                .previous_secrets
                .get(&app.client_id)
                .is_some_and(|(previous, until)| now < *until && secret == previous.expose())
    }

    /// Adds or replaces an account; returns whether it is new.
    pub(crate) fn register_account(&mut self, mut account: AccountSpec) -> Result<bool, String> {
        if account.hub_id == 0 {
            return Err("hub_id must be positive".into());
        }
        if account.domain.trim().is_empty() {
            return Err("domain must not be empty".into());
        }
        if account.users.is_empty() {
            account.users.push(UserSpec {
                user_id: account.hub_id.saturating_mul(10).saturating_add(1),
                email: format!("admin@{}", account.domain),
            });
        }
        Ok(self.accounts.insert(account.hub_id, account).is_none())
    }

    pub(crate) fn installation(&self, key: &InstallKey) -> Option<&Installation> {
        self.installations.get(key)
    }

    /// Records a consent: creates or re-activates the installation with the granted scopes.
    pub(crate) fn install(
        &mut self,
        key: &InstallKey,
        app_id: u64,
        user: &UserSpec,
        scopes: &[String],
    ) {
        let inst = self
            .installations
            .entry(key.clone())
            .or_insert_with(|| Installation {
                app_id,
                installed: true,
                generation: 1,
                scopes: Vec::new(),
                user: user.clone(),
                access_tokens: Vec::new(),
                refresh_calls: Vec::new(),
                refresh_tokens: Vec::new(),
            });
        inst.installed = true;
        inst.app_id = app_id;
        inst.scopes = scopes.to_vec();
        inst.user = user.clone();
    }

    /// Uninstall kills every code and token of the installation; returns false if there was none.
    pub(crate) fn uninstall(&mut self, key: &InstallKey) -> bool {
        let Some(inst) = self.installations.get_mut(key) else {
            return false;
        };
        inst.installed = false;
        inst.generation += 1;
        self.codes
            .retain(|_, c| !(c.client_id == key.client_id && c.hub_id == key.hub_id));
        true
    }

    pub(crate) fn is_current(&self, key: &InstallKey, generation: u64) -> bool {
        self.installations
            .get(key)
            .is_some_and(|i| i.installed && i.generation == generation)
    }

    /// Mints an access token for an installation and returns it with its lifetime in seconds.
    pub(crate) fn issue_access_token(
        &mut self,
        key: &InstallKey,
        now: Instant,
    ) -> Option<(String, u64)> {
        let lifetime = self.settings.token_lifetime;
        let inst = self.installations.get_mut(key)?;
        let token = new_access_token();
        let expires_at = deadline(now, lifetime);
        inst.access_tokens.push((now, expires_at));
        let rec = AccessTokenRec {
            key: key.clone(),
            generation: inst.generation,
            app_id: inst.app_id,
            user: inst.user.clone(),
            scopes: inst.scopes.clone(),
            expires_at,
            revoked: false,
        };
        if self.access_tokens.len() >= self.access_tokens_purge_at {
            self.access_tokens
                .retain(|_, t| deadline(t.expires_at, EXPIRED_TOKEN_MEMORY) > now);
            self.access_tokens_purge_at =
                (self.access_tokens.len() * 2).max(ACCESS_TOKENS_PURGE_MIN);
        }
        self.access_tokens.insert(TokenHash::of(&token), rec);
        self.counters
            .bump(Some(key.hub_id), Some(&key.client_id), |c| {
                c.tokens_issued += 1
            });
        Some((token, lifetime.as_secs()))
    }

    pub(crate) fn issue_refresh_token(&mut self, key: &InstallKey) -> Option<String> {
        let inst = self.installations.get_mut(key)?;
        let token = new_refresh_token();
        let hash = TokenHash::of(&token);
        inst.refresh_tokens.push(hash.clone());
        self.refresh_tokens.insert(
            hash,
            RefreshTokenRec {
                key: key.clone(),
                generation: inst.generation,
                issued_at: Utc::now(),
                dies_at: None,
                revoked: false,
                refresh_calls: 0,
            },
        );
        Some(token)
    }

    pub(crate) fn record_refresh_call(&mut self, key: &InstallKey, now: Instant) {
        if let Some(inst) = self.installations.get_mut(key) {
            inst.refresh_calls.push((now, Utc::now()));
        }
    }

    pub(crate) fn refresh_state(&self, rec: &RefreshTokenRec, now: Instant) -> RefreshTokenState {
        if rec.revoked {
            RefreshTokenState::Revoked
        } else if !self.is_current(&rec.key, rec.generation)
            || rec.dies_at.is_some_and(|d| d <= now)
        {
            RefreshTokenState::Dead
        } else if rec.dies_at.is_some() {
            RefreshTokenState::Superseded
        } else {
            RefreshTokenState::Active
        }
    }

    pub(crate) fn check_access_token(&self, hash: &TokenHash, now: Instant) -> AccessCheck<'_> {
        let Some(rec) = self.access_tokens.get(hash) else {
            return AccessCheck::Unknown;
        };
        if rec.revoked || !self.is_current(&rec.key, rec.generation) {
            AccessCheck::Dead(rec)
        } else if rec.expires_at <= now {
            AccessCheck::Expired {
                rec,
                ago: now - rec.expires_at,
            }
        } else {
            AccessCheck::Live(rec)
        }
    }

    pub(crate) fn account_domain(&self, hub_id: u64) -> String {
        self.accounts
            .get(&hub_id)
            .map(|a| a.domain.clone())
            .unwrap_or_else(|| format!("{hub_id}.hubspot.com"))
    }

    /// Rolling-window limiter: a rejected request does not consume capacity, so a client that
    /// backs off recovers exactly one window after its burst.
    pub(crate) fn rate_check(&mut self, hub_id: u64, now: Instant) -> RateDecision {
        let max = self.settings.rate_limit_max;
        let window = self.settings.rate_limit_window;
        let q = self.rate_windows.entry(hub_id).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
            q.pop_front();
        }
        let used = u32::try_from(q.len()).unwrap_or(u32::MAX);
        if used >= max {
            let retry_after = q
                .front()
                .map(|t| window.saturating_sub(now.duration_since(*t)))
                .unwrap_or(window);
            return RateDecision {
                allowed: false,
                max,
                remaining: 0,
                window,
                retry_after,
            };
        }
        q.push_back(now);
        RateDecision {
            allowed: true,
            max,
            remaining: max - used - 1,
            window,
            retry_after: Duration::ZERO,
        }
    }

    pub(crate) fn add_fault(&mut self, rule: FaultRule) -> u64 {
        let id = self.next_fault_id;
        self.next_fault_id += 1;
        self.faults.push(FaultState { id, rule, fired: 0 });
        id
    }

    pub(crate) fn remove_fault(&mut self, id: u64) -> bool {
        let before = self.faults.len();
        self.faults.retain(|f| f.id != id);
        before != self.faults.len()
    }

    pub(crate) fn clear_faults(&mut self) {
        self.faults.clear();
    }

    pub(crate) fn faults_view(&self) -> Vec<FaultView> {
        self.faults
            .iter()
            .map(|f| FaultView {
                id: f.id,
                rule: f.rule.clone(),
                fired: f.fired,
                exhausted: f.exhausted(),
            })
            .collect()
    }

    /// Whether any live rule could apply to this endpoint (cheap pre-check before resolving the
    /// request's account).
    pub(crate) fn has_faults_for(&self, endpoint: FaultEndpoint) -> bool {
        self.faults.iter().any(|f| {
            !f.exhausted() && (f.rule.endpoint == FaultEndpoint::Any || f.rule.endpoint == endpoint)
        })
    }

    /// Evaluates the rules in insertion order: latencies add up, the first terminal fault wins.
    pub(crate) fn decide_faults(
        &mut self,
        endpoint: FaultEndpoint,
        hub_id: Option<u64>,
    ) -> FaultAction {
        let mut action = FaultAction::default();
        let mut rng = rand::thread_rng();
        for f in &mut self.faults {
            if action.terminal.is_some() {
                break;
            }
            let applies = (f.rule.endpoint == FaultEndpoint::Any || f.rule.endpoint == endpoint)
                && f.rule.hub_id.is_none_or(|h| Some(h) == hub_id)
                && !f.exhausted();
            if !applies {
                continue;
            }
            let fires = match f.rule.mode {
                FaultMode::ErrorRate { rate, .. } => rng.gen_bool(rate.clamp(0.0, 1.0)),
                _ => true,
            };
            if !fires {
                continue;
            }
            f.fired += 1;
            match f.rule.mode {
                FaultMode::ErrorRate { status, .. } => {
                    action.terminal = Some(TerminalFault::Error(status));
                    action.labels.push(format!("error_rate {status}"));
                }
                FaultMode::Burst { status, .. } => {
                    action.terminal = Some(TerminalFault::Error(status));
                    action.labels.push(format!("burst {status}"));
                }
                FaultMode::Latency { ms } => {
                    action.latency = action.latency.saturating_add(Duration::from_millis(ms));
                    action.labels.push(format!("latency {ms}ms"));
                }
                FaultMode::Timeout { ms } => {
                    action.terminal = Some(TerminalFault::Hang(Duration::from_millis(ms)));
                    action.labels.push(format!("timeout {ms}ms"));
                }
                FaultMode::Down => {
                    action.terminal = Some(TerminalFault::Down);
                    action.labels.push("down".to_string());
                }
            }
        }
        if !action.labels.is_empty() {
            self.counters.bump(hub_id, None, |c| c.faults_injected += 1);
        }
        action
    }

    pub(crate) fn push_log(&mut self, mut entry: RequestLogEntry) {
        entry.seq = self.next_seq;
        self.next_seq += 1;
        if self.log.len() >= REQUEST_LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(entry);
    }

    pub(crate) fn log_since(&self, since: u64) -> Vec<RequestLogEntry> {
        self.log.iter().filter(|e| e.seq > since).cloned().collect()
    }

    pub(crate) fn counters(&self, now: Instant) -> Counters {
        let installations = self
            .installations
            .iter()
            .map(|(key, inst)| {
                let wall_now = Utc::now();
                let within_lifetimes: Vec<RepeatedRefreshes> = inst
                    .access_tokens
                    .iter()
                    .map(|(issued, expires)| RepeatedRefreshes {
                        // The wall time of the refresh call that minted it (the same instant),
                        // else (a code exchange) converted from the monotonic clock.
                        token_issued_ms: inst
                            .refresh_calls
                            .iter()
                            .find(|(t, _)| t == issued)
                            .map(|(_, at)| *at)
                            .unwrap_or_else(|| {
                                wall_now
                                    - chrono::Duration::from_std(
                                        now.saturating_duration_since(*issued),
                                    )
                                    .unwrap_or_default()
                            })
                            .timestamp_millis(),
                        calls_ms: inst
                            .refresh_calls
                            .iter()
                            .filter(|(t, _)| t > issued && t < expires)
                            .map(|(_, at)| at.timestamp_millis())
                            .collect(),
                    })
                    .collect();
                let max_refreshes = within_lifetimes
                    .iter()
                    .map(|r| r.calls_ms.len())
                    .max()
                    .unwrap_or(0);
                InstallationCounters {
                    client_id: key.client_id.clone(),
                    app_id: inst.app_id,
                    hub_id: key.hub_id,
                    installed: inst.installed,
                    scopes: inst.scopes.clone(),
                    access_tokens_issued: inst.access_tokens.len() as u64,
                    refresh_calls: inst.refresh_calls.len() as u64,
                    refresh_times_ms: inst
                        .refresh_calls
                        .iter()
                        .map(|(_, at)| at.timestamp_millis())
                        .collect(),
                    max_refreshes_per_token_lifetime: u32::try_from(max_refreshes)
                        .unwrap_or(u32::MAX),
                    repeated_refreshes: within_lifetimes
                        .into_iter()
                        .filter(|r| r.calls_ms.len() > 1)
                        .collect(),
                    refresh_tokens: inst
                        .refresh_tokens
                        .iter()
                        .filter_map(|h| {
                            self.refresh_tokens.get(h).map(|rec| RefreshTokenCounters {
                                token_hash: h.short(),
                                issued_at: rec.issued_at,
                                refresh_calls: rec.refresh_calls,
                                state: self.refresh_state(rec, now),
                            })
                        })
                        .collect(),
                }
            })
            .collect();
        Counters {
            total: self.counters.total.clone(),
            by_account: self.counters.by_account.clone(),
            by_app: self.counters.by_app.clone(),
            installations,
        }
    }
}

fn validate_app(app: &AppSpec) -> Result<(), String> {
    if app.client_id.trim().is_empty() {
        return Err("client_id must not be empty".into());
    }
    if app.client_secret.expose().is_empty() {
        return Err(format!(
            "client_secret of {} must not be empty",
            app.client_id
        ));
    }
    if app.redirect_uris.is_empty() {
        return Err(format!(
            "app {} needs at least one redirect URI",
            app.client_id
        ));
    }
    for uri in &app.redirect_uris {
        let parsed = url::Url::parse(uri).map_err(|e| {
            format!(
                "redirect URI `{uri}` of {} is not absolute: {e}",
                app.client_id
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("redirect URI `{uri}` must be http or https"));
        }
    }
    if app.scopes.is_empty() {
        return Err(format!("app {} needs at least one scope", app.client_id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens expired for longer than the simulator remembers them are forgotten, but only when
    /// the map has doubled since the last purge: a store of 10,000 live tokens must not be
    /// scanned on every token it issues (a refresh storm made that a tenth of the machine).
    #[test]
    fn long_expired_access_tokens_are_forgotten_in_amortised_purges() {
        let config = SimConfig {
            token_lifetime: Duration::from_secs(60),
            ..SimConfig::default()
        };
        let state = SimState::new(&config, "http://sim.test").expect("simulator state");
        let mut store = state.lock();
        let key = InstallKey {
            client_id: "client".into(),
            hub_id: 7,
        };
        let user = UserSpec {
            user_id: 71,
            email: "admin@example.com".into(),
        };
        store.install(&key, 1, &user, &["oauth".to_string()]);
        let start = Instant::now();
        for _ in 0..ACCESS_TOKENS_PURGE_MIN {
            store.issue_access_token(&key, start).expect("installed");
        }
        assert_eq!(store.access_tokens.len(), ACCESS_TOKENS_PURGE_MIN);

        // A day and more later, every token issued so far is long expired: the next issue
        // reaches the threshold, forgets them and keeps only itself.
        let later = start + EXPIRED_TOKEN_MEMORY + Duration::from_secs(120);
        store.issue_access_token(&key, later).expect("installed");
        assert_eq!(store.access_tokens.len(), 1);
        assert_eq!(store.access_tokens_purge_at, ACCESS_TOKENS_PURGE_MIN);

        // Live tokens are kept, and the next purge waits until the map has doubled.
        for _ in 1..ACCESS_TOKENS_PURGE_MIN {
            store.issue_access_token(&key, later).expect("installed");
        }
        assert_eq!(store.access_tokens.len(), ACCESS_TOKENS_PURGE_MIN);
        store.issue_access_token(&key, later).expect("installed");
        assert_eq!(store.access_tokens.len(), ACCESS_TOKENS_PURGE_MIN + 1);
        assert_eq!(store.access_tokens_purge_at, 2 * ACCESS_TOKENS_PURGE_MIN);
    }
}
