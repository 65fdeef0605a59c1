//! The one way tests start a `hubkeeper` process that serves HTTP: on a loopback port of its
//! own (`HK_BIND`), its output in a log file, ready once `/readyz` answers 200.

use std::path::Path;
use std::time::Duration;

use crate::{hubkeeper_binary, wait_until, HkProcess};

/// How long a process may take to become ready (`up` initialises Postgres first).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A `hubkeeper` process serving HTTP on `127.0.0.1:port`; killed on drop.
pub struct Server {
    pub process: HkProcess,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Server {
    /// Starts `hubkeeper <args>` on `port` (from [`crate::free_port`], or one already written
    /// into a redirect URI) with `env` on top of the inherited environment (an empty value
    /// unsets), logging to `log_dir/<name>.log`, and waits until it is ready.
    pub async fn start(
        port: u16,
        name: &str,
        args: &[&str],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> Server {
        let mut server = Self::spawn(port, name, args, env, log_dir);
        server.wait_ready().await;
        server
    }

    /// Spawns without waiting (a test that expects the process to refuse to start).
    pub fn spawn(
        port: u16,
        name: &str,
        args: &[&str],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> Server {
        let mut vars = env.to_vec();
        vars.retain(|(k, _)| k != "HK_BIND");
        vars.push(("HK_BIND".into(), format!("127.0.0.1:{port}")));
        let process = HkProcess::spawn(&hubkeeper_binary(), name, args, &vars, log_dir);
        Server {
            process,
            port,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Waits until `/readyz` answers 200; fails at once, with the log, if the process exits.
    pub async fn wait_ready(&mut self) {
        let port = self.port;
        let process = &mut self.process;
        wait_until(
            &format!("{} ready on port {port}", process.name),
            READY_TIMEOUT,
            || {
                assert!(
                    process.is_running(),
                    "{} exited before it was ready: {}",
                    process.name,
                    process.log_tail()
                );
                ready(port)
            },
        )
        .await;
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Waits until a process on `port` answers `/readyz` with 200.
pub async fn wait_ready(port: u16) {
    wait_until(&format!("ready on port {port}"), READY_TIMEOUT, || {
        ready(port)
    })
    .await;
}

async fn ready(port: u16) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}
