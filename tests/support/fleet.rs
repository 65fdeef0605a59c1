//! The fleet of the multi-process tests (refresh_fleet, scale_run): the HubSpot simulator with
//! one app and many accounts, Hubkeeper API and worker processes against one test environment,
//! installs through the real OAuth flow, clients hammering the token API, and the invariants
//! every such run must keep (no expired token served, one refresh per token lifetime unless a
//! kill explains a second, no process lost unnoticed, nothing secret in a table or a log).
//!
//! Every process talks to HubSpot through a tap of its own, so the test knows which process made
//! each token call and when, and sees every token HubSpot issued.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hubkeeper_sim::{
    AccountSpec, AppSpec, ApproveRequest, ClientSecret, Counters, RotationMode, SimConfig, UserSpec,
};
use hubkeeper_testkit::{
    free_port, hubkeeper_binary, HkProcess, HubSpotTap, SecretKind, Server, TapRecord, TestEnv,
};
use rand::Rng;
use secrecy::ExposeSecret;

pub const CLIENT_ID: &str = "0f6b9a3c-5d2e-4c71-8a90-1b2c3d4e5f60";
pub const CLIENT_SECRET: &str = "fleet-secret-6e1f3b7a-9c2d-4e8f-a0b1-c2d3e4f5a6b7";
pub const HUB_BASE: u64 = 70_000_000;
/// Tokens handed out must stay valid this long (`HK_TOKEN_MIN_VALIDITY_SECS`).
pub const MIN_VALIDITY_SECS: i64 = 5;

/// How many processes of each role, and what the simulator and the processes are told.
pub struct FleetSpec {
    pub rotation: RotationMode,
    pub accounts: u64,
    pub token_lifetime: Duration,
    /// The simulator's webhook retry delays (HubSpot's 24 hours, compressed); `None` keeps its
    /// default.
    pub webhook_retry_schedule: Option<Vec<Duration>>,
    pub apis: usize,
    pub relays: usize,
    pub projectors: usize,
    pub schedulers: usize,
    pub refreshers: usize,
    pub webhook_workers: usize,
    /// Added after the fleet's own variables, so it may override them (e.g. `NATS_URL`).
    pub extra_env: Vec<(String, String)>,
}

impl FleetSpec {
    /// The refresh fleet: 2 APIs, 2 schedulers, 3 refreshers, a relay and a projector.
    pub fn new(rotation: RotationMode, accounts: u64) -> FleetSpec {
        FleetSpec {
            rotation,
            accounts,
            token_lifetime: Duration::from_secs(30),
            webhook_retry_schedule: None,
            apis: 2,
            relays: 1,
            projectors: 1,
            schedulers: 2,
            refreshers: 3,
            webhook_workers: 0,
            extra_env: Vec::new(),
        }
    }
}

pub struct Fleet {
    pub env: TestEnv,
    pub sim: hubkeeper_sim::SimHandle,
    pub control: hubkeeper_sim::SimControl,
    pub apis: Vec<(HkProcess, u16)>,
    pub relays: Vec<HkProcess>,
    pub projectors: Vec<HkProcess>,
    pub schedulers: Vec<HkProcess>,
    pub refreshers: Vec<HkProcess>,
    pub webhook_workers: Vec<HkProcess>,
    pub admin_key: String,
    pub service_key: String,
    pub app_id: String,
    pub http: reqwest::Client,
    /// Environment shared by every process (per-process variables are added on spawn).
    pub vars: Vec<(String, String)>,
    /// What every process's tap saw: tokens issued, token calls by process.
    pub tap_record: TapRecord,
    taps: HashMap<String, HubSpotTap>,
    /// Authorization codes of the installs (for the leak check).
    pub codes: Arc<Mutex<Vec<String>>>,
    /// Every SIGKILL of the run: the process's name and when.
    pub kills: Vec<Kill>,
}

/// One SIGKILL of a fleet process.
#[derive(Debug, Clone)]
pub struct Kill {
    pub process: String,
    pub at: DateTime<Utc>,
}

/// How long after a SIGKILL the killed process's tap may still see a call that process sent
/// before it died. The tap stamps a call when it reads it, which on a loaded machine is a few
/// milliseconds after the process wrote it (seen: 6 ms); a dead process sends nothing, and no
/// process is started again under the same name within a second of its kill, so a call through
/// its tap that soon after the kill is one it made before dying.
pub const SENT_BEFORE_DEATH: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// SIGKILLs `process`, which must be running, and records when.
pub fn crash(process: &mut HkProcess, kills: &mut Vec<Kill>) {
    let at = Utc::now();
    process.crash();
    kills.push(Kill {
        process: process.name.clone(),
        at,
    });
}

