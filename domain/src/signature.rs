//! Webhook signatures (architecture §5): the schemes a webhook trigger can require, and the
//! verification of one delivery. Pure: the headers, the raw body bytes, the secret and the
//! current time go in, a verdict comes out. Whatever a sender puts in a request, nothing
//! here panics.
//!
//! Each provider's scheme follows its published specification:
//! - `github`: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the body.
//! - `stripe`: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 of
//!   `{t}.{body}`. Any `v1` may match: while a secret is being rolled Stripe signs with
//!   both. Other elements (`v0`, test-mode schemes) are ignored, as Stripe asks.
//! - `slack`: `X-Slack-Signature: v0=<hex>`, HMAC-SHA256 of
//!   `v0:{X-Slack-Request-Timestamp}:{body}`.
//! - `hmac-sha256`: HMAC-SHA256 of the body, in a header of the user's choice, hex or
//!   base64, after an optional prefix; for the many services that sign this way.
//!
//! Stripe and Slack sign a timestamp: a delivery signed more than [`TOLERANCE_SECS`] away
//! from now is refused, so a captured request cannot be replayed later. Every comparison
//! of a signature is constant-time (`verify_slice`).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a signed timestamp may be from now, either way (Stripe's and Slack's 5 minutes).
pub const TOLERANCE_SECS: u64 = 300;

const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
const GITHUB_DELIVERY: &str = "x-github-delivery";
const STRIPE_SIGNATURE: &str = "stripe-signature";
const SLACK_SIGNATURE: &str = "x-slack-signature";
const SLACK_TIMESTAMP: &str = "x-slack-request-timestamp";

/// The scheme names, as a definition spells them.
pub const SCHEME_NAMES: [&str; 4] = ["hmac-sha256", "github", "stripe", "slack"];

/// A signature scheme and its options. Serialized as the definition spells it:
/// `{"scheme": "github"}`, `{"scheme": "hmac-sha256", "header": "…", "encoding": "hex",
/// "prefix": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case")]
pub enum Scheme {
    HmacSha256(Generic),
    Github,
    Stripe,
    Slack,
}

/// The options of the generic `hmac-sha256` scheme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generic {
    /// The header carrying the signature, lower-case.
    pub header: String,
    pub encoding: Encoding,
    /// Text before the signature in the header (e.g. `sha256=`); empty for none.
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

/// Why a delivery's signature was refused. For logs only: the sender is told nothing
/// about which part failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the `{0}` header is missing")]
    MissingHeader(String),
    #[error("the `{0}` header is malformed")]
    Malformed(String),
    #[error("the signed timestamp is more than {TOLERANCE_SECS} seconds from now")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// A signing secret as the user gave it. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl SigningSecret {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

/// Why a scheme's options are invalid: the option's name and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionProblem {
    pub option: &'static str,
    pub message: String,
}

/// The options of a scheme as a definition gives them, before validation.
#[derive(Debug, Clone, Default)]
pub struct SchemeOptions<'a> {
    pub header: Option<&'a str>,
    pub encoding: Option<&'a str>,
    pub prefix: Option<&'a str>,
}

impl Scheme {
    /// Builds a scheme from its name and options, or lists every problem with them.
    pub fn new(name: &str, options: SchemeOptions<'_>) -> Result<Self, Vec<OptionProblem>> {
        let mut problems = Vec::new();
        let mut problem = |option: &'static str, message: String| {
            problems.push(OptionProblem { option, message });
        };
        let fixed = match name {
            "github" => Some(Self::Github),
            "stripe" => Some(Self::Stripe),
            "slack" => Some(Self::Slack),
            "hmac-sha256" => None,
            other => {
                problem(
                    "scheme",
                    format!(
                        "unknown scheme `{other}` (expected {})",
                        SCHEME_NAMES.join(", ")
                    ),
                );
                return Err(problems);
            }
        };
        if let Some(scheme) = fixed {
            // The provider schemes have their headers and encodings fixed by the provider.
            for (option, given) in [
                ("header", options.header.is_some()),
                ("encoding", options.encoding.is_some()),
                ("prefix", options.prefix.is_some()),
            ] {
                if given {
                    problem(
                        option,
                        format!("only for the hmac-sha256 scheme: {name} fixes its own"),
                    );
                }
            }
            return if problems.is_empty() {
                Ok(scheme)
            } else {
                Err(problems)
            };
        }

