//! Billing, runtime settings, backups and the self-test: the services of a process and their
//! background tasks (the settings listener everywhere; the billing projection and the
//! maintenance schedule in projector processes).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use hubkeeper_api::state::{MaintenanceServices, TokenServices};
use hubkeeper_core::backup::{BackupConfig, BackupService, MaintenanceScheduler};
use hubkeeper_core::billing::projection::{BillingProjector, BillingProjectorConfig};
use hubkeeper_core::billing::BillingService;
use hubkeeper_core::selftest::{RateLimitProbe, SelfTestDeps};
use hubkeeper_core::settings::{
    ControlConfig, ControlListener, LiveSettings, SettingsApplier, SettingsService,
    SettingsSnapshot,
};
use hubkeeper_core::CommandBus;
use hubkeeper_domain::DomainServices;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::roles::RoleSet;

/// What one process runs for billing and maintenance.
pub struct Maintenance {
    /// Plans, subscriptions, usage, quotas, the billing overview.
    pub billing: BillingService,
    /// Settings, backups, the self-test.
    pub services: MaintenanceServices,
    nats: async_nats::Client,
    appliers: Vec<Arc<dyn SettingsApplier>>,
    resync: Duration,
    /// How long processed webhook events are kept for deduplication.
    webhook_seen_retention: Duration,
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

pub(crate) fn backup_service(
    config: &Config,
    pool: &PgPool,
    database_url: &SecretString,
) -> BackupService {
    BackupService::new(
        pool.clone(),
        database_url.clone(),
        BackupConfig {
            dir: backup_dir(config),
            pg_bin_dir: config.backups.pg_bin_dir.clone(),
        },
    )
}

pub(crate) fn bus_and_billing(pool: &PgPool) -> (Arc<CommandBus>, BillingService) {
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
    tokens: Option<&TokenServices>,
) -> anyhow::Result<Maintenance> {
    let (bus, billing) = bus_and_billing(pool);
    let settings = SettingsService::new(bus, pool.clone(), Some(nats.clone()));
    let limiter = tokens.map(|t| t.oauth_limiter.clone());
    let mut appliers: Vec<Arc<dyn SettingsApplier>> = vec![Arc::new(LogFilter)];
    if let Some(limiter) = &limiter {
        appliers.push(limiter.clone());
    }
    let selftest = SelfTestDeps {
        pool: pool.clone(),
        apps: tokens.map(|t| t.apps.clone()),
        oauth: tokens.map(|t| t.oauth.clone()),
        tokens: tokens.map(|t| t.tokens.clone()),
        hubspot: super::tokens::hubspot_client(config)?,
        rate_limiter: limiter.map(|l| l as Arc<dyn RateLimitProbe>),
    };
    Ok(Maintenance {
        billing,
        services: MaintenanceServices {
            settings,
            live: LiveSettings::default(),
            backups: Some(backup_service(config, pool, database_url)),
            selftest,
        },
        nats: nats.clone(),
        appliers,
        resync: config.settings.settings_resync.max(Duration::from_secs(1)),
        webhook_seen_retention: config.webhook_worker.webhook_seen_retention,
    })
}

/// Starts the background tasks: the settings listener everywhere; the billing projection and
/// the maintenance schedule (backups, pruning) in projector processes, one of which leads each.
pub async fn spawn(
    maintenance: &Maintenance,
    roles: RoleSet,
    pool: &PgPool,
    tasks: &mut JoinSet<anyhow::Result<&'static str>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let services = &maintenance.services;
    let listener = ControlListener::new(
        services.settings.clone(),
        maintenance.nats.clone(),
        maintenance.appliers.clone(),
        services.live.clone(),
        ControlConfig {
            resync_interval: maintenance.resync,
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
            maintenance.billing.clone(),
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
                maintenance.billing.clone(),
                services.live.clone(),
            )
            .with_webhook_seen_retention(maintenance.webhook_seen_retention);
            let token = shutdown.clone();
            tasks.spawn(async move {
                scheduler.run(token).await;
                Ok("maintenance")
            });
        }
    }
    Ok(())
}
