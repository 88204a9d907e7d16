//! The declarative HTTP engine's pure half (architecture §6): every connector action, and the
//! built-in `http` connector's free-form request, becomes one [`PreparedRequest`]; the
//! connection's [`Credentials`] are put in by [`authorize`]; the answer becomes the
//! action's output through [`interpret`]. The worker does the sending.
//!
//! Templates of a manifest see `input` (the node's rendered input) and `config` (the
//! connection's config; `base_url` sees only `config`). Credentials are never in their
//! scope: only the auth type puts them into a request, so no template can leak them.
//!
//! - `request`: the request an action and its input make, and its idempotency key.
//! - [`path`]: a manifest request's path, one segment per placeholder.
//! - `credentials`: a connection's credential fields, opened for one request, and the
//!   cutting of their values out of what comes back.
//! - `auth`: the credentials put into a request as the auth type says.
//! - `select`: JSONPath selection, bounded in what it may copy.
//! - `response`: the answer read into the action's output.

mod auth;
mod credentials;
pub mod path;
mod request;
mod response;
mod select;

#[cfg(test)]
mod fixtures;

pub use auth::authorize;
pub use credentials::{Credentials, CredentialsError, redact, redact_text};
pub use request::{Body, Carrying, PreparedRequest, idempotency_key, prepare, prepare_http};
pub use response::{error_message, interpret};
pub use select::{Selection, select};
