//! `hubkeeper doctor`: checks what a deployment needs (configuration, Postgres, NATS, master keys,
//! HubSpot, the backup directory and tools) the way the servers will use it, and says for each
//! failure what to fix. Exits non-zero when anything fails. Secrets are never printed: URLs are
//! shown without their passwords.

use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use hubkeeper_crypto::MasterKeyring;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

use crate::config::Config;

/// How long one dependency may take to answer before it counts as unreachable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

enum Outcome {
    Ok(String),
    /// Not a failure, but worth knowing (e.g. a check skipped because another one failed).
    Note(String),
    Fail {
        problem: String,
        fix: String,
    },
}

struct Report {
    failures: usize,
}

impl Report {
    fn print(&mut self, area: &str, outcome: Outcome) {
        match outcome {
            Outcome::Ok(detail) => println!("  ok    {area:<12} {detail}"),
            Outcome::Note(detail) => println!("  note  {area:<12} {detail}"),
            Outcome::Fail { problem, fix } => {
                self.failures += 1;
                println!("  FAIL  {area:<12} {problem}");
                println!("        {:<12} fix: {fix}", "");
            }
        }
    }
}

pub async fn run(config: &Config) -> anyhow::Result<()> {
    println!("hubkeeper doctor");
    let mut report = Report { failures: 0 };

    let pool = match check_postgres(config).await {
        Ok((pool, detail)) => {
            report.print("postgres", Outcome::Ok(detail));
            let migrations = check_migrations(&pool).await;
            report.print("migrations", migrations);
            Some(pool)
        }
        Err(outcome) => {
            report.print("postgres", outcome);
            None
        }
    };
    report.print("nats", check_nats(config).await);
    report.print(
        "master keys",
        check_master_keys(config, pool.as_ref()).await,
    );
    report.print("hubspot", check_hubspot(config).await);
    report.print("backups", check_backup_dir(config));
    report.print("pg_dump", check_pg_dump(config, pool.as_ref()).await);
    if let Some(pool) = pool {
        pool.close().await;
    }

    if report.failures == 0 {
        println!("everything Hubkeeper needs is in place");
        Ok(())
    } else {
        Err(anyhow!(
            "{} check(s) failed; fix them and run `hubkeeper doctor` again",
            report.failures
        ))
    }
}

