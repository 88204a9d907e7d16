//! The checks of a manifest: its JSON Schema first, then what a schema cannot say (HTTP
//! methods, templates, JSONPaths, unique keys).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use http::HeaderName;
use jsonschema::Validator;
use serde_json::Value;
use serde_json_path::JsonPath;

use super::model::{HTTP_CONNECTOR, Manifest};
use super::problems::{
    InvalidManifest, ManifestProblem, join, json_path, quoted, schema_options, schema_problems,
    truncate,
};
use crate::connector::path::PathTemplate;
use crate::template::{Templates, is_template};

/// The JSON Schema (draft 2020-12) of the manifest format. It says what a schema can; the
/// rest is checked by [`validate`].
pub const MANIFEST_SCHEMA: &str = include_str!("../../manifest.schema.json");

/// The methods a request may use. HTTP allows extension methods, but no API a connector
/// talks to needs one, and a typo like `FETCH` is far likelier than a real extension.
pub const HTTP_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Connector keys that name something other than a manifest.
pub const RESERVED_KEYS: [&str; 2] = [HTTP_CONNECTOR, "weft"];

/// Longest connector, action or trigger key.
pub const MAX_KEY_CHARS: usize = 64;

/// Parses and checks a manifest: its JSON Schema first, then what a schema cannot say.
/// Every problem is reported, not only the first.
pub fn validate(source: &Value) -> Result<Manifest, InvalidManifest> {
    let mut problems: Vec<ManifestProblem> = manifest_schema()
        .iter_errors(source)
        .flat_map(|error| schema_problems("", source, &error))
        .collect();
    // The semantic checks read the raw document and skip whatever has the wrong shape, so
    // they run even when the schema failed and both kinds of problem come back together.
    Checker {
        templates: templates(),
        problems: &mut problems,
    }
    .manifest(source);
    if !problems.is_empty() {
        return Err(InvalidManifest(problems));
    }
    serde_json::from_value(source.clone()).map_err(|e| {
        InvalidManifest(vec![ManifestProblem {
            path: String::new(),
            message: format!("does not match the manifest format: {e}"),
        }])
    })
}

fn manifest_schema() -> &'static Validator {
    static SCHEMA: OnceLock<Validator> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema: Value =
            serde_json::from_str(MANIFEST_SCHEMA).expect("manifest.schema.json is JSON");
        schema_options()
            .build(&schema)
            .unwrap_or_else(|e| panic!("manifest.schema.json does not compile: {e}"))
    })
}

fn templates() -> &'static Templates {
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    TEMPLATES.get_or_init(Templates::new)
}

/// The checks a JSON Schema cannot express, over the raw document.
struct Checker<'a> {
    templates: &'a Templates,
    problems: &'a mut Vec<ManifestProblem>,
}

