//! `hubkeeper apps …`: app operations an operator may need without the dashboard, such as
//! resuming refreshes that HubSpot's refusal of the app's credentials parked.

use std::sync::Arc;

use anyhow::anyhow;
use chrono::Utc;
use clap::Subcommand;
use hubkeeper_core::broadcast::Invalidation;
use hubkeeper_core::{Broadcaster, CommandBus};
use hubkeeper_domain::app::AppCommand;
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_domain::{AppId, DomainServices};

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Resumes the refreshes of an app parked after HubSpot rejected its client credentials
    /// (recorded as `AppRefreshesResumed`, actor `system`, with the operator's reason).
    ResumeRefreshes {
        /// The app's id (UUID).
        app_id: AppId,
        /// Why (kept with the event), e.g. "secret fixed in HubSpot".
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(config: &Config, command: AppsCommand) -> anyhow::Result<()> {
    let pool = crate::roles::connect_store(config)?;
    hubkeeper_store::migrate(&pool).await?;
    match command {
        AppsCommand::ResumeRefreshes { app_id, reason } => {
            let reason = reason.trim();
            if reason.is_empty() {
                anyhow::bail!("--reason must not be empty");
            }
            let bus = Arc::new(CommandBus::new(&pool, DomainServices::system()));
            let (app, _) = bus.apps().load(&app_id.to_string()).await?;
            if app.app_id().is_none() {
                anyhow::bail!("no app {app_id}");
            }
            let metadata = EventMetadata::new(Actor::System, Utc::now())
                .reason(format!("command line: {reason}"));
            bus.apps()
                .execute(&app_id.to_string(), AppCommand::ResumeRefreshes, &metadata)
                .await
                .map_err(|e| anyhow!("{}", hubkeeper_core::CoreError::from(e)))?;
            // Processes cache whether an app is parked: tell them now, not in a minute.
            if let Some(url) = config.nats.nats_url.as_ref() {
                let client =
                    hubkeeper_bus::connect_with(url, "hubkeeper-apps", &config.nats.auth()).await?;
                Broadcaster::new(client)
                    .publish(&Invalidation::App {
                        app_id: app_id.to_string(),
                    })
                    .await;
            }
            eprintln!("resumed the refreshes of app {app_id}");
        }
    }
    Ok(())
}
