//! Event metadata: who did what, when, and as part of which request.
//!
//! cqrs-es stores one `HashMap<String, String>` per commit and puts it on every event of that
//! commit. The keys below are the only ones Hubkeeper writes; projections, the NATS relay and
//! the audit log read them by these names, so they are part of the event compatibility
//! boundary just like payloads.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::ParseError;

/// Metadata key: who caused the change ([`Actor`] in its string form).
pub const ACTOR: &str = "actor";
/// Metadata key: id of the inbound HTTP request or job run that issued the command.
pub const REQUEST_ID: &str = "request_id";
/// Metadata key: wall-clock time of the command, RFC 3339 UTC with microseconds.
pub const OCCURRED_AT: &str = "occurred_at";
/// Metadata key: id shared by everything that follows from one original trigger.
pub const CORRELATION_ID: &str = "correlation_id";
/// Metadata key: id of the message or event that directly caused this command.
pub const CAUSATION_ID: &str = "causation_id";
/// Metadata key: free-text justification given by an operator (revoke, disconnect, forget).
pub const REASON: &str = "reason";

/// Who caused an event. Stored as a short string so audit queries can filter with `LIKE 'key:%'`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    /// An operator authenticated with an admin API key; the id is the key's public id, never
    /// the key itself. Stored as `key:<id>`.
    AdminKey(String),
    /// The refresh scheduler deciding that a token is due. `system:scheduler`.
    Scheduler,
    /// The worker that performed a token refresh. `system:refresher`.
    Refresher,
    /// HubSpot itself, via a webhook. `hubspot`.
    HubSpot,
    /// Anything else done by Hubkeeper on its own (migrations, maintenance). `system`.
    System,
    /// Someone at the machine, through a `hubkeeper` admin command (no key involved). `cli`.
    CommandLine,
    /// A caller that did not prove who it is (a refused log-in). `anonymous`.
    Anonymous,
    /// A revoke or disconnect an operator scheduled earlier, carried out when due; holds the
    /// scheduling actor's string form. `scheduled-removal:by:<actor>`.
    ScheduledRemoval(String),
}

/// Prefix of [`Actor::ScheduledRemoval`]'s string form.
const SCHEDULED_REMOVAL_PREFIX: &str = "scheduled-removal:by:";

impl Actor {
    /// The actor that carries out a removal `scheduled_by` scheduled.
    pub fn scheduled_removal(scheduled_by: &Actor) -> Self {
        match scheduled_by {
            // Never nested: the original operator stays named.
            Self::ScheduledRemoval(by) => Self::ScheduledRemoval(by.clone()),
            other => Self::ScheduledRemoval(other.to_string()),
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AdminKey(id) => write!(f, "key:{id}"),
            Self::Scheduler => f.write_str("system:scheduler"),
            Self::Refresher => f.write_str("system:refresher"),
            Self::HubSpot => f.write_str("hubspot"),
            Self::System => f.write_str("system"),
            Self::CommandLine => f.write_str("cli"),
            Self::Anonymous => f.write_str("anonymous"),
            Self::ScheduledRemoval(by) => write!(f, "{SCHEDULED_REMOVAL_PREFIX}{by}"),
        }
    }
}

impl FromStr for Actor {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "system:scheduler" => Ok(Self::Scheduler),
            "system:refresher" => Ok(Self::Refresher),
            "hubspot" => Ok(Self::HubSpot),
            "system" => Ok(Self::System),
            "cli" => Ok(Self::CommandLine),
            "anonymous" => Ok(Self::Anonymous),
            other if other.starts_with(SCHEDULED_REMOVAL_PREFIX) => {
                let by = &other[SCHEDULED_REMOVAL_PREFIX.len()..];
                match by.parse::<Actor>()? {
                    Self::ScheduledRemoval(_) => Err(ParseError::new(
                        "actor",
                        s,
                        "a scheduled removal is scheduled by an operator, not by another one",
                    )),
                    _ => Ok(Self::ScheduledRemoval(by.to_owned())),
                }
            }
            other => match other.strip_prefix("key:") {
                Some(id) if !id.is_empty() && !id.chars().any(char::is_whitespace) => {
                    Ok(Self::AdminKey(id.to_owned()))
                }
                _ => Err(ParseError::new(
                    "actor",
                    s,
                    "expected key:<id>, system:scheduler, system:refresher, hubspot, system, cli or anonymous",
                )),
            },
        }
    }
}

/// Builder for the metadata map passed to `CqrsFramework::execute_with_metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    /// Who caused the change.
    pub actor: Actor,
    /// Inbound request / job run id.
    pub request_id: Option<String>,
    /// Id shared by the whole chain of reactions to one trigger.
    pub correlation_id: Option<String>,
    /// Id of the direct cause.
    pub causation_id: Option<String>,
    /// Operator-supplied justification.
    pub reason: Option<String>,
    /// When the command was issued.
    pub occurred_at: DateTime<Utc>,
}

impl EventMetadata {
    /// Metadata with only the mandatory fields.
    pub fn new(actor: Actor, occurred_at: DateTime<Utc>) -> Self {
        Self {
            actor,
            request_id: None,
            correlation_id: None,
            causation_id: None,
            reason: None,
            occurred_at,
        }
    }

