//! The checks of a connection's fields, each problem named by its field: name, config
//! against the connector's schema, rate limit, and credentials against the auth type; and
//! the status the credentials give it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Map, Value, json};
use weft_domain::connector::Credentials;
use weft_domain::manifest::{Auth, Grant, RateLimit};

use super::model::ConnectionStatus;
use crate::error::ApiError;

const MAX_NAME_CHARS: usize = 200;
/// Most config problems listed in one answer.
const MAX_CONFIG_PROBLEMS: usize = 20;

/// The credential fields the system adds to an `oauth2` connection; they may also be
/// given, to bring an existing grant along.
const OAUTH2_TOKEN_FIELDS: [&str; 3] = ["access_token", "refresh_token", "expires_at"];

/// One problem in a connection's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct FieldProblem {
    /// `name`, `config.base_url`, `credentials.token`, …
    pub field: String,
    pub message: String,
}

pub(super) fn problem(field: impl Into<String>, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.into(),
        message: message.into(),
    }
}

pub(super) fn invalid_connection(problems: Vec<FieldProblem>) -> ApiError {
    let message = problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ");
    ApiError::BadRequest {
        code: "invalid_connection",
        message,
        details: json!({ "problems": problems }),
    }
}

pub(super) fn check_name(name: &str) -> Option<FieldProblem> {
    let chars = name.trim().chars().count();
    (chars == 0 || chars > MAX_NAME_CHARS)
        .then(|| problem("name", format!("must be 1 to {MAX_NAME_CHARS} characters")))
}

/// Checks `config` against the connector's `connection_schema`. The schema is written by
/// users: it never fetches a remote reference, and its patterns run on the linear-time
/// regex engine.
pub(super) fn check_config(schema: &Value, config: &Value) -> Vec<FieldProblem> {
    if !config.is_object() {
        return vec![problem("config", "must be an object")];
    }
    let options = jsonschema::options()
        .offline()
        .with_pattern_options(jsonschema::PatternOptions::regex());
    let validator = match options.build(schema) {
        Ok(validator) => validator,
        Err(e) => {
            return vec![problem(
                "config",
                format!(
                    "the connector's connection_schema does not compile ({e}); fix the connector"
                ),
            )];
        }
    };
    let mut problems: Vec<FieldProblem> = validator
        .iter_errors(config)
        .take(MAX_CONFIG_PROBLEMS)
        .map(|error| {
            let pointer = error.instance_path().as_str().to_owned();
            let field = pointer
                .split('/')
                .skip(1)
                .fold("config".to_owned(), |path, segment| {
                    format!("{path}.{}", segment.replace("~1", "/").replace("~0", "~"))
                });
            problem(field, error.to_string())
        })
        .collect();
    if let Some(base_url) = config.get("base_url")
        && !base_url.is_string()
    {
        problems.push(problem("config.base_url", "must be a string (a URL)"));
    }
    problems
}

/// A connection's own rate limit: `{"requests": n, "per": "1s"}`.
pub(super) fn parse_rate_limit(value: &Value) -> Result<RateLimit, FieldProblem> {
    let limit: RateLimit = serde_json::from_value(value.clone()).map_err(|e| {
        problem(
            "rate_limit",
            format!("must be {{\"requests\": <number>, \"per\": \"<duration>\"}}: {e}"),
        )
    })?;
    if limit.requests == 0 {
        return Err(problem("rate_limit.requests", "must be at least 1"));
    }
    match weft_runtime::config::parse_duration(&limit.per) {
        Ok(per) if !per.is_zero() => Ok(limit),
        Ok(_) => Err(problem("rate_limit.per", "must be longer than zero")),
        Err(e) => Err(problem("rate_limit.per", e)),
    }
}

/// The credential fields a connection of `auth` may hold: required, then optional.
fn credential_fields(auth: &Auth) -> (&'static [&'static str], &'static [&'static str]) {
    let optional: &'static [&'static str] = match auth {
        Auth::Oauth2(_) => &OAUTH2_TOKEN_FIELDS,
        _ => &[],
    };
    (auth.required_credentials(), optional)
}

/// Credential changes: a field's new value, or `None` to remove it.
pub(super) type CredentialChanges = BTreeMap<String, Option<SecretString>>;

