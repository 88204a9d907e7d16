//! Config values a connector marks secret, hidden from viewers.
//!
//! A connection's `config` is not where credentials go, but a connector may still take
//! something sensitive there (a webhook URL with a token in it). A `connection_schema`
//! property with JSON Schema's `"writeOnly": true` is such a value: viewers read it as
//! [`MASK`]; everyone else sees it.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use serde_json::Value;
use weft_domain::ids::WorkspaceId;

use super::connectable::{Connectable, connectable};
use super::model::ConnectionView;
use crate::error::ApiError;

pub const MASK: &str = "********";

/// The top-level properties `schema` marks `writeOnly`.
pub fn secret_fields(schema: &Value) -> Vec<String> {
    schema["properties"]
        .as_object()
        .map(|properties| {
            properties
                .iter()
                .filter(|(_, property)| property["writeOnly"] == Value::Bool(true))
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Replaces the value of each of `fields` that `config` sets by [`MASK`].
pub fn mask(config: &mut Value, fields: &[String]) {
    let Some(config) = config.as_object_mut() else {
        return;
    };
    for field in fields {
        if let Some(value) = config.get_mut(field) {
            *value = Value::String(MASK.to_owned());
        }
    }
}

/// Masks the secret config values of `views` (each by its own connector's schema).
pub(super) async fn for_viewer(
    client: &impl GenericClient,
    workspace: WorkspaceId,
    views: &mut [ConnectionView],
) -> Result<(), ApiError> {
    let mut fields: HashMap<String, Vec<String>> = HashMap::new();
    for view in views {
        if !fields.contains_key(&view.connector) {
            let secret = match connectable(client, workspace, &view.connector).await? {
                Connectable::Manifest(manifest) => secret_fields(&manifest.connection_schema),
                Connectable::Unknown | Connectable::Http => Vec::new(),
            };
            fields.insert(view.connector.clone(), secret);
        }
        mask(&mut view.config, &fields[&view.connector]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn write_only_properties_are_masked_and_the_rest_kept() {
        let schema = json!({"type": "object", "properties": {
            "region": {"type": "string"},
            "webhook_url": {"type": "string", "writeOnly": true},
            "signing_key": {"type": "string", "writeOnly": true}
        }});
        let mut fields = secret_fields(&schema);
        fields.sort();
        assert_eq!(fields, ["signing_key", "webhook_url"]);
        let mut config = json!({"region": "eu", "webhook_url": "https://hooks.example.com/T0K3N"});
        mask(&mut config, &fields);
        assert_eq!(config, json!({"region": "eu", "webhook_url": MASK}));
        assert!(secret_fields(&json!({})).is_empty());
    }
}
