//! Configuration: every setting is a command-line flag and an environment variable (a `.env` file
//! is read too). docs/configuration.md lists them all. Secrets (URLs that may carry passwords)
//! are wrapped so `Debug` cannot print them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use hubkeeper_telemetry::LogFormat;
use secrecy::SecretString;

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Postgres URL. Unset under `up`: a local Postgres is started in the data directory.
    #[arg(long, env = "DATABASE_URL", global = true, value_parser = secret, hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// NATS URL. Unset under `up`: a local nats-server with JetStream is started.
    #[arg(long, env = "NATS_URL", global = true, value_parser = secret, hide_env_values = true)]
    pub nats_url: Option<SecretString>,

    /// Address the HTTP API listens on.
    #[arg(long, env = "HK_BIND", default_value = "127.0.0.1:8080", global = true)]
    pub bind: SocketAddr,

    /// Address a worker-only process serves /healthz, /readyz and /metrics on (off when unset).
    #[arg(long, env = "HK_METRICS_BIND", global = true)]
    pub metrics_bind: Option<SocketAddr>,

    /// Where `up` keeps local state (Postgres cluster, NATS store, installed tools).
    #[arg(long, env = "HK_DATA_DIR", default_value = ".hubkeeper", global = true)]
    pub data_dir: PathBuf,

    /// Log format: `pretty` or `json`.
    #[arg(long, env = "HK_LOG_FORMAT", default_value = "pretty", global = true)]
    pub log_format: LogFormat,

    /// Log filter, RUST_LOG syntax.
    #[arg(long = "log", env = "HK_LOG", default_value = "info", global = true)]
    pub log_filter: String,

    /// Maximum Postgres connections per process.
    #[arg(
        long,
        env = "HK_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub db_max_connections: u32,

    /// JetStream replicas per stream (3 on a 3-node cluster).
    #[arg(long, env = "HK_NATS_REPLICAS", default_value_t = 1, global = true)]
    pub nats_replicas: usize,

    /// JetStream duplicate window for relayed events, in seconds.
    #[arg(
        long,
        env = "HK_NATS_DUPLICATE_WINDOW_SECS",
        default_value_t = 120,
        global = true
    )]
    pub nats_duplicate_window_secs: u64,

    /// Relay batch size (events per read and publish round).
    #[arg(
        long,
        env = "HK_RELAY_BATCH_SIZE",
        default_value_t = 1000,
        global = true
    )]
    pub relay_batch_size: i64,

    /// Port of the local Postgres that `up` starts (a free one if taken).
    #[arg(long, env = "HK_LOCAL_PG_PORT", default_value_t = 54329, global = true)]
    pub local_pg_port: u16,

    /// Port of the local nats-server that `up` starts (a free one if taken).
    #[arg(
        long,
        env = "HK_LOCAL_NATS_PORT",
        default_value_t = 44222,
        global = true
    )]
    pub local_nats_port: u16,

    /// Refresh access tokens that expire within this many seconds (scheduler and refreshers).
    #[arg(
        long,
        env = "HK_REFRESH_LEAD_SECS",
        default_value_t = 600,
        global = true
    )]
    pub refresh_lead_secs: u64,

    /// How often the active scheduler looks for tokens to refresh, in milliseconds.
    #[arg(
        long,
        env = "HK_SCHEDULER_TICK_MS",
        default_value_t = 5000,
        global = true
    )]
    pub scheduler_tick_ms: u64,

    /// Refresh an installation not refreshed for this many seconds, even with a valid token.
    #[arg(
        long,
        env = "HK_REFRESH_IDLE_AFTER_SECS",
        default_value_t = 604_800,
        global = true
    )]
    pub refresh_idle_after_secs: u64,

    /// Refreshes in flight per refresher process.
    #[arg(
        long,
        env = "HK_REFRESHER_CONCURRENCY",
        default_value_t = 32,
        global = true
    )]
    pub refresher_concurrency: usize,

    /// Deliveries of a refresh command before it is dead-lettered.
    #[arg(
        long,
        env = "HK_REFRESHER_MAX_DELIVER",
        default_value_t = 6,
        global = true
    )]
    pub refresher_max_deliver: i64,

    /// Delays before redelivering a failed refresh, in milliseconds, comma-separated.
    #[arg(long, env = "HK_REFRESHER_BACKOFF_MS", default_value = "2000,10000,30000,60000,120000", global = true, value_parser = millis_list)]
    pub refresher_backoff: MillisList,

    /// Seconds before a refresh command whose worker died is redelivered.
    #[arg(
        long,
        env = "HK_REFRESHER_ACK_WAIT_SECS",
        default_value_t = 60,
        global = true
    )]
    pub refresher_ack_wait_secs: u64,
}

/// A list of durations given in milliseconds.
#[derive(Debug, Clone)]
pub struct MillisList(pub Vec<std::time::Duration>);

fn millis_list(raw: &str) -> Result<MillisList, String> {
    let list = raw
        .split(',')
        .map(|part| {
            part.trim()
                .parse::<u64>()
                .map(std::time::Duration::from_millis)
                .map_err(|_| format!("`{part}` is not a number of milliseconds"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        return Err("give at least one delay".into());
    }
    Ok(MillisList(list))
}

fn secret(raw: &str) -> Result<SecretString, String> {
    if raw.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(SecretString::from(raw.to_owned()))
}
