//! Who may do what in a workspace: the five roles, and the permissions each grants.
//!
//! Every workspace endpoint names the one [`Permission`] it needs (the gateway's route
//! table); a caller's [`Role`] in the workspace decides. Roles are ordered: each grants
//! everything the one below it does.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A member's (or an API key's) role in one workspace, from least to most trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Reads everything but secret connection values.
    Viewer,
    /// Also starts, cancels and replays runs.
    Operator,
    /// Also edits scenarios, connectors and connections, and runs actions directly.
    Editor,
    /// Also manages members, invitations, API keys and the workspace; reads the audit log.
    Admin,
    /// Everything, including ownership and deleting the workspace.
    Owner,
}

impl Role {
    pub const ALL: [Self; 5] = [
        Self::Viewer,
        Self::Operator,
        Self::Editor,
        Self::Admin,
        Self::Owner,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Editor => "editor",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// Whether this role grants `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        self >= permission.least_role()
    }

    /// Whether a caller of this role may give `other` to a member, an invitation or an
    /// API key: never more than it holds, and only owners make owners.
    pub fn may_grant(self, other: Self) -> bool {
        self.allows(Permission::ManageAccess) && other <= self
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is none of [`Role`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: expected owner, admin, editor, operator or viewer")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == name)
            .ok_or_else(|| UnknownRole(name.to_owned()))
    }
}

/// What an endpoint of a workspace needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read scenarios, runs, connectors and connections.
    Read,
    /// Start, cancel and replay runs.
    Operate,
    /// Create, change and delete scenarios, connectors and connections; run an action
    /// directly; test a connection.
    Edit,
    /// Members, invitations, API keys, the workspace's name.
    ManageAccess,
    /// Read and export the audit log.
    ReadAudit,
    /// Delete the workspace.
    Own,
}

impl Permission {
    /// The least role that holds this permission.
    pub fn least_role(self) -> Role {
        match self {
            Self::Read => Role::Viewer,
            Self::Operate => Role::Operator,
            Self::Edit => Role::Editor,
            Self::ManageAccess | Self::ReadAudit => Role::Admin,
            Self::Own => Role::Owner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_grants_what_the_issue_lists() {
        use Permission::*;
        let grants = |role: Role| {
            [Read, Operate, Edit, ManageAccess, ReadAudit, Own]
                .into_iter()
                .filter(|p| role.allows(*p))
                .collect::<Vec<_>>()
        };
        assert_eq!(grants(Role::Viewer), [Read]);
        assert_eq!(grants(Role::Operator), [Read, Operate]);
        assert_eq!(grants(Role::Editor), [Read, Operate, Edit]);
        assert_eq!(
            grants(Role::Admin),
            [Read, Operate, Edit, ManageAccess, ReadAudit]
        );
        assert_eq!(
            grants(Role::Owner),
            [Read, Operate, Edit, ManageAccess, ReadAudit, Own]
        );
    }

    #[test]
    fn only_owners_grant_ownership_and_nobody_grants_above_their_role() {
        assert!(Role::Owner.may_grant(Role::Owner));
        assert!(Role::Admin.may_grant(Role::Admin));
        assert!(!Role::Admin.may_grant(Role::Owner));
        assert!(Role::Admin.may_grant(Role::Viewer));
        assert!(
            !Role::Editor.may_grant(Role::Viewer),
            "editors manage no access"
        );
    }

    #[test]
    fn roles_are_stored_by_name() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_value(role).expect("serializes"),
                serde_json::Value::from(role.as_str())
            );
        }
        assert_eq!("root".parse::<Role>(), Err(UnknownRole("root".to_owned())));
    }
}
