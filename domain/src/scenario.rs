//! The scenario definition (architecture §5): parsed from JSON and validated when it is saved,
//! so that a stored version always runs. Every problem names the node, the field and the
//! cause.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use serde_json_path::JsonPath;

use crate::ids::ConnectionId;
use crate::limits::check_json_depth;
use crate::messages::BUILTIN_CONNECTOR;
use crate::retry::RetryPolicy;
use crate::schedule::Schedule;
use crate::signature::{Scheme, SchemeOptions, SigningSecret};
use crate::template::Templates;

/// Most nodes a scenario may have.
pub const MAX_NODES: usize = 500;
/// Default run timeout (architecture §3.6).
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// Default timeout of one action request.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest webhook signing secret accepted, in bytes.
pub const MAX_SECRET_LEN: usize = 1024;
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

// ---- the JSON shape, as users write it ----

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionSpec {
    name: String,
    #[serde(default)]
    description: Option<String>,
    trigger: TriggerSpec,
    #[serde(default)]
    settings: SettingsSpec,
    nodes: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum TriggerSpec {
    Webhook {
        #[serde(default)]
        signature: Option<SignatureSpec>,
        /// `immediately` (202 with the run id, the default) or `on_completion`.
        #[serde(default)]
        respond: Option<String>,
        /// How long an `on_completion` webhook waits for its run, like `"30s"`.
        #[serde(default)]
        respond_timeout: Option<String>,
        /// HTTP methods accepted (default: any).
        #[serde(default)]
        methods: Option<Vec<String>>,
        /// Media types accepted, like `application/json` (default: any).
        #[serde(default)]
        content_types: Option<Vec<String>>,
        /// Largest body accepted, in bytes (default and ceiling: the gateway's limit).
        #[serde(default)]
        max_body_bytes: Option<usize>,
    },
    Schedule {
        /// Optional here so that a missing pattern is reported on `trigger.cron`.
        #[serde(default)]
        cron: Option<String>,
        #[serde(default)]
        timezone: Option<String>,
    },
    /// Optional here so that missing fields are reported by name.
    Poll {
        #[serde(default)]
        connector: Option<String>,
        #[serde(default)]
        trigger: Option<String>,
        #[serde(default)]
        connection: Option<String>,
        #[serde(default)]
        interval: Option<String>,
    },
    Manual {},
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureSpec {
    scheme: String,
    secret: Option<String>,
    /// What a stored definition shows in place of the secret. Accepted and ignored, so
    /// that a definition read from the API can be saved again as it is.
    #[serde(default, rename = "secret_set")]
    _secret_set: Option<bool>,
    header: Option<String>,
    encoding: Option<String>,
    prefix: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsSpec {
    timeout: Option<String>,
    retry: Option<RetrySpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrySpec {
    max_attempts: Option<u32>,
    initial: Option<String>,
    max: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSpec {
    id: String,
    #[serde(rename = "type")]
    node_type: String,
    #[serde(default)]
    after: Vec<String>,
    connector: Option<String>,
    action: Option<String>,
    connection: Option<String>,
    input: Option<Value>,
    outputs: Option<BTreeMap<String, String>>,
    output: Option<serde_json::Map<String, Value>>,
    status: Option<Value>,
    headers: Option<Value>,
    body: Option<Value>,
    #[serde(rename = "if")]
    condition: Option<String>,
    switch: Option<Vec<CaseSpec>>,
    retry: Option<RetrySpec>,
    timeout: Option<String>,
    #[serde(default)]
    on_error: OnError,
    for_each: Option<String>,
    max_concurrency: Option<u32>,
    duration: Option<String>,
    until: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    #[serde(rename = "if")]
    condition: String,
}

// ---- the validated, typed scenario ----

/// What a node does when it fails for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The run fails (unless an `error` port handles it).
    #[default]
    Fail,
    /// The node's output is the error object and the run goes on.
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerKind {
    Webhook,
    Schedule,
    Poll,
    Manual,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Schedule => "schedule",
            Self::Poll => "poll",
            Self::Manual => "manual",
        }
    }
}

/// An incoming edge: the predecessor and, for conditions and error branches, the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub port: Option<String>,
}

pub const ERROR_PORT: &str = "error";
pub const DEFAULT_CASE: &str = "default";

/// An action node's `for_each`: the node runs once per item of an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForEach {
    /// A template that renders to the array.
    pub items: String,
    /// Items in flight at once.
    pub max_concurrency: u32,
}

/// How long a `delay` node waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// A fixed duration from the moment the node is reached.
    For(Duration),
    /// Until an instant: a template (or a literal) rendering an RFC 3339 timestamp.
    Until(String),
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    Action {
        connector: String,
        action: String,
        connection: Option<String>,
        input: Value,
        outputs: Vec<(String, JsonPath)>,
        for_each: Option<ForEach>,
    },
    Delay {
        wait: Wait,
    },
    Transform {
        output: Value,
    },
    /// Evaluated like a transform: its output `{status, headers, body}` is the answer of
    /// a webhook that responds on completion.
    Respond {
        output: Value,
    },
    If {
        condition: String,
    },
    Switch {
        cases: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub after: Vec<Edge>,
    pub kind: NodeKind,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub on_error: OnError,
}

impl Node {
    /// The ports a condition node may take.
    fn ports(&self) -> Vec<&str> {
        match &self.kind {
            NodeKind::If { .. } => vec!["true", "false"],
            NodeKind::Switch { cases } => cases
                .iter()
                .map(|(name, _)| name.as_str())
                .chain([DEFAULT_CASE])
                .collect(),
            _ => vec![],
        }
    }
}

/// A webhook trigger's signature requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSignature {
    pub scheme: Scheme,
    /// The secret, when the definition carries one: only a definition being saved does.
    /// Stored definitions never hold it (it is kept encrypted, apart from them).
    pub secret: Option<SigningSecret>,
}

