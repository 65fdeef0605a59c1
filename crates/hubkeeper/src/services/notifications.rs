//! The notifier role from configuration.

use std::time::Duration;

use hubkeeper_api::state::TokenServices;
use hubkeeper_core::notifications::worker::Notifier;
use hubkeeper_core::notifications::NotifierConfig;

use crate::config::Config;

/// The notifier's settings from the configuration, for a process with `pool_size` connections.
pub fn notifier_config(config: &Config, pool_size: u32) -> NotifierConfig {
    let settings = &config.notifier;
    NotifierConfig {
        // Each delivery holds a connection only briefly, but not more than the pool has.
        concurrency: settings
            .notifier_concurrency
            .clamp(1, (pool_size as usize).max(1) * 4),
        fanout_concurrency: settings.notifier_fanout_concurrency.max(1),
        ack_wait: settings.notifier_ack_wait,
        timeout: settings.notifier_timeout.max(Duration::from_millis(100)),
        backoff: settings.notifier_backoff.0.clone(),
        jitter: settings.notifier_jitter.clamp(0.0, 1.0),
        max_retry_after: settings.notifier_max_retry_after,
    }
}

/// The notifier, on the token services' store and vault, for a process with `pool_size`
/// connections.
pub fn notifier(
    config: &Config,
    services: &TokenServices,
    pool_size: u32,
) -> anyhow::Result<Notifier> {
    Ok(services
        .notifications
        .notifier(notifier_config(config, pool_size))?)
}
