//! The messages between the services (architecture §1, §4): JSON, versioned by `v`.

use crate::ids::{ConnectionId, RunId, WorkspaceId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::manifest::{Action, Auth, Idempotency, Manifest, RequestSpec, ResponseSpec};
use crate::run::RunStatus;

/// The message format version this build reads and writes.
pub const VERSION: u8 = 1;

/// The connector of the built-in pseudo-actions the scheduler dispatches for its own
/// node types; user action nodes cannot name it.
pub const BUILTIN_CONNECTOR: &str = "weft";
/// The built-in action of a `delay` node: the worker completes it as soon as it is due.
pub const DELAY_ACTION: &str = "delay";

/// A message type carried on the broker.
pub trait Message: Serialize + for<'de> Deserialize<'de> {
    /// The AMQP `type` property, so the dead-letter consumer knows what it holds.
    const TYPE: &'static str;
    fn version(&self) -> u8;
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message is not valid {kind} JSON: {source}")]
    Json {
        kind: &'static str,
        source: serde_json::Error,
    },
    #[error("{kind} has version {found}, this build reads version {VERSION}")]
    Version { kind: &'static str, found: u8 },
}

pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, DecodeError> {
    let message: M = serde_json::from_slice(bytes).map_err(|source| DecodeError::Json {
        kind: M::TYPE,
        source,
    })?;
    if message.version() != VERSION {
        return Err(DecodeError::Version {
            kind: M::TYPE,
            found: message.version(),
        });
    }
    Ok(message)
}

pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    serde_json::to_vec(message).expect("message types serialize infallibly")
}

/// Gateway → scheduler: a recorded run is waiting to be taken up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequested {
    pub v: u8,
    pub run_id: RunId,
    pub workspace_id: WorkspaceId,
}

impl Message for RunRequested {
    const TYPE: &'static str = "RunRequested";
    fn version(&self) -> u8 {
        self.v
    }
}

/// Scheduler → worker: execute one attempt of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeTask {
    pub v: u8,
    pub run_id: RunId,
    pub workspace_id: WorkspaceId,
    pub node_id: String,
    /// For a `for_each` node: which item this task is for (0-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_index: Option<u32>,
    pub attempt: u32,
    pub connector: String,
    pub action: String,
    /// The rendered input.
    pub input: Value,
    pub timeout_ms: u64,
    /// When the node became ready (for the dispatch latency metric).
    pub ready_at: DateTime<Utc>,
    /// A delayed task is not executed before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// For a manifest connector's action: what to call, from the version the run pinned.
    /// `None` for the built-in `http.request` (its input is the request) and `weft.delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Box<ActionCall>>,
    /// Where the result goes instead of the results queue: the private reply queue of
    /// the gateway that executes an action directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// A manifest action as a task carries it: the worker needs nothing else to call it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionCall {
    /// A template over `config`; already the connection's `config.base_url` when it has one.
    pub base_url: String,
    pub auth: Auth,
    pub request: RequestSpec,
    #[serde(default)]
    pub response: ResponseSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<SealedConnection>,
}

impl ActionCall {
    /// What a task carries to call `action` of `manifest` through `connection`: the
    /// connection's `config.base_url` replaces the manifest's.
    pub fn new(manifest: &Manifest, action: &Action, connection: Option<SealedConnection>) -> Self {
        let base_url = connection
            .as_ref()
            .and_then(|c| c.config.get("base_url"))
            .and_then(Value::as_str)
            .unwrap_or(&manifest.base_url)
            .to_owned();
        Self {
            base_url,
            auth: manifest.auth.clone(),
            request: action.request.clone(),
            response: action.response.clone(),
            idempotency: action.idempotency.clone(),
            connection,
        }
    }
}

/// A connection on its way to a worker: its config in the clear, its credentials
/// sealed with the key ring (AAD [`connection_aad`]), opened only inside the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealedConnection {
    pub id: ConnectionId,
    #[serde(default)]
    pub config: Value,
    /// The sealed JSON object of credential fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

/// The AAD that binds a connection's credentials to their workspace and row.
pub fn connection_aad(workspace_id: WorkspaceId, connection_id: ConnectionId) -> String {
    format!("weft:connection:{workspace_id}:{connection_id}")
}

impl NodeTask {
    /// The result of this attempt, addressed to the same run, node, item and attempt.
    pub fn result(
        &self,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        outcome: Outcome,
    ) -> NodeResult {
        NodeResult {
            v: VERSION,
            run_id: self.run_id,
            workspace_id: self.workspace_id,
            node_id: self.node_id.clone(),
            item_index: self.item_index,
            attempt: self.attempt,
            started_at,
            finished_at,
            outcome,
            connection: None,
        }
    }
}

impl Message for NodeTask {
    const TYPE: &'static str = "NodeTask";
    fn version(&self) -> u8 {
        self.v
    }
}

