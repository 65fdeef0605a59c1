//! Getting into the dashboard: the first admin key that `hubkeeper up` provides, how session
//! cookies are issued, and the configuration view the Settings page shows.
//!
//! Someone has to hold a key before anyone can create keys through the API. On a developer's
//! machine `up` creates one and leaves it in a file only the owner can read, so logging in needs
//! no extra step; a deployment instead passes its own key in `HK_BOOTSTRAP_ADMIN_KEY` (from its
//! secret store), which is installed idempotently and never written to disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::CommandFactory;
use hubkeeper_api::auth::{Authenticator, SessionSettings};
use hubkeeper_api::server_config::{ConfigEntry, ServerConfigView};
use hubkeeper_core::access::{self, Installed, Role};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

use crate::config::Config;

/// Name of the file (in the data directory) holding the key `up` generated.
pub const ADMIN_KEY_FILE: &str = "admin-key";

const BOOTSTRAP_KEY_NAME: &str = "bootstrap admin (hubkeeper up)";
const CREATED_BY: &str = "system:bootstrap";

pub fn session_settings(config: &Config) -> SessionSettings {
    SessionSettings {
        ttl: config.dashboard.session_ttl.max(Duration::from_secs(60)),
        secure_cookies: config
            .http
            .public_url
            .as_ref()
            .map(|u| u.scheme() == "https"),
    }
}

/// The dashboard's address as users should type it.
pub fn dashboard_url(config: &Config) -> String {
    match &config.http.public_url {
        Some(url) => format!("{}/dashboard", url.as_str().trim_end_matches('/')),
        None => format!(
            "http://{}/dashboard",
            crate::config::reachable(config.http.bind)
        ),
    }
}

/// What `up` does about the first admin key; returns how to log in.
///
/// - `HK_BOOTSTRAP_ADMIN_KEY` set: installs that key (same key on every start; refuses a key
///   whose id exists with another secret, or that was revoked).
/// - no active admin key: creates one and writes it to `<data_dir>/admin-key` (mode 0600).
/// - otherwise: points at the key file if there is one.
pub async fn bootstrap_admin_key(
    config: &Config,
    database_url: &SecretString,
    data_dir: &Path,
) -> anyhow::Result<String> {
    let pool = hubkeeper_store::connect(
        database_url,
        &hubkeeper_store::PoolConfig {
            max_connections: 2,
            application_name: "hubkeeper-bootstrap".into(),
            ..hubkeeper_store::PoolConfig::default()
        },
    )?;
    migrate_with_retry(&pool).await?;
    let result = ensure_admin_key(&pool, config, data_dir).await;
    pool.close().await;
    result
}

/// Postgres may still be starting when `up` points at an external one.
async fn migrate_with_retry(pool: &PgPool) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(200);
    let mut attempts = 0;
    loop {
        match hubkeeper_store::migrate(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if attempts < 8 => {
                tracing::warn!(error = %e, "postgres not ready for the admin key; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempts += 1;
            }
            Err(e) => return Err(e).context("cannot prepare the database for the admin key"),
        }
    }
}

async fn ensure_admin_key(
    pool: &PgPool,
    config: &Config,
    data_dir: &Path,
) -> anyhow::Result<String> {
    if let Some(key) = &config.bootstrap.bootstrap_admin_key {
        return install_bootstrap_key(pool, key).await;
    }
    let file = data_dir.join(ADMIN_KEY_FILE);
    if access::count_active(pool, Role::Admin).await? == 0 {
        let key = access::create_key(pool, BOOTSTRAP_KEY_NAME, Role::Admin, CREATED_BY).await?;
        record_bootstrap_key(pool, &key.id).await?;
        write_key_file(&file, &key.token)
            .with_context(|| format!("cannot write the admin key to {}", file.display()))?;
        return Ok(format!(
            "first admin key {} created: log in with the key in {} (readable only by you)",
            key.id,
            file.display()
        ));
    }
    if file_key_is_active(pool, &file).await {
        return Ok(format!("log in with the admin key in {}", file.display()));
    }
    Ok(
        "log in with an admin key (new one: `hubkeeper admin create-key --role admin --name <you>`)"
            .to_string(),
    )
}

/// Installs the deployment's own first admin key (`HK_BOOTSTRAP_ADMIN_KEY`), idempotently: the
/// same key on every start is fine; a key whose id exists with another secret, or was revoked,
/// is refused.
pub async fn install_bootstrap_key(pool: &PgPool, key: &SecretString) -> anyhow::Result<String> {
    let (id, installed) =
        access::install_key(pool, key, BOOTSTRAP_KEY_NAME, Role::Admin, CREATED_BY)
            .await
            .context("HK_BOOTSTRAP_ADMIN_KEY")?;
    if installed == Installed::Added {
        record_bootstrap_key(pool, &id).await?;
    }
    let what = match installed {
        Installed::Added => "installed",
        Installed::AlreadyPresent => "in place",
    };
    Ok(format!(
        "log in with the admin key from HK_BOOTSTRAP_ADMIN_KEY ({id}, {what})"
    ))
}

