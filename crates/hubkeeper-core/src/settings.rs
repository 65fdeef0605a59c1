//! Runtime settings (the dashboard's Settings page) and the control channel that makes every
//! process apply them within seconds, without a restart.
//!
//! Settings are events of the `Settings` aggregate (the store is the source of truth). After a
//! change the API publishes the new version on core NATS (`hk.control.settings`); every process
//! runs a [`ControlListener`] that then re-reads the settings from Postgres and applies them
//! through its [`SettingsApplier`]s (the OAuth rate limiter, the log filter) and notifies local
//! watchers (the backup schedule). Core NATS may drop a message (a process reconnecting at that
//! moment), so listeners also re-read the store at start-up, on `hk.control.reload`, and every
//! [`ControlConfig::resync_interval`]; versions (the aggregate's sequence) make re-application
//! idempotent and never let an older read win.
//!
//! `hk.control.clear-rate-limits` resets every process's rate-limit counters once per request
//! recorded in `rate_limit_resets`.
//!
//! **Control messages carry no values and no authority.** They only say "look at Postgres now":
//! whatever a message claims, a listener applies only what the store holds, so a forged or
//! replayed message (from anyone who can publish on `hk.control.>`) changes nothing.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use hubkeeper_domain::metadata::EventMetadata;
use hubkeeper_domain::settings::{
    Backups, Customized, Logging, OAuthRateLimit, SettingsCommand, SettingsValues, SETTINGS_ID,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::commands::CommandBus;
use crate::error::CoreError;

/// Prefix of every control subject (core NATS, not captured by a stream).
pub const CONTROL_SUBJECTS: &str = "hk.control.>";
/// New settings values.
pub const SETTINGS_SUBJECT: &str = "hk.control.settings";
/// Re-read the settings from the store.
pub const RELOAD_SUBJECT: &str = "hk.control.reload";
/// Reset every rate-limit counter.
pub const CLEAR_RATE_LIMITS_SUBJECT: &str = "hk.control.clear-rate-limits";

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ControlMessage {
    /// The settings changed: version `version` is in the store (a hint; the listener re-reads).
    Settings {
        /// Sequence of the settings aggregate after the change.
        version: u64,
    },
    /// Re-read the settings from the store.
    Reload,
    /// A reset of rate-limit counters was recorded: look for it in the store.
    ClearRateLimits,
}

impl ControlMessage {
    fn subject(&self) -> &'static str {
        match self {
            ControlMessage::Settings { .. } => SETTINGS_SUBJECT,
            ControlMessage::Reload => RELOAD_SUBJECT,
            ControlMessage::ClearRateLimits => CLEAR_RATE_LIMITS_SUBJECT,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ControlMessage::Settings { .. } => "settings",
            ControlMessage::Reload => "reload",
            ControlMessage::ClearRateLimits => "clear_rate_limits",
        }
    }
}

/// Something in a process that follows the settings.
pub trait SettingsApplier: Send + Sync {
    /// Applies new settings (called with the stored ones at start-up and after each change).
    /// Sections never customized should leave the process's own configuration in place.
    fn apply(&self, settings: &SettingsSnapshot);
    /// Forgets rate-limit counters; appliers without any ignore it.
    fn clear_rate_limits(&self) {}
}

/// The settings as the store has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingsSnapshot {
    /// The values in effect.
    pub values: SettingsValues,
    /// Sequence of the settings aggregate (0: never changed, defaults).
    pub version: u64,
    /// When they last changed.
    pub changed_at: Option<DateTime<Utc>>,
    /// Which sections were ever changed (the others follow each process's configuration).
    pub customized: Customized,
}

/// `PUT /v1/settings`: sections to replace; absent sections stay unchanged.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    /// OAuth callback rate limiting.
    #[serde(default)]
    pub oauth_rate_limit: Option<OAuthRateLimit>,
    /// Logging.
    #[serde(default)]
    pub logging: Option<Logging>,
    /// Backups.
    #[serde(default)]
    pub backups: Option<Backups>,
}

/// Reads and changes settings and publishes control messages. Cheap to clone.
#[derive(Clone)]
pub struct SettingsService {
    bus: Arc<CommandBus>,
    pool: PgPool,
    nats: Option<async_nats::Client>,
}

impl SettingsService {
    /// The service; without NATS (CLI tools) nothing is broadcast.
    pub fn new(bus: Arc<CommandBus>, pool: PgPool, nats: Option<async_nats::Client>) -> Self {
        Self { bus, pool, nats }
    }

