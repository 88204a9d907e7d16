//! The connector catalog of a workspace: what a connector key names there (the `http`
//! connector, a built-in manifest, or the workspace's own at its current version), and the
//! connectors and connections a scenario definition refers to, loaded for its checks.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde_json::Value;
use tokio_postgres::Row;
use weft_domain::ids::{ConnectionId, WorkspaceId};
use weft_domain::manifest::{self, Auth, HTTP_CONNECTOR, Manifest, RESERVED_KEYS, Trigger};
use weft_domain::scenario::{BuiltinCatalog, Catalog, NodeKind, Problem, Scenario};

use crate::audit::ActorView;
use crate::error::ApiError;

/// A connector as a key resolves in a workspace.
pub(crate) enum Connector {
    /// The free-form `http` connector, written in code.
    Http,
    Builtin(&'static Manifest),
    Registered(Box<Registered>),
}

/// A workspace's own connector, at its current version.
pub(crate) struct Registered {
    pub manifest: Manifest,
    /// The manifest as it was registered.
    pub source: Value,
    pub revision: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: Option<ActorView>,
    pub updated_by: Option<ActorView>,
}

impl Connector {
    /// The manifest; `None` for the `http` connector.
    pub(crate) fn manifest(&self) -> Option<&Manifest> {
        match self {
            Self::Http => None,
            Self::Builtin(manifest) => Some(manifest),
            Self::Registered(registered) => Some(&registered.manifest),
        }
    }
}

/// The columns of a workspace connector at its current version; `c` is `connectors`, `v`
/// its current `connector_versions` row.
macro_rules! registered_columns {
    () => {
        "c.key, c.current_version, c.created_at, c.updated_at, v.manifest,
         c.created_by_kind, c.created_by_id, c.updated_by_kind, c.updated_by_id"
    };
}

macro_rules! registered_from {
    () => {
        " FROM connectors c
          JOIN connector_versions v
            ON v.workspace_id = c.workspace_id AND v.key = c.key AND v.version = c.current_version "
    };
}

pub(crate) use {registered_columns, registered_from};

pub(crate) fn registered_from_row(row: &Row) -> Result<Registered, ApiError> {
    let source: Value = row.try_get("manifest")?;
    let key: String = row.try_get("key")?;
    // Checked when it was saved, so this only fails if the format changed incompatibly.
    let manifest = serde_json::from_value(source.clone()).map_err(|e| {
        ApiError::Internal(
            format!("stored manifest of connector `{key}` no longer parses: {e}").into(),
        )
    })?;
    Ok(Registered {
        manifest,
        source,
        revision: row.try_get("current_version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        created_by: ActorView::read(row, "created_by")?,
        updated_by: ActorView::read(row, "updated_by")?,
    })
}

/// Whether `key` names a connector that ships with Weft (or is reserved for one).
pub(crate) fn is_builtin_key(key: &str) -> bool {
    RESERVED_KEYS.contains(&key) || manifest::builtin(key).is_some()
}

/// The connector `key` names in `workspace`, if any.
pub(crate) async fn resolve(
    client: &impl GenericClient,
    workspace: WorkspaceId,
    key: &str,
) -> Result<Option<Connector>, ApiError> {
    if key == HTTP_CONNECTOR {
        return Ok(Some(Connector::Http));
    }
    if let Some(builtin) = manifest::builtin(key) {
        return Ok(Some(Connector::Builtin(builtin)));
    }
    let statement = client
        .prepare_cached(concat!(
            "SELECT ",
            registered_columns!(),
            registered_from!(),
            "WHERE c.workspace_id = $1 AND c.key = $2 AND c.deleted_at IS NULL"
        ))
        .await?;
    client
        .query_opt(&statement, &[&workspace, &key])
        .await?
        .map(|row| registered_from_row(&row).map(|r| Connector::Registered(Box::new(r))))
        .transpose()
}

/// The connectors and connections a scenario definition names, loaded before it is
/// checked: the catalog of scenario validation for one workspace.
#[derive(Default)]
pub(crate) struct WorkspaceCatalog {
    /// The workspace's own connectors the definition names, by key.
    registered: HashMap<String, Manifest>,
    /// The workspace's connections the definition names: id → connector key.
    connections: HashMap<ConnectionId, String>,
}

impl WorkspaceCatalog {
    /// Loads what `definition` refers to; what does not exist is simply absent, and
    /// reported by the checks.
    pub(crate) async fn load(
        client: &impl GenericClient,
        workspace: WorkspaceId,
        definition: &Value,
    ) -> Result<Self, ApiError> {
        let nodes = definition
            .get("nodes")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // The nodes, and a poll trigger, name connectors and connections the same way.
        let trigger = definition.get("trigger");
        let named = |field: &str| -> BTreeSet<String> {
            nodes
                .iter()
                .chain(trigger)
                .filter_map(|node| node.get(field).and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        };
        let keys: Vec<String> = named("connector")
            .into_iter()
            .filter(|key| !is_builtin_key(key))
            .collect();
        let ids: Vec<ConnectionId> = named("connection")
            .iter()
            .filter_map(|id| id.parse::<ConnectionId>().ok())
            .collect();
        let mut registered = HashMap::new();
        if !keys.is_empty() {
            let rows = client
                .query(
                    concat!(
                        "SELECT ",
                        registered_columns!(),
                        registered_from!(),
                        "WHERE c.workspace_id = $1 AND c.key = ANY($2) AND c.deleted_at IS NULL"
                    ),
                    &[&workspace, &keys],
                )
                .await?;
            for row in &rows {
                let found = registered_from_row(row)?;
                registered.insert(found.manifest.key.clone(), found.manifest);
            }
        }
        let mut connections = HashMap::new();
        if !ids.is_empty() {
            let rows = client
                .query(
                    "SELECT id, connector FROM connections WHERE workspace_id = $1 AND id = ANY($2)",
                    &[&workspace, &ids],
                )
                .await?;
            for row in &rows {
                connections.insert(row.try_get("id")?, row.try_get("connector")?);
            }
        }
        Ok(Self {
            registered,
            connections,
        })
    }

    fn manifest(&self, key: &str) -> Option<&Manifest> {
        manifest::builtin(key).or_else(|| self.registered.get(key))
    }

    /// What a schema-level parse cannot know: a poll trigger must name a poll trigger of a
    /// connector of the workspace; and every action node (and poll trigger) of a manifest
    /// connector whose auth is not `none` must name a connection of that connector in this
    /// workspace. A connection named (with any auth) must exist.
    pub(crate) fn check_references(&self, scenario: &Scenario) -> Vec<Problem> {
        let mut problems = self.check_poll(scenario);
        for node in &scenario.nodes {
            let NodeKind::Action {
                connector,
                connection,
                ..
            } = &node.kind
            else {
                continue;
            };
            let problem = |message: String| Problem {
                node: Some(node.id.clone()),
                field: "connection".to_owned(),
                message,
            };
            if connector == HTTP_CONNECTOR {
                if connection.is_some() {
                    problems.push(problem(
                        "the http connector takes no connection: put headers and credentials in the input".to_owned(),
                    ));
                }
                continue;
            }
            let Some(manifest) = self.manifest(connector) else {
                continue;
            };
            let Some(connection) = connection else {
                if manifest.auth != Auth::None {
                    problems.push(problem(format!(
                        "required: connector `{connector}` uses {} auth; name one of its connections (see GET /api/v1/connections?connector={connector})",
                        manifest.auth.kind()
                    )));
                }
                continue;
            };
            let Ok(id) = connection.parse::<ConnectionId>() else {
                problems.push(problem(format!("`{connection}` is not a connection id")));
                continue;
            };
            if let Err(message) = self.check_connection(id, connector) {
                problems.push(problem(message));
            }
        }
        problems
    }

    /// A connection named for `connector` must be one of its connections here.
    fn check_connection(&self, id: ConnectionId, connector: &str) -> Result<(), String> {
        match self.connections.get(&id) {
            None => Err(format!("no connection {id} in this workspace")),
            Some(owner) if owner != connector => Err(format!(
                "connection {id} belongs to connector `{owner}`, not `{connector}`"
            )),
            Some(_) => Ok(()),
        }
    }

    fn check_poll(&self, scenario: &Scenario) -> Vec<Problem> {
        let Some(poll) = &scenario.poll else {
            return Vec::new();
        };
        let problem = |field: &str, message: String| Problem {
            node: None,
            field: format!("trigger.{field}"),
            message,
        };
        let connector = &poll.connector;
        let Some(manifest) = self.manifest(connector) else {
            let message = if connector == HTTP_CONNECTOR {
                "the http connector has no triggers".to_owned()
            } else {
                format!(
                    "unknown connector `{connector}`: it is neither built in nor registered in this workspace"
                )
            };
            return vec![problem("connector", message)];
        };
        let mut problems = Vec::new();
        let polls: Vec<&str> = manifest
            .triggers
            .iter()
            .filter(|t| matches!(t, Trigger::Poll { .. }))
            .map(Trigger::key)
            .collect();
        if !polls.contains(&poll.trigger.as_str()) {
            let message = if polls.is_empty() {
                format!("connector `{connector}` has no poll triggers")
            } else {
                format!(
                    "connector `{connector}` has no poll trigger `{}` (it has: {})",
                    poll.trigger,
                    polls.join(", ")
                )
            };
            problems.push(problem("trigger", message));
        }
        match poll.connection {
            None if manifest.auth != Auth::None => problems.push(problem(
                "connection",
                format!(
                    "required: connector `{connector}` uses {} auth; name one of its connections",
                    manifest.auth.kind()
                ),
            )),
            None => {}
            Some(id) => {
                if let Err(message) = self.check_connection(id, connector) {
                    problems.push(problem("connection", message));
                }
            }
        }
        problems
    }
}

impl Catalog for WorkspaceCatalog {
    fn check_action(&self, connector: &str, action: &str) -> Result<(), String> {
        if connector == HTTP_CONNECTOR {
            return BuiltinCatalog.check_action(connector, action);
        }
        let manifest = self.manifest(connector).ok_or_else(|| {
            format!(
                "unknown connector `{connector}`: it is neither built in nor registered in this workspace"
            )
        })?;
        if manifest.action(action).is_some() {
            return Ok(());
        }
        let known: Vec<&str> = manifest.actions.iter().map(|a| a.key.as_str()).collect();
        Err(format!(
            "connector `{connector}` has no action `{action}` (it has: {})",
            known.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weft_domain::manifest;
    use weft_domain::scenario::Catalog as _;

    use super::*;

    fn custom(auth: Value) -> Manifest {
        manifest::validate(&json!({
            "key": "crm", "name": "CRM", "version": "1.0.0", "base_url": "https://crm.test",
            "auth": auth,
            "actions": [{"key": "find", "name": "Find", "request": {"method": "GET", "path": "/find"}}]
        }))
        .expect("valid manifest")
    }

    fn catalog(auth: Value, connections: &[(ConnectionId, &str)]) -> WorkspaceCatalog {
        WorkspaceCatalog {
            registered: HashMap::from([("crm".to_owned(), custom(auth))]),
            connections: connections
                .iter()
                .map(|(id, key)| (*id, (*key).to_owned()))
                .collect(),
        }
    }

    fn scenario(catalog: &WorkspaceCatalog, node: Value) -> Scenario {
        Scenario::parse(
            &json!({"name": "s", "trigger": {"type": "manual"}, "nodes": [node]}),
            catalog,
        )
        .expect("parses")
    }

    #[test]
    fn the_catalog_knows_http_the_builtins_and_the_workspace_connectors() {
        let catalog = catalog(json!({"type": "none"}), &[]);
        assert_eq!(catalog.check_action("http", "request"), Ok(()));
        assert_eq!(catalog.check_action("crm", "find"), Ok(()));
        let builtin = &manifest::builtins()[0];
        assert_eq!(
            catalog.check_action(&builtin.key, &builtin.actions[0].key),
            Ok(())
        );
        let missing = catalog
            .check_action("crm", "delete")
            .expect_err("no such action");
        assert!(
            missing.contains("has no action `delete` (it has: find)"),
            "{missing}"
        );
        let unknown = catalog.check_action("erp", "find").expect_err("unknown");
        assert!(unknown.contains("unknown connector `erp`"), "{unknown}");
    }

    #[test]
    fn action_nodes_of_authenticated_connectors_need_a_connection_of_their_connector() {
        let mine = ConnectionId::generate();
        let github = ConnectionId::generate();
        let catalog = catalog(
            json!({"type": "bearer"}),
            &[(mine, "crm"), (github, "github")],
        );
        let node = |connection: Option<String>| {
            let mut node =
                json!({"id": "find", "type": "action", "connector": "crm", "action": "find"});
            if let Some(connection) = connection {
                node["connection"] = Value::String(connection);
            }
            node
        };

        let ok = scenario(&catalog, node(Some(mine.to_string())));
        assert!(catalog.check_references(&ok).is_empty());

        let cases = [
            (None, "required: connector `crm` uses bearer auth"),
            (Some("nope".to_owned()), "`nope` is not a connection id"),
            (
                Some(ConnectionId::generate().to_string()),
                "in this workspace",
            ),
            (
                Some(github.to_string()),
                "belongs to connector `github`, not `crm`",
            ),
        ];
        for (connection, expected) in cases {
            let problems = catalog.check_references(&scenario(&catalog, node(connection)));
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].node.as_deref(), Some("find"));
            assert_eq!(problems[0].field, "connection");
            assert!(
                problems[0].message.contains(expected),
                "{expected}: {problems:?}"
            );
        }
    }

    #[test]
    fn poll_triggers_name_a_poll_trigger_of_the_connector_and_a_connection_of_it() {
        let github = manifest::builtin("github").expect("github ships");
        let poll_key = github
            .triggers
            .iter()
            .find(|t| matches!(t, Trigger::Poll { .. }))
            .map(Trigger::key)
            .expect("github has a poll trigger");
        let mine = ConnectionId::generate();
        let catalog = catalog(json!({"type": "none"}), &[(mine, "github")]);
        let poll = |trigger: Value| {
            let definition = json!({
                "name": "s", "trigger": trigger,
                "nodes": [{"id": "t", "type": "transform", "output": {}}]
            });
            catalog.check_references(&Scenario::parse(&definition, &catalog).expect("parses"))
        };
        assert!(
            poll(json!({"type": "poll", "connector": "github", "trigger": poll_key, "connection": mine.to_string()}))
                .is_empty()
        );
        let problems = poll(json!({"type": "poll", "connector": "github", "trigger": "nope"}));
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["trigger.trigger", "trigger.connection"],
            "{problems:?}"
        );
        assert!(problems[0].message.contains(poll_key), "{problems:?}");
        let problems = poll(json!({"type": "poll", "connector": "crm", "trigger": "new"}));
        assert_eq!(problems[0].message, "connector `crm` has no poll triggers");
        let problems = poll(json!({"type": "poll", "connector": "erp", "trigger": "new"}));
        assert_eq!(problems[0].field, "trigger.connector");
    }

    #[test]
    fn connectors_without_auth_need_no_connection_and_http_takes_none() {
        let catalog = catalog(json!({"type": "none"}), &[]);
        let node = json!({"id": "find", "type": "action", "connector": "crm", "action": "find"});
        assert!(
            catalog
                .check_references(&scenario(&catalog, node))
                .is_empty()
        );
        let http = json!({
            "id": "get", "type": "action", "connector": "http", "action": "request",
            "connection": ConnectionId::generate().to_string(), "input": {"url": "https://x.test"}
        });
        let problems = catalog.check_references(&scenario(&catalog, http));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("takes no connection"));
    }
}
