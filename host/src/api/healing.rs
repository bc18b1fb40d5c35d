//! `/api/v1/actions`, `/api/v1/policies` and `/api/v1/healing`: the self-healing audit trail,
//! its policies and its guard rails, and `POST /api/v1/incidents/{id}/approve`.
//!
//! Handlers are thin: they check what the client sent (bodies capped at [`MAX_BODY_BYTES`])
//! and hand it to [`crate::healing::Healing`], which checks policies as a file's are checked.

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use routewatch_remediation::{ApproveError, MAX_POLICY_NAME, Policy, PolicyError, Status};
use serde::Deserialize;

use super::incidents::{checked_id, json};
use super::{ApiError, ApiState};
use crate::healing::Healing;

/// Largest policy or switch body.
pub const MAX_BODY_BYTES: usize = 8192;
/// Most actions one list returns.
pub const MAX_LIMIT: usize = 1000;

type ApiResult = Result<Response, ApiError>;

fn healing(state: &ApiState) -> Result<&Healing, ApiError> {
    state.healing.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_healing",
            "self-healing is off on this host (incidents are off)",
        )
    })
}

impl From<PolicyError> for ApiError {
    fn from(err: PolicyError) -> ApiError {
        match err {
            PolicyError::NotFound(_) => ApiError::not_found(err.to_string()),
            _ => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy", err.to_string()),
        }
    }
}

impl From<ApproveError> for ApiError {
    fn from(err: ApproveError) -> ApiError {
        match err {
            ApproveError::NoAction(_) => ApiError::not_found(err.to_string()),
            ApproveError::NotProposed { .. } => ApiError::new(StatusCode::CONFLICT, "not_proposed", err.to_string()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ActionQuery {
    incident: Option<String>,
    router: Option<String>,
    policy: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/actions?incident=&router=&policy=&status=&limit=`: newest first (default 100,
/// at most [`MAX_LIMIT`]).
pub(super) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ActionQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let healing = healing(&state)?;
    let status: Option<Status> = query
        .status
        .as_deref()
        .map(|s| serde_json::from_value(serde_json::Value::String(s.to_owned())))
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("status: {e}")))?;
    for (what, value) in [("incident", &query.incident), ("router", &query.router), ("policy", &query.policy)] {
        if value.as_ref().is_some_and(|v| v.len() > super::incidents::MAX_NAME_BYTES) {
            return Err(ApiError::bad_request(format!("{what} is over {} bytes", super::incidents::MAX_NAME_BYTES)));
        }
    }
    let limit = query.limit.unwrap_or(100).min(MAX_LIMIT);
    let found = healing.records(
        |r| {
            query.incident.as_ref().is_none_or(|i| &r.incident == i)
                && query.router.as_ref().is_none_or(|x| &r.router == x)
                && query.policy.as_ref().is_none_or(|p| &r.policy == p)
                && status.is_none_or(|s| r.status == s)
        },
        limit,
    );
    Ok(Json(found).into_response())
}

/// `POST /api/v1/incidents/{id}/approve`: runs the incident's proposed action (approve mode),
/// within the guard rails; answers with the action as it now stands.
pub(super) async fn approve(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let id = checked_id(&id)?;
    let record = healing(&state)?.approve(id)?;
    tracing::info!(incident = %id, status = record.status.name(), "action approved");
    Ok(Json(record).into_response())
}

/// `GET /api/v1/policies`: every policy, with its circuit breaker.
pub(super) async fn policies(State(state): State<ApiState>) -> ApiResult {
    Ok(Json(healing(&state)?.policies()).into_response())
}

fn checked_name(name: &str) -> Result<&str, ApiError> {
    let ok = !name.is_empty() && name.len() <= MAX_POLICY_NAME;
    ok.then_some(name).ok_or_else(|| ApiError::bad_request(format!("a policy name is 1 to {MAX_POLICY_NAME} bytes")))
}

/// `PUT /api/v1/policies/{name}`: adds or replaces a policy (the body is a policy, its `name`
/// optional and, if given, the path's). Checked as a file's policies are.
pub(super) async fn put_policy(State(state): State<ApiState>, Path(name): Path<String>, request: Request) -> ApiResult {
    let name = checked_name(&name)?.to_owned();
    let body = super::plugins::capped_body(request, MAX_BODY_BYTES, "a policy").await?;
    let mut value: serde_json::Value = json(&body)?;
    let Some(object) = value.as_object_mut() else { return Err(ApiError::bad_request("a policy is a JSON object")) };
    match object.get("name") {
        None => {
            object.insert("name".into(), serde_json::Value::String(name.clone()));
        }
        Some(given) if given.as_str() == Some(name.as_str()) => {}
        Some(_) => return Err(ApiError::bad_request("the body's name differs from the path's")),
    }
    let policy: Policy =
        serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("the policy: {e}")))?;
    let healing = healing(&state)?;
    healing.set_policy(policy, state.registry.classifier().map(|c| c.causes))?;
    let status = healing.policies().into_iter().find(|p| p.policy.name == name).expect("the policy was just set");
    Ok(Json(status).into_response())
}

/// `DELETE /api/v1/policies/{name}`.
pub(super) async fn delete_policy(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    healing(&state)?.remove_policy(checked_name(&name)?)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/policies/{name}/reset`: closes the policy's circuit breaker.
pub(super) async fn reset(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    let healing = healing(&state)?;
    let name = checked_name(&name)?;
    healing.reset_breaker(name)?;
    let status = healing.policies().into_iter().find(|p| p.policy.name == name).expect("the policy exists");
    Ok(Json(status).into_response())
}

/// `GET /api/v1/healing`: the guard rails and the dry-run switch.
pub(super) async fn show(State(state): State<ApiState>) -> ApiResult {
    Ok(Json(healing(&state)?.guard_rails()).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRun {
    dry_run: bool,
}

/// `PUT /api/v1/healing/dry-run`, body `{"dry_run": true|false}`: the global switch.
pub(super) async fn dry_run(State(state): State<ApiState>, request: Request) -> ApiResult {
    let body = super::plugins::capped_body(request, MAX_BODY_BYTES, "the switch").await?;
    let DryRun { dry_run } = json(&body)?;
    let healing = healing(&state)?;
    healing.set_dry_run(dry_run);
    Ok(Json(healing.guard_rails()).into_response())
}
