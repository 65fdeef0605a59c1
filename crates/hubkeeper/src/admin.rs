//! `hubkeeper admin …`: API key management from the command line (the first admin key has to
//! come from somewhere that does not need a key).

use clap::Subcommand;
use hubkeeper_api::auth::{create_key, revoke_key, Role};
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
    },
    /// Revokes an API key by id (`ak…`).
    RevokeKey { id: String },
    /// Lists API keys (never their secrets).
    ListKeys,
}

type KeyRow = (
    String,
    String,
    String,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
);

pub async fn run(config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    let pool = crate::roles::connect_store(config)?;
    hubkeeper_store::migrate(&pool).await?;
    match command {
        AdminCommand::CreateKey { role, name } => {
            let name = name.trim();
            if name.is_empty() {
                anyhow::bail!("--name must not be empty");
            }
            let key = create_key(&pool, name, role, "cli").await?;
            println!("{}", key.token.expose_secret());
            eprintln!(
                "created {} key {} ({}); it is shown only this once",
                key.role.as_str(),
                key.id,
                key.name
            );
        }
        AdminCommand::RevokeKey { id } => {
            if revoke_key(&pool, &id).await? {
                eprintln!("revoked {id} (processes stop accepting it within seconds)");
            } else {
                anyhow::bail!("no active key with id {id}");
            }
        }
        AdminCommand::ListKeys => {
            let rows: Vec<KeyRow> = sqlx::query_as(
                "SELECT id, name, role, created_at, revoked_at FROM api_keys ORDER BY created_at",
            )
            .fetch_all(&pool)
            .await?;
            for (id, name, role, created, revoked) in rows {
                let state = revoked.map_or("active".to_string(), |r| format!("revoked {r}"));
                println!("{id}\t{role}\t{name}\tcreated {created}\t{state}");
            }
        }
    }
    Ok(())
}
