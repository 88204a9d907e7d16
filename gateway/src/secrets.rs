//! Secrets the gateway keeps in PostgreSQL, encrypted under the master key ring (architecture
//! §6): webhook signature secrets, connection credentials, and the PKCE verifiers of OAuth
//! flows in progress. Each ciphertext's associated data names its row and purpose, so a
//! ciphertext copied to another row does not decrypt.
//!
//! [`rotate_keys`] re-encrypts them under the newest key: step 3 of a key rotation
//! (deploy/README.md). A new kind of stored secret must be added to [`STORES`], or
//! rotations would leave it behind under a key about to be removed.

use tokio_postgres::types::{FromSqlOwned, ToSql};
use tokio_postgres::{Client, Row};
use uuid::Uuid;
use weft_domain::crypto::KeyRing;
use weft_domain::ids::{ScenarioId, WorkspaceId};
use weft_domain::messages::connection_aad;

/// The associated data of a scenario's webhook signature secret.
pub fn webhook_signature_aad(workspace_id: WorkspaceId, scenario_id: ScenarioId) -> String {
    format!("{workspace_id}/{scenario_id}/webhook-signature")
}

/// The associated data of the PKCE verifier of the OAuth flow `state`.
pub fn oauth_verifier_aad(workspace_id: WorkspaceId, state: &str) -> String {
    format!("weft:oauth-state:{workspace_id}:{state}")
}

/// What a rotation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    /// Secrets re-encrypted under the newest key.
    pub re_encrypted: u64,
    /// Secrets that do not decrypt with the ring (their key was removed from it, or the
    /// row was tampered with): left as they are, and logged.
    pub undecryptable: u64,
}

impl std::ops::AddAssign for Rotated {
    fn add_assign(&mut self, other: Self) {
        self.re_encrypted += other.re_encrypted;
        self.undecryptable += other.undecryptable;
    }
}

/// One table of secrets: its primary key, its ciphertext column, and how a row's
/// associated data is made. Table and column names are constants of this file, never input.
struct Store {
    what: &'static str,
    table: &'static str,
    key: &'static str,
    ciphertext: &'static str,
    aad: fn(&Row) -> Result<String, tokio_postgres::Error>,
}

/// Every kind of secret the database holds.
const STORES: [Store; 3] = [
    Store {
        what: "webhook signature secret",
        table: "webhook_signatures",
        key: "scenario_id",
        ciphertext: "ciphertext",
        aad: |row| {
            Ok(webhook_signature_aad(
                row.try_get("workspace_id")?,
                row.try_get("scenario_id")?,
            ))
        },
    },
    Store {
        what: "connection's credentials",
        table: "connections",
        key: "id",
        ciphertext: "credentials",
        aad: |row| {
            Ok(connection_aad(
                row.try_get("workspace_id")?,
                row.try_get("id")?,
            ))
        },
    },
    Store {
        what: "OAuth flow's PKCE verifier",
        table: "oauth_states",
        key: "state",
        ciphertext: "verifier",
        aad: |row| {
            Ok(oauth_verifier_aad(
                row.try_get("workspace_id")?,
                row.try_get("state")?,
            ))
        },
    },
];

/// Re-encrypts every stored secret whose key is not the newest of `keys`, `batch_size`
/// rows per transaction. Idempotent, and safe to interrupt: each batch commits on its own,
/// and a second run finds only what is still stale.
///
/// Each batch locks its rows, so a secret written meanwhile (a scenario saved, tokens
/// refreshed) waits for the batch rather than being overwritten with the old value.
pub async fn rotate_keys(
    client: &mut Client,
    keys: &KeyRing,
    batch_size: i64,
) -> Result<Rotated, tokio_postgres::Error> {
    let mut rotated = Rotated::default();
    rotated += rotate_store::<Uuid>(client, keys, batch_size, &STORES[0], Uuid::nil()).await?;
    rotated += rotate_store::<Uuid>(client, keys, batch_size, &STORES[1], Uuid::nil()).await?;
    rotated += rotate_store::<String>(client, keys, batch_size, &STORES[2], String::new()).await?;
    Ok(rotated)
}

/// Rotates one table, keyset-paging on its primary key (of type `K`, starting above
/// `first`): every row is visited once, however many batches.
async fn rotate_store<K>(
    client: &mut Client,
    keys: &KeyRing,
    batch_size: i64,
    store: &Store,
    first: K,
) -> Result<Rotated, tokio_postgres::Error>
where
    K: FromSqlOwned + ToSql + Sync + std::fmt::Display,
{
    let Store {
        what,
        table,
        key,
        ciphertext,
        aad,
    } = store;
    // Text keys compare byte-wise so the paging order cannot depend on the collation.
    let order = if *key == "state" {
        format!(r#"{key} COLLATE "C""#)
    } else {
        (*key).to_owned()
    };
    let select = format!(
        "SELECT {key}, workspace_id, {ciphertext} FROM {table}
         WHERE {order} > $1 ORDER BY {order} LIMIT $2 FOR UPDATE"
    );
    let update = format!("UPDATE {table} SET {ciphertext} = $2 WHERE {key} = $1");
    let mut rotated = Rotated::default();
    let mut after = first;
    loop {
        let transaction = client.transaction().await?;
        let rows = transaction.query(&select, &[&after, &batch_size]).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.try_get(*key)?;
        for row in &rows {
            let Some(sealed) = row.try_get::<_, Option<&str>>(*ciphertext)? else {
                continue;
            };
            if !keys.is_stale(sealed) {
                continue;
            }
            let id: K = row.try_get(*key)?;
            let aad = aad(row)?;
            match keys.decrypt(sealed, &aad) {
                Ok(secret) => {
                    let resealed = keys.encrypt(&secret, &aad);
                    transaction.execute(&update, &[&id, &resealed]).await?;
                    rotated.re_encrypted += 1;
                }
                Err(e) => {
                    // The id of an OAuth state is itself a credential of its flow.
                    let row_id = if *key == "state" {
                        "…".to_owned()
                    } else {
                        id.to_string()
                    };
                    tracing::warn!(table, id = %row_id, error = %e, "a stored {what} does not decrypt; left as it is");
                    rotated.undecryptable += 1;
                }
            }
        }
        transaction.commit().await?;
    }
    Ok(rotated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_associated_data_names_the_workspace_the_scenario_and_the_purpose() {
        let workspace = WorkspaceId::from_uuid(Uuid::from_u128(1));
        let scenario = ScenarioId::from_uuid(Uuid::from_u128(2));
        assert_eq!(
            webhook_signature_aad(workspace, scenario),
            "00000000-0000-0000-0000-000000000001/00000000-0000-0000-0000-000000000002/webhook-signature"
        );
    }

    #[test]
    fn each_kind_of_secret_has_associated_data_of_its_own() {
        let workspace = WorkspaceId::from_uuid(Uuid::from_u128(1));
        let id = Uuid::from_u128(2);
        let verifier = oauth_verifier_aad(workspace, &id.to_string());
        assert_ne!(verifier, connection_aad(workspace, id.into()));
        assert_ne!(verifier, webhook_signature_aad(workspace, id.into()));
        assert_ne!(
            verifier,
            oauth_verifier_aad(Uuid::from_u128(3).into(), &id.to_string())
        );
    }
}
