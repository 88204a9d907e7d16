//! The parsing of a scenario's trigger: webhook options and signatures, schedules and
//! polls, for a definition being saved and for the trigger of a stored one.

use std::time::Duration;

use crate::ids::ConnectionId;
use serde_json::Value;

use super::model::{PollTrigger, WebhookOptions, WebhookSignature};
use super::parse::{BuiltinCatalog, Invalid, Parser, Problem};
use super::spec::{SignatureSpec, TriggerSpec};
use crate::schedule::Schedule;
use crate::signature::{Scheme, SchemeOptions, SigningSecret};

/// Longest webhook signing secret accepted, in bytes.
pub const MAX_SECRET_LEN: usize = 1024;

/// How long an `on_completion` webhook waits for its run unless it says otherwise.
pub const DEFAULT_RESPOND_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest an `on_completion` webhook may wait: senders time out long before.
pub const MAX_RESPOND_TIMEOUT: Duration = Duration::from_secs(300);

/// The shortest poll interval accepted. Every poll is a request to a third-party API, but
/// tests poll a local server and need to see several polls quickly.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

impl PollTrigger {
    /// Reads the `trigger` object of a stored definition, checked like a definition being
    /// saved.
    pub fn parse(trigger: &Value) -> Result<Self, Invalid> {
        let spec: TriggerSpec = serde_json::from_value(trigger.clone()).map_err(|e| {
            Invalid(vec![Problem {
                node: None,
                field: "trigger".into(),
                message: e.to_string(),
            }])
        })?;
        let TriggerSpec::Poll {
            connector,
            trigger,
            connection,
            interval,
        } = spec
        else {
            return Err(Invalid(vec![Problem {
                node: None,
                field: "trigger.type".into(),
                message: "not a poll trigger".into(),
            }]));
        };
        let mut parser = Parser::new(&BuiltinCatalog);
        match parser.poll(connector, trigger, connection, interval.as_deref()) {
            Some(poll) if parser.problems.is_empty() => Ok(poll),
            _ => Err(Invalid(parser.problems)),
        }
    }
}

impl WebhookOptions {
    /// The options of a stored trigger (checked when it was saved); one that does not
    /// read as a webhook trigger has the defaults.
    pub fn of_trigger(trigger: &Value) -> Self {
        let Ok(TriggerSpec::Webhook {
            respond,
            respond_timeout,
            methods,
            content_types,
            max_body_bytes,
            ..
        }) = serde_json::from_value(trigger.clone())
        else {
            return Self::default();
        };
        Parser::new(&BuiltinCatalog).webhook_options(
            respond.as_deref(),
            respond_timeout.as_deref(),
            methods.unwrap_or_default(),
            content_types.unwrap_or_default(),
            max_body_bytes,
        )
    }
}

