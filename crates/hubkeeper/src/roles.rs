//! Starting roles: the API and the workers, alone or together, against given Postgres and NATS.

use std::time::Duration;

use anyhow::{anyhow, Context};
use hubkeeper_bus::{EventRelay, RelayConfig, StreamsConfig};
use hubkeeper_store::PoolConfig;
use hubkeeper_workers::scheduler::{RefreshScheduler, SchedulerConfig};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Worker roles that can run as processes of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkerRole {
    /// Copies the event store to JetStream in commit order (one active, others stand by).
    Relay,
    /// Enqueues refreshes of expiring tokens (one active, others stand by).
    Scheduler,
    /// Carries out queued refreshes (any number share the queue).
    Refresher,
    /// Applies events to the read models (any number share the stream).
    Projector,
    /// Processes stored webhook batches (any number share the queue).
    Webhooks,
    /// Delivers notifications to the apps' endpoints (any number share the queue).
    Notifier,
    /// Every worker role in one process.
    All,
}

/// Which roles a process runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoleSet {
    pub api: bool,
    pub relay: bool,
    pub scheduler: bool,
    pub refresher: bool,
    pub projector: bool,
    pub webhooks: bool,
    pub notifier: bool,
}

impl RoleSet {
    pub fn api_only() -> Self {
        Self {
            api: true,
            ..Self::default()
        }
    }

    pub fn everything() -> Self {
        Self {
            api: true,
            relay: true,
            scheduler: true,
            refresher: true,
            projector: true,
            webhooks: true,
            notifier: true,
        }
    }

    fn label(&self) -> String {
        let mut parts = Vec::new();
        if self.api {
            parts.push("api");
        }
        if self.relay {
            parts.push("relay");
        }
        if self.scheduler {
            parts.push("scheduler");
        }
        if self.refresher {
            parts.push("refresher");
        }
        if self.projector {
            parts.push("projector");
        }
        if self.webhooks {
            parts.push("webhooks");
        }
        if self.notifier {
            parts.push("notifier");
        }
        parts.join("+")
    }
}

impl From<WorkerRole> for RoleSet {
    fn from(role: WorkerRole) -> Self {
        match role {
            WorkerRole::Relay => Self {
                relay: true,
                ..Self::default()
            },
            WorkerRole::Scheduler => Self {
                scheduler: true,
                ..Self::default()
            },
            WorkerRole::Refresher => Self {
                refresher: true,
                ..Self::default()
            },
            WorkerRole::Projector => Self {
                projector: true,
                ..Self::default()
            },
            WorkerRole::Webhooks => Self {
                webhooks: true,
                ..Self::default()
            },
            WorkerRole::Notifier => Self {
                notifier: true,
                ..Self::default()
            },
            WorkerRole::All => Self {
                api: false,
                ..Self::everything()
            },
        }
    }
}

pub fn connect_store(config: &Config) -> anyhow::Result<PgPool> {
    let url = config.store.database_url.as_ref().ok_or_else(|| {
        anyhow!("DATABASE_URL is not set (only `hubkeeper up` starts a local Postgres)")
    })?;
    pool_for(config, url, "hubkeeper", false)
}

fn pool_for(
    config: &Config,
    url: &SecretString,
    name: &str,
    runs_refresher: bool,
) -> anyhow::Result<PgPool> {
    Ok(hubkeeper_store::connect(
        url,
        &PoolConfig {
            max_connections: config.store.max_connections(runs_refresher),
            application_name: name.into(),
            ..PoolConfig::default()
        },
    )?)
}

/// A single role (or several) as its own process, against configured servers.
pub async fn run_standalone(config: &Config, roles: RoleSet) -> anyhow::Result<()> {
    let shutdown = crate::shutdown::on_signal()?;
    let database_url = config.store.database_url.clone().ok_or_else(|| {
        anyhow!("DATABASE_URL is not set (only `hubkeeper up` starts a local Postgres)")
    })?;
    let nats_url =
        config.nats.nats_url.clone().ok_or_else(|| {
            anyhow!("NATS_URL is not set (only `hubkeeper up` starts a local NATS)")
        })?;
    run_roles(config, roles, &database_url, &nats_url, shutdown).await
}

/// Refresher settings from the configuration, for a process with `pool_size` connections.
fn refresher_config(
    config: &Config,
    pool_size: u32,
) -> hubkeeper_workers::refresher::RefresherConfig {
    hubkeeper_workers::refresher::RefresherConfig {
        lead_time: config.tokens.refresh_lead,
        max_deliver: config.refresher.refresher_max_deliver,
        backoff: config.refresher.refresher_backoff.0.clone(),
        ack_wait: config.refresher.refresher_ack_wait,
        // A refresh holds a session for its advisory lock and needs another for the work:
        // more refreshes in flight than a third of the pool starves them all of connections.
        concurrency: config
            .refresher
            .refresher_concurrency
            .min((pool_size as usize / 3).max(1)),
    }
}

