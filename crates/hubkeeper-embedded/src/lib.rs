//! Local Postgres and nats-server for `hubkeeper up` and for the test harness.
//!
//! Both servers run as child processes in their own process group (so a terminal's Ctrl-C reaches
//! Hubkeeper alone, which then stops them in order) with a parent-death signal (so a killed
//! Hubkeeper does not leave them behind). Postgres refuses to run as root: when we are root, the
//! data directory is handed to the unprivileged `nobody` user and the server runs as that user.

mod nats;
mod postgres;
mod process;

pub use nats::{LocalNats, NatsOptions};
pub use postgres::{LocalPostgres, PostgresOptions};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("{0} not found: {1}")]
    BinaryNotFound(&'static str, String),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} did not become ready within {1:?}; see its log at {2}")]
    NotReady(&'static str, std::time::Duration, PathBuf),
    #[error("database setup failed: {0}")]
    Database(#[from] sqlx::Error),
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let path = path.into();
    move |source| EmbeddedError::Io { path, source }
}

/// Asks the kernel for a free loopback port. The port is released before the server binds it,
/// which is racy in theory; the servers fail loudly on a clash and callers retry.
pub fn free_port() -> Result<u16, EmbeddedError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("127.0.0.1:0"))?;
    let port = listener.local_addr().map_err(io_err("127.0.0.1:0"))?.port();
    Ok(port)
}

/// True when something accepts TCP connections on the loopback port.
pub(crate) async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}
