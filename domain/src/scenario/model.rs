//! The validated, typed scenario: what [`super::parse`] makes of a definition and what
//! the graph evaluates.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::ids::ConnectionId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json_path::JsonPath;

use crate::retry::RetryPolicy;
use crate::schedule::Schedule;
use crate::signature::{Scheme, SigningSecret};

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
    pub(super) fn ports(&self) -> Vec<&str> {
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
    pub(super) index: HashMap<String, usize>,
    pub(super) has_error_branch: HashSet<String>,
}

impl Scenario {
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.index.get(id).map(|&i| &self.nodes[i])
    }

    /// Whether some node continues from `id`'s `error` port.
    pub fn has_error_branch(&self, id: &str) -> bool {
        self.has_error_branch.contains(id)
    }
}