    /// The newest recorded rate-limit reset (0: none yet).
    pub async fn latest_rate_limit_reset(&self) -> Result<i64, CoreError> {
        let latest: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM rate_limit_resets")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| CoreError::Unavailable(format!("Postgres: {e}")))?;
        Ok(latest.unwrap_or(0))
    }

    /// The current settings from the store.
    pub async fn current(&self) -> Result<SettingsSnapshot, CoreError> {
        let (settings, sequence) = self.bus.settings().load(SETTINGS_ID).await?;
        Ok(SettingsSnapshot {
            values: *settings.values(),
            version: sequence as u64,
            changed_at: settings.changed_at(),
            customized: settings.customized(),
        })
    }

    /// Applies a change and broadcasts the result to every process.
    pub async fn update(
        &self,
        change: SettingsChange,
        metadata: &EventMetadata,
    ) -> Result<SettingsSnapshot, CoreError> {
        self.bus
            .settings()
            .execute(
                SETTINGS_ID,
                SettingsCommand::Update {
                    oauth_rate_limit: change.oauth_rate_limit,
                    logging: change.logging,
                    backups: change.backups,
                },
                metadata,
            )
            .await?;
        let snapshot = self.current().await?;
        self.publish(&ControlMessage::Settings {
            version: snapshot.version,
        })
        .await?;
        Ok(snapshot)
    }

    /// Tells every process to re-read the settings from the store.
    pub async fn reload_everywhere(&self) -> Result<(), CoreError> {
        self.publish(&ControlMessage::Reload).await
    }

    /// Records a reset of rate-limit counters and tells every process to look for it.
    pub async fn clear_rate_limits_everywhere(&self) -> Result<(), CoreError> {
        sqlx::query("INSERT INTO rate_limit_resets DEFAULT VALUES")
            .execute(&self.pool)
            .await
            .map_err(|e| CoreError::Unavailable(format!("Postgres: {e}")))?;
        self.publish(&ControlMessage::ClearRateLimits).await
    }

    async fn publish(&self, message: &ControlMessage) -> Result<(), CoreError> {
        let Some(nats) = &self.nats else {
            return Ok(());
        };
        let payload = serde_json::to_vec(message)
            .map_err(|e| CoreError::Unavailable(format!("cannot encode control message: {e}")))?;
        nats.publish(message.subject(), payload.into())
            .await
            .map_err(|e| CoreError::Unavailable(format!("NATS: {e}")))?;
        // Flush so "published" means "on its way" before the API answers.
        nats.flush()
            .await
            .map_err(|e| CoreError::Unavailable(format!("NATS: {e}")))?;
        metrics::counter!("hk_control_published_total", "kind" => message.kind()).increment(1);
        Ok(())
    }
}

/// Settings of the listener.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// How often the store is re-read in case a broadcast was missed.
    pub resync_interval: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(60),
        }
    }
}

/// The settings a process applied last, for local watchers (e.g. the backup schedule).
#[derive(Clone)]
pub struct LiveSettings {
    tx: Arc<watch::Sender<SettingsSnapshot>>,
}

impl Default for LiveSettings {
    fn default() -> Self {
        let (tx, _) = watch::channel(SettingsSnapshot {
            values: SettingsValues::default(),
            version: 0,
            changed_at: None,
            customized: Customized::default(),
        });
        Self { tx: Arc::new(tx) }
    }
}

impl LiveSettings {
    /// The values applied last.
    pub fn get(&self) -> SettingsSnapshot {
        self.tx.borrow().clone()
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<SettingsSnapshot> {
        self.tx.subscribe()
    }
}

/// Applies settings in one process; see the module docs.
pub struct ControlListener {
    service: SettingsService,
    nats: async_nats::Client,
    appliers: Vec<Arc<dyn SettingsApplier>>,
    live: LiveSettings,
    applied: Mutex<Option<u64>>,
    /// The newest rate-limit reset acted on.
    resets_seen: Mutex<Option<i64>>,
    config: ControlConfig,
}

impl ControlListener {
    /// A listener applying through `appliers` and publishing to `live`.
    pub fn new(
        service: SettingsService,
        nats: async_nats::Client,
        appliers: Vec<Arc<dyn SettingsApplier>>,
        live: LiveSettings,
        config: ControlConfig,
    ) -> Self {
        Self {
            service,
            nats,
            appliers,
            live,
            applied: Mutex::new(None),
            resets_seen: Mutex::new(None),
            config,
        }
    }