impl Checker<'_> {
    fn problem(&mut self, path: String, message: impl Into<String>) {
        self.problems.push(ManifestProblem {
            path,
            message: message.into(),
        });
    }

    fn manifest(&mut self, manifest: &Value) {
        if let Some(key) = manifest.get("key").and_then(Value::as_str) {
            self.key("key".to_owned(), key);
            if RESERVED_KEYS.contains(&key) {
                self.problem(
                    "key".to_owned(),
                    format!(
                        "{} is reserved for a built-in connector; choose another key",
                        quoted(key)
                    ),
                );
            }
        }
        if let Some(base_url) = manifest.get("base_url").and_then(Value::as_str) {
            self.template("base_url".to_owned(), base_url);
        }
        if let Some(auth) = manifest.get("auth") {
            self.auth(auth);
        }
        if let Some(schema) = manifest.get("connection_schema") {
            self.schema("connection_schema", schema);
        }
        if let Some(test) = manifest.get("test") {
            self.request("test", test);
        }
        if let Some(per) = manifest.pointer("/rate_limit/per").and_then(Value::as_str) {
            self.duration("rate_limit.per".to_owned(), per);
        }
        if let Some(actions) = manifest.get("actions").and_then(Value::as_array) {
            let mut seen = BTreeMap::new();
            for (index, action) in actions.iter().enumerate() {
                let path = format!("actions[{index}]");
                self.unique("action", &mut seen, &path, action);
                self.action(&path, action);
            }
        }
        if let Some(triggers) = manifest.get("triggers").and_then(Value::as_array) {
            let mut seen = BTreeMap::new();
            for (index, trigger) in triggers.iter().enumerate() {
                let path = format!("triggers[{index}]");
                self.unique("trigger", &mut seen, &path, trigger);
                self.trigger(&path, trigger);
            }
        }
    }

    /// Checks the format of an item's `key` and that no earlier item of `list` had it.
    fn unique(
        &mut self,
        list: &str,
        seen: &mut BTreeMap<String, String>,
        path: &str,
        item: &Value,
    ) {
        let Some(key) = item.get("key").and_then(Value::as_str) else {
            return;
        };
        let key_path = join(path, "key");
        self.key(key_path.clone(), key);
        if let Some(first) = seen.get(key) {
            let message = format!("duplicate {list} key {} (also at {first})", quoted(key));
            self.problem(key_path, message);
        } else {
            seen.insert(key.to_owned(), path.to_owned());
        }
    }

    fn key(&mut self, path: String, key: &str) {
        let well_formed = key.starts_with(|c: char| c.is_ascii_lowercase())
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && key.len() <= MAX_KEY_CHARS;
        if !well_formed {
            self.problem(
                path,
                format!(
                    "{} is not a valid key: use lowercase letters, digits and _, starting with a letter, at most {MAX_KEY_CHARS} characters",
                    quoted(key)
                ),
            );
        }
    }

    fn auth(&mut self, auth: &Value) {
        match auth.get("type").and_then(Value::as_str) {
            Some("api_key") if auth.get("in").and_then(Value::as_str) == Some("header") => {
                if let Some(name) = auth.get("name").and_then(Value::as_str) {
                    self.header_name("auth.name".to_owned(), name);
                }
            }
            Some("oauth2") => {
                let grant = auth
                    .get("grant")
                    .and_then(Value::as_str)
                    .unwrap_or("authorization_code");
                if grant == "authorization_code" && auth.get("authorize_url").is_none() {
                    self.problem(
                        "auth.authorize_url".to_owned(),
                        "required for the authorization_code grant: give the provider's authorize URL, or use \"grant\": \"client_credentials\"",
                    );
                }
            }
            _ => {}
        }
    }

    fn action(&mut self, path: &str, action: &Value) {
        if let Some(schema) = action.get("input_schema") {
            self.schema(&join(path, "input_schema"), schema);
        }
        if let Some(schema) = action.get("output_schema").filter(|s| !s.is_null()) {
            self.schema(&join(path, "output_schema"), schema);
        }
        if let Some(request) = action.get("request") {
            self.request(&join(path, "request"), request);
        }
        if let Some(response) = action.get("response") {
            self.response(&join(path, "response"), response);
        }
        if let Some(header) = action
            .pointer("/idempotency/header")
            .and_then(Value::as_str)
        {
            self.header_name(join(&join(path, "idempotency"), "header"), header);
        }
    }

    fn trigger(&mut self, path: &str, trigger: &Value) {
        if trigger.get("kind").and_then(Value::as_str) != Some("poll") {
            return;
        }
        if let Some(interval) = trigger.get("interval").and_then(Value::as_str) {
            self.duration(join(path, "interval"), interval);
        }
        if let Some(request) = trigger.get("request") {
            self.request(&join(path, "request"), request);
        }
        for field in ["items", "id"] {
            if let Some(json_path) = trigger.get(field).and_then(Value::as_str) {
                self.json_path(join(path, field), json_path);
            }
        }
        if let Some(next) = trigger.pointer("/cursor/next").and_then(Value::as_str) {
            self.json_path(join(&join(path, "cursor"), "next"), next);
        }
    }

    fn request(&mut self, path: &str, request: &Value) {
        if let Some(method) = request.get("method").and_then(Value::as_str)
            && !HTTP_METHODS.contains(&method)
        {
            self.problem(
                join(path, "method"),
                format!("{} is not an HTTP method", quoted(method)),
            );
        }
        if let Some(target) = request.get("path").and_then(Value::as_str) {
            self.path(join(path, "path"), target);
        }
        if let Some(query) = request.get("query").and_then(Value::as_object) {
            let query_path = join(path, "query");
            for (name, value) in query {
                self.template_value(join(&query_path, name), value);
            }
        }
        if let Some(headers) = request.get("headers").and_then(Value::as_object) {
            let headers_path = join(path, "headers");
            for (name, value) in headers {
                let header_path = join(&headers_path, name);
                self.header_name(header_path.clone(), name);
                self.template_value(header_path, value);
            }
        }
        if let Some(body) = request.get("body") {
            self.template_value(join(path, "body"), body);
        }
        if let Some(timeout) = request.get("timeout").and_then(Value::as_str) {
            self.duration(join(path, "timeout"), timeout);
        }
    }

    fn response(&mut self, path: &str, response: &Value) {
        if let Some(expr) = response.get("success_if").and_then(Value::as_str)
            && let Err(e) = self.templates.expression_variables(expr)
        {
            let hint = if expr.contains("{{") {
                " (write the bare expression, without {{ }})"
            } else {
                ""
            };
            self.problem(
                join(path, "success_if"),
                format!("expression does not parse: {e}{hint}"),
            );
        }
        if let Some(error) = response.get("error").and_then(Value::as_str) {
            self.json_path(join(path, "error"), error);
        }
        if let Some(output) = response.get("output").and_then(Value::as_object) {
            let output_path = join(path, "output");
            for (field, json_path) in output {
                if let Some(json_path) = json_path.as_str() {
                    self.json_path(join(&output_path, field), json_path);
                }
            }
        }
    }

    /// Checks every template string inside a value, as the engine will render them.
    fn template_value(&mut self, path: String, value: &Value) {
        match value {
            Value::String(source) => self.template(path, source),
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    self.template_value(format!("{path}[{index}]"), item);
                }
            }
            Value::Object(fields) => {
                for (name, item) in fields {
                    self.template_value(join(&path, name), item);
                }
            }
            _ => {}
        }
    }

    fn template(&mut self, path: String, source: &str) {
        if is_template(source)
            && let Err(e) = self.templates.variables(source)
        {
            self.problem(path, format!("template does not parse: {e}"));
        }
    }

    /// A request path: text and placeholders, each placeholder's expression a template.
    fn path(&mut self, path: String, source: &str) {
        match PathTemplate::parse(source) {
            Err(e) => self.problem(path, e),
            Ok(template) => {
                for placeholder in template.placeholders() {
                    let expression = format!("{{{{ {} }}}}", placeholder.expression);
                    self.template(path.clone(), &expression);
                }
            }
        }
    }

    fn json_path(&mut self, path: String, source: &str) {
        if let Err(e) = JsonPath::parse(source) {
            self.problem(path, format!("{} is not a JSONPath: {e}", quoted(source)));
        }
    }

    fn duration(&mut self, path: String, source: &str) {
        match humantime::parse_duration(source) {
            Ok(duration) if duration.is_zero() => {
                self.problem(path, "must be longer than zero");
            }
            Ok(_) => {}
            Err(e) => self.problem(
                path,
                format!(
                    "{} is not a duration ({e}): write e.g. \"30s\", \"5m\" or \"1h\"",
                    quoted(source)
                ),
            ),
        }
    }

    fn header_name(&mut self, path: String, name: &str) {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.problem(path, format!("{} is not a valid header name", quoted(name)));
        }
    }

    /// Checks that an embedded JSON Schema compiles, reporting where inside it it fails.
    fn schema(&mut self, path: &str, schema: &Value) {
        if !(schema.is_object() || schema.is_boolean()) {
            return;
        }
        if let Err(error) = schema_options().build(schema) {
            let message = format!("not a valid JSON Schema: {}", truncate(error.to_string()));
            let at = json_path(path, schema, error.instance_path().as_str());
            self.problem(at, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::manifest::{BodyType, Trigger};
    #[test]
    fn the_readme_example_manifest_is_valid() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```json\n{\n  \"key\": \"acme\"")
            .expect("the README shows the acme manifest")
            + "```json\n".len();
        let end = start + readme[start..].find("```").expect("the block ends");
        let example: Value =
            serde_json::from_str(&readme[start..end]).expect("the example is JSON");
        let manifest = validate(&example).expect("the README's manifest validates");
        assert_eq!(manifest.actions[0].key, "create_contact");
    }

    /// A manifest using every feature of the format.
    fn full_manifest() -> Value {
        json!({
            "key": "acme", "name": "Acme", "version": "1.2.0", "category": "crm",
            "description": "Acme's CRM",
            "base_url": "https://{{ config.account }}.acme.test/api",
            "auth": {
                "type": "oauth2",
                "authorize_url": "https://acme.test/oauth/authorize",
                "token_url": "https://acme.test/oauth/token",
                "scopes": ["contacts:read", "contacts:write"],
                "scope_separator": ",",
                "authorize_params": {"access_type": "offline"}
            },
            "connection_schema": {
                "type": "object",
                "required": ["account"],
                "properties": {"account": {"type": "string"}}
            },
            "test": {"method": "GET", "path": "/me", "timeout": "5s"},
            "rate_limit": {"requests": 5, "per": "1s"},
            "actions": [
                {
                    "key": "create_contact", "name": "Create contact",
                    "input_schema": {
                        "type": "object",
                        "required": ["email"],
                        "properties": {"email": {"type": "string"}, "tags": {"type": "array"}}
                    },
                    "output_schema": {"type": "object"},
                    "request": {
                        "method": "POST", "path": "/contacts",
                        "query": {"notify": "{{ input.notify | default(false) }}"},
                        "headers": {"X-Request-Source": "weft"},
                        "body": {"email": "{{ input.email }}", "tags": ["{{ input.tags }}"]},
                        "timeout": "30s"
                    },
                    "response": {
                        "success_if": "response.status == 201",
                        "error": "$.body.error.message",
                        "output": {"id": "$.body.id"}
                    },
                    "idempotency": {"header": "Idempotency-Key"}
                },
                {
                    "key": "import", "name": "Import",
                    "request": {
                        "method": "PUT", "path": "/import", "body_type": "raw",
                        "body": "{% for row in input.rows %}{{ row }}\n{% endfor %}"
                    }
                }
            ],
            "triggers": [
                {
                    "key": "new_contact", "name": "New contact", "kind": "poll",
                    "interval": "60s",
                    "request": {"method": "GET", "path": "/contacts", "query": {"limit": 50}},
                    "items": "$.body.items", "id": "$.id",
                    "cursor": {"param": "after", "next": "$.body.next"}
                },
                {
                    "key": "contact_deleted", "name": "Contact deleted", "kind": "webhook",
                    "signature": "hmac-sha256", "event": "contact.deleted"
                }
            ]
        })
    }

    fn problems(manifest: &Value) -> Vec<String> {
        match validate(manifest) {
            Ok(m) => panic!("expected problems, the manifest validated: {m:?}"),
            Err(InvalidManifest(problems)) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    fn with(mut manifest: Value, pointer: &str, value: Value) -> Value {
        *manifest
            .pointer_mut(pointer)
            .expect("pointer into the manifest") = value;
        manifest
    }

    #[test]
    fn the_full_manifest_validates_into_its_typed_form() {
        let manifest = validate(&full_manifest()).expect("valid");
        assert_eq!(manifest.key, "acme");
        assert_eq!(manifest.auth.kind(), "oauth2");
        assert_eq!(manifest.actions[1].request.body_type, BodyType::Raw);
        assert!(matches!(manifest.triggers[0], Trigger::Poll { .. }));
        assert_eq!(manifest.rate_limit.as_ref().map(|r| r.requests), Some(5));
    }

    #[test]
    fn an_unknown_method_is_named_with_its_path() {
        let mut manifest = full_manifest();
        let actions = manifest["actions"].as_array_mut().expect("actions");
        actions.push(
            json!({"key": "fetch", "name": "Fetch", "request": {"method": "FETCH", "path": "/x"}}),
        );
        assert_eq!(
            problems(&manifest),
            vec![r#"actions[2].request.method: "FETCH" is not an HTTP method"#]
        );
    }

    #[test]
    fn a_bad_template_is_rejected_at_its_path() {
        let manifest = with(
            full_manifest(),
            "/actions/0/request/body/tags/0",
            json!("{{ input.tags "),
        );
        let found = problems(&manifest);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("actions[0].request.body.tags[0]: template does not parse:"),
            "{found:?}"
        );

        let manifest = with(full_manifest(), "/base_url", json!("https://{% if %}.test"));
        assert!(problems(&manifest)[0].starts_with("base_url: template does not parse:"));

        let manifest = with(
            full_manifest(),
            "/triggers/0/request/path",
            json!("/contacts/{{ }}"),
        );
        assert!(
            problems(&manifest)[0]
                .starts_with("triggers[0].request.path: template does not parse:")
        );
    }

    #[test]
    fn a_path_is_checked_as_text_and_placeholders_at_load() {
        let at = "/actions/0/request/path";
        let marked = with(
            full_manifest(),
            at,
            json!("/files/{{ input.file | segments }}"),
        );
        assert!(validate(&marked).is_ok(), "{:?}", validate(&marked));
        for (path, expected) in [
            (
                "/c/{% if input.a %}x{% endif %}",
                "a path holds only text and {{ }} placeholders, no {% %} statements",
            ),
            (
                "/c/{{ input.file | segments | lower }}",
                "`segments` marks a whole placeholder as several path segments, so it comes last",
            ),
            (
                "/c/{{ input.file | segments('/') }}",
                "`segments` takes no arguments",
            ),
            ("/c/{{ input.a + }}", "template does not parse"),
        ] {
            let found = problems(&with(full_manifest(), at, json!(path)));
            assert_eq!(found.len(), 1, "{path}: {found:?}");
            assert!(
                found[0].starts_with(&format!("actions[0].request.path: {expected}")),
                "{path}: {found:?}"
            );
        }
    }

    #[test]
    fn plain_strings_that_only_look_like_template_syntax_are_not_templates() {
        let mut manifest = full_manifest();
        manifest["actions"][0]["request"]["headers"]["X-Note"] = json!("{# not a comment");
        assert!(validate(&manifest).is_ok());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut manifest = full_manifest();
        manifest["key"] = json!("http");
        manifest["rate_limit"] = json!({"requests": 0, "per": "soon"});
        manifest["auth"]
            .as_object_mut()
            .expect("auth")
            .remove("authorize_url");
        manifest["actions"][0]["response"]["success_if"] = json!("{{ response.ok }}");
        manifest["actions"][0]["response"]["output"]["id"] = json!("$.body[");
        manifest["actions"][1]["key"] = json!("create_contact");
        manifest["actions"][1]["request"]["timeout"] = json!("0s");
        manifest["actions"][1]["colour"] = json!("red");
        manifest["actions"][0]
            .as_object_mut()
            .expect("action")
            .remove("name");
        manifest["triggers"][0]["items"] = json!("body.items");
        manifest["triggers"][0]["interval"] = json!("often");
        manifest["triggers"][1]["signature"] = json!("md5");
        manifest["triggers"][1]["key"] = json!("Contact-Deleted");
        manifest["connection_schema"] =
            json!({"type": "object", "properties": {"account": {"type": "text"}}});
        manifest["actions"][0]["input_schema"] = json!({"$ref": "https://acme.test/contact.json"});

        let found = problems(&manifest);
        let expect_prefixes = [
            "rate_limit.requests: 0 is less than the minimum of 1",
            "actions[0].name: \"name\" is a required property",
            "actions[1].colour: unknown field",
            "triggers[1].signature: \"md5\" is not one of \"github\", \"stripe\", \"slack\" or \"hmac-sha256\"",
            "key: \"http\" is reserved for a built-in connector",
            "auth.authorize_url: required for the authorization_code grant",
            "connection_schema.properties.account.type: not a valid JSON Schema",
            "rate_limit.per: \"soon\" is not a duration",
            "actions[0].input_schema: not a valid JSON Schema",
            "actions[0].response.success_if: expression does not parse:",
            "actions[0].response.output.id: \"$.body[\" is not a JSONPath",
            "actions[1].key: duplicate action key \"create_contact\" (also at actions[0])",
            "actions[1].request.timeout: must be longer than zero",
            "triggers[0].interval: \"often\" is not a duration",
            "triggers[0].items: \"body.items\" is not a JSONPath",
            "triggers[1].key: \"Contact-Deleted\" is not a valid key",
        ];
        for prefix in expect_prefixes {
            assert!(
                found.iter().any(|p| p.starts_with(prefix)),
                "no problem starting with {prefix:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect_prefixes.len(), "{found:#?}");
        assert!(
            found
                .iter()
                .any(|p| p.ends_with("(write the bare expression, without {{ }})")),
            "{found:#?}"
        );
    }

    #[test]
    fn discriminated_objects_report_the_fields_of_their_own_kind() {
        let manifest = with(
            full_manifest(),
            "/auth",
            json!({"type": "api_key", "in": "cookie"}),
        );
        assert_eq!(
            problems(&manifest),
            vec![
                "auth.name: \"name\" is a required property",
                "auth.in: \"cookie\" is not one of \"header\" or \"query\"",
            ]
        );

        let manifest = with(
            full_manifest(),
            "/auth",
            json!({"type": "api_key", "in": "header", "name": "X Key"}),
        );
        assert_eq!(
            problems(&manifest),
            vec!["auth.name: \"X Key\" is not a valid header name"]
        );

        let manifest = with(
            full_manifest(),
            "/triggers/1",
            json!({"kind": "webhook", "key": "x", "name": "X", "signature": "github", "interval": "1m"}),
        );
        assert_eq!(
            problems(&manifest),
            vec!["triggers[1].interval: unknown field (check its spelling or remove it)"]
        );
    }

    #[test]
    fn client_credentials_need_no_authorize_url() {
        let manifest = with(
            full_manifest(),
            "/auth",
            json!({"type": "oauth2", "grant": "client_credentials", "token_url": "https://acme.test/token"}),
        );
        assert!(validate(&manifest).is_ok());
    }

    #[test]
    fn a_raw_body_must_be_a_string() {
        let manifest = with(full_manifest(), "/actions/1/request/body", json!({"a": 1}));
        assert_eq!(
            problems(&manifest),
            vec![r#"actions[1].request.body: {"a":1} is not of type "string""#]
        );
    }

    #[test]
    fn paths_quote_keys_that_are_not_plain_names_and_keep_numeric_keys_as_keys() {
        let root = json!({"query": {"0": {"a.b": [1, 2]}}});
        assert_eq!(
            json_path("", &root, "/query/0/a.b/1"),
            r#"query["0"]["a.b"][1]"#
        );
        assert_eq!(json_path("input", &root, ""), "input");
        assert_eq!(json_path("", &json!({"a/b": 1}), "/a~1b"), r#"["a/b"]"#);
    }

    #[test]
    fn the_schema_lists_exactly_the_signature_schemes_there_are() {
        let schema: Value = serde_json::from_str(MANIFEST_SCHEMA).expect("JSON");
        let listed: Vec<&str> = schema
            .pointer("/$defs/trigger/allOf/0/then/properties/signature/enum")
            .and_then(Value::as_array)
            .expect("signature enum")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut listed = listed;
        listed.sort_unstable();
        let mut known = crate::signature::SCHEME_NAMES.to_vec();
        known.sort_unstable();
        assert_eq!(listed, known);
    }

    const WORDS: &[&str] = &[
        "key",
        "name",
        "version",
        "base_url",
        "auth",
        "type",
        "actions",
        "triggers",
        "request",
        "method",
        "path",
        "query",
        "headers",
        "body",
        "body_type",
        "timeout",
        "response",
        "success_if",
        "error",
        "output",
        "kind",
        "interval",
        "items",
        "id",
        "cursor",
        "next",
        "signature",
        "rate_limit",
        "requests",
        "per",
        "input_schema",
        "connection_schema",
        "oauth2",
        "api_key",
        "grant",
        "authorization_code",
        "poll",
        "webhook",
        "github",
        "raw",
        "form",
        "GET",
        "FETCH",
        "http",
        "30s",
        "soon",
        "0s",
        "$.body",
        "$[",
        "{{ input.x }}",
        "{{ unclosed",
        "{% if %}",
        "{#",
        "response.body.ok",
        "in",
        "header",
        "token_url",
    ];

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(WORDS).prop_map(str::to_owned),
            "[a-zA-Z_{}$.\\[\\] %#-]{0,12}",
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            word().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(word(), inner, 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Replace(Value),
        Remove(prop::sample::Index),
        Insert(String, Value),
    }

    fn mutation() -> impl Strategy<Value = (Vec<prop::sample::Index>, Mutation)> {
        (
            prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            prop_oneof![
                json_value().prop_map(Mutation::Replace),
                any::<prop::sample::Index>().prop_map(Mutation::Remove),
                (word(), json_value()).prop_map(|(k, v)| Mutation::Insert(k, v)),
            ],
        )
    }

    fn apply(value: &mut Value, route: &[prop::sample::Index], mutation: &Mutation) {
        let len = match value {
            Value::Array(items) => items.len(),
            Value::Object(fields) => fields.len(),
            _ => 0,
        };
        if let Some((step, rest)) = route.split_first()
            && len > 0
        {
            let child = match value {
                Value::Array(items) => items.get_mut(step.index(len)),
                Value::Object(fields) => fields.values_mut().nth(step.index(len)),
                _ => None,
            };
            if let Some(child) = child {
                return apply(child, rest, mutation);
            }
        }
        match (value, mutation) {
            (value, Mutation::Replace(new)) => *value = new.clone(),
            (Value::Array(items), Mutation::Remove(at)) if len > 0 => {
                items.remove(at.index(len));
            }
            (Value::Object(fields), Mutation::Remove(at)) if len > 0 => {
                let key = fields.keys().nth(at.index(len)).cloned();
                if let Some(key) = key {
                    fields.remove(&key);
                }
            }
            (Value::Array(items), Mutation::Insert(_, new)) => items.push(new.clone()),
            (Value::Object(fields), Mutation::Insert(key, new)) => {
                fields.insert(key.clone(), new.clone());
            }
            _ => {}
        }
    }

    /// `Ok` manifests survive a round trip through their typed form; `Err` always names
    /// at least one problem.
    fn assert_well_behaved(source: &Value) {
        match validate(source) {
            Ok(manifest) => {
                let again = serde_json::to_value(&manifest).expect("serializes");
                assert_eq!(validate(&again), Ok(manifest));
            }
            Err(InvalidManifest(problems)) => assert!(!problems.is_empty()),
        }
    }

    proptest! {
        #[test]
        fn validate_never_panics_on_arbitrary_json(source in json_value()) {
            assert_well_behaved(&source);
        }

        #[test]
        fn validate_never_panics_on_mutated_manifests(mutations in prop::collection::vec(mutation(), 1..4)) {
            let mut source = full_manifest();
            for (route, mutation) in &mutations {
                apply(&mut source, route, mutation);
            }
            assert_well_behaved(&source);
        }
    }
}
