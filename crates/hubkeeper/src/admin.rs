//! `hubkeeper admin …`: API key management from the command line (the first admin key has to
//! come from somewhere that does not need a key).

use std::sync::Arc;

use clap::Subcommand;
use hubkeeper_core::access::{list_keys, AuditLog, Role};
use hubkeeper_core::{Broadcaster, CommandBus, Invalidation};
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_domain::{AppId, DomainServices};
use secrecy::ExposeSecret;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Creates an API key and prints it once.
    CreateKey {
        /// admin, operator, auditor or service.
        #[arg(long)]
        role: Role,
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// An app the service key is bound to (repeatable). A service key acts only on the
        /// installations and connect sessions of its apps and receives only their tokens; one
        /// without `--app` receives no tokens at all. Only for `--role service`.
        #[arg(long = "app", value_name = "APP_ID")]
        apps: Vec<AppId>,
    },
    /// Revokes an API key by id (`ak…`) and ends its dashboard sessions.
    RevokeKey { id: String },
    /// Lists API keys with their last use and open sessions (never their secrets).
    ListKeys,
}

pub async fn run(config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    let pool = crate::roles::connect_store(config)?;
    hubkeeper_store::migrate(&pool).await?;
    // Key changes made here are recorded like those made over the API, with `cli` as the actor.
    let audit = AuditLog::new(Arc::new(CommandBus::new(&pool, DomainServices::system())));
    let metadata = EventMetadata::new(Actor::CommandLine, chrono::Utc::now());
    match command {
        AdminCommand::CreateKey { role, name, apps } => {
            let name = name.trim();
            if name.is_empty() {
                anyhow::bail!("--name must not be empty");
            }
            let key = audit
                .create_key(&pool, name, role, &apps, &metadata)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", key.token.expose_secret());
            let bound = if key.apps.is_empty() {
                String::new()
            } else {
                let apps: Vec<String> = key.apps.iter().map(ToString::to_string).collect();
                format!(" bound to app(s) {}", apps.join(", "))
            };
            eprintln!(
                "created {} key {} ({}){bound}; it is shown only this once",
                key.role.as_str(),
                key.id,
                key.name
            );
            if key.role == Role::Service && key.apps.is_empty() {
                eprintln!(
                    "note: this service key is bound to no app, so it receives no tokens; use --app <id>"
                );
            }
        }
        AdminCommand::RevokeKey { id } => {
            if audit
                .revoke_key(&pool, &id, &metadata)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
            {
                // API processes cache verified keys: tell them now.
                let told = match config.nats.nats_url.as_ref() {
                    Some(url) => {
                        let client = hubkeeper_bus::connect_with(
                            url,
                            "hubkeeper-admin",
                            &config.nats.auth(),
                        )
                        .await?;
                        Broadcaster::new(client)
                            .publish(&Invalidation::ApiKey { key_id: id.clone() })
                            .await;
                        true
                    }
                    None => false,
                };
                if told {
                    eprintln!(
                        "revoked {id}: its dashboard sessions ended and API processes stopped accepting it"
                    );
                } else {
                    eprintln!(
                        "revoked {id}: its dashboard sessions ended now; without HK_NATS_URL here, API processes stop accepting the key within seconds"
                    );
                }
            } else {
                anyhow::bail!("no active key with id {id}");
            }
        }
        AdminCommand::ListKeys => {
            // Last use and open dashboard sessions tell which keys are still needed.
            for key in list_keys(&pool).await? {
                let state = key
                    .revoked_at
                    .map_or("active".to_string(), |r| format!("revoked {r}"));
                let used = key
                    .last_used_at
                    .map_or("never used".to_string(), |t| format!("last used {t}"));
                let apps = if key.apps.is_empty() {
                    "-".to_string()
                } else {
                    key.apps.join(",")
                };
                println!(
                    "{}\t{}\t{}\tapps {apps}\tcreated {}\t{state}\t{used}\t{} session(s)",
                    key.id, key.role, key.name, key.created_at, key.open_sessions
                );
            }
        }
    }
    Ok(())
}
