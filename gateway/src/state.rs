//! What every handler shares. Cheap to clone: each field is a handle.

use std::sync::Arc;

use deadpool_postgres::Pool;
use weft_shared::crypto::KeyRing;
use weft_shared::queue::Publisher;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub publisher: Arc<Publisher>,
    pub metrics: Metrics,
    /// Encrypts and decrypts the secrets the gateway stores.
    pub keys: Arc<KeyRing>,
    /// `None` turns the admin API off.
    pub admin_token: Option<Arc<str>>,
    /// Largest JSON body of the REST API, in bytes.
    pub api_max_body: usize,
    /// Largest webhook body, in bytes.
    pub webhook_max_body: usize,
}
