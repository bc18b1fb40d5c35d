//! The REST API. Handlers are thin: they parse, lock the engine briefly, and shape the answer.
//! Every error is JSON: `{"error": "<code>", "reason": "<what was wrong>"}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use routewatch_telemetry::{ChangeKind, FaultKind, PlannedChange, Record, Role};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::actions::{self, ActionKind, ActionRecord, ActionRequest, ActionSpecs, ActionStatus};
use crate::consequences::{Consequence, ConsequenceKind};
use crate::engine::{ConfigPatch, Engine, EngineError, FaultRequest, RuntimeConfig};
use crate::faults::FaultView;
use crate::fleet::Profile;
use crate::lock;
use crate::metrics;

/// What the handlers share. Explicit, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Mutex<Engine>>,
    pub registry: Arc<Registry>,
    /// "real-time" or "fast".
    pub mode: &'static str,
    /// "kafka", "file" or "none".
    pub sink: &'static str,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus))
        .route("/routers", get(list_routers))
        .route("/routers/simulate", get(simulate))
        .route("/routers/{id}", get(get_router))
        .route("/routers/{id}/restart", post(restart_router))
        .route("/routers/{id}/faults", delete(clear_router_faults))
        .route(
            "/routers/{id}/actions",
            get(list_router_actions).post(post_action).layer(DefaultBodyLimit::max(actions::MAX_BODY_BYTES)),
        )
        .route("/actions", get(list_actions))
        .route("/actions/catalog", get(action_catalog))
        .route("/actions/{id}", get(get_action))
        .route("/consequences", get(list_consequences))
        .route("/faults", get(list_faults).post(inject_fault))
        .route("/faults/{id}", get(get_fault).delete(clear_fault))
        .route("/sites/{site}/faults", post(inject_site_fault))
        .route("/changes", get(list_changes))
        .route("/config", get(get_config).patch(patch_config))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A request the API refuses, with the reason.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    /// An action name that is not one: the reason, and every valid name.
    UnknownAction(String),
    NotFound(String),
    Conflict(String),
    MethodNotAllowed,
    /// An extractor refused the request (bad JSON, wrong content type, bad query).
    Rejected(StatusCode, String),
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::UnknownRouter(_)
            | EngineError::UnknownFault(_)
            | EngineError::UnknownSite { .. }
            | EngineError::UnknownActionId(_) => ApiError::NotFound(err.to_string()),
            EngineError::FaultEnded(_) | EngineError::Busy { .. } => ApiError::Conflict(err.to_string()),
            EngineError::UnknownAction { .. } => ApiError::UnknownAction(err.to_string()),
            EngineError::Invalid { .. } => ApiError::BadRequest(err.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // A body that parses but does not fit (unknown kind, negative count) is as much a bad
        // request as one that does not parse: one status for both is easier on clients.
        let status = match r.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            other => other,
        };
        ApiError::Rejected(status, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::Rejected(r.status(), r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::Rejected(r.status(), r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, reason) = match self {
            ApiError::UnknownAction(reason) => {
                let body = json!({ "error": "unknown_action", "reason": reason, "valid": ActionKind::names() });
                return (StatusCode::BAD_REQUEST, Json(body)).into_response();
            }
            ApiError::BadRequest(r) => (StatusCode::BAD_REQUEST, "bad_request", r),
            ApiError::NotFound(r) => (StatusCode::NOT_FOUND, "not_found", r),
            ApiError::Conflict(r) => (StatusCode::CONFLICT, "conflict", r),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this path does not take that method".into())
            }
            ApiError::Rejected(status, r) if status == StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                (status, "unsupported_media_type", r)
            }
            ApiError::Rejected(status, r) if status == StatusCode::PAYLOAD_TOO_LARGE => {
                (status, "payload_too_large", format!("{r} (the limit is {} bytes)", actions::MAX_BODY_BYTES))
            }
            ApiError::Rejected(status, r) => (status, "bad_request", r),
        };
        (status, Json(json!({ "error": code, "reason": reason }))).into_response()
    }
}

