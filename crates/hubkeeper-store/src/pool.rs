use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

/// The schema, embedded at compile time so every role of the single binary carries it.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error("database unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// Tag shown in `pg_stat_activity`, so an operator can tell the roles apart.
    pub application_name: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            application_name: "hubkeeper".into(),
        }
    }
}

/// Opens a pool lazily: a role must start (and report not-ready) while Postgres is down, and
/// recover when it comes back, instead of failing at boot.
pub fn connect(url: &SecretString, config: &PoolConfig) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions = url
        .expose_secret()
        .parse()
        // sqlx's parse error can quote the URL (and with it the password): name the problem only.
        .map_err(|_| StoreError::InvalidUrl("cannot parse DATABASE_URL".into()))?;
    let options = options.application_name(&config.application_name);
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        // sqlx pings every pooled connection before handing it out: a round trip to Postgres
        // before each statement, as many as the statements themselves on the command path.
        // Only a connection that sat idle long enough to have been dropped unseen (a restarted
        // or failed-over server, a firewall's idle timeout) is checked; one that answered a
        // moment ago is not. A connection that died since answers its next statement with an
        // error, which every caller already handles as a database outage.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= CHECK_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// How long a pooled connection may sit idle before it is checked with a round trip again.
pub const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Number of embedded migrations not yet applied successfully (readiness reports not-ready while
/// this is non-zero, so a new binary never serves against an old schema).
pub async fn migrations_pending(pool: &PgPool) -> Result<usize, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(MIGRATOR.iter().count());
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .count())
}
