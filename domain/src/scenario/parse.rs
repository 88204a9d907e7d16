//! The checks that turn a definition into a [`Scenario`] when it is saved: node ids,
//! references, ports and acyclicity, templates compiled, JSONPaths parsed, durations and
//! limits in range. Every problem names the node, the field and the cause.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use serde_json_path::JsonPath;

use super::model::{
    DEFAULT_CASE, ERROR_PORT, Edge, ForEach, Node, NodeKind, OnError, Scenario, TriggerKind, Wait,
    WebhookOptions,
};
use super::order::{ancestors, topological_order};
use super::spec::{DefinitionSpec, NodeSpec, RetrySpec, TriggerSpec};
use crate::limits::check_json_depth;
use crate::messages::BUILTIN_CONNECTOR;
use crate::retry::RetryPolicy;
use crate::template::Templates;

/// Most nodes a scenario may have.
pub const MAX_NODES: usize = 500;
/// Default run timeout (architecture §3.6).
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// Default timeout of one action request.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(30);
/// Items of a `for_each` node in flight at once, unless `max_concurrency` says otherwise.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 10;
/// The highest `max_concurrency` accepted.
pub const MAX_CONCURRENCY: u32 = 1000;

/// One problem found in a definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The node's id, when the problem is in a node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The field, as a path inside the node or the definition (`input.url`, `after`).
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(node) => write!(f, "node `{node}`, field `{}`: {}", self.field, self.message),
            None => write!(f, "field `{}`: {}", self.field, self.message),
        }
    }
}

/// The problems of a definition that cannot be saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<Problem>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Problem::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

/// The connector actions a scenario may use.
pub trait Catalog {
    /// `Err` explains why `connector`/`action` cannot be used.
    fn check_action(&self, connector: &str, action: &str) -> Result<(), String>;
}

/// The connectors compiled into Weft: the free-form `http` connector.
pub struct BuiltinCatalog;

impl Catalog for BuiltinCatalog {
    fn check_action(&self, connector: &str, action: &str) -> Result<(), String> {
        match (connector, action) {
            ("http", "request") => Ok(()),
            ("http", other) => Err(format!(
                "connector `http` has no action `{other}` (it has: request)"
            )),
            (other, _) => Err(format!("unknown connector `{other}`")),
        }
    }
}

impl Scenario {
    /// The run timeout (`settings.timeout`, [`DEFAULT_RUN_TIMEOUT`] when absent) as a
    /// problem when it is over `max`, the longest the installation allows. Not part of
    /// [`Scenario::parse`]: only saving a scenario checks it, so lowering `max` leaves the
    /// saved ones runnable.
    pub fn run_timeout_over(&self, max: Duration) -> Option<Problem> {
        (self.timeout > max).then(|| Problem {
            node: None,
            field: "settings.timeout".into(),
            message: format!(
                "{} is over the longest run timeout allowed here, {} (WEFT_MAX_RUN_TIMEOUT)",
                humantime::format_duration(self.timeout),
                humantime::format_duration(max)
            ),
        })
    }

    /// Parses and validates a definition against the connectors that exist.
    pub fn parse(definition: &Value, catalog: &dyn Catalog) -> Result<Self, Invalid> {
        check_json_depth(definition).map_err(|too_deep| {
            Invalid(vec![Problem {
                node: None,
                field: "definition".into(),
                message: too_deep.to_string(),
            }])
        })?;
        let spec: DefinitionSpec = serde_json::from_value(definition.clone()).map_err(|e| {
            Invalid(vec![Problem {
                node: None,
                field: "definition".into(),
                message: e.to_string(),
            }])
        })?;
        Parser::new(catalog).parse(spec)
    }
}

pub(super) struct Parser<'a> {
    pub(super) catalog: &'a dyn Catalog,
    pub(super) templates: Templates,
    pub(super) problems: Vec<Problem>,
}

impl<'a> Parser<'a> {
    pub(super) fn new(catalog: &'a dyn Catalog) -> Self {
        Self {
            catalog,
            templates: Templates::new(),
            problems: Vec::new(),
        }
    }