/// Checks given credential fields against the auth type. With `patch`, `null` removes an
/// optional field.
pub(super) fn check_credentials(
    auth: &Auth,
    given: &Map<String, Value>,
    patch: bool,
) -> (CredentialChanges, Vec<FieldProblem>) {
    let (required, optional) = credential_fields(auth);
    let mut changes = CredentialChanges::new();
    let mut problems = Vec::new();
    for (name, value) in given {
        let field = format!("credentials.{name}");
        let is_required = required.contains(&name.as_str());
        if !is_required && !optional.contains(&name.as_str()) {
            let takes: Vec<&str> = required.iter().chain(optional).copied().collect();
            let message = if takes.is_empty() {
                format!("{} auth takes no credentials", auth.kind())
            } else {
                format!(
                    "not a credential of {} auth (it takes: {})",
                    auth.kind(),
                    takes.join(", ")
                )
            };
            problems.push(problem(field, message));
            continue;
        }
        match value {
            Value::Null if patch && !is_required => {
                changes.insert(name.clone(), None);
            }
            Value::Null if patch => problems.push(problem(
                field,
                format!(
                    "required by {} auth: it can be replaced, not removed",
                    auth.kind()
                ),
            )),
            Value::String(text) if text.is_empty() => {
                problems.push(problem(field, "must not be empty"));
            }
            Value::String(text) if name == "expires_at" => {
                if DateTime::parse_from_rfc3339(text).is_err() {
                    problems.push(problem(
                        field,
                        "must be an RFC 3339 timestamp or seconds since 1970",
                    ));
                } else {
                    changes.insert(name.clone(), Some(SecretString::from(text.clone())));
                }
            }
            Value::String(text) => {
                changes.insert(name.clone(), Some(SecretString::from(text.clone())));
            }
            Value::Number(seconds) if name == "expires_at" && seconds.is_i64() => {
                changes.insert(name.clone(), Some(SecretString::from(seconds.to_string())));
            }
            _ => problems.push(problem(field, "must be a string")),
        }
    }
    (changes, problems)
}

/// The required fields missing from `fields`.
pub(super) fn missing_credentials(auth: &Auth, fields: &BTreeSet<String>) -> Vec<FieldProblem> {
    auth.required_credentials()
        .iter()
        .filter(|name| !fields.contains(**name))
        .map(|name| {
            problem(
                format!("credentials.{name}"),
                format!("required by {} auth", auth.kind()),
            )
        })
        .collect()
}

/// A connection's status once its credentials are set: an authorization-code connection
/// waits for its tokens.
pub(super) fn status_for(auth: &Auth, fields: &BTreeSet<String>) -> ConnectionStatus {
    match auth {
        Auth::Oauth2(oauth)
            if oauth.grant == Grant::AuthorizationCode && !fields.contains("access_token") =>
        {
            ConnectionStatus::Pending
        }
        _ => ConnectionStatus::Active,
    }
}

