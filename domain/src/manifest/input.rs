//! A node's rendered input checked against its action's `input_schema`.

use std::fmt;
use std::sync::Arc;

use jsonschema::Validator;
use quick_cache::sync::Cache;
use serde_json::Value;

use super::problems::{schema_options, schema_problems, truncate};

/// Largest number of compiled input schemas kept: more than the actions of every connector
/// a deployment uses, small enough to bound memory against many custom connectors.
const INPUT_SCHEMA_CACHE: usize = 512;

/// Most input problems named in one message.
const MAX_INPUT_PROBLEMS: usize = 10;

/// Checks a node's rendered input against its action's `input_schema` before dispatch,
/// compiling each distinct schema once. Shared by every task of a process.
pub struct InputSchemas {
    /// By the schema's JSON text.
    compiled: Cache<String, Arc<Validator>>,
}

impl Default for InputSchemas {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InputSchemas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputSchemas")
            .field("compiled", &self.compiled.len())
            .finish()
    }
}

impl InputSchemas {
    pub fn new() -> Self {
        Self {
            compiled: Cache::new(INPUT_SCHEMA_CACHE),
        }
    }

    /// `Ok` when `input` satisfies `schema`; otherwise a message naming each offending
    /// field: `input.channel: "channel" is a required property`. A schema that does not
    /// compile (only possible for a manifest stored before validation) is an error too.
    pub fn check(&self, schema: &Value, input: &Value) -> Result<(), String> {
        let validator = self.validator(schema)?;
        let problems: Vec<String> = validator
            .iter_errors(input)
            .flat_map(|error| schema_problems("input", input, &error))
            .map(|problem| problem.to_string())
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        let mut message = problems
            .iter()
            .take(MAX_INPUT_PROBLEMS)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if problems.len() > MAX_INPUT_PROBLEMS {
            message.push_str(&format!(
                "; and {} more",
                problems.len() - MAX_INPUT_PROBLEMS
            ));
        }
        Err(message)
    }

    fn validator(&self, schema: &Value) -> Result<Arc<Validator>, String> {
        let text = schema.to_string();
        if let Some(validator) = self.compiled.get(&text) {
            return Ok(validator);
        }
        // Compiled outside the cache's lock: other tasks keep checking while this one compiles.
        let validator = Arc::new(schema_options().build(schema).map_err(|e| {
            format!(
                "the action's input_schema is not a valid JSON Schema ({}); fix the connector manifest",
                truncate(e.to_string())
            )
        })?);
        self.compiled.insert(text, Arc::clone(&validator));
        Ok(validator)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    #[test]
    fn input_problems_name_the_field() {
        let schemas = InputSchemas::new();
        let schema = json!({
            "type": "object",
            "required": ["channel"],
            "properties": {"channel": {"type": "string"}, "limit": {"type": "integer"}}
        });
        assert_eq!(
            schemas.check(&schema, &json!({"channel": "C1", "limit": 5})),
            Ok(())
        );
        assert_eq!(
            schemas.check(&schema, &json!({"limit": 5})),
            Err(r#"input.channel: "channel" is a required property"#.to_owned())
        );
        assert_eq!(
            schemas.check(&schema, &json!({"channel": "C1", "limit": "ten"})),
            Err(r#"input.limit: "ten" is not of type "integer""#.to_owned())
        );
        assert_eq!(
            schemas.check(&schema, &json!([])),
            Err(r#"input: [] is not of type "object""#.to_owned())
        );
    }

    #[test]
    fn input_problems_are_all_named_and_bounded() {
        let schemas = InputSchemas::new();
        let schema = json!({"type": "array", "items": {"type": "integer"}});
        let message = schemas
            .check(&schema, &json!(["a", 1, "b"]))
            .expect_err("two bad items");
        assert_eq!(
            message,
            r#"input[0]: "a" is not of type "integer"; input[2]: "b" is not of type "integer""#
        );
        let many: Vec<Value> = (0..15).map(|i| json!(format!("x{i}"))).collect();
        let message = schemas
            .check(&schema, &Value::Array(many))
            .expect_err("bad");
        assert!(message.ends_with("; and 5 more"), "{message}");
    }

    #[test]
    fn input_schemas_never_fetch_remote_references() {
        let schemas = InputSchemas::new();
        let message = schemas
            .check(&json!({"$ref": "https://example.test/s.json"}), &json!({}))
            .expect_err("remote refs are off");
        assert!(
            message.starts_with("the action's input_schema is not a valid JSON Schema"),
            "{message}"
        );
    }

    #[test]
    fn input_schemas_can_be_shared_by_every_task() {
        fn shareable<T: Send + Sync>() {}
        shareable::<InputSchemas>();
    }

    #[test]
    fn the_input_schema_cache_stays_bounded() {
        let schemas = InputSchemas::new();
        for limit in 0..INPUT_SCHEMA_CACHE + 10 {
            let schema = json!({"type": "integer", "maximum": limit});
            assert_eq!(schemas.check(&schema, &json!(0)), Ok(()));
        }
        assert!(
            schemas.compiled.len() <= INPUT_SCHEMA_CACHE,
            "{}",
            schemas.compiled.len()
        );
        let schema = json!({"type": "integer", "maximum": 3});
        assert!(schemas.check(&schema, &json!(4)).is_err());
    }
}
