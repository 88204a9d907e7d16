//! Bearer secrets Weft issues: API keys, session tokens, invitation and reset links.
//!
//! Each is 256 random bits, so a plain SHA-256 of it is a safe thing to store and look it
//! up by (slow password hashes are for low-entropy secrets). The secret itself is handed
//! out once.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// What a secret is for, written at its start so that a leaked one is easy to recognise
/// (secret scanners match on `weft_`).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    ApiKey,
    Session,
    Invitation,
    PasswordReset,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Self::ApiKey => "weft_",
            Self::Session => "weft_s_",
            Self::Invitation => "weft_i_",
            Self::PasswordReset => "weft_r_",
        }
    }
}

/// A fresh secret: its kind's prefix and base64url of 32 random bytes.
pub fn generate(kind: Kind) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(bytes))
}

/// What is stored for a secret, and what a presented one is looked up by.
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// The first characters of an API key, shown in lists to tell keys apart; 8 random
/// characters (48 bits) are far from enough to use it.
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(13).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hashed_with_sha256() {
        let key = generate(Kind::ApiKey);
        assert!(key.starts_with("weft_"));
        assert_eq!(key.len(), 5 + 43, "32 bytes in unpadded base64url");
        assert_ne!(key, generate(Kind::ApiKey));
        assert!(generate(Kind::Session).starts_with("weft_s_"));
        assert_eq!(digest(&key).len(), 32);
        assert_eq!(
            hex::encode(digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(display_prefix(&key).len(), 13);
        assert!(key.starts_with(&display_prefix(&key)));
    }
}
