//! The mock upstream: answers every route with a small JSON body after a fixed latency,
//! failing a configurable share of requests with 503.
//!
//! It counts what it served, and separately the calls to paths ending in `/last` (each
//! profile's final call, see [`crate::profile`]); `GET /_loadtest/stats` answers both, so
//! the driver follows completions and node steps live without querying the fleet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
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

/// The route of the counters; not counted itself.
pub const STATS_PATH: &str = "/_loadtest/stats";

struct Mock {
    args: MockArgs,
    served: AtomicU64,
    last: AtomicU64,
}

pub async fn serve(args: MockArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    eprintln!("mock upstream on http://{}", args.addr);
    axum::serve(listener, app(args)).await?;
    Ok(())
}

fn app(args: MockArgs) -> Router {
    let state = Arc::new(Mock {
        args,
        served: AtomicU64::new(0),
        last: AtomicU64::new(0),
    });
    Router::new()
        .route(STATS_PATH, axum::routing::get(stats))
        .fallback(answer)
        .with_state(state)
}

async fn stats(State(mock): State<Arc<Mock>>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({
        "served": mock.served.load(Ordering::Relaxed),
        "last": mock.last.load(Ordering::Relaxed),
    }))
}

async fn answer(State(mock): State<Arc<Mock>>, method: Method, uri: Uri) -> impl IntoResponse {
    let n = mock.served.fetch_add(1, Ordering::Relaxed);
    if uri.path().ends_with("/last") {
        mock.last.fetch_add(1, Ordering::Relaxed);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(error_rate: f64) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("bound");
        let args = MockArgs {
            addr,
            latency: Duration::ZERO,
            error_rate,
        };
        tokio::spawn(async move { axum::serve(listener, app(args)).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn it_counts_every_call_and_the_final_ones_apart() {
        let base = start(0.0).await;
        let client = reqwest::Client::new();
        for path in ["/people?phone=1", "/step/3", "/notify/last", "/join/last"] {
            let response = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("answered");
            assert_eq!(response.status(), 200, "{path}");
        }
        let person: serde_json::Value = client
            .get(format!("{base}/people"))
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("JSON");
        assert_eq!(person["identities"][0]["firstName"], "Ada");
        let stats = crate::monitor::mock_stats(&client, &base)
            .await
            .expect("stats");
        assert_eq!((stats.served, stats.last), (5, 2));
    }

    #[tokio::test]
    async fn it_fails_the_configured_share_of_requests() {
        let base = start(0.25).await;
        let client = reqwest::Client::new();
        let mut failed = 0;
        for _ in 0..100 {
            let response = client
                .post(format!("{base}/x"))
                .send()
                .await
                .expect("answered");
            if response.status() == 503 {
                failed += 1;
            }
        }
        assert_eq!(failed, 25);
    }
}