    pub(super) fn problem(&mut self, node: Option<&str>, field: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            node: node.map(str::to_owned),
            field: field.into(),
            message: message.into(),
        });
    }

    fn parse(mut self, spec: DefinitionSpec) -> Result<Scenario, Invalid> {
        if spec.name.trim().is_empty() {
            self.problem(None, "name", "must not be empty");
        }
        if spec.nodes.len() > MAX_NODES {
            self.problem(
                None,
                "nodes",
                format!("{} nodes, over the limit of {MAX_NODES}", spec.nodes.len()),
            );
            return Err(Invalid(self.problems));
        }
        let timeout = self
            .duration(None, "settings.timeout", spec.settings.timeout.as_deref())
            .unwrap_or(DEFAULT_RUN_TIMEOUT);
        let default_retry = self.retry(
            None,
            "settings.retry",
            spec.settings.retry.as_ref(),
            &RetryPolicy::default(),
        );

        let mut nodes = Vec::with_capacity(spec.nodes.len());
        let mut index = HashMap::new();
        for (position, raw) in spec.nodes.iter().enumerate() {
            let id_hint = raw.get("id").and_then(Value::as_str).map(str::to_owned);
            let node_spec: NodeSpec = match serde_json::from_value(raw.clone()) {
                Ok(node_spec) => node_spec,
                Err(e) => {
                    let label = id_hint.unwrap_or_else(|| format!("nodes[{position}]"));
                    self.problem(Some(&label), "node", e.to_string());
                    continue;
                }
            };
            let Some(node) = self.node(node_spec, &default_retry) else {
                continue;
            };
            // The first node of an id keeps it: its index must keep pointing at it.
            if index.contains_key(&node.id) {
                self.problem(Some(&node.id), "id", "duplicate node id");
                continue;
            }
            index.insert(node.id.clone(), nodes.len());
            nodes.push(node);
        }
        if nodes.is_empty() && self.problems.is_empty() {
            self.problem(None, "nodes", "a scenario needs at least one node");
        }

        let mut webhook = WebhookOptions::default();
        let mut poll = None;
        let (trigger, signature, schedule) = match spec.trigger {
            TriggerSpec::Webhook {
                signature,
                respond,
                respond_timeout,
                methods,
                content_types,
                max_body_bytes,
            } => {
                webhook = self.webhook_options(
                    respond.as_deref(),
                    respond_timeout.as_deref(),
                    methods.unwrap_or_default(),
                    content_types.unwrap_or_default(),
                    max_body_bytes,
                );
                (
                    TriggerKind::Webhook,
                    signature.and_then(|spec| self.signature(spec)),
                    None,
                )
            }
            TriggerSpec::Schedule { cron, timezone } => (
                TriggerKind::Schedule,
                None,
                self.schedule(cron.as_deref(), timezone.as_deref()),
            ),
            TriggerSpec::Poll {
                connector,
                trigger,
                connection,
                interval,
            } => {
                poll = self.poll(connector, trigger, connection, interval.as_deref());
                (TriggerKind::Poll, None, None)
            }
            TriggerSpec::Manual {} => (TriggerKind::Manual, None, None),
        };
        let mut scenario = Scenario {
            name: spec.name,
            description: spec.description,
            trigger,
            signature,
            webhook,
            schedule,
            poll,
            timeout,
            nodes,
            index,
            has_error_branch: HashSet::new(),
        };
        self.check_edges(&mut scenario);
        if self.problems.is_empty() {
            self.check_acyclic(&scenario);
        }
        if self.problems.is_empty() {
            self.check_references(&scenario);
        }
        if self.problems.is_empty() {
            Ok(scenario)
        } else {
            Err(Invalid(self.problems))
        }
    }

    pub(super) fn duration(
        &mut self,
        node: Option<&str>,
        field: &str,
        text: Option<&str>,
    ) -> Option<Duration> {
        let text = text?;
        match humantime::parse_duration(text) {
            Ok(duration) if !duration.is_zero() => Some(duration),
            Ok(_) => {
                self.problem(node, field, "must be longer than zero");
                None
            }
            Err(e) => {
                self.problem(
                    node,
                    field,
                    format!("`{text}` is not a duration like `30s` or `5m`: {e}"),
                );
                None
            }
        }
    }

    fn retry(
        &mut self,
        node: Option<&str>,
        field: &str,
        spec: Option<&RetrySpec>,
        base: &RetryPolicy,
    ) -> RetryPolicy {
        let Some(spec) = spec else {
            return base.clone();
        };
        let mut policy = base.clone();
        if let Some(max_attempts) = spec.max_attempts {
            if (1..=100).contains(&max_attempts) {
                policy.max_attempts = max_attempts;
            } else {
                self.problem(
                    node,
                    &format!("{field}.max_attempts"),
                    "must be between 1 and 100",
                );
            }
        }
        if let Some(initial) =
            self.duration(node, &format!("{field}.initial"), spec.initial.as_deref())
        {
            policy.initial = initial;
        }
        if let Some(max) = self.duration(node, &format!("{field}.max"), spec.max.as_deref()) {
            policy.max = max;
        }
        if policy.max < policy.initial {
            self.problem(node, field, "`max` must not be shorter than `initial`");
        }
        policy
    }

    fn node(&mut self, spec: NodeSpec, default_retry: &RetryPolicy) -> Option<Node> {
        let id = spec.id.clone();
        if !is_identifier(&id) {
            self.problem(
                Some(&id),
                "id",
                "must start with a letter or `_` and hold only letters, digits and `_` (it is used in templates as `nodes.<id>`)",
            );
            return None;
        }
        let node = Some(id.as_str());
        let after = spec
            .after
            .iter()
            .map(|reference| match reference.split_once(':') {
                Some((from, port)) => Edge {
                    from: from.to_owned(),
                    port: Some(port.to_owned()),
                },
                None => Edge {
                    from: reference.clone(),
                    port: None,
                },
            })
            .collect();
        let retry = self.retry(node, "retry", spec.retry.as_ref(), default_retry);
        let timeout = self
            .duration(node, "timeout", spec.timeout.as_deref())
            .unwrap_or(DEFAULT_NODE_TIMEOUT);

        let allowed: &[&str] = match spec.node_type.as_str() {
            "action" => &[
                "connector",
                "action",
                "connection",
                "input",
                "outputs",
                "for_each",
                "max_concurrency",
            ],
            "transform" => &["output"],
            "respond" => &["status", "headers", "body"],
            "condition" => &["if", "switch"],
            "delay" => &["duration", "until"],
            other => {
                self.problem(
                    node,
                    "type",
                    format!(
                        "unknown node type `{other}` (expected action, transform, condition, delay or respond)"
                    ),
                );
                return None;
            }
        };
        let present = [
            ("connector", spec.connector.is_some()),
            ("action", spec.action.is_some()),
            ("connection", spec.connection.is_some()),
            ("input", spec.input.is_some()),
            ("outputs", spec.outputs.is_some()),
            ("output", spec.output.is_some()),
            ("status", spec.status.is_some()),
            ("headers", spec.headers.is_some()),
            ("body", spec.body.is_some()),
            ("if", spec.condition.is_some()),
            ("switch", spec.switch.is_some()),
            ("for_each", spec.for_each.is_some()),
            ("max_concurrency", spec.max_concurrency.is_some()),
            ("duration", spec.duration.is_some()),
            ("until", spec.until.is_some()),
        ];
        for (field, is_present) in present {
            if is_present && !allowed.contains(&field) {
                self.problem(
                    node,
                    field,
                    format!("not a field of {} nodes", spec.node_type),
                );
            }
        }

        let kind = match spec.node_type.as_str() {
            "action" => {
                let (Some(connector), Some(action)) = (spec.connector, spec.action) else {
                    self.problem(
                        node,
                        "connector",
                        "action nodes need `connector` and `action`",
                    );
                    return None;
                };
                if connector == BUILTIN_CONNECTOR {
                    self.problem(
                        node,
                        "connector",
                        format!("`{BUILTIN_CONNECTOR}` is reserved for Weft's own node types"),
                    );
                } else if let Err(message) = self.catalog.check_action(&connector, &action) {
                    self.problem(node, "action", message);
                }
                let for_each = self.for_each(node, spec.for_each, spec.max_concurrency);
                let outputs = spec
                    .outputs
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(name, path)| match JsonPath::parse(&path) {
                        Ok(parsed) => Some((name, parsed)),
                        Err(e) => {
                            self.problem(
                                node,
                                &format!("outputs.{name}"),
                                format!("`{path}` is not a JSONPath (RFC 9535): {e}"),
                            );
                            None
                        }
                    })
                    .collect();
                NodeKind::Action {
                    connector,
                    action,
                    connection: spec.connection,
                    input: spec
                        .input
                        .unwrap_or_else(|| Value::Object(Default::default())),
                    outputs,
                    for_each,
                }
            }
            "delay" => match (spec.duration, spec.until) {
                (Some(duration), None) => NodeKind::Delay {
                    wait: Wait::For(self.duration(node, "duration", Some(&duration))?),
                },
                (None, Some(until)) => {
                    let is_template = crate::template::is_template(&until);
                    if !is_template && chrono::DateTime::parse_from_rfc3339(&until).is_err() {
                        self.problem(
                            node,
                            "until",
                            format!("`{until}` is neither an RFC 3339 timestamp nor a template that renders one"),
                        );
                        return None;
                    }
                    NodeKind::Delay {
                        wait: Wait::Until(until),
                    }
                }
                _ => {
                    self.problem(
                        node,
                        "duration",
                        "delay nodes need exactly one of `duration` or `until`",
                    );
                    return None;
                }
            },
            "respond" => NodeKind::Respond {
                output: json!({
                    "status": spec.status.unwrap_or_else(|| json!(200)),
                    "headers": spec.headers.unwrap_or_else(|| json!({})),
                    "body": spec.body.unwrap_or(Value::Null),
                }),
            },
            "transform" => match spec.output {
                Some(output) => NodeKind::Transform {
                    output: Value::Object(output),
                },
                None => {
                    self.problem(node, "output", "transform nodes need an `output` object");
                    return None;
                }
            },
            _ => match (spec.condition, spec.switch) {
                (Some(condition), None) => NodeKind::If { condition },
                (None, Some(cases)) => {
                    let mut names = HashSet::new();
                    for case in &cases {
                        if case.name == DEFAULT_CASE
                            || case.name == ERROR_PORT
                            || !names.insert(&case.name)
                        {
                            self.problem(
                                node,
                                "switch",
                                format!("case name `{}` is reserved or used twice", case.name),
                            );
                        }
                    }
                    NodeKind::Switch {
                        cases: cases.into_iter().map(|c| (c.name, c.condition)).collect(),
                    }
                }
                _ => {
                    self.problem(
                        node,
                        "if",
                        "condition nodes need exactly one of `if` or `switch`",
                    );
                    return None;
                }
            },
        };
        Some(Node {
            id,
            after,
            kind,
            retry,
            timeout,
            on_error: spec.on_error,
        })
    }

    fn for_each(
        &mut self,
        node: Option<&str>,
        items: Option<String>,
        max_concurrency: Option<u32>,
    ) -> Option<ForEach> {
        let Some(items) = items else {
            if max_concurrency.is_some() {
                self.problem(node, "max_concurrency", "only for nodes with `for_each`");
            }
            return None;
        };
        if !crate::template::is_template(&items) {
            self.problem(
                node,
                "for_each",
                "must be a template that renders to an array, like `{{ trigger.body.items }}`",
            );
        }
        let max_concurrency = max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
        if !(1..=MAX_CONCURRENCY).contains(&max_concurrency) {
            self.problem(
                node,
                "max_concurrency",
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            );
        }
        Some(ForEach {
            items,
            max_concurrency,
        })
    }

    fn check_edges(&mut self, scenario: &mut Scenario) {
        let mut error_sources = HashSet::new();
        for node in &scenario.nodes {
            let mut seen = HashSet::new();
            for edge in &node.after {
                let Some(from) = scenario.node(&edge.from) else {
                    self.problem(
                        Some(&node.id),
                        "after",
                        format!("references unknown node `{}`", edge.from),
                    );
                    continue;
                };
                if edge.from == node.id {
                    self.problem(Some(&node.id), "after", "a node cannot come after itself");
                }
                if !seen.insert(&edge.from) {
                    self.problem(
                        Some(&node.id),
                        "after",
                        format!("lists `{}` twice", edge.from),
                    );
                }
                match edge.port.as_deref() {
                    None => {}
                    Some(ERROR_PORT) => {
                        if from.on_error == OnError::Continue {
                            self.problem(
                                Some(&node.id),
                                "after",
                                format!("`{}` has `on_error: continue`, so its `error` port never fires", edge.from),
                            );
                        }
                        error_sources.insert(edge.from.clone());
                    }
                    Some(port) => {
                        let ports = from.ports();
                        if !ports.contains(&port) {
                            let expected = if ports.is_empty() {
                                "only `error`".to_owned()
                            } else {
                                format!("{} or error", ports.join(", "))
                            };
                            self.problem(
                                Some(&node.id),
                                "after",
                                format!("`{}` has no port `{port}` (it has {expected})", edge.from),
                            );
                        }
                    }
                }
            }
        }
        scenario.has_error_branch = error_sources;
    }

    fn check_acyclic(&mut self, scenario: &Scenario) {
        if let Err(node) = topological_order(scenario) {
            self.problem(Some(&node), "after", "is part of a cycle");
        }
    }

    /// Every template parses, and reads only `trigger`, `run` and nodes upstream of it.
    fn check_references(&mut self, scenario: &Scenario) {
        let ancestors = ancestors(scenario);
        for node in &scenario.nodes {
            let mut templates: Vec<(String, String, bool)> = Vec::new();
            let mut has_items = false;
            match &node.kind {
                NodeKind::Action {
                    input, for_each, ..
                } => {
                    collect_templates(input, "input", &mut templates);
                    if let Some(for_each) = for_each {
                        has_items = true;
                        templates.push(("for_each".into(), for_each.items.clone(), false));
                    }
                }
                NodeKind::Delay {
                    wait: Wait::Until(until),
                } => collect_templates(&Value::String(until.clone()), "until", &mut templates),
                NodeKind::Delay { .. } => {}
                NodeKind::Transform { output } | NodeKind::Respond { output } => {
                    collect_templates(output, "output", &mut templates)
                }
                NodeKind::If { condition } => {
                    templates.push(("if".into(), condition.clone(), true))
                }
                NodeKind::Switch { cases } => {
                    for (name, condition) in cases {
                        templates.push((format!("switch.{name}"), condition.clone(), true));
                    }
                }
            }
            for (field, source, is_expression) in templates {
                let variables = if is_expression {
                    self.templates.expression_variables(&source)
                } else {
                    self.templates.variables(&source)
                };
                let variables = match variables {
                    Ok(variables) => variables,
                    Err(e) => {
                        self.problem(
                            Some(&node.id),
                            &field,
                            format!("template does not parse: {e}"),
                        );
                        continue;
                    }
                };
                for variable in variables {
                    let mut parts = variable.split('.');
                    match parts.next() {
                        Some("trigger" | "run") => {}
                        Some(name @ ("item" | "index")) => {
                            if !has_items {
                                self.problem(
                                    Some(&node.id),
                                    &field,
                                    format!("`{name}` is only defined in nodes with `for_each`"),
                                );
                            } else if !field.starts_with("input") {
                                self.problem(
                                    Some(&node.id),
                                    &field,
                                    format!("`{name}` is only defined in the node's `input`"),
                                );
                            }
                        }
                        Some("nodes") => match parts.next() {
                            Some(other) if other == node.id => self.problem(
                                Some(&node.id),
                                &field,
                                "a node cannot read its own output",
                            ),
                            Some(other) if ancestors[&node.id].contains(other) => {}
                            Some(other) if scenario.node(other).is_some() => self.problem(
                                Some(&node.id),
                                &field,
                                format!("reads `nodes.{other}`, which does not run before this node (add it to `after`)"),
                            ),
                            Some(other) => self.problem(
                                Some(&node.id),
                                &field,
                                format!("reads `nodes.{other}`, but there is no node `{other}`"),
                            ),
                            None => {}
                        },
                        Some(other) => self.problem(
                            Some(&node.id),
                            &field,
                            format!("unknown variable `{other}` (templates can read trigger, nodes and run, and item and index under for_each)"),
                        ),
                        None => {}
                    }
                }
            }
        }
    }
}

