//! Connector manifests (architecture §6): what an API can do, as data. A manifest is checked
//! against its own JSON Schema ([`MANIFEST_SCHEMA`]) and then for what a schema cannot
//! say (HTTP methods, templates, JSONPaths, unique keys), so that an error names the JSON
//! path and the problem: `actions[2].request.method: "FETCH" is not an HTTP method`.
//!
//! The built-in manifests ship in `domain/connectors/` and are embedded at build time.
//!
//! - `model`: the typed form of a manifest: auth, actions, requests, responses,
//!   triggers.
//! - `validate`: the checks that turn a document into a [`Manifest`], or its problems.
//! - `problems`: problems at JSON paths, and how a JSON Schema's errors become them.
//! - `builtin`: the manifests that ship with Weft.
//! - `input`: a node's input checked against its action's `input_schema`.

mod builtin;
mod input;
mod model;
mod problems;
mod validate;

pub use builtin::{builtin, builtins};
pub use input::InputSchemas;
pub use model::{
    Action, Auth, BodyType, Cursor, Grant, HTTP_CONNECTOR, HTTP_REQUEST_ACTION, Idempotency,
    KeyLocation, Manifest, OAuth2, RateLimit, RequestSpec, ResponseSpec, Trigger,
};
pub use problems::{InvalidManifest, ManifestProblem};
pub use validate::{HTTP_METHODS, MANIFEST_SCHEMA, MAX_KEY_CHARS, RESERVED_KEYS, validate};
