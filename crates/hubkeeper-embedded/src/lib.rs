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

/// A free loopback port for a server about to be started. The port is released before the
/// server binds it, so it is chosen where nothing else is handed out meanwhile: at random below
/// the kernel's ephemeral range (`net.ipv4.ip_local_port_range`). A port from `bind(0)` comes
/// from that range, and once released the kernel may give it to any of the outgoing connections
/// a busy machine opens before the server binds it (a test run saw a worker fail with "Address
/// already in use" that way). Each candidate is checked bindable; after 64 taken ones, or when
/// the range leaves no room below it, the kernel's choice.
pub fn free_port() -> Result<u16, EmbeddedError> {
    use std::hash::{BuildHasher, Hasher};
    let below = ephemeral_range_start().saturating_sub(1);
    let low: u16 = 10_000;
    if below > low {
        let span = u64::from(below - low);
        let random = std::collections::hash_map::RandomState::new();
        for attempt in 0..64u64 {
            let mut hasher = random.build_hasher();
            hasher.write_u64(attempt);
            let port = low + u16::try_from(hasher.finish() % span).unwrap_or(0);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("127.0.0.1:0"))?;
    let port = listener.local_addr().map_err(io_err("127.0.0.1:0"))?.port();
    Ok(port)
}

/// The first port of the kernel's ephemeral range (Linux's default 32768 where it cannot be read).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// True when something accepts TCP connections on the loopback port.
pub(crate) async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable_and_below_the_ephemeral_range() {
        let start = ephemeral_range_start();
        for _ in 0..20 {
            let port = free_port().expect("a free port");
            assert!(
                port >= 10_000 && port < start,
                "{port} vs range from {start}"
            );
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
        }
    }
}
