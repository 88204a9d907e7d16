//! The built-in Slack and GitHub manifests, executed by the worker's engine against a local
//! server standing in for the provider: every action sends the method, path, query,
//! headers and body that the provider's API reference prescribes, and its output mapping
//! reads the response the reference documents.
//!
//! References: Slack Web API methods (https://docs.slack.dev/reference/methods/<method>,
//! and the OpenAPI description in shared/specs/slack-web-openapi-v2.json); GitHub REST
//! API version 2022-11-28 (https://docs.github.com/rest/issues/issues#create-an-issue,
//! …/issues/comments#create-an-issue-comment, …/issues/labels#add-labels-to-an-issue,
//! …/repos/repos#get-a-repository, …/releases/releases#create-a-release).

use chrono::Utc;
use serde_json::{Value, json};
use weft_domain::connector::{self, Credentials};
use weft_domain::crypto::KeyRing;
use weft_domain::ids::{ConnectionId, RunId, WorkspaceId};
use weft_domain::manifest::{self, Auth, InputSchemas, Manifest, Trigger};
use weft_domain::messages::{ActionCall, ErrorClass, NodeTask, SealedConnection, VERSION};
use weft_domain::template::Templates;
use weft_runtime::egress::EgressPolicy;
use weft_testkit::{Recorded, Reply, Upstream};
use weft_worker::engine::{Engine, Execution};

/// A key ring for these tests only.
const KEYS: &str = "test:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const SLACK_TOKEN: &str = "xoxb-weft-test-bot-token";
const GITHUB_TOKEN: &str = "github_pat_weft_test_token";
const SLACK_JSON: &str = "application/json; charset=utf-8";

fn keys() -> KeyRing {
    KEYS.parse().expect("the test key ring parses")
}

fn engine() -> Engine {
    let loopback = EgressPolicy::new(vec!["127.0.0.0/8".parse().expect("a CIDR rule")]);
    Engine::new(loopback, keys(), 1 << 20).expect("the engine builds")
}

fn slack() -> &'static Manifest {
    manifest::builtin("slack").expect("slack is built in")
}

fn github() -> &'static Manifest {
    manifest::builtin("github").expect("github is built in")
}

/// A Slack connection after the OAuth flow: its bot token does not expire (no token
/// rotation), so nothing is refreshed.
fn slack_credentials() -> Value {
    json!({"client_id": "3336676.569200954261", "client_secret": "2141029472.691202649728",
           "access_token": SLACK_TOKEN})
}

fn github_credentials() -> Value {
    json!({"token": GITHUB_TOKEN})
}

/// The task a scheduler would dispatch for `action` through a connection whose
/// `config.base_url` points at `base_url`. The input must pass the action's input schema,
/// as the scheduler checks before dispatch.
fn task(
    manifest: &Manifest,
    action: &str,
    input: Value,
    base_url: &str,
    credentials: &Value,
) -> NodeTask {
    let action = manifest
        .action(action)
        .unwrap_or_else(|| panic!("{} has no action {action}", manifest.key));
    if let Err(problem) = InputSchemas::new().check(&action.input_schema, &input) {
        panic!(
            "{}.{}: the test input is invalid: {problem}",
            manifest.key, action.key
        );
    }
    let workspace_id = WorkspaceId::generate();
    let connection_id = ConnectionId::generate();
    let sealed = Credentials::parse(credentials.to_string().as_bytes())
        .expect("credentials are a JSON object of text")
        .seal(&keys(), workspace_id, connection_id);
    let connection = SealedConnection {
        id: connection_id,
        config: json!({ "base_url": base_url }),
        credentials: Some(sealed),
    };
    NodeTask {
        v: VERSION,
        run_id: RunId::generate(),
        workspace_id,
        node_id: action.key.clone(),
        item_index: None,
        attempt: 1,
        connector: manifest.key.clone(),
        action: action.key.clone(),
        input,
        timeout_ms: 10_000,
        ready_at: Utc::now(),
        not_before: None,
        call: Some(Box::new(ActionCall::new(
            manifest,
            action,
            Some(connection),
        ))),
        reply_to: None,
    }
}