/// The URL as it may be shown: without password or token.
fn shown(url: &SecretString) -> String {
    match url::Url::parse(url.expose_secret()) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

async fn check_postgres(config: &Config) -> Result<(PgPool, String), Outcome> {
    let Some(url) = &config.store.database_url else {
        return Err(Outcome::Fail {
            problem: "DATABASE_URL is not set".into(),
            fix: "set DATABASE_URL=postgres://user:password@host:5432/database (only \
                  `hubkeeper up` starts a local Postgres by itself)"
                .into(),
        });
    };
    let unreachable = |e: String| Outcome::Fail {
        problem: format!("cannot reach Postgres at {}: {e}", shown(url)),
        fix: "check that Postgres runs, the host, port, user, password and database in \
              DATABASE_URL, and that this machine may connect (pg_hba.conf, firewalls)"
            .into(),
    };
    let pool = hubkeeper_store::connect(
        url,
        &hubkeeper_store::PoolConfig {
            max_connections: 2,
            application_name: "hubkeeper-doctor".into(),
            ..hubkeeper_store::PoolConfig::default()
        },
    )
    .map_err(|e| unreachable(e.to_string()))?;
    let version = tokio::time::timeout(
        CHECK_TIMEOUT,
        sqlx::query_scalar::<_, String>("SHOW server_version").fetch_one(&pool),
    )
    .await
    .map_err(|_| unreachable(format!("no answer within {CHECK_TIMEOUT:?}")))?
    .map_err(|e| unreachable(e.to_string()))?;
    Ok((pool, format!("{} (PostgreSQL {version})", shown(url))))
}

async fn check_migrations(pool: &PgPool) -> Outcome {
    match hubkeeper_store::migrations_pending(pool).await {
        Ok(0) => Outcome::Ok("schema up to date".into()),
        Ok(pending) => Outcome::Fail {
            problem: format!("{pending} migration(s) not applied"),
            fix: "run `hubkeeper migrate` (the API reports not-ready until then)".into(),
        },
        Err(e) => Outcome::Fail {
            problem: format!("cannot read the applied migrations: {e}"),
            fix: "check that the DATABASE_URL user may read the database".into(),
        },
    }
}

async fn check_nats(config: &Config) -> Outcome {
    let Some(url) = &config.nats.nats_url else {
        return Outcome::Fail {
            problem: "NATS_URL is not set".into(),
            fix: "set NATS_URL=nats://host:4222 (a nats-server with JetStream enabled; only \
                  `hubkeeper up` starts a local one by itself)"
                .into(),
        };
    };
    let unreachable = |e: String| Outcome::Fail {
        problem: format!("cannot reach NATS at {}: {e}", shown(url)),
        fix: "check that nats-server runs with JetStream (`-js`) and that NATS_URL has the \
              right host, port and credentials"
            .into(),
    };
    let mut options = async_nats::ConnectOptions::new().name("hubkeeper-doctor");
    if let (Some(user), Some(password)) = (&config.nats.nats_user, &config.nats.nats_password) {
        options = options
            .user_and_password(user.clone(), password.expose_secret().to_owned())
            .custom_inbox_prefix(hubkeeper_bus::permissions::inbox_prefix(user));
    }
    if let Some(ca) = &config.nats.nats_tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let client =
        match tokio::time::timeout(CHECK_TIMEOUT, options.connect(url.expose_secret())).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return unreachable(e.to_string()),
            Err(_) => return unreachable(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
    let js = async_nats::jetstream::new(client);
    match tokio::time::timeout(CHECK_TIMEOUT, js.query_account()).await {
        Ok(Ok(account)) => Outcome::Ok(format!(
            "{} (JetStream on, {} stream(s))",
            shown(url),
            account.streams
        )),
        Ok(Err(e)) => Outcome::Fail {
            problem: format!("NATS at {} has no JetStream: {e}", shown(url)),
            fix: "start nats-server with JetStream enabled (`-js`, or `jetstream {}` in its \
                  configuration file)"
                .into(),
        },
        Err(_) => unreachable(format!("JetStream did not answer within {CHECK_TIMEOUT:?}")),
    }
}

async fn check_master_keys(config: &Config, pool: Option<&PgPool>) -> Outcome {
    let Some(spec) = &config.keys.master_keys else {
        return Outcome::Fail {
            problem: "HK_MASTER_KEYS is not set: the API cannot hand out tokens and the \
                      refreshers cannot start"
                .into(),
            fix: "generate one with `hubkeeper keys generate`, keep it in your secret store and \
                  set HK_MASTER_KEYS to it"
                .into(),
        };
    };
    let keyring =
        match MasterKeyring::parse(spec.expose_secret(), config.keys.active_key_id.as_deref()) {
            Ok(keyring) => keyring,
            Err(e) => {
                return Outcome::Fail {
                    problem: format!("HK_MASTER_KEYS or HK_ACTIVE_KEY_ID is invalid: {e}"),
                    fix: "use the `kid:<base64 of 32 bytes>` lines `hubkeeper keys generate` \
                      prints, comma-separated; HK_ACTIVE_KEY_ID must name one of them"
                        .into(),
                }
            }
        };
    let configured = keyring.kids().collect::<Vec<_>>().join(", ");
    let Some(pool) = pool else {
        return Outcome::Note(format!(
            "{configured} configured (active {}); not compared with the stored data keys \
             because Postgres is unreachable",
            keyring.active_kid()
        ));
    };
    let counts: Result<Vec<(String, i64)>, _> = sqlx::query_as(
        "SELECT master_kid, count(*) FROM data_keys WHERE wrapped IS NOT NULL GROUP BY master_kid",
    )
    .fetch_all(pool)
    .await;
    match counts {
        Ok(counts) => {
            let missing: Vec<String> = counts
                .iter()
                .filter(|(kid, _)| !keyring.contains(kid))
                .map(|(kid, count)| format!("{kid} ({count} data key(s))"))
                .collect();
            if missing.is_empty() {
                Outcome::Ok(format!(
                    "{configured} configured (active {}), every stored data key readable",
                    keyring.active_kid()
                ))
            } else {
                Outcome::Fail {
                    problem: format!(
                        "stored data keys are wrapped under master keys that are not \
                         configured: {}",
                        missing.join(", ")
                    ),
                    fix: "add those master keys back to HK_MASTER_KEYS (then `hubkeeper keys \
                          rotate` moves everything to the active key)"
                        .into(),
                }
            }
        }
        // Before the first migration there is no table: nothing stored yet to compare.
        Err(_) => Outcome::Ok(format!(
            "{configured} configured (active {})",
            keyring.active_kid()
        )),
    }
}

async fn check_hubspot(config: &Config) -> Outcome {
    let api = &config.hubspot.hubspot_api_url;
    let client = match reqwest::Client::builder().timeout(CHECK_TIMEOUT).build() {
        Ok(client) => client,
        Err(e) => {
            return Outcome::Fail {
                problem: format!("cannot build an HTTP client: {e}"),
                fix: "check the system's TLS configuration".into(),
            }
        }
    };
    // Any HTTP answer shows the host is reachable over TLS from here; the status of the bare
    // base URL does not matter.
    match client.get(api.clone()).send().await {
        Ok(response) => Outcome::Ok(format!(
            "{api} answers (HTTP {})",
            response.status().as_u16()
        )),
        Err(e) => Outcome::Fail {
            problem: format!("cannot reach HubSpot at {api}: {e}"),
            fix: "check outbound HTTPS (proxy, firewall, DNS) to HK_HUBSPOT_API_URL; in \
                  development point it at the simulator (`hubkeeper sim`)"
                .into(),
        },
    }
}

fn check_backup_dir(config: &Config) -> Outcome {
    let dir = crate::services::maintenance::backup_dir(config);
    match probe_writable(&dir) {
        Ok(()) => Outcome::Ok(format!("{} is writable", dir.display())),
        Err(e) => Outcome::Fail {
            problem: format!("cannot write backups to {}: {e}", dir.display()),
            fix: "set HK_BACKUP_DIR to a directory this user can write (in Docker: on the \
                  data volume)"
                .into(),
        },
    }
}

fn probe_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".hubkeeper-doctor-{}", std::process::id()));
    std::fs::write(&probe, b"hubkeeper doctor")?;
    std::fs::remove_file(&probe)
}

