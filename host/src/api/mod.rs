//! The host's HTTP API: health, Prometheus metrics, recent anomalies and incidents (with
//! acknowledgement and feedback), and plugin management (detectors and the cause classifier).
//!
//! Reads are open; every mutation needs the bearer token (see [`auth`]). Every error is JSON
//! (see [`error`]). The OpenAPI document is served at `/api/v1/openapi.json`.

pub mod auth;
mod classifier;
mod error;
pub mod healing;
pub mod incidents;
mod plugins;
pub mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde::Deserialize;

pub use error::ApiError;
pub use server::Server;

use crate::feed::AnomalyFeed;
use crate::incidents::IncidentBook;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// The OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Plugin changes (uploads, configurations) checked at once; more get a 503.
pub const CHECK_WORKERS: usize = 2;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub metrics: Arc<Metrics>,
    pub feed: Arc<AnomalyFeed>,
    pub ready: Arc<AtomicBool>,
    pub registry: Arc<Registry>,
    pub token: Arc<str>,
    /// Largest upload, in bytes.
    pub max_upload: usize,
    /// Places in the pool that runs plugin code for the API (see [`CHECK_WORKERS`]).
    pub checks: Arc<tokio::sync::Semaphore>,
    /// Recent incidents.
    pub incidents: Arc<IncidentBook>,
    /// Where incident feedback and acknowledgements go; none: feedback is refused with a 503,
    /// and acknowledgements are kept in memory only.
    pub topics: Option<Arc<incidents::IncidentTopics>>,
    pub healing: Option<Arc<crate::healing::Healing>>,
}

impl ApiState {
    /// The state with a fresh check pool of [`CHECK_WORKERS`] places.
    pub fn new(
        metrics: Arc<Metrics>,
        feed: Arc<AnomalyFeed>,
        ready: Arc<AtomicBool>,
        registry: Arc<Registry>,
        token: Arc<str>,
        max_upload: usize,
    ) -> ApiState {
        let checks = Arc::new(tokio::sync::Semaphore::new(CHECK_WORKERS));
        let incidents = Arc::new(IncidentBook::default());
        ApiState { metrics, feed, ready, registry, token, max_upload, checks, incidents, topics: None, healing: None }
    }

    pub fn with_healing(self, healing: Option<Arc<crate::healing::Healing>>) -> ApiState {
        ApiState { healing, ..self }
    }

    /// The state with the host's incident book and its feedback and acks topics.
    pub fn with_incidents(self, incidents: Arc<IncidentBook>, topics: Option<incidents::IncidentTopics>) -> ApiState {
        ApiState { incidents, topics: topics.map(Arc::new), ..self }
    }
}

pub fn router(state: ApiState) -> Router {
    // Bodies past their cap are refused while they arrive, never buffered whole; the upload
    // handler turns the refusal into a JSON 413.
    let configure = axum::routing::put(plugins::configure)
        .layer(axum::extract::DefaultBodyLimit::max(crate::registry::MAX_CONFIG_BYTES));
    let mutations = Router::new()
        .route("/api/v1/plugins", post(plugins::upload).layer(axum::extract::DefaultBodyLimit::max(state.max_upload)))
        .route("/api/v1/plugins/{name}", axum::routing::delete(plugins::delete))
        .route("/api/v1/plugins/{name}/enable", post(plugins::enable))
        .route("/api/v1/plugins/{name}/disable", post(plugins::disable))
        .route("/api/v1/plugins/{name}/start-fresh", post(plugins::start_fresh))
        .route("/api/v1/plugins/{name}/config", configure)
        .route(
            "/api/v1/classifier",
            axum::routing::put(classifier::upload)
                .delete(classifier::delete)
                .layer(axum::extract::DefaultBodyLimit::max(state.max_upload)),
        )
        .route("/api/v1/classifier/config", axum::routing::put(classifier::configure))
        .route("/api/v1/incidents/{id}/ack", post(incidents::ack))
        .route("/api/v1/incidents/{id}/feedback", post(incidents::feedback))
        .route("/api/v1/incidents/{id}/approve", post(healing::approve))
        .route("/api/v1/policies/{name}", axum::routing::put(healing::put_policy).delete(healing::delete_policy))
        .route("/api/v1/policies/{name}/reset", post(healing::reset))
        .route("/api/v1/healing/dry-run", axum::routing::put(healing::dry_run))
        .layer(axum::extract::DefaultBodyLimit::max(crate::registry::MAX_CONFIG_BYTES))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    let reads = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/anomalies", get(anomalies))
        .route("/api/v1/anomalies", get(anomalies))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/incidents", get(incidents::list))
        .route("/api/v1/incidents/{id}", get(incidents::show))
        .route("/api/v1/site-incidents", get(incidents::list_sites))
        .route("/api/v1/actions", get(healing::list))
        .route("/api/v1/policies", get(healing::policies))
        .route("/api/v1/healing", get(healing::show))
        .route("/api/v1/plugins", get(plugins::list))
        .route("/api/v1/plugins/{name}", get(plugins::show))
        .route("/api/v1/plugins/{name}/config", get(plugins::show_config))
        .route("/api/v1/classifier", get(classifier::show));
    reads
        .merge(mutations)
        .fallback(|| async { ApiError::not_found("no such route; see /api/v1/openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .layer(middleware::from_fn(deadline))
        .with_state(state)
}

/// Every request, its body included, finishes within [`server::REQUEST_TIMEOUT`].
async fn deadline(request: axum::extract::Request, next: middleware::Next) -> Response {
    match tokio::time::timeout(server::REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request took over {} s", server::REQUEST_TIMEOUT.as_secs()),
        )
        .into_response(),
    }
}

/// Ready once the host has joined its group, and while every partition's state is saved.
async fn readyz(State(state): State<ApiState>) -> Response {
    let unsaved = state.metrics.state_unsaved_partitions.get();
    if !state.ready.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    } else if unsaved > 0 {
        let text = format!(
            "the state of {unsaved} partitions could not be saved (see routewatch_state_save_failures_total)\n"
        );
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let body = state.metrics.encode();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnomalyQuery {
    limit: Option<usize>,
    plugin: Option<String>,
    router: Option<String>,
}

/// `GET /api/v1/anomalies?limit=N&plugin=P&router=R`: the most recent anomalies, oldest first
/// (default 100, at most 1000), optionally of one plugin or router.
async fn anomalies(
    State(state): State<ApiState>,
    query: Result<Query<AnomalyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(100).min(crate::feed::RECENT_ANOMALIES);
    let events = state.feed.recent_matching(limit, |e| {
        query.plugin.as_ref().is_none_or(|p| &e.plugin == p) && query.router.as_ref().is_none_or(|r| &e.router == r)
    });
    Ok(Json(events).into_response())
}
