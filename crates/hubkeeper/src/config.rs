//! Configuration: every setting is a command-line flag and an environment variable (a `.env` file
//! is read too). docs/configuration.md lists them all. Secrets (URLs that may carry passwords)
//! are wrapped so `Debug` cannot print them.
//!
//! Settings come in areas (Postgres, NATS, tokens, the refresher, …), one struct each. A
//! subcommand flattens only the areas it uses, so `hubkeeper <command> --help` shows what that
//! command reads; the areas a command does not take on its command line keep their values from
//! the environment and defaults, exactly as before the split (the process code always receives a
//! whole [`Config`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches};
use hubkeeper_telemetry::LogFormat;
use secrecy::SecretString;

/// Logging, read by every subcommand.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log format: `pretty` or `json`.
    #[arg(long, env = "HK_LOG_FORMAT", default_value = "pretty", global = true)]
    pub log_format: LogFormat,

    /// Log filter, RUST_LOG syntax.
    #[arg(long = "log", env = "HK_LOG", default_value = "info", global = true)]
    pub log_filter: String,
}

/// The event store and read models.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Postgres")]
pub struct StoreArgs {
    /// Postgres URL. Unset under `up`: a local Postgres is started in the data directory.
    #[arg(long, env = "DATABASE_URL", value_parser = secret, hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// Maximum Postgres connections per process [default: 16 in a process that runs the
    /// refresher, otherwise 2 per CPU core, at least 4].
    #[arg(long, env = "HK_DB_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub db_max_connections: Option<u32>,
}

impl StoreArgs {
    /// The pool size of a process that runs the refresher or not: `HK_DB_MAX_CONNECTIONS` when
    /// set, else [`default_db_max_connections`].
    pub fn max_connections(&self, runs_refresher: bool) -> u32 {
        self.db_max_connections
            .unwrap_or_else(|| default_db_max_connections(runs_refresher))
    }
}

/// Postgres does its best work with a few busy connections per core: beyond that, statements
/// only queue for CPU inside it, and a backend preempted while it holds a WAL lock stalls every
/// commit behind it. On the 2-core machine of docs/performance.md, with everything co-located,
/// an API with 16 connections gave relay and projector lag tails 2 to 3 times those of 4, at
/// about the same commands per second. So: 2 per CPU core, at least 4. A refresher is the
/// exception: each refresh in flight holds a session for its lock while HubSpot answers, so a
/// process that runs one keeps 16 (a third of them in flight, see `refresher_config`).
pub fn default_db_max_connections(runs_refresher: bool) -> u32 {
    if runs_refresher {
        return 16;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    u32::try_from(cores.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .max(4)
}

/// JetStream: the event stream, the work queues, the control channel.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "NATS")]
pub struct NatsArgs {
    /// NATS URL. Unset under `up`: a local nats-server with JetStream is started.
    #[arg(long, env = "NATS_URL", value_parser = secret, hide_env_values = true)]
    pub nats_url: Option<SecretString>,

    /// JetStream replicas per stream (3 on a 3-node cluster).
    #[arg(long, env = "HK_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,

    /// JetStream duplicate window for relayed events, in seconds (or with a unit: 2m).
    #[arg(
        long = "nats-duplicate-window-secs",
        env = "HK_NATS_DUPLICATE_WINDOW_SECS",
        default_value = "120",
        value_parser = seconds
    )]
    pub nats_duplicate_window: Duration,

    /// NATS user of this process: its role's (`api`, `relay`, `scheduler`, `refresher`,
    /// `projector`, `webhooks`), or `all` for a process running several roles and for the
    /// command-line tools. Unset: no authentication. Under `up` (local nats-server) it is set.
    #[arg(long, env = "HK_NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,

    /// Password of `HK_NATS_USER`.
    #[arg(long, env = "HK_NATS_PASSWORD", value_parser = secret, hide_env_values = true)]
    pub nats_password: Option<SecretString>,

    /// CA certificate (PEM) that signed the NATS server's certificate: connections then require
    /// TLS (use `tls://` URLs). Unset: the system roots, and TLS only for `tls://` URLs.
    #[arg(long, env = "HK_NATS_TLS_CA")]
    pub nats_tls_ca: Option<std::path::PathBuf>,
}

impl NatsArgs {
    /// The credentials of this process.
    pub fn auth(&self) -> hubkeeper_bus::NatsAuth {
        hubkeeper_bus::NatsAuth {
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            tls_ca: self.nats_tls_ca.clone(),
        }
    }
}

