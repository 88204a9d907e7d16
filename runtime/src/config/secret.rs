//! Settings that hold a secret (master keys, the admin token, the database and broker
//! URLs with their passwords): one path reads them from `VAR` or from the file `VAR_FILE`
//! names (Kubernetes and Docker secrets), parses them, and words a refusal without the
//! value. Clap's own errors quote the invalid value, so these settings reach clap as
//! plain text and are parsed here, after it.

use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};

use weft_domain::crypto::KeyRing;

use crate::tls::{DatabaseUrl, split_ssl_mode};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{variable} and {variable}_FILE are both set: set only one of them")]
    BothGiven { variable: &'static str },
    #[error("{variable}_FILE: cannot read `{}`: {source}", path.display())]
    Unreadable {
        variable: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("invalid {variable}{}: {reason}", read_from(variable, file.as_deref()))]
    Invalid {
        variable: &'static str,
        /// The file the value was read from, if it was.
        file: Option<PathBuf>,
        /// Why; never the value, nor any part of it that is secret.
        reason: String,
    },
}

fn read_from(variable: &str, file: Option<&Path>) -> String {
    file.map(|path| format!(" (read from {variable}_FILE `{}`)", path.display()))
        .unwrap_or_default()
}

/// A secret setting as clap gave it: the variable's value (or its flag's), and the path
/// in `<variable>_FILE`.
pub struct Given {
    pub variable: &'static str,
    pub value: Option<String>,
    pub file: Option<PathBuf>,
}

impl Given {
    /// Reads the setting and parses it with `parse`, whose error says what is wrong with
    /// the text and must not quote it (the parsers below mask what other parsers' messages
    /// quote); `None` when neither the variable nor its file is set.
    pub fn parse<T>(
        self,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, SecretError> {
        let variable = self.variable;
        let (text, file) = match (self.value, self.file) {
            (Some(_), Some(_)) => return Err(SecretError::BothGiven { variable }),
            (None, None) => return Ok(None),
            (Some(value), None) => (SecretString::from(value), None),
            (None, Some(path)) => (read_secret_file(variable, &path)?, Some(path)),
        };
        parse(text.expose_secret())
            .map(Some)
            .map_err(|reason| SecretError::Invalid {
                variable,
                file,
                reason,
            })
    }
}

/// The file's content without its trailing line break, which editors and `echo` add.
fn read_secret_file(variable: &'static str, path: &Path) -> Result<SecretString, SecretError> {
    let mut content = std::fs::read_to_string(path).map_err(|source| SecretError::Unreadable {
        variable,
        path: path.to_owned(),
        source,
    })?;
    let kept = content.trim_end_matches(['\n', '\r']).len();
    content.truncate(kept);
    Ok(SecretString::from(content))
}

/// An AMQP URL; the message of a refusal shows it with its password masked.
pub fn parse_amqp_url(text: &str) -> Result<SecretString, String> {
    lapin::uri::AMQPUri::from_str(text)
        .map(|_| SecretString::from(text))
        .map_err(|e| {
            format!(
                "{} is not an AMQP URL like amqp://user:password@host:5672/%2f: {}",
                shown_url(text, &["amqp", "amqps"]),
                masked(&e, text)
            )
        })
}

/// A PostgreSQL URL (`postgres://…`), or the `key=value` connection string libpq also
/// accepts, with its `sslmode`; the message of a refusal shows a URL with its password
/// masked.
pub fn parse_database_url(text: &str) -> Result<DatabaseUrl, String> {
    // The mode's refusal quotes the mode only.
    let (rest, ssl_mode) = split_ssl_mode(text).map_err(|e| e.to_string())?;
    let config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
        let shown = shown_url(text, &["postgres", "postgresql"]);
        let expected = "is not a PostgreSQL URL like postgres://user:password@host:5432/db";
        // The URL parser's causes name options, never values; the key=value parser's
        // may quote a character of a value, so only the URL form's cause is shown.
        let url_form = text.starts_with("postgres://") || text.starts_with("postgresql://");
        match std::error::Error::source(&e) {
            Some(cause) if url_form => format!("{shown} {expected}: {e}: {}", masked(cause, text)),
            _ => format!("{shown} {expected}: {e}"),
        }
    })?;
    Ok(DatabaseUrl::new(config, ssl_mode))
}

