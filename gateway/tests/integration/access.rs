//! Who may call what (architecture §11): every operation of the OpenAPI document, as each
//! role (through an API key of that role) and as a member of another workspace. The
//! expected rule of each operation is written here, by operation id, independently of the
//! gateway's own table: an operation added without a line here fails this test, and so
//! does one whose rule drifts.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use weft_testkit::Fleet;

/// What an operation needs, as this test expects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Anyone (its own token, if any, is the credential).
    Public,
    /// The admin token.
    Admin,
    /// A signed-in person, no workspace.
    Person,
    /// At least this role in the workspace.
    Role(usize),
}

const ROLES: [&str; 5] = ["viewer", "operator", "editor", "admin", "owner"];
const VIEWER: Needs = Needs::Role(0);
const OPERATOR: Needs = Needs::Role(1);
const EDITOR: Needs = Needs::Role(2);
const ADMIN: Needs = Needs::Role(3);
const OWNER: Needs = Needs::Role(4);

fn expected() -> BTreeMap<&'static str, Needs> {
    BTreeMap::from([
        ("getOpenApiDocument", Needs::Public),
        ("createWorkspace", Needs::Admin),
        ("login", Needs::Public),
        ("signUp", Needs::Public),
        ("resetPassword", Needs::Public),
        ("acceptInvitation", Needs::Public),
        ("completeOAuth", Needs::Public),
        ("getSignInMethods", Needs::Public),
        ("startSso", Needs::Public),
        ("completeSso", Needs::Public),
        ("getSession", Needs::Person),
        ("logout", Needs::Person),
        ("listMySessions", Needs::Person),
        ("revokeMySessions", Needs::Person),
        ("revokeMySession", Needs::Person),
        ("listMyWorkspaces", Needs::Person),
        ("createMyWorkspace", Needs::Person),
        ("getWorkspace", VIEWER),
        ("renameWorkspace", ADMIN),
        ("deleteWorkspace", OWNER),
        ("listMembers", VIEWER),
        ("changeMemberRole", ADMIN),
        ("removeMember", ADMIN),
        ("issuePasswordReset", OWNER),
        ("setMemberDisabled", OWNER),
        ("listInvitations", ADMIN),
        ("createInvitation", ADMIN),
        ("revokeInvitation", ADMIN),
        ("listApiKeys", ADMIN),
        ("createApiKey", ADMIN),
        ("revokeApiKey", ADMIN),
        ("rotateApiKey", ADMIN),
        ("listAuditEvents", ADMIN),
        ("listConnectors", VIEWER),
        ("getConnector", VIEWER),
        ("createConnector", EDITOR),
        ("updateConnector", EDITOR),
        ("deleteConnector", EDITOR),
        ("executeAction", EDITOR),
        ("listConnections", VIEWER),
        ("getConnection", VIEWER),
        ("createConnection", EDITOR),
        ("updateConnection", EDITOR),
        ("deleteConnection", EDITOR),
        ("testConnection", EDITOR),
        ("startOAuth", EDITOR),
        ("listScenarios", VIEWER),
        ("getScenario", VIEWER),
        ("listScenarioVersions", VIEWER),
        ("createScenario", EDITOR),
        ("updateScenario", EDITOR),
        ("deleteScenario", EDITOR),
        ("activateScenario", EDITOR),
        ("pauseScenario", EDITOR),
        ("startRun", OPERATOR),
        ("listRuns", VIEWER),
        ("getRun", VIEWER),
        ("cancelRun", OPERATOR),
        ("replayRun", OPERATOR),
    ])
}

/// One operation of the document.
struct Operation {
    id: String,
    method: reqwest::Method,
    /// With every path parameter filled by a value that names nothing.
    path: String,
}

fn operations(document: &Value) -> Vec<Operation> {
    let mut found = Vec::new();
    for (template, item) in document["paths"].as_object().expect("paths") {
        if !template.starts_with("/api/v1/") {
            continue;
        }
        for (method, operation) in item.as_object().expect("path item") {
            let Ok(method) = method.to_uppercase().parse::<reqwest::Method>() else {
                continue;
            };
            let Some(id) = operation["operationId"].as_str() else {
                continue;
            };
            let path = fill(template);
            found.push(Operation {
                id: id.to_owned(),
                method,
                path,
            });
        }
    }
    // Deleting the workspace goes last: it takes the keys with it.
    found.sort_by_key(|operation| operation.id == "deleteWorkspace");
    found
}

/// Replaces `{param}`s by a UUID that names nothing (every id here is a UUID) or a key
/// that names nothing.
fn fill(template: &str) -> String {
    let mut path = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').expect("closed parameter") + start;
        path.push_str(&rest[..start]);
        let name = &rest[start + 1..end];
        path.push_str(if ["key", "action", "connector"].contains(&name) {
            "nothing-here"
        } else {
            "00000000-0000-7000-8000-000000000000"
        });
        rest = &rest[end + 1..];
    }
    path.push_str(rest);
    path
}

