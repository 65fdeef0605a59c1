use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::process::{find_binary, spawn_server, stop_child, RunAs};
use crate::{free_port, io_err, EmbeddedError};

#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Directory for JetStream's store (`jetstream/`) and the log (`nats-server.log`).
    pub dir: PathBuf,
    /// Client port (loopback only); a free one when `None`.
    pub port: Option<u16>,
    /// Where to look for a project-installed nats-server before PATH (e.g. `.hubkeeper/tools`).
    pub tools_dir: Option<PathBuf>,
    /// An `authorization { ... }` block (users and their permissions, see
    /// `hubkeeper_bus::permissions`); `None` runs without authentication. It is written to
    /// `nats-server.conf` in `dir`, readable by this user only (it holds passwords).
    pub authorization: Option<String>,
}

/// A nats-server with JetStream owned by this process. Restartable on the same port and store,
/// which is how tests simulate a NATS outage.
#[derive(Debug)]
pub struct LocalNats {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    store: PathBuf,
    log: PathBuf,
    config: Option<PathBuf>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl LocalNats {
    pub async fn start(options: NatsOptions) -> Result<Self, EmbeddedError> {
        let mut candidates = Vec::new();
        if let Some(tools) = &options.tools_dir {
            candidates.push(tools.join("venv/bin/nats-server"));
            candidates.push(tools.join("bin/nats-server"));
        }
        let binary = find_binary("nats-server", "HK_NATS_SERVER_BIN", &candidates)?;
        std::fs::create_dir_all(&options.dir).map_err(io_err(&options.dir))?;
        let store = options.dir.join("jetstream");
        let log = options.dir.join("nats-server.log");
        let port = match options.port {
            Some(p) => p,
            None => free_port()?,
        };
        let config = match &options.authorization {
            Some(block) => {
                let path = options.dir.join("nats-server.conf");
                write_private(&path, block)?;
                Some(path)
            }
            None => None,
        };
        let mut server = Self {
            child: None,
            port,
            binary,
            store,
            log,
            config,
        };
        server.launch().await?;
        Ok(server)
    }

    async fn launch(&mut self) -> Result<(), EmbeddedError> {
        let mut cmd = Command::new(&self.binary);
        if let Some(config) = &self.config {
            cmd.arg("-c").arg(config);
        }
        cmd.args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.store)
            .args(["--server_name", "hubkeeper-local"]);
        let child = spawn_server(cmd, &self.log, RunAs::current(), Signal::SIGTERM)?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(EmbeddedError::Command {
                        what: "nats-server".into(),
                        detail: format!(
                            "exited with {status} during start-up; log at {}",
                            self.log.display()
                        ),
                    });
                }
            }
            if crate::port_open(self.port).await {
                tracing::info!(port = self.port, "local nats-server ready");
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(EmbeddedError::NotReady(
                    "nats-server",
                    READY_TIMEOUT,
                    self.log.clone(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Graceful stop (the store is flushed); [`LocalNats::restart`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Signal::SIGTERM, Duration::from_secs(20));
            tracing::info!("local nats-server stopped");
        }
    }

    /// Abrupt stop, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Signal::SIGKILL, Duration::from_secs(5));
        }
    }

    pub async fn restart(&mut self) -> Result<(), EmbeddedError> {
        self.stop();
        self.launch().await
    }
}

/// Writes `text` to a new file only its owner can read.
fn write_private(path: &Path, text: &str) -> Result<(), EmbeddedError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(text.as_bytes()).map_err(io_err(path))
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        self.stop();
    }
}
