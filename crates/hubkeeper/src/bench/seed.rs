//! Bulk data for the scenarios that need more installations than the OAuth flow can install in
//! a bench's time: connects through the real command path (sealed tokens that the API can open),
//! and whole event histories cloned in SQL from one real installation (replay input).

use std::ops::Range;
use std::time::Instant;

use futures::StreamExt;
use hubkeeper_api::state::TokenServices;
use hubkeeper_domain::installation::{Connect, Installer};
use hubkeeper_domain::metadata::{Actor, EventMetadata};
use hubkeeper_domain::{AppId, HubId, InstallationId, UserId};
use secrecy::SecretString;
use sqlx::PgPool;

use super::stack::{Stack, HUB_BASE};
use crate::config::Config;

/// Records installations of one app through the token service, as the OAuth callback would
/// after a successful exchange (tokens sealed with the stack's master key). The simulator never
/// issued these tokens: they serve hand-outs and notifications, not refreshes.
pub struct Connector {
    services: TokenServices,
    vault: hubkeeper_core::Vault,
    app: AppId,
}

impl Connector {
    pub async fn new(config: &Config, stack: &Stack, app: &str) -> anyhow::Result<Self> {
        let mut config = config.clone();
        config.keys.master_keys = stack.var("HK_MASTER_KEYS").map(SecretString::from);
        let services = crate::services::tokens::build(&config, &stack.pool, &stack.nats)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no master keys for seeding"))?;
        let keyring = crate::keys::keyring(&config)?
            .ok_or_else(|| anyhow::anyhow!("no master keys for seeding"))?;
        Ok(Self {
            services,
            vault: hubkeeper_core::Vault::new(stack.pool.clone(), keyring),
            app: app.parse()?,
        })
    }

    /// Connects the accounts with indexes in `accounts` (hub `HUB_BASE + i`), `concurrency` at
    /// a time.
    pub async fn connect(
        &self,
        accounts: Range<u64>,
        concurrency: usize,
    ) -> anyhow::Result<Vec<InstallationId>> {
        let results: Vec<anyhow::Result<InstallationId>> = futures::stream::iter(accounts)
            .map(|i| self.connect_one(i))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn connect_one(&self, i: u64) -> anyhow::Result<InstallationId> {
        let app = self.app;
        let hub = HubId(HUB_BASE + i);
        let id = InstallationId::derive(app, hub, None);
        let now = chrono::Utc::now();
        let sealed = self
            .vault
            .seal_tokens(
                &id,
                &format!("bench-access-{}", uuid::Uuid::new_v4()),
                &format!("bench-refresh-{}", uuid::Uuid::new_v4()),
                now + chrono::Duration::hours(6),
            )
            .await?;
        let connect = Connect {
            app_id: app,
            hub_id: hub,
            user_id: None,
            hub_domain: format!("bench-{i}.example.com"),
            installer: Installer {
                user_id: Some(UserId(800_000_000 + i)),
                email: Some(format!("owner{i}@bench.example.com")),
            },
            scopes: vec!["crm.objects.contacts.read".into(), "oauth".into()],
            tokens: sealed,
            app_version: None,
            customer: None,
        };
        let metadata = EventMetadata::new(Actor::System, now);
        Ok(self
            .services
            .tokens
            .record_connect(connect, &metadata)
            .await?)
    }
}

/// Connects accounts `0..count` of `app` (see [`Connector`]).
pub async fn connect_installations(
    config: &Config,
    stack: &Stack,
    app: &str,
    count: u64,
    concurrency: usize,
) -> anyhow::Result<Vec<InstallationId>> {
    let started = Instant::now();
    let ids = Connector::new(config, stack, app)
        .await?
        .connect(0..count, concurrency)
        .await?;
    eprintln!(
        "connected {count} installations in {:.1}s ({:.0}/s)",
        started.elapsed().as_secs_f64(),
        count as f64 / started.elapsed().as_secs_f64()
    );
    Ok(ids)
}

/// Writes `installations` histories of `per_installation` events each, cloned from the real
/// connect of `template` (ids, hubs and domains replaced) followed by token refreshes, in
/// transactions of one generation each so the events interleave in the global order as a live
/// fleet's would.
pub async fn clone_histories(
    pool: &PgPool,
    template: &str,
    installations: u64,
    per_installation: u64,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let chunk = 50_000u64;
    let mut first = 0;
    while first < installations {
        let last = (first + chunk).min(installations);
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata)
             SELECT t.aggregate_type, n.id::text, 1, t.event_type, t.event_version,
                    json_build_object('InstallationConnected',
                        (t.payload -> 'InstallationConnected')::jsonb
                        || jsonb_build_object('installation_id', n.id, 'hub_id', $3::bigint + n.i,
                                              'hub_domain', 'clone-' || n.i || '.example.com')),
                    t.metadata
               FROM events t,
                    LATERAL (SELECT i, gen_random_uuid() AS id
                               FROM generate_series($4::bigint, $5::bigint - 1) i) n
              WHERE t.aggregate_id = $1 AND t.sequence = 1 AND t.event_type = $2",
        )
        .bind(template)
        .bind("InstallationConnected")
        .bind(70_000_000i64)
        .bind(first as i64)
        .bind(last as i64)
        .execute(pool)
        .await?;
        first = last;
    }
    for generation in 2..=per_installation as i64 {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata)
             SELECT aggregate_type, aggregate_id, $1, 'InstallationTokensRefreshed', '1.0',
                    json_build_object('InstallationTokensRefreshed', json_build_object(
                        'tokens', payload -> 'InstallationConnected' -> 'tokens',
                        'generation', $1,
                        'refreshed_at', now() + make_interval(mins => $1::int * 25))),
                    metadata
               FROM events
              WHERE event_type = 'InstallationConnected' AND sequence = 1 AND aggregate_id <> $2",
        )
        .bind(generation)
        .bind(template)
        .execute(pool)
        .await?;
        eprintln!(
            "  cloned generation {generation}/{per_installation} ({:.0}s)",
            started.elapsed().as_secs_f64()
        );
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(total as u64)
}
