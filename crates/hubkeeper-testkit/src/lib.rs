//! Test harness: real Postgres and a real nats-server on free loopback ports in a temporary
//! directory, per test, cleaned up on drop; helpers to run `hubkeeper` processes and kill them;
//! and condition waits (tests wait on facts, never on fixed sleeps).
//!
//! One of each: [`free_port`], [`hubkeeper_binary`], [`Server`] (a `hubkeeper` process serving
//! HTTP, ready when `/readyz` says so), [`Browser`] (headless Chromium through chromedriver),
//! [`DashboardStack`] (`hubkeeper up` with the simulator and a logged-in browser, for the
//! dashboard's tests),
//! [`HubSpotTap`] (a recording proxy in front of the simulator) and [`SecretScan`] (no secret in
//! any table or log); [`verify_standard_webhook`] checks a notification's signature as an app
//! would.

mod browser;
mod dashboard;
mod leaks;
mod server;
mod standard_webhooks;
mod tap;

pub use browser::{Browser, Page, PAGE_WAIT};
pub use dashboard::{DashboardStack, DashboardStackSetup, SimulatedApp};
pub use leaks::{SecretKind, SecretScan};
pub use server::{wait_ready, Server};
pub use standard_webhooks::verify_standard_webhook;
pub use tap::{HubSpotTap, TapRecord, TokenCall};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hubkeeper_embedded::{LocalNats, LocalPostgres, NatsOptions, PostgresOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sqlx::PgPool;

/// A fresh Postgres (with Hubkeeper's schema) and nats-server for one test.
pub struct TestEnv {
    pub pg: LocalPostgres,
    pub nats: LocalNats,
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub async fn start() -> TestEnv {
        Self::start_with_nats_authorization(None).await
    }

    /// [`TestEnv::start`] with a nats-server that requires these users (an `authorization`
    /// block, see `hubkeeper_bus::permissions`).
    pub async fn start_with_nats_authorization(authorization: Option<String>) -> TestEnv {
        let _ = hubkeeper_telemetry::init_tracing(
            hubkeeper_telemetry::LogFormat::Pretty,
            &std::env::var("HK_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        );
        let dir = tempfile::Builder::new()
            .prefix("hk-test-")
            .tempdir()
            .expect("temp dir");
        // Postgres runs as `nobody` when tests run as root: it must be able to enter the dir.
        set_mode(dir.path(), 0o755);
        let pg = LocalPostgres::start(PostgresOptions {
            dir: dir.path().join("postgres"),
            port: None,
            database: "hubkeeper".into(),
            durable: false,
        })
        .await
        .expect("start postgres");
        let nats = LocalNats::start(NatsOptions {
            dir: dir.path().join("nats"),
            port: None,
            tools_dir: tools_dir(),
            authorization,
        })
        .await
        .expect("start nats-server");
        let env = TestEnv { pg, nats, dir };
        let pool = env.pool_unmigrated();
        hubkeeper_store::migrate(&pool).await.expect("migrate");
        pool.close().await;
        env
    }

    pub fn database_url(&self) -> String {
        self.pg.database_url()
    }

    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    fn pool_unmigrated(&self) -> PgPool {
        hubkeeper_store::connect(
            &secrecy::SecretString::from(self.database_url()),
            &hubkeeper_store::PoolConfig {
                max_connections: 32,
                ..Default::default()
            },
        )
        .expect("pool")
    }

    /// A pool on the test database (migrations already applied).
    pub fn pool(&self) -> PgPool {
        self.pool_unmigrated()
    }

    pub async fn nats_client(&self) -> async_nats::Client {
        hubkeeper_bus::connect(&secrecy::SecretString::from(self.nats_url()), "test")
            .await
            .expect("connect nats")
    }

    /// Environment for a `hubkeeper` child process pointed at this test's servers.
    pub fn process_env(&self) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), self.database_url()),
            ("NATS_URL".into(), self.nats_url()),
            ("HK_LOG_FORMAT".into(), "json".into()),
            ("HK_LOG".into(), "info".into()),
            (
                "HK_DATA_DIR".into(),
                self.dir.path().join("data").display().to_string(),
            ),
        ]
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the processes of this test write their logs.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// The leak check over every table of this test's database and every log in
    /// [`TestEnv::log_dir`]; see [`SecretScan::assert_nowhere`].
    pub async fn assert_no_secrets(&self, secrets: &SecretScan, kinds: &[SecretKind]) {
        let pool = self.pool();
        secrets.assert_nowhere(kinds, &pool, &self.log_dir()).await;
        pool.close().await;
    }

    /// Whether the reader of the global order with cursor `name` has passed the last stored
    /// event (nothing is left for it to read).
    pub async fn cursor_at_end(&self, name: &str) -> bool {
        let pool = self.pool();
        let at_end = cursor_at_end(&pool, name).await;
        pool.close().await;
        at_end
    }
}