/// One action call and what the provider's reference says it must look like on the wire.
struct Case {
    action: &'static str,
    input: Value,
    method: &'static str,
    path: &'static str,
    /// Every query parameter, in any order.
    query: Vec<(&'static str, &'static str)>,
    /// The exact JSON body, or `None` for a request without one.
    body: Option<Value>,
    /// What the stand-in answers, as the reference documents it.
    reply: Reply,
    output: Value,
}

fn header<'a>(recorded: &'a Recorded, name: &str) -> Option<&'a str> {
    recorded.headers.get(name).and_then(|v| v.to_str().ok())
}

fn sorted_query(query: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    pairs.sort();
    pairs
}

/// Runs `case` through the engine and checks the one request the stand-in received;
/// returns it for provider-specific header checks.
async fn run(
    manifest: &Manifest,
    credentials: &Value,
    upstream: &Upstream,
    engine: &Engine,
    case: Case,
) -> Recorded {
    let what = format!("{}.{}", manifest.key, case.action);
    upstream.script(case.path, vec![case.reply]);
    let task = task(
        manifest,
        case.action,
        case.input,
        &upstream.url,
        credentials,
    );
    let Execution {
        result, connection, ..
    } = engine.execute(&task).await;
    assert_eq!(result, Ok(case.output), "{what}: output");
    assert_eq!(connection, None, "{what}: the connection needs no change");

    let received = upstream.received_on(case.path);
    assert_eq!(received.len(), 1, "{what}: one request to {}", case.path);
    let request = received.into_iter().next().expect("one request");
    assert_eq!(request.method, case.method, "{what}: method");
    let mut query: Vec<(String, String)> = case
        .query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    query.sort();
    assert_eq!(sorted_query(&request.query), query, "{what}: query");
    match case.body {
        Some(body) => assert_eq!(request.body, body, "{what}: JSON body"),
        None => {
            assert_eq!(request.body, json!(""), "{what}: no body");
            assert_eq!(
                header(&request, "content-type"),
                None,
                "{what}: no content type"
            );
        }
    }
    request
}

#[test]
fn both_manifests_load_with_their_actions_auth_and_triggers() {
    let keys_of = |m: &Manifest| m.actions.iter().map(|a| a.key.clone()).collect::<Vec<_>>();
    let triggers_of = |m: &Manifest| {
        m.triggers
            .iter()
            .map(|t| match t {
                Trigger::Webhook {
                    key,
                    signature,
                    event,
                    ..
                } => format!(
                    "{key}:webhook:{signature}:{}",
                    event.as_deref().unwrap_or("")
                ),
                Trigger::Poll { key, interval, .. } => format!("{key}:poll:{interval}"),
            })
            .collect::<Vec<_>>()
    };

    let slack = slack();
    assert_eq!(
        keys_of(slack),
        [
            "send_message",
            "update_message",
            "add_reaction",
            "list_channels",
            "lookup_user_by_email"
        ]
    );
    let Auth::Oauth2(oauth) = &slack.auth else {
        panic!("Slack connects through OAuth2, not {}", slack.auth.kind());
    };
    assert_eq!(
        oauth.authorize_url.as_deref(),
        Some("https://slack.com/oauth/v2/authorize")
    );
    assert_eq!(oauth.token_url, "https://slack.com/api/oauth.v2.access");
    assert_eq!(
        oauth.scope_separator, ",",
        "Slack wants comma-separated scopes"
    );
    for scope in [
        "chat:write",
        "reactions:write",
        "channels:read",
        "users:read",
        "users:read.email",
    ] {
        assert!(
            oauth.scopes.iter().any(|s| s == scope),
            "Slack scopes lack {scope}"
        );
    }
    assert_eq!(
        triggers_of(slack),
        [
            "message:webhook:slack:message",
            "app_mention:webhook:slack:app_mention",
            "reaction_added:webhook:slack:reaction_added",
            "member_joined_channel:webhook:slack:member_joined_channel"
        ]
    );

    let github = github();
    assert_eq!(
        keys_of(github),
        [
            "create_issue",
            "comment_on_issue",
            "add_labels",
            "get_repository",
            "create_release"
        ]
    );
    assert_eq!(github.auth, Auth::Bearer);
    assert_eq!(
        triggers_of(github),
        [
            "issues:webhook:github:issues",
            "issue_comment:webhook:github:issue_comment",
            "pull_request:webhook:github:pull_request",
            "push:webhook:github:push",
            "release:webhook:github:release",
            "new_issue:poll:60s"
        ]
    );
}

