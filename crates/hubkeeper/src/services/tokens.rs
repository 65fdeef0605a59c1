//! The token services (vault, apps, tokens, the install flow, the HubSpot API proxy) from
//! configuration, for the API and the refresher roles.

use std::sync::Arc;
use std::time::Duration;

use hubkeeper_api::oauth::OAuthRateLimiter;
use hubkeeper_api::state::TokenServices;
use hubkeeper_bus::limiter::SharedRateLimiter;
use hubkeeper_core::notifications::NotificationService;
use hubkeeper_core::{
    AppService, Broadcaster, CommandBus, OAuthConfig, OAuthService, ProxyConfig, ProxyService,
    TokenConfig, TokenDeps, TokenService, Vault,
};
use hubkeeper_domain::DomainServices;
use hubkeeper_hubspot::{HubSpotClient, HubSpotConfig};
use sqlx::PgPool;

use crate::config::Config;

/// The HubSpot client every role shares (one connection pool, one per-account rate limiter).
pub fn hubspot_client(config: &Config) -> anyhow::Result<HubSpotClient> {
    Ok(HubSpotClient::new(HubSpotConfig {
        api_base_url: config.hubspot.hubspot_api_url.clone(),
        app_base_url: config.hubspot.hubspot_app_url.clone(),
        ..HubSpotConfig::default()
    })?)
}

/// `None` (with a warning) when no master keys are configured: the process then serves no
/// token routes, which is right for roles that never touch secrets (relay, projector).
pub async fn build(
    config: &Config,
    pool: &PgPool,
    nats: &async_nats::Client,
) -> anyhow::Result<Option<TokenServices>> {
    let Some(keyring) = crate::keys::keyring(config)? else {
        tracing::warn!(
            "HK_MASTER_KEYS is not set: token, app and install routes answer 503 on this process"
        );
        return Ok(None);
    };
    let clock = DomainServices::system();
    let broadcaster = Broadcaster::new(nats.clone());
    let vault = Vault::start(pool.clone(), keyring, broadcaster.clone()).await;
    let bus = Arc::new(CommandBus::new(pool, clock.clone()));
    let notifications = NotificationService::new(
        pool.clone(),
        bus.clone(),
        vault.clone(),
        hubkeeper_bus::jetstream(nats.clone()),
    );
    let apps = AppService::start(
        pool.clone(),
        bus.clone(),
        vault.clone(),
        broadcaster.clone(),
    )
    .await;
    let hubspot = hubspot_client(config)?;
    let tokens = TokenService::start(TokenDeps {
        pool: pool.clone(),
        bus,
        vault: vault.clone(),
        apps: apps.clone(),
        hubspot: hubspot.clone(),
        broadcaster,
        clock: clock.clone(),
        config: TokenConfig {
            default_min_validity: config.tokens.token_min_validity,
            failure_cache: config.tokens.token_failure_cache,
            cache_max_age: config.tokens.token_cache_max_age,
            lock_timeout: config
                .tokens
                .refresh_lock_timeout
                .max(Duration::from_secs(1)),
            removal_min_notice: config.tokens.removal_min_notice,
            ..TokenConfig::default()
        },
    })
    .await;
    let shared_limits = SharedRateLimiter::new(pool.clone());
    let proxy = ProxyService::new(
        tokens.clone(),
        shared_limits.clone(),
        ProxyConfig {
            api_base: config.hubspot.hubspot_api_url.clone(),
            portal_max: config.proxy.proxy_rate_limit_max,
            portal_window: config.proxy.proxy_rate_limit_window,
            guard: config.proxy.proxy_rate_limit_guard,
            max_wait: config.proxy.proxy_max_wait,
            request_timeout: config.proxy.proxy_timeout.max(Duration::from_secs(1)),
        },
    )?;
    let oauth = OAuthService::start(
        pool.clone(),
        apps.clone(),
        tokens.clone(),
        vault,
        hubspot,
        clock,
        OAuthConfig {
            state_secret: config.oauth.state_secret.clone(),
            ..OAuthConfig::default()
        },
    )
    .await?;
    Ok(Some(TokenServices {
        apps,
        tokens,
        oauth,
        proxy,
        notifications,
        oauth_limiter: Arc::new(OAuthRateLimiter::new(
            shared_limits,
            config.oauth.oauth_rate_limit_max,
            config.oauth.oauth_rate_limit_window,
        )),
        public_url: config
            .http
            .public_url
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/').to_owned()),
    }))
}
