//! NATS JetStream side of Hubkeeper: connection, the stream definitions (created idempotently at
//! start-up, from code), the relay that copies the event store into JetStream, and the toolkit
//! every worker builds on:
//!
//! * [`leadership`]: single active roles (leader election and the loop they share);
//! * [`consume`]: the consume loop of every JetStream worker (concurrency, retries, shutdown);
//! * [`dead_letter`]: the dead-letter stream's one writer and reader;
//! * [`registry`]: advisory-lock keys and cursor names, each defined once;
//! * [`permissions`]: the NATS user of each role and what it may publish and subscribe to.

pub mod consume;
pub mod dead_letter;
pub mod envelope;
pub mod leadership;
pub mod limiter;
pub mod permissions;
pub mod registry;
pub mod relay;
pub mod streams;

pub use envelope::{event_subject, RelayedEvent, ENVELOPE_VERSION};
pub use leadership::{run_as_leader, LeaderRole, LeaderWork, Leadership};
pub use relay::{EventRelay, RelayConfig, RelayOutcome};
pub use streams::{
    ensure_streams, StreamsConfig, DLQ_STREAM, DLQ_SUBJECT_PREFIX, EVENTS_STREAM, NOTIFY_STREAM,
    NOTIFY_SUBJECT_PREFIX, REFRESH_STREAM, REFRESH_SUBJECT_PREFIX,
};

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    #[error("JetStream error: {0}")]
    JetStream(String),
}

/// How a process authenticates to NATS: a user of [`permissions`] with its password, and
/// optionally the CA that signed the server's certificate (for `tls://` URLs).
#[derive(Debug, Clone, Default)]
pub struct NatsAuth {
    pub user: Option<String>,
    pub password: Option<SecretString>,
    pub tls_ca: Option<std::path::PathBuf>,
}

/// Connects without credentials (a server without `authorization`, such as the test servers).
pub async fn connect(url: &SecretString, name: &str) -> Result<async_nats::Client, BusError> {
    connect_with(url, name, &NatsAuth::default()).await
}

/// Connects with unlimited reconnects: every role must ride out a NATS restart on its own. With a
/// user, replies come on that user's inbox prefix (the only inboxes its permissions allow).
pub async fn connect_with(
    url: &SecretString,
    name: &str,
    auth: &NatsAuth,
) -> Result<async_nats::Client, BusError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5));
    if let Some(user) = &auth.user {
        let password = auth
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_owned())
            .ok_or_else(|| BusError::Connect(format!("no password for NATS user {user}")))?;
        options = options
            .user_and_password(user.clone(), password)
            .custom_inbox_prefix(permissions::inbox_prefix(user));
    }
    if let Some(ca) = &auth.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    options
        // A comma-separated list names several nodes of one cluster: async-nats would parse the
        // whole string as a single address.
        .connect(
            url.expose_secret()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>(),
        )
        .await
        .map_err(|e| BusError::Connect(e.kind().to_string()))
}

/// A JetStream context whose publish acks time out quickly enough for the relay to notice an
/// outage and retry from its saved cursor.
pub fn jetstream(client: async_nats::Client) -> async_nats::jetstream::Context {
    async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(client)
}