/// How a failure should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Network error, 5xx, 429: worth another attempt.
    Retryable,
    /// Other 4xx, invalid input, template errors: another attempt would fail the same way.
    Permanent,
    /// The request or the node passed its deadline; retried like a retryable error.
    Timeout,
    /// The task could not be processed at all (undecodable, or over the delivery limit).
    Poison,
    /// The upstream answered 429: wait per `Retry-After`; not counted as a failed attempt.
    RateLimited,
}

impl ErrorClass {
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Retryable | Self::Timeout | Self::RateLimited)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
            Self::Timeout => "timeout",
            Self::Poison => "poison",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// A node's error, as stored in the run record and seen by templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeError {
    pub class: ErrorClass,
    pub message: String,
    /// The upstream HTTP status, when there was a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The start of the upstream response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// What the upstream asked for in `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl NodeError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            status: None,
            body: None,
            retry_after_ms: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Success { output: Value },
    Failure { error: NodeError },
}

/// Worker → scheduler: the outcome of one attempt of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeResult {
    pub v: u8,
    pub run_id: RunId,
    pub workspace_id: WorkspaceId,
    pub node_id: String,
    /// For a `for_each` node: which item this result is for (0-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_index: Option<u32>,
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: Outcome,
    /// What the attempt learned about its connection: refreshed tokens, or that it broke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionUpdate>,
}

/// A change to a connection found by a worker, stored by whoever records the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionUpdate {
    pub id: ConnectionId,
    /// Newly sealed credentials (an OAuth token refreshed or obtained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// The connection no longer works (a refresh was refused): its status becomes `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Message for NodeResult {
    const TYPE: &'static str = "NodeResult";
    fn version(&self) -> u8 {
        self.v
    }
}

/// Scheduler → the gateway holding a webhook that responds on completion: the run is
/// over. Sent to that gateway's private reply queue (the run's `reply_to`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFinished {
    pub v: u8,
    pub run_id: RunId,
    pub workspace_id: WorkspaceId,
    /// How the run ended: `completed`, `failed` or `timed_out`.
    pub status: RunStatus,
    /// The webhook's answer: `{status, headers, body}`.
    pub response: Value,
}

impl Message for RunFinished {
    const TYPE: &'static str = "RunFinished";
    fn version(&self) -> u8 {
        self.v
    }
}

/// The longest upstream body kept in an error.
pub const MAX_ERROR_BODY: usize = 2048;

/// Cuts a body to [`MAX_ERROR_BODY`] bytes on a character boundary.
pub fn truncate_body(body: &str) -> String {
    if body.len() <= MAX_ERROR_BODY {
        return body.to_owned();
    }
    let mut end = MAX_ERROR_BODY;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &body[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_other_versions_are_refused() {
        let message = RunRequested {
            v: VERSION,
            run_id: RunId::generate(),
            workspace_id: WorkspaceId::generate(),
        };
        let decoded: RunRequested = decode(&encode(&message)).expect("round trip");
        assert_eq!(decoded, message);

        let future = RunRequested { v: 9, ..message };
        let err = decode::<RunRequested>(&encode(&future)).expect_err("version 9 refused");
        assert!(err.to_string().contains("version 9"), "{err}");
        assert!(decode::<NodeResult>(b"not json").is_err());
    }

    #[test]
    fn item_indexes_are_optional_so_earlier_version_1_messages_still_decode() {
        let result = NodeResult {
            v: VERSION,
            run_id: RunId::generate(),
            workspace_id: WorkspaceId::generate(),
            node_id: "a".into(),
            item_index: None,
            attempt: 1,
            started_at: Utc::now(),
            finished_at: Utc::now(),
            outcome: Outcome::Success {
                output: Value::Null,
            },
            connection: None,
        };
        let encoded = encode(&result);
        assert!(
            !String::from_utf8_lossy(&encoded).contains("item_index"),
            "a result for a whole node is written as before"
        );
        assert_eq!(decode::<NodeResult>(&encoded).expect("decodes"), result);
        let item = NodeResult {
            item_index: Some(3),
            ..result
        };
        assert_eq!(decode::<NodeResult>(&encode(&item)).expect("decodes"), item);

        let old_task = serde_json::json!({
            "v": 1, "run_id": RunId::nil(), "workspace_id": WorkspaceId::nil(), "node_id": "a",
            "attempt": 2, "connector": "http", "action": "request", "input": {},
            "timeout_ms": 1000, "ready_at": Utc::now()
        });
        let task: NodeTask =
            decode(old_task.to_string().as_bytes()).expect("a task without item_index");
        assert_eq!((task.item_index, task.attempt), (None, 2));
    }

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        let body = "é".repeat(MAX_ERROR_BODY);
        let cut = truncate_body(&body);
        assert!(cut.len() <= MAX_ERROR_BODY + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_body("short"), "short");
    }
}
