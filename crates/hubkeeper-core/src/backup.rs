//! Database backups (`pg_dump` custom format, timestamped files, keep the newest N) and restores
//! into an empty database, made safe for the event store's global order.
//!
//! # Why a restore rewrites transaction ids
//!
//! Readers of the global order (the relay, the billing projection) order events by
//! `(tx_id, global_position)` and only read rows below the snapshot's xmin (see
//! `hubkeeper_store::log`). `tx_id` is a value in a column: `pg_dump` carries it over, but not the
//! cluster's transaction counter. Restored into another cluster whose counter is behind the
//! restored ids, every new event would sort *before* the restored history, and a reader whose
//! cursor is at the end of that history would never see it. So after `pg_restore`:
//! 1. when the restored ids are not all below the new cluster's current transaction id, they are
//!    renumbered densely (3, 4, 5, ... in their old order, so the global order is unchanged), and
//!    transaction ids are consumed until the counter is past them;
//! 2. reader cursors (`stream_cursors`) are mapped to the renumbered ids, so each reader resumes
//!    exactly where the backup left it;
//! 3. the relay cursor is reset to the start, so the relay republishes the whole history to
//!    JetStream and every consumer converges on the restored state (projections skip what they
//!    have by aggregate sequence). docs/operations.md ("Backups and restores") has the procedure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hubkeeper_bus::registry::{MAINTENANCE_LOCK, RELAY_CURSOR};
use hubkeeper_bus::{run_as_leader, LeaderRole, LeaderWork, Leadership};
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::error::CoreError;
use crate::settings::LiveSettings;

/// File names are `hubkeeper-<UTC timestamp>.dump`; retention only ever touches these.
const FILE_PREFIX: &str = "hubkeeper-";
const FILE_SUFFIX: &str = ".dump";
/// First transaction id Postgres hands out to normal transactions.
const FIRST_NORMAL_XID: i64 = 3;

/// Where backups go and where `pg_dump` lives.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// Directory of the backup files.
    pub dir: PathBuf,
    /// Directory with `pg_dump` / `pg_restore`; `None`: searched (see [`find_pg_tool`]).
    pub pg_bin_dir: Option<PathBuf>,
}

/// One backup made.
#[derive(Debug, Clone, Serialize)]
pub struct BackupOutcome {
    /// The file written.
    pub file: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Older backups deleted by retention.
    pub removed: Vec<PathBuf>,
    /// How long `pg_dump` took, in milliseconds.
    pub duration_ms: u64,
}

/// A recorded backup run (the Settings page's "last backup").
#[derive(Debug, Clone, Serialize)]
pub struct BackupRun {
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended (`null`: running or the process died).
    pub finished_at: Option<DateTime<Utc>>,
    /// `cli`, `api` or `schedule`.
    pub trigger: String,
    /// The file name.
    pub file: Option<String>,
    /// Its size.
    pub bytes: Option<i64>,
    /// Whether it succeeded.
    pub ok: Option<bool>,
    /// Why it failed.
    pub error: Option<String>,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreOutcome {
    /// Events restored.
    pub events: i64,
    /// Whether transaction ids had to be renumbered (a restore into another cluster).
    pub renumbered_transactions: bool,
    /// Distinct writing transactions in the history.
    pub transactions: i64,
    /// Reader cursors mapped to the renumbered ids.
    pub cursors_mapped: u64,
}

/// Mode of the backup directory: its owner only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every backup file: its owner only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Sets `mode` on `path`; a backup is not taken where it cannot be kept private.
async fn restrict(path: &Path, mode: u32) -> Result<(), CoreError> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(|e| {
            CoreError::Unavailable(format!(
                "cannot restrict {} to mode {mode:o}: {e}",
                path.display()
            ))
        })
}

/// Creates an empty file only its owner can read or write.
async fn create_private_file(path: &Path) -> Result<(), CoreError> {
    let _ = tokio::fs::remove_file(path).await;
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
        .await
        .map(drop)
        .map_err(|e| CoreError::Unavailable(format!("cannot create {}: {e}", path.display())))
}

