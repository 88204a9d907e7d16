//! Connections (architecture §6, §7): one account of a connector. Its `config` is not secret and
//! is shown; its credentials go in, are sealed at once under the key ring (the associated
//! data binds them to the workspace and the connection), and never come out: answers say
//! which credential fields are set, never their values.
//!
//! Credentials are opened in the gateway only to change them (a PATCH that merges fields,
//! the OAuth callback that adds tokens); reading a connection never opens them, because
//! the names of the fields are kept beside the ciphertext (`credential_fields`).
//!
//! - `model`: what the endpoints take and answer.
//! - `checks`: the checks of a connection's fields, and the status its credentials give it.
//! - `connectable`: what a connector key makes a connection for.
//! - `masking`: config values a connector marks secret (`writeOnly`), hidden from viewers.
//! - `handlers`: the endpoints.

mod checks;
mod connectable;
pub(super) mod handlers;
mod masking;
mod model;