/// Whether the reader of the global order with cursor `name` has passed the last stored event.
pub async fn cursor_at_end(pool: &PgPool, name: &str) -> bool {
    sqlx::query_scalar::<_, Option<bool>>(
        "SELECT (SELECT last_position FROM stream_cursors WHERE name = $1)
                = (SELECT max(global_position) FROM events)",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .ok()
    .flatten()
    .unwrap_or(false)
}

impl Drop for TestEnv {
    /// A failing test keeps its process logs: they are copied to `test-artifacts/<dir name>/`
    /// before the temporary directory goes away.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let logs = self.dir.path().join("logs");
        if !logs.exists() {
            return;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-artifacts");
        let name = self
            .dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "logs".into());
        let target = root.join(name);
        if std::fs::create_dir_all(&target).is_ok() {
            if let Ok(entries) = std::fs::read_dir(&logs) {
                for entry in entries.flatten() {
                    let _ = std::fs::copy(entry.path(), target.join(entry.file_name()));
                }
            }
            eprintln!("process logs kept in {}", target.display());
        }
    }
}

/// Where scripts/bootstrap.sh installs tools (nats-server), found from this crate's location.
pub fn tools_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tools = root.join(".hubkeeper/tools");
    tools.exists().then_some(tools)
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    hubkeeper_embedded::free_port().expect("free port")
}

