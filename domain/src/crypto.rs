//! The master key ring and authenticated encryption of secrets (architecture §6):
//! XChaCha20-Poly1305 with a random 24-byte nonce; the ciphertext names its key, and the
//! associated data binds it to the row it belongs to.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const FORMAT: &str = "v1";
const NONCE_LEN: usize = 24;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Names the key by its place in the list: what stands before its `:` is not shown,
    /// as key material pasted in the wrong order would be.
    #[error(
        "key {position} of the list (counting from 1) is malformed: expected `key_id:base64(32 bytes)`"
    )]
    MalformedKey { position: usize },
    #[error("no keys given: expected `key_id:base64(32 bytes)`, comma-separated, newest first")]
    NoKeys,
    #[error("key id `{0}` appears twice")]
    DuplicateKey(String),
    #[error("ciphertext was made with key `{0}`, which is not in the key ring")]
    UnknownKey(String),
    #[error("ciphertext is malformed")]
    Malformed,
    #[error("ciphertext does not decrypt: wrong key, or it was moved from another row")]
    Decrypt,
}

/// The configured keys, newest first. New secrets use the newest.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(String, XChaCha20Poly1305)>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

impl FromStr for KeyRing {
    type Err = CryptoError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut keys: Vec<(String, XChaCha20Poly1305)> = Vec::new();
        let entries = text.split(',').map(str::trim).filter(|e| !e.is_empty());
        for (index, entry) in entries.enumerate() {
            let malformed = CryptoError::MalformedKey {
                position: index + 1,
            };
            let (id, encoded) = entry.split_once(':').ok_or(malformed.clone())?;
            let bytes = STANDARD.decode(encoded).map_err(|_| malformed.clone())?;
            let valid_id = !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if bytes.len() != 32 || !valid_id {
                return Err(malformed);
            }
            if keys.iter().any(|(known, _)| known == id) {
                return Err(CryptoError::DuplicateKey(id.to_owned()));
            }
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| malformed)?;
            keys.push((id.to_owned(), cipher));
        }
        if keys.is_empty() {
            return Err(CryptoError::NoKeys);
        }
        Ok(Self { keys })
    }
}

impl KeyRing {
    /// Encrypts under the newest key; `aad` names the row (workspace, object id, purpose).
    pub fn encrypt(&self, plaintext: &[u8], aad: &str) -> String {
        let (id, cipher) = &self.keys[0];
        let nonce = XNonce::generate();
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        format!("{FORMAT}.{id}.{}", STANDARD.encode(blob))
    }

    pub fn decrypt(&self, ciphertext: &str, aad: &str) -> Result<Vec<u8>, CryptoError> {
        let mut parts = ciphertext.splitn(3, '.');
        let (Some(FORMAT), Some(id), Some(encoded)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CryptoError::Malformed);
        };
        let cipher = self
            .keys
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, cipher)| cipher)
            .ok_or_else(|| CryptoError::UnknownKey(id.to_owned()))?;
        let blob = STANDARD
            .decode(encoded)
            .map_err(|_| CryptoError::Malformed)?;
        if blob.len() < NONCE_LEN {
            return Err(CryptoError::Malformed);
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| CryptoError::Malformed)?;
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt)
    }

    /// Whether a ciphertext was made with an older key and should be re-encrypted.
    pub fn is_stale(&self, ciphertext: &str) -> bool {
        ciphertext.split('.').nth(1) != Some(self.keys[0].0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "old:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const NEW: &str = "new:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    #[test]
    fn round_trip_binds_the_row_and_names_the_key() {
        let ring: KeyRing = NEW.parse().expect("valid");
        let sealed = ring.encrypt(b"s3cret", "ws1/conn1");
        assert!(sealed.starts_with("v1.new."));
        assert!(!sealed.contains("s3cret"));
        assert_eq!(ring.decrypt(&sealed, "ws1/conn1"), Ok(b"s3cret".to_vec()));
        assert_eq!(
            ring.decrypt(&sealed, "ws2/conn1"),
            Err(CryptoError::Decrypt)
        );
    }

    #[test]
    fn rotation_keeps_old_ciphertexts_readable() {
        let old_ring: KeyRing = OLD.parse().expect("valid");
        let sealed = old_ring.encrypt(b"x", "row");
        let rotated: KeyRing = format!("{NEW},{OLD}").parse().expect("valid");
        assert_eq!(rotated.decrypt(&sealed, "row"), Ok(b"x".to_vec()));
        assert!(rotated.is_stale(&sealed));
        assert!(!rotated.is_stale(&rotated.encrypt(b"x", "row")));
        let new_only: KeyRing = NEW.parse().expect("valid");
        assert_eq!(
            new_only.decrypt(&sealed, "row"),
            Err(CryptoError::UnknownKey("old".into()))
        );
    }

    #[test]
    fn malformed_rings_are_refused_without_echoing_key_material() {
        assert_eq!("".parse::<KeyRing>().err(), Some(CryptoError::NoKeys));
        let err = format!("{NEW},k2:c2hvcnQ=")
            .parse::<KeyRing>()
            .expect_err("short key");
        assert_eq!(
            err.to_string(),
            "key 2 of the list (counting from 1) is malformed: expected `key_id:base64(32 bytes)`"
        );
        let swapped = "0123456789abcdef0123456789abcdef:k1"
            .parse::<KeyRing>()
            .expect_err("material before the id");
        assert!(!swapped.to_string().contains("0123"), "{swapped}");
        assert!(format!("{OLD},{OLD}").parse::<KeyRing>().is_err());
    }
}
