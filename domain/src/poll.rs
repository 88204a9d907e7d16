//! What a poll trigger asks and how its answers are read (architecture §5): the trigger
//! found in its manifest, how often it polls and how long it waits after failures, the
//! request of each page, and the items, ids and next cursor read from an answer. The
//! scheduler's `polls` sends the requests and records what they found.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::connector;
use crate::manifest::{Cursor, Manifest, RequestSpec, Trigger};
use crate::scenario::MIN_POLL_INTERVAL;

/// The poll trigger `key` of a manifest, as a poll needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollSpec<'a> {
    pub interval: &'a str,
    pub request: &'a RequestSpec,
    pub items: &'a str,
    pub id: &'a str,
    pub cursor: Option<&'a Cursor>,
}

/// Finds the poll trigger `key`; `Err` says why there is none.
pub fn poll_spec<'a>(manifest: &'a Manifest, key: &str) -> Result<PollSpec<'a>, String> {
    let polls = || {
        manifest
            .triggers
            .iter()
            .filter(|t| matches!(t, Trigger::Poll { .. }))
            .map(Trigger::key)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match manifest.triggers.iter().find(|t| t.key() == key) {
        Some(Trigger::Poll {
            interval,
            request,
            items,
            id,
            cursor,
            ..
        }) => Ok(PollSpec {
            interval,
            request,
            items,
            id,
            cursor: cursor.as_ref(),
        }),
        Some(Trigger::Webhook { .. }) => Err(format!(
            "trigger `{key}` of connector `{}` is a webhook trigger, not a poll trigger (its poll triggers: {})",
            manifest.key,
            polls()
        )),
        None => Err(format!(
            "connector `{}` has no trigger `{key}` (its poll triggers: {})",
            manifest.key,
            polls()
        )),
    }
}

/// The interval of a trigger whose manifest is unknown (a failed poll still waits).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// How often to poll: the scenario's interval, or the manifest's, never below the minimum.
pub fn interval(chosen: Option<Duration>, manifest: Option<&str>) -> Duration {
    // The manifest's interval was checked when it was registered.
    let interval = chosen
        .or_else(|| manifest.and_then(|text| humantime::parse_duration(text).ok()))
        .unwrap_or(DEFAULT_INTERVAL);
    interval.max(MIN_POLL_INTERVAL)
}

/// How long to wait after the `failures`-th failed poll in a row: the interval doubled
/// for each, up to `max` (but never less than the interval), and at least what the
/// upstream asked for in `Retry-After`.
pub fn backoff(
    interval: Duration,
    failures: u32,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let doubled = interval.saturating_mul(2u32.saturating_pow(failures.min(31)));
    let capped = doubled.min(max.max(interval));
    capped.max(retry_after.unwrap_or_default())
}

/// The items of one answer, with their ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Items {
    /// Each item with its id, in the order of the answer; an id listed twice only once.
    pub found: Vec<(String, Value)>,
    /// Items whose id path finds nothing: they cannot be told apart, so they are skipped.
    pub without_id: usize,
}