fn is_identifier(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && id.len() <= 64
}

/// Collects the template strings in a JSON value with their field paths.
fn collect_templates(value: &Value, path: &str, out: &mut Vec<(String, String, bool)>) {
    match value {
        Value::String(s) if crate::template::is_template(s) => {
            out.push((path.to_owned(), s.clone(), false))
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_templates(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                collect_templates(item, &format!("{path}.{key}"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(nodes: Value) -> Result<Scenario, Invalid> {
        Scenario::parse(
            &json!({"name": "t", "trigger": {"type": "webhook"}, "nodes": nodes}),
            &BuiltinCatalog,
        )
    }

    fn problems(nodes: Value) -> Vec<String> {
        parse(nodes)
            .expect_err("must be invalid")
            .0
            .iter()
            .map(Problem::to_string)
            .collect()
    }

    fn http(id: &str, after: &[&str]) -> Value {
        json!({"id": id, "type": "action", "connector": "http", "action": "request", "after": after,
               "input": {"method": "GET", "url": "http://example.test/"}})
    }

    #[test]
    fn the_design_example_parses() {
        let scenario = parse(json!([
            {"id": "lookup", "type": "action", "connector": "http", "action": "request",
             "input": {"method": "GET", "url": "https://api.example.com/phone?phone={{ trigger.body.phone }}"},
             "outputs": {"first_name": "$.body.identities[0].firstName"}},
            {"id": "is_known", "type": "condition", "after": ["lookup"],
             "if": "nodes.lookup.output.first_name is not none"},
            {"id": "notify", "type": "action", "after": ["is_known:true"], "connector": "http", "action": "request",
             "input": {"method": "POST", "url": "https://x.test/", "body": {"text": "New lead {{ nodes.lookup.output.first_name }}"}}}
        ]))
        .expect("valid");
        assert_eq!(scenario.nodes.len(), 3);
        assert_eq!(scenario.trigger, TriggerKind::Webhook);
        assert_eq!(scenario.timeout, DEFAULT_RUN_TIMEOUT);
    }

    #[test]
    fn a_run_timeout_over_the_cap_is_a_problem_naming_both() {
        let definition = |settings: Value| {
            json!({"name": "n", "trigger": {"type": "manual"}, "settings": settings,
                   "nodes": [{"id": "t", "type": "transform", "output": {}}]})
        };
        let hour = Duration::from_secs(3600);
        let long =
            Scenario::parse(&definition(json!({"timeout": "2h"})), &BuiltinCatalog).expect("valid");
        let problem = long.run_timeout_over(hour).expect("over the cap");
        assert_eq!(problem.field, "settings.timeout");
        assert!(
            problem.message.contains("2h") && problem.message.contains("1h"),
            "{}",
            problem.message
        );
        assert!(long.run_timeout_over(2 * hour).is_none(), "at the cap");
        let default = Scenario::parse(&definition(json!({})), &BuiltinCatalog).expect("valid");
        assert!(default.run_timeout_over(hour).is_none());
        assert!(
            default.run_timeout_over(DEFAULT_RUN_TIMEOUT / 2).is_some(),
            "the default counts when no timeout is given"
        );
    }

    #[test]
    fn a_cycle_is_named() {
        let found = problems(json!([http("a", &["b"]), http("b", &["a"])]));
        assert!(found.iter().any(|p| p.contains("cycle")), "{found:?}");
    }

    #[test]
    fn duplicate_ids_unknown_references_and_types_are_named() {
        let found = problems(json!([http("a", &[]), http("a", &[])]));
        assert_eq!(found, vec!["node `a`, field `id`: duplicate node id"]);

        let found = problems(json!([http("a", &["ghost"])]));
        assert_eq!(
            found,
            vec!["node `a`, field `after`: references unknown node `ghost`"]
        );

        let found = problems(json!([{"id": "a", "type": "teleport"}]));
        assert!(
            found[0].starts_with("node `a`, field `type`: unknown node type `teleport`"),
            "{found:?}"
        );
    }

    #[test]
    fn template_syntax_and_references_are_checked() {
        let mut bad = http("a", &[]);
        bad["input"]["url"] = json!("http://x/{{ trigger.body.x ");
        let found = problems(json!([bad]));
        assert!(
            found[0].starts_with("node `a`, field `input.url`: template does not parse"),
            "{found:?}"
        );

        let mut reads_later = http("a", &[]);
        reads_later["input"]["url"] = json!("{{ nodes.b.output.url }}");
        let found = problems(json!([reads_later, http("b", &["a"])]));
        assert!(
            found[0].contains("does not run before this node"),
            "{found:?}"
        );

        let mut reads_unknown = http("a", &[]);
        reads_unknown["input"]["url"] = json!("{{ secrets.token }}");
        let found = problems(json!([reads_unknown]));
        assert!(found[0].contains("unknown variable `secrets`"), "{found:?}");
    }

    #[test]
    fn ports_must_exist_on_their_node() {
        let found = problems(json!([
            {"id": "c", "type": "condition", "if": "true"},
            http("a", &["c:maybe"])
        ]));
        assert!(found[0].contains("has no port `maybe`"), "{found:?}");
        let ok = parse(json!([
            {"id": "c", "type": "switch_not", "if": "true"}
        ]));
        assert!(ok.is_err());
        let switch = parse(json!([
            {"id": "c", "type": "condition", "switch": [{"name": "big", "if": "trigger.body.n > 10"}]},
            http("a", &["c:big"]), http("b", &["c:default"]), http("e", &["a:error"])
        ]))
        .expect("valid");
        assert!(switch.has_error_branch("a"));
        assert!(!switch.has_error_branch("b"));
    }

    #[test]
    fn respond_nodes_render_status_headers_and_body_like_a_transform() {
        let scenario = Scenario::parse(
            &json!({"name": "t", "trigger": {"type": "webhook"}, "nodes": [
                {"id": "reply", "type": "respond", "status": 201, "body": {"id": "{{ trigger.body.id }}"}}
            ]}),
            &BuiltinCatalog,
        )
        .expect("valid");
        let Some(NodeKind::Respond { output }) = scenario.node("reply").map(|n| &n.kind) else {
            panic!("a respond node");
        };
        assert_eq!(
            *output,
            json!({"status": 201, "headers": {}, "body": {"id": "{{ trigger.body.id }}"}})
        );
        let wrong_field = Scenario::parse(
            &json!({"name": "t", "trigger": {"type": "webhook"}, "nodes": [
                {"id": "reply", "type": "respond", "output": {}}
            ]}),
            &BuiltinCatalog,
        )
        .expect_err("respond nodes have no output field");
        assert!(
            wrong_field
                .to_string()
                .contains("not a field of respond nodes"),
            "{wrong_field}"
        );
    }

    #[test]
    fn unknown_fields_and_connectors_are_rejected() {
        let mut typo = http("a", &[]);
        typo["inptu"] = json!({});
        let found = problems(json!([typo]));
        assert!(found[0].contains("unknown field `inptu`"), "{found:?}");

        let mut slack = http("a", &[]);
        slack["connector"] = json!("nope");
        let found = problems(json!([slack]));
        assert_eq!(
            found,
            vec!["node `a`, field `action`: unknown connector `nope`"]
        );
    }

    #[test]
    fn delay_nodes_take_exactly_one_of_duration_or_until() {
        let scenario = parse(json!([
            http("a", &[]),
            {"id": "pause", "type": "delay", "after": ["a"], "duration": "10s"},
            {"id": "later", "type": "delay", "after": ["pause"], "until": "{{ trigger.body.at }}"},
            {"id": "fixed", "type": "delay", "until": "2030-01-01T00:00:00Z"}
        ]))
        .expect("valid");
        assert!(matches!(
            scenario.node("pause").map(|n| &n.kind),
            Some(NodeKind::Delay { wait: Wait::For(d) }) if *d == Duration::from_secs(10)
        ));
        assert!(matches!(
            scenario.node("later").map(|n| &n.kind),
            Some(NodeKind::Delay { wait: Wait::Until(t) }) if t == "{{ trigger.body.at }}"
        ));

        for (node, expected) in [
            (
                json!({"id": "d", "type": "delay"}),
                "node `d`, field `duration`: delay nodes need exactly one of `duration` or `until`",
            ),
            (
                json!({"id": "d", "type": "delay", "duration": "1s", "until": "2030-01-01T00:00:00Z"}),
                "node `d`, field `duration`: delay nodes need exactly one of `duration` or `until`",
            ),
            (
                json!({"id": "d", "type": "delay", "duration": "soon"}),
                "node `d`, field `duration`: `soon` is not a duration",
            ),
            (
                json!({"id": "d", "type": "delay", "until": "next week"}),
                "node `d`, field `until`: `next week` is neither an RFC 3339 timestamp nor a template",
            ),
            (
                json!({"id": "d", "type": "delay", "until": "{{ nodes.ghost.output.at }}"}),
                "node `d`, field `until`: reads `nodes.ghost`, but there is no node `ghost`",
            ),
            (
                json!({"id": "d", "type": "delay", "duration": "1s", "input": {}}),
                "node `d`, field `input`: not a field of delay nodes",
            ),
        ] {
            let found = problems(json!([node]));
            assert!(found[0].starts_with(expected), "{found:?}");
        }
    }

    #[test]
    fn for_each_is_a_template_on_action_nodes_and_item_is_only_in_their_input() {
        let mut each = http("each", &[]);
        each["for_each"] = json!("{{ trigger.body.items }}");
        each["input"]["body"] = json!({"item": "{{ item }}", "index": "{{ index }}"});
        let scenario = parse(json!([each.clone()])).expect("valid");
        let Some(NodeKind::Action {
            for_each: Some(for_each),
            ..
        }) = scenario.node("each").map(|n| &n.kind)
        else {
            panic!("a for_each node");
        };
        assert_eq!(
            (for_each.items.as_str(), for_each.max_concurrency),
            ("{{ trigger.body.items }}", DEFAULT_MAX_CONCURRENCY)
        );

        let mut plain = http("plain", &[]);
        plain["input"]["body"] = json!({"item": "{{ item.name }}"});
        let mut reads_item = each.clone();
        reads_item["for_each"] = json!("{{ item }}");
        let mut literal = each.clone();
        literal["for_each"] = json!("items");
        let mut too_many = each.clone();
        too_many["max_concurrency"] = json!(0);
        let mut alone = http("alone", &[]);
        alone["max_concurrency"] = json!(5);
        let transform = json!({"id": "t", "type": "transform", "for_each": "{{ trigger.body.items }}", "output": {}});
        let mut reserved = http("r", &[]);
        reserved["connector"] = json!("weft");
        reserved["action"] = json!("delay");
        for (node, expected) in [
            (
                plain,
                "node `plain`, field `input.body.item`: `item` is only defined in nodes with `for_each`",
            ),
            (
                reads_item,
                "node `each`, field `for_each`: `item` is only defined in the node's `input`",
            ),
            (
                literal,
                "node `each`, field `for_each`: must be a template that renders to an array",
            ),
            (
                too_many,
                "node `each`, field `max_concurrency`: must be between 1 and 1000",
            ),
            (
                alone,
                "node `alone`, field `max_concurrency`: only for nodes with `for_each`",
            ),
            (
                transform,
                "node `t`, field `for_each`: not a field of transform nodes",
            ),
            (
                reserved,
                "node `r`, field `connector`: `weft` is reserved for Weft's own node types",
            ),
        ] {
            let found = problems(json!([node]));
            assert!(found[0].starts_with(expected), "{found:?}");
        }
    }
}
