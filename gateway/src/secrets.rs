//! Secrets the gateway keeps in PostgreSQL, encrypted under the master key ring (DESIGN
//! §5): the webhook signature secrets. Each ciphertext's associated data names its row and
//! purpose, so a ciphertext copied to another row does not decrypt.
//!
//! [`rotate_keys`] re-encrypts them under the newest key: step 3 of a key rotation
//! (deploy/README.md). A new kind of stored secret must be added to it, or rotations
//! would leave it behind under a key about to be removed.

use tokio_postgres::Client;
use uuid::Uuid;
use weft_shared::crypto::KeyRing;

/// The associated data of a scenario's webhook signature secret.
pub fn webhook_signature_aad(workspace_id: Uuid, scenario_id: Uuid) -> String {
    format!("{workspace_id}/{scenario_id}/webhook-signature")
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

/// Re-encrypts every stored secret whose key is not the newest of `keys`, `batch_size`
/// rows per transaction. Idempotent: a second run finds nothing stale.
///
/// Each batch locks its rows, so a scenario saved meanwhile (with a new secret) waits for
/// the batch rather than having its secret overwritten with the old one.
pub async fn rotate_keys(
    client: &mut Client,
    keys: &KeyRing,
    batch_size: i64,
) -> Result<Rotated, tokio_postgres::Error> {
    let mut rotated = Rotated::default();
    // Keyset paging on the primary key: every row is visited once, however many batches.
    let mut after = Uuid::nil();
    loop {
        let transaction = client.transaction().await?;
        let rows = transaction
            .query(
                "SELECT scenario_id, workspace_id, ciphertext FROM webhook_signatures
                 WHERE scenario_id > $1 ORDER BY scenario_id LIMIT $2 FOR UPDATE",
                &[&after, &batch_size],
            )
            .await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.try_get("scenario_id")?;
        for row in &rows {
            let ciphertext: &str = row.try_get("ciphertext")?;
            if !keys.is_stale(ciphertext) {
                continue;
            }
            let scenario_id: Uuid = row.try_get("scenario_id")?;
            let aad = webhook_signature_aad(row.try_get("workspace_id")?, scenario_id);
            match keys.decrypt(ciphertext, &aad) {
                Ok(secret) => {
                    transaction
                        .execute(
                            "UPDATE webhook_signatures SET ciphertext = $2, updated_at = now()
                             WHERE scenario_id = $1",
                            &[&scenario_id, &keys.encrypt(&secret, &aad)],
                        )
                        .await?;
                    rotated.re_encrypted += 1;
                }
                Err(e) => {
                    tracing::warn!(%scenario_id, error = %e, "a webhook signature secret does not decrypt; left as it is");
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
        let (workspace, scenario) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(
            webhook_signature_aad(workspace, scenario),
            "00000000-0000-0000-0000-000000000001/00000000-0000-0000-0000-000000000002/webhook-signature"
        );
        assert_ne!(
            webhook_signature_aad(workspace, scenario),
            webhook_signature_aad(scenario, workspace)
        );
    }
}