/// `Json` whose rejections are JSON errors too.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

type ApiResult<T> = Result<T, ApiError>;

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see the simulator README for the API".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn healthz(State(s): State<AppState>) -> Json<serde_json::Value> {
    let engine = lock(&s.engine);
    Json(json!({
        "status": "ok",
        "mode": s.mode,
        "sink": s.sink,
        "routers": engine.config().routers,
        "profile": engine.config().profile,
        "ticks": engine.ticks(),
        "event_time": engine.now(),
    }))
}

async fn prometheus(State(s): State<AppState>) -> Response {
    let body = metrics::render(&s.registry);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

/// The whole fleet's latest samples in one document.
#[derive(Serialize)]
struct Simulation {
    ts: i64,
    interval_ms: u64,
    routers: usize,
    records: Vec<Record>,
}

async fn simulate(State(s): State<AppState>) -> Json<Simulation> {
    // Copy under the lock, serialise after releasing it.
    let engine = lock(&s.engine);
    let records = if engine.ticks() == 0 { Vec::new() } else { engine.records().to_vec() };
    Json(Simulation { ts: engine.now(), interval_ms: engine.config().interval_ms, routers: records.len(), records })
}

#[derive(Serialize)]
struct RouterSummary {
    id: String,
    role: Role,
    site: &'static str,
    region: &'static str,
    vendor: &'static str,
    capacity_bps: f64,
    bgp_sessions: u32,
    /// Ids of the faults active on this router.
    faults: Vec<String>,
}

impl RouterSummary {
    fn new(p: &Profile, faults: Vec<String>) -> Self {
        RouterSummary {
            id: p.id.clone(),
            role: p.role,
            site: p.site,
            region: p.region,
            vendor: p.vendor,
            capacity_bps: p.capacity_bps,
            bgp_sessions: p.bgp_sessions,
            faults,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterQuery {
    role: Option<Role>,
    site: Option<String>,
    region: Option<String>,
    vendor: Option<String>,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

const DEFAULT_LIMIT: usize = 1_000;
const MAX_LIMIT: usize = 100_000;

fn check_limit(limit: Option<usize>) -> ApiResult<usize> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        0 => Err(ApiError::BadRequest("limit must be at least 1".into())),
        n if n > MAX_LIMIT => Err(ApiError::BadRequest(format!("limit {n} is over {MAX_LIMIT}"))),
        n => Ok(n),
    }
}

async fn list_routers(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<RouterQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = check_limit(q.limit)?;
    let engine = lock(&s.engine);
    let mut faults: HashMap<u32, Vec<String>> = HashMap::new();
    for f in engine.faults().active() {
        faults.entry(f.router_index).or_default().push(f.event.id.clone());
    }
    let matching = engine.fleet().profiles().iter().filter(|p| {
        q.role.is_none_or(|r| r == p.role)
            && q.site.as_deref().is_none_or(|x| x == p.site)
            && q.region.as_deref().is_none_or(|x| x == p.region)
            && q.vendor.as_deref().is_none_or(|x| x == p.vendor)
    });
    let mut total = 0;
    let mut page = Vec::new();
    for p in matching {
        if total >= q.offset && page.len() < limit {
            page.push(RouterSummary::new(p, faults.remove(&p.index).unwrap_or_default()));
        }
        total += 1;
    }
    Ok(Json(json!({ "total": total, "offset": q.offset, "limit": limit, "routers": page })))
}

async fn get_router(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<serde_json::Value>> {
    let engine = lock(&s.engine);
    let index = engine.lookup(&id)?;
    let profile = &engine.fleet().profiles()[index as usize];
    let active: Vec<FaultView> = engine
        .faults()
        .active()
        .iter()
        .filter(|f| f.router_index == index)
        .map(|f| FaultView { event: f.event.clone(), active: true, source: f.source })
        .collect();
    let latest = (engine.ticks() > 0).then(|| engine.records()[index as usize].clone());
    let summary = RouterSummary::new(profile, active.iter().map(|f| f.event.id.clone()).collect());
    let now = engine.now();
    let counters = engine.fleet().counters(index).unwrap_or_default();
    let reload_until = engine.consequences().reload_until(index, now);
    // Up since before the simulation started: uptime counts from its start.
    let up_since = counters.booted_at.unwrap_or(engine.started());
    let consequences: Vec<_> = engine.consequences().on_router(index).collect();
    let running: Vec<_> =
        engine.actions().running().iter().filter(|a| a.router_index == index).map(|a| &a.record).collect();
    let health = json!({
        "state": if reload_until.is_some() { "reloading" } else { "up" },
        "up_at": reload_until,
        "uptime_s": if reload_until.is_some() { 0 } else { (now - up_since).max(0) / 1000 },
        "counters": counters,
        "consequences": consequences,
        "running_actions": running,
    });
    Ok(Json(json!({ "router": summary, "latest": latest, "active_faults": active, "health": health })))
}

async fn restart_router(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<serde_json::Value>> {
    let (at, cleared) = lock(&s.engine).restart(&id)?;
    Ok(Json(json!({ "router": id, "restarted_at": at, "cleared": cleared })))
}

async fn clear_router_faults(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let cleared = lock(&s.engine).clear_router(&id)?;
    Ok(Json(json!({ "router": id, "cleared": cleared })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultQuery {
    active: Option<bool>,
    router: Option<String>,
    kind: Option<FaultKind>,
    limit: Option<usize>,
}

async fn list_faults(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<FaultQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = check_limit(q.limit)?;
    let engine = lock(&s.engine);
    if let Some(router) = &q.router {
        engine.lookup(router)?;
    }
    let mut faults: Vec<FaultView> = engine
        .faults()
        .all()
        .filter(|f| {
            q.active.is_none_or(|a| a == f.active)
                && q.router.as_deref().is_none_or(|r| r == f.event.router)
                && q.kind.is_none_or(|k| k == f.event.kind)
        })
        .collect();
    // The newest `limit`, oldest first.
    let total = faults.len();
    faults.drain(..total.saturating_sub(limit));
    Ok(Json(json!({ "total": total, "faults": faults })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeQuery {
    router: Option<String>,
    kind: Option<ChangeKind>,
    limit: Option<usize>,
}

/// Planned changes (realistic profile): the last 10,000 ended ones and every scheduled or
/// running one, newest `limit` kept, oldest first.
async fn list_changes(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<ChangeQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = check_limit(q.limit)?;
    let engine = lock(&s.engine);
    if let Some(router) = &q.router {
        engine.lookup(router)?;
    }
    let mut changes: Vec<&PlannedChange> = engine
        .changes()
        .all()
        .filter(|c| q.router.as_deref().is_none_or(|r| r == c.router) && q.kind.is_none_or(|k| k == c.kind))
        .collect();
    let total = changes.len();
    changes.drain(..total.saturating_sub(limit));
    Ok(Json(json!({ "total": total, "changes": changes })))
}

async fn inject_fault(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<FaultRequest>,
) -> ApiResult<(StatusCode, Json<FaultView>)> {
    let view = lock(&s.engine).inject(&req)?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `POST /sites/{site}/faults`: the same fault on every router of a site (no `router` in the
/// body); one fault each, all in the ground truth.
async fn inject_site_fault(
    State(s): State<AppState>,
    ApiPath(site): ApiPath<String>,
    ApiJson(req): ApiJson<FaultRequest>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let faults = lock(&s.engine).inject_site(&site, &req)?;
    Ok((StatusCode::CREATED, Json(json!({ "site": site, "faults": faults }))))
}

async fn get_fault(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<FaultView>> {
    lock(&s.engine).faults().get(&id).map(Json).ok_or_else(|| EngineError::UnknownFault(id).into())
}

async fn clear_fault(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<FaultView>> {
    Ok(Json(lock(&s.engine).clear(&id)?))
}

#[derive(Serialize)]
struct ConfigView {
    #[serde(flatten)]
    config: RuntimeConfig,
    seed: u64,
    mode: &'static str,
}

async fn get_config(State(s): State<AppState>) -> Json<ConfigView> {
    let engine = lock(&s.engine);
    Json(ConfigView { config: engine.config().clone(), seed: engine.seed(), mode: s.mode })
}

async fn patch_config(State(s): State<AppState>, ApiJson(patch): ApiJson<ConfigPatch>) -> ApiResult<Json<ConfigView>> {
    let mut engine = lock(&s.engine);
    let config = engine.reconfigure(&patch)?;
    Ok(Json(ConfigView { config, seed: engine.seed(), mode: s.mode }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionQuery {
    router: Option<String>,
    action: Option<ActionKind>,
    status: Option<ActionStatus>,
    limit: Option<usize>,
}

/// Starts an action; 202 with the action record (it completes after the action's delay).
async fn post_action(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ActionRequest>,
) -> ApiResult<(StatusCode, Json<ActionRecord>)> {
    let record = lock(&s.engine).act(&id, &req)?;
    Ok((StatusCode::ACCEPTED, Json(record)))
}

/// The newest `limit` matching actions, oldest first.
fn actions_matching(engine: &Engine, q: &ActionQuery, router: Option<&str>) -> ApiResult<serde_json::Value> {
    let limit = check_limit(q.limit)?;
    let router = router.or(q.router.as_deref());
    if let Some(router) = router {
        engine.lookup(router)?;
    }
    let mut list: Vec<&ActionRecord> = engine
        .actions()
        .all()
        .filter(|a| {
            router.is_none_or(|r| r == a.router)
                && q.action.is_none_or(|k| k == a.action)
                && q.status.is_none_or(|st| st == a.status)
        })
        .collect();
    let total = list.len();
    list.drain(..total.saturating_sub(limit));
    Ok(json!({ "total": total, "actions": list }))
}

async fn list_actions(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<ActionQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(actions_matching(&lock(&s.engine), &q, None)?))
}

async fn list_router_actions(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ActionQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    if q.router.is_some() {
        return Err(ApiError::BadRequest("the router is in the path; drop ?router=".into()));
    }
    let mut v = actions_matching(&lock(&s.engine), &q, Some(&id))?;
    v["router"] = json!(id);
    Ok(Json(v))
}

async fn get_action(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> ApiResult<Json<ActionRecord>> {
    let engine = lock(&s.engine);
    engine.actions().get(&id).cloned().map(Json).ok_or_else(|| EngineError::UnknownActionId(id).into())
}

/// Every action with its delay, the fault kinds it fixes and its side effects.
async fn action_catalog() -> Json<serde_json::Value> {
    let specs: Vec<_> = ActionKind::all().iter().map(|a| a.spec()).collect();
    Json(json!({ "actions": specs }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsequenceQuery {
    router: Option<String>,
    kind: Option<ConsequenceKind>,
    fault: Option<String>,
    active: Option<bool>,
    limit: Option<usize>,
}

/// Consequences: the last 10,000 ended ones and every active one, newest `limit` kept,
/// oldest first.
async fn list_consequences(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<ConsequenceQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = check_limit(q.limit)?;
    let engine = lock(&s.engine);
    if let Some(router) = &q.router {
        engine.lookup(router)?;
    }
    let mut list: Vec<&Consequence> = engine
        .consequences()
        .all()
        .filter(|c| {
            q.router.as_deref().is_none_or(|r| r == c.router)
                && q.kind.is_none_or(|k| k == c.kind)
                && q.fault.as_deref().is_none_or(|f| Some(f) == c.fault.as_deref())
                && q.active.is_none_or(|a| a == c.end.is_none())
        })
        .collect();
    let total = list.len();
    list.drain(..total.saturating_sub(limit));
    Ok(Json(json!({ "total": total, "consequences": list })))
}
