//! The mock upstream: answers every route with a small JSON body after a fixed latency,
//! failing a configurable share of requests with 503.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

#[derive(clap::Args, Clone)]
pub struct MockArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: SocketAddr,
    /// Latency added to every answer.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Share of requests answered 503 (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
}

struct Mock {
    args: MockArgs,
    served: AtomicU64,
}

pub async fn serve(args: MockArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    eprintln!("mock upstream on http://{}", args.addr);
    let state = Arc::new(Mock {
        args,
        served: AtomicU64::new(0),
    });
    let app = Router::new().fallback(answer).with_state(state);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn answer(State(mock): State<Arc<Mock>>, method: Method) -> impl IntoResponse {
    let n = mock.served.fetch_add(1, Ordering::Relaxed);
    if !mock.args.latency.is_zero() {
        tokio::time::sleep(mock.args.latency).await;
    }
    // Deterministic spread of failures: every k-th request.
    let fails = mock.args.error_rate > 0.0
        && (n as f64 * mock.args.error_rate).fract() + mock.args.error_rate >= 1.0;
    if fails {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "injected"})),
        );
    }
    let body = if method == Method::GET {
        json!({"identities": [{"firstName": "Ada", "age": 36}]})
    } else {
        json!({"ok": true})
    };
    (StatusCode::OK, axum::Json(body))
}
