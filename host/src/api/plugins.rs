//! `/api/v1/plugins`: list, upload, enable, disable, configure and delete detectors. Handlers
//! are thin: the registry does the work, on a bounded pool of blocking threads where it runs
//! plugin code (a full pool answers 503 at once rather than queueing).

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};
use crate::registry::{PluginStatus, Registry, RegistryError};

type ApiResult = Result<Response, ApiError>;

/// Plugin names are what detectors call themselves: 1 to 64 of `[a-z0-9_-]`. Anything else in
/// a path (a `..`, a slash, a dot) is refused before it reaches the registry.
fn checked(name: &str) -> Result<&str, ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(name)
    } else {
        Err(ApiError::bad_request(format!("{name:?} is not a plugin name: 1 to 64 of [a-z0-9_-]")))
    }
}

/// Runs registry work that may execute plugin code off the async threads, if one of the
/// pool's [`super::CHECK_WORKERS`] places is free; 503 otherwise.
pub(super) async fn blocking<T: Send + 'static>(
    state: &ApiState,
    work: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = state.checks.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{} plugin changes are being checked already; try again shortly", super::CHECK_WORKERS),
        )
    })?;
    let registry = state.registry.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work(&registry)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(ApiError::from)
}

/// `?replace=true`: the upload may take over a plugin that came from elsewhere.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    #[serde(default)]
    replace: bool,
}

/// Header carrying an upload's detached ed25519 signature (hex).
pub const SIGNATURE_HEADER: &str = "x-routewatch-signature";

pub async fn list(State(state): State<ApiState>) -> Json<Vec<PluginStatus>> {
    Json(state.registry.list())
}

pub async fn show(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    let name = checked(&name)?;
    let status = state.registry.get(name).ok_or_else(|| ApiError::not_found(format!("no plugin is named {name:?}")))?;
    Ok(Json(status).into_response())
}

pub async fn show_config(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    let name = checked(&name)?;
    let status = state.registry.get(name).ok_or_else(|| ApiError::not_found(format!("no plugin is named {name:?}")))?;
    Ok(Json(serde_json::json!({"config": status.config, "config_schema": status.config_schema})).into_response())
}

/// `POST /api/v1/plugins[?replace=true]` with the component as the body (and its signature in
/// `X-Routewatch-Signature` when the host requires signed plugins): 201 for a new plugin, 200
/// for a new version of one (or the same version again), 409 for a plugin from elsewhere
/// without `replace`.
pub async fn upload(
    State(state): State<ApiState>,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> ApiResult {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let signature = match request.headers().get(SIGNATURE_HEADER) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::bad_request(format!("{SIGNATURE_HEADER} must be hex text")))?
                .to_owned(),
        ),
        None => None,
    };
    // Refused before a byte is kept when the announced length is over the cap, else read up
    // to the cap; the rest is drained, so the client reads the 413 rather than a reset.
    let body = capped_body(request, state.max_upload, "an upload (max_upload_mib)").await?;
    if body.is_empty() {
        return Err(ApiError::bad_request("the body must be a Wasm component; it is empty"));
    }
    let replace = query.replace;
    let (status, created) =
        blocking(&state, move |registry| registry.upload(&body, signature.as_deref(), replace)).await?;
    let code = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((code, Json(status)).into_response())
}

/// A request's body, `what` in errors: a JSON 413 past `cap` bytes (announced or sent), never
/// buffered whole, and a 400 when it cannot be read.
pub(super) async fn capped_body(request: Request, cap: usize, what: &str) -> Result<Vec<u8>, ApiError> {
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("{what} is capped at {cap} bytes"));
    let announced = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if announced.is_some_and(|length| length > cap) {
        super::auth::drain(request.into_body()).await;
        return Err(too_large());
    }
    match read_capped(request.into_body(), cap).await {
        Ok(body) => Ok(body),
        Err(Some(err)) => Err(ApiError::bad_request(format!("reading {what}: {err}"))),
        Err(None) => Err(too_large()),
    }
}

/// The body, if it holds at most `cap` bytes; `Err(None)` when it holds more (the rest is
/// drained), `Err(Some(..))` when it could not be read.
async fn read_capped(body: axum::body::Body, cap: usize) -> Result<Vec<u8>, Option<axum::Error>> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Some)?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > cap {
                super::auth::drain(body).await;
                return Err(None);
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(bytes)
}

pub async fn delete(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    let name = checked(&name)?.to_owned();
    blocking(&state, move |registry| registry.delete(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn enable(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    let name = checked(&name)?.to_owned();
    let status = blocking(&state, move |registry| registry.set_enabled(&name, true)).await?;
    Ok(Json(status).into_response())
}

/// `POST /api/v1/plugins/{name}/start-fresh`: the current version starts without the old
/// state on the partitions where it refused it.
pub async fn start_fresh(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    let name = checked(&name)?.to_owned();
    let status = blocking(&state, move |registry| registry.start_fresh(&name)).await?;
    Ok(Json(status).into_response())
}

pub async fn disable(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    let name = checked(&name)?.to_owned();
    let status = blocking(&state, move |registry| registry.set_enabled(&name, false)).await?;
    Ok(Json(status).into_response())
}

/// `PUT /api/v1/plugins/{name}/config` with the configuration as JSON: checked against the
/// plugin's schema and by the plugin itself (422 with the reasons if refused). A body over
/// [`crate::registry::MAX_CONFIG_BYTES`] is drained and refused with a 413.
pub async fn configure(State(state): State<ApiState>, Path(name): Path<String>, request: Request) -> ApiResult {
    let name = checked(&name)?.to_owned();
    let body = capped_body(request, crate::registry::MAX_CONFIG_BYTES, "a configuration").await?;
    let config: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the body must be JSON: {e}")))?;
    let status = blocking(&state, move |registry| registry.configure(&name, config)).await?;
    Ok(Json(status).into_response())
}
