//! Master keys: `hubkeeper keys generate|rotate|status`, reading the keyring from configuration,
//! and the development key `up` creates when none is configured.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, Context};
use clap::Subcommand;
use hubkeeper_crypto::{generate_key_b64, ExposeSecret, MasterKeyring};
use secrecy::SecretString;

use crate::config::Config;

/// File under the data directory holding the key `up` generated for development.
const DEV_KEYS_FILE: &str = "dev-master-keys";

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Prints a new master key entry (`<kid>:<base64>`) to add to HK_MASTER_KEYS.
    Generate {
        /// Id of the new key (letters, digits, `_`, `-`); default: `k` + today's date.
        #[arg(long)]
        kid: Option<String>,
    },
    /// Re-wraps every data key under the active master key (HK_ACTIVE_KEY_ID, or the last key
    /// of HK_MASTER_KEYS). Runs while Hubkeeper serves; old keys keep working until then.
    Rotate,
    /// Shows the configured keys (fingerprints only) and how many data keys each wraps.
    Status,
}

/// The configured keyring, if any.
pub fn keyring(config: &Config) -> anyhow::Result<Option<MasterKeyring>> {
    let Some(spec) = &config.keys.master_keys else {
        return Ok(None);
    };
    let keyring = MasterKeyring::parse(spec.expose_secret(), config.keys.active_key_id.as_deref())
        .map_err(|e| anyhow!("HK_MASTER_KEYS / HK_ACTIVE_KEY_ID: {e}"))?;
    Ok(Some(keyring))
}

fn require_keyring(config: &Config) -> anyhow::Result<MasterKeyring> {
    keyring(config)?.ok_or_else(|| {
        anyhow!("HK_MASTER_KEYS is not set; create a key with `hubkeeper keys generate`")
    })
}

/// Under `up` without configured master keys: use (or create, once) a development key in the
/// data directory, with a loud warning, so a laptop setup needs no key management.
pub fn with_dev_master_keys(mut config: Config, data_dir: &Path) -> anyhow::Result<Config> {
    if config.keys.master_keys.is_some() {
        return Ok(config);
    }
    let path = data_dir.join(DEV_KEYS_FILE);
    let spec = if path.exists() {
        std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .trim()
            .to_owned()
    } else {
        let spec = format!("dev1:{}", generate_key_b64().expose_secret());
        write_private(&path, &spec)?;
        spec
    };
    eprintln!(
        "WARNING: HK_MASTER_KEYS is not set; using the DEVELOPMENT master key in {}.\n\
         WARNING: anyone who can read that file can decrypt every stored token. Never use it in \
         production: set HK_MASTER_KEYS (see `hubkeeper keys generate`).",
        path.display()
    );
    tracing::warn!(path = %path.display(), "using a development master key");
    config.keys.master_keys = Some(SecretString::from(spec));
    Ok(config)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .with_context(|| format!("cannot write {}", path.display()))
}

pub async fn run(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Generate { kid } => {
            let kid = kid.unwrap_or_else(|| format!("k{}", chrono::Utc::now().format("%Y%m%d")));
            let entry = format!("{kid}:{}", generate_key_b64().expose_secret());
            // Validate exactly as the servers will read it.
            let keyring = MasterKeyring::parse(&entry, None).map_err(|e| anyhow!("{e}"))?;
            println!("{entry}");
            eprintln!(
                "New master key {kid} (fingerprint {}). Keep it in your secret store.\n\
                 To rotate: append it to HK_MASTER_KEYS (comma-separated, keep the old keys), set \
                 HK_ACTIVE_KEY_ID={kid}, restart, run `hubkeeper keys rotate`, then remove the old \
                 keys.",
                keyring.fingerprint(&kid).unwrap_or_default()
            );
            Ok(())
        }
        KeysCommand::Rotate => {
            let keyring = require_keyring(config)?;
            let active = keyring.active_kid().to_owned();
            let pool = crate::roles::connect_store(config)?;
            hubkeeper_store::migrate(&pool).await?;
            let vault = hubkeeper_core::Vault::new(pool.clone(), keyring);
            println!("re-wrapping data keys under master key {active}");
            let report = vault
                .rotate(|p| {
                    println!("  {}/{} data keys", p.done, p.total);
                })
                .await?;
            println!(
                "done: {} re-wrapped, {} changed concurrently (left alone), {} failed",
                report.rewrapped,
                report.skipped,
                report.failed.len()
            );
            for (kid, count) in &report.remaining_by_kid {
                println!("  master key {kid}: {count} data key(s)");
            }
            for (owner, reason) in &report.failed {
                eprintln!("  FAILED {owner}: {reason}");
            }
            pool.close().await;
            if report.failed.is_empty() {
                println!(
                    "Every data key is wrapped under {active}; older master keys can be removed \
                     from HK_MASTER_KEYS."
                );
                Ok(())
            } else {
                Err(anyhow!(
                    "{} data key(s) could not be re-wrapped; keep their master keys configured",
                    report.failed.len()
                ))
            }
        }
        KeysCommand::Status => {
            let keyring = require_keyring(config)?;
            let pool = crate::roles::connect_store(config)?;
            hubkeeper_store::migrate(&pool).await?;
            let counts: Vec<(String, i64)> = sqlx::query_as(
                "SELECT master_kid, count(*) FROM data_keys WHERE wrapped IS NOT NULL
                  GROUP BY master_kid ORDER BY master_kid",
            )
            .fetch_all(&pool)
            .await?;
            let shredded: i64 =
                sqlx::query_scalar("SELECT count(*) FROM data_keys WHERE wrapped IS NULL")
                    .fetch_one(&pool)
                    .await?;
            for kid in keyring.kids() {
                let active = if kid == keyring.active_kid() {
                    " (active)"
                } else {
                    ""
                };
                let count = counts.iter().find(|(k, _)| k == kid).map_or(0, |(_, c)| *c);
                println!(
                    "{kid}{active}: fingerprint {}, wraps {count} data key(s)",
                    keyring.fingerprint(kid).unwrap_or_default()
                );
            }
            for (kid, count) in counts.iter().filter(|(k, _)| !keyring.contains(k)) {
                println!(
                    "{kid}: NOT CONFIGURED, wraps {count} data key(s): their tokens are unreadable"
                );
            }
            println!("{shredded} shredded data key(s)");
            pool.close().await;
            Ok(())
        }
    }
}