        let header = match options.header {
            None => {
                problem(
                    "header",
                    "required for hmac-sha256: the header that carries the signature".into(),
                );
                None
            }
            Some(text) => match HeaderName::from_bytes(text.as_bytes()) {
                Ok(name) => Some(name.as_str().to_owned()),
                Err(_) => {
                    problem("header", format!("`{text}` is not a valid header name"));
                    None
                }
            },
        };
        let encoding = match options.encoding {
            None | Some("hex") => Encoding::Hex,
            Some("base64") => Encoding::Base64,
            Some(other) => {
                problem(
                    "encoding",
                    format!("unknown encoding `{other}` (expected hex or base64)"),
                );
                Encoding::Hex
            }
        };
        let prefix = options.prefix.unwrap_or_default();
        if prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            problem(
                "prefix",
                "must be at most 64 printable ASCII characters".into(),
            );
        }
        match header {
            Some(header) if problems.is_empty() => Ok(Self::HmacSha256(Generic {
                header,
                encoding,
                prefix: prefix.to_owned(),
            })),
            _ => Err(problems),
        }
    }

    /// The scheme's name, as a definition spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::HmacSha256(_) => "hmac-sha256",
            Self::Github => "github",
            Self::Stripe => "stripe",
            Self::Slack => "slack",
        }
    }

    /// Verifies a delivery signed with `secret`; `now` is the current Unix time in
    /// seconds. `body` must be the raw bytes as received.
    pub fn verify(
        &self,
        secret: &[u8],
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        match self {
            Self::Github => {
                let value = header(headers, GITHUB_SIGNATURE)?;
                let signature = value
                    .strip_prefix("sha256=")
                    .and_then(|hex| hex::decode(hex).ok())
                    .ok_or_else(|| malformed(GITHUB_SIGNATURE))?;
                verify_one(&mac(secret, &[body]), &signature)
            }
            Self::Stripe => {
                let value = header(headers, STRIPE_SIGNATURE)?;
                let (timestamp, candidates) = parse_stripe(value)?;
                let expected = mac(secret, &[timestamp.as_bytes(), b".", body]);
                // Every candidate is checked (no early exit), each in constant time.
                let matched = candidates.iter().fold(false, |found, candidate| {
                    verify_one(&expected, candidate).is_ok() | found
                });
                if !matched {
                    return Err(SignatureError::Mismatch);
                }
                fresh(unix_seconds(timestamp, STRIPE_SIGNATURE)?, now)
            }
            Self::Slack => {
                let timestamp = header(headers, SLACK_TIMESTAMP)?;
                let seconds = unix_seconds(timestamp, SLACK_TIMESTAMP)?;
                let signature = header(headers, SLACK_SIGNATURE)?
                    .strip_prefix("v0=")
                    .and_then(|hex| hex::decode(hex).ok())
                    .ok_or_else(|| malformed(SLACK_SIGNATURE))?;
                let expected = mac(secret, &[b"v0:", timestamp.as_bytes(), b":", body]);
                verify_one(&expected, &signature)?;
                fresh(seconds, now)
            }
            Self::HmacSha256(generic) => {
                let value = header(headers, &generic.header)?;
                let encoded = value
                    .strip_prefix(generic.prefix.as_str())
                    .ok_or_else(|| malformed(&generic.header))?;
                let signature = match generic.encoding {
                    Encoding::Hex => hex::decode(encoded).ok(),
                    Encoding::Base64 => STANDARD.decode(encoded).ok(),
                }
                .ok_or_else(|| malformed(&generic.header))?;
                verify_one(&mac(secret, &[body]), &signature)
            }
        }
    }

    /// The id the sender gives each delivery and keeps across its retries, if the scheme
    /// has one: `X-GitHub-Delivery`, the Stripe event's `id`, the Slack event's
    /// `event_id`. `body` is the decoded body (ids live in JSON bodies).
    pub fn delivery_id<'a>(&self, headers: &'a HeaderMap, body: &'a Value) -> Option<&'a str> {
        let id = match self {
            Self::Github => headers.get(GITHUB_DELIVERY)?.to_str().ok()?,
            Self::Stripe => body.get("id")?.as_str()?,
            Self::Slack => body.get("event_id")?.as_str()?,
            Self::HmacSha256(_) => return None,
        };
        Some(id).filter(|id| !id.is_empty())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, SignatureError> {
    let value = headers
        .get(name)
        .ok_or_else(|| SignatureError::MissingHeader(name.to_owned()))?;
    value.to_str().map(str::trim).map_err(|_| malformed(name))
}

fn malformed(name: &str) -> SignatureError {
    SignatureError::Malformed(name.to_owned())
}

/// The HMAC-SHA256 state after `parts`, in order, ready to be compared.
fn mac(secret: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac
}

fn verify_one(expected: &HmacSha256, signature: &[u8]) -> Result<(), SignatureError> {
    expected
        .clone()
        .verify_slice(signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// `t=<timestamp>,v1=<hex>,…` → the timestamp as sent, and every decodable `v1`.
fn parse_stripe(value: &str) -> Result<(&str, Vec<Vec<u8>>), SignatureError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for element in value.split(',') {
        let Some((key, item)) = element.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = Some(item),
            "v1" => candidates.extend(hex::decode(item).ok()),
            _ => {}
        }
    }
    match timestamp {
        Some(timestamp) if !candidates.is_empty() => Ok((timestamp, candidates)),
        _ => Err(malformed(STRIPE_SIGNATURE)),
    }
}

/// A Unix timestamp in seconds, as the providers send it: digits only.
fn unix_seconds(text: &str, header: &str) -> Result<i64, SignatureError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(header));
    }
    text.parse().map_err(|_| malformed(header))
}