    /// Sets the request id.
    #[must_use]
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Sets the reason.
    #[must_use]
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Metadata for a command issued in reaction to an earlier message: keeps the parent's
    /// correlation id (falling back to its request id, which started the chain) and records
    /// `parent_id` as the cause.
    pub fn follow_up(
        parent: &HashMap<String, String>,
        parent_id: impl Into<String>,
        actor: Actor,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        let correlation = parent
            .get(CORRELATION_ID)
            .or_else(|| parent.get(REQUEST_ID))
            .cloned();
        Self {
            correlation_id: correlation,
            causation_id: Some(parent_id.into()),
            ..Self::new(actor, occurred_at)
        }
    }

    /// The map cqrs-es stores. Absent optional fields are omitted rather than stored empty.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::with_capacity(6);
        map.insert(ACTOR.to_owned(), self.actor.to_string());
        map.insert(
            OCCURRED_AT.to_owned(),
            self.occurred_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        );
        let optional = [
            (REQUEST_ID, &self.request_id),
            (CORRELATION_ID, &self.correlation_id),
            (CAUSATION_ID, &self.causation_id),
            (REASON, &self.reason),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                map.insert(key.to_owned(), value.clone());
            }
        }
        map
    }

    /// Reads metadata back from a stored map (projections, audit views).
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, ParseError> {
        let actor = map
            .get(ACTOR)
            .ok_or_else(|| ParseError::new("event metadata", ACTOR, "missing key"))?
            .parse()?;
        let occurred_at = map
            .get(OCCURRED_AT)
            .ok_or_else(|| ParseError::new("event metadata", OCCURRED_AT, "missing key"))?;
        let occurred_at = DateTime::parse_from_rfc3339(occurred_at)
            .map_err(|_| ParseError::new("occurred_at", occurred_at, "expected RFC 3339"))?
            .with_timezone(&Utc);
        Ok(Self {
            actor,
            request_id: map.get(REQUEST_ID).cloned(),
            correlation_id: map.get(CORRELATION_ID).cloned(),
            causation_id: map.get(CAUSATION_ID).cloned(),
            reason: map.get(REASON).cloned(),
            occurred_at,
        })
    }
}

impl From<EventMetadata> for HashMap<String, String> {
    fn from(metadata: EventMetadata) -> Self {
        metadata.to_map()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn actor_string_forms_round_trip() {
        let cases = [
            (Actor::AdminKey("ak_123".into()), "key:ak_123"),
            (Actor::Scheduler, "system:scheduler"),
            (Actor::Refresher, "system:refresher"),
            (Actor::HubSpot, "hubspot"),
            (Actor::System, "system"),
            (Actor::CommandLine, "cli"),
            (Actor::Anonymous, "anonymous"),
            (
                Actor::scheduled_removal(&Actor::AdminKey("ak_9".into())),
                "scheduled-removal:by:key:ak_9",
            ),
            (
                Actor::scheduled_removal(&Actor::scheduled_removal(&Actor::CommandLine)),
                "scheduled-removal:by:cli",
            ),
        ];
        for (actor, text) in cases {
            assert_eq!(actor.to_string(), text);
            assert_eq!(text.parse::<Actor>().expect("parses"), actor);
        }
        for bad in [
            "key:",
            "key:a b",
            "admin",
            "",
            "scheduled-removal:by:",
            "scheduled-removal:by:scheduled-removal:by:cli",
        ] {
            assert!(bad.parse::<Actor>().is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn metadata_map_has_stable_keys_and_round_trips() {
        let meta = EventMetadata::new(Actor::AdminKey("ak_1".into()), at())
            .request_id("req-1")
            .correlation_id("corr-1")
            .reason("customer asked");
        let map = meta.to_map();
        assert_eq!(map.get("actor").map(String::as_str), Some("key:ak_1"));
        assert_eq!(
            map.get("occurred_at").map(String::as_str),
            Some("2026-03-01T12:00:00.000000Z")
        );
        assert_eq!(map.get("request_id").map(String::as_str), Some("req-1"));
        assert_eq!(
            map.get("correlation_id").map(String::as_str),
            Some("corr-1")
        );
        assert_eq!(
            map.get("reason").map(String::as_str),
            Some("customer asked")
        );
        assert!(
            !map.contains_key("causation_id"),
            "absent fields are omitted"
        );
        assert_eq!(EventMetadata::from_map(&map).expect("parses"), meta);
    }

    #[test]
    fn follow_up_keeps_the_correlation_chain() {
        let parent = EventMetadata::new(Actor::HubSpot, at())
            .request_id("req-9")
            .to_map();
        let child = EventMetadata::follow_up(&parent, "installation/abc/3", Actor::System, at());
        assert_eq!(child.correlation_id.as_deref(), Some("req-9"));
        assert_eq!(child.causation_id.as_deref(), Some("installation/abc/3"));
        let grandchild =
            EventMetadata::follow_up(&child.to_map(), "installation/abc/4", Actor::System, at());
        assert_eq!(grandchild.correlation_id.as_deref(), Some("req-9"));
    }

    #[test]
    fn from_map_reports_missing_and_bad_values() {
        let mut map = HashMap::new();
        assert!(EventMetadata::from_map(&map).is_err());
        map.insert(ACTOR.to_owned(), "system".to_owned());
        assert!(EventMetadata::from_map(&map).is_err());
        map.insert(OCCURRED_AT.to_owned(), "yesterday".to_owned());
        assert!(EventMetadata::from_map(&map).is_err());
        map.insert(OCCURRED_AT.to_owned(), "2026-03-01T12:00:00Z".to_owned());
        assert_eq!(
            EventMetadata::from_map(&map).expect("valid"),
            EventMetadata::new(Actor::System, at())
        );
    }
}