#[tokio::test]
async fn every_slack_action_sends_what_the_web_api_reference_prescribes() {
    let upstream = Upstream::start().await;
    let engine = engine();
    let message = json!({"type": "message", "subtype": "bot_message", "text": "Deploy finished",
                         "ts": "1712345679.000200", "bot_id": "B19LU7CSY"});
    let channels = json!([{"id": "C012AB3CD", "name": "general", "is_channel": true},
                          {"id": "C061EG9T2", "name": "random", "is_channel": true}]);
    let user = json!({"id": "W012A3CDE", "team_id": "T012AB3C4", "name": "spengler",
                      "real_name": "Egon Spengler",
                      "profile": {"email": "spengler@ghostbusters.example.com"}});
    let blocks =
        json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy* finished"}}]);
    let cases = vec![
        Case {
            action: "send_message",
            input: json!({"channel": "C0123456789", "text": "Deploy finished", "blocks": blocks,
                          "thread_ts": "1712345678.000100", "unfurl_links": false}),
            method: "POST",
            path: "/chat.postMessage",
            query: vec![],
            body: Some(
                json!({"channel": "C0123456789", "text": "Deploy finished", "blocks": blocks,
                              "thread_ts": "1712345678.000100", "unfurl_links": false}),
            ),
            reply: Reply::json(
                200,
                json!({"ok": true, "channel": "C0123456789",
                                           "ts": "1712345679.000200", "message": message}),
            ),
            output: json!({"ts": "1712345679.000200", "channel": "C0123456789", "message": message}),
        },
        Case {
            action: "update_message",
            input: json!({"channel": "C0123456789", "ts": "1712345679.000200",
                          "text": "Deploy finished: all green"}),
            method: "POST",
            path: "/chat.update",
            query: vec![],
            body: Some(json!({"channel": "C0123456789", "ts": "1712345679.000200",
                              "text": "Deploy finished: all green"})),
            reply: Reply::json(
                200,
                json!({"ok": true, "channel": "C0123456789",
                                           "ts": "1712345679.000200",
                                           "text": "Deploy finished: all green",
                                           "message": {"text": "Deploy finished: all green"}}),
            ),
            output: json!({"ts": "1712345679.000200", "channel": "C0123456789",
                           "text": "Deploy finished: all green"}),
        },
        Case {
            action: "add_reaction",
            input: json!({"channel": "C0123456789", "name": "white_check_mark",
                          "timestamp": "1712345679.000200"}),
            method: "POST",
            path: "/reactions.add",
            query: vec![],
            body: Some(json!({"channel": "C0123456789", "name": "white_check_mark",
                              "timestamp": "1712345679.000200"})),
            reply: Reply::json(200, json!({"ok": true})),
            output: json!({"ok": true}),
        },
        Case {
            action: "list_channels",
            input: json!({"types": "public_channel,private_channel", "exclude_archived": true,
                          "limit": 200, "cursor": "dXNlcjpVMDYxTkZUVDI="}),
            method: "GET",
            path: "/conversations.list",
            query: vec![
                ("types", "public_channel,private_channel"),
                ("exclude_archived", "true"),
                ("limit", "200"),
                ("cursor", "dXNlcjpVMDYxTkZUVDI="),
            ],
            body: None,
            reply: Reply::json(
                200,
                json!({"ok": true, "channels": channels,
                                           "response_metadata": {"next_cursor": "dGVhbTpDMDYxRkE1UEI="}}),
            ),
            output: json!({"channels": channels, "next_cursor": "dGVhbTpDMDYxRkE1UEI="}),
        },
        Case {
            action: "lookup_user_by_email",
            input: json!({"email": "spengler@ghostbusters.example.com"}),
            method: "GET",
            path: "/users.lookupByEmail",
            query: vec![("email", "spengler@ghostbusters.example.com")],
            body: None,
            reply: Reply::json(200, json!({"ok": true, "user": user})),
            output: json!({"id": "W012A3CDE", "name": "spengler", "real_name": "Egon Spengler",
                           "user": user}),
        },
    ];
    let count = cases.len();
    for case in cases {
        let writes = case.method == "POST";
        let what = case.action;
        let request = run(slack(), &slack_credentials(), &upstream, &engine, case).await;
        assert_eq!(
            header(&request, "authorization"),
            Some(format!("Bearer {SLACK_TOKEN}").as_str()),
            "{what}: Slack takes the token as a bearer header"
        );
        if writes {
            assert_eq!(
                header(&request, "content-type"),
                Some(SLACK_JSON),
                "{what}: Slack reads JSON bodies with this content type"
            );
        }
    }
    assert_eq!(
        upstream.received().len(),
        count,
        "one request per action, and none to the token endpoint"
    );
}