/// A tap for process `name` in front of the simulator; the process gets its URL.
async fn tap_for(
    taps: &mut HashMap<String, HubSpotTap>,
    sim: &str,
    record: &TapRecord,
    name: &str,
) -> String {
    if !taps.contains_key(name) {
        taps.insert(name.to_owned(), HubSpotTap::start(sim, name, record).await);
    }
    taps[name].url.clone()
}

fn with_tap(vars: &[(String, String)], tap: String) -> Vec<(String, String)> {
    let mut v = vars.to_vec();
    v.push(("HK_HUBSPOT_API_URL".into(), tap));
    v
}

impl Fleet {
    pub fn logs(&self) -> std::path::PathBuf {
        self.env.path().join("logs")
    }

    pub fn api(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.apis[i % self.apis.len()].1)
    }

    pub fn api_urls(&self) -> Vec<String> {
        (0..self.apis.len()).map(|i| self.api(i)).collect()
    }

    /// Every Hubkeeper process of the fleet.
    pub fn processes(&self) -> impl Iterator<Item = &HkProcess> {
        self.apis
            .iter()
            .map(|(p, _)| p)
            .chain(&self.relays)
            .chain(&self.projectors)
            .chain(&self.schedulers)
            .chain(&self.refreshers)
            .chain(&self.webhook_workers)
    }

    pub fn all_logs(&self) -> String {
        self.processes().map(|p| p.log_text()).collect()
    }

    /// Starts API number `i` (again, after a kill) on its port, appending to its log; returns
    /// once it is ready.
    pub async fn respawn_api(&mut self, i: usize) {
        let port = self.apis[i].1;
        let name = format!("api-{i}");
        // Calls through a killed process's tap soon after its kill are taken to be its own
        // (`SENT_BEFORE_DEATH`): a new process under its name must not start that soon.
        if let Some(kill) = self.kills.iter().rev().find(|k| k.process == name) {
            assert!(
                Utc::now() - kill.at >= SENT_BEFORE_DEATH,
                "{name} restarted within {SENT_BEFORE_DEATH} of its kill"
            );
        }
        let tap = tap_for(&mut self.taps, &self.sim.base_url, &self.tap_record, &name).await;
        let vars = with_tap(&self.vars, tap);
        self.apis[i].0 = start_api(&vars, i, port, &self.logs()).await;
    }

    /// Every secret of the run: tokens HubSpot issued (through any tap), the codes of the
    /// installs, the client secret.
    pub fn secrets(&self) -> hubkeeper_testkit::SecretScan {
        let mut scan = self.tap_record.secrets();
        scan.add(SecretKind::ClientSecret, CLIENT_SECRET);
        scan.extend(
            SecretKind::Code,
            self.codes.lock().unwrap_or_else(|e| e.into_inner()).iter(),
        );
        scan
    }

    /// The leak check over every table and every process's log (NATS nodes' included).
    pub async fn assert_no_secrets(&self) {
        self.env
            .assert_no_secrets(&self.secrets(), &SecretKind::ALL)
            .await;
    }

    /// The end of the run for every process not killed (or respawned since): each must still
    /// be running and exit cleanly on SIGTERM.
    pub fn stop_survivors(&mut self) {
        for p in self
            .apis
            .iter_mut()
            .map(|(p, _)| p)
            .chain(&mut self.relays)
            .chain(&mut self.projectors)
            .chain(&mut self.schedulers)
            .chain(&mut self.refreshers)
            .chain(&mut self.webhook_workers)
        {
            if !p.was_stopped() {
                p.stop(Duration::from_secs(20));
            }
        }
    }
}

async fn start_api(vars: &[(String, String)], i: usize, port: u16, logs: &Path) -> HkProcess {
    let mut v = vars.to_vec();
    // Webhook signatures (v3) cover the URL HubSpot called: each API knows its own address.
    v.push(("HK_PUBLIC_URL".into(), format!("http://127.0.0.1:{port}")));
    Server::start(port, &format!("api-{i}"), &["api"], &v, logs)
        .await
        .process
}

