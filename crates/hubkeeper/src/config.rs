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
}

fn secret(raw: &str) -> Result<SecretString, String> {
    if raw.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(SecretString::from(raw.to_owned()))
}