/// The `hubkeeper` binary Cargo built for this test run: `$CARGO_BIN_EXE_hubkeeper` when the
/// runner sets it, else `target/<profile>/hubkeeper`, next to the `deps/` directory that holds
/// the test executable.
pub fn hubkeeper_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("CARGO_BIN_EXE_hubkeeper").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("hubkeeper"))
        .expect("the test executable lives in target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p hubkeeper`",
        bin.display()
    );
    bin
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A `hubkeeper` child process whose output goes to a log file; killed on drop.
pub struct HkProcess {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl HkProcess {
    /// Spawns `bin args…` with `env` on top of the inherited environment (an empty value unsets).
    pub fn spawn(
        bin: &Path,
        name: &str,
        args: &[&str],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> HkProcess {
        std::fs::create_dir_all(log_dir).expect("log dir");
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args(args);
        // An empty value removes the variable, so a test can keep a child from inheriting it.
        for (key, value) in env {
            if value.is_empty() {
                cmd.env_remove(key);
            } else {
                cmd.env(key, value);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd.spawn().expect("spawn hubkeeper");
        HkProcess {
            name: name.into(),
            log,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// SIGKILL: the process gets no chance to clean up, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit; returns whether it exited successfully.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Whether the test has already killed or terminated it (a process that exited by itself
    /// has not been stopped: [`HkProcess::stop`] reports it).
    pub fn was_stopped(&self) -> bool {
        self.child.is_none()
    }

    /// SIGKILL of a process that must still be running: a process that had already exited by
    /// itself would otherwise go unnoticed behind the kill.
    pub fn crash(&mut self) {
        assert!(
            self.is_running(),
            "{} had already exited before it was to be killed: {}",
            self.name,
            self.log_tail()
        );
        self.kill();
    }

    /// The end of a run for a process that must have survived it: it is still running, and
    /// exits successfully on SIGTERM within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        assert!(
            self.is_running(),
            "{} died during the run: {}",
            self.name,
            self.log_tail()
        );
        assert!(
            self.terminate(grace),
            "{} did not exit cleanly on SIGTERM: {}",
            self.name,
            self.log_tail()
        );
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .map(|c| matches!(c.try_wait(), Ok(None)))
            .unwrap_or(false)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HkProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `condition` every few milliseconds until it holds; panics naming `what` on timeout.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(5);
    loop {
        if condition().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// A JetStream cluster of nats-server processes on free loopback ports (client, cluster and
/// monitoring ports), configured like `nats/cluster/n*.conf`, for tests that kill and restart
/// NATS nodes under load. Hubkeeper processes get [`NatsCluster::url`] (every node, comma
/// separated) and `HK_NATS_REPLICAS` = the cluster size. Nodes are SIGKILLed on drop.
pub struct NatsCluster {
    binary: PathBuf,
    nodes: Vec<NatsNode>,
}

/// One node of a [`NatsCluster`]: its ports stay fixed across restarts, as do its store and log.
pub struct NatsNode {
    pub name: String,
    pub client_port: u16,
    pub http_port: u16,
    pub log: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

/// The nats-server to run: `$HK_NATS_SERVER_BIN`, else the one scripts/bootstrap.sh installed,
/// else whatever `nats-server` is on PATH.
pub fn nats_server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("HK_NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    tools_dir()
        .into_iter()
        .flat_map(|t| [t.join("bin/nats-server"), t.join("venv/bin/nats-server")])
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

impl NatsCluster {
    /// Starts `size` nodes with stores under `dir` and logs in `log_dir` (`nats-<name>.log`, so a
    /// failing test's artifacts include them), and waits until every node reports healthy
    /// JetStream (a meta leader elected).
    pub async fn start(dir: &Path, log_dir: &Path, size: usize) -> NatsCluster {
        std::fs::create_dir_all(log_dir).expect("log dir");
        // All ports are held at once while choosing, so no two of them are the same.
        let held: Vec<std::net::TcpListener> = (0..size * 3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port"))
            .collect();
        let ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().expect("bound port").port())
            .collect();
        drop(held);
        let routes: Vec<String> = (0..size)
            .map(|i| format!("    nats-route://127.0.0.1:{}", ports[size + i]))
            .collect();
        let mut nodes = Vec::with_capacity(size);
        for i in 0..size {
            let name = format!("hk-n{}", i + 1);
            let store = dir.join(&name);
            std::fs::create_dir_all(&store).expect("nats store dir");
            let (client_port, cluster_port, http_port) =
                (ports[i], ports[size + i], ports[2 * size + i]);
            let config = dir.join(format!("{name}.conf"));
            let text = format!(
                "server_name: {name}\n\
                 listen: 127.0.0.1:{client_port}\n\
                 http: 127.0.0.1:{http_port}\n\
                 max_payload: 2MB\n\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 128MB\n  \
                 max_file_store: 4GB\n}}\n\n\
                 cluster {{\n  name: hubkeeper\n  listen: 127.0.0.1:{cluster_port}\n  \
                 routes: [\n{routes}\n  ]\n}}\n",
                store = store.display(),
                routes = routes.join("\n"),
            );
            std::fs::write(&config, text).expect("write nats config");
            nodes.push(NatsNode {
                log: log_dir.join(format!("nats-{name}.log")),
                name,
                client_port,
                http_port,
                config,
                child: None,
            });
        }
        let mut cluster = NatsCluster {
            binary: nats_server_binary(),
            nodes,
        };
        for i in 0..size {
            cluster.launch(i);
        }
        cluster.wait_healthy(Duration::from_secs(60)).await;
        cluster
    }

    fn launch(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("nats log file");
        let err = out.try_clone().expect("nats log file");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        node.child = Some(child);
    }

    /// Every node's client URL, comma separated: what `NATS_URL` takes.
    pub fn url(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.node_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    pub fn nodes(&self) -> &[NatsNode] {
        &self.nodes
    }

    /// SIGKILL: the node loses whatever it had not written, as in a crash.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed node again on its ports and store, and waits until the whole cluster is
    /// healthy (the node has caught up with its streams).
    pub async fn restart(&mut self, i: usize, timeout: Duration) {
        self.kill(i);
        self.launch(i);
        self.wait_healthy(timeout).await;
    }

    /// Waits until every running node answers `/healthz` with 200, which nats-server does once
    /// JetStream has a meta leader and the node's streams are current.
    pub async fn wait_healthy(&self, timeout: Duration) {
        let ports: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.http_port)
            .collect();
        wait_until("NATS cluster healthy", timeout, || {
            let ports = ports.clone();
            async move {
                for port in ports {
                    if http_status(port, "/healthz").await != Some(200) {
                        return false;
                    }
                }
                true
            }
        })
        .await;
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// The status code of `GET path` on a loopback port, over plain HTTP/1.0 (no client library:
/// the monitoring endpoint is all this needs).
async fn http_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 16];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]).await.ok()? {
            0 => break,
            n => read += n,
        }
    }
    // "HTTP/1.1 200 OK": the code is the second word.
    std::str::from_utf8(&head[..read])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