/// Finds `pg_dump` or `pg_restore`: in `configured`, else the newest Debian server directory
/// (`/usr/lib/postgresql/<version>/bin`, like the embedded Postgres finds `initdb`), else `PATH`.
/// The newest is preferred because `pg_dump` must not be older than the server it dumps.
pub fn find_pg_tool(name: &str, configured: Option<&Path>) -> Result<PathBuf, CoreError> {
    if let Some(dir) = configured {
        let path = dir.join(name);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(CoreError::Unavailable(format!(
                "{name} not found in {} (HK_PG_BIN_DIR)",
                dir.display()
            )))
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((version, e.path().join("bin").join(name)))
                })
                .filter(|(_, p)| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if let Some((_, path)) = versions.pop() {
        return Ok(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            CoreError::Unavailable(format!(
                "{name} not found: install Debian's postgresql-client (or set HK_PG_BIN_DIR)"
            ))
        })
}

/// libpq connection settings for a child process, without the password on its command line
/// (other local users can read argv): the password travels in `PGPASSWORD`.
fn libpq_target(url: &SecretString) -> Result<(String, Option<String>), CoreError> {
    let mut parsed = url::Url::parse(url.expose_secret())
        .map_err(|_| CoreError::InvalidInput("cannot parse DATABASE_URL".into()))?;
    let password = parsed.password().map(percent_decode);
    parsed
        .set_password(None)
        .map_err(|_| CoreError::InvalidInput("DATABASE_URL has no host".into()))?;
    Ok((parsed.to_string(), password))
}