/// pg_dump refuses servers newer than itself: the backups need a pg_dump at least as new as
/// the server.
async fn check_pg_dump(config: &Config, pool: Option<&PgPool>) -> Outcome {
    let tool =
        match hubkeeper_core::backup::find_pg_tool("pg_dump", config.backups.pg_bin_dir.as_deref())
        {
            Ok(tool) => tool,
            Err(e) => {
                return Outcome::Fail {
                    problem: format!("no pg_dump for backups: {e}"),
                    fix: "install the PostgreSQL client (Debian: postgresql-client) or set \
                      HK_PG_BIN_DIR"
                        .into(),
                }
            }
        };
    let output = match tokio::process::Command::new(&tool)
        .arg("--version")
        .output()
        .await
    {
        Ok(output) => output,
        Err(e) => {
            return Outcome::Fail {
                problem: format!("cannot run {}: {e}", tool.display()),
                fix: "install the PostgreSQL client or set HK_PG_BIN_DIR".into(),
            }
        }
    };
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let Some(dump_major) = major_version(&text) else {
        return Outcome::Note(format!(
            "{}: cannot read its version from `{text}`",
            tool.display()
        ));
    };
    let Some(pool) = pool else {
        return Outcome::Note(format!(
            "{text}; not compared with the server (unreachable)"
        ));
    };
    let server: Result<i32, _> =
        sqlx::query_scalar("SELECT current_setting('server_version_num')::int / 10000")
            .fetch_one(pool)
            .await;
    match server {
        Ok(server_major) if server_major > dump_major => Outcome::Fail {
            problem: format!(
                "{} is version {dump_major}, older than the server ({server_major}): backups \
                 will fail",
                tool.display()
            ),
            fix: format!(
                "install pg_dump {server_major} or newer (Debian: postgresql-client-{server_major}) \
                 and point HK_PG_BIN_DIR at its bin directory"
            ),
        },
        Ok(server_major) => Outcome::Ok(format!(
            "{} (version {dump_major}, server {server_major})",
            tool.display()
        )),
        Err(e) => Outcome::Note(format!("{text}; cannot read the server version: {e}")),
    }
}

/// `pg_dump (PostgreSQL) 15.4 (Debian 15.4-1)` → 15.
fn major_version(text: &str) -> Option<i32> {
    text.split_whitespace()
        .find_map(|word| word.split('.').next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_passwords() {
        let url = SecretString::from("postgres://hk:s3cret@db:5432/hk".to_string());
        let text = shown(&url);
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("db:5432"), "{text}");
        assert_eq!(
            shown(&SecretString::from("nope".to_string())),
            "(not a URL)"
        );
    }

    #[test]
    fn pg_dump_versions_are_read() {
        assert_eq!(
            major_version("pg_dump (PostgreSQL) 15.4 (Debian 15.4-1)"),
            Some(15)
        );
        assert_eq!(major_version("pg_dump (PostgreSQL) 17.2"), Some(17));
        assert_eq!(major_version("pg_dump"), None);
    }
}
