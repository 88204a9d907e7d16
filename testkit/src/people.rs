//! People in tests: a signed-in person (their session cookie and CSRF token) and the
//! requests they send as the web app would.

use serde_json::{Value, json};
use weft_domain::ids::WorkspaceId;

use crate::{Fleet, Workspace};

/// A signed-in person acting in one workspace, as the web app does: cookie, `Origin`,
/// `X-Weft-CSRF` and `X-Weft-Workspace` on every request.
#[derive(Debug, Clone)]
pub struct Person {
    pub email: String,
    pub password: String,
    /// `name=value` of the session cookie.
    pub cookie: String,
    pub csrf_token: String,
    pub workspace: WorkspaceId,
}

impl Person {
    /// The session token their cookie carries.
    pub fn session_token(&self) -> &str {
        self.cookie.split_once('=').map_or("", |(_, token)| token)
    }
}

/// The password every test person gets.
pub const PASSWORD: &str = "correct horse battery staple";

/// The `name=value` of a response's `Set-Cookie`, if it sets one.
pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    let set_cookie = response.headers().get("set-cookie")?.to_str().ok()?;
    set_cookie.split(';').next().map(str::to_owned)
}

/// The token of an invitation or reset link in `body["url"]` (`…#token=<token>`).
pub fn link_token(body: &Value) -> String {
    let url = body["url"]
        .as_str()
        .unwrap_or_else(|| panic!("a link: {body}"));
    let (_, token) = url.split_once("#token=").expect("a token in the link");
    token.to_owned()
}

impl Fleet {
    /// An API key `person` issues in their workspace, as the caller it makes.
    pub async fn key_of(&self, person: &Person, name: &str, role: &str) -> Workspace {
        let body = json!({"name": name, "role": role});
        let (status, issued) = self
            .as_person(person, "POST", "/api/v1/api-keys", Some(body))
            .await;
        assert_eq!(status, 201, "issuing a key: {issued}");
        Workspace {
            id: person.workspace,
            api_key: issued["secret"].as_str().expect("secret").to_owned(),
        }
    }

    /// Invites `email` into `workspace` with `role` (with the workspace's owner key) and
    /// accepts as a new account; returns them signed in.
    pub async fn person(&self, workspace: &Workspace, email: &str, role: &str) -> Person {
        let (status, invitation) = self
            .call(
                workspace,
                "POST",
                "/api/v1/invitations",
                Some(json!({"email": email, "role": role})),
            )
            .await;
        assert_eq!(status, 201, "invitation: {invitation}");
        let token = link_token(&invitation);
        let response = self
            .client
            .post(self.url("/api/v1/invitations/accept"))
            .header("origin", &self.api)
            .json(&json!({"token": token, "display_name": email, "password": PASSWORD}))
            .send()
            .await
            .expect("gateway answers");
        assert_eq!(response.status(), 200, "accepting the invitation");
        let cookie = session_cookie(&response).expect("a new account is signed in");
        let mut person = Person {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
            cookie,
            csrf_token: String::new(),
            workspace: workspace.id,
        };
        let (status, session) = self
            .as_person(&person, "GET", "/api/v1/session", None)
            .await;
        assert_eq!(status, 200, "session: {session}");
        person.csrf_token = session["csrf_token"].as_str().expect("csrf").to_owned();
        person
    }

    /// Signs in with an email and a password; returns the response's status, body and
    /// session cookie.
    pub async fn login(&self, email: &str, password: &str) -> (u16, Value, Option<String>) {
        let response = self
            .client
            .post(self.url("/api/v1/session"))
            .header("origin", &self.api)
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("gateway answers");
        let cookie = session_cookie(&response);
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body, cookie)
    }

    /// Posts `body` as the web app would before anyone is signed in: with this site's
    /// `Origin` and no credentials (a login, an acceptance, a reset).
    pub async fn post_from_site(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("origin", &self.api)
            .json(body)
            .send()
            .await
            .expect("gateway answers")
    }

    /// Sends a request as `person` would from the web app.
    pub async fn as_person(
        &self,
        person: &Person,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
        let mut request = self
            .client
            .request(method, self.url(path))
            .header("cookie", &person.cookie)
            .header("origin", &self.api)
            .header("x-weft-csrf", &person.csrf_token)
            .header("x-weft-workspace", person.workspace.to_string());
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.expect("gateway answers")).await
    }
}

/// A response's status and JSON body (`null` when empty, a string when not JSON).
pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body reads");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}
