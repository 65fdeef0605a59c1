//! A whole Hubkeeper deployment for one bench run: the servers of [`BenchEnv`], the HubSpot
//! simulator (in this process, over real HTTP), and `hubkeeper` role processes spawned from this
//! very binary, so what is measured is what a user runs. Everything is stopped and removed when
//! the stack is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use hubkeeper_sim::{
    AccountSpec, AppSpec, ApproveRequest, ClientSecret, SeedFile, SimConfig, SimControl, SimHandle,
    UserSpec,
};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

use super::load::{random_gets, Get, LoadFigures};
use super::BenchEnv;

pub const CLIENT_ID: &str = "7d3c1b2a-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
/// Only ever valid against the simulator this bench starts.
pub const CLIENT_SECRET: &str = "bench-secret-2b7e1516-28ae-4d2a-abf7-158809cf4f3c";
pub const HUB_BASE: u64 = 60_000_000;

/// One spawned `hubkeeper` process.
pub struct RoleProcess {
    pub name: String,
    child: Child,
    /// The HTTP port for `api` processes.
    pub port: Option<u16>,
}

impl RoleProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident and peak resident memory (VmRSS, VmHWM) in KiB, from /proc.
    pub fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| anyhow!("{name} missing in /proc/{}/status", self.pid()))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop(Duration::from_secs(5));
        }
    }
}

pub struct Stack {
    // Field order is drop order: processes stop before the servers they use.
    pub processes: Vec<RoleProcess>,
    /// Held so the simulator stops with the stack.
    _sim: SimHandle,
    pub control: SimControl,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub http: reqwest::Client,
    pub admin_key: SecretString,
    vars: Vec<(String, String)>,
    logs: PathBuf,
    /// Held so Postgres and NATS stop (and their directory goes) with the stack.
    _env: BenchEnv,
}

impl Stack {
    /// Servers, simulator (with the bench app registered), keys; no Hubkeeper process yet.
    pub async fn start(tools: PathBuf, sim_config: SimConfig) -> anyhow::Result<Self> {
        let env = BenchEnv::start(tools).await?;
        let pool = hubkeeper_store::connect(
            &SecretString::from(env.pg.database_url()),
            &hubkeeper_store::PoolConfig {
                max_connections: 32,
                ..hubkeeper_store::PoolConfig::default()
            },
        )?;
        hubkeeper_store::migrate(&pool).await?;
        let nats = hubkeeper_bus::connect(&SecretString::from(env.nats.url()), "bench").await?;
        let sim = hubkeeper_sim::spawn(sim_config).await?;
        let control = sim.control()?;
        let admin = hubkeeper_core::access::create_key(
            &pool,
            "bench admin",
            hubkeeper_core::access::Role::Admin,
            "bench",
        )
        .await?;
        let master = format!(
            "b1:{}",
            hubkeeper_crypto::generate_key_b64().expose_secret()
        );
        let state_secret = hubkeeper_crypto::generate_key_b64();
        let vars = vec![
            ("DATABASE_URL".to_owned(), env.pg.database_url()),
            ("NATS_URL".into(), env.nats.url()),
            ("HK_MASTER_KEYS".into(), master),
            (
                "HK_STATE_SECRET".into(),
                state_secret.expose_secret().to_owned(),
            ),
            ("HK_HUBSPOT_API_URL".into(), sim.base_url.clone()),
            ("HK_HUBSPOT_APP_URL".into(), sim.base_url.clone()),
            ("HK_LOG".into(), "warn".into()),
            ("HK_LOG_FORMAT".into(), "json".into()),
            ("HK_OAUTH_RATE_LIMIT_MAX".into(), "100000000".into()),
            (
                "HK_DATA_DIR".into(),
                env.path().join("data").display().to_string(),
            ),
        ];
        let logs = env.path().join("logs");
        std::fs::create_dir_all(&logs)?;
        Ok(Self {
            processes: Vec::new(),
            _sim: sim,
            control,
            pool,
            nats,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(256)
                .build()?,
            admin_key: admin.token,
            vars,
            logs,
            _env: env,
        })
    }