/// Reads the items of a poll's answer (`{status, headers, body}`) with the manifest's
/// `items` path, and each item's id with its `id` path. Ids are compared as text.
pub fn read_items(answer: &Value, items_path: &str, id_path: &str) -> Result<Items, String> {
    let items = match connector::select(items_path, answer)? {
        Value::Array(items) => items,
        Value::Null => {
            return Err(format!(
                "the answer has nothing at `{items_path}`, where the trigger's items should be"
            ));
        }
        other => {
            return Err(format!(
                "the answer has {} at `{items_path}`, not a list of items",
                kind_of(&other)
            ));
        }
    };
    let mut seen = HashSet::new();
    let mut found = Vec::with_capacity(items.len());
    let mut without_id = 0;
    for item in items {
        let id = match connector::select(id_path, &item)? {
            Value::Null => None,
            Value::String(text) => Some(text),
            // Arrays come from a path that selects several values: not one identity.
            Value::Array(_) => None,
            other => Some(other.to_string()),
        };
        match id {
            Some(id) if !id.is_empty() => {
                if seen.insert(id.clone()) {
                    found.push((id, item));
                }
            }
            _ => without_id += 1,
        }
    }
    Ok(Items { found, without_id })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The cursor of the next page, when the answer has one: text or a number at the
/// cursor's `next` path; null, absent or empty ends the poll.
pub fn next_cursor(answer: &Value, cursor: &Cursor) -> Result<Option<String>, String> {
    match connector::select(&cursor.next, answer)? {
        Value::Null => Ok(None),
        Value::String(text) if text.is_empty() => Ok(None),
        Value::String(text) => Ok(Some(text)),
        Value::Number(number) => Ok(Some(number.to_string())),
        other => Err(format!(
            "the answer has {} at `{}`, not a cursor (text or a number)",
            kind_of(&other),
            cursor.next
        )),
    }
}

/// The request of one page and the input its templates see. The cursor goes in as
/// `input.cursor`, never into a template: it comes from the upstream, and text with
/// `{{` in it would otherwise be rendered.
pub fn page_request(
    request: &RequestSpec,
    cursor: Option<(&Cursor, &str)>,
) -> (RequestSpec, Value) {
    let mut request = request.clone();
    let Some((cursor, value)) = cursor else {
        return (request, json!({}));
    };
    request
        .query
        .insert(cursor.param.clone(), json!("{{ input.cursor }}"));
    (request, json!({ "cursor": value }))
}

/// The payload of a run started by a polled item, shaped like every trigger
/// (`trigger.body` is the item).
pub fn trigger(item: Value) -> Value {
    json!({"body": item, "headers": {}, "query": {}, "method": "POLL"})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;

    fn manifest() -> Manifest {
        manifest::validate(&json!({
            "key": "acme", "name": "Acme", "version": "1.0.0", "base_url": "https://acme.test",
            "actions": [{"key": "get", "name": "Get", "request": {"method": "GET", "path": "/x"}}],
            "triggers": [
                {"kind": "poll", "key": "new_contact", "name": "New contact", "interval": "5m",
                 "request": {"method": "GET", "path": "/contacts", "query": {"limit": 50}},
                 "items": "$.body.data", "id": "$.id",
                 "cursor": {"param": "after", "next": "$.body.next"}},
                {"kind": "webhook", "key": "deleted", "name": "Deleted", "signature": "github"}
            ]
        }))
        .expect("a valid manifest")
    }

    #[test]
    fn the_poll_trigger_is_found_by_key_and_other_triggers_are_named() {
        let manifest = manifest();
        let spec = poll_spec(&manifest, "new_contact").expect("a poll trigger");
        assert_eq!(
            (
                spec.interval,
                spec.items,
                spec.id,
                spec.request.path.as_str()
            ),
            ("5m", "$.body.data", "$.id", "/contacts")
        );
        assert_eq!(spec.cursor.map(|c| c.param.as_str()), Some("after"));
        assert_eq!(
            poll_spec(&manifest, "deleted"),
            Err("trigger `deleted` of connector `acme` is a webhook trigger, not a poll trigger (its poll triggers: new_contact)".into())
        );
        assert_eq!(
            poll_spec(&manifest, "gone"),
            Err("connector `acme` has no trigger `gone` (its poll triggers: new_contact)".into())
        );
    }

    #[test]
    fn the_interval_is_the_scenarios_or_the_manifests_and_never_below_the_minimum() {
        assert_eq!(
            interval(Some(Duration::from_secs(2)), Some("5m")),
            Duration::from_secs(2)
        );
        assert_eq!(interval(None, Some("5m")), Duration::from_secs(300));
        assert_eq!(interval(None, Some("0s")), MIN_POLL_INTERVAL);
        assert_eq!(interval(None, None), DEFAULT_INTERVAL);
        assert_eq!(
            interval(Some(Duration::from_millis(10)), Some("5m")),
            MIN_POLL_INTERVAL
        );
    }

    #[test]
    fn failures_double_the_wait_up_to_the_cap_and_honour_retry_after() {
        let minute = Duration::from_secs(60);
        let hour = Duration::from_secs(3600);
        let waits: Vec<u64> = (1..=7)
            .map(|failures| backoff(minute, failures, hour, None).as_secs())
            .collect();
        assert_eq!(waits, [120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(minute, u32::MAX, hour, None), hour);
        // A cap below the interval never makes a failing trigger poll faster.
        assert_eq!(backoff(hour, 3, minute, None), hour);
        assert_eq!(
            backoff(minute, 1, hour, Some(Duration::from_secs(900))),
            Duration::from_secs(900)
        );
        assert_eq!(
            backoff(minute, 1, hour, Some(Duration::from_secs(5))),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn items_are_read_with_their_ids_as_text_in_answer_order() {
        let answer = json!({"status": 200, "body": {"data": [
            {"id": 7, "name": "a"}, {"id": "x-1"}, {"name": "no id"}, {"id": 7, "name": "again"},
            {"id": ""}, {"id": true}
        ]}});
        let items = read_items(&answer, "$.body.data", "$.id").expect("items");
        let ids: Vec<&str> = items.found.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["7", "x-1", "true"]);
        assert_eq!(items.found[0].1["name"], "a", "the first of a repeated id");
        assert_eq!(items.without_id, 2);

        let nested = json!({"body": {"pages": [{"items": [{"id": 1}]}, {"items": [{"id": 2}]}]}});
        let items = read_items(&nested, "$.body.pages[*].items[*]", "$.id").expect("items");
        assert_eq!(
            items.found.len(),
            2,
            "a path selecting several values lists them"
        );

        let top = json!({"body": [{"id": 1}]});
        assert_eq!(
            read_items(&top, "$.body", "$.id")
                .expect("a body that is the list")
                .found
                .len(),
            1
        );
    }

    #[test]
    fn an_answer_without_the_list_says_what_it_found() {
        let answer = json!({"body": {"data": {"id": 1}}});
        assert_eq!(
            read_items(&answer, "$.body.data", "$.id"),
            Err("the answer has an object at `$.body.data`, not a list of items".into())
        );
        assert_eq!(
            read_items(&answer, "$.body.items", "$.id"),
            Err(
                "the answer has nothing at `$.body.items`, where the trigger's items should be"
                    .into()
            )
        );
        assert!(read_items(&answer, "$[", "$.id").is_err());
    }

    #[test]
    fn the_next_cursor_is_text_or_a_number_and_absent_ends_the_poll() {
        let cursor = Cursor {
            param: "after".into(),
            next: "$.body.next".into(),
        };
        let next = |body: Value| next_cursor(&json!({ "body": body }), &cursor);
        assert_eq!(next(json!({"next": "c2"})), Ok(Some("c2".into())));
        assert_eq!(next(json!({"next": 40})), Ok(Some("40".into())));
        assert_eq!(next(json!({"next": null})), Ok(None));
        assert_eq!(next(json!({"next": ""})), Ok(None));
        assert_eq!(next(json!({})), Ok(None));
        assert_eq!(
            next(json!({"next": {"page": 2}})),
            Err(
                "the answer has an object at `$.body.next`, not a cursor (text or a number)".into()
            )
        );
    }

    #[test]
    fn a_page_request_carries_the_cursor_as_input_never_as_a_template() {
        let manifest = manifest();
        let spec = poll_spec(&manifest, "new_contact").expect("a poll trigger");
        let cursor = spec.cursor.expect("a cursor");
        let (first, input) = page_request(spec.request, None);
        assert_eq!(&first, spec.request);
        assert_eq!(input, json!({}));

        let (next, input) = page_request(spec.request, Some((cursor, "{{ 7 * 7 }}")));
        assert_eq!(next.query["after"], json!("{{ input.cursor }}"));
        assert_eq!(next.query["limit"], json!(50));
        assert_eq!(input, json!({"cursor": "{{ 7 * 7 }}"}));
        let call = crate::messages::ActionCall::new(
            &manifest,
            &manifest::Action {
                key: String::new(),
                name: String::new(),
                description: None,
                input_schema: Value::Null,
                output_schema: Value::Null,
                request: next,
                response: Default::default(),
                idempotency: None,
            },
            None,
        );
        let prepared = connector::prepare(&call, &input, &crate::template::Templates::new())
            .expect("the request renders");
        assert_eq!(
            prepared.url.as_str(),
            "https://acme.test/contacts?after=%7B%7B+7+*+7+%7D%7D&limit=50",
            "the cursor is sent as it came"
        );
    }

    #[test]
    fn a_polled_run_is_triggered_like_any_other() {
        assert_eq!(
            trigger(json!({"id": 3})),
            json!({"body": {"id": 3}, "headers": {}, "query": {}, "method": "POLL"})
        );
    }
}