#[tokio::test]
async fn a_slack_answer_with_ok_false_fails_the_node_permanently_with_slacks_error() {
    let upstream = Upstream::start().await;
    upstream.script(
        "/chat.postMessage",
        vec![Reply::json(
            200,
            json!({"ok": false, "error": "channel_not_found"}),
        )],
    );
    let task = task(
        slack(),
        "send_message",
        json!({"channel": "C0000000000", "text": "hello"}),
        &upstream.url,
        &slack_credentials(),
    );
    let error = engine()
        .execute(&task)
        .await
        .result
        .expect_err("ok: false is a failure whatever the status");
    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(
        error.message.contains("channel_not_found"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn every_github_action_sends_what_the_rest_reference_prescribes() {
    let upstream = Upstream::start().await;
    let engine = engine();
    let issue_url = "https://github.com/octo-org/hello-world/issues/1347";
    let labels = json!([
        {"id": 208045946, "node_id": "MDU6TGFiZWwyMDgwNDU5NDY=", "name": "bug", "color": "f29513", "default": true},
        {"id": 208045947, "node_id": "MDU6TGFiZWwyMDgwNDU5NDc=", "name": "enhancement", "color": "a2eeef", "default": false}
    ]);
    let bug = labels[0].clone();
    let cases = vec![
        Case {
            action: "create_issue",
            input: json!({"owner": "octo-org", "repo": "hello-world", "title": "Found a bug",
                          "body": "I'm having a problem with this.", "assignees": ["octocat"],
                          "milestone": 1, "labels": ["bug"]}),
            method: "POST",
            path: "/repos/octo-org/hello-world/issues",
            query: vec![],
            body: Some(
                json!({"title": "Found a bug", "body": "I'm having a problem with this.",
                              "assignees": ["octocat"], "milestone": 1, "labels": ["bug"]}),
            ),
            reply: Reply::json(
                201,
                json!({"id": 1, "node_id": "MDU6SXNzdWUx", "number": 1347,
                                           "url": "https://api.github.com/repos/octo-org/hello-world/issues/1347",
                                           "html_url": issue_url, "state": "open",
                                           "title": "Found a bug", "labels": [bug]}),
            ),
            output: json!({"id": 1, "number": 1347, "html_url": issue_url,
                           "url": "https://api.github.com/repos/octo-org/hello-world/issues/1347",
                           "state": "open", "title": "Found a bug"}),
        },
        Case {
            action: "comment_on_issue",
            input: json!({"owner": "octo-org", "repo": "hello-world", "issue_number": 1347,
                          "body": "Me too"}),
            method: "POST",
            path: "/repos/octo-org/hello-world/issues/1347/comments",
            query: vec![],
            body: Some(json!({"body": "Me too"})),
            reply: Reply::json(
                201,
                json!({"id": 1, "body": "Me too",
                                           "html_url": format!("{issue_url}#issuecomment-1"),
                                           "created_at": "2011-04-14T16:00:49Z"}),
            ),
            output: json!({"id": 1, "html_url": format!("{issue_url}#issuecomment-1"),
                           "created_at": "2011-04-14T16:00:49Z"}),
        },
        Case {
            action: "add_labels",
            input: json!({"owner": "octo-org", "repo": "hello-world", "issue_number": 1347,
                          "labels": ["bug", "enhancement"]}),
            method: "POST",
            path: "/repos/octo-org/hello-world/issues/1347/labels",
            query: vec![],
            body: Some(json!({"labels": ["bug", "enhancement"]})),
            reply: Reply::json(200, labels.clone()),
            output: json!({"labels": labels}),
        },
        Case {
            action: "get_repository",
            input: json!({"owner": "octo-org", "repo": "hello-world"}),
            method: "GET",
            path: "/repos/octo-org/hello-world",
            query: vec![],
            body: None,
            reply: Reply::json(
                200,
                json!({"id": 1296269, "full_name": "octo-org/hello-world",
                                           "html_url": "https://github.com/octo-org/hello-world",
                                           "description": "This your first repo!",
                                           "default_branch": "main", "private": false,
                                           "visibility": "public", "stargazers_count": 80,
                                           "open_issues_count": 0, "forks_count": 9}),
            ),
            output: json!({"id": 1296269, "full_name": "octo-org/hello-world",
                           "html_url": "https://github.com/octo-org/hello-world",
                           "description": "This your first repo!", "default_branch": "main",
                           "private": false, "visibility": "public", "stargazers_count": 80,
                           "open_issues_count": 0}),
        },
        Case {
            action: "create_release",
            input: json!({"owner": "octo-org", "repo": "hello-world", "tag_name": "v1.0.0",
                          "target_commitish": "main", "name": "v1.0.0",
                          "body": "Description of the release", "draft": false,
                          "prerelease": false, "generate_release_notes": false}),
            method: "POST",
            path: "/repos/octo-org/hello-world/releases",
            query: vec![],
            body: Some(
                json!({"tag_name": "v1.0.0", "target_commitish": "main", "name": "v1.0.0",
                              "body": "Description of the release", "draft": false,
                              "prerelease": false, "generate_release_notes": false}),
            ),
            reply: Reply::json(
                201,
                json!({"id": 1,
                                           "html_url": "https://github.com/octo-org/hello-world/releases/v1.0.0",
                                           "upload_url": "https://uploads.github.com/repos/octo-org/hello-world/releases/1/assets{?name,label}",
                                           "tag_name": "v1.0.0", "draft": false, "prerelease": false}),
            ),
            output: json!({"id": 1,
                           "html_url": "https://github.com/octo-org/hello-world/releases/v1.0.0",
                           "upload_url": "https://uploads.github.com/repos/octo-org/hello-world/releases/1/assets{?name,label}",
                           "tag_name": "v1.0.0", "draft": false, "prerelease": false}),
        },
    ];
    for case in cases {
        let writes = case.method == "POST";
        let what = case.action;
        let request = run(github(), &github_credentials(), &upstream, &engine, case).await;
        assert_eq!(
            header(&request, "authorization"),
            Some(format!("Bearer {GITHUB_TOKEN}").as_str()),
            "{what}: the token goes in a bearer header"
        );
        assert_eq!(
            header(&request, "accept"),
            Some("application/vnd.github+json"),
            "{what}"
        );
        assert_eq!(
            header(&request, "x-github-api-version"),
            Some("2022-11-28"),
            "{what}"
        );
        assert!(
            header(&request, "user-agent").is_some_and(|ua| !ua.is_empty()),
            "{what}: GitHub refuses requests without a User-Agent"
        );
        if writes {
            assert_eq!(
                header(&request, "content-type"),
                Some("application/json"),
                "{what}"
            );
        }
    }
}

#[test]
fn the_github_poll_trigger_lists_the_connections_repository_issues_newest_first() {
    let github = github();
    let Some(Trigger::Poll {
        request, items, id, ..
    }) = github.triggers.iter().find(|t| t.key() == "new_issue")
    else {
        panic!("github has a new_issue poll trigger");
    };
    let call = ActionCall {
        base_url: github.base_url.clone(),
        auth: github.auth.clone(),
        request: (**request).clone(),
        response: Default::default(),
        idempotency: None,
        connection: Some(SealedConnection {
            id: ConnectionId::generate(),
            config: json!({"owner": "octo-org", "repo": "hello-world"}),
            credentials: None,
        }),
    };
    let prepared =
        connector::prepare(&call, &json!({}), &Templates::new()).expect("the poll request renders");
    assert_eq!(prepared.method.as_str(), "GET");
    assert_eq!(
        prepared.url.path(),
        "/repos/octo-org/hello-world/issues",
        "{}",
        prepared.url
    );
    assert_eq!(prepared.url.host_str(), Some("api.github.com"));
    assert_eq!(
        sorted_query(prepared.url.query().unwrap_or_default()),
        sorted_query("state=all&sort=created&direction=desc&per_page=100")
    );
    let page = json!({"status": 200, "headers": {},
                      "body": [{"id": 2, "number": 1348}, {"id": 1, "number": 1347}]});
    let found = connector::select(items, &page).expect("items is a JSONPath");
    let ids: Vec<Value> = found
        .as_array()
        .expect("the list of issues")
        .iter()
        .map(|item| connector::select(id, item).expect("id is a JSONPath"))
        .collect();
    assert_eq!(ids, [json!(2), json!(1)]);
}

#[test]
fn inputs_missing_what_the_apis_require_are_refused_naming_the_field() {
    let schemas = InputSchemas::new();
    let refused = |manifest: &Manifest, action: &str, input: Value, field: &str| {
        let schema = &manifest.action(action).expect("action exists").input_schema;
        let problem = schemas
            .check(schema, &input)
            .expect_err(&format!("{}.{action} must refuse {input}", manifest.key));
        assert!(
            problem.contains(field),
            "{}.{action}: `{problem}` does not name {field}",
            manifest.key
        );
    };
    let (slack, github) = (slack(), github());
    let blocks = json!([{"type": "divider"}]);
    for (action, input) in [
        ("send_message", json!({"channel": "C1", "blocks": blocks})),
        (
            "update_message",
            json!({"channel": "C1", "ts": "1.2", "attachments": [{"text": "a"}]}),
        ),
    ] {
        let schema = &slack.action(action).expect("action exists").input_schema;
        assert_eq!(
            schemas.check(schema, &input),
            Ok(()),
            "{action}: blocks or attachments stand in for text"
        );
    }
    // chat.postMessage and chat.update need text unless blocks or attachments are given.
    refused(
        slack,
        "send_message",
        json!({"channel": "C1"}),
        "input.text",
    );
    refused(
        slack,
        "send_message",
        json!({"text": "hi"}),
        "input.channel",
    );
    refused(
        slack,
        "update_message",
        json!({"channel": "C1", "text": "hi"}),
        "input.ts",
    );
    refused(
        slack,
        "update_message",
        json!({"channel": "C1", "ts": "1.2"}),
        "input.text",
    );
    refused(
        slack,
        "add_reaction",
        json!({"channel": "C1", "name": "eyes"}),
        "input.timestamp",
    );
    refused(
        slack,
        "list_channels",
        json!({"limit": 1001}),
        "input.limit",
    );
    refused(
        slack,
        "list_channels",
        json!({"types": "public"}),
        "input.types",
    );
    refused(slack, "lookup_user_by_email", json!({}), "input.email");
    refused(
        slack,
        "send_message",
        json!({"channel": "C1", "text": "hi", "as_user": true}),
        "input.as_user",
    );

    refused(
        github,
        "create_issue",
        json!({"owner": "o", "repo": "r"}),
        "input.title",
    );
    refused(
        github,
        "create_issue",
        json!({"owner": "../x", "repo": "r", "title": "t"}),
        "input.owner",
    );
    refused(
        github,
        "comment_on_issue",
        json!({"owner": "o", "repo": "r", "issue_number": 1}),
        "input.body",
    );
    refused(
        github,
        "comment_on_issue",
        json!({"owner": "o", "repo": "r", "issue_number": "1/x", "body": "b"}),
        "input.issue_number",
    );
    refused(
        github,
        "add_labels",
        json!({"owner": "o", "repo": "r", "issue_number": 1, "labels": []}),
        "input.labels",
    );
    refused(
        github,
        "get_repository",
        json!({"owner": "o", "repo": "a/b"}),
        "input.repo",
    );
    refused(
        github,
        "create_release",
        json!({"owner": "o", "repo": "r"}),
        "input.tag_name",
    );
    refused(
        github,
        "create_release",
        json!({"owner": "o", "repo": "r", "tag_name": "v1", "make_latest": true}),
        "input.make_latest",
    );
}