/// The HTTP API's listener and public address.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpArgs {
    /// Address the HTTP API listens on.
    #[arg(long, env = "HK_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Where users reach Hubkeeper, e.g. `https://hubkeeper.example.com`. Its scheme decides
    /// whether session cookies are `Secure` (unset: Secure except on localhost), and `up` prints
    /// the dashboard link from it.
    #[arg(long, env = "HK_PUBLIC_URL", value_parser = public_url)]
    pub public_url: Option<url::Url>,

    /// How often a live stream (the activity stream) re-checks its session or key; it ends once
    /// they are gone (logout, expiry, revocation). Seconds, or with a unit.
    #[arg(
        long = "stream-recheck-secs",
        env = "HK_STREAM_RECHECK_SECS",
        default_value = "30",
        value_parser = seconds
    )]
    pub stream_recheck: Duration,

    /// On SIGTERM, how long open requests may still take before the API stops anyway. Seconds,
    /// or with a unit.
    #[arg(
        long = "shutdown-deadline-secs",
        env = "HK_SHUTDOWN_DEADLINE_SECS",
        default_value = "10",
        value_parser = seconds
    )]
    pub shutdown_deadline: Duration,

    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` headers are believed (CIDR list,
    /// e.g. `10.0.0.0/8,fd00::/8`; a bare address is that address). The client is the rightmost
    /// hop that is not one of them; from any other peer the headers are ignored. Unset: the
    /// TCP peer is the client.
    #[arg(long, env = "HK_TRUSTED_PROXIES", value_parser = trusted_proxies, default_value = "")]
    pub trusted_proxies: TrustedProxyList,

    /// `/auth/login` attempts allowed per client (address, IPv6 /64) and window, shared by every
    /// API process.
    #[arg(long, env = "HK_LOGIN_RATE_LIMIT_MAX", default_value_t = 20)]
    pub login_rate_limit_max: u32,

    /// Length of the log-in rate-limit window, in seconds.
    #[arg(
        long = "login-rate-limit-window-secs",
        env = "HK_LOGIN_RATE_LIMIT_WINDOW_SECS",
        default_value = "60",
        value_parser = seconds
    )]
    pub login_rate_limit_window: Duration,
}

/// The validated `HK_TRUSTED_PROXIES`.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxyList(pub hubkeeper_api::client_addr::TrustedProxies);

fn trusted_proxies(raw: &str) -> Result<TrustedProxyList, SettingError> {
    hubkeeper_api::client_addr::TrustedProxies::parse(raw)
        .map(TrustedProxyList)
        .map_err(SettingError::NotACidrList)
}

/// The HubSpot API proxy (`/v1/proxy/{installation}/{path}`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HubSpot API proxy")]
pub struct ProxyArgs {
    /// Proxied calls allowed per HubSpot portal and window, across every API process
    /// (HubSpot's limit for OAuth apps: 110 per 10 s).
    #[arg(long, env = "HK_PROXY_RATE_LIMIT_MAX", default_value_t = 110)]
    pub proxy_rate_limit_max: u32,

    /// Length of the per-portal window (a plain number counts in seconds; `ms` allowed).
    #[arg(
        long = "proxy-rate-limit-window",
        env = "HK_PROXY_RATE_LIMIT_WINDOW",
        default_value = "10s",
        value_parser = seconds
    )]
    pub proxy_rate_limit_window: Duration,

    /// Added to the window when slots are reserved, so network jitter between two calls cannot
    /// put one call too many into one of HubSpot's windows (a plain number counts in ms).
    #[arg(
        long = "proxy-rate-limit-guard",
        env = "HK_PROXY_RATE_LIMIT_GUARD",
        default_value = "250ms",
        value_parser = millis
    )]
    pub proxy_rate_limit_guard: Duration,

    /// Longest a proxied call waits for a slot before it is answered 429 with `Retry-After`
    /// (a plain number counts in seconds).
    #[arg(
        long = "proxy-max-wait",
        env = "HK_PROXY_MAX_WAIT",
        default_value = "20s",
        value_parser = seconds
    )]
    pub proxy_max_wait: Duration,

    /// Timeout of one call to HubSpot (a plain number counts in seconds).
    #[arg(
        long = "proxy-timeout",
        env = "HK_PROXY_TIMEOUT",
        default_value = "30s",
        value_parser = seconds
    )]
    pub proxy_timeout: Duration,
}

/// A worker-only process's own health and metrics listener.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Worker health")]
pub struct MetricsArgs {
    /// Address a worker-only process serves /healthz, /readyz and /metrics on (off when unset).
    #[arg(long, env = "HK_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
}

/// Local state on disk.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Local state")]
pub struct DataDirArgs {
    /// Where `up` keeps local state (Postgres cluster, NATS store, installed tools); the default
    /// parent of the backup directory.
    #[arg(long, env = "HK_DATA_DIR", default_value = ".hubkeeper")]
    pub data_dir: PathBuf,
}

/// The servers `up` starts when no URLs are given.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Local servers (up)")]
pub struct LocalServerArgs {
    /// Port of the local Postgres that `up` starts (a free one if taken).
    #[arg(long, env = "HK_LOCAL_PG_PORT", default_value_t = 54329)]
    pub local_pg_port: u16,

    /// Port of the local nats-server that `up` starts (a free one if taken).
    #[arg(long, env = "HK_LOCAL_NATS_PORT", default_value_t = 44222)]
    pub local_nats_port: u16,
}

/// Master keys of the token vault.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Master keys")]
pub struct KeyArgs {
    /// Master keys that wrap the per-tenant data keys, `kid:<base64 of 32 bytes>,…` (generate
    /// one with `hubkeeper keys generate`). Required by the API and the refreshers; `up`
    /// generates a development key when unset.
    #[arg(long, env = "HK_MASTER_KEYS", value_parser = secret, hide_env_values = true)]
    pub master_keys: Option<SecretString>,

    /// Id of the master key that wraps new data keys (default: the last one listed). Point it at
    /// a newly added key, then run `hubkeeper keys rotate`.
    #[arg(long, env = "HK_ACTIVE_KEY_ID")]
    pub active_key_id: Option<String>,
}

/// The first admin key of a deployment.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Admin key")]
pub struct BootstrapKeyArgs {
    /// An admin API key (`hk_<id>_<secret>`) that `up` and `migrate` install instead of `up`
    /// generating one, e.g. from a deployment's secret store.
    #[arg(long, env = "HK_BOOTSTRAP_ADMIN_KEY", value_parser = secret, hide_env_values = true)]
    pub bootstrap_admin_key: Option<SecretString>,
}

/// Handing out and refreshing access tokens.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Tokens")]
pub struct TokenArgs {
    /// Refresh access tokens that expire within this many seconds (scheduler and refreshers).
    #[arg(
        long = "refresh-lead-secs",
        env = "HK_REFRESH_LEAD_SECS",
        default_value = "600",
        value_parser = seconds
    )]
    pub refresh_lead: Duration,

    /// Seconds a handed-out access token is guaranteed to stay valid (unless the caller asks
    /// for another margin). Must be below the 1800 s HubSpot issues access tokens for.
    #[arg(
        long = "token-min-validity-secs",
        env = "HK_TOKEN_MIN_VALIDITY_SECS",
        default_value = "300",
        value_parser = min_validity
    )]
    pub token_min_validity: Duration,

    /// Seconds after a failed refresh during which a hand-out answers from that failure
    /// instead of asking HubSpot again (0 disables).
    #[arg(
        long = "token-failure-cache-secs",
        env = "HK_TOKEN_FAILURE_CACHE_SECS",
        default_value = "5",
        value_parser = seconds
    )]
    pub token_failure_cache: Duration,

    /// Longest time a process serves a cached access token without re-reading Postgres, in
    /// seconds.
    #[arg(
        long = "token-cache-max-age-secs",
        env = "HK_TOKEN_CACHE_MAX_AGE_SECS",
        default_value = "60",
        value_parser = seconds
    )]
    pub token_cache_max_age: Duration,

    /// Longest wait for another process's refresh of the same installation, in seconds.
    #[arg(
        long = "refresh-lock-timeout-secs",
        env = "HK_REFRESH_LOCK_TIMEOUT_SECS",
        default_value = "30",
        value_parser = seconds
    )]
    pub refresh_lock_timeout: Duration,

    /// Shortest notice, in seconds, a revoke or disconnect scheduled ahead may give the app
    /// (`notice_secs` below it is refused). At most 30 days is accepted whatever this says.
    #[arg(
        long = "removal-min-notice-secs",
        env = "HK_REMOVAL_MIN_NOTICE_SECS",
        default_value = "60",
        value_parser = seconds
    )]
    pub removal_min_notice: Duration,

    /// Seconds between the refresher role's looks for scheduled revokes and disconnects that
    /// are due (how late one may be carried out).
    #[arg(
        long = "removal-poll-secs",
        env = "HK_REMOVAL_POLL_SECS",
        default_value = "15",
        value_parser = seconds
    )]
    pub removal_poll: Duration,
}

/// The OAuth install flow.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "OAuth install flow")]
pub struct OAuthArgs {
    /// Key that signs OAuth `state` values (any length). Unset: a random key kept sealed in
    /// the database, shared by every process.
    #[arg(long, env = "HK_STATE_SECRET", value_parser = secret, hide_env_values = true)]
    pub state_secret: Option<SecretString>,

    /// OAuth install/callback requests allowed per client IP and window.
    #[arg(long, env = "HK_OAUTH_RATE_LIMIT_MAX", default_value_t = 10)]
    pub oauth_rate_limit_max: u32,

    /// Length of the OAuth rate-limit window, in seconds.
    #[arg(
        long = "oauth-rate-limit-window-secs",
        env = "HK_OAUTH_RATE_LIMIT_WINDOW_SECS",
        default_value = "60",
        value_parser = seconds
    )]
    pub oauth_rate_limit_window: Duration,
}

/// Where HubSpot is.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HubSpot")]
pub struct HubSpotArgs {
    /// HubSpot API base URL (token, introspection, CRM); the simulator's URL in development.
    #[arg(
        long,
        env = "HK_HUBSPOT_API_URL",
        default_value = "https://api.hubapi.com"
    )]
    pub hubspot_api_url: url::Url,

    /// HubSpot app base URL (the consent page); the simulator's URL in development.
    #[arg(
        long,
        env = "HK_HUBSPOT_APP_URL",
        default_value = "https://app.hubspot.com"
    )]
    pub hubspot_app_url: url::Url,
}

/// The relay (event store to JetStream).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Relay")]
pub struct RelayArgs {
    /// Relay batch size (events per read and publish round).
    #[arg(long, env = "HK_RELAY_BATCH_SIZE", default_value_t = 1000)]
    pub relay_batch_size: i64,
}

/// The refresh scheduler.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Scheduler")]
pub struct ScheduleArgs {
    /// How often the active scheduler looks for tokens to refresh, in milliseconds (or with a
    /// unit: 5s).
    #[arg(
        long = "scheduler-tick-ms",
        env = "HK_SCHEDULER_TICK_MS",
        default_value = "5000",
        value_parser = millis
    )]
    pub scheduler_tick: Duration,

    /// Refresh an installation not refreshed for this many seconds, even with a valid token.
    #[arg(
        long = "refresh-idle-after-secs",
        env = "HK_REFRESH_IDLE_AFTER_SECS",
        default_value = "604800",
        value_parser = seconds
    )]
    pub refresh_idle_after: Duration,
}

/// The refreshers.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Refresher")]
pub struct RefresherArgs {
    /// Refreshes in flight per refresher process (capped at a third of HK_DB_MAX_CONNECTIONS,
    /// since each refresh holds a lock session and a working connection).
    #[arg(long, env = "HK_REFRESHER_CONCURRENCY", default_value_t = 32)]
    pub refresher_concurrency: usize,

    /// Deliveries of a refresh command before it is dead-lettered.
    #[arg(long, env = "HK_REFRESHER_MAX_DELIVER", default_value_t = 6)]
    pub refresher_max_deliver: i64,

    /// Delays before redelivering a failed refresh, in milliseconds, comma-separated.
    #[arg(
        long = "refresher-backoff-ms",
        env = "HK_REFRESHER_BACKOFF_MS",
        default_value = "2000,10000,30000,60000,120000",
        value_parser = millis_list
    )]
    pub refresher_backoff: DurationList,

    /// Seconds before a refresh command whose worker died is redelivered.
    #[arg(
        long = "refresher-ack-wait-secs",
        env = "HK_REFRESHER_ACK_WAIT_SECS",
        default_value = "60",
        value_parser = seconds
    )]
    pub refresher_ack_wait: Duration,
}

/// The read-model projectors.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Projector")]
pub struct ProjectorArgs {
    /// Events a projector applies per transaction.
    #[arg(long, env = "HK_PROJECTOR_BATCH_SIZE", default_value_t = 256)]
    pub projector_batch_size: usize,

    /// Deliveries of an event before the projector dead-letters it.
    #[arg(long, env = "HK_PROJECTOR_MAX_DELIVER", default_value_t = 60)]
    pub projector_max_deliver: i64,

    /// Seconds before an event whose projector died is redelivered.
    #[arg(
        long = "projector-ack-wait-secs",
        env = "HK_PROJECTOR_ACK_WAIT_SECS",
        default_value = "30",
        value_parser = seconds
    )]
    pub projector_ack_wait: Duration,
}

/// The notifier: deliveries of notifications to the apps' endpoints.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Notifier")]
pub struct NotifierArgs {
    /// Deliveries in flight per notifier process.
    #[arg(long, env = "HK_NOTIFIER_CONCURRENCY", default_value_t = 32)]
    pub notifier_concurrency: usize,

    /// Events turned into deliveries at once per notifier process.
    #[arg(long, env = "HK_NOTIFIER_FANOUT_CONCURRENCY", default_value_t = 8)]
    pub notifier_fanout_concurrency: usize,

    /// Delays before the second, third, ... delivery attempt, in milliseconds, comma-separated
    /// (each drawn within the jitter either side); attempts are one more than the delays. The
    /// default retries for about 24 hours.
    #[arg(
        long = "notifier-backoff-ms",
        env = "HK_NOTIFIER_BACKOFF_MS",
        default_value = "5000,30000,120000,600000,1800000,3600000,7200000,14400000,28800000,28800000",
        value_parser = millis_list
    )]
    pub notifier_backoff: DurationList,

    /// Fraction of each retry delay drawn at random either side of it (0 to 1).
    #[arg(long, env = "HK_NOTIFIER_JITTER", default_value_t = 0.2)]
    pub notifier_jitter: f64,

    /// Seconds to wait for a receiver's answer.
    #[arg(
        long = "notifier-timeout-secs",
        env = "HK_NOTIFIER_TIMEOUT_SECS",
        default_value = "15",
        value_parser = seconds
    )]
    pub notifier_timeout: Duration,

    /// Seconds before a delivery whose notifier died is attempted again (at least the timeout
    /// plus 5 s).
    #[arg(
        long = "notifier-ack-wait-secs",
        env = "HK_NOTIFIER_ACK_WAIT_SECS",
        default_value = "60",
        value_parser = seconds
    )]
    pub notifier_ack_wait: Duration,

    /// Longest `Retry-After` of a 429 honoured as asked, in seconds (longer waits are cut).
    #[arg(
        long = "notifier-max-retry-after-secs",
        env = "HK_NOTIFIER_MAX_RETRY_AFTER_SECS",
        default_value = "21600",
        value_parser = seconds
    )]
    pub notifier_max_retry_after: Duration,
}

/// Receiving webhooks (the API's side).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Webhook intake")]
pub struct WebhookIngestArgs {
    /// Largest webhook request body accepted (413 above).
    #[arg(long, env = "HK_WEBHOOK_MAX_BODY_BYTES", default_value_t = 524_288)]
    pub webhook_max_body_bytes: usize,

    /// Oldest v3 webhook signature timestamp accepted, in seconds (HubSpot: 5 minutes).
    #[arg(
        long = "webhook-max-age-secs",
        env = "HK_WEBHOOK_MAX_AGE_SECS",
        default_value = "300",
        value_parser = seconds
    )]
    pub webhook_max_age: Duration,

    /// How long verified webhook events stay on `hk.webhooks.>` for the app's consumers, in
    /// seconds.
    #[arg(
        long = "webhook-events-max-age-secs",
        env = "HK_WEBHOOK_EVENTS_MAX_AGE_SECS",
        default_value = "604800",
        value_parser = seconds
    )]
    pub webhook_events_max_age: Duration,

    /// Webhook requests that fail verification (unknown app, bad signature) allowed per client
    /// (address, IPv6 /64) and window, shared by every API process; beyond: 429.
    #[arg(long, env = "HK_WEBHOOK_FAILURE_LIMIT_MAX", default_value_t = 60)]
    pub webhook_failure_limit_max: u32,

    /// Length of the webhook failure-limit window, in seconds.
    #[arg(
        long = "webhook-failure-limit-window-secs",
        env = "HK_WEBHOOK_FAILURE_LIMIT_WINDOW_SECS",
        default_value = "60",
        value_parser = seconds
    )]
    pub webhook_failure_limit_window: Duration,
}

/// Processing stored webhook batches (the worker's side).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Webhook worker")]
pub struct WebhookWorkerArgs {
    /// Webhook batches processed at once per webhook worker process.
    #[arg(long, env = "HK_WEBHOOK_CONCURRENCY", default_value_t = 8)]
    pub webhook_concurrency: usize,

    /// Deliveries of a webhook batch before it is dead-lettered.
    #[arg(long, env = "HK_WEBHOOK_MAX_DELIVER", default_value_t = 10)]
    pub webhook_max_deliver: i64,

    /// Delays before retrying a failed webhook batch, in milliseconds, comma-separated.
    #[arg(
        long = "webhook-backoff-ms",
        env = "HK_WEBHOOK_BACKOFF_MS",
        default_value = "1000,5000,15000,60000,300000",
        value_parser = millis_list
    )]
    pub webhook_backoff: DurationList,

    /// Seconds before a webhook batch whose worker died is redelivered.
    #[arg(
        long = "webhook-ack-wait-secs",
        env = "HK_WEBHOOK_ACK_WAIT_SECS",
        default_value = "30",
        value_parser = seconds
    )]
    pub webhook_ack_wait: Duration,

    /// How long processed webhook events are remembered for deduplication, in seconds (default
    /// 7 days); older rows of `webhook_events_seen` are pruned hourly by the maintenance leader.
    /// HubSpot retries a delivery for up to 3 days, so values below 4 days are raised to 4 days.
    #[arg(
        long = "webhook-seen-retention-secs",
        env = "HK_WEBHOOK_SEEN_RETENTION_SECS",
        default_value = "604800",
        value_parser = seconds
    )]
    pub webhook_seen_retention: Duration,
}

/// The dashboard.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Dashboard")]
pub struct DashboardArgs {
    /// Lifetime of a dashboard session (from login), in seconds.
    #[arg(
        long = "session-ttl-secs",
        env = "HK_SESSION_TTL_SECS",
        default_value = "28800",
        value_parser = seconds
    )]
    pub session_ttl: Duration,

    /// "Expiring soon" on the overview: active tokens expiring within this many seconds.
    #[arg(
        long = "overview-expiring-within-secs",
        env = "HK_OVERVIEW_EXPIRING_WITHIN_SECS",
        default_value = "600",
        value_parser = seconds
    )]
    pub overview_expiring_within: Duration,
}

/// Database backups.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Backups")]
pub struct BackupArgs {
    /// Directory of database backups (`hubkeeper backup`, the schedule, the Settings page).
    /// Default: `backups` inside the data directory.
    #[arg(long, env = "HK_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,

    /// Directory holding `pg_dump` and `pg_restore` (and, for `up`, `initdb`). Default: the
    /// newest `/usr/lib/postgresql/<version>/bin`, else `PATH`.
    #[arg(long, env = "HK_PG_BIN_DIR")]
    pub pg_bin_dir: Option<PathBuf>,
}

/// Runtime settings (the Settings page) as every process follows them.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Runtime settings")]
pub struct SettingsArgs {
    /// Seconds between re-reads of the runtime settings from the store, in case a broadcast
    /// on the control channel was missed.
    #[arg(
        long = "settings-resync-secs",
        env = "HK_SETTINGS_RESYNC_SECS",
        default_value = "60",
        value_parser = seconds
    )]
    pub settings_resync: Duration,
}

/// Every setting, by area: what the process code receives.
#[derive(Debug, Clone, Args)]
pub struct Config {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub data: DataDirArgs,
    #[command(flatten)]
    pub local: LocalServerArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub bootstrap: BootstrapKeyArgs,
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub oauth: OAuthArgs,
    #[command(flatten)]
    pub hubspot: HubSpotArgs,
    #[command(flatten)]
    pub proxy: ProxyArgs,
    #[command(flatten)]
    pub relay: RelayArgs,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    #[command(flatten)]
    pub refresher: RefresherArgs,
    #[command(flatten)]
    pub projector: ProjectorArgs,
    #[command(flatten)]
    pub webhook_ingest: WebhookIngestArgs,
    #[command(flatten)]
    pub webhook_worker: WebhookWorkerArgs,
    #[command(flatten)]
    pub notifier: NotifierArgs,
    #[command(flatten)]
    pub dashboard: DashboardArgs,
    #[command(flatten)]
    pub backups: BackupArgs,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

impl Config {
    /// Every area from the environment (and `.env`) and the defaults alone.
    pub fn from_environment() -> anyhow::Result<Self> {
        let command = Self::augment_args(clap::Command::new("hubkeeper").no_binary_name(true));
        let matches = command
            .try_get_matches_from(std::iter::empty::<String>())
            .map_err(|e| anyhow::anyhow!("invalid configuration in the environment: {e}"))?;
        Ok(Self::from_arg_matches(&matches)?)
    }
}

/// The settings one subcommand takes on its command line: a struct flattening those areas, and
/// its conversion into a whole [`Config`] (the other areas from the environment and defaults).
macro_rules! command_settings {
    ($(#[$meta:meta])* $name:ident { $($area:ident: $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Args)]
        pub struct $name {
            $(
                #[command(flatten)]
                pub $area: $ty,
            )*
        }

        impl $name {
            pub fn into_config(self) -> anyhow::Result<Config> {
                #[allow(unused_mut)]
                let mut config = Config::from_environment()?;
                $( config.$area = self.$area; )*
                Ok(config)
            }
        }
    };
}

command_settings! {
    /// `up`: every role in one process, and the local servers.
    UpSettings {
        store: StoreArgs, nats: NatsArgs, http: HttpArgs, data: DataDirArgs,
        local: LocalServerArgs, keys: KeyArgs, bootstrap: BootstrapKeyArgs, tokens: TokenArgs,
        oauth: OAuthArgs, hubspot: HubSpotArgs, proxy: ProxyArgs, relay: RelayArgs,
        schedule: ScheduleArgs,
        refresher: RefresherArgs, projector: ProjectorArgs, webhook_ingest: WebhookIngestArgs,
        webhook_worker: WebhookWorkerArgs, notifier: NotifierArgs, dashboard: DashboardArgs,
        backups: BackupArgs, settings: SettingsArgs,
    }
}

command_settings! {
    /// `api`: the HTTP API, the dashboard, webhook intake.
    ApiSettings {
        store: StoreArgs, nats: NatsArgs, http: HttpArgs, data: DataDirArgs, keys: KeyArgs,
        tokens: TokenArgs, oauth: OAuthArgs, hubspot: HubSpotArgs, proxy: ProxyArgs,
        webhook_ingest: WebhookIngestArgs, dashboard: DashboardArgs, backups: BackupArgs,
        settings: SettingsArgs,
    }
}

command_settings! {
    /// `worker <role>`: the background roles.
    WorkerSettings {
        store: StoreArgs, nats: NatsArgs, metrics: MetricsArgs, data: DataDirArgs,
        keys: KeyArgs, tokens: TokenArgs, hubspot: HubSpotArgs, relay: RelayArgs,
        schedule: ScheduleArgs, refresher: RefresherArgs, projector: ProjectorArgs,
        webhook_worker: WebhookWorkerArgs, notifier: NotifierArgs, backups: BackupArgs,
        settings: SettingsArgs,
    }
}

command_settings! {
    /// Commands that only read or write the database.
    StoreSettings { store: StoreArgs }
}

command_settings! {
    /// `migrate`: the schema, and the deployment's first admin key.
    MigrateSettings { store: StoreArgs, bootstrap: BootstrapKeyArgs }
}

command_settings! {
    /// Commands that read the database and JetStream.
    StoreAndNatsSettings { store: StoreArgs, nats: NatsArgs }
}

command_settings! {
    /// `keys`: the master keys and the data keys they wrap.
    KeySettings { store: StoreArgs, keys: KeyArgs }
}

command_settings! {
    /// `backup`: dumps the database.
    BackupSettings { store: StoreArgs, data: DataDirArgs, backups: BackupArgs }
}

command_settings! {
    /// `restore`: loads a dump and republishes the history.
    RestoreSettings { store: StoreArgs, nats: NatsArgs, backups: BackupArgs }
}

command_settings! {
    /// `selftest`: the token lifecycle against the configured HubSpot.
    SelftestSettings {
        store: StoreArgs, nats: NatsArgs, http: HttpArgs, keys: KeyArgs, tokens: TokenArgs,
        oauth: OAuthArgs, hubspot: HubSpotArgs,
    }
}

command_settings! {
    /// `doctor`: everything a deployment needs, checked.
    DoctorSettings {
        store: StoreArgs, nats: NatsArgs, data: DataDirArgs, keys: KeyArgs,
        hubspot: HubSpotArgs, backups: BackupArgs,
    }
}

command_settings! {
    /// `health`: the listener a process serves its readiness on.
    HealthSettings { http: HttpArgs, metrics: MetricsArgs }
}

#[cfg(feature = "bench")]
command_settings! {
    /// `bench`: where the tools are.
    BenchSettings { data: DataDirArgs }
}

/// `addr` as a client on this host reaches it: a listener on all interfaces over loopback.
pub fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let loopback: IpAddr = match addr.ip() {
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        };
        addr.set_ip(loopback);
    }
    addr
}

/// Why a setting's value was refused (clap prints it next to the setting's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("not a URL: {0}")]
    NotAUrl(#[from] url::ParseError),
    #[error("expected http(s)://host[:port]")]
    NotHttp,
    #[error("`{0}` is not a duration (a whole number, optionally with ms, s, m, h or d)")]
    NotADuration(String),
    #[error("unknown unit `{unit}` in `{raw}` (ms, s, m, h or d)")]
    UnknownUnit { unit: String, raw: String },
    #[error("`{0}` is too long a duration")]
    TooLong(String),
    #[error("give at least one delay")]
    NoDelays,
    #[error("must not be empty")]
    Empty,
    #[error("{0}")]
    NotACidrList(String),
    #[error(
        "{secs} s is not below the {lifetime} s HubSpot issues access tokens for: every hand-out \
         would refresh and still fail",
        lifetime = HUBSPOT_ACCESS_TOKEN_LIFETIME.as_secs()
    )]
    MinValidityTooLong { secs: u64 },
}

/// How long HubSpot's access tokens live (`expires_in: 1800`).
pub const HUBSPOT_ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(1800);

/// The default hand-out margin: a duration below the access-token lifetime.
fn min_validity(raw: &str) -> Result<Duration, SettingError> {
    let margin = seconds(raw)?;
    if margin >= HUBSPOT_ACCESS_TOKEN_LIFETIME {
        return Err(SettingError::MinValidityTooLong {
            secs: margin.as_secs(),
        });
    }
    Ok(margin)
}

fn public_url(raw: &str) -> Result<url::Url, SettingError> {
    let url = url::Url::parse(raw.trim())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(SettingError::NotHttp);
    }
    Ok(url)
}

/// A list of delays.
#[derive(Debug, Clone)]
pub struct DurationList(pub Vec<Duration>);

/// A duration: a plain number counts in `default_unit`; a number with a unit (`ms`, `s`, `m`,
/// `h`, `d`) counts in that unit.
fn duration_in(raw: &str, default_unit: Duration) -> Result<Duration, SettingError> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| SettingError::NotADuration(raw.to_owned()))?;
    let unit = match unit.trim() {
        "" => default_unit,
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" | "min" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "d" => Duration::from_secs(86_400),
        other => {
            return Err(SettingError::UnknownUnit {
                unit: other.to_owned(),
                raw: raw.to_owned(),
            })
        }
    };
    u32::try_from(number)
        .ok()
        .and_then(|n| unit.checked_mul(n))
        .ok_or_else(|| SettingError::TooLong(raw.to_owned()))
}

fn seconds(raw: &str) -> Result<Duration, SettingError> {
    duration_in(raw, Duration::from_secs(1))
}

fn millis(raw: &str) -> Result<Duration, SettingError> {
    duration_in(raw, Duration::from_millis(1))
}

fn millis_list(raw: &str) -> Result<DurationList, SettingError> {
    let list = raw
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(millis)
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        return Err(SettingError::NoDelays);
    }
    Ok(DurationList(list))
}

fn secret(raw: &str) -> Result<SecretString, SettingError> {
    if raw.trim().is_empty() {
        return Err(SettingError::Empty);
    }
    Ok(SecretString::from(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_min_validity_no_token_can_satisfy_is_refused() {
        assert_eq!(min_validity("300"), Ok(Duration::from_secs(300)));
        assert_eq!(min_validity("1799"), Ok(Duration::from_secs(1799)));
        assert_eq!(
            min_validity("1800"),
            Err(SettingError::MinValidityTooLong { secs: 1800 })
        );
        assert_eq!(
            min_validity("1h"),
            Err(SettingError::MinValidityTooLong { secs: 3600 })
        );
    }

    #[test]
    fn durations_default_to_their_unit_and_accept_explicit_ones() {
        assert_eq!(seconds("600"), Ok(Duration::from_secs(600)));
        assert_eq!(seconds(" 10m "), Ok(Duration::from_secs(600)));
        assert_eq!(seconds("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(seconds("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(millis("5000"), Ok(Duration::from_secs(5)));
        assert_eq!(millis("5s"), Ok(Duration::from_secs(5)));
        for bad in ["", "ten", "-5", "5 fortnights", "1.5s"] {
            assert!(seconds(bad).is_err(), "{bad:?} accepted");
        }
        let list = millis_list("1000, 5s,1m").unwrap();
        assert_eq!(
            list.0,
            [1, 5, 60].map(Duration::from_secs).to_vec(),
            "mixed units"
        );
        assert!(millis_list(" , ").is_err());
    }

    #[test]
    fn listeners_on_all_interfaces_are_reached_over_loopback() {
        let cases = [
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("[::]:9090", "[::1]:9090"),
            ("10.1.2.3:9090", "10.1.2.3:9090"),
        ];
        for (bound, reached) in cases {
            assert_eq!(reachable(bound.parse().unwrap()), reached.parse().unwrap());
        }
    }

    #[test]
    fn a_command_without_an_area_on_its_command_line_still_gets_its_defaults() {
        let config = StoreSettings {
            store: StoreArgs {
                database_url: None,
                db_max_connections: Some(3),
            },
        }
        .into_config()
        .unwrap();
        assert_eq!(config.store.max_connections(true), 3);
        assert_eq!(config.store.max_connections(false), 3);
        // Areas not on the command line come from the environment and the defaults; the test
        // environment sets none of these.
        assert_eq!(config.schedule.scheduler_tick, Duration::from_secs(5));
        assert_eq!(config.refresher.refresher_backoff.0.len(), 5);
    }

    #[test]
    fn the_default_pool_follows_the_cores_unless_the_process_refreshes() {
        let unset = StoreArgs {
            database_url: None,
            db_max_connections: None,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let expected = u32::try_from(cores * 2).unwrap().max(4);
        assert_eq!(unset.max_connections(false), expected);
        assert!(unset.max_connections(false) >= 4);
        // Each refresh in flight holds a session: the refresher's processes keep 16.
        assert_eq!(unset.max_connections(true), 16);
    }

    #[test]
    fn a_pool_of_no_connections_is_refused_at_parse_time() {
        #[derive(clap::Parser)]
        struct Store {
            #[command(flatten)]
            store: StoreArgs,
        }
        let parse = |value: &str| {
            <Store as clap::Parser>::try_parse_from(["hubkeeper", "--db-max-connections", value])
                .map(|s| s.store.db_max_connections)
        };
        assert_eq!(parse("4").ok(), Some(Some(4)));
        let refused = parse("0").expect_err("0 connections refused");
        assert!(refused.to_string().contains("0 is not in 1.."), "{refused}");
        assert!(parse("many").is_err());
    }
}
