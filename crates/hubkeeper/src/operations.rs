//! Issue 7 wiring: the billing, settings, backup and self-test services of a process, their
//! background tasks, and the `backup`, `restore` and `selftest` commands.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use hubkeeper_api::lifecycle::LifecycleServices;
use hubkeeper_api::oauth::OAuthRateLimiter;
use hubkeeper_api::operations::OperationsServices;
use hubkeeper_core::backup::{self, BackupConfig, BackupService, MaintenanceScheduler};
use hubkeeper_core::billing::projection::{BillingProjector, BillingProjectorConfig};
use hubkeeper_core::billing::BillingService;
use hubkeeper_core::selftest::{self, RateLimitProbe, SelfTestDeps, StepStatus};
use hubkeeper_core::settings::{
    ControlConfig, ControlListener, LiveSettings, SettingsApplier, SettingsService,
    SettingsSnapshot,
};
use hubkeeper_core::CommandBus;
use hubkeeper_domain::{AppId, DomainServices};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::roles::RoleSet;

/// What one process runs for issue 7.
pub struct Operations {
    /// The services behind the routes.
    pub services: OperationsServices,
    nats: async_nats::Client,
    appliers: Vec<Arc<dyn SettingsApplier>>,
    resync: Duration,
}

/// The log filter follows the logging settings.
struct LogFilter;

impl SettingsApplier for LogFilter {
    fn apply(&self, settings: &SettingsSnapshot) {
        let logging = settings.values.logging;
        match hubkeeper_telemetry::set_runtime_log_settings(
            logging.level.map(|l| l.as_str()),
            logging.verbose_requests,
        ) {
            Ok(filter) => tracing::info!(%filter, "log settings applied"),
            Err(e) => tracing::warn!(error = %e, "log settings not applied"),
        }
    }
}

/// Where backups go.
pub fn backup_dir(config: &Config) -> PathBuf {
    config
        .backups
        .backup_dir
        .clone()
        .unwrap_or_else(|| config.data.data_dir.join("backups"))
}

fn backup_service(config: &Config, pool: &PgPool, database_url: &SecretString) -> BackupService {
    BackupService::new(
        pool.clone(),
        database_url.clone(),
        BackupConfig {
            dir: backup_dir(config),
            pg_bin_dir: config.backups.pg_bin_dir.clone(),
        },
    )
}

fn bus_and_billing(pool: &PgPool) -> (Arc<CommandBus>, BillingService) {
    let clock = DomainServices::system();
    let bus = Arc::new(CommandBus::new(pool, clock.clone()));
    let billing = BillingService::new(pool.clone(), bus.clone(), clock);
    (bus, billing)
}

/// Builds the services of a process running `roles`.
pub fn build(
    config: &Config,
    pool: &PgPool,
    nats: &async_nats::Client,
    database_url: &SecretString,
    lifecycle: Option<&LifecycleServices>,
) -> anyhow::Result<Operations> {
    let (bus, billing) = bus_and_billing(pool);
    let settings = SettingsService::new(bus, Some(nats.clone()));
    let limiter = lifecycle.map(|l| l.oauth_limiter.clone());
    let mut appliers: Vec<Arc<dyn SettingsApplier>> = vec![Arc::new(LogFilter)];
    if let Some(limiter) = &limiter {
        appliers.push(limiter.clone());
    }
    let selftest = SelfTestDeps {
        pool: pool.clone(),
        apps: lifecycle.map(|l| l.apps.clone()),
        oauth: lifecycle.map(|l| l.oauth.clone()),
        tokens: lifecycle.map(|l| l.tokens.clone()),
        hubspot: crate::lifecycle::hubspot_client(config)?,
        rate_limiter: limiter.map(|l| l as Arc<dyn RateLimitProbe>),
    };
    Ok(Operations {
        services: OperationsServices {
            billing,
            settings,
            live: LiveSettings::default(),
            backups: Some(backup_service(config, pool, database_url)),
            selftest,
        },
        nats: nats.clone(),
        appliers,
        resync: config.settings.settings_resync.max(Duration::from_secs(1)),
    })
}

/// Starts the background tasks: the settings listener everywhere; the billing projection and
/// the maintenance schedule (backups, pruning) in projector processes, one of which leads each.
pub async fn spawn(
    operations: &Operations,
    roles: RoleSet,
    pool: &PgPool,
    tasks: &mut JoinSet<anyhow::Result<&'static str>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let services = &operations.services;
    let listener = ControlListener::new(
        services.settings.clone(),
        operations.nats.clone(),
        operations.appliers.clone(),
        services.live.clone(),
        ControlConfig {
            resync_interval: operations.resync,
        },
    )
    .spawn(shutdown.clone())
    .await
    .map_err(|e| anyhow!("cannot follow the settings: {e}"))?;
    tasks.spawn(async move {
        listener
            .await
            .map_err(|e| anyhow!("settings listener failed: {e}"))?;
        Ok("settings")
    });
    if roles.projector {
        let projector = BillingProjector::new(
            pool.clone(),
            services.billing.clone(),
            BillingProjectorConfig::default(),
        );
        let token = shutdown.clone();
        tasks.spawn(async move {
            projector.run(token).await;
            Ok("billing-projection")
        });
        if let Some(backups) = services.backups.clone() {
            let scheduler = MaintenanceScheduler::new(
                pool.clone(),
                backups,
                services.billing.clone(),
                services.live.clone(),
            );
            let token = shutdown.clone();
            tasks.spawn(async move {
                scheduler.run(token).await;
                Ok("maintenance")
            });
        }
    }
    Ok(())
}

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
    let keep = match keep {
        Some(keep) => keep,
        None => {
            let (bus, _) = bus_and_billing(&pool);
            SettingsService::new(bus, None)
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
        let nats = hubkeeper_bus::connect(&nats_url, "hubkeeper-restore").await?;
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
        Some(url) => Some(hubkeeper_bus::connect(url, "hubkeeper-selftest").await?),
        None => None,
    };
    let lifecycle = match &nats {
        Some(nats) => crate::lifecycle::build(config, &pool, nats).await?,
        None => None,
    };
    // The limiter as every process configures it: from the stored settings.
    let (bus, _) = bus_and_billing(&pool);
    let stored = SettingsService::new(bus, None).current().await?;
    let limiter = Arc::new(OAuthRateLimiter::new(
        config.oauth.oauth_rate_limit_max,
        config.oauth.oauth_rate_limit_window,
    ));
    SettingsApplier::apply(limiter.as_ref(), &stored);
    let deps = SelfTestDeps {
        pool: pool.clone(),
        apps: lifecycle.as_ref().map(|l| l.apps.clone()),
        oauth: lifecycle.as_ref().map(|l| l.oauth.clone()),
        tokens: lifecycle.as_ref().map(|l| l.tokens.clone()),
        hubspot: crate::lifecycle::hubspot_client(config)?,
        rate_limiter: Some(limiter as Arc<dyn RateLimitProbe>),
    };
    let report = selftest::run(&deps, app).await;
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