/// How long an `on_completion` webhook waits for its run unless it says otherwise.
pub const DEFAULT_RESPOND_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest an `on_completion` webhook may wait: senders time out long before.
pub const MAX_RESPOND_TIMEOUT: Duration = Duration::from_secs(300);

/// What a webhook trigger accepts and how it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookOptions {
    /// Set when the webhook answers with the run's result: how long it waits for it.
    pub respond_on_completion: Option<Duration>,
    /// Upper-case methods accepted; empty accepts any.
    pub methods: Vec<String>,
    /// Lower-case media types accepted (without parameters); empty accepts any.
    pub content_types: Vec<String>,
    pub max_body_bytes: Option<usize>,
}

/// The shortest poll interval accepted. Every poll is a request to a third-party API, but
/// tests poll a local server and need to see several polls quickly.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A poll trigger: the connector's trigger of kind `poll`, called through `connection`
/// every `interval` (the manifest's own when unset). Whether the connector has that
/// trigger is known where the workspace's connectors are: the gateway's catalog, and the
/// scheduler when it polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollTrigger {
    pub connector: String,
    pub trigger: String,
    pub connection: Option<ConnectionId>,
    pub interval: Option<Duration>,
}

impl PollTrigger {
    /// Reads the `trigger` object of a stored definition, checked like a definition being
    /// saved.
    pub fn parse(trigger: &Value) -> Result<Self, Invalid> {
        let spec: TriggerSpec = serde_json::from_value(trigger.clone()).map_err(|e| {
            Invalid(vec![Problem {
                node: None,
                field: "trigger".into(),
                message: e.to_string(),
            }])
        })?;
        let TriggerSpec::Poll {
            connector,
            trigger,
            connection,
            interval,
        } = spec
        else {
            return Err(Invalid(vec![Problem {
                node: None,
                field: "trigger.type".into(),
                message: "not a poll trigger".into(),
            }]));
        };
        let mut parser = Parser::new(&BuiltinCatalog);
        match parser.poll(connector, trigger, connection, interval.as_deref()) {
            Some(poll) if parser.problems.is_empty() => Ok(poll),
            _ => Err(Invalid(parser.problems)),
        }
    }
}

impl WebhookOptions {
    /// The options of a stored trigger (checked when it was saved); one that does not
    /// read as a webhook trigger has the defaults.
    pub fn of_trigger(trigger: &Value) -> Self {
        let Ok(TriggerSpec::Webhook {
            respond,
            respond_timeout,
            methods,
            content_types,
            max_body_bytes,
            ..
        }) = serde_json::from_value(trigger.clone())
        else {
            return Self::default();
        };
        Parser::new(&BuiltinCatalog).webhook_options(
            respond.as_deref(),
            respond_timeout.as_deref(),
            methods.unwrap_or_default(),
            content_types.unwrap_or_default(),
            max_body_bytes,
        )
    }
}

/// A validated scenario definition.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: Option<String>,
    pub trigger: TriggerKind,
    /// For a webhook trigger that requires signed deliveries.
    pub signature: Option<WebhookSignature>,
    /// For a webhook trigger: what it accepts and how it answers.
    pub webhook: WebhookOptions,
    /// For a schedule trigger: when it ticks.
    pub schedule: Option<Schedule>,
    /// For a poll trigger: what is polled, and how often.
    pub poll: Option<PollTrigger>,
    pub timeout: Duration,
    pub nodes: Vec<Node>,
    index: HashMap<String, usize>,
    has_error_branch: HashSet<String>,
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

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.index.get(id).map(|&i| &self.nodes[i])
    }

    /// Whether some node continues from `id`'s `error` port.
    pub fn has_error_branch(&self, id: &str) -> bool {
        self.has_error_branch.contains(id)
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

struct Parser<'a> {
    catalog: &'a dyn Catalog,
    templates: Templates,
    problems: Vec<Problem>,
}