async fn send(
    fleet: &Fleet,
    key: &str,
    operation: &Operation,
    workspace: Option<&str>,
) -> (u16, Value) {
    let mut request = fleet
        .client
        .request(operation.method.clone(), fleet.url(&operation.path))
        .bearer_auth(key);
    if let Some(workspace) = workspace {
        request = request.header("x-weft-workspace", workspace);
    }
    if [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
    ]
    .contains(&operation.method)
    {
        request = request.json(&json!({}));
    }
    weft_testkit::read(request.send().await.expect("gateway answers")).await
}

#[tokio::test]
async fn every_operation_allows_exactly_the_roles_its_rule_names() {
    let fleet = Fleet::with(0, 0).await;
    let owner = fleet.workspace().await;
    let (_, document) = fleet
        .call(&owner, "GET", "/api/v1/openapi.json", None)
        .await;
    let operations = operations(&document);
    let expected = expected();
    let documented: Vec<&str> = operations.iter().map(|o| o.id.as_str()).collect();
    for id in &documented {
        assert!(
            expected.contains_key(id),
            "{id} has no expected rule in this test"
        );
    }
    for id in expected.keys() {
        assert!(
            documented.contains(id),
            "{id} is expected but not documented"
        );
    }

    let mut keys = Vec::new();
    for role in ROLES {
        let (status, issued) = fleet
            .call(
                &owner,
                "POST",
                "/api/v1/api-keys",
                Some(json!({"name": role, "role": role})),
            )
            .await;
        assert_eq!(status, 201, "{issued}");
        keys.push(issued["secret"].as_str().expect("secret").to_owned());
    }

    let mut wrong = Vec::new();
    for operation in &operations {
        let needs = expected[operation.id.as_str()];
        let Needs::Role(least) = needs else {
            // Public, admin and person operations refuse a workspace key the same way for
            // every role: admin and person ones do not take API keys at all.
            if needs != Needs::Public {
                let (status, body) = send(&fleet, &keys[4], operation, None).await;
                if status != 401 {
                    wrong.push(format!(
                        "{} with an owner key: {status} {body}",
                        operation.id
                    ));
                }
            }
            continue;
        };
        for (rank, key) in keys.iter().enumerate() {
            let (status, body) = send(&fleet, key, operation, None).await;
            let allowed = rank >= least;
            let denied = status == 403 && body["error"]["code"] == "forbidden";
            if allowed == denied || status == 401 || status == 500 {
                wrong.push(format!(
                    "{} as {}: expected {}, got {status} {body}",
                    operation.id,
                    ROLES[rank],
                    if allowed { "allowed" } else { "403" }
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    fleet.stop().await;
}

#[tokio::test]
async fn a_person_naming_a_workspace_they_are_not_in_finds_nothing() {
    let fleet = Fleet::with(0, 0).await;
    let ours = fleet.workspace().await;
    let theirs = fleet.workspace().await;
    let outsider = fleet.person(&theirs, "outsider@example.com", "owner").await;
    let (_, document) = fleet.call(&ours, "GET", "/api/v1/openapi.json", None).await;
    let expected = expected();
    let mut wrong = Vec::new();
    for operation in operations(&document) {
        if !matches!(expected[operation.id.as_str()], Needs::Role(_)) {
            continue;
        }
        let naming_ours = weft_testkit::Person {
            workspace: ours.id,
            ..outsider.clone()
        };
        let body = [
            reqwest::Method::POST,
            reqwest::Method::PUT,
            reqwest::Method::PATCH,
        ]
        .contains(&operation.method)
        .then(|| json!({}));
        let (status, answer) = fleet
            .as_person(
                &naming_ours,
                operation.method.as_str(),
                &operation.path,
                body,
            )
            .await;
        if status != 404 {
            wrong.push(format!("{}: {status} {answer}", operation.id));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let (status, _) = fleet
        .as_person(&outsider, "GET", "/api/v1/scenarios", None)
        .await;
    assert_eq!(status, 200, "in her own workspace she is an owner");
    fleet.stop().await;
}

#[tokio::test]
async fn a_keys_role_is_capped_by_its_creators_current_role() {
    let fleet = Fleet::with(0, 0).await;
    let owner = fleet.workspace().await;
    let ada = fleet.person(&owner, "ada@example.com", "admin").await;
    let key = fleet.key_of(&ada, "deploys", "admin").await;
    let (status, _) = fleet.call(&key, "GET", "/api/v1/api-keys", None).await;
    assert_eq!(status, 200, "an admin key lists keys");

    let (_, members) = fleet.call(&owner, "GET", "/api/v1/members", None).await;
    let ada_id = members["items"][0]["user"]["id"]
        .as_str()
        .expect("member")
        .to_owned();
    let (status, body) = fleet
        .call(
            &owner,
            "PATCH",
            &format!("/api/v1/members/{ada_id}"),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = fleet.call(&key, "GET", "/api/v1/api-keys", None).await;
    assert_eq!(status, 403, "demoting Ada demoted her key: {body}");
    assert_eq!(body["error"]["details"]["role"], "viewer");

    let (status, _) = fleet
        .call(&owner, "DELETE", &format!("/api/v1/members/{ada_id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = fleet.call(&key, "GET", "/api/v1/scenarios", None).await;
    assert_eq!(status, 401, "removing Ada stopped her key");
    fleet.stop().await;
}
