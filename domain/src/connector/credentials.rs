//! A connection's credential fields, opened inside a worker for one request, and the
//! cutting of their values out of anything an upstream echoes back.

use std::collections::BTreeMap;
use std::fmt;

use crate::ids::{ConnectionId, WorkspaceId};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use super::request::permanent;
use crate::crypto::{CryptoError, KeyRing};
use crate::messages::{NodeError, connection_aad};
use crate::oauth::TokenSet;

/// A connection's credential fields, opened inside a worker for one request (or inside the
/// gateway to add OAuth tokens), zeroized when dropped. Stored sealed as a JSON object of
/// strings; `expires_at` is RFC 3339.
#[derive(Clone, Default)]
pub struct Credentials {
    fields: BTreeMap<String, SecretString>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("credentials do not decrypt with the key ring: {0}")]
    Crypto(#[from] CryptoError),
    #[error("credentials are not a JSON object of text fields")]
    Malformed,
}

/// One credential field as stored: text, or a number written as text.
struct Field(SecretString);

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field(SecretString::from(v)))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Field, E> {
                Ok(Field(SecretString::from(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Field, E> {
                Ok(Field(SecretString::from(v.to_string())))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Field, E> {
                Ok(Field(SecretString::from(v.to_string())))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Fields that are not secret and are never redacted from outputs.
const PUBLIC_FIELDS: [&str; 3] = ["client_id", "username", "expires_at"];
/// Shorter values are not worth redacting: they would mangle unrelated text.
const MIN_REDACTED_LEN: usize = 4;

impl Credentials {
    /// Parses the plaintext JSON object of credential fields.
    pub fn parse(plaintext: &[u8]) -> Result<Self, CredentialsError> {
        let fields: BTreeMap<String, Field> =
            serde_json::from_slice(plaintext).map_err(|_| CredentialsError::Malformed)?;
        Ok(Self {
            fields: fields.into_iter().map(|(k, Field(v))| (k, v)).collect(),
        })
    }

    /// Opens a connection's sealed credentials; the AAD binds them to the connection.
    pub fn open(
        ring: &KeyRing,
        sealed: &str,
        workspace_id: WorkspaceId,
        connection_id: ConnectionId,
    ) -> Result<Self, CredentialsError> {
        let plaintext =
            Zeroizing::new(ring.decrypt(sealed, &connection_aad(workspace_id, connection_id))?);
        Self::parse(&plaintext)
    }

    /// Seals the credentials for one connection under the newest key.
    pub fn seal(
        &self,
        ring: &KeyRing,
        workspace_id: WorkspaceId,
        connection_id: ConnectionId,
    ) -> String {
        let exposed: BTreeMap<&str, &str> = self
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        let size: usize = exposed.iter().map(|(k, v)| k.len() + v.len() * 6 + 8).sum();
        let mut plaintext = Zeroizing::new(Vec::with_capacity(size + 2));
        serde_json::to_writer(&mut *plaintext, &exposed)
            .expect("a map of strings serializes infallibly");
        ring.encrypt(&plaintext, &connection_aad(workspace_id, connection_id))
    }

    pub fn get(&self, field: &str) -> Option<&SecretString> {
        self.fields.get(field)
    }

    pub fn set(&mut self, field: &str, value: SecretString) {
        self.fields.insert(field.to_owned(), value);
    }

    pub fn remove(&mut self, field: &str) {
        self.fields.remove(field);
    }

    /// When the OAuth access token expires, if that is known.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        let text = self.get("expires_at")?.expose_secret();
        if let Ok(at) = DateTime::parse_from_rfc3339(text) {
            return Some(at.with_timezone(&Utc));
        }
        DateTime::from_timestamp(text.parse().ok()?, 0)
    }

    /// Stores freshly obtained OAuth tokens. A provider that does not rotate refresh
    /// tokens answers without one: the one held stays.
    pub fn set_tokens(&mut self, tokens: &TokenSet) {
        self.set("access_token", tokens.access_token.clone());
        if let Some(refresh) = &tokens.refresh_token {
            self.set("refresh_token", refresh.clone());
        }
        match tokens.expires_at {
            Some(at) => self.set("expires_at", SecretString::from(at.to_rfc3339())),
            None => self.remove("expires_at"),
        }
    }

    /// The secret values, and the forms a request carries them in, so they can be cut
    /// out of anything an upstream echoes back.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = self
            .fields
            .iter()
            .filter(|(name, _)| !PUBLIC_FIELDS.contains(&name.as_str()))
            .map(|(_, value)| value.expose_secret().to_owned())
            .collect();
        if let (Some(user), Some(password)) = (self.get("username"), self.get("password")) {
            secrets.push(basic(user, password));
        }
        secrets.retain(|secret| secret.len() >= MIN_REDACTED_LEN);
        // Longest first, so a secret containing another is cut whole.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets
    }

    pub(super) fn require(&self, field: &str) -> Result<&str, NodeError> {
        self.get(field)
            .map(ExposeSecret::expose_secret)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| {
                permanent(format!(
                    "the connection's credentials have no `{field}`: update the connection"
                ))
            })
    }
}

fn basic(user: &SecretString, password: &SecretString) -> String {
    STANDARD.encode(format!(
        "{}:{}",
        user.expose_secret(),
        password.expose_secret()
    ))
}

/// Replaces every occurrence of the secrets in the strings of `value` (keys included).
pub fn redact(value: &mut Value, secrets: &[String]) {
    if secrets.is_empty() {
        return;
    }
    match value {
        Value::String(text) => {
            if let Some(clean) = redact_text(text, secrets) {
                *text = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| redact(item, secrets)),
        Value::Object(fields) => {
            let taken = std::mem::take(fields);
            *fields = taken
                .into_iter()
                .map(|(key, mut item)| {
                    redact(&mut item, secrets);
                    (redact_text(&key, secrets).unwrap_or(key), item)
                })
                .collect();
        }
        _ => {}
    }
}

/// The text with the secrets replaced, or `None` when it holds none.
pub fn redact_text(text: &str, secrets: &[String]) -> Option<String> {
    if !secrets.iter().any(|secret| text.contains(secret.as_str())) {
        return None;
    }
    let mut clean = text.to_owned();
    for secret in secrets {
        clean = clean.replace(secret.as_str(), "[redacted]");
    }
    Some(clean)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::connector::fixtures::*;
    #[test]
    fn credentials_seal_open_and_stay_bound_to_their_connection() {
        let ring: KeyRing = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
            .parse()
            .expect("ring");
        let (workspace, connection) = (WorkspaceId::generate(), ConnectionId::generate());
        let mut creds = credentials(json!({"client_id": "c", "client_secret": "s3cret-value"}));
        let at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
            .expect("date")
            .with_timezone(&Utc);
        creds.set_tokens(&TokenSet {
            access_token: SecretString::from("at-xyz1"),
            refresh_token: None,
            expires_at: Some(at),
        });
        let sealed = creds.seal(&ring, workspace, connection);
        assert!(!sealed.contains("s3cret"));
        let opened = Credentials::open(&ring, &sealed, workspace, connection).expect("opens");
        assert_eq!(
            opened.get("access_token").map(ExposeSecret::expose_secret),
            Some("at-xyz1")
        );
        assert_eq!(opened.expires_at(), Some(at));
        assert_eq!(
            Credentials::open(&ring, &sealed, workspace, ConnectionId::generate()).err(),
            Some(CredentialsError::Crypto(CryptoError::Decrypt))
        );
        assert!(!format!("{opened:?}").contains("s3cret"));
        assert_eq!(
            credentials(json!({"expires_at": 1_900_000_000})).expires_at(),
            DateTime::from_timestamp(1_900_000_000, 0)
        );
        assert_eq!(
            Credentials::parse(b"[1]").err(),
            Some(CredentialsError::Malformed)
        );
    }

    #[test]
    fn secrets_are_cut_out_of_echoed_values() {
        let creds =
            credentials(json!({"username": "ada", "password": "hunter22", "api_key": "abc"}));
        let secrets = creds.secrets();
        assert!(secrets.contains(&"hunter22".to_owned()));
        assert!(secrets.contains(&STANDARD.encode("ada:hunter22")));
        assert!(
            !secrets.iter().any(|s| s == "ada" || s == "abc"),
            "public and too-short values stay"
        );
        let mut echoed =
            json!({"auth": "Basic YWRhOmh1bnRlcjIy", "list": ["pw=hunter22"], "hunter22": 1});
        redact(&mut echoed, &secrets);
        assert_eq!(
            echoed,
            json!({"auth": "Basic [redacted]", "list": ["pw=[redacted]"], "[redacted]": 1})
        );
    }
}
