use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sqlx::{Connection, Executor, PgConnection};

use crate::process::{find_binary, run_to_end, spawn_server, stop_child, stop_stale, RunAs};
use crate::{free_port, io_err, EmbeddedError};

#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Directory for the cluster (`data/`) and its log (`postgres.log`).
    pub dir: PathBuf,
    /// Port to listen on (loopback only); a free one when `None`.
    pub port: Option<u16>,
    /// Database created for Hubkeeper if missing.
    pub database: String,
    /// `false` turns off fsync and synchronous commit: for throwaway test clusters only.
    pub durable: bool,
}

/// A Postgres server owned by this process; stopped (fast shutdown) on [`LocalPostgres::stop`]
/// or drop.
#[derive(Debug)]
pub struct LocalPostgres {
    child: Option<Child>,
    port: u16,
    database: String,
    log: PathBuf,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl LocalPostgres {
    pub async fn start(options: PostgresOptions) -> Result<Self, EmbeddedError> {
        let bin_dir = postgres_bin_dir()?;
        let run_as = RunAs::for_postgres();
        let dir = usable_dir(&options.dir, &run_as);
        let data = dir.join("data");
        let log = dir.join("postgres.log");
        std::fs::create_dir_all(&data).map_err(io_err(&data))?;
        set_mode(&dir, 0o755)?;
        set_mode(&data, 0o700)?;

        if !data.join("PG_VERSION").exists() {
            run_as.chown_tree(&dir)?;
            tracing::info!(dir = %data.display(), "initialising a local Postgres cluster");
            let mut initdb = Command::new(bin_dir.join("initdb"));
            initdb.arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
            ]);
            if !options.durable {
                initdb.arg("--no-sync");
            }
            run_to_end(initdb, run_as, "initdb")?;
        }
        run_as.chown_tree(&dir)?;

        if let Some(pid) = read_pid(&data.join("postmaster.pid")) {
            stop_stale(pid, Signal::SIGINT, Duration::from_secs(30));
        }

        let port = match options.port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut cmd = Command::new(bin_dir.join("postgres"));
        cmd.arg("-D").arg(&data).arg("-p").arg(port.to_string());
        for setting in [
            "listen_addresses=127.0.0.1",
            "unix_socket_directories=",
            "max_connections=300",
            "shared_buffers=128MB",
            "log_min_messages=warning",
        ] {
            cmd.arg("-c").arg(setting);
        }
        if !options.durable {
            for setting in [
                "fsync=off",
                "synchronous_commit=off",
                "full_page_writes=off",
            ] {
                cmd.arg("-c").arg(setting);
            }
        }
        let child = spawn_server(cmd, &log, run_as, Signal::SIGINT)?;
        let mut server = Self {
            child: Some(child),
            port,
            database: options.database.clone(),
            log,
        };
        server.wait_ready().await?;
        server.ensure_database(&options.database).await?;
        tracing::info!(port, "local Postgres ready");
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection URL of the Hubkeeper database (trust authentication on loopback).
    pub fn database_url(&self) -> String {
        self.url_for(&self.database)
    }

    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Creates a database (used by the test harness for a fresh database per test).
    pub async fn create_database(&self, name: &str) -> Result<(), EmbeddedError> {
        self.ensure_database(name).await
    }

    async fn wait_ready(&mut self) -> Result<(), EmbeddedError> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(EmbeddedError::Command {
                        what: "postgres".into(),
                        detail: format!(
                            "exited with {status} during start-up; log at {}",
                            self.log.display()
                        ),
                    });
                }
            }
            if crate::port_open(self.port).await {
                let url = self.url_for("postgres");
                if PgConnection::connect(&url).await.is_ok() {
                    return Ok(());
                }
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(EmbeddedError::NotReady(
                    "postgres",
                    READY_TIMEOUT,
                    self.log.clone(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ensure_database(&self, name: &str) -> Result<(), EmbeddedError> {
        let mut conn = PgConnection::connect(&self.url_for("postgres")).await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            conn.execute(format!("CREATE DATABASE {quoted}").as_str())
                .await?;
        }
        conn.close().await?;
        Ok(())
    }

    /// Fast shutdown: open transactions are rolled back, the server exits cleanly.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Signal::SIGINT, Duration::from_secs(30));
            tracing::info!("local Postgres stopped");
        }
    }

    /// Stops the server abruptly (for crash tests); the next start recovers from the WAL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Signal::SIGKILL, Duration::from_secs(5));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .map(|c| matches!(c.try_wait(), Ok(None)))
            .unwrap_or(false)
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), EmbeddedError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

/// When we run Postgres as `nobody`, it must be able to reach its directory. A project checked
/// out under `/root` (mode 0700) is not reachable, so the cluster then lives under
/// `/var/lib/hubkeeper/` instead, keyed by the requested path so each checkout keeps its own.
fn usable_dir(requested: &Path, run_as: &RunAs) -> PathBuf {
    let absolute = std::path::absolute(requested).unwrap_or_else(|_| requested.to_path_buf());
    if run_as.can_traverse(&absolute.join("data")) {
        return absolute;
    }
    let key: String = absolute
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let fallback = PathBuf::from("/var/lib/hubkeeper").join(key.trim_matches('_'));
    tracing::info!(
        requested = %absolute.display(),
        using = %fallback.display(),
        "the Postgres user cannot reach the requested directory; using a system directory"
    );
    fallback
}

fn read_pid(pid_file: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn postgres_bin_dir() -> Result<PathBuf, EmbeddedError> {
    if let Ok(dir) = std::env::var("HK_PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    // Debian keeps the server binaries off PATH, one directory per major version: take the newest.
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin").join("initdb"))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort_by_key(|p| {
        p.parent()
            .and_then(Path::parent)
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    candidates.reverse();
    let initdb = find_binary("initdb", "HK_PG_INITDB", &candidates)?;
    let dir = std::fs::canonicalize(&initdb)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or_else(|| EmbeddedError::BinaryNotFound("postgres", initdb.display().to_string()))?;
    Ok(dir)
}