pub async fn start_fleet(env: TestEnv, spec: &FleetSpec) -> Fleet {
    let mut sim_config = SimConfig {
        token_lifetime: spec.token_lifetime,
        rotation: spec.rotation,
        ..SimConfig::default()
    };
    if let Some(schedule) = &spec.webhook_retry_schedule {
        sim_config.webhook_retry_schedule = schedule.clone();
    }
    let sim = hubkeeper_sim::spawn(sim_config).await.expect("simulator");
    let control = sim.control().expect("sim control");
    let api_ports: Vec<u16> = (0..spec.apis).map(|_| free_port()).collect();
    let redirect = format!("http://127.0.0.1:{}/oauth/callback", api_ports[0]);
    control
        .register_app(&AppSpec {
            app_id: 4242,
            client_id: CLIENT_ID.into(),
            client_secret: ClientSecret::new(CLIENT_SECRET),
            name: "Fleet".into(),
            redirect_uris: vec![redirect.clone()],
            scopes: vec!["oauth".into(), "crm.objects.contacts.read".into()],
        })
        .await
        .expect("register app");
    for hub in 0..spec.accounts {
        control
            .register_account(&AccountSpec {
                hub_id: HUB_BASE + hub,
                domain: format!("fleet-{hub}.example.com"),
                users: vec![UserSpec {
                    user_id: 900_000 + hub,
                    email: format!("owner{hub}@fleet.example.com"),
                }],
            })
            .await
            .expect("register account");
    }

    let master = format!(
        "t1:{}",
        hubkeeper_crypto::generate_key_b64().expose_secret()
    );
    let mut vars = env.process_env();
    vars.extend([
        ("HK_MASTER_KEYS".to_string(), master),
        ("HK_HUBSPOT_APP_URL".into(), sim.base_url.clone()),
        (
            "HK_TOKEN_MIN_VALIDITY_SECS".into(),
            MIN_VALIDITY_SECS.to_string(),
        ),
        ("HK_REFRESH_LEAD_SECS".into(), "12".into()),
        ("HK_SCHEDULER_TICK_MS".into(), "1000".into()),
        ("HK_REFRESHER_BACKOFF_MS".into(), "250,500,1000,2000".into()),
        ("HK_REFRESHER_ACK_WAIT_SECS".into(), "5".into()),
        ("HK_OAUTH_RATE_LIMIT_MAX".into(), "1000000".into()),
        ("HK_DB_MAX_CONNECTIONS".into(), "12".into()),
    ]);
    vars.extend(spec.extra_env.iter().cloned());
    let logs = env.path().join("logs");
    let tap_record = TapRecord::default();
    let mut taps = HashMap::new();
    let mut workers: HashMap<&str, Vec<HkProcess>> = HashMap::new();
    for (role, count) in [
        ("relay", spec.relays),
        ("projector", spec.projectors),
        ("scheduler", spec.schedulers),
        ("refresher", spec.refreshers),
        ("webhooks", spec.webhook_workers),
    ] {
        for i in 0..count {
            let name = format!("{role}-{i}");
            let tap = tap_for(&mut taps, &sim.base_url, &tap_record, &name).await;
            let process = HkProcess::spawn(
                &hubkeeper_binary(),
                &name,
                &["worker", role],
                &with_tap(&vars, tap),
                &logs,
            );
            workers.entry(role).or_default().push(process);
        }
    }
    let mut apis = Vec::new();
    for (i, port) in api_ports.iter().enumerate() {
        let tap = tap_for(&mut taps, &sim.base_url, &tap_record, &format!("api-{i}")).await;
        apis.push((
            start_api(&with_tap(&vars, tap), i, *port, &logs).await,
            *port,
        ));
    }
    let mut role = |name: &str| workers.remove(name).unwrap_or_default();
    let (relays, projectors, schedulers, refreshers, webhook_workers) = (
        role("relay"),
        role("projector"),
        role("scheduler"),
        role("refresher"),
        role("webhooks"),
    );

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");

    let pool = env.pool();
    let admin = hubkeeper_api::auth::create_key(
        &pool,
        "fleet-admin",
        hubkeeper_api::auth::Role::Admin,
        "test",
    )
    .await
    .expect("admin key");
    let admin_key = admin.token.expose_secret().to_string();

    let created: serde_json::Value = http
        .post(format!("http://127.0.0.1:{}/v1/apps", api_ports[0]))
        .bearer_auth(&admin_key)
        .json(&serde_json::json!({
            "label": "Fleet",
            "environment": "development",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uri": redirect,
            "scopes": "oauth crm.objects.contacts.read",
        }))
        .send()
        .await
        .expect("register app in Hubkeeper")
        .json()
        .await
        .expect("app json");
    let app_id = created["app"]["app_id"]
        .as_str()
        .or_else(|| created["app_id"].as_str())
        .or_else(|| created["id"].as_str())
        .unwrap_or_else(|| panic!("app id in {created}"))
        .to_string();
    // Tokens go only to a service key bound to the app.
    let service = hubkeeper_api::auth::create_key_for_apps(
        &pool,
        "fleet-app",
        hubkeeper_api::auth::Role::Service,
        &[app_id.parse().expect("app id")],
        "test",
    )
    .await
    .expect("service key");
    let service_key = service.token.expose_secret().to_string();

    Fleet {
        env,
        sim,
        control,
        apis,
        relays,
        projectors,
        schedulers,
        refreshers,
        webhook_workers,
        admin_key,
        service_key,
        app_id,
        http,
        vars,
        tap_record,
        taps,
        codes: Arc::new(Mutex::new(Vec::new())),
        kills: Vec::new(),
    }
}

