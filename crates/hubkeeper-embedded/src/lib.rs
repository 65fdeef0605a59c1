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
/// server binds it, which leaves two ways for it to be taken meanwhile: for a port in the
/// kernel's ephemeral range (`net.ipv4.ip_local_port_range`, where `bind(0)` picks), by an
/// outgoing connection given it as its local port; and by another process picking the same port
/// for its own server (a parallel test run saw one answer another's readiness check). So the port
/// is chosen at random outside that range, from 10000 up, checked bindable, and reserved for
/// [`PORT_RESERVATION`] by a file in the temporary directory that other pickers respect; after 64
/// misses, the kernel's choice.
pub fn free_port() -> Result<u16, EmbeddedError> {
    use std::hash::{BuildHasher, Hasher};
    let (first, last) = ephemeral_range();
    const LOW: u16 = 10_000;
    // The candidates, [LOW, first) then (last, 65535], numbered as one span.
    let above_from = last.max(LOW - 1);
    let below = u64::from(first.saturating_sub(LOW));
    let span = below + u64::from(u16::MAX - above_from);
    let random = std::collections::hash_map::RandomState::new();
    let attempts = if span == 0 { 0 } else { 64u64 };
    for attempt in 0..attempts {
        let mut hasher = random.build_hasher();
        hasher.write_u64(attempt);
        let n = hasher.finish() % span;
        let candidate = if n < below {
            u64::from(LOW) + n
        } else {
            u64::from(above_from) + 1 + (n - below)
        };
        match u16::try_from(candidate) {
            Ok(port)
                if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() && reserve(port) =>
            {
                return Ok(port)
            }
            _ => {}
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("127.0.0.1:0"))?;
    let port = listener.local_addr().map_err(io_err("127.0.0.1:0"))?.port();
    Ok(port)
}

/// How long a port handed out by [`free_port`] stays reserved: far longer than a server takes
/// to start and bind it, after which the bind check alone keeps it from being handed out again.
pub const PORT_RESERVATION: std::time::Duration = std::time::Duration::from_secs(120);

/// Reserves `port` for this caller: creates `<temp>/hubkeeper-ports/<port>`, or takes over such a
/// file older than [`PORT_RESERVATION`] (renamed away first, so that of two takers only one gets
/// to create it anew). True also when the directory cannot be written: then the bind check is
/// all there is.
fn reserve(port: u16) -> bool {
    let dir = std::env::temp_dir().join("hubkeeper-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let path = dir.join(port.to_string());
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
    };
    match create() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let stale = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > PORT_RESERVATION));
            let aside = dir.join(format!("{port}.{}", std::process::id()));
            stale && std::fs::rename(&path, &aside).is_ok() && {
                let _ = std::fs::remove_file(&aside);
                create().is_ok()
            }
        }
        Err(_) => true,
    }
}

/// The kernel's ephemeral port range (Linux's default, 32768-60999, where it cannot be read).
fn ephemeral_range() -> (u16, u16) {
    let read = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| {
            let mut ports = range.split_whitespace().map(str::parse::<u16>);
            Some((ports.next()?.ok()?, ports.next()?.ok()?))
        });
    read.unwrap_or((32_768, 60_999))
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
    fn free_ports_are_bindable_and_outside_the_ephemeral_range() {
        let (first, last) = ephemeral_range();
        for _ in 0..50 {
            let port = free_port().expect("a free port");
            assert!(
                port >= 10_000 && (port < first || port > last),
                "{port} vs the ephemeral range {first}-{last}"
            );
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
        }
    }

    #[test]
    fn a_reserved_port_is_not_handed_out_again() {
        let taken: std::collections::HashSet<u16> = (0..200)
            .map(|_| free_port().expect("a free port"))
            .collect();
        assert_eq!(
            taken.len(),
            200,
            "a port was handed out twice within its reservation"
        );
        let port = *taken.iter().next().expect("a port");
        assert!(!reserve(port), "a fresh reservation is respected");
    }
}
