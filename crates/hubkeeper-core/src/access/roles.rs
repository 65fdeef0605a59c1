//! Roles and the permissions they grant: one table, one place.

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Read, refresh, revoke, disconnect.
    Operator,
    /// Read-only, including the event history and exports.
    Auditor,
    /// The app's own backend: token hand-outs, usage reports and quota checks only.
    Service,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Auditor, Role::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Service => "service",
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Operator => matches!(permission, Read | ReadAudit | OperateInstallations),
            Role::Auditor => matches!(permission, Read | ReadAudit),
            Role::Service => matches!(permission, UseTokens),
        }
    }

    /// Every permission this role holds, for clients that adapt their UI to it.
    pub fn permissions(self) -> Vec<Permission> {
        Permission::ALL
            .into_iter()
            .filter(|p| self.allows(*p))
            .collect()
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role `{s}` (expected admin, operator, auditor or service)")
            })
    }
}

/// What an operation needs. Roles grant permissions in [`Role::allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Dashboard data, lists, details (never tokens).
    Read,
    /// Event history and exports.
    ReadAudit,
    /// Refresh, revoke, disconnect installations.
    OperateInstallations,
    /// Receive access tokens; report usage; check quotas.
    UseTokens,
    /// Apps, plans, settings, keys, crypto-shredding, dead-letter re-drive.
    Administer,
}

impl Permission {
    pub const ALL: [Permission; 5] = [
        Permission::Read,
        Permission::ReadAudit,
        Permission::OperateInstallations,
        Permission::UseTokens,
        Permission::Administer,
    ];

    /// The name used in the OpenAPI document (`x-permission`) and in `/auth/me`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::ReadAudit => "read_audit",
            Permission::OperateInstallations => "operate_installations",
            Permission::UseTokens => "use_tokens",
            Permission::Administer => "administer",
        }
    }
}

impl std::str::FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown permission `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_dashboard_seed_says() {
        use Permission::*;
        assert!(Role::Admin.allows(Administer));
        assert!(Role::Operator.allows(OperateInstallations));
        assert!(!Role::Operator.allows(Administer));
        assert!(!Role::Operator.allows(UseTokens));
        assert!(Role::Auditor.allows(ReadAudit));
        assert!(!Role::Auditor.allows(OperateInstallations));
        assert!(!Role::Auditor.allows(UseTokens));
        assert!(Role::Service.allows(UseTokens));
        assert!(!Role::Service.allows(Read));
        assert_eq!(Role::Auditor.permissions(), vec![Read, ReadAudit]);
    }

    #[test]
    fn roles_and_permissions_round_trip_through_their_names() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>(), Ok(p));
        }
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("write".parse::<Permission>().is_err());
        assert!("root".parse::<Role>().is_err());
    }
}
