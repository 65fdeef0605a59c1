//! The `Settings` aggregate: the operator-editable runtime settings of the whole deployment
//! (the dashboard's Settings page). There is one instance, id [`SETTINGS_ID`].
//!
//! Settings are events like everything else, so every change has an actor, a time and a
//! history, and every process can rebuild the current values from the store. Before the first
//! change the defaults apply (rate limiting 10 requests per IP per 60 s, log level from the
//! process configuration, daily backups at 01:00 UTC keeping 30).

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::aggregate::aggregate;
use crate::stored::{convert_fields, convert_option, stored_enum};
use crate::ParseError;

/// The aggregate id of the one settings instance.
pub const SETTINGS_ID: &str = "global";

/// OAuth callback rate limiting per client IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthRateLimit {
    /// Whether install and callback requests are limited at all.
    pub enabled: bool,
    /// Length of the counting window, in seconds (1 to 86400).
    pub window_secs: u32,
    /// Requests allowed per IP and window (1 to 100000).
    pub max_per_ip: u32,
}

impl Default for OAuthRateLimit {
    /// The production recommendation of the Settings page: 10 requests per minute.
    fn default() -> Self {
        Self {
            enabled: true,
            window_secs: 60,
            max_per_ip: 10,
        }
    }
}

/// Log levels the Settings page offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Critical problems only.
    Error,
    /// Degraded functionality.
    Warn,
    /// Important events (production).
    Info,
    /// Diagnostics (temporarily).
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The wire name, also a valid `RUST_LOG` directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(ParseError::new(
                "log level",
                s,
                "expected error, warn, info, debug or trace",
            )),
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logging {
    /// Log every request and response (method, path, status, latency) at info level.
    pub verbose_requests: bool,
    /// Level for every process; `None`: each process's own configuration (`HK_LOG`).
    #[serde(default)]
    pub level: Option<LogLevel>,
    /// Days Hubkeeper keeps its log-like records (usage report receipts, self-test and backup
    /// runs) before pruning them (1 to 3650).
    pub retention_days: u32,
}

impl Default for Logging {
    fn default() -> Self {
        Self {
            verbose_requests: false,
            level: None,
            retention_days: 30,
        }
    }
}

/// A time of day (UTC), `HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DailyTime {
    hour: u8,
    minute: u8,
}

impl DailyTime {
    /// `hour:minute`, if both are in range.
    pub fn new(hour: u8, minute: u8) -> Option<DailyTime> {
        (hour < 24 && minute < 60).then_some(DailyTime { hour, minute })
    }

    /// Hour, 0 to 23.
    pub fn hour(&self) -> u8 {
        self.hour
    }

    /// Minute, 0 to 59.
    pub fn minute(&self) -> u8 {
        self.minute
    }

    /// The first instant at or after `after` at this time of day.
    pub fn next_after(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        let date = after.date_naive();
        let today = date
            .and_hms_opt(u32::from(self.hour), u32::from(self.minute), 0)
            .map(|t| t.and_utc());
        match today {
            Some(t) if t >= after => t,
            Some(t) => t + chrono::Duration::days(1),
            // Unreachable for valid hours and minutes; a day later is the safe answer.
            None => after + chrono::Duration::days(1),
        }
    }
}

impl Default for DailyTime {
    /// 01:00, the Settings page's default.
    fn default() -> Self {
        DailyTime { hour: 1, minute: 0 }
    }
}

impl fmt::Display for DailyTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl FromStr for DailyTime {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseError::new("time of day", s, "expected HH:MM (24-hour, UTC)");
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return Err(bad());
        }
        if !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let hour = h.parse().map_err(|_| bad())?;
        let minute = m.parse().map_err(|_| bad())?;
        DailyTime::new(hour, minute).ok_or_else(bad)
    }
}

impl TryFrom<String> for DailyTime {
    type Error = ParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<DailyTime> for String {
    fn from(value: DailyTime) -> Self {
        value.to_string()
    }
}

/// Scheduled database backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backups {
    /// Whether the scheduled backup runs.
    pub enabled: bool,
    /// When it runs every day (UTC).
    pub daily_at: DailyTime,
    /// How many backup files to keep (1 to 1000); older ones are deleted.
    pub keep: u32,
}

