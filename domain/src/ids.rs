//! Typed ids: a run's id and its workspace's id are different types, so passing one where
//! the other belongs (the `(run, workspace)` order used to vary between functions) does
//! not compile. Each is a UUID on the wire and in PostgreSQL; with the `postgres` and
//! `openapi` features (turned on by the crates that need them, never by the fuzz targets)
//! they bind to SQL parameters and appear in the API document as UUID strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "postgres", derive(postgres_types::ToSql, postgres_types::FromSql))]
        #[cfg_attr(feature = "postgres", postgres(transparent))]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh id, ordered by creation time (UUID v7), as every id Weft creates.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(self) -> Uuid {
                self.0
            }

            /// The greatest id: where a newest-first page with no cursor starts.
            pub const fn max() -> Self {
                Self(Uuid::max())
            }

            /// The all-zero id, for tests and examples that need one that exists nowhere.
            pub const fn nil() -> Self {
                Self(Uuid::nil())
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map(Self)
            }
        }
    };
}

id!(
    /// A run: one execution of a scenario version.
    RunId
);
id!(
    /// A workspace: the tenant every object belongs to.
    WorkspaceId
);
id!(
    /// A scenario, across its versions.
    ScenarioId
);
id!(
    /// A connection: a connector's credentials and settings in a workspace.
    ConnectionId
);
id!(
    /// One stored version of a workspace connector's manifest (`connector_versions`).
    ConnectorVersionId
);

id!(
    /// A person who logs in (`users`).
    UserId
);
id!(
    /// A workspace API key (`api_keys`).
    ApiKeyId
);
id!(
    /// A signed-in browser session (`sessions`).
    SessionId
);
id!(
    /// An invitation to join a workspace (`invitations`).
    InvitationId
);
id!(
    /// One event of the audit log (`audit_events`).
    AuditEventId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bare_uuids_on_the_wire() {
        let uuid = Uuid::now_v7();
        let run = RunId::from_uuid(uuid);
        assert_eq!(
            serde_json::to_value(run).expect("serializes"),
            serde_json::Value::from(uuid.to_string())
        );
        let back: RunId =
            serde_json::from_value(serde_json::json!(uuid.to_string())).expect("deserializes");
        assert_eq!(back, run);
        assert_eq!(run.to_string().parse::<RunId>().expect("parses"), run);
        assert!("not-a-uuid".parse::<RunId>().is_err());
    }

    #[test]
    fn new_ids_are_ordered_by_creation() {
        let first = WorkspaceId::generate();
        let second = WorkspaceId::generate();
        assert!(first < second);
    }
}