fn fresh(timestamp: i64, now: i64) -> Result<(), SignatureError> {
    if now.abs_diff(timestamp) <= TOLERANCE_SECS {
        Ok(())
    } else {
        Err(SignatureError::Stale)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("valid name"),
                HeaderValue::from_str(value).expect("valid value"),
            );
        }
        map
    }

    fn sign_hex(secret: &str, message: &[u8]) -> String {
        hex::encode(mac(secret.as_bytes(), &[message]).finalize().into_bytes())
    }

    fn generic(header: &str, encoding: &str, prefix: Option<&str>) -> Scheme {
        Scheme::new(
            "hmac-sha256",
            SchemeOptions {
                header: Some(header),
                encoding: Some(encoding),
                prefix,
            },
        )
        .expect("valid options")
    }

    // GitHub's documented test values ("Validating webhook deliveries").
    const GITHUB_SECRET: &str = "It's a Secret to Everybody";
    const GITHUB_BODY: &[u8] = b"Hello, World!";
    const GITHUB_SIGNATURE_VALUE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_accepts_its_documented_example() {
        let map = headers(&[("X-Hub-Signature-256", GITHUB_SIGNATURE_VALUE)]);
        let scheme = Scheme::Github;
        assert_eq!(
            scheme.verify(GITHUB_SECRET.as_bytes(), &map, GITHUB_BODY, 0),
            Ok(())
        );
        assert_eq!(
            scheme.verify(b"another secret", &map, GITHUB_BODY, 0),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            scheme.verify(GITHUB_SECRET.as_bytes(), &map, b"Hello, World?", 0),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            scheme.verify(GITHUB_SECRET.as_bytes(), &HeaderMap::new(), GITHUB_BODY, 0),
            Err(SignatureError::MissingHeader(GITHUB_SIGNATURE.into()))
        );
        for bad in [
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=not-hex",
            "sha256=",
        ] {
            let map = headers(&[("x-hub-signature-256", bad)]);
            assert!(
                scheme
                    .verify(GITHUB_SECRET.as_bytes(), &map, GITHUB_BODY, 0)
                    .is_err(),
                "{bad}"
            );
        }
        let truncated = headers(&[("x-hub-signature-256", "sha256=757107ea")]);
        assert_eq!(
            scheme.verify(GITHUB_SECRET.as_bytes(), &truncated, GITHUB_BODY, 0),
            Err(SignatureError::Mismatch),
            "a prefix of the right signature is not a signature"
        );
    }

    // Slack's documented example ("Verifying requests from Slack").
    const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: i64 = 1_531_420_618;
    const SLACK_BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIGNATURE_VALUE: &str =
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slack_accepts_its_documented_example_within_five_minutes() {
        let map = headers(&[
            ("X-Slack-Request-Timestamp", "1531420618"),
            ("X-Slack-Signature", SLACK_SIGNATURE_VALUE),
        ]);
        let scheme = Scheme::Slack;
        let secret = SLACK_SECRET.as_bytes();
        assert_eq!(scheme.verify(secret, &map, SLACK_BODY, SLACK_TS), Ok(()));
        assert_eq!(
            scheme.verify(secret, &map, SLACK_BODY, SLACK_TS + 300),
            Ok(())
        );
        assert_eq!(
            scheme.verify(secret, &map, SLACK_BODY, SLACK_TS - 300),
            Ok(())
        );
        assert_eq!(
            scheme.verify(secret, &map, SLACK_BODY, SLACK_TS + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            scheme.verify(secret, &map, SLACK_BODY, SLACK_TS - 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            scheme.verify(b"wrong", &map, SLACK_BODY, SLACK_TS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            scheme.verify(secret, &map, b"token=forged", SLACK_TS),
            Err(SignatureError::Mismatch)
        );

        // The timestamp is signed: moving it breaks the signature.
        let moved = headers(&[
            ("x-slack-request-timestamp", "1531420619"),
            ("x-slack-signature", SLACK_SIGNATURE_VALUE),
        ]);
        assert_eq!(
            scheme.verify(secret, &moved, SLACK_BODY, SLACK_TS),
            Err(SignatureError::Mismatch)
        );
        let no_timestamp = headers(&[("x-slack-signature", SLACK_SIGNATURE_VALUE)]);
        assert_eq!(
            scheme.verify(secret, &no_timestamp, SLACK_BODY, SLACK_TS),
            Err(SignatureError::MissingHeader(SLACK_TIMESTAMP.into()))
        );
        for (timestamp, signature) in [
            ("-1531420618", SLACK_SIGNATURE_VALUE),
            ("99999999999999999999999", SLACK_SIGNATURE_VALUE),
            ("soon", SLACK_SIGNATURE_VALUE),
            ("1531420618", "v1=a2114d57"),
            ("1531420618", "v0=zz"),
        ] {
            let map = headers(&[
                ("x-slack-request-timestamp", timestamp),
                ("x-slack-signature", signature),
            ]);
            assert!(
                matches!(
                    scheme.verify(secret, &map, SLACK_BODY, SLACK_TS),
                    Err(SignatureError::Malformed(_))
                ),
                "{timestamp} {signature}"
            );
        }
    }

    // Stripe publishes no secret with its examples, so the vector was computed with
    // Python's `hmac` over the documented `{t}.{body}` form.
    const STRIPE_SECRET: &str = "whsec_test_secret";
    const STRIPE_TS: i64 = 1_492_774_577;
    const STRIPE_BODY: &[u8] = b"{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\"\n}";
    const STRIPE_V1: &str = "c2f890decbc5ede7c5060bb9a6d31e0626a4342bacb9aeae2adb1bcea72f9812";

    #[test]
    fn stripe_accepts_any_v1_within_its_tolerance() {
        let scheme = Scheme::Stripe;
        let secret = STRIPE_SECRET.as_bytes();
        let verify = |value: &str, body: &[u8], now: i64| {
            scheme.verify(secret, &headers(&[("Stripe-Signature", value)]), body, now)
        };
        let signed = format!("t={STRIPE_TS},v1={STRIPE_V1}");
        assert_eq!(verify(&signed, STRIPE_BODY, STRIPE_TS), Ok(()));
        assert_eq!(
            sign_hex(
                STRIPE_SECRET,
                &[format!("{STRIPE_TS}.").as_bytes(), STRIPE_BODY].concat()
            ),
            STRIPE_V1,
            "the vector is HMAC-SHA256 of `{{t}}.{{body}}`"
        );

        // During a secret roll Stripe sends one v1 per secret, and a v0 to be ignored.
        let other = sign_hex("whsec_old", b"whatever");
        let rolled = format!("t={STRIPE_TS},v1={other},v1={STRIPE_V1},v0={other}");
        assert_eq!(verify(&rolled, STRIPE_BODY, STRIPE_TS + 60), Ok(()));
        let spaced = format!("t={STRIPE_TS}, v1={STRIPE_V1}");
        assert_eq!(verify(&spaced, STRIPE_BODY, STRIPE_TS), Ok(()));

        assert_eq!(
            verify(&signed, STRIPE_BODY, STRIPE_TS + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&signed, STRIPE_BODY, STRIPE_TS - 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&signed, b"{\"id\": \"evt_forged\"}", STRIPE_TS),
            Err(SignatureError::Mismatch)
        );
        let moved = format!("t={},v1={STRIPE_V1}", STRIPE_TS + 1);
        assert_eq!(
            verify(&moved, STRIPE_BODY, STRIPE_TS),
            Err(SignatureError::Mismatch),
            "the timestamp is signed"
        );
        let v0_only = format!("t={STRIPE_TS},v0={STRIPE_V1}");
        assert_eq!(
            verify(&v0_only, STRIPE_BODY, STRIPE_TS),
            Err(SignatureError::Malformed(STRIPE_SIGNATURE.into())),
            "only v1 signatures count"
        );
        assert_eq!(
            scheme.verify(
                b"whsec_wrong",
                &headers(&[("stripe-signature", &signed)]),
                STRIPE_BODY,
                STRIPE_TS
            ),
            Err(SignatureError::Mismatch)
        );
        for bad in [
            "",
            "garbage",
            "t=,v1=",
            &format!("v1={STRIPE_V1}"),
            &format!("t={STRIPE_TS}"),
            &format!("t=soon,v1={STRIPE_V1}"),
            &format!("t=-{STRIPE_TS},v1={STRIPE_V1}"),
            &format!("t={STRIPE_TS},v1=xyz"),
            "t=1,v1=,,,=,==",
        ] {
            assert!(verify(bad, STRIPE_BODY, STRIPE_TS).is_err(), "{bad:?}");
        }
        assert_eq!(
            scheme.verify(secret, &HeaderMap::new(), STRIPE_BODY, STRIPE_TS),
            Err(SignatureError::MissingHeader(STRIPE_SIGNATURE.into()))
        );
    }

    #[test]
    fn generic_hmac_takes_its_header_encoding_and_prefix() {
        // Computed with Python's `hmac`: HMAC-SHA256("generic-secret", '{"a":1}').
        let body = br#"{"a":1}"#;
        let hex_value = "25356a87463a4b8f8cc3d46102f9e21794a511ab94e337c1faf307f1d9a5677c";
        let base64_value = "JTVqh0Y6S4+Mw9RhAvniF5SlEauU4zfB+vMH8dmlZ3w=";
        let secret = b"generic-secret";

        let hex_scheme = generic("X-Signature", "hex", None);
        let map = headers(&[("x-signature", hex_value)]);
        assert_eq!(hex_scheme.verify(secret, &map, body, 0), Ok(()));
        let upper = headers(&[("x-signature", &hex_value.to_uppercase())]);
        assert_eq!(hex_scheme.verify(secret, &upper, body, 0), Ok(()));
        assert_eq!(
            hex_scheme.verify(b"wrong", &map, body, 0),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            hex_scheme.verify(secret, &map, br#"{"a":2}"#, 0),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            hex_scheme.verify(secret, &headers(&[("x-other", hex_value)]), body, 0),
            Err(SignatureError::MissingHeader("x-signature".into()))
        );

        let base64_scheme = generic("X-Shopify-Hmac-Sha256", "base64", None);
        let map = headers(&[("x-shopify-hmac-sha256", base64_value)]);
        assert_eq!(base64_scheme.verify(secret, &map, body, 0), Ok(()));
        assert_eq!(
            base64_scheme.verify(
                secret,
                &headers(&[("x-shopify-hmac-sha256", hex_value)]),
                body,
                0
            ),
            Err(SignatureError::Mismatch),
            "hex where base64 is expected decodes to other bytes"
        );
        assert_eq!(
            base64_scheme.verify(
                secret,
                &headers(&[("x-shopify-hmac-sha256", "not base64!")]),
                body,
                0
            ),
            Err(SignatureError::Malformed("x-shopify-hmac-sha256".into()))
        );

        let prefixed = generic("x-signature", "hex", Some("sha256="));
        let map = headers(&[("x-signature", &format!("sha256={hex_value}"))]);
        assert_eq!(prefixed.verify(secret, &map, body, 0), Ok(()));
        let unprefixed = headers(&[("x-signature", hex_value)]);
        assert_eq!(
            prefixed.verify(secret, &unprefixed, body, 0),
            Err(SignatureError::Malformed("x-signature".into()))
        );
    }

    #[test]
    fn nothing_a_sender_sends_panics() {
        let schemes = [
            Scheme::Github,
            Scheme::Stripe,
            Scheme::Slack,
            generic("x-sig", "base64", Some("v=")),
        ];
        let values = [
            "",
            "=",
            ",",
            "sha256=",
            "v0=",
            "t=1,v1=ab",
            "t=99999999999999999999,v1=00",
            "t=9223372036854775807,v1=00",
            "v=====",
            "sha256=\u{00e9}",
        ];
        for scheme in &schemes {
            for value in values {
                let Ok(value) = HeaderValue::from_str(value) else {
                    continue;
                };
                let mut map = HeaderMap::new();
                for name in [
                    GITHUB_SIGNATURE,
                    STRIPE_SIGNATURE,
                    SLACK_SIGNATURE,
                    SLACK_TIMESTAMP,
                    "x-sig",
                ] {
                    map.insert(HeaderName::from_static(name), value.clone());
                }
                for now in [i64::MIN, 0, i64::MAX] {
                    assert!(scheme.verify(b"", &map, b"", now).is_err());
                }
            }
            let opaque = HeaderValue::from_bytes(b"\xff\xfe").expect("opaque bytes are allowed");
            let mut map = HeaderMap::new();
            map.insert(GITHUB_SIGNATURE, opaque.clone());
            map.insert(STRIPE_SIGNATURE, opaque.clone());
            map.insert(SLACK_SIGNATURE, opaque.clone());
            map.insert(SLACK_TIMESTAMP, opaque.clone());
            map.insert("x-sig", opaque);
            assert!(scheme.verify(b"k", &map, b"body", 0).is_err());
        }
    }

    #[test]
    fn options_are_checked_and_named() {
        let problems = |name: &str, options: SchemeOptions<'_>| {
            Scheme::new(name, options)
                .expect_err("invalid")
                .into_iter()
                .map(|p| format!("{}: {}", p.option, p.message))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            problems("sha1", SchemeOptions::default()),
            vec!["scheme: unknown scheme `sha1` (expected hmac-sha256, github, stripe, slack)"]
        );
        assert_eq!(
            problems(
                "github",
                SchemeOptions {
                    header: Some("x-sig"),
                    prefix: Some("p"),
                    ..SchemeOptions::default()
                }
            ),
            vec![
                "header: only for the hmac-sha256 scheme: github fixes its own",
                "prefix: only for the hmac-sha256 scheme: github fixes its own"
            ]
        );
        assert_eq!(
            problems("hmac-sha256", SchemeOptions::default()),
            vec!["header: required for hmac-sha256: the header that carries the signature"]
        );
        assert_eq!(
            problems(
                "hmac-sha256",
                SchemeOptions {
                    header: Some("bad header"),
                    encoding: Some("base32"),
                    prefix: Some("\u{00e9}"),
                }
            ),
            vec![
                "header: `bad header` is not a valid header name",
                "encoding: unknown encoding `base32` (expected hex or base64)",
                "prefix: must be at most 64 printable ASCII characters"
            ]
        );
        let scheme = generic("X-Signature", "base64", Some("sha256="));
        assert_eq!(
            serde_json::to_value(&scheme).expect("serializes"),
            json!({"scheme": "hmac-sha256", "header": "x-signature", "encoding": "base64", "prefix": "sha256="})
        );
        for scheme in [scheme, Scheme::Github, Scheme::Stripe, Scheme::Slack] {
            let stored = serde_json::to_value(&scheme).expect("serializes");
            assert_eq!(stored["scheme"], scheme.name());
            assert_eq!(serde_json::from_value::<Scheme>(stored).ok(), Some(scheme));
        }
    }

    #[test]
    fn delivery_ids_come_from_where_each_provider_puts_them() {
        let map = headers(&[("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")]);
        let body = json!({"id": "evt_1", "event_id": "Ev1"});
        assert_eq!(
            Scheme::Github.delivery_id(&map, &body),
            Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
        );
        assert_eq!(Scheme::Stripe.delivery_id(&map, &body), Some("evt_1"));
        assert_eq!(Scheme::Slack.delivery_id(&map, &body), Some("Ev1"));
        assert_eq!(generic("x-sig", "hex", None).delivery_id(&map, &body), None);
        assert_eq!(Scheme::Github.delivery_id(&HeaderMap::new(), &body), None);
        assert_eq!(Scheme::Stripe.delivery_id(&map, &json!({"id": 5})), None);
        assert_eq!(Scheme::Slack.delivery_id(&map, &json!("text")), None);
        assert_eq!(Scheme::Stripe.delivery_id(&map, &json!({"id": ""})), None);
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let secret = SigningSecret::new("hunter2".into());
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.as_bytes(), b"hunter2");
    }
}

/// Whatever a sender puts in its headers, verification answers with a verdict; and a
/// correct signature, for any secret, body and time, is the only one accepted.
#[cfg(test)]
mod properties {
    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    const NAMES: [&str; 5] = [
        GITHUB_SIGNATURE,
        STRIPE_SIGNATURE,
        SLACK_SIGNATURE,
        SLACK_TIMESTAMP,
        "x-sig",
    ];

    fn schemes() -> Vec<Scheme> {
        let generic = |encoding: &str, prefix: Option<&str>| {
            Scheme::new(
                "hmac-sha256",
                SchemeOptions {
                    header: Some("x-sig"),
                    encoding: Some(encoding),
                    prefix,
                },
            )
            .expect("valid options")
        };
        vec![
            Scheme::Github,
            Scheme::Stripe,
            Scheme::Slack,
            generic("hex", None),
            generic("base64", Some("sha256=")),
        ]
    }

    /// Header text shaped like the schemes' own (`t=…,v1=…`, `sha256=…`), or any bytes a
    /// header value may hold.
    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "((t|v0|v1|sha256)=|,| |=|-|[0-9a-fA-F]{0,70}|9{10,25}|[A-Za-z0-9+/=]{0,50})*"
                .prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..120),
        ]
    }

    /// The headers of a correctly signed delivery of `body` at `timestamp`.
    fn signed(scheme: &Scheme, secret: &[u8], body: &[u8], timestamp: i64) -> HeaderMap {
        let digest = |parts: &[&[u8]]| mac(secret, parts).finalize().into_bytes().to_vec();
        let t = timestamp.to_string();
        let pairs: Vec<(&str, String)> = match scheme {
            Scheme::Github => vec![(
                GITHUB_SIGNATURE,
                format!("sha256={}", hex::encode(digest(&[body]))),
            )],
            Scheme::Stripe => vec![(
                STRIPE_SIGNATURE,
                format!(
                    "t={t},v1={}",
                    hex::encode(digest(&[t.as_bytes(), b".", body]))
                ),
            )],
            Scheme::Slack => vec![
                (SLACK_TIMESTAMP, t.clone()),
                (
                    SLACK_SIGNATURE,
                    format!(
                        "v0={}",
                        hex::encode(digest(&[b"v0:", t.as_bytes(), b":", body]))
                    ),
                ),
            ],
            Scheme::HmacSha256(generic) => {
                let signature = match generic.encoding {
                    Encoding::Hex => hex::encode(digest(&[body])),
                    Encoding::Base64 => STANDARD.encode(digest(&[body])),
                };
                vec![("x-sig", format!("{}{signature}", generic.prefix))]
            }
        };
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).expect("signatures are ASCII"),
            );
        }
        headers
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_headers_are_refused_without_panicking(
            values in prop::collection::vec(header_value(), NAMES.len()),
            secret in prop::collection::vec(any::<u8>(), 0..80),
            body in prop::collection::vec(any::<u8>(), 0..200),
            now in any::<i64>(),
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in NAMES.iter().zip(values) {
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    headers.insert(HeaderName::from_static(name), value);
                }
            }
            for scheme in schemes() {
                prop_assert!(scheme.verify(&secret, &headers, &body, now).is_err());
                let _ = scheme.delivery_id(&headers, &Value::Null);
            }
        }

        #[test]
        fn a_correct_signature_is_accepted_and_any_change_refused(
            secret in prop::collection::vec(any::<u8>(), 0..80),
            body in prop::collection::vec(any::<u8>(), 0..200),
            timestamp in 0i64..4_000_000_000,
            skew in -(TOLERANCE_SECS as i64)..=(TOLERANCE_SECS as i64),
            flip in any::<prop::sample::Index>(),
        ) {
            for scheme in schemes() {
                let headers = signed(&scheme, &secret, &body, timestamp);
                prop_assert_eq!(scheme.verify(&secret, &headers, &body, timestamp + skew), Ok(()));
                if !body.is_empty() {
                    let mut forged = body.clone();
                    forged[flip.index(body.len())] ^= 1;
                    prop_assert_eq!(
                        scheme.verify(&secret, &headers, &forged, timestamp),
                        Err(SignatureError::Mismatch)
                    );
                }
                // Not a 0 byte: HMAC pads keys with zeros, so `k` and `k\0` sign alike.
                let mut other = secret.clone();
                other.push(1);
                prop_assert_eq!(
                    scheme.verify(&other, &headers, &body, timestamp),
                    Err(SignatureError::Mismatch)
                );
                if matches!(scheme, Scheme::Stripe | Scheme::Slack) {
                    let late = timestamp + TOLERANCE_SECS as i64 + 1 + skew.abs();
                    prop_assert_eq!(
                        scheme.verify(&secret, &headers, &body, late),
                        Err(SignatureError::Stale)
                    );
                }
            }
        }

        #[test]
        fn scheme_options_are_accepted_or_refused_with_named_problems(
            name in prop_oneof![prop::sample::select(&SCHEME_NAMES[..]).prop_map(str::to_owned), any::<String>()],
            header in prop::option::of(any::<String>()),
            encoding in prop::option::of(prop_oneof![Just("hex".to_owned()), Just("base64".to_owned()), any::<String>()]),
            prefix in prop::option::of(any::<String>()),
        ) {
            let options = SchemeOptions {
                header: header.as_deref(),
                encoding: encoding.as_deref(),
                prefix: prefix.as_deref(),
            };
            match Scheme::new(&name, options) {
                Ok(scheme) => prop_assert_eq!(scheme.name(), name.as_str()),
                Err(problems) => {
                    prop_assert!(!problems.is_empty());
                    for problem in problems {
                        prop_assert!(!problem.message.is_empty());
                    }
                }
            }
        }
    }
}
