//! What a connector looks like in the API: its summary, its actions and triggers, and the
//! `http` connector, which has no manifest, described like the others.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use weft_domain::manifest::{Auth, HTTP_CONNECTOR, HTTP_REQUEST_ACTION, Trigger};

use crate::audit::ActorView;
use crate::catalog::Connector;

impl Connector {
    pub(super) fn view(&self, with_manifest: bool) -> ConnectorView {
        let Some(manifest) = self.manifest() else {
            return http_view(with_manifest);
        };
        let (revision, created_at, updated_at, created_by, updated_by, source) = match self {
            Self::Registered(registered) => (
                Some(registered.revision),
                Some(registered.created_at),
                Some(registered.updated_at),
                registered.created_by,
                registered.updated_by,
                registered.source.clone(),
            ),
            _ => (
                None,
                None,
                None,
                None,
                None,
                serde_json::to_value(manifest).unwrap_or(Value::Null),
            ),
        };
        ConnectorView {
            key: manifest.key.clone(),
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            category: manifest.category.clone(),
            description: manifest.description.clone(),
            auth_type: manifest.auth.kind(),
            actions: manifest
                .actions
                .iter()
                .map(|action| ActionSummary {
                    key: action.key.clone(),
                    name: action.name.clone(),
                    description: action.description.clone(),
                })
                .collect(),
            triggers: manifest.triggers.iter().map(trigger_summary).collect(),
            builtin: !matches!(self, Self::Registered(_)),
            revision,
            created_at,
            updated_at,
            created_by,
            updated_by,
            manifest: with_manifest.then_some(source),
        }
    }
}

fn trigger_summary(trigger: &Trigger) -> TriggerSummary {
    match trigger {
        Trigger::Webhook {
            key,
            name,
            description,
            ..
        } => TriggerSummary {
            key: key.clone(),
            name: name.clone(),
            kind: "webhook",
            description: description.clone(),
        },
        Trigger::Poll {
            key,
            name,
            description,
            ..
        } => TriggerSummary {
            key: key.clone(),
            name: name.clone(),
            kind: "poll",
            description: description.clone(),
        },
    }
}

/// A connector as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Connector)]
pub struct ConnectorView {
    pub key: String,
    pub name: String,
    /// The manifest's own version, e.g. `1.2.0`.
    pub version: String,
    pub category: Option<String>,
    pub description: Option<String>,
    /// `none`, `api_key`, `bearer`, `basic` or `oauth2`.
    pub auth_type: &'static str,
    pub actions: Vec<ActionSummary>,
    pub triggers: Vec<TriggerSummary>,
    /// Ships with Weft (cannot be changed or deleted), or is this workspace's own.
    pub builtin: bool,
    /// A workspace connector's stored version: each save adds one. Null for built-ins.
    pub revision: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Who registered a workspace connector; absent for built-ins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<ActorView>,
    /// Who saved its current version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<ActorView>,
    /// The full manifest; only in `GET /api/v1/connectors/{key}` and the answers to saves.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub manifest: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActionSummary {
    pub key: String,
    pub name: String,
    pub description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerSummary {
    pub key: String,
    pub name: String,
    /// `webhook` or `poll`.
    pub kind: &'static str,
    pub description: Option<String>,
}

/// The input of `http.request` (architecture §7), as a JSON Schema for the catalog.
fn http_input_schema() -> Value {
    json!({
        "type": "object",
        "required": ["url"],
        "properties": {
            "method": {"type": "string", "default": "GET", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]},
            "url": {"type": "string", "description": "An absolute http(s) URL"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "query": {"type": "object"},
            "body": {},
            "body_type": {"type": "string", "enum": ["json", "form", "raw"], "default": "json"},
            "timeout": {"description": "A duration like \"10s\", or milliseconds", "type": ["string", "integer"]}
        },
        "additionalProperties": false
    })
}

fn http_view(with_manifest: bool) -> ConnectorView {
    let description = "Send any HTTP request: method, URL, headers and body are the action's input";
    let action_description =
        "One HTTP request; outputs `{status, headers, body}` (the body parsed when it is JSON)";
    ConnectorView {
        key: HTTP_CONNECTOR.to_owned(),
        name: "HTTP".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        category: Some("developer".to_owned()),
        description: Some(description.to_owned()),
        auth_type: Auth::None.kind(),
        actions: vec![ActionSummary {
            key: HTTP_REQUEST_ACTION.to_owned(),
            name: "HTTP request".to_owned(),
            description: Some(action_description.to_owned()),
        }],
        triggers: Vec::new(),
        builtin: true,
        revision: None,
        created_at: None,
        updated_at: None,
        created_by: None,
        updated_by: None,
        manifest: with_manifest.then(|| {
            json!({
                "key": HTTP_CONNECTOR,
                "name": "HTTP",
                "version": env!("CARGO_PKG_VERSION"),
                "category": "developer",
                "description": description,
                "auth": {"type": "none"},
                "actions": [{
                    "key": HTTP_REQUEST_ACTION,
                    "name": "HTTP request",
                    "description": action_description,
                    "input_schema": http_input_schema(),
                    "output_schema": {
                        "type": "object",
                        "properties": {"status": {"type": "integer"}, "headers": {"type": "object"}, "body": {}}
                    }
                }]
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_domain::manifest;

    #[test]
    fn views_name_the_auth_type_actions_and_origin() {
        let builtin = Connector::Builtin(&manifest::builtins()[0]).view(false);
        assert!(builtin.builtin);
        assert_eq!(builtin.revision, None);
        assert!(builtin.manifest.is_none(), "lists carry no manifest");
        assert!(!builtin.actions.is_empty());

        let http = http_view(true);
        assert_eq!((http.key.as_str(), http.auth_type), ("http", "none"));
        assert_eq!(http.actions[0].key, "request");
        let manifest = http.manifest.expect("the full description");
        assert_eq!(
            manifest["actions"][0]["input_schema"]["required"],
            json!(["url"])
        );
    }
}