pub(super) fn apply(credentials: &mut Credentials, changes: CredentialChanges) {
    for (name, value) in changes {
        match value {
            Some(value) => credentials.set(&name, value),
            None => credentials.remove(&name),
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn auth(value: Value) -> Auth {
        serde_json::from_value(value).expect("an auth type")
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().expect("an object").clone()
    }

    fn fields(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn credentials_must_be_the_auth_types_fields() {
        let bearer = auth(json!({"type": "bearer"}));
        let (changes, problems) =
            check_credentials(&bearer, &object(json!({"token": "t0k3n"})), false);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            changes["token"].as_ref().map(|v| v.expose_secret()),
            Some("t0k3n")
        );

        let (_, problems) = check_credentials(
            &bearer,
            &object(json!({"token": "", "password": "x", "extra": 1})),
            false,
        );
        let by_field: BTreeMap<&str, &str> = problems
            .iter()
            .map(|p| (p.field.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(by_field["credentials.token"], "must not be empty");
        assert_eq!(
            by_field["credentials.password"],
            "not a credential of bearer auth (it takes: token)"
        );
        assert!(by_field.contains_key("credentials.extra"));

        let none = auth(json!({"type": "none"}));
        let (_, problems) = check_credentials(&none, &object(json!({"token": "x"})), false);
        assert_eq!(problems[0].message, "none auth takes no credentials");
    }

    #[test]
    fn required_fields_are_named_when_missing() {
        let basic = auth(json!({"type": "basic"}));
        let missing = missing_credentials(&basic, &fields(&["username"]));
        assert_eq!(
            missing,
            vec![problem("credentials.password", "required by basic auth")]
        );
        let api_key = auth(json!({"type": "api_key", "in": "header", "name": "X-Key"}));
        assert_eq!(
            missing_credentials(&api_key, &fields(&[]))[0].field,
            "credentials.api_key"
        );
    }

    #[test]
    fn oauth2_connections_take_tokens_and_patches_remove_optional_fields() {
        let oauth = auth(json!({
            "type": "oauth2", "authorize_url": "https://p.test/authorize", "token_url": "https://p.test/token"
        }));
        let given = object(json!({
            "client_id": "id", "client_secret": "s", "refresh_token": "r", "expires_at": 1_900_000_000
        }));
        let (changes, problems) = check_credentials(&oauth, &given, false);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            changes["expires_at"].as_ref().map(|v| v.expose_secret()),
            Some("1900000000")
        );
        let (_, problems) =
            check_credentials(&oauth, &object(json!({"expires_at": "tomorrow"})), false);
        assert_eq!(problems[0].field, "credentials.expires_at");

        let (changes, problems) = check_credentials(
            &oauth,
            &object(json!({"refresh_token": null, "client_secret": "new"})),
            true,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(changes["refresh_token"].is_none(), "removed");
        let (_, problems) = check_credentials(&oauth, &object(json!({"client_id": null})), true);
        assert_eq!(
            problems[0].message,
            "required by oauth2 auth: it can be replaced, not removed"
        );
        let (_, problems) =
            check_credentials(&oauth, &object(json!({"refresh_token": null})), false);
        assert_eq!(
            problems[0].message, "must be a string",
            "null only in a patch"
        );
    }

    #[test]
    fn authorization_code_connections_wait_for_their_token() {
        let code = auth(json!({
            "type": "oauth2", "authorize_url": "https://p.test/a", "token_url": "https://p.test/t"
        }));
        let client = auth(json!({
            "type": "oauth2", "grant": "client_credentials", "token_url": "https://p.test/t"
        }));
        let base = fields(&["client_id", "client_secret"]);
        assert_eq!(status_for(&code, &base), ConnectionStatus::Pending);
        let mut authorized = base.clone();
        authorized.insert("access_token".into());
        assert_eq!(status_for(&code, &authorized), ConnectionStatus::Active);
        assert_eq!(status_for(&client, &base), ConnectionStatus::Active);
        assert_eq!(
            status_for(&auth(json!({"type": "bearer"})), &fields(&["token"])),
            ConnectionStatus::Active
        );
    }

    #[test]
    fn config_is_checked_against_the_connection_schema() {
        let schema = json!({
            "type": "object",
            "required": ["shop"],
            "properties": {"shop": {"type": "string", "pattern": "^[a-z]+$"}, "base_url": {"type": "string"}}
        });
        assert!(check_config(&schema, &json!({"shop": "acme"})).is_empty());
        let problems = check_config(&schema, &json!({"shop": "ACME!"}));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "config.shop");
        let problems = check_config(&schema, &json!({}));
        assert_eq!(problems[0].field, "config");
        assert!(problems[0].message.contains("shop"), "{problems:?}");
        assert_eq!(
            check_config(&schema, &json!([]))[0].message,
            "must be an object"
        );
        let loose = json!({"type": "object"});
        assert_eq!(
            check_config(&loose, &json!({"base_url": 5}))[0].field,
            "config.base_url"
        );
    }

    #[test]
    fn rate_limits_need_requests_and_a_period() {
        let limit = parse_rate_limit(&json!({"requests": 5, "per": "1s"})).expect("valid");
        assert_eq!((limit.requests, limit.per.as_str()), (5, "1s"));
        assert_eq!(
            parse_rate_limit(&json!({"requests": 0, "per": "1s"}))
                .expect_err("zero")
                .field,
            "rate_limit.requests"
        );
        assert_eq!(
            parse_rate_limit(&json!({"requests": 1, "per": "soon"}))
                .expect_err("no duration")
                .field,
            "rate_limit.per"
        );
        assert_eq!(
            parse_rate_limit(&json!({"requests": 1}))
                .expect_err("no period")
                .field,
            "rate_limit"
        );
    }

    #[test]
    fn names_are_bounded() {
        assert!(check_name("Acme CRM").is_none());
        assert!(check_name("  ").is_some());
        assert!(check_name(&"x".repeat(201)).is_some());
    }
}
