//! Which tables make up each projection, and where the apply functions write.
//!
//! The live projector writes the live tables; a replay writes `<table>_new` copies and swaps them
//! in. Both go through [`Tables`], so the apply code never names a table itself.

use std::fmt;
use std::str::FromStr;

/// A read model that can be rebuilt on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    /// `rm_installations` and `rm_installation_status_periods`, with the webhook counts folded
    /// from the HubSpot webhook logs: `rm_webhook_events` and `webhook_usage_daily`.
    Installations,
    /// `rm_apps`.
    Apps,
    /// `rm_activity` and `rm_activity_subjects`.
    Activity,
}

impl Projection {
    pub const ALL: [Projection; 3] = [
        Projection::Installations,
        Projection::Apps,
        Projection::Activity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Projection::Installations => "installations",
            Projection::Apps => "apps",
            Projection::Activity => "activity",
        }
    }

    /// The live tables of this projection.
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Projection::Installations => {
                &[INSTALLATIONS, STATUS_PERIODS, WEBHOOK_EVENTS, WEBHOOK_USAGE]
            }
            Projection::Apps => &[APPS],
            Projection::Activity => &[ACTIVITY, ACTIVITY_SUBJECTS],
        }
    }
}

impl fmt::Display for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Projection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Projection::ALL
            .into_iter()
            .find(|p| p.as_str() == s.trim())
            .ok_or_else(|| {
                format!("unknown projection `{s}` (expected installations, apps, activity or all)")
            })
    }
}

pub const INSTALLATIONS: &str = "rm_installations";
pub const STATUS_PERIODS: &str = "rm_installation_status_periods";
pub const APPS: &str = "rm_apps";
pub const ACTIVITY: &str = "rm_activity";
pub const ACTIVITY_SUBJECTS: &str = "rm_activity_subjects";
pub const WEBHOOK_EVENTS: &str = "rm_webhook_events";
pub const WEBHOOK_USAGE: &str = "webhook_usage_daily";

/// Columns of `rm_installations` owned by other components (not derived from events). A replay
/// copies them from the live table into the rebuilt one, so rebuilding loses none of them. A
/// migration that adds such a column must add it here.
/// (`webhook_events` and `last_webhook_at` are not among them: they are folded from the
/// HubSpot webhook logs' events.)
pub const INSTALLATION_SIDE_COLUMNS: &[&str] = &["plan_code", "last_used_at"];

/// Suffix of the tables a replay builds.
pub const REBUILD_SUFFIX: &str = "_new";

/// Where apply functions write, and which projections they maintain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub installations: String,
    pub status_periods: String,
    pub apps: String,
    pub activity: String,
    pub activity_subjects: String,
    pub webhook_events: String,
    pub webhook_usage: String,
    /// Projections written; events only feed these (a replay of one projection leaves the
    /// others alone).
    pub enabled: Vec<Projection>,
}

impl Tables {
    /// The live tables, every projection: what the projector workers write.
    pub fn live() -> Self {
        Self {
            installations: INSTALLATIONS.into(),
            status_periods: STATUS_PERIODS.into(),
            apps: APPS.into(),
            activity: ACTIVITY.into(),
            activity_subjects: ACTIVITY_SUBJECTS.into(),
            webhook_events: WEBHOOK_EVENTS.into(),
            webhook_usage: WEBHOOK_USAGE.into(),
            enabled: Projection::ALL.to_vec(),
        }
    }

    /// For a replay of `projections`: their tables are the `_new` copies; the tables of the
    /// others stay the live ones (read only, e.g. installation counts of a rebuilt `rm_apps` are
    /// taken from the live `rm_installations`).
    pub fn rebuild(projections: &[Projection]) -> Self {
        let name = |p: Projection, table: &str| {
            if projections.contains(&p) {
                format!("{table}{REBUILD_SUFFIX}")
            } else {
                table.to_owned()
            }
        };
        Self {
            installations: name(Projection::Installations, INSTALLATIONS),
            status_periods: name(Projection::Installations, STATUS_PERIODS),
            apps: name(Projection::Apps, APPS),
            activity: name(Projection::Activity, ACTIVITY),
            activity_subjects: name(Projection::Activity, ACTIVITY_SUBJECTS),
            webhook_events: name(Projection::Installations, WEBHOOK_EVENTS),
            webhook_usage: name(Projection::Installations, WEBHOOK_USAGE),
            enabled: projections.to_vec(),
        }
    }

    pub fn has(&self, projection: Projection) -> bool {
        self.enabled.contains(&projection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuild_writes_copies_only_for_the_chosen_projections() {
        let t = Tables::rebuild(&[Projection::Apps]);
        assert_eq!(t.apps, "rm_apps_new");
        assert_eq!(t.installations, "rm_installations");
        assert!(t.has(Projection::Apps));
        assert!(!t.has(Projection::Activity));
        assert_eq!("activity".parse::<Projection>(), Ok(Projection::Activity));
        assert!("nope".parse::<Projection>().is_err());
    }
}
