//! Operation events: persisted forever, so their JSON shape is a contract. A failed log-in
//! records where it came from and which key id it named, never what was presented as a secret.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::ids::AppId;
use crate::stored::stored_enum;

use super::{BackupTrigger, LogInRefusal};

/// Stable event type names (also the serde tags of [`OperationEvent`]).
pub mod event_types {
    /// [`super::OperationEvent::LogInFailed`].
    pub const LOG_IN_FAILED: &str = "DashboardLogInFailed";
    /// [`super::OperationEvent::RateLimitsCleared`].
    pub const RATE_LIMITS_CLEARED: &str = "RateLimitsCleared";
    /// [`super::OperationEvent::ConfigurationReloaded`].
    pub const CONFIGURATION_RELOADED: &str = "ConfigurationReloaded";
    /// [`super::OperationEvent::BackupStarted`].
    pub const BACKUP_STARTED: &str = "BackupStarted";
    /// [`super::OperationEvent::SelfTestRun`].
    pub const SELF_TEST_RUN: &str = "SelfTestRun";

    /// Every operation event type.
    pub const ALL: [&str; 5] = [
        LOG_IN_FAILED,
        RATE_LIMITS_CLEARED,
        CONFIGURATION_RELOADED,
        BACKUP_STARTED,
        SELF_TEST_RUN,
    ];
}

/// Everything an operation can be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationEvent {
    /// A dashboard log-in was refused.
    #[serde(rename = "DashboardLogInFailed")]
    LogInFailed(LogInFailed),
    /// Every process was told to reset its rate-limit counters.
    #[serde(rename = "RateLimitsCleared")]
    RateLimitsCleared(RateLimitsCleared),
    /// Every process was told to re-read the runtime settings.
    #[serde(rename = "ConfigurationReloaded")]
    ConfigurationReloaded(ConfigurationReloaded),
    /// A database backup was started by hand.
    #[serde(rename = "BackupStarted")]
    BackupStarted(BackupStarted),
    /// The self-test ran.
    #[serde(rename = "SelfTestRun")]
    SelfTestRun(SelfTestRun),
}

impl DomainEvent for OperationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::LogInFailed(_) => event_types::LOG_IN_FAILED,
            Self::RateLimitsCleared(_) => event_types::RATE_LIMITS_CLEARED,
            Self::ConfigurationReloaded(_) => event_types::CONFIGURATION_RELOADED,
            Self::BackupStarted(_) => event_types::BACKUP_STARTED,
            Self::SelfTestRun(_) => event_types::SELF_TEST_RUN,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

stored_enum!(
    /// [`LogInRefusal`] as operation events store it.
    StoredLogInRefusal <=> LogInRefusal {
        UnknownKey = "unknown_key",
        RoleNotAllowed = "role_not_allowed",
    }
);

stored_enum!(
    /// [`BackupTrigger`] as operation events store it.
    StoredBackupTrigger <=> BackupTrigger {
        Api = "api",
        CommandLine = "cli",
    }
);

/// Payload of `DashboardLogInFailed` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogInFailed {
    /// Why it was refused.
    pub refusal: StoredLogInRefusal,
    /// The key id the attempt named (`ak…`), when what was presented had the shape of a key;
    /// the secret part is never recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The client's address as the API saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// When.
    pub failed_at: DateTime<Utc>,
}

/// Payload of `RateLimitsCleared` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitsCleared {
    /// When.
    pub cleared_at: DateTime<Utc>,
}

/// Payload of `ConfigurationReloaded` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigurationReloaded {
    /// When.
    pub reloaded_at: DateTime<Utc>,
}

/// Payload of `BackupStarted` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStarted {
    /// Where it was started from.
    pub trigger: StoredBackupTrigger,
    /// When.
    pub started_at: DateTime<Utc>,
}

/// Payload of `SelfTestRun` (1.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTestRun {
    /// No step failed.
    pub passed: bool,
    /// The app the run used, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<AppId>,
    /// Steps run (passed, failed or skipped).
    pub steps: u32,
    /// The names of the failed steps, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_steps: Vec<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
}
