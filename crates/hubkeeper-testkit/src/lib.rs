//! Test harness: real Postgres and a real nats-server on free loopback ports in a temporary
//! directory, per test, cleaned up on drop; helpers to run `hubkeeper` processes and kill them;
//! and condition waits (tests wait on facts, never on fixed sleeps).

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

fn set_mode(path: &Path, mode: u32) {
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
