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

    /// Refreshes in flight per refresher process (capped at a third of HK_DB_MAX_CONNECTIONS,
    /// since each refresh holds a lock session and a working connection).
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

    // --- dashboard and access (issue 6) ---
    /// Where users reach Hubkeeper, e.g. `https://hubkeeper.example.com`. Its scheme decides
    /// whether session cookies are `Secure` (unset: Secure except on localhost), and `up` prints
    /// the dashboard link from it.
    #[arg(long, env = "HK_PUBLIC_URL", global = true, value_parser = public_url)]
    pub public_url: Option<url::Url>,

    /// Lifetime of a dashboard session (from login), in seconds.
    #[arg(
        long,
        env = "HK_SESSION_TTL_SECS",
        default_value_t = 28_800,
        global = true
    )]
    pub session_ttl_secs: u64,

    /// An admin API key (`hk_<id>_<secret>`) that `up` installs instead of generating one, e.g.
    /// from a deployment's secret store.
    #[arg(long, env = "HK_BOOTSTRAP_ADMIN_KEY", global = true, value_parser = secret, hide_env_values = true)]
    pub bootstrap_admin_key: Option<SecretString>,
    // --- end: issue 6 ---

    // --- tokens, apps, OAuth install flow (issue 4) ---
    /// Master keys that wrap the per-tenant data keys, `kid:<base64 of 32 bytes>,…` (generate
    /// one with `hubkeeper keys generate`). Required by the API and the refreshers; `up`
    /// generates a development key when unset.
    #[arg(long, env = "HK_MASTER_KEYS", global = true, value_parser = secret, hide_env_values = true)]
    pub master_keys: Option<SecretString>,

    /// Id of the master key that wraps new data keys (default: the last one listed). Point it at
    /// a newly added key, then run `hubkeeper keys rotate`.
    #[arg(long, env = "HK_ACTIVE_KEY_ID", global = true)]
    pub active_key_id: Option<String>,

    /// Seconds a handed-out access token is guaranteed to stay valid (unless the caller asks
    /// for another margin).
    #[arg(
        long,
        env = "HK_TOKEN_MIN_VALIDITY_SECS",
        default_value_t = 300,
        global = true
    )]
    pub token_min_validity_secs: u64,

    /// Longest time a process serves a cached access token without re-reading Postgres.
    #[arg(
        long,
        env = "HK_TOKEN_CACHE_MAX_AGE_SECS",
        default_value_t = 60,
        global = true
    )]
    pub token_cache_max_age_secs: u64,

    /// Longest wait for another process's refresh of the same installation, in seconds.
    #[arg(
        long,
        env = "HK_REFRESH_LOCK_TIMEOUT_SECS",
        default_value_t = 30,
        global = true
    )]
    pub refresh_lock_timeout_secs: u64,

    /// Key that signs OAuth `state` values (any length). Unset: a random key kept sealed in
    /// the database, shared by every process.
    #[arg(long, env = "HK_STATE_SECRET", global = true, value_parser = secret, hide_env_values = true)]
    pub state_secret: Option<SecretString>,

    /// OAuth install/callback requests allowed per client IP and window.
    #[arg(
        long,
        env = "HK_OAUTH_RATE_LIMIT_MAX",
        default_value_t = 10,
        global = true
    )]
    pub oauth_rate_limit_max: u32,

    /// Length of the OAuth rate-limit window, in seconds.
    #[arg(
        long,
        env = "HK_OAUTH_RATE_LIMIT_WINDOW_SECS",
        default_value_t = 60,
        global = true
    )]
    pub oauth_rate_limit_window_secs: u64,

    /// HubSpot API base URL (token, introspection, CRM); the simulator's URL in development.
    #[arg(
        long,
        env = "HK_HUBSPOT_API_URL",
        default_value = "https://api.hubapi.com",
        global = true
    )]
    pub hubspot_api_url: url::Url,

    /// HubSpot app base URL (the consent page); the simulator's URL in development.
    #[arg(
        long,
        env = "HK_HUBSPOT_APP_URL",
        default_value = "https://app.hubspot.com",
        global = true
    )]
    pub hubspot_app_url: url::Url,
    // --- end: issue 4 ---

    // --- projections, webhooks, dead letters (issue 5) ---
    /// Events a projector applies per transaction.
    #[arg(
        long,
        env = "HK_PROJECTOR_BATCH_SIZE",
        default_value_t = 256,
        global = true
    )]
    pub projector_batch_size: usize,

    /// Deliveries of an event before the projector dead-letters it.
    #[arg(
        long,
        env = "HK_PROJECTOR_MAX_DELIVER",
        default_value_t = 60,
        global = true
    )]
    pub projector_max_deliver: i64,

    /// Seconds before an event whose projector died is redelivered.
    #[arg(
        long,
        env = "HK_PROJECTOR_ACK_WAIT_SECS",
        default_value_t = 30,
        global = true
    )]
    pub projector_ack_wait_secs: u64,

    /// Largest webhook request body accepted (413 above).
    #[arg(
        long,
        env = "HK_WEBHOOK_MAX_BODY_BYTES",
        default_value_t = 524_288,
        global = true
    )]
    pub webhook_max_body_bytes: usize,

    /// Oldest v3 webhook signature timestamp accepted, in seconds (HubSpot: 5 minutes).
    #[arg(
        long,
        env = "HK_WEBHOOK_MAX_AGE_SECS",
        default_value_t = 300,
        global = true
    )]
    pub webhook_max_age_secs: u64,

    /// Webhook batches processed at once per webhook worker process.
    #[arg(
        long,
        env = "HK_WEBHOOK_CONCURRENCY",
        default_value_t = 8,
        global = true
    )]
    pub webhook_concurrency: usize,

    /// Deliveries of a webhook batch before it is dead-lettered.
    #[arg(
        long,
        env = "HK_WEBHOOK_MAX_DELIVER",
        default_value_t = 10,
        global = true
    )]
    pub webhook_max_deliver: i64,

    /// Delays before retrying a failed webhook batch, in milliseconds, comma-separated.
    #[arg(long, env = "HK_WEBHOOK_BACKOFF_MS", default_value = "1000,5000,15000,60000,300000", global = true, value_parser = millis_list)]
    pub webhook_backoff: MillisList,

    /// Seconds before a webhook batch whose worker died is redelivered.
    #[arg(
        long,
        env = "HK_WEBHOOK_ACK_WAIT_SECS",
        default_value_t = 30,
        global = true
    )]
    pub webhook_ack_wait_secs: u64,

    /// How long verified webhook events stay on `hk.webhooks.>` for the app's consumers, in
    /// seconds.
    #[arg(
        long,
        env = "HK_WEBHOOK_EVENTS_MAX_AGE_SECS",
        default_value_t = 604_800,
        global = true
    )]
    pub webhook_events_max_age_secs: u64,

    /// "Expiring soon" on the overview: active tokens expiring within this many seconds.
    #[arg(
        long,
        env = "HK_OVERVIEW_EXPIRING_WITHIN_SECS",
        default_value_t = 600,
        global = true
    )]
    pub overview_expiring_within_secs: i64,
    // --- end: issue 5 ---

    // --- pricing, billing, settings, backups (issue 7) ---
    /// Directory of database backups (`hubkeeper backup`, the schedule, the Settings page).
    /// Default: `backups` inside the data directory.
    #[arg(long, env = "HK_BACKUP_DIR", global = true)]
    pub backup_dir: Option<PathBuf>,

    /// Directory holding `pg_dump` and `pg_restore` (and, for `up`, `initdb`). Default: the
    /// newest `/usr/lib/postgresql/<version>/bin`, else `PATH`.
    #[arg(long, env = "HK_PG_BIN_DIR", global = true)]
    pub pg_bin_dir: Option<PathBuf>,

    /// Seconds between re-reads of the runtime settings from the store, in case a broadcast
    /// on the control channel was missed.
    #[arg(
        long,
        env = "HK_SETTINGS_RESYNC_SECS",
        default_value_t = 60,
        global = true
    )]
    pub settings_resync_secs: u64,
    // --- end: issue 7 ---
}

fn public_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected http(s)://host[:port]".into());
    }
    Ok(url)
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