impl<'a> Parser<'a> {
    fn new(catalog: &'a dyn Catalog) -> Self {
        Self {
            catalog,
            templates: Templates::new(),
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, node: Option<&str>, field: &str, message: impl Into<String>) {
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

    fn webhook_options(
        &mut self,
        respond: Option<&str>,
        respond_timeout: Option<&str>,
        methods: Vec<String>,
        content_types: Vec<String>,
        max_body_bytes: Option<usize>,
    ) -> WebhookOptions {
        let wait = self
            .duration(None, "trigger.respond_timeout", respond_timeout)
            .unwrap_or(DEFAULT_RESPOND_TIMEOUT);
        if wait > MAX_RESPOND_TIMEOUT {
            self.problem(
                None,
                "trigger.respond_timeout",
                format!(
                    "at most {} (senders give up long before)",
                    humantime::format_duration(MAX_RESPOND_TIMEOUT)
                ),
            );
        }
        let respond_on_completion = match respond {
            None | Some("immediately") => {
                if respond_timeout.is_some() {
                    self.problem(
                        None,
                        "trigger.respond_timeout",
                        "only used with `respond: on_completion`",
                    );
                }
                None
            }
            Some("on_completion") => Some(wait),
            Some(other) => {
                self.problem(
                    None,
                    "trigger.respond",
                    format!("`{other}` is not `immediately` or `on_completion`"),
                );
                None
            }
        };
        let methods = methods
            .into_iter()
            .filter_map(|method| {
                let upper = method.to_ascii_uppercase();
                let valid = !upper.is_empty() && upper.bytes().all(|b| b.is_ascii_uppercase());
                if !valid {
                    self.problem(
                        None,
                        "trigger.methods",
                        format!("`{method}` is not an HTTP method"),
                    );
                }
                valid.then_some(upper)
            })
            .collect();
        let content_types = content_types
            .into_iter()
            .filter_map(|media_type| {
                let lower = media_type.trim().to_ascii_lowercase();
                let valid = lower.split_once('/').is_some_and(|(kind, sub)| {
                    !kind.is_empty() && !sub.is_empty() && !lower.contains([';', ' '])
                });
                if !valid {
                    self.problem(
                        None,
                        "trigger.content_types",
                        format!("`{media_type}` is not a media type like `application/json`"),
                    );
                }
                valid.then_some(lower)
            })
            .collect();
        if max_body_bytes == Some(0) {
            self.problem(None, "trigger.max_body_bytes", "must be at least 1");
        }
        WebhookOptions {
            respond_on_completion,
            methods,
            content_types,
            max_body_bytes,
        }
    }

    fn signature(&mut self, spec: SignatureSpec) -> Option<WebhookSignature> {
        let options = SchemeOptions {
            header: spec.header.as_deref(),
            encoding: spec.encoding.as_deref(),
            prefix: spec.prefix.as_deref(),
        };
        let scheme = Scheme::new(&spec.scheme, options).map_err(|problems| {
            for problem in problems {
                self.problem(
                    None,
                    &format!("trigger.signature.{}", problem.option),
                    problem.message,
                );
            }
        });
        let secret = match spec.secret {
            Some(secret) if secret.is_empty() => {
                self.problem(None, "trigger.signature.secret", "must not be empty");
                None
            }
            Some(secret) if secret.len() > MAX_SECRET_LEN => {
                self.problem(
                    None,
                    "trigger.signature.secret",
                    format!("longer than {MAX_SECRET_LEN} bytes"),
                );
                None
            }
            secret => secret.map(SigningSecret::new),
        };
        Some(WebhookSignature {
            scheme: scheme.ok()?,
            secret,
        })
    }

    fn schedule(&mut self, cron: Option<&str>, timezone: Option<&str>) -> Option<Schedule> {
        let Some(cron) = cron else {
            self.problem(
                None,
                "trigger.cron",
                "required: a cron pattern of 5 fields, or 6 with seconds first",
            );
            return None;
        };
        Schedule::new(cron, timezone)
            .map_err(|problems| {
                for problem in problems {
                    self.problem(None, &format!("trigger.{}", problem.field), problem.message);
                }
            })
            .ok()
    }

    fn poll(
        &mut self,
        connector: Option<String>,
        trigger: Option<String>,
        connection: Option<String>,
        interval: Option<&str>,
    ) -> Option<PollTrigger> {
        let mut required = |field: &str, value: Option<String>, what: &str| match value {
            Some(value) if !value.trim().is_empty() => Some(value),
            _ => {
                self.problem(
                    None,
                    &format!("trigger.{field}"),
                    format!("required: {what}"),
                );
                None
            }
        };
        let connector = required(
            "connector",
            connector,
            "the key of the connector that is polled",
        );
        let trigger = required(
            "trigger",
            trigger,
            "the key of the connector's poll trigger",
        );
        let connection = match connection {
            None => None,
            Some(text) => match text.parse::<ConnectionId>() {
                Ok(id) => Some(id),
                Err(_) => {
                    self.problem(
                        None,
                        "trigger.connection",
                        format!("`{text}` is not a connection id"),
                    );
                    return None;
                }
            },
        };
        let interval = match self.duration(None, "trigger.interval", interval) {
            Some(interval) if interval < MIN_POLL_INTERVAL => {
                self.problem(
                    None,
                    "trigger.interval",
                    format!(
                        "at least {} (every poll calls the connector's API)",
                        humantime::format_duration(MIN_POLL_INTERVAL)
                    ),
                );
                return None;
            }
            Some(interval) => Some(interval),
            None if interval.is_some() => return None,
            None => None,
        };
        Some(PollTrigger {
            connector: connector?,
            trigger: trigger?,
            connection,
            interval,
        })
    }

    fn duration(
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

/// Node ids in an order where every node comes after its predecessors, or the id of a
/// node on a cycle.
pub fn topological_order(scenario: &Scenario) -> Result<Vec<String>, String> {
    let mut remaining: HashMap<&str, usize> = scenario
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.after.len()))
        .collect();
    let mut successors: HashMap<&str, Vec<&str>> = HashMap::new();
    for node in &scenario.nodes {
        for edge in &node.after {
            successors
                .entry(edge.from.as_str())
                .or_default()
                .push(&node.id);
        }
    }
    let mut ready: Vec<&str> = scenario
        .nodes
        .iter()
        .filter(|n| n.after.is_empty())
        .map(|n| n.id.as_str())
        .collect();
    let mut order = Vec::with_capacity(scenario.nodes.len());
    while let Some(id) = ready.pop() {
        order.push(id.to_owned());
        for next in successors.get(id).into_iter().flatten() {
            let count = remaining.get_mut(next).expect("every successor is a node");
            *count -= 1;
            if *count == 0 {
                ready.push(next);
            }
        }
    }
    if order.len() == scenario.nodes.len() {
        Ok(order)
    } else {
        let on_cycle = scenario
            .nodes
            .iter()
            .find(|n| remaining[n.id.as_str()] > 0)
            .map(|n| n.id.clone())
            .unwrap_or_default();
        Err(on_cycle)
    }
}

/// For every node, the set of nodes that always finish before it.
fn ancestors(scenario: &Scenario) -> HashMap<String, HashSet<String>> {
    let order = topological_order(scenario).unwrap_or_default();
    let mut result: HashMap<String, HashSet<String>> = HashMap::new();
    for id in order {
        let node = scenario.node(&id).expect("ordered ids are nodes");
        let mut set = HashSet::new();
        for edge in &node.after {
            set.insert(edge.from.clone());
            if let Some(upstream) = result.get(&edge.from) {
                set.extend(upstream.iter().cloned());
            }
        }
        result.insert(id, set);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::Scheme;
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

    fn with_trigger(trigger: Value) -> Result<Scenario, Invalid> {
        Scenario::parse(
            &json!({"name": "t", "trigger": trigger, "nodes": [http("a", &[])]}),
            &BuiltinCatalog,
        )
    }

    #[test]
    fn webhook_signatures_are_parsed_with_their_secret() {
        let scenario = with_trigger(
            json!({"type": "webhook", "signature": {"scheme": "github", "secret": "s3cret"}}),
        )
        .expect("valid");
        let signature = scenario.signature.expect("a signature");
        assert_eq!(signature.scheme, Scheme::Github);
        assert_eq!(signature.secret, Some(SigningSecret::new("s3cret".into())));

        // A stored definition, read back from the API, saves again as it is.
        let stored = with_trigger(
            json!({"type": "webhook", "signature": {"scheme": "stripe", "secret_set": true}}),
        )
        .expect("valid");
        let signature = stored.signature.expect("a signature");
        assert_eq!(signature.scheme, Scheme::Stripe);
        assert_eq!(signature.secret, None);

        let generic = with_trigger(json!({"type": "webhook", "signature": {
            "scheme": "hmac-sha256", "secret": "k", "header": "X-Sig", "encoding": "base64", "prefix": "v1="}}))
        .expect("valid");
        assert_eq!(
            generic.signature.map(|s| s.scheme.name()),
            Some("hmac-sha256")
        );
        assert!(
            with_trigger(json!({"type": "webhook"}))
                .expect("valid")
                .signature
                .is_none()
        );
    }

    #[test]
    fn webhook_options_are_parsed_and_their_problems_named() {
        let options = with_trigger(json!({
            "type": "webhook", "respond": "on_completion", "respond_timeout": "5s",
            "methods": ["post", "PUT"], "content_types": ["Application/JSON"],
            "max_body_bytes": 1024
        }))
        .expect("valid")
        .webhook;
        assert_eq!(
            options,
            WebhookOptions {
                respond_on_completion: Some(Duration::from_secs(5)),
                methods: vec!["POST".into(), "PUT".into()],
                content_types: vec!["application/json".into()],
                max_body_bytes: Some(1024),
            }
        );
        let default_wait = with_trigger(json!({"type": "webhook", "respond": "on_completion"}))
            .expect("valid")
            .webhook;
        assert_eq!(
            default_wait.respond_on_completion,
            Some(DEFAULT_RESPOND_TIMEOUT)
        );
        let messages = |trigger: Value| -> Vec<String> {
            with_trigger(trigger)
                .expect_err("invalid")
                .0
                .iter()
                .map(Problem::to_string)
                .collect()
        };
        let problems = messages(json!({
            "type": "webhook", "respond": "later", "methods": ["GE T"],
            "content_types": ["json"], "max_body_bytes": 0
        }));
        for field in [
            "trigger.respond",
            "trigger.methods",
            "trigger.content_types",
            "trigger.max_body_bytes",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(&format!("`{field}`"))),
                "{field} in {problems:?}"
            );
        }
        let too_long = messages(
            json!({"type": "webhook", "respond": "on_completion", "respond_timeout": "10m"}),
        );
        assert!(too_long[0].contains("at most 5m"), "{too_long:?}");
    }

    #[test]
    fn stored_webhook_triggers_give_their_options() {
        let trigger = json!({"type": "webhook", "respond": "on_completion", "methods": ["post"],
                             "signature": {"scheme": "github", "secret_set": true}});
        let options = WebhookOptions::of_trigger(&trigger);
        assert_eq!(options.respond_on_completion, Some(DEFAULT_RESPOND_TIMEOUT));
        assert_eq!(options.methods, ["POST"]);
        assert_eq!(
            WebhookOptions::of_trigger(&json!({"type": "manual"})),
            WebhookOptions::default()
        );
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
    fn webhook_signature_problems_name_their_field() {
        let problems = |trigger: Value| -> Vec<String> {
            with_trigger(trigger)
                .expect_err("invalid")
                .0
                .iter()
                .map(Problem::to_string)
                .collect()
        };
        assert_eq!(
            problems(json!({"type": "webhook", "signature": {"scheme": "md5", "secret": "k"}})),
            vec![
                "field `trigger.signature.scheme`: unknown scheme `md5` (expected hmac-sha256, github, stripe, slack)"
            ]
        );
        assert_eq!(
            problems(
                json!({"type": "webhook", "signature": {"scheme": "slack", "secret": "", "encoding": "hex"}})
            ),
            vec![
                "field `trigger.signature.encoding`: only for the hmac-sha256 scheme: slack fixes its own",
                "field `trigger.signature.secret`: must not be empty"
            ]
        );
        assert_eq!(
            problems(
                json!({"type": "webhook", "signature": {"scheme": "hmac-sha256", "secret": "k"}})
            ),
            vec![
                "field `trigger.signature.header`: required for hmac-sha256: the header that carries the signature"
            ]
        );
        let long = "k".repeat(MAX_SECRET_LEN + 1);
        assert_eq!(
            problems(json!({"type": "webhook", "signature": {"scheme": "github", "secret": long}})),
            vec!["field `trigger.signature.secret`: longer than 1024 bytes"]
        );
        let found = problems(
            json!({"type": "webhook", "signature": {"scheme": "github", "secret": "k", "algo": "x"}}),
        );
        assert!(found[0].contains("unknown field `algo`"), "{found:?}");
        let found =
            problems(json!({"type": "manual", "signature": {"scheme": "github", "secret": "k"}}));
        assert!(found[0].contains("unknown field `signature`"), "{found:?}");
    }

    #[test]
    fn schedule_triggers_are_parsed_and_their_problems_named() {
        let scenario = with_trigger(
            json!({"type": "schedule", "cron": "*/5 * * * *", "timezone": "Europe/Paris"}),
        )
        .expect("valid");
        assert_eq!(scenario.trigger, TriggerKind::Schedule);
        assert_eq!(
            scenario.schedule.map(|s| s.to_string()),
            Some("`*/5 * * * *` in Europe/Paris".to_owned())
        );
        assert!(scenario.signature.is_none());
        let utc = with_trigger(json!({"type": "schedule", "cron": "0 30 9 * * 1-5"}))
            .expect("valid: 6 fields, seconds first, UTC by default");
        assert_eq!(
            utc.schedule.map(|s| s.to_string()),
            Some("`0 30 9 * * 1-5` in UTC".to_owned())
        );

        let problems =
            |trigger: Value| -> Vec<Problem> { with_trigger(trigger).expect_err("invalid").0 };
        let found = problems(json!({"type": "schedule", "cron": "every day", "timezone": "Paris"}));
        let fields: Vec<&str> = found.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["trigger.timezone", "trigger.cron"], "{found:?}");
        assert!(
            found[0].message.contains("unknown time zone `Paris`"),
            "{found:?}"
        );
        assert!(found[1].message.contains("has 2 fields"), "{found:?}");
        let found = problems(json!({"type": "schedule"}));
        assert_eq!(found[0].field, "trigger.cron", "{found:?}");
        let found = problems(json!({"type": "schedule", "cron": "* * * * *", "signature": {}}));
        assert!(
            found[0].message.contains("unknown field `signature`"),
            "{found:?}"
        );
        assert_eq!(TriggerKind::Schedule.as_str(), "schedule");
    }

    #[test]
    fn poll_triggers_are_parsed_and_their_problems_named() {
        let connection = ConnectionId::generate();
        let trigger = json!({"type": "poll", "connector": "github", "trigger": "new_issue",
                             "connection": connection.to_string(), "interval": "90s"});
        let scenario = with_trigger(trigger.clone()).expect("valid");
        let expected = PollTrigger {
            connector: "github".into(),
            trigger: "new_issue".into(),
            connection: Some(connection),
            interval: Some(Duration::from_secs(90)),
        };
        assert_eq!(scenario.trigger, TriggerKind::Poll);
        assert_eq!(scenario.poll.as_ref(), Some(&expected));
        assert_eq!(PollTrigger::parse(&trigger), Ok(expected));
        assert_eq!(TriggerKind::Poll.as_str(), "poll");

        let defaults = with_trigger(json!({"type": "poll", "connector": "acme", "trigger": "new"}))
            .expect("valid: no connection, the manifest's interval");
        assert_eq!(
            defaults.poll,
            Some(PollTrigger {
                connector: "acme".into(),
                trigger: "new".into(),
                connection: None,
                interval: None,
            })
        );

        let problems = |trigger: Value| -> Vec<String> {
            with_trigger(trigger)
                .expect_err("invalid")
                .0
                .iter()
                .map(Problem::to_string)
                .collect()
        };
        assert_eq!(
            problems(json!({"type": "poll", "connector": " "})),
            [
                "field `trigger.connector`: required: the key of the connector that is polled",
                "field `trigger.trigger`: required: the key of the connector's poll trigger",
            ]
        );
        assert_eq!(
            problems(
                json!({"type": "poll", "connector": "a", "trigger": "b", "connection": "mine"})
            ),
            ["field `trigger.connection`: `mine` is not a connection id"]
        );
        assert_eq!(
            problems(
                json!({"type": "poll", "connector": "a", "trigger": "b", "interval": "500ms"})
            ),
            ["field `trigger.interval`: at least 1s (every poll calls the connector's API)"]
        );
        let found = problems(
            json!({"type": "poll", "connector": "a", "trigger": "b", "interval": "often"}),
        );
        assert!(
            found.len() == 1 && found[0].contains("`often` is not a duration"),
            "{found:?}"
        );
        let found = problems(
            json!({"type": "poll", "connector": "a", "trigger": "b", "cron": "* * * * *"}),
        );
        assert!(found[0].contains("unknown field `cron`"), "{found:?}");

        let not_poll = PollTrigger::parse(&json!({"type": "manual"})).expect_err("manual");
        assert_eq!(
            not_poll.to_string(),
            "field `trigger.type`: not a poll trigger"
        );
        let stored_bad = PollTrigger::parse(&json!({"type": "poll", "connector": "a"}))
            .expect_err("no trigger key");
        assert_eq!(stored_bad.0[0].field, "trigger.trigger");
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

/// Limits of a definition, and properties over arbitrary and mutated definitions: any
/// JSON yields a scenario or problems that say what is wrong, never a panic.
#[cfg(test)]
mod hardening {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::limits::MAX_JSON_DEPTH;
    use crate::template::MAX_TEMPLATE_BYTES;
    use crate::testing::{json_value, key};

    fn http(id: &str, after: &[&str]) -> Value {
        json!({"id": id, "type": "action", "connector": "http", "action": "request", "after": after,
               "input": {"method": "GET", "url": "http://example.test/"}})
    }

    fn definition(nodes: Value) -> Value {
        json!({"name": "t", "trigger": {"type": "manual"}, "nodes": nodes})
    }

    fn problems(definition: &Value) -> Vec<String> {
        Scenario::parse(definition, &BuiltinCatalog)
            .expect_err("must be invalid")
            .0
            .iter()
            .map(Problem::to_string)
            .collect()
    }

    #[test]
    fn the_number_of_nodes_is_limited() {
        let chain = |n: usize| -> Value {
            (0..n)
                .map(|i| {
                    let after = if i == 0 {
                        vec![]
                    } else {
                        vec![format!("n{}", i - 1)]
                    };
                    let after: Vec<&str> = after.iter().map(String::as_str).collect();
                    http(&format!("n{i}"), &after)
                })
                .collect()
        };
        let scenario = Scenario::parse(&definition(chain(MAX_NODES)), &BuiltinCatalog)
            .expect("the limit itself is allowed");
        assert_eq!(scenario.nodes.len(), MAX_NODES);
        assert_eq!(
            problems(&definition(chain(MAX_NODES + 1))),
            vec!["field `nodes`: 501 nodes, over the limit of 500"]
        );
    }

    #[test]
    fn a_template_over_its_size_limit_is_named_with_its_field() {
        let mut node = http("a", &[]);
        node["input"]["body"] = json!(format!(
            "{{{{ trigger.body }}}}{}",
            "x".repeat(MAX_TEMPLATE_BYTES)
        ));
        let found = problems(&definition(json!([node])));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("node `a`, field `input.body`: template does not parse: template is 65554 bytes, over the limit of 65536"),
            "{found:?}"
        );
    }

    /// Found by the fuzzer: a duplicate id pointed the id's index past the nodes kept,
    /// and the next lookup of it panicked.
    #[test]
    fn a_duplicate_id_referenced_later_is_a_problem_not_a_panic() {
        let found = problems(&definition(json!([
            http("a", &[]),
            http("b", &["a"]),
            http("b", &["a"]),
            http("c", &["b"])
        ])));
        assert_eq!(found, vec!["node `b`, field `id`: duplicate node id"]);
    }

    #[test]
    fn a_definition_nested_too_deep_is_refused_naming_the_limit() {
        let deep = |depth: usize| (0..depth).fold(json!("leaf"), |inner, _| json!([inner]));
        let mut node = http("a", &[]);
        // The node's input sits 4 levels down: `{nodes: [{input: {body: …}}]}`.
        node["input"]["body"] = deep(MAX_JSON_DEPTH - 4);
        assert!(Scenario::parse(&definition(json!([node.clone()])), &BuiltinCatalog).is_ok());
        node["input"]["body"] = deep(MAX_JSON_DEPTH - 3);
        assert_eq!(
            problems(&definition(json!([node]))),
            vec![
                "field `definition`: nested 65 levels deep, over the limit of 64 levels of arrays and objects"
            ]
        );
    }

    /// Valid definitions using every kind of node, trigger and edge.
    fn valid_definitions() -> Vec<Value> {
        let mut each = http("each", &["lookup"]);
        each["for_each"] = json!("{{ nodes.lookup.output.items }}");
        each["input"]["body"] = json!({"item": "{{ item }}", "at": "{{ index }}"});
        each["on_error"] = json!("continue");
        let mut lookup = http("lookup", &[]);
        lookup["outputs"] = json!({"items": "$.body.items[*]", "first": "$.body.items[0].name"});
        lookup["retry"] = json!({"max_attempts": 3, "initial": "1s", "max": "10s"});
        lookup["timeout"] = json!("5s");
        vec![
            json!({
                "name": "every kind",
                "description": "d",
                "trigger": {"type": "webhook", "signature": {"scheme": "github", "secret": "s"}},
                "settings": {"timeout": "1m", "retry": {"max_attempts": 2}},
                "nodes": [
                    lookup,
                    {"id": "known", "type": "condition", "after": ["lookup"], "if": "nodes.lookup.output.first is not none"},
                    {"id": "route", "type": "condition", "after": ["known:true"],
                     "switch": [{"name": "big", "if": "trigger.body.n > 10"}]},
                    {"id": "shape", "type": "transform", "after": ["route:big"], "output": {"n": "{{ trigger.body.n }}"}},
                    {"id": "wait", "type": "delay", "after": ["route:default"], "duration": "1s"},
                    {"id": "later", "type": "delay", "after": ["wait"], "until": "{{ trigger.body.at }}"},
                    each,
                    http("recover", &["lookup:error"]),
                ]
            }),
            json!({
                "name": "scheduled", "trigger": {"type": "schedule", "cron": "*/5 * * * *", "timezone": "Europe/Paris"},
                "nodes": [http("a", &[]), http("b", &["a"]), http("c", &["a", "b"])]
            }),
            json!({
                "name": "generic", "trigger": {"type": "webhook", "signature": {"scheme": "hmac-sha256", "secret": "k", "header": "X-Sig", "encoding": "base64", "prefix": "v1="}},
                "nodes": [{"id": "t", "type": "transform", "output": {"all": "{{ trigger }}"}}]
            }),
        ]
    }

    /// Values that mean something at the places a mutation may put them.
    fn meaningful() -> impl Strategy<Value = Value> {
        const WORDS: &[&str] = &[
            "a",
            "lookup",
            "known",
            "route",
            "each",
            "ghost",
            "lookup:error",
            "known:true",
            "known:maybe",
            "route:default",
            "each:error",
            "action",
            "transform",
            "condition",
            "delay",
            "webhook",
            "schedule",
            "manual",
            "http",
            "request",
            "weft",
            "delay",
            "continue",
            "fail",
            "github",
            "stripe",
            "slack",
            "hmac-sha256",
            "hex",
            "base64",
            "0s",
            "1s",
            "soon",
            "99999999999999999999s",
            "* * * * *",
            "61 * * * *",
            "Mars/Olympus",
            "{{ nodes.lookup.output }}",
            "{{ nodes.each.output }}",
            "{{ item }}",
            "{{ index }}",
            "{{ run.id }}",
            "{{ trigger.body.x ",
            "{% for %}",
            "nodes.known.output is none",
            "$..*",
            "$.body[",
            "$[?@.a == 1]",
            "",
            "2030-01-01T00:00:00Z",
        ];
        prop_oneof![
            3 => prop::sample::select(WORDS).prop_map(Value::from),
            1 => prop::collection::vec(prop::sample::select(WORDS).prop_map(Value::from), 0..4)
                .prop_map(Value::Array),
            1 => json_value(),
            1 => (0u32..2000).prop_map(Value::from),
        ]
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Replace(prop::sample::Index, Value),
        Remove(prop::sample::Index),
        Insert(prop::sample::Index, String, Value),
        /// Copies an item of an array (a node, an edge) to the array's end.
        Duplicate(prop::sample::Index),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        const FIELDS: &[&str] = &[
            "id",
            "type",
            "after",
            "connector",
            "action",
            "input",
            "outputs",
            "output",
            "if",
            "switch",
            "retry",
            "timeout",
            "on_error",
            "for_each",
            "max_concurrency",
            "duration",
            "until",
            "signature",
            "secret",
            "header",
            "cron",
            "name",
            "nodes",
        ];
        prop_oneof![
            (any::<prop::sample::Index>(), meaningful())
                .prop_map(|(at, v)| Mutation::Replace(at, v)),
            any::<prop::sample::Index>().prop_map(Mutation::Remove),
            (
                any::<prop::sample::Index>(),
                prop_oneof![prop::sample::select(FIELDS).prop_map(str::to_owned), key()],
                meaningful()
            )
                .prop_map(|(at, k, v)| Mutation::Insert(at, k, v)),
            any::<prop::sample::Index>().prop_map(Mutation::Duplicate),
        ]
    }

    /// Every position in a value, as JSON pointers, the root first.
    fn pointers(value: &Value) -> Vec<String> {
        let mut found = Vec::new();
        let mut pending = vec![(String::new(), value)];
        while let Some((pointer, value)) = pending.pop() {
            match value {
                Value::Array(items) => pending.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| (format!("{pointer}/{i}"), item)),
                ),
                Value::Object(fields) => pending.extend(fields.iter().map(|(k, item)| {
                    let escaped = k.replace('~', "~0").replace('/', "~1");
                    (format!("{pointer}/{escaped}"), item)
                })),
                _ => {}
            }
            found.push(pointer);
        }
        found
    }