impl Default for Backups {
    fn default() -> Self {
        Self {
            enabled: true,
            daily_at: DailyTime::default(),
            keep: 30,
        }
    }
}

/// Every setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SettingsValues {
    /// OAuth callback rate limiting.
    pub oauth_rate_limit: OAuthRateLimit,
    /// Logging.
    pub logging: Logging,
    /// Backups.
    pub backups: Backups,
}

/// Commands accepted by [`Settings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsCommand {
    /// Replace the given sections; `None` leaves a section unchanged.
    Update {
        /// New rate limiting.
        oauth_rate_limit: Option<OAuthRateLimit>,
        /// New logging.
        logging: Option<Logging>,
        /// New backups.
        backups: Option<Backups>,
    },
}

/// Why a settings change was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SettingsError {
    /// A value out of range; names the setting and the range.
    #[error("{setting} must be between {min} and {max}")]
    OutOfRange {
        /// Which setting.
        setting: &'static str,
        /// Smallest value.
        min: u32,
        /// Largest value.
        max: u32,
    },
}

/// Stable event type names (also the serde tags of [`SettingsEvent`]).
pub mod event_types {
    /// [`super::SettingsEvent::OAuthRateLimitChanged`].
    pub const OAUTH_RATE_LIMIT_CHANGED: &str = "OAuthRateLimitSettingsChanged";
    /// [`super::SettingsEvent::LoggingChanged`].
    pub const LOGGING_CHANGED: &str = "LoggingSettingsChanged";
    /// [`super::SettingsEvent::BackupsChanged`].
    pub const BACKUPS_CHANGED: &str = "BackupSettingsChanged";

    /// Every settings event type.
    pub const ALL: [&str; 3] = [OAUTH_RATE_LIMIT_CHANGED, LOGGING_CHANGED, BACKUPS_CHANGED];
}

/// A changed section, with its value before and after (the actor is in the metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionChanged<T> {
    /// The value before.
    pub previous: T,
    /// The value after.
    pub current: T,
    /// When it changed.
    pub changed_at: DateTime<Utc>,
}

/// Everything that can happen to the settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettingsEvent {
    /// Rate limiting changed.
    #[serde(rename = "OAuthRateLimitSettingsChanged")]
    OAuthRateLimitChanged(SectionChanged<StoredOAuthRateLimit>),
    /// Logging changed.
    #[serde(rename = "LoggingSettingsChanged")]
    LoggingChanged(SectionChanged<StoredLogging>),
    /// Backups changed.
    #[serde(rename = "BackupSettingsChanged")]
    BackupsChanged(SectionChanged<StoredBackups>),
}

impl<T> SectionChanged<T> {
    fn new<S: Into<T>>(previous: S, current: S, changed_at: DateTime<Utc>) -> Self {
        Self {
            previous: previous.into(),
            current: current.into(),
            changed_at,
        }
    }
}

/// [`OAuthRateLimit`] as settings events store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOAuthRateLimit {
    /// Whether requests are limited.
    pub enabled: bool,
    /// Counting window, in seconds.
    pub window_secs: u32,
    /// Requests allowed per IP and window.
    pub max_per_ip: u32,
}

convert_fields!(OAuthRateLimit <=> StoredOAuthRateLimit { enabled, window_secs, max_per_ip });

stored_enum!(
    /// [`LogLevel`] as settings events store it.
    StoredLogLevel <=> LogLevel {
        Error = "error",
        Warn = "warn",
        Info = "info",
        Debug = "debug",
        Trace = "trace",
    }
);

/// [`Logging`] as settings events store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLogging {
    /// Log every request and response.
    pub verbose_requests: bool,
    /// Level for every process; `None`: each process's own configuration.
    #[serde(default)]
    pub level: Option<StoredLogLevel>,
    /// Days log-like records are kept.
    pub retention_days: u32,
}

convert_fields!(Logging <=> StoredLogging {
    verbose_requests,
    level via convert_option,
    retention_days,
});

