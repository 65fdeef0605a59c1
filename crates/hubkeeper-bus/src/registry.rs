//! Every name and key that processes agree on through Postgres, defined once: the advisory-lock
//! keys of the single-active roles, the two-key advisory-lock classes, and the reader cursors in
//! `stream_cursors`.
//!
//! Two roles sharing a lock key would silently exclude each other (one of them would never run);
//! two readers sharing a cursor would skip each other's events. The tests below make both
//! impossible to merge.
//!
//! Postgres keeps single-key (`bigint`) and two-key (`int4, int4`) advisory locks in separate
//! spaces, so a [`LockKey`] never collides with a [`LockClass`]; within each space keys must be
//! unique.

/// The session advisory lock a single-active role holds while it leads (see
/// [`crate::leadership`]), with the role's leadership metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockKey {
    /// The role, for logs.
    pub name: &'static str,
    /// The single-`bigint` advisory-lock key.
    pub key: i64,
    /// Gauge set to 1 while this process leads, 0 otherwise.
    pub leader_gauge: &'static str,
    /// Counter of leads that ended in an error.
    pub errors_counter: &'static str,
}

/// The first key of a family of two-key advisory locks (`pg_advisory_lock(class, id)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockClass {
    /// What the locks protect, for logs.
    pub name: &'static str,
    pub class: i32,
}

/// The relay leader ("hkrelay").
pub const RELAY_LOCK: LockKey = LockKey {
    name: "relay",
    key: 0x0068_6b72_656c_6179,
    leader_gauge: "hk_relay_leader",
    errors_counter: "hk_relay_errors_total",
};

/// The refresh scheduler leader ("hksched").
pub const SCHEDULER_LOCK: LockKey = LockKey {
    name: "scheduler",
    key: 0x0068_6b73_6368_6564,
    leader_gauge: "hk_scheduler_leader",
    errors_counter: "hk_scheduler_errors_total",
};

/// The billing projection leader ("hkbill").
pub const BILLING_PROJECTION_LOCK: LockKey = LockKey {
    name: "billing projection",
    key: 0x686b_6269_6c6c,
    leader_gauge: "hk_billing_projection_leader",
    errors_counter: "hk_billing_projection_errors_total",
};

/// The maintenance scheduler leader: scheduled backups, renewals, pruning ("hkbackup").
pub const MAINTENANCE_LOCK: LockKey = LockKey {
    name: "maintenance scheduler",
    key: 0x686b_6261_636b_7570,
    leader_gauge: "hk_maintenance_leader",
    errors_counter: "hk_maintenance_errors_total",
};

/// The leader that carries out revokes and disconnects scheduled with notice when they come
/// due ("hkremove").
pub const SCHEDULED_REMOVALS_LOCK: LockKey = LockKey {
    name: "scheduled removals",
    key: 0x686b_7265_6d6f_7665,
    leader_gauge: "hk_scheduled_removals_leader",
    errors_counter: "hk_scheduled_removals_errors_total",
};

/// Every leader lock.
pub const LEADER_LOCKS: [LockKey; 5] = [
    RELAY_LOCK,
    SCHEDULER_LOCK,
    BILLING_PROJECTION_LOCK,
    MAINTENANCE_LOCK,
    SCHEDULED_REMOVALS_LOCK,
];

/// Per-installation token refresh: (class, fold of the installation id) ("HKTF").
pub const TOKEN_REFRESH_LOCK_CLASS: LockClass = LockClass {
    name: "token refresh",
    class: 0x484B_5446,
};

/// Per-app recount of installation counts in the read models ("hkco": "hkcount" cut to 32 bits).
pub const RECOUNT_LOCK_CLASS: LockClass = LockClass {
    name: "installation recount",
    class: 0x686b_636f,
};

/// Appending to a HubSpot webhook log: (class, `hashtext` of the log's aggregate id), held by a
/// webhook worker's transaction from before its first write until it commits, so the log's
/// sequences are taken in turn and each append's transaction is newer than the one before
/// ("hkwl").
pub const WEBHOOK_LOG_LOCK_CLASS: LockClass = LockClass {
    name: "webhook log append",
    class: 0x686b_776c,
};

/// Every two-key lock class.
pub const LOCK_CLASSES: [LockClass; 3] = [
    TOKEN_REFRESH_LOCK_CLASS,
    RECOUNT_LOCK_CLASS,
    WEBHOOK_LOG_LOCK_CLASS,
];

/// The relay's position in the global order (`stream_cursors.name`).
pub const RELAY_CURSOR: &str = "relay";

/// The billing projection's position in the global order.
pub const BILLING_PROJECTION_CURSOR: &str = "billing-projection";

/// Every reader cursor.
pub const CURSORS: [&str; 2] = [RELAY_CURSOR, BILLING_PROJECTION_CURSOR];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn assert_unique<T: std::hash::Hash + Eq + std::fmt::Debug>(what: &str, items: Vec<T>) {
        let distinct: HashSet<&T> = items.iter().collect();
        assert_eq!(distinct.len(), items.len(), "{what} repeat: {items:?}");
    }

    #[test]
    fn leader_locks_keys_names_and_metrics_are_unique() {
        assert_unique("lock keys", LEADER_LOCKS.map(|l| l.key).to_vec());
        assert_unique("role names", LEADER_LOCKS.map(|l| l.name).to_vec());
        assert_unique(
            "leader metrics",
            LEADER_LOCKS
                .iter()
                .flat_map(|l| [l.leader_gauge, l.errors_counter])
                .collect(),
        );
    }

    #[test]
    fn lock_classes_are_unique() {
        assert_unique("lock classes", LOCK_CLASSES.map(|c| c.class).to_vec());
        assert_unique("lock class names", LOCK_CLASSES.map(|c| c.name).to_vec());
    }

    #[test]
    fn cursor_names_are_unique_and_not_blank() {
        assert_unique("cursor names", CURSORS.to_vec());
        assert!(CURSORS.iter().all(|c| !c.trim().is_empty()));
    }

    #[test]
    fn the_lists_name_every_constant() {
        // A constant added without its list entry would escape the uniqueness checks above.
        let source = include_str!("registry.rs");
        let declared = |ty: &str| source.matches(&format!(": {ty} = {ty} {{")).count();
        assert_eq!(declared("LockKey"), LEADER_LOCKS.len());
        assert_eq!(declared("LockClass"), LOCK_CLASSES.len());
        // Built at run time, so this line does not count itself.
        let cursor_declaration = format!("_CURSOR: {}str = ", '&');
        assert_eq!(source.matches(&cursor_declaration).count(), CURSORS.len());
    }
}