    /// Subscribes, applies the stored settings, and follows changes until `shutdown`.
    pub async fn spawn(self, shutdown: CancellationToken) -> Result<JoinHandle<()>, CoreError> {
        let mut subscriber = self
            .nats
            .subscribe(CONTROL_SUBJECTS)
            .await
            .map_err(|e| CoreError::Unavailable(format!("NATS: {e}")))?;
        // Subscribed first: a change between the read and the subscription is not missed.
        self.resync(true).await;
        self.check_rate_limit_resets().await;
        Ok(tokio::spawn(async move {
            let mut resync = tokio::time::interval(self.config.resync_interval);
            resync.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = resync.tick() => {
                        self.resync(false).await;
                        self.check_rate_limit_resets().await;
                    }
                    message = subscriber.next() => {
                        let Some(message) = message else { break };
                        match serde_json::from_slice::<ControlMessage>(&message.payload) {
                            Ok(control) => self.handle(control).await,
                            Err(e) => tracing::debug!(error = %e, "ignoring unknown control message"),
                        }
                    }
                }
            }
        }))
    }

    async fn handle(&self, message: ControlMessage) {
        metrics::counter!("hk_control_received_total", "kind" => message.kind()).increment(1);
        match message {
            // Whatever version the message claims, only what the store holds is applied.
            ControlMessage::Settings { .. } => self.resync(false).await,
            ControlMessage::Reload => self.resync(true).await,
            ControlMessage::ClearRateLimits => self.check_rate_limit_resets().await,
        }
    }

    /// Clears rate-limit counters if the store has a reset this process has not acted on. The
    /// first look (at start-up) only notes where the store is: a fresh process has no counters.
    async fn check_rate_limit_resets(&self) {
        let latest = match self.service.latest_rate_limit_reset().await {
            Ok(latest) => latest,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read rate-limit resets");
                return;
            }
        };
        let newer = {
            let mut seen = self
                .resets_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let newer = seen.is_some_and(|s| latest > s);
            if seen.is_none_or(|s| latest > s) {
                *seen = Some(latest);
            }
            newer
        };
        if newer {
            for applier in &self.appliers {
                applier.clear_rate_limits();
            }
            tracing::info!(reset = latest, "rate-limit counters cleared on request");
        }
    }

    async fn resync(&self, force: bool) {
        match self.service.current().await {
            Ok(snapshot) => {
                if force {
                    *self.applied.lock().unwrap_or_else(PoisonError::into_inner) = None;
                }
                self.apply(snapshot);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read settings; keeping the current ones"),
        }
    }

    /// Applies `snapshot` unless a newer version was applied already.
    fn apply(&self, snapshot: SettingsSnapshot) {
        {
            let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
            if applied.is_some_and(|v| v >= snapshot.version) {
                return;
            }
            *applied = Some(snapshot.version);
        }
        for applier in &self.appliers {
            applier.apply(&snapshot);
        }
        metrics::gauge!("hk_settings_version").set(snapshot.version as f64);
        tracing::info!(version = snapshot.version, "settings applied");
        self.live.tx.send_replace(snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_have_a_stable_wire_form() {
        let json = serde_json::to_value(ControlMessage::ClearRateLimits).expect("serializes");
        assert_eq!(json, serde_json::json!({"kind": "clear_rate_limits"}));
        let settings = ControlMessage::Settings { version: 3 };
        let json = serde_json::to_value(&settings).expect("serializes");
        assert_eq!(json, serde_json::json!({"kind": "settings", "version": 3}));
        assert_eq!(
            serde_json::from_value::<ControlMessage>(json).expect("parses"),
            settings
        );
        // A message carrying values (the former form, or a forgery) parses, and its values are
        // dropped: there is nowhere in a control message to put them.
        let with_values = serde_json::json!({
            "kind": "settings", "version": 99,
            "values": {"oauth_rate_limit": {"enabled": false, "window_secs": 1, "max_per_ip": 1}}
        });
        assert_eq!(
            serde_json::from_value::<ControlMessage>(with_values).expect("parses"),
            ControlMessage::Settings { version: 99 }
        );
        assert_eq!(settings.subject(), "hk.control.settings");
        assert!(CONTROL_SUBJECTS.starts_with("hk.control."));
    }
}
