//! Passwords, hashed with Argon2id.
//!
//! Parameters are OWASP's first recommendation for Argon2id: 19 MiB of memory, 2
//! iterations, 1 lane (about 25 ms on one core of the machines we measure on). They are
//! written into each PHC string, so raising them later still verifies older hashes.
//! Hashing runs on the blocking pool: it is CPU-bound by design.

use std::sync::LazyLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

/// Shortest and longest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_CHARS: usize = 256;

const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const LANES: u32 = 1;

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None)
        .expect("the Argon2 parameters are within the algorithm's bounds");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Verified against when there is no user (or no password) to verify against, so that an
/// unknown email takes as long to refuse as a wrong password.
static DECOY: LazyLock<String> =
    LazyLock::new(|| hash_now("a password nobody has").expect("hashing a fixed password succeeds"));

/// Why a password cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("`password` must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")]
    Length,
    #[error("hashing the password failed: {0}")]
    Hash(argon2::password_hash::Error),
}

/// Checks the length of a new password.
pub fn acceptable(password: &SecretString) -> Result<(), PasswordError> {
    let length = password.expose_secret().chars().count();
    if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&length) {
        Ok(())
    } else {
        Err(PasswordError::Length)
    }
}

fn hash_now(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(PasswordError::Hash)
}

/// The PHC string to store for a new password (its length checked first).
pub async fn hash(password: SecretString) -> Result<String, PasswordError> {
    acceptable(&password)?;
    tokio::task::spawn_blocking(move || hash_now(password.expose_secret()))
        .await
        .expect("password hashing does not panic")
}

/// Whether `password` matches `stored`; with no stored hash, a decoy is verified so the
/// answer takes the same time.
pub async fn verify(password: SecretString, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| DECOY.clone());
        let matches = PasswordHash::new(&stored).is_ok_and(|hash| {
            hasher()
                .verify_password(password.expose_secret().as_bytes(), &hash)
                .is_ok()
        });
        known && matches
    })
    .await
    .expect("password verification does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let stored = hash(secret("correct horse battery")).await.expect("hashes");
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(verify(secret("correct horse battery"), Some(stored.clone())).await);
        assert!(!verify(secret("correct horse batterz"), Some(stored.clone())).await);
        let again = hash(secret("correct horse battery")).await.expect("hashes");
        assert_ne!(stored, again, "each hash has its own salt");
    }

    #[tokio::test]
    async fn without_a_stored_hash_nothing_verifies_not_even_the_decoys_password() {
        assert!(!verify(secret("a password nobody has"), None).await);
        assert!(!verify(secret("anything"), Some("not a PHC string".to_owned())).await);
    }

    #[test]
    fn passwords_have_a_length_range() {
        assert!(acceptable(&secret("short")).is_err());
        assert!(acceptable(&secret(&"x".repeat(MIN_PASSWORD_CHARS))).is_ok());
        assert!(acceptable(&secret(&"x".repeat(MAX_PASSWORD_CHARS + 1))).is_err());
    }
}