/// Installs one account through the real flow: install → (scripted) consent → callback.
pub async fn install(fleet: &Fleet, hub_id: u64) -> String {
    let api = fleet.api(0);
    let start = fleet
        .http
        .get(format!("{api}/oauth/{}/install", fleet.app_id))
        .send()
        .await
        .unwrap();
    assert!(
        start.status().is_redirection(),
        "install redirects to HubSpot: {}",
        start.status()
    );
    let consent =
        ApproveRequest::for_authorize_url(start.headers()["location"].to_str().unwrap(), hub_id)
            .unwrap();
    assert_eq!(consent.client_id, CLIENT_ID, "install URL names the app");
    let approval = fleet.control.approve(&consent).await.expect("approve");
    if let Some(code) = &approval.code {
        fleet
            .codes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(code.expose_secret().to_string());
    }
    let callback = fleet
        .http
        .get(approval.location.expose_secret())
        .send()
        .await
        .unwrap();
    assert!(
        callback.status().is_redirection(),
        "callback redirects: {}",
        callback.status()
    );
    let done = callback.headers()["location"].to_str().unwrap().to_string();
    // Relative, or absolute when the API knows its public URL.
    let done = url::Url::parse("http://x/").unwrap().join(&done).unwrap();
    // `/connect-result?status=connected&installation_id=…` (or the older `?connected=…`).
    done.query_pairs()
        .find(|(k, _)| k == "installation_id" || k == "connected")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("callback did not connect: {done}"))
}

/// Installs accounts `0..accounts` (8 at a time); `(hub id, installation id)` of each.
pub async fn install_all(fleet: &Fleet, accounts: u64) -> Vec<(u64, String)> {
    use futures::StreamExt;
    let installed: Vec<(u64, String)> = futures::stream::iter(0..accounts)
        .map(|i| async move { (HUB_BASE + i, install(fleet, HUB_BASE + i).await) })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(installed.len() as u64, accounts);
    installed
}

/// The process whose log says it took the lead (`line`), if any.
pub fn leader_index(processes: &[HkProcess], line: &str) -> Option<usize> {
    processes.iter().position(|p| p.log_text().contains(line))
}