impl Parser<'_> {
    pub(super) fn webhook_options(
        &mut self,
        respond: Option<&str>,
        respond_timeout: Option<&str>,
        methods: Vec<String>,
        content_types: Vec<String>,
        max_body_bytes: Option<usize>,
    ) -> WebhookOptions {
        let wait = self
            .duration(None, "trigger.respond_timeout", respond_timeout)
            .unwrap_or(DEFAULT_RESPOND_TIMEOUT);
        if wait > MAX_RESPOND_TIMEOUT {
            self.problem(
                None,
                "trigger.respond_timeout",
                format!(
                    "at most {} (senders give up long before)",
                    humantime::format_duration(MAX_RESPOND_TIMEOUT)
                ),
            );
        }
        let respond_on_completion = match respond {
            None | Some("immediately") => {
                if respond_timeout.is_some() {
                    self.problem(
                        None,
                        "trigger.respond_timeout",
                        "only used with `respond: on_completion`",
                    );
                }
                None
            }
            Some("on_completion") => Some(wait),
            Some(other) => {
                self.problem(
                    None,
                    "trigger.respond",
                    format!("`{other}` is not `immediately` or `on_completion`"),
                );
                None
            }
        };
        let methods = methods
            .into_iter()
            .filter_map(|method| {
                let upper = method.to_ascii_uppercase();
                let valid = !upper.is_empty() && upper.bytes().all(|b| b.is_ascii_uppercase());
                if !valid {
                    self.problem(
                        None,
                        "trigger.methods",
                        format!("`{method}` is not an HTTP method"),
                    );
                }
                valid.then_some(upper)
            })
            .collect();
        let content_types = content_types
            .into_iter()
            .filter_map(|media_type| {
                let lower = media_type.trim().to_ascii_lowercase();
                let valid = lower.split_once('/').is_some_and(|(kind, sub)| {
                    !kind.is_empty() && !sub.is_empty() && !lower.contains([';', ' '])
                });
                if !valid {
                    self.problem(
                        None,
                        "trigger.content_types",
                        format!("`{media_type}` is not a media type like `application/json`"),
                    );
                }
                valid.then_some(lower)
            })
            .collect();
        if max_body_bytes == Some(0) {
            self.problem(None, "trigger.max_body_bytes", "must be at least 1");
        }
        WebhookOptions {
            respond_on_completion,
            methods,
            content_types,
            max_body_bytes,
        }
    }

    pub(super) fn signature(&mut self, spec: SignatureSpec) -> Option<WebhookSignature> {
        let options = SchemeOptions {
            header: spec.header.as_deref(),
            encoding: spec.encoding.as_deref(),
            prefix: spec.prefix.as_deref(),
        };
        let scheme = Scheme::new(&spec.scheme, options).map_err(|problems| {
            for problem in problems {
                self.problem(
                    None,
                    &format!("trigger.signature.{}", problem.option),
                    problem.message,
                );
            }
        });
        let secret = match spec.secret {
            Some(secret) if secret.is_empty() => {
                self.problem(None, "trigger.signature.secret", "must not be empty");
                None
            }
            Some(secret) if secret.len() > MAX_SECRET_LEN => {
                self.problem(
                    None,
                    "trigger.signature.secret",
                    format!("longer than {MAX_SECRET_LEN} bytes"),
                );
                None
            }
            secret => secret.map(SigningSecret::new),
        };
        Some(WebhookSignature {
            scheme: scheme.ok()?,
            secret,
        })
    }

    pub(super) fn schedule(
        &mut self,
        cron: Option<&str>,
        timezone: Option<&str>,
    ) -> Option<Schedule> {
        let Some(cron) = cron else {
            self.problem(
                None,
                "trigger.cron",
                "required: a cron pattern of 5 fields, or 6 with seconds first",
            );
            return None;
        };
        Schedule::new(cron, timezone)
            .map_err(|problems| {
                for problem in problems {
                    self.problem(None, &format!("trigger.{}", problem.field), problem.message);
                }
            })
            .ok()
    }

    pub(super) fn poll(
        &mut self,
        connector: Option<String>,
        trigger: Option<String>,
        connection: Option<String>,
        interval: Option<&str>,
    ) -> Option<PollTrigger> {
        let mut required = |field: &str, value: Option<String>, what: &str| match value {
            Some(value) if !value.trim().is_empty() => Some(value),
            _ => {
                self.problem(
                    None,
                    &format!("trigger.{field}"),
                    format!("required: {what}"),
                );
                None
            }
        };
        let connector = required(
            "connector",
            connector,
            "the key of the connector that is polled",
        );
        let trigger = required(
            "trigger",
            trigger,
            "the key of the connector's poll trigger",
        );
        let connection = match connection {
            None => None,
            Some(text) => match text.parse::<ConnectionId>() {
                Ok(id) => Some(id),
                Err(_) => {
                    self.problem(
                        None,
                        "trigger.connection",
                        format!("`{text}` is not a connection id"),
                    );
                    return None;
                }
            },
        };
        let interval = match self.duration(None, "trigger.interval", interval) {
            Some(interval) if interval < MIN_POLL_INTERVAL => {
                self.problem(
                    None,
                    "trigger.interval",
                    format!(
                        "at least {} (every poll calls the connector's API)",
                        humantime::format_duration(MIN_POLL_INTERVAL)
                    ),
                );
                return None;
            }
            Some(interval) => Some(interval),
            None if interval.is_some() => return None,
            None => None,
        };
        Some(PollTrigger {
            connector: connector?,
            trigger: trigger?,
            connection,
            interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scenario::{Scenario, TriggerKind};

    fn http(id: &str, after: &[&str]) -> Value {
        json!({"id": id, "type": "action", "connector": "http", "action": "request", "after": after,
               "input": {"method": "GET", "url": "http://example.test/"}})
    }
    fn with_trigger(trigger: Value) -> Result<Scenario, Invalid> {
        Scenario::parse(
            &json!({"name": "t", "trigger": trigger, "nodes": [http("a", &[])]}),
            &BuiltinCatalog,
        )
    }

    #[test]
    fn webhook_signatures_are_parsed_with_their_secret() {
        let scenario = with_trigger(
            json!({"type": "webhook", "signature": {"scheme": "github", "secret": "s3cret"}}),
        )
        .expect("valid");
        let signature = scenario.signature.expect("a signature");
        assert_eq!(signature.scheme, Scheme::Github);
        assert_eq!(signature.secret, Some(SigningSecret::new("s3cret".into())));

        // A stored definition, read back from the API, saves again as it is.
        let stored = with_trigger(
            json!({"type": "webhook", "signature": {"scheme": "stripe", "secret_set": true}}),
        )
        .expect("valid");
        let signature = stored.signature.expect("a signature");
        assert_eq!(signature.scheme, Scheme::Stripe);
        assert_eq!(signature.secret, None);

        let generic = with_trigger(json!({"type": "webhook", "signature": {
            "scheme": "hmac-sha256", "secret": "k", "header": "X-Sig", "encoding": "base64", "prefix": "v1="}}))
        .expect("valid");
        assert_eq!(
            generic.signature.map(|s| s.scheme.name()),
            Some("hmac-sha256")
        );
        assert!(
            with_trigger(json!({"type": "webhook"}))
                .expect("valid")
                .signature
                .is_none()
        );
    }

    #[test]
    fn webhook_options_are_parsed_and_their_problems_named() {
        let options = with_trigger(json!({
            "type": "webhook", "respond": "on_completion", "respond_timeout": "5s",
            "methods": ["post", "PUT"], "content_types": ["Application/JSON"],
            "max_body_bytes": 1024
        }))
        .expect("valid")
        .webhook;
        assert_eq!(
            options,
            WebhookOptions {
                respond_on_completion: Some(Duration::from_secs(5)),
                methods: vec!["POST".into(), "PUT".into()],
                content_types: vec!["application/json".into()],
                max_body_bytes: Some(1024),
            }
        );
        let default_wait = with_trigger(json!({"type": "webhook", "respond": "on_completion"}))
            .expect("valid")
            .webhook;
        assert_eq!(
            default_wait.respond_on_completion,
            Some(DEFAULT_RESPOND_TIMEOUT)
        );
        let messages = |trigger: Value| -> Vec<String> {
            with_trigger(trigger)
                .expect_err("invalid")
                .0
                .iter()
                .map(Problem::to_string)
                .collect()
        };
        let problems = messages(json!({
            "type": "webhook", "respond": "later", "methods": ["GE T"],
            "content_types": ["json"], "max_body_bytes": 0
        }));
        for field in [
            "trigger.respond",
            "trigger.methods",
            "trigger.content_types",
            "trigger.max_body_bytes",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(&format!("`{field}`"))),
                "{field} in {problems:?}"
            );
        }
        let too_long = messages(
            json!({"type": "webhook", "respond": "on_completion", "respond_timeout": "10m"}),
        );
        assert!(too_long[0].contains("at most 5m"), "{too_long:?}");
    }

    #[test]
    fn stored_webhook_triggers_give_their_options() {
        let trigger = json!({"type": "webhook", "respond": "on_completion", "methods": ["post"],
                             "signature": {"scheme": "github", "secret_set": true}});
        let options = WebhookOptions::of_trigger(&trigger);
        assert_eq!(options.respond_on_completion, Some(DEFAULT_RESPOND_TIMEOUT));
        assert_eq!(options.methods, ["POST"]);
        assert_eq!(
            WebhookOptions::of_trigger(&json!({"type": "manual"})),
            WebhookOptions::default()
        );
    }

    #[test]
    fn webhook_signature_problems_name_their_field() {
        let problems = |trigger: Value| -> Vec<String> {
            with_trigger(trigger)
                .expect_err("invalid")
                .0
                .iter()
                .map(Problem::to_string)
                .collect()
        };
        assert_eq!(
            problems(json!({"type": "webhook", "signature": {"scheme": "md5", "secret": "k"}})),
            vec![
                "field `trigger.signature.scheme`: unknown scheme `md5` (expected hmac-sha256, github, stripe, slack)"
            ]
        );
        assert_eq!(
            problems(
                json!({"type": "webhook", "signature": {"scheme": "slack", "secret": "", "encoding": "hex"}})
            ),
            vec![
                "field `trigger.signature.encoding`: only for the hmac-sha256 scheme: slack fixes its own",
                "field `trigger.signature.secret`: must not be empty"
            ]
        );
        assert_eq!(
            problems(
                json!({"type": "webhook", "signature": {"scheme": "hmac-sha256", "secret": "k"}})
            ),
            vec![
                "field `trigger.signature.header`: required for hmac-sha256: the header that carries the signature"
            ]
        );
        let long = "k".repeat(MAX_SECRET_LEN + 1);
        assert_eq!(
            problems(json!({"type": "webhook", "signature": {"scheme": "github", "secret": long}})),
            vec!["field `trigger.signature.secret`: longer than 1024 bytes"]
        );
        let found = problems(
            json!({"type": "webhook", "signature": {"scheme": "github", "secret": "k", "algo": "x"}}),
        );
        assert!(found[0].contains("unknown field `algo`"), "{found:?}");
        let found =
            problems(json!({"type": "manual", "signature": {"scheme": "github", "secret": "k"}}));
        assert!(found[0].contains("unknown field `signature`"), "{found:?}");
    }

    #[test]
    fn schedule_triggers_are_parsed_and_their_problems_named() {
        let scenario = with_trigger(
            json!({"type": "schedule", "cron": "*/5 * * * *", "timezone": "Europe/Paris"}),
        )
        .expect("valid");
        assert_eq!(scenario.trigger, TriggerKind::Schedule);
        assert_eq!(
            scenario.schedule.map(|s| s.to_string()),
            Some("`*/5 * * * *` in Europe/Paris".to_owned())
        );
        assert!(scenario.signature.is_none());
        let utc = with_trigger(json!({"type": "schedule", "cron": "0 30 9 * * 1-5"}))
            .expect("valid: 6 fields, seconds first, UTC by default");
        assert_eq!(
            utc.schedule.map(|s| s.to_string()),
            Some("`0 30 9 * * 1-5` in UTC".to_owned())
        );

        let problems =
            |trigger: Value| -> Vec<Problem> { with_trigger(trigger).expect_err("invalid").0 };
        let found = problems(json!({"type": "schedule", "cron": "every day", "timezone": "Paris"}));
        let fields: Vec<&str> = found.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["trigger.timezone", "trigger.cron"], "{found:?}");
        assert!(
            found[0].message.contains("unknown time zone `Paris`"),
            "{found:?}"
        );
        assert!(found[1].message.contains("has 2 fields"), "{found:?}");
        let found = problems(json!({"type": "schedule"}));
        assert_eq!(found[0].field, "trigger.cron", "{found:?}");
        let found = problems(json!({"type": "schedule", "cron": "* * * * *", "signature": {}}));
        assert!(
            found[0].message.contains("unknown field `signature`"),
            "{found:?}"
        );
        assert_eq!(TriggerKind::Schedule.as_str(), "schedule");
    }

    #[test]
    fn poll_triggers_are_parsed_and_their_problems_named() {
        let connection = ConnectionId::generate();
        let trigger = json!({"type": "poll", "connector": "github", "trigger": "new_issue",
                             "connection": connection.to_string(), "interval": "90s"});
        let scenario = with_trigger(trigger.clone()).expect("valid");
        let expected = PollTrigger {
            connector: "github".into(),
            trigger: "new_issue".into(),
            connection: Some(connection),
            interval: Some(Duration::from_secs(90)),
        };
        assert_eq!(scenario.trigger, TriggerKind::Poll);
        assert_eq!(scenario.poll.as_ref(), Some(&expected));
        assert_eq!(PollTrigger::parse(&trigger), Ok(expected));
        assert_eq!(TriggerKind::Poll.as_str(), "poll");

        let defaults = with_trigger(json!({"type": "poll", "connector": "acme", "trigger": "new"}))
            .expect("valid: no connection, the manifest's interval");
        assert_eq!(
            defaults.poll,
            Some(PollTrigger {
                connector: "acme".into(),
                trigger: "new".into(),
                connection: None,
                interval: None,
            })
        );

        let problems = |trigger: Value| -> Vec<String> {
            with_trigger(trigger)
                .expect_err("invalid")
                .0
                .iter()
                .map(Problem::to_string)
                .collect()
        };
        assert_eq!(
            problems(json!({"type": "poll", "connector": " "})),
            [
                "field `trigger.connector`: required: the key of the connector that is polled",
                "field `trigger.trigger`: required: the key of the connector's poll trigger",
            ]
        );
        assert_eq!(
            problems(
                json!({"type": "poll", "connector": "a", "trigger": "b", "connection": "mine"})
            ),
            ["field `trigger.connection`: `mine` is not a connection id"]
        );
        assert_eq!(
            problems(
                json!({"type": "poll", "connector": "a", "trigger": "b", "interval": "500ms"})
            ),
            ["field `trigger.interval`: at least 1s (every poll calls the connector's API)"]
        );
        let found = problems(
            json!({"type": "poll", "connector": "a", "trigger": "b", "interval": "often"}),
        );
        assert!(
            found.len() == 1 && found[0].contains("`often` is not a duration"),
            "{found:?}"
        );
        let found = problems(
            json!({"type": "poll", "connector": "a", "trigger": "b", "cron": "* * * * *"}),
        );
        assert!(found[0].contains("unknown field `cron`"), "{found:?}");

        let not_poll = PollTrigger::parse(&json!({"type": "manual"})).expect_err("manual");
        assert_eq!(
            not_poll.to_string(),
            "field `trigger.type`: not a poll trigger"
        );
        let stored_bad = PollTrigger::parse(&json!({"type": "poll", "connector": "a"}))
            .expect_err("no trigger key");
        assert_eq!(stored_bad.0[0].field, "trigger.trigger");
    }
}
