//! Background roles that keep tokens alive: the [`scheduler::RefreshScheduler`] decides what
//! needs refreshing and enqueues it; any number of [`refresher::RefreshWorker`]s carry it out.
//!
//! The refresh itself is behind [`RefreshExecutor`], implemented by the token service (its
//! single-flight path), so these loops are about queueing and retries only; leadership and the
//! consume loop come from `hubkeeper_bus`.

pub mod refresher;
pub mod scheduler;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A refresh request travelling through the `HK_REFRESH` work queue. Serialized: a
/// compatibility boundary between scheduler and refresher versions during a rolling deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshCommand {
    pub version: u32,
    pub installation_id: String,
    /// Token generation the scheduler saw; part of the dedup id.
    pub generation: i64,
    pub reason: RefreshReason,
    /// The last event of the installation's app the scheduler saw (`rm_apps.last_sequence`);
    /// part of the dedup id, so installations of an app whose parked refreshes were resumed
    /// (or whose secret was rotated) are enqueued again at once instead of after the dedup
    /// window. Absent in commands of older schedulers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_sequence: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshReason {
    /// The access token expires within the lead time.
    Expiring,
    /// Not refreshed for a long time: refresh anyway so a dead grant is noticed early.
    Idle,
}

impl RefreshCommand {
    pub const VERSION: u32 = 1;

    /// JetStream message id: one command per installation, token generation and reason.
    pub fn message_id(&self) -> String {
        let reason = match self.reason {
            RefreshReason::Expiring => "expiring",
            RefreshReason::Idle => "idle",
        };
        match self.app_sequence {
            Some(app) => format!(
                "refresh:{}:{}:{reason}:a{app}",
                self.installation_id, self.generation
            ),
            None => format!(
                "refresh:{}:{}:{reason}",
                self.installation_id, self.generation
            ),
        }
    }

    pub fn subject(&self) -> String {
        format!(
            "{}.{}",
            hubkeeper_bus::REFRESH_SUBJECT_PREFIX,
            hubkeeper_bus::envelope::subject_token(&self.installation_id)
        )
    }
}

/// What the refresher asks of the token service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshMode {
    /// Refresh only if the access token expires within this margin (otherwise it is still fresh,
    /// e.g. another process already refreshed it).
    IfExpiringWithin(Duration),
    /// Refresh regardless (idle installations).
    Force,
}

/// How a refresh attempt ended, from the queue's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshResult {
    Refreshed,
    /// Nothing to do: the token is fresh.
    StillFresh,
    /// Disconnected, revoked, deleted app, unknown installation: nothing a retry could fix.
    NotRefreshable(String),
    /// HubSpot rejected the refresh token: the installation now needs re-authorisation.
    ReauthRequired,
    /// Worth retrying (HubSpot 5xx, timeout, rate limit, database hiccup); `retry_after` is the
    /// wait HubSpot asked for, when it did.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
}

#[async_trait::async_trait]
pub trait RefreshExecutor: Send + Sync + 'static {
    async fn refresh(&self, installation_id: &str, mode: RefreshMode) -> RefreshResult;
}
