//! The maintenance commands: `hubkeeper backup`, `hubkeeper restore` and `hubkeeper selftest`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use hubkeeper_api::oauth::OAuthRateLimiter;
use hubkeeper_core::access::AuditLog;
use hubkeeper_core::backup::{self, BackupConfig, BackupService};
use hubkeeper_core::selftest::{self, RateLimitProbe, SelfTestDeps, StepStatus};
use hubkeeper_core::settings::{SettingsApplier, SettingsService};
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_domain::operations::{BackupTrigger, OperationCommand};
use hubkeeper_domain::AppId;

use crate::config::Config;
use crate::services::maintenance::{backup_service, bus_and_billing};

/// `hubkeeper backup`: one backup now, keeping the newest `keep` (default: the setting).
pub async fn backup_command(
    config: &Config,
    out: Option<PathBuf>,
    keep: Option<u32>,
) -> anyhow::Result<()> {
    let database_url = config
        .store
        .database_url
        .clone()
        .ok_or_else(|| anyhow!("DATABASE_URL is not set"))?;
    let pool = crate::roles::connect_store(config)?;
    hubkeeper_store::migrate(&pool).await?;
    let (bus, _) = bus_and_billing(&pool);
    AuditLog::new(bus.clone())
        .operation(
            OperationCommand::RecordBackupStarted {
                trigger: BackupTrigger::CommandLine,
            },
            &EventMetadata::new(Actor::CommandLine, chrono::Utc::now()),
        )
        .await?;
    let keep = match keep {
        Some(keep) => keep,
        None => {
            SettingsService::new(bus, pool.clone(), None)
                .current()
                .await?
                .values
                .backups
                .keep
        }
    };
    let mut service = backup_service(config, &pool, &database_url);
    if let Some(out) = out {
        service = BackupService::new(
            pool.clone(),
            database_url,
            BackupConfig {
                dir: out,
                pg_bin_dir: config.backups.pg_bin_dir.clone(),
            },
        );
    }
    let outcome = service.backup("cli", keep).await?;
    println!("{}", outcome.file.display());
    for removed in &outcome.removed {
        eprintln!("removed old backup {}", removed.display());
    }
    pool.close().await;
    Ok(())
}

/// `hubkeeper restore <file>`: into the empty database at `DATABASE_URL`.
pub async fn restore_command(
    config: &Config,
    file: &Path,
    purge_events_stream: bool,
) -> anyhow::Result<()> {
    let database_url = config
        .store
        .database_url
        .clone()
        .ok_or_else(|| anyhow!("DATABASE_URL is not set"))?;
    let outcome =
        backup::restore(file, &database_url, config.backups.pg_bin_dir.as_deref()).await?;
    println!(
        "restored {} events from {} transactions{}; relay cursor reset: the relay republishes \
         the history on its next start",
        outcome.events,
        outcome.transactions,
        if outcome.renumbered_transactions {
            format!(
                "; transaction ids renumbered for this cluster ({} reader cursor(s) mapped)",
                outcome.cursors_mapped
            )
        } else {
            String::new()
        }
    );
    if purge_events_stream {
        let nats_url = config
            .nats
            .nats_url
            .clone()
            .ok_or_else(|| anyhow!("--purge-events-stream needs NATS_URL"))?;
        let nats = hubkeeper_bus::connect_with(&nats_url, "hubkeeper-restore", &config.nats.auth())
            .await?;
        let js = hubkeeper_bus::jetstream(nats);
        let stream = js
            .get_stream(hubkeeper_bus::EVENTS_STREAM)
            .await
            .context("cannot open the events stream")?;
        let purged = stream
            .purge()
            .await
            .context("cannot purge the events stream")?;
        println!(
            "purged {} message(s) from {}",
            purged.purged,
            hubkeeper_bus::EVENTS_STREAM
        );
    }
    Ok(())
}

/// `hubkeeper selftest`: runs the integration self-test with this configuration.
pub async fn selftest_command(
    config: &Config,
    app: Option<AppId>,
    json: bool,
) -> anyhow::Result<()> {
    let pool = crate::roles::connect_store(config)?;
    hubkeeper_store::migrate(&pool).await?;
    let nats = match &config.nats.nats_url {
        Some(url) => {
            Some(hubkeeper_bus::connect_with(url, "hubkeeper-selftest", &config.nats.auth()).await?)
        }
        None => None,
    };
    let tokens = match &nats {
        Some(nats) => crate::services::tokens::build(config, &pool, nats).await?,
        None => None,
    };
    // The limiter as every process configures it: from the stored settings.
    let (bus, _) = bus_and_billing(&pool);
    let stored = SettingsService::new(bus.clone(), pool.clone(), None)
        .current()
        .await?;
    let limiter = Arc::new(OAuthRateLimiter::new(
        hubkeeper_bus::limiter::SharedRateLimiter::new(pool.clone()),
        config.oauth.oauth_rate_limit_max,
        config.oauth.oauth_rate_limit_window,
    ));
    SettingsApplier::apply(limiter.as_ref(), &stored);
    let deps = SelfTestDeps {
        pool: pool.clone(),
        apps: tokens.as_ref().map(|t| t.apps.clone()),
        oauth: tokens.as_ref().map(|t| t.oauth.clone()),
        tokens: tokens.as_ref().map(|t| t.tokens.clone()),
        hubspot: crate::services::tokens::hubspot_client(config)?,
        rate_limiter: Some(limiter as Arc<dyn RateLimitProbe>),
    };
    let report = selftest::run(&deps, app).await;
    AuditLog::new(bus)
        .operation(
            report.as_operation(),
            &EventMetadata::new(Actor::CommandLine, chrono::Utc::now()),
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "self-test against {}{}",
            report.hubspot_api_url,
            if report.simulator { " (simulator)" } else { "" }
        );
        for step in &report.steps {
            let mark = match step.status {
                StepStatus::Passed => "PASS",
                StepStatus::Failed => "FAIL",
                StepStatus::Skipped => "SKIP",
            };
            println!(
                "  {mark} {:<28} {:>6} ms  {}",
                step.name, step.duration_ms, step.detail
            );
        }
    }
    pool.close().await;
    match report.first_failure() {
        None => Ok(()),
        Some(step) => Err(anyhow!(
            "self-test failed at step {}: {}",
            step.name,
            step.detail
        )),
    }
}