    fn apply(definition: &mut Value, mutation: Mutation) {
        let all = pointers(definition);
        match mutation {
            Mutation::Replace(at, value) => {
                if let Some(target) = definition.pointer_mut(at.get(&all).as_str()) {
                    *target = value;
                }
            }
            Mutation::Remove(at) => {
                let pointer = at.get(&all).as_str();
                let Some((parent, last)) = pointer.rsplit_once('/') else {
                    return;
                };
                let last = last.replace("~1", "/").replace("~0", "~");
                match definition.pointer_mut(parent) {
                    Some(Value::Object(fields)) => {
                        fields.remove(&last);
                    }
                    Some(Value::Array(items)) => {
                        if let Ok(i) = last.parse::<usize>()
                            && i < items.len()
                        {
                            items.remove(i);
                        }
                    }
                    _ => {}
                }
            }
            Mutation::Duplicate(at) => {
                let pointer = at.get(&all).as_str();
                let Some((parent, _)) = pointer.rsplit_once('/') else {
                    return;
                };
                let copy = definition.pointer(pointer).cloned();
                if let (Some(copy), Some(Value::Array(items))) =
                    (copy, definition.pointer_mut(parent))
                {
                    items.push(copy);
                }
            }
            Mutation::Insert(at, key, value) => match definition.pointer_mut(at.get(&all).as_str())
            {
                Some(Value::Object(fields)) => {
                    fields.insert(key, value);
                }
                Some(Value::Array(items)) => items.push(value),
                _ => {}
            },
        }
    }

