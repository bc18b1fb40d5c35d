//! `/api/v1/classifier`: the live cause classifier, shown, replaced, reconfigured and removed.
//! Thin handlers over the registry's classifier slot, with the rules of detector uploads: the
//! same size cap, bearer token and signature header, and plugin code run on the bounded pool.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::plugins::{SIGNATURE_HEADER, blocking, capped_body};
use super::{ApiError, ApiState};

type ApiResult = Result<Response, ApiError>;

fn none_live() -> ApiError {
    ApiError::not_found(
        "no classifier is live (give one with --classifier, the plugin directory or PUT /api/v1/classifier)",
    )
}

/// `GET /api/v1/classifier`: the live classifier (404 when there is none).
pub async fn show(State(state): State<ApiState>) -> ApiResult {
    let status = state.registry.classifier().ok_or_else(none_live)?;
    Ok(Json(status).into_response())
}

/// `PUT /api/v1/classifier` with the component as the body (and its signature in
/// `X-Routewatch-Signature` when the host requires signed plugins): checked, configured with
/// the classifier's configuration and made live; 201 when none was live, 200 otherwise. A
/// refused component leaves the live one in place.
pub async fn upload(State(state): State<ApiState>, request: Request) -> ApiResult {
    let signature = match request.headers().get(SIGNATURE_HEADER) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::bad_request(format!("{SIGNATURE_HEADER} must be hex text")))?
                .to_owned(),
        ),
        None => None,
    };
    let body = capped_body(request, state.max_upload, "an upload (max_upload_mib)").await?;
    if body.is_empty() {
        return Err(ApiError::bad_request("the body must be a Wasm component; it is empty"));
    }
    let (status, created) =
        blocking(&state, move |registry| registry.upload_classifier(&body, signature.as_deref())).await?;
    let code = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((code, Json(status)).into_response())
}

/// `PUT /api/v1/classifier/config` with the configuration as JSON: checked against the
/// classifier's schema and by a fresh instance of it (422 with the reasons if refused).
pub async fn configure(State(state): State<ApiState>, request: Request) -> ApiResult {
    let body = capped_body(request, crate::registry::MAX_CONFIG_BYTES, "a configuration").await?;
    let config: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the body must be JSON: {e}")))?;
    let status = blocking(&state, move |registry| registry.configure_classifier(config))
        .await
        .map_err(|e| if e.status == StatusCode::NOT_FOUND { none_live() } else { e })?;
    Ok(Json(status).into_response())
}

/// `DELETE /api/v1/classifier`: the live classifier is removed (its file too, if it lives in
/// the plugin directory); the one given at start is live again, or none if it was that one.
pub async fn delete(State(state): State<ApiState>) -> ApiResult {
    blocking(&state, |registry| registry.delete_classifier())
        .await
        .map_err(|e| if e.status == StatusCode::NOT_FOUND { none_live() } else { e })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
