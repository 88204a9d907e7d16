//! A real OpenID provider for single sign-on tests — the `oidc-provider` package from npm
//! (OpenID Certified), run by Node from `testkit/oidc-provider/` — and a browser stand-in
//! that follows redirects with cookies and submits the provider's login and consent forms.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The provider: it listens on 127.0.0.1 and stops with this value (its standard input
/// closes).
pub struct OidcProvider {
    pub issuer: String,
    child: Child,
}

pub const CLIENT_ID: &str = "weft";
pub const CLIENT_SECRET: &str = "weft-test-client-secret-0f9e";

fn directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc-provider")
}

impl OidcProvider {
    /// Starts the provider; register the gateway with [`OidcProvider::register`] once its
    /// callback URL is known.
    pub async fn start() -> Self {
        let directory = directory();
        assert!(
            directory.join("node_modules/oidc-provider").is_dir(),
            "the test OpenID provider is not installed: run `npm ci --prefix {}`",
            directory.display()
        );
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(&directory)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs the test OpenID provider");
        let issuer = Self::line(&mut child, "issuer=").await;
        Self { issuer, child }
    }

    async fn line(child: &mut Child, prefix: &str) -> String {
        let stdout = child.stdout.as_mut().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await.expect("provider output") {
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
        panic!("the test OpenID provider stopped before printing {prefix}");
    }

    /// Registers the gateway as the provider's client with `redirect_uri`.
    pub async fn register(&mut self, redirect_uri: &str) {
        let client = json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uri": redirect_uri});
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        stdin
            .write_all(format!("{client}\n").as_bytes())
            .await
            .expect("the provider reads its client");
        stdin.flush().await.expect("flushed");
        Self::line(&mut self.child, "ready").await;
    }
}

/// A browser, as far as a sign-in needs one: cookies per host, redirects followed by hand
/// (so each hop's cookies are kept), HTML forms submitted.
pub struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, HashMap<String, String>>,
}

/// Where a browser ended up.
pub struct Page {
    pub url: reqwest::Url,
    pub status: u16,
    pub body: String,
    /// Every URL it went through, the last one included.
    pub visited: Vec<reqwest::Url>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: HashMap::new(),
        }
    }

    /// The cookie `name` the browser holds for `url`'s host and port.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let url = reqwest::Url::parse(url).ok()?;
        self.cookies.get(&host_of(&url))?.get(name).cloned()
    }

    /// Opens `url`, following redirects.
    pub async fn open(&mut self, url: &str) -> Page {
        let url = reqwest::Url::parse(url).expect("a URL");
        self.go(reqwest::Method::GET, url, None).await
    }

    /// Submits the first form of `page` with its hidden fields and `fields`.
    pub async fn submit(&mut self, page: &Page, fields: &[(&str, &str)]) -> Page {
        let action = attribute(&page.body, "<form", "action").expect("a form on the page");
        let mut form: Vec<(String, String)> = hidden_inputs(&page.body);
        form.extend(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let url = page.url.join(&action).expect("the form's action resolves");
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.go(reqwest::Method::POST, url, Some(body)).await
    }

    async fn go(
        &mut self,
        method: reqwest::Method,
        url: reqwest::Url,
        form: Option<String>,
    ) -> Page {
        let (mut method, mut url, mut form) = (method, url, form);
        let mut visited = Vec::new();
        for _ in 0..20 {
            visited.push(url.clone());
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(cookies) = self.cookies.get(&host_of(&url)) {
                let header: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
                request = request.header("cookie", header.join("; "));
            }
            if let Some(body) = form.take() {
                request = request
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body);
            }
            let response = request.send().await.expect("the page answers");
            let jar = self.cookies.entry(host_of(&url)).or_default();
            for set in response.headers().get_all("set-cookie") {
                let Some((name, value)) = set
                    .to_str()
                    .ok()
                    .and_then(|set| set.split(';').next())
                    .and_then(|pair| pair.split_once('='))
                else {
                    continue;
                };
                if value.is_empty() {
                    jar.remove(name);
                } else {
                    jar.insert(name.to_owned(), value.to_owned());
                }
            }
            let status = response.status();
            if status.is_redirection() {
                let location = response.headers()["location"]
                    .to_str()
                    .expect("ascii")
                    .to_owned();
                url = url.join(&location).expect("the redirect resolves");
                method = reqwest::Method::GET;
                continue;
            }
            let body = response.text().await.unwrap_or_default();
            return Page {
                url,
                status: status.as_u16(),
                body,
                visited,
            };
        }
        panic!("more than 20 redirects from {url}");
    }
}

fn host_of(url: &reqwest::Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// The value of `name="…"` in the first tag starting with `tag`.
fn attribute(html: &str, tag: &str, name: &str) -> Option<String> {
    let start = html.find(tag)?;
    let end = html[start..].find('>')? + start;
    value_of(&html[start..end], name)
}

fn value_of(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].replace("&amp;", "&"))
}

fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    html.split("<input")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            tag.contains("type=\"hidden\"")
                .then(|| Some((value_of(tag, "name")?, value_of(tag, "value")?)))?
        })
        .collect()
}
