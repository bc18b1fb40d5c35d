//! The host's HTTP API: health, readiness, Prometheus metrics and recent anomalies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::{AnomalyFeed, Metrics};

#[derive(Clone)]
struct ApiState {
    metrics: Arc<Metrics>,
    feed: Arc<AnomalyFeed>,
    ready: Arc<AtomicBool>,
}

/// The API server, on its own small runtime; dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(
        listen: SocketAddr,
        metrics: Arc<Metrics>,
        feed: Arc<AnomalyFeed>,
        ready: Arc<AtomicBool>,
    ) -> anyhow::Result<Server> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("http")
            .enable_all()
            .build()
            .context("starting the HTTP runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        let app = router(ApiState { metrics, feed, ready });
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("http".into()).spawn(move || {
            runtime.block_on(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = signal.await;
                });
                if let Err(err) = serve.await {
                    tracing::error!("HTTP server: {err}");
                }
            });
        })?;
        tracing::info!(%addr, "HTTP API listening");
        Ok(Server { addr, shutdown: Some(shutdown), thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/anomalies", get(anomalies))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "not found"}))) })
        .with_state(state)
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let body = state.metrics.encode();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// `GET /anomalies?limit=N`: the most recent anomalies, oldest first (default 100, at most 1000).
async fn anomalies(State(state): State<ApiState>, Query(query): Query<Limit>) -> Response {
    let limit = query.limit.unwrap_or(100).min(super::RECENT_ANOMALIES);
    Json(state.feed.recent(limit)).into_response()
}