/// For tests and tools that hold a URL as text; the refusal is [`parse_database_url`]'s.
impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_database_url(text)
    }
}

/// What the operator is shown of a URL: the URL itself with its secret parts replaced by
/// `***` (see [`secret_query_key`]), when it parses as a URL with one of `schemes` and a
/// host; otherwise words that stand for it, since where its password is is not known.
fn shown_url(text: &str, schemes: &[&str]) -> String {
    let hidden = "the value (not shown: it may hold a password)".to_owned();
    let Ok(mut url) = url::Url::parse(text) else {
        return hidden;
    };
    if !schemes.contains(&url.scheme()) || !url.has_host() {
        return hidden;
    }
    if url.password().is_some() && url.set_password(Some("***")).is_err() {
        return hidden;
    }
    if url.query_pairs().any(|(key, _)| secret_query_key(&key)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if secret_query_key(&key) {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// A query parameter that may carry a secret (PostgreSQL accepts `password=`).
fn secret_query_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "secret", "token", "key"]
        .iter()
        .any(|word| key.contains(word))
}

/// Another parser's message with whatever it may quote of the text masked: all of it,
/// and the secret parts of a URL (its password, raw and percent-decoded, and the values
/// of [`secret_query_key`] parameters).
pub(crate) fn masked(message: &dyn std::fmt::Display, text: &str) -> String {
    let mut secrets = vec![text.to_owned()];
    if let Ok(url) = url::Url::parse(text) {
        if let Some(password) = url.password() {
            secrets.push(password.to_owned());
            secrets.push(
                percent_encoding::percent_decode_str(password)
                    .decode_utf8_lossy()
                    .into_owned(),
            );
        }
        for (key, value) in url.query_pairs() {
            if secret_query_key(&key) {
                secrets.push(value.into_owned());
            }
        }
        for pair in url.query().unwrap_or_default().split('&') {
            if let Some((key, raw)) = pair.split_once('=')
                && secret_query_key(key)
            {
                secrets.push(raw.to_owned());
            }
        }
    }
    // Longest first, so a password inside the whole text does not split its mask.
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    let mut message = message.to_string();
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        message = message.replace(secret.as_str(), "***");
    }
    message
}

/// A key ring refused for its shape; key material is never quoted.
pub fn parse_master_keys(text: &str) -> Result<KeyRing, String> {
    text.parse()
        .map_err(|e: weft_domain::crypto::CryptoError| e.to_string())
}

/// Shortest admin token accepted: a guessable token opens every workspace.
const ADMIN_TOKEN_MIN_LEN: usize = 16;