    fn check(definition: &Value) -> Result<(), TestCaseError> {
        match Scenario::parse(definition, &BuiltinCatalog) {
            Ok(scenario) => {
                // A valid scenario is a DAG whose edges all resolve, and it stays valid.
                let order = topological_order(&scenario);
                prop_assert!(order.is_ok(), "a valid scenario has no cycle");
                prop_assert_eq!(order.map(|o| o.len()).ok(), Some(scenario.nodes.len()));
                for node in &scenario.nodes {
                    for edge in &node.after {
                        prop_assert!(scenario.node(&edge.from).is_some());
                    }
                }
                prop_assert!(Scenario::parse(definition, &BuiltinCatalog).is_ok());
            }
            Err(Invalid(problems)) => {
                prop_assert!(
                    !problems.is_empty(),
                    "an invalid definition names a problem"
                );
                for problem in &problems {
                    prop_assert!(
                        !problem.field.is_empty() && !problem.message.is_empty(),
                        "{:?}",
                        problem
                    );
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_json_yields_a_scenario_or_named_problems(definition in json_value()) {
            check(&definition)?;
        }

        #[test]
        fn definition_shaped_json_yields_a_scenario_or_named_problems(
            name in meaningful(),
            trigger in meaningful(),
            nodes in prop::collection::vec(
                prop::collection::btree_map(
                    prop::sample::select(&["id", "type", "after", "connector", "action", "input", "outputs",
                        "output", "if", "switch", "for_each", "duration", "until", "on_error", "retry"][..]),
                    meaningful(),
                    0..8,
                ),
                0..6,
            ),
        ) {
            let nodes: Vec<Value> = nodes
                .into_iter()
                .map(|fields| Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
                .collect();
            check(&json!({"name": name, "trigger": trigger, "nodes": nodes}))?;
        }

        #[test]
        fn mutated_valid_definitions_yield_a_scenario_or_named_problems(
            base in prop::sample::select(valid_definitions()),
            mutations in prop::collection::vec(mutation(), 1..4),
        ) {
            prop_assert!(Scenario::parse(&base, &BuiltinCatalog).is_ok(), "the base is valid");
            let mut definition = base;
            for mutation in mutations {
                apply(&mut definition, mutation);
            }
            check(&definition)?;
        }
    }
}
