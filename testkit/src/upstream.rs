//! A stand-in for a third-party API: answers scripted replies per path, or replies made
//! from the request, or echoes the request; and records every request it receives.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A request the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// A scripted reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub delay: Duration,
    /// Answer with the echo of the request (as an unscripted path does) instead of `body`.
    pub echo: bool,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
            delay: Duration::ZERO,
            echo: false,
        }
    }

    /// A 200 echoing the request, like an unscripted path, so it can be delayed.
    pub fn echo() -> Self {
        Self {
            echo: true,
            ..Self::json(200, Value::Null)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// Makes the reply to a request.
type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

#[derive(Default)]
struct Script {
    /// Replies per path, used in order; the last one repeats.
    replies: HashMap<String, VecDeque<Reply>>,
    /// Replies per path made from each request (before scripted replies).
    responders: HashMap<String, Responder>,
    received: Vec<Recorded>,
}

#[derive(Clone)]
pub struct Upstream {
    pub url: String,
    script: Arc<Mutex<Script>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream port");
        let url = format!("http://{}", listener.local_addr().expect("bound address"));
        let script = Arc::new(Mutex::new(Script::default()));
        let app = Router::new().fallback(answer).with_state(script.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, script }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replies to `path` with these, in order; the last one repeats.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.lock().replies.insert(path.to_owned(), replies.into());
    }

    /// Replies to `path` with what `respond` makes of each request (its query, say).
    pub fn respond(
        &self,
        path: &str,
        respond: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) {
        self.lock()
            .responders
            .insert(path.to_owned(), Arc::new(respond));
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Recorded> {
        self.lock().received.clone()
    }

    /// The requests received on one path.
    pub fn received_on(&self, path: &str) -> Vec<Recorded> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

async fn answer(State(script): State<Arc<Mutex<Script>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let parsed = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers.clone(),
        body: parsed.clone(),
        at: std::time::Instant::now(),
    };
    let reply = {
        let mut script = script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        script.received.push(recorded.clone());
        let responder = script.responders.get(&recorded.path).cloned();
        match responder {
            Some(respond) => {
                // Made outside the lock: the responder may take locks of its own.
                drop(script);
                Some(respond(&recorded))
            }
            None => script.replies.get_mut(&recorded.path).and_then(|queue| {
                if queue.len() > 1 {
                    queue.pop_front()
                } else {
                    queue.front().cloned()
                }
            }),
        }
    };
    let echo = json!({"method": recorded.method, "path": recorded.path, "query": recorded.query, "body": parsed});
    let reply = match reply {
        Some(reply) if reply.echo => Reply {
            body: echo,
            ..reply
        },
        Some(reply) => reply,
        None => Reply::json(200, echo),
    };
    tokio::time::sleep(reply.delay).await;
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    for (name, value) in &reply.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, headers, reply.body.to_string()).into_response()
}