/// A bearer token: visible ASCII (it travels in an `Authorization` header) and long
/// enough not to be guessed.
pub fn parse_admin_token(text: &str) -> Result<SecretString, String> {
    if !text.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(
            "holds characters other than visible ASCII (a space, a line break, …): it travels in an Authorization header"
                .to_owned(),
        );
    }
    if text.len() < ADMIN_TOKEN_MIN_LEN {
        return Err(format!(
            "shorter than {ADMIN_TOKEN_MIN_LEN} characters; make one with `openssl rand -hex 32`"
        ));
    }
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &str = "Zq7mK2xW9pLr";

    fn given(value: Option<&str>, file: Option<&Path>) -> Given {
        Given {
            variable: "WEFT_PROBE_SECRET",
            value: value.map(str::to_owned),
            file: file.map(Path::to_owned),
        }
    }

    fn temp_file(name: &str, content: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "weft-secret-{}-{name}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, content).expect("temp file written");
        path
    }

    fn accept(text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }

    #[test]
    fn the_value_comes_from_the_variable_or_from_the_file_without_its_line_break() {
        assert_eq!(given(None, None).parse(accept).expect("unset"), None);
        assert_eq!(
            given(Some("direct"), None).parse(accept).expect("set"),
            Some("direct".to_owned())
        );
        let path = temp_file("value", "from a file \r\n");
        assert_eq!(
            given(None, Some(&path)).parse(accept).expect("read"),
            Some("from a file ".to_owned()),
            "the trailing line break goes, other spaces stay"
        );
        std::fs::remove_file(path).expect("removed");
    }

    #[test]
    fn both_sources_or_an_unreadable_file_are_refused_naming_the_variables() {
        let path = temp_file("both", MARKER);
        let both = given(Some(MARKER), Some(&path))
            .parse(accept)
            .expect_err("both set")
            .to_string();
        assert_eq!(
            both,
            "WEFT_PROBE_SECRET and WEFT_PROBE_SECRET_FILE are both set: set only one of them"
        );
        std::fs::remove_file(&path).expect("removed");
        let missing = given(None, Some(&path))
            .parse(accept)
            .expect_err("no file")
            .to_string();
        assert!(
            missing.starts_with(&format!(
                "WEFT_PROBE_SECRET_FILE: cannot read `{}`: ",
                path.display()
            )),
            "{missing}"
        );
    }

    #[test]
    fn a_refusal_names_the_variable_and_the_file() {
        let refusing = |_: &str| -> Result<(), String> { Err("wrong".to_owned()) };
        let error = given(Some(MARKER), None)
            .parse(refusing)
            .expect_err("refused");
        assert_eq!(error.to_string(), "invalid WEFT_PROBE_SECRET: wrong");
        let path = temp_file("invalid", &format!("{MARKER}\n"));
        let message = given(None, Some(&path))
            .parse(refusing)
            .expect_err("refused")
            .to_string();
        assert_eq!(
            message,
            format!(
                "invalid WEFT_PROBE_SECRET (read from WEFT_PROBE_SECRET_FILE `{}`): wrong",
                path.display()
            )
        );
        std::fs::remove_file(path).expect("removed");
    }

    #[test]
    fn what_another_parser_quotes_of_a_url_is_masked() {
        let url = format!("amqp://weft:{MARKER}%21@broker:5672/%2f?password={MARKER}2");
        let quoting = format!("{url} has password {MARKER}! and {MARKER}2 and {MARKER}%21");
        let message = masked(&quoting, &url);
        assert_eq!(message, "*** has password *** and *** and ***");
    }

    #[test]
    fn urls_are_shown_with_their_secrets_masked() {
        let postgres = ["postgres"];
        assert_eq!(
            shown_url(
                &format!("postgres://weft:{MARKER}@db:5432/weft?password={MARKER}&sslmode=require"),
                &postgres
            ),
            "postgres://weft:***@db:5432/weft?password=***&sslmode=require"
        );
        assert_eq!(
            shown_url("amqp://guest@broker/%2f", &["amqp"]),
            "amqp://guest@broker/%2f"
        );
        let hidden = "the value (not shown: it may hold a password)";
        for unclear in [
            format!("host=db password={MARKER}"),
            format!("weft:{MARKER}@db:5432"),
            format!("postgres:weft:{MARKER}@db"),
            format!("http://weft:{MARKER}@db:5432"),
        ] {
            assert_eq!(shown_url(&unclear, &postgres), hidden, "{unclear}");
        }
    }

    #[test]
    fn urls_are_checked_at_start() {
        assert!(parse_amqp_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert!(parse_amqp_url("http://nope").is_err());
        assert!(parse_database_url("postgres://postgres@127.0.0.1/weft").is_ok());
        assert!(parse_database_url("host=127.0.0.1 user=postgres dbname=weft").is_ok());
        assert!(parse_database_url("postgres://host:notaport/db").is_err());
        let url = parse_database_url(&format!(
            "postgres://weft:{MARKER}@db/weft?sslmode=verify-full&connect_timeout=5"
        ))
        .expect("verify-full is taken out before tokio-postgres parses the rest");
        assert_eq!(url.ssl_mode(), crate::tls::SslMode::VerifyFull);
        assert_eq!(url.config().get_password(), Some(MARKER.as_bytes()));
        let refused =
            parse_database_url(&format!("postgres://weft:{MARKER}@db/weft?sslmode=allow"))
                .expect_err("unknown mode");
        assert_eq!(
            refused,
            "sslmode `allow` is not one of disable, prefer, require, verify-ca, verify-full"
        );
    }

    #[test]
    fn admin_tokens_are_long_visible_ascii() {
        assert!(parse_admin_token("0123456789abcdef").is_ok());
        for bad in ["REPLACE-ME", "0123456789 abcdef", "0123456789abcdéf", ""] {
            assert!(parse_admin_token(bad).is_err(), "{bad:?}");
        }
    }
}
