//! The `Operation` aggregate: one operator action that concerns no other aggregate (a refused
//! dashboard log-in, rate limits cleared, the configuration reloaded, a backup started by hand, a
//! self-test run), recorded with its actor in the event metadata.
//!
//! Each operation is its own aggregate with a fresh time-ordered id ([`OperationId`]), so
//! concurrent operations (a burst of failed log-ins from many clients) never contend on one
//! stream and loading one never replays the others. Rules: an operation is recorded once; what it
//! records is checked (a key id has the shape of one, a client address is one short line, a
//! self-test's failed steps are among its steps and it ends after it starts). A failed log-in
//! records the key id the attempt named, never the secret that was presented.
//!
//! [`OperationId`]: crate::ids::OperationId

mod events;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use events::{
    event_types, BackupStarted, ConfigurationReloaded, LogInFailed, OperationEvent,
    RateLimitsCleared, SelfTestRun, StoredBackupTrigger, StoredLogInRefusal,
};

use crate::access::{is_key_id, MAX_CLIENT_CHARS};
use crate::aggregate::aggregate;
use crate::ids::AppId;
use crate::validate::single_line;

/// Longest accepted self-test step name.
pub const MAX_STEP_NAME_CHARS: usize = 100;

/// Why a dashboard log-in was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogInRefusal {
    /// The key is unknown, malformed or revoked.
    UnknownKey,
    /// The key is valid but its role may not open the dashboard (a service key).
    RoleNotAllowed,
}

/// Where a backup was started from by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupTrigger {
    /// `POST /v1/backups` (the Settings page's button).
    Api,
    /// `hubkeeper backup`.
    CommandLine,
}

/// What is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationCommand {
    /// A dashboard log-in was refused.
    RecordFailedLogIn {
        /// Why.
        refusal: LogInRefusal,
        /// The key id the attempt named, if it had the shape of a key.
        key_id: Option<String>,
        /// The client's address.
        client: Option<String>,
    },
    /// Rate-limit counters were cleared everywhere.
    RecordRateLimitsCleared,
    /// Every process was told to re-read its settings.
    RecordConfigurationReloaded,
    /// A backup was started by hand.
    RecordBackupStarted {
        /// From where.
        trigger: BackupTrigger,
    },
    /// The self-test ran.
    RecordSelfTest {
        /// No step failed.
        passed: bool,
        /// The app used.
        app_id: Option<AppId>,
        /// Steps run.
        steps: u32,
        /// Names of the failed steps.
        failed_steps: Vec<String>,
        /// When it started.
        started_at: DateTime<Utc>,
        /// When it ended.
        finished_at: DateTime<Utc>,
    },
}

/// Why an operation was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OperationError {
    /// This operation id already holds an operation.
    #[error("this operation is already recorded")]
    AlreadyRecorded,
    /// A key id that is not one.
    #[error("`{0}` is not a key id (ak followed by 12 hex digits)")]
    BadKeyId(String),
    /// A bad client address.
    #[error("the client address {0}")]
    BadClient(&'static str),
    /// A bad self-test report.
    #[error("the self-test report is inconsistent: {0}")]
    BadSelfTest(&'static str),
}

/// State of one operation: whether, what and when it was recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    recorded: Option<String>,
    recorded_at: Option<DateTime<Utc>>,
}

impl Operation {
    /// The event type recorded, if any.
    pub fn recorded(&self) -> Option<&str> {
        self.recorded.as_deref()
    }

    /// When it was recorded.
    pub fn recorded_at(&self) -> Option<DateTime<Utc>> {
        self.recorded_at
    }
}

aggregate!(
    Operation,
    "operation",
    OperationCommand,
    OperationEvent,
    OperationError
);

impl Operation {
    fn decide(
        &self,
        command: OperationCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<OperationEvent>, OperationError> {
        if self.recorded.is_some() {
            return Err(OperationError::AlreadyRecorded);
        }
        let event = match command {
            OperationCommand::RecordFailedLogIn {
                refusal,
                key_id,
                client,
            } => {
                if let Some(id) = key_id.as_deref().filter(|id| !is_key_id(id)) {
                    return Err(OperationError::BadKeyId(crate::validate::shorten(id, 32)));
                }
                let client = client
                    .map(|c| single_line(&c, MAX_CLIENT_CHARS).map_err(OperationError::BadClient))
                    .transpose()?;
                OperationEvent::LogInFailed(LogInFailed {
                    refusal: refusal.into(),
                    key_id,
                    client,
                    failed_at: now,
                })
            }
            OperationCommand::RecordRateLimitsCleared => {
                OperationEvent::RateLimitsCleared(RateLimitsCleared { cleared_at: now })
            }
            OperationCommand::RecordConfigurationReloaded => {
                OperationEvent::ConfigurationReloaded(ConfigurationReloaded { reloaded_at: now })
            }
            OperationCommand::RecordBackupStarted { trigger } => {
                OperationEvent::BackupStarted(BackupStarted {
                    trigger: trigger.into(),
                    started_at: now,
                })
            }
            OperationCommand::RecordSelfTest {
                passed,
                app_id,
                steps,
                failed_steps,
                started_at,
                finished_at,
            } => {
                if finished_at < started_at {
                    return Err(OperationError::BadSelfTest("it ends before it starts"));
                }
                if u32::try_from(failed_steps.len()).map_or(true, |failed| failed > steps) {
                    return Err(OperationError::BadSelfTest(
                        "more failed steps than steps run",
                    ));
                }
                if passed != failed_steps.is_empty() {
                    return Err(OperationError::BadSelfTest(
                        "a run passes exactly when no step failed",
                    ));
                }
                let failed_steps = failed_steps
                    .iter()
                    .map(|s| single_line(s, MAX_STEP_NAME_CHARS))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| OperationError::BadSelfTest("a step name is not a short line"))?;
                OperationEvent::SelfTestRun(SelfTestRun {
                    passed,
                    app_id,
                    steps,
                    failed_steps,
                    started_at,
                    finished_at,
                })
            }
        };
        Ok(vec![event])
    }

    fn evolve(&mut self, event: OperationEvent) {
        let at = match &event {
            OperationEvent::LogInFailed(e) => e.failed_at,
            OperationEvent::RateLimitsCleared(e) => e.cleared_at,
            OperationEvent::ConfigurationReloaded(e) => e.reloaded_at,
            OperationEvent::BackupStarted(e) => e.started_at,
            OperationEvent::SelfTestRun(e) => e.finished_at,
        };
        self.recorded = Some(cqrs_es::DomainEvent::event_type(&event));
        self.recorded_at = Some(at);
    }
}