/// Records the first admin key's creation (Hubkeeper itself made or installed it).
async fn record_bootstrap_key(pool: &PgPool, id: &str) -> anyhow::Result<()> {
    let audit = access::AuditLog::new(std::sync::Arc::new(hubkeeper_core::CommandBus::new(
        pool,
        hubkeeper_domain::DomainServices::system(),
    )));
    let metadata = hubkeeper_domain::metadata::EventMetadata::new(
        hubkeeper_domain::metadata::Actor::System,
        chrono::Utc::now(),
    );
    audit
        .key_created(id, BOOTSTRAP_KEY_NAME, Role::Admin, &[], &metadata)
        .await
        .map_err(|e| anyhow::anyhow!("the first admin key's creation was not recorded: {e}"))
}

/// Whether the key file exists and still holds a working key.
async fn file_key_is_active(pool: &PgPool, file: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    Authenticator::new(pool.clone())
        .verify(text.trim())
        .await
        .ok()
        .flatten()
        .is_some()
}

/// Writes the key so only the owner can read it; replaces an older (revoked) key file.
fn write_key_file(path: &PathBuf, token: &SecretString) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(token.expose_secret().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    // The umask cannot widen 0600, but an inherited ACL default could: set it explicitly.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// The configuration as this process resolved it, read from the command-line definition so
/// every setting (including ones added later) appears; secret ones only say whether they are
/// set.
pub fn server_config_view(roles: &str) -> ServerConfigView {
    server_config_view_from(roles, std::env::args_os())
}

fn server_config_view_from<I, T>(roles: &str, args: I) -> ServerConfigView
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut view = ServerConfigView::minimal(roles);
    let command = crate::Cli::command();
    let matches = match command.clone().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e.kind(), "cannot describe the configuration");
            return view;
        }
    };
    // The settings sit on the subcommand that runs (and logging on the top level): walk down the
    // chain of subcommands that were given, describing each level's arguments.
    let mut level = Some((&command, &matches));
    while let Some((command, matches)) = level {
        for arg in command.get_arguments() {
            describe_setting(&mut view, arg, matches);
        }
        level = matches.subcommand().and_then(|(name, sub_matches)| {
            command
                .find_subcommand(name)
                .map(|sub_command| (sub_command, sub_matches))
        });
    }
    view
}

fn describe_setting(view: &mut ServerConfigView, arg: &clap::Arg, matches: &clap::ArgMatches) {
    let id = arg.get_id().as_str();
    if matches!(id, "help" | "version") || arg.is_positional() {
        return;
    }
    let Some(long) = arg.get_long() else {
        return;
    };
    let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
    if env.is_none() {
        // A command's own option (`--keep`, `--json`), not a process setting.
        return;
    }
    let secret = arg.is_hide_env_values_set() || looks_secret(id);
    let source = match matches.value_source(id) {
        Some(clap::parser::ValueSource::DefaultValue) => "default",
        Some(clap::parser::ValueSource::EnvVariable) => "environment",
        Some(clap::parser::ValueSource::CommandLine) => "command line",
        _ => "unset",
    };
    let value = if secret {
        None
    } else {
        matches.get_raw(id).map(|values| {
            values
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",")
        })
    };
    view.settings.push(ConfigEntry {
        name: long.to_string(),
        env,
        value,
        source: source.to_string(),
        secret,
        help: arg.get_help().map(|h| h.to_string()),
    });
}

/// Belt and braces for settings not marked `hide_env_values`.
fn looks_secret(id: &str) -> bool {
    let id = id.to_ascii_lowercase();
    [
        "secret",
        "password",
        "token",
        "master_key",
        "admin_key",
        "database_url",
        "nats_url",
    ]
    .iter()
    .any(|word| id.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_never_described_by_value() {
        assert!(looks_secret("bootstrap_admin_key"));
        assert!(looks_secret("database_url"));
        assert!(looks_secret("hubspot_client_secret"));
        assert!(!looks_secret("bind"));
        let view = server_config_view_from("api", ["hubkeeper", "api", "--bind", "127.0.0.1:9"]);
        assert!(!view.settings.is_empty());
        let db = view
            .settings
            .iter()
            .find(|s| s.name == "database-url")
            .unwrap();
        assert!(db.secret && db.value.is_none());
        let bind = view.settings.iter().find(|s| s.name == "bind").unwrap();
        assert_eq!(bind.env.as_deref(), Some("HK_BIND"));
        assert_eq!(bind.value.as_deref(), Some("127.0.0.1:9"));
        assert_eq!(bind.source, "command line");
    }
}