/// Runs `roles` until `shutdown` or until one of them fails (then stops the others).
pub async fn run_roles(
    config: &Config,
    roles: RoleSet,
    database_url: &SecretString,
    nats_url: &SecretString,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let label = roles.label();
    let metrics = hubkeeper_telemetry::metrics_handle()?;
    let pool = pool_for(
        config,
        database_url,
        &format!("hubkeeper-{label}"),
        roles.refresher,
    )?;
    wait_for("postgres migrations", &shutdown, || async {
        hubkeeper_store::migrate(&pool).await
    })
    .await?;
    let nats =
        hubkeeper_bus::connect_with(nats_url, &format!("hubkeeper-{label}"), &config.nats.auth())
            .await?;
    let js = hubkeeper_bus::jetstream(nats.clone());
    let streams = StreamsConfig {
        duplicate_window: config.nats.nats_duplicate_window,
        replicas: config.nats.nats_replicas,
        refresh_dedup_window: config.tokens.refresh_lead.max(Duration::from_secs(60)),
    };
    wait_for("JetStream streams", &shutdown, || async {
        hubkeeper_bus::ensure_streams(&js, &streams).await
    })
    .await?;

    // Token services (vault, tokens, apps, HubSpot client); the refresher drives `tokens`.
    let tokens = crate::services::tokens::build(config, &pool, &nats).await?;
    let usage_flusher = tokens
        .as_ref()
        .map(|t| t.tokens.usage_flusher(shutdown.clone()));
    let webhooks =
        crate::services::webhooks::ingest(config, &js, tokens.as_ref(), &shutdown).await?;
    // Access (keys, sessions), runtime settings, billing and backups.
    let auth = std::sync::Arc::new(
        hubkeeper_api::auth::Authenticator::new(pool.clone())
            .with_sessions(crate::services::access::session_settings(config)),
    );
    // A key revoked by any process stops working here at once.
    auth.follow_revocations(&hubkeeper_core::Broadcaster::new(nats.clone()))
        .await;
    let audit = hubkeeper_core::access::AuditLog::new(std::sync::Arc::new(
        hubkeeper_core::CommandBus::new(&pool, hubkeeper_domain::DomainServices::system()),
    ));
    let server_config = std::sync::Arc::new(crate::services::access::server_config_view(&label));
    let maintenance =
        crate::services::maintenance::build(config, &pool, &nats, database_url, tokens.as_ref())?;
    let mut tasks: JoinSet<anyhow::Result<&'static str>> = JoinSet::new();
    let state = hubkeeper_api::AppState::new(hubkeeper_api::state::Inner {
        pool: pool.clone(),
        nats: nats.clone(),
        jetstream: js.clone(),
        metrics,
        auth,
        audit,
        clients: hubkeeper_api::client_addr::ClientPolicy {
            trusted_proxies: std::sync::Arc::new(config.http.trusted_proxies.0.clone()),
            limiter: hubkeeper_bus::limiter::SharedRateLimiter::new(pool.clone()),
            login_max: config.http.login_rate_limit_max.max(1),
            login_window: config
                .http
                .login_rate_limit_window
                .max(Duration::from_secs(1)),
            webhook_failures: hubkeeper_api::client_addr::WebhookFailureLimit::new(
                config.webhook_ingest.webhook_failure_limit_max,
                config.webhook_ingest.webhook_failure_limit_window,
            ),
        },
        server_config,
        tokens: tokens.clone(),
        webhooks,
        billing: Some(maintenance.billing.clone()),
        maintenance: Some(maintenance.services.clone()),
        expiring_window: chrono::Duration::from_std(
            config
                .dashboard
                .overview_expiring_within
                .max(Duration::from_secs(1)),
        )
        .unwrap_or(chrono::Duration::MAX),
        refresh_lead: chrono::Duration::from_std(config.tokens.refresh_lead)
            .unwrap_or(chrono::Duration::MAX),
    });
    if roles.api {
        let listener = tokio::net::TcpListener::bind(config.http.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.http.bind))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "API listening");
        let token = shutdown.clone();
        let state = state.clone();
        let config_stream_recheck = config.http.stream_recheck.max(Duration::from_secs(1));
        let config_shutdown_deadline = config.http.shutdown_deadline;
        tasks.spawn(async move {
            let options = hubkeeper_api::ServeOptions {
                stream_recheck: config_stream_recheck,
                shutdown_deadline: config_shutdown_deadline,
            };
            hubkeeper_api::serve_with(listener, state, token, options).await?;
            Ok("api")
        });
    } else if let Some(bind) = config.metrics.metrics_bind {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        tracing::info!(addr = %bind, "health and metrics listening");
        let token = shutdown.clone();
        tasks.spawn(async move {
            hubkeeper_api::serve_health(listener, state, token).await?;
            Ok("metrics")
        });
    }
    if roles.relay {
        let relay = EventRelay::new(
            pool.clone(),
            js.clone(),
            RelayConfig {
                batch_size: config.relay.relay_batch_size,
                ..RelayConfig::default()
            },
        );
        let token = shutdown.clone();
        tasks.spawn(async move {
            relay.run(token).await;
            Ok("relay")
        });
    }
    if let Some(flusher) = usage_flusher {
        tasks.spawn(async move {
            flusher.await;
            Ok("token-usage")
        });
    }
    if roles.scheduler {
        let scheduler = RefreshScheduler::new(
            pool.clone(),
            js.clone(),
            SchedulerConfig {
                lead_time: config.tokens.refresh_lead,
                tick: config.schedule.scheduler_tick,
                idle_after: config.schedule.refresh_idle_after,
                ..SchedulerConfig::default()
            },
        );
        let token = shutdown.clone();
        tasks.spawn(async move {
            scheduler.run(token).await;
            Ok("scheduler")
        });
    }
    if roles.refresher {
        let Some(services) = tokens.as_ref() else {
            anyhow::bail!("the refresher needs HK_MASTER_KEYS to open and seal tokens");
        };
        let worker = hubkeeper_workers::refresher::RefreshWorker::new(
            js.clone(),
            std::sync::Arc::new(crate::refresh_executor::TokenServiceRefresher(
                services.tokens.clone(),
            )),
            refresher_config(config, pool.options().get_max_connections()),
        );
        let token = shutdown.clone();
        tasks.spawn(async move {
            worker.run(token).await;
            Ok("refresher")
        });
        // Revokes and disconnects scheduled with notice go through the same token service.
        let removals = hubkeeper_core::tokens::ScheduledRemovals::new(
            pool.clone(),
            services.tokens.clone(),
            hubkeeper_core::tokens::ScheduledRemovalConfig {
                poll: config.tokens.removal_poll.max(Duration::from_millis(200)),
                ..hubkeeper_core::tokens::ScheduledRemovalConfig::default()
            },
        );
        let token = shutdown.clone();
        tasks.spawn(async move {
            removals.run(token).await;
            Ok("scheduled-removals")
        });
    }
    if roles.projector {
        let projector = crate::services::projections::projector(config, &pool, &js);
        let token = shutdown.clone();
        tasks.spawn(async move {
            projector.run(token).await;
            Ok("projector")
        });
    }
    if roles.webhooks {
        let worker = crate::services::webhooks::worker(config, &pool, &js);
        let token = shutdown.clone();
        tasks.spawn(async move {
            worker.run(token).await;
            Ok("webhooks")
        });
    }
    if roles.notifier {
        let Some(services) = tokens.as_ref() else {
            anyhow::bail!(
                "the notifier needs HK_MASTER_KEYS to open the endpoints' signing secrets"
            );
        };
        let notifier = crate::services::notifications::notifier(
            config,
            services,
            pool.options().get_max_connections(),
        )?;
        let token = shutdown.clone();
        tasks.spawn(async move {
            notifier.run(token).await;
            Ok("notifier")
        });
    }
    // Every process follows the settings; the projector role also runs billing and backups.
    crate::services::maintenance::spawn(&maintenance, roles, &pool, &mut tasks, &shutdown).await?;
    tracing::info!(roles = %label, "roles started");

    let mut failure = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(role))) => {
                    if !shutdown.is_cancelled() {
                        failure = Some(anyhow!("role {role} stopped unexpectedly"));
                        break;
                    }
                }
                Some(Ok(Err(e))) => { failure = Some(e); break; }
                Some(Err(e)) => { failure = Some(anyhow!("a role panicked: {e}")); break; }
            }
        }
    }
    shutdown.cancel();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Err(e)) = joined {
            tracing::warn!(error = %e, "role ended with an error during shutdown");
        }
    }
    pool.close().await;
    tracing::info!(roles = %label, "stopped");
    failure.map_or(Ok(()), Err)
}

/// Retries a start-up step (a dependency may still be coming up) until it works or shutdown.
async fn wait_for<F, Fut, E>(
    what: &str,
    shutdown: &CancellationToken,
    mut step: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match step().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "{what} not ready; retrying in {delay:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(anyhow!("shut down while waiting for {what}")),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