/// [`Backups`] as settings events store them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBackups {
    /// Whether the scheduled backup runs.
    pub enabled: bool,
    /// When it runs every day (UTC), `HH:MM`.
    pub daily_at: DailyTime,
    /// How many backup files to keep.
    pub keep: u32,
}

convert_fields!(Backups <=> StoredBackups { enabled, daily_at, keep });

impl DomainEvent for SettingsEvent {
    fn event_type(&self) -> String {
        use event_types::*;
        match self {
            Self::OAuthRateLimitChanged(_) => OAUTH_RATE_LIMIT_CHANGED,
            Self::LoggingChanged(_) => LOGGING_CHANGED,
            Self::BackupsChanged(_) => BACKUPS_CHANGED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// Which sections were ever changed. A section never changed leaves each process with its own
/// configuration where it has one (the OAuth rate limit's `HK_OAUTH_RATE_LIMIT_*`), rather than
/// imposing defaults nobody chose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customized {
    /// Rate limiting was set on the Settings page.
    pub oauth_rate_limit: bool,
    /// Logging was set.
    pub logging: bool,
    /// Backups were set.
    pub backups: bool,
}

/// State of the settings, rebuilt from their events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    values: SettingsValues,
    customized: Customized,
    changed_at: Option<DateTime<Utc>>,
}

impl Settings {
    /// The values in effect (defaults before the first change).
    pub fn values(&self) -> &SettingsValues {
        &self.values
    }

    /// When anything last changed; `None`: still the defaults.
    pub fn changed_at(&self) -> Option<DateTime<Utc>> {
        self.changed_at
    }

    /// Which sections were ever changed.
    pub fn customized(&self) -> Customized {
        self.customized
    }
}

fn in_range(setting: &'static str, value: u32, min: u32, max: u32) -> Result<(), SettingsError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(SettingsError::OutOfRange { setting, min, max })
    }
}

aggregate!(
    Settings,
    "settings",
    SettingsCommand,
    SettingsEvent,
    SettingsError
);

impl Settings {
    /// The events `command` leads to at `now`, from the state before it; none when it
    /// changes nothing.
    fn decide(
        &self,
        command: SettingsCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<SettingsEvent>, SettingsError> {
        let SettingsCommand::Update {
            oauth_rate_limit,
            logging,
            backups,
        } = command;
        // Validate everything before recording anything: a form is applied whole or not at all.
        if let Some(r) = &oauth_rate_limit {
            in_range("oauth_rate_limit.window_secs", r.window_secs, 1, 86_400)?;
            in_range("oauth_rate_limit.max_per_ip", r.max_per_ip, 1, 100_000)?;
        }
        if let Some(l) = &logging {
            in_range("logging.retention_days", l.retention_days, 1, 3650)?;
        }
        if let Some(b) = &backups {
            in_range("backups.keep", b.keep, 1, 1000)?;
        }
        let current = self.values;
        let mut events = Vec::new();
        if let Some(value) = oauth_rate_limit.filter(|v| *v != current.oauth_rate_limit) {
            events.push(SettingsEvent::OAuthRateLimitChanged(SectionChanged::new(
                current.oauth_rate_limit,
                value,
                now,
            )));
        }
        if let Some(value) = logging.filter(|v| *v != current.logging) {
            events.push(SettingsEvent::LoggingChanged(SectionChanged::new(
                current.logging,
                value,
                now,
            )));
        }
        if let Some(value) = backups.filter(|v| *v != current.backups) {
            events.push(SettingsEvent::BackupsChanged(SectionChanged::new(
                current.backups,
                value,
                now,
            )));
        }
        Ok(events)
    }

    fn evolve(&mut self, event: SettingsEvent) {
        match event {
            SettingsEvent::OAuthRateLimitChanged(e) => {
                self.values.oauth_rate_limit = e.current.into();
                self.customized.oauth_rate_limit = true;
                self.changed_at = Some(e.changed_at);
            }
            SettingsEvent::LoggingChanged(e) => {
                self.values.logging = e.current.into();
                self.customized.logging = true;
                self.changed_at = Some(e.changed_at);
            }
            SettingsEvent::BackupsChanged(e) => {
                self.values.backups = e.current.into();
                self.customized.backups = true;
                self.changed_at = Some(e.changed_at);
            }
        }
    }
}
