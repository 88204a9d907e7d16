//! The JSON shape of a definition, as users write it: read by serde, then checked by
//! [`super::parse`] into the typed model.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::model::OnError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DefinitionSpec {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: Option<String>,
    pub(super) trigger: TriggerSpec,
    #[serde(default)]
    pub(super) settings: SettingsSpec,
    pub(super) nodes: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum TriggerSpec {
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
pub(super) struct SignatureSpec {
    pub(super) scheme: String,
    pub(super) secret: Option<String>,
    /// What a stored definition shows in place of the secret. Accepted and ignored, so
    /// that a definition read from the API can be saved again as it is.
    #[serde(default, rename = "secret_set")]
    pub(super) _secret_set: Option<bool>,
    pub(super) header: Option<String>,
    pub(super) encoding: Option<String>,
    pub(super) prefix: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SettingsSpec {
    pub(super) timeout: Option<String>,
    pub(super) retry: Option<RetrySpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetrySpec {
    pub(super) max_attempts: Option<u32>,
    pub(super) initial: Option<String>,
    pub(super) max: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeSpec {
    pub(super) id: String,
    #[serde(rename = "type")]
    pub(super) node_type: String,
    #[serde(default)]
    pub(super) after: Vec<String>,
    pub(super) connector: Option<String>,
    pub(super) action: Option<String>,
    pub(super) connection: Option<String>,
    pub(super) input: Option<Value>,
    pub(super) outputs: Option<BTreeMap<String, String>>,
    pub(super) output: Option<serde_json::Map<String, Value>>,
    pub(super) status: Option<Value>,
    pub(super) headers: Option<Value>,
    pub(super) body: Option<Value>,
    #[serde(rename = "if")]
    pub(super) condition: Option<String>,
    pub(super) switch: Option<Vec<CaseSpec>>,
    pub(super) retry: Option<RetrySpec>,
    pub(super) timeout: Option<String>,
    #[serde(default)]
    pub(super) on_error: OnError,
    pub(super) for_each: Option<String>,
    pub(super) max_concurrency: Option<u32>,
    pub(super) duration: Option<String>,
    pub(super) until: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaseSpec {
    pub(super) name: String,
    #[serde(rename = "if")]
    pub(super) condition: String,
}