/// Clients asking the token API for random installations until a deadline; every token must
/// have at least [`MIN_VALIDITY_SECS`] (less a second of clock slack) left, and every 10th is
/// used at the simulator's CRM endpoint, which must accept it.
pub struct TokenLoad {
    pub served: Arc<AtomicU64>,
    /// Requests that found their API down after the test killed it: the client moved on to the
    /// next API, as behind a load balancer. A connection failure to an API the test did not
    /// kill is a violation.
    pub unavailable: Arc<AtomicU64>,
    /// The APIs (by index) the test has killed during the run.
    killed_apis: Arc<Mutex<HashSet<usize>>>,
    pub seen: Arc<Mutex<HashSet<String>>>,
    pub violations: Arc<Mutex<Vec<String>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl TokenLoad {
    pub fn start(fleet: &Fleet, ids: Arc<Vec<String>>, clients: usize, until: Instant) -> Self {
        let load = TokenLoad {
            served: Arc::new(AtomicU64::new(0)),
            unavailable: Arc::new(AtomicU64::new(0)),
            killed_apis: Arc::new(Mutex::new(HashSet::new())),
            seen: Arc::new(Mutex::new(HashSet::new())),
            violations: Arc::new(Mutex::new(Vec::new())),
            clients: Vec::new(),
        };
        let apis = Arc::new(fleet.api_urls());
        let clients = (0..clients)
            .map(|c| {
                let client = TokenClient {
                    http: fleet.http.clone(),
                    ids: ids.clone(),
                    apis: apis.clone(),
                    key: fleet.service_key.clone(),
                    sim: fleet.sim.base_url.clone(),
                    served: load.served.clone(),
                    unavailable: load.unavailable.clone(),
                    killed_apis: load.killed_apis.clone(),
                    seen: load.seen.clone(),
                    violations: load.violations.clone(),
                };
                tokio::spawn(client.run(c, until))
            })
            .collect();
        TokenLoad { clients, ..load }
    }

    /// Says API `i` is about to be killed: connection failures to it are expected from now on.
    pub fn api_killed(&self, i: usize) {
        self.killed_apis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(i);
    }

    /// Waits for the clients to reach the deadline and asserts that no violation was seen.
    pub async fn finish(self) -> (u64, u64, HashSet<String>) {
        for c in self.clients {
            c.await.expect("token client");
        }
        let violations = self.violations.lock().unwrap().clone();
        assert!(
            violations.is_empty(),
            "{} violations, first: {:?}",
            violations.len(),
            &violations[..violations.len().min(5)]
        );
        let seen = self.seen.lock().unwrap().clone();
        (
            self.served.load(Ordering::Relaxed),
            self.unavailable.load(Ordering::Relaxed),
            seen,
        )
    }
}

struct TokenClient {
    http: reqwest::Client,
    ids: Arc<Vec<String>>,
    apis: Arc<Vec<String>>,
    key: String,
    sim: String,
    served: Arc<AtomicU64>,
    unavailable: Arc<AtomicU64>,
    killed_apis: Arc<Mutex<HashSet<usize>>>,
    seen: Arc<Mutex<HashSet<String>>>,
    violations: Arc<Mutex<Vec<String>>>,
}

impl TokenClient {
    async fn run(self, first_api: usize, until: Instant) {
        let mut api = first_api;
        let mut n = 0u64;
        while Instant::now() < until {
            let id = {
                let mut rng = rand::thread_rng();
                self.ids[rng.gen_range(0..self.ids.len())].clone()
            };
            let index = api % self.apis.len();
            let base = &self.apis[index];
            let res = self
                .http
                .get(format!("{base}/v1/installations/{id}/token"))
                .bearer_auth(&self.key)
                .send()
                .await;
            let res = match res {
                Ok(res) => res,
                Err(e) => {
                    let killed = self
                        .killed_apis
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains(&index);
                    if killed {
                        self.unavailable.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.violations
                            .lock()
                            .unwrap()
                            .push(format!("{base}, never killed, could not be reached: {e}"));
                    }
                    api += 1;
                    continue;
                }
            };
            if !res.status().is_success() {
                let status = res.status();
                let text = res.text().await.unwrap_or_default();
                self.violations.lock().unwrap().push(format!(
                    "{id}: token API of {base} answered {status}: {text}"
                ));
                continue;
            }
            let body: serde_json::Value = res.json().await.unwrap();
            let expires_at =
                chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
            let left = expires_at
                .signed_duration_since(chrono::Utc::now())
                .num_milliseconds();
            if left < (MIN_VALIDITY_SECS - 1) * 1000 {
                self.violations
                    .lock()
                    .unwrap()
                    .push(format!("{id}: served a token with {left} ms left"));
            }
            let token = body["access_token"].as_str().unwrap().to_string();
            self.served.fetch_add(1, Ordering::Relaxed);
            n += 1;
            // Every 10th token is used for real: HubSpot must accept it.
            if n.is_multiple_of(10) {
                let crm = self
                    .http
                    .get(format!("{}/crm/v3/objects/contacts?limit=1", self.sim))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                if crm.status() == 401 {
                    self.violations
                        .lock()
                        .unwrap()
                        .push(format!("{id}: HubSpot rejected a served token"));
                }
            }
            self.seen.lock().unwrap().insert(token);
        }
    }
}

/// How a run's refreshes went: asserted by [`assert_refresh_discipline`].
pub struct RefreshFigures {
    /// Refresh calls HubSpot saw for the fleet's app.
    pub calls: u64,
    /// Token lifetimes with a second refresh, each explained by a kill.
    pub explained_repeats: usize,
}

/// The refresh discipline of a run whose token load ran from `load_start` to `load_end`:
///
/// - Liveness: over the load window no installation went a whole token lifetime without a
///   refresh (so no token lapsed). The run must last at least two lifetimes, or this proves
///   nothing.
/// - One refresh per token lifetime, with one exception: a process SIGKILLed between HubSpot's
///   answer and recording it loses the new token, and the redelivered command must refresh
///   again. So a second refresh in one lifetime is allowed only when it came after a kill and
///   either the first, or the call that minted the token, was in flight on the killed process
///   (went through its tap, started before the kill); a third is never allowed. A killed NATS node does not add to this: a refresh is recorded before its
///   command is acknowledged, and a redelivered command finds the token fresh.
/// - No expired token ever reached HubSpot.
pub fn assert_refresh_discipline(
    fleet: &Fleet,
    counters: &Counters,
    token_lifetime: Duration,
    load_start: DateTime<Utc>,
    load_end: DateTime<Utc>,
) -> RefreshFigures {
    let lifetime_ms = token_lifetime.as_millis() as i64;
    let window_ms = (load_end - load_start).num_milliseconds();
    assert!(
        window_ms >= 2 * lifetime_ms,
        "a load of {window_ms} ms is shorter than two token lifetimes: the liveness check would \
         prove nothing"
    );
    let calls = fleet.tap_record.calls();
    let ours: Vec<_> = counters
        .installations
        .iter()
        .filter(|i| i.client_id == CLIENT_ID && i.installed)
        .collect();
    assert!(
        !ours.is_empty(),
        "the fleet's installations are in the counters"
    );
    let mut explained_repeats = 0;
    for inst in &ours {
        // Liveness: the gaps between refreshes within the window, its edges included.
        let mut points: Vec<i64> = inst
            .refresh_times_ms
            .iter()
            .copied()
            .filter(|t| *t > load_start.timestamp_millis() && *t < load_end.timestamp_millis())
            .collect();
        points.push(load_start.timestamp_millis());
        points.push(load_end.timestamp_millis());
        points.sort_unstable();
        let longest = points.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        assert!(
            longest < lifetime_ms,
            "hub {} went {longest} ms without a refresh (token lifetime {lifetime_ms} ms): {:?}; \
             its token calls: {:?}",
            inst.hub_id,
            inst.refresh_times_ms,
            calls
                .iter()
                .filter(|c| c.hub_id == Some(inst.hub_id))
                .map(|c| (c.via.as_str(), c.started.format("%H:%M:%S%.3f").to_string()))
                .collect::<Vec<_>>()
        );

        // Repeats: each explained by a kill.
        for repeat in &inst.repeated_refreshes {
            let calls_ms = &repeat.calls_ms;
            assert_eq!(
                calls_ms.len(),
                2,
                "hub {} refreshed {} times within one token lifetime (at {calls_ms:?})",
                inst.hub_id,
                calls_ms.len()
            );
            let (first, second) = (calls_ms[0], calls_ms[1]);
            // A call in flight on `kill`'s process when it died, covering `at`.
            let in_flight_at = |kill: &Kill, at: i64| {
                calls.iter().any(|c| {
                    c.via == kill.process
                        && c.grant_type == "refresh_token"
                        && c.hub_id == Some(inst.hub_id)
                        && c.started.timestamp_millis() <= at
                        && at <= c.answered.timestamp_millis()
                        && c.started < kill.at + SENT_BEFORE_DEATH
                })
            };
            // Either the first of the two calls was in flight on a killed process (its answer was
            // lost, so the command ran again), or the token whose lifetime this is was minted by
            // such a call: Hubkeeper never learned of that token, and its redelivered refresh and
            // the next regular one both fall within its lifetime.
            let explained = fleet.kills.iter().any(|kill| {
                second > kill.at.timestamp_millis()
                    && (in_flight_at(kill, first) || in_flight_at(kill, repeat.token_issued_ms))
            });
            assert!(
                explained,
                "hub {} refreshed twice within the lifetime of the token issued at {} (at {first} \
                 and {second} ms) and no kill explains it; kills: {:?}; its token calls: {:?}",
                inst.hub_id,
                repeat.token_issued_ms,
                fleet.kills,
                calls
                    .iter()
                    .filter(|c| c.hub_id == Some(inst.hub_id))
                    .collect::<Vec<_>>()
            );
            explained_repeats += 1;
        }
    }
    assert_eq!(
        counters.app(CLIENT_ID).crm_calls_expired_token,
        0,
        "no expired token reached HubSpot"
    );
    RefreshFigures {
        calls: ours.iter().map(|i| i.refresh_calls).sum(),
        explained_repeats,
    }
}
