//! `/api/v1/plugins`: list, upload, enable, disable, configure and delete detectors. Handlers
//! are thin: the registry does the work, on a blocking thread where it runs plugin code.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
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

/// Runs registry work that may execute plugin code off the async threads.
async fn blocking<T: Send + 'static>(
    state: &ApiState,
    work: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, ApiError> {
    let registry = state.registry.clone();
    tokio::task::spawn_blocking(move || work(&registry))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)
}

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

/// `POST /api/v1/plugins` with the component as the body: 201 for a new plugin, 200 for a new
/// version of one (or the same version again).
pub async fn upload(State(state): State<ApiState>, request: Request) -> ApiResult {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("uploads are capped at {} bytes (max_upload_mib)", state.max_upload),
        )
    };
    // An announced length over the cap is refused before a byte of the body is read.
    let announced = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if announced.is_some_and(|length| length > state.max_upload) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(request.into_body(), state.max_upload).await.map_err(|e| {
        let limited = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if limited { too_large() } else { ApiError::bad_request(format!("reading the upload: {e}")) }
    })?;
    if body.is_empty() {
        return Err(ApiError::bad_request("the body must be a Wasm component; it is empty"));
    }
    let (status, created) = blocking(&state, move |registry| registry.upload(&body)).await?;
    let code = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((code, Json(status)).into_response())
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

pub async fn disable(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    let name = checked(&name)?.to_owned();
    let status = blocking(&state, move |registry| registry.set_enabled(&name, false)).await?;
    Ok(Json(status).into_response())
}

/// `PUT /api/v1/plugins/{name}/config` with the configuration as JSON: checked against the
/// plugin's schema and by the plugin itself (422 with the reasons if refused).
pub async fn configure(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> ApiResult {
    let name = checked(&name)?.to_owned();
    let Json(config) = body.map_err(|e| ApiError::bad_request(format!("the body must be JSON: {}", e.body_text())))?;
    let status = blocking(&state, move |registry| registry.configure(&name, config)).await?;
    Ok(Json(status).into_response())
}