    /// Starts `hubkeeper <args>` with the stack's environment plus `extra`; for `api` processes
    /// (and `up`) it picks a port and waits for `/readyz`.
    pub async fn spawn(
        &mut self,
        name: &str,
        args: &[&str],
        extra: &[(&str, String)],
    ) -> anyhow::Result<usize> {
        let serves_http = matches!(args.first(), Some(&"api") | Some(&"up"));
        let port = hubkeeper_embedded::free_port()?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(args)
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HK_BIND", format!("127.0.0.1:{port}"))
            .env("HK_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null());
        let log = std::fs::File::create(self.logs.join(format!("{name}.log")))?;
        cmd.stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().with_context(|| format!("spawning {name}"))?;
        self.processes.push(RoleProcess {
            name: name.to_owned(),
            child,
            port: serves_http.then_some(port),
        });
        if serves_http {
            self.wait_ready(port, Duration::from_secs(120)).await?;
        }
        Ok(self.processes.len() - 1)
    }

    /// `GET /healthz` of `process` by `concurrency` clients for `duration`: the HTTP stack alone
    /// (every middleware, no authentication, no work) on these cores, the ceiling of any request
    /// the benches compare with a baseline.
    pub async fn http_floor(
        &self,
        process: usize,
        concurrency: usize,
        duration: Duration,
    ) -> LoadFigures {
        let floor = random_gets(
            std::sync::Arc::new(vec![Get {
                url: format!("{}/healthz", self.base(process)),
                authorization: String::new(),
            }]),
            concurrency,
            duration,
        )
        .await;
        eprintln!("{}", floor.line("http floor (GET /healthz)"));
        floor
    }

    pub fn base(&self, process: usize) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.processes[process].port.unwrap_or(0)
        )
    }

    async fn wait_ready(&mut self, port: u16, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let url = format!("http://127.0.0.1:{port}/readyz");
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(p) = self.processes.last_mut() {
                if let Ok(Some(status)) = p.child.try_wait() {
                    bail!(
                        "{} exited with {status}; see {}",
                        p.name,
                        self.logs.display()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!("{url} not ready after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A service key bound to `app`: the only kind of key that receives the app's tokens.
    pub async fn service_key(&self, app: &str) -> anyhow::Result<SecretString> {
        let app = app
            .parse()
            .map_err(|e| anyhow::anyhow!("app id {app}: {e}"))?;
        let key = hubkeeper_core::access::create_key_for_apps(
            &self.pool,
            "bench app",
            hubkeeper_core::access::Role::Service,
            &[app],
            "bench",
        )
        .await?;
        Ok(key.token)
    }

    /// Registers the bench app at the simulator and in Hubkeeper (through `api`); returns its id.
    pub async fn register_app(&self, api: usize) -> anyhow::Result<String> {
        let redirect = format!("{}/oauth/callback", self.base(api));
        self.control
            .register_app(&AppSpec {
                app_id: 5151,
                client_id: CLIENT_ID.into(),
                client_secret: ClientSecret::new(CLIENT_SECRET),
                name: "Bench".into(),
                redirect_uris: vec![redirect.clone()],
                scopes: vec!["oauth".into(), "crm.objects.contacts.read".into()],
            })
            .await?;
        self.create_app(api, "Bench", CLIENT_ID, &redirect).await
    }

    /// Creates an app in Hubkeeper only (the commands bench uses apps as command targets).
    pub async fn create_app(
        &self,
        api: usize,
        label: &str,
        client_id: &str,
        redirect: &str,
    ) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!("{}/v1/apps", self.base(api)))
            .bearer_auth(self.admin_key.expose_secret())
            .json(&serde_json::json!({
                "label": label,
                "environment": "development",
                "client_id": client_id,
                "client_secret": CLIENT_SECRET,
                "redirect_uri": redirect,
                "scopes": "oauth crm.objects.contacts.read",
            }))
            .send()
            .await?;
        let status = r.status();
        let body: serde_json::Value = r.json().await?;
        if !status.is_success() {
            bail!("creating app {label}: {status} {body}");
        }
        body["app_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no app_id in {body}"))
    }

    /// Registers `count` HubSpot accounts at the simulator (hub ids from [`HUB_BASE`]).
    pub async fn register_accounts(&self, count: u64) -> anyhow::Result<()> {
        let mut first = 0;
        while first < count {
            let last = (first + 5_000).min(count);
            let accounts = (first..last)
                .map(|i| AccountSpec {
                    hub_id: HUB_BASE + i,
                    domain: format!("bench-{i}.example.com"),
                    users: vec![UserSpec {
                        user_id: 800_000_000 + i,
                        email: format!("owner{i}@bench.example.com"),
                    }],
                })
                .collect();
            self.control
                .load_seed(&SeedFile {
                    apps: vec![],
                    accounts,
                })
                .await?;
            first = last;
        }
        Ok(())
    }

    /// Installs accounts `0..count` through the real flow (install → consent → callback),
    /// `concurrency` at a time; returns the installation ids.
    pub async fn install_accounts(
        &self,
        api: usize,
        app_id: &str,
        count: u64,
        concurrency: usize,
    ) -> anyhow::Result<Vec<String>> {
        let started = Instant::now();
        let results: Vec<anyhow::Result<String>> = futures::stream::iter(0..count)
            .map(|i| self.install(api, app_id, HUB_BASE + i))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let ids = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        eprintln!(
            "installed {count} accounts in {:.1}s ({:.0}/s)",
            started.elapsed().as_secs_f64(),
            count as f64 / started.elapsed().as_secs_f64()
        );
        Ok(ids)
    }

    async fn install(&self, api: usize, app_id: &str, hub_id: u64) -> anyhow::Result<String> {
        let base = self.base(api);
        let start = self
            .http
            .get(format!("{base}/oauth/{app_id}/install"))
            .send()
            .await?;
        let location = start
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("install answered {} without a redirect", start.status()))?;
        let approval = self
            .control
            .approve(&ApproveRequest::for_authorize_url(location, hub_id)?)
            .await?;
        let callback = self
            .http
            .get(approval.location.expose_secret())
            .send()
            .await?;
        let done = callback
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("callback answered {}", callback.status()))?;
        // The callback sends the browser to the public result page (absolute, or relative to
        // the API), which names the installation when it connected.
        let done = url::Url::parse(&base)?.join(done)?;
        let connected = done
            .query_pairs()
            .any(|(k, v)| k == "status" && v == "connected");
        done.query_pairs()
            .find(|(k, _)| k == "installation_id")
            .filter(|_| connected)
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| anyhow!("callback did not connect hub {hub_id}: {done}"))
    }

    /// Waits until the installations read model shows `count` connected installations (the
    /// scheduler and the token API's status checks read it).
    pub async fn wait_connected_projected(
        &self,
        count: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let pool = &self.pool;
        wait_for(
            "installations projected",
            timeout,
            Duration::from_millis(200),
            || async move {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM rm_installations WHERE status = 'connected'",
                )
                .fetch_one(pool)
                .await?;
                Ok(n as u64 >= count)
            },
        )
        .await
    }

    /// A variable of the environment the stack's processes get.
    pub fn var(&self, name: &str) -> Option<String> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    pub fn logs(&self) -> &Path {
        &self.logs
    }
}

/// Polls `condition` every `every` until it holds or `timeout` passes.
pub async fn wait_for<F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut condition: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}