fn percent_decode(text: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(high * 16 + low);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn run_tool(mut command: Command, what: &str) -> Result<(), CoreError> {
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| CoreError::Unavailable(format!("cannot run {what}: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let detail: String = stderr.lines().take(5).collect::<Vec<_>>().join("; ");
    Err(CoreError::Unavailable(format!(
        "{what} failed ({}): {detail}",
        output.status
    )))
}

/// Makes backups and restores them. Cheap to clone.
#[derive(Clone)]
pub struct BackupService {
    pool: PgPool,
    database_url: SecretString,
    config: BackupConfig,
}

impl BackupService {
    /// Backups of the database at `database_url` (which `pool` is connected to).
    pub fn new(pool: PgPool, database_url: SecretString, config: BackupConfig) -> Self {
        Self {
            pool,
            database_url,
            config,
        }
    }

    /// Where backups go.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Dumps the database to a new timestamped file, then deletes all but the newest `keep`
    /// backups. The run is recorded in `backup_runs`.
    pub async fn backup(&self, trigger: &str, keep: u32) -> Result<BackupOutcome, CoreError> {
        let started_at = Utc::now();
        let run_id: i64 = sqlx::query_scalar(
            "INSERT INTO backup_runs (started_at, trigger) VALUES ($1, $2) RETURNING id",
        )
        .bind(started_at)
        .bind(trigger)
        .fetch_one(&self.pool)
        .await?;
        let result = self.dump(started_at, keep).await;
        let (file, bytes, ok, error) = match &result {
            Ok(outcome) => (
                outcome
                    .file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned()),
                i64::try_from(outcome.bytes).ok(),
                true,
                None,
            ),
            Err(e) => (None, None, false, Some(e.to_string())),
        };
        sqlx::query(
            "UPDATE backup_runs SET finished_at = now(), file = $2, bytes = $3, ok = $4,
                    error = $5
              WHERE id = $1",
        )
        .bind(run_id)
        .bind(file)
        .bind(bytes)
        .bind(ok)
        .bind(error)
        .execute(&self.pool)
        .await?;
        match &result {
            Ok(outcome) => {
                metrics::counter!("hk_backups_total", "result" => "ok", "trigger" => trigger.to_owned())
                    .increment(1);
                metrics::gauge!("hk_backup_last_success_timestamp_seconds")
                    .set(Utc::now().timestamp() as f64);
                metrics::gauge!("hk_backup_last_bytes").set(outcome.bytes as f64);
                tracing::info!(file = %outcome.file.display(), bytes = outcome.bytes, removed = outcome.removed.len(), "backup written");
            }
            Err(e) => {
                metrics::counter!("hk_backups_total", "result" => "failed", "trigger" => trigger.to_owned())
                    .increment(1);
                tracing::error!(error = %e, "backup failed");
            }
        }
        result
    }

    async fn dump(&self, at: DateTime<Utc>, keep: u32) -> Result<BackupOutcome, CoreError> {
        let pg_dump = find_pg_tool("pg_dump", self.config.pg_bin_dir.as_deref())?;
        tokio::fs::create_dir_all(&self.config.dir)
            .await
            .map_err(|e| {
                CoreError::Unavailable(format!(
                    "cannot create backup directory {}: {e}",
                    self.config.dir.display()
                ))
            })?;
        // A dump holds every table (sealed secrets included): only this user may list or read.
        restrict(&self.config.dir, PRIVATE_DIR_MODE).await?;
        let mut name = format!(
            "{FILE_PREFIX}{}{FILE_SUFFIX}",
            at.format("%Y%m%dT%H%M%S%.3fZ")
        );
        let mut n = 1;
        while self.config.dir.join(&name).exists() {
            n += 1;
            name = format!(
                "{FILE_PREFIX}{}-{n}{FILE_SUFFIX}",
                at.format("%Y%m%dT%H%M%S%.3fZ")
            );
        }
        let file = self.config.dir.join(&name);
        // Written under a temporary name and renamed when complete: retention and restores never
        // see a half-written dump.
        let partial = self.config.dir.join(format!(".{name}.partial"));
        // Created private before pg_dump writes into it (it keeps the mode it finds).
        create_private_file(&partial).await?;
        let (target, password) = libpq_target(&self.database_url)?;
        let mut command = Command::new(&pg_dump);
        command
            .arg("--format=custom")
            .arg("--no-owner")
            .arg("--no-privileges")
            .arg("--file")
            .arg(&partial)
            .arg("--dbname")
            .arg(&target);
        if let Some(password) = password {
            command.env("PGPASSWORD", password);
        }
        let started = Instant::now();
        if let Err(e) = run_tool(command, "pg_dump").await {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        let duration = started.elapsed();
        tokio::fs::rename(&partial, &file)
            .await
            .map_err(|e| CoreError::Unavailable(format!("cannot finish {name}: {e}")))?;
        restrict(&file, PRIVATE_FILE_MODE).await?;
        let bytes = tokio::fs::metadata(&file)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        metrics::histogram!("hk_backup_seconds").record(duration.as_secs_f64());
        let removed = apply_retention(&self.config.dir, keep).await?;
        Ok(BackupOutcome {
            file,
            bytes,
            removed,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The latest recorded runs, newest first.
    pub async fn runs(&self, limit: i64) -> Result<Vec<BackupRun>, CoreError> {
        let rows = sqlx::query(
            "SELECT started_at, finished_at, trigger, file, bytes, ok, error
               FROM backup_runs ORDER BY started_at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BackupRun {
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    trigger: r.try_get("trigger")?,
                    file: r.try_get("file")?,
                    bytes: r.try_get("bytes")?,
                    ok: r.try_get("ok")?,
                    error: r.try_get("error")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(CoreError::from)
    }

    /// Deletes run records older than `retention_days`.
    pub async fn prune(&self, retention_days: u32) -> Result<u64, CoreError> {
        let days = i32::try_from(retention_days).unwrap_or(i32::MAX);
        let mut deleted = 0;
        for table in ["backup_runs", "selftest_runs"] {
            deleted += sqlx::query(&format!(
                "DELETE FROM {table} WHERE started_at < now() - make_interval(days => $1)"
            ))
            .bind(days)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(deleted)
    }
}

/// Backup files in `dir`, oldest first (their names sort by time).
pub async fn list_backups(dir: &Path) -> Result<Vec<PathBuf>, CoreError> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(CoreError::Unavailable(format!(
                "cannot read {}: {e}",
                dir.display()
            )))
        }
    };
    let mut files = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| CoreError::Unavailable(format!("cannot read {}: {e}", dir.display())))?
    {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Deletes all but the newest `keep` backups in `dir`; returns what it deleted.
pub async fn apply_retention(dir: &Path, keep: u32) -> Result<Vec<PathBuf>, CoreError> {
    let files = list_backups(dir).await?;
    let keep = usize::try_from(keep.max(1)).unwrap_or(usize::MAX);
    let excess = files.len().saturating_sub(keep);
    let mut removed = Vec::with_capacity(excess);
    for file in files.into_iter().take(excess) {
        tokio::fs::remove_file(&file).await.map_err(|e| {
            CoreError::Unavailable(format!("cannot delete old backup {}: {e}", file.display()))
        })?;
        removed.push(file);
    }
    Ok(removed)
}

/// Restores `file` into the empty database at `database_url` and makes the event store's global
/// order safe there (see the module docs).
pub async fn restore(
    file: &Path,
    database_url: &SecretString,
    pg_bin_dir: Option<&Path>,
) -> Result<RestoreOutcome, CoreError> {
    if !file.is_file() {
        return Err(CoreError::InvalidInput(format!(
            "backup file {} does not exist",
            file.display()
        )));
    }
    let mut conn = PgConnection::connect(database_url.expose_secret())
        .await
        .map_err(|e| {
            CoreError::Unavailable(format!("cannot connect to the target database: {e}"))
        })?;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_one(&mut conn)
    .await?;
    if tables > 0 {
        return Err(CoreError::Conflict(format!(
            "the target database is not empty ({tables} tables); restore into a new, empty \
             database and point DATABASE_URL at it"
        )));
    }
    let pg_restore = find_pg_tool("pg_restore", pg_bin_dir)?;
    let (target, password) = libpq_target(database_url)?;
    let mut command = Command::new(&pg_restore);
    command
        .arg("--no-owner")
        .arg("--no-privileges")
        .arg("--exit-on-error")
        .arg("--single-transaction")
        .arg("--dbname")
        .arg(&target)
        .arg(file);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    run_tool(command, "pg_restore").await?;
    let outcome = make_order_safe(&mut conn).await?;
    conn.close().await?;
    Ok(outcome)
}

async fn make_order_safe(conn: &mut PgConnection) -> Result<RestoreOutcome, CoreError> {
    let has_events: bool = sqlx::query_scalar("SELECT to_regclass('events') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !has_events {
        return Err(CoreError::InvalidInput(
            "the backup holds no Hubkeeper event store (no events table)".into(),
        ));
    }
    let row = sqlx::query(
        "SELECT count(*) AS events, count(DISTINCT tx_id) AS transactions,
                COALESCE(max(tx_id::text::numeric), 0)::text AS max_tx
           FROM events",
    )
    .fetch_one(&mut *conn)
    .await?;
    let events: i64 = row.try_get("events")?;
    let transactions: i64 = row.try_get("transactions")?;
    let max_tx: String = row.try_get("max_tx")?;
    let max_tx: u64 = max_tx.parse().unwrap_or(u64::MAX);
    let current: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut *conn)
        .await?;
    let current: u64 = current.parse().unwrap_or(0);
    let mut outcome = RestoreOutcome {
        events,
        renumbered_transactions: false,
        transactions,
        cursors_mapped: 0,
    };
    if max_tx >= current {
        // Consume transaction ids until the counter is past the renumbered range.
        let needed = u64::try_from(FIRST_NORMAL_XID + transactions).unwrap_or(u64::MAX);
        loop {
            let now: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
                .fetch_one(&mut *conn)
                .await?;
            if now.parse::<u64>().unwrap_or(0) > needed {
                break;
            }
        }
        let mut tx = conn.begin().await?;
        sqlx::query(
            "CREATE TEMP TABLE hk_restore_tx_map ON COMMIT DROP AS
             SELECT tx_id AS old_tx,
                    (dense_rank() OVER (ORDER BY tx_id) + $1 - 1)::text::xid8 AS new_tx
               FROM (SELECT DISTINCT tx_id FROM events) t",
        )
        .bind(FIRST_NORMAL_XID)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE events e SET tx_id = m.new_tx FROM hk_restore_tx_map m WHERE e.tx_id = m.old_tx",
        )
        .execute(&mut *tx)
        .await?;
        outcome.cursors_mapped = sqlx::query(
            "UPDATE stream_cursors c SET last_tx = m.new_tx, updated_at = now()
               FROM hk_restore_tx_map m WHERE c.last_tx = m.old_tx",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        outcome.renumbered_transactions = true;
    }
    sqlx::query(
        "INSERT INTO stream_cursors (name, last_tx, last_position, updated_at)
         VALUES ($1, '0', 0, now())
         ON CONFLICT (name) DO UPDATE SET last_tx = '0', last_position = 0, updated_at = now()",
    )
    .bind(RELAY_CURSOR)
    .execute(&mut *conn)
    .await?;
    Ok(outcome)
}

/// HubSpot retries a webhook delivery for up to 3 days; processed webhook events are remembered
/// at least a day longer, so a late retry is still recognised as a duplicate.
pub const MIN_WEBHOOK_SEEN_RETENTION: Duration = Duration::from_secs(4 * 86_400);
/// Default deduplication window of processed webhook events.
pub const DEFAULT_WEBHOOK_SEEN_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// Rows of `webhook_events_seen` deleted per statement (keeps each delete short).
const WEBHOOK_SEEN_PRUNE_BATCH: i64 = 5_000;

/// Deletes the rows of `webhook_events_seen` processed longer than `retention` ago (raised to
/// [`MIN_WEBHOOK_SEEN_RETENTION`]), in batches of `batch`; returns how many.
pub async fn prune_webhook_events_seen(
    pool: &PgPool,
    retention: Duration,
    batch: i64,
) -> Result<u64, CoreError> {
    let retention = retention.max(MIN_WEBHOOK_SEEN_RETENTION);
    let seconds = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let mut deleted = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM webhook_events_seen WHERE dedupe_key IN (
                SELECT dedupe_key FROM webhook_events_seen
                 WHERE processed_at < now() - make_interval(secs => $1::double precision)
                 ORDER BY processed_at LIMIT $2)",
        )
        .bind(seconds as f64)
        .bind(batch.max(1))
        .execute(pool)
        .await?
        .rows_affected();
        deleted += done;
        metrics::counter!("hk_webhook_seen_pruned_total").increment(done);
        if done < u64::try_from(batch.max(1)).unwrap_or(u64::MAX) {
            return Ok(deleted);
        }
    }
}

/// The leader-elected task that runs scheduled backups (per the live settings) and, hourly,
/// renews subscriptions whose period ended, prunes log-like records after the logging
/// retention period and processed webhook events after their deduplication window.
pub struct MaintenanceScheduler {
    pool: PgPool,
    backups: BackupService,
    billing: crate::billing::BillingService,
    live: LiveSettings,
    poll: Duration,
    webhook_seen_retention: Duration,
}

impl MaintenanceScheduler {
    /// The scheduler; `poll` is how often a standby tries to lead.
    pub fn new(
        pool: PgPool,
        backups: BackupService,
        billing: crate::billing::BillingService,
        live: LiveSettings,
    ) -> Self {
        Self {
            pool,
            backups,
            billing,
            live,
            poll: Duration::from_secs(5),
            webhook_seen_retention: DEFAULT_WEBHOOK_SEEN_RETENTION,
        }
    }

    /// How long processed webhook events are kept for deduplication (at least
    /// [`MIN_WEBHOOK_SEEN_RETENTION`]).
    pub fn with_webhook_seen_retention(mut self, retention: Duration) -> Self {
        self.webhook_seen_retention = retention.max(MIN_WEBHOOK_SEEN_RETENTION);
        self
    }

    /// Runs until `shutdown`: stands by until this process leads, then runs what is due.
    pub async fn run(self, shutdown: CancellationToken) {
        let role = LeaderRole::new(MAINTENANCE_LOCK, self.poll, self.poll);
        run_as_leader(&self.pool, &role, &self, &shutdown).await;
    }

    async fn prune(&self) {
        let renewal = EventMetadata::new(Actor::System, Utc::now()).request_id("renewals");
        match self.billing.renew_due(&renewal).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(renewed = n, "subscriptions renewed"),
            Err(e) => tracing::warn!(error = %e, "renewing subscriptions failed"),
        }
        let retention = self.live.get().values.logging.retention_days;
        match (
            self.billing.prune(retention).await,
            self.backups.prune(retention).await,
        ) {
            (Ok(usage), Ok(runs)) => {
                if usage + runs > 0 {
                    tracing::info!(
                        usage_receipts = usage,
                        runs,
                        retention_days = retention,
                        "pruned old records"
                    );
                }
            }
            (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "pruning old records failed"),
        }
        match prune_webhook_events_seen(
            &self.pool,
            self.webhook_seen_retention,
            WEBHOOK_SEEN_PRUNE_BATCH,
        )
        .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                webhook_events_seen = n,
                retention_secs = self.webhook_seen_retention.as_secs(),
                "pruned processed webhook events past the deduplication window"
            ),
            Err(e) => tracing::warn!(error = %e, "pruning processed webhook events failed"),
        }
    }
}

impl LeaderWork for MaintenanceScheduler {
    type Error = CoreError;

    async fn lead(
        &self,
        leadership: &mut Leadership,
        shutdown: &CancellationToken,
    ) -> Result<(), CoreError> {
        let mut changes = self.live.subscribe();
        let mut next_prune = Instant::now();
        while !shutdown.is_cancelled() {
            if Instant::now() >= next_prune {
                self.prune().await;
                next_prune = Instant::now() + Duration::from_secs(3600);
            }
            let settings = self.live.get().values.backups;
            let wait = if settings.enabled {
                // On the leader's session: a dead session ends the lead here.
                let last: Option<DateTime<Utc>> = sqlx::query_scalar(
                    "SELECT max(started_at) FROM backup_runs WHERE trigger = 'schedule'",
                )
                .fetch_one(leadership.connection())
                .await?;
                // After the last scheduled run (or now, the first time), so a leader that took
                // over after a missed slot catches up once instead of skipping a day.
                let due = settings
                    .daily_at
                    .next_after(last.map_or_else(Utc::now, |t| t + chrono::Duration::seconds(1)));
                let now = Utc::now();
                if due <= now {
                    if let Err(e) = self.backups.backup("schedule", settings.keep).await {
                        tracing::error!(error = %e, "scheduled backup failed");
                    }
                    continue;
                }
                (due - now).to_std().unwrap_or(Duration::from_secs(60))
            } else {
                Duration::from_secs(3600)
            }
            .min(Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The settings are gone: the process is stopping.
                        return Ok(());
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
            // Keeps the leadership's session honest: a dead connection ends the lead.
            leadership.confirm().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_off_the_command_line() {
        let url =
            SecretString::from("postgres://hk:s%40cret@db.internal:5432/hubkeeper?sslmode=require");
        let (target, password) = libpq_target(&url).expect("parses");
        assert_eq!(
            target,
            "postgres://hk@db.internal:5432/hubkeeper?sslmode=require"
        );
        assert_eq!(password.as_deref(), Some("s@cret"));
        let (target, password) =
            libpq_target(&SecretString::from("postgres://postgres@127.0.0.1:5432/hk"))
                .expect("parses");
        assert_eq!(target, "postgres://postgres@127.0.0.1:5432/hk");
        assert_eq!(password, None);
    }

    #[tokio::test]
    async fn retention_keeps_the_newest_backups_only() {
        let dir = tempfile_dir();
        for name in [
            "hubkeeper-20260101T010000.000Z.dump",
            "hubkeeper-20260102T010000.000Z.dump",
            "hubkeeper-20260103T010000.000Z.dump",
            "notes.txt",
            ".hubkeeper-20260104T010000.000Z.dump.partial",
        ] {
            std::fs::write(dir.join(name), b"x").expect("write");
        }
        let removed = apply_retention(&dir, 2).await.expect("retention");
        assert_eq!(
            removed
                .iter()
                .filter_map(|p| p.file_name()?.to_str())
                .collect::<Vec<_>>(),
            vec!["hubkeeper-20260101T010000.000Z.dump"]
        );
        let left = list_backups(&dir).await.expect("list");
        assert_eq!(left.len(), 2);
        assert!(
            dir.join("notes.txt").exists(),
            "other files are never touched"
        );
        assert!(dir
            .join(".hubkeeper-20260104T010000.000Z.dump.partial")
            .exists());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hk-backup-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }
}
